"""Packaging matches the architecture (issue 12): a lean core, extras for the rest.

- The core install (``pip install sonieval``, no extras) computes KAD on two folders and a stats
  report on two DataFrames, and has no transformers, descript-audio-codec, Streamlit, SQLAlchemy or
  TensorBoard: a fresh venv that sees only the core distributions (and what they require) of this
  project's environment, linked in rather than downloaded, gets the wheel installed and runs
  ``core_install_check.py``.
- Every third-party import of sonieval is declared: the core modules' in ``dependencies``, the
  rest in an extra (``sonieval.extras`` says which).
- The wheel ships the study app inside the package, and ``app_path`` finds it in the installed layout.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from sonieval.extras import EXTRA_OF_MODULE

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DEPENDENCIES = PYPROJECT["project"]["dependencies"]
EXTRAS = PYPROJECT["project"]["optional-dependencies"]

# import name -> distribution name, where they differ
DIST_OF_IMPORT = {
    "yaml": "PyYAML",
    "sqlalchemy": "SQLAlchemy",
    "dac": "descript-audio-codec",
    "audiotools": "descript-audiotools",
    "sklearn": "scikit-learn",
    "PIL": "pillow",
}
# installed by make setup with --no-deps only: their declared pins contradict the stack (nodeps.txt says why)
NODEPS = {
    canonicalize_name(line.split("==")[0])
    for line in (ROOT / "requirements" / "nodeps.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
}
# runtime needs that are not imports: pandas writes Parquet through pyarrow, Markdown through tabulate
IMPLICIT_CORE = {"pyarrow", "tabulate"}
# sonieval packages whose modules may import an extra at module level (the rest import extras lazily)
EXTRA_PACKAGES = {"study": "study"}


def _names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def _module_imports(path: Path) -> tuple[set[str], set[str]]:
    """(top-level imports at module level, imports inside functions) of one file, third-party only."""
    tree = ast.parse(path.read_text())
    top, lazy = set(), set()
    module_level = set()
    for node in tree.body:
        nodes = ast.walk(node) if isinstance(node, (ast.If, ast.Try)) else [node]
        module_level.update(id(n) for n in nodes)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            root = name.split(".")[0]
            if root in sys.stdlib_module_names or root in ("sonieval", "study_app", "__future__"):
                continue
            (top if id(node) in module_level else lazy).add(root)
    return top, lazy


def _dist(import_name: str) -> str:
    return canonicalize_name(DIST_OF_IMPORT.get(import_name, import_name))


def test_every_import_is_declared_and_the_core_imports_only_core_distributions():
    core, everything = _names(DEPENDENCIES), _names(DEPENDENCIES)
    for requirements in EXTRAS.values():
        everything |= {n for n in _names(requirements) if n != "sonieval"}
    everything |= NODEPS
    undeclared, heavy_at_top = [], []
    for path in sorted([*(ROOT / "sonieval").rglob("*.py"), *(ROOT / "study_app").rglob("*.py")]):
        rel = path.relative_to(ROOT)
        top, lazy = _module_imports(path)
        for name in sorted(top | lazy):
            if _dist(name) not in everything:
                undeclared.append(f"{rel}: {name}")
        in_extra_package = rel.parts[0] == "study_app" or (len(rel.parts) > 2 and rel.parts[1] in EXTRA_PACKAGES)
        for name in sorted(top):
            if _dist(name) not in core and not in_extra_package:
                heavy_at_top.append(f"{rel}: {name} (declared in an extra, imported at module level)")
    assert not undeclared, "imports no dependency or extra declares:\n" + "\n".join(undeclared)
    assert not heavy_at_top, "a core module imports an extra at import time (move it into the function):\n" + "\n".join(
        heavy_at_top
    )


def test_the_extras_map_names_declared_extras():
    """sonieval.extras tells users which extra to install: each must exist and declare the import."""
    for module, extra in EXTRA_OF_MODULE.items():
        assert extra in EXTRAS, f"{module}: extra {extra!r} is not in pyproject.toml"
        assert _dist(module) in _names(EXTRAS[extra]), f"{module}: not declared in the {extra!r} extra"
    assert _names(DEPENDENCIES) >= {canonicalize_name(n) for n in IMPLICIT_CORE}


# ----------------------------------------------------------------------------- the core install


def _closure(requirements: list[str]) -> list[md.Distribution]:
    """The installed distributions the requirements name, and theirs, recursively (no extras)."""
    seen: dict[str, md.Distribution] = {}
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        dist = md.distribution(req.name)
        seen[name] = dist
        todo += [Requirement(r) for r in (dist.requires or [])]
    return list(seen.values())


def _top_level_entries(dist: md.Distribution) -> set[str]:
    """What a distribution puts at the top of site-packages (packages, modules, its dist-info)."""
    entries = set()
    for f in dist.files or []:
        first = f.parts[0]
        if first.startswith("..") or first == "__pycache__" or first.endswith(".data"):
            continue
        entries.add(first)
    return entries


def _link_core(site: Path, links: Path) -> list[str]:
    """Symlink the core closure's entries into ``links`` and put that folder on the venv's path."""
    links.mkdir()
    names = []
    for dist in _closure(DEPENDENCIES):
        names.append(dist.metadata["Name"])
        base = Path(dist.locate_file(""))
        for entry in _top_level_entries(dist):
            if (base / entry).exists() and not (links / entry).exists():
                (links / entry).symlink_to(base / entry)
    (site / "sonieval-core.pth").write_text(str(links) + "\n")
    return sorted(names)


def _copy_sources(dest: Path) -> Path:
    """The files a fresh clone builds the wheel from (building in place would write build/ into the tree)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("sonieval", "study_app"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = _copy_sources(tmp_path_factory.mktemp("src"))
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "-w",
            str(out),
            str(src),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    (found,) = out.glob("sonieval-*.whl")
    return found


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory, wheel) -> Path:
    root = tmp_path_factory.mktemp("core")
    venv = root / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (site,) = (venv / "lib").glob("python3*/site-packages")
    _link_core(site, root / "core-links")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            "--disable-pip-version-check",
            str(wheel),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return venv


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(MPLBACKEND="Agg", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return env


@pytest.mark.slow
def test_core_install_computes_kad_on_folders_and_a_report_without_the_extras(core_venv, tmp_path):
    proc = subprocess.run(
        [str(core_venv / "bin" / "python"), str(ROOT / "tests" / "foundation" / "core_install_check.py")],
        cwd=tmp_path,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["extras_present"] == [], f"extras visible in the core venv: {result['extras_present']}"
    assert result["import_failures"] == [], "modules that need an extra at import:\n" + "\n".join(
        result["import_failures"]
    )
    assert str(core_venv) in result["sonieval_file"]  # the installed wheel, not the checkout
    assert result["kad"] > 1.0  # sines far apart: KAD well above the noise floor of two like sets
    assert result["report_tables"] > 0


def test_the_core_venv_really_lacks_an_extra(core_venv, tmp_path):
    """The check above can fail: the venv's python cannot import transformers, this one can."""
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('transformers') is not None)"
    assert subprocess.run([sys.executable, "-c", probe]).returncode == 1
    assert (
        subprocess.run([str(core_venv / "bin" / "python"), "-c", probe], cwd=tmp_path, env=_clean_env()).returncode == 0
    )


# ----------------------------------------------------------------------------- the study app in a wheel


def test_the_wheel_ships_the_app_inside_the_package_and_serve_finds_it(wheel, tmp_path):
    names = zipfile.ZipFile(wheel).namelist()
    assert "sonieval/_study_app/app.py" in names
    assert "sonieval/study/player/frontend/player.js" in names
    assert not [n for n in names if n.startswith("study_app/")], "study_app must not install as a top-level package"
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    code = "from sonieval.study.server import app_path; print(app_path())"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**_clean_env(), "PYTHONPATH": str(target)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert Path(proc.stdout.strip()) == target / "sonieval" / "_study_app" / "app.py"
