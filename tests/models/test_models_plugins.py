"""Your own encoder without editing sonieval: the plug-in (``name: plugin, callable: module:function``) is
checked like a built-in encoder, every problem one line naming ``encoders[i].callable``, and the example of
docs/extending.md runs as written."""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from harness.readme import api_examples

from sonieval.errors import ProtocolError, SonievalError
from sonieval.models.encoders import load_encoder
from sonieval.protocol import EncoderSpec, parse_protocol

DOC = Path(__file__).resolve().parents[2] / "docs" / "extending.md"
_FILE = re.compile(r"^<!-- api-example-file: (\S+) -->\n```python\n(.*?)^```", re.M | re.S)
_YAML = re.compile(r"^<!-- api-example-yaml: (\w+) -->\n```yaml\n(.*?)^```", re.M | re.S)

GOOD = """
import numpy as np

class Enc:
    sample_rate = 8000
    frame_rate = 100.0

    def embed(self, audio):
        t = len(audio) // 80 + 1
        x = np.ones((t, 3), dtype=np.float32) * float(np.abs(audio).mean())
        return {OUT}

def make(**options):
    enc = Enc()
    for k, v in options.items():
        setattr(enc, k, v)
    return enc
"""


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(name: str, code: str) -> str:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(code))
        sys.modules.pop(name, None)
        return name

    return write


def spec(callable_: str, **kw) -> EncoderSpec:
    return EncoderSpec(name="plugin", callable=callable_, **kw)


def one_line(exc_info) -> str:
    text = str(exc_info.value)
    assert "\n" not in text and text.startswith("encoders[0].callable: "), text
    return text


def test_a_plugin_gives_layers_shapes_and_its_time_axis(plugin_dir):
    mod = plugin_dir("plug_good", GOOD.replace("{OUT}", '{"input": x, 1: 2 * x, "layer2": 3 * x}'))
    enc = load_encoder(spec(f"{mod}:make", layer="all", id="mine"), index=0)
    assert enc.system_name == "mine" and enc.num_blocks == 2 and enc.sample_rate == 8000
    audio = np.random.default_rng(0).standard_normal((2, 16000)).astype(np.float32) * 0.1
    out = enc.embed_layers(audio)
    assert [tuple(out[k].shape) for k in ("input", 1, 2)] == [(2, 201, 3)] * 3
    assert np.allclose(out[2].numpy(), 3 * out["input"].numpy())
    axis = enc.time_axis(16000, 1)
    assert (axis.grid, axis.hop_s, axis.first_center_s) == ((1, 201), 0.01, 0.0)
    assert enc.embedding_shape(4000, 2) == (51, 3)  # another length: probed at that length
    assert "mine" == spec(f"{mod}:make", id="mine").system_name and spec(f"{mod}:make").system_name == "make"


@pytest.mark.parametrize(
    "code, options, message",
    [
        (None, {}, r"cannot import module 'no_such_plugin_module' \(ModuleNotFoundError"),
        ("def other(): pass\n", {}, r"module '\w+' has no 'make'"),
        ("def make():\n    raise RuntimeError('no weights here')\n", {}, r"raised RuntimeError: no weights here"),
        ("def make():\n    return {'sample_rate': 16000, 'frame_rate': 50}\n", {}, "has no embed"),
        (GOOD.replace("{OUT}", "x"), {"frame_rate": None}, "says no frame times"),
        (GOOD.replace("{OUT}", "x"), {"sample_rate": 44.1}, "sample_rate must be a whole number of Hz"),
        (GOOD.replace("{OUT}", "x[:, 0]"), {}, r"layer input of shape \(101,\) for a 1 s clip; expected \[T, D\]"),
        (GOOD.replace("{OUT}", "'not numbers'"), {}, "as str, not an array of numbers"),
        (GOOD.replace("{OUT}", "x * np.nan"), {}, "NaN or infinite"),
        (GOOD.replace("{OUT}", '{"input": x, 2: x}'), {}, "gave layers input, layer2; expected input, then blocks"),
        (GOOD.replace("{OUT}", '{"input": x, "deep": x}'), {}, "a layer named 'deep'"),
        (GOOD.replace("{OUT}", "x"), {"frame_rate": 1000.0}, r"101 frames at 1000 per second end at 0\.1 s"),
    ],
)
def test_a_wrong_plugin_is_one_line_naming_the_field(plugin_dir, code, options, message):
    name = "no_such_plugin_module" if code is None else plugin_dir(f"plug_bad_{abs(hash(message)) % 10**8}", code)
    with pytest.raises(SonievalError) as info:
        load_encoder(spec(f"{name}:make", options=options), index=0)
    assert re.search(message, one_line(info)), str(info.value)


def test_shapes_must_follow_the_clip_length(plugin_dir):
    """A clip whose frames differ from another clip of the same length is refused when it is embedded."""
    code = GOOD.replace("{OUT}", "x if audio[0] < 10 else x[:-1]")
    enc = load_encoder(spec(f"{plugin_dir('plug_varies', code)}:make"), index=0)
    audio = np.zeros((1, 8000), dtype=np.float32)
    assert tuple(enc.embed(audio).shape) == (1, 101, 3)
    audio[0, 0] = 20.0
    with pytest.raises(SonievalError) as info:
        enc.embed(audio)
    assert "(100, 3) at layer input for a clip, (101, 3) for another of the same length" in one_line(info)


def test_the_protocol_checks_a_plugin_entry():
    for entry, message in (
        ({"name": "plugin"}, "needs callable: 'module:function'"),
        ({"name": "plugin", "callable": "nocolon"}, "write the plug-in as 'module:function'"),
        ({"name": "ast", "callable": "m:f"}, "callable and options belong to a plug-in encoder"),
        ({"name": "plugin", "callable": "m:f", "twin": True}, "twin: the random twin is a control"),
        ({"name": "plugin", "callable": "m:f", "hop": 0.01}, "takes callable and options only"),
    ):
        with pytest.raises(ProtocolError, match=re.escape(message)):
            parse_protocol({"name": "p", "encoders": [entry]})


def test_the_docs_example_runs_as_written(tmp_path, monkeypatch, capsys):
    """docs/extending.md, 'Adding an encoder': its module saved as the doc says, its protocol entry parsed, its
    Python run; it prints the shapes, the time axis, the system name and the one-line error it shows."""
    text = DOC.read_text(encoding="utf-8")
    (filename, module_code), *_ = _FILE.findall(text)
    (tmp_path / filename).write_text(module_code)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(Path(filename).stem, None)
    monkeypatch.chdir(tmp_path)
    (area, protocol_yaml), *_ = _YAML.findall(text)
    proto = parse_protocol({"name": "doc", **yaml.safe_load(protocol_yaml)})
    assert area == "encoder" and proto.encoders[0].system_name == "bands"
    (code,) = api_examples(text, "encoder")
    exec(compile(code, f"{DOC.name} (encoder example)", "exec"), {"__name__": "__doc_example__"})
    out = capsys.readouterr().out.splitlines()
    assert out[:4] == [
        "input (1, 251, 32)",
        "1 (1, 251, 32)",
        "TimeAxis(grid=(1, 251), hop_s=0.02, first_center_s=0.0)",
        "make_encoder",
    ]
    assert out[4].startswith("encoders[i].callable: embed raised ValueError") and len(out) == 5
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "__pycache__") == [filename]
