"""The one place that collects package versions for provenance (checkpoints, scores, reports)."""

from __future__ import annotations

import importlib.metadata as md
import platform
from collections.abc import Iterable

__all__ = ["package_versions"]


def package_versions(packages: Iterable[str]) -> dict[str, str | None]:
    """``{"sonieval": …, "python": …, <package>: version or None when not installed}``.

    Versions come from the installed distributions' metadata, so nothing heavy is imported.
    """
    from sonieval import __version__

    out: dict[str, str | None] = {"sonieval": str(__version__), "python": platform.python_version()}
    for name in packages:
        if name in out:
            continue
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out
