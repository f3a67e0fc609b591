"""Request corpus: raw client bytes and what proxympm must make of them.

Each case is (name, raw bytes, expected). ``expected`` is either an int status that
proxympm answers itself (and then nothing may reach an upstream), or a list of
(method, path sent upstream) for requests that are forwarded, in order.
The same corpus is replayed by the sans-I/O unit tests in any chunking, and by
integration tests through a real proxy in front of a recording upstream.
"""

from __future__ import annotations

OK = "ok"
H = b"Host: example.test\r\n"

CASES: list[tuple[str, bytes, object]] = [
    # -- well-formed -------------------------------------------------------------
    ("simple get", b"GET /a HTTP/1.1\r\n" + H + b"\r\n", [(b"GET", b"/a")]),
    ("pipelined three", b"GET /1 HTTP/1.1\r\n" + H + b"\r\n" + b"GET /2 HTTP/1.1\r\n" + H
     + b"\r\n" + b"HEAD /3 HTTP/1.1\r\n" + H + b"\r\n",
     [(b"GET", b"/1"), (b"GET", b"/2"), (b"HEAD", b"/3")]),
    ("post with length then get", b"POST /p HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n\r\nhello"
     + b"GET /g HTTP/1.1\r\n" + H + b"\r\n", [(b"POST", b"/p"), (b"GET", b"/g")]),
    ("chunked with extension and trailer", b"POST /c HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked\r\n\r\n5;name=val\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
     [(b"POST", b"/c")]),
    ("chunked quoted extension", b"POST /c HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked\r\n\r\n5;a=\"q s\"\r\nhello\r\n0\r\n\r\n", [(b"POST", b"/c")]),
    ("absolute form", b"GET http://other.test:8080/x?y=1 HTTP/1.1\r\n" + H + b"\r\n",
     [(b"GET", b"/x?y=1")]),
    ("options asterisk", b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n", [(b"OPTIONS", b"*")]),
    ("http/1.0 without host", b"GET /old HTTP/1.0\r\n\r\n", [(b"GET", b"/old")]),
    ("http/1.2 treated as 1.1", b"GET /v HTTP/1.2\r\n" + H + b"\r\n", [(b"GET", b"/v")]),
    ("leading empty line ignored", b"\r\nGET /e HTTP/1.1\r\n" + H + b"\r\n", [(b"GET", b"/e")]),
    ("obs-text in value", b"GET /o HTTP/1.1\r\n" + H + b"X-A: caf\xc3\xa9\r\n\r\n",
     [(b"GET", b"/o")]),
    ("tab in value", b"GET /t HTTP/1.1\r\n" + H + b"X-A: a\tb\r\n\r\n", [(b"GET", b"/t")]),
    ("expect 100-continue", b"POST /x HTTP/1.1\r\n" + H
     + b"Expect: 100-continue\r\nContent-Length: 2\r\n\r\nhi", [(b"POST", b"/x")]),
    # -- 400: framing ambiguity ------------------------------------------------------
    ("CL and TE", b"POST / HTTP/1.1\r\n" + H
     + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("TE and CL", b"POST / HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400),
    ("duplicate CL", b"POST / HTTP/1.1\r\n" + H
     + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400),
    ("CL plus sign", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +5\r\n\r\nhello", 400),
    ("CL minus", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n", 400),
    ("CL hex", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 0x1f\r\n\r\n", 400),
    ("CL underscore", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1_0\r\n\r\n", 400),
    ("CL list", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5, 6\r\n\r\nhello", 400),
    ("CL empty", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: \r\n\r\n", 400),
    ("CL huge", b"POST / HTTP/1.1\r\n" + H
     + b"Content-Length: 99999999999999999999\r\n\r\n", 400),
    ("CL arabic digit", b"POST / HTTP/1.1\r\n" + H + "Content-Length: \u0663\r\n\r\n".encode(),
     400),
    ("TE chunked twice", b"POST / HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400),
    ("TE chunked not last", b"POST / HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", 400),
    ("TE on HTTP/1.0", b"POST / HTTP/1.0\r\n" + H
     + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("chunk size 0x", b"POST / HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk size plus", b"POST / HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk size minus zero", b"POST / HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked\r\n\r\n-0\r\n\r\n", 400),
    ("chunk size underscore", b"POST / HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked\r\n\r\n1_0\r\n0123456789abcdef\r\n0\r\n\r\n", 400),
    ("chunk size leading space", b"POST / HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk size 17 digits", b"POST / HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked\r\n\r\n00000000000000005\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk ext bare LF", b"POST / HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked\r\n\r\n5;a\nb\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk ext NUL", b"POST / HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked\r\n\r\n5;a=\x00\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk ext too long", b"POST / HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked\r\n\r\n5;a=" + b"x" * 5000 + b"\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk data without CRLF", b"POST / HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", 400),
    ("chunk size bare LF", b"POST / HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", 400),
    # -- 400: header syntax ----------------------------------------------------------
    ("obs-fold", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\r\n b\r\n\r\n", 400),
    ("space before colon", b"GET / HTTP/1.1\r\n" + H + b"X-A : a\r\n\r\n", 400),
    ("line starts with space after request line", b"GET / HTTP/1.1\r\n X-A: a\r\n" + H
     + b"\r\n", 400),
    ("bare LF line endings", b"GET / HTTP/1.1\n" + H.replace(b"\r\n", b"\n") + b"\n", 400),
    ("bare LF in field", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\nX-B: b\r\n\r\n", 400),
    ("bare CR in value", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\rb\r\n\r\n", 400),
    ("NUL in value", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n", 400),
    ("CTL in value", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x01b\r\n\r\n", 400),
    ("DEL in value", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x7fb\r\n\r\n", 400),
    ("non-token field name", b"GET / HTTP/1.1\r\n" + H + b"X(A): a\r\n\r\n", 400),
    ("empty field name", b"GET / HTTP/1.1\r\n" + H + b": a\r\n\r\n", 400),
    # -- 400: request line -------------------------------------------------------------
    ("double space", b"GET  / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("double space before version", b"GET /  HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("tab separator", b"GET\t/ HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("trailing space", b"GET / HTTP/1.1 \r\n" + H + b"\r\n", 400),
    ("missing version", b"GET /\r\n" + H + b"\r\n", 400),
    ("http/0.9", b"GET /\r\n\r\n", 400),
    ("version 1.10", b"GET / HTTP/1.10\r\n" + H + b"\r\n", 400),
    ("lowercase version", b"GET / http/1.1\r\n" + H + b"\r\n", 400),
    ("version without minor", b"GET / HTTP/1\r\n" + H + b"\r\n", 400),
    ("missing host", b"GET / HTTP/1.1\r\n\r\n", 400),
    ("two hosts", b"GET / HTTP/1.1\r\n" + H + H + b"\r\n", 400),
    ("invalid host", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    ("host with userinfo char", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
    ("empty host", b"GET / HTTP/1.1\r\nHost: \r\n\r\n", 400),
    ("non-ascii target", b"GET /caf\xc3\xa9 HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("CTL in target", b"GET /a\x01b HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("fragment in target", b"GET /a#b HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("authority form outside CONNECT", b"GET example.test:80 HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("asterisk outside OPTIONS", b"GET * HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("absolute form with userinfo", b"GET http://u@h/ HTTP/1.1\r\n" + H + b"\r\n", 400),
    # -- other statuses -----------------------------------------------------------------
    ("unknown transfer coding", b"POST / HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: gzip\r\n\r\n", 501),
    ("gzip then chunked", b"POST / HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    ("HTTP/2.0", b"GET / HTTP/2.0\r\n" + H + b"\r\n", 505),
    ("HTTP/3.0", b"GET / HTTP/3.0\r\n" + H + b"\r\n", 505),
    ("request line too long", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + H + b"\r\n", 414),
    ("field too long", b"GET / HTTP/1.1\r\n" + H + b"X-A: " + b"a" * 9000 + b"\r\n\r\n", 431),
    ("too many fields", b"GET / HTTP/1.1\r\n" + H
     + b"".join(b"X-%d: v\r\n" % i for i in range(101)) + b"\r\n", 431),
    ("unknown expect", b"POST / HTTP/1.1\r\n" + H
     + b"Expect: something\r\nContent-Length: 1\r\n\r\nx", 417),
    ("CONNECT", b"CONNECT example.test:443 HTTP/1.1\r\n" + H + b"\r\n", 501),
    ("body over LimitRequestBody", b"POST / HTTP/1.1\r\n" + H
     + b"Content-Length: 2000000000\r\n\r\n", 413),
]
