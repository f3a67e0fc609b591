"""proxympm: an HTTP/1.1 reverse proxy with Apache httpd's event MPM, in Python."""

__version__ = "0.1.0"
