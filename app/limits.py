"""ASGI middleware that refuses request bodies over the configured size with a 413,
whether the client declared the length or sends a chunked body."""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, on_refusal: Callable[[str], None] = lambda path: None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.on_refusal = on_refusal  # called with the request's path when a body is refused
        self._refusal = json.dumps({"error": {
            "message": f"request body exceeds the limit of {max_bytes} bytes",
            "type": "invalid_request_error", "param": None, "code": "request_too_large"}}).encode()

    async def _refuse(self, scope: Scope, send: Send) -> None:
        self.on_refusal(scope["path"])
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(self._refusal)).encode())]})
        await send({"type": "http.response.body", "body": self._refusal})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None:
            if length.isdigit() and int(length) > self.max_bytes:
                await self._refuse(scope, send)
                return
            await self.app(scope, receive, send)  # the server enforces the declared length
            return
        # No declared length (chunked): read the body here, counting, then replay it.
        # The app would buffer the whole JSON body anyway, so this costs no extra memory.
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # disconnected before the body was complete
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._refuse(scope, send)
                return
            parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(parts), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
