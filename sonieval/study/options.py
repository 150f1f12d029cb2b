"""A study's options beyond its design: how it is shown, sessions, enrolment, headphone check.

Stored as one JSON row per study (table ``study_options``, :mod:`sonieval.study.store`), so a
study made before these options existed reads as the defaults (one session, invitation only,
no headphone check, labelled radio marks). Built from the protocol's ``study`` section
(:class:`sonieval.protocol.StudySpec`) by :mod:`sonieval.study.create`.

- ``title``: the name raters see in the browser tab and on every page (default: the study id).
- ``rating_scale``: ``categories`` (radio marks with labelled ends) or ``mushra`` (0-100 slider).
- :class:`Sessions`: a session ends after ``pages`` pages or ``minutes`` minutes (whichever
  comes first) and the rater is offered a break; a rater away ``idle_minutes`` starts a new
  session on return.
- :class:`Enrolment`: a public link (``?enrol=KEY``; only the key's hash is stored) that issues
  personal rater links, capped at ``cap`` places and rate limited; the completion code (one per
  study, or one per rater with ``per_rater_codes``) and the platform's return address shown at
  the end. A place is held by a rater who finished or was active within ``release_after_minutes``
  (None: always held); a screened-out rater holds none. After a screen-out the same browser (a
  first-party cookie) and the same address (its keyed hash) cannot enrol again for
  ``reenrol_block_hours`` (0: no block). Behind ``trusted_proxy_hops`` proxies the rater's
  address is the one the outermost trusted proxy added to ``X-Forwarded-For``.
- :class:`Headphones`: the antiphase check of Woods et al. (2017)
  (:mod:`sonieval.study.headphone`) before the first rating page; ``salt`` names its files.
- ``rating_attributes``: the definition of every attribute the study asks (wording, scale ends,
  what the page shows; :class:`sonieval.rating_attributes.RatingAttribute`), as it was asked, so the
  pages and the export show the raters' wording; empty for a study made before they were stored
  (its attributes are the catalogue's).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

from sonieval.rating_attributes import RatingAttribute

RATING_SCALES = ("categories", "mushra")


@dataclass(frozen=True)
class Sessions:
    pages: int | None = None
    minutes: float | None = None
    idle_minutes: float = 20.0

    @property
    def split(self) -> bool:
        return self.pages is not None or self.minutes is not None


@dataclass(frozen=True)
class Enrolment:
    enabled: bool = False
    key_hash: str | None = None  # SHA-256 of the public link's key
    cap: int = 0  # raters in all (invited and enrolled)
    max_per_minute: int = 30
    max_per_ip_per_hour: int = 5
    trust_proxy_headers: bool = False
    trusted_proxy_hops: int = 1  # proxies in front of the app that each append to X-Forwarded-For
    require_participant_id: bool = False
    completion_code: str | None = None
    completion_url: str | None = None
    screened_out_code: str | None = None
    per_rater_codes: bool = False  # each rater their own completion code (matched in raters.csv)
    reenrol_block_hours: float = 24.0  # after a screen-out, the same browser or address may not enrol again
    release_after_minutes: float | None = 60.0  # an unfinished rater this long inactive frees their place

    def return_url(self, code: str | None) -> str | None:
        """The platform's address for a finished rater, ``{code}`` filled in."""
        if not self.completion_url:
            return None
        return self.completion_url.replace("{code}", code or "")


@dataclass(frozen=True)
class Headphones:
    enabled: bool = False
    on_fail: str = "continue"  # continue | stop
    salt: str = ""


@dataclass(frozen=True)
class StudyOptions:
    title: str | None = None
    rating_scale: str = "categories"
    sessions: Sessions = field(default_factory=Sessions)
    enrolment: Enrolment = field(default_factory=Enrolment)
    headphones: Headphones = field(default_factory=Headphones)
    rating_attributes: tuple[RatingAttribute, ...] = ()

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> StudyOptions:
        if not text:
            return cls()
        raw = json.loads(text)
        parts = {"sessions": Sessions, "enrolment": Enrolment, "headphones": Headphones}
        kw = {}
        for f in fields(cls):
            if f.name not in raw:
                continue
            value = raw[f.name]
            if f.name in parts:
                known = {g.name for g in fields(parts[f.name])}
                value = parts[f.name](**{k: v for k, v in value.items() if k in known})
            elif f.name == "rating_attributes":
                value = tuple(RatingAttribute(**a) for a in value)
            kw[f.name] = value
        return cls(**kw)


__all__ = ["RATING_SCALES", "Sessions", "Enrolment", "Headphones", "StudyOptions"]
