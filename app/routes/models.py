"""GET /v1/models: the one model this service serves."""

from __future__ import annotations

from fastapi import APIRouter

from app.auth import Authorized
from app.deps import SettingsDep
from app.errors import ModelNotFound
from app.protocol import ModelCard, ModelList

router = APIRouter(prefix="/v1", tags=["models"])


@router.get("/models")
async def list_models(settings: SettingsDep, _: Authorized) -> ModelList:
    return ModelList(data=[ModelCard(id=settings.model_id)])


@router.get("/models/{model_id:path}")
async def retrieve_model(model_id: str, settings: SettingsDep, _: Authorized) -> ModelCard:
    if model_id != settings.model_id:
        raise ModelNotFound(f"The model '{model_id}' does not exist", param="model", code="model_not_found")
    return ModelCard(id=model_id)
