"""Helpers shared by the study tests (imported via tests/study/conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sonieval.audio import write_wav
from sonieval.study.create import CreatedStudy, StudySettings, create_from_folders

RATE = 16_000


def tone(freq: float, seconds: float, rate: int = RATE, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = 0.5 * np.sin(2 * np.pi * freq * t) * np.hanning(len(t))
    if noise:
        x = x + noise * np.random.default_rng(seed).standard_normal(len(t))
    return x.astype(np.float32)


@dataclass
class FolderStudy:
    created: CreatedStudy
    originals: Path
    systems: dict[str, Path]

    @property
    def url(self) -> str:
        return self.created.storage

    @property
    def study_id(self) -> str:
        return self.created.study_id

    @property
    def admin_token(self) -> str:
        assert self.created.admin_token
        return self.created.admin_token

    @property
    def tokens(self) -> list[str]:
        return [tok for _, tok in self.created.rater_tokens]


def write_folders(
    root: Path, n_clips: int = 2, n_systems: int = 2, seconds: float = 0.3, spare: bool = True
) -> tuple[Path, dict[str, Path]]:
    """Originals and system folders; with ``spare`` one more original no system has (not rated: the
    familiarisation examples come from it)."""
    originals = root / "originals"
    systems = {f"sys{chr(65 + s)}": root / f"system{s}" for s in range(n_systems)}
    if spare:
        write_wav(originals / "spare0.wav", tone(250, seconds, noise=0.05, seed=9), RATE)
    for c in range(n_clips):
        write_wav(originals / f"clip{c}.wav", tone(300 + 200 * c, seconds), RATE)
        for s, folder in enumerate(systems.values()):
            write_wav(folder / f"clip{c}.wav", tone(300 + 200 * c, seconds, noise=0.05 * (s + 1), seed=s), RATE)
    return originals, systems


def make_folder_study(
    tmp_path: Path,
    *,
    storage: str | None = None,
    study_id: str = "teststudy",
    n_clips: int = 2,
    n_systems: int = 2,
    seconds: float = 0.3,
    replace_unrated: bool = False,
    **settings,
) -> FolderStudy:
    originals, systems = write_folders(
        tmp_path / "input", n_clips, n_systems, seconds, spare=settings.get("familiarisation", True)
    )
    defaults = dict(study_id=study_id, attention_checks=1, min_listen_fraction=0.0, n_raters=2)
    defaults.update(settings)
    created = create_from_folders(
        StudySettings(**defaults),
        originals,
        systems,
        study_dir=tmp_path / "study",
        storage=storage,
        progress=False,
        replace_unrated=replace_unrated,
    )
    return FolderStudy(created, originals, systems)


def clone_study(template: FolderStudy, dest: Path) -> FolderStudy:
    """A private copy of a created study (files and SQLite database): cheaper than creating one."""
    import shutil
    import sqlite3
    from dataclasses import replace

    src_root = template.created.study_dir.parent
    shutil.copytree(src_root, dest, dirs_exist_ok=True)
    study_dir = dest / template.created.study_dir.name
    db = study_dir / "study.sqlite"
    con = sqlite3.connect(db)
    con.execute("UPDATE studies SET study_dir = ?", (str(study_dir.resolve()),))
    con.commit()
    con.close()
    created = replace(template.created, storage=f"sqlite:///{db}", study_dir=study_dir)
    return FolderStudy(
        created, dest / "input" / "originals", {k: dest / "input" / v.name for k, v in template.systems.items()}
    )


def measured_files(created: CreatedStudy) -> pd.DataFrame:
    """Every study file's role, loudness (LUFS) and true peak (dBTP), measured from disk."""
    import pandas as pd

    from sonieval.audio import read_audio
    from sonieval.study.loudness import measure
    from sonieval.study.store import StudyStore

    rows, seen = [], set()
    with StudyStore(created.storage) as store:
        trials = store.trials(created.study_id)
    for t in trials.values():
        for role, name in ((t.role, t.stimulus_file), ("original", t.original_file)):
            if name in seen:
                continue
            seen.add(name)
            x, rate, _ = read_audio(created.study_dir / "audio" / name)
            lufs, peak = measure(x, rate)
            rows.append(
                {
                    "role": role,
                    "clip_id": t.clip_id,
                    "system_id": t.system_id if role != "original" else "",
                    "file": name,
                    "lufs": lufs,
                    "true_peak_dbtp": peak,
                    "sample_peak": float(np.max(np.abs(x))),
                }
            )
    return pd.DataFrame(rows)
