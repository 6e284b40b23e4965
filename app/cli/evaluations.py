"""`tunelab eval run|show|report|list|samples|export|cancel`: evaluations on a running tunelab
server, through its REST API with an API token (`tunelab token create`)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from app.cli.http import (
    POLL_SECONDS,
    Api,
    CliError,
    Command,
    command_entry,
    present,
    server_options,
)
from app.core.i18n import N_, gettext
from app.core.messages import status_text, translate_message
from app.core.words import display_width, pad
from worker.spec.criteria import FRACTION_METRICS, METRICS

FINISHED = ("succeeded", "failed", "cancelled")
MARKS = {
    "met": N_("✔ met"),
    "not_met": N_("✘ not met"),
    "pending": N_("… pending"),
    "not_measured": N_("? not measured"),
    "invalid": N_("! invalid"),
}
# A verdict's counts: "2 met, 1 not met".
COUNTED = {
    "met": N_("%(n)s met"),
    "not_met": N_("%(n)s not met"),
    "pending": N_("%(n)s pending"),
    "not_measured": N_("%(n)s not measured"),
    "invalid": N_("%(n)s invalid"),
}


def table(rows: Sequence[Sequence[str]], *, right_from: int = 1) -> list[str]:
    """Rows lined up by display width; columns from ``right_from`` on are right-aligned."""
    widths = [max(display_width(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            pad(cell, widths[i], right=i >= right_from) for i, cell in enumerate(row)
        ).rstrip()
        for row in rows
    ]


def number(metric: str, value: Any, *, signed: bool = False) -> str:
    """0-1 metrics with 3 decimals; BLEU (0-100) and perplexity with 2."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "—"
    digits = 3 if metric in FRACTION_METRICS else 2
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def interval(metric: str, entry: Any, *, signed: bool = False) -> str:
    """``value [low, high]`` of a stored metric, or a dash when it was not measured."""
    if not isinstance(entry, Mapping) or entry.get("value") is None:
        return "—"
    text = number(metric, entry["value"], signed=signed)
    if entry.get("low") is not None and entry.get("high") is not None:
        low, high = (number(metric, entry[end], signed=signed) for end in ("low", "high"))
        text += f" [{low}, {high}]"
    return text


def labels_of(evaluation: Mapping[str, Any]) -> dict[str, str]:
    """Each candidate's key → its label, in the evaluation's order (a default label in the
    terminal's language)."""
    from app.services.evaluations.candidates import shown_label

    labels = {c["key"]: shown_label(c) for c in evaluation.get("candidates") or []}
    for key, label in ((evaluation.get("results") or {}).get("labels") or {}).items():
        labels[key] = label
    return labels


def results_table(evaluation: Mapping[str, Any]) -> list[str]:
    """One row per model, a column per metric; under each model compared with the baseline,
    its paired difference. Empty when there are no results."""
    results = evaluation.get("results") or {}
    models: Mapping[str, Any] = results.get("models") or {}
    if not models:
        return []
    deltas: Mapping[str, Any] = results.get("deltas") or {}
    found = {metric for scores in models.values() for metric in scores}
    metrics = [m for m in METRICS if m in found] + sorted(found - set(METRICS))
    labels = labels_of(evaluation)
    keys = [k for k in labels if k in models] + [k for k in models if k not in labels]
    rows = [[gettext("model"), *metrics]]
    for key in keys:
        rows.append([labels.get(key, key), *(interval(m, models[key].get(m)) for m in metrics)])
        if key in deltas and key != results.get("baseline"):
            changes = deltas[key]
            rows.append(
                [
                    "  " + gettext("Δ vs baseline"),
                    *(interval(m, changes.get(m), signed=True) for m in metrics),
                ]
            )
    lines = table(rows)
    lines.insert(1, "-" * max(display_width(line) for line in lines))
    lines.append(
        gettext(
            "values [%(level)s interval]; Δ: paired difference, model minus baseline",
            level="95%",
        )
    )
    lines.append(gettext("(perplexity: lower is better)"))
    return lines


def headline(evaluation: Mapping[str, Any]) -> str:
    """Id, status, test data and decoding in one line."""
    results = evaluation.get("results") or {}
    settings = evaluation.get("settings") or {}
    examples = results.get("n") or settings.get("examples")
    data = gettext("%(split)s split", split=evaluation.get("split")) + (
        gettext(", %(n)s examples", n=examples) if examples else ""
    )
    parts = [
        gettext("evaluation %(id)s", id=evaluation["id"]),
        status_text(evaluation["status"]),
        data,
    ]
    decoding = results.get("decoding") or settings.get("decoding") or {}
    temperature = decoding.get("temperature") or 0
    shown = (
        gettext("greedy")
        if temperature == 0
        else gettext("temperature %(t)s", t=f"{temperature:g}")
    )
    if decoding.get("max_new_tokens"):
        shown += gettext(", up to %(n)s new tokens", n=decoding["max_new_tokens"])
    return " · ".join([*parts, shown])


def _explanation(verdict: Mapping[str, Any]) -> str:
    # Imported here: the package app.services.evaluations loads the whole service layer
    # (the database, the queue), a second of every `tunelab` command's start.
    from app.services.evaluations.words import explanation_text

    # Without the status ("not met: rougeL …"), which the mark already says.
    return explanation_text(verdict)


def verdict_lines(verdict: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]) -> list[str]:
    """A line per success criterion with its mark and why, then the overall verdict."""
    if not verdict:
        return [gettext("no success criteria: add some to the project to get a verdict")]
    model = next((v["model"] for v in verdict if v.get("model")), None)
    lines = [
        gettext("success criteria (judged on %(model)s):", model=model)
        if model
        else gettext("success criteria:")
    ]
    marks = [
        gettext(MARKS[str(v.get("status"))])
        if str(v.get("status")) in MARKS
        else str(v.get("status"))
        for v in verdict
    ]
    width = max(display_width(mark) for mark in marks)
    for mark, entry in zip(marks, verdict, strict=True):
        lines.append(f"  {pad(mark, width)}  {entry.get('criterion')}: {_explanation(entry)}")
    counts = [
        gettext(COUNTED[s], n=summary[s])
        for s in MARKS
        if isinstance(summary.get(s), int) and summary[s] > 0
    ]
    status = status_text(summary.get("status", "not_measured")).replace("_", " ")
    shown = gettext("verdict: %(status)s", status=status)
    if counts:
        shown += gettext(" (%(counts)s)", counts=gettext(", ").join(counts))
    lines.append(shown)
    return lines


def render(
    evaluation: Mapping[str, Any],
    verdict: Sequence[Mapping[str, Any]],
    summary: Mapping[str, Any],
) -> str:
    """The whole `show` text: headline, state, results table and verdict."""
    lines = [headline(evaluation)]
    status = evaluation["status"]
    if status in ("queued", "running"):
        lines.append(
            gettext(
                "%(status)s: %(progress)s; results when it has finished",
                status=status_text(status),
                progress=progress_text(evaluation),
            )
        )
    elif status == "failed":
        reason = translate_message(evaluation.get("error") or "") or gettext("no reason recorded")
        lines.append(gettext("error: %(message)s", message=reason))
    lines.append("")
    lines.extend(results_table(evaluation) or [gettext("no results")])
    if status == "succeeded":
        lines.append("")
        lines.extend(verdict_lines(verdict, summary))
    return "\n".join(lines)


def step_name(evaluation: Mapping[str, Any]) -> str:
    """What a running evaluation is doing, e.g. ``generating Fine-tuned (LoRA, job 1a2b3c4d)``."""
    progress = evaluation.get("progress") or {}
    phase = status_text(progress.get("phase") or evaluation["status"])
    key = str(progress.get("model") or "")
    return f"{phase} {labels_of(evaluation).get(key, key)}".strip()


def progress_text(evaluation: Mapping[str, Any]) -> str:
    """The step and its count, e.g. ``generating Fine-tuned (LoRA, job 1a2b3c4d) 3/8``."""
    progress = evaluation.get("progress") or {}
    text = step_name(evaluation)
    if isinstance(progress.get("done"), int) and isinstance(progress.get("total"), int):
        text += f" {progress['done']}/{progress['total']}"
    return text


# --- Commands ---------------------------------------------------------------------------------


def _json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def run_body(args: argparse.Namespace) -> dict[str, Any]:
    """The `POST /evaluations` body for `tunelab eval run`'s flags."""
    models: list[dict[str, Any]] = [
        {"kind": "base", "base_model": name, "k_shot": args.k_shot} for name in args.base_model
    ]
    for job_id, checkpoint in args.checkpoint:
        models.append({"kind": "checkpoint", "job_id": job_id, "checkpoint": checkpoint})
    decoding = present({"max_new_tokens": args.max_new_tokens, "temperature": args.temperature})
    body: dict[str, Any] = {
        "project_id": args.project,
        "job_id": args.job,
        "models": models,
        "baseline": not args.no_baseline,
        "baseline_k_shot": args.k_shot,
        "dataset_id": args.dataset,
        "dataset_version": args.dataset_version,
        "split": args.split,
        "max_samples": args.max_samples,
        "decoding": decoding,
    }
    return present(body)


def cmd_run(args: argparse.Namespace, api: Api) -> int:
    if args.project is None:
        if args.job is None:
            raise CliError(gettext("name the project: --project ID (or a finished job: --job ID)"))
        args.project = api.get(f"/jobs/{args.job}")["project_id"]
    evaluation = api.post("/evaluations", run_body(args))
    print(evaluation["id"], flush=True)
    if not args.wait:
        return 0
    finished = wait(api, evaluation["id"])
    if finished["status"] != "succeeded":
        reason = translate_message(finished.get("error") or "") or gettext("no reason recorded")
        message = (
            gettext("error: evaluation %(id)s was cancelled", id=finished["id"])
            if finished["status"] == "cancelled"
            else gettext(
                "error: evaluation %(id)s failed: %(reason)s", id=finished["id"], reason=reason
            )
        )
        print(message, file=sys.stderr)
        return 1
    print(render(finished, finished.get("verdict") or [], finished.get("verdict_summary") or {}))
    return 0


def wait(api: Api, evaluation_id: str) -> dict[str, Any]:
    """Poll until the evaluation has finished, with a progress bar on stderr."""
    from tqdm import tqdm

    bar = tqdm(total=None, desc=status_text("queued"), unit="", file=sys.stderr, dynamic_ncols=True)
    step: tuple[Any, Any] = (None, None)
    try:
        while True:
            evaluation: dict[str, Any] = api.get(f"/evaluations/{evaluation_id}")
            if evaluation["status"] in FINISHED:
                bar.set_description_str(status_text(evaluation["status"]), refresh=False)
                bar.n = bar.total or bar.n
                bar.refresh()
                return evaluation
            progress = evaluation.get("progress") or {}
            bar.set_description_str(step_name(evaluation), refresh=False)
            if (progress.get("phase"), progress.get("model")) != step:
                # A new phase or model restarts the count, and with it the rate estimate.
                step = (progress.get("phase"), progress.get("model"))
                bar.reset(total=progress.get("total"))
                bar.total = progress.get("total")
            if isinstance(progress.get("done"), int):
                bar.n = progress["done"]
            bar.refresh()
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        # Only the waiting stops: the evaluation runs on in the worker.
        message = gettext(
            "stopped waiting; the evaluation goes on (tunelab eval show %(id)s)", id=evaluation_id
        )
        raise CliError(message, 130) from None
    finally:
        bar.close()


def cmd_show(args: argparse.Namespace, api: Api) -> int:
    evaluation = api.get(f"/evaluations/{args.id}")
    if args.json:
        _json(evaluation)
        return 0
    print(
        render(evaluation, evaluation.get("verdict") or [], evaluation.get("verdict_summary") or {})
    )
    return 0


def cmd_report(args: argparse.Namespace, api: Api) -> int:
    report = api.get(f"/projects/{args.project}/report")
    if args.json:
        _json(report)
    elif report.get("evaluation") is None:
        print(
            gettext(
                "no finished evaluation yet: run one with `tunelab eval run --job JOB_ID --wait`"
            )
        )
    else:
        print(render(report["evaluation"], report["verdict"], report["verdict_summary"]))
    return 0


def _local_time(stamp: str | None) -> str:
    if not stamp:
        return "—"
    return datetime.fromisoformat(stamp).astimezone().strftime("%Y-%m-%d %H:%M")


def cmd_list(args: argparse.Namespace, api: Api) -> int:
    page = api.get("/evaluations", project_id=args.project, job_id=args.job, limit=args.limit)
    if not page["items"]:
        print(gettext("no evaluations"))
        return 0
    rows = [["id", gettext("status"), gettext("created"), gettext("models")]]
    for e in page["items"]:
        models = ", ".join(labels_of(e).values())
        rows.append([e["id"], status_text(e["status"]), _local_time(e.get("created_at")), models])
    print("\n".join(table(rows, right_from=len(rows[0]))))
    if page["total"] > len(page["items"]):
        print(_more(page))
    return 0


def _field(name: str, text: str, width: int) -> str:
    # Continuation lines of a multi-line answer start under its first line.
    indent = "\n  " + " " * (width + 2)
    return f"  {pad(name, width)}  " + indent.join(str(text).splitlines() or [""])


def cmd_samples(args: argparse.Namespace, api: Api) -> int:
    evaluation = api.get(f"/evaluations/{args.id}")
    page = api.get(
        f"/evaluations/{args.id}/samples",
        show=args.show,
        q=args.q,
        order=args.order,
        limit=args.limit,
    )
    labels = labels_of(evaluation)
    primary = (evaluation.get("results") or {}).get("primary_metric") or "rougeL"
    print(
        gettext(
            "%(total)s samples (show=%(show)s, order=%(order)s); Δ: %(metric)s change",
            total=page["total"],
            show=args.show,
            order=args.order,
            metric=primary,
        )
    )
    prompt, reference = gettext("prompt"), gettext("reference")
    width = max(display_width(name) for name in [prompt, reference, *labels.values()])
    for sample in page["items"]:
        delta = number(primary, sample.get("delta"), signed=True)
        print(f"\n#{sample['position']}  Δ {primary} {delta}")
        print(_field(prompt, sample["prompt"], width))
        print(_field(reference, sample["reference"], width))
        for key, answer in sample["outputs"].items():
            score = number(primary, (sample["scores"].get(key) or {}).get(primary))
            print(_field(labels.get(key, key), f"[{score}] {answer}", width))
    if page["total"] > len(page["items"]):
        print("\n" + _more(page))
    return 0


def _more(page: Mapping[str, Any]) -> str:
    return gettext(
        "(%(shown)s of %(total)s; --limit shows more)",
        shown=len(page["items"]),
        total=page["total"],
    )


def cmd_export(args: argparse.Namespace, api: Api) -> int:
    with api.stream(f"/evaluations/{args.id}/export", format=args.format) as response:
        if args.output is None:
            for chunk in response.iter_bytes():
                sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            return 0
        # Written beside the target and moved into place, so a broken download leaves no
        # half file under the name asked for.
        target = Path(args.output)
        partial = target.with_name(target.name + ".part")
        with partial.open("wb") as out:
            for chunk in response.iter_bytes():
                out.write(chunk)
        partial.replace(target)
    print(gettext("wrote %(path)s", path=target), file=sys.stderr)
    return 0


def cmd_cancel(args: argparse.Namespace, api: Api) -> int:
    evaluation = api.post(f"/evaluations/{args.id}/cancel")
    if evaluation["status"] == "cancelled":
        print(gettext("cancelled evaluation %(id)s", id=evaluation["id"]))
    else:
        print(
            gettext(
                "cancel requested: evaluation %(id)s stops at its next batch", id=evaluation["id"]
            )
        )
    return 0


# --- Arguments --------------------------------------------------------------------------------


def checkpoint_spec(text: str) -> tuple[str, str]:
    """``JOB_ID:checkpoint-N`` (or ``JOB_ID:N``) as (job id, checkpoint name)."""
    job_id, sep, name = text.partition(":")
    if not sep or not job_id or not name:
        raise argparse.ArgumentTypeError(
            gettext("%(text)s: write JOB_ID:checkpoint-N", text=repr(text))
        )
    return job_id, f"checkpoint-{name}" if name.isdigit() else name


def add_parser(sub: Any) -> None:
    server = server_options()

    ev = sub.add_parser("eval", help=gettext("run and read evaluations on a tunelab server"))
    ev_sub = ev.add_subparsers(dest="eval_command", required=True)

    def command(name: str, func: Command, text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = ev_sub.add_parser(
            name, help=gettext(text), parents=[server]
        )
        parser.set_defaults(func=command_entry(func))
        return parser

    run = command("run", cmd_run, N_("queue an evaluation and print its id"))
    run.add_argument(
        "--project", metavar="ID", help=gettext("project id (default: the --job's project)")
    )
    run.add_argument(
        "--job", metavar="ID", help=gettext("a finished job, compared with its prompting baseline")
    )
    run.add_argument(
        "--base-model",
        action="append",
        default=[],
        metavar="NAME",
        help=gettext("also evaluate a base model with the prompt (repeatable)"),
    )
    run.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        type=checkpoint_spec,
        metavar="JOB_ID:checkpoint-N",
        help=gettext("also evaluate a saved checkpoint (repeatable)"),
    )
    run.add_argument("--no-baseline", action="store_true", help=gettext("no prompting baseline"))
    run.add_argument(
        "--k-shot",
        type=int,
        default=0,
        metavar="N",
        help=gettext("examples in the baseline's and base models' prompts"),
    )
    run.add_argument(
        "--dataset", metavar="ID", help=gettext("test data (default: the job's dataset version)")
    )
    run.add_argument("--dataset-version", type=int, metavar="N")
    run.add_argument("--split", default="test", choices=["test", "validation", "train", "all"])
    run.add_argument(
        "--max-samples", type=int, metavar="N", help=gettext("the first N examples only")
    )
    run.add_argument(
        "--max-new-tokens", type=int, metavar="N", help=gettext("default: fits the references")
    )
    run.add_argument("--temperature", type=float, metavar="T", help=gettext("default: 0 (greedy)"))
    run.add_argument("--wait", action="store_true", help=gettext("follow it and print the results"))

    show = command("show", cmd_show, N_("results table and verdict of an evaluation"))
    show.add_argument("id")
    show.add_argument("--json", action="store_true", help=gettext("the evaluation as JSON"))

    report = command("report", cmd_report, N_("a project's newest finished evaluation and verdict"))
    report.add_argument("project", metavar="PROJECT_ID")
    report.add_argument("--json", action="store_true", help=gettext("the report as JSON"))

    listing = command("list", cmd_list, N_("evaluations, newest first"))
    listing.add_argument("--project", metavar="ID")
    listing.add_argument("--job", metavar="ID")
    listing.add_argument("--limit", type=int, default=50, metavar="N")

    samples = command("samples", cmd_samples, N_("prompts, references and each model's answer"))
    samples.add_argument("id")
    samples.add_argument("--show", default="all", choices=["all", "worse", "better", "same"])
    samples.add_argument("--order", default="worst", choices=["worst", "best", "position"])
    samples.add_argument(
        "--q", metavar="TEXT", help=gettext("text in the prompt, reference or answers")
    )
    samples.add_argument("--limit", type=int, default=20, metavar="N")

    export = command("export", cmd_export, N_("download every sample as CSV or JSON"))
    export.add_argument("id")
    export.add_argument("--format", default="json", choices=["json", "csv"])
    export.add_argument("-o", "--output", help=gettext("file to write (default: standard output)"))

    cancel = command("cancel", cmd_cancel, N_("cancel a queued or running evaluation"))
    cancel.add_argument("id")
