"""sonieval gallery PROTOCOL: the listening gallery of a results folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from sonieval.results_layout import ResultsLayout

HELP = "build the listening gallery: originals and every system's sonifications, seen and heard side by side"
DESCRIPTION = (
    "Writes <results>/gallery/index.html, a static page that opens from the file system (no server): one row "
    "per listening clip, the original then every system (trained gates beside their controls and the codec's "
    "own reconstruction), each with a spectrogram and waveform on the row's scales, its per-item measures, the "
    "marks raters gave it (when the study was exported) and its sound. Sounds are loudness-aligned MP3 copies "
    "(ITU-R BS.1770, the study's target, true peak below the ceiling); the decoded WAVs are left as they are. "
    "One transport per row switches between sounds at the same playhead (keys: Space, r, 1-9, arrows, L, S). "
    "Rerunning reuses every copy and picture whose source is unchanged."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "target", metavar="PROTOCOL", help="protocol YAML file, or a results folder (one that holds tables/)"
    )
    p.add_argument("--workers", type=int, default=None, help="threads making listening copies (default: up to 4)")


def _results_and_spec(target: str):
    """(results folder, the protocol's study loudness or None, the protocol path or None)."""
    from sonieval.errors import SonievalError

    path = Path(target)
    if path.is_dir():
        if not ResultsLayout(path).holds_tables():
            raise SonievalError(
                "not a results folder (no tables/ inside)",
                path=path,
                hint="give a protocol YAML or the results folder `sonieval run` wrote",
            )
        return path, None, None
    from sonieval.loudness import LevelSpec
    from sonieval.protocol import load_protocol

    proto = load_protocol(path)
    return proto.results_path, LevelSpec(target_lufs=proto.study.loudness_lufs), path


def run(args: argparse.Namespace) -> int:
    from sonieval.gallery import build_gallery

    results, spec, protocol = _results_and_spec(args.target)
    if args.workers is not None and args.workers < 1:
        from sonieval.errors import SonievalError

        raise SonievalError(f"--workers {args.workers}: give 1 or more")
    build_gallery(
        results,
        protocol=protocol,
        spec=spec,
        workers=args.workers,
        progress=not getattr(args, "no_progress", False),
        echo=print,
    )
    return 0
