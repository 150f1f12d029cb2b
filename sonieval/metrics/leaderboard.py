"""Running a leaderboard (the board): which sets to score, the embedding pass, one engine task per system
under the run ledger, and the files it leaves. The rows come from :mod:`sonieval.metrics.scoring`, the
pages from :mod:`sonieval.metrics.render`; for scores in memory use :mod:`sonieval.metrics.api`.

Two entry points share one engine (:func:`score_sets`):

- :func:`run_score` (``sonieval score PROTOCOL``): the reference set is the clips of
  ``metrics.reference_set`` (an ESC-50 split name such as ``test``, several joined with ``+``,
  ``all``, or a folder of audio) from ``<results>/tables/clips.parquet``; the systems are the
  sonified systems of ``<results>/tables/sonifications.parquet``.
- :func:`score_folders` (``sonieval score --reference DIR --system NAME=DIR ...``): any folders
  of audio; files whose path (relative, without extension) matches a reference file get per-item
  scores against it.

Every row carries the embedding id (with its ``weight-free`` / ``random-init`` / ``pretrained`` label),
the reference set and its size, the number evaluated, the bandwidth, the scale and the package versions.

Outputs under ``<out>/``: ``scores.parquet`` and ``scores.csv`` (the scores table, docs/results.md#tables, plus
``category`` for per-class rows), ``item_scores.parquet``, ``paired_kad.csv`` (each system against
the best by KAD: paired bootstrap of the difference), ``leaderboard.{csv,md,html}`` and
``figures/<metric>__<embedding>__<encoder>__<postprocess>.png`` (the reference work's dot plot:
one point per system, a line at the best); with learning controls ``learning.csv``, and for
encoders sonified at several layers ``depth.csv`` and ``figures/depth__<encoder>.png`` (audibility
by depth, :mod:`sonieval.metrics.depth`); with per-item measures ``item_summary.csv`` (mean, CI and n
defined of n per system) and ``paired_items.csv`` (each trained system against every control kind, clip
by clip), and with what-is-kept measures ``profile.csv``, ``figures/profile.png`` and
``figures/profile_values.png`` (the explanation profile, :mod:`sonieval.metrics.profile`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sonieval.engines import run_items
from sonieval.errors import DataError, SonievalError
from sonieval.ledger import ItemOutcome, LedgerItem, RunLedger, open_ledger
from sonieval.metrics.embed_tasks import fill_embedding_cache
from sonieval.metrics.render import dot_plots, leaderboard_document, write_pages

# stats/reporting.py, the pipeline and older callers import these names from this module
from sonieval.metrics.scoring import (  # noqa: F401
    RANDOM_CODEC_MARK,
    RANDOM_ENCODER_MARK,
    AudioSet,
    ReferenceSide,
    ScoreConfig,
    audio_item_rows,
    build_leaderboard,
    common_fields,
    embedding_item_rows,
    paired_with_best,
    paired_with_controls,
    random_mark,
    score_versions,
    stack_frames,
    system_rows,
    tidy_scores,
)
from sonieval.results_layout import ScoresLayout

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
STAGE = "score"


@dataclass
class ScoreOutputs:
    scores: pd.DataFrame
    item_scores: pd.DataFrame
    leaderboard: pd.DataFrame
    files: list[Path]
    failures: dict[str, str]
    learning: pd.DataFrame = field(default_factory=pd.DataFrame)  # trained systems beside their controls
    depth: pd.DataFrame = field(default_factory=pd.DataFrame)  # the learning table by layer (encoders with several)
    profile: pd.DataFrame = field(default_factory=pd.DataFrame)  # what each trained system keeps (metrics.profile)
    notes: list[str] = field(default_factory=list)  # warnings for the console (e.g. stale files not scored)


# --------------------------------------------------------------------------- one system's task


def _part_path(out_dir: Path, kind: str, key: str) -> Path:
    return ScoresLayout(out_dir).parts / f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:20]}.parquet"


def _kernel_path(out_dir: Path, key: str) -> Path:
    return _part_path(out_dir, "kernel", key).with_suffix(".npz")


@dataclass
class SystemScorer:
    """The task of one system under one embedding (run where the engine puts it): its score rows and
    per-item rows, written as parts, and its kernel block sums for the paired comparisons. It holds no
    ledger: the driver records."""

    side: ReferenceSide
    frames: dict
    config: ScoreConfig
    out_dir: Path

    def __call__(self, item: LedgerItem) -> ItemOutcome:
        s: AudioSet = item.payload
        ev = stack_frames(s.name, s.paths, s.clip_ids, s.categories, self.frames)
        common = common_fields(self.side, ev, s.random_init, s.provenance)
        rows, comparison = system_rows(self.side, ev, self.config, common)
        if comparison is not None:
            _save_comparison(comparison, _kernel_path(self.out_dir, item.key))
        items = embedding_item_rows(s, ev, self.frames, self.config.item_metrics, self.side.embedding_id)
        part, ipart = _part_path(self.out_dir, "scores", item.key), _part_path(self.out_dir, "items", item.key)
        _write_part(pd.DataFrame(rows), part)
        _write_part(pd.DataFrame(items), ipart)
        return ItemOutcome(path=part, extra={"items": str(ipart), "n_rows": len(rows)})


# --------------------------------------------------------------------------- the board


@dataclass
class _Board:
    """One score run: the sets, where it writes, and what it has collected so far."""

    reference: AudioSet
    systems: list[AudioSet]
    out_dir: Path
    config: ScoreConfig
    cache_dir: Path
    reference_label: str
    ledger: RunLedger
    engine: object = None
    primary_codec: str | None = None
    failures: dict[str, str] = field(default_factory=dict)
    score_parts: list[Path] = field(default_factory=list)
    item_parts: list[Path] = field(default_factory=list)
    paired: list[dict] = field(default_factory=list)
    controls: list[dict] = field(default_factory=list)

    def score_embedding(self, spec: str) -> None:
        from sonieval.metrics.embeddings import load_embedding

        backend = load_embedding(spec, device=self.config.device)
        frames = self.embed(backend, spec)
        r = self.reference
        ref = stack_frames("reference", r.paths, r.clip_ids, r.categories, frames)
        side = ReferenceSide(
            ref,
            self.config,
            label=self.reference_label,
            embedding_id=backend.embedding_id,
            weights=backend.weights,
            versions=score_versions(backend),
        )
        items = self.system_items(side, backend)
        batch = run_items(
            self.ledger,
            STAGE,
            items,
            SystemScorer(side, frames, self.config, self.out_dir),
            self.engine,
            desc=f"score ({side.embedding_id})",
            progress=self.config.progress,
        )
        self.failures.update(batch.failed)
        done = [it for it in items if it.key not in batch.failed]
        self.score_parts += [_part_path(self.out_dir, "scores", it.key) for it in done]
        self.item_parts += [_part_path(self.out_dir, "items", it.key) for it in done]
        if side.kernel is not None and self.config.bootstrap > 0:
            self.compare(side, done)

    def embed(self, backend, spec: str) -> dict:
        """Every file's frames under one embedding (through the cache; on a cluster, filled by tasks first)."""
        from sonieval.metrics.embeddings import EmbeddingCache, embed_files

        paths = list(self.reference.paths)
        for s in self.systems:
            paths += s.paths + [o for o in s.originals if o]
        fill_embedding_cache(
            self.ledger, self.engine, spec, paths, self.cache_dir, self.config.device, progress=self.config.progress
        )
        extraction = embed_files(
            backend,
            paths,
            cache=EmbeddingCache(self.cache_dir),
            progress=self.config.progress,
            desc=f"embed ({backend.embedding_id})",
        )
        for p, err in extraction.errors.items():
            key = f"{backend.embedding_id}|{p}"
            self.ledger.record(
                f"{STAGE}-embed", key, "failed", inputs={"embedding": backend.embedding_id, "path": p}, error=err
            )
            self.failures[key] = err
        return extraction.frames

    def system_items(self, side: ReferenceSide, backend) -> list[LedgerItem]:
        ref_sha = hashlib.sha256("\n".join(sorted(side.ref.clip_ids)).encode()).hexdigest()[:16]
        return [
            LedgerItem(
                key=f"{side.embedding_id}|{self.reference_label}|{s.name}",
                inputs={
                    "embedding": side.embedding_id,
                    "embedding_key": backend.cache_key(),
                    "reference": ref_sha,
                    "system": _set_digest(s),
                    "config": _config_digest(self.config),
                },
                system_id=s.name,
                payload=s,
            )
            for s in self.systems
        ]

    def compare(self, side: ReferenceSide, done: list[LedgerItem]) -> None:
        """Paired KAD comparisons (against the best, and trained against its controls) from the saved sums."""
        comps = {
            it.system_id: _load_comparison(side.kernel, _kernel_path(self.out_dir, it.key))
            for it in done
            if _kernel_path(self.out_dir, it.key).is_file()
        }
        emb = side.embedding_id
        self.paired += paired_with_best(comps, self.config, {"embedding": emb, "reference_set": self.reference_label})
        self.controls += paired_with_controls(comps, self.config, {"embedding": emb}, self.primary_codec)

    def audio_items(self) -> list[Path]:
        """Audio-based per-item measures do not depend on the embedding: once per system."""
        from sonieval.measures import get_measure

        wanted = [m for m in self.config.item_metrics if not get_measure(m).needs_embedding]
        if not wanted:
            return []
        out_dir = self.out_dir

        def run(item: LedgerItem) -> ItemOutcome:
            part = _part_path(out_dir, "items", item.key)
            _write_part(pd.DataFrame(audio_item_rows(item.payload, wanted)), part)
            return ItemOutcome(path=part)

        items = [
            LedgerItem(
                key=f"audio-items|{s.name}",
                inputs={"system": _set_digest(s), "metrics": wanted},
                system_id=s.name,
                payload=s,
            )
            for s in self.systems
            if any(s.originals)
        ]
        batch = run_items(
            self.ledger,
            f"{STAGE}-items",
            items,
            run,
            self.engine,
            desc="per-item audio measures",
            progress=self.config.progress,
        )
        self.failures.update(batch.failed)
        return [_part_path(out_dir, "items", it.key) for it in items if it.key not in batch.failed]


def _check_systems(systems: list[AudioSet], config: ScoreConfig) -> None:
    from sonieval.metrics.items import check_item_metrics

    check_item_metrics(config.item_metrics)
    if not systems:
        raise DataError("no systems to score", hint="sonify first, or pass --system NAME=DIR")
    names = [s.name for s in systems]
    if len(set(names)) != len(names):
        raise DataError(f"system names must be unique, got {names}")


def score_sets(
    reference: AudioSet,
    systems: list[AudioSet],
    out_dir: str | os.PathLike,
    *,
    config: ScoreConfig,
    cache_dir: str | os.PathLike,
    reference_label: str,
    ledger: RunLedger,
    training: pd.DataFrame | None = None,
    primary_codec: str | None = None,
    engine=None,
) -> ScoreOutputs:
    """Score every system against ``reference`` with each embedding; write tables and figures.

    ``training`` (the train stage's table) adds each gate's validation R² to the learning table;
    ``primary_codec`` names the codec of gates whose system_id names none (their ceiling). ``engine``
    (sonieval.engines; default: this process) runs the embedding pass (one GPU per task when there
    are GPUs) and one CPU task per system; the driver records them."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_systems(systems, config)
    board = _Board(reference, systems, out_dir, config, Path(cache_dir), reference_label, ledger, engine, primary_codec)
    for spec in config.embeddings:
        try:
            board.score_embedding(spec)
        except SonievalError as exc:
            # one embedding that cannot run (weights unavailable, ...) does not stop the others
            board.failures[f"embedding {spec}"] = str(exc)
            ledger.record(STAGE, f"embedding|{spec}", "failed", inputs={"embedding": spec}, error=str(exc))
    if not board.score_parts and board.failures:
        first = next(iter(board.failures.values()))
        raise SonievalError(f"nothing could be scored; first failure: {first}")
    audio_parts = board.audio_items()
    scores = _concat(board.score_parts)
    item_scores = _concat(board.item_parts + audio_parts)
    return _write_outputs(
        scores,
        item_scores,
        out_dir,
        board.failures,
        pd.DataFrame(board.paired),
        config=config,
        training=training,
        primary_codec=primary_codec,
        paired_controls=pd.DataFrame(board.controls),
    )


# --------------------------------------------------------------------------- parts on disk


def _save_comparison(comp, path: Path) -> None:
    """The per-clip kernel block sums of one system (small: clips x clips), for paired comparisons."""
    from sonieval.files import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                labels=comp.groups[1].astype(str),
                sizes=comp.group_sizes,
                ee_sums=comp.ee.group_sums,
                ee_diag=comp.ee.group_diagonal,
                ee_total=comp.ee.total,
                ee_diagonal=comp.ee.diagonal,
                re_sums=comp.re.group_sums,
                re_total=comp.re.total,
            )


def _load_comparison(ref_kernel, path: Path):
    from sonieval.metrics.distances import KernelComparison, _BlockSums

    z = np.load(path, allow_pickle=False)
    labels = z["labels"].astype(object)
    codes = np.repeat(np.arange(len(labels)), z["sizes"])
    ee = _BlockSums(float(z["ee_total"]), float(z["ee_diagonal"]), z["ee_sums"], z["ee_diag"])
    re_ = _BlockSums(float(z["re_total"]), 0.0, z["re_sums"])
    return KernelComparison(ref_kernel, int(z["sizes"].sum()), (codes, labels), ee, re_)


def _set_digest(s: AudioSet) -> str:
    from sonieval.files import sha256_bytes

    text = json.dumps([s.paths, s.clip_ids, s.categories, s.originals], default=str)
    stamps = []
    for p in s.paths:
        try:
            st = os.stat(p)
            stamps.append(f"{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            stamps.append("missing")
    return sha256_bytes((text + "|".join(stamps)).encode())[:16]


def _config_digest(config: ScoreConfig) -> str:
    d = {k: v for k, v in config.__dict__.items() if k not in ("progress", "device", "embeddings")}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _write_part(df: pd.DataFrame, path: Path) -> None:
    from sonieval.files import atomic_path

    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def _concat(parts: Iterable[Path]) -> pd.DataFrame:
    frames = [pd.read_parquet(p) for p in parts if Path(p).is_file()]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# --------------------------------------------------------------------------- outputs


def _write_outputs(
    scores: pd.DataFrame,
    item_scores: pd.DataFrame,
    out_dir: Path,
    failures,
    paired: pd.DataFrame | None = None,
    *,
    config: ScoreConfig | None = None,
    training: pd.DataFrame | None = None,
    primary_codec: str | None = None,
    paired_controls: pd.DataFrame | None = None,
) -> ScoreOutputs:
    from sonieval.metrics.controls import item_summary, learning_table, paired_item_differences, seed_table
    from sonieval.metrics.depth import depth_figures, depth_table
    from sonieval.metrics.profile import profile_table
    from sonieval.metrics.render import depth_notes
    from sonieval.tables import ITEM_SCORES_COLUMNS, write_table

    scores = tidy_scores(scores)
    if item_scores.empty:
        item_scores = pd.DataFrame(columns=ITEM_SCORES_COLUMNS + ["direction", "error"])
    config = config or ScoreConfig()
    paired = paired if paired is not None else pd.DataFrame()
    board = build_leaderboard(scores)
    items = item_summary(item_scores, n_boot=config.bootstrap, seed=config.seed)
    paired_items = paired_item_differences(item_scores, primary_codec, n_boot=config.bootstrap, seed=config.seed)
    learning = learning_table(scores, items, training, primary_codec, paired_controls, paired_items)
    profile = profile_table(item_scores, paired_items, primary_codec, n_boot=config.bootstrap, seed=config.seed)
    # the what-is-kept measures are read in the profile (by layer too); seeds and depth keep the other measures
    core = _without_attributes(learning)
    seeds, depth = seed_table(core), depth_table(core)
    where = ScoresLayout(out_dir)
    tables = {
        where.scores_table.name: (scores, "scores"),
        "scores.csv": (scores, "scores"),
        where.item_scores_table.name: (item_scores, "item_scores"),
        "leaderboard.csv": (board.drop(columns=["versions"], errors="ignore"), None),
        "paired_kad.csv": (paired, None),
        "item_summary.csv": (items, None),
    }
    optional = {
        "paired_controls.csv": paired_controls,
        "learning.csv": learning,
        "learning_seeds.csv": seeds,
        "depth.csv": depth,
        "paired_items.csv": paired_items,
        "profile.csv": profile,
    }
    tables.update({name: (df, None) for name, df in optional.items() if df is not None and not df.empty})
    files = [write_table(df, out_dir / name, schema) for name, (df, schema) in tables.items()]
    figures = dot_plots(board, where.figures)
    notes = depth_notes(scores, training)
    depth_figs = depth_figures(depth, where.figures, notes)
    profile_figs = _profile_figures(profile, where.figures)
    doc = leaderboard_document(
        board,
        scores,
        paired,
        learning,
        seeds=seeds,
        depth=depth,
        depth_figures=depth_figs,
        depth_notes=notes,
        figures=figures,
        out_dir=out_dir,
        profile=profile,
        profile_figures=profile_figs,
        gallery=_gallery_link(out_dir),
    )
    files += write_pages(doc, out_dir, where.leaderboard.stem)
    outputs = files + figures + depth_figs + profile_figs
    return ScoreOutputs(scores, item_scores, board, outputs, failures, learning, depth, profile=profile)


def _gallery_link(out_dir: Path):
    """system_id -> its column in the results folder's listening gallery; None for a board outside one."""
    from sonieval.gallery_links import in_results_folder, system_link

    results = in_results_folder(out_dir)
    return None if results is None else (lambda sid: system_link(sid, out_dir, results))


def _without_attributes(learning: pd.DataFrame) -> pd.DataFrame:
    """The learning table without the what-is-kept measures (those with an attribute in the catalogue)."""
    from sonieval.measures import MEASURES

    if learning is None or learning.empty:
        return learning
    keep = [MEASURES.get(m) is None or MEASURES[m].attribute is None for m in learning["measure"]]
    return learning[keep].reset_index(drop=True)


def _profile_figures(profile: pd.DataFrame, fig_dir: Path) -> list[Path]:
    """``figures/profile.png`` (the heat map) and ``figures/profile_values.png`` (the values with CIs)."""
    from sonieval.metrics.profile import profile_figure, profile_values_figure

    if profile is None or profile.empty:
        return []
    return [
        profile_figure(profile, fig_dir / "profile.png"),
        profile_values_figure(profile, fig_dir / "profile_values.png"),
    ]


# --------------------------------------------------------------------------- entry points


def audio_files(folder: str | os.PathLike) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError("folder not found", path=folder, hint="pass a folder of audio files")
    found = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    if not found:
        raise DataError("no audio files (.wav/.flac/.ogg/...) in this folder", path=folder)
    return found


def _folder_set(name: str, folder: Path, reference_index: dict[str, str] | None = None) -> AudioSet:
    files = audio_files(folder)
    ids = [str(p.relative_to(folder).with_suffix("")) for p in files]
    originals = [reference_index.get(i) for i in ids] if reference_index else []
    return AudioSet(name, [str(p) for p in files], ids, originals=originals)


def score_folders(
    reference_dir: str | os.PathLike,
    systems: dict[str, str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    config: ScoreConfig | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> ScoreOutputs:
    """Leaderboard of folders of audio against a reference folder (no protocol needed)."""
    config = config or ScoreConfig(per_class=False)
    out_dir = Path(out_dir)
    reference = _folder_set("reference", Path(reference_dir))
    index = dict(zip(reference.clip_ids, reference.paths))
    sets = [_folder_set(name, Path(d), index) for name, d in systems.items()]
    with open_ledger(out_dir) as ledger:
        return score_sets(
            reference,
            sets,
            out_dir,
            config=config,
            cache_dir=cache_dir or ScoresLayout(out_dir).cache.root,
            reference_label=f"folder:{Path(reference_dir).resolve()}",
            ledger=ledger,
        )


def _resolve_path(value: str, results: Path) -> str:
    from sonieval.tables import resolve_table_path

    return str(resolve_table_path(value, results))


def protocol_sets(proto) -> tuple[AudioSet, list[AudioSet], str]:
    """The reference set and the systems of a protocol's results folder."""
    from sonieval.tables import read_table

    results, layout = proto.results_path, proto.layout
    spec = proto.metrics.reference_set
    clips = read_table(layout.table("clips"), "clips")
    ok_clips = clips[clips["status"].astype(str) != "failed"]
    folder = proto.resolve(spec) if ("/" in spec or spec.startswith(".")) else None
    if folder is not None:
        reference = _folder_set("reference", folder)
        label = f"folder:{folder}"
    else:
        if spec == "all":
            chosen = ok_clips
        else:
            wanted = spec.split("+")
            have = sorted(ok_clips["split"].dropna().astype(str).unique())
            missing = [w for w in wanted if w not in have]
            if missing:
                raise DataError(
                    f"metrics.reference_set {spec!r}: split(s) {', '.join(missing)} not in the clips table",
                    path=layout.table("clips"),
                    hint=f"available: {', '.join(have) or 'none'}, 'all', 'a+b', or a folder path",
                )
            chosen = ok_clips[ok_clips["split"].astype(str).isin(wanted)]
        limit, n_all = proto.metrics.reference_clips, len(chosen)
        if limit is not None and n_all > limit:
            chosen = chosen.sample(n=limit, random_state=proto.seed).sort_values("clip_id")
        reference = AudioSet(
            "reference",
            [_resolve_path(p, results) for p in chosen["path"]],
            [str(c) for c in chosen["clip_id"]],
            [str(c) for c in chosen["category"]],
        )
        label = f"esc50:{spec}"
        if len(chosen) < n_all:
            label += f"[{len(chosen)} of {n_all} clips, seed {proto.seed}]"
        data_label = _data_label(clips)
        if data_label:
            label += f" ({data_label})"
    son = read_table(layout.table("sonifications"), "sonifications")
    son = son[son["status"].astype(str).isin(["done", "ok"])]
    if son.empty:
        raise DataError(
            "no finished sonifications to score",
            path=layout.table("sonifications"),
            hint="run `sonieval sonify PROTOCOL` first",
        )
    orig_of = {str(c): _resolve_path(p, results) for c, p in zip(clips["clip_id"], clips["path"])}
    systems = []
    for sid, g in son.groupby("system_id", sort=True):
        g = g.sort_values("clip_id")
        random_init = bool(g["random_init"].fillna(False).astype(bool).any()) if "random_init" in g.columns else None
        systems.append(
            AudioSet(
                str(sid),
                [_resolve_path(p, results) for p in g["path"]],
                [str(c) for c in g["clip_id"]],
                [None if pd.isna(c) else str(c) for c in g["category"]],
                [orig_of.get(str(c)) for c in g["clip_id"]],
                random_init=random_init,
                provenance=_provenance(g),
            )
        )
    return reference, systems, label


def _provenance(g: pd.DataFrame) -> dict:
    """Sonify's provenance columns of one system (the same on all its rows)."""
    out = {}
    for col in ("control", "codec_label", "layer"):
        if col in g.columns and g[col].notna().any():
            out[col] = str(g[col].dropna().iloc[0])
    for col in ("encoder_random_init", "codec_random_init"):
        if col in g.columns and g[col].notna().any():
            out[col] = bool(g[col].fillna(False).astype(bool).any())
    return out


def _data_label(clips: pd.DataFrame) -> str:
    for col in ("synthetic", "dataset"):
        if col in clips.columns:
            v = clips[col].iloc[0]
            if col == "synthetic" and bool(v):
                return "SYNTHETIC clip set, not ESC-50"
            if col == "dataset" and isinstance(v, str):
                return v
    return ""


def run_score(proto, ledger: RunLedger, *, engine=None, **overrides) -> ScoreOutputs:
    """The ``score`` stage of a protocol: writes ``<results>/scores/`` (``engine``: see score_sets)."""
    from sonieval.data.results_folder import check_sonifications

    # Missing tables and sonifications of clips not in the clips table stop here; stale WAVs are not scored.
    notes = check_sonifications(proto.results_path, proto.source)
    reference, systems, label = protocol_sets(proto)
    config = ScoreConfig.from_spec(proto.metrics, **{"seed": proto.seed, **overrides})
    training_path = proto.layout.table("training")
    training = pd.read_parquet(training_path) if training_path.is_file() else None
    outputs = score_sets(
        reference,
        systems,
        proto.layout.scores.root,
        config=config,
        cache_dir=proto.cache_path,
        reference_label=label,
        ledger=ledger,
        training=training,
        primary_codec=proto.primary_codec.name,
        engine=engine,
    )
    outputs.notes = notes
    return outputs
