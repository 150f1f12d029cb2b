"""Make the study's audio: one loudness per clip, blinded copies, the anchor, waveform pictures.

:class:`StimulusWriter` is used by :func:`sonieval.study.create.create_study` in two passes:

1. :meth:`StimulusWriter.plan` reads every source once per clip (original, sonifications,
   the anchor made from the original) and measures it, and fixes the clip's level from its
   original (:func:`sonieval.study.loudness.clip_level`). A file that cannot be read is skipped here;
   its trial fails in the second pass with the reader's message.
2. :meth:`StimulusWriter.prepare` writes one trial's files: the aligned original (16-bit PCM,
   once per clip), the aligned stimulus (32-bit float), the waveform picture, and returns what
   the run manifest records for it, the level of both files included.

The hidden reference and the attention check are the aligned original's own samples, read back
from its file, so the hidden reference is identical in samples (and level) to its original.
File names are opaque and include the clip's level and the alignment settings: other
settings give other files, so a study's files never change under its marks.
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
    ORIGINAL_SUBTYPE,
    STIMULUS_SUBTYPE,
    WAVEFORM_SUBDIR,
    anchor_samples,
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
    measured: dict[str, Measured] = field(default_factory=dict)  # source key (or "original") -> before alignment

    def tag(self, spec: LevelSpec) -> str:
        return f"{self.level:.2f}/{spec.tag}"


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
    ):
        self.study_id = study_id
        self.audio_dir = Path(study_dir) / AUDIO_SUBDIR
        self.wave_dir = Path(study_dir) / WAVEFORM_SUBDIR
        self.spec = spec
        self.anchor = anchor
        self.by_key = {_source_key(s, anchor_system): s for s in sources}
        self.originals = {s.clip_id: s.original_path for s in sources}
        self.plans: dict[str, _ClipPlan] = {}
        self._written_originals: dict[str, tuple[str, Level, np.ndarray, int]] = {}

    # ------------------------------------------------------------------ pass 1: levels

    def plan(self, trials: list[Trial]) -> None:
        """Measure every source of every clip once and fix each clip's level."""
        keys_by_clip: dict[str, set[str]] = {}
        for t in trials:
            if t.role in ("sonification", "anchor"):
                keys_by_clip.setdefault(t.clip_id, set()).add(t.source_key)
            keys_by_clip.setdefault(t.clip_id, set())
        for clip, keys in sorted(keys_by_clip.items()):
            measured: dict[str, Measured] = {}
            original = self._try_read(self.originals[clip])
            if original is not None:
                measured[ORIGINAL_KEY] = measure_stimulus(*original)
            for key in sorted(keys):
                samples = self._source_samples(key, original)
                if samples is not None:
                    measured[key] = measure_stimulus(*samples)
            self.plans[clip] = _ClipPlan(clip_level(measured.get(ORIGINAL_KEY), self.spec), measured)

    def _source_samples(self, key: str, original: tuple[np.ndarray, int] | None) -> tuple[np.ndarray, int] | None:
        source = self.by_key[key]
        if source.role == "anchor":
            return None if original is None else self._anchor_of(*original)
        return self._try_read(source.stimulus_path)

    @staticmethod
    def _try_read(path) -> tuple[np.ndarray, int] | None:
        try:
            samples, rate, _ = read_audio(path)
        except Exception:  # noqa: BLE001 - the same read fails again in prepare(), which records why
            return None
        return samples, rate

    def _anchor_of(self, samples: np.ndarray, rate: int) -> tuple[np.ndarray, int]:
        assert self.anchor is not None
        a = self.anchor
        return anchor_samples(samples, rate, a.kind, a.cutoff_hz, a.snr_db, a.seed), rate

    # ------------------------------------------------------------------ pass 2: files

    def level_tag(self, clip_id: str) -> str:
        return self.plans[clip_id].tag(self.spec)

    def prepare(self, trial: Trial) -> dict:
        """Write one trial's files; returns the manifest's record (file names, seconds, levels)."""
        plan = self.plans[trial.clip_id]
        original_file, original_level, original, rate = self._original(trial.clip_id)
        key = f"{trial.source_key}@{plan.tag(self.spec)}"
        stimulus_file = opaque_name(self.study_id, key)
        if trial.role in ("reference", "attention"):
            samples, m, stim_rate = original, plan.measured[ORIGINAL_KEY], rate
        else:
            samples, stim_rate = self._read_stimulus(trial)
            m = plan.measured.get(trial.source_key) or measure_stimulus(samples, stim_rate)
            samples, _, _ = apply_gain(samples, m, self.spec, plan.level)
        stimulus_level, seconds = self._write(stimulus_file, samples, stim_rate, m, plan.level, STIMULUS_SUBTYPE)
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
        }

    def _read_stimulus(self, trial: Trial) -> tuple[np.ndarray, int]:
        if trial.role == "anchor":
            samples, rate, _ = read_audio(self.originals[trial.clip_id])
            return self._anchor_of(samples, rate)
        samples, rate, _ = read_audio(self.by_key[trial.source_key].stimulus_path)
        return samples, rate

    def _original(self, clip_id: str) -> tuple[str, Level, np.ndarray, int]:
        """The clip's aligned original (written once): (file name, level, samples as written, rate)."""
        if clip_id not in self._written_originals:
            plan = self.plans[clip_id]
            name = opaque_name(self.study_id, f"original/{clip_id}@{plan.tag(self.spec)}")
            samples, rate, _ = read_audio(self.originals[clip_id])
            m = plan.measured.get(ORIGINAL_KEY) or measure_stimulus(samples, rate)
            aligned, _, _ = apply_gain(samples, m, self.spec, plan.level)
            level, _ = self._write(name, aligned, rate, m, plan.level, ORIGINAL_SUBTYPE)
            written, _, _ = read_audio(self.audio_dir / name)  # after 16-bit rounding: what raters hear
            self._written_originals[clip_id] = (name, level, written, rate)
        return self._written_originals[clip_id]

    def _write(
        self, name: str, samples: np.ndarray, rate: int, m: Measured, target: float, subtype: str
    ) -> tuple[Level, float]:
        """Write ``name`` unless present (names carry the level, so a present file is this one); measure it."""
        dest = self.audio_dir / name
        if not dest.exists():
            write_stimulus(dest, samples, rate, subtype)
        written, written_rate, _ = read_audio(dest)
        gain_db, reason = alignment_gain(m, self.spec, target)
        return level_after(written, written_rate, m, gain_db, reason, target), len(written) / written_rate

    def levels_by_file(self, records: list[dict]) -> dict[str, dict]:
        """File name -> level fields, from the manifest records of the prepared trials."""
        out: dict[str, dict] = {}
        for r in records:
            out[r["original_file"]] = r["original_level"]
            out[r["stimulus_file"]] = r["stimulus_level"]
        return out


def _source_key(s: StimulusSource, anchor_system: str | None) -> str:
    system = anchor_system if s.role == "anchor" else s.system_id
    return f"{s.role}/{system}/{s.clip_id}"
