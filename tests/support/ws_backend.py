"""A real WebSocket server (the ``websockets`` library) for tests, in its own process.

``python -m tests.support.ws_backend [--tls CERT KEY]`` binds 127.0.0.1 on a free
port and prints it. Every path echoes each message back, text as text and binary
as binary; ``/refuse`` answers 403 to the handshake; ``/hello`` sends one greeting
as soon as the connection is open (it must reach the client even if the client
speaks first).
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys
from http import HTTPStatus

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response


async def handler(ws: ServerConnection) -> None:
    if ws.request is not None and ws.request.path == "/hello":
        await ws.send("hello from the backend")
    try:
        async for message in ws:
            await ws.send(message)
    except ConnectionClosed:
        pass  # a client that just drops the connection (the scale test's raw client)


def process_request(conn: ServerConnection, request: Request) -> Response | None:
    if request.path == "/refuse":
        return conn.respond(HTTPStatus.FORBIDDEN, "no websocket for you\n")
    return None


async def main(cert: str | None, key: str | None) -> None:
    ctx = None
    if cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
    async with serve(handler, "127.0.0.1", 0, ssl=ctx, max_size=None, backlog=2048,
                     process_request=process_request, ping_interval=None,
                     compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(port, flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    args = parser.parse_args()
    cert, key = args.tls or (None, None)
    try:
        asyncio.run(main(cert, key))
    except KeyboardInterrupt:
        sys.exit(0)
