"""Artifacts a job produced, and streaming them out."""

from __future__ import annotations

import os
import tempfile
import uuid
import zipfile
from collections.abc import Iterator

from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.errors import NotFound
from app.models import Artifact


def get_artifact(session: Session, *, artifact_id: uuid.UUID) -> Artifact:
    """Return the artifact or raise NotFound (also when its files are gone)."""
    artifact = session.get(Artifact, artifact_id)
    if artifact is None:
        raise NotFound("artifact not found")
    return artifact


def zip_stream(settings: Settings, artifact: Artifact, chunk: int = 1 << 20) -> Iterator[bytes]:
    """Zip the artifact's folder into a temporary file and stream it in chunks.

    Adapter weights are already compressed floats, so files are stored, not deflated.
    """
    root = settings.data_dir / artifact.path
    if not root.is_dir():
        raise NotFound("the artifact's files are missing on the server")
    with tempfile.TemporaryFile(dir=settings.data_dir) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for name in artifact.files:
                zf.write(root / name, arcname=name)
        tmp.seek(0, os.SEEK_SET)
        while data := tmp.read(chunk):
            yield data
