"""Start the Streamlit app for a study and build the links raters and the admin open.

The app (``study_app/app.py``) learns which study to show from two environment variables,
``SONIEVAL_STUDY_STORAGE`` (the storage URL, which may hold a password and so is not put on
the command line) and ``SONIEVAL_STUDY_ID``. It listens on localhost unless told otherwise.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

from sonieval.study.store import StudyError

ENV_STORAGE = "SONIEVAL_STUDY_STORAGE"
ENV_STUDY_ID = "SONIEVAL_STUDY_ID"


def app_path() -> Path:
    """``study_app/app.py``, found as a module so it works from a checkout or an install."""
    import importlib.util

    spec = importlib.util.find_spec("study_app")
    if spec is None or not spec.submodule_search_locations:
        raise StudyError("the study_app package is not importable", hint="install sonieval with its study_app folder")
    return Path(list(spec.submodule_search_locations)[0]) / "app.py"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def rater_link(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/?{urlencode({'rater': token})}"


def admin_link(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/?{urlencode({'admin': token})}"


def streamlit_command(host: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "streamlit", "run", str(app_path()),
        "--server.address", host, "--server.port", str(port), "--server.headless", "true",
        "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
        "--server.runOnSave", "false", "--global.developmentMode", "false",
        "--client.toolbarMode", "minimal", "--server.enableStaticServing", "false",
        # a rater never sees a traceback: errors the app does not answer itself show no details
        "--client.showErrorDetails", "none",
    ]


def launch(storage: str, study_id: str, *, host: str = "127.0.0.1", port: int | None = None,
           log_path: str | os.PathLike | None = None) -> tuple[subprocess.Popen, str]:
    """Start ``streamlit run`` in a child process; returns (process, base URL). Does not wait."""
    port = port or free_port(host)
    env = dict(os.environ)
    env[ENV_STORAGE] = storage
    env[ENV_STUDY_ID] = study_id
    env.setdefault("MPLBACKEND", "Agg")
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(streamlit_command(host, port), env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return proc, f"http://{host}:{port}"


def wait_until_up(base_url: str, proc: subprocess.Popen | None = None, timeout: float = 60.0) -> None:
    """Poll Streamlit's health endpoint until it answers ``ok``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StudyError(f"the Streamlit server exited with code {proc.returncode}", hint="see its log")
        try:
            with urllib.request.urlopen(f"{base_url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.2)
    raise StudyError(f"the Streamlit server at {base_url} did not come up within {timeout:.0f} s")


def link_lines(base_url: str, admin_token: str | None, rater_tokens: list[tuple[str, str]]) -> list[str]:
    lines = []
    if admin_token:
        lines.append(f"admin: {admin_link(base_url, admin_token)}")
    lines += [f"rater {rid}: {rater_link(base_url, tok)}" for rid, tok in rater_tokens]
    return lines


def prepare_study_for_protocol(proto, *, protocol_arg: str | None = None, port: int = 8501, progress: bool = True) -> list[str]:
    """Create (or reuse) the protocol's study and return the lines to print: command and links.

    Does not start a server (the demo calls this and goes on); ``sonieval study serve`` does.
    """
    from sonieval.study.create import create_from_protocol, read_tokens, record_tokens

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
    lines += [f"then open {line}" if i == 0 else f"     {line}" for i, line in enumerate(link_lines(base, admin, raters))]
    lines += [f"note: {n}" for n in created.notes]
    lines += [f"warning: {w}" for w in created.warnings]
    return lines
