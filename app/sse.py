"""A StreamingResponse that always watches for the client going away.

Starlette stops listening for `http.disconnect` on ASGI 2.4 servers and relies on
the next `send` failing instead. Propose-and-aggregate sends nothing while its
drafts are generated, so a client that leaves then would keep the engine busy
until the answer starts. Here the stream is cancelled the moment the client
disconnects, and cancellation aborts the backend's requests.
"""

from __future__ import annotations

import contextlib

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from app.cancellation import ClientDisconnected, cancel_on_disconnect


class EventStreamResponse(StreamingResponse):
    media_type = "text/event-stream"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The stream runs in this task (no task group to start first); a disconnect cancels it.
        # OSError: the client went away mid-send, same as a disconnect.
        with contextlib.suppress(ClientDisconnected, OSError):
            await cancel_on_disconnect(receive, self.stream_response(send))
        if self.background is not None:
            await self.background()
