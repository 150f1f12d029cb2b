"""The one exception type users see.

Every bad input (a file, a field, a value) raises :class:`SonievalError` with a single line
naming the file or field, the problem and what to do. The CLI prints that line and exits
non-zero; batch stages record it in the run ledger and go on with the other items.
"""

from __future__ import annotations

import os


class SonievalError(Exception):
    """A user-facing error: one line, no traceback."""

    def __init__(self, message: str, *, path: str | os.PathLike | None = None, hint: str | None = None):
        self.path = os.fspath(path) if path is not None else None
        self.problem = message
        self.hint = hint
        parts = []
        if self.path:
            parts.append(f"{self.path}: ")
        parts.append(message)
        if hint:
            parts.append(f" ({hint})")
        super().__init__("".join(parts).replace("\n", " "))


class AudioError(SonievalError):
    """An audio file that cannot be read or does not meet the requirements."""


class ProtocolError(SonievalError):
    """A protocol file that is not valid."""


class DataError(SonievalError):
    """A data set (ESC-50 copy, table) that is missing or malformed."""


class WeightsUnavailable(SonievalError):
    """Pretrained weights are needed but not cached and cannot be downloaded."""
