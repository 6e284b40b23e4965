"""Guards on our own source that review alone would let slip (the security model: README, "Accounts and security").

- Every ``torch.load`` passes ``weights_only=True``: without it, loading a file unpickles
  arbitrary objects, which runs any code the file carries.
- Nothing in app/ or worker/ hard-codes ``trust_remote_code=True``: whether a model may run
  its own code is an admin's decision per model, so it always arrives as a value.
- No module in app/ or worker/ but ``app/core/csv_cells.py`` makes a ``csv.writer`` or
  ``csv.DictWriter``: every CSV we write goes through its writer, which keeps a cell such as
  ``=HYPERLINK(...)`` from running as a formula when the file is opened in a spreadsheet.

The scan reads the files with ``ast`` (nothing is imported), so aliases such as
``import torch as th`` or ``from torch import load`` are followed and comments, strings and
``json.load`` are not mistaken for calls.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TORCH_LOAD_DIRS = ("app", "worker", "bench", "tests")
REMOTE_CODE_DIRS = ("app", "worker")
SKIPPED_PARTS = {".venv", "__pycache__", "node_modules", "build"}
TORCH_MODULES = {"torch", "torch.serialization"}
CSV_WRITERS = {"writer", "DictWriter"}
# The one module allowed to make a csv.writer: it neutralises formulas in every cell.
CSV_CELLS = "app/core/csv_cells.py"


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def python_files(*folders: str) -> list[Path]:
    files: list[Path] = []
    for folder in folders:
        base = ROOT / folder
        if base.is_dir():
            files += [p for p in sorted(base.rglob("*.py")) if not SKIPPED_PARTS & set(p.parts)]
    return files


def _torch_names(tree: ast.AST) -> tuple[set[str], set[str]]:
    """Names bound to the torch (or torch.serialization) module, and to its ``load``."""
    modules, loads = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in TORCH_MODULES or alias.name.startswith("torch."):
                    # "import torch.serialization" binds "torch"; "as x" binds the submodule.
                    if alias.asname is None:
                        modules.add(alias.name.split(".")[0])
                    elif alias.name in TORCH_MODULES:
                        modules.add(alias.asname)
        elif isinstance(node, ast.ImportFrom) and node.module in TORCH_MODULES:
            for alias in node.names:
                if alias.name == "load":
                    loads.add(alias.asname or "load")
                elif alias.name == "serialization":
                    modules.add(alias.asname or "serialization")
    return modules, loads


def _is_torch_module(node: ast.expr, modules: set[str]) -> bool:
    if isinstance(node, ast.Name):
        return node.id in modules
    # torch.serialization.load
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "serialization"
        and isinstance(node.value, ast.Name)
        and node.value.id in modules
    )


def _is_torch_load(node: ast.expr, modules: set[str], loads: set[str]) -> bool:
    if isinstance(node, ast.Name):
        return node.id in loads
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "load"
        and _is_torch_module(node.value, modules)
    )


def _is_true(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def unsafe_torch_loads(source: str, path: str = "<string>") -> list[Finding]:
    """Each ``torch.load`` in ``source`` that is not called with a literal weights_only=True."""
    tree = ast.parse(source, filename=path)
    modules, loads = _torch_names(tree)
    findings: list[Finding] = []
    called: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not _is_torch_load(node.func, modules, loads):
            continue
        called.add(id(node.func))
        given = {k.arg: k.value for k in node.keywords if k.arg is not None}
        if "weights_only" not in given:
            findings.append(Finding(path, node.lineno, "torch.load without weights_only=True"))
        elif not _is_true(given["weights_only"]):
            findings.append(
                Finding(path, node.lineno, "torch.load with weights_only other than True")
            )
    for node in ast.walk(tree):
        # A reference that is not a call (f = torch.load; partial(torch.load)) escapes the
        # check above, so it is refused too.
        if (
            isinstance(node, ast.Attribute | ast.Name)
            and isinstance(node.ctx, ast.Load)
            and id(node) not in called
            and _is_torch_load(node, modules, loads)
        ):
            findings.append(
                Finding(
                    path, node.lineno, "torch.load passed around; call it with weights_only=True"
                )
            )
    return sorted(findings, key=lambda f: f.line)


def trusted_remote_code(source: str, path: str = "<string>") -> list[Finding]:
    """Each call in ``source`` that passes trust_remote_code=True as a literal."""
    findings: list[Finding] = []
    for node in ast.walk(ast.parse(source, filename=path)):
        if not isinstance(node, ast.Call):
            continue
        for keyword in node.keywords:
            value = keyword.value
            if keyword.arg == "trust_remote_code":
                literal = _is_true(value)
            elif keyword.arg is None and isinstance(value, ast.Dict):  # **{"...": True}
                literal = any(
                    isinstance(k, ast.Constant) and k.value == "trust_remote_code" and _is_true(v)
                    for k, v in zip(value.keys, value.values, strict=True)
                )
            else:
                literal = False
            if literal:
                findings.append(Finding(path, node.lineno, "trust_remote_code=True hard-coded"))
    return findings


def direct_csv_writers(source: str, path: str = "<string>") -> list[Finding]:
    """Each ``csv.writer`` / ``csv.DictWriter`` in ``source``, called or passed around, under
    any alias (``import csv as c``, ``from csv import writer as w``)."""
    tree = ast.parse(source, filename=path)
    modules, names = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {a.asname or a.name for a in node.names if a.name == "csv"}
        elif isinstance(node, ast.ImportFrom) and node.module == "csv":
            names |= {a.asname or a.name for a in node.names if a.name in CSV_WRITERS}
    findings = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            direct = (
                node.attr in CSV_WRITERS
                and isinstance(node.value, ast.Name)
                and node.value.id in modules
            )
        elif isinstance(node, ast.Name):
            direct = isinstance(node.ctx, ast.Load) and node.id in names
        else:
            continue
        if direct:
            findings.append(
                Finding(path, node.lineno, "a csv writer of its own; use app.core.csv_cells")
            )
    return sorted(findings, key=lambda f: f.line)


def scan(folders: tuple[str, ...], check: Callable[[str, str], list[Finding]]) -> list[str]:
    found: list[str] = []
    for file in python_files(*folders):
        found += [
            str(f) for f in check(file.read_text(encoding="utf-8"), str(file.relative_to(ROOT)))
        ]
    return found


# --- The repository ---------------------------------------------------------------------------


def test_every_torch_load_in_our_code_is_weights_only() -> None:
    assert python_files("worker"), "the scan found no files: is ROOT right?"
    found = scan(TORCH_LOAD_DIRS, unsafe_torch_loads)
    assert not found, "pass weights_only=True to torch.load:\n" + "\n".join(found)


def test_no_code_in_app_or_worker_hard_codes_trust_remote_code() -> None:
    found = scan(REMOTE_CODE_DIRS, trusted_remote_code)
    assert not found, (
        "trust_remote_code must come from the run config (an admin's allow-list):\n"
        + "\n".join(found)
    )


def test_every_csv_in_app_and_worker_is_written_through_the_formula_safe_writer() -> None:
    found = [f for f in scan(REMOTE_CODE_DIRS, direct_csv_writers) if not f.startswith(CSV_CELLS)]
    assert not found, (
        "write CSV with app.core.csv_cells.safe_writer, which keeps cells from running as "
        "spreadsheet formulas:\n" + "\n".join(found)
    )
    assert direct_csv_writers((ROOT / CSV_CELLS).read_text(encoding="utf-8")), "moved?"


# --- The scanner itself -------------------------------------------------------------------------

PLANTED_LOADS = """
import json
import torch
import torch as th
import torch.serialization as ser
from torch import load as tl
from torch.serialization import load

state = torch.load("a.pt")                                 # 9: no weights_only
state = torch.load("a.pt", weights_only=False)             # 10: explicitly unsafe
state = th.load("a.pt", map_location="cpu")                # 11: module alias
state = tl("a.pt")                                         # 12: function alias
state = load("a.pt")                                       # 13: torch.serialization.load
state = torch.serialization.load("a.pt")                   # 14: submodule attribute
state = ser.load("a.pt")                                   # 15: submodule alias
state = torch.load("a.pt", **options)                      # 16: hidden in **kwargs
state = torch.load("a.pt", weights_only=flag)              # 17: not a literal
loader = torch.load                                        # 18: passed around
state = torch.load("a.pt", weights_only=True)              # fine
state = torch.load("a.pt", map_location="cpu", weights_only=True, mmap=True)  # fine
data = json.load(open("x.json"))                           # not torch
text = "torch.load('a.pt')"                                # a string, not a call
"""


def test_scanner_catches_every_planted_torch_load_and_nothing_else() -> None:
    found = unsafe_torch_loads(PLANTED_LOADS, "planted.py")
    assert [f.line for f in found] == list(range(9, 19))
    assert str(found[0]) == "planted.py:9: torch.load without weights_only=True"
    assert "other than True" in found[1].message


def test_scanner_ignores_load_functions_that_are_not_torch() -> None:
    source = "import numpy as np\nfrom yaml import load\nnp.load('a.npy')\nload(stream)\n"
    assert unsafe_torch_loads(source) == []


def test_scanner_catches_planted_trust_remote_code() -> None:
    source = (
        "from transformers import AutoModel\n"
        "AutoModel.from_pretrained(p, trust_remote_code=True)\n"
        "AutoModel.from_pretrained(p, trust_remote_code=False)\n"
        "AutoModel.from_pretrained(p, trust_remote_code=config.trust_remote_code)\n"
        "AutoModel.from_pretrained(p, **{'trust_remote_code': True})\n"
        "# AutoModel.from_pretrained(p, trust_remote_code=True)\n"
    )
    found = trusted_remote_code(source, "planted.py")
    assert [str(f) for f in found] == [
        "planted.py:2: trust_remote_code=True hard-coded",
        "planted.py:5: trust_remote_code=True hard-coded",
    ]


PLANTED_CSV = """
import csv
import csv as c
from csv import writer, DictWriter as DW

csv.writer(f)                                              # 6: the module's writer
c.writer(f)                                                # 7: module alias
writer(f)                                                  # 8: imported name
DW(f, fieldnames=["a"])                                    # 9: DictWriter, aliased
csv.DictWriter(f, ["a"])                                   # 10
make = csv.writer                                          # 11: passed around
csv.reader(f)                                              # reading is fine
safe_writer(f).writerow(["=1"])                            # the safe one
text = "csv.writer(f)"                                     # a string, not a call
"""


def test_scanner_catches_every_planted_csv_writer_and_nothing_else() -> None:
    found = direct_csv_writers(PLANTED_CSV, "planted.py")
    assert [f.line for f in found] == list(range(6, 12))
    assert str(found[0]) == "planted.py:6: a csv writer of its own; use app.core.csv_cells"
