"""Listening-study benchmark: browser latency and concurrent submission throughput.

1. Median and 95th-percentile time from clicking "Submit" to the next page being fully
   rendered (progress line updated, no stale element, waveform loaded) in headless Chromium
   against `streamlit run` on localhost. Goal: median < 300 ms.
2. Marks per second sustained by 20 rater threads submitting at once through the study's own
   code path (token check, plan lookup, validation, one transaction per page), on SQLite
   (WAL, synchronous=FULL) and on PostgreSQL (a throwaway local cluster, default fsync on),
   measured in the same run.

Stimuli: real ESC-50 clips (5 s, 44.1 kHz) from $SONIEVAL_ESC50 or ../shared/esc50 as originals;
the two "systems" are the same clips low-passed and attenuated, made here only so that page
sizes are realistic: these are timing stimuli, not sonifications, and no rating here is a result.

    .venv/bin/python bench/bench_study.py [--pages-clips 6] [--raters 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sonieval.audio import read_audio, write_wav  # noqa: E402
from sonieval.study.create import StudySettings, create_from_folders  # noqa: E402
from sonieval.study.session import RaterSession  # noqa: E402
from sonieval.study.stimuli import lowpass_anchor  # noqa: E402
from sonieval.study.store import StudyStore  # noqa: E402


def esc50_clips(n: int) -> tuple[list[Path], str]:
    root = Path(os.environ.get("SONIEVAL_ESC50") or REPO.parent / "shared" / "esc50")
    audio = root / "audio"
    if audio.is_dir():
        files = sorted(audio.glob("*.wav"))[:: max(1, len(list(audio.glob('*.wav'))) // n)][:n]
        return files, f"ESC-50 clips from {root} ({len(files)} clips, 5 s, 44.1 kHz)"
    return [], "no ESC-50 copy found"


def make_inputs(work: Path, n_clips: int) -> tuple[Path, dict[str, Path], str]:
    files, label = esc50_clips(n_clips)
    if not files:
        raise SystemExit("bench_study: needs the ESC-50 subset (set SONIEVAL_ESC50)")
    originals = work / "originals"
    systems = {"timing-lowpass": work / "lowpass", "timing-quiet": work / "quiet"}
    for f in files:
        x, rate, _ = read_audio(f)
        write_wav(originals / f.name, x, rate)
        write_wav(systems["timing-lowpass"] / f.name, lowpass_anchor(x, rate, 2000.0), rate)
        write_wav(systems["timing-quiet"] / f.name, 0.3 * x, rate)
    return originals, systems, label


def create(work: Path, originals: Path, systems: dict[str, Path], storage: str | None, n_raters: int, study_id: str):
    settings = StudySettings(study_id=study_id, n_raters=n_raters, attention_checks=2, min_listen_fraction=0.0)
    return create_from_folders(settings, originals, systems, study_dir=work / "study", storage=storage, progress=False)


def browser_latency(created) -> list[float]:
    from sonieval.study.browser import RaterDriver, headless_chromium
    from sonieval.study.server import launch, rater_link, wait_until_up

    proc, base = launch(created.storage, created.study_id, log_path=created.study_dir / "server.log")
    times: list[float] = []
    try:
        wait_until_up(base, proc)
        with headless_chromium() as browser:
            page = browser.new_page()
            rater = RaterDriver(page, rater_link(base, created.rater_tokens[0][1]))
            if rater.open() == "familiarisation":
                rater.familiarise()
            while True:
                number, total = rater.position()
                times.append(rater.rate())
                if number == total:
                    break
    finally:
        proc.kill()
        proc.wait(timeout=10)
    return times


def throughput(storage: str, study_id: str, tokens: list[str]) -> tuple[float, int, float]:
    store = StudyStore(storage)
    barrier = threading.Barrier(len(tokens) + 1)
    counts = [0] * len(tokens)
    errors: list[BaseException] = []

    def rater(i: int, token: str) -> None:
        try:
            session = RaterSession(store, study_id, token)
            barrier.wait()
            while not (state := session.next_step()).finished:
                session.show(state)
                marks = {a: state.trial.expected_mark or 3 for a in state.step.attributes}
                counts[i] += session.submit(state.step.position, marks).stored
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=rater, args=(i, t)) for i, t in enumerate(tokens)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    store.close()
    if errors:
        raise SystemExit(f"bench_study: {len(errors)} rater thread(s) failed: {errors[0]}")
    return sum(counts) / wall, sum(counts), wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=6, help="clips per study (pages = clips x 4 + 2)")
    ap.add_argument("--raters", type=int, default=20)
    args = ap.parse_args()
    import sqlalchemy
    import streamlit

    from sonieval import __version__

    work = Path(tempfile.mkdtemp(prefix="bench-study-"))
    originals, systems, label = make_inputs(work / "inputs", args.clips)
    print(f"bench_study: sonieval {__version__}, streamlit {streamlit.__version__}, SQLAlchemy {sqlalchemy.__version__}, "
          f"{os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.1f} at start")
    print(f"stimuli: {label}; timing stimuli only, not sonifications")

    sqlite_study = create(work / "sqlite", originals, systems, None, args.raters, "bench")
    pages = sqlite_study.n_trials
    times = browser_latency(sqlite_study)
    ms = np.array(times) * 1000
    print(f"\n[1] submit -> next page fully rendered, headless Chromium, SQLite, {len(ms)} pages of 1 rater (joint mode)")
    print(f"    median {np.median(ms):.0f} ms, p95 {np.percentile(ms, 95):.0f} ms, min {ms.min():.0f} ms, max {ms.max():.0f} ms "
          f"(goal: median < 300 ms: {'met' if np.median(ms) < 300 else 'NOT met'})")

    tokens = [tok for _, tok in sqlite_study.rater_tokens[1:]]
    more = StudyStore(sqlite_study.storage).invite("bench", 1)
    tokens.append(more[0][1])
    sqlite_rate, sqlite_marks, sqlite_wall = throughput(sqlite_study.storage, "bench", tokens)
    print(f"\n[2] {len(tokens)} concurrent raters x {pages} pages x 2 marks, each page one transaction")
    print(f"    SQLite (WAL, synchronous=FULL):       {sqlite_rate:7.0f} marks/s ({sqlite_marks} marks in {sqlite_wall:.2f} s)")

    from sonieval.study.pgtemp import start_temp_postgres

    try:
        pg = start_temp_postgres()
    except RuntimeError as exc:
        print(f"    PostgreSQL: not measured ({exc})")
        return 0
    try:
        url = pg.database_url(f"bench_{uuid.uuid4().hex[:6]}")
        pg_study = create(work / "pg", originals, systems, url, len(tokens), "bench")
        pg_rate, pg_marks, pg_wall = throughput(url, "bench", [tok for _, tok in pg_study.rater_tokens])
        print(f"    PostgreSQL (local, fsync on):          {pg_rate:7.0f} marks/s ({pg_marks} marks in {pg_wall:.2f} s)")
        print(f"    ratio PostgreSQL / SQLite: {pg_rate / sqlite_rate:.2f}")
    finally:
        pg.stop()
    print(f"\nload average {os.getloadavg()[0]:.1f} at end (the machine is shared; absolute numbers vary)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
