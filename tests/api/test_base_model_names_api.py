"""Base models named through the API and the web forms, against the live cluster: a catalog
name, a hub id or a folder inside TUNELAB_MODEL_DIRS is accepted; URLs, relative paths,
pickle files and paths outside the allowed folders are refused at once with one message that
does not tell whether a path exists on the server, and nothing is created. A worker refuses
such a name again, for rows made before the check existed."""

from __future__ import annotations

import re
import tempfile
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.core.config import get_settings
from app.core.db import get_sessionmaker, utcnow
from app.models import DatasetVersion, Evaluation, Job, JobStatus
from app.services import leases
from app.services.queue import offer
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.factories import (
    alpaca_records,
    create_dataset,
    create_project,
    tiny_config,
    wait_for_status,
)
from tests.live import LiveServer, wait_for
from worker.spec.model_names import REFUSED

REPOSITORY = Path(__file__).resolve().parents[2]
TEMP = Path(tempfile.gettempdir()).resolve()


def outside_folder() -> Path:
    """An existing folder outside TUNELAB_MODEL_DIRS (the system temp folder in the tests)."""
    for folder in (REPOSITORY, Path("/usr/share"), Path("/usr")):
        if folder.is_dir() and TEMP not in (folder.resolve(), *folder.resolve().parents):
            return folder
    raise AssertionError("no folder outside the temp folder to test with")


def hostile(kind: str, tmp_path: Path) -> str:
    """The base model a hostile request names; files it needs are made under ``tmp_path``."""
    if kind == "pt file":
        weights = tmp_path / "weights.pt"
        weights.write_bytes(b"\x80\x04K\x01.")  # a pickle
        return str(weights)
    if kind == "outside folder":
        return str(outside_folder())
    if kind == "symlink out":
        link = tmp_path / "models-link"
        link.symlink_to("/etc")
        return str(link)
    return kind


HOSTILE = [
    "/etc",
    "../../",
    "file:///etc/passwd",
    "http://127.0.0.1:6379/",
    "pt file",
    "outside folder",
    "symlink out",
    "~/.ssh",
    "./model",
    "   ",
    "owner/model\n",
    "x" * 501,
]
# An existing path and its missing twin: the answers must not tell them apart.
TWINS = [
    ("/etc", "/etc-no-such-folder"),
    (str(outside_folder()), f"{outside_folder()}-no-such-folder"),
    ("/etc/passwd", "/etc/no-such-file"),
]


def refusal_body(field: str) -> dict[str, Any]:
    return {
        "detail": f"{field}: {REFUSED}",
        "code": "invalid_input",
        "errors": [{"message": REFUSED, "field": field, "line": None}],
        "error_count": 1,
        # The message in the request's language (English here), beside the detail.
        "message": f"{field}: {REFUSED}",
    }


@pytest.fixture(scope="module")
def project_and_data(api_module: httpx.Client) -> tuple[str, str]:
    project = create_project(api_module, name="base models")
    dataset = create_dataset(api_module, project["id"], alpaca_records(16))
    return project["id"], dataset["id"]


@pytest.fixture(scope="module")
def api_module(cluster: LiveServer, admin_token: str) -> Any:
    with httpx.Client(
        base_url=cluster.url + "/api/v1",
        timeout=60,
        headers={"Authorization": f"Bearer {admin_token}"},
    ) as client:
        yield client


def jobs_total(api: httpx.Client, project_id: str) -> int:
    response = api.get("/jobs", params={"project_id": project_id})
    assert response.status_code == 200, response.text
    return int(response.json()["total"])


def post_job(
    api: httpx.Client, project_and_data: tuple[str, str], base_model: str, tiny_model: Path
) -> httpx.Response:
    project_id, dataset_id = project_and_data
    config = tiny_config(tiny_model, base_model=base_model)
    return api.post(
        "/jobs", json={"project_id": project_id, "dataset_id": dataset_id, "config": config}
    )


@pytest.mark.parametrize("kind", HOSTILE, ids=lambda kind: repr(kind[:24]))
def test_a_hostile_base_model_is_refused_at_creation_and_no_job_is_made(
    api: httpx.Client,
    project_and_data: tuple[str, str],
    tiny_model: Path,
    tmp_path: Path,
    kind: str,
) -> None:
    before = jobs_total(api, project_and_data[0])
    response = post_job(api, project_and_data, hostile(kind, tmp_path), tiny_model)
    assert response.status_code == 422, response.text
    assert response.json() == refusal_body("config.base_model")
    assert jobs_total(api, project_and_data[0]) == before


def test_existing_and_missing_paths_are_refused_alike(
    api: httpx.Client, project_and_data: tuple[str, str], tiny_model: Path, tmp_path: Path
) -> None:
    dangling = tmp_path / "dangling"
    dangling.symlink_to("/no-such-folder-for-tunelab")
    twins = [*TWINS, (hostile("symlink out", tmp_path), str(dangling))]
    for existing, missing in twins:
        answers = [
            post_job(api, project_and_data, name, tiny_model) for name in (existing, missing)
        ]
        assert [a.status_code for a in answers] == [422, 422]
        assert answers[0].json() == answers[1].json() == refusal_body("config.base_model")


def test_a_catalog_name_a_hub_id_and_a_folder_inside_an_allowed_dir_are_accepted(
    api: httpx.Client, project_and_data: tuple[str, str], tiny_model: Path, tmp_path: Path
) -> None:
    link = tmp_path / "same-model"
    link.symlink_to(tiny_model)  # a symlink that stays inside the allowed folder
    # Hub models are not downloaded in the tests: those jobs fail on the worker, quickly.
    for name in ("qwen2.5-0.5b-instruct", "Qwen/Qwen2.5-0.5B-Instruct", str(tiny_model), str(link)):
        response = post_job(api, project_and_data, name, tiny_model)
        assert response.status_code == 201, (name, response.text)
        job = response.json()
        assert job["config"]["base_model"] == name
        api.post(f"/jobs/{job['id']}/cancel")  # keep the one test worker free


def test_estimates_refuse_a_hostile_base_model(api: httpx.Client) -> None:
    for name in ("/etc", "/etc-no-such-folder", "file:///etc/passwd", "../../"):
        response = api.post("/estimates", json={"base_model": name})
        assert response.status_code == 422, response.text
        assert response.json() == refusal_body("config.base_model")
    assert api.post("/estimates", json={"base_model": "smollm2-135m-instruct"}).status_code == 200


def test_evaluations_refuse_a_hostile_base_model_and_make_none(
    api: httpx.Client, project_and_data: tuple[str, str], tiny_model: Path
) -> None:
    project_id, dataset_id = project_and_data

    def evaluations() -> int:
        return int(api.get("/evaluations", params={"project_id": project_id}).json()["total"])

    before = evaluations()
    for name in ("/etc", "/etc-no-such-folder", "http://127.0.0.1:6379/", str(outside_folder())):
        response = api.post(
            "/evaluations",
            json={
                "project_id": project_id,
                "dataset_id": dataset_id,
                "split": "all",
                "models": [
                    {"kind": "base", "base_model": str(tiny_model)},
                    {"kind": "base", "base_model": name},
                ],
            },
        )
        assert response.status_code == 422, response.text
        assert response.json() == refusal_body("models.1.base_model")
    assert evaluations() == before


def browser_login(cluster: LiveServer) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=cluster.url, timeout=60)
    form = client.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert csrf is not None
    response = client.post(
        "/login",
        data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "csrf_token": csrf.group(1)},
    )
    assert response.status_code == 303, response.text
    page = client.get("/projects")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    return client, token.group(1)


def test_the_job_form_refuses_a_hostile_base_model(
    api: httpx.Client, cluster: LiveServer, project_and_data: tuple[str, str]
) -> None:
    project_id, dataset_id = project_and_data
    before = jobs_total(api, project_id)
    client, csrf = browser_login(cluster)
    try:
        for name in ("/etc", "/etc-no-such-folder"):
            fields = {"base_model": name, "method": "lora", "max_steps": "2"}
            form = {**fields, "dataset_id": dataset_id, "csrf_token": csrf}
            page = client.post(f"/projects/{project_id}/jobs", data=form, follow_redirects=False)
            assert page.status_code == 422, page.text
            assert "(TUNELAB_MODEL_DIRS)" in page.text and "config.base_model" in page.text
            estimate = client.post(f"/projects/{project_id}/estimate", data=form)
            assert "(TUNELAB_MODEL_DIRS)" in estimate.text
    finally:
        client.close()
    assert jobs_total(api, project_id) == before


def queue_old_job(project_id: str, dataset_id: str, base_model: str) -> str:
    """A job row as one made before the check could hold it, handed to the worker."""
    settings = get_settings()
    with get_sessionmaker()() as session:
        version = session.scalar(
            select(DatasetVersion).where(DatasetVersion.dataset_id == uuid.UUID(dataset_id))
        )
        assert version is not None
        job = Job(
            project_id=uuid.UUID(project_id),
            dataset_id=uuid.UUID(dataset_id),
            dataset_version_id=version.id,
            config={"base_model": base_model, "max_steps": 1},
            status=JobStatus.queued,
            queue=settings.default_queue,
            queued_at=utcnow(),
            result={},
            evaluate_after=False,
        )
        session.add(job)
        session.commit()
        offer(session, leases.JOB, job.id, job.queue)
        return str(job.id)


def test_the_worker_refuses_a_hostile_base_model_of_an_old_job(
    api: httpx.Client, project_and_data: tuple[str, str]
) -> None:
    project_id, dataset_id = project_and_data
    errors = set()
    for name in ("/etc", "/etc-no-such-folder", "../../", "http://127.0.0.1:6379/"):
        done = wait_for_status(api, queue_old_job(project_id, dataset_id, name))
        assert done["status"] == "failed"
        errors.add(done["error"])
    assert errors == {f"base_model: {REFUSED}"}


def test_the_worker_says_the_same_of_a_missing_and_an_unusable_allowed_path(
    api: httpx.Client, project_and_data: tuple[str, str], tiny_model: Path, tmp_path: Path
) -> None:
    (tmp_path / "empty-folder").mkdir()
    (tmp_path / "broken.gguf").write_bytes(b"not gguf")
    unreadable = tmp_path / "unreadable"
    unreadable.mkdir()
    (unreadable / "config.json").write_text("{not json")
    errors = set()
    for name in ("missing-folder", "empty-folder", "broken.gguf", "unreadable"):
        path = str(tmp_path / name)
        response = post_job(api, project_and_data, path, tiny_model)
        assert response.status_code == 201, response.text
        done = wait_for_status(api, response.json()["id"])
        assert done["status"] == "failed"
        errors.add(done["error"].replace(path, "PATH"))
    assert errors == {
        "Model 'PATH' could not be used: it is not a model folder with a config.json, nor a "
        ".gguf file, that the workers can read."
    }


def test_the_worker_refuses_a_hostile_base_model_of_an_old_evaluation(
    api: httpx.Client, project_and_data: tuple[str, str]
) -> None:
    project_id, dataset_id = project_and_data
    settings = get_settings()
    with get_sessionmaker()() as session:
        version = session.scalar(
            select(DatasetVersion).where(DatasetVersion.dataset_id == uuid.UUID(dataset_id))
        )
        assert version is not None
        candidate = {
            "key": "base-1",
            "label": "Base",
            "kind": "base",
            "base_model": "/etc",
            "job_id": None,
            "checkpoint": None,
            "method": None,
            "k_shot": 0,
            "system_prompt": None,
        }
        evaluation = Evaluation(
            project_id=uuid.UUID(project_id),
            dataset_version_id=version.id,
            split="all",
            candidates=[candidate],
            settings={"decoding": {}, "max_samples": 2, "examples": 2, "baseline": None},
            status=JobStatus.queued,
            queue=settings.default_queue,
            queued_at=utcnow(),
            progress={},
            results={},
        )
        session.add(evaluation)
        session.commit()
        evaluation_id = evaluation.id
        offer(session, leases.EVALUATION, evaluation_id, evaluation.queue)

    def finished() -> dict[str, Any] | None:
        body = api.get(f"/evaluations/{evaluation_id}").json()
        return body if body["status"] in ("succeeded", "failed", "cancelled") else None

    done = wait_for(finished, 120, what="the evaluation to finish")
    assert done["status"] == "failed"
    assert done["error"] == f"base_model: {REFUSED}"
