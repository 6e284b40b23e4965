"""Artifacts a job produced, and streaming them out."""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Iterator

from app.core.config import Settings
from app.core.errors import NotFound
from app.models import Artifact


def zip_stream(settings: Settings, artifact: Artifact, chunk: int = 1 << 20) -> Iterator[bytes]:
    """The artifact's files as a zip archive, in chunks; NotFound before anything is sent if
    the files are gone.

    Adapter weights are already compressed floats, so files are stored, not deflated.
    """
    root = settings.data_dir / artifact.path
    if not root.is_dir():
        raise NotFound("the artifact's files are missing on the server")

    def chunks() -> Iterator[bytes]:
        with tempfile.TemporaryFile(dir=settings.data_dir) as tmp:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
                for name in artifact.files:
                    zf.write(root / name, arcname=name)
            tmp.seek(0, os.SEEK_SET)
            while data := tmp.read(chunk):
                yield data

    return chunks()
