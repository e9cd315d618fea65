"""ASGI middleware: from SIGTERM on, every response says `Connection: close`.

A client on a kept-alive connection then opens a new connection for its next request instead of
sending it on one the server is about to close (the keep-alive close race of HTTP/1.1: a request
written as the server closes an idle connection gets nothing back, not even an error). uvicorn
honours the header: it closes the connection once the response is sent. The server closes the
connections still idle only later (app/server.py).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.lifecycle import Lifecycle

_CLOSE = (b"connection", b"close")


class CloseConnectionsWhileDraining:
    def __init__(self, app: ASGIApp, lifecycle: Lifecycle) -> None:
        self.app = app
        self.lifecycle = lifecycle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        # Asked when the response starts, not when the request arrives: an answer that was being
        # computed at SIGTERM closes its connection too.
        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start" and self.lifecycle.draining:
                message["headers"] = [*message.get("headers", ()), _CLOSE]
            await send(message)

        await self.app(scope, receive, send_closing)
