"""Dataset validation speed: a plain json.loads loop against tunelab's `validate_file`.

    python bench/dataset_validation.py               # a 512 MB file and one of half the size
    python bench/dataset_validation.py --quick       # 20 MB, a smoke test of a few seconds

A JSONL file of realistic chat and alpaca records (half Chinese, half English; prompts of tens
to hundreds of characters, answers up to a few thousand; some system prompts and multi-turn
chats) is generated in a temporary folder. Then, each in a child process of its own so that
peak memory is measured cleanly, over the same file (already in the page cache):

(a) baseline: ``for line in f: json.loads(line)`` with ``f = open(path, encoding="utf-8")``;
(b) tunelab: ``validate_file(src, dest=...)``: every record checked, normalized, written to
    ``dest`` (fsynced and renamed), duplicates, short answers and scripts counted, sha256.

Each is run ``--repeat`` times and the fastest run counts. One JSON line comes out: size,
records, MB/s of each and their ratio, peak RSS of each (and of tunelab's worker processes,
which large files use when there are several cores), and the same for a file of half the size,
so that peak memory independent of file size can be seen.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MB = 1024 * 1024
_ZH = (
    "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说"
    "产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使"
    "点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明"
    "看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料"
)
_ZH_PUNCT = "，。、；：？！"
# common English words; prose made of them has English letter and word lengths
_EN_WORDS = (
    "the of and to in is that for it as with was on be by this are from at or an which have "
    "not but they can more one all their there been if when will about would up out so what "
    "time some into than them only other its also new these two may first any like use then "
    "most model data answer question training example result method value system user "
    "language"
)
_EN = _EN_WORDS.split()


def _chinese(rng: random.Random, chars: int) -> str:
    out = []
    for _ in range(chars):
        out.append(rng.choice(_ZH))
        if rng.random() < 0.08:
            out.append(rng.choice(_ZH_PUNCT))
    return "".join(out) + "。"


def _english(rng: random.Random, chars: int) -> str:
    words = [rng.choice(_EN) for _ in range(max(1, chars // 5))]
    return " ".join(words).capitalize() + "."


def _length(rng: random.Random, low: int, high: int) -> int:
    # long-tailed, like real prompts and answers
    return int(min(high, low + rng.lognormvariate(0, 1) * (high - low) / 6))


def _record(rng: random.Random, marker: str) -> dict[str, Any]:
    text = _chinese if rng.random() < 0.5 else _english
    if rng.random() < 0.5:
        return {
            "instruction": text(rng, _length(rng, 10, 300)) + marker,
            "input": text(rng, _length(rng, 10, 400)) if rng.random() < 0.4 else "",
            "output": text(rng, _length(rng, 30, 3000)),
        }
    turns = []
    if rng.random() < 0.3:
        turns.append({"role": "system", "content": text(rng, _length(rng, 10, 120))})
    for i in range(rng.choice((1, 1, 1, 2, 3))):
        question = text(rng, _length(rng, 10, 300)) + (marker if i == 0 else "")
        turns.append({"role": "user", "content": question})
        turns.append({"role": "assistant", "content": text(rng, _length(rng, 30, 2000))})
    return {"messages": turns}


def generate(path: Path, size: int, seed: int = 1) -> int:
    """Write about `size` bytes of JSONL to `path`; return the number of records.

    A pool of distinct records is cycled with a running number in the first prompt, so every
    record is different (no duplicate warnings) while generation stays fast.
    """
    rng = random.Random(seed)
    pool = [json.dumps(_record(rng, " #@"), ensure_ascii=False) for _ in range(4000)]
    written = records = 0
    with path.open("w", encoding="utf-8") as f:
        while written < size:
            line = pool[records % len(pool)].replace(" #@", f" #{records}", 1) + "\n"
            f.write(line)
            written += len(line.encode("utf-8"))
            records += 1
    return records


# --- measurements, each in a child process ------------------------------------------------


def _baseline(src: Path) -> int:
    count = 0
    with open(src, encoding="utf-8") as f:
        for line in f:
            json.loads(line)
            count += 1
    return count


def _tunelab(src: Path, workers: int | None) -> int:
    from app.datasets.parsing import validate_file  # imported before the clock starts

    dest = src.with_name("records.jsonl")
    try:
        report = validate_file(src, dest=dest, workers=workers)
        if not report.ok:
            raise SystemExit(f"validation failed: {report.summary()}")
        return report.records
    finally:
        dest.unlink(missing_ok=True)


def _measure(kind: str, src: Path, workers: int | None) -> None:
    """Run one measurement and print {seconds, records, peak RSS} as JSON (the child side).

    A server has the validation code imported already: importing it is not timed.
    """
    if kind == "tunelab":
        import app.datasets.parsing  # noqa: F401
    start = time.perf_counter()
    records = _baseline(src) if kind == "baseline" else _tunelab(src, workers)
    seconds = time.perf_counter() - start
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        json.dumps(
            {"seconds": seconds, "records": records, "rss_mb": own, "children_rss_mb": children}
        )
    )


def _child(kind: str, src: Path, workers: int | None) -> dict[str, Any]:
    command = [sys.executable, __file__, "--measure", kind, "--src", str(src)]
    if workers is not None:
        command += ["--workers", str(workers)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _compare(src: Path, repeat: int, workers: int | None) -> dict[str, Any]:
    size_mb = src.stat().st_size / MB
    runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "tunelab": []}
    for _ in range(repeat):  # interleaved, so a noisy moment hurts both alike
        for kind in runs:
            runs[kind].append(_child(kind, src, workers))
    best = {kind: min(results, key=lambda r: r["seconds"]) for kind, results in runs.items()}
    base, ours = best["baseline"], best["tunelab"]
    if base["records"] != ours["records"]:
        raise SystemExit(f"record counts differ: {base['records']} vs {ours['records']}")
    return {
        "size_mb": round(size_mb, 1),
        "records": ours["records"],
        "baseline_mb_s": round(size_mb / base["seconds"], 1),
        "tunelab_mb_s": round(size_mb / ours["seconds"], 1),
        "ratio": round(base["seconds"] / ours["seconds"], 3),
        "baseline_peak_rss_mb": round(base["rss_mb"], 1),
        "tunelab_peak_rss_mb": round(ours["rss_mb"], 1),
        "tunelab_worker_peak_rss_mb": round(ours["children_rss_mb"], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=float, default=512)
    parser.add_argument("--quick", action="store_true", help="a 20 MB file, run once")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the fastest counts")
    parser.add_argument(
        "--workers", type=int, default=None, help="processes for tunelab (default: automatic)"
    )
    parser.add_argument("--measure", choices=("baseline", "tunelab"), help=argparse.SUPPRESS)
    parser.add_argument("--src", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        _measure(args.measure, args.src, args.workers)
        return
    size_mb = 20 if args.quick else args.size_mb
    repeat = 1 if args.quick else max(1, args.repeat)
    with tempfile.TemporaryDirectory(prefix="tunelab-bench-") as tmp:
        full, half = Path(tmp) / "full" / "data.jsonl", Path(tmp) / "half" / "data.jsonl"
        full.parent.mkdir()
        half.parent.mkdir()
        started = time.perf_counter()
        generate(full, int(size_mb * MB))
        generate(half, int(size_mb * MB / 2), seed=2)
        generated = time.perf_counter() - started
        result = _compare(full, repeat, args.workers)
        result["half"] = _compare(half, repeat, args.workers)
    result.update(
        repeat=repeat,
        workers=args.workers if args.workers is not None else "auto",
        cores=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        generate_s=round(generated, 1),
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
