"""GET /health (open, for load balancers) and GET /metrics (Prometheus; open unless --protect-metrics)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.auth import MetricsAuthorized
from app.deps import LifecycleDep, MetricsDep
from app.metrics import CONTENT_TYPE
from app.routes.errors import documented

router = APIRouter(tags=["health"])


@router.get("/health", responses=documented(502, 503))
async def health(request: Request, lifecycle: LifecycleDep) -> dict[str, str]:
    """200 when the service takes requests and the backend can serve; 503 while shutting down,
    502 when the backend cannot serve."""
    lifecycle.check()
    await request.app.state.backend.check_health()
    return {"status": "ok"}


@router.get("/metrics", responses=documented(401))
async def metrics(m: MetricsDep, _: MetricsAuthorized) -> Response:
    return Response(m.render(), media_type=CONTENT_TYPE)
