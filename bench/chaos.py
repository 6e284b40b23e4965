"""Chaos and load: kill, restart and flood tunelab, and check that nothing was lost.

    python bench/chaos.py                 # the seven scenarios at full size (~20 min, 2 cores)
    python bench/chaos.py --quick         # the smallest size of each, for trying it out
    python bench/chaos.py --only 1,4      # some scenarios
    python bench/chaos.py --ci            # what tests/test_chaos_bench.py runs

One command against real processes on this machine: it starts a Postgres cluster of its own
(initdb + pg_ctl on a free port), a Redis of its own, `tunelab serve` and Celery workers, and
stops all of them at the end. The machine's shared Postgres and Redis are never touched.
Jobs train a random 2-layer Llama (hidden size 32) for a few dozen steps on CPU.

1. worker SIGKILL mid-training (2 kills per job, at random steps): every job succeeds once,
   its loss curve equals an uninterrupted run's within 1e-6, no duplicate or missing point;
   reports the steps trained twice (work lost to checkpoint spacing).
2. SIGKILL of the worker during an evaluation, an export and a deployment start: each reaches
   a final state; no export half-written or reported good without its archive.
3. `tunelab serve --worker` stopped by SIGTERM and SIGKILL with a job running: no orphan
   worker, no job trained twice.
4. Broker restart with its data lost (50 queued, 2 running): all finish, once.
5. Postgres restart mid-run: nothing lost; requests during the outage get 503 + Retry-After.
6. Load (chaos_load.py): concurrent API clients in cluster and embedded mode; errors,
   latency percentiles, uploads present afterwards, job status rate against bare FastAPI.
7. Hostile files (chaos_hostile.py): each refused with a 4xx in under 2 s, nothing on disk.

Prints one JSON line per scenario, then a summary table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.chaos_stack import (
    FINISHED,
    Stack,
    alive,
    emit,
    job_record,
    pid_of,
    project_with_data,
    queue_job,
    timed,
    training_once,
    wait_all,
)
from tests.live import wait_for


def _kill_holder(stack: Stack, worker: str | None) -> bool:
    """SIGKILL the bench's worker named by a lease and start another in its place."""
    pid = pid_of(worker)
    ours = {p.pid: p for p in stack.live_workers()}
    if pid not in ours:
        return False
    os.kill(pid, signal.SIGKILL)
    ours[pid].wait()
    stack.start_worker()
    return True


# --- 1. worker SIGKILL mid-training ---------------------------------------------------------


def worker_kills(stack: Stack, *, kills: int = 20, steps: int = 40, workers: int = 2) -> dict:
    """Kill the worker of a running job at planned random steps, 2 kills per job at most (a
    job has 3 attempts), and compare every curve with an uninterrupted run."""
    rng = random.Random(16)
    jobs = (kills + 1) // 2
    with stack.api() as api:
        project, dataset = project_with_data(api)
        config = stack.config(steps)
        reference = queue_job(api, project, dataset, config)
        ids = [queue_job(api, project, dataset, config) for _ in range(jobs)]
        per_job = [2] * (kills // 2) + [1] * (kills % 2)
        plan = {
            job: sorted(rng.sample(range(2, steps - 1), n))
            for job, n in zip(ids, per_job, strict=True)
        }
        for _ in range(workers):
            stack.start_worker()
        landed: list[dict[str, Any]] = []
        missed = 0
        deadline = time.monotonic() + 120 + 30 * jobs
        while any(plan.values()) and time.monotonic() < deadline:
            for job_id, at in plan.items():
                if not at:
                    continue
                job = api.get(f"/jobs/{job_id}").json()
                if job["status"] in FINISHED:
                    missed += len(at)
                    at.clear()
                    continue
                if job["status"] != "running" or job["current_step"] < at[0]:
                    continue
                if _kill_holder(stack, job["worker"]):
                    landed.append({"job": job_id, "step": job["current_step"]})
                    at.pop(0)
            time.sleep(0.2)
        rows = wait_all(api, "/jobs", [reference, *ids], timeout=300 + 30 * jobs)
        ref = dict(job_record(api, reference)["loss"])
        records = {job_id: job_record(api, job_id) for job_id in ids}
    problems = {j: p for j, r in records.items() if (p := training_once(r))}
    worst = 0.0
    for record in records.values():
        for step, value in record["loss"]:
            worst = max(worst, abs(value - ref.get(step, float("inf"))))
    # Work lost: the steps between the last checkpoint and the kill, trained again.
    every = config["checkpoint_every"]
    repeated = sum(k["step"] - (k["step"] // every) * every for k in landed)
    succeeded_once = sum(1 for j in ids if rows[j]["status"] == "succeeded" and j not in problems)
    ok = not problems and worst <= 1e-6 and missed == 0 and succeeded_once == len(ids)
    return {
        "scenario": "worker_sigkill",
        "kills": len(landed),
        "kills_missed": missed,
        "jobs": len(ids),
        "succeeded_once": succeeded_once,
        "max_loss_diff": worst,
        "duplicate_or_missing_points": sum(
            any("metric points" in p for p in ps) for ps in problems.values()
        ),
        "repeated_steps": repeated,
        "problems": problems,
        "ok": ok,
        "summary": f"{succeeded_once}/{len(ids)} jobs once after {len(landed)} kills; "
        f"max loss diff {worst:.1e}; {repeated} steps repeated",
    }


# --- 2. SIGKILL during an evaluation, an export and a deployment start ----------------------


def _export_is_whole(api: httpx.Client, export: dict[str, Any]) -> bool:
    """A succeeded export's archive downloads whole, at its stated size, as a readable tar."""
    response = api.get(f"/exports/{export['id']}/download")
    if response.status_code != 200 or len(response.content) != export["size_bytes"]:
        return False
    import io

    try:
        with tarfile.open(fileobj=io.BytesIO(response.content)) as tar:
            return bool(tar.getnames())
    except tarfile.TarError:
        return False


def _leftovers(stack: Stack) -> list[str]:
    """Half-written export files still on disk: staging folders and partial archives."""
    root = Path(stack.env["TUNELAB_DATA_DIR"])
    return [
        str(p.relative_to(root))
        for p in root.rglob(".*")
        if "exports" in p.parts and (p.name.endswith(".partial") or p.is_dir())
    ]


def _holder(stack: Stack, table: str, item: str) -> tuple[str | None, str] | None:
    """(worker, status) of a leased row once a worker holds it or it has ended."""
    from sqlalchemy import create_engine, text

    engine = create_engine(stack.env["TUNELAB_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            worker, status = conn.execute(
                text(f"SELECT worker, status FROM {table} WHERE id = :id"), {"id": item}
            ).one()
    finally:
        engine.dispose()
    if worker:
        return worker, status
    return (None, status) if status in FINISHED | {"running", "stopped"} else None


def side_kills(stack: Stack, *, rounds: int = 5) -> dict:
    with stack.api() as api:
        while len(stack.live_workers()) < 1:
            stack.start_worker()
        project, dataset = project_with_data(api)
        job = queue_job(api, project, dataset, stack.config(4))
        trained = wait_all(api, "/jobs", [job], timeout=300)[job]
        assert trained["status"] == "succeeded", trained["error"]
        outcomes: dict[str, list[str]] = {"evaluation": [], "export": [], "deployment": []}
        landed = {k: 0 for k in outcomes}
        bad_exports = 0
        for n in range(rounds):
            # One at a time: a deployment holds its worker while it runs, and with a single
            # worker anything queued behind it would wait until it stops.
            requests = {
                "evaluation": (
                    "/evaluations",
                    "/evaluations",
                    {"project_id": project, "job_id": job},
                ),
                "export": (
                    "/exports",
                    f"/jobs/{job}/exports",
                    {"kind": "merged" if n % 2 else "adapter"},
                ),
                "deployment": (
                    "/deployments",
                    "/deployments",
                    {"project_id": project, "name": f"chaos-{n}", "job_ids": [job]},
                ),
            }
            for kind, (path, post_to, body) in requests.items():
                response = api.post(post_to, json=body)
                assert response.status_code == 201, response.text
                item = response.json()["id"]
                # Kill the holder as soon as it holds the work (a start, an export, a load).
                # Exports and deployments do not show their worker: read the lease's row.
                table = {"evaluation": "evaluations", "export": "exports"}.get(kind, "deployments")
                holder = wait_for(
                    lambda table=table, item=item: _holder(stack, table, item),
                    120,
                    interval=0.1,
                    what=f"the {kind} to be taken",
                )
                if holder[0] and _kill_holder(stack, holder[0]):
                    landed[kind] += 1
                # A deployment's lasting states are running, stopped and failed.
                final = {"running", "stopped", "failed"} if kind == "deployment" else FINISHED
                row = wait_all(api, path, [item], timeout=300, done=final)[item]
                outcomes[kind].append(row["status"])
                if kind == "deployment" and row["status"] == "running":
                    api.post(f"/deployments/{item}/stop")
                    wait_all(api, path, [item], timeout=120, done={"stopped", "failed"})
                if (
                    kind == "export"
                    and row["status"] == "succeeded"
                    and not _export_is_whole(api, row)
                ):
                    bad_exports += 1
    leftovers = _leftovers(stack)
    finals = sum(len(v) for v in outcomes.values())
    ok = finals == 3 * rounds and bad_exports == 0 and not leftovers
    return {
        "scenario": "side_sigkill",
        "kills_landed": landed,
        "final_states": finals,
        "outcomes": outcomes,
        "bad_exports": bad_exports,
        "leftover_partial_files": leftovers,
        "ok": ok,
        "summary": f"{finals}/{3 * rounds} final states ({sum(landed.values())} kills landed); "
        f"{bad_exports} bad exports, {len(leftovers)} partial files left",
    }


# --- 3. `tunelab serve` stopped with SIGTERM and SIGKILL --------------------------------------


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def serve_stops(stack: Stack, *, rounds: int = 5, steps: int = 30) -> dict:
    """Serve with its own worker (``--worker``), a job running, stopped each way ``rounds``
    times; the next start finishes it. No orphan worker; no job trained twice at once."""
    stack.stop_server()
    stack.stop_workers()
    orphans = 0
    ids: list[str] = []
    signals = [signal.SIGTERM, signal.SIGKILL] * rounds
    for sig in signals:
        server = stack.start_server(worker=True)
        with stack.api() as api:
            if not ids:
                project, dataset = project_with_data(api)
            ids.append(queue_job(api, project, dataset, stack.config(steps)))
            wait_for(
                lambda api=api: any(
                    api.get(f"/jobs/{j}").json()["current_step"] >= 1 for j in ids[-2:]
                ),
                180,
                interval=0.3,
                what="a job to train under serve's worker",
            )
        workers = _children(server.process.pid)
        server.process.send_signal(sig)
        server.process.wait(timeout=60)
        try:
            wait_for(
                lambda workers=workers: not any(alive(w) for w in workers),
                60,
                what="the worker to stop",
            )
        except AssertionError:
            orphans += 1
            for w in workers:
                if alive(w):
                    os.kill(w, signal.SIGKILL)
        stack.server = None
    stack.start_server(worker=True)
    with stack.api() as api:
        wait_all(api, "/jobs", ids, timeout=120 + 30 * len(ids))
        records = {j: job_record(api, j) for j in ids}
    stack.stop_server()
    problems = {j: p for j, r in records.items() if (p := training_once(r))}
    ok = orphans == 0 and not problems
    return {
        "scenario": "serve_stops",
        "stops": len(signals),
        "orphans": orphans,
        "jobs": len(ids),
        "trained_twice_or_lost": len(problems),
        "problems": problems,
        "ok": ok,
        "summary": f"{len(signals)} stops: {orphans} orphans, {len(problems)} jobs not "
        f"trained exactly once",
    }


# --- 4. broker restart, data lost -----------------------------------------------------------


def broker_restart(stack: Stack, *, queued: int = 50, running: int = 2, steps: int = 3) -> dict:
    if stack.server is None:
        stack.start_server()
    while len(stack.live_workers()) < running:
        stack.start_worker()
    with stack.api() as api:
        project, dataset = project_with_data(api)
        ids = [
            queue_job(api, project, dataset, stack.config(steps)) for _ in range(queued + running)
        ]
        wait_for(
            lambda: (
                sum(api.get(f"/jobs/{j}").json()["status"] == "running" for j in ids[:4]) >= running
            ),
            180,
            interval=0.3,
            what="two jobs to run",
        )
        stack.redis.stop()
        stack.redis.start()
        rows = wait_all(api, "/jobs", ids, timeout=120 + 15 * len(ids))
        records = {j: job_record(api, j) for j in ids}
    problems = {j: p for j, r in records.items() if (p := training_once(r))}
    twice = sum(r["job"]["attempts"] > 1 for r in records.values())
    done = sum(rows[j]["status"] == "succeeded" for j in ids)
    ok = done == len(ids) and not problems and twice == 0
    return {
        "scenario": "broker_restart",
        "jobs": len(ids),
        "succeeded": done,
        "lost": len(ids) - done,
        "ran_twice": twice,
        "problems": problems,
        "ok": ok,
        "summary": f"{done}/{len(ids)} jobs, {len(ids) - done} lost, {twice} ran twice",
    }


# --- 5. Postgres restart --------------------------------------------------------------------


def postgres_restart(stack: Stack, *, jobs: int = 2, steps: int = 40, outage: float = 8) -> dict:
    assert stack.pg is not None, "needs the bench's own Postgres cluster"
    if stack.server is None:
        stack.start_server()
    while len(stack.live_workers()) < 2:
        stack.start_worker()
    codes: dict[str, int] = {}
    retry_after_missing = 0
    with stack.api(timeout=30) as api:
        project, dataset = project_with_data(api)
        ids = [queue_job(api, project, dataset, stack.config(steps)) for _ in range(jobs)]
        wait_for(
            lambda: any(api.get(f"/jobs/{j}").json()["current_step"] >= 1 for j in ids),
            180,
            interval=0.3,
            what="a job to train",
        )
        stack.pg.stop("fast")
        down_until = time.monotonic() + outage
        requests = [
            ("GET", f"/jobs/{ids[0]}"),
            ("GET", "/jobs"),
            ("GET", "/projects"),
            ("GET", f"/jobs/{ids[0]}/metrics"),
            ("POST", "/projects"),
        ]
        while time.monotonic() < down_until:
            for method, path in requests:
                try:
                    response = api.request(
                        method, path, json={"name": "停机 outage"} if method == "POST" else None
                    )
                except httpx.HTTPError:
                    codes["no answer"] = codes.get("no answer", 0) + 1
                    continue
                key = str(response.status_code)
                codes[key] = codes.get(key, 0) + 1
                if response.status_code == 503 and "retry-after" not in response.headers:
                    retry_after_missing += 1
        stack.pg.start()
        rows = wait_all(api, "/jobs", ids, timeout=300)
        records = {j: job_record(api, j) for j in ids}
    problems = {j: p for j, r in records.items() if (p := training_once(r))}
    lost = sum(rows[j]["status"] != "succeeded" for j in ids)
    server_errors = sum(n for c, n in codes.items() if c.startswith("5") and c != "503")
    ok = lost == 0 and not problems and server_errors == 0 and retry_after_missing == 0
    return {
        "scenario": "postgres_restart",
        "jobs": len(ids),
        "lost": lost,
        "outage_answers": codes,
        "retry_after_missing": retry_after_missing,
        "problems": problems,
        "ok": ok,
        "summary": f"{lost} lost; outage answers {json.dumps(codes)}",
    }


# --- the run --------------------------------------------------------------------------------

SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "full": {
        "1": {"kills": 20, "steps": 40},
        "2": {"rounds": 5},
        "3": {"rounds": 5},
        "4": {"queued": 50},
        "5": {},
        "6": {"clients": 200, "seconds": 60},
        "7": {},
    },
    "quick": {
        "1": {"kills": 2, "steps": 24},
        "2": {"rounds": 1},
        "3": {"rounds": 1},
        "4": {"queued": 4},
        "5": {"outage": 4},
        "6": {"clients": 10, "seconds": 5, "uploads": True},
        "7": {},
    },
    "ci": {
        "1": {"kills": 3, "steps": 16},
        "4": {"queued": 4},
        "6": {"clients": 30, "seconds": 10, "embedded": False, "compare_seconds": 2},
        "7": {},
    },
}


def run(only: list[str], size: str, stack: Stack | None = None) -> list[dict[str, Any]]:
    """Run the scenarios named in ``only`` at ``size``; the result of each."""
    from bench import chaos_hostile, chaos_load

    own = stack is None
    stack = stack or Stack.create()
    scenarios = {
        "1": worker_kills,
        "2": side_kills,
        "3": serve_stops,
        "4": broker_restart,
        "5": postgres_restart,
        "6": chaos_load.load,
        "7": chaos_hostile.hostile_files,
    }
    results = []
    try:
        stack.start_server()
        for key in only:
            if key not in SIZES[size]:
                continue
            if stack.server is None:
                stack.start_server()
            try:
                result = timed(lambda key=key: scenarios[key](stack, **SIZES[size][key]))
            except Exception as exc:  # one scenario's failure is a result, not the end
                result = {
                    "scenario": scenarios[key].__name__,
                    "ok": False,
                    "error": f"{type(exc).__name__}: {exc}",
                    "summary": f"did not finish: {type(exc).__name__}: {str(exc)[:120]}",
                }
            emit(result)
            results.append(result)
    finally:
        if own:
            stack.close()
            if not os.environ.get("CHAOS_KEEP"):  # keep the logs and data to look into
                shutil.rmtree(stack.root, ignore_errors=True)
    return results


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| scenario | result | ok | seconds |", "|---|---|---|---|"]
    for r in results:
        mark = "yes" if r.get("ok") else "NO"
        lines.append(f"| {r['scenario']} | {r['summary']} | {mark} | {r.get('seconds', '')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the smallest size of each")
    parser.add_argument("--ci", action="store_true", help="the shortened CI version")
    parser.add_argument("--only", default="1,2,3,4,5,6,7", help="scenario numbers, e.g. 1,4")
    args = parser.parse_args()
    size = "ci" if args.ci else "quick" if args.quick else "full"
    started = time.monotonic()
    results = run(args.only.split(","), size)
    print()
    print(table(results))
    print(
        f"\n{size} run, {time.monotonic() - started:.0f} s, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    sys.exit(0 if all(r.get("ok") for r in results) else 1)


if __name__ == "__main__":
    main()
