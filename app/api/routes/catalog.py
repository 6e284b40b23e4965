"""What can be trained: the model catalog and the methods, for forms and API clients."""

from __future__ import annotations

from typing import Any

from app.api.deps import CurrentReader, SettingsDep, make_router
from worker.spec.catalog import catalog_listing
from worker.spec.config import PRESETS
from worker.spec.method_support import check_method, method_choices

router = make_router(tags=["catalog"])


@router.get("/models")
def list_models(me: CurrentReader) -> list[dict[str, Any]]:
    """The catalog: parameter count, context length, licence, chat template family and the
    methods each model supports. Any hub id, local folder or .gguf file can be trained too."""
    return catalog_listing()


@router.get("/methods")
def list_methods(me: CurrentReader, settings: SettingsDep) -> list[dict[str, Any]]:
    """The fine-tuning methods, and whether this tunelab's workers can run each."""
    cuda = settings.workers_have_cuda
    return [
        {
            "name": m.name,
            "title": m.title,
            "description": m.description,
            "needs_cuda": m.needs_cuda,
            "trains_all_weights": m.trains_all_weights,
            "unavailable": check_method(m.name, model_type=None, cuda_available=cuda),
        }
        for m in method_choices()
    ]


@router.get("/presets")
def list_presets(me: CurrentReader) -> dict[str, dict[str, Any]]:
    """What each preset fills in; every field left at "auto" adapts to the model and data."""
    return PRESETS
