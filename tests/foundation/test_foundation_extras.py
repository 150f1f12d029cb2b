"""A command whose optional extra is missing says so in one line (sonieval.extras)."""

from __future__ import annotations

import sys

import pytest

from sonieval.cli import main
from sonieval.extras import MissingExtra, extra_for, require


def test_train_without_tensorboard_names_the_sonify_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import and find_spec now see it missing
    assert main(["train", "no-such-protocol.yaml"]) == 2
    err = capsys.readouterr().err
    assert err == "sonieval train needs the 'sonify' extra: pip install 'sonieval[sonify]'\n"


def test_study_without_sqlalchemy_names_the_study_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sqlalchemy", None)
    assert main(["study", "export", "no-such-protocol.yaml"]) == 2
    assert capsys.readouterr().err == "sonieval study needs the 'study' extra: pip install 'sonieval[study]'\n"


def test_a_missing_extra_deep_inside_a_command_is_one_line_too(monkeypatch, capsys):
    """An optional import the command did not check up front (the codec's dac) is caught by the CLI."""
    import sonieval.commands.gates as gates

    def needs_dac(args):
        raise ModuleNotFoundError("No module named 'dac'", name="dac")

    monkeypatch.setattr(gates, "run", needs_dac)
    assert main(["gates"]) == 2
    assert capsys.readouterr().err == "sonieval gates needs the 'sonify' extra: pip install 'sonieval[sonify]'\n"


def test_a_missing_core_module_is_not_called_an_extra(monkeypatch):
    import sonieval.commands.gates as gates

    def broken(args):
        raise ModuleNotFoundError("No module named 'numpy'", name="numpy")

    monkeypatch.setattr(gates, "run", broken)
    with pytest.raises(ModuleNotFoundError):
        main(["gates"])


def test_require_and_extra_for(monkeypatch):
    assert extra_for("torch.utils.tensorboard") == "sonify"
    assert extra_for("streamlit.runtime") == "study"
    assert extra_for("numpy") is None
    require("x", "json")  # present: nothing happens
    with pytest.raises(MissingExtra, match=r"^sonieval serve needs the 'ray' extra: pip install 'sonieval\[ray\]'$"):
        monkeypatch.setitem(sys.modules, "ray", None)
        require("sonieval serve", "ray")
