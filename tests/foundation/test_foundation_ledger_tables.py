"""Run ledger (resumability) and the tables contract."""

from __future__ import annotations

import pandas as pd
import pytest

from sonieval.errors import AudioError, DataError
from sonieval.files import write_text_atomic
from sonieval.ledger import ItemOutcome, LedgerItem, RunLedger
from sonieval.tables import make_system_id, parse_system_id, read_table, write_table


def _items(keys, **inputs):
    return [LedgerItem(key=k, inputs={"k": k, **inputs}) for k in keys]


def test_rerun_skips_done_items(tmp_path):
    calls = []
    with RunLedger(tmp_path / "m.sqlite") as m:
        r1 = m.run_batch("s", _items("abc"), lambda it: calls.append(it.key), progress=False)
        r2 = m.run_batch("s", _items("abc"), lambda it: calls.append(it.key), progress=False)
    assert r1.done == list("abc") and r2.skipped == list("abc") and r2.done == []
    assert calls == list("abc")


def test_failed_item_is_recorded_others_continue_then_retried(tmp_path):
    broken = {"b"}

    def fn(item):
        if item.key in broken:
            raise AudioError("cannot read", path=f"/x/{item.key}.wav")

    with RunLedger(tmp_path / "m.sqlite") as m:
        r1 = m.run_batch("s", _items("abc"), fn, progress=False)
        assert r1.done == ["a", "c"] and r1.failed == {"b": "/x/b.wav: cannot read"}
        assert m.get("s", "b")["status"] == "failed" and m.get("s", "b")["error"] == "/x/b.wav: cannot read"
        broken.clear()
        r2 = m.run_batch("s", _items("abc"), fn, progress=False)
        assert r2.done == ["b"] and r2.skipped == ["a", "c"]
        assert m.get("s", "b")["status"] == "done" and m.failures("s").empty


def test_unexpected_exception_is_recorded_as_one_line(tmp_path):
    with RunLedger(tmp_path / "m.sqlite") as m:
        r = m.run_batch("s", _items("a"), lambda it: 1 / 0, progress=False)
    assert r.failed == {"a": "ZeroDivisionError: division by zero"}


def test_item_left_running_by_a_killed_run_is_redone(tmp_path):
    path = tmp_path / "m.sqlite"
    with RunLedger(path) as m:
        m.run_batch("s", _items("a"), lambda it: None, progress=False)
        m.record("s", "b", "running", inputs={"k": "b"})  # the process died while making b
    calls = []
    with RunLedger(path) as m:
        r = m.run_batch("s", _items("ab"), lambda it: calls.append(it.key), progress=False)
        assert m.get("s", "b")["status"] == "done"
    assert calls == ["b"] and r.skipped == ["a"]


def test_changed_inputs_are_redone(tmp_path):
    calls = []
    with RunLedger(tmp_path / "m.sqlite") as m:
        m.run_batch("s", _items("ab", lr=0.01), lambda it: calls.append(it.key), progress=False)
        r = m.run_batch("s", _items("ab", lr=0.005), lambda it: calls.append(it.key), progress=False)
    assert r.done == ["a", "b"] and calls == ["a", "b", "a", "b"]


def test_missing_output_file_is_redone(tmp_path):
    out = tmp_path / "out"

    def fn(item):
        return ItemOutcome(path=write_text_atomic(out / f"{item.key}.txt", item.key))

    with RunLedger(tmp_path / "m.sqlite") as m:
        m.run_batch("s", _items("ab"), fn, progress=False)
        assert len(m.get("s", "a")["sha256"]) == 64
        (out / "a.txt").unlink()
        r = m.run_batch("s", _items("ab"), fn, progress=False)
    assert r.done == ["a"] and r.skipped == ["b"]


def test_read_table_names_missing_column(tmp_path):
    df = pd.DataFrame({"clip_id": ["x"], "filename": ["x.wav"]})
    path = tmp_path / "clips.parquet"
    df.to_parquet(path)
    with pytest.raises(DataError) as info:
        read_table(path, "clips")
    msg = str(info.value)
    assert msg.startswith(f"{path}: clips table lacks column(s) fold, target, category")
    with pytest.raises(DataError, match="table not found"):
        read_table(tmp_path / "nope.parquet", "clips")


def test_write_table_checks_and_round_trips(tmp_path):
    df = pd.DataFrame({"system_id": ["s"], "clip_id": ["c"], "metric": ["kad"], "embedding": ["e"], "value": [1.5]})
    path = write_table(df, tmp_path / "item_scores.csv", kind="item_scores")
    pd.testing.assert_frame_equal(read_table(path, "item_scores"), df)
    with pytest.raises(DataError, match="lacks column"):
        write_table(df.drop(columns=["value"]), tmp_path / "x.parquet", kind="item_scores")
    assert not (tmp_path / "x.parquet").exists()


def test_system_id_round_trip():
    sid = make_system_id("hubert", "LIN-C", 0.005, 50, "transpose", "minmax")
    assert sid == "hubert/LIN-C/lr0.005/e50/transpose/minmax"
    assert parse_system_id(sid).lr == 0.005 and parse_system_id(sid).system_id == sid
    with pytest.raises(DataError, match="not of the form"):
        parse_system_id("hubert/LIN-C")


def test_system_ids_name_the_layer_in_the_encoder_slot():
    from sonieval.models.layers import layer_label, parse_layer_label
    from sonieval.tables import encoder_slot, system_parts

    sid = make_system_id(encoder_slot("hubert", "layer6"), "LIN.shuffled.s43", 0.005, 50, "grid", "none")
    assert sid == "hubert.layer6/LIN.shuffled.s43/lr0.005/e50/grid/none" and parse_system_id(sid).system_id == sid
    parts = system_parts(sid)
    assert (parts["encoder"], parts["layer"], parts["variant"], parts["control"], parts["seed"]) == (
        "hubert",
        "layer6",
        "LIN",
        "shuffled",
        43,
    )
    # the input cut is the bare encoder name, so ids made before layers existed keep their meaning
    assert encoder_slot("hubert", "input") == encoder_slot("hubert") == "hubert"
    assert system_parts("hubert/LIN/lr0.005/e50/grid/none")["layer"] == "input"
    assert system_parts("codec/mel/lr0.0/e0/none/codec")["layer"] is None
    for bad, why in (
        ("hubert.input", "bare encoder name"),
        ("hubert.layer0", "unknown layer"),
        ("hubert.block6", "unknown layer"),
        ("hubert.layer6.x", "unknown layer"),
    ):
        with pytest.raises(DataError, match=why) as info:
            parse_system_id(f"{bad}/LIN/lr0.005/e50/grid/none")
        assert str(info.value).startswith(f"system_id '{bad}/LIN")
    # the same label grammar as the models' layers (tables sits below models and keeps its own copy)
    for layer in ("input", 1, 12):
        sid = make_system_id(encoder_slot("ast", layer_label(layer)), "LIN", 0.1, 1, "grid", "none")
        assert parse_layer_label(system_parts(sid)["layer"]) == layer
