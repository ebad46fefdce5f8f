"""The layers of docs/ARCHITECTURE.md hold: import-linter's layers contract (pyproject.toml) passes, no two
subpackages import each other (directly or round a longer loop), function-level imports of the project's own
modules are only where ARCHITECTURE.md allows them, and no two modules share a file name."""

from __future__ import annotations

import ast
import collections
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "audiointerp"

# Function-level imports of the project's own modules are allowed only here (ARCHITECTURE.md, "Layers"):
# the CLI (a fast `--help`), the package root (`audiointerp.load_export` without importing torch-heavy
# modules at `import audiointerp`), and the registries loading their members on first use.
LAZY_ALLOWED = {
    "cli.py": None,  # any
    "__init__.py": {"audiointerp.train.export"},
    "models/registry.py": {"audiointerp.models.zoo"},
    "train/tasks/base.py": {f"audiointerp.train.tasks.{name}_task" for name in
                            ("ae_finetune", "classifier", "concepts", "flow", "semantic")},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, inside a function?) for every absolute import of the project in `path`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((alias.name, in_function) for alias in child.names if alias.name.startswith("audiointerp"))
            elif isinstance(child, ast.ImportFrom) and not child.level and (child.module or "").startswith("audiointerp"):
                found.append((str(child.module), in_function))
            visit(child, inner)

    visit(tree, False)
    return found


def subpackage(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_the_layers_contract_holds() -> None:
    """`lint-imports` with the layers contract of pyproject.toml: an upward import fails this test (and CI)."""
    command = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if command is None:
        pytest.fail("lint-imports is missing: install the dev extra (pip install -e '.[dev]')")
    done = subprocess.run([command, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "1 kept, 0 broken" in done.stdout


def test_no_two_subpackages_import_each_other() -> None:
    """Module-level and function-level imports together: the graph of subpackages (and top-level modules) has no
    cycle. The package root (`__version__`, the lazy `load_export`) is left out: every layer may read it."""
    edges: dict[str, set[str]] = collections.defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        source = subpackage(module_name(path))
        for target, _ in project_imports(path):
            if subpackage(target) != source and "audiointerp" not in (source, subpackage(target)):
                edges[source].add(subpackage(target))

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in edges.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    cycles = sorted(a for a in edges if reaches(a, a, {a}))
    assert cycles == [], f"subpackages in an import cycle: {cycles}"


def test_function_level_imports_are_only_where_allowed() -> None:
    misplaced = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        allowed = LAZY_ALLOWED.get(relative, set())
        for target, in_function in project_imports(path):
            if in_function and allowed is not None and target not in allowed:
                misplaced.append(f"{relative}: {target}")
    assert misplaced == []


def test_no_two_modules_share_a_file_name() -> None:
    names = collections.Counter(p.name for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")
    assert {name: n for name, n in names.items() if n > 1} == {}


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The contract is not vacuous: a copy of the package with one upward import (datasets -> train) fails it."""
    copy = tmp_path / "src"
    shutil.copytree(PACKAGE, copy / "audiointerp", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    audio = copy / "audiointerp" / "datasets" / "audio.py"
    audio.write_text(audio.read_text(encoding="utf-8") + "\nfrom audiointerp.train import trainer  # noqa\n", encoding="utf-8")
    command = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or "lint-imports"
    done = subprocess.run([command, "--no-cache"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(copy), "PATH": str(Path(sys.executable).parent)})
    assert done.returncode != 0
    assert "audiointerp.datasets.audio -> audiointerp.train" in done.stdout
