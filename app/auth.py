"""Optional Bearer API keys. With none configured every request is let in.

`Authorized` is a FastAPI security dependency, so the routes that take it carry the bearer
scheme in the OpenAPI document."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.errors import AuthenticationFailed

_bearer = HTTPBearer(auto_error=False, description="One of the keys given with --api-key.")


def _matches(token: str, keys: list[str]) -> bool:
    # Compare against every key, always, in constant time per key: no early exit
    # that would tell a caller how many keys exist or which prefix is right.
    found = False
    for key in keys:
        found |= hmac.compare_digest(token.encode(), key.encode())
    return found


async def require_api_key(request: Request,
                          credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]) -> None:
    """Raise AuthenticationFailed unless the request carries one of the configured keys."""
    keys: list[str] = request.app.state.settings.api_keys
    if not keys:
        return
    if credentials is None or not credentials.credentials:
        raise AuthenticationFailed("missing API key: send 'Authorization: Bearer <key>'",
                                   code="invalid_api_key")
    if not _matches(credentials.credentials.strip(), keys):
        raise AuthenticationFailed("invalid API key", code="invalid_api_key")


async def require_api_key_for_metrics(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]) -> None:
    """/metrics is open unless --protect-metrics: a scraper configured from pod annotations cannot send a key."""
    if request.app.state.settings.protect_metrics:
        await require_api_key(request, credentials)


Authorized = Annotated[None, Depends(require_api_key)]
MetricsAuthorized = Annotated[None, Depends(require_api_key_for_metrics)]
