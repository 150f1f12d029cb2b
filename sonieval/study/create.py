"""Create a study: copy and make its stimuli, render waveforms, store trials, mint tokens.

Entry points: :func:`create_from_protocol` (the sonify stage's tables, or ``study.audio_dir``)
and :func:`create_from_folders` (any folders of audio: ``--originals DIR --system NAME=DIR``).
Both write into one study folder::

    <study_dir>/audio/<opaque>.wav       every stimulus and original, re-written (blinding)
    <study_dir>/waveforms/<opaque>.png   original above stimulus, pre-rendered
    <study_dir>/study.json               study id and storage URL (password removed)
    <study_dir>/links.txt                tokens minted so far (owner-readable only, 0600): the
                                         database keeps only their hashes, so this file is the
                                         organiser's one copy; links are built from it with the
                                         server's current address
    <study_dir>/ratings.{csv,parquet}    exports

Stimulus preparation goes through the run manifest (stage ``study``): a file that cannot be
read fails only its own trial, which is left out of the study and reported.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sonieval.errors import DataError, ProtocolError
from sonieval.study.design import (
    DesignConfig, StimulusSource, Trial, anchor_system_id, build_trials, check_subset_balance,
    sources_from_audio_dir, sources_from_folders, sources_from_tables,
)
from sonieval.study.stimuli import (
    AUDIO_SUBDIR, ORIGINAL_SUBTYPE, WAVEFORM_SUBDIR, copy_stimulus, make_anchor, opaque_name,
)
from sonieval.study.store import StudyStore, redact_url
from sonieval.study.waveforms import render_waveform_pair


@dataclass
class StudySettings:
    """The study section of a protocol, as the creation needs it (also built from CLI options)."""

    study_id: str
    mode: str = "joint"
    attributes: tuple[str, ...] = ("visual", "audio")
    scale_min: int = 1
    scale_max: int = 5
    design: str = "full"
    trials_per_rater: int | None = None
    min_ratings_per_trial: int = 1
    n_raters: int = 1
    hidden_reference: bool = True
    anchor_kind: str | None = "lowpass"
    anchor_cutoff_hz: float = 3500.0
    anchor_snr_db: float = 0.0
    attention_checks: int = 2
    familiarisation: bool = True
    min_listen_fraction: float = 1.0
    seed: int = 42

    @property
    def config(self) -> DesignConfig:
        return DesignConfig(self.mode, tuple(self.attributes), self.design, self.trials_per_rater, self.min_ratings_per_trial, self.seed)

    @classmethod
    def from_protocol(cls, proto) -> "StudySettings":
        s = proto.study
        return cls(
            study_id=proto.study_id, mode=s.mode, attributes=tuple(s.attributes), scale_min=s.scale_min, scale_max=s.scale_max,
            design=s.design, trials_per_rater=s.trials_per_rater, min_ratings_per_trial=s.min_ratings_per_trial,
            n_raters=s.n_raters, hidden_reference=s.hidden_reference,
            anchor_kind=s.anchor.kind if s.anchor else None,
            anchor_cutoff_hz=s.anchor.cutoff_hz if s.anchor else 3500.0, anchor_snr_db=s.anchor.snr_db if s.anchor else 0.0,
            attention_checks=s.attention_checks, familiarisation=s.familiarisation,
            min_listen_fraction=getattr(s, "min_listen_fraction", 1.0), seed=proto.seed,
        )


@dataclass
class CreatedStudy:
    study_id: str
    storage: str
    study_dir: Path
    n_trials: int
    admin_token: str | None  # None: the study existed already (its admin link was shown then)
    rater_tokens: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def study_paths_for_protocol(proto) -> tuple[Path, str]:
    """(study folder, storage URL) of a protocol's study (``{results_dir}`` and ``$VARS`` filled in)."""
    results = proto.results_path
    # Absolute, so the Streamlit child process finds the same file whatever its folder;
    # $VARS are expanded so a shared-server password can stay out of the protocol file.
    url = os.path.expandvars(proto.study.storage.replace("{results_dir}", str(results.resolve())))
    return results / "study", url


def create_from_protocol(proto, *, storage: str | None = None, progress: bool = True, replace_unrated: bool = False) -> CreatedStudy:
    settings = StudySettings.from_protocol(proto)
    study_dir, default_url = study_paths_for_protocol(proto)
    if proto.study.audio_dir is not None:
        sources, notes = sources_from_audio_dir(proto.resolve(proto.study.audio_dir), proto.study.clips)
        source = {"kind": "audio_dir", "audio_dir": str(proto.resolve(proto.study.audio_dir))}
    else:
        sources, notes = sources_from_tables(proto.results_path, systems=proto.study.systems, clips=proto.study.clips)
        source = {"kind": "tables", "results_dir": str(proto.results_path.resolve())}
    source["protocol"] = str(proto.source) if proto.source else None
    return create_study(settings, sources, study_dir=study_dir, storage=storage or default_url,
                        manifest_path=proto.results_path / "manifest.sqlite", source=source, notes=notes, progress=progress,
                        replace_unrated=replace_unrated)


def create_from_folders(settings: StudySettings, originals: Path, systems: dict[str, Path], *, study_dir: Path,
                        storage: str | None = None, progress: bool = True, replace_unrated: bool = False) -> CreatedStudy:
    sources, notes = sources_from_folders(originals, systems)
    source = {"kind": "folders", "originals": str(Path(originals).resolve()), "systems": {k: str(Path(v).resolve()) for k, v in systems.items()}}
    return create_study(settings, sources, study_dir=study_dir, storage=storage or f"sqlite:///{Path(study_dir) / 'study.sqlite'}",
                        manifest_path=Path(study_dir) / "manifest.sqlite", source=source, notes=notes, progress=progress,
                        replace_unrated=replace_unrated)


def create_study(
    settings: StudySettings,
    sources: list[StimulusSource],
    *,
    study_dir: Path,
    storage: str,
    manifest_path: Path,
    source: dict,
    notes: list[str] | None = None,
    progress: bool = True,
    replace_unrated: bool = False,
) -> CreatedStudy:
    """Make the stimuli and waveforms, store the study and invite ``n_raters`` raters (if new)."""
    from sonieval.pipeline.manifest import ItemOutcome, ManifestItem, RunManifest

    notes = list(notes or [])
    study_dir = Path(study_dir)
    if settings.attributes and any(a not in ("visual", "audio") for a in settings.attributes):
        raise ProtocolError(f"study.attributes {settings.attributes!r}: allowed are visual and audio")
    anchor_id = anchor_system_id(settings.anchor_kind, settings.anchor_cutoff_hz, settings.anchor_snr_db) if settings.anchor_kind else None
    trial_list = build_trials(
        sources, hidden_reference=settings.hidden_reference, anchor_system=anchor_id,
        attention_checks=settings.attention_checks, scale_min=settings.scale_min, scale_max=settings.scale_max,
        joint=settings.mode == "joint" or len(settings.attributes) == 1, seed=settings.seed,
    )
    check_subset_balance(sum(t.role == "sonification" for t in trial_list), settings.config, settings.n_raters)
    by_key = {f"{s.role}/{s.system_id if s.role != 'anchor' else anchor_id}/{s.clip_id}": s for s in sources}
    originals = {s.clip_id: s.original_path for s in sources}
    audio_dir = study_dir / AUDIO_SUBDIR
    wave_dir = study_dir / WAVEFORM_SUBDIR
    sid = settings.study_id

    def prepare(item: ManifestItem) -> ItemOutcome:
        trial: Trial = item.payload
        original_file = opaque_name(sid, f"original/{trial.clip_id}")
        copy_stimulus(originals[trial.clip_id], audio_dir / original_file, ORIGINAL_SUBTYPE)
        stimulus_file = opaque_name(sid, trial.source_key)
        if trial.role == "anchor":
            seconds = make_anchor(originals[trial.clip_id], audio_dir / stimulus_file, settings.anchor_kind or "lowpass",
                                  settings.anchor_cutoff_hz, settings.anchor_snr_db, settings.seed)
        else:
            src = by_key[trial.source_key].stimulus_path if trial.role != "attention" else originals[trial.clip_id]
            seconds = copy_stimulus(src, audio_dir / stimulus_file)
        waveform_file = opaque_name(sid, trial.source_key, ".png")
        render_waveform_pair(audio_dir / original_file, audio_dir / stimulus_file, wave_dir / waveform_file)
        return ItemOutcome(path=audio_dir / stimulus_file, extra={
            "original_file": original_file, "stimulus_file": stimulus_file, "waveform_file": waveform_file, "stimulus_seconds": seconds,
        })

    items = [ManifestItem(key=f"{sid}/{t.source_key}", inputs={"study_dir": str(study_dir.resolve()), "anchor": anchor_id},
                          system_id=t.system_id, payload=t) for t in trial_list]
    manifest = RunManifest(manifest_path)
    try:
        result = manifest.run_batch("study", items, prepare, desc="study stimuli", progress=progress)
        kept: list[Trial] = []
        for item in items:
            if item.key in result.failed:
                continue
            extra = (manifest.get("study", item.key) or {}).get("extra") or {}
            t: Trial = item.payload
            for k in ("original_file", "stimulus_file", "waveform_file", "stimulus_seconds"):
                setattr(t, k, extra[k])
            kept.append(t)
    finally:
        manifest.close()
    for key, err in list(result.failed.items())[:5]:
        notes.append(f"left out {key}: {err}")
    if result.failed:
        notes.append(f"{len(result.failed)} trial(s) left out because their audio could not be prepared (see {manifest_path})")
    if not any(t.role == "sonification" for t in kept):
        raise DataError("no sonification trial could be prepared", path=manifest_path, hint="see the failures recorded there")
    familiarisation = _familiarisation(kept, audio_dir) if settings.familiarisation else {}
    store = StudyStore(storage)
    try:
        replacing = replace_unrated and store.has_study(sid)
        admin = store.create_study(
            sid, settings.config, scale_min=settings.scale_min, scale_max=settings.scale_max, study_dir=study_dir,
            trials_list=kept, familiarisation=familiarisation, min_listen_fraction=settings.min_listen_fraction,
            provenance={"source": source, "anchor": anchor_id, "n_raters_planned": settings.n_raters, "notes": notes[:20]},
            replace_unrated=replace_unrated,
        )
        if replacing and admin is not None:
            # the old study (no marks) was replaced: its links no longer work
            links = study_dir / "links.txt"
            if links.exists():
                links.replace(study_dir / "links-replaced.txt")
            notes.append("an unrated study with other trials was replaced; its old links no longer work")
        raters = store.invite(sid, settings.n_raters) if admin is not None else []
    finally:
        store.close()
    created = CreatedStudy(sid, storage, study_dir, len(kept), admin, raters, notes)
    write_study_json(study_dir, sid, storage)
    return created


def _anchor_change(trial: Trial, audio_dir: Path) -> float:
    """How far a clip's anchor is from its original (relative RMS difference)."""
    from sonieval.audio import read_audio

    original = read_audio(audio_dir / trial.original_file)[0]
    anchor = read_audio(audio_dir / trial.stimulus_file)[0]
    n = min(len(original), len(anchor))
    norm = float(np.sqrt(np.mean(original[:n] ** 2)))
    return float(np.sqrt(np.mean((anchor[:n] - original[:n]) ** 2))) / norm if norm > 0 else 0.0


def _familiarisation(kept: list[Trial], audio_dir: Path) -> dict:
    """Example pairs near both ends of the scale: one clip's anchor (low) and hidden reference (high).

    The clip is the one whose anchor differs most from its original: a low-pass anchor of a clip
    with little energy above the cutoff sounds like the original and would teach the wrong end.
    """
    by_clip: dict[str, dict[str, Trial]] = {}
    for t in kept:
        by_clip.setdefault(t.clip_id, {})[t.role] = t
    candidates = [c for c in sorted(by_clip) if "anchor" in by_clip[c] or "reference" in by_clip[c]]
    if not candidates:
        return {}
    with_anchor = [c for c in candidates if "anchor" in by_clip[c]]
    clip = max(with_anchor, key=lambda c: _anchor_change(by_clip[c]["anchor"], audio_dir)) if with_anchor else candidates[0]
    roles = by_clip[clip]
    out = {}
    for end, role in (("low", "anchor"), ("high", "reference")):
        if role in roles:
            t = roles[role]
            out[end] = {"original_file": t.original_file, "stimulus_file": t.stimulus_file, "waveform_file": t.waveform_file}
    return out


def write_study_json(study_dir: Path, study_id: str, storage: str) -> Path:
    from sonieval.files import write_text_atomic

    return write_text_atomic(Path(study_dir) / "study.json", json.dumps({"study_id": study_id, "storage": redact_url(storage)}, indent=2) + "\n")


def read_study_json(study_dir: Path) -> tuple[str, str]:
    path = Path(study_dir) / "study.json"
    if not path.is_file():
        raise DataError("not a study folder (no study.json)", path=study_dir, hint="create one with sonieval study create")
    data = json.loads(path.read_text(encoding="utf-8"))
    return data["study_id"], data["storage"]


def append_links(study_dir: Path, lines: list[str]) -> Path:
    """Keep minted links in an owner-only file: the database itself stores only token hashes."""
    path = Path(study_dir) / "links.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        fh.write("".join(line + "\n" for line in lines))
    os.chmod(path, 0o600)
    return path


def record_tokens(study_dir: Path, created: CreatedStudy) -> None:
    """Append freshly minted tokens to ``links.txt`` (owner-only); a no-op when none were minted."""
    lines = []
    if created.admin_token:
        lines.append(f"admin {created.admin_token}")
    lines += [f"rater {rid} {tok}" for rid, tok in created.rater_tokens]
    if lines:
        append_links(study_dir, lines)


def read_tokens(study_dir: Path) -> tuple[str | None, list[tuple[str, str]]]:
    """(latest admin token, rater tokens) recorded in ``links.txt``; (None, []) if there is none."""
    path = Path(study_dir) / "links.txt"
    admin: str | None = None
    raters: list[tuple[str, str]] = []
    if not path.is_file():
        return admin, raters
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "admin":
            admin = parts[1]
        elif len(parts) == 3 and parts[0] == "rater":
            raters.append((parts[1], parts[2]))
    return admin, raters
