"""Build a results folder's gallery: listening copies, thumbnails, the page (``<results>/gallery/``).

::

    gallery/index.html        the page (data, engine and script inside: opens from the file system)
    gallery/sounds/<key>.js    one listening copy each: its MP3 as base64 in a one-line script
    gallery/thumbs/<key>.png   one thumbnail each (spectrogram above waveform, the row's scales)
    gallery/cache.json         what each copy measured (level, true peak, length), by key

Why sounds are scripts: the page runs from ``file://``, where browsers refuse ``fetch``/XHR of other
files (Chromium, Firefox), so ``decodeAudioData`` could not get the bytes; a ``<script src>`` of a
sibling file is allowed, and loads only when a row is played. Embedding every copy in the page
instead would make the page as large as all the sounds together.

Idempotent and quick to rerun: a copy's key is its source's sha256 (the sonifications table's), its
row's level, the loudness rules and the format (:func:`~sonieval.gallery.copies.copy_key`); a thumbnail's
adds the row's scales. A rerun reuses every file whose key is unchanged, makes the others, rewrites the
page and removes the files no cell uses any more.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from sonieval.files import sha256_file, write_bytes_atomic, write_text_atomic
from sonieval.gallery.content import GalleryContent, read_content
from sonieval.gallery.copies import COPY_FORMAT, CopyFormat, ListeningCopy, copy_key, make_copy, row_level
from sonieval.gallery.thumbs import RowScale, render_thumbnail, row_scale
from sonieval.gallery_links import GALLERY_PAGE
from sonieval.results_layout import ResultsLayout

__all__ = ["GalleryResult", "build_gallery", "read_sound_file", "run_gallery", "sound_script"]

SOUNDS, THUMBS, CACHE = "sounds", "thumbs", "cache.json"
KEY_CHARS = 24  # of the sha256 hex in file names
_SOUND_LINE = re.compile(r'^SonievalGallery\.sound\("([0-9a-f]+)","([A-Za-z0-9+/=]*)"\);\s*$')


@dataclass
class GalleryResult:
    """What :func:`build_gallery` made."""

    page: Path
    n_clips: int
    n_systems: int
    n_cells: int  # sounds on the page: originals and sonifications
    made: int  # listening copies made in this run
    reused: int  # listening copies whose key was unchanged
    missing: list[str] = field(default_factory=list)  # cells without a sound, one line each (why)
    bytes: dict[str, int] = field(default_factory=dict)  # page, sounds, thumbs
    seconds: float = 0.0

    @property
    def notes(self) -> list[str]:
        """The warnings a stage runner prints (``sonieval run``, the demo): cells without a sound."""
        return [line for line in self.lines() if "no sound" in line]

    def lines(self) -> list[str]:
        mb = {k: v / 1e6 for k, v in self.bytes.items()}
        out = [
            f"gallery: {self.n_clips} clips x {self.n_systems} systems, {self.n_cells} sounds "
            f"({self.made} made, {self.reused} reused) in {self.seconds:.1f} s; page {mb.get('page', 0):.2f} MB, "
            f"sounds {mb.get('sounds', 0):.1f} MB, thumbnails {mb.get('thumbs', 0):.1f} MB"
        ]
        out += [f"gallery: no sound for {m}" for m in self.missing[:10]]
        if len(self.missing) > 10:
            out.append(f"gallery: ... and {len(self.missing) - 10} more cells without a sound (shown on the page)")
        out.append(f"gallery: open {self.page.resolve().as_uri()}")
        return out


def sound_script(key: str, data: bytes) -> str:
    """The one-line script that hands a copy's bytes to the page (see the module docstring)."""
    return f'SonievalGallery.sound("{key}","{base64.b64encode(data).decode("ascii")}");\n'


def read_sound_file(path: str | os.PathLike) -> tuple[str, bytes]:
    """(key, MP3 bytes) of a ``sounds/<key>.js`` file."""
    got = _SOUND_LINE.match(Path(path).read_text(encoding="ascii"))
    if not got:
        from sonieval.errors import DataError

        raise DataError("not a gallery sound file", path=path, hint="rebuild the gallery with `sonieval gallery`")
    return got.group(1), base64.b64decode(got.group(2))


@dataclass(frozen=True)
class _Job:
    """One sound to have: a clip's original (``level`` None) or a sonification aligned to its row's level."""

    clip_id: str
    system_id: str | None  # None: the original
    path: str | None
    sha256: str | None
    level: float | None = None
    scale: RowScale | None = None  # the row's scales (None for an original: its own copy sets them)


class _Builder:
    """Makes or reuses the copies and thumbnails of one gallery folder (threads: LAME releases the GIL)."""

    def __init__(self, out: Path, spec, fmt: CopyFormat, workers: int, progress: bool):
        self.out, self.spec, self.fmt, self.workers, self.progress = out, spec, fmt, workers, progress
        self.cache = _read_cache(out / CACHE)
        self.made = self.reused = 0
        self.used: set[str] = set()
        self._lock = threading.Lock()

    def run(self, jobs: list[_Job], what: str) -> list[dict]:
        from tqdm import tqdm

        with ThreadPoolExecutor(max(1, self.workers)) as pool:
            results = list(
                tqdm(pool.map(self.one, jobs), total=len(jobs), desc=f"gallery {what}", disable=not self.progress)
            )
        for r in results:
            if "key" in r:
                self.used.update((f"{SOUNDS}/{r['key']}.js", r["thumb"]))
        return results

    def one(self, job: _Job) -> dict:
        """The cell's record: sound key, thumbnail, copy measurements; or its error (one line)."""
        try:
            return self._one(job)
        except Exception as exc:  # noqa: BLE001 - one unreadable file is one cell without a sound
            return {"error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}

    def _one(self, job: _Job) -> dict:
        from sonieval.audio import decode_audio_bytes, read_audio

        sha = job.sha256 or sha256_file(job.path)
        key = copy_key(sha, job.level, self.spec, self.fmt)[:KEY_CHARS]
        sound = self.out / SOUNDS / f"{key}.js"
        record = self.cache.get(key)
        copy: ListeningCopy | None = None
        if record is None or not sound.is_file():
            samples, rate, _ = read_audio(job.path)
            copy = make_copy(samples, rate, self.spec, job.level, self.fmt)
            write_text_atomic(sound, sound_script(key, copy.data))
            record = copy.record()
        with self._lock:
            self.made, self.reused = (self.made + 1, self.reused) if copy else (self.made, self.reused + 1)
        scale = job.scale
        if scale is None:  # an original: its copy sets the row's scales (kept with its record)
            if "scale" not in record:
                decoded = copy.samples if copy else decode_audio_bytes(read_sound_file(sound)[1])[0]
                s = row_scale(decoded, self.fmt.sample_rate)
                record = {**record, "scale": [s.top_db, s.peak]}
            scale = RowScale(*record["scale"])
        thumb = self._thumbnail(key, scale, copy, sound)
        self.cache[key] = record
        return {"key": key, "thumb": thumb, **record}

    def _thumbnail(self, key: str, scale: RowScale, copy: ListeningCopy | None, sound: Path) -> str:
        from sonieval.audio import decode_audio_bytes

        name = hashlib.sha256(f"{key}/{scale.tag}".encode()).hexdigest()[:KEY_CHARS]
        rel = f"{THUMBS}/{name}.png"
        if not (self.out / rel).is_file():
            samples = copy.samples if copy else decode_audio_bytes(read_sound_file(sound)[1])[0]
            write_bytes_atomic(self.out / rel, render_thumbnail(samples, self.fmt.sample_rate, scale))
        return rel


def _read_cache(path: Path) -> dict:
    try:
        got = json.loads(path.read_text(encoding="utf-8"))
        return got.get("copies", {}) if isinstance(got, dict) else {}
    except (OSError, ValueError):
        return {}  # no cache, or a damaged one: every copy is checked against its file again


def _original_jobs(content: GalleryContent) -> list[_Job]:
    return [_Job(r.clip_id, None, r.original, None) for r in content.clips.itertuples()]


def _cell_jobs(content: GalleryContent, originals: dict[str, dict], spec) -> tuple[list[_Job], list[dict]]:
    """The sonifications to copy, each at its row's level; and the cells that have no source to copy."""
    jobs, absent = [], []
    for r in content.cells.itertuples():
        rec = originals.get(r.clip_id, {})
        scale = RowScale(*rec["scale"]) if "scale" in rec else None
        if r.status != "done" or not r.path:
            absent.append({"clip_id": r.clip_id, "system_id": r.system_id, "error": r.error or f"status {r.status}"})
        elif scale is None:
            absent.append({"clip_id": r.clip_id, "system_id": r.system_id, "error": "its original has no sound"})
        else:
            jobs.append(_Job(r.clip_id, r.system_id, r.path, r.sha256, row_level(rec, spec), scale))
    return jobs, absent


def _prune(out: Path, used: set[str]) -> None:
    """Remove sound and thumbnail files that no cell of this build uses (systems or clips since removed)."""
    for sub, suffix in ((SOUNDS, ".js"), (THUMBS, ".png")):
        for f in (out / sub).glob(f"*{suffix}"):
            if f"{sub}/{f.name}" not in used and re.fullmatch(rf"[0-9a-f]{{{KEY_CHARS}}}\{suffix}", f.name):
                f.unlink(missing_ok=True)


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("*") if f.is_file()) if folder.is_dir() else 0


def build_gallery(
    results: str | os.PathLike,
    *,
    protocol: str | os.PathLike | None = None,
    spec=None,
    fmt: CopyFormat = COPY_FORMAT,
    workers: int | None = None,
    progress: bool = False,
    echo: Callable[[str], None] | None = None,
) -> GalleryResult:
    """Build (or bring up to date) ``<results>/gallery/``; returns what it made (:class:`GalleryResult`).

    ``spec`` (:class:`sonieval.loudness.LevelSpec`): the loudness every row is aligned to (default: the
    study's, -26 LUFS under -1 dBTP); ``workers``: threads that make copies (default: up to 4)."""
    from sonieval.extras import require
    from sonieval.gallery.page import write_page
    from sonieval.loudness import LevelSpec

    require("sonieval gallery", "pyloudnorm")
    t0 = time.perf_counter()
    results = Path(results)
    content = read_content(results, protocol)
    spec = spec or LevelSpec()
    out = ResultsLayout(results).gallery
    builder = _Builder(out, spec, fmt, workers or min(4, os.cpu_count() or 1), progress)
    originals = dict(zip(content.clips["clip_id"], builder.run(_original_jobs(content), "originals")))
    jobs, absent = _cell_jobs(content, originals, spec)
    cells = {(j.clip_id, j.system_id): rec for j, rec in zip(jobs, builder.run(jobs, "sonifications"))}
    for a in absent:
        cells[(a["clip_id"], a["system_id"])] = {"error": a["error"]}
    kept = {k: v for k, v in builder.cache.items() if f"{SOUNDS}/{k}.js" in builder.used}
    write_text_atomic(out / CACHE, json.dumps({"copies": kept}, indent=1, sort_keys=True))
    page = write_page(out / GALLERY_PAGE, content, originals, cells, spec=spec, fmt=fmt)
    _prune(out, builder.used)
    missing = [f"{c} (original): {r['error']}" for c, r in originals.items() if "error" in r]
    missing += [f"{c} / {s}: {r['error']}" for (c, s), r in sorted(cells.items()) if "error" in r]
    result = GalleryResult(
        page,
        len(content.clips),
        len(content.systems),
        sum("key" in r for r in [*originals.values(), *cells.values()]),
        builder.made,
        builder.reused,
        missing,
        {"page": page.stat().st_size, "sounds": _folder_bytes(out / SOUNDS), "thumbs": _folder_bytes(out / THUMBS)},
        time.perf_counter() - t0,
    )
    for line in result.lines() if echo else []:
        echo(line)
    return result


@dataclass
class GallerySkipped:
    """The gallery stage when the study extra (pyloudnorm: BS.1770 loudness) is not installed."""

    notes: list[str]

    def lines(self) -> list[str]:
        return list(self.notes)


def run_gallery(proto, ledger=None, *, engine=None) -> GalleryResult | GallerySkipped:
    """The gallery as a stage of ``sonieval run`` and the demo (called as ``run_gallery(proto, ledger, engine=...)``;
    it runs in this process, so ``engine`` is not used):
    :func:`build_gallery` of the protocol's results folder at its study's loudness. Without the ``study``
    extra the stage is skipped with one line saying what to install, and the run goes on."""
    from sonieval.extras import MissingExtra
    from sonieval.loudness import LevelSpec

    try:
        return build_gallery(proto.results_path, spec=LevelSpec(target_lufs=proto.study.loudness_lufs))
    except MissingExtra as exc:
        return GallerySkipped([f"gallery skipped: {exc}"])
