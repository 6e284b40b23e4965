"""An export attempt cut off by a killed worker leaves a staging folder and a partial archive;
the next attempt of the same export removes them (bench/chaos.py's side-kill scenario found
them left on disk for good). Other exports' files are left alone."""

from __future__ import annotations

from pathlib import Path

from worker.deploy.export import discard_earlier_attempts


def leftovers(folder: Path, name: str) -> list[Path]:
    staging = folder / f".{name}.k3j9x2"
    staging.mkdir(parents=True)
    (staging / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    partial = folder / f".{name}.tar.partial"
    partial.write_bytes(b"\0" * 64)
    return [staging, partial]


def test_the_third_attempt_removes_what_the_first_two_left(tmp_path: Path) -> None:
    first = leftovers(tmp_path, "merged-0ae23f64-1")
    second = leftovers(tmp_path, "merged-0ae23f64-2")
    other = leftovers(tmp_path, "merged-fda47042-1")  # another export of the same job
    tenth = leftovers(tmp_path, "merged-0ae23f64-10")  # not an earlier attempt of attempt 3
    discard_earlier_attempts(tmp_path / "merged-0ae23f64-3")
    assert not any(p.exists() for p in first + second)
    assert all(p.exists() for p in other + tenth)


def test_a_first_attempt_has_nothing_earlier_to_remove(tmp_path: Path) -> None:
    other = leftovers(tmp_path, "adapter-622e756c-1")
    discard_earlier_attempts(tmp_path / "adapter-c5455807-1")
    assert all(p.exists() for p in other)
