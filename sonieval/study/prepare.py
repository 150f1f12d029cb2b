"""Make the study's audio: one format, one loudness per clip, blinded copies, the anchor, waveforms.

:class:`StimulusWriter` is used by :func:`sonieval.study.create.create_study` in two passes:

1. :meth:`StimulusWriter.plan` reads every source once per clip (original, sonifications,
   the anchor made from the original), brings it into the study's format (one sample rate; the
   clip's length: its original's, other lengths padded or trimmed with a short fade,
   :func:`sonieval.study.stimuli.fit_to_clip`), measures it, and fixes the clip's level from its
   original (:func:`sonieval.study.loudness.clip_level`). A file that cannot be read is skipped
   here; its trial fails in the second pass with the reader's message.
2. :meth:`StimulusWriter.prepare` writes one trial's files: the aligned original (once per
   clip), the aligned stimulus, the waveform picture, and returns what the run ledger records
   for it (the level of both files, the length and rate changes made).

Every file is 16-bit PCM with its own seeded dither (:func:`sonieval.study.stimuli.write_stimulus`).
The hidden reference and the attention check are the aligned original's signal written under
their own names: the same samples up to the dither (-96 dBFS), other bytes, so every file has its
own URL and no header, size or rate tells them apart. File names are opaque and include the
clip's level, the alignment settings and the format: other settings give other files, so a
study's files never change under its marks.

:meth:`StimulusWriter.familiarisation_files` writes the familiarisation examples the same way, from
a clip that is not rated (:mod:`sonieval.study.familiarisation`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sonieval.audio import read_audio
from sonieval.study.design import StimulusSource, Trial
from sonieval.study.loudness import (
    Level,
    LevelSpec,
    Measured,
    alignment_gain,
    apply_gain,
    clip_level,
    level_after,
    measure_stimulus,
)
from sonieval.study.stimuli import (
    AUDIO_SUBDIR,
    WAVEFORM_SUBDIR,
    StudyFormat,
    anchor_samples,
    fit_to_clip,
    opaque_name,
    write_stimulus,
)
from sonieval.study.waveforms import render_waveform_pair

ORIGINAL_KEY = "original"


@dataclass(frozen=True)
class AnchorSettings:
    kind: str
    cutoff_hz: float
    snr_db: float
    seed: int


@dataclass
class _ClipPlan:
    level: float  # LUFS every stimulus of the clip is aligned to
    length: int  # samples of every file of the clip (its original's, at the study's rate)
    measured: dict[str, Measured] = field(default_factory=dict)  # source key (or "original") -> before alignment

    def tag(self, spec: LevelSpec, fmt: StudyFormat) -> str:
        return f"{self.level:.2f}/{spec.tag}/{fmt.tag}"


class StimulusWriter:
    """Writes the aligned files of a study's trials into ``<study_dir>/audio`` and ``/waveforms``."""

    def __init__(
        self,
        study_id: str,
        study_dir: Path,
        sources: list[StimulusSource],
        spec: LevelSpec,
        anchor: AnchorSettings | None,
        anchor_system: str | None,
        fmt: StudyFormat,
    ):
        self.study_id = study_id
        self.audio_dir = Path(study_dir) / AUDIO_SUBDIR
        self.wave_dir = Path(study_dir) / WAVEFORM_SUBDIR
        self.spec = spec
        self.fmt = fmt
        self.anchor = anchor
        self.by_key = {_source_key(s, anchor_system): s for s in sources}
        self.originals = {s.clip_id: s.original_path for s in sources}
        self.plans: dict[str, _ClipPlan] = {}
        self._written_originals: dict[str, tuple[str, Level, np.ndarray]] = {}

    # ------------------------------------------------------------------ reading in the study's format

    def load(self, path) -> np.ndarray:
        """A file's samples at the study's rate (resampled when needed, soxr VHQ)."""
        return read_audio(path, self.fmt.sample_rate)[0]

    def _fitted(self, samples: np.ndarray, clip_id: str) -> np.ndarray:
        return fit_to_clip(samples, self.plans[clip_id].length, self.fmt.sample_rate, self.fmt.fade_s)[0]

    # ------------------------------------------------------------------ pass 1: levels

    def plan(self, trials: list[Trial]) -> None:
        """Measure every source of every clip once (in the study's format) and fix each clip's level."""
        keys_by_clip: dict[str, set[str]] = {}
        for t in trials:
            if t.role in ("sonification", "anchor"):
                keys_by_clip.setdefault(t.clip_id, set()).add(t.source_key)
            keys_by_clip.setdefault(t.clip_id, set())
        rate = self.fmt.sample_rate
        for clip, keys in sorted(keys_by_clip.items()):
            measured: dict[str, Measured] = {}
            original = self._try_load(self.originals[clip])
            length = len(original) if original is not None else 0
            if original is not None:
                measured[ORIGINAL_KEY] = measure_stimulus(original, rate)
            self.plans[clip] = _ClipPlan(0.0, length)
            for key in sorted(keys):
                samples = self._source_samples(key, original)
                if samples is not None and length:
                    measured[key] = measure_stimulus(self._fitted(samples, clip), rate)
            self.plans[clip] = _ClipPlan(clip_level(measured.get(ORIGINAL_KEY), self.spec), length, measured)

    def _source_samples(self, key: str, original: np.ndarray | None) -> np.ndarray | None:
        source = self.by_key[key]
        if source.role == "anchor":
            return None if original is None else self.anchor_of(original)
        return self._try_load(source.stimulus_path)

    def _try_load(self, path) -> np.ndarray | None:
        try:
            return self.load(path)
        except Exception:  # noqa: BLE001 - the same read fails again in prepare(), which records why
            return None

    def anchor_of(self, samples: np.ndarray, anchor: AnchorSettings | None = None) -> np.ndarray:
        a = anchor or self.anchor
        assert a is not None
        return anchor_samples(samples, self.fmt.sample_rate, a.kind, a.cutoff_hz, a.snr_db, a.seed)

    # ------------------------------------------------------------------ pass 2: files

    def level_tag(self, clip_id: str) -> str:
        return self.plans[clip_id].tag(self.spec, self.fmt)

    def prepare(self, trial: Trial) -> dict:
        """Write one trial's files; returns the ledger's record (file names, seconds, levels, format)."""
        plan = self.plans[trial.clip_id]
        original_file, original_level, original = self._original(trial.clip_id)
        key = f"{trial.source_key}@{self.level_tag(trial.clip_id)}"
        stimulus_file = opaque_name(self.study_id, key)
        length = {"length_action": "none", "source_rate": self.fmt.sample_rate, "source_seconds": None}
        if trial.role in ("reference", "attention"):
            samples, m = original, plan.measured[ORIGINAL_KEY]
        else:
            raw, length = self._read_stimulus(trial)
            samples, length["length_action"] = fit_to_clip(raw, plan.length, self.fmt.sample_rate, self.fmt.fade_s)
            m = plan.measured.get(trial.source_key) or measure_stimulus(samples, self.fmt.sample_rate)
            samples, _, _ = apply_gain(samples, m, self.spec, plan.level)
        stimulus_level, seconds = self._write(stimulus_file, samples, m, plan.level)
        waveform_file = opaque_name(self.study_id, key, ".png")
        render_waveform_pair(
            self.audio_dir / original_file, self.audio_dir / stimulus_file, self.wave_dir / waveform_file
        )
        return {
            "original_file": original_file,
            "stimulus_file": stimulus_file,
            "waveform_file": waveform_file,
            "stimulus_seconds": seconds,
            "original_level": original_level.as_dict(),
            "stimulus_level": stimulus_level.as_dict(),
            **length,
        }

    def _read_stimulus(self, trial: Trial) -> tuple[np.ndarray, dict]:
        """The stimulus at the study's rate, and what it was before (rate, seconds)."""
        from sonieval.audio import audio_info

        if trial.role == "anchor":
            samples = self.anchor_of(self.load(self.originals[trial.clip_id]))
            return samples, {"source_rate": self.fmt.sample_rate, "source_seconds": len(samples) / self.fmt.sample_rate}
        path = self.by_key[trial.source_key].stimulus_path
        info = audio_info(path)
        return self.load(path), {"source_rate": info.sample_rate, "source_seconds": round(info.seconds, 6)}

    def _original(self, clip_id: str) -> tuple[str, Level, np.ndarray]:
        """The clip's aligned original (written once): (file name, level, aligned samples before
        quantisation: what its hidden reference and attention checks are written from)."""
        if clip_id not in self._written_originals:
            plan = self.plans[clip_id]
            name = opaque_name(self.study_id, f"original/{clip_id}@{self.level_tag(clip_id)}")
            samples = self.load(self.originals[clip_id])
            m = plan.measured.get(ORIGINAL_KEY) or measure_stimulus(samples, self.fmt.sample_rate)
            aligned, _, _ = apply_gain(samples, m, self.spec, plan.level)
            level, _ = self._write(name, aligned, m, plan.level)
            self._written_originals[clip_id] = (name, level, aligned)
        return self._written_originals[clip_id]

    def _write(self, name: str, samples: np.ndarray, m: Measured, target: float) -> tuple[Level, float]:
        """Write ``name`` unless present (names carry the level and format, so a present file is this
        one); measure it as written."""
        dest = self.audio_dir / name
        if not dest.exists():
            write_stimulus(dest, samples, self.fmt.sample_rate)
        written, written_rate, _ = read_audio(dest)
        gain_db, reason = alignment_gain(m, self.spec, target)
        return level_after(written, written_rate, m, gain_db, reason, target), len(written) / written_rate

    def levels_by_file(self, records: list[dict]) -> dict[str, dict]:
        """File name -> level fields, from the ledger records of the prepared trials."""
        out: dict[str, dict] = {}
        for r in records:
            out[r["original_file"]] = r["original_level"]
            out[r["stimulus_file"]] = r["stimulus_level"]
        return out

    # ------------------------------------------------------------------ familiarisation examples

    def familiarisation_files(self, clip_id: str, original_path: Path, anchor: AnchorSettings) -> dict:
        """The examples of a clip that is not rated, in the study's format and loudness: its original,
        its anchor ("near the bottom") and its hidden reference ("near the top"), each a file of its
        own, with their waveform pictures. Returns the file names and levels."""
        rate = self.fmt.sample_rate
        original = self.load(original_path)
        m = measure_stimulus(original, rate)
        level = clip_level(m, self.spec)
        tag = f"familiarisation/{clip_id}@{level:.2f}/{self.spec.tag}/{self.fmt.tag}"
        out: dict = {"clip_id": clip_id, "levels": {}}
        aligned, _, _ = apply_gain(original, m, self.spec, level)
        made = {"original": (aligned, m)}
        anchor_raw = self.anchor_of(original, anchor)
        m_anchor = measure_stimulus(anchor_raw, rate)
        made["low"] = (apply_gain(anchor_raw, m_anchor, self.spec, level)[0], m_anchor)
        made["high"] = (aligned, m)
        for part, (samples, measured) in made.items():
            name = opaque_name(self.study_id, f"{tag}/{part}")
            level_record, _ = self._write(name, samples, measured, level)
            out["levels"][name] = level_record.as_dict()
            out[part] = name
        for end in ("low", "high"):
            picture = opaque_name(self.study_id, f"{tag}/{end}", ".png")
            render_waveform_pair(self.audio_dir / out["original"], self.audio_dir / out[end], self.wave_dir / picture)
            out[f"{end}_waveform"] = picture
        return out


def _source_key(s: StimulusSource, anchor_system: str | None) -> str:
    system = anchor_system if s.role == "anchor" else s.system_id
    return f"{s.role}/{system}/{s.clip_id}"
