"""Server-rendered pages. They call the same services as the JSON API."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from app.api.deps import (
    CurrentAdmin,
    CurrentReader,
    CurrentTrainer,
    Offset,
    Public,
    SessionDep,
    SettingsDep,
    identify,
    make_router,
)
from app.core.config import get_settings
from app.core.errors import FieldError, InvalidInput, TunelabError
from app.core.i18n import N_, gettext
from app.models import JobStatus, Role
from app.schemas.job import JobCreate
from app.schemas.project import ProjectCreate
from app.services import access
from app.services import datasets as datasets_service
from app.services import evaluations as evaluations_service
from app.services import exports as exports_service
from app.services import jobs as jobs_service
from app.services import projects as projects_service
from app.services.accounts import users as accounts
from app.services.jobs import estimates as estimates_service
from app.web import form_tokens
from app.web.charts import line_chart
from app.web.rendering import FormFields, form_page, guide_context, render
from worker.spec.catalog import catalog_listing
from worker.spec.config import PRESETS
from worker.spec.method_support import method_choices

router = make_router(include_in_schema=False)
PAGE = 50


@router.get("/")
def home(request: Request, session: SessionDep, _: Public) -> Response:
    # Reviewers have no projects to see: their page is their review queue.
    principal = identify(request, session)
    if principal is None:
        target = "/login"
    elif principal.user.role == Role.reviewer:
        target = "/reviews"
    else:
        target = "/projects"
    return RedirectResponse(target, status_code=303)


@router.get("/projects")
def projects_page(
    request: Request, session: SessionDep, me: CurrentReader, offset: Offset = 0
) -> HTMLResponse:
    rows, total = projects_service.list_projects(
        session, user=me.user, limit=PAGE, offset=max(0, offset)
    )
    return render(
        request,
        "projects/list.html",
        projects=rows,
        total=total,
        offset=offset,
        page=PAGE,
        form={},
        errors=[],
        **guide_context(request, projects_service.guide_before_any_project() if not total else []),
    )


@router.post("/projects")
def create_project(
    request: Request, session: SessionDep, me: CurrentTrainer, form: FormFields
) -> Response:
    earlier = form_tokens.created_before(session, form=form, user=me.user, kind="project")
    if earlier:  # back and resubmit: the project this very form already created
        return RedirectResponse(f"/projects/{earlier}", status_code=303)
    data = {
        "name": str(form.get("name", "")).strip(),
        "task_description": str(form.get("task_description", "")),
        "domain": str(form.get("domain", "")),
        "system_prompt": str(form.get("system_prompt", "")),
        "success_criteria": [
            line.strip()
            for line in str(form.get("success_criteria", "")).splitlines()
            if line.strip()
        ],
    }
    try:
        body = ProjectCreate.model_validate(data)
        project = projects_service.create_project(session, data=body, creator=me.user)
    except (ValidationError, InvalidInput) as exc:
        session.rollback()
        rows, total = projects_service.list_projects(session, user=me.user, limit=PAGE, offset=0)
        return form_page(
            request,
            "projects/list.html",
            exc,
            form=form,
            projects=rows,
            total=total,
            offset=0,
            page=PAGE,
        )
    kept = form_tokens.remember(
        session, form=form, user=me.user, kind="project", object_id=project.id
    )
    session.commit()
    return RedirectResponse(f"/projects/{kept}", status_code=303)


def _project_context(session: SessionDep, me: Any, project_id: uuid.UUID) -> dict[str, Any]:
    project = access.project_for(session, me.user, project_id)
    datasets, _ = datasets_service.list_datasets(
        session, project_id=project_id, limit=200, offset=0
    )
    uploads, _ = datasets_service.list_uploads(session, project_id=project_id, limit=20, offset=0)
    jobs, _ = jobs_service.list_jobs(
        session, user=me.user, project_id=project_id, limit=PAGE, offset=0
    )
    return {
        "project": project,
        "datasets": datasets,
        "uploads": uploads,
        "jobs": jobs,
        # Nothing preset but the model and method: every other field is "auto", which on a CPU
        # worker means one pass over the data (a fixed step count cut or stretched it).
        "job_form": {"base_model": "smollm2-135m-instruct", "method": "lora"},
        "methods": method_choices(),
        "catalog": catalog_listing(),
        "presets": list(PRESETS),
        "cuda": get_settings().workers_have_cuda,
        "upload_errors": [],
        "upload_message": None,
        "job_errors": [],
        "members": access.members(session, project=project),
        "member_error": None,
        "priority_error": None,
        "priority_input": None,  # a refused value, shown again
    }


@router.get("/projects/{project_id}")
def project_page(
    project_id: uuid.UUID, request: Request, session: SessionDep, me: CurrentReader
) -> HTMLResponse:
    context = _project_context(session, me, project_id)
    steps = projects_service.guide(session, project=context["project"])
    return render(request, "projects/detail.html", **context, **guide_context(request, steps))


def project_page_with_error(
    request: Request, session: SessionDep, me: Any, project_id: uuid.UUID, exc: TunelabError
) -> HTMLResponse:
    """The project page again, with why the upload was refused."""
    context = _project_context(session, me, project_id)
    context["upload_message"] = exc.message
    context["upload_errors"] = exc.errors
    context["upload_error_count"] = exc.error_count
    return render(request, "projects/detail.html", exc.status_code, **context)


@router.post("/projects/{project_id}/members")
def add_member(
    project_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    me: CurrentTrainer,
    form: FormFields,
) -> Response:
    project = access.project_for(session, me.user, project_id)
    email = form.get("email", "")
    try:
        user = accounts.find_user(session, email=email)
    except TunelabError as exc:
        context = _project_context(session, me, project_id)
        context["member_error"] = exc.message
        context["member_email"] = email
        return render(request, "projects/detail.html", 422, **context)
    access.add_member(session, project=project, user=user, actor=me.user)
    session.commit()
    return RedirectResponse(f"/projects/{project_id}#members", status_code=303)


@router.post("/projects/{project_id}/priority")
def set_priority(
    project_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    me: CurrentAdmin,
    form: FormFields,
) -> Response:
    project = access.project_for(session, me.user, project_id)
    try:
        value = form.get("priority", "").strip()
        if not value.lstrip("-").isdigit():
            raise InvalidInput("the priority must be a whole number from -100 to 100")
        projects_service.set_priority(session, project=project, priority=int(value))
    except TunelabError as exc:
        session.rollback()
        context = _project_context(session, me, project_id)
        context["priority_error"] = exc.message
        context["priority_input"] = form.get("priority", "")
        return render(request, "projects/detail.html", 422, **context)
    session.commit()
    return RedirectResponse(f"/projects/{project_id}#priority", status_code=303)


def _job_request(project_id: uuid.UUID, form: dict[str, str]) -> JobCreate:
    """The job form as a job request; empty fields are left to "auto"."""
    # "gpu" names the GPU an estimate is for (the fragment reads it), not a training setting.
    fields = {k: v for k, v in form.items() if k not in ("csrf_token", "gpu", form_tokens.FIELD)}
    # "<dataset id>@<version number>": the job form lists every version of every dataset.
    dataset_id, _, number = fields.pop("dataset_id", "").partition("@")
    # The model picker's "advanced" field (a hub id, a folder, a .gguf file) replaces the
    # catalog choice when filled in.
    custom = fields.pop("base_model_custom", "").strip()
    if custom:
        fields["base_model"] = custom
    config: dict[str, Any] = {k: v for k, v in fields.items() if v.strip() != ""}
    try:
        return JobCreate(
            project_id=project_id,
            dataset_id=uuid.UUID(dataset_id),
            dataset_version=int(number) if number else None,
            config=config,
        )
    except ValueError:
        raise InvalidInput(
            N_("choose a dataset"),
            errors=[FieldError(field="dataset_id", message=N_("choose a dataset"))],
        ) from None


@router.post("/projects/{project_id}/jobs")
def start_job(
    project_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    me: CurrentTrainer,
    form: FormFields,
) -> Response:
    earlier = form_tokens.created_before(session, form=form, user=me.user, kind="job")
    if earlier:  # back and resubmit: the job this very form already started
        return RedirectResponse(f"/jobs/{earlier}", status_code=303)
    try:
        body = _job_request(project_id, form)
        job = jobs_service.create_job(session, settings=settings, data=body, user=me.user)
    except InvalidInput as exc:
        session.rollback()
        context = _project_context(session, me, project_id)
        context["job_errors"] = exc.errors
        context["job_form"] = form
        return render(request, "projects/detail.html", 422, **context)
    kept = form_tokens.remember(session, form=form, user=me.user, kind="job", object_id=job.id)
    if kept != job.id:
        return RedirectResponse(f"/jobs/{kept}", status_code=303)
    session.commit()
    jobs_service.offer(session, job=job)
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


@router.post("/projects/{project_id}/estimate")
def estimate_fragment(
    project_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    me: CurrentReader,
    form: FormFields,
) -> HTMLResponse:
    """The job form's estimate (memory, time, what "auto" chose), redrawn as the form changes;
    a method the model or the workers cannot run is named here, before queueing."""
    access.project_for(session, me.user, project_id)
    estimate: dict[str, Any] | None = None
    errors: list[FieldError] = []
    try:
        body = _job_request(project_id, form)
        config = jobs_service.validate_config(body.config)
        jobs_service.check_before_queueing(
            config, settings=settings, train_records=_train_records(session, me, body)
        )
        estimate = estimates_service.estimate_for_dataset(
            session,
            user=me.user,
            config=config,
            dataset_id=body.dataset_id,
            dataset_version=body.dataset_version,
            gpu_name=form.get("gpu") or None,
        )
    except TunelabError as exc:
        errors = exc.errors or [FieldError(message=exc.message)]
    if (
        estimate
        and estimate.get("available", True)
        and not settings.workers_have_cuda
        and estimate.get("device") != "cpu"
    ):
        estimate["warnings"] = [
            *estimate.get("warnings", []),
            gettext(
                "These workers have no NVIDIA GPU: the job trains on the CPU, far slower than "
                "this GPU estimate."
            ),
        ]
    # The model picker's table asks for one line per catalog model (?short=1).
    name = (
        "jobs/_estimate_short.html" if request.query_params.get("short") else "jobs/_estimate.html"
    )
    return render(request, name, estimate=estimate, errors=errors)


def _train_records(session: SessionDep, me: Any, body: JobCreate) -> int:
    dataset = access.dataset_for(session, me.user, body.dataset_id)
    version = datasets_service.version_of(dataset, body.dataset_version)
    return datasets_service.split_counts(version).get("train", version.records)


def _job_context(session: SessionDep, me: Any, job_id: uuid.UUID) -> dict[str, Any]:
    job = access.job_for(session, me.user, job_id)
    losses = jobs_service.list_metrics(session, job_id=job_id, name="loss")
    val_losses = jobs_service.list_metrics(session, job_id=job_id, name="val_loss")
    latest = {
        p.name: p.value
        for p in jobs_service.list_metrics(
            session, job_id=job_id, after_step=max(job.current_step - 1, -1)
        )
    }
    if val_losses:  # evaluated every few steps only: show the newest evaluation
        latest["val_loss"], latest["val_step"] = val_losses[-1].value, val_losses[-1].step
    evaluations, _ = evaluations_service.list_evaluations(
        session, user=me.user, limit=20, offset=0, job_id=job_id
    )
    return {
        "job": job,
        # The live part shows the job's evaluation as soon as the job that queued it is done.
        "evaluations": evaluations,
        "read": jobs_service.job_read(job),
        "project": projects_service.get_project(session, project_id=job.project_id),
        "events": jobs_service.list_events(session, job_id=job_id)[-200:],
        # The model and its exports are part of the live part: they show when the job is done.
        **_exports_context(session, job_id),
        "chart": line_chart(
            [(p.step, p.value) for p in losses],
            label=gettext("training and validation loss")
            if val_losses
            else gettext("training loss"),
            overlay=[(p.step, p.value) for p in val_losses],
        ),
        "latest": latest,
        "active": not JobStatus(job.status).finished,
    }


@router.get("/jobs/{job_id}")
def job_page(
    job_id: uuid.UUID, request: Request, session: SessionDep, me: CurrentReader
) -> HTMLResponse:
    return render(request, "jobs/detail.html", **_job_context(session, me, job_id))


def _exports_context(session: SessionDep, job_id: uuid.UUID) -> dict[str, Any]:
    """A job's trained model, its exports, and for each queued export what it waits for."""
    exports = exports_service.list_exports(session, job_id=job_id)
    waits = {
        e.id: exports_service.waiting_for(session, export=e)
        for e in exports
        if e.status == "queued"
    }
    return {
        "artifacts": jobs_service.list_artifacts(session, job_id=job_id),
        # One download per model: once a kind is exported, the export's link is the one.
        "exported_kinds": {e.kind for e in exports if e.status == "succeeded"},
        "exports": exports,
        "export_waits": waits,
    }


@router.get("/jobs/{job_id}/exports")
def job_exports(
    job_id: uuid.UUID, request: Request, session: SessionDep, me: CurrentReader
) -> HTMLResponse:
    """The job page's export list, refreshed while an export is being made."""
    job = access.job_for(session, me.user, job_id)
    return render(request, "jobs/_exports.html", job=job, **_exports_context(session, job_id))


@router.post("/jobs/{job_id}/exports")
def start_export(
    job_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    me: CurrentTrainer,
    form: FormFields,
) -> Response:
    job = access.job_for(session, me.user, job_id)
    try:
        export = exports_service.create_export(
            session, job_id=job_id, kind=form.get("kind", ""), dtype="auto", user=me.user
        )
    except TunelabError as exc:
        session.rollback()
        return render(
            request,
            "jobs/_exports.html",
            exc.status_code,
            job=job,
            export_error=exc.message,
            **_exports_context(session, job_id),
        )
    session.commit()
    exports_service.offer(session, export=export)
    return RedirectResponse(f"/jobs/{job_id}#exports", status_code=303)


@router.get("/jobs/{job_id}/live")
def job_live(
    job_id: uuid.UUID, request: Request, session: SessionDep, me: CurrentReader
) -> HTMLResponse:
    """The part of the job page that HTMX refreshes while the job is active."""
    return render(request, "jobs/_live.html", **_job_context(session, me, job_id))


@router.post("/jobs/{job_id}/cancel")
def cancel_job(
    job_id: uuid.UUID, request: Request, session: SessionDep, me: CurrentTrainer
) -> Response:
    access.job_for(session, me.user, job_id)
    try:
        jobs_service.cancel_job(session, job_id=job_id)
        session.commit()
    except TunelabError:
        session.rollback()
    if request.headers.get("hx-request"):
        return render(request, "jobs/_live.html", **_job_context(session, me, job_id))
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)


@router.post("/jobs/{job_id}/resume")
def resume_job(
    job_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    me: CurrentTrainer,
) -> Response:
    """Queue a cancelled or failed job again from its newest checkpoint."""
    access.job_for(session, me.user, job_id)
    try:
        job = jobs_service.resume_job(session, settings=settings, job_id=job_id)
    except TunelabError as exc:
        session.rollback()
        context = _job_context(session, me, job_id)
        return render(
            request,
            "jobs/detail.html",
            exc.status_code,
            evaluations=[],
            exports=exports_service.list_exports(session, job_id=job_id),
            resume_error=exc.message,
            **context,
        )
    session.commit()
    jobs_service.offer(session, job=job)
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)
