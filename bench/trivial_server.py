"""A trivial HTTP/1.1 server (raw trio): the load generator's ceiling.

It answers every request with a tiny JSON body at once, doing nothing else,
so the rate a load generator reaches against it bounds what that generator
can measure of any real target.

For the connect scenario it also speaks the least of legacy SSE a client
needs to reach "initialized": ``GET /sse`` opens a chunked stream whose first
event is the endpoint ``/messages?sessionId=N``; ``POST /messages?sessionId=N``
answers ``202`` and, for a request (a message with an ``id``), writes an
empty result with that id on stream N. What the load generator's clients
reach against it bounds what they can measure of a gateway's connects.
"""

import json
import sys
from itertools import count

import trio

RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2\r\n\r\n{}")
ACCEPTED = b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"
STREAM_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n")

_ids = count(1)
#: Open SSE streams by session id.
_streams: dict[str, trio.SocketStream] = {}


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def _open_stream(stream: trio.SocketStream) -> None:
    session = str(next(_ids))
    _streams[session] = stream
    try:
        await stream.send_all(STREAM_HEAD + _chunk(
            b"event: endpoint\ndata: /messages?sessionId=%s\n\n" % session.encode()))
        while await stream.receive_some(65536):  # held until the client leaves
            pass
    finally:
        del _streams[session]


async def _message(stream: trio.SocketStream, target: bytes, body: bytes) -> None:
    await stream.send_all(ACCEPTED)
    session = target.partition(b"sessionId=")[2].decode()
    msg = json.loads(body)
    out = _streams.get(session)
    if out is not None and isinstance(msg, dict) and "id" in msg:
        reply = json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": {}}).encode()
        await out.send_all(_chunk(b"event: message\ndata: " + reply + b"\n\n"))


async def handle(stream: trio.SocketStream) -> None:
    buf = bytearray()
    try:
        while True:
            end = buf.find(b"\r\n\r\n")
            while end < 0:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buf += data
                end = buf.find(b"\r\n\r\n")
            head = bytes(buf[:end])
            length = 0
            for line in head.lower().split(b"\r\n"):
                if line.startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            while len(buf) < end + 4 + length:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buf += data
            body = bytes(buf[end + 4:end + 4 + length])
            del buf[: end + 4 + length]
            method, target, _ = head.split(b"\r\n", 1)[0].split(b" ", 2)
            if method == b"GET" and target == b"/sse":
                await _open_stream(stream)
                return
            if method == b"POST" and target.startswith(b"/messages"):
                await _message(stream, target, body)
                continue
            await stream.send_all(RESPONSE)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return


async def main(port: int) -> None:
    await trio.serve_tcp(handle, port, host="127.0.0.1")


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]))
