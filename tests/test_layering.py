"""Model code never imports Kedro: models/, data/, core/, metrics/ and the stage packages
stay plain Python, directly and through anything of the project they import.

The imports are read from the source (every ``import`` statement, in functions and under
``TYPE_CHECKING`` too, relative ones resolved) and followed through the project's own
modules, package ``__init__`` files included, since importing ``a.b.c`` runs ``a/__init__``
and ``a/b/__init__`` first. A failure names the chain that reaches Kedro.
"""

from __future__ import annotations

import ast
import os
import sys
from collections import deque
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "wavy_pipeline"
# plain-Python layers and the stage packages the pipelines import
KEDRO_FREE = (
    "core",
    "data",
    "models",
    "metrics",
    "features",
    "speechclip",
    "adapter",
    "generation",
    "evaluation",
)


def _file(module: str, root: Path = SRC) -> Path | None:
    """The source file of a project module (a package's ``__init__.py``), None otherwise."""
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _modules(package: str, root: Path = SRC) -> list[str]:
    folder = root.joinpath(*package.split("."))
    return sorted(
        ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        for path in folder.rglob("*.py")
    )


def imported(module: str, root: Path = SRC) -> set[str]:
    """Every module ``module``'s source imports (absolute names; for ``from x import y``
    both ``x`` and ``x.y``, which is a module when the project has that file)."""
    path = _file(module, root)
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module
            names.add(source)
            names.update(f"{source}.{alias.name}" for alias in node.names)
    return names


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def kedro_chain(start: str, root: Path = SRC) -> list[str] | None:
    """The import chain from project module ``start`` to Kedro, or None if there is none."""
    came_from: dict[str, str | None] = {start: None}
    for package in _parents(start)[:-1]:  # importing a.b.c runs a/__init__, a/b/__init__
        came_from[package] = start
    queue = deque(came_from)
    while queue:
        module = queue.popleft()
        for name in sorted(imported(module, root)):
            if name == "kedro" or name.startswith("kedro."):
                chain = [name, module]
                while came_from[chain[-1]] is not None:
                    chain.append(came_from[chain[-1]])
                return chain[::-1]
            if not name.startswith(f"{PACKAGE}."):
                continue
            for step in _parents(name):
                if step not in came_from and _file(step, root) is not None:
                    came_from[step] = module
                    queue.append(step)
    return None


@pytest.mark.parametrize("package", KEDRO_FREE)
def test_plain_layers_do_not_import_kedro(package):
    modules = _modules(f"{PACKAGE}.{package}")
    assert modules, f"no module under {PACKAGE}/{package}/"
    chains = {m: kedro_chain(m) for m in modules}
    reached = {m: " -> ".join(c) for m, c in chains.items() if c}
    assert not reached, f"imports Kedro: {reached}"


@pytest.mark.slow
def test_importing_every_plain_module_loads_no_kedro(run_ok):
    """The same at run time, in a fresh interpreter (what the source cannot show: a
    dependency that imports Kedro, an ``import_module`` call)."""
    modules = [m for package in KEDRO_FREE for m in _modules(f"{PACKAGE}.{package}")]
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m == 'kedro' or m.startswith('kedro.')))\n"
    )
    env = os.environ | {"PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1"}
    done = run_ok([sys.executable, "-c", script], env=env)
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout


def test_the_check_sees_a_kedro_import_anywhere_on_the_way(tmp_path):
    """The walk finds Kedro behind a relative import, a function-level import and a package
    ``__init__``; and finds nothing where there is nothing."""
    pkg = tmp_path / PACKAGE
    (pkg / "models").mkdir(parents=True)
    (pkg / "datasets").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "models" / "__init__.py").write_text("")
    (pkg / "models" / "plain.py").write_text("import numpy\nfrom . import other\n")
    (pkg / "models" / "other.py").write_text("def f():\n    import torch\n")
    (pkg / "models" / "adapter.py").write_text("from .plain import x\nfrom ..datasets import y\n")
    (pkg / "datasets" / "__init__.py").write_text("from kedro.io import AbstractDataset\n")
    assert kedro_chain(f"{PACKAGE}.models.plain", tmp_path) is None
    assert kedro_chain(f"{PACKAGE}.models.adapter", tmp_path) == [
        f"{PACKAGE}.models.adapter",
        f"{PACKAGE}.datasets",
        "kedro.io",
    ]
    (pkg / "models" / "other.py").write_text("def f():\n    import kedro\n")
    assert kedro_chain(f"{PACKAGE}.models.plain", tmp_path) == [
        f"{PACKAGE}.models.plain",
        f"{PACKAGE}.models.other",
        "kedro",
    ]
