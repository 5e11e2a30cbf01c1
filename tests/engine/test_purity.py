"""engine/ is pure: it imports only the standard library and msgspec, and never reads the clock."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[2] / "engine"
ALLOWED_THIRD_PARTY = {"msgspec", "engine"}
CLOCK_CALLS = {
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("date", "today"),
    ("time", "time"),
    ("time", "time_ns"),
    ("time", "monotonic"),
    ("time", "monotonic_ns"),
    ("time", "perf_counter"),
    ("time", "localtime"),
    ("time", "gmtime"),
}
FORBIDDEN_MODULES = {"random", "socket", "os", "subprocess", "threading", "asyncio", "io"}


def engine_modules() -> list[Path]:
    return sorted(ENGINE.rglob("*.py"))


def imported_roots(tree: ast.AST) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_engine_imports_only_stdlib_and_msgspec() -> None:
    stdlib = set(sys.stdlib_module_names)
    for path in engine_modules():
        roots = imported_roots(ast.parse(path.read_text(), str(path)))
        foreign = {root for root in roots if root not in stdlib and root not in ALLOWED_THIRD_PARTY}
        assert not foreign, f"{path.name} imports {sorted(foreign)}"
        io_modules = roots & FORBIDDEN_MODULES
        assert not io_modules, f"{path.name} imports {sorted(io_modules)} (engine does no I/O)"


def test_engine_never_reads_the_clock() -> None:
    for path in engine_modules():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                assert (node.value.id, node.attr) not in CLOCK_CALLS, (
                    f"{path.name}:{node.lineno} reads the clock ({node.value.id}.{node.attr})"
                )


def test_engine_never_makes_floats() -> None:
    for path in engine_modules():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id != "float", f"{path.name}:{node.lineno} calls float()"
            if isinstance(node, ast.Constant):
                assert not isinstance(node.value, float), (
                    f"{path.name}:{node.lineno} has a float literal"
                )
