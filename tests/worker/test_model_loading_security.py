"""Loading a base model runs no code from it unless an admin allowed that for the model.

Real tiny models on disk, the real engine and transformers: pickle-only checkpoints and
models that need their own Python code are refused with a message saying what to do, and
load once ``allow_pickle_weights`` / ``trust_remote_code`` (set by the server from an admin's
allow-list) say so.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from worker.training import TrainConfig, TrainingError, models, train
from worker.training.models import ResolvedModel, resolve_model

RECORDS = [
    {
        "messages": [
            {"role": "user", "content": "What colour is the sky?"},
            {"role": "assistant", "content": "Blue."},
        ]
    }
] * 2
CPU = torch.device("cpu")

PICKLE_REFUSED = (
    "Model '{name}' has only pickle weights (pytorch_model.bin), which can run code when "
    "loaded; convert it to safetensors, or an admin can allow pickle weights for this model."
)
CODE_REFUSED = (
    "Model '{name}' needs to run its own code (trust_remote_code); an admin must allow it for "
    "this model."
)


class Events:
    def __init__(self) -> None:
        self.messages: list[str] = []
        self.steps = 0

    def on_event(self, level: str, message: str, data: dict[str, Any] | None = None) -> None:
        self.messages.append(message)

    def on_step(self, metrics: Any) -> None:
        self.steps += 1

    def should_stop(self) -> bool:
        return False


def one_step(model_dir: Path | str, **flags: bool) -> TrainConfig:
    return TrainConfig(
        base_model=str(model_dir), max_steps=1, batch_size=2, lora_r=4, lora_alpha=8, **flags
    )


def pickled_copy(tiny_model_dir: Path, dest: Path) -> Path:
    """The tiny model with its weights in a pickle checkpoint only, as older repos ship them.

    transformers 5 no longer writes .bin files (save_pretrained lost safe_serialization), so
    the checkpoint is written the way those repos were: torch.save of the state dict.
    """
    shutil.copytree(tiny_model_dir, dest)
    weights = dest / "model.safetensors"
    torch.save(load_file(str(weights)), dest / "pytorch_model.bin")
    weights.unlink()
    return dest


def with_config(tiny_model_dir: Path, dest: Path, **changes: Any) -> Path:
    shutil.copytree(tiny_model_dir, dest)
    config = json.loads((dest / "config.json").read_text())
    config.update(changes)
    (dest / "config.json").write_text(json.dumps(config))
    return dest


CUSTOM_CODE = {
    "model_type": "tunelab_custom",
    "auto_map": {
        "AutoConfig": "configuration_custom.CustomConfig",
        "AutoModelForCausalLM": "modeling_custom.CustomForCausalLM",
    },
}


# --- Pickle checkpoints ----------------------------------------------------------------------


def test_default_config_trusts_no_code_and_no_pickle() -> None:
    config = TrainConfig(base_model="smollm2-135m-instruct")
    assert config.trust_remote_code is False
    assert config.allow_pickle_weights is False
    for name in ("trust_remote_code", "allow_pickle_weights"):
        description = TrainConfig.model_fields[name].description or ""
        assert "admin" in description and "not by users" in description


def test_the_config_module_still_imports_without_torch() -> None:
    code = "import sys, worker.spec.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_model_with_only_pickle_weights_is_refused_before_anything_is_loaded(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    folder = pickled_copy(tiny_model_dir, tmp_path / "pickled")
    events = Events()
    with pytest.raises(TrainingError) as caught:
        train(
            one_step(folder),
            records=RECORDS,
            output_dir=tmp_path / "out",
            model_cache_dir=tmp_path / "cache",
            callbacks=events,
        )
    assert str(caught.value) == PICKLE_REFUSED.format(name=folder)
    assert not (tmp_path / "out").exists()
    assert events.steps == 0


def test_pickle_weights_train_when_an_admin_allowed_them(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    folder = pickled_copy(tiny_model_dir, tmp_path / "pickled")
    events = Events()
    result = train(
        one_step(folder, allow_pickle_weights=True),
        records=RECORDS,
        output_dir=tmp_path / "out",
        model_cache_dir=tmp_path / "cache",
        callbacks=events,
    )
    assert result.steps == 1 and events.steps == 1
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
    assert any(m.startswith("Loading pickle weights (pytorch_model.bin)") for m in events.messages)


def test_load_model_refuses_pickle_even_for_a_model_it_did_not_resolve(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    folder = pickled_copy(tiny_model_dir, tmp_path / "pickled")
    handmade = ResolvedModel("pickled", folder, "folder")
    with pytest.raises(TrainingError, match=r"has only pickle weights \(pytorch_model\.bin\)"):
        models.load_model(handmade, dtype=torch.float32, device=CPU)


def test_every_pickle_checkpoint_format_counts(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.safetensors").unlink()
    for name in ("model.ckpt", "weights.pth", "consolidated.pt", "training_args.bin"):
        (folder / name).write_bytes(b"\x80\x04")
    with pytest.raises(TrainingError) as caught:
        resolve_model(str(folder), tmp_path)
    assert "(consolidated.pt, model.ckpt, training_args.bin and 1 more)" in str(caught.value)


def test_safetensors_are_loaded_and_a_pickle_beside_them_is_never_opened(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "both"
    shutil.copytree(tiny_model_dir, folder)
    # Not a valid pickle: had transformers opened it, loading would fail.
    (folder / "pytorch_model.bin").write_bytes(b"not a pickle at all")
    resolved = resolve_model(str(folder), tmp_path)
    model = models.load_model(resolved, dtype=torch.float32, device=CPU)
    assert model.config.hidden_size == 32


def hub_cache_with(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, repo_id: str, src: Path
) -> None:
    """A local Hugging Face cache holding ``src`` as the snapshot of ``repo_id`` (no network)."""
    import huggingface_hub.constants

    cache = tmp_path / "hf-cache"
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(src, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))


def test_hub_snapshot_with_only_pickle_weights_is_refused_unless_allowed(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo_id = "tunelab-tests/pickled-model"
    hub_cache_with(monkeypatch, tmp_path, repo_id, pickled_copy(tiny_model_dir, tmp_path / "p"))
    with pytest.raises(TrainingError) as caught:
        resolve_model(repo_id, tmp_path, allow_downloads=False)
    assert str(caught.value) == PICKLE_REFUSED.format(name=repo_id)

    resolved = resolve_model(repo_id, tmp_path, allow_downloads=False, allow_pickle_weights=True)
    assert resolved.source == "hub"
    assert (resolved.path / "pytorch_model.bin").is_file()


# --- Code shipped with the model -------------------------------------------------------------


def test_model_that_needs_its_own_code_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = with_config(tiny_model_dir, tmp_path / "custom", **CUSTOM_CODE)
    with pytest.raises(TrainingError) as caught:
        train(
            one_step(folder),
            records=RECORDS,
            output_dir=tmp_path / "out",
            model_cache_dir=tmp_path / "cache",
        )
    assert str(caught.value) == CODE_REFUSED.format(name=folder)


def test_allowed_model_passes_the_check_and_transformers_is_told_to_trust_it(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    # The folder names code files that do not exist, so nothing is executed: transformers,
    # told to trust the model, goes looking for them, which is the proof the flag arrived.
    folder = with_config(tiny_model_dir, tmp_path / "custom", **CUSTOM_CODE)
    resolved = resolve_model(str(folder), tmp_path, trust_remote_code=True)
    assert resolved.path == folder.resolve()
    with pytest.raises(TrainingError) as caught:
        models.load_model(resolved, dtype=torch.float32, device=CPU, trust_remote_code=True)
    message = str(caught.value)
    assert message.startswith(f"Could not load model '{folder}'")
    assert "configuration_custom" in message
    assert "an admin must allow it" not in message


def test_auto_map_of_a_built_in_architecture_is_ignored_not_run(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    # Like Phi-3: config.json points at code files, but transformers has its own "llama"; the
    # files named here do not even exist, so training proves they were never imported.
    folder = with_config(tiny_model_dir, tmp_path / "phi3-like", auto_map=CUSTOM_CODE["auto_map"])
    events = Events()
    result = train(
        one_step(folder),
        records=RECORDS,
        output_dir=tmp_path / "out",
        model_cache_dir=tmp_path / "cache",
        callbacks=events,
    )
    assert result.steps == 1
    assert any("ships its own code; it is not run" in m for m in events.messages)


def test_tokenizer_that_needs_its_own_code_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "custom-tokenizer"
    shutil.copytree(tiny_model_dir, folder)
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    settings["tokenizer_class"] = "CustomTokenizer"
    settings["auto_map"] = {"AutoTokenizer": ["tokenization_custom.CustomTokenizer", None]}
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    resolved = resolve_model(str(folder), tmp_path)
    with pytest.raises(TrainingError) as caught:
        models.load_tokenizer(resolved)
    assert str(caught.value) == CODE_REFUSED.format(name=folder)
