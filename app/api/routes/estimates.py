"""Estimates before queueing: peak GPU memory and wall time of a training config."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import Field

from app.api.deps import CurrentReader, SessionDep, make_router
from app.services.jobs import estimates as service
from app.services.jobs import validate_config
from worker.spec.config import TrainConfig

router = make_router(tags=["estimates"])

_REQUEST_ONLY = ("dataset_id", "dataset_version", "gpu")


class EstimateRequest(TrainConfig):
    """A training config (as for a job), plus what to estimate it against."""

    dataset_id: uuid.UUID | None = Field(
        default=None, description="Take sample lengths and counts from this dataset"
    )
    dataset_version: int | None = Field(
        default=None, ge=1, le=2**31 - 1, description="Its version (default: the latest)"
    )
    gpu: str | None = Field(
        default=None,
        max_length=100,
        description=(
            "GPU model, e.g. 'H100' or 'RTX 4090', for a what-if estimate (default: where the "
            "job will run: the workers' CPU, at the rate a worker measured, when they have no "
            "GPU, else an H200)"
        ),
    )


@router.post("/estimates")
def create_estimate(
    body: EstimateRequest, session: SessionDep, me: CurrentReader
) -> dict[str, Any]:
    """Peak GPU memory and wall time of training this config, before queueing it.

    Fields left at "auto" are resolved as the engine will resolve them (``chosen`` lists
    them). Models outside the catalog get ``{"available": false, "reason": ...}``.
    """
    config = validate_config(body.model_dump(exclude=set(_REQUEST_ONLY), exclude_unset=True))
    return service.estimate_for_dataset(
        session,
        user=me.user,
        config=config,
        dataset_id=body.dataset_id,
        dataset_version=body.dataset_version,
        gpu_name=body.gpu,
    )
