"""Evaluation pages: the project's report (verdict, models × metrics, chart), one evaluation with
every answer, and the form that starts an evaluation. They call the evaluations service."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import select

from app.api.deps import CurrentReader, CurrentTrainer, Offset, SessionDep, SettingsDep, make_router
from app.core.errors import FieldError, InvalidInput, TunelabError
from app.core.i18n import N_, gettext
from app.models import EvalStatus, Evaluation, Job, JobStatus, ReviewCampaign
from app.schemas.evaluation import EvaluationCreate
from app.services import access
from app.services import datasets as datasets_service
from app.services import evaluations as service
from app.web.display_words import metric_title, model_label
from app.web.rendering import FormFields, render
from worker.spec.catalog import DEFAULT_MODEL

router = make_router(include_in_schema=False)
SAMPLES_PAGE = 20
METRICS = ("bleu", "rouge1", "rouge2", "rougeL", "exact_match", "token_f1", "perplexity")
COLOURS = ("#98a2b3", "#3056d3", "#12b76a", "#f79009", "#7a5af8", "#ee46bc", "#06aed4", "#f04438")


def _fmt(metric: str, value: float) -> str:
    return f"{value:.2f}" if metric in ("bleu", "perplexity") else f"{value:.3f}"


def _signed(metric: str, value: float) -> str:
    return ("+" if value > 0 else "") + _fmt(metric, value)


@dataclass
class Cell:
    text: str
    interval: str
    tone: str = ""  # "better" | "worse" | "" for a difference whose interval excludes 0


def results_table(results: dict[str, Any], candidates: list[dict[str, Any]]) -> dict[str, Any]:
    """Rows of models (and their differences against the baseline) by metric columns."""
    models = results.get("models") or {}
    metrics = [m for m in METRICS if any(m in v for v in models.values())]
    baseline = results.get("baseline")
    rows = []
    for index, c in enumerate(candidates):
        values = models.get(c["key"]) or {}
        cells = [
            Cell(
                _fmt(m, values[m]["value"]),
                f"{_fmt(m, values[m]['low'])} – {_fmt(m, values[m]['high'])}",
            )
            if m in values
            else Cell("—", "")
            for m in metrics
        ]
        delta_cells = None
        deltas = (results.get("deltas") or {}).get(c["key"])
        if deltas:
            delta_cells = []
            for m in metrics:
                d = deltas.get(m)
                if d is None:
                    delta_cells.append(Cell("—", ""))
                    continue
                good = -1 if m == "perplexity" else 1
                tone = (
                    "better"
                    if d["low"] * good > 0 and d["high"] * good > 0
                    else "worse"
                    if d["low"] * good < 0 and d["high"] * good < 0
                    else ""
                )
                delta_cells.append(
                    Cell(
                        _signed(m, d["value"]),
                        gettext(
                            "%(low)s to %(high)s",
                            low=_signed(m, d["low"]),
                            high=_signed(m, d["high"]),
                        ),
                        tone,
                    )
                )
        rows.append(
            {
                "key": c["key"],
                "label": model_label(c),
                "baseline": c["key"] == baseline,
                "colour": COLOURS[index % len(COLOURS)],
                "cells": cells,
                "deltas": delta_cells,
                "generation": (results.get("generation") or {}).get(c["key"]),
            }
        )
    return {"metrics": [(m, metric_title(m)) for m in metrics], "rows": rows, "baseline": baseline}


@dataclass
class IntervalMark:
    x: float
    low: float
    high: float
    y: float
    colour: str
    title: str


def interval_chart(table: dict[str, Any], results: dict[str, Any], width: int = 640) -> dict:
    """Each model's value and 95% interval per metric on one 0–1 axis (BLEU divided by 100;
    perplexity, on its own scale, stays in the table)."""
    metrics = [m for m, _ in table["metrics"] if m != "perplexity"]
    models = results.get("models") or {}
    left, right, row, gap = 110, width - 20, 14, 10
    span = right - left
    marks: list[IntervalMark] = []
    groups = []
    y = 10.0
    for metric in metrics:
        top = y
        for r in table["rows"]:
            value = (models.get(r["key"]) or {}).get(metric)
            if value is None:
                continue
            scale = 100.0 if metric == "bleu" else 1.0

            def at(v: float, scale: float = scale) -> float:
                return round(left + max(0.0, min(1.0, v / scale)) * span, 1)

            marks.append(
                IntervalMark(
                    at(value["value"]),
                    at(value["low"]),
                    at(value["high"]),
                    y + row / 2,
                    r["colour"],
                    f"{r['label']}: {_fmt(metric, value['value'])} "
                    f"({_fmt(metric, value['low'])}–{_fmt(metric, value['high'])})",
                )
            )
            y += row
        groups.append(
            {
                "label": metric_title(metric) + (" /100" if metric == "bleu" else ""),
                "y": (top + y) / 2,
            }
        )
        y += gap
    ticks = [(round(left + t / 4 * span, 1), f"{t / 4:.2f}") for t in range(5)]
    return {
        "width": width,
        "height": int(y + 24),
        "left": left,
        "right": right,
        "marks": marks,
        "groups": groups,
        "ticks": ticks,
        "empty": not marks,
        "legend": [(r["label"], r["colour"]) for r in table["rows"]],
    }


def _evaluation_view(evaluation: Any, project: Any, read: Any = None) -> dict[str, Any]:
    read = read or service.evaluation_read(evaluation, project)
    results = evaluation.results or {}
    table = results_table(results, evaluation.candidates) if results else None
    return {
        "evaluation": evaluation,
        "read": read,
        "table": table,
        "chart": interval_chart(table, results) if table else None,
        "active": not EvalStatus(evaluation.status).finished,
    }


def _form_context(session: SessionDep, project: Any) -> dict[str, Any]:
    jobs = session.scalars(
        select(Job)
        .where(Job.project_id == project.id, Job.status == JobStatus.succeeded)
        .order_by(Job.created_at.desc())
        .limit(50)
    ).all()
    datasets, _ = datasets_service.list_datasets(
        session, project_id=project.id, limit=100, offset=0
    )
    # The form's own defaults must be a request the server accepts: without a job, the base
    # model the project last trained (else the catalog's default) on the newest data.
    newest = session.scalar(
        select(Job).where(Job.project_id == project.id).order_by(Job.created_at.desc()).limit(1)
    )
    return {
        "finished_jobs": jobs,
        "datasets": datasets,
        "default_base_model": str(newest.config.get("base_model")) if newest else DEFAULT_MODEL,
        "default_dataset": _newest_version(datasets),
    }


def _newest_version(datasets: Any) -> str:
    """ "<dataset id>@<number>" of the newest dataset's newest version; "" when none."""
    for dataset in datasets:
        if dataset.versions:
            newest = max(dataset.versions, key=lambda v: v.number)
            return f"{dataset.id}@{newest.number}"
    return ""


@router.get("/projects/{project_id}/report")
def report_page(
    project_id: uuid.UUID, request: Request, session: SessionDep, me: CurrentReader
) -> HTMLResponse:
    project = access.project_for(session, me.user, project_id)
    return render(request, "evaluations/report.html", **_report_context(session, project))


def _report_context(session: SessionDep, project: Any) -> dict[str, Any]:
    report = service.project_report(session, project=project)
    current = report["evaluation"]
    view: dict[str, Any] = {}
    row = session.get(Evaluation, current.id) if current is not None else None
    if row is not None:
        view = _evaluation_view(row, project, current)
    return {
        "project": project,
        "report": report,
        **view,
        **_form_context(session, project),
    }


@router.post("/projects/{project_id}/evaluations")
def start_evaluation(
    project_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    me: CurrentTrainer,
    form: FormFields,
) -> Response:
    """The report page's form: evaluate a finished job (or only the base model) now."""
    project = access.project_for(session, me.user, project_id)
    if not form.get("job_id", "").strip() and not form.get("dataset", "").strip():
        # Only a base model, prompted: "the chosen job's data" means the newest data here.
        form = {**form, "dataset": _form_context(session, project)["default_dataset"]}
    try:
        body = _evaluation_request(project_id, form)
        evaluation = service.create_evaluation(session, settings=settings, data=body, user=me.user)
    except InvalidInput as exc:
        session.rollback()
        context = _report_context(session, project)
        context.update(form_message=exc.message, form_errors=exc.errors, form=form)
        return render(request, "evaluations/report.html", 422, **context)
    session.commit()
    service.offer(session, evaluation=evaluation)
    return RedirectResponse(f"/evaluations/{evaluation.id}", status_code=303)


def _evaluation_request(project_id: uuid.UUID, form: dict[str, str]) -> EvaluationCreate:
    def number(name: str) -> int | None:
        value = form.get(name, "").strip()
        return int(value) if value.isdigit() else None

    job_id = form.get("job_id", "").strip()
    # "<dataset id>@<version number>", or empty for the chosen job's own data.
    dataset_id, _, version = form.get("dataset", "").partition("@")
    decoding: dict[str, Any] = {}
    if number("max_new_tokens"):
        decoding["max_new_tokens"] = number("max_new_tokens")
    models: list[dict[str, Any]] = []
    if not job_id and form.get("base_model", "").strip():
        models.append({"kind": "base", "base_model": form["base_model"].strip()})
    try:
        return EvaluationCreate(
            project_id=project_id,
            job_id=uuid.UUID(job_id) if job_id else None,
            models=models,
            baseline_k_shot=number("k_shot") or 0,
            dataset_id=uuid.UUID(dataset_id) if dataset_id else None,
            dataset_version=int(version) if version.isdigit() else None,
            split=form.get("split") or "test",
            max_samples=number("max_samples"),
            decoding=decoding,
        )
    except (ValueError, ValidationError):
        raise InvalidInput(
            N_("check the form: choose a finished job or name a base model"),
            errors=[FieldError(field="job_id", message=N_("choose a finished job"))],
        ) from None


@router.get("/evaluations/{evaluation_id}")
def evaluation_page(
    evaluation_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    me: CurrentReader,
    q: str = Query("", max_length=200),
    show: str = Query("all", pattern="^(all|worse|better|same)$"),
    order: str = Query("worst", pattern="^(worst|best|position)$"),
    offset: Offset = 0,
) -> HTMLResponse:
    evaluation = access.evaluation_for(session, me.user, evaluation_id)
    project = access.project_for(session, me.user, evaluation.project_id)
    samples, total = service.list_samples(
        session,
        evaluation=evaluation,
        q=q or None,
        show=show,
        order=order,
        limit=SAMPLES_PAGE,
        offset=offset,
    )
    return render(
        request,
        "evaluations/detail.html",
        project=project,
        samples=samples,
        total=total,
        q=q,
        show=show,
        order=order,
        offset=offset,
        page=SAMPLES_PAGE,
        labels={c["key"]: model_label(c) for c in evaluation.candidates},
        campaigns=_campaigns(session, evaluation.id),
        **_evaluation_view(evaluation, project),
    )


def _campaigns(session: SessionDep, evaluation_id: uuid.UUID) -> list[Any]:
    return list(
        session.scalars(
            select(ReviewCampaign)
            .where(ReviewCampaign.evaluation_id == evaluation_id)
            .order_by(ReviewCampaign.created_at.desc())
        ).all()
    )


@router.get("/evaluations/{evaluation_id}/live")
def evaluation_live(
    evaluation_id: uuid.UUID, request: Request, session: SessionDep, me: CurrentReader
) -> Response:
    """The status part of the evaluation page, polled while it runs; a finished evaluation
    reloads the whole page (its results appear)."""
    evaluation = access.evaluation_for(session, me.user, evaluation_id)
    project = access.project_for(session, me.user, evaluation.project_id)
    view = _evaluation_view(evaluation, project)
    response = render(request, "evaluations/_live.html", project=project, **view)
    if not view["active"]:
        response.headers["HX-Refresh"] = "true"
    return response


@router.post("/evaluations/{evaluation_id}/cancel")
def cancel_evaluation(
    evaluation_id: uuid.UUID, session: SessionDep, me: CurrentTrainer
) -> Response:
    evaluation = access.evaluation_for(session, me.user, evaluation_id)
    try:
        service.cancel_evaluation(session, evaluation=evaluation)
        session.commit()
    except TunelabError:
        session.rollback()
    return RedirectResponse(f"/evaluations/{evaluation_id}", status_code=303)
