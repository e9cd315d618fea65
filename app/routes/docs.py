"""GET /openapi.json and GET /docs, open like vLLM's: a browser loads the page, then the schema,
without a key. The schema says which routes want one (the bearer scheme), so the page's
Authorize button takes a key and sends it with every "Try it out"."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

router = APIRouter(include_in_schema=False)


@router.get("/openapi.json")
async def openapi(request: Request) -> dict[str, Any]:
    return request.app.openapi()  # type: ignore[no-any-return]


@router.get("/docs")
async def docs(request: Request) -> HTMLResponse:
    # persistAuthorization: the key typed into Authorize survives a reload of the page.
    return get_swagger_ui_html(openapi_url="/openapi.json", title=request.app.title,
                               swagger_ui_parameters={"persistAuthorization": True})
