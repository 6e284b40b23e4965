"""What reading "was this job cancelled?" before every optimiser step costs (worker.tasks.
training.JobReporter.should_stop): one primary-key lookup per step on a real Postgres, timed
against a migrated scratch database that this script creates and drops.

    .venv/bin/python bench/cancel_check.py [--reads 2000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid

SERVER = os.environ.get("TUNELAB_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=2000)
    args = parser.parse_args()
    from sqlalchemy import create_engine, text

    name = f"tunelab_bench_cancel_{uuid.uuid4().hex[:8]}"
    admin = create_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    os.environ["TUNELAB_DATABASE_URL"] = f"{SERVER}/{name}"
    try:
        subprocess.run(
            [sys.executable, "-m", "app.cli", "db", "upgrade"], check=True, capture_output=True
        )
        from app.core.db import session_scope
        from app.services import leases

        job_id = uuid.uuid4()  # a missing row costs the same index lookup as a present one
        seconds = []
        for _ in range(args.reads):
            started = time.perf_counter()
            with session_scope() as session:
                leases.cancel_asked(session, leases.JOB, job_id)
            seconds.append(time.perf_counter() - started)
        seconds.sort()
        print(
            f"{args.reads} reads: median {statistics.median(seconds) * 1e3:.2f} ms, "
            f"p95 {seconds[int(len(seconds) * 0.95)] * 1e3:.2f} ms, "
            f"max {seconds[-1] * 1e3:.2f} ms per optimiser step"
        )
        from app.core.db import get_engine

        get_engine().dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
