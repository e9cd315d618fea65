"""A StreamingResponse that always watches for the client going away.

Starlette stops listening for `http.disconnect` on ASGI 2.4 servers and relies on
the next `send` failing instead. Propose-and-aggregate sends nothing while its
drafts are generated, so a client that leaves then would keep the engine busy
until the answer starts. Here the stream is cancelled the moment the client
disconnects, and cancellation aborts the backend's requests.
"""

from __future__ import annotations

import contextlib

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send


class EventStreamResponse(StreamingResponse):
    media_type = "text/event-stream"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:

            async def stream_then_stop() -> None:
                # OSError: the client went away mid-send, same as a disconnect.
                with contextlib.suppress(OSError):
                    await self.stream_response(send)
                group.cancel_scope.cancel()

            group.start_soon(stream_then_stop)
            await self.listen_for_disconnect(receive)
            group.cancel_scope.cancel()
        if self.background is not None:
            await self.background()
