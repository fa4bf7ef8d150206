"""A trivial HTTP/1.1 server (raw trio): the load generator's ceiling.

It answers every request with a tiny JSON body at once, doing nothing else,
so the rate a load generator reaches against it bounds what that generator
can measure of any real target.
"""

import sys

import trio

RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2\r\n\r\n{}")


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
            head = bytes(buf[:end]).lower()
            length = 0
            for line in head.split(b"\r\n"):
                if line.startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            while len(buf) < end + 4 + length:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buf += data
            del buf[: end + 4 + length]
            await stream.send_all(RESPONSE)
    except trio.BrokenResourceError:
        return


async def main(port: int) -> None:
    await trio.serve_tcp(handle, port, host="127.0.0.1")


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]))
