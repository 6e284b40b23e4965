from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import Query, Response
from fastapi.responses import StreamingResponse

from app.api.deps import (
    CurrentReader,
    CurrentTrainer,
    Limit,
    Offset,
    SessionDep,
    SettingsDep,
    make_router,
)
from app.models import EvalStatus
from app.schemas.common import Page
from app.schemas.evaluation import (
    EvalSampleRead,
    EvaluationCreate,
    EvaluationRead,
    ProjectReport,
)
from app.services import access
from app.services import evaluations as service
from app.services.evaluations import export as export

router = make_router(tags=["evaluations"])


@router.post("/evaluations", status_code=201, response_model=EvaluationRead)
def create_evaluation(
    body: EvaluationCreate, session: SessionDep, settings: SettingsDep, me: CurrentTrainer
) -> EvaluationRead:
    """Queue an evaluation: a finished job against its prompting baseline, or any models
    (base models with a prompt, zero- or k-shot; finished jobs; checkpoints)."""
    evaluation = service.create_evaluation(session, settings=settings, data=body, user=me.user)
    session.commit()
    service.offer(session, evaluation=evaluation)
    project = access.project_for(session, me.user, evaluation.project_id)
    return service.evaluation_read(evaluation, project)


@router.get("/evaluations", response_model=Page[EvaluationRead])
def list_evaluations(
    session: SessionDep,
    me: CurrentReader,
    limit: Limit = 50,
    offset: Offset = 0,
    project_id: uuid.UUID | None = None,
    job_id: uuid.UUID | None = None,
    status: Annotated[EvalStatus | None, Query()] = None,
) -> Page[EvaluationRead]:
    rows, total = service.list_evaluations(
        session,
        user=me.user,
        limit=limit,
        offset=offset,
        project_id=project_id,
        job_id=job_id,
        status=status,
    )
    items = [
        service.evaluation_read(e, access.project_for(session, me.user, e.project_id)) for e in rows
    ]
    return Page(items=items, total=total, limit=limit, offset=offset)


@router.get("/evaluations/{evaluation_id}", response_model=EvaluationRead)
def get_evaluation(
    evaluation_id: uuid.UUID, session: SessionDep, me: CurrentReader
) -> EvaluationRead:
    evaluation = access.evaluation_for(session, me.user, evaluation_id)
    project = access.project_for(session, me.user, evaluation.project_id)
    return service.evaluation_read(evaluation, project)


@router.post("/evaluations/{evaluation_id}/cancel", response_model=EvaluationRead)
def cancel_evaluation(
    evaluation_id: uuid.UUID, session: SessionDep, me: CurrentTrainer
) -> EvaluationRead:
    evaluation = access.evaluation_for(session, me.user, evaluation_id)
    evaluation = service.cancel_evaluation(session, evaluation=evaluation)
    session.commit()
    project = access.project_for(session, me.user, evaluation.project_id)
    return service.evaluation_read(evaluation, project)


@router.get("/evaluations/{evaluation_id}/samples", response_model=Page[EvalSampleRead])
def list_samples(
    evaluation_id: uuid.UUID,
    session: SessionDep,
    me: CurrentReader,
    limit: Limit = 50,
    offset: Offset = 0,
    q: Annotated[
        str | None, Query(max_length=200, description="text in the prompt, reference or answers")
    ] = None,
    show: Annotated[
        Literal["all", "worse", "better", "same"],
        Query(description="how the fine-tuned model did against the baseline"),
    ] = "all",
    order: Annotated[
        Literal["worst", "best", "position"],
        Query(description="worst: fine-tuned worse than baseline first"),
    ] = "worst",
) -> Page[EvalSampleRead]:
    """Every example with each model's answer and scores, searchable and filterable."""
    evaluation = access.evaluation_for(session, me.user, evaluation_id)
    rows, total = service.list_samples(
        session, evaluation=evaluation, q=q, show=show, order=order, limit=limit, offset=offset
    )
    return Page(
        items=[EvalSampleRead.model_validate(r) for r in rows],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get(
    "/evaluations/{evaluation_id}/export",
    responses={200: {"content": {"application/json": {}, "text/csv": {}}}},
)
def export_evaluation(
    evaluation_id: uuid.UUID,
    session: SessionDep,
    me: CurrentReader,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> Response:
    """Download the evaluation with every sample, as JSON or CSV."""
    evaluation = access.evaluation_for(session, me.user, evaluation_id)
    project = access.project_for(session, me.user, evaluation.project_id)
    samples = service.all_samples(session, evaluation_id=evaluation.id)
    name = f"evaluation-{str(evaluation.id)[:8]}.{format}"
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    if format == "csv":
        return StreamingResponse(
            export.csv_rows(evaluation, samples),
            media_type="text/csv; charset=utf-8",
            headers=headers,
        )
    read = service.evaluation_read(evaluation, project)
    return Response(
        export.json_document(read, samples), media_type="application/json", headers=headers
    )


@router.get("/projects/{project_id}/report", response_model=ProjectReport)
def project_report(project_id: uuid.UUID, session: SessionDep, me: CurrentReader) -> ProjectReport:
    """The project's newest finished evaluation: models × metrics with intervals and
    differences against the prompting baseline, and the verdict on each success criterion."""
    project = access.project_for(session, me.user, project_id)
    return ProjectReport.model_validate(service.project_report(session, project=project))
