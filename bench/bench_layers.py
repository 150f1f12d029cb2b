"""Layer sweep cost: every layer of an encoder from one forward pass vs its deepest layer alone.

    .venv/bin/python bench/bench_layers.py [--clips 2] [--repeats 3] [--threads 2] [--full ast,hubert]
                                           [--prepare wavlm,whisper,clap,ast:full,hubert:full] [--prepare-clips 4]

For each registered encoder (small random configs: real geometry, narrow and shallow), times
``embed_layers(audio, "all")`` (input + every block, one forward pass, hidden states kept) against
``embed(audio, layer=<deepest block>)`` (the same forward, one output kept) on the same clips, and
prints the ratio (goal <= 1.2x), of wall time and of the process's CPU time (the CPU-time ratio is
the one to trust on a shared machine: other processes' load stretches wall time unevenly). For context it also times one forward per layer (what a loop over
``embed(audio, layer=k)`` would cost). ``--full`` names encoders to time at their published size with
*random* weights (a forward costs the same with any weights; the weights cannot be fetched here);
by default AST and HuBERT (``--full all`` adds wav2vec 2.0, WavLM, Whisper base and CLAP's HTSAT).
Clips: real ESC-50 clips (``$SONIEVAL_ESC50`` or ../shared/esc50) when present, else noise (said in
the output).

Second part, at the level of the ``prepare`` stage (``--prepare``; ``NAME`` = small config,
``NAME:full`` = published size, random weights): the stage's embedding pass
(``sonieval.pipeline.prepare.cache_embeddings``: hashing and reading the clips, the forward, float16
checks, one atomic ``.npy`` per clip and layer, one ledger record per clip and layer) for
``layer: all`` against ``layer: <deepest>`` into fresh results and cache folders, the encoder loaded
once beforehand (loading costs the same on both sides). Goal: the sweep <= 1.2x the deepest layer alone. Times are the minimum over ``--repeats`` (the least disturbed run, as timeit advises: on a
shared machine other processes only ever add time); the two sides run alternately (a-b, b-a) so that
both see the same machine load.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

FULL_ALL = ("ast", "hubert", "wav2vec2", "wavlm", "whisper", "clap")


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def alternate(fa, fb, repeats: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """Least (wall, CPU) seconds of ``fa`` and ``fb`` run alternately, a-b then b-a (after two untimed
    calls of each: the first calls of a shape are slower while allocators and thread pools warm up)."""
    for _ in range(2):
        fa(), fb()
    ta, tb = [], []
    for i in range(repeats):
        if i % 2:
            tb.append(timed(fb))
            ta.append(timed(fa))
        else:
            ta.append(timed(fa))
            tb.append(timed(fb))
    least = lambda xs, i: min(x[i] for x in xs)  # noqa: E731
    return (least(ta, 0), least(ta, 1)), (least(tb, 0), least(tb, 1))


def clips(n: int, sample_rate: int) -> tuple[torch.Tensor, str]:
    """[n, 5 s] at ``sample_rate``: ESC-50 clips when a copy is found, else noise."""
    import pandas as pd

    from sonieval.audio import load_clip

    root = Path(os.environ.get("SONIEVAL_ESC50", "") or REPO.parent / "shared" / "esc50")
    meta = root / "meta" / "esc50.csv"
    if meta.is_file():
        files = sorted(pd.read_csv(meta)["filename"])[:n]
        audio = [torch.from_numpy(load_clip(root / "audio" / f, sample_rate, 5.0).samples) for f in files]
        if len(audio) == n:
            return torch.stack(audio), f"{n} ESC-50 clips ({root})"
    return torch.randn(
        n, 5 * sample_rate, generator=torch.Generator().manual_seed(0)
    ) * 0.1, f"{n} NOISE clips (no ESC-50 copy)"


def full_size(name: str):
    """The published architecture with random weights, loaded for every layer."""
    import transformers

    from sonieval.models.encoders import encoder_class

    cls = encoder_class(name)
    config_cls = {
        "ast": "ASTConfig",
        "hubert": "HubertConfig",
        "wav2vec2": "Wav2Vec2Config",
        "wavlm": "WavLMConfig",
        "whisper": None,
        "clap": None,
    }[name]
    torch.manual_seed(0)
    if name == "whisper":
        config = transformers.WhisperConfig(
            d_model=512, encoder_layers=6, encoder_attention_heads=8, encoder_ffn_dim=2048, decoder_layers=1
        )  # openai/whisper-base's encoder; the decoder is dropped
    elif name == "clap":
        config = transformers.ClapConfig()  # laion/clap-htsat-unfused's audio tower (HTSAT 2,2,6,2, width 96..768)
    else:
        config = getattr(transformers, config_cls)()
    model = getattr(transformers, cls.model_class_name)(config)
    encoder = cls(model, None, model_id=f"{name} full-size random", random_init=True)
    encoder.set_layers("all")
    return encoder


def small(name: str):
    import types

    from sonieval.models.encoders import load_encoder

    return load_encoder(types.SimpleNamespace(name=name, model=None, size="small", finetuned=None, layer="all"))


def blocks_run(encoder, fn) -> int:
    """How many transformer-block forwards ``fn()`` runs (counted with hooks: the cost-free check of one pass)."""
    count = [0]
    hooks = [b.register_forward_pre_hook(lambda m, a: count.__setitem__(0, count[0] + 1)) for b in encoder._blocks()]
    try:
        fn()
    finally:
        for h in hooks:
            h.remove()
    return count[0]


def measure(encoder, n_clips: int, repeats: int, per_layer: bool) -> dict:
    audio, label = clips(n_clips, encoder.sample_rate)
    deepest = encoder.num_blocks
    counted = (
        blocks_run(encoder, lambda: encoder.embed_layers(audio, "all")),
        blocks_run(encoder, lambda: encoder.embed(audio, layer=deepest)),
    )
    t_all, t_one = alternate(
        lambda: encoder.embed_layers(audio, "all"), lambda: encoder.embed(audio, layer=deepest), repeats
    )
    row = {
        "layers": deepest + 1,
        "all": t_all,
        "deepest": t_one,
        "clips": label,
        "ratio_wall": t_all[0] / t_one[0],
        "ratio_cpu": t_all[1] / t_one[1],
        "loop": float("nan"),
        "blocks": counted,
    }
    if per_layer:  # one forward per layer, least CPU time of 3 (context only)
        cpu = min(
            timed(lambda: [encoder.embed(audio, layer=layer) for layer in encoder.layers("all")])[1] for _ in range(3)
        )
        row["loop"] = cpu / t_one[1]
    return row


def esc50_clips_table(n: int, folder: Path):
    """A clips table (the clips stage's interface) of ``n`` ESC-50 clips, else ``n`` noise WAVs written to ``folder``."""
    import numpy as np
    import pandas as pd

    from sonieval.audio import CODEC_RATE, write_wav

    root = Path(os.environ.get("SONIEVAL_ESC50", "") or REPO.parent / "shared" / "esc50")
    meta = root / "meta" / "esc50.csv"
    if meta.is_file():
        files = [root / "audio" / f for f in sorted(pd.read_csv(meta)["filename"])[:n]]
        label = f"{n} ESC-50 clips"
    else:
        rng = np.random.default_rng(0)
        files = [
            write_wav(folder / f"noise{i}.wav", 0.1 * rng.standard_normal(5 * CODEC_RATE).astype("float32"), CODEC_RATE)
            for i in range(n)
        ]
        label = f"{n} NOISE clips"
    return pd.DataFrame(
        {
            "clip_id": [f.stem for f in files],
            "filename": [f.name for f in files],
            "fold": 1,
            "target": 0,
            "category": "x",
            "path": [str(f) for f in files],
            "split": "train",
            "listening": False,
            "status": "ok",
            "error": None,
        }
    ), label


def prepare_pass(encoder, layers, clips, root: Path) -> None:
    """The prepare stage's embedding pass for ``layers`` into fresh results and cache folders under ``root``."""
    import shutil

    from sonieval.ledger import open_ledger
    from sonieval.pipeline.prepare import cache_embeddings
    from sonieval.protocol import parse_protocol

    shutil.rmtree(root, ignore_errors=True)
    proto = parse_protocol(
        {
            "name": "bench",
            "results_dir": str(root / "results"),
            "cache_dir": str(root / "cache"),
            "encoders": [{"name": encoder.name, "size": "small"}],
            "codec": {"name": "mel"},
        }
    )
    encoder.set_layers(layers)
    with open_ledger(root) as ledger:
        rows, _ = cache_embeddings(proto, ledger, clips, encoder, batch_size=8)
    if any(r["status"] != "done" for r in rows):
        raise SystemExit(f"bench_layers: a prepare pass failed: {[r['error'] for r in rows if r['error']][:1]}")


def measure_prepare(names: list[str], n_clips: int, repeats: int) -> float:
    """Print the prepare-stage sweep vs deepest-layer-alone rows; returns the worst CPU-time ratio."""
    import tempfile

    print(f"\nprepare stage (cache_embeddings into fresh folders; encoder loaded once; least of {repeats}, alternated)")
    print(
        f"{'encoder':<26}{'layers':>7}{'all: wall/CPU s':>18}{'deepest: wall/CPU s':>22}{'ratio wall':>11}"
        f"{'ratio CPU':>10}{'files':>12}  clips"
    )
    worst = 0.0
    with tempfile.TemporaryDirectory(prefix="bench_layers_") as tmp:
        tmp = Path(tmp)
        clips, label = esc50_clips_table(n_clips, tmp / "audio")
        for item in names:
            name, _, size = item.partition(":")
            encoder = full_size(name) if size == "full" else small(name)
            deepest = encoder.num_blocks
            t_all, t_one = alternate(
                lambda e=encoder: prepare_pass(e, "all", clips, tmp / "a"),
                lambda e=encoder, d=deepest: prepare_pass(e, d, clips, tmp / "b"),
                repeats,
            )
            ratio = t_all[1] / t_one[1]
            worst = max(worst, ratio)
            files = f"{n_clips * (deepest + 1)} vs {n_clips}"
            print(
                f"{name + ' (' + (size or 'small') + ', random)':<26}{deepest + 1:>7}{t_all[0]:>9.3f}/{t_all[1]:<8.3f}"
                f"{t_one[0]:>13.3f}/{t_one[1]:<8.3f}{t_all[0] / t_one[0]:>10.2f}x{ratio:>9.2f}x{files:>12}  {label}",
                flush=True,
            )
            del encoder
    return worst


def main() -> int:
    import transformers

    from sonieval.models.catalogue import encoder_names
    from sonieval.models.encoders import TransformersEncoder, encoder_class

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--full", default="ast,hubert", help="encoders to time at full size (random weights), or 'all', or ''"
    )
    parser.add_argument(
        "--prepare",
        default="wavlm,whisper,clap,ast:full,hubert:full",
        help="encoders for the prepare-stage part (NAME small, NAME:full published size), or ''",
    )
    parser.add_argument("--prepare-clips", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    full = FULL_ALL if args.full == "all" else tuple(x for x in args.full.split(",") if x)
    print(
        f"bench_layers: {platform.processor() or 'cpu'}, {args.threads} threads, load {os.getloadavg()[0]:.1f}; "
        f"torch {torch.__version__}, transformers {transformers.__version__}; RANDOM weights everywhere; "
        f"least of {args.repeats} (small models: {5 * args.repeats}), sides alternated"
    )
    print(
        f"{'encoder':<26}{'layers':>7}{'all: wall/CPU s':>18}{'deepest: wall/CPU s':>22}{'ratio wall':>11}"
        f"{'ratio CPU':>10}{'loop':>7}{'blocks run':>12}  clips"
    )
    worst = 0.0
    transformers_encoders = [n for n in encoder_names() if issubclass(encoder_class(n), TransformersEncoder)]
    runs = [(name, "small", small) for name in transformers_encoders] + [(name, "full", full_size) for name in full]
    for name, size, build in runs:
        encoder = build(name)
        # small models are quick: more repeats; the per-layer loop only for them (at full size it costs ~L/2 forwards)
        row = measure(encoder, args.clips, args.repeats * (5 if size == "small" else 1), per_layer=size == "small")
        worst = max(worst, row["ratio_cpu"])
        loop = "" if row["loop"] != row["loop"] else f"{row['loop']:.1f}x"  # NaN: not timed
        print(
            f"{name + ' (' + size + ', random)':<26}{row['layers']:>7}{row['all'][0]:>9.3f}/{row['all'][1]:<8.3f}"
            f"{row['deepest'][0]:>13.3f}/{row['deepest'][1]:<8.3f}{row['ratio_wall']:>10.2f}x{row['ratio_cpu']:>9.2f}x"
            f"{loop:>7}{'{} vs {}'.format(*row['blocks']):>12}  {row['clips']}",
            flush=True,
        )
        del encoder
    print(
        f"all layers from one pass vs the deepest alone: worst CPU-time ratio {worst:.2f}x (goal <= 1.2x); "
        "'loop' = one forward per layer (CPU time), relative to the deepest alone; 'blocks run' = "
        "transformer-block forwards in one call of each side (counted)"
    )
    names = [x for x in args.prepare.split(",") if x]
    if names:
        worst_prepare = measure_prepare(names, args.prepare_clips, args.repeats)
        print(
            f"prepare stage, all layers vs the deepest alone: worst CPU-time ratio {worst_prepare:.2f}x (goal <= 1.2x); "
            "'files' = cached .npy files (and ledger records) written by each side"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
