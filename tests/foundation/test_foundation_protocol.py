"""Protocol validation: one error line naming the file, the key path and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from sonieval.errors import ProtocolError
from sonieval.protocol import load_protocol

REPO = Path(__file__).resolve().parents[2]


def test_minimal_protocol_defaults(write_protocol, tmp_path):
    proto = load_protocol(write_protocol({"name": "mini"}))
    assert proto.data.esc50 == "auto" and proto.data.split.seed == 42
    assert proto.data.listening_set.n_clips == 77
    assert proto.results_path == Path("results") / "mini"


@pytest.mark.parametrize(
    "data, expected",
    [
        (
            {"name": "x", "data": {"split": {"train": 0.8, "validation": 0.1, "test": 0.2}}},
            "data.split: train + validation + test must be 1",
        ),
        ({"name": "x", "data": {"clip_seconds": "five"}}, "data.clip_seconds"),
        ({"name": "x", "data": {"folds": [7]}}, "data.folds: folds must be a non-empty list of ESC-50 folds 1..5"),
        ({"name": "x", "gates": {"variants": ["LIN-X"]}}, "unknown gate variant 'LIN-X'"),
        ({"name": "x", "data": {"listening_set": {"n_clips": 0}}}, "data.listening_set.n_clips"),
        ({"name": "x", "dat": {}}, "dat: unknown key; did you mean 'data'?"),
        ({"data": {}}, "name: required key is missing"),
    ],
)
def test_bad_values_are_one_line(write_protocol, data, expected):
    path = write_protocol(data)
    with pytest.raises(ProtocolError) as info:
        load_protocol(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: ") and expected in msg and "\n" not in msg


def test_not_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ProtocolError, match="not valid YAML at line"):
        load_protocol(bad)
    with pytest.raises(ProtocolError, match="protocol file not found"):
        load_protocol(tmp_path / "absent.yaml")


def test_relative_esc50_path_resolves_against_protocol_folder(tmp_path, write_protocol):
    (tmp_path / "copy").mkdir()
    proto = load_protocol(write_protocol({"name": "rel", "data": {"esc50": "copy"}}))
    assert proto.resolve(proto.data.esc50) == (tmp_path / "copy").resolve()


@pytest.mark.parametrize("name", ["demo.yaml", "thesis.yaml"])
def test_shipped_protocols_validate(name):
    path = REPO / "protocols" / name
    if not path.exists():
        pytest.fail(f"protocols/{name} is missing from the repository", pytrace=False)
    proto = load_protocol(path, check_paths=False)
    assert proto.name
