"""Request ids: the client's `X-Request-ID` when it is a sane token, else one of our own.

The id goes back on the response, into the completion id (`chatcmpl-<id>`), upstream as
`X-Request-ID`, and onto every log line of the request: so it may only hold characters that
are safe in all of these (no spaces, quotes or line breaks) and is at most 128 characters. A
client's id that breaks this rule is replaced, not cut or escaped: a half-kept id would match
nothing in the client's own logs.
"""

from __future__ import annotations

import re
import uuid

HEADER = "X-Request-ID"
MAX_LENGTH = 128
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+=/-]*")


def new_request_id() -> str:
    return uuid.uuid4().hex


def accepted(client_id: str | None) -> str:
    """The id a request is served under: `client_id` when it is safe, else a new one."""
    if client_id and len(client_id) <= MAX_LENGTH and _SAFE.fullmatch(client_id):
        return client_id
    return new_request_id()
