"""The HTTP client every upstream call goes through, plus the rules real networks need.

- Two transports behind one `open()`: http:// upstreams without a proxy or credentials in the URL
  (vLLM on the same host or cluster: the common case, where the latency at concurrency 1 counts) go
  through plain_http.py, a lean HTTP/1.1 pool; the others through aiohttp, which alone missed the
  service's latency target at concurrency 1 (bench/README.md, "Which transport"). Both pool
  keep-alive connections; HTTP(S)_PROXY / NO_PROXY are read once per upstream (`proxy_for`), not on
  every request.
- A call whose connection dropped before any byte of the response arrived (typically a pooled
  connection the upstream closed while idle, just as it was reused) is sent once more at once, on a
  fresh connection: another pooled one may be just as stale.
- Connect errors and 502/503 answers are retried with exponential back-off and jitter, at most
  `retries` times. Retries happen only before a response is handed back, so never after anything
  of it went on to the client. `retried` counts them by kind, for metrics.
- `timeout` bounds each wait for the upstream's bytes (a non-streamed answer is one wait; a stream
  waits once per chunk); `connect_timeout` bounds connecting.
- Closing a response before its end closes its connection: an upstream vLLM sees the disconnect and
  aborts the request.
- Failures become domain errors: the client reads a plain message; the upstream's URL and the cause
  go to `detail` (for the logs), the API key masked before any text is cut.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import aiohttp
from aiohttp import helpers
from yarl import URL

from serving.backends.plain_http import PlainHTTPPool
from serving.errors import BackendError, UpstreamTimeout, UpstreamUnavailable

# vLLM's server (uvicorn) drops idle connections after 5 s; keep ours for less, so that the
# upstream rarely closes one under us (the retry on a fresh connection covers the rest).
_KEEPALIVE_EXPIRY = 4.0
_MAX_ERROR_TEXT = 500
# Error bodies are read up to this much: enough for any message, bounded for a hostile upstream.
_MAX_ERROR_BODY = 64 * 1024
_RETRIED_STATUSES = (502, 503)
_BACKOFF_CAP = 2.0

RetryKind = Literal["disconnected", "connect", "status"]
Method = Literal["GET", "POST"]


class Content(Protocol):
    """A response body, read as aiohttp's StreamReader is."""

    def iter_any(self) -> AsyncIterator[bytes]: ...

    async def read(self, n: int = -1) -> bytes: ...


class Response(Protocol):
    """What `open()` returns: an aiohttp.ClientResponse, or plain_http's lean equivalent."""

    @property
    def status(self) -> int: ...

    @property
    def reason(self) -> str | None: ...

    @property
    def content(self) -> Content: ...

    async def read(self) -> bytes: ...

    def release(self) -> Any: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Where:
    """The upstream a call goes to, as errors name it: `label` (its base URL without credentials)
    goes to `detail` only; `secret` (its API key) is masked in every text taken from the upstream."""

    label: str
    secret: str | None = None
    proxy: URL | None = None
    proxy_auth: aiohttp.BasicAuth | None = None

    def redact(self, text: str) -> str:
        """`text` with the secret masked, then cut to a length fit for a message (in that order, so
        a secret across the cut cannot leave in part)."""
        if self.secret:
            text = text.replace(self.secret, "***")
        return text if len(text) <= _MAX_ERROR_TEXT else text[:_MAX_ERROR_TEXT] + "..."


def proxy_for(url: URL) -> tuple[URL | None, aiohttp.BasicAuth | None]:
    """The proxy (and its credentials) the environment names for `url`, as aiohttp's trust_env would
    find them, read once per upstream rather than on every request."""
    try:
        return helpers.get_env_proxy_for_url(url)
    except LookupError:
        return None, None


def transport_error(exc: BaseException, where: Where) -> BackendError:
    """The domain error for a failed exchange (aiohttp's errors and its timeouts)."""
    detail = where.redact(f"upstream {where.label}: {type(exc).__name__}: {exc}" if str(exc)
                          else f"upstream {where.label}: {type(exc).__name__}")
    if isinstance(exc, TimeoutError):  # aiohttp's connect and read timeouts are TimeoutErrors
        return UpstreamTimeout("the upstream model server did not answer in time", detail=detail)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamUnavailable("the upstream model server could not be reached", detail=detail)
    return UpstreamUnavailable("the upstream model server failed", detail=detail)


async def read_error_body(response: Response) -> bytes:
    """An error response's body (its first 64 KiB), the response released."""
    try:
        return await response.content.read(_MAX_ERROR_BODY)
    except (aiohttp.ClientError, TimeoutError):
        return b""
    finally:
        response.release()  # closes the connection when the body was not read to its end


class UpstreamClient:
    """Sends requests to upstreams with the rules above; `start()` inside the event loop first."""

    def __init__(self, *, timeout: float, connect_timeout: float, max_connections: int,
                 retries: int = 2, backoff: float = 0.1) -> None:
        self._timeout = aiohttp.ClientTimeout(total=None, connect=timeout, sock_connect=connect_timeout,
                                              sock_read=timeout)
        self.quick_timeout = aiohttp.ClientTimeout(total=connect_timeout, sock_connect=connect_timeout)
        """For health checks and model discovery: the upstream must answer at once."""
        self._max_connections = max_connections
        self._retries = retries
        self._backoff = backoff
        self._pooled: aiohttp.ClientSession | None = None
        self._fresh: aiohttp.ClientSession | None = None
        self._plain: PlainHTTPPool | None = None
        self.retried: Counter[RetryKind] = Counter()
        """Calls sent again, by why: the connection dropped before the answer, connecting failed,
        the upstream answered 502/503."""

    def _session(self, *, force_close: bool) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=0,
                                         force_close=force_close,
                                         keepalive_timeout=None if force_close else _KEEPALIVE_EXPIRY)
        # No cookies kept: the upstreams are APIs, and one client's answers must not shape another's.
        return aiohttp.ClientSession(connector=connector, timeout=self._timeout,
                                     cookie_jar=aiohttp.DummyCookieJar(), raise_for_status=False)

    async def start(self) -> None:
        if self._pooled is None:
            self._pooled = self._session(force_close=False)
            self._fresh = self._session(force_close=True)
            self._plain = PlainHTTPPool(max_connections=self._max_connections, keepalive_expiry=_KEEPALIVE_EXPIRY)

    async def close(self) -> None:
        """Close every connection; requests still in flight fail."""
        sessions, self._pooled, self._fresh = (self._pooled, self._fresh), None, None
        if self._plain is not None:
            self._plain.close()
            self._plain = None
        for session in sessions:
            if session is not None:
                await session.close()

    async def open(self, method: Method, url: URL, headers: dict[str, str], body: bytes | None, where: Where,
                   *, timeout: aiohttp.ClientTimeout | None = None, retry: bool = True) -> Response:
        """Send one request; the response once its head arrived, its body unread (close or release it).

        Any status comes back (502/503 once the retries are spent); failures to get one raise the domain
        error. `retry=False` skips the back-off retries (health checks report what they see)."""
        if self._pooled is None or self._fresh is None or self._plain is None:
            raise RuntimeError("UpstreamClient used before start() or after close()")
        timeout = timeout or self._timeout
        # Credentials in the URL (Basic auth) are aiohttp's to send.
        plain = self._plain if url.scheme == "http" and where.proxy is None and url.user is None else None
        fresh = False
        attempt = 0
        while True:
            session = self._fresh if fresh else self._pooled
            try:
                response: Response
                if plain is not None:
                    # Each wait is bounded by the read timeout, or by the whole one where only that is set.
                    response = await plain.open(method, url, headers, body, fresh=fresh,
                                                read_timeout=timeout.sock_read or timeout.total,
                                                pool_timeout=timeout.connect or timeout.total,
                                                connect_timeout=timeout.sock_connect or timeout.total)
                else:
                    response = await session.request(method, url, headers=headers, data=body, timeout=timeout,
                                                     proxy=where.proxy, proxy_auth=where.proxy_auth)
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                # A TLS failure (a certificate refused) will fail the same way again.
                if not retry or attempt >= self._retries or isinstance(exc, aiohttp.ClientSSLError):
                    raise transport_error(exc, where) from exc
                attempt += 1
                await self._back_off("connect", attempt)
                continue
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError,
                    aiohttp.ClientConnectionResetError) as exc:
                # Nothing of the answer arrived: the upstream cannot have started answering it.
                if fresh:
                    raise transport_error(exc, where) from exc
                fresh = True
                self.retried["disconnected"] += 1
                continue
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise transport_error(exc, where) from exc
            if response.status in _RETRIED_STATUSES and retry and attempt < self._retries:
                await read_error_body(response)
                attempt += 1
                await self._back_off("status", attempt)
                continue
            return response

    async def _back_off(self, kind: RetryKind, attempt: int) -> None:
        self.retried[kind] += 1
        # Full jitter: retries from many requests that failed together do not arrive together.
        await asyncio.sleep(random.uniform(0, min(_BACKOFF_CAP, self._backoff * 2 ** (attempt - 1))))
