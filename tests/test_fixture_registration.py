"""Shared fixtures reach test modules through conftest.py's ``pytest_plugins`` only: a fixture imported by name
shadows the registered one, hides which fixture a test really gets, and needs a lint exception to survive."""

from __future__ import annotations

import ast
from pathlib import Path

import conftest

TESTS = Path(__file__).parent


def _is_fixture(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return isinstance(target, ast.Attribute) and target.attr == "fixture"


def fixtures_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and any(map(_is_fixture, node.decorator_list))
    }


def fixture_modules() -> dict[str, set[str]]:
    return {path.stem: fixtures_in(path) for path in TESTS.glob("*_fixtures.py")}


def test_the_fixture_check_sees_fixtures() -> None:
    assert {"tuner", "tuner_stub"} <= fixture_modules()["tuner_fixtures"]


def test_every_fixture_module_is_registered_in_conftest() -> None:
    with_fixtures = {name for name, fixtures in fixture_modules().items() if fixtures}
    assert with_fixtures <= set(conftest.pytest_plugins)


def test_no_test_module_imports_a_fixture_by_name() -> None:
    modules = fixture_modules()
    imported = [
        f"{path.name}: {alias.name} from {node.module}"
        for path in sorted(TESTS.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and node.module in modules
        for alias in node.names
        if alias.name in modules[node.module]
    ]
    assert imported == []
