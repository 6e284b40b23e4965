"""Is an uploaded file UTF-8 text? If not, say what it probably is: binary, UTF-16 or GBK.

Chinese files saved on Windows are often GBK/GB18030 and Notepad's "Unicode" is UTF-16; both
get a message that says how to fix them instead of a wall of decoding errors. Shared by every
text container (JSON and JSONL now, CSV later).
"""

from __future__ import annotations

import codecs
import re

BOM = codecs.BOM_UTF8
BINARY = (
    "this is not UTF-8 text: it looks like a binary file (an image, an archive or an old .xls "
    "spreadsheet?); "
    "upload a .json, .jsonl, .csv or .xlsx file"
)
UTF16 = (
    'this file is UTF-16 text, not UTF-8 (Windows Notepad calls it "Unicode"): '
    "save it as UTF-8 and upload it again"
)
# Control bytes that text files do not contain (tab, line feed, form feed, carriage return and
# escape are left out): together with bytes that are not UTF-8 they mean "binary", not "text in
# another encoding".
_BINARY_BYTES = re.compile(rb"[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f]")
_CJK_RANGES = (("\u4e00", "\u9fff"), ("\u3000", "\u303f"), ("\uff00", "\uffef"))


def sniff(head: bytes, *, whole: bool) -> tuple[int, str] | None:
    """Line and message when the first bytes of a file show it is not UTF-8 text, else None.

    `whole` says whether `head` is the entire file. One message stands for the whole file; a bad
    byte further down a text file is left to the line reader, which reports that line and goes
    on.
    """
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or _looks_utf16(head):
        return 1, UTF16
    body = head.removeprefix(BOM)
    bad = [offset for offset in (body.find(b"\0"), _not_utf8_at(body, whole=whole)) if offset >= 0]
    if not bad:
        return None
    offset = min(bad)
    line = body.count(b"\n", 0, offset) + 1
    if b"\0" in body or _BINARY_BYTES.search(body):
        return line, BINARY
    content = len(body) - len(body.lstrip(b" \t\r\n"))
    first_line_end = body.find(b"\n", content)
    if 0 <= first_line_end < offset:
        return None
    line_start = body.rfind(b"\n", 0, offset) + 1
    raw = body[line_start:] if first_line_end < 0 else body[line_start:first_line_end]
    complete = first_line_end >= 0 or whole
    return line, not_utf8(raw, offset - line_start, complete=complete, file=True)


def not_utf8(
    raw: bytes, offset: int, *, complete: bool = True, file: bool = False, unit: str = "line"
) -> str:
    """Why a line (or a table row: `unit`) is not UTF-8, guessing the Chinese Windows encoding
    when it fits."""
    subject = "this file" if file else f"this {unit}"
    if _looks_gb18030(raw, complete=complete):
        return (
            f"{subject} is not UTF-8 text: it looks like Chinese text saved as GBK/GB18030 "
            "(common on Windows); save the file as UTF-8 and upload it again"
        )
    return (
        f"{subject} is not UTF-8 text (byte 0x{raw[offset]:02X} at byte {offset + 1} of the {unit}): "
        "save the file as UTF-8 and upload it again"
    )


def _not_utf8_at(data: bytes, *, whole: bool) -> int:
    """Offset of the first byte that is not UTF-8, or -1 (a cut-off last character is fine)."""
    try:
        codecs.getincrementaldecoder("utf-8")().decode(data, final=whole)
    except UnicodeDecodeError as exc:
        return exc.start
    return -1


def _looks_utf16(head: bytes) -> bool:
    """UTF-16 without a byte order mark: ASCII text with a zero byte before or after each char."""
    sample = head[:64]
    if len(sample) < 8:
        return False
    zero_even, zero_odd = not any(sample[0::2]), not any(sample[1::2])
    return zero_even != zero_odd


def _looks_gb18030(raw: bytes, *, complete: bool) -> bool:
    try:
        text = codecs.getincrementaldecoder("gb18030")().decode(raw, final=complete)
    except UnicodeDecodeError:
        return False
    # GB18030 decodes many byte strings; only call it Chinese when mostly Chinese comes out.
    wide = [c for c in text if ord(c) > 0x7F]
    cjk = [c for c in wide if any(low <= c <= high for low, high in _CJK_RANGES)]
    return len(cjk) >= 2 and len(cjk) >= 0.8 * len(wide)
