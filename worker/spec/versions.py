"""The versions of the training stack that tunelab is tested on, and a check of what is installed.

The lower end of each range is what ``make install`` installs and the test suite runs on
(``requirements/lock.txt``; torch is the Makefile's ``TORCH``, bitsandbytes
``requirements/gpu.txt``); the upper end is the newest release that ``make test-latest``
passed on (for torch, PyPI's CUDA build run on the CPU).
A version outside its range may well work, but nobody has run the engine's tests on it: issue 13
was a fresh install that took a newer transformers and failed every run. ``tunelab serve``,
``tunelab worker`` and ``tunelab train`` print one warning line per package outside its range.

Torch-free on purpose: the web process calls this, so versions are read from the installed
packages' metadata (``importlib.metadata``), never by importing the packages.
``python -m worker.spec.versions`` prints the whole table.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from importlib import metadata
from typing import TextIO

from packaging.version import InvalidVersion, Version

# package: (lowest tested, newest tested). Keep in step with the lock files (the lower end) and
# the last `make test-latest` run that passed (the upper end).
TESTED: dict[str, tuple[str, str]] = {
    "torch": ("2.13.0", "2.15.0"),
    "transformers": ("5.25.0", "5.25.0"),
    "peft": ("0.21.2", "0.22.0"),
    "accelerate": ("1.16.0", "1.16.0"),
    # On a CPU machine only imported alongside the CPU tests (make test-latest); QLoRA itself
    # needs a GPU (tests/worker/test_gpu.py).
    "bitsandbytes": ("0.50.2", "0.50.2"),
}

HOW_TO_FIX = "`make install` installs the tested versions (requirements/lock.txt)"
HOW_TO_FIX_TORCH = (
    "install a tested torch (on a GPU host its CUDA build), then `make install` for the rest"
)


def installed_versions(packages: tuple[str, ...] = tuple(TESTED)) -> dict[str, str]:
    """The installed version of each of ``packages`` that is installed at all."""
    found = {}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def tested_range(name: str) -> str:
    low, high = TESTED[name]
    return low if low == high else f"{low} to {high}"


def in_tested_range(name: str, version: str) -> bool:
    """Whether ``version`` of ``name`` lies within the tested range, local build labels aside
    (torch 2.13.0+cpu and 2.13.0+cu130 are both 2.13.0)."""
    low, high = TESTED[name]
    try:
        public = Version(Version(version).public)
    except InvalidVersion:
        return False
    return Version(low) <= public <= Version(high)


def untested_versions(installed: Mapping[str, str] | None = None) -> list[str]:
    """One warning line per installed package of ``TESTED`` outside its tested range.

    ``installed`` maps package names to versions; by default, what this environment has.
    """
    if installed is None:
        installed = installed_versions()
    lines = []
    for name in TESTED:
        version = installed.get(name)
        if version is None or in_tested_range(name, version):
            continue
        fix = HOW_TO_FIX_TORCH if name == "torch" else HOW_TO_FIX
        lines.append(
            f"warning: {name} {version} is outside tunelab's tested range "
            f"({name} {tested_range(name)}); {fix}"
        )
    return lines


def warn_untested_versions(stream: TextIO | None = None) -> None:
    """Print :func:`untested_versions` to ``stream`` (standard error by default)."""
    out = stream if stream is not None else sys.stderr
    for line in untested_versions():
        print(line, file=out, flush=True)


def report(installed: Mapping[str, str] | None = None) -> str:
    """A table of the training stack: installed version, tested range, in range or not."""
    if installed is None:
        installed = installed_versions()
    rows = [("package", "installed", "tested", "")]
    for name in TESTED:
        version = installed.get(name)
        status = ""
        if version is not None:
            status = "ok" if in_tested_range(name, version) else "UNTESTED"
        rows.append((name, version or "-", tested_range(name), status))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(
        f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:<{widths[2]}}  {d}".rstrip() for a, b, c, d in rows
    )


if __name__ == "__main__":
    print(report())
