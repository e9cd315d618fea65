"""A StreamingResponse that always watches for the client going away, and ends its body with
the stream's last piece.

Starlette stops listening for `http.disconnect` on ASGI 2.4 servers and relies on
the next `send` failing instead. Propose-and-aggregate sends nothing while its
drafts are generated, so a client that leaves then would keep the engine busy
until the answer starts. Here the stream is cancelled the moment the client
disconnects, and cancellation aborts the backend's requests.

Starlette ends a streamed body with an empty message of its own, which the server writes
as one more write (the chunked encoding's terminator) and the client wakes up once more for.
Here the piece that ends the stream (`data: [DONE]`) carries the end of the body.

And nothing is written to the client before the first engine request has left: the response
head and the stream's first piece (the role chunks, ready before the pipeline starts) go out
from a task of their own, which runs as soon as the stream first waits, on the engine. Those
two writes (and the client's wakeups) then happen while the engine works, not before it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from app.cancellation import ClientDisconnected, cancel_on_disconnect
from app.streaming import DONE


class EventStreamResponse(StreamingResponse):
    """Streams SSE text, piece by piece, as text/event-stream."""

    media_type = "text/event-stream"

    def __init__(self, pieces: AsyncIterator[str], headers: Mapping[str, str] | None = None) -> None:
        super().__init__(pieces, headers=headers)
        self.pieces = pieces

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The stream runs in this task (no task group to start first); a disconnect cancels it.
        # OSError: the client went away mid-send, same as a disconnect.
        with contextlib.suppress(ClientDisconnected, OSError):
            await cancel_on_disconnect(receive, self.stream_response(send))
        if self.background is not None:
            await self.background()

    async def stream_response(self, send: Send) -> None:
        first = await anext(self.pieces, "")
        opening = asyncio.ensure_future(self._open(send, first))
        try:
            end = ""
            async for piece in self.pieces:
                await opening  # long done by now (a finished future returns at once); never overtaken
                if piece.endswith(DONE):
                    end = piece
                    continue  # sent once the stream has run to its end (its clean-up done), with the body's end
                await send({"type": "http.response.body", "body": piece.encode(), "more_body": True})
            await opening
            await send({"type": "http.response.body", "body": end.encode(), "more_body": False})
        finally:
            if not opening.done():
                opening.cancel()
            elif not opening.cancelled():
                opening.exception()  # raised above already, or moot: this stream was cancelled

    async def _open(self, send: Send, first: str) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        if first:
            await send({"type": "http.response.body", "body": first.encode(), "more_body": True})
