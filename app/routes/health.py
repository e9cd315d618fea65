"""GET /health (open, for load balancers) and GET /metrics (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.deps import MetricsDep
from app.metrics import CONTENT_TYPE

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(request: Request) -> dict[str, str]:
    """200 when the backend can serve; a backend failure maps to 502 in the usual error shape."""
    await request.app.state.backend.check_health()
    return {"status": "ok"}


@router.get("/metrics")
async def metrics(m: MetricsDep) -> Response:
    return Response(m.render(), media_type=CONTENT_TYPE)
