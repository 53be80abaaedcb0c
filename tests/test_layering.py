"""Imports point down only: the master side never loads trio, l4, l7 or the worker."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import trilb

PACKAGE = Path(trilb.__file__).parent
MASTER_MODULES = sorted((PACKAGE / "master").glob("*.py"))
FORBIDDEN_IN_MASTER = ("trilb.l4", "trilb.l7", "trilb.worker", "trio")
MASTER_SIDE = ("trilb.master.arbiter", "trilb.master.sockets", "trilb.cli", "trilb.config.load")


def test_master_side_does_not_import_trio() -> None:
    code = (
        "import sys, json\n"
        f"for name in {MASTER_SIDE!r}:\n"
        "    __import__(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules\n"
        "    if m.split('.')[0] in ('trio', 'trio_typing', 'outcome', 'sniffio')\n"
        "    or m.startswith(('trilb.l4', 'trilb.l7', 'trilb.worker')))))\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('trilb.'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    forbidden_line, loaded_line = result.stdout.splitlines()
    assert json.loads(forbidden_line) == []
    loaded = json.loads(loaded_line)
    assert set(MASTER_SIDE) <= set(loaded)  # the probe really imported them


def module_level_imports(tree: ast.Module, module: str) -> list[str]:
    """Absolute names imported when the module runs (not inside functions)."""
    found: list[str] = []
    package = module.rsplit(".", 1)[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            return
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            found.append(base)
            found.extend(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def all_imports(tree: ast.Module) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
    return names


def is_under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_master_modules_exist() -> None:
    names = {p.stem for p in MASTER_MODULES}
    assert {"__init__", "arbiter", "sockets", "signals"} <= names


@pytest.mark.parametrize("path", MASTER_MODULES, ids=lambda p: p.name)
def test_master_module_imports_point_down(path: Path) -> None:
    module = "trilb.master." + path.stem if path.stem != "__init__" else "trilb.master"
    if path.stem == "__init__":
        module += ".__init__"  # relative imports resolve against trilb.master itself
    tree = ast.parse(path.read_text(), filename=str(path))
    bad = [
        name
        for name in module_level_imports(tree, module)
        for prefix in FORBIDDEN_IN_MASTER
        if is_under(name, prefix)
    ]
    assert bad == []


@pytest.mark.parametrize("path", MASTER_MODULES, ids=lambda p: p.name)
def test_master_never_imports_trio_even_lazily(path: Path) -> None:
    # The worker is reached through trilb.worker.main after fork; trio itself is
    # never named in master/.
    tree = ast.parse(path.read_text(), filename=str(path))
    assert [n for n in all_imports(tree) if is_under(n, "trio")] == []


def test_the_import_scanner_sees_what_it_must() -> None:
    source = (
        "import trio\n"
        "from trilb.l4 import tcp\n"
        "from ..worker import main\n"
        "if True:\n"
        "    import trilb.l7.proxy\n"
        "def f():\n"
        "    import trilb.l7.lazy\n"
        "class C:\n"
        "    from trilb.l4.pump import splice\n"
    )
    names = module_level_imports(ast.parse(source), "trilb.master.x")
    assert "trio" in names
    assert "trilb.l4.tcp" in names
    assert "trilb.worker.main" in names
    assert "trilb.l7.proxy" in names
    assert "trilb.l4.pump.splice" in names
    assert "trilb.l7.lazy" not in names  # a function body runs after fork, not at import
