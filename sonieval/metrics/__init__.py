"""KAD and FAD of audio as a library (:func:`kad`, :func:`fad`, :class:`Leaderboard`).

The modules behind them (embeddings, distances, scoring, the board in ``leaderboard``, render, items,
controls, depth) are the toolkit's own; only the names in ``__all__`` are the public interface. They are
imported on first use, so ``import sonieval.metrics.items`` stays light.
"""

from __future__ import annotations

__all__ = ["DistanceResult", "Leaderboard", "fad", "kad"]


def __getattr__(name: str):
    if name in __all__:
        from sonieval.metrics import api

        return getattr(api, name)
    raise AttributeError(f"module 'sonieval.metrics' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
