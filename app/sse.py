"""A Server-Sent Events response on Starlette's public ASGI interface (a `Response` whose
`__call__` sends the stream).

The stream runs in the request's own task; one watcher task beside it listens for the client
and for silence: a disconnect cancels the stream at once (propose-and-aggregate sends nothing
while drafts are written, so waiting for a failed write would leave the engine working for
nobody), and after `keepalive` seconds without a byte sent it writes a `: keep-alive` comment
(proxies cut connections that stay silent). The two tasks' writes are whole messages, one at
a time (a lock).

Why not sse-starlette's EventSourceResponse, which does the same: it runs every response as a task
group of four tasks and wraps each message in a cancel scope, which measurably slowed every streamed
answer (bench/README.md, "The plain chat route and the streamed-answer object").
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

KEEPALIVE = b": keep-alive\n\n"


class EventStream(Response):
    media_type = "text/event-stream"

    def __init__(self, pieces: AsyncGenerator[bytes, None], keepalive: float) -> None:
        self.status_code = 200
        self.background = None
        self.pieces = pieces
        self.keepalive = keepalive
        # Proxies (nginx) buffer responses unless told not to; SSE must flow token by token.
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._lock = asyncio.Lock()
        self._last_sent = 0.0
        self._client_left = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._last_sent = asyncio.get_running_loop().time()
        watcher = asyncio.ensure_future(self._watch(receive, send, task))
        cancelled = False
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for piece in self.pieces:
                await self._send(send, piece)
            await self._send(send, b"", more_body=False)
        except asyncio.CancelledError:
            if self._client_left:
                task.uncancel()  # the cancellation was ours and ends here: nobody is listening
            else:
                cancelled = True
        except OSError:
            pass  # the client went away mid-write: same as a disconnect
        finally:
            watcher.cancel()
            await self.pieces.aclose()  # a no-op when they ran to the end; otherwise their clean-up runs now
        # A deadline of the pieces that expired while a write waited on a client that does not read
        # is withdrawn by their clean-up: the stream just ends. Any other cancellation goes on.
        if cancelled and task.cancelling():
            raise asyncio.CancelledError

    async def _send(self, send: Send, body: bytes, more_body: bool = True) -> None:
        async with self._lock:
            await send({"type": "http.response.body", "body": body, "more_body": more_body})
            self._last_sent = asyncio.get_running_loop().time()

    async def _watch(self, receive: Receive, send: Send, stream: asyncio.Task[None]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                async with asyncio.timeout_at(self._last_sent + self.keepalive):
                    message = await receive()
            except TimeoutError:
                if loop.time() >= self._last_sent + self.keepalive:
                    await self._send(send, KEEPALIVE)
                continue
            if message["type"] == "http.disconnect":
                self._client_left = True
                stream.cancel()
                return
