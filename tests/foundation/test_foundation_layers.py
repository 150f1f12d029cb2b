"""Layers point one way (docs/architecture.md#layers-point-one-way): every module of sonieval stands on a
floor, and every import points down a floor, never up and never sideways between the packages of one floor
that stand side by side; and no two modules import each other, directly or around a longer loop.

    commands         __main__ · cli · commands · study_app
    runner           demo · pipeline.run
    stages           gallery · metrics · pipeline · stats · study            (side by side)
    data and models  data · models                                           (side by side)
    ground           __init__ · assets · audio · document · engines · errors ·
                     extras · files · gallery_links · ledger · logmel · loudness ·
                     measures · plotting · protocol · rating_attributes ·
                     results_layout · screening_rules · tables · versions

Every import counts, parsed from the source: at the top of a module, inside a function (a lazy import),
under ``TYPE_CHECKING``. A failure names the file, the line and the two floors (or the loop's modules)."""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "sonieval"

# The floors, lowest first: a module may import from its own floor's unit and from the floors below.
FLOORS = ["ground", "data and models", "stages", "runner", "commands"]
SIDE_BY_SIDE = {"data and models", "stages"}  # the units of these floors never import one another

# Floor of each top-level module or subpackage of sonieval (and of the app).
UNITS = {
    **dict.fromkeys(
        [
            "__init__",
            "assets",  # static files (the A/B engine) that pages of several floors load
            "audio",
            "document",
            "engines",  # the executors and the device choice, below every stage
            "errors",
            "extras",
            "files",
            "gallery_links",
            "ledger",
            "logmel",
            "loudness",
            "measures",
            "plotting",
            "protocol",
            "rating_attributes",  # the questions a study asks (read by protocol, study, stats)
            "results_layout",  # every path of a results folder, read by every floor above
            "screening_rules",
            "tables",
            "versions",
        ],
        "ground",
    ),
    **dict.fromkeys(["data", "models"], "data and models"),
    **dict.fromkeys(["gallery", "metrics", "pipeline", "stats", "study"], "stages"),
    **dict.fromkeys(["demo"], "runner"),
    **dict.fromkeys(["__main__", "cli", "commands", "study_app"], "commands"),
}
# Modules that stand above their own package: the run of every stage imports the stages it runs.
MODULE_FLOORS = {"pipeline.run": "runner"}


def _module_of(path: Path, root: Path) -> str:
    """``sonieval/metrics/items.py`` -> ``sonieval.metrics.items``; a package's ``__init__.py`` -> the package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _source_files(root: Path) -> list[Path]:
    return sorted([*(root / "sonieval").rglob("*.py"), *(root / "study_app").rglob("*.py")])


def _imports(path: Path, root: Path, modules: set[str]) -> Iterator[tuple[int, str]]:
    """(line, imported module of sonieval or the app) for every import in one file, lazy ones too.

    ``from a.b import c`` imports module ``a.b.c`` when there is one, else (a name of) ``a.b``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = _module_of(path, root) if path.name == "__init__.py" else _module_of(path, root).rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against this file's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names = [f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module for a in node.names]
        else:
            continue
        for name in dict.fromkeys(names):
            while name and name not in modules:  # `import a.b.c` of a name inside a module: the module
                name = name.rpartition(".")[0]
            if name:
                yield node.lineno, name


def import_graph(root: Path = ROOT) -> dict[str, list[tuple[str, int, str]]]:
    """module -> [(file, line, imported module)] for every import between sonieval's own modules."""
    files = {_module_of(p, root): p for p in _source_files(root)}
    graph: dict[str, list[tuple[str, int, str]]] = {}
    for module, path in files.items():
        rel = str(path.relative_to(root))
        graph[module] = [(rel, line, target) for line, target in _imports(path, root, set(files)) if target != module]
    return graph


def _unit(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "study_app":
        return "study_app"
    return parts[1] if len(parts) > 1 else "__init__"


def floor_of(module: str) -> str:
    """The floor of a dotted module name (a module of MODULE_FLOORS, else its unit's)."""
    inside = module.split(".", 1)[1] if module.startswith("sonieval.") else ""
    for name, floor in MODULE_FLOORS.items():
        if inside == name or inside.startswith(name + "."):
            return floor
    unit = _unit(module)
    assert unit in UNITS, f"{module}: a new module or package of sonieval needs a floor in UNITS here"
    return UNITS[unit]


def misplaced_imports(root: Path = ROOT) -> list[str]:
    """Every import that points up a floor, or sideways between two units of a side-by-side floor."""
    found = []
    for module, edges in import_graph(root).items():
        here = floor_of(module)
        for rel, line, target in edges:
            there = floor_of(target)
            up = FLOORS.index(there) > FLOORS.index(here)
            sideways = there == here and here in SIDE_BY_SIDE and _unit(target) != _unit(module)
            if up or sideways:
                found.append(
                    f"{rel}:{line} imports {target} ({'up to' if up else 'sideways into'} '{_unit(target)}' "
                    f"on floor '{there}', from '{_unit(module)}' on floor '{here}')"
                )
    return found


def import_cycles(root: Path = ROOT) -> list[str]:
    """Every loop of imports (a strongly connected set of modules, Tarjan's algorithm), each as its modules
    and the imports that close it."""
    graph = import_graph(root)
    targets = {m: sorted({t for _, _, t in edges if t in graph}) for m, edges in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    loops = []

    def visit(v: str) -> None:  # recursion depth is bounded by the number of modules (a few hundred)
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in targets[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                loops.append(sorted(part))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return [
        " <-> ".join(loop)
        + ": "
        + "; ".join(f"{rel}:{line} imports {t}" for m in loop for rel, line, t in graph[m] if t in loop)
        for loop in sorted(loops)
    ]


def test_no_import_points_up_a_floor_or_sideways():
    found = misplaced_imports()
    assert not found, "imports that point up a floor or sideways:\n" + "\n".join(found)


# A loop this change could not cut without editing a module another change owns (issue 23.6 splits the study
# store and its session): study.session's admin view reads study.export's tables, and study.export asks
# study.session for a rater's completion code (move study_secret/rater_code below both to cut it). The test
# fails on any other loop, and on this entry once the loop is gone.
PENDING_LOOPS = {"sonieval.study.export <-> sonieval.study.session"}


def test_no_two_modules_import_each_other():
    loops = import_cycles()
    named = {loop.split(": ")[0] for loop in loops}
    assert not [loop for loop in loops if loop.split(": ")[0] not in PENDING_LOOPS], (
        "modules that import each other (around the loop):\n" + "\n".join(loops)
    )
    assert PENDING_LOOPS <= named, f"a pending loop is gone: remove it from PENDING_LOOPS ({PENDING_LOOPS - named})"


def test_the_checks_see_an_upward_import_a_sideways_one_and_a_loop(tmp_path):
    """The checks themselves can fail: a ground module that imports the pipeline lazily, metrics importing
    stats (side by side), a pipeline module that imports the ground relatively (allowed), and two pipeline
    modules that import each other inside functions."""
    files = {
        "sonieval/__init__.py": "",
        "sonieval/files.py": "import os\n\ndef f():\n    from sonieval.pipeline import run\n",
        "sonieval/pipeline/__init__.py": "",
        "sonieval/tables.py": "x = 1\n",
        "sonieval/pipeline/run.py": "from ..tables import x\n",
        "sonieval/pipeline/a.py": "def f():\n    from sonieval.pipeline import b\n",
        "sonieval/pipeline/b.py": "def g():\n    import sonieval.pipeline.a\n",
        "sonieval/metrics/__init__.py": "",
        "sonieval/metrics/m.py": "def f():\n    from sonieval.stats.s import x\n",
        "sonieval/stats/__init__.py": "",
        "sonieval/stats/s.py": "x = 1\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert misplaced_imports(tmp_path) == [
        "sonieval/files.py:4 imports sonieval.pipeline.run (up to 'pipeline' on floor 'runner', "
        "from 'files' on floor 'ground')",
        "sonieval/metrics/m.py:2 imports sonieval.stats.s (sideways into 'stats' on floor 'stages', "
        "from 'metrics' on floor 'stages')",
    ]
    assert import_cycles(tmp_path) == [
        "sonieval.pipeline.a <-> sonieval.pipeline.b: sonieval/pipeline/a.py:2 imports sonieval.pipeline.b; "
        "sonieval/pipeline/b.py:2 imports sonieval.pipeline.a"
    ]


def floors_diagram() -> str:
    """The floors, highest first, each with its units (and the modules of MODULE_FLOORS)."""
    lines = []
    for floor in reversed(FLOORS):
        units = sorted(
            [u for u, f in UNITS.items() if f == floor] + [m for m, f in MODULE_FLOORS.items() if f == floor]
        )
        text = textwrap.fill(" · ".join(units), 78 - 17)
        first, *rest = text.splitlines()
        note = "(side by side)" if floor in SIDE_BY_SIDE else ""
        lines.append(f"{floor:<17}{first:<56}{note}".rstrip())
        lines += [" " * 17 + r for r in rest]
    return "\n".join("    " + line for line in lines)


def test_metrics_stats_study_and_gallery_stand_side_by_side_above_the_tables_below_commands():
    """The shape the floors must keep, and the diagram in this file's docstring drawn from FLOORS and UNITS."""
    stages = {UNITS[u] for u in ("metrics", "stats", "study", "gallery", "pipeline")}
    assert stages == {"stages"} and "stages" in SIDE_BY_SIDE
    order = FLOORS.index
    assert order(UNITS["tables"]) < order(UNITS["models"]) < order("stages") < order(UNITS["commands"])
    assert order(UNITS["engines"]) < order(UNITS["pipeline"])  # the executor stands below every stage
    assert order(MODULE_FLOORS["pipeline.run"]) > order("stages")  # the run of every stage, above them
    for line in floors_diagram().splitlines():
        assert line.rstrip() in __doc__, f"the docstring's diagram is out of date; draw it as:\n{floors_diagram()}"


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_every_floor_entry_exists(unit):
    """A unit named here that no longer exists is a stale entry (renames must update the map)."""
    if unit == "study_app":
        assert (ROOT / "study_app").is_dir()
    else:
        assert (PACKAGE / f"{unit}.py").exists() or (PACKAGE / unit).is_dir()


@pytest.mark.parametrize("module", sorted(MODULE_FLOORS))
def test_every_module_floor_entry_exists(module):
    assert (PACKAGE / f"{module.replace('.', '/')}.py").exists()


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
