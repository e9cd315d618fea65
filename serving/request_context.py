"""The id of the request being served, for whatever serves it: backends send it upstream, logs stamp it.

A context variable, set once per request by the HTTP layer (app/access_log.py): every task the
request starts copies it, so no call needs a parameter for it. None outside a request.
"""

from __future__ import annotations

from contextvars import ContextVar

request_id: ContextVar[str | None] = ContextVar("aft_request_id", default=None)
