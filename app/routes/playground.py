"""GET /playground: a page in the browser that calls the public API and shows each round's drafts.

The page, its script and its style are files in app/static, served as they are (no build step,
nothing fetched from elsewhere). They are open like /health: the page holds no data, and the
API calls it makes carry the key the person types, checked by the chat route as for any client.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from app.deps import SettingsDep

router = APIRouter(prefix="/playground", tags=["playground"], include_in_schema=False)

STATIC = Path(__file__).resolve().parent.parent / "static"
# Only these files are served: a name is looked up here, never joined onto a path.
ASSETS = {"playground.js": "text/javascript", "api.js": "text/javascript", "playground.css": "text/css"}


class PlaygroundConfig(BaseModel):
    """What the page's form starts from: the server's defaults and bounds for `aft`."""

    proposals: int
    rounds: int
    max_proposals: int
    max_rounds: int
    api_key_required: bool


@router.get("")
async def page() -> FileResponse:
    return FileResponse(STATIC / "playground.html", media_type="text/html")


@router.get("/config")
async def config(settings: SettingsDep) -> PlaygroundConfig:
    return PlaygroundConfig(proposals=settings.default_proposals, rounds=settings.default_rounds,
                            max_proposals=settings.max_proposals, max_rounds=settings.max_rounds,
                            api_key_required=bool(settings.api_keys))


@router.get("/assets/{name}")
async def asset(name: str) -> FileResponse:
    if name not in ASSETS:
        raise HTTPException(404, f"no playground asset named '{name}'")
    return FileResponse(STATIC / name, media_type=ASSETS[name])
