"""bench_gallery: build time and size of the listening gallery, side by side in one run (ratios; the machine
may be shared and loaded), for the two sizes the issue names:

- 20 clips x 25 systems (2 encoders x 4 gates x trained, shuffled, untrained, and the codec's ceiling);
- 10 clips x 217 systems: the system ids of protocols/controls.yaml (2 encoders x 3 gates x 4 alignments
  x 3 seeds x trained, shuffled, untrained, and the ceiling).

The folders are SYNTHESISED from real decoded audio: a real results folder (``--source``, e.g. the demo's,
made by ``sonieval run``; default: a small pipeline run made here on synthetic tones, 5 s clips, the mel
codec) lends its originals and its decoded sonifications; each synthetic system's WAV for a clip is one of
that clip's real decoded sonifications, scaled by a gain of its own (so every file, copy and picture is
distinct work, as in a real folder). Per folder: the first build (every copy and thumbnail made), a rerun
(everything reused) and their ratio; the page, sounds and thumbnails in MB; the page size had every copy
been inlined into it (the alternative to per-cell sound files), as a ratio; the copies' measured loudness
and true peak (worst case); and, with Chromium, the page opened from file:// at 1280 x 800: load time, one
row's sounds fetched and decoded (original + 24 columns), and the JS heap after it.

    .venv/bin/python bench/bench_gallery.py [--source RESULTS] [--workers 2] [--screenshot docs/images/gallery_1280x800.png]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # harness (Chromium's path)
sys.path.insert(0, str(REPO / "tests" / "gallery"))  # gallery_helpers: the small pipeline run

from sonieval.audio import read_audio, write_wav  # noqa: E402
from sonieval.tables import make_system_id, resolve_table_path, write_table  # noqa: E402

CONTROLS = ("", ".shuffled", ".untrained")


def small_ids() -> list[str]:
    out = []
    for enc in ("ast", "hubert"):
        for variant in ("LIN", "CONV", "ATTN", "CONV-R"):
            for c in CONTROLS:
                lr, ep = (0.0, 0) if c == ".untrained" else (0.005, 8)
                out.append(make_system_id(enc, variant + c, lr, ep, "transpose", "none"))
    return out + [make_system_id("codec", "mel", 0.0, 0, "none", "codec")]


def controls_ids() -> list[str]:
    """The 217 system ids of protocols/controls.yaml."""
    out = []
    for enc in ("ast", "hubert"):
        for variant in ("LIN", "CONV", "ATTN"):
            for align in ("reshape", "transpose", "grid", "grid-pool"):
                for seed in (42, 43, 44):
                    for c in CONTROLS:
                        lr, ep = (0.0, 0) if c == ".untrained" else (0.005, 2)
                        out.append(make_system_id(enc, f"{variant}{c}.s{seed}", lr, ep, align, "none"))
    return out + [make_system_id("codec", "mel", 0.0, 0, "none", "codec")]


def make_source(work: Path) -> Path:
    """A small real results folder: synthetic 5 s tones through the pipeline (small random AST, mel codec)."""
    import gallery_helpers

    gallery_helpers.CLIP_SECONDS = 5.0
    gallery_helpers.SPLITS = ["train"] * 8 + ["validation"] * 2 + ["test"] * 20
    print(f"source: a pipeline run on synthetic 5 s tones in {work} ...", flush=True)
    t = time.perf_counter()
    proto = gallery_helpers.run_pipeline(work)
    print(f"source: made in {time.perf_counter() - t:.0f} s", flush=True)
    return proto.results_path


def synthesise(source: Path, dest: Path, n_clips: int, system_ids: list[str]) -> Path:
    """``dest``: a results folder of ``n_clips`` x ``system_ids`` built from ``source``'s real audio."""
    son = pd.read_parquet(source / "tables" / "sonifications.parquet")
    son = son[son["status"] == "done"]
    clips = pd.read_parquet(source / "tables" / "clips.parquet")
    chosen = sorted(son["clip_id"].unique())[:n_clips]
    if len(chosen) < n_clips:
        raise SystemExit(f"{source}: only {len(chosen)} sonified clips, {n_clips} needed")
    (dest / "tables").mkdir(parents=True)
    write_table(clips[clips["clip_id"].isin(chosen)], dest / "tables" / "clips.parquet", "clips")
    rng = np.random.default_rng(0)
    rows = []
    for clip in chosen:
        real = [resolve_table_path(p, source) for p in son.loc[son["clip_id"] == clip, "path"]]
        decoded = [read_audio(p)[0] for p in real]
        for k, sid in enumerate(system_ids):
            x = decoded[k % len(decoded)] * np.float32(10 ** (rng.uniform(-20, 6) / 20))
            rel = f"sonifications/{sid}/{clip}.wav"
            write_wav(dest / rel, x, 44_100, subtype="FLOAT")
            rows.append({"system_id": sid, "clip_id": clip, "path": rel})
    table = pd.DataFrame(rows)
    from sonieval.tables import system_parts

    parts = pd.DataFrame([system_parts(s) for s in table["system_id"]])
    table = pd.concat([table, parts.drop(columns=["control", "codec"])], axis=1).assign(
        control=parts["control"], sha256=None, status="done", error=None, codec="mel"
    )
    table["category"] = table["clip_id"].map(clips.set_index("clip_id")["category"])
    write_table(table, dest / "tables" / "sonifications.parquet", "sonifications")
    return dest


def copy_stats(gallery: Path) -> dict:
    import json

    from sonieval.loudness import CEILING_DBTP

    records = list(json.loads((gallery / "cache.json").read_text())["copies"].values())
    steered = [r for r in records if r["limited"] in ("", "clip") and r["lufs"] is not None]
    return {
        "max_true_peak_dbtp": max(r["true_peak_dbtp"] for r in records if r["true_peak_dbtp"] is not None),
        "ceiling_dbtp": CEILING_DBTP,
        "max_lu_off_aim": max(abs(r["lufs"] - r["target_lufs"]) for r in steered) if steered else None,
        "kbps": 8 * sum(r["bytes"] for r in records) / sum(r["seconds"] for r in records) / 1000,
    }


def in_chromium(page: Path, screenshot: Path | None) -> dict | None:
    from harness.browser import CHROMIUM_ARGS, chromium_path

    if chromium_path() is None:
        return None
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        tab = browser.new_page(viewport={"width": 1280, "height": 800})
        t = time.perf_counter()
        tab.goto(page.resolve().as_uri())
        tab.wait_for_function("() => window.sonievalGallery && document.querySelectorAll('#grid tbody tr').length")
        loaded = time.perf_counter() - t
        t = time.perf_counter()
        tab.locator("#grid tbody tr").nth(0).locator(".cell").nth(1).click()
        tab.wait_for_function(
            "() => window.sonievalGallery.engine && window.sonievalGallery.engine.playing", timeout=60_000
        )
        row = time.perf_counter() - t
        n = tab.evaluate("() => window.sonievalGallery.player.sounds.length")
        heap = tab.evaluate("() => performance.memory ? performance.memory.usedJSHeapSize : null")
        if screenshot is not None:
            tab.wait_for_timeout(1500)
            tab.evaluate("() => document.querySelectorAll('#grid img').forEach((i) => { i.loading = 'eager'; })")
            tab.wait_for_function(
                "() => Array.from(document.querySelectorAll('#grid img')).slice(0, 40).every((i) => i.complete)"
            )
            tab.screenshot(path=str(screenshot))
        browser.close()
    return {"load_s": loaded, "row_s": row, "row_sounds": n, "heap_mb": heap / 1e6 if heap else None}


def bench_one(name: str, folder: Path, workers: int, screenshot: Path | None) -> dict:
    from sonieval.gallery import build_gallery

    t = time.perf_counter()
    first = build_gallery(folder, workers=workers)
    t_first = time.perf_counter() - t
    t = time.perf_counter()
    again = build_gallery(folder, workers=workers)
    t_again = time.perf_counter() - t
    assert again.made == 0, again
    b = first.bytes
    out = {
        "name": name,
        "clips": first.n_clips,
        "systems": first.n_systems,
        "sounds": first.n_cells,
        "first_s": t_first,
        "rerun_s": t_again,
        "per_sound_ms": 1000 * t_first / first.n_cells,
        "page_mb": b["page"] / 1e6,
        "sounds_mb": b["sounds"] / 1e6,
        "thumbs_mb": b["thumbs"] / 1e6,
        "inlined_page_mb": (b["page"] + b["sounds"]) / 1e6,
        **copy_stats(folder / "gallery"),
    }
    out["browser"] = in_chromium(folder / "gallery" / "index.html", screenshot)
    return out


def report(r: dict) -> None:
    print(f"\n== {r['name']}: {r['clips']} clips x {r['systems']} systems = {r['sounds']} sounds (originals included)")
    print(
        f"first build {r['first_s']:.1f} s ({r['per_sound_ms']:.0f} ms per sound); rerun {r['rerun_s']:.2f} s; "
        f"rerun / first = {r['rerun_s'] / r['first_s']:.3f}"
    )
    print(
        f"page {r['page_mb']:.2f} MB, sounds {r['sounds_mb']:.1f} MB ({r['kbps']:.0f} kbit/s MP3, base64 in .js), "
        f"thumbnails {r['thumbs_mb']:.1f} MB; every sound inlined the page would be {r['inlined_page_mb']:.0f} MB "
        f"({r['inlined_page_mb'] / r['page_mb']:.0f}x)"
    )
    off = r["max_lu_off_aim"]
    print(
        f"copies: max true peak {r['max_true_peak_dbtp']:.2f} dBTP (ceiling {r['ceiling_dbtp']:g}); "
        f"max |loudness - aim| {off:.2f} LU"
        if off is not None
        else ""
    )
    b = r["browser"]
    if b:
        heap = f", JS heap {b['heap_mb']:.0f} MB" if b["heap_mb"] else ""
        print(
            f"Chromium, file://, 1280x800: page ready in {b['load_s']:.2f} s; a row's {b['row_sounds']} sounds "
            f"loaded, decoded and playing {b['row_s']:.2f} s after the click{heap}"
        )
    else:
        print("Chromium not installed: page timings skipped")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, help="a real results folder with sonifications (default: made here)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--screenshot", type=Path, help="save the 25-system page at 1280x800, a row playing, here")
    ap.add_argument("--keep", action="store_true", help="keep the synthesised folders (printed)")
    ap.add_argument("--sizes", default="small,controls", help="which folders: small, controls (comma-separated)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_gallery_"))
    try:
        source = args.source or make_source(work / "source")
        sizes = {
            "small": ("20 clips x 25 systems", 20, small_ids(), args.screenshot),
            "controls": ("controls-sized: 10 clips x 217 systems", 10, controls_ids(), None),
        }
        results = []
        for size in args.sizes.split(","):
            name, n_clips, ids, shot = sizes[size]
            folder = synthesise(source, work / size / "results", n_clips, ids)
            print(f"{name}: synthesised from the real audio of {source} (see the docstring)", flush=True)
            results.append(bench_one(name, folder, args.workers, shot))
        for r in results:
            report(r)
        if len(results) == 2:
            a, b = results
            print(f"\nper sound, controls-sized / small: {b['per_sound_ms'] / a['per_sound_ms']:.2f} (1 = linear)")
    finally:
        if args.keep:
            print(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
