"""The study CLI and the protocol/tables route, with the path-traversal refusals."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import yaml
from study_helpers import RATE, tone, write_folders

from sonieval.audio import write_wav
from sonieval.cli import main
from sonieval.errors import SonievalError
from sonieval.study.stimuli import StudyFileError, study_file
from sonieval.study.store import StudyStore
from sonieval.tables import make_system_id, write_table


def _results(tmp_path: Path) -> Path:
    """A results folder as prepare + sonify leave it: clips and sonifications tables, WAVs."""
    results = tmp_path / "results" / "p"
    originals, systems = write_folders(tmp_path / "esc", n_clips=2, n_systems=1)
    clips = pd.DataFrame(
        {
            "clip_id": ["clip0", "clip1", "clip9"],
            "filename": ["clip0.wav", "clip1.wav", "clip9.wav"],
            "fold": 4,
            "target": 0,
            "category": ["dog", "rain", "dog"],
            "path": [str(originals / "clip0.wav"), str(originals / "clip1.wav"), str(originals / "clip9.wav")],
            "split": "test",
            "listening": [True, True, False],
            "status": "done",
            "error": None,
        }
    )
    write_table(clips, results / "tables" / "clips.parquet", "clips")
    rows = []
    for c, clip in enumerate(["clip0", "clip1"]):
        for pp in ("minmax", "codec"):
            sid = make_system_id("ast", "LIN", 0.005, 1, "transpose", pp)
            path = results / "sonifications" / sid / f"{clip}.wav"
            write_wav(path, tone(300 + 200 * c, 0.3, noise=0.1), RATE)
            rows.append(
                {
                    "system_id": sid,
                    "encoder": "ast",
                    "variant": "LIN",
                    "lr": 0.005,
                    "epoch": 1,
                    "alignment": "transpose",
                    "postprocess": pp,
                    "clip_id": clip,
                    "category": "dog",
                    "path": str(path),
                    "sha256": "",
                    "status": "done",
                    "error": None,
                }
            )
    write_table(pd.DataFrame(rows), results / "tables" / "sonifications.parquet", "sonifications")
    return results


def _protocol(tmp_path: Path, results: Path, **study) -> Path:
    p = tmp_path / "proto.yaml"
    p.write_text(
        yaml.safe_dump(
            {"name": "p", "results_dir": str(results), "study": {"n_raters": 2, "attention_checks": 1, **study}}
        )
    )
    return p


def test_cli_create_from_protocol_tables_and_export(tmp_path, capsys):
    results = _results(tmp_path)
    proto = _protocol(tmp_path, results)
    assert main(["study", "create", str(proto)]) == 0
    out = capsys.readouterr().out
    assert "study p created: 9 trials" in out  # 2 clips x 2 systems + ref + anchor per clip + 1 attention
    assert out.count("?rater=") == 2 and "?admin=" in out
    links = results / "study" / "links.txt"
    assert oct(links.stat().st_mode & 0o777) == "0o600"
    # second create: unchanged, same links printed again from links.txt
    assert main(["study", "create", str(proto)]) == 0
    assert "already existed" in capsys.readouterr().out
    assert main(["study", "invite", "2", str(proto), "--base-url", "http://h:1"]) == 0
    assert capsys.readouterr().out.count("http://h:1/?rater=") == 2
    assert main(["study", "close", str(proto)]) == 0
    assert StudyStore(f"sqlite:///{results / 'study.sqlite'}").study("p").status == "closed"
    assert main(["study", "export", str(proto)]) == 0
    assert (results / "study" / "ratings.parquet").is_file() and (results / "study" / "ratings.csv").is_file()
    # clip9 is not in the listening set; its trials are absent
    trials = StudyStore(f"sqlite:///{results / 'study.sqlite'}").trials("p")
    assert {t.clip_id for t in trials.values()} == {"clip0", "clip1"}


def test_cli_create_from_folders(tmp_path, capsys):
    originals, systems = write_folders(tmp_path / "in")
    args = [
        "study",
        "create",
        "--originals",
        str(originals),
        "--study-dir",
        str(tmp_path / "st"),
        "--raters",
        "3",
        "--mode",
        "split",
    ]
    for name, folder in systems.items():
        args += ["--system", f"{name}={folder}"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.count("?rater=") == 3
    assert main(["study", "export", "--study-dir", str(tmp_path / "st")]) == 0
    assert pd.read_parquet(tmp_path / "st" / "ratings.parquet").empty


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["study", "export"]) == 2
    assert "no study given" in capsys.readouterr().err
    assert main(["study", "create", "--originals", str(tmp_path), "--system", "bad"]) == 2
    assert "NAME=DIR" in capsys.readouterr().err
    assert main(["study", "export", "--storage", "nonsense", "--study-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "study.json" in err and len(err.strip().splitlines()) == 1


def test_traversal_in_protocol_clips_refused(tmp_path, capsys):
    results = _results(tmp_path)
    proto = _protocol(tmp_path, results, clips=["../../etc/passwd"])
    assert main(["study", "create", str(proto)]) == 2
    assert "looks like a path" in capsys.readouterr().err
    assert not (results / "study.sqlite").exists()


def test_traversal_in_sonifications_table_refused(tmp_path, capsys):
    results = _results(tmp_path)
    df = pd.read_parquet(results / "tables" / "sonifications.parquet")
    df.loc[0, "path"] = str(results / ".." / ".." / ".." / "etc" / "passwd")
    write_table(df, results / "tables" / "sonifications.parquet", "sonifications")
    proto = _protocol(tmp_path, results)
    assert main(["study", "create", str(proto)]) == 2
    err = capsys.readouterr().err
    assert "sonification path refused" in err and "outside" in err


def test_symlink_in_audio_dir_is_followed_and_a_non_audio_target_is_named(tmp_path, capsys):
    """The organiser's folders may hold symlinks; what is served is only the study's own re-written copies."""
    audio = tmp_path / "audio"
    originals, systems = write_folders(audio)
    os.rename(originals, audio / "originals")
    (audio / "system0" / "clip1.wav").unlink()
    os.symlink("/etc/passwd", audio / "system0" / "clip1.wav")
    proto = tmp_path / "proto.yaml"
    proto.write_text(
        yaml.safe_dump({"name": "q", "results_dir": str(tmp_path / "res"), "study": {"audio_dir": str(audio)}})
    )
    assert main(["study", "create", str(proto)]) == 0
    out = capsys.readouterr().out
    assert (
        f"{audio / 'system0' / 'clip1.wav'}: not a readable audio file" in out
        and "left out: sonification system0/clip1" in out
    )
    served = list((tmp_path / "res" / "study" / "audio").iterdir())
    assert served and all(p.is_file() and not p.is_symlink() for p in served)
    assert all(p.read_bytes()[:4] == b"RIFF" for p in served)


def test_study_file_serving_is_contained(small_study):
    d = small_study.created.study_dir
    name = next(p.name for p in (d / "audio").iterdir())
    assert study_file(d, name).is_file()
    for bad in ("../study.sqlite", "../../../../etc/passwd", "/etc/passwd", "..", "", "a/../../x", "links.txt"):
        with pytest.raises(StudyFileError):
            study_file(d, bad)
    os.symlink("/etc/passwd", d / "audio" / "evil.wav")
    with pytest.raises(StudyFileError, match="outside"):
        study_file(d, "evil.wav")


def test_bad_storage_url_is_one_clear_error(tmp_path):
    with pytest.raises(SonievalError, match="not a database URL"):
        StudyStore("not a url")
    with pytest.raises(SonievalError, match="in-memory"):
        StudyStore("sqlite://")
    with pytest.raises(SonievalError, match="not supported"):
        StudyStore("mysql://u@h/db")


def test_prepare_study_for_protocol_prints_command_and_links(tmp_path):
    from sonieval.protocol import load_protocol
    from sonieval.study.server import prepare_study_for_protocol

    results = _results(tmp_path)
    proto_path = _protocol(tmp_path, results)
    lines = prepare_study_for_protocol(load_protocol(proto_path), protocol_arg="protocols/x.yaml", progress=False)
    text = "\n".join(lines)
    assert "sonieval study serve protocols/x.yaml --port 8501" in text
    assert "?admin=" in text and text.count("?rater=") == 2
    # calling it again (a second demo run) reuses the study and prints the same links
    assert (
        prepare_study_for_protocol(load_protocol(proto_path), protocol_arg="protocols/x.yaml", progress=False)[2:]
        == lines[2:]
    )


@pytest.mark.esc50
def test_study_over_real_esc50_clips(esc50_root, tmp_path):
    """Real 5 s, 44.1 kHz clips: copies, the 3.5 kHz anchor and waveforms are made, a rater finishes."""
    import numpy as np

    from sonieval.audio import read_audio
    from sonieval.study.create import StudySettings, create_from_folders
    from sonieval.study.session import RaterSession

    clips = sorted((esc50_root / "audio").glob("*.wav"))[:2]
    originals = tmp_path / "orig"
    system = tmp_path / "quiet"
    for f in clips:
        x, rate, _ = read_audio(f)
        write_wav(originals / f.name, x, rate)
        write_wav(system / f.name, 0.5 * x, rate)  # a fixture "system", not a sonification
    created = create_from_folders(
        StudySettings(study_id="esc", attention_checks=1, min_listen_fraction=0),
        originals,
        {"quiet": system},
        study_dir=tmp_path / "study",
        progress=False,
    )
    store = StudyStore(created.storage)
    trials = store.trials("esc")
    assert len(trials) == 2 * 3 + 1
    anchor = next(t for t in trials.values() if t.role == "anchor")
    x, rate, _ = read_audio(created.study_dir / "audio" / anchor.stimulus_file)
    assert rate == 44100 and abs(anchor.stimulus_seconds - 5.0) < 0.01
    spectrum = np.abs(np.fft.rfft(x))
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    assert spectrum[freqs > 6000].sum() < 0.02 * spectrum.sum()
    session = RaterSession(store, "esc", created.rater_tokens[0][1])
    while not (state := session.next_step()).finished:
        session.show(state)
        session.submit(state.step.position, {a: state.trial.expected_mark or 3 for a in state.step.attributes})
    assert session.next_step().done == 7


def test_cli_create_accepts_relative_and_symlinked_paths(tmp_path, monkeypatch, capsys):
    originals, systems = write_folders(tmp_path / "store")
    work = tmp_path / "work"
    (work / "in" / "links").mkdir(parents=True)
    for f in originals.iterdir():  # originals as symlinks into another folder (e.g. an ESC-50 copy)
        os.symlink(os.path.relpath(f, work / "in" / "links"), work / "in" / "links" / f.name)
    os.symlink(systems["sysA"], work / "in" / "sysA")  # a system folder that is itself a symlink
    monkeypatch.chdir(work)
    args = [
        "study",
        "create",
        "--originals",
        "in/links",
        "--system",
        "A=in/sysA",
        "--system",
        f"B={os.path.relpath(systems['sysB'])}",
        "--study-dir",
        "st",
        "--attention-checks",
        "0",
    ]
    assert main(args) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert "study st created: 8 trials" in out and "left out" not in out
    store = StudyStore(f"sqlite:///{work / 'st' / 'study.sqlite'}")
    assert {t.system_id for t in store.trials("st").values()} >= {"A", "B"}
    assert all(p.is_file() and not p.is_symlink() for p in (work / "st" / "audio").iterdir())


def test_cli_create_names_each_failed_file(tmp_path, monkeypatch, capsys):
    originals, systems = write_folders(tmp_path / "in", n_clips=3)
    (systems["sysA"] / "clip1.wav").write_bytes(b"RIFF not really a wav")
    (systems["sysB"] / "clip2.wav").unlink()
    os.symlink(tmp_path / "nowhere.wav", systems["sysB"] / "clip2.wav")
    monkeypatch.chdir(tmp_path)
    args = [
        "study",
        "create",
        "--originals",
        "in/originals",
        "--system",
        "A=in/system0",
        "--system",
        "B=in/system1",
        "--study-dir",
        "st",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "[left out:" in line]
    assert len(lines) == 2, out
    assert any(
        f"{tmp_path / 'in' / 'system0' / 'clip1.wav'}: not a readable audio file" in line and "A/clip1" in line
        for line in lines
    )
    assert any(
        f"{tmp_path / 'in' / 'system1' / 'clip2.wav'}: file not found" in line and "B/clip2" in line for line in lines
    )
    # nothing usable at all: every failed file on stderr, then one error line, exit non-zero
    for f in systems["sysA"].iterdir():
        f.write_bytes(b"not audio")
    rc = main(["study", "create", "--originals", "in/originals", "--system", "A=in/system0", "--study-dir", "st2"])
    err = [
        line for line in capsys.readouterr().err.splitlines() if not line.startswith("study stimuli")
    ]  # not the progress bar
    failed = [line for line in err if line.startswith("failed:")]
    assert rc == 2 and len(failed) == 3 and err[-1].startswith("sonieval study: error:")
    assert (
        all("not a readable audio file" in line for line in failed)
        and "no sonification trial could be prepared" in err[-1]
    )


# ----------------------------------------------------------------------------- serve: the server's lifecycle


def _port_is_free(port: int) -> bool:
    from sonieval.study.server import check_port_free

    try:
        check_port_free("127.0.0.1", port)
    except SonievalError:
        return False
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class _Serve:
    """`sonieval study serve` in a subprocess, read until it prints its links."""

    def __init__(self, study, *extra: str):
        import subprocess
        import sys
        import time

        from sonieval.study.create import record_tokens

        record_tokens(study.created.study_dir, study.created)
        self.study_dir = study.created.study_dir
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sonieval",
                "study",
                "serve",
                "--study-dir",
                str(self.study_dir),
                "--storage",
                study.url,
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line.rstrip())
            if line.startswith("press Ctrl-C"):
                break
        self.text = "\n".join(self.lines)
        assert "is served at http://127.0.0.1:" in self.text, (
            self.text,
            self.proc.stderr.read() if self.proc.poll() is not None else "",
        )
        self.base = self.text.split("is served at ")[1].split()[0]
        self.port = int(self.base.rsplit(":", 1)[1])
        import json

        self.record = json.loads((self.study_dir / "server.json").read_text())

    def finish(self, timeout: float = 30) -> tuple[int, str]:
        import subprocess

        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return self.proc.returncode, err


@pytest.mark.slow
def test_cli_serve_starts_app_and_prints_links_and_sigint_stops_both(small_study):
    import signal
    import urllib.request

    serve = _Serve(small_study, "--free-port")
    try:
        assert f"admin: {serve.base}/?admin={small_study.admin_token}" in serve.text
        assert serve.text.count(f"{serve.base}/?rater=") == 2
        with urllib.request.urlopen(f"{serve.base}/_stcore/health", timeout=5) as r:
            assert r.status == 200
        child = serve.record["child_pid"]
        assert serve.record["url"] == serve.base and _alive(child)
        assert os.getpgid(child) == child != os.getpgid(serve.proc.pid)  # the child's own process group
    finally:
        serve.proc.send_signal(signal.SIGINT)
        rc, err = serve.finish()
    assert rc == 0, err
    assert not _alive(child) and _port_is_free(serve.port)
    assert not (serve.study_dir / "server.json").exists()


@pytest.mark.slow
def test_cli_serve_sigterm_stops_both_and_invite_uses_its_port(small_study, capsys):
    import signal

    serve = _Serve(small_study, "--free-port")
    try:
        assert serve.port != 8501
        assert main(["study", "invite", "1", "--study-dir", str(serve.study_dir), "--storage", small_study.url]) == 0
        out = capsys.readouterr()
        assert out.out.count(f"{serve.base}/?rater=") == 1 and "8501" not in out.out and not out.err
        assert main(["study", "admin-link", "--study-dir", str(serve.study_dir), "--storage", small_study.url]) == 0
        assert f"admin: {serve.base}/?admin=" in capsys.readouterr().out
        assert (
            main(
                [
                    "study",
                    "invite",
                    "1",
                    "--study-dir",
                    str(serve.study_dir),
                    "--storage",
                    small_study.url,
                    "--public-url",
                    "https://study.example.org",
                ]
            )
            == 0
        )
        assert "https://study.example.org/?rater=" in capsys.readouterr().out
        child = serve.record["child_pid"]
    finally:
        serve.proc.send_signal(signal.SIGTERM)
        rc, err = serve.finish()
    assert rc == 0, err
    assert not _alive(child) and _port_is_free(serve.port)
    # with no server running, invite says which address it assumed
    assert main(["study", "invite", "1", "--study-dir", str(serve.study_dir), "--storage", small_study.url]) == 0
    out = capsys.readouterr()
    assert "http://127.0.0.1:8501/?rater=" in out.out and "no running server" in out.err


@pytest.mark.slow
def test_cli_serve_reports_a_crash_of_its_child(small_study):
    import signal

    serve = _Serve(small_study, "--free-port")
    os.kill(serve.record["child_pid"], signal.SIGKILL)
    rc, err = serve.finish()
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "stopped unexpectedly" in err and "SIGKILL" in err
    assert _port_is_free(serve.port)


@pytest.mark.slow
def test_cli_serve_port_taken_is_one_clear_error_before_any_link(small_study, capsys):
    import socket

    from sonieval.study.create import record_tokens

    record_tokens(small_study.created.study_dir, small_study.created)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        rc = main(
            [
                "study",
                "serve",
                "--study-dir",
                str(small_study.created.study_dir),
                "--storage",
                small_study.url,
                "--port",
                str(port),
            ]
        )
    out = capsys.readouterr()
    assert rc == 2 and f"port {port} on 127.0.0.1 is already in use" in out.err and "--free-port" in out.err
    assert len(out.err.strip().splitlines()) == 1
    assert "?rater=" not in out.out and "?admin=" not in out.out and "served at" not in out.out
    assert not (small_study.created.study_dir / "server.json").exists()


def test_cli_crowd_protocol_prints_the_public_link_and_stores_its_options(tmp_path, capsys):
    """Issue 14's protocol keys reach the study; with enrolment only the public link is minted."""
    audio = tmp_path / "audio"
    originals, _ = write_folders(audio, n_clips=1, n_systems=1)
    os.rename(originals, audio / "originals")
    proto = tmp_path / "crowd.yaml"
    proto.write_text(
        yaml.safe_dump(
            {
                "name": "crowd",
                "results_dir": str(tmp_path / "res"),
                "study": {
                    "audio_dir": str(audio),
                    "title": "Panel A",
                    "mode": "multi",
                    "rating_scale": "mushra",
                    "n_raters": 30,
                    "sessions": {"pages": 10},
                    "headphone_check": {"enabled": True, "on_fail": "stop"},
                    "enrolment": {
                        "enabled": True,
                        "completion_url": "https://app.prolific.com/submissions/complete?cc={code}",
                    },
                    "loudness_lufs": -23.0,
                },
            }
        )
    )
    assert main(["study", "create", str(proto)]) == 0
    out = capsys.readouterr().out
    assert "?rater=" not in out and "public enrolment: http://127.0.0.1:8501/?enrol=" in out
    assert "&PROLIFIC_PID={{%PROLIFIC_PID%}}&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}}" in out
    info = StudyStore(f"sqlite:///{tmp_path / 'res' / 'study.sqlite'}").study("crowd")
    opts = info.options
    assert (info.mode, info.scale_min, info.scale_max, info.title) == ("multi", 0, 100, "Panel A")
    assert opts.sessions.pages == 10 and opts.headphones.on_fail == "stop" and opts.enrolment.cap == 30
    assert opts.enrolment.completion_code and len(opts.enrolment.key_hash) == 64
    assert info.provenance["loudness"]["target_lufs"] == -23.0
    assert (tmp_path / "res" / "study" / "links.txt").read_text().count("enrol ") == 1


@pytest.mark.parametrize("action", [["export"], ["close"], ["invite", "1"], ["admin-link"]])
def test_study_commands_before_create_leave_no_database_and_name_the_command(tmp_path, capsys, action):
    results = _results(tmp_path)
    proto = _protocol(tmp_path, results)
    assert main(["study", *action, str(proto)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has not been created yet" in err
    assert f"sonieval study create {proto}" in err
    assert not (results / "study.sqlite").exists()
