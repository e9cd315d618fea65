"""ASGI middleware that bounds a request body in size and in time, as the app reads it.

A body over the size limit (declared, or counted as a chunked body arrives) is a 413; a client
that stops sending mid-body for longer than the read timeout gets a 408; a client that leaves
mid-body ends its request quietly. Each is raised from `receive` as an HTTPException, which
FastAPI lets through its body reading to the app's error handlers (one error shape, one place
that counts refusals). Once the body is complete `receive` is passed through untouched: the
app waits on it for the client's disconnect.
"""

from __future__ import annotations

import asyncio

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyRefused(HTTPException):
    def __init__(self, status_code: int, detail: str, code: str) -> None:
        super().__init__(status_code, detail)
        self.code = code


class BodyLimits:
    def __init__(self, app: ASGIApp, max_bytes: int, read_timeout: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout = read_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        declared = int(length) if length is not None and length.isdigit() else None
        size = 0
        complete = False

        async def limited_receive() -> Message:
            nonlocal size, complete
            if complete:
                return await receive()
            if declared is not None and declared > self.max_bytes:
                raise self._too_large()
            try:
                async with asyncio.timeout(self.read_timeout):
                    message = await receive()
            except TimeoutError:
                raise BodyRefused(408, f"the request body did not arrive within {self.read_timeout:g} s",
                                  "request_timeout") from None
            if message["type"] == "http.disconnect":
                # Nobody will read the answer; the app stops here, without a traceback.
                raise BodyRefused(400, "the client disconnected before sending the whole body",
                                  "client_disconnected")
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                raise self._too_large()
            complete = not message.get("more_body", False)
            return message

        await self.app(scope, limited_receive, send)

    def _too_large(self) -> BodyRefused:
        return BodyRefused(413, f"request body exceeds the limit of {self.max_bytes} bytes", "request_too_large")
