"""Test servers and clients for proxympm's integration tests.

- ``backend``: a recording HTTP/1.1 upstream (in-process thread or subprocess).
- ``wsgi_app``: a WSGI app served by gunicorn in tests.
- ``rawhttp``: a minimal raw-socket HTTP/1.1 client (pipelining, framing checks).
- ``procs``: /proc helpers (process trees, threads, RSS) used to clean up by pid.
"""
