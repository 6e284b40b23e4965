"""`tunelab data validate|stats|split FILE`: the data step on the command line, on local files,
with no server. The same validation, statistics and split code as the web and API."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from app.core.i18n import gettext, ngettext
from app.core.messages import translate_message

ROLES = ("system", "prompt", "input", "completion")


def add_parser(sub: Any) -> None:
    data = sub.add_parser(
        "data", help=gettext("validate, describe and split training files locally")
    )
    data_sub = data.add_subparsers(dest="data_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("file", help=gettext("JSON, JSONL, CSV or XLSX file"))
        p.add_argument(
            "--format",
            choices=["alpaca", "chat", "sharegpt", "prompt_completion", "self_instruct"],
            help=gettext("override format detection"),
        )
        p.add_argument(
            "--map",
            action="append",
            default=[],
            metavar="ROLE=COLUMN",
            help=gettext(
                "use your own columns, e.g. --map prompt=question --map completion=answer"
            ),
        )
        p.add_argument(
            "--drop-invalid",
            action="store_true",
            help=gettext("skip invalid rows instead of failing"),
        )
        p.add_argument("--quiet", action="store_true", help=gettext("no progress bar"))

    validate = data_sub.add_parser("validate", help=gettext("check every record; exit 1 on errors"))
    common(validate)
    validate.add_argument("--errors-out", help=gettext("write every error to this CSV file"))
    validate.add_argument("--json", action="store_true", help=gettext("print the report as JSON"))
    validate.set_defaults(func=cmd_validate)

    stats = data_sub.add_parser(
        "stats", help=gettext("record counts, lengths, languages, duplicates")
    )
    common(stats)
    stats.add_argument(
        "--tokenizer",
        help=gettext(
            "count tokens with this tokenizer (qwen3, llama-3.2, a catalog model or a folder)"
        ),
    )
    stats.add_argument("--max-seq-length", type=int, help=gettext("count samples longer than this"))
    stats.add_argument("--json", action="store_true", help=gettext("print the statistics as JSON"))
    stats.set_defaults(func=cmd_stats)

    split = data_sub.add_parser("split", help=gettext("write train/validation/test JSONL files"))
    common(split)
    split.add_argument(
        "--validation", type=float, default=0.05, help=gettext("fraction (0.05 = 5%%)")
    )
    split.add_argument("--test", type=float, default=0.05, help=gettext("fraction (0.05 = 5%%)"))
    split.add_argument("--seed", type=int, default=0)
    split.add_argument(
        "--out", required=True, help=gettext("folder for train/validation/test.jsonl")
    )
    split.set_defaults(func=cmd_split)


def _mapping(pairs: list[str]) -> dict[str, str] | None:
    mapping: dict[str, str] = {}
    for pair in pairs:
        role, sep, column = pair.partition("=")
        if not sep or role not in ROLES or not column:
            raise SystemExit(
                "tunelab data: "
                + gettext(
                    "--map %(pair)s: use ROLE=COLUMN with ROLE one of %(roles)s",
                    pair=repr(pair),
                    roles=", ".join(ROLES),
                )
            )
        mapping[role] = column
    return mapping or None


class _Bar:
    """A byte progress bar on stderr (tqdm); --quiet turns it off."""

    def __init__(self, total: int, quiet: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            desc=gettext("validating"),
            disable=quiet,
            file=sys.stderr,
        )

    def __call__(self, done: int, total: int) -> None:
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        self.bar.close()


def _validate(args: argparse.Namespace, dest: Path | None, errors_out: Path | None) -> Any:
    from app.datasets import parsing as dataset_parsing

    path = Path(args.file)
    if not path.is_file():
        raise SystemExit("tunelab data: " + gettext("%(path)s: no such file", path=path))
    mapping = _mapping(args.map)
    bar = _Bar(path.stat().st_size, args.quiet)
    try:
        return dataset_parsing.validate_file(
            path,
            dest=dest,
            format="columns" if mapping else args.format,
            mapping=mapping,
            filename=path.name,
            drop_invalid=args.drop_invalid,
            errors_file=errors_out,
            progress=bar,
        )
    finally:
        bar.close()


def summary(report: Any) -> str:
    """One line for a person: what was found, and the first error if any (in the terminal's
    language; ``ValidationReport.summary`` is the English one)."""
    kind = f"{report.format} " if report.format else ""
    valid = ngettext(
        "%(count)s valid %(kind)srecord",
        "%(count)s valid %(kind)srecords",
        report.records,
        count=f"{report.records:,}",
        kind=kind,
    )
    if report.ok:
        count = len(report.warnings)
        notes = [ngettext("%(n)s warning", "%(n)s warnings", count, n=count)] if count else []
        if report.dropped:
            notes.insert(
                0,
                ngettext(
                    "%(n)s invalid record left out",
                    "%(n)s invalid records left out",
                    report.dropped,
                    n=f"{report.dropped:,}",
                ),
            )
        return (
            gettext("%(valid)s (%(notes)s)", valid=valid, notes="; ".join(notes))
            if notes
            else valid
        )
    if not report.errors:
        errors = ngettext(
            "%(n)s error", "%(n)s errors", report.error_count, n=f"{report.error_count:,}"
        )
        return f"{errors}; {valid}"
    first = report.errors[0]
    first_text = gettext(
        "line %(line)s: %(message)s", line=first.line, message=translate_message(first.message)
    )
    more = report.error_count - 1
    rest = (
        ngettext(" and %(n)s more error", " and %(n)s more errors", more, n=f"{more:,}")
        if more
        else ""
    )
    return f"{first_text}{rest}; {valid}"


def _print_report(report: Any) -> None:
    print(summary(report))
    for error in report.errors[:20]:
        where = gettext("line %(line)s", line=error.line) + (
            f", `{error.field}`" if error.field else ""
        )
        print(f"  {where}: {translate_message(error.message)}")
    if report.error_count > 20:
        more = f"{report.error_count - 20:,}"
        print("  " + gettext("… %(n)s more (--errors-out FILE writes them all)", n=more))
    for warning in report.warnings:
        print(gettext("warning: %(warning)s", warning=translate_message(warning)))


def cmd_validate(args: argparse.Namespace) -> int:
    errors_out = Path(args.errors_out) if args.errors_out else None
    report = _validate(args, None, errors_out)
    if args.json:
        print(
            json.dumps(
                {
                    "ok": report.ok,
                    "format": report.format,
                    "container": report.container,
                    "records": report.records,
                    "dropped": report.dropped,
                    "error_count": report.error_count,
                    "errors": [
                        {"line": e.line, "field": e.field, "message": e.message}
                        for e in report.errors
                    ],
                    "warnings": report.warnings,
                    "mapping": report.mapping,
                    "sha256": report.sha256,
                },
                ensure_ascii=False,
            )
        )
    else:
        _print_report(report)
    return 0 if report.ok else 1


def cmd_stats(args: argparse.Namespace) -> int:
    from app.core.config import get_settings
    from app.datasets import stats as dataset_stats
    from app.datasets import tokenization

    with tempfile.TemporaryDirectory(prefix="tunelab-stats-") as tmp:
        records = Path(tmp) / "records.jsonl"
        report = _validate(args, records, None)
        if not report.ok:
            _print_report(report)
            return 1
        tokenizer = None
        if args.tokenizer:
            tokenizer = tokenization.load_tokenizer(
                args.tokenizer, cache_dir=get_settings().model_cache_dir
            )
        stats = dataset_stats.compute_stats_of(
            [records], tokenizer=tokenizer, max_seq_length=args.max_seq_length
        )
    stats["format"] = report.format
    stats["warnings"] = report.warnings
    if args.json:
        print(json.dumps(stats, ensure_ascii=False))
    else:
        print(dataset_stats.describe(stats))
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    from app.core.errors import TunelabError
    from app.datasets import splits as dataset_splits

    out = Path(args.out)
    with tempfile.TemporaryDirectory(prefix="tunelab-split-") as tmp:
        records = Path(tmp) / "records.jsonl"
        report = _validate(args, records, None)
        if not report.ok:
            _print_report(report)
            return 1
        try:
            counts = dataset_splits.split_records(
                [records],
                Path(tmp) / "out",
                validation=args.validation,
                test=args.test,
                seed=args.seed,
            )
        except TunelabError as exc:
            print(f"tunelab data split: {translate_message(exc.message)}", file=sys.stderr)
            return 2
        out.mkdir(parents=True, exist_ok=True)
        for name in dataset_splits.SPLITS:
            shutil.move(str(Path(tmp) / "out" / f"{name}.jsonl"), out / f"{name}.jsonl")
    print(
        gettext(
            "%(records)s records: train %(train)s, validation %(validation)s, test %(test)s "
            "(seed %(seed)s) → %(out)s",
            records=f"{report.records:,}",
            train=f"{counts.train:,}",
            validation=f"{counts.validation:,}",
            test=f"{counts.test:,}",
            seed=args.seed,
            out=out,
        )
    )
    return 0
