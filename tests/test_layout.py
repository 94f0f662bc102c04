"""The package's dependency order, kept by a test: a folder imports only folders of lower layers.

Layers, bottom up (README, Layout). Two folders of one layer never import each other, so the
teacher side (extract) and the safety auditor share concept blocks (concepts) instead of
importing one another, and no product module imports a benchmark suite.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import m2kt

PACKAGE = Path(m2kt.__file__).parent

LAYERS: tuple[frozenset[str], ...] = tuple(
    frozenset(names.split())
    for names in (
        "__init__ errors faults progress",
        "atomic inputs resources distributed reproducible",
        "packet anchors tasks models",
        "adapter_files report",
        "align concepts",
        "extract safety",
        "ingest merge patch broker",
        "bench",
        "recipes api",
        "cli",
        "__main__",
    )
)


def layer_of(folder: str) -> int:
    for level, names in enumerate(LAYERS):
        if folder in names:
            return level
    raise AssertionError(f"m2kt/{folder} is in no layer of tests/test_layout.py: place it")


def imports(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, module) of every m2kt module `path` imports, relative imports resolved."""
    module = ".".join(("m2kt", *path.relative_to(root).with_suffix("").parts))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names = [base] if base != "m2kt" else [_from_package(a.name, root) for a in node.names]
            found += [(node.lineno, name) for name in names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return [(line, name) for line, name in found if name.startswith("m2kt.")]


def _from_package(name: str, root: Path) -> str:
    """`from m2kt import name`: a folder or module, else a name the package's __init__ defines
    (its version; its public face loads lazily, so importing it loads nothing above)."""
    is_module = (root / name).is_dir() or (root / f"{name}.py").exists()
    return f"m2kt.{name}" if is_module else "m2kt.__init__"


def folder_of(path: Path, root: Path) -> str:
    relative = path.relative_to(root)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def back_imports(root: Path = PACKAGE) -> list[str]:
    wrong = []
    for path in sorted(root.rglob("*.py")):
        here = folder_of(path, root)
        for line, name in imports(path, root):
            there = name.split(".")[1]
            if there != here and layer_of(there) >= layer_of(here):
                wrong.append(f"{path.relative_to(root)}:{line} imports {name}")
    return wrong


def test_every_import_goes_down_the_layers() -> None:
    assert back_imports() == []


def test_every_folder_has_a_layer() -> None:
    for path in PACKAGE.iterdir():
        if path.suffix == ".py" or (path.is_dir() and (path / "__init__.py").exists()):
            layer_of(path.stem)


@pytest.mark.parametrize(
    ("folder", "planted"),
    [
        ("extract", "from m2kt.safety.sides import ExportScreen"),  # a sibling of its layer
        ("packet", "from m2kt.models.view import ModelView"),  # sideways near the bottom
        ("report", "from m2kt.bench.patch.tables import summarise"),  # product imports a suite
    ],
)
def test_a_planted_back_import_is_found(tmp_path: Path, folder: str, planted: str) -> None:
    copy = tmp_path / "m2kt"
    (copy / folder).mkdir(parents=True)
    (copy / folder / "planted.py").write_text(planted + "\n")
    assert back_imports(copy) == [f"{folder}/planted.py:1 imports {planted.split()[1]}"]


def test_the_tests_share_one_conftest() -> None:
    """The test modules import helpers with `from conftest import …`; a second conftest.py
    below tests/ (no package `__init__` there) is imported under the same name and replaces
    the shared one, and every module collected after it fails to import."""
    tests = Path(__file__).parent
    assert sorted(tests.rglob("conftest.py")) == [tests / "conftest.py"]
