"""The tested versions of the training stack and the start-up warning outside them (issue 13)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from packaging.version import Version

from worker.spec import versions
from worker.spec.versions import TESTED, in_tested_range, report, untested_versions

ROOT = Path(__file__).parents[1]


def in_range() -> dict[str, str]:
    return {name: low for name, (low, _high) in TESTED.items()}


def test_the_tested_ranges_are_ordered_and_name_the_five_packages() -> None:
    assert set(TESTED) == {"torch", "transformers", "peft", "accelerate", "bitsandbytes"}
    for low, high in TESTED.values():
        assert Version(low) <= Version(high)


def test_versions_within_the_ranges_give_no_warning() -> None:
    assert untested_versions(in_range()) == []
    assert untested_versions({name: high for name, (_low, high) in TESTED.items()}) == []


def test_a_package_that_is_not_installed_gives_no_warning() -> None:
    assert untested_versions({}) == []


def test_a_newer_transformers_is_named_with_its_version_the_range_and_the_fix() -> None:
    low, high = TESTED["transformers"]
    newer = Version(high)
    installed = in_range() | {"transformers": f"{newer.major}.{newer.minor + 1}.0"}
    [line] = untested_versions(installed)
    assert line.startswith("warning: transformers ")
    assert f"transformers {newer.major}.{newer.minor + 1}.0 is outside" in line
    assert (low if low == high else f"{low} to {high}") in line
    assert "make install" in line


def test_an_older_torch_and_an_older_peft_each_get_their_own_line() -> None:
    installed = in_range() | {"torch": "2.4.1+cu121", "peft": "0.15.0"}
    lines = untested_versions(installed)
    assert [line.split()[1] for line in lines] == ["torch", "peft"]
    assert "torch 2.4.1+cu121 is outside" in lines[0]
    assert "CUDA build" in lines[0]  # a GPU host's own torch: `make install` does not replace it
    assert "peft 0.15.0 is outside" in lines[1]


def test_a_local_build_label_is_not_a_newer_version() -> None:
    low, high = TESTED["torch"]
    assert in_tested_range("torch", f"{low}+cpu")
    assert in_tested_range("torch", f"{high}+cu130")
    assert not in_tested_range("torch", "not a version")


def test_a_pre_release_of_the_next_version_is_untested() -> None:
    high = Version(TESTED["accelerate"][1])
    assert not in_tested_range("accelerate", f"{high.major}.{high.minor + 1}.0.dev0")


def test_the_report_marks_untested_versions() -> None:
    text = report(in_range() | {"peft": "99.0"})
    rows = {line.split()[0]: line for line in text.splitlines()}
    assert rows["peft"].split()[1:2] == ["99.0"] and rows["peft"].endswith("UNTESTED")
    assert rows["torch"].endswith("ok")


def test_the_lock_pins_versions_within_the_tested_ranges() -> None:
    """requirements/lock.txt is what `make install` installs: its pins must be tested ones."""
    lock = (ROOT / "requirements" / "lock.txt").read_text()
    pins = dict(re.findall(r"^([a-z0-9-]+)==(\S+)", lock, flags=re.MULTILINE))
    assert "torch" not in pins  # CPU machines and GPU hosts each bring their own build
    for name in ("transformers", "peft", "accelerate"):
        assert pins[name] == TESTED[name][0], name
    gpu = (ROOT / "requirements" / "gpu.txt").read_text()
    assert re.search(r"^bitsandbytes==(\S+)", gpu, flags=re.MULTILINE)
    assert (
        untested_versions({name: version for name, version in pins.items() if name in TESTED}) == []
    )


def test_the_check_reads_metadata_and_never_imports_the_packages() -> None:
    code = (
        "import sys, worker.spec.versions as v; v.installed_versions(); v.untested_versions();"
        "print(sorted(set(sys.modules) & {'torch', 'transformers', 'peft', 'accelerate',"
        " 'bitsandbytes'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert versions.installed_versions()["transformers"]  # installed in the test environment


def test_tunelab_train_warns_about_an_untested_peft(tmp_path: Path) -> None:
    """A real `tunelab train` start with an older peft's metadata first on the path."""
    fake = tmp_path / "site"
    dist = fake / "peft-0.15.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: peft\nVersion: 0.15.0\n")
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "train", str(tmp_path / "missing.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": f"{fake}:{ROOT}"},
    )
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        "warning: peft 0.15.0 is outside tunelab's tested range "
        f"(peft {versions.tested_range('peft')}); {versions.HOW_TO_FIX}"
    ], result.stderr
