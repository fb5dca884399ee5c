"""The cloud is the public zone: it must not import anything of the trusted zone."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import qhybrid.cloud

CLOUD_DIR = Path(qhybrid.cloud.__file__).resolve().parent
PACKAGE = ("qhybrid", "cloud")


def _allowed(module: str) -> bool:
    parts = tuple(module.split("."))
    return parts[0] != "qhybrid" or parts[:2] == PACKAGE


def _module_parts(path: Path) -> tuple[str, ...]:
    """Dotted name of a module file inside the cloud package, as a tuple."""
    relative = path.relative_to(CLOUD_DIR).with_suffix("")
    parts = PACKAGE + relative.parts
    return parts[:-1] if parts[-1] == "__init__" else parts


def forbidden_imports(source: str, module: tuple[str, ...], *, is_package: bool = False) -> list[str]:
    """Imports in ``source`` that reach outside ``qhybrid.cloud`` into ``qhybrid``.

    Args:
        source: Python source text.
        module: Dotted name of the module the source belongs to.
        is_package: Whether the source is a package ``__init__`` (relative imports start there).
    """
    package = module if is_package else module[:-1]
    problems: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            problems += [f"import {alias.name}" for alias in node.names if not _allowed(alias.name)]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - (node.level - 1)] if node.level else ()
            resolved = base + tuple(node.module.split(".")) if node.module else base
            if not resolved or (node.level and node.level - 1 >= len(package)):
                problems.append(f"relative import beyond the top package (level {node.level})")
                continue
            # ``from qhybrid import cloud`` names a subpackage: judge each imported name.
            targets = (
                [(*resolved, alias.name) for alias in node.names] if resolved == ("qhybrid",) else [resolved]
            )
            problems += [f"from ... import -> {'.'.join(t)}" for t in targets if not _allowed(".".join(t))]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            # importlib.import_module("qhybrid.x") / __import__("qhybrid.x") are imports too.
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            value = node.args[0].value
            if name in ("import_module", "__import__") and isinstance(value, str) and not _allowed(value):
                problems.append(f"{name}({value!r})")
    return problems


def cloud_modules() -> list[Path]:
    return sorted(CLOUD_DIR.rglob("*.py"))


def test_cloud_package_has_modules() -> None:
    names = {path.name for path in cloud_modules()}
    assert {"__init__.py", "app.py", "main.py", "store.py", "runner.py", "sampler.py"} <= names


@pytest.mark.parametrize("path", cloud_modules(), ids=lambda p: str(p.relative_to(CLOUD_DIR)))
def test_module_imports_nothing_from_the_trusted_zone(path: Path) -> None:
    problems = forbidden_imports(path.read_text(), _module_parts(path), is_package=path.name == "__init__.py")
    assert problems == [], f"{path}: {problems}"


@pytest.mark.parametrize(
    ("source", "bad"),
    [
        ("import qhybrid.core.config", True),
        ("import qhybrid", True),
        ("import qhybrid.cloud.store", False),
        ("from qhybrid.gateway.egress import EgressClient", True),
        ("from qhybrid import core", True),
        ("from qhybrid import cloud", False),
        ("from qhybrid.cloud import store", False),
        ("from . import store", False),
        ("from .store import TaskStore", False),
        ("from .. import core", True),
        ("from ..backends import base", True),
        ("from ...x import y", True),
        ("import importlib\nimportlib.import_module('qhybrid.backends.base')", True),
        ("__import__('qhybrid.core')", True),
        ("import numpy, fastapi", False),
    ],
)
def test_checker_catches_escapes(source: str, bad: bool) -> None:
    assert bool(forbidden_imports(source, ("qhybrid", "cloud", "app"))) is bad


def test_loading_the_cloud_loads_no_trusted_module() -> None:
    # The static check misses imports done by code paths it cannot see; the import graph does not.
    code = (
        "import json, sys\n"
        "import qhybrid.cloud.main, qhybrid.cloud.app, qhybrid.cloud.runner\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'qhybrid')))\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    loaded = json.loads(output)
    assert [m for m in loaded if not _allowed(m) and m != "qhybrid"] == []
    assert "qhybrid.cloud.app" in loaded
