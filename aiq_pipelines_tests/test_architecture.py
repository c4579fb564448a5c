"""The package's shape: layers import one way, packages import no cycle, modules stay small, the sandbox stands alone;
and no module of the tests imports a test module (what tests share lives in ``aiq_pipelines_tests/support/``)."""

from __future__ import annotations

import ast
import contextlib
import textwrap
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "aiq_pipelines"
MAX_MODULE_LINES = 450
TESTS_AND_BENCH = (ROOT / "aiq_pipelines_tests", ROOT / "bench")

# What each part of the package may import from the project, besides itself.
ALLOWED = {
    "db": set(),
    "pos": {"db"},
    "aiq": {"db"},
    "sync": {"db", "pos", "aiq"},
    "settings": {"db", "pos", "aiq"},
    "pull": {"db", "pos", "sync", "settings"},
    "defs": {"db", "pos", "aiq", "sync", "settings"},
    "devstack": {"db", "pos"},
    "cli": {"db", "pos", "aiq", "sync", "settings", "defs", "pull", "devstack"},
    "definitions": {"db", "pos", "aiq", "sync", "settings", "defs"},
}


def modules(package: Path) -> list[Path]:
    return sorted(path for path in package.rglob("*.py") if "__pycache__" not in path.parts)


def part_of(path: Path) -> str:
    """The layer a module of ``aiq_pipelines`` belongs to: its sub-package, or its own name at the top."""
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def project_imports(path: Path, top: str = "aiq_pipelines") -> set[str]:
    """The parts of ``top`` that ``path`` imports, at any depth of the module (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module == top:
                names = [f"{top}.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == top and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("path", modules(PACKAGE), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_imports_from_a_layer_above_it(path: Path) -> None:
    part = part_of(path)
    if part == "__init__":
        return
    wrong = project_imports(path) - ALLOWED[part] - {part}
    assert not wrong, f"{path.relative_to(ROOT)} ({part}) imports {sorted(wrong)}; it may import {sorted(ALLOWED[part])}"


def test_the_packages_import_no_cycle() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in modules(PACKAGE):
        graph[part_of(path)] |= project_imports(path) - {part_of(path)}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})) for nxt in graph[start])

    assert not [part for part in list(graph) if reaches(part, part, {part})]


@pytest.mark.parametrize("path", modules(PACKAGE), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_is_over_450_lines(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.relative_to(ROOT)} has {lines} lines: split it by concern"


def test_the_sandbox_imports_nothing_of_the_pipeline() -> None:
    for path in modules(ROOT / "aiq_sandbox"):
        assert not project_imports(path), f"{path.relative_to(ROOT)} imports aiq_pipelines"


def test_the_layer_check_sees_a_wrong_import(tmp_path: Path) -> None:
    module = tmp_path / "example.py"
    module.write_text("import aiq_pipelines.sync.push\nfrom aiq_pipelines import defs\n\ndef f():\n"
                      "    from aiq_pipelines.pos.source import PosSource\n")
    assert project_imports(module) == {"sync", "defs", "pos"}


def imported_test_modules(source: str) -> list[str]:
    """The modules named ``test_*`` that ``source`` imports, at any depth (function-level and relative imports, and
    scripts held in strings for a subprocess, included); in ``from x import test_y``, ``test_y`` counts too."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = ["." * node.level + (node.module or ""), *(alias.name for alias in node.names)]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "import " in node.value:
            with contextlib.suppress(SyntaxError):  # prose, not a script
                names = imported_test_modules(textwrap.dedent(node.value))
        found += [name for name in names if any(part.startswith("test_") for part in name.split("."))]
    return found


def test_no_module_of_the_tests_or_the_benchmarks_imports_a_test_module() -> None:
    # Importing a test module collects its tests and fixtures again where it is imported, and ties one file's tests to
    # another's: what several test modules share lives in aiq_pipelines_tests/support/.
    example = 'import a.test_b\nfrom . import test_c\ndef f():\n    from ..test_d import e\nS = """\n    import test_f\n"""\n'
    assert imported_test_modules(example) == ["a.test_b", "test_c", "..test_d", "test_f"], "each kind of import is seen"
    offenders = {
        str(path.relative_to(ROOT)): imported
        for folder in TESTS_AND_BENCH for path in modules(folder)
        if path != Path(__file__).resolve() and (imported := imported_test_modules(path.read_text()))
    }
    assert offenders == {}, f"test modules imported (move what they share to aiq_pipelines_tests/support/): {offenders}"
