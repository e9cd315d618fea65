"""Which chat requests are let in, how long each may run, and when the service stops.

    serving ──SIGTERM──> draining ──in flight done, or --shutdown-timeout──> stopped (exit 0)
       └──────engine died──────────────────────────────────────────────────> stopped (exit 1)

While draining, /health and new chat requests get 503 and requests in flight run on; past the
shutdown timeout every deadline still open is brought forward to now, so each of those requests
ends at once with a 503 (a stream: an error event, then `data: [DONE]`). The server (app/server.py)
stops listening once `stopped` is set.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from app.errors import RequestTimeout, ShuttingDown
from serving.errors import AFTError, EngineDead, Overloaded

logger = logging.getLogger(__name__)

# How long requests cut at the shutdown timeout get to send their last bytes before the server stops.
_CUT_GRACE = 5.0


class Lifecycle:
    def __init__(self, max_in_flight: int, request_timeout: float, shutdown_timeout: float) -> None:
        self.max_in_flight = max_in_flight
        self.request_timeout = request_timeout
        self.shutdown_timeout = shutdown_timeout
        self.in_flight = 0
        self.exit_code = 0
        self.stopped = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._refusal: AFTError | None = None  # why the service takes no more requests
        self._cut = False
        self._deadlines: set[asyncio.Timeout] = set()
        self._drain: asyncio.Task[None] | None = None

    @property
    def draining(self) -> bool:
        """True from the first SIGTERM on (app/drain.py tells clients to close their connections)."""
        return self._drain is not None

    def check(self) -> None:
        """Raise the reason the service takes no more requests, if it has one (/health asks)."""
        if self._refusal is not None:
            raise self._refusal

    def admit(self) -> None:
        """Take a slot for a chat request; past the bound it is refused, never queued without limit
        (a queue that grows under overload only turns 503s into timeouts). `release` gives it back."""
        self.check()
        if self.in_flight >= self.max_in_flight:
            raise Overloaded(f"the server is serving its limit of {self.max_in_flight} requests; retry shortly",
                             code="overloaded")
        self.in_flight += 1
        self._idle.clear()

    def release(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    @asynccontextmanager
    async def deadline(self) -> AsyncIterator[None]:
        """The time a request may take: RequestTimeout past --request-timeout, ShuttingDown when
        shutdown cuts the requests still running."""
        timeout = asyncio.timeout(self.request_timeout)
        try:
            async with timeout:
                self._deadlines.add(timeout)
                if self._cut:
                    timeout.reschedule(asyncio.get_running_loop().time())
                yield
        except TimeoutError:
            if not timeout.expired():
                raise  # not ours
            if self._cut:
                raise ShuttingDown("the server is shutting down; retry on another instance",
                                   code="shutting_down") from None
            raise RequestTimeout(f"the request took longer than the server's limit of "
                                 f"{self.request_timeout:g} s", code="request_timeout") from None
        finally:
            self._deadlines.discard(timeout)

    def observe(self, error: AFTError) -> None:
        """Learn from an error a request ended with: a dead engine stops the service."""
        if isinstance(error, EngineDead) and self.exit_code == 0:
            logger.error("the engine died (%s); stopping so that the process is restarted", error.detail or error)
            self.exit_code = 1
            self._refusal = EngineDead("the engine died; the service is restarting", code="engine_dead")
            self.stopped.set()

    def shutdown(self) -> None:
        """Start draining (a first SIGTERM or SIGINT); a second one ends the requests in flight now."""
        if self._drain is None:
            self._refusal = ShuttingDown("the server is shutting down; retry on another instance",
                                         code="shutting_down")
            logger.info("shutting down: %d requests in flight get up to %g s to finish",
                        self.in_flight, self.shutdown_timeout)
            self._drain = asyncio.ensure_future(self._drain_then_stop())
        else:
            self._end_requests()

    async def _drain_then_stop(self) -> None:
        try:
            await asyncio.wait_for(self._idle.wait(), self.shutdown_timeout)
        except TimeoutError:
            self._end_requests()
        try:
            await asyncio.wait_for(self._idle.wait(), _CUT_GRACE)
        except TimeoutError:
            logger.warning("%d requests did not end within %g s of being cut", self.in_flight, _CUT_GRACE)
        self.stopped.set()

    def _end_requests(self) -> None:
        if self._cut:
            return
        self._cut = True
        if self._deadlines:
            logger.warning("shutdown timeout: ending %d requests still running", len(self._deadlines))
        now = asyncio.get_running_loop().time()
        for timeout in self._deadlines:
            timeout.reschedule(now)
