"""The CLI's shared behaviour: one --no-progress flag in every command, no traceback on a closed pipe."""

from __future__ import annotations

import subprocess
import sys

from tqdm import tqdm

from sonieval.cli import _available_commands, build_parser, main


def test_every_command_takes_no_progress():
    parser = build_parser()
    for name, _ in _available_commands():
        sub = parser._subparsers._group_actions[0].choices[name]
        assert "--no-progress" in sub._option_string_actions, name


def test_no_progress_turns_every_bar_off_and_restores_them(monkeypatch, capsys):
    import sonieval.commands.gates as gates

    shown = []

    def fake_run(args):
        bar = tqdm(range(3), disable=False)  # a stage passes disable= itself
        shown.append(not bar.disable)
        list(bar)
        return 0

    monkeypatch.setattr(gates, "run", fake_run)
    assert main(["gates", "--no-progress"]) == 0
    assert main(["gates"]) == 0
    assert shown == [False, True]


def test_a_closed_pipe_is_not_a_traceback():
    proc = subprocess.run(f"{sys.executable} -m sonieval gates | head -1", shell=True, capture_output=True, text=True)
    assert proc.stdout.startswith("Gate variants") and "Traceback" not in proc.stderr
