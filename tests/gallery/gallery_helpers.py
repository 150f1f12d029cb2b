"""Helpers of the gallery tests: a small real results folder (the pipeline's own stages on synthetic tones,
small random models, the weight-free mel codec), a ratings export for it, and the browser's audio tap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from sonieval.audio import CODEC_RATE, write_wav
from sonieval.tables import write_table

CLIP_SECONDS = 2.0
SPLITS = ["train"] * 6 + ["validation"] * 2 + ["test"] * 3  # the 3 test clips are the listening set


def make_clips(root: Path, seed: int = 0) -> pd.DataFrame:
    """Decaying tones with a little noise (test input, not ESC-50), and the clips table the clips stage writes."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(CLIP_SECONDS * CODEC_RATE)) / CODEC_RATE
    rows = []
    for i, split in enumerate(SPLITS):
        cls = i % 3
        x = 0.6 * np.exp(-t * (1.5 + cls)) * np.sin(2 * np.pi * 220.0 * (cls + 1) * t) + 0.02 * rng.standard_normal(
            t.size
        )
        clip_id = f"{split}-{i:02d}-{cls}"
        path = write_wav(root / "audio" / f"{clip_id}.wav", x.astype(np.float32), CODEC_RATE)
        rows.append(
            dict(clip_id=clip_id, filename=path.name, fold=1, target=cls, category=f"class{cls}", path=str(path))
            | dict(split=split, listening=split == "test", status="ok", error=None)
        )
    clips = pd.DataFrame(rows)
    write_table(clips, root / "results" / "tables" / "clips.parquet", "clips")
    return clips


def run_pipeline(root: Path):
    """prepare, train, sonify and score a protocol of 6 systems (LIN under two alignments, each with its
    untrained and shuffled controls) and the mel codec's ceiling, over 3 listening clips."""
    import torch

    from sonieval.ledger import open_ledger
    from sonieval.metrics.leaderboard import run_score
    from sonieval.pipeline.prepare import run_prepare
    from sonieval.pipeline.sonify import run_sonify
    from sonieval.pipeline.train import run_train
    from sonieval.protocol import load_protocol

    make_clips(root)
    protocol = {
        "name": "gallery-test",
        "results_dir": str(root / "results"),
        "data": {"esc50": "synthetic", "clip_seconds": CLIP_SECONDS},
        "encoders": [{"name": "ast", "size": "small"}],
        "codec": {"name": "mel", "iterations": 2},
        "gates": {"variants": ["LIN"], "alignments": ["transpose", "reshape"], "controls": ["untrained", "shuffled"]},
        "training": {"epochs": [1], "learning_rates": [0.01], "batch_size": 4},
        "sonify": {"postprocess": ["none"]},
        "metrics": {
            "embeddings": ["logmel"],
            "metrics": ["kad"],
            "bootstrap": 20,
            "item_metrics": ["logmel_l1", "envelope_correlation"],
        },
    }
    (root / "protocol.yaml").write_text(yaml.safe_dump(protocol))
    proto = load_protocol(root / "protocol.yaml")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with open_ledger(proto.results_path) as ledger:
            for stage in (run_prepare, run_train, run_sonify, run_score):
                stage(proto, ledger, progress=False)
    finally:
        torch.set_num_threads(threads)
    return proto


def write_ratings(results: Path) -> pd.DataFrame:
    """A ratings export (SIMULATED, marked so): two raters mark every sonification and hidden reference."""
    son = pd.read_parquet(results / "tables" / "sonifications.parquet")
    rows = []
    for k, r in enumerate(son.sort_values(["clip_id", "system_id"]).itertuples()):
        for rater in ("r1", "r2"):
            for attribute in ("visual", "audio"):
                rows.append(
                    (
                        r.clip_id,
                        r.system_id,
                        "sonification",
                        rater,
                        attribute,
                        1 + (k + len(rater) + len(attribute)) % 5,
                    )
                )
    for clip in sorted(son["clip_id"].unique()):
        for rater in ("r1", "r2"):
            rows.append((clip, "reference", "reference", rater, "audio", 5 if rater == "r1" else 4))
    out = pd.DataFrame(rows, columns=["clip_id", "system_id", "role", "rater_id", "attribute", "mark"])
    out = out.assign(
        study_id="s",
        trial_id=[f"t{i}" for i in range(len(out))],
        submitted_at="2025-01-01T00:00:00",
        position=0,
        seed=0,
        mode="joint",
        scale_min=1,
        scale_max=5,
        simulated=True,
    )
    (results / "study").mkdir(exist_ok=True)
    write_table(out, results / "study" / "ratings.parquet", "ratings")
    return out


# An AudioWorklet on the engine's output: every rendered block with its frame number (as the study's player
# tests tap the player). Installed after the row's engine is built.
TAP_JS = """
async () => {
  const g = window.sonievalGallery, ctx = g.ctx, engine = g.engine;
  const code = `class Tap extends AudioWorkletProcessor {
    process(inputs) { const ch = inputs[0] && inputs[0][0]; if (ch) this.port.postMessage({f: currentFrame, d: ch.slice(0)}); return true; }
  }
  registerProcessor('gallery-test-tap', Tap);`;
  await ctx.audioWorklet.addModule(URL.createObjectURL(new Blob([code], {type: 'application/javascript'})));
  const node = new AudioWorkletNode(ctx, 'gallery-test-tap', {channelCount: 1, channelCountMode: 'explicit'});
  window.__tap = {frames: [], data: []};
  node.port.onmessage = (e) => { window.__tap.frames.push(e.data.f); window.__tap.data.push(e.data.d); };
  engine.output.connect(node);
  const sink = ctx.createGain(); sink.gain.value = 0; node.connect(sink); sink.connect(ctx.destination);
  window.__switches = [];
  const select = engine.select.bind(engine);
  engine.select = (i) => { const at = ctx.currentTime, audible = select(i); window.__switches.push({index: i, at: at, audible: audible}); return audible; };
  return ctx.sampleRate;
}
"""

# Float32 arrays to Python as base64 (a JSON list of 10^5 numbers is slow to ship).
TAP_READ_JS = """
() => {
  const pack = (arrays) => { const n = arrays.reduce((a, d) => a + d.length, 0), all = new Float32Array(n);
    let k = 0; for (const d of arrays) { all.set(d, k); k += d.length; }
    const bytes = new Uint8Array(all.buffer); let bin = '';
    for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    return btoa(bin); };
  const e = window.sonievalGallery.engine, t = window.__tap;
  return {frames: t.frames, sizes: t.data.map((d) => d.length), tap: pack(t.data), sr: e.ctx.sampleRate,
          sounds: e.buffers.map((b) => pack([b.getChannelData(0)])), switches: window.__switches};
}
"""


def decode_floats(b64: str) -> np.ndarray:
    import base64

    return np.frombuffer(base64.b64decode(b64), dtype=np.float32).astype(np.float64)


def locate(block: np.ndarray, sound: np.ndarray, expected: int, search: int) -> tuple[int, float]:
    """(sample offset in ``sound`` where ``block`` fits best within ``expected`` ± ``search``, its normalised
    correlation there). The engine may start a source between samples (interpolated), so the fit is by
    correlation, not by equality."""
    lo = max(0, expected - search)
    hi = min(len(sound) - len(block), expected + search)
    if hi <= lo:
        return -1, 0.0
    windows = np.lib.stride_tricks.sliding_window_view(sound[lo : hi + len(block)], len(block))
    x = block - block.mean()
    w = windows - windows.mean(axis=1, keepdims=True)
    corr = (w @ x) / (np.linalg.norm(w, axis=1) * np.linalg.norm(x) + 1e-12)
    k = int(np.argmax(corr))
    return lo + k, float(corr[k])
