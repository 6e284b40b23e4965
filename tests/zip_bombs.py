"""Zip bombs dressed as Excel workbooks, built on the spot (no binary is committed).

A real workbook is saved with openpyxl, then its first sheet's XML is swapped for a huge, highly
compressible one, written to the zip in chunks so that neither memory nor disk holds it whole.
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import openpyxl

MB = 1024 * 1024
SHEET = "xl/worksheets/sheet1.xml"
_HEAD = (
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
    b'<row><c t="inlineStr"><is><t>instruction</t></is></c>'
    b'<c t="inlineStr"><is><t>output</t></is></c></row>'
)
# One training row, repeated: a bomb whose rows would all be read as records if it were opened.
_ROW = (
    '<row><c t="inlineStr"><is><t>把这句话翻译成英文。</t></is></c>'
    '<c t="inlineStr"><is><t>Translate this sentence.</t></is></c></row>'
).encode()
_TAIL = b"</sheetData></worksheet>"


def _block() -> bytes:
    """1 MB of sheet XML: some 470 rows, then spaces (which XML ignores between rows and which
    deflate packs a thousand times, where repeated rows pack some 250 times)."""
    rows = _ROW * (64 * 1024 // len(_ROW))
    return rows + b" " * (MB - len(rows))


def workbook(folder: Path, name: str = "book.xlsx") -> Path:
    """A small, valid workbook with a header and two rows of training data."""
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["instruction", "output"])
    sheet.append(["把这句话翻译成英文。", "Translate this sentence."])
    sheet.append(["你好", "Hello"])
    path = folder / name
    book.save(path)
    return path


def bomb_workbook(folder: Path, *, unpacked: int = 50 * MB, name: str = "bomb.xlsx") -> Path:
    """A workbook whose first sheet is about `unpacked` bytes of identical rows, deflated about
    about 800 times (50 MB of XML packs into some 65 KB)."""
    plain = workbook(folder, name=f"plain-{name}")
    path = folder / name
    with zipfile.ZipFile(plain) as old, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as new:
        for info in old.infolist():
            if info.filename != SHEET:
                new.writestr(info, old.read(info))
                continue
            block = _block()
            with new.open(SHEET, "w", force_zip64=unpacked > 2000 * MB) as sheet:
                sheet.write(_HEAD)
                for _ in range(unpacked // len(block)):
                    sheet.write(block)
                sheet.write(_TAIL)
    plain.unlink()
    return path


def declare_size(path: Path, member: str, size: int) -> None:
    """Rewrite the unpacked size that `path` lists for `member` (in the central directory and
    the local header alike) without touching its data: a header that lies."""
    data = bytearray(path.read_bytes())
    end = data.rfind(b"PK\x05\x06")  # end of central directory: entry count, where it starts
    (count,) = struct.unpack_from("<H", data, end + 10)
    (entry,) = struct.unpack_from("<I", data, end + 16)
    for _ in range(count):
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, entry + 28)
        if data[entry + 46 : entry + 46 + name_len] == member.encode():
            struct.pack_into("<I", data, entry + 24, size)
            (local,) = struct.unpack_from("<I", data, entry + 42)
            struct.pack_into("<I", data, local + 22, size)
            path.write_bytes(bytes(data))
            return
        entry += 46 + name_len + extra_len + comment_len
    raise AssertionError(f"{member} is not in {path}")
