"""Building a results folder's gallery: what the page holds, reruns that reuse, one-line errors, and the
links from the leaderboard and the report."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from test_gallery_copies import _page_data

from sonieval.cli import main as cli_main
from sonieval.errors import SonievalError
from sonieval.files import sha256_file
from sonieval.gallery import build_gallery, system_anchor
from sonieval.tables import write_table

TRAINED = "ast/LIN/lr0.01/e1/transpose/none"
CEILING = "codec/mel/lr0.0/e0/none/codec"


def _files(gallery):
    return {p.relative_to(gallery).as_posix(): p.stat().st_mtime_ns for p in gallery.rglob("*") if p.is_file()}


def test_the_page_holds_every_clip_and_system_grouped_with_measures_and_marks(built):
    data = _page_data(built.results / "gallery")
    assert [c["id"] for c in data["clips"]] == ["test-08-2", "test-09-0", "test-10-1"]
    ids = [s["id"] for s in data["systems"]]
    # each trained gate followed by its controls; the codec's own reconstruction ends the codec's group
    assert ids == [
        "ast/LIN/lr0.01/e1/reshape/none",
        "ast/LIN.shuffled/lr0.01/e1/reshape/none",
        "ast/LIN.untrained/lr0.0/e0/reshape/none",
        TRAINED,
        "ast/LIN.shuffled/lr0.01/e1/transpose/none",
        "ast/LIN.untrained/lr0.0/e0/transpose/none",
        CEILING,
    ]
    trained = data["systems"][3]
    assert trained["controls"] == {"shuffled": 4, "untrained": 5, "ceiling": 6} and trained["mark"] == "‡"
    assert {s["group"] for s in data["systems"]} == {"ast · input · mel", "mel · ceiling"}
    assert {f["name"] for f in data["facets"]} == {"alignment", "control", "lr", "epoch"}
    assert [m["id"] for m in data["measures"]] == ["logmel_l1", "envelope_correlation"]
    items = pd.read_parquet(built.results / "scores" / "item_scores.parquet")
    row = items[(items["system_id"] == TRAINED) & (items["clip_id"] == "test-09-0")].set_index("metric")["value"]
    cell = data["clips"][1]["cells"][3]
    assert cell["m"] == [
        pytest.approx(row["logmel_l1"], abs=1e-4),
        pytest.approx(row["envelope_correlation"], abs=1e-4),
    ]
    ratings = pd.read_parquet(built.results / "study" / "ratings.parquet")
    mine = ratings[(ratings["system_id"] == TRAINED) & (ratings["clip_id"] == "test-09-0")]
    assert cell["r"]["audio"] == [pytest.approx(mine.loc[mine["attribute"] == "audio", "mark"].mean()), 2]
    assert data["clips"][1]["original"]["r"] == {"audio": [4.5, 2]}  # the hidden reference's marks
    assert data["meta"]["marks"]["simulated"] is True  # shown as SIMULATED on the page
    assert data["meta"]["copy"]["format"].startswith("MP3") and data["meta"]["copy"]["kbps"] > 30


def test_a_rerun_reuses_everything_and_writes_the_same_page(own_copy):
    """A copy of the folder elsewhere (keys are contents, not paths) and a rerun there: nothing is made again."""
    gallery = own_copy.results / "gallery"
    before = _files(gallery)
    moved = build_gallery(own_copy.results, workers=1)
    assert (moved.made, moved.reused, moved.n_cells) == (0, 24, 24)
    page = (gallery / "index.html").read_bytes()
    again = build_gallery(own_copy.results, workers=1)
    assert (again.made, again.reused) == (0, 24)
    after = _files(gallery)
    assert set(after) == set(before)
    assert all(after[f] == before[f] for f in after if f.startswith(("sounds/", "thumbs/")))  # not rewritten
    assert (gallery / "index.html").read_bytes() == page


def test_a_changed_source_is_made_again_and_a_removed_system_leaves_no_files(own_copy):
    results = own_copy.results
    son = pd.read_parquet(results / "tables" / "sonifications.parquet")
    wavs = {p: sha256_file(results / p) for p in son["path"]}
    cell = (son["system_id"] == TRAINED) & (son["clip_id"] == "test-09-0")
    son.loc[cell, "sha256"] = "0" * 64  # as if it had been sonified again (the table's sha256 is the key)
    son = son[son["system_id"] != "ast/LIN.untrained/lr0.0/e0/reshape/none"]
    write_table(son, results / "tables" / "sonifications.parquet", "sonifications")
    before = {p.name for p in (results / "gallery" / "sounds").iterdir()}
    got = build_gallery(results, workers=1)
    assert (got.made, got.reused, got.n_systems) == (1, 20, 6)
    after = {p.name for p in (results / "gallery" / "sounds").iterdir()}
    assert len(after) == 21 and len(before - after) == 4 and len(after - before) == 1  # 3 removed + 1 replaced
    assert len(list((results / "gallery" / "thumbs").iterdir())) == 21
    assert {p: sha256_file(results / p) for p in son["path"]} == {p: wavs[p] for p in son["path"]}  # untouched


def test_a_failed_sonification_is_a_cell_that_says_why(own_copy):
    results = own_copy.results
    son = pd.read_parquet(results / "tables" / "sonifications.parquet")
    cell = (son["system_id"] == TRAINED) & (son["clip_id"] == "test-10-1")
    son.loc[cell, ["status", "error"]] = ["failed", "decode: out of memory"]
    write_table(son, results / "tables" / "sonifications.parquet", "sonifications")
    got = build_gallery(results, workers=1)
    assert got.missing == [f"test-10-1 / {TRAINED}: decode: out of memory"]
    assert any("no sound for test-10-1" in line for line in got.lines())
    data = _page_data(results / "gallery")
    assert data["clips"][2]["cells"][3] == {"e": "decode: out of memory"}


def test_without_sonifications_the_command_says_which_table_and_how_to_make_it(built, tmp_path, capsys):
    (tmp_path / "results" / "tables").mkdir(parents=True)
    assert cli_main(["gallery", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "clips table not found" in err and "sonieval" in err
    import shutil

    shutil.copy(built.results / "tables" / "clips.parquet", tmp_path / "results" / "tables" / "clips.parquet")
    assert cli_main(["gallery", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "sonifications table not found" in err and "sonieval sonify" in err
    with pytest.raises(SonievalError, match="not a results folder"):
        build_gallery_cli(tmp_path)
    assert cli_main(["gallery", str(tmp_path)]) == 2
    assert "no tables/ inside" in capsys.readouterr().err


def build_gallery_cli(folder):
    from sonieval.commands.gallery import _results_and_spec

    return _results_and_spec(str(folder))


def test_the_command_takes_a_protocol_and_prints_the_page_to_open(own_copy, capsys):
    assert cli_main(["gallery", str(own_copy.protocol), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "3 clips x 7 systems, 24 sounds (0 made, 24 reused)" in out
    assert f"open {(own_copy.results / 'gallery' / 'index.html').resolve().as_uri()}" in out


def test_leaderboard_rows_link_to_their_gallery_columns(built):
    page = (built.results / "scores" / "leaderboard.html").read_text(encoding="utf-8")
    links = set(re.findall(r'<a href="\.\./gallery/index\.html#([^"]+)"><code>([^<]+)</code></a>', page))
    systems = set(pd.read_parquet(built.results / "tables" / "sonifications.parquet")["system_id"])
    assert {sid for _, sid in links} == systems  # every system's row links (the ranked table names them all)
    assert all(anchor == system_anchor(sid) for anchor, sid in links)
    assert "(`../gallery/index.html`" in (built.results / "scores" / "leaderboard.md").read_text(encoding="utf-8")


def test_the_report_links_each_rated_system_to_its_examples(built, tmp_path):
    from sonieval.stats import report

    ratings, scores = built.results / "study" / "ratings.parquet", built.results / "scores" / "scores.parquet"
    out = built.results / "report"
    report(
        ratings,
        scores,
        item_scores=built.results / "scores" / "item_scores.parquet",
        out_dir=out,
        n_boot=50,
        figures=False,
    )
    page = (out / "report.html").read_text(encoding="utf-8")
    linked = re.findall(r"<li><a href='\.\./gallery/index\.html#([^']+)'>([^<]+)</a></li>", page)
    rated = set(pd.read_parquet(ratings).query("role == 'sonification'")["system_id"])
    assert {sid for _, sid in linked} == rated and len(linked) == 7
    assert all(anchor == system_anchor(sid) for anchor, sid in linked)
    elsewhere = tmp_path / "report"  # a report written outside a results folder has no gallery to link
    report(ratings, scores, out_dir=elsewhere, n_boot=50, figures=False)
    assert "gallery/index.html" not in (elsewhere / "report.html").read_text(encoding="utf-8")


def test_as_a_stage_of_a_run_it_builds_or_says_which_extra_it_lacks(own_copy, monkeypatch):
    import importlib.util

    from sonieval.gallery.build import GallerySkipped, run_gallery
    from sonieval.protocol import load_protocol

    proto = load_protocol(own_copy.protocol)
    done = run_gallery(proto, None)  # called as the run's stages are: (protocol, ledger)
    assert (done.made, done.reused, done.notes) == (0, 24, [])
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pyloudnorm" else real(name, *a))
    skipped = run_gallery(proto, None)
    assert isinstance(skipped, GallerySkipped)
    assert skipped.notes == ["gallery skipped: sonieval gallery needs the 'study' extra: pip install 'sonieval[study]'"]
