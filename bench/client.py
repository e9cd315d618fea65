"""A small HTTP/1.1 client for the load generator: one keep-alive connection, streamed bodies.

The load generator shares two cores with the service it measures, so it must cost
little per request: asyncio streams and a few byte searches, no client library.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class HTTPError(Exception):
    pass


class Connection:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1:port; reconnects when the server closes it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.reader is None or self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 22)
        return self.reader, self.writer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, method: str, path: str, body: bytes = b"",
                      on_data: Callable[[bytes], None] | None = None) -> tuple[int, bytes]:
        """Send one request; return (status, body). With `on_data`, each received piece of a chunked
        body is passed on as it arrives (and not kept)."""
        reader, writer = await self._connect()
        writer.write(b"%s %s HTTP/1.1\r\nhost: 127.0.0.1:%d\r\ncontent-type: application/json\r\n"
                     b"authorization: Bearer sk-bench\r\ncontent-length: %d\r\n\r\n%s"
                     % (method.encode(), path.encode(), self.port, len(body), body))
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            self.close()
            raise HTTPError(f"connection closed before the response ({exc!r})") from exc
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip().lower() for k, _, v in (h.partition(":") for h in lines[1:] if h)}
        parts: list[bytes] = []
        try:
            if "content-length" in headers:
                data = await reader.readexactly(int(headers["content-length"]))
                if on_data is not None:
                    on_data(data)
                else:
                    parts.append(data)
            elif headers.get("transfer-encoding") == "chunked":
                while True:
                    size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
                    if size == 0:
                        await reader.readuntil(b"\r\n")
                        break
                    data = (await reader.readexactly(size + 2))[:-2]
                    if on_data is not None:
                        on_data(data)
                    else:
                        parts.append(data)
            else:  # delimited by the connection's end
                data = await reader.read()
                if on_data is not None:
                    on_data(data)
                else:
                    parts.append(data)
                headers["connection"] = "close"
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            self.close()
            raise HTTPError(f"connection closed mid-response ({exc!r})") from exc
        if headers.get("connection") == "close":
            self.close()
        return status, b"".join(parts)


async def get_json_bytes(port: int, path: str, method: str = "GET") -> bytes:
    connection = Connection(port)
    try:
        status, body = await connection.request(method, path)
    finally:
        connection.close()
    if status != 200:
        raise HTTPError(f"{method} {path}: {status} {body[:200]!r}")
    return body
