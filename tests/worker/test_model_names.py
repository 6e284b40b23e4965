"""The rule for base models named through the web app and the API, on its own: catalog names,
hub ids, and paths inside the allowed model folders; one message for everything else. No
database, server or torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.core.config import Settings
from app.core.errors import InvalidInput
from app.services.jobs.base_models import allowed_model_dirs, check_base_model, check_on_worker
from worker.spec.errors import TrainingError
from worker.spec.model_names import (
    REFUSED,
    BaseModelRefused,
    LocalModelUnusable,
    base_model_kind,
    for_remote_user,
    is_hub_id,
    worker_may_load,
)
from worker.spec.model_names import check_base_model as check_name

OUTSIDE = Path(__file__).resolve().parents[2]  # the repository: not a model folder


@pytest.fixture
def allowed(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    (folder / "tiny").mkdir(parents=True)
    (folder / "tiny" / "config.json").write_text("{}")
    (folder / "model.Q4_0.gguf").write_bytes(b"GGUF")
    (folder / "weights.pt").write_bytes(b"pickle")
    (folder / "notes.txt").write_text("not a model")
    (folder / "to-etc").symlink_to("/etc")
    (folder / "to-nowhere").symlink_to("/no-such-folder-for-tunelab")
    (folder / "to-tiny").symlink_to(folder / "tiny")
    (folder / "to-outside-gguf").symlink_to(tmp_path / "elsewhere.gguf")
    (tmp_path / "elsewhere.gguf").write_bytes(b"GGUF")
    (tmp_path / "outside-folder").mkdir()
    return folder


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("smollm2-135m-instruct", "catalog"),
        ("  qwen3-0.6b ", "catalog"),
        ("Qwen/Qwen2.5-0.5B-Instruct", "hub"),
        ("HuggingFaceTB/SmolLM2-360M-Instruct", "hub"),
        ("some_one/model.v2_final", "hub"),
        ("a/" + "b" * 96, "hub"),
    ],
)
def test_catalog_names_and_hub_ids_are_accepted(name: str, kind: str) -> None:
    assert base_model_kind(name, []) == kind
    assert check_name(name, []) == kind


@pytest.mark.parametrize(
    "name",
    [
        "",
        "   ",
        "\t\n",
        "gpt2",  # a hub id names its owner
        "a/b/c",
        "a//b",
        "/a",
        "a/",
        ".hidden/model",
        "owner/.model",
        "-owner/model",
        "owner/-model",
        "owner/model-",
        "owner/model.",
        "owner/mo..del",
        "own--er/model",
        "owner/model.git",
        "owner/model.gguf",
        "owner/model.bin",
        "owner/model.pt",
        "owner/model@main",  # the engine takes no revision
        "owner/mod el",
        "owner/modèle",
        "a/" + "b" * 97,
        "a" * 97 + "/b",
        "owner/\u202emodel",  # a right-to-left override
        "owner/model\u200b",  # a zero-width space
        "owner/model\n",
        "owner/model\x00",
        "smollm2-135m-instruct\x7f",
        "x" * 501,
        "..",
        "../../",
        "./model",
        "models/../..",
        "~",
        "~/models/tiny",
        "~root/models",
        "file:///etc/passwd",
        "http://127.0.0.1:6379/",
        "https://huggingface.co/Qwen/Qwen3-0.6B",
        "hf://Qwen/Qwen3-0.6B",
        "s3://bucket/model",
        "C:\\models\\tiny",
        "\\\\server\\share\\model",
        "/etc",
        "/etc/passwd",
        "/",
        "//etc",
        "/proc/self/environ",
        "/dev/zero",
    ],
)
def test_everything_else_is_refused_with_the_one_message(name: str, allowed: Path) -> None:
    assert base_model_kind(name, [allowed]) is None
    with pytest.raises(BaseModelRefused) as caught:
        check_name(name, [allowed])
    assert str(caught.value) == REFUSED


def test_paths_inside_an_allowed_folder_are_accepted(allowed: Path) -> None:
    for name in ("tiny", "tiny/", "model.Q4_0.gguf", "to-tiny", "tiny/../tiny", "not-yet"):
        assert base_model_kind(f"{allowed}/{name}", [allowed]) == "local", name


@pytest.mark.parametrize(
    "relative",
    [
        "weights.pt",  # a pickle file that exists
        "missing.pth",  # and one that does not
        "missing.bin",
        "missing.ckpt",
        "missing.pkl",
        "missing.safetensors",
        "notes.txt",  # an existing file that is not a .gguf file
        "to-etc",  # a symlink to a folder outside
        "to-etc/passwd",
        "to-nowhere",  # a symlink to nothing outside
        "to-outside-gguf",  # a symlink to a .gguf file outside
        "..",  # the allowed folder's parent
        "../outside-folder",
        ".",  # the allowed folder itself
        "",
    ],
)
def test_paths_that_leave_the_allowed_folder_or_name_other_files_are_refused(
    relative: str, allowed: Path
) -> None:
    assert base_model_kind(f"{allowed}/{relative}", [allowed]) is None


def test_existing_and_missing_paths_get_the_same_answer(allowed: Path, tmp_path: Path) -> None:
    pairs = [
        ("/etc", "/etc-no-such-folder"),
        (str(OUTSIDE), f"{OUTSIDE}-no-such-folder"),
        (str(tmp_path / "outside-folder"), str(tmp_path / "no-such-folder")),
        (f"{allowed}/to-etc", f"{allowed}/to-nowhere"),
        (f"{allowed}/weights.pt", f"{allowed}/missing.pt"),
    ]
    for existing, missing in pairs:
        answers = set()
        for name in (existing, missing):
            with pytest.raises(BaseModelRefused) as caught:
                check_name(name, [allowed])
            answers.add(str(caught.value))
        assert answers == {REFUSED}


def test_allowed_folders_are_compared_by_their_real_paths(tmp_path: Path, allowed: Path) -> None:
    alias = tmp_path / "alias"
    alias.symlink_to(allowed)
    assert base_model_kind(f"{allowed}/tiny", [alias]) == "local"
    assert base_model_kind(f"{alias}/tiny", [allowed]) == "local"
    assert base_model_kind(f"{alias}/tiny", []) is None
    assert base_model_kind(f"{allowed}/tiny", ["relative/folder"]) is None


def test_the_model_cache_counts_as_allowed(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", model_dirs=[], models_dir=None)
    assert allowed_model_dirs(settings) == [tmp_path / "data" / "models"]
    converted = tmp_path / "data" / "models" / "gguf" / "smol-0123"
    check_base_model(str(converted), settings=settings)
    with pytest.raises(InvalidInput) as caught:
        check_base_model(str(tmp_path / "elsewhere"), settings=settings)
    refused = caught.value
    assert refused.status_code == 422
    assert [(e.field, e.message) for e in refused.errors] == [("config.base_model", REFUSED)]
    assert refused.message == f"config.base_model: {REFUSED}"


def test_the_setting_takes_colon_separated_absolute_folders(tmp_path: Path) -> None:
    env = {**os.environ, "TUNELAB_MODEL_DIRS": "/srv/models::/data/llm:"}
    code = "from app.core.config import Settings; print(Settings().model_dirs)"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[PosixPath('/srv/models'), PosixPath('/data/llm')]"
    settings = Settings(data_dir=tmp_path, model_dirs=[tmp_path / "llm"], models_dir=None)
    assert allowed_model_dirs(settings) == [tmp_path / "llm", tmp_path / "models"]
    with pytest.raises(ValueError, match="absolute"):
        Settings(data_dir=tmp_path, model_dirs="models:/srv/models")  # type: ignore[arg-type]


def test_the_field_is_named_where_the_model_was_given(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, model_dirs=[])
    with pytest.raises(InvalidInput) as caught:
        check_base_model("/etc", field="models.2.base_model", settings=settings)
    assert caught.value.errors[0].field == "models.2.base_model"


def test_a_worker_applies_the_rule_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(data_dir=tmp_path / "data", model_dirs=[tmp_path], models_dir=None)
    for name in ("smollm2-135m-instruct", "Qwen/Qwen3-0.6B", str(tmp_path / "model")):
        check_on_worker(name, settings)
    for name in ("/etc", "../model", "http://127.0.0.1:6379/"):
        with pytest.raises(TrainingError) as caught:
            check_on_worker(name, settings)
        assert str(caught.value) == f"base_model: {REFUSED}"
    # A hub id that also names a folder where the worker runs would be read from that folder.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "owner" / "model").mkdir(parents=True)
    assert is_hub_id("owner/model")
    assert not worker_may_load("owner/model", [])
    assert worker_may_load("owner/other-model", [])


def test_a_local_model_that_cannot_be_used_reads_the_same_to_a_remote_user(
    tmp_path: Path,
) -> None:
    missing = LocalModelUnusable("/m/x", "Model '/m/x' was not found: no such file or folder.")
    not_a_model = LocalModelUnusable("/m/x", "Model '/m/x' cannot be used: it is neither ...")
    assert str(missing) != str(not_a_model)  # the CLI's user is told which
    assert for_remote_user(missing) == for_remote_user(not_a_model)
    assert "/m/x" in for_remote_user(missing)
    assert for_remote_user(TrainingError("Out of memory.")) == "Out of memory."


def test_the_rule_loads_neither_torch_nor_the_web_stack() -> None:
    code = (
        "import sys, worker.spec.model_names; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'torch', 'transformers', 'app', 'fastapi', 'sqlalchemy'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
