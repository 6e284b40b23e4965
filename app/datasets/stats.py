"""Statistics of a dataset version's records file: lengths (characters, or tokens of a chosen
model's tokenizer), language mix, duplicates, the longest samples and what max_seq_length cuts.

The file is streamed: memory grows by a few numbers per record, never by the records.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import re
import sys
import time
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

import jinja2
import orjson

from app.core.errors import InvalidDataset
from app.datasets.tokenization import TextTokenizer
from worker.spec.formatting import (
    FALLBACK_CHAT_TEMPLATE,
    IGNORE_INDEX,
    encode,
    ensure_chat_template,
    render,
)

LANGUAGES = ("zh", "ja", "ko", "latin", "other", "none")
HISTOGRAM_BINS = 20
LONGEST_SHOWN = 10
PREVIEW_CHARS = 80


def compute_stats(
    records_path: Path,
    *,
    tokenizer: TextTokenizer | None = None,
    max_seq_length: int | None = None,
    sample_limit: int = 20000,
) -> dict[str, Any]:
    """Lengths, language mix, duplicates and longest samples of a records file (JSONL).

    Without a tokenizer lengths are characters of the message contents. With one they are
    tokens of the conversation rendered by the chat template, exactly as training encodes it
    (formatting.encode, no system prompt added): the answer is the tokens that carry the loss,
    the prompt everything else, template markup included. Beyond ``sample_limit`` records,
    token lengths come from an evenly spaced sample; counts of languages and duplicates always
    cover every record.
    """
    if not records_path.is_file():
        raise InvalidDataset(f"The records file '{records_path.name}' does not exist.")
    return compute_stats_of(
        [records_path],
        tokenizer=tokenizer,
        max_seq_length=max_seq_length,
        sample_limit=sample_limit,
    )


def compute_stats_of(
    records_paths: Sequence[Path],
    *,
    tokenizer: TextTokenizer | None = None,
    max_seq_length: int | None = None,
    sample_limit: int = 20000,
) -> dict[str, Any]:
    """``compute_stats`` of several records files (a version's splits) taken as one dataset.

    Files that do not exist (an empty split) are skipped; each longest sample names its file
    by stem ("train", "validation", ...) and its index in that file.
    """
    started = time.perf_counter()
    paths = [p for p in records_paths if p.is_file()]
    chosen: set[int] | None = None
    template_fallback = False
    if tokenizer is not None:
        records = sum(_count_records(p) for p in paths)
        if records > sample_limit:
            chosen = {k * records // sample_limit for k in range(sample_limit)}
        template_fallback = (
            ensure_chat_template(tokenizer) or tokenizer.chat_template == FALLBACK_CHAT_TEMPLATE
        )

    prompt, answer, total = array("q"), array("q"), array("q")
    languages = dict.fromkeys(LANGUAGES, 0)
    seen: set[bytes] = set()
    duplicates = turns = count = attempted = 0
    # (length, -position, split, index, line, preview): a min-heap of the longest ten.
    longest: list[tuple[int, int, str, int, int, str]] = []
    cut = _Truncation(max_seq_length) if tokenizer is not None and max_seq_length else None
    failures = _Failures()
    token_seconds = 0.0

    for position, (split, index, line, messages) in enumerate(_read_all(paths)):
        count += 1
        turns += sum(1 for m in messages if m["role"] != "system")
        languages[dominant_script(_joined(messages))] += 1
        key = hashlib.blake2b(orjson.dumps(messages), digest_size=12).digest()
        if key in seen:
            duplicates += 1
        else:
            seen.add(key)

        if tokenizer is None:
            asked = sum(len(m["content"]) for m in messages if m["role"] != "assistant")
            answered = sum(len(m["content"]) for m in messages if m["role"] == "assistant")
            length = asked + answered
        elif chosen is None or position in chosen:
            attempted += 1
            tick = time.perf_counter()
            try:
                sample = encode(tokenizer, messages, sys.maxsize)
            except jinja2.exceptions.TemplateError as exc:
                failures.add(split, index, line, exc)
                continue
            finally:
                token_seconds += time.perf_counter() - tick
            length = len(sample.input_ids)
            answered = sum(1 for label in sample.labels if label != IGNORE_INDEX)
            asked = length - answered
            if cut is not None:
                cut.add(length, sample.labels)
        else:
            continue

        prompt.append(asked)
        answer.append(answered)
        total.append(length)
        if len(longest) < LONGEST_SHOWN or (length, -position) > longest[0][:2]:
            # The preview text is only built for the few that make it into the top ten.
            entry = (length, -position, split, index, line, _preview_text(messages))
            if len(longest) < LONGEST_SHOWN:
                heapq.heappush(longest, entry)
            else:
                heapq.heapreplace(longest, entry)

    measured = len(total)
    stats: dict[str, Any] = {
        "records": count,
        "sampled": attempted if chosen is not None else None,
        "unit": "tokens" if tokenizer is not None else "characters",
        "tokenizer": tokenizer.name if tokenizer is not None else None,
        "template_fallback": template_fallback,
        "mean_turns": round(turns / count, 2) if count else 0,
        "prompt": summarize(prompt),
        "answer": summarize(answer),
        "total": summarize(total),
        "languages": languages,
        "duplicates": duplicates,
        "longest": [
            {"split": split, "index": index, "line": line, "length": length, "preview": preview}
            for length, _, split, index, line, preview in sorted(longest, reverse=True)
        ],
        "max_seq_length": cut.result(measured) if cut is not None else None,
        "template_errors": failures.result(),
        "seconds": round(time.perf_counter() - started, 3),
    }
    if tokenizer is not None:
        tokens = sum(total)
        stats["tokens_per_second"] = round(tokens / token_seconds) if token_seconds > 0 else None
    return stats


def token_counter(tokenizer: TextTokenizer) -> Callable[[Sequence[dict[str, str]]], int]:
    """A function giving a conversation's length in tokens as training encodes it (no system
    prompt added): the number that max_seq_length is compared with."""
    ensure_chat_template(tokenizer)

    def count(messages: Sequence[dict[str, str]]) -> int:
        try:
            text = render(tokenizer, messages, generation_prompt=False)
        except jinja2.exceptions.TemplateError as exc:
            raise InvalidDataset(
                f"The chat template of '{tokenizer.name}' cannot render a record: {exc}"
            ) from exc
        return len(tokenizer(text, return_offsets_mapping=False)["input_ids"])

    return count


def describe(stats: dict[str, Any]) -> str:
    """The statistics as a few lines of text (the command line's report), in the current
    language (app.core.i18n: the terminal's for the CLI)."""
    from app.core.i18n import gettext
    from app.core.words import display_width, pad

    unit = gettext("tokens") if stats["unit"] == "tokens" else gettext("characters")
    sampled = (
        gettext(" (lengths from a sample of %(n)s)", n=f"{stats['sampled']:,}")
        if stats.get("sampled")
        else ""
    )
    if stats.get("tokenizer"):
        header = gettext(
            "Lengths (%(unit)s of %(tokenizer)s)", unit=unit, tokenizer=stats["tokenizer"]
        )
    else:
        header = gettext("Lengths (%(unit)s)", unit=unit)
    width = max(28, display_width(header) + 2)
    columns = [gettext("min"), "p50", "p90", "p99", gettext("max"), gettext("mean")]
    lines = [
        gettext(
            "%(records)s records, %(turns)s turns on average, %(duplicates)s duplicates",
            records=f"{stats['records']:,}",
            turns=stats["mean_turns"],
            duplicates=f"{stats['duplicates']:,}",
        )
        + sampled,
        pad(header, width) + "".join(pad(k, 8, right=True) for k in columns),
    ]
    for part, title in (
        ("prompt", gettext("prompt")),
        ("answer", gettext("answer")),
        ("total", gettext("total")),
    ):
        s = stats[part]
        values = "".join(f"{s[k]:>8,}" for k in ("min", "p50", "p90", "p99", "max"))
        lines.append(f"  {pad(title, width - 2)}{values}{s['mean']:>8,.1f}")
    mix = ", ".join(f"{code} {n:,}" for code, n in stats["languages"].items() if n)
    lines.append(gettext("Languages: %(mix)s", mix=mix or gettext("none")))
    cut = stats.get("max_seq_length")
    if cut:
        lines.append(
            gettext(
                "Longer than %(limit)s tokens: %(longer)s (%(share)s), longest %(longest)s; "
                "%(dropped)s would lose every answer token",
                limit=f"{cut['limit']:,}",
                longer=f"{cut['longer']:,}",
                share=f"{cut['share']:.1%}",
                longest=f"{cut['longest']:,}",
                dropped=f"{cut['dropped']:,}",
            )
        )
    if stats.get("template_fallback"):
        lines.append(
            gettext("The tokenizer has no chat template: tunelab's fallback template is used.")
        )
    errors = stats.get("template_errors")
    if errors:
        first = errors["first"]
        lines.append(
            gettext(
                "The chat template refused %(count)s records, first %(split)s line %(line)s: "
                "%(message)s",
                count=f"{errors['count']:,}",
                split=first["split"],
                line=first["line"],
                message=first["message"],
            )
        )
    return "\n".join(lines)


# --- Reading -------------------------------------------------------------------------------


def _count_records(path: Path) -> int:
    # Sampling needs the count before the pass; counting newlines in blocks is ~free.
    count = 0
    last = b"\n"
    with _open(path) as fh:
        while block := fh.read(1 << 20):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


def _open(path: Path) -> Any:
    try:
        return path.open("rb")
    except OSError as exc:
        raise InvalidDataset(f"The records file '{path.name}' cannot be read: {exc}") from exc


def _read_all(paths: Sequence[Path]) -> Iterator[tuple[str, int, int, list[dict[str, str]]]]:
    """(file stem, record index in the file from 0, source line, messages) for each record."""
    for path in paths:
        for index, line, messages in _read(path):
            yield path.stem, index, line, messages


def _read(path: Path) -> Iterator[tuple[int, int, list[dict[str, str]]]]:
    index = 0
    with _open(path) as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                record = orjson.loads(raw)
                messages = record["messages"]
            except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                raise InvalidDataset(
                    f"The records file '{path.name}' is damaged at line {number}: {exc}; "
                    "upload the dataset again."
                ) from exc
            # Older records files carry no source line: the record's number stands in.
            line = record.get("line")
            yield index, line if isinstance(line, int) else index + 1, messages
            index += 1


def _joined(messages: Sequence[dict[str, str]]) -> str:
    # The system prompt is often boilerplate in another language than the conversation.
    return "\n".join(m["content"] for m in messages if m["role"] != "system")


def _preview_text(messages: Sequence[dict[str, str]]) -> str:
    first = next((m["content"] for m in messages if m["role"] != "system"), "")
    flat = " ".join(first.split())
    return flat if len(flat) <= PREVIEW_CHARS else flat[: PREVIEW_CHARS - 1] + "…"


# --- Language mix --------------------------------------------------------------------------

_HAN = re.compile(
    "[\u2e80-\u2fdf\u3005\u3007\u3021-\u3029\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
    "\U00020000-\U0003134f]"
)
_HIRAGANA = re.compile("[\u3040-\u309f]")
_KATAKANA = re.compile("[\u30a0-\u30ff\u31f0-\u31ff\uff66-\uff9d]")
_HANGUL = re.compile("[\u1100-\u11ff\u3130-\u318f\ua960-\ua97f\uac00-\ud7af\ud7b0-\ud7ff]")
_LATIN_LETTERS = "A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u1e00-\u1eff"
_LATIN_WORD = re.compile(f"[{_LATIN_LETTERS}]+")
_ASCII_WORD = re.compile("[A-Za-z]+")
# Any other letter: \w without digits, underscore, and the scripts counted above.
_OTHER_WORD = re.compile(
    f"[^\\W\\d_{_LATIN_LETTERS}\u1100-\u11ff\u2e80-\u2fdf\u3005\u3007\u3021-\u3029"
    "\u3040-\u30ff\u3130-\u318f\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\ua960-\ua97f"
    "\uac00-\ud7ff\uf900-\ufaff\uff66-\uff9d\U00020000-\U0003134f]+"
)
# Japanese writes kanji among kana, and its particles (の, は, に) are hiragana; Chinese text
# that quotes a Japanese name or title has some katakana but hardly any hiragana.
_HIRAGANA_SHARE_FOR_JAPANESE = 0.05
_KANA_SHARE_FOR_JAPANESE = 0.3


def dominant_script(text: str) -> str:
    """ "zh", "ja", "ko", "latin", "other" or "none" (no letters) for ``text``.

    Han, kana and hangul count per character, alphabetic scripts per word, since one
    character of the first carries about as much as one word of the second: a Chinese
    question about a Python function is Chinese.
    """
    if text.isascii():
        return "latin" if _ASCII_WORD.search(text) else "none"
    han = len(_HAN.findall(text))
    hiragana = len(_HIRAGANA.findall(text))
    kana = hiragana + len(_KATAKANA.findall(text))
    cjk = han + kana
    japanese = cjk > 0 and (
        hiragana >= _HIRAGANA_SHARE_FOR_JAPANESE * cjk or kana >= _KANA_SHARE_FOR_JAPANESE * cjk
    )
    weights = {
        "ja" if japanese else "zh": cjk,
        "ko": len(_HANGUL.findall(text)),
        "latin": len(_LATIN_WORD.findall(text)),
        "other": len(_OTHER_WORD.findall(text)),
    }
    best = max(weights, key=lambda k: weights[k])
    return best if weights[best] > 0 else "none"


# --- Summaries -----------------------------------------------------------------------------


def summarize(values: Sequence[int]) -> dict[str, Any]:
    """min, mean, p50, p90, p99, max (nearest rank) and a histogram of ``values``."""
    ordered = sorted(values)
    if not ordered:
        empty: dict[str, Any] = dict.fromkeys(("min", "mean", "p50", "p90", "p99", "max"), 0)
        return {**empty, "histogram": {"edges": [], "counts": []}}
    return {
        "min": ordered[0],
        "mean": round(sum(ordered) / len(ordered), 1),
        "p50": _percentile(ordered, 50),
        "p90": _percentile(ordered, 90),
        "p99": _percentile(ordered, 99),
        "max": ordered[-1],
        "histogram": histogram(ordered),
    }


def _percentile(ordered: Sequence[int], p: float) -> int:
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def histogram(ordered: Sequence[int], bins: int = HISTOGRAM_BINS) -> dict[str, list[int]]:
    """Counts over about ``bins`` equal bins whose edges are round numbers (1, 2, 5 × 10^k).

    ``edges`` has one more entry than ``counts``; bin i holds edges[i] <= v < edges[i + 1].
    """
    if not ordered:
        return {"edges": [], "counts": []}
    low, high = ordered[0], ordered[-1]
    width = nice_width((high - low) / bins)
    start = (low // width) * width
    n = (high - start) // width + 1
    edges = [start + i * width for i in range(n + 1)]
    cuts = [bisect_left(ordered, edge) for edge in edges]
    return {"edges": edges, "counts": [b - a for a, b in pairwise(cuts)]}


def nice_width(raw: float) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, ... at least ``raw`` (whole units, at least 1)."""
    if raw <= 1:
        return 1
    magnitude = 10 ** math.floor(math.log10(raw))
    for step in (1, 2, 5, 10):
        if step * magnitude >= raw:
            return int(step * magnitude)
    return int(10 * magnitude)


class _Truncation:
    """What max_seq_length does to the measured samples."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.longer = 0
        self.longest = 0
        self.dropped = 0

    def add(self, length: int, labels: Sequence[int]) -> None:
        self.longest = max(self.longest, length)
        if length > self.limit:
            self.longer += 1
        # Training drops a sample with no answer token after the first once truncated.
        if all(label == IGNORE_INDEX for label in labels[1 : self.limit]):
            self.dropped += 1

    def result(self, measured: int) -> dict[str, Any]:
        return {
            "limit": self.limit,
            "longer": self.longer,
            "share": round(self.longer / measured, 4) if measured else 0.0,
            "longest": self.longest,
            "dropped": self.dropped,
        }


class _Failures:
    """Records the chat template refused to render (e.g. roles out of the expected order)."""

    def __init__(self) -> None:
        self.count = 0
        self.first: dict[str, Any] | None = None

    def add(self, split: str, index: int, line: int, exc: Exception) -> None:
        self.count += 1
        if self.first is None:
            self.first = {"split": split, "index": index, "line": line, "message": str(exc)}

    def result(self) -> dict[str, Any] | None:
        return {"count": self.count, "first": self.first} if self.count else None
