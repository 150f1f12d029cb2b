"""Protocols: one YAML file describes a whole experiment (docs/architecture.md#stages-joined-by-tables).

Every stage reads only the protocol and the previous stages' tables. The models below are
the schema; an unknown or misspelt key, a wrong type or an impossible value is reported as
one line naming the file, the key path and what is allowed (:func:`load_protocol`).

Relative paths in a protocol are resolved against the protocol file's folder, except
``results_dir``/``cache_dir`` which are resolved against the current directory (so
``protocols/demo.yaml`` writes to ``results/demo`` when run from the repo root).
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from sonieval.errors import ProtocolError
from sonieval.measures import item_measure_names, measure_names
from sonieval.rating_attributes import RatingAttribute, resolve_rating_attributes
from sonieval.results_layout import ResultsLayout

GATE_VARIANTS = (
    "LIN",
    "CONV",
    "ATTN",
    "CONV-R",
    "CONV-D",
    "CONV-RDD",
    "CONV-LN",
    "CONV-GN",
    "CONV-RDN",
    "LIN-D",
    "LIN-R",
    "LIN-C",
    "RIDGE",  # not the reference work's: the closed-form least-squares reference (sonieval.models.gates.RIDGE)
)
# Gate variants fitted in closed form (no learning rate, no epochs: system lr0.0/e0), with grid alignments only.
CLOSED_FORM_VARIANTS = ("RIDGE",)
Alignment = Literal["reshape", "transpose", "grid", "grid-pool"]
ModelSize = Literal["full", "small"]
# Post-processing names; a chain is written with "+" (e.g. "minmax+squared"); "threshold10"
# means threshold at 10 % of peak.
POSTPROCESS_STEPS = ("none", "peak", "minmax", "squared", "wiener", "embedding_rescale")
THRESHOLD_PREFIX = "threshold"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SplitSpec(_Model):
    train: float = Field(0.8, gt=0, lt=1)
    validation: float = Field(0.1, gt=0, lt=1)
    test: float = Field(0.1, gt=0, lt=1)
    seed: int = 42

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitSpec:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + validation + test must be 1, got {total:g}")
        return self


class ListeningSetSpec(_Model):
    n_clips: int = Field(77, ge=1)
    seed: int = 42
    at_least_one_per_class: bool = True


class DataSpec(_Model):
    # Path to an ESC-50 copy (official layout), or "auto": $SONIEVAL_ESC50 when set, else the
    # built-in synthetic clip set (labelled as such in every output).
    esc50: str = "auto"
    clip_seconds: float = Field(5.0, gt=0)
    length_policy: Literal["pad_or_trim", "strict"] = "pad_or_trim"
    folds: list[int] | None = None
    categories: list[str] | None = None  # restrict to these ESC-50 classes (None = all)
    max_clips_per_class: int | None = Field(None, ge=1)
    split: SplitSpec = SplitSpec()
    listening_set: ListeningSetSpec = ListeningSetSpec()

    @field_validator("folds")
    @classmethod
    def _folds_valid(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or any(f not in (1, 2, 3, 4, 5) for f in v)):
            raise ValueError("folds must be a non-empty list of ESC-50 folds 1..5")
        return v


PLUGIN_ENCODER = "plugin"  # encoders[i].name of a plug-in (sonieval.models.plugins)
TWIN_SUFFIX = ".twin"  # a twin's encoder name in system ids: ENCODER.twin (sonieval.tables.EncoderSlot)
_PLAIN_WORD = re.compile(r"^[A-Za-z0-9_-]+$")  # an encoder name in system ids; a model written as a size word
_CALLABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$")


class EncoderSpec(_Model):
    name: str  # registry name: "ast", "hubert", "crepe", ..., or "plugin" (sonieval.models.catalogue)
    # hub id or local directory; None = the registry's default hub id; crepe: "tiny" or "full"
    model: str | None = None
    size: ModelSize = "full"  # "small": randomly initialised small version of the architecture
    finetuned: str | None = None  # local directory of a fine-tuned checkpoint (sonieval finetune)
    # "input" (the cut before the transformer), block k (1-based), a list of those, or "all"
    # (sonieval.models.layers); whether the encoder has block k is checked when it is loaded.
    layer: str | int | list[str | int] = "input"
    # The encoder's name in system ids and tables (default: `name`; `name-MODEL` when model is a plain
    # word such as crepe's tiny/full; a plug-in's function name). No two entries may share one.
    id: str | None = None
    # "random": the same architecture with randomly initialised weights (drawn with `seed`) instead of the
    # published ones: an encoder of its own (not a control; see twin).
    weights: Literal["pretrained", "random"] = "pretrained"
    # Also sonify this encoder's random twin (the same architecture, weights: random, drawn with `seed`) as
    # a control: system ids ENCODER.twin[.layer<k>]/..., control column "twin" (sonieval.tables).
    twin: bool = False
    seed: int = 0  # seed of random weights (weights: random, the twin, size: small)
    # Seconds between embedding frames, for encoders whose frames are read at chosen times (crepe);
    # default: the codec's frame hop (512/44100 s). Other encoders have a fixed frame rate.
    hop: float | None = Field(None, gt=0, le=1)
    # name: plugin: "module:function" that returns your encoder (docs/extending.md), called with `options`
    callable: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    # The gates trained on this encoder (None = the protocol's gates.variants / gates.alignments): e.g. the
    # closed-form RIDGE on grid for a frame encoder beside LIN on transpose for AST. Where a codec also
    # restricts its gates (codec.variants / codec.alignments), a gate runs when both allow it.
    variants: list[str] | None = None
    alignments: list[Alignment] | None = None

    _is_twin: bool = PrivateAttr(False)  # set on the copy twin_spec() makes, never read from YAML

    @field_validator("layer", mode="before")
    @classmethod
    def _layer_form(cls, v: Any) -> Any:
        allowed = "allowed: input, a block number k >= 1, a list of those, or all"

        def one(item: Any) -> None:
            if item == "all" and isinstance(v, list):
                raise ValueError(f"'all' stands alone, not inside a list; {allowed}")
            if isinstance(item, str) and item in ("input", "all"):
                return
            if isinstance(item, bool) or not isinstance(item, int):
                raise ValueError(f"{item!r} is not a layer; {allowed}")
            if item < 1:
                raise ValueError(f"{item} is not a block (blocks count from 1; the cut before the first is 'input')")

        items = v if isinstance(v, list) else [v]
        if not items:
            raise ValueError(f"an empty list names no layer; {allowed}")
        for item in items:
            one(item)
        if len(items) != len({str(i) for i in items}):
            raise ValueError(f"a layer is listed twice in {v!r}")
        return v

    @field_validator("id")
    @classmethod
    def _id_form(cls, v: str | None) -> str | None:
        if v is not None and (not _PLAIN_WORD.match(v) or v == "codec"):
            raise ValueError("an encoder id is letters, digits, '-' and '_' (it names systems), and not 'codec'")
        return v

    @field_validator("callable")
    @classmethod
    def _callable_form(cls, v: str | None) -> str | None:
        if v is not None and not _CALLABLE.match(v):
            raise ValueError("write the plug-in as 'module:function', e.g. 'mypkg.encoders:make_encoder'")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> EncoderSpec:
        plugin = self.name == PLUGIN_ENCODER
        if plugin and self.callable is None:
            raise ValueError("a plug-in encoder needs callable: 'module:function' (docs/extending.md)")
        if not plugin and (self.callable is not None or self.options):
            raise ValueError("callable and options belong to a plug-in encoder (name: plugin)")
        if plugin and (self.model or self.finetuned or self.size != "full" or self.hop is not None):
            raise ValueError("a plug-in encoder takes callable and options only (no model, size, finetuned or hop)")
        if self.twin and (self.weights == "random" or self.size == "small" or plugin):
            what = "a plug-in" if plugin else "this entry is already random (size: small or weights: random)"
            raise ValueError(f"twin: the random twin is a control for a pretrained encoder; {what}")
        _check_gate_choice(self.variants, self.alignments, f"encoder {self.name}")
        return self

    @property
    def is_twin(self) -> bool:
        """Whether this is the random twin of a protocol entry (made by :meth:`twin_spec`)."""
        return self._is_twin

    @property
    def system_name(self) -> str:
        """The encoder's name in system ids and tables: ``id``, else derived (see ``id``); ``.twin`` appended
        for a twin (e.g. ``crepe-tiny``, ``crepe-tiny.twin``, ``hubert``)."""
        base = self.id
        if base is None and self.callable:
            base = self.callable.rsplit(":", 1)[1]
        if base is None:
            plain = self.model is not None and _PLAIN_WORD.match(self.model)
            base = f"{self.name}-{self.model}" if plain else self.name
        return base + TWIN_SUFFIX if self._is_twin else base

    def twin_spec(self) -> EncoderSpec:
        """This encoder's random twin: the same entry with ``weights: random``, named ``<system_name>.twin``."""
        twin = self.model_copy(update={"weights": "random", "twin": False})
        twin._is_twin = True
        return twin


class CodecSpec(_Model):
    # "mel" is the weight-free codec (normalised log-mel with the DAC-VAE latent's shape, decoded by
    # Griffin-Lim): the method runs, learns and can be heard without any download.
    name: Literal["dac-vae", "dac", "mel"] = "dac-vae"
    checkpoint: str | None = None  # hub file or local path; None = the published default
    size: ModelSize = "full"
    iterations: int | None = Field(None, ge=1)  # mel: Griffin-Lim iterations (default 32)
    # When a protocol lists several codecs, each may restrict the gates trained onto it (None = all of
    # the protocol's gates.variants / gates.alignments) and whether gates.controls apply to it.
    variants: list[str] | None = None
    alignments: list[Alignment] | None = None
    controls: bool = True
    # Encode at most this many train clips (and the same share of validation clips, seeded) for this
    # codec; listening clips are always encoded. For codecs too slow to encode every clip on a CPU.
    max_train_clips: int | None = Field(None, ge=2)

    @model_validator(mode="after")
    def _consistent(self) -> CodecSpec:
        if self.name == "mel" and (self.checkpoint is not None or self.size != "full"):
            raise ValueError("the mel codec is weight-free: it takes no checkpoint and no size")
        if self.name != "mel" and self.iterations is not None:
            raise ValueError("iterations (Griffin-Lim) applies to the mel codec only")
        for v in self.variants or []:
            if v not in GATE_VARIANTS:
                raise ValueError(f"unknown gate variant {v!r}; allowed: {', '.join(GATE_VARIANTS)}")
        return self


Control = Literal["untrained", "shuffled"]


def _check_gate_choice(variants: list[str] | None, alignments: list[str] | None, where: str) -> None:
    """An encoder's own gate variants and alignments: known names, and a grid alignment for a closed-form gate."""
    if variants is not None and not variants:
        raise ValueError(f"{where}: variants lists no gate (leave it out to use gates.variants)")
    for name in variants or []:
        if name not in GATE_VARIANTS:
            raise ValueError(f"{where}: unknown gate variant {name!r}; allowed: {', '.join(GATE_VARIANTS)}")
    closed = [v for v in variants or [] if v in CLOSED_FORM_VARIANTS]
    if closed and alignments is not None and not any(a in ("grid", "grid-pool") for a in alignments):
        raise ValueError(
            f"{where}: {closed[0]} needs alignment grid or grid-pool (alignments: {', '.join(alignments)})"
        )


def gate_choices(proto: Protocol, codec: CodecSpec, encoder: EncoderSpec) -> list[tuple[str, str]]:
    """The (variant, alignment) pairs trained from ``encoder`` onto ``codec``: the encoder's own lists, else the
    protocol's gates.variants / gates.alignments, kept where the codec's own lists (when set) allow them."""
    variants = encoder.variants or proto.gates.variants
    alignments = encoder.alignments or proto.gates.alignments
    if codec.variants is not None:
        variants = [v for v in variants if v in codec.variants] if encoder.variants else codec.variants
    if codec.alignments is not None:
        alignments = [a for a in alignments if a in codec.alignments] if encoder.alignments else codec.alignments
    return [(v, a) for v in variants for a in alignments]


class GatesSpec(_Model):
    variants: list[str] = Field(default_factory=lambda: ["LIN"])
    alignments: list[Alignment] = Field(default_factory=lambda: ["transpose"])
    # Learning controls, trained, sonified and scored like systems (sonieval.tables.GateSlot):
    # "untrained" = each gate at its initialisation; "shuffled" = each gate trained on
    # (embedding, latent) pairs of mismatched training clips with the same budget.
    controls: list[Control] = Field(default_factory=list)

    @field_validator("variants")
    @classmethod
    def _known_variants(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one gate variant is needed")
        for name in v:
            if name not in GATE_VARIANTS:
                close = difflib.get_close_matches(name, GATE_VARIANTS, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"unknown gate variant {name!r}{hint}; allowed: {', '.join(GATE_VARIANTS)}")
        return v

    @model_validator(mode="after")
    def _closed_form_needs_grid(self) -> GatesSpec:
        closed = [v for v in self.variants if v in CLOSED_FORM_VARIANTS]
        if closed and not any(a in ("grid", "grid-pool") for a in self.alignments):
            raise ValueError(
                f"{closed[0]} maps each latent frame from the embedding at that frame's time, so it needs "
                f"alignment grid or grid-pool (alignments here: {', '.join(self.alignments)}); add grid to "
                "gates.alignments (it then runs with the grid alignments only)"
            )
        return self


class AugmentationSpec(_Model):
    gaussian_blur: bool = False
    blur_sigma: float = Field(1.0, gt=0)


class TrainingSpec(_Model):
    learning_rates: list[float] = Field(default_factory=lambda: [0.005])
    epochs: list[int] = Field(default_factory=lambda: [50])
    batch_size: int = Field(64, ge=1)
    eval_batch_size: int = Field(32, ge=1)
    gradient_accumulation: int = Field(2, ge=1)
    seed: int = 42
    # Replicate seeds: one system per seed (system_ids then carry ".s<seed>"); None = just `seed`.
    seeds: list[int] | None = None
    augmentation: AugmentationSpec = AugmentationSpec()
    normalize_latents: bool = False  # min-max normalisation of the target latents
    # How an epochs grid such as [15, 50] is trained: "prefix" trains once to max(epochs) and
    # keeps, for each E, the best checkpoint (by eval loss) within the first E epochs;
    # "separate" trains one run per E (each with its own learning-rate schedule).
    epoch_grid: Literal["prefix", "separate"] = "prefix"

    @property
    def replicate_seeds(self) -> list[int]:
        return list(self.seeds) if self.seeds else [self.seed]

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or len(set(v)) != len(v)):
            raise ValueError("seeds must be a non-empty list of distinct whole numbers")
        return v

    @field_validator("learning_rates")
    @classmethod
    def _positive_lrs(cls, v: list[float]) -> list[float]:
        if not v or any(not (0 < lr < 10) for lr in v):
            raise ValueError("learning rates must be a non-empty list of numbers in (0, 10)")
        return v

    @field_validator("epochs")
    @classmethod
    def _positive_epochs(cls, v: list[int]) -> list[int]:
        if not v or any(e < 1 for e in v):
            raise ValueError("epochs must be a non-empty list of whole numbers >= 1")
        return v


def validate_postprocess(name: str) -> str:
    for step in name.split("+"):
        if step in POSTPROCESS_STEPS:
            continue
        if step.startswith(THRESHOLD_PREFIX):
            pct = step[len(THRESHOLD_PREFIX) :]
            if pct.replace(".", "", 1).isdigit() and 0 < float(pct) < 100:
                continue
        allowed = ", ".join(POSTPROCESS_STEPS) + ", threshold<percent> (e.g. threshold10)"
        raise ValueError(f"unknown post-processing step {step!r} in {name!r}; allowed: {allowed}; chain with '+'")
    return name


class SonifySpec(_Model):
    postprocess: list[str] = Field(default_factory=lambda: ["minmax", "minmax+squared"])
    batch_size: int = Field(8, ge=1)
    codec_reconstruction: bool = True  # also encode -> decode each original (per-clip ceiling)

    @field_validator("postprocess")
    @classmethod
    def _known_postprocess(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one post-processing entry is needed (use 'none' for the raw decode)")
        return [validate_postprocess(p) for p in v]


# The set and per-item measures a protocol may name: the measure catalogue's (sonieval.measures).
SetMeasure = Literal[measure_names("set")]


class MetricsSpec(_Model):
    embeddings: list[str] = Field(default_factory=lambda: ["logmel"])
    metrics: list[SetMeasure] = Field(default_factory=lambda: ["kad", "fad"])
    # Which clips form the reference set: ESC-50 split name(s), or a folder of audio.
    reference_set: str = "test"
    # at most this many clips of the reference split(s), a seeded subset (the protocol's seed): KAD's cost
    # grows with the square of the reference frames; None = every clip
    reference_clips: int | None = Field(None, ge=2)
    bootstrap: int = Field(1000, ge=0)
    bandwidth: float | None = Field(None, gt=0)  # fixed KAD sigma; None = median pairwise distance of the reference
    per_class: bool = True
    item_metrics: list[str] = Field(
        default_factory=lambda: ["frame_kad", "embedding_cosine", "logmel_l1", "mrstft", "envelope_correlation"]
    )

    @field_validator("item_metrics")
    @classmethod
    def _known_item_metrics(cls, v: list[str]) -> list[str]:
        allowed = item_measure_names()  # read at validation: measures registered since import count
        for name in v:
            if name not in allowed:
                close = difflib.get_close_matches(name, allowed, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ValueError(f"unknown per-item measure {name!r}; {hint}allowed: {', '.join(allowed)}")
        if len(set(v)) != len(v):
            raise ValueError("a per-item measure is listed twice")
        return v


class AnchorSpec(_Model):
    kind: Literal["lowpass", "noise"] = "lowpass"
    cutoff_hz: float = Field(3500.0, gt=0)
    snr_db: float = 0.0


class SessionsSpec(_Model):
    """Split a study into sessions (ITU-R BS.1534 advises about 20-30 minutes each); a break between them."""

    pages: int | None = Field(None, ge=1)  # a session ends after this many pages ...
    minutes: float | None = Field(None, gt=0)  # ... or once this many minutes have passed (whichever first)
    # A rater away this long (no page submitted) starts a new session on return (recorded as "left").
    idle_minutes: float = Field(20.0, gt=0)


class EnrolmentSpec(_Model):
    """A public enrolment link that issues personal rater links (crowd studies); capped at study.n_raters."""

    enabled: bool = False
    max_per_minute: int = Field(30, ge=1)  # enrolments per minute, whole study
    max_per_ip_per_hour: int = Field(5, ge=1)  # per network address (stored only as a keyed hash)
    trust_proxy_headers: bool = False  # behind a reverse proxy: take the address from X-Forwarded-For
    require_participant_id: bool = False  # refuse a link without PROLIFIC_PID / workerId
    completion_code: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,64}$")  # default: one is generated
    # Where a finished rater is sent, e.g. https://app.prolific.com/submissions/complete?cc={code}
    completion_url: str | None = Field(None, pattern=r"^https?://")
    screened_out_code: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,64}$")  # shown when a check stops a rater
    trusted_proxy_hops: int = Field(1, ge=1, le=10)  # proxies that each append to X-Forwarded-For
    per_rater_codes: bool = False  # each rater their own completion code (listed in raters.csv)
    reenrol_block_hours: float = Field(24.0, ge=0)  # after a screen-out: same browser/address refused
    release_after_minutes: float | None = Field(60.0, gt=0)  # an inactive unfinished rater frees a place


class HeadphoneSpec(_Model):
    """The antiphase headphone check of Woods et al. (2017) before the first rating page."""

    enabled: bool = False
    on_fail: Literal["continue", "stop"] = "continue"  # continue: the report's screening decides


class StudySpec(_Model):
    study_id: str | None = None  # default: the protocol's name
    title: str | None = Field(None, max_length=120)  # the name raters see; default: the study id
    # joint: both marks on one page; split: one attribute per block; multi: every condition of a
    # clip on one page (MUSHRA-style, hidden reference and anchor among them).
    mode: Literal["joint", "split", "multi"] = "joint"
    # categories: labelled radio marks scale_min..scale_max; mushra: a 0-100 slider per mark.
    rating_scale: Literal["categories", "mushra"] = "categories"
    # What a rater marks: names of the rating-attribute catalogue (visual, audio) and definitions of other
    # questions, {name, question, short, low, high, low_short, high_short, shows} (sonieval.rating_attributes).
    attributes: list[Any] = Field(default_factory=lambda: ["visual", "audio"])
    scale_min: int = 1
    scale_max: int = 5
    systems: list[str] | None = None  # system_ids to rate; None = every sonified system
    clips: list[str] | None = None  # clip_ids; None = the listening set
    design: Literal["full", "subset"] = "full"
    trials_per_rater: int | None = Field(None, ge=1)  # K, for design "subset"
    min_ratings_per_trial: int = Field(1, ge=1)  # M
    n_raters: int = Field(1, ge=1)
    hidden_reference: bool = True
    anchor: AnchorSpec | None = AnchorSpec()
    attention_checks: int = Field(2, ge=0)
    familiarisation: bool = True
    storage: str = "sqlite:///{results_dir}/study.sqlite"
    audio_dir: str | None = None  # default: the sonify stage's output folder
    # An audio mark is accepted only once each stimulus on the page has been played for this
    # fraction of its duration (time actually played, reported by the A/B player and checked
    # on the server against the time on the page; sonieval/study/session.py). 0 turns it off.
    min_listen_fraction: float = Field(1.0, ge=0, le=2)
    loudness_lufs: float = Field(-26.0, ge=-70, le=0)  # every file aligned to this (ITU-R BS.1770)
    true_peak_dbtp: float = Field(-1.0, ge=-20, le=0)  # under this true-peak ceiling
    sample_rate: int | None = Field(None, ge=8000, le=192000)  # every study file's rate; None: the originals'
    sessions: SessionsSpec = SessionsSpec()
    enrolment: EnrolmentSpec = EnrolmentSpec()
    headphone_check: HeadphoneSpec = HeadphoneSpec()

    @model_validator(mode="before")
    @classmethod
    def _mushra_scale(cls, data):
        if isinstance(data, dict) and data.get("rating_scale") == "mushra":
            data = {"scale_min": 0, "scale_max": 100, **data}
        return data

    @field_validator("attributes")
    @classmethod
    def _known_attributes(cls, v: list[Any]) -> list[Any]:
        resolve_rating_attributes(v)  # a RatingAttributeError is a ValueError: one line naming study.attributes
        return v

    @property
    def rating_attributes(self) -> tuple[RatingAttribute, ...]:
        """The study's attributes, each resolved against the catalogue."""
        return resolve_rating_attributes(self.attributes)

    @model_validator(mode="after")
    def _consistent(self) -> StudySpec:
        if self.scale_max <= self.scale_min:
            raise ValueError("scale_max must be greater than scale_min")
        if self.rating_scale == "mushra" and (self.scale_min, self.scale_max) != (0, 100):
            raise ValueError("rating_scale 'mushra' is 0-100: leave out scale_min/scale_max or set them to 0 and 100")
        if self.design == "subset" and self.trials_per_rater is None:
            raise ValueError("design 'subset' needs trials_per_rater (K)")
        if not self.attributes:
            raise ValueError("at least one attribute is needed")
        attrs = self.rating_attributes
        if (
            self.mode == "multi"
            and any(a.with_sound for a in attrs)
            and (len(attrs) > 2 or len({a.ends for a in attrs}) > 1)
        ):
            raise ValueError(
                "mode multi with sound shows one rating panel: at most two attributes, with the same low and high"
            )
        return self


class ReportSpec(_Model):
    bootstrap: int = Field(2000, ge=0)
    hidden_reference_max_mark: int = 3
    hidden_reference_max_fraction: float = Field(0.15, ge=0, le=1)
    anchor_min_mark: int = 4
    anchor_max_fraction: float = Field(0.15, ge=0, le=1)
    # Rater screening beyond BS.1534-style reference/anchor rules (sonieval.stats.screening).
    screening: bool = True
    attention_max_fraction: float = Field(0.0, ge=0, le=1)  # share of attention checks a rater may miss
    zero_variance_min_marks: int = Field(5, ge=2)  # straight-lining: same mark on ≥ this many sonifications
    # Duplicated (rater_id, trial_id, attribute) rows: None refuses them; first|last|mean keeps one.
    duplicates: Literal["first", "last", "mean"] | None = None
    # Deprecated and ignored (the mixed model is fitted exactly on every mark); still accepted so
    # old protocols load, and the report says it was ignored.
    mixed_model_max_rows: int | None = None


class Protocol(_Model):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    seed: int = 42
    results_dir: str | None = None  # default: results/<name>
    cache_dir: str | None = None  # default: <results_dir>/cache
    data: DataSpec = DataSpec()
    encoders: list[EncoderSpec] = Field(default_factory=lambda: [EncoderSpec(name="ast")])
    # One codec (a mapping) or several (a list; the first is primary, see sonieval.tables.GateSlot).
    codec: list[CodecSpec] = Field(default_factory=lambda: [CodecSpec()])
    gates: GatesSpec = GatesSpec()
    training: TrainingSpec = TrainingSpec()
    sonify: SonifySpec = SonifySpec()
    metrics: MetricsSpec = MetricsSpec()
    study: StudySpec = StudySpec()
    report: ReportSpec = ReportSpec()

    # Set by load_protocol, not part of the YAML.
    source: Path | None = Field(None, exclude=True)

    @field_validator("encoders")
    @classmethod
    def _unique_encoders(cls, v: list[EncoderSpec]) -> list[EncoderSpec]:
        if not v:
            raise ValueError("at least one encoder is needed")
        names = [e.system_name for e in v]  # the names systems are known by (sonieval.tables.EncoderSlot)
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"two encoders are both named {name!r} in system ids: give one an id (encoders[i].id)")
        return v

    @field_validator("codec", mode="before")
    @classmethod
    def _codec_list(cls, v):
        return [v] if isinstance(v, (dict, CodecSpec)) else v

    @field_validator("codec")
    @classmethod
    def _unique_codecs(cls, v: list[CodecSpec]) -> list[CodecSpec]:
        if not v:
            raise ValueError("at least one codec is needed")
        names = [c.name for c in v]
        if len(set(names)) != len(names):
            raise ValueError(f"codec names must be unique, got {names}")
        return v

    @property
    def codecs(self) -> list[CodecSpec]:
        """Every codec of the protocol, the primary one first."""
        return list(self.codec)

    @property
    def primary_codec(self) -> CodecSpec:
        return self.codecs[0]

    @property
    def results_path(self) -> Path:
        return Path(self.results_dir) if self.results_dir else Path("results") / self.name

    @property
    def layout(self) -> ResultsLayout:
        """Every path of the results folder (sonieval.results_layout)."""
        return ResultsLayout(self.results_path, Path(self.cache_dir) if self.cache_dir else None)

    @property
    def cache_path(self) -> Path:
        return self.layout.cache.root

    @property
    def study_id(self) -> str:
        return self.study.study_id or self.name

    def local_or_hub(self, value: str | None) -> str | None:
        """A model/checkpoint setting: a local path (resolved like :meth:`resolve`) when it exists, else kept as a hub id."""
        if value is None:
            return None
        p = self.resolve(value)
        return str(p) if p.exists() else value

    def resolved_encoders(self) -> list[EncoderSpec]:
        """The encoder specs with local paths resolved against the protocol's folder (loaders get absolute paths)."""
        return [  # the name in system ids is fixed first: it is derived from `model` as written
            e.model_copy(
                update={
                    "model": self.local_or_hub(e.model),
                    "finetuned": self.local_or_hub(e.finetuned),
                    "id": e.system_name,
                }
            )
            for e in self.encoders
        ]

    def sonified_encoders(self) -> list[tuple[int, EncoderSpec]]:
        """(entry index, spec) of every encoder the stages prepare, train, sonify and score: each protocol entry
        (paths resolved, as :meth:`resolved_encoders`), followed by its random twin when it has ``twin: true``."""
        out = []
        for i, spec in enumerate(self.resolved_encoders()):
            out.append((i, spec))
            if spec.twin:
                out.append((i, spec.twin_spec()))
        return out

    def resolved_codec(self, name: str | None = None) -> CodecSpec:
        """A codec spec (the primary one, or the one called ``name``) with a local checkpoint path resolved."""
        spec = next((c for c in self.codecs if c.name == name), None) if name else self.primary_codec
        if spec is None:
            raise ProtocolError(
                f"{self.source or '<protocol>'}: codec {name!r} is not in the protocol "
                f"(it has {', '.join(c.name for c in self.codecs)})"
            )
        return spec.model_copy(update={"checkpoint": self.local_or_hub(spec.checkpoint)})

    def resolve(self, value: str) -> Path:
        """Resolve a path written in the protocol against the protocol file's folder."""
        p = Path(os.path.expandvars(os.path.expanduser(value)))
        if p.is_absolute() or self.source is None:
            return p
        return (self.source.parent / p).resolve()


# ---------------------------------------------------------------------------- loading


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """The keys allowed at ``loc`` (walking nested models), for error messages."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        current = _model_in(ann)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [k for k in current.model_fields if k != "source"]
    return None


def _model_in(ann: Any) -> Any:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in get_args(ann):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _format_validation_error(path: Path, exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = tuple(err.get("loc", ()))
    key = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in loc).replace(".[", "[") or "(top level)"
    etype = err.get("type", "")
    if etype == "extra_forbidden":
        allowed = _allowed_keys(Protocol, loc) or []
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        did = f"; did you mean {close[0]!r}?" if close else ""
        msg = f"{key}: unknown key{did} Allowed here: {', '.join(allowed)}"
    elif etype == "missing":
        msg = f"{key}: required key is missing"
    else:
        text = err.get("msg", "invalid value").removeprefix("Value error, ")
        given = err.get("input")
        shown = f" (got {given!r})" if given is not None and not isinstance(given, dict) else ""
        msg = f"{key}: {text}{shown}"
    more = len(exc.errors()) - 1
    if more > 0:
        msg += f" [+{more} more problem(s)]"
    return f"{path}: {msg}"


def parse_protocol(data: Any, source: str | os.PathLike = "<protocol>") -> Protocol:
    path = Path(source)
    if not isinstance(data, dict):
        raise ProtocolError(f"{path}: the protocol must be a YAML mapping of keys to values")
    try:
        proto = Protocol.model_validate(data)
    except ValidationError as exc:
        raise ProtocolError(_format_validation_error(path, exc)) from None
    proto.source = path if path.exists() else None
    return proto


def load_protocol(path: str | os.PathLike, *, check_paths: bool = True) -> Protocol:
    """Load and validate a protocol file; every problem is one :class:`ProtocolError` line."""
    path = Path(path)
    if not path.exists():
        raise ProtocolError(f"{path}: protocol file not found (see protocols/ for examples)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ProtocolError(f"{path}: not valid YAML{where}: {problem}") from None
    except UnicodeDecodeError:
        raise ProtocolError(f"{path}: not a text file (a protocol is UTF-8 YAML)") from None
    proto = parse_protocol(data, path)
    if check_paths:
        check_protocol_paths(proto)
    return proto


def check_protocol_paths(proto: Protocol) -> None:
    """Folders and files a protocol names must exist (hub ids are left alone)."""
    where = proto.source or Path("<protocol>")
    if proto.data.esc50 not in ("auto", "synthetic"):
        p = proto.resolve(proto.data.esc50)
        if not p.is_dir():
            raise ProtocolError(
                f"{where}: data.esc50: folder {p} does not exist "
                "(point it at an ESC-50 copy, or use 'auto' / 'synthetic')"
            )
    for i, enc in enumerate(proto.encoders):
        if enc.finetuned is not None and not proto.resolve(enc.finetuned).exists():
            raise ProtocolError(f"{where}: encoders[{i}].finetuned: {proto.resolve(enc.finetuned)} does not exist")
    if proto.study.audio_dir is not None and not proto.resolve(proto.study.audio_dir).is_dir():
        raise ProtocolError(f"{where}: study.audio_dir: folder {proto.resolve(proto.study.audio_dir)} does not exist")
