"""Listening-study benchmark: browser latency and concurrent submission throughput.

1. Median and 95th-percentile time from clicking "Submit" to the next page being fully
   rendered (progress line updated, no stale element, waveform loaded, the player showing the new
   page with its sounds decoded) in headless Chromium against `streamlit run` on localhost, on the
   page's own clock: from the submit's click event to the first animation frame that shows the
   next page complete (harness.browser.RENDERED_AT_JS; the test driver's own round trips are not
   part of what a rater waits for, and are printed beside it in part 3). Goal: median < 300 ms.
2. Marks per second sustained by 20 rater threads submitting at once through the study's own
   code path (token check, plan lookup, validation, one transaction per page), on SQLite
   (WAL, synchronous=FULL) and on PostgreSQL (a throwaway local cluster, default fsync on),
   measured in the same run.
3. A crowd (issue 14): 50 raters enrol themselves through the public link (each with its own
   Prolific-style participant id, arriving over 5 s) and rate every page at once, each page
   after a think time of 10-20 s (``--think``: a rater who keeps the listening rule plays both 5-s
   sounds of a joint page before marking, so 10 s is the least), on PostgreSQL and on SQLite in
   the same run; then every mark is checked to be stored exactly once. 45 of them are
   Streamlit-protocol raters (harness.loadtest: what a browser sends and fetches, minus
   drawing, since 50 Chromium tabs on the 2 cores that also serve the study would measure the
   browsers) and 5 are headless Chromium tabs, whose submit -> next page fully rendered
   (player decoded; on the page's clock, as in part 1) is the latency a rater sees; the same
   submits timed by the driver and the protocol raters' submit -> page delivered are printed
   beside it. The listening rule is off here (the think time stands for listening;
   the rule and the player's timing are tested in tests/study). Also printed: the study server's
   CPU seconds per page (from /proc, so independent of the machine's load) and the script runs
   per page view, counted on the wire (``new_session`` messages to the Chromium tabs and to the
   protocol raters): 1.00 means no page reruns the script.

Stimuli: real ESC-50 clips (5 s, 44.1 kHz) from $SONIEVAL_ESC50 or ../shared/esc50 as originals;
the two "systems" are the same clips low-passed and attenuated, made here only so that page
sizes are realistic: these are timing stimuli, not sonifications, and no rating here is a result.

    .venv/bin/python bench/bench_study.py [--clips 6] [--raters 20] [--crowd 50] [--crowd-clips 3] [--only crowd]
        [--browsers 5] [--backend both|postgres|sqlite] [--think 10,20]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the test harnesses (browser driver, load test, temporary PostgreSQL)

from sonieval.audio import read_audio, write_wav  # noqa: E402
from sonieval.study.create import StudySettings, create_from_folders  # noqa: E402
from sonieval.study.options import Enrolment  # noqa: E402
from sonieval.study.session import RaterSession  # noqa: E402
from sonieval.study.stimuli import lowpass_anchor  # noqa: E402
from sonieval.study.store import StudyStore  # noqa: E402


def esc50_clips(n: int) -> tuple[list[Path], str]:
    root = Path(os.environ.get("SONIEVAL_ESC50") or REPO.parent / "shared" / "esc50")
    audio = root / "audio"
    if audio.is_dir():
        files = sorted(audio.glob("*.wav"))[:: max(1, len(list(audio.glob("*.wav"))) // n)][:n]
        return files, f"ESC-50 clips from {root} ({len(files)} clips, 5 s, 44.1 kHz)"
    return [], "no ESC-50 copy found"


def make_inputs(work: Path, n_clips: int) -> tuple[Path, dict[str, Path], str]:
    """``n_clips`` rated clips and one more original no system has (the familiarisation examples come
    from a clip that is not rated)."""
    files, label = esc50_clips(n_clips + 1)
    if not files:
        raise SystemExit("bench_study: needs the ESC-50 subset (set SONIEVAL_ESC50)")
    originals = work / "originals"
    systems = {"timing-lowpass": work / "lowpass", "timing-quiet": work / "quiet"}
    spare, files = files[-1], files[:-1]
    x, rate, _ = read_audio(spare)
    write_wav(originals / spare.name, x, rate)
    for f in files:
        x, rate, _ = read_audio(f)
        write_wav(originals / f.name, x, rate)
        write_wav(systems["timing-lowpass"] / f.name, lowpass_anchor(x, rate, 2000.0), rate)
        write_wav(systems["timing-quiet"] / f.name, 0.3 * x, rate)
    return originals, systems, label


def create(
    work: Path, originals: Path, systems: dict[str, Path], storage: str | None, n_raters: int, study_id: str, **options
):
    settings = StudySettings(
        study_id=study_id, n_raters=n_raters, attention_checks=2, min_listen_fraction=0.0, **options
    )
    return create_from_folders(settings, originals, systems, study_dir=work / "study", storage=storage, progress=False)


def count_script_runs(page, counter: list[int]) -> None:
    """Count the script runs the server starts for this tab (each begins with a ``new_session``
    message on the app's websocket): one per page unless something reruns the script."""
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    def frame(payload) -> None:
        if isinstance(payload, (bytes, bytearray)):
            msg = ForwardMsg()
            try:
                msg.ParseFromString(bytes(payload))
            except Exception:  # noqa: BLE001 - not a ForwardMsg: not a run
                return
            if msg.WhichOneof("type") == "new_session":
                counter[0] += 1

    page.on("websocket", lambda ws: ws.on("framereceived", frame) if ws.url.endswith("/_stcore/stream") else None)


_DIAGNOSE_JS = """
() => ({state: (document.querySelector('[data-testid="stApp"]') || {getAttribute: () => null}).getAttribute('data-test-script-state'),
  stale: document.querySelectorAll('[data-stale="true"]').length,
  images_not_loaded: Array.from(document.querySelectorAll('img')).filter((i) => !i.complete || i.naturalWidth === 0).length,
  players: Array.from(document.querySelectorAll('iframe[src*="sonieval.study.player"]')).map((f) => {
    const p = f.contentWindow && f.contentWindow.abPlayer;
    return p ? {engine: p.engine !== null, generation: p.generation, marked: f.dataset.soniOld, error: p.last && p.last.error} : 'no player'; }),
  text: document.body.innerText.slice(0, 300)})
"""


async def wait_rendered(page, want: str) -> float:
    """Wait for the page ``want`` fully rendered; returns the milliseconds from the last submit to
    the first frame that showed it, on the page's clock (harness.browser.RENDERED_AT_JS). On a
    timeout say what was missing (a bench failure should name its cause)."""
    from harness.browser import RENDERED_AT_JS
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    try:
        handle = await page.wait_for_function(RENDERED_AT_JS, arg=want, timeout=180_000)
        return float(await handle.json_value())
    except PlaywrightTimeout:
        raise RuntimeError(
            f"Chromium rater: {want!r} not rendered in 180 s: {await page.evaluate(_DIAGNOSE_JS)}"
        ) from None


async def crowd_rater(
    browser, link: str, think: tuple[float, float], seed: int, latencies: list[tuple[float, float]], runs: list[int]
) -> int:
    """One self-enrolling rater in its own browser context; returns the pages it submitted, adds
    (in-page ms, driver seconds) per submit to ``latencies`` and the script runs its tab caused to
    ``runs[0]``."""
    import asyncio
    import random

    from harness.browser import (
        _INSTRUCTION_RE,
        _MARK_PLAYERS_OLD_JS,
        _PAGE_RE,
        _SETTLED_JS,
        _WHICH_PAGE_JS,
        SUBMIT_CLOCK_JS,
    )

    rng = random.Random(seed)
    context = await browser.new_context()
    page = await context.new_page()
    await page.add_init_script(SUBMIT_CLOCK_JS)
    page.set_default_timeout(180_000)
    count_script_runs(page, runs)
    await page.goto(link)
    submitted = 0
    while True:
        await page.wait_for_function(_SETTLED_JS, timeout=180_000)
        which = await page.evaluate(_WHICH_PAGE_JS)
        if which == "done":
            break
        if which == "familiarisation":
            await page.get_by_role("button", name="I am ready").click()
            await wait_rendered(page, "Page 1 of")
            continue
        if which != "page":
            raise RuntimeError(f"crowd rater reached a {which!r} page: {(await page.inner_text('body'))[:200]!r}")
        number, total = map(
            int, _PAGE_RE.search(await page.locator('[data-testid="stProgress"]').inner_text()).groups()
        )
        await asyncio.sleep(rng.uniform(*think))
        alerts = " ".join(await page.locator('[data-testid="stAlert"]').all_inner_texts())
        m = _INSTRUCTION_RE.search(alerts)
        target = int(m.group(1)) if m else rng.randint(1, 5)
        groups = page.locator('[data-testid="stRadio"]')
        for k in range(await groups.count()):
            option = groups.nth(k).locator('[data-testid="stRadioOption"]').nth(target - 1)
            for _attempt in range(20):
                await option.click()
                if await option.locator("input").is_checked():
                    break
                await asyncio.sleep(0.1)
        await page.evaluate(_MARK_PLAYERS_OLD_JS)
        start = time.perf_counter()
        await page.locator('[data-testid="stFormSubmitButton"] button').click()
        in_page_ms = await wait_rendered(page, "done" if number == total else f"Page {number + 1} of")
        latencies.append((in_page_ms, time.perf_counter() - start))
        submitted += 1
    await context.close()
    return submitted


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def crowd_latency(
    created, n: int, n_browsers: int, think: tuple[float, float]
) -> tuple[list[float], list[float], int, float, dict]:
    """Serve the study; ``n`` raters enrol through the public link and rate at once, ``n_browsers`` of
    them in headless Chromium, the rest as protocol raters. Returns (browser latencies, protocol
    latencies, pages submitted in all, CPU seconds the study server used meanwhile, script runs:
    {"browser": (runs, page views), "protocol": (runs, page views)})."""
    import asyncio

    from harness.browser import CHROMIUM_ARGS, chromium_path
    from harness.loadtest import ProtocolRater
    from playwright.async_api import async_playwright

    from sonieval.study.server import enrol_link, launch, wait_until_up

    proc, base = launch(created.storage, created.study_id, log_path=created.study_dir / "server.log")
    seen: list[tuple[float, float]] = []
    browser_runs = [0]

    async def run() -> tuple[list[float], int, dict]:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)

            async def one(i: int):
                await asyncio.sleep(5.0 * i / n)  # arrivals spread over 5 s
                query = f"PROLIFIC_PID=bench{i:03d}&STUDY_ID=B&SESSION_ID=s{i}"
                if i % max(1, n // max(n_browsers, 1)) == 0 and i // max(1, n // max(n_browsers, 1)) < n_browsers:
                    return await crowd_rater(
                        browser, enrol_link(base, created.enrol_key) + "&" + query, think, i, seen, browser_runs
                    )
                r = await ProtocolRater(base, f"enrol={created.enrol_key}&{query}", think=think, seed=i).run()
                if r.error:
                    raise RuntimeError(f"protocol rater {i}: {r.error}")
                return r

            try:
                results = await asyncio.gather(*(one(i) for i in range(n)))
            finally:
                await browser.close()
        protocol = [x for r in results if not isinstance(r, int) for x in r.latencies]
        pages = sum(r if isinstance(r, int) else r.pages for r in results)
        # page views: the rating pages submitted, plus enrolment, familiarisation and thank-you per rater
        pr = [r for r in results if not isinstance(r, int)]
        br = [r for r in results if isinstance(r, int)]
        runs = {
            "browser": (browser_runs[0], sum(br) + 3 * len(br)),
            "protocol": (sum(r.runs for r in pr), sum(r.pages for r in pr) + 3 * len(pr)),
        }
        return protocol, pages, runs

    try:
        wait_until_up(base, proc)
        cpu0 = process_cpu_s(proc.pid)
        protocol, pages, runs = asyncio.run(run())
        cpu = process_cpu_s(proc.pid) - cpu0
    finally:
        proc.kill()
        proc.wait(timeout=10)
    return seen, protocol, pages, cpu, runs


def exactly_once(storage: str, study_id: str) -> tuple[int, int, int]:
    """(marks stored, distinct (rater, trial, attribute), marks planned: two per page in joint mode)."""
    from harness.loadtest import mark_counts

    store = StudyStore(storage)
    total, distinct, pages = mark_counts(store, study_id)
    store.close()
    return total, distinct, pages * 2


N_BROWSERS = 5


def crowd_section(
    work: Path,
    originals: Path,
    systems: dict[str, Path],
    n: int,
    pg_url: str | None,
    think: tuple[float, float] = (10.0, 20.0),
    n_browsers: int = N_BROWSERS,
    backends: str = "both",
) -> bool:
    """Part 3 on PostgreSQL (when available) and SQLite; returns True when every mark is stored once."""
    ok = True
    print(
        f"\n[3] {n} self-enrolled raters at once ({n_browsers} in headless Chromium, {n - n_browsers} protocol raters), "
        f"think time {think[0]:g}-{think[1]:g} s per page, joint mode"
    )
    for name, url in (("PostgreSQL (local, fsync on)", pg_url), ("SQLite (WAL, synchronous=FULL)", None)):
        if backends != "both" and not name.lower().startswith(backends):
            continue
        if name.startswith("PostgreSQL") and url is None:
            print("    PostgreSQL: not measured (no server)")
            continue
        created = create(
            work / f"crowd-{name.split()[0].lower()}",
            originals,
            systems,
            url,
            n,
            "crowd",
            enrolment=Enrolment(enabled=True, max_per_minute=1000, max_per_ip_per_hour=1000),
        )
        load = os.getloadavg()[0]
        seen, protocol, pages, cpu, runs = crowd_latency(created, n, n_browsers, think)
        ms, driver_ms, pms = (
            np.array([x for x, _ in seen]),
            np.array([y for _, y in seen]) * 1000,
            np.array(protocol) * 1000,
        )
        total, distinct, planned = exactly_once(created.storage, "crowd")
        ok &= total == distinct == planned
        print(
            f"    {name}: {pages} pages submitted by {n} raters; marks {total} stored, {distinct} distinct, {planned} planned "
            f"({'every mark exactly once' if total == distinct == planned else 'MISMATCH'}); load average {load:.1f} -> "
            f"{os.getloadavg()[0]:.1f}"
        )
        print(
            f"      in Chromium ({len(ms)} submits): submit -> next page fully rendered median {np.median(ms):.0f} ms, "
            f"p95 {np.percentile(ms, 95):.0f} ms, max {ms.max():.0f} ms (goal: median < 300 ms: "
            f"{'met' if np.median(ms) < 300 else 'NOT met'}); on the page's clock, from the submit's click "
            "event to the first frame showing the next page"
        )
        print(
            f"        the same submits timed by the test driver (Playwright's click checks and round trips "
            f"included): median {np.median(driver_ms):.0f} ms, p95 {np.percentile(driver_ms, 95):.0f} ms"
        )
        print(
            f"      protocol raters ({len(pms)} submits): submit -> page delivered median {np.median(pms):.0f} ms, "
            f"p95 {np.percentile(pms, 95):.0f} ms"
        )
        print(
            f"      study server: {cpu:.1f} CPU s for {pages} pages = {1000 * cpu / max(pages, 1):.0f} ms of CPU per page "
            "(enrolment, familiarisation, every rerun and media request included; independent of the machine's load)"
        )
        print(
            "      script runs per page view (rating pages + enrolment, familiarisation, thank-you): "
            + ", ".join(f"{k} raters {r / max(v, 1):.2f} ({r} runs / {v} views)" for k, (r, v) in runs.items())
        )
    return ok


def browser_latency(created) -> list[float]:
    from harness.browser import RaterDriver, headless_chromium

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
                rater.choose_and_submit(3)
                times.append(rater.wait_rendered_ms(None if number == total else number + 1) / 1000)
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
    ap.add_argument("--crowd", type=int, default=50, help="self-enrolled raters in part 3 (0: skip it)")
    ap.add_argument("--crowd-clips", type=int, default=3, help="clips of the crowd study (pages = clips x 4 + 2)")
    ap.add_argument("--only", choices=["crowd"], help="run part 3 only")
    ap.add_argument(
        "--browsers",
        type=int,
        default=N_BROWSERS,
        help="part 3: raters in headless Chromium (the rest speak the protocol)",
    )
    ap.add_argument(
        "--backend", choices=["both", "postgres", "sqlite"], default="both", help="part 3: storage to serve from"
    )
    ap.add_argument(
        "--think",
        default="10,20",
        help="part 3: a rater's seconds per page, LO,HI (uniform). Default 10-20 s: "
        "the listening rule asks each 5-s sound of a joint page to be played in full (10 s) before marking",
    )
    args = ap.parse_args()
    args.think = tuple(float(x) for x in args.think.split(","))
    import sqlalchemy
    import streamlit

    from sonieval import __version__

    work = Path(tempfile.mkdtemp(prefix="bench-study-"))
    if args.only == "crowd":
        print(
            f"bench_study: sonieval {__version__}, streamlit {streamlit.__version__}, {os.cpu_count()} CPU(s), "
            f"load average {os.getloadavg()[0]:.1f} at start; {esc50_clips(args.crowd_clips)[1]}; timing stimuli only"
        )
        return crowd_only(work, args)
    originals, systems, label = make_inputs(work / "inputs", args.clips)
    print(
        f"bench_study: sonieval {__version__}, streamlit {streamlit.__version__}, SQLAlchemy {sqlalchemy.__version__}, "
        f"{os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.1f} at start"
    )
    print(f"stimuli: {label}; timing stimuli only, not sonifications")

    sqlite_study = create(work / "sqlite", originals, systems, None, args.raters, "bench")
    pages = sqlite_study.n_trials
    times = browser_latency(sqlite_study)
    ms = np.array(times) * 1000
    print(
        f"\n[1] submit -> next page fully rendered, headless Chromium, SQLite, {len(ms)} pages of 1 rater (joint mode)"
    )
    print(
        f"    median {np.median(ms):.0f} ms, p95 {np.percentile(ms, 95):.0f} ms, min {ms.min():.0f} ms, max {ms.max():.0f} ms "
        f"(goal: median < 300 ms: {'met' if np.median(ms) < 300 else 'NOT met'})"
    )

    tokens = [tok for _, tok in sqlite_study.rater_tokens[1:]]
    more = StudyStore(sqlite_study.storage).invite("bench", 1)
    tokens.append(more[0][1])
    sqlite_rate, sqlite_marks, sqlite_wall = throughput(sqlite_study.storage, "bench", tokens)
    print(f"\n[2] {len(tokens)} concurrent raters x {pages} pages x 2 marks, each page one transaction")
    print(
        f"    SQLite (WAL, synchronous=FULL):       {sqlite_rate:7.0f} marks/s ({sqlite_marks} marks in {sqlite_wall:.2f} s)"
    )

    from harness.pgtemp import start_temp_postgres

    try:
        pg = start_temp_postgres()
    except RuntimeError as exc:
        print(f"    PostgreSQL: not measured ({exc})")
        return 0
    try:
        url = pg.database_url(f"bench_{uuid.uuid4().hex[:6]}")
        pg_study = create(work / "pg", originals, systems, url, len(tokens), "bench")
        pg_rate, pg_marks, pg_wall = throughput(url, "bench", [tok for _, tok in pg_study.rater_tokens])
        print(
            f"    PostgreSQL (local, fsync on):          {pg_rate:7.0f} marks/s ({pg_marks} marks in {pg_wall:.2f} s)"
        )
        print(f"    ratio PostgreSQL / SQLite: {pg_rate / sqlite_rate:.2f}")
        ok = (
            crowd_section(
                work,
                *make_inputs(work / "crowd-inputs", args.crowd_clips)[:2],
                args.crowd,
                think=args.think,
                pg_url=pg.database_url(f"crowd_{uuid.uuid4().hex[:6]}"),
                n_browsers=args.browsers,
                backends=args.backend,
            )
            if args.crowd
            else True
        )
    finally:
        pg.stop()
    print(f"\nload average {os.getloadavg()[0]:.1f} at end (the machine is shared; absolute numbers vary)")
    return 0 if ok else 1


def crowd_only(work: Path, args) -> int:
    from harness.pgtemp import start_temp_postgres

    originals, systems, _ = make_inputs(work / "crowd-inputs", args.crowd_clips)
    try:
        pg = start_temp_postgres() if args.backend != "sqlite" else None
    except RuntimeError as exc:
        print(f"PostgreSQL not available ({exc})")
        pg = None
    try:
        ok = crowd_section(
            work,
            originals,
            systems,
            args.crowd,
            pg.database_url(f"crowd_{uuid.uuid4().hex[:6]}") if pg else None,
            think=args.think,
            n_browsers=args.browsers,
            backends=args.backend,
        )
    finally:
        if pg:
            pg.stop()
    print(f"\nload average {os.getloadavg()[0]:.1f} at end (the machine is shared; absolute numbers vary)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
