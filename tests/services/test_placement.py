"""Placement on Postgres, each test in a rolled-back transaction: the capacity classes a
worker serves and a job needs, jobs refused only beyond what any worker could have, the order
in which waiting jobs are claimed (priority, then turns between projects), the worker registry
and why a job waits, in English and Chinese."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import delete, text
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.db import utcnow
from app.core.errors import InvalidInput
from app.core.i18n import using_locale
from app.models import DatasetVersion, Job, JobStatus, Project, WorkerRecord
from app.services import leases
from app.services import workers as registry
from app.services.jobs.placement import place
from tests.services.rows import project_with_version
from worker.spec.config import TrainConfig
from worker.spec.placement import Capacity, Needs, parse_queue, queue_for, queues_for

BASE = "training"


def test_a_worker_serves_every_class_it_satisfies_and_a_job_the_smallest_it_needs() -> None:
    h100 = Capacity(gpus=2, gpu_name="NVIDIA H100 80GB HBM3", gpu_memory_gb=79.1, four_bit=True)
    assert h100.memory_class == 80
    served = queues_for(BASE, h100)
    assert "training.gpu-8g" in served and "training.gpu-80g-x2-4bit" in served
    assert "training.gpu-96g" not in served and "training.gpu-8g-x4" not in served
    assert queues_for(BASE, Capacity(gpus=1, gpu_memory_gb=22.5)) == [
        "training.gpu-8g",
        "training.gpu-16g",
        "training.gpu-24g",
    ]
    assert queues_for(BASE, Capacity()) == ["training.cpu"]

    assert queue_for(BASE, Needs(memory_gb=17.2)) == "training.gpu-24g"
    assert queue_for(BASE, Needs(memory_gb=None)) == "training.gpu-8g"  # no estimate: any GPU
    assert queue_for(BASE, Needs(memory_gb=30, gpus=3, four_bit=True)) == "training.gpu-32g-x4-4bit"
    assert queue_for(BASE, Needs(gpu=False)) == "training.cpu"
    assert queue_for(BASE, Needs(memory_gb=500)) is None
    for queue in served:
        needs = parse_queue(BASE, queue)
        assert needs is not None and queue_for(BASE, needs) == queue
    assert parse_queue(BASE, "training") is None and parse_queue(BASE, "other.gpu-8g") is None


def cluster_settings(**values: object) -> Settings:
    given: dict[str, object] = {
        "database_url": "postgresql://x/y",
        "broker_url": "redis://x",
        "default_queue": BASE,
        "worker_cuda": True,
        **values,
    }
    return Settings(**given)  # type: ignore[arg-type]


def config(**fields: object) -> TrainConfig:
    return TrainConfig.model_validate({"base_model": "qwen2.5-7b-instruct", **fields})


def test_a_job_is_placed_by_its_estimate_and_refused_only_beyond_any_worker() -> None:
    settings = cluster_settings()
    lora = place(config(method="lora"), settings=settings, version=None)
    assert lora.needs is not None and lora.needs.memory_gb is not None
    assert lora.queue == queue_for(BASE, lora.needs)
    assert lora.needs.memory_gb > 8  # a 7B model in bf16 needs more than the smallest card
    two = place(config(method="lora", gpus=2), settings=settings, version=None)
    assert two.queue == lora.queue + "-x2"
    with pytest.raises(InvalidInput) as too_many:
        place(config(method="lora", gpus=16), settings=settings, version=None)
    assert too_many.value.errors[0].field == "config.gpus"
    qlora = place(config(method="qlora"), settings=settings, version=None)
    assert qlora.queue.endswith("-4bit")
    assert qlora.needs is not None and qlora.needs.memory_gb < lora.needs.memory_gb
    # A local model without an estimate: any GPU worker.
    unknown = place(
        TrainConfig.model_validate({"base_model": "/srv/models/mine"}),
        settings=settings,
        version=None,
    )
    assert unknown.queue == "training.gpu-8g"
    # CPU workers, and embedded mode's one worker.
    cpu = place(config(), settings=cluster_settings(worker_cuda=False), version=None)
    assert cpu.queue == "training.cpu"
    embedded = place(
        config(), settings=cluster_settings(database_url=None, broker_url=None), version=None
    )
    assert embedded.queue == BASE and embedded.needs is None

    with pytest.raises(InvalidInput) as refused:
        place(config(method="lora"), settings=cluster_settings(max_gpu_memory_gb=8), version=None)
    assert "per GPU, more than a worker here can have (at most 8 GB)" in refused.value.message
    assert refused.value.errors[0].field == "config"
    with using_locale("zh_CN"):
        from app.core.messages import translate_message

        assert "GB" in translate_message(refused.value.message)
        assert translate_message(refused.value.message) != refused.value.message


# --- The order of claims ------------------------------------------------------------------


def make_project(db: Session, name: str, priority: int = 0) -> tuple[Project, DatasetVersion]:
    return project_with_version(db, name, priority)


def queue_jobs(
    db: Session, project: Project, version: DatasetVersion, queue: str, n: int, at: float
) -> list[Job]:
    rows = [
        Job(
            project_id=project.id,
            dataset_id=version.dataset_id,
            dataset_version_id=version.id,
            config={"base_model": "m"},
            status=JobStatus.queued,
            queue=queue,
            queued_at=utcnow() - timedelta(seconds=1000 - at - i * 0.01),
            result={},
        )
        for i in range(n)
    ]
    db.add_all(rows)
    db.flush()
    return rows


def run_one(db: Session, queue: str, worker: str = "w:1") -> Job | None:
    """One worker's turn: woken by any message of ``queue``, claim, finish."""
    row = leases.claim_next(db, leases.JOB, uuid.uuid4(), worker=worker, queues=[queue])
    if row is not None:
        assert leases.finish(db, leases.JOB, row.id, worker=worker, status="succeeded")
        db.flush()
    return row


def test_one_projects_fifty_jobs_do_not_starve_anothers_single_job(db_session: Session) -> None:
    queue = f"fair-{uuid.uuid4().hex[:8]}"
    busy, version_a = make_project(db_session, "busy")
    single, version_b = make_project(db_session, "single")
    fifty = queue_jobs(db_session, busy, version_a, queue, 50, at=0)
    (one,) = queue_jobs(db_session, single, version_b, queue, 1, at=10)  # queued after all 50

    order = [run_one(db_session, queue) for _ in range(51)]
    assert [j.id for j in order[:3] if j] == [fifty[0].id, one.id, fifty[1].id]
    assert run_one(db_session, queue) is None


def test_a_project_with_fewer_running_jobs_goes_first_with_several_workers(
    db_session: Session,
) -> None:
    queue = f"fair-{uuid.uuid4().hex[:8]}"
    busy, version_a = make_project(db_session, "busy")
    other, version_b = make_project(db_session, "other")
    queue_jobs(db_session, busy, version_a, queue, 5, at=0)
    (theirs,) = queue_jobs(db_session, other, version_b, queue, 1, at=10)
    first = leases.claim_next(db_session, leases.JOB, uuid.uuid4(), worker="a:1", queues=[queue])
    second = leases.claim_next(db_session, leases.JOB, uuid.uuid4(), worker="b:1", queues=[queue])
    assert first is not None and first.project_id == busy.id
    assert second is not None and second.id == theirs.id


def test_a_higher_priority_project_goes_first(db_session: Session) -> None:
    queue = f"fair-{uuid.uuid4().hex[:8]}"
    low, version_low = make_project(db_session, "low")
    high, version_high = make_project(db_session, "high", priority=5)
    queue_jobs(db_session, low, version_low, queue, 3, at=0)
    urgent = queue_jobs(db_session, high, version_high, queue, 2, at=10)
    order = [run_one(db_session, queue) for _ in range(5)]
    assert [j.id for j in order[:2] if j] == [urgent[0].id, urgent[1].id]
    assert {j.project_id for j in order[2:] if j} == {low.id}


def test_a_message_wakes_a_worker_for_waiting_work_of_any_of_its_queues(
    db_session: Session,
) -> None:
    small, big = f"fair-{uuid.uuid4().hex[:8]}", f"fair-{uuid.uuid4().hex[:8]}"
    low, version_low = make_project(db_session, "low")
    high, version_high = make_project(db_session, "high", priority=1)
    (named,) = queue_jobs(db_session, low, version_low, small, 1, at=0)
    (better,) = queue_jobs(db_session, high, version_high, big, 1, at=10)
    row = leases.claim_next(db_session, leases.JOB, named.id, worker="w:1", queues=[small, big])
    assert row is not None and row.id == better.id
    # The named job still waits, to be offered again; the other kinds take the named row.
    offer = leases.still_waiting(db_session, leases.JOB, named.id)
    assert offer is not None and offer.queue == small
    # Without the worker's queues, the named row's queue alone.
    again = leases.claim_next(db_session, leases.JOB, named.id, worker="w:2")
    assert again is not None and again.id == named.id
    assert leases.claim_next(db_session, leases.JOB, named.id, worker="w:3") is None


# --- The registry and why a job waits --------------------------------------------------------


def test_workers_register_go_offline_and_a_job_says_why_it_waits(db_session: Session) -> None:
    settings = cluster_settings(worker_offline_seconds=30)
    db_session.query(WorkerRecord).delete()
    small = Capacity(gpus=1, gpu_name="NVIDIA L4", gpu_memory_gb=22.5)
    registry.register(
        db_session,
        name="gpu-a:11",
        host="gpu-a",
        capacity=small,
        queues=[BASE, *queues_for(BASE, small)],
        models=["qwen2.5-0.5b-instruct"],
    )
    registry.register(
        db_session, name="old:12", host="old", capacity=Capacity(), queues=[], models=[]
    )
    db_session.get(WorkerRecord, "old:12").last_seen = utcnow() - timedelta(minutes=5)  # type: ignore[union-attr]
    db_session.flush()
    views = {w.name: w for w in registry.list_workers(db_session, settings=settings)}
    assert views["gpu-a:11"].online and not views["old:12"].online
    assert views["gpu-a:11"].capacity["memory_class"] == 24

    assert registry.waiting_reason(db_session, settings=settings, queue="training.gpu-16g") is None
    reason = registry.waiting_reason(db_session, settings=settings, queue="training.gpu-80g-x2")
    assert reason == (
        "No online worker can run this job: it needs 2 GPUs with 80 GB each, and the online "
        "workers have 1 × NVIDIA L4 (22 GB). It starts when a worker that can run it starts."
    )
    with using_locale("zh_CN"):
        chinese = registry.waiting_reason(
            db_session, settings=settings, queue="training.gpu-80g-x2"
        )
    assert chinese is not None and "NVIDIA L4" in chinese and "It starts" not in chinese

    registry.stopped(db_session, name="gpu-a:11")
    assert registry.online(db_session, settings=settings) == []
    assert registry.waiting_reason(db_session, settings=settings, queue="training.cpu") == (
        "No worker is online: the job starts when a worker that has a CPU starts."
    )


def test_workers_claiming_at_once_take_different_jobs_without_waiting() -> None:
    """Two workers in their own transactions: the first holds its claim uncommitted; the
    second skips the locked row (SKIP LOCKED) instead of waiting for it, and takes the next."""
    from app.core.db import get_engine

    queue = f"fair-{uuid.uuid4().hex[:8]}"
    engine = get_engine()
    with Session(engine) as setup:
        project, version = project_with_version(setup, "concurrent")
        queue_jobs(setup, project, version, queue, 2, at=0)
        setup.commit()
        project_id = project.id
    first, second = Session(engine), Session(engine)
    try:
        second.execute(text("SET LOCAL lock_timeout = '2s'"))
        a = leases.claim_next(first, leases.JOB, uuid.uuid4(), worker="a:1", queues=[queue])
        b = leases.claim_next(second, leases.JOB, uuid.uuid4(), worker="b:1", queues=[queue])
        assert a is not None and b is not None and a.id != b.id
        first.commit()
        second.commit()
    finally:
        first.close()
        second.close()
        with Session(engine) as cleanup:
            cleanup.execute(delete(Job).where(Job.project_id == project_id))
            cleanup.execute(delete(Project).where(Project.id == project_id))
            cleanup.commit()
