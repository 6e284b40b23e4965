"""Training on several GPUs of one host: one process per GPU under torch.distributed.

``train`` is ``engine.train`` for a job that may use several GPUs. With one process (one
GPU, ``gpus: 1``, full fine-tuning, a CPU worker) it is ``engine.train`` itself. With more it
runs the engine in ``torchrun --standalone --nproc-per-node N`` (torch.distributed.run's
``main``, called by this module) as a child process group and stays the parent: it keeps the
job's lease, relays what rank 0 reports to the caller's callbacks, and passes a stop on.
torchrun and every rank ask the kernel for SIGTERM when their parent dies
(``PR_SET_PDEATHSIG``), so a worker killed outright leaves no training behind.

Between the parent and the ranks, a private folder beside the output folder:

- ``spec.json``, ``records.jsonl``, ``validation.jsonl``: the run config, the data and the
  paths, written by the parent;
- ``events.jsonl``: rank 0's events and step metrics, one JSON object a line, which the
  parent reads as they come and forwards;
- ``stop.json``: written by the parent when its callbacks ask to stop (a cancel, a hand-back,
  a lost lease), with whether to checkpoint first; rank 0 reads it in ``should_stop`` and
  broadcasts the decision, so every rank stops after the same step (see ``ranks``);
- ``outcome-<rank>.json``: how a rank's run ended (the result, cancelled, or an error).

Each rank initialises its process group from torchrun's environment (NCCL on GPUs, gloo on
the CPU) with a timeout (``TIMEOUT_ENV``, default 30 minutes), wraps the trained weights in
DDP and trains its token-balanced share of every step (see ``ranks``); rank 0 alone reports,
writes checkpoints and the artifact. A rank that dies makes torchrun stop the others and exit
non-zero: the run fails with an error naming the rank, and the parent kills whatever is left
of the process group. A stop that the ranks do not honour within ``STOP_GRACE_SECONDS`` is
enforced with SIGTERM, then SIGKILL.

On a machine without CUDA, ``CPU_PROCESSES_ENV`` (default 1) is how many gloo processes a
job may use: how the multi-process path is tested on a CPU, and how to try it without GPUs.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker.spec.config import TrainConfig
from worker.spec.errors import TrainingCancelled, TrainingError
from worker.training.budget import ShardedPassTooLarge
from worker.training.callbacks import Silent, StepMetrics, TrainCallbacks, checkpoint_on_stop
from worker.training.checkpoints import IncompatibleCheckpoint, latest_checkpoint

if TYPE_CHECKING:
    from worker.training.engine import TrainResult

log = logging.getLogger(__name__)

CPU_PROCESSES_ENV = "TUNELAB_CPU_PROCESSES"
TIMEOUT_ENV = "TUNELAB_DIST_TIMEOUT_SECONDS"
DEFAULT_TIMEOUT_SECONDS = 1800
# How long the ranks may take to reach the end of their step and stop once asked.
STOP_GRACE_SECONDS = 300.0
_KILL_GRACE_SECONDS = 10.0
_POLL_SECONDS = 0.1
_ASK_STOP_SECONDS = 1.0  # how often the caller's should_stop is asked (a database read)
_TORCHRUN = "--torchrun"
_PR_SET_PDEATHSIG = 1  # prctl(2)


def slots() -> tuple[int, str]:
    """How many processes this worker may run a job on, and what each one has: its GPUs,
    or on a machine without CUDA the gloo processes ``CPU_PROCESSES_ENV`` allows."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.device_count(), "GPU"
    try:
        count = int(os.environ.get(CPU_PROCESSES_ENV, "1"))
    except ValueError:
        count = 1
    return max(1, count), "CPU process"


def process_count(config: TrainConfig) -> int:
    """The processes ``config`` trains in on this worker: one per GPU it asks for (all of
    them for ``auto``); one for full fine-tuning, which is not sharded yet."""
    available, unit = slots()
    if config.gpus == "auto":
        return available
    if config.gpus > available:
        has = f"{available} {unit}{'s' if available != 1 else ''}"
        if unit != "GPU":
            has = "no GPU (it trains on the CPU)"
        raise TrainingError(f"This job asks for {config.gpus} GPUs; this worker has {has}.")
    return config.gpus


def train(
    config: TrainConfig,
    *,
    records: Sequence[dict[str, Any]],
    output_dir: Path,
    model_cache_dir: Path,
    callbacks: TrainCallbacks | None = None,
    allow_downloads: bool = False,
    validation_records: Sequence[dict[str, Any]] | None = None,
    checkpoint_dir: Path | None = None,
    resume_from: Path | None = None,
) -> TrainResult:
    """``engine.train``, on as many processes as ``process_count`` says (see the module)."""
    from worker.training import engine

    processes = process_count(config)
    run = engine.train if processes == 1 else _Launch(processes).train
    return run(
        config,
        records=records,
        output_dir=output_dir,
        model_cache_dir=model_cache_dir,
        callbacks=callbacks,
        allow_downloads=allow_downloads,
        validation_records=validation_records,
        checkpoint_dir=checkpoint_dir,
        resume_from=resume_from,
    )


class _Launch:
    def __init__(self, processes: int) -> None:
        self.processes = processes
        self.stop_asked_at: float | None = None

    def train(
        self,
        config: TrainConfig,
        *,
        records: Sequence[dict[str, Any]],
        output_dir: Path,
        model_cache_dir: Path,
        callbacks: TrainCallbacks | None,
        allow_downloads: bool,
        validation_records: Sequence[dict[str, Any]] | None,
        checkpoint_dir: Path | None,
        resume_from: Path | None,
    ) -> TrainResult:
        try:
            return self._train(
                config,
                records=records,
                output_dir=output_dir,
                model_cache_dir=model_cache_dir,
                callbacks=callbacks or Silent(),
                allow_downloads=allow_downloads,
                validation_records=validation_records,
                checkpoint_dir=checkpoint_dir,
                resume_from=resume_from,
            )
        except (TrainingError, TrainingCancelled):
            raise
        except Exception as exc:  # as engine.train says it: for the person who started the run
            from worker.training.engine import _explain

            raise TrainingError(_explain(exc)) from exc

    def _train(
        self,
        config: TrainConfig,
        *,
        records: Sequence[dict[str, Any]],
        output_dir: Path,
        model_cache_dir: Path,
        callbacks: TrainCallbacks,
        allow_downloads: bool,
        validation_records: Sequence[dict[str, Any]] | None,
        checkpoint_dir: Path | None,
        resume_from: Path | None,
    ) -> TrainResult:
        from worker.training import models

        output_dir = Path(output_dir)
        if output_dir.exists() and not (output_dir.is_dir() and not any(output_dir.iterdir())):
            raise TrainingError(f"The output folder {output_dir} already exists and is not empty.")
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        # Once here, so the ranks find the model in the cache rather than all converting or
        # downloading it at once.
        models.resolve_model(
            config.base_model,
            Path(model_cache_dir),
            allow_downloads,
            notify=lambda message: callbacks.on_event("info", message),
            trust_remote_code=config.trust_remote_code,
            allow_pickle_weights=config.allow_pickle_weights,
        )
        work = Path(tempfile.mkdtemp(prefix=".distributed-", dir=output_dir.parent))
        try:
            _write_jsonl(work / "records.jsonl", records)
            _write_jsonl(work / "validation.jsonl", validation_records or ())
            where = (
                f"on {self.processes} GPUs, one process each (DDP)"
                if slots()[1] == "GPU"
                else f"in {self.processes} CPU processes (DDP over gloo)"
            )
            callbacks.on_event("info", f"Training {where}", {"processes": self.processes})
            while True:
                spec = {
                    "config": config.model_dump(mode="json"),
                    "output_dir": str(output_dir),
                    "model_cache_dir": str(model_cache_dir),
                    "allow_downloads": allow_downloads,
                    "checkpoint_dir": str(checkpoint_dir) if checkpoint_dir is not None else None,
                    "resume_from": str(resume_from) if resume_from is not None else None,
                }
                (work / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
                code = self._supervise(work, callbacks)
                halving = self._halving(work) if self.stop_asked_at is None else None
                if halving is None:
                    return self._outcome(work, code, output_dir, callbacks)
                config, resume_from = self._restart(
                    work, halving, config, checkpoint_dir, resume_from, callbacks
                )
        finally:
            shutil.rmtree(work, ignore_errors=True)
            # What a rank killed mid-run left of its staging folder (see engine.train).
            for staging in output_dir.parent.glob(f".{output_dir.name}.*"):
                shutil.rmtree(staging, ignore_errors=True)

    def _halving(self, work: Path) -> tuple[int, dict[str, Any]] | None:
        """The rank whose sharded pass ran out of GPU memory, and what it said, if any did."""
        for rank in range(self.processes):
            outcome = _read_json(work / f"outcome-{rank}.json")
            if outcome and "halve_to" in outcome:
                return rank, outcome
        return None

    def _restart(
        self,
        work: Path,
        halving: tuple[int, dict[str, Any]],
        config: TrainConfig,
        checkpoint_dir: Path | None,
        resume_from: Path | None,
        callbacks: TrainCallbacks,
    ) -> tuple[TrainConfig, Path | None]:
        """Ready the next launch of a sharded run whose pass did not fit: every process
        restarts with half the token budget, from the newest checkpoint if there is one
        (steps after it are trained again, to the same result), else as it started."""
        rank, said = halving
        budget, previous = int(said["halve_to"]), int(said["previous"])
        newest = latest_checkpoint(checkpoint_dir) if checkpoint_dir is not None else None
        resume = newest or resume_from
        whence = f"its newest checkpoint ({resume.name})" if resume is not None else "the start"
        callbacks.on_event(
            "warning",
            f"A forward pass of {int(said['largest']):,} tokens did not fit in GPU memory in "
            f"training process {rank} of {self.processes}: the token budget is halved from "
            f"{previous:,} to {budget:,} and every process restarted from {whence} (this run "
            "keeps the smaller budget; micro_batch_tokens sets one).",
            {"micro_batch_tokens": budget, "previous_micro_batch_tokens": previous},
        )
        for leftover in (*work.glob("outcome-*.json"), work / "events.jsonl"):
            leftover.unlink(missing_ok=True)
        return config.model_copy(update={"micro_batch_tokens": budget}), resume

    def _supervise(self, work: Path, callbacks: TrainCallbacks) -> int:
        """Run torchrun until it exits, relaying rank 0's reports; its exit status."""
        command = [
            sys.executable,
            "-m",
            __name__,
            _TORCHRUN,
            "--standalone",
            f"--nproc-per-node={self.processes}",
            "--max-restarts=0",
            "--monitor-interval=0.1",
            "-m",
            __name__,
            str(work),
        ]
        relay = _Relay(work / "events.jsonl", callbacks)
        with (work / "torchrun.log").open("wb") as output:
            process = subprocess.Popen(
                command,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=_child_environment(self.processes),
                # Its own session, out of reach of signals meant for the worker; torchrun
                # stops its ranks (each in a session of its own) when signalled, and they die
                # with it when it is killed (see _die_with_parent).
                start_new_session=True,
            )
            try:
                return self._wait(process, work, relay, callbacks)
            finally:
                _signal_group(process.pid, signal.SIGKILL)  # its ranks follow (PR_SET_PDEATHSIG)
                process.wait()

    def _wait(
        self, process: subprocess.Popen[bytes], work: Path, relay: _Relay, callbacks: Any
    ) -> int:
        asked = terminated = 0.0
        while True:
            code = process.poll()
            relay.forward()
            if code is not None:
                return code
            now = time.monotonic()
            if self.stop_asked_at is None and now - asked >= _ASK_STOP_SECONDS:
                asked = now
                if callbacks.should_stop():
                    self.stop_asked_at = now
                    _write_json(work / "stop.json", {"checkpoint": checkpoint_on_stop(callbacks)})
            elif self.stop_asked_at is not None:
                if not terminated and now - self.stop_asked_at > STOP_GRACE_SECONDS:
                    log.warning(
                        "the ranks did not stop within %s s: terminating", STOP_GRACE_SECONDS
                    )
                    _signal_group(process.pid, signal.SIGTERM)
                    terminated = now
                elif terminated and now - terminated > _KILL_GRACE_SECONDS:
                    _signal_group(process.pid, signal.SIGKILL)
            time.sleep(_POLL_SECONDS)

    def _outcome(
        self, work: Path, code: int, output_dir: Path, callbacks: TrainCallbacks
    ) -> TrainResult:
        from worker.training.engine import TrainResult

        outcomes = {
            rank: _read_json(work / f"outcome-{rank}.json") for rank in range(self.processes)
        }
        main = outcomes.get(0) or {}
        if "result" in main and output_dir.is_dir():
            return TrainResult(
                adapter_dir=output_dir,
                files=sorted(p for p in output_dir.rglob("*") if p.is_file()),
                **main["result"],
            )
        if "cancelled" in main:
            raise TrainingCancelled(main["cancelled"])
        text = (work / "torchrun.log").read_text(encoding="utf-8", errors="replace")
        if code:
            log.warning("torchrun exited with %s:\n%s", code, text[-8000:])
        failures = _failures(text)
        # A rank that died on its own (no outcome written, not stopped by torchrun after
        # another's failure) is the cause; the errors the others then met are its effects.
        died = [(r, c) for r, c in failures if not outcomes.get(r) and c != -signal.SIGTERM]
        if not died:
            ordered = [r for r, _ in failures] + sorted(outcomes)
            for outcome in (outcomes.get(r) for r in ordered):
                if outcome and "error" in outcome:
                    error = IncompatibleCheckpoint if outcome.get("incompatible") else TrainingError
                    raise error(outcome["error"])
            if self.stop_asked_at is not None:
                raise TrainingCancelled("Training was cancelled")
        rank, exit_code = died[0] if died else (failures[0] if failures else (None, None))
        message = _died_message(rank, exit_code, self.processes, code)
        callbacks.on_event("error", message, {"rank": rank, "exit_code": exit_code})
        raise TrainingError(message)


def _died_message(rank: int | None, exit_code: int | None, processes: int, code: int) -> str:
    who = f"Training process {rank} of {processes}" if rank is not None else "A training process"
    if exit_code is not None and exit_code < 0:
        how = f"was killed by signal {-exit_code}"
        with contextlib.suppress(ValueError):
            how += f" ({signal.Signals(-exit_code).name})"
    else:
        how = f"exited with code {exit_code if exit_code is not None else code}"
    return (
        f"{who} {how} without finishing its work; the run was stopped on every process. "
        "The worker's log holds the processes' output."
    )


_FAILURE = re.compile(
    r"^\s*rank\s*:\s*(\d+).*?^\s*exitcode\s*:\s*(-?\d+)", re.DOTALL | re.MULTILINE
)


def _failures(text: str) -> list[tuple[int, int]]:
    """The (rank, exit code) of every failed process in torchrun's report, its root cause
    (the first failure it observed) first."""
    report = text[text.rfind("Failures:") :] if "Failures:" in text else ""
    cause = report.find("Root Cause")
    sections = (report[cause:], report[:cause]) if cause >= 0 else (report,)
    return [
        (int(m.group(1)), int(m.group(2)))
        for section in sections
        for m in _FAILURE.finditer(section)
    ]


def _child_environment(processes: int) -> dict[str, str]:
    from worker.training import cpu

    env = dict(os.environ)
    # The package's root first, so ``-m worker.training.distributed`` imports this code.
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    # torchrun sets one thread per process where this is unset; the cores shared out instead.
    env.setdefault("OMP_NUM_THREADS", str(max(1, cpu.physical_cores() // processes)))
    return env


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class _Relay:
    """Forwards rank 0's events and step metrics, as ``events.jsonl`` grows, to the caller."""

    def __init__(self, path: Path, callbacks: TrainCallbacks) -> None:
        self.path, self.callbacks = path, callbacks
        self.offset = 0

    def forward(self) -> None:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
        except FileNotFoundError:
            return
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.offset += len(complete)
        for line in complete.splitlines():
            item = json.loads(line)
            if "step" in item:
                self.callbacks.on_step(StepMetrics(**item["step"]))
            else:
                level, message, data = item["event"]
                self.callbacks.on_event(level, message, data)


# --- Inside each rank ----------------------------------------------------------------------


class _FileReporter:
    """Rank 0's callbacks: reports appended to ``events.jsonl``, a stop read from
    ``stop.json`` (see the module)."""

    def __init__(self, work: Path) -> None:
        self.events = (work / "events.jsonl").open("a", encoding="utf-8")
        self.stop_file = work / "stop.json"

    def _write(self, item: dict[str, Any]) -> None:
        self.events.write(json.dumps(item, default=str) + "\n")
        self.events.flush()

    def on_event(self, level: str, message: str, data: dict[str, Any] | None = None) -> None:
        self._write({"event": [level, message, data]})

    def on_step(self, metrics: StepMetrics) -> None:
        self._write({"step": asdict(metrics)})

    def should_stop(self) -> bool:
        return self.stop_file.exists()

    def checkpoint_on_stop(self) -> bool:
        return bool((_read_json(self.stop_file) or {}).get("checkpoint"))


def _die_with_parent() -> None:
    """Have the kernel send this process SIGTERM when its parent dies (Linux), so that
    neither torchrun nor a rank outlives the worker that started it, however it died."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # gone already, before the request took effect
        os._exit(1)


def main(argv: list[str] | None = None) -> int:
    """torchrun itself (``_TORCHRUN`` and its arguments), or one rank of a multi-process run
    that torchrun started (the folder of the run: see the module)."""
    args = argv if argv is not None else sys.argv[1:]
    _die_with_parent()
    if args and args[0] == _TORCHRUN:
        from torch.distributed.run import main as torchrun

        torchrun(args[1:])
        return 0
    return _rank(Path(args[0]))


def _rank(work: Path) -> int:
    import torch
    import torch.distributed as dist

    from worker.training import engine
    from worker.training.ranks import RankCallbacks, Ranks

    spec = json.loads((work / "spec.json").read_text(encoding="utf-8"))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(
        "nccl" if cuda else "gloo",
        timeout=timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_SECONDS))),
        device_id=torch.device("cuda", local_rank) if cuda else None,
    )
    ranks = Ranks.current()
    inner: Any = _FileReporter(work) if ranks.main else Silent()
    code = 1
    outcome: dict[str, Any] = {}
    try:
        result = engine.train(
            TrainConfig.model_validate(spec["config"]),
            records=_read_jsonl(work / "records.jsonl"),
            output_dir=Path(spec["output_dir"]),
            model_cache_dir=Path(spec["model_cache_dir"]),
            callbacks=RankCallbacks(inner, ranks),
            allow_downloads=spec["allow_downloads"],
            validation_records=_read_jsonl(work / "validation.jsonl"),
            checkpoint_dir=_path(spec["checkpoint_dir"]),
            resume_from=_path(spec["resume_from"]),
        )
        kept = {k: v for k, v in asdict(result).items() if k not in ("adapter_dir", "files")}
        code, outcome = 0, {"result": kept}
    except TrainingCancelled as exc:
        code, outcome = 0, {"cancelled": str(exc)}
    except IncompatibleCheckpoint as exc:
        outcome = {"error": str(exc), "incompatible": True}
    except ShardedPassTooLarge as exc:
        outcome = {
            "error": str(exc),
            "halve_to": exc.budget,
            "previous": exc.previous,
            "largest": exc.largest,
        }
    except TrainingError as exc:
        outcome = {"error": str(exc)}
    except Exception as exc:  # outside engine.train's own handling (the process group)
        traceback.print_exc()
        outcome = {"error": f"Training failed unexpectedly ({type(exc).__name__}: {exc})."}
    _write_json(work / f"outcome-{rank}.json", outcome)
    if code == 0:
        dist.destroy_process_group()
    return code


def _path(value: str | None) -> Path | None:
    return Path(value) if value is not None else None


def _write_jsonl(path: Path, items: Iterable[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for item in items:
            fh.write(json.dumps(item) + "\n")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _write_json(path: Path, value: dict[str, Any]) -> None:
    """Written beside and renamed into place, so a reader never sees half of it."""
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text(json.dumps(value), encoding="utf-8")
    staging.rename(path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    return value if isinstance(value, dict) else None


if __name__ == "__main__":
    sys.exit(main())
