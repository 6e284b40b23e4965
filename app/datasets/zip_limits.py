"""Limits on what a zipped upload (an .xlsx workbook is a zip of XML) may unpack to, checked
before anything in it is unpacked.

A zip lists each member's unpacked size in its central directory, and Python's zipfile never
yields more than that from a member: it stops at the listed size, and a member that inflates
further fails its CRC check. So the listed sizes bound everything openpyxl can ever read, and
checking them refuses a zip bomb without inflating a byte of it.
tests/services/test_dataset_zip_limits.py keeps that claim honest with a member whose header lies.
"""

from __future__ import annotations

from collections.abc import Iterable
from zipfile import ZipInfo

from app.datasets.items import size_in_words

# All members together: a workbook of 1 GB of XML holds millions of rows, more than any
# training set we read in one go, and reading more would take the server hours.
MAX_UNPACKED_BYTES = 1024**3
# Sheet XML deflates about 5 to 30 times; a member that shrank over 100 times was made small
# on purpose (a zip bomb: a small upload that unpacks to gigabytes).
MAX_RATIO = 100
# Below this a member is harmless whatever its ratio (and tiny style files do shrink that far).
RATIO_CHECKED_FROM = 1024**2

_AS_CSV = "export the sheet as CSV (in Excel: File > Save As > CSV UTF-8) and upload that"


def unpacking_problem(
    members: Iterable[ZipInfo],
    *,
    max_unpacked: int = MAX_UNPACKED_BYTES,
    max_ratio: int = MAX_RATIO,
    ratio_checked_from: int = RATIO_CHECKED_FROM,
) -> str | None:
    """Why a workbook with these members is not opened (for a person), or None when it may be."""
    members = list(members)
    total = sum(m.file_size for m in members)
    if total > max_unpacked:
        return (
            f"this workbook would unpack to {size_in_words(total)} of data, more than the "
            f"{size_in_words(max_unpacked)} tunelab reads from one workbook: split it into "
            f"smaller workbooks, or {_AS_CSV}"
        )
    for member in members:
        ratio = member.file_size / max(member.compress_size, 1)
        if member.file_size > ratio_checked_from and ratio > max_ratio:
            return (
                f"this workbook is packed far more tightly than real spreadsheets are (one part "
                f"of it, {member.filename}, would grow {ratio:,.0f} times, to "
                f"{size_in_words(member.file_size)}, when unpacked); files like this are made to "
                f"overload the server, so it was not opened: if it is a real spreadsheet, {_AS_CSV}"
            )
    return None
