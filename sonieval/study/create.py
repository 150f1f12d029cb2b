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
                                         server's current address (also the public enrolment key)
    <study_dir>/secret.key               the key of the enrolment address hashes (0600)
    <study_dir>/audio/hc_*.wav           the headphone check's sounds (when enabled)
    <study_dir>/ratings.{csv,parquet}    exports

Stimulus preparation goes through the run ledger (stage ``study``): a file that cannot be
read fails only the trials that need it, which are left out of the study and reported, one
line per failed file with the reader's message. Every file is aligned in loudness
(:mod:`sonieval.study.loudness`, :mod:`sonieval.study.prepare`); the level of each is stored
with the study and exported with the ratings. The familiarisation examples are chosen by a
measured distance (:mod:`sonieval.study.familiarisation`).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from sonieval.data.results_folder import check_audio_folders, check_sonifications
from sonieval.errors import DataError, ProtocolError
from sonieval.rating_attributes import RatingAttribute, RatingAttributeError, resolve_rating_attributes
from sonieval.results_layout import StudyLayout
from sonieval.study.design import (
    DesignConfig,
    StimulusSource,
    Trial,
    anchor_system_id,
    build_trials,
    check_subset_balance,
    originals_from_tables,
    originals_in_folder,
    sources_from_audio_dir,
    sources_from_folders,
    sources_from_tables,
)
from sonieval.study.familiarisation import choose_examples, spare_clips
from sonieval.study.loudness import CEILING_DBTP, TARGET_LUFS, Level, LevelSpec, describe_shortfalls
from sonieval.study.options import Enrolment, Headphones, Sessions, StudyOptions
from sonieval.study.prepare import AnchorSettings, StimulusWriter
from sonieval.study.stimuli import AUDIO_SUBDIR, StudyFormat, study_rate
from sonieval.study.store import StudyStore, redact_url


@dataclass
class StudySettings:
    """The study section of a protocol, as the creation needs it (also built from CLI options)."""

    study_id: str
    mode: str = "joint"
    # catalogue names or definitions (sonieval.rating_attributes); the protocol's study.attributes
    attributes: tuple[str | RatingAttribute, ...] = ("visual", "audio")
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
    loudness_lufs: float = TARGET_LUFS
    true_peak_dbtp: float = CEILING_DBTP
    title: str | None = None
    rating_scale: str = "categories"
    sessions: Sessions = field(default_factory=Sessions)
    enrolment: Enrolment = field(default_factory=Enrolment)  # cap: n_raters
    headphones: Headphones = field(default_factory=Headphones)
    sample_rate: int | None = None  # every file's rate; None: the rate most originals have

    @property
    def level_spec(self) -> LevelSpec:
        return LevelSpec(self.loudness_lufs, self.true_peak_dbtp)

    @property
    def rating_attributes(self) -> tuple[RatingAttribute, ...]:
        try:
            return resolve_rating_attributes(self.attributes)
        except RatingAttributeError as exc:
            raise ProtocolError(f"study.attributes: {exc}") from None

    @property
    def config(self) -> DesignConfig:
        names = tuple(a.name for a in self.rating_attributes)
        return DesignConfig(self.mode, names, self.design, self.trials_per_rater, self.min_ratings_per_trial, self.seed)

    @classmethod
    def from_protocol(cls, proto) -> StudySettings:
        s = proto.study
        return cls(
            study_id=proto.study_id,
            mode=s.mode,
            attributes=s.rating_attributes,
            scale_min=s.scale_min,
            scale_max=s.scale_max,
            design=s.design,
            trials_per_rater=s.trials_per_rater,
            min_ratings_per_trial=s.min_ratings_per_trial,
            n_raters=s.n_raters,
            hidden_reference=s.hidden_reference,
            anchor_kind=s.anchor.kind if s.anchor else None,
            anchor_cutoff_hz=s.anchor.cutoff_hz if s.anchor else 3500.0,
            anchor_snr_db=s.anchor.snr_db if s.anchor else 0.0,
            attention_checks=s.attention_checks,
            familiarisation=s.familiarisation,
            min_listen_fraction=getattr(s, "min_listen_fraction", 1.0),
            seed=proto.seed,
            # read when the protocol's study section provides them (sonieval.protocol.StudySpec)
            loudness_lufs=getattr(s, "loudness_lufs", TARGET_LUFS),
            true_peak_dbtp=getattr(s, "true_peak_dbtp", CEILING_DBTP),
            title=s.title,
            rating_scale=s.rating_scale,
            sessions=Sessions(s.sessions.pages, s.sessions.minutes, s.sessions.idle_minutes),
            enrolment=Enrolment(
                **{
                    k: getattr(s.enrolment, k)
                    for k in (
                        "enabled",
                        "max_per_minute",
                        "max_per_ip_per_hour",
                        "trust_proxy_headers",
                        "require_participant_id",
                        "completion_code",
                        "completion_url",
                        "screened_out_code",
                        "trusted_proxy_hops",
                        "per_rater_codes",
                        "reenrol_block_hours",
                        "release_after_minutes",
                    )
                }
            ),
            headphones=Headphones(s.headphone_check.enabled, s.headphone_check.on_fail),
            sample_rate=getattr(s, "sample_rate", None),
        )

    def options(self) -> tuple[StudyOptions, str | None]:
        """The study's stored options and the public enrolment key (None without enrolment): the key
        and a completion code are minted here, only the key's hash is stored."""
        import secrets
        from dataclasses import replace

        from sonieval.study.tokens import hash_token, new_token

        enrol, key = replace(self.enrolment, cap=self.n_raters), None
        if enrol.enabled:
            key = new_token()
            enrol = replace(
                enrol, key_hash=hash_token(key), completion_code=enrol.completion_code or secrets.token_hex(4).upper()
            )
        heads = (
            replace(self.headphones, salt=self.headphones.salt or secrets.token_hex(8))
            if self.headphones.enabled
            else self.headphones
        )
        return StudyOptions(self.title, self.rating_scale, self.sessions, enrol, heads, self.rating_attributes), key


@dataclass
class CreatedStudy:
    study_id: str
    storage: str
    study_dir: Path
    n_trials: int
    admin_token: str | None  # None: the study existed already (its admin link was shown then)
    rater_tokens: list[tuple[str, str]] = field(default_factory=list)
    enrol_key: str | None = None  # the public enrolment link's key (new studies with enrolment only)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # e.g. stimuli that could not reach the target loudness


def study_paths_for_protocol(proto) -> tuple[Path, str]:
    """(study folder, storage URL) of a protocol's study (``{results_dir}`` and ``$VARS`` filled in)."""
    results = proto.results_path
    # Absolute, so the Streamlit child process finds the same file whatever its folder;
    # $VARS are expanded so a shared-server password can stay out of the protocol file.
    url = os.path.expandvars(proto.study.storage.replace("{results_dir}", str(results.resolve())))
    return proto.layout.study, url


def create_from_protocol(
    proto,
    *,
    storage: str | None = None,
    progress: bool = True,
    replace_unrated: bool = False,
    loudness_lufs: float | None = None,
    true_peak_dbtp: float | None = None,
) -> CreatedStudy:
    settings = StudySettings.from_protocol(proto)
    if loudness_lufs is not None:
        settings.loudness_lufs = loudness_lufs
    if true_peak_dbtp is not None:
        settings.true_peak_dbtp = true_peak_dbtp
    study_dir, default_url = study_paths_for_protocol(proto)
    if proto.study.audio_dir is not None:
        sources, notes = sources_from_audio_dir(proto.resolve(proto.study.audio_dir), proto.study.clips)
        source = {"kind": "audio_dir", "audio_dir": str(proto.resolve(proto.study.audio_dir))}
        every_original = originals_in_folder(proto.resolve(proto.study.audio_dir) / "originals")
    else:
        check_sonifications(proto.results_path, proto.source)  # missing tables, sonifications of other clips: refused
        sources, notes = sources_from_tables(proto.results_path, systems=proto.study.systems, clips=proto.study.clips)
        source = {"kind": "tables", "results_dir": str(proto.results_path.resolve())}
        every_original = originals_from_tables(proto.results_path)
    source["protocol"] = str(proto.source) if proto.source else None
    return create_study(
        settings,
        sources,
        study_dir=study_dir,
        storage=storage or default_url,
        ledger_file=proto.layout.ledger,
        source=source,
        notes=notes,
        progress=progress,
        replace_unrated=replace_unrated,
        originals=every_original,
    )


def create_from_folders(
    settings: StudySettings,
    originals: Path,
    systems: dict[str, Path],
    *,
    study_dir: Path,
    storage: str | None = None,
    progress: bool = True,
    replace_unrated: bool = False,
) -> CreatedStudy:
    check_audio_folders(
        originals, systems, purpose="rated", reference_option="--originals"
    )  # stale WAVs, mixed sources
    sources, notes = sources_from_folders(originals, systems)
    source = {
        "kind": "folders",
        "originals": str(Path(originals).resolve()),
        "systems": {k: str(Path(v).resolve()) for k, v in systems.items()},
    }
    return create_study(
        settings,
        sources,
        study_dir=study_dir,
        storage=storage or f"sqlite:///{Path(study_dir) / 'study.sqlite'}",
        ledger_file=StudyLayout(Path(study_dir)).ledger,
        source=source,
        notes=notes,
        progress=progress,
        replace_unrated=replace_unrated,
        originals=originals_in_folder(originals),
    )


class StudyNotCreated(DataError):
    """No sonification trial could be prepared; ``failures`` names each failed file and why."""

    def __init__(self, message: str, failures: list[str], **kw):
        super().__init__(message, **kw)
        self.failures = failures


def create_study(
    settings: StudySettings,
    sources: list[StimulusSource],
    *,
    study_dir: Path,
    storage: str,
    ledger_file: Path,
    source: dict,
    notes: list[str] | None = None,
    progress: bool = True,
    replace_unrated: bool = False,
    originals: dict[str, Path] | None = None,
) -> CreatedStudy:
    """Make the stimuli and waveforms, store the study and invite ``n_raters`` raters (if new).

    ``originals``: every original the source offers (``{clip id: file}``), rated or not; the
    familiarisation examples come from one that is not rated."""
    notes = list(notes or [])
    study_dir = Path(study_dir)
    n_attributes = len(settings.rating_attributes)  # an unknown or invalid attribute: one ProtocolError line
    if settings.mode not in ("joint", "split", "multi"):
        raise ProtocolError(f"study.mode {settings.mode!r}: allowed are joint, split and multi")
    anchor_id = (
        anchor_system_id(settings.anchor_kind, settings.anchor_cutoff_hz, settings.anchor_snr_db)
        if settings.anchor_kind
        else None
    )
    trial_list = build_trials(
        sources,
        hidden_reference=settings.hidden_reference,
        anchor_system=anchor_id,
        attention_checks=settings.attention_checks,
        scale_min=settings.scale_min,
        scale_max=settings.scale_max,
        joint=settings.mode in ("joint", "multi") or n_attributes == 1,
        n_marks=n_attributes,
        seed=settings.seed,
    )
    check_subset_balance(sum(t.role == "sonification" for t in trial_list), settings.config, settings.n_raters)
    anchor = (
        AnchorSettings(settings.anchor_kind, settings.anchor_cutoff_hz, settings.anchor_snr_db, settings.seed)
        if settings.anchor_kind
        else None
    )
    fmt = StudyFormat(settings.sample_rate or study_rate(sorted({s.original_path for s in sources})))
    writer = StimulusWriter(settings.study_id, study_dir, sources, settings.level_spec, anchor, anchor_id, fmt)
    writer.plan(trial_list)
    kept, failures, file_levels, records = _prepare_trials(writer, trial_list, study_dir, ledger_file, progress)
    warnings = _level_warnings(kept, file_levels, settings.level_spec)
    notes += format_notes(records, fmt)
    if failures:
        notes.append(
            f"{sum(len(v) for v in failures.values())} trial(s) left out because their audio could not be prepared "
            f"(recorded in {ledger_file}):"
        )
        notes += failure_lines(failures)
    if not any(t.role == "sonification" for t in kept):
        raise StudyNotCreated(
            "no sonification trial could be prepared",
            failure_lines(failures),
            path=ledger_file,
            hint="fix or remove the files listed above, then run the command again",
        )
    familiarisation = {}
    if settings.familiarisation:
        familiarisation, example_levels = _familiarisation(settings, writer, originals or {}, kept, anchor)
        file_levels.update(example_levels)
        if not familiarisation:
            warnings.append(
                "no familiarisation examples: they come from a clip that is not rated, and every original is "
                "rated (add an original without sonifications, or a clip outside the listening set)"
            )
    provenance = {
        "source": source,
        "anchor": anchor_id,
        "n_raters_planned": settings.n_raters,
        "notes": notes[:20],
        "loudness": settings.level_spec.as_dict(),
        "format": fmt.as_dict(),
    }
    options, enrol_key = settings.options()
    with StudyStore(storage) as store:
        replacing = replace_unrated and store.has_study(settings.study_id)
        admin = store.create_study(
            settings.study_id,
            settings.config,
            scale_min=settings.scale_min,
            scale_max=settings.scale_max,
            study_dir=study_dir,
            trials_list=kept,
            familiarisation=familiarisation,
            min_listen_fraction=settings.min_listen_fraction,
            provenance=provenance,
            file_levels=file_levels,
            replace_unrated=replace_unrated,
            options=options,
        )
        if replacing and admin is not None:
            _retire_links(study_dir)
            notes.append("an unrated study with other trials was replaced; its old links no longer work")
        # With public enrolment, n_raters is the cap of self-enrolled raters: no personal links are minted now.
        raters = (
            store.invite(settings.study_id, settings.n_raters)
            if admin is not None and not options.enrolment.enabled
            else []
        )
        if options.headphones.enabled:  # named with the stored salt (an existing study keeps its own)
            from sonieval.study.headphone import write_stimuli

            write_stimuli(study_dir / AUDIO_SUBDIR, salt=store.study(settings.study_id).options.headphones.salt)
    created = CreatedStudy(
        settings.study_id,
        storage,
        study_dir,
        len(kept),
        admin,
        raters,
        enrol_key if admin is not None else None,
        notes,
        warnings,
    )
    write_study_json(study_dir, settings.study_id, storage)
    return created


def _prepare_trials(
    writer: StimulusWriter, trial_list: list[Trial], study_dir: Path, ledger_file: Path, progress: bool
) -> tuple[list[Trial], dict[str, list[str]], dict[str, dict], list[dict]]:
    """Write every trial's files through the run ledger (stage ``study``).

    Returns the trials kept (files filled in), the failures (error -> trials it left out), the
    level of every written file and the ledger records of the kept trials. One unreadable file
    fails only the trials that need it.
    """
    from sonieval.ledger import ItemOutcome, LedgerItem, RunLedger

    def prepare(item: LedgerItem) -> ItemOutcome:
        record = writer.prepare(item.payload)
        return ItemOutcome(path=writer.audio_dir / record["stimulus_file"], extra=record)

    sid = writer.study_id
    items = [
        LedgerItem(
            key=f"{sid}/{t.source_key}",
            system_id=t.system_id,
            payload=t,
            inputs={"study_dir": str(study_dir.resolve()), "level": writer.level_tag(t.clip_id)},
        )
        for t in trial_list
    ]
    kept: list[Trial] = []
    records: list[dict] = []
    failures: dict[str, list[str]] = {}
    with contextlib.closing(RunLedger(ledger_file)) as ledger:
        result = ledger.run_batch("study", items, prepare, desc="study stimuli", progress=progress)
        for item in items:
            t: Trial = item.payload
            if item.key in result.failed:
                failures.setdefault(result.failed[item.key], []).append(f"{t.role} {t.system_id}/{t.clip_id}")
                continue
            extra = (ledger.get("study", item.key) or {}).get("extra") or {}
            for k in ("original_file", "stimulus_file", "waveform_file", "stimulus_seconds"):
                setattr(t, k, extra[k])
            kept.append(t)
            records.append({**extra, "role": t.role})
    return kept, failures, writer.levels_by_file(records), records


def format_notes(records: list[dict], fmt: StudyFormat) -> list[str]:
    """What bringing the stimuli into the study's one format did (console lines; also in provenance)."""
    notes = [
        f"every file: {fmt.sample_rate} Hz, 16-bit PCM with its own dither, each clip's files as long as its "
        f"original ({fmt.fade_s * 1000:g} ms fade where one is trimmed or padded)"
    ]
    resampled = [r for r in records if r.get("source_rate") not in (None, fmt.sample_rate)]
    if resampled:
        rates = ", ".join(f"{r:g} Hz" for r in sorted({r["source_rate"] for r in resampled}))
        notes.append(f"{len(resampled)} stimulus file(s) resampled to {fmt.sample_rate} Hz (from {rates})")
    for action in ("trimmed", "padded"):
        hits = [r for r in records if r.get("length_action") == action]
        if hits:
            notes.append(f"{len(hits)} stimulus file(s) {action} to their clip's length")
    return notes


def _familiarisation(
    settings: StudySettings, writer: StimulusWriter, originals: dict[str, Path], kept: list[Trial], anchor
) -> tuple[dict, dict[str, dict]]:
    """The examples from a clip no one rates, with its files' levels (:mod:`sonieval.study.familiarisation`)."""
    candidates = spare_clips(originals, {t.clip_id for t in kept}, settings.seed)
    if anchor is None:  # a study without an anchor still shows what "near the bottom" is: BS.1534's low-pass
        anchor = AnchorSettings("lowpass", 3500.0, 0.0, settings.seed)
    return choose_examples(writer, candidates, anchor)


def failure_lines(failures: dict[str, list[str]]) -> list[str]:
    """One line per failed file: the reader's message (it names the file) and the trials it left out."""
    lines = []
    for error, which in failures.items():
        shown = ", ".join(which[:4]) + (f" and {len(which) - 4} more" if len(which) > 4 else "")
        lines.append(f"  {error} [left out: {shown}]")
    return lines


def _level_warnings(kept: list[Trial], file_levels: dict[str, dict], spec: LevelSpec) -> list[str]:
    """Console lines for files that did not reach the target loudness, named by role/system/clip."""
    names: dict[str, str] = {}
    for t in kept:
        names.setdefault(t.original_file, f"original {t.clip_id}")
        names.setdefault(t.stimulus_file, f"{t.role} {t.system_id}/{t.clip_id}")
    levels = {names.get(f, f): Level.from_dict(lv) for f, lv in file_levels.items()}
    return describe_shortfalls(levels, spec)


def _retire_links(study_dir: Path) -> None:
    """The old study (no marks) was replaced: its links no longer work."""
    links = study_dir / "links.txt"
    if links.exists():
        links.replace(study_dir / "links-replaced.txt")


def write_study_json(study_dir: Path, study_id: str, storage: str) -> Path:
    from sonieval.files import write_text_atomic

    return write_text_atomic(
        Path(study_dir) / "study.json",
        json.dumps({"study_id": study_id, "storage": redact_url(storage)}, indent=2) + "\n",
    )


def read_study_json(study_dir: Path) -> tuple[str, str]:
    path = Path(study_dir) / "study.json"
    if not path.is_file():
        raise DataError(
            "not a study folder (no study.json)", path=study_dir, hint="create one with sonieval study create"
        )
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
    if created.enrol_key:
        lines.append(f"enrol {created.enrol_key}")
    lines += [f"rater {rid} {tok}" for rid, tok in created.rater_tokens]
    if lines:
        append_links(study_dir, lines)


def read_enrol_key(study_dir: Path) -> str | None:
    """The latest public enrolment key recorded in ``links.txt`` (None if there is none)."""
    path = Path(study_dir) / "links.txt"
    keys = (
        [
            line.split()[1]
            for line in path.read_text(encoding="utf-8").splitlines()
            if len(line.split()) == 2 and line.split()[0] == "enrol"
        ]
        if path.is_file()
        else []
    )
    return keys[-1] if keys else None


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
