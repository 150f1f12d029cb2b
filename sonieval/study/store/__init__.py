"""Durable storage of a listening study (SQLAlchemy 2 Core): SQLite file by default, PostgreSQL by URL.

:class:`StudyStore` is every read and write of a study database; the app goes through
:mod:`sonieval.study.session`. Its parts, by responsibility:

- :mod:`~sonieval.study.store.schema`: the tables and the schema version;
  :mod:`~sonieval.study.store.migrations`: bringing an older database up to it on opening;
  :mod:`~sonieval.study.store.connection`: the URL and the engine (SQLite pragmas, pools).
- :mod:`~sonieval.study.store.records`: what the store hands out (a study, a rater, a page, a
  submission's result) and its errors.
- :mod:`~sonieval.study.store.admin`: creating a study, its options, status, tokens and removal (the organiser).
- :mod:`~sonieval.study.store.planning`: raters and their plans, and where a rater is in theirs;
  :mod:`~sonieval.study.store.enrolment`: crowd enrolment through the public link.
- :mod:`~sonieval.study.store.submissions`: storing a page's marks, the listening rule, the page log;
  :mod:`~sonieval.study.store.sessions`: sessions, breaks and screening checks.
- :mod:`~sonieval.study.store.exports`: one study's rows of a table as a frame (the export reads them).

Every mark is committed in its own transaction when submitted: a refreshed page, a closed tab
or a restarted server loses nothing already submitted.
"""

from __future__ import annotations

from typing import Any

from sonieval.study.store.admin import StudyAdmin
from sonieval.study.store.connection import make_engine, normalise_url, redact_url
from sonieval.study.store.enrolment import Enrolling
from sonieval.study.store.exports import TableReads
from sonieval.study.store.records import (
    EnrolmentRefused,
    Rater,
    StepState,
    StudyError,
    StudyInfo,
    SubmissionRefused,
    SubmitResult,
    validate_mark,
)
from sonieval.study.store.schema import (
    SCHEMA_VERSION,
    enrolments,
    levels,
    listening,
    metadata,
    page_log,
    page_trials,
    plan,
    rater_sessions,
    raters,
    ratings,
    schema_version,
    screening_checks,
    studies,
    study_options,
    trials,
)
from sonieval.study.store.submissions import (
    LISTEN_TOLERANCE_S,
    PLAUSIBLE_SLACK_FRACTION,
    PLAUSIBLE_SLACK_S,
    Submissions,
)


class StudyStore(StudyAdmin, Enrolling, Submissions, TableReads):
    """All reads and writes of a study database. The app goes through :mod:`sonieval.study.session`."""


def open_store(url: str, **kw: Any) -> StudyStore:
    return StudyStore(url, **kw)


__all__ = [
    "SCHEMA_VERSION",
    "StudyStore",
    "StudyError",
    "SubmissionRefused",
    "EnrolmentRefused",
    "StudyInfo",
    "Rater",
    "StepState",
    "SubmitResult",
    "validate_mark",
    "make_engine",
    "normalise_url",
    "redact_url",
    "open_store",
    "LISTEN_TOLERANCE_S",
    "PLAUSIBLE_SLACK_S",
    "PLAUSIBLE_SLACK_FRACTION",
    # the tables (sonieval.study.store.schema), read by the export and the tests
    "metadata",
    "schema_version",
    "studies",
    "trials",
    "raters",
    "plan",
    "levels",
    "ratings",
    "study_options",
    "page_trials",
    "page_log",
    "listening",
    "rater_sessions",
    "enrolments",
    "screening_checks",
]
