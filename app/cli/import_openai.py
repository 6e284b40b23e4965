"""``tunelab import-openai``: a way off OpenAI's fine-tuning service.

It reads what a user saved from OpenAI (no call to OpenAI is made, or needed):

- the job objects, as JSON: the page ``client.fine_tuning.jobs.list()`` returns
  (``{"object": "list", "data": [...]}``), a list of job objects, or one job object;
- their training and validation files, saved under their ids (``file-abc.jsonl`` or
  ``file-abc`` in ``--files``);
- optionally the chat logs they are evaluated on (``--eval``), one JSON object a line:
  ``{"messages": [...], "reference": "the right answer", "answer": "what the OpenAI model
  said", "model": "ft:gpt-4o-mini:…"}`` (``answer`` may instead be the last, assistant turn of
  ``messages``; ``model`` ties a log to one job's fine-tuned model, none to every job).

Each job is recreated through tunelab's OpenAI-compatible API on the open model chosen with
``--model``, its hyper-parameters mapped (see the README, "The OpenAI fine-tuning API"), and
queued. The report says, job by job, what has no equivalent here. With ``--eval``, the
references become the job's test split, so the evaluation after training scores the new
model on them; the saved answers of the original model are scored on the same references
here, with the same metrics, and written in the report beside them. Once the jobs have
trained, ``tunelab import-openai --compare report.json`` prints both side by side.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from app.cli.http import Api, CliError, command_entry, server_options
from app.core.i18n import gettext

# Fields of OpenAI's job object and what becomes of each.
MAPPED = ("model", "training_file", "validation_file", "suffix", "seed", "metadata", "method")
IGNORED = {
    "id": None,
    "object": None,
    "created_at": None,
    "finished_at": None,
    "organization_id": None,
    "user_provided_suffix": None,
    "estimated_finish": None,
    "status": None,
    "error": None,
    "fine_tuned_model": None,
    "hyperparameters": None,
    "trained_tokens": "billing: tunelab reports tokens trained on the job page",
    "result_files": "OpenAI's results file: the new job writes its own",
    "integrations": "the Weights & Biases integration: the job page has the chart",
}
SKIPPED_STATUSES = ("failed", "cancelled")
REPORTED_METRICS = ("rougeL", "bleu", "token_f1", "exact_match")


@dataclass
class JobReport:
    """What became of one OpenAI job."""

    openai_id: str
    original_model: str | None
    status: str = "skipped"  # queued | skipped | failed
    tunelab_id: str | None = None
    new_job: str | None = None
    mapped: dict[str, Any] = field(default_factory=dict)
    no_equivalent: list[str] = field(default_factory=list)
    reason: str | None = None
    original_scores: dict[str, float] | None = None


def add_parser(sub: Any) -> None:
    server = server_options()
    command = sub.add_parser(
        "import-openai",
        parents=[server],
        help=gettext("recreate saved OpenAI fine-tuning jobs on an open model (no call to OpenAI)"),
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    command.add_argument(
        "jobs",
        type=Path,
        nargs="?",
        help=gettext("the saved job objects (JSON from client.fine_tuning.jobs.list)"),
    )
    command.add_argument(
        "--files", type=Path, help=gettext("folder of the saved files, named by file id")
    )
    command.add_argument(
        "--model", help=gettext("the open model to train on: a catalog name or hub id")
    )
    command.add_argument(
        "--compare",
        type=Path,
        metavar="REPORT",
        help=gettext(
            "instead: the original models' scores beside the new models' evaluations, from "
            "an earlier run's --report"
        ),
    )
    command.add_argument(
        "--project", help=gettext("project (id or name); default: your API project")
    )
    command.add_argument(
        "--eval",
        type=Path,
        help=gettext("chat logs with reference answers (and the original answers)"),
    )
    command.add_argument("--report", type=Path, help=gettext("write the report as JSON here too"))
    command.add_argument(
        "--dry-run", action="store_true", help=gettext("map and report, upload and queue nothing")
    )
    command.set_defaults(func=command_entry(cmd_import_openai))


# --- Reading what was saved -------------------------------------------------------------------


def read_jobs(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read the job objects in {path}: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    elif isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(
        isinstance(j, dict) and j.get("object", "fine_tuning.job") == "fine_tuning.job"
        for j in data
    ):
        raise CliError(
            f"{path} holds no fine-tuning job objects: save what client.fine_tuning.jobs.list() "
            "returns, e.g. json.dump(page.model_dump(), f)"
        )
    return data


def saved_file(folder: Path, file_id: str) -> Path | None:
    for candidate in (folder / f"{file_id}.jsonl", folder / file_id, folder / f"{file_id}.json"):
        if candidate.is_file():
            return candidate
    return None


@dataclass(frozen=True)
class EvalLog:
    messages: list[dict[str, Any]]  # the conversation before the answer
    reference: str
    answer: str | None  # the original fine-tuned model's
    model: str | None


def read_eval_logs(path: Path) -> list[EvalLog]:
    logs = []
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise CliError(f"{path} line {number}: not valid JSON: {exc}") from None
        messages = record.get("messages") if isinstance(record, dict) else None
        reference = record.get("reference") if isinstance(record, dict) else None
        if not isinstance(messages, list) or not messages or not isinstance(reference, str):
            raise CliError(
                f"{path} line {number}: a log needs `messages` (the conversation) and "
                "`reference` (the right answer)"
            )
        answer = record.get("answer")
        if (
            answer is None
            and isinstance(messages[-1], dict)
            and messages[-1].get("role") == ("assistant")
        ):
            answer = messages[-1].get("content")
            messages = messages[:-1]
        logs.append(
            EvalLog(
                messages=messages,
                reference=reference,
                answer=answer if isinstance(answer, str) else None,
                model=record.get("model") if isinstance(record.get("model"), str) else None,
            )
        )
    if not logs:
        raise CliError(f"{path} holds no logs")
    return logs


# --- Mapping ----------------------------------------------------------------------------------


def map_job(job: dict[str, Any], *, model: str) -> tuple[dict[str, Any], JobReport]:
    """The request that recreates ``job`` on ``model``, and its report so far."""
    report = JobReport(openai_id=str(job.get("id")), original_model=job.get("model"))
    method = job.get("method") or {"type": "supervised"}
    kind = method.get("type", "supervised")
    if kind != "supervised":
        what = "DPO (preference tuning)" if kind == "dpo" else "reinforcement fine-tuning"
        report.reason = f"method {kind}: tunelab has no {what} yet"
        report.no_equivalent.append(report.reason)
        return {}, report
    hyper = dict(
        (method.get("supervised") or {}).get("hyperparameters") or job.get("hyperparameters") or {}
    )
    hyper = {k: v for k, v in hyper.items() if v is not None}
    request: dict[str, Any] = {"model": model, "training_file": job.get("training_file")}
    if hyper:
        request["method"] = {"type": "supervised", "supervised": {"hyperparameters": hyper}}
    report.mapped = {
        "model": f"{job.get('model')} → {model}",
        **{name: value for name, value in hyper.items()},
    }
    suffix = job.get("user_provided_suffix") or job.get("suffix")
    if suffix:
        request["suffix"] = "".join(c for c in str(suffix) if c.isalnum() or c in "._-")[:64]
        report.mapped["suffix"] = request["suffix"]
    if isinstance(job.get("seed"), int):
        request["seed"] = job["seed"]
        report.mapped["seed"] = job["seed"]
    metadata = {str(k): str(v) for k, v in (job.get("metadata") or {}).items()}
    metadata["openai_job"] = report.openai_id
    if job.get("fine_tuned_model"):
        metadata["openai_model"] = str(job["fine_tuned_model"])[:512]
    request["metadata"] = dict(list(metadata.items())[:16])
    for name, why in IGNORED.items():
        if why and job.get(name):
            report.no_equivalent.append(f"{name}: {why}")
    if "learning_rate_multiplier" in hyper and hyper["learning_rate_multiplier"] != "auto":
        report.no_equivalent.append(
            "learning_rate_multiplier: OpenAI's base rate is not published; here it multiplies "
            "tunelab's own rate for the method and model (LoRA: 2e-4), so the same number need "
            "not mean the same rate"
        )
    unknown = sorted(set(job) - set(MAPPED) - set(IGNORED))
    if unknown:
        report.no_equivalent.append(f"not read: {', '.join(unknown)}")
    return request, report


def original_scores(logs: list[EvalLog]) -> dict[str, float] | None:
    """The original model's saved answers scored against the references, as tunelab's
    evaluation scores a model (worker.spec.metrics)."""
    pairs = [(log.answer, log.reference) for log in logs if log.answer is not None]
    if not pairs:
        return None
    from worker.spec.metrics import score

    report = score([a for a, _ in pairs], [r for _, r in pairs], resamples=200)
    return {name: round(report.metrics[name].value, 4) for name in REPORTED_METRICS}


def test_records(logs: list[EvalLog]) -> bytes:
    """The logs as chat records that end on the reference: the new job's test split."""
    lines = [
        json.dumps(
            {"messages": [*log.messages, {"role": "assistant", "content": log.reference}]},
            ensure_ascii=False,
        )
        for log in logs
    ]
    return ("\n".join(lines) + "\n").encode("utf-8")


# --- Talking to tunelab's /v1 -----------------------------------------------------------------


@contextmanager
def _calls(api: Api) -> Iterator[None]:
    try:
        yield
    except httpx.ConnectError as exc:
        raise CliError(f"cannot reach tunelab at {api.url}: is `tunelab serve` running?") from exc
    except httpx.HTTPError as exc:
        raise CliError(f"could not talk to tunelab at {api.url}: {exc}") from exc


class ApiRefused(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def v1(api: Api, method: str, path: str, **kwargs: Any) -> Any:
    """A call to tunelab's OpenAI-compatible API; its error object as ApiRefused."""
    with _calls(api):
        response = api.http.request(method, f"{api.url}/v1{path}", **kwargs)
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.is_success and isinstance(body, dict):
        return body
    error = body.get("error") if isinstance(body, dict) else None
    if response.status_code == 401:
        raise CliError("the API token is not valid: set TUNELAB_TOKEN (or pass --token)")
    if isinstance(error, dict):
        param = f" ({error['param']})" if error.get("param") else ""
        raise ApiRefused(f"{error.get('message')}{param}")
    raise CliError(f"HTTP {response.status_code} from {api.url}/v1{path}")


class Uploader:
    """Each saved file sent once, by its OpenAI id."""

    def __init__(self, api: Api, folder: Path) -> None:
        self.api = api
        self.folder = folder
        self.sent: dict[str, str] = {}

    def send(self, openai_id: str) -> str:
        if openai_id not in self.sent:
            path = saved_file(self.folder, openai_id)
            if path is None:
                raise ApiRefused(f"{openai_id} is not in {self.folder} (as {openai_id}.jsonl)")
            self.sent[openai_id] = self.upload(path.name, path.read_bytes())
        return self.sent[openai_id]

    def upload(self, name: str, content: bytes) -> str:
        made = v1(
            self.api,
            "POST",
            "/files",
            files={"file": (name, content, "application/jsonl")},
            data={"purpose": "fine-tune"},
        )
        return str(made["id"])


# --- The command ------------------------------------------------------------------------------


def cmd_import_openai(args: argparse.Namespace, api: Api) -> int:
    if args.compare:
        return compare(api, args.compare)
    if args.jobs is None or args.files is None or args.model is None:
        raise CliError("name the saved jobs file, --files and --model (or --compare REPORT)")
    jobs = read_jobs(args.jobs)
    if not args.files.is_dir():
        raise CliError(f"--files {args.files} is not a folder")
    logs = read_eval_logs(args.eval) if args.eval else []
    uploader = Uploader(api, args.files)
    reports = []
    for job in jobs:
        request, report = map_job(job, model=args.model)
        reports.append(report)
        if report.reason is None and job.get("status") in SKIPPED_STATUSES:
            report.reason = f"the original job {job.get('status')}; nothing to move"
        if report.reason is not None:
            continue
        mine = [log for log in logs if log.model in (None, job.get("fine_tuned_model"))]
        report.original_scores = original_scores(mine) if mine else None
        if args.project:
            request["metadata"]["project"] = args.project
        if saved_file(args.files, str(job.get("training_file"))) is None:
            report.status = "failed"
            report.reason = f"{job.get('training_file')} is not in {args.files} (as <id>.jsonl)"
            continue
        if args.dry_run:
            report.status = "dry run"
            continue
        try:
            request["training_file"] = uploader.send(str(job.get("training_file")))
            if job.get("validation_file"):
                try:
                    request["validation_file"] = uploader.send(str(job["validation_file"]))
                except ApiRefused as exc:
                    report.no_equivalent.append(f"validation_file: {exc.message}; trained without")
            if mine:
                request["test_file"] = uploader.upload(
                    f"eval-{report.openai_id}.jsonl", test_records(mine)
                )
            made = v1(api, "POST", "/fine_tuning/jobs", json=request)
        except ApiRefused as exc:
            report.status, report.reason = "failed", exc.message
            continue
        report.status = "queued"
        report.new_job = made["id"]
        report.tunelab_id = made.get("tunelab", {}).get("job_id")
        report.no_equivalent.extend(made.get("tunelab", {}).get("notes", []))
    print_report(reports, url=api.url)
    if args.report:
        args.report.write_text(
            json.dumps([r.__dict__ for r in reports], indent=2, ensure_ascii=False) + "\n",
            encoding="utf-8",
        )
    return 1 if any(r.status == "failed" for r in reports) else 0


def print_report(reports: list[JobReport], *, url: str) -> None:
    for report in reports:
        print(f"{report.openai_id} ({report.original_model}): {report.status}")
        if report.new_job:
            print(f"  now {report.new_job}: {url}/jobs/{report.tunelab_id}")
        if report.reason:
            print(f"  why: {report.reason}")
        for name, value in report.mapped.items():
            print(f"  {name}: {value}")
        for line in report.no_equivalent:
            print(f"  no equivalent: {line}")
        if report.original_scores:
            shown = ", ".join(f"{k} {v:.3f}" for k, v in report.original_scores.items())
            print(
                f"  the original model's saved answers: {shown}; the new model is scored on the "
                "same references by the evaluation after training"
            )
    queued = sum(r.status == "queued" for r in reports)
    print(f"{queued} of {len(reports)} jobs queued", file=sys.stderr)


def compare(api: Api, path: Path) -> int:
    """For each job queued by an earlier run, its evaluation's scores beside the original
    model's saved answers, on the same references and metrics."""
    try:
        reports = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read the report {path}: {exc}") from None
    shown = 0
    for report in reports:
        if report.get("status") != "queued" or not report.get("tunelab_id"):
            continue
        shown += 1
        print(f"{report['openai_id']} ({report.get('original_model')}) → {report['new_job']}")
        found = api.get("/evaluations", job_id=report["tunelab_id"], limit=1)["items"]
        if not found:
            print("  no evaluation: the job has not succeeded yet, or had no --eval references")
            continue
        evaluation = found[0]
        if evaluation["status"] != "succeeded":
            print(f"  its evaluation is {evaluation['status']}; run this again later")
            continue
        results = evaluation["results"]
        models = results.get("models", {})
        new = models.get(results.get("subject"), {})
        baseline = models.get(results.get("baseline"), {})
        original = report.get("original_scores") or {}
        print(f"  on {results.get('n')} references   original   new [95% interval]   prompting")
        for name in REPORTED_METRICS:
            if name not in new:
                continue
            mine = new[name]
            before = f"{original[name]:.3f}" if name in original else "-"
            base = f"{baseline[name]['value']:.3f}" if name in baseline else "-"
            print(
                f"  {name:<16} {before:>10}   {mine['value']:.3f} [{mine['low']:.3f}, "
                f"{mine['high']:.3f}]   {base}"
            )
    if not shown:
        print("no job of that report was queued", file=sys.stderr)
    return 0
