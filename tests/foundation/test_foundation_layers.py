"""Layers point one way (DESIGN.md §3): ground ← data, models ← pipeline, metrics, study, stats ←
commands, the CLI, the demo and the app. An import that points up a layer fails here, naming the
file, the line and the two layers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "sonieval"

# Layer of each top-level module or subpackage of sonieval (higher numbers may import lower ones).
LAYERS = {
    "errors": 0,
    "files": 0,
    "tables": 0,
    "audio": 0,
    "protocol": 0,
    "measures": 0,
    "ledger": 0,
    "plotting": 0,
    "document": 0,
    "versions": 0,
    "extras": 0,
    "assets": 0,  # static files (the A/B engine) that pages of several floors load
    "__init__": 0,
    "data": 1,
    "models": 1,
    "pipeline": 2,
    "metrics": 2,
    "study": 2,
    "stats": 2,
    "gallery": 2,  # reads the tables of a results folder, as metrics, study and stats do
    "commands": 3,
    "cli": 3,
    "demo": 3,
    "__main__": 3,
}
APP_LAYER = 3


def _unit(module: str) -> str | None:
    """'sonieval.metrics.kad' -> 'metrics'; None for modules outside sonieval."""
    parts = module.split(".")
    if parts[0] != "sonieval":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path, root: Path):
    """(line, imported module) for every import of a sonieval module in one file, lazy ones too."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against this file's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            yield node.lineno, module
            for alias in node.names:  # `from sonieval import study` imports a package
                yield node.lineno, f"{module}.{alias.name}"


def _layer_of(path: Path, root: Path) -> tuple[str, int]:
    if path.is_relative_to(root / "study_app"):
        return "study_app", APP_LAYER
    unit = path.relative_to(root / "sonieval").parts[0].removesuffix(".py")
    assert unit in LAYERS, f"{path.relative_to(root)}: a new module or package of sonieval needs a layer in LAYERS here"
    return unit, LAYERS[unit]


def upward_imports(root: Path = ROOT) -> list[str]:
    found = []
    for path in sorted([*(root / "sonieval").rglob("*.py"), *(root / "study_app").rglob("*.py")]):
        unit, layer = _layer_of(path, root)
        for line, module in _imports(path, root):
            target = _unit(module)
            if target is None or target not in LAYERS or target == unit:
                continue
            if LAYERS[target] > layer:
                found.append(
                    f"{path.relative_to(root)}:{line} imports {module} "
                    f"(layer {LAYERS[target]} '{target}' from layer {layer} '{unit}')"
                )
    return found


def test_no_module_imports_a_layer_above_its_own():
    found = upward_imports()
    assert not found, "imports that point up a layer:\n" + "\n".join(found)


def test_the_check_sees_an_upward_import(tmp_path):
    """The check itself can fail: a ground module that imports the pipeline lazily, and a pipeline
    module that imports the ground relatively (allowed)."""
    (tmp_path / "sonieval" / "pipeline").mkdir(parents=True)
    (tmp_path / "sonieval" / "files.py").write_text("import os\n\ndef f():\n    from sonieval.pipeline import run\n")
    (tmp_path / "sonieval" / "pipeline" / "run.py").write_text("from ..files import f\n")
    assert upward_imports(tmp_path) == [
        "sonieval/files.py:4 imports sonieval.pipeline (layer 2 'pipeline' from layer 0 'files')",
        "sonieval/files.py:4 imports sonieval.pipeline.run (layer 2 'pipeline' from layer 0 'files')",
    ]


@pytest.mark.parametrize("unit", sorted(LAYERS))
def test_every_layer_entry_exists(unit):
    """A layer named here that no longer exists is a stale entry (renames must update the map)."""
    assert (PACKAGE / f"{unit}.py").exists() or (PACKAGE / unit).is_dir()


LONGEST_FUNCTION = 80  # lines, in the packages whose compute, orchestration and rendering were split apart


@pytest.mark.parametrize("package", ["metrics", "stats"])
def test_functions_of_the_split_packages_stay_short(package):
    too_long = []
    for path in sorted((PACKAGE / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > LONGEST_FUNCTION:
                    too_long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {lines} lines")
    assert not too_long, f"functions over {LONGEST_FUNCTION} lines (split them into named steps):\n" + "\n".join(
        too_long
    )


@pytest.mark.parametrize("package", ["sonieval.metrics", "sonieval.stats"])
def test_public_packages_say_what_they_export(package):
    import importlib

    module = importlib.import_module(package)
    exported = getattr(module, "__all__", None)
    assert exported, f"{package} has no __all__"
    missing = [name for name in exported if getattr(module, name, None) is None]
    assert not missing, f"{package}.__all__ names what it does not define: {missing}"
