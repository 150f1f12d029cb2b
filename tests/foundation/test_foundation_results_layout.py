"""The results folder is one object (sonieval.results_layout): no other module of sonieval or the app spells a
results-folder path segment, and a folder made before the run ledger was renamed (``manifest.sqlite``) still
resumes.

The source check parses every module: a segment literal is flagged where it builds a path (``x / "tables"``,
``Path("study")``, ``os.path.join(x, "cache")``, ``"tables/clips.parquet"``, an f-string's ``/tables/``), where it
gets a second name (``GALLERY_DIR = "gallery"``), and, for the names no other text uses (``manifest.sqlite``,
``data_source.json``, ``report_SIMULATED`` ...), wherever it appears as a value. Prose (docstrings, help text,
messages that mention ``<results>/data_source.json``) is not flagged."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from sonieval.data.esc50 import prepare_clips
from sonieval.ledger import open_ledger
from sonieval.protocol import load_protocol
from sonieval.results_layout import LEDGER_NAME, OLD_LEDGER_NAME, ResultsLayout, ledger_path

ROOT = Path(__file__).resolve().parents[2]
LAYOUT_MODULE = ROOT / "sonieval" / "results_layout.py"

FOLDERS = {
    "tables",
    "scores",
    "sonifications",
    "checkpoints",
    "cache",
    "study",
    "splits",
    "training",
    "figures",
    "gallery",
    "report",
    "parts",
    "ledgers",
    "finetuned",
    "embeddings",
    "latents",
}
# names that mean nothing but a results-folder path: flagged wherever they are a value
DISTINCT = {
    "manifest.sqlite",
    "ledger.sqlite",
    "data_source.json",
    "run_failures.csv",
    "report_SIMULATED",
    "synthetic-esc50",
    "metric_embeddings",
}
SEGMENTS = FOLDERS | DISTINCT
_ALTERNATIVES = "|".join(re.escape(s) for s in sorted(SEGMENTS))
_PREFIXED = re.compile(rf"^(?:{_ALTERNATIVES})/")
_IN_FSTRING = re.compile(rf"(?:^|/)(?:{_ALTERNATIVES})(?:/|$)")
_PATH_CALLS = {"Path", "PurePath", "PosixPath", "join", "joinpath"}


def _text(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring constants (prose, not paths)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and _text(first.value) is not None:
                out.add(id(first.value))
    return out


def _call_name(node: ast.Call) -> str:
    f = node.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""


def segment_literals(source: str, filename: str = "<source>") -> list[tuple[int, str, str]]:
    """(line, literal, how it is used) for every results-folder segment spelled in ``source``."""
    tree = ast.parse(source, filename=filename)
    prose = _docstrings(tree)
    prose |= {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for part in node.values}
    found: list[tuple[int, str, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            for side in (node.left, node.right):
                if _text(side) in SEGMENTS:
                    found.append((side.lineno, _text(side), "joined into a path with /"))
        elif isinstance(node, ast.Call) and _call_name(node) in _PATH_CALLS:
            found += [
                (a.lineno, _text(a), f"passed to {_call_name(node)}()") for a in node.args if _text(a) in SEGMENTS
            ]
        elif isinstance(node, ast.Assign | ast.AnnAssign) and _text(node.value) in FOLDERS:
            found.append((node.lineno, _text(node.value), "given a second name"))
        elif isinstance(node, ast.JoinedStr):
            for part in node.values:
                if _text(part) and "/" in _text(part) and _IN_FSTRING.search(_text(part)):
                    found.append((part.lineno, _text(part), "spelled inside an f-string path"))
        elif _text(node) is not None and id(node) not in prose:
            if _text(node) in DISTINCT:
                found.append((node.lineno, _text(node), "spelled as a value"))
            elif _PREFIXED.match(_text(node)):
                found.append((node.lineno, _text(node), "spelled as a relative path"))
    return found


def _sources() -> list[Path]:
    files = [*(ROOT / "sonieval").rglob("*.py"), *(ROOT / "study_app").rglob("*.py")]
    return sorted(p for p in files if p != LAYOUT_MODULE)


def test_no_module_but_the_layout_spells_a_results_folder_path():
    hits = [
        f"{path.relative_to(ROOT)}:{line}: {literal!r} {how}"
        for path in _sources()
        for line, literal, how in segment_literals(path.read_text(encoding="utf-8"), str(path))
    ]
    assert not hits, "results-folder paths spelled outside sonieval/results_layout.py:\n" + "\n".join(hits)


@pytest.mark.parametrize(
    "code",
    [
        'p = results / "tables" / "clips.parquet"',
        'p = proto.results_path / "manifest.sqlite"',
        'p = Path("study")',
        'p = os.path.join(root, "cache")',
        'p = root.joinpath("gallery")',
        'GALLERY_DIR = "gallery"',
        'RELPATH = "scores/scores.parquet"',
        'print(f"{results}/sonifications/{system}")',
        'NAME = "data_source.json"',
        'kind = {"embedding": "x"}; folder = "report_SIMULATED"',
    ],
)
def test_the_source_check_catches_each_way_of_spelling_a_path(code):
    assert segment_literals(code), code


@pytest.mark.parametrize(
    "code",
    [
        '"""Writes <results>/tables/clips.parquet and data_source.json."""',
        'read_table(path, "scores")',
        'Stage("gallery", run_gallery, "the page")',
        'help_text = "pinned in <results>/data_source.json"',
        'x = {"study": 1}["study"]',
    ],
)
def test_the_source_check_leaves_prose_and_table_kinds_alone(code):
    assert not segment_literals(code), code


def test_the_layout_names_every_path_of_a_results_folder(tmp_path):
    layout = ResultsLayout(tmp_path, cache_root=tmp_path / "elsewhere")
    rel = {
        name: path.relative_to(tmp_path).as_posix()
        for name, path in {
            "ledger": layout.ledger,
            "data_source": layout.data_source,
            "clips": layout.table("clips"),
            "scores": layout.stage_table("scores"),
            "ratings": layout.stage_table("ratings"),
            "sonification": layout.sonification("sys", "clip"),
            "checkpoint": layout.checkpoint_dir("enc", "LIN", "0.001", "none"),
            "cache": layout.cache.model("latent", "k"),
            "gallery": layout.gallery_page,
            "shard": layout.shard_ledger("sonify", (1, 4)),
        }.items()
    }
    assert rel == {
        "ledger": "ledger.sqlite",
        "data_source": "data_source.json",
        "clips": "tables/clips.parquet",
        "scores": "scores/scores.parquet",
        "ratings": "study/ratings.parquet",
        "sonification": "sonifications/sys/clip.wav",
        "checkpoint": "checkpoints/enc/LIN/lr0.001/none",
        "cache": "elsewhere/latents/k",
        "gallery": "gallery/index.html",
        "shard": "ledgers/sonify-shard-1-of-4.sqlite",
    }
    with pytest.raises(KeyError, match="no table 'scores' in tables/"):
        layout.table("scores")


def test_ledger_path_prefers_the_new_name_and_reads_an_old_folder(tmp_path):
    assert ledger_path(tmp_path) == tmp_path / LEDGER_NAME  # a new folder
    (tmp_path / OLD_LEDGER_NAME).write_bytes(b"")
    assert ledger_path(tmp_path) == tmp_path / OLD_LEDGER_NAME  # made before the rename
    (tmp_path / LEDGER_NAME).write_bytes(b"")
    assert ledger_path(tmp_path) == tmp_path / LEDGER_NAME  # both: the new one wins


def test_an_old_results_folder_resumes_from_its_manifest_file(tiny_esc50, write_protocol, tmp_path):
    proto = load_protocol(
        write_protocol({"name": "old", "results_dir": str(tmp_path / "res"), "data": {"esc50": str(tiny_esc50)}})
    )
    results = proto.results_path
    with open_ledger(results) as ledger:
        first = prepare_clips(proto, ledger, progress=False)
    assert ledger.path == results / LEDGER_NAME and not (results / OLD_LEDGER_NAME).exists()
    assert first.attrs["batch"].startswith("8 clips made, 0 already done")
    # the folder as an earlier version left it: the same ledger under its old name
    (results / LEDGER_NAME).rename(results / OLD_LEDGER_NAME)
    for companion in ("-wal", "-shm"):
        assert not (results / (LEDGER_NAME + companion)).exists()  # closed cleanly: nothing left beside it
    with open_ledger(results) as ledger:
        again = prepare_clips(proto, ledger, progress=False)
        assert len(ledger.table("clips")) == 8
    assert ledger.path == results / OLD_LEDGER_NAME and not (results / LEDGER_NAME).exists()
    assert again.attrs["batch"].startswith("0 clips made, 8 already done")
