"""Multipart uploads streamed straight to disk with a byte cap.

Starlette's own form parsing spools a whole file before a route sees it, so a cap enforced in
the route would come too late; this parser writes each chunk as it arrives and stops at the cap.
The file lands under a server-chosen name: nothing the client sends reaches the filesystem.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from app.core.config import Settings
from app.core.errors import Forbidden, InvalidInput, PayloadTooLarge, UnsupportedMediaType
from app.core.security import same
from app.core.words import size_in_words


@dataclass
class ReceivedUpload:
    """A file received into ``path`` (the caller owns it and must move or delete it)."""

    path: Path | None
    filename: str
    size: int
    fields: dict[str, str] = field(default_factory=dict)
    # Files of the optional extra fields (e.g. a separate validation file), by field name.
    companions: dict[str, ReceivedUpload] = field(default_factory=dict)

    def discard(self) -> None:
        for part in (self, *self.companions.values()):
            if part.path is not None:
                with contextlib.suppress(FileNotFoundError):
                    part.path.unlink()


class _Receiver:
    def __init__(
        self, file_field: str, directory: Path, max_bytes: int, extra_files: tuple[str, ...] = ()
    ) -> None:
        self.file_field = file_field
        self.file_fields = (file_field, *extra_files)
        self.directory = directory
        self.max_bytes = max_bytes
        self.upload = ReceivedUpload(path=None, filename="", size=0)
        self._part: ReceivedUpload | None = None
        self._total = 0
        self._headers: dict[bytes, bytes] = {}
        self._header_field = b""
        self._header_value = b""
        self._name = ""
        self._is_file = False
        self._value = bytearray()
        self._out: IO[bytes] | None = None

    # python-multipart callbacks -------------------------------------------------------------
    def on_part_begin(self) -> None:
        self._headers = {}
        self._value = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field = b""
        self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        self._is_file = b"filename" in options
        self._part = None
        if self._is_file and self._name in self.file_fields:
            if self._name == self.file_field:
                part = self.upload
            else:
                part = self.upload.companions.setdefault(
                    self._name, ReceivedUpload(path=None, filename="", size=0)
                )
            if part.path is not None:
                raise InvalidInput(f"send one file in the `{self._name}` field, not several")
            raw_name = options.get(b"filename", b"").decode("utf-8", "replace")
            # Only the last path component is kept, and only for display.
            base = raw_name.replace("\\", "/").rsplit("/", 1)[-1]
            part.filename = "".join(c for c in base if c.isprintable())[:255]
            fd, name = tempfile.mkstemp(prefix="upload-", suffix=".part", dir=self.directory)
            if self._out is not None:
                self._out.close()
            self._out = os.fdopen(fd, "wb")
            part.path = Path(name)
            self._part = part

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._is_file and self._part is not None and self._out is not None:
            self._part.size += len(chunk)
            self._total += len(chunk)
            if self._total > self.max_bytes:
                raise PayloadTooLarge(
                    f"the file is larger than the upload limit of {size_in_words(self.max_bytes)}"
                )
            self._out.write(chunk)
        elif not self._is_file:
            self._value += chunk
            if len(self._value) > 64 * 1024:
                raise InvalidInput(f"form field `{self._name}` is too long")

    def on_part_end(self) -> None:
        if not self._is_file and self._name:
            value = self._value.decode("utf-8", "replace")
            self.upload.fields[self._name] = "".join(c for c in value if c.isprintable())

    def close(self) -> None:
        if self._out is not None:
            self._out.close()


async def receive_upload(
    request: Request,
    *,
    directory: Path,
    max_bytes: int,
    file_field: str = "file",
    extra_files: tuple[str, ...] = (),
) -> ReceivedUpload:
    """Stream a multipart body to temporary files in ``directory``; 413 past ``max_bytes``.

    ``extra_files`` names optional further file fields; those that came with a non-empty file
    are in the result's ``companions``.
    """
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise UnsupportedMediaType(
            f"send the file as multipart/form-data in a field named `{file_field}`"
        )
    declared = request.headers.get("content-length")
    # Allow for the multipart framing around the file itself.
    if declared and declared.isdigit() and int(declared) > max_bytes + 64 * 1024:
        raise PayloadTooLarge(
            f"the file is larger than the upload limit of {size_in_words(max_bytes)}"
        )
    directory.mkdir(parents=True, exist_ok=True)
    receiver = _Receiver(file_field, directory, max_bytes, extra_files)
    callbacks = {
        name: getattr(receiver, name)
        for name in (
            "on_part_begin",
            "on_header_field",
            "on_header_value",
            "on_header_end",
            "on_headers_finished",
            "on_part_data",
            "on_part_end",
        )
    }
    parser = MultipartParser(params[b"boundary"], callbacks)  # type: ignore[arg-type]
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except BaseException as exc:
        receiver.close()
        receiver.upload.discard()
        if isinstance(exc, PayloadTooLarge | InvalidInput):
            raise
        if isinstance(exc, Exception):
            raise InvalidInput("the upload could not be read as multipart/form-data") from exc
        raise
    receiver.close()
    expected = getattr(request.state, "csrf_expected", None)
    if expected is not None and not same(receiver.upload.fields.get("csrf_token", ""), expected):
        receiver.upload.discard()
        raise Forbidden("the form has expired or did not come from tunelab: reload the page")
    # A browser sends an empty part for a file input left empty.
    for name, part in list(receiver.upload.companions.items()):
        if part.size == 0:
            part.discard()
            del receiver.upload.companions[name]
    if receiver.upload.path is None or (receiver.upload.size == 0 and not receiver.upload.filename):
        receiver.upload.discard()
        raise InvalidInput(f"no file was sent: attach it in a form field named `{file_field}`")
    return receiver.upload


# The optional companion files of a dataset upload: a separate validation and test split.
DATASET_FILE_FIELDS = ("validation_file", "test_file")


async def receive_dataset_files(request: Request, settings: Settings) -> ReceivedUpload:
    """A dataset upload (the file and its optional split files) into the uploads folder."""
    return await receive_upload(
        request,
        directory=settings.uploads_dir,
        max_bytes=settings.upload_max_bytes,
        extra_files=DATASET_FILE_FIELDS,
    )
