"""Listening copies: loudness on the study's target, true peak under the ceiling, the source's length;
measured on the copies themselves, decoded (what a browser plays)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from sonieval.audio import decode_audio_bytes, read_audio
from sonieval.gallery import make_copy, read_sound_file
from sonieval.gallery.copies import COPY_FORMAT, LOUDNESS_TOLERANCE_LU, CopyFormat, copy_key
from sonieval.loudness import (
    CEILING_DBTP,
    LIMITED_BY_TRUE_PEAK,
    REACHED,
    TARGET_LUFS,
    LevelSpec,
    integrated_loudness,
    to_db,
    true_peak,
)
from sonieval.tables import resolve_table_path

LU = 0.5  # the bound: a copy within 0.5 LU of its aim


def _page_data(gallery):
    html = (gallery / "index.html").read_text(encoding="utf-8")
    start = html.index('<script type="application/json" id="gallery-data">') + len(
        '<script type="application/json" id="gallery-data">'
    )
    return json.loads(html[start : html.index("</script>", start)].replace("<\\/", "</"))


def _decoded(gallery, key):
    got, data = read_sound_file(gallery / "sounds" / f"{key}.js")
    assert got == key
    return decode_audio_bytes(data)


def test_every_copy_is_on_its_rows_level_under_the_ceiling_and_as_long_as_its_source(built):
    gallery = built.results / "gallery"
    data = _page_data(gallery)
    son = pd.read_parquet(built.results / "tables" / "sonifications.parquet").set_index(["clip_id", "system_id"])
    clips = pd.read_parquet(built.results / "tables" / "clips.parquet").set_index("clip_id")
    checked = 0
    for clip in data["clips"]:
        orig = clip["original"]
        x, rate = _decoded(gallery, orig["k"])
        row_level = integrated_loudness(x, rate)  # the original's copy sets its row's level
        assert abs(row_level - TARGET_LUFS) <= LU  # these tones reach the study's target under the ceiling
        pairs = [(orig, clips.loc[clip["id"], "path"])]
        pairs += [
            (c, resolve_table_path(son.loc[(clip["id"], s["id"]), "path"], built.results))
            for s, c in zip(data["systems"], clip["cells"])
        ]
        for cell, source in pairs:
            y, rate = _decoded(gallery, cell["k"])
            src, src_rate, _ = read_audio(source)
            assert rate == src_rate == 44_100 and len(y) == len(src)  # decodes to the source's exact length
            assert cell["s"] == pytest.approx(len(src) / src_rate, abs=1e-4)
            peak = to_db(true_peak(y))  # 4x oversampled, on the decoded copy
            assert peak <= CEILING_DBTP + 1e-6
            lufs = integrated_loudness(y, rate)
            if cell["w"] in (REACHED, "clip"):
                assert abs(lufs - row_level) <= LU, (clip["id"], cell)
            assert cell["l"] == pytest.approx(lufs, abs=0.051) and cell["p"] == pytest.approx(peak, abs=0.051)
            checked += 1
    assert checked == 3 * (1 + 7)


def test_a_copy_of_a_hot_decoded_file_is_brought_under_the_ceiling(built):
    """A decoded sonification above full scale (the real demo's codec/mel ceiling peaked at +7.8 dBFS) and a
    control 30 dB too quiet both become copies at the target, the hot one's true peak under -1 dBTP."""
    son = pd.read_parquet(built.results / "tables" / "sonifications.parquet")
    path = resolve_table_path(son.loc[son["control"] == "ceiling", "path"].iloc[0], built.results)
    x, rate, _ = read_audio(path)
    spec = LevelSpec()
    hot = x * (10 ** (7.8 / 20) / np.abs(x).max())  # peak +7.8 dBFS
    quiet = x * (10 ** (-45 / 20) / np.sqrt(np.mean(x.astype(np.float64) ** 2)))  # -45 dBFS RMS
    for source in (hot, quiet):
        copy = make_copy(source.astype(np.float32), rate, spec)
        y, r = decode_audio_bytes(copy.data)
        assert len(y) == len(source) and r == rate
        assert to_db(true_peak(y)) <= spec.ceiling_dbtp + 1e-6
        lufs = integrated_loudness(y, r)
        assert copy.limited in (REACHED, LIMITED_BY_TRUE_PEAK)
        if copy.limited == REACHED:
            assert abs(lufs - spec.target_lufs) <= LOUDNESS_TOLERANCE_LU + 1e-6
        assert copy.lufs == pytest.approx(lufs)
    assert np.max(np.abs(read_audio(path)[0])) == pytest.approx(np.max(np.abs(x)))  # the decoded file untouched


def test_a_copy_is_keyed_by_its_source_its_level_the_rules_and_the_format():
    base = copy_key("a" * 64, -26.0, LevelSpec(), COPY_FORMAT)
    assert base == copy_key("a" * 64, -26.001, LevelSpec(), COPY_FORMAT)  # levels to 0.01 LU
    others = {
        copy_key("b" * 64, -26.0, LevelSpec(), COPY_FORMAT),
        copy_key("a" * 64, -27.0, LevelSpec(), COPY_FORMAT),
        copy_key("a" * 64, None, LevelSpec(), COPY_FORMAT),
        copy_key("a" * 64, -26.0, LevelSpec(target_lufs=-23.0), COPY_FORMAT),
        copy_key("a" * 64, -26.0, LevelSpec(), CopyFormat(compression_level=0.5)),
    }
    assert base not in others and len(others) == 5
