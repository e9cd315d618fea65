"""GET /v1/models: the one model this service serves, with its context length as `vllm serve` gives it."""

from __future__ import annotations

from fastapi import APIRouter

from app.auth import Authorized
from app.chat import shown
from app.deps import BackendDep, SettingsDep
from app.errors import ModelNotFound
from app.protocol import ModelCard, ModelList
from app.routes.errors import documented

router = APIRouter(prefix="/v1", tags=["models"])


@router.get("/models", responses=documented(401))
async def list_models(settings: SettingsDep, backend: BackendDep, _: Authorized) -> ModelList:
    return ModelList(data=[ModelCard(id=settings.model_id, max_model_len=await backend.model_context())])


@router.get("/models/{model_id:path}", responses=documented(401, 404))
async def retrieve_model(model_id: str, settings: SettingsDep, backend: BackendDep, _: Authorized) -> ModelCard:
    if model_id != settings.model_id:
        raise ModelNotFound(f"The model '{shown(model_id)}' does not exist", param="model", code="model_not_found")
    return ModelCard(id=model_id, max_model_len=await backend.model_context())
