"""An OpenAI-compatible upstream as configured (Upstream), and as resolved once for every request to it
(Target): its URLs, headers and the context it declares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from yarl import URL

from serving.backends.upstream_client import Where, proxy_for
from serving.request_context import request_id


@dataclass(frozen=True)
class Upstream:
    """An OpenAI-compatible deployment: base URL as an OpenAI client takes it (http://host:8000/v1)."""

    base_url: str
    model: str | None = None
    """Model name to request; None: the first model the upstream lists, found at start()."""
    api_key: str | None = None


@dataclass(frozen=True)
class Target:
    """An upstream resolved at start(): everything a request needs, computed once."""

    where: Where
    chat_url: URL
    models_url: URL
    tokenize_url: URL
    """vLLM serves /tokenize at the server's root, beside /v1."""
    model: str  # "" until discovered
    headers: dict[str, str]
    max_model_len: int | None = None
    """The context the upstream declares in its /models entry (vLLM does), when it was asked."""


def context_of(entry: Any) -> int | None:
    """The context a /models entry declares (vLLM's max_model_len), if it is a positive integer."""
    context = entry.get("max_model_len") if isinstance(entry, dict) else None
    return context if isinstance(context, int) and context > 0 else None


def headers_of(target: Target) -> dict[str, str]:
    """The target's headers, with the id of the request being served: the upstream's logs then name
    the same request as ours."""
    rid = request_id.get()
    return target.headers if rid is None else {**target.headers, "X-Request-ID": rid}


def target_of(upstream: Upstream) -> Target:
    """`upstream` resolved: its URLs, proxy and headers (the model name stays "" until discovered)."""
    url = URL(upstream.base_url.rstrip("/"))
    base = url.with_user(None).with_password(None) if url.user or url.password else url  # no secrets in labels
    proxy, proxy_auth = proxy_for(url)
    headers = {"Content-Type": "application/json"}
    if upstream.api_key:
        headers["Authorization"] = f"Bearer {upstream.api_key}"
    root = URL(str(url).removesuffix("/v1"))
    return Target(Where(str(base), upstream.api_key, proxy, proxy_auth), URL(f"{url}/chat/completions"),
                   URL(f"{url}/models"), URL(f"{root}/tokenize"), upstream.model or "", headers)
