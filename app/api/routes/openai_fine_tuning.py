"""OpenAI's fine-tuning API: ``/v1/fine_tuning/jobs``, on tunelab jobs (see
``app.services.openai_compat.jobs`` for how a request maps onto a run config)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import Body, Query, Request

from app.api.deps import CurrentReader, CurrentTrainer, SessionDep, SettingsDep, make_router
from app.api.routes.openai_files import ERRORS, openai_errors, page
from app.services import jobs as jobs_service
from app.services.openai_compat import jobs as service

router = make_router(prefix="/v1/fine_tuning", tags=["openai-compatible"])
METADATA_QUERY = re.compile(r"^metadata\[(?P<key>[^\]]{1,64})\]$")
After = Annotated[str | None, Query(max_length=200)]


@router.post("/jobs", response_model=None, responses=ERRORS)
@openai_errors
def create_job(
    body: Annotated[dict[str, Any], Body()],
    session: SessionDep,
    settings: SettingsDep,
    me: CurrentTrainer,
) -> Any:
    """OpenAI's job request (model, training_file, validation_file, hyperparameters or
    method, suffix, seed, metadata; tunelab's own: test_file, tunelab_config), queued as a
    tunelab job."""
    request = service.parse_request(body)
    job, row = service.create_job(session, settings=settings, user=me.user, request=request)
    session.commit()
    jobs_service.offer(session, job=job)
    session.refresh(job)
    return service.job_object(session, job, row)


@router.get("/jobs", response_model=None, responses=ERRORS)
@openai_errors
def list_jobs(
    request: Request,
    session: SessionDep,
    me: CurrentReader,
    after: After = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Any:
    """Newest first; `after` is the last job id seen; `metadata[key]=value` filters."""
    metadata = {
        match.group("key"): value
        for name, value in request.query_params.items()
        if (match := METADATA_QUERY.match(name))
    }
    rows = service.list_jobs(session, me.user, after=after, limit=limit, metadata=metadata)
    jobs, more = rows
    return page([service.job_object(session, job, row) for job, row in jobs], more)


@router.get("/jobs/{fine_tuning_job_id}", response_model=None, responses=ERRORS)
@openai_errors
def retrieve_job(fine_tuning_job_id: str, session: SessionDep, me: CurrentReader) -> Any:
    job, row = service.get_job(session, me.user, fine_tuning_job_id)
    return service.job_object(session, job, row)


@router.post("/jobs/{fine_tuning_job_id}/cancel", response_model=None, responses=ERRORS)
@openai_errors
def cancel_job(fine_tuning_job_id: str, session: SessionDep, me: CurrentTrainer) -> Any:
    """A waiting job at once, a running one at its next step."""
    job, row = service.get_job(session, me.user, fine_tuning_job_id)
    service.cancel(session, job, row)
    session.commit()
    session.refresh(job)
    return service.job_object(session, job, row)


@router.post("/jobs/{fine_tuning_job_id}/pause", response_model=None, responses=ERRORS)
@openai_errors
def pause_job(fine_tuning_job_id: str, session: SessionDep, me: CurrentTrainer) -> Any:
    """Stop the job and keep its checkpoints; `resume` queues it again from the newest."""
    job, row = service.get_job(session, me.user, fine_tuning_job_id)
    service.pause(session, job, row)
    session.commit()
    return service.job_object(session, job, row)


@router.post("/jobs/{fine_tuning_job_id}/resume", response_model=None, responses=ERRORS)
@openai_errors
def resume_job(
    fine_tuning_job_id: str, session: SessionDep, settings: SettingsDep, me: CurrentTrainer
) -> Any:
    job, row = service.get_job(session, me.user, fine_tuning_job_id)
    service.resume(session, settings, job, row)
    session.commit()
    jobs_service.offer(session, job=job)
    session.refresh(job)
    return service.job_object(session, job, row)


@router.get("/jobs/{fine_tuning_job_id}/events", response_model=None, responses=ERRORS)
@openai_errors
def list_events(
    fine_tuning_job_id: str,
    session: SessionDep,
    me: CurrentReader,
    after: After = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> Any:
    """Newest first; `after` is the last event id seen."""
    job, _ = service.get_job(session, me.user, fine_tuning_job_id)
    data, more = service.events(session, job, after=after, limit=limit)
    return page(data, more)


@router.get("/jobs/{fine_tuning_job_id}/checkpoints", response_model=None, responses=ERRORS)
@openai_errors
def list_checkpoints(
    fine_tuning_job_id: str,
    session: SessionDep,
    settings: SettingsDep,
    me: CurrentReader,
    after: After = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> Any:
    """The checkpoints the job keeps (`keep_checkpoints`, default 2), newest first."""
    job, row = service.get_job(session, me.user, fine_tuning_job_id)
    data, more = service.checkpoints(session, settings, job, row, after=after, limit=limit)
    return page(data, more)
