"""Warnings about a usable file: duplicates, very short or missing answers, mixed formats, and
answers in a script most of the others are not in."""

from __future__ import annotations

from array import array

from app.datasets.records_pass import SHORT_ANSWER_CHARS, Result
from app.datasets.report import plural

# A script used by at most this share of the answers is worth a warning (a bilingual set, with
# both scripts common, is not).
MINORITY_SCRIPT_SHARE = 0.2


def record_warnings(result: Result, main: str | None) -> list[str]:
    """What a person should know about the records found (`main`: the file's format)."""
    warnings = []
    duplicates, first = _duplicates(result.hashes, result.lines)
    if first is not None:
        line, original = first
        warnings.append(
            f"{duplicates:,} duplicate record{plural(duplicates)}: the same conversation as an "
            f"earlier record (first: line {line} repeats line {original}); duplicates are "
            "trained on more than once"
        )
    if result.short:
        have = "has a very short answer" if result.short == 1 else "have very short answers"
        warnings.append(
            f"{result.short:,} record{plural(result.short)} {have} (under {SHORT_ANSWER_CHARS} "
            f"characters), e.g. line {result.short_line}"
        )
    if result.unanswered:
        n = result.unanswered
        warnings.append(
            f"{n:,} record{plural(n)} {'has' if n == 1 else 'have'} an empty "
            f"`{result.unanswered_field}` (no answer to learn from) and {'was' if n == 1 else 'were'}"
            f" left out, e.g. line {result.unanswered_line}"
        )
    others = {name: n for name, n in result.formats.items() if name != main}
    if others and main in result.formats:
        counts = ", ".join(
            f"{n:,} {name}" for name, n in sorted(result.formats.items(), key=lambda kv: -kv[1])
        )
        examples = ", ".join(f"line {result.format_lines[name]} is {name}" for name in others)
        warnings.append(
            f"the file mixes record formats ({counts}; e.g. {examples}); each record was "
            "converted according to its own format"
        )
    (cjk, cjk_line), (latin, latin_line) = result.scripts["cjk"], result.scripts["latin"]
    if cjk and latin:
        if latin <= MINORITY_SCRIPT_SHARE * (cjk + latin):
            warnings.append(
                f"{latin:,} answer{plural(latin)} {'is' if latin == 1 else 'are'} in a Latin-script "
                f"language such as English while {cjk:,} are in Chinese, Japanese or Korean "
                f"(e.g. line {latin_line}): check that they belong in this dataset"
            )
        elif cjk <= MINORITY_SCRIPT_SHARE * (cjk + latin):
            warnings.append(
                f"{cjk:,} answer{plural(cjk)} {'is' if cjk == 1 else 'are'} in Chinese, Japanese or "
                f"Korean while {latin:,} are in a Latin-script language such as English (e.g. "
                f"line {cjk_line}): check that they belong in this dataset"
            )
    return warnings


def _duplicates(
    hashes: list[array[int]], lines: list[array[int]]
) -> tuple[int, tuple[int, int] | None]:
    """How many conversations repeat an earlier one, and the first (line, original line).

    Digests are kept in 256 buckets by their top byte, so only one bucket at a time is turned
    into Python objects: memory stays at 12 bytes per record.
    """
    count = 0
    first: tuple[int, int] | None = None
    for digests, numbers in zip(hashes, lines, strict=True):
        if len(set(digests)) == len(digests):
            continue
        seen: dict[int, int] = {}
        for digest, line in zip(digests, numbers, strict=True):
            original = seen.get(digest)
            if original is None:
                seen[digest] = line
                continue
            count += 1
            if first is None or line < first[0]:
                first = (line, original)
    return count, first
