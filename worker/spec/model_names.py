"""Which base models a user of the web app or the API may name: the one rule, for the web
process (job creation, estimates, evaluations) and again on the workers before they load one.

A base model is accepted when it is

- a catalog name (``catalog.CATALOG``, e.g. ``smollm2-135m-instruct``);
- a Hugging Face hub id ``owner/name``: each part 1 to 96 ASCII letters, digits, ``-``, ``_``
  or ``.``, starting and ending with a letter, digit or ``_``, without ``--`` or ``..``, not
  ending in ``.git`` nor in a weights-file suffix (``.gguf``, ``.bin``, ``.pt`` ...). No
  ``@revision``: the engine always takes a repository's main branch;
- an absolute path whose real path (symlinks resolved, ``..`` collapsed) lies strictly inside
  one of the allowed folders (TUNELAB_MODEL_DIRS and the converted-model cache), naming a
  folder or a ``.gguf`` file: not a pickle checkpoint (``.pt``, ``.pth``, ``.bin``, ``.ckpt``,
  ``.pkl``, ``.pickle``), a lone ``.safetensors`` file, or any other existing file.

Everything else (URLs of any scheme, relative paths, ``~``, paths outside those folders, empty
or blank names, control or invisible characters, names over 500 characters) is refused with
one message, ``REFUSED``, that never depends on whether a path exists on the server.

The local ``tunelab train`` CLI does not apply this rule: its user owns the machine.

Torch-free and free of the web stack: the web process imports it.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from worker.spec.catalog import catalog_entry
from worker.spec.errors import TrainingError

Kind = Literal["catalog", "hub", "local"]

REFUSED = (
    "name a model from the catalog (GET /api/v1/models), a Hugging Face hub id such as "
    "Qwen/Qwen2.5-0.5B-Instruct, or a folder or .gguf file inside a model directory your "
    "admin allowed (TUNELAB_MODEL_DIRS)"
)
# As long as the column that keeps a deployment's base model (and an evaluation's candidate).
MAX_LENGTH = 500
HUB_PART_MAX = 96
_HUB_PART = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?")
# Files a base model may not be named by: torch unpickles the first ones (running any code
# they carry), and the engine loads neither them nor a lone safetensors file as a base model.
REFUSED_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".safetensors")
_FILE_SUFFIXES = (*REFUSED_SUFFIXES, ".gguf")


class BaseModelRefused(ValueError):
    """A base model the rule does not accept; the message is always ``REFUSED``."""

    def __init__(self) -> None:
        super().__init__(REFUSED)


class LocalModelUnusable(TrainingError):
    """A base model named by a local path that is missing, unreadable or not a model.

    Its text says which, for the person at this machine (the CLI). A worker reports
    ``for_remote_user`` instead, the same whichever it was, so that a job's error never tells
    whether a path exists on the server.
    """

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(detail)
        self.name = name

    @property
    def for_remote_user(self) -> str:
        return (
            f"Model '{self.name}' could not be used: it is not a model folder with a "
            "config.json, nor a .gguf file, that the workers can read."
        )


def for_remote_user(exc: BaseException) -> str:
    """What a worker stores as the error of a job or evaluation that failed with ``exc``."""
    return exc.for_remote_user if isinstance(exc, LocalModelUnusable) else str(exc)


def base_model_kind(name: str, allowed_dirs: Iterable[str | Path]) -> Kind | None:
    """What ``name`` is by the rule above (surrounding spaces ignored), or None if refused."""
    if not isinstance(name, str) or len(name) > MAX_LENGTH or not name.strip():
        return None
    if any(_unsafe(char) for char in name):
        return None
    name = name.strip()
    if catalog_entry(name) is not None:
        return "catalog"
    if is_hub_id(name):
        return "hub"
    if _allowed_path(name, allowed_dirs):
        return "local"
    return None


def check_base_model(name: str, allowed_dirs: Iterable[str | Path]) -> Kind:
    """``base_model_kind``, raising BaseModelRefused where it says None."""
    kind = base_model_kind(name, allowed_dirs)
    if kind is None:
        raise BaseModelRefused()
    return kind


def worker_may_load(name: str, allowed_dirs: Iterable[str | Path]) -> bool:
    """The rule again, on a worker about to load ``name``.

    A hub id that also names a file or folder relative to this process's working folder is
    refused too: the engine would read that path instead of asking the hub.
    """
    kind = base_model_kind(name, allowed_dirs)
    if kind == "hub":
        return not os.path.lexists(name.strip())
    return kind is not None


def is_hub_id(name: str) -> bool:
    """Whether ``name`` is written as a Hugging Face hub id ``owner/name``."""
    parts = name.split("/")
    if len(parts) != 2 or "--" in name or ".." in name:
        return False
    if name.lower().endswith((".git", *_FILE_SUFFIXES)):
        return False
    return all(len(part) <= HUB_PART_MAX and _HUB_PART.fullmatch(part) for part in parts)


def _unsafe(char: str) -> bool:
    # Control, format (zero-width, bidirectional overrides), surrogate, private-use and
    # unassigned characters, and line or paragraph separators.
    return unicodedata.category(char)[0] == "C" or unicodedata.category(char) in ("Zl", "Zp")


def _allowed_path(name: str, allowed_dirs: Iterable[str | Path]) -> bool:
    if not name.startswith("/"):  # relative, "~", "file:", "http:" and every other scheme
        return False
    try:
        real = os.path.realpath(name)
        folders = [os.path.realpath(folder) for folder in allowed_dirs]
        if not any(_strictly_inside(real, folder) for folder in folders):
            return False
        suffixes = {Path(name).suffix.lower(), Path(real).suffix.lower()}
        if suffixes & set(REFUSED_SUFFIXES):
            return False
        # Inside an allowed folder, an existing file must be a .gguf file (by both names: the
        # engine goes by the name it is given).
        return not os.path.isfile(real) or suffixes == {".gguf"}
    except (OSError, ValueError):
        return False


def _strictly_inside(path: str, folder: str) -> bool:
    if path == folder or not os.path.isabs(folder):
        return False
    try:
        return os.path.commonpath([path, folder]) == folder
    except ValueError:
        return False
