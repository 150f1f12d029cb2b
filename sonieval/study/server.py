"""Start the Streamlit app for a study and build the links raters and the admin open.

The app (``study_app/app.py``) learns which study to show from two environment variables,
``SONIEVAL_STUDY_STORAGE`` (the storage URL, which may hold a password and so is not put on
the command line) and ``SONIEVAL_STUDY_ID``. It listens on localhost unless told otherwise.

:class:`StudyServer` is what ``sonieval study serve`` runs: it owns its Streamlit child
(started in a process group of its own, and told by the kernel to stop if ``serve`` dies),
stops the whole group on SIGTERM and SIGINT, refuses a busy port before anything is printed,
reports a child that stops on its own with its exit status and the last line of its log, and
records its address in ``<study_dir>/server.json`` so that ``study invite`` and ``study
admin-link`` print links for the server that is running.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

from sonieval.study.store import StudyError

SERVER_RECORD = "server.json"
DEFAULT_BASE_URL = "http://127.0.0.1:8501"

ENV_STORAGE = "SONIEVAL_STUDY_STORAGE"
ENV_STUDY_ID = "SONIEVAL_STUDY_ID"


APP_PACKAGE = "sonieval._study_app"  # where a wheel ships study_app/ (setup.py maps the folder there)


def app_path() -> Path:
    """The Streamlit script ``study_app/app.py``: in an install, the copy the wheel ships inside the
    package (``sonieval/_study_app/app.py``); in a checkout, the repository's ``study_app/`` beside
    the package. Found without importing the app (it imports streamlit)."""
    import importlib.util

    import sonieval

    candidates = []
    spec = importlib.util.find_spec(APP_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        candidates.append(Path(list(spec.submodule_search_locations)[0]) / "app.py")
    candidates.append(Path(sonieval.__file__).resolve().parent.parent / "study_app" / "app.py")
    for path in candidates:
        if path.is_file():
            return path
    raise StudyError(
        "the study app (study_app/app.py) is not installed",
        hint="reinstall sonieval from its wheel or a checkout: pip install 'sonieval[study]'",
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def rater_link(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/?{urlencode({'rater': token})}"


def admin_link(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/?{urlencode({'admin': token})}"


def enrol_link(base_url: str, key: str, platform: str | None = None) -> str:
    """The public enrolment link; with ``platform`` (prolific | mturk) the parameters that platform
    fills in for each participant (paste the whole link into the platform's study URL field)."""
    link = f"{base_url.rstrip('/')}/?{urlencode({'enrol': key})}"
    if platform == "prolific":
        link += "&PROLIFIC_PID={{%PROLIFIC_PID%}}&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}}"
    return link


def streamlit_command(host: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app_path()),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
        "--server.runOnSave",
        "false",
        "--global.developmentMode",
        "false",
        "--client.toolbarMode",
        "minimal",
        "--server.enableStaticServing",
        "false",
        # a rater never sees a traceback: errors the app does not answer itself show no details
        "--client.showErrorDetails",
        "none",
        # no full gc.collect() after every script run: it walked the whole heap (~60 ms, 40 % of the CPU a page cost)
        "--runner.postScriptGC",
        "false",
    ]


def check_port_free(host: str, port: int) -> None:
    """Refuse a port something already listens on (before any link is printed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # SO_REUSEADDR as servers set it: a port left in TIME_WAIT is free, a listening one is not
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise StudyError(
                f"port {port} on {host} is already in use ({exc.strerror or exc})",
                hint="stop the server using it, or pick another with --port N or --free-port",
            ) from None


def _stop_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGTERM if its parent dies (even by SIGKILL), so no orphan keeps the port."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - not Linux: the signal handlers of StudyServer still stop it
        pass


def launch(
    storage: str,
    study_id: str,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    log_path: str | os.PathLike | None = None,
) -> tuple[subprocess.Popen, str]:
    """Start ``streamlit run`` in a child process; returns (process, base URL). Does not wait.

    The child runs in a process group of its own (``start_new_session``): a terminal's Ctrl-C
    reaches only the parent, which stops the child itself (:class:`StudyServer`).
    """
    from sonieval.extras import require

    require("sonieval study serve", "streamlit")
    port = port or free_port(host)
    env = dict(os.environ)
    env[ENV_STORAGE] = storage
    env[ENV_STUDY_ID] = study_id
    env.setdefault("MPLBACKEND", "Agg")
    log = _private_log(Path(log_path)) if log_path else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(
            streamlit_command(host, port),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_stop_with_parent,
        )
    finally:
        if log is not subprocess.DEVNULL:
            log.close()  # the child has its own copy
    return proc, f"http://{host}:{port}"


def _private_log(path: Path):
    """The server log, opened for appending and readable by its owner only (0600): it may name
    raters' addresses and the study's links."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    if os.fstat(fd).st_mode & 0o077:
        os.fchmod(fd, 0o600)
    return os.fdopen(fd, "ab")


def exit_cause(returncode: int, log_path: str | os.PathLike | None = None) -> str:
    """How a child ended, in words: exit code or signal, and the last line of its log."""
    if returncode < 0:
        try:
            how = f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            how = f"killed by signal {-returncode}"
    else:
        how = f"exit code {returncode}"
    last = last_log_line(log_path) if log_path else ""
    return f"{how}; last log line: {last}" if last else how


def last_log_line(log_path: str | os.PathLike, max_bytes: int = 20_000) -> str:
    """The last non-empty line of a log (an exception's message, typically), ANSI colours removed."""
    import re

    try:
        with open(log_path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - max_bytes))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip(" │|\t") for line in text.splitlines()]
    lines = [line for line in lines if line.strip()]
    return lines[-1][:300] if lines else ""


def wait_until_up(
    base_url: str,
    proc: subprocess.Popen | None = None,
    timeout: float = 60.0,
    log_path: str | os.PathLike | None = None,
) -> None:
    """Poll Streamlit's health endpoint until it answers ``ok`` (and the child is still running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StudyError(
                f"the Streamlit server exited before it was up ({exit_cause(proc.returncode, log_path)})",
                hint=f"see {log_path}" if log_path else "see its log",
            )
        try:
            with urllib.request.urlopen(f"{base_url}/_stcore/health", timeout=2) as r:
                if r.status == 200 and (proc is None or proc.poll() is None):
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.2)
    raise StudyError(
        f"the Streamlit server at {base_url} did not come up within {timeout:.0f} s",
        hint=f"see {log_path}" if log_path else "see its log",
    )


class StopServing(BaseException):
    """Raised by the signal handlers of :class:`StudyServer` to end ``serve_forever``."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class StudyServer:
    """``streamlit run`` for one study, owned by this process (see the module docstring)."""

    def __init__(
        self, storage: str, study_id: str, *, host: str, port: int, study_dir: Path, public_url: str | None = None
    ):
        self.storage, self.study_id = storage, study_id
        self.host, self.port = host, port
        self.study_dir = Path(study_dir)
        self.public_url = public_url
        self.log_path = self.study_dir / "server.log"
        self.base_url = f"http://{host}:{port}"
        self.proc: subprocess.Popen | None = None
        self._old_handlers: dict[int, object] = {}

    @property
    def link_base(self) -> str:
        return self.public_url or self.base_url

    def start(self, timeout: float = 60.0) -> None:
        """Check the port, start the child, wait until it answers, record the address."""
        check_port_free(self.host, self.port)
        self.study_dir.mkdir(parents=True, exist_ok=True)
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._old_handlers[signum] = signal.signal(signum, self._on_signal)
        self.proc, _ = launch(self.storage, self.study_id, host=self.host, port=self.port, log_path=self.log_path)
        wait_until_up(self.base_url, self.proc, timeout, self.log_path)
        write_server_record(
            self.study_dir,
            {
                "url": self.base_url,
                "public_url": self.public_url,
                "pid": os.getpid(),
                "child_pid": self.proc.pid,
                "study_id": self.study_id,
                "started_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            },
        )

    def _on_signal(self, signum: int, _frame) -> None:
        raise StopServing(signum)

    def serve_forever(self) -> int:
        """Wait until a signal asks to stop (returns 0) or the child stops on its own (StudyError)."""
        assert self.proc is not None
        try:
            returncode = self.proc.wait()
        except StopServing:
            return 0
        raise StudyError(
            f"the Streamlit server stopped unexpectedly ({exit_cause(returncode, self.log_path)})",
            hint=f"see {self.log_path}; every mark submitted before is saved",
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the child's whole process group (SIGTERM, then SIGKILL), forget the address."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=timeout)
        clear_server_record(self.study_dir, os.getpid())
        for signum, handler in self._old_handlers.items():
            signal.signal(signum, handler)
        self._old_handlers.clear()

    def __enter__(self) -> StudyServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _signal_group(proc: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(proc.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


# ----------------------------------------------------------------------------- the running server's address


def write_server_record(study_dir: Path, record: dict) -> Path:
    from sonieval.files import write_text_atomic

    return write_text_atomic(Path(study_dir) / SERVER_RECORD, json.dumps(record, indent=2) + "\n")


def clear_server_record(study_dir: Path, pid: int) -> None:
    """Remove the record if it is this process's (another serve may have replaced it)."""
    path = Path(study_dir) / SERVER_RECORD
    try:
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == pid:
            path.unlink()
    except (OSError, ValueError):
        pass


def running_server(study_dir: Path) -> dict | None:
    """The record of the ``serve`` running for this study folder, or None (none, or it is gone)."""
    path = Path(study_dir) / SERVER_RECORD
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        os.kill(int(record["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record


def link_base(study_dir: Path, public_url: str | None = None) -> tuple[str, str | None]:
    """(base URL for printed links, a note when it is only a guess).

    ``--public-url`` wins; else the address of the running ``serve`` recorded in the study
    folder; else the default local address, with a note saying so.
    """
    if public_url:
        return public_url.rstrip("/"), None
    record = running_server(study_dir)
    if record:
        return str(record.get("public_url") or record["url"]).rstrip("/"), None
    return DEFAULT_BASE_URL, (
        f"no running server is recorded in {study_dir}: the links assume {DEFAULT_BASE_URL} "
        "(start `sonieval study serve` first, or give --public-url)"
    )


def link_lines(
    base_url: str, admin_token: str | None, rater_tokens: list[tuple[str, str]], enrol_key: str | None = None
) -> list[str]:
    lines = []
    if admin_token:
        lines.append(f"admin: {admin_link(base_url, admin_token)}")
    if enrol_key:
        lines.append(f"public enrolment: {enrol_link(base_url, enrol_key)}")
        lines.append(f"  on Prolific:    {enrol_link(base_url, enrol_key, 'prolific')}")
        lines.append("  on MTurk:       the same link; MTurk adds workerId, assignmentId and hitId")
    lines += [f"rater {rid}: {rater_link(base_url, tok)}" for rid, tok in rater_tokens]
    return lines


def prepare_study_for_protocol(
    proto, *, protocol_arg: str | None = None, port: int = 8501, progress: bool = True
) -> list[str]:
    """Create (or reuse) the protocol's study and return the lines to print: command and links.

    Does not start a server (the demo calls this and goes on); ``sonieval study serve`` does.
    """
    from sonieval.study.create import create_from_protocol, read_enrol_key, read_tokens, record_tokens

    # A demo rerun over changed sonifications replaces the study while nobody has rated it yet.
    created = create_from_protocol(proto, progress=progress, replace_unrated=True)
    record_tokens(created.study_dir, created)
    admin, raters = read_tokens(created.study_dir)
    base = f"http://127.0.0.1:{port}"
    target = protocol_arg or (str(proto.source) if proto.source else "PROTOCOL")
    lines = [
        f"study {created.study_id}: {created.n_trials} trials, storage {created.storage.split('://')[0]}, folder {created.study_dir}",
        f"start it with: sonieval study serve {target} --port {port}",
    ]
    links = link_lines(base, admin, raters, read_enrol_key(created.study_dir))
    lines += [f"then open {line}" if i == 0 else f"     {line}" for i, line in enumerate(links)]
    lines += [f"note: {n}" for n in created.notes]
    lines += [f"warning: {w}" for w in created.warnings]
    return lines
