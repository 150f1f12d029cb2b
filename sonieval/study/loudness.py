"""The loudness rules moved to :mod:`sonieval.loudness` (issue 23): the study's stimuli and the listening
gallery's copies share them, so they stand below both. Re-exported here, where older code imports them."""

from __future__ import annotations

from sonieval.loudness import (  # noqa: F401
    BLOCK_SECONDS,
    CEILING_DBTP,
    LIMITED_BY_GAIN_CAP,
    LIMITED_BY_TRUE_PEAK,
    LIMITED_WITH_CLIP,
    MAX_GAIN_DB,
    OVERSAMPLE,
    REACHED,
    SILENT,
    TARGET_LUFS,
    TP_MARGIN_DB,
    Level,
    LevelSpec,
    Measured,
    __all__,
    align_loudness,
    alignment_gain,
    apply_gain,
    clip_level,
    describe_shortfalls,
    integrated_loudness,
    level_after,
    measure,
    measure_stimulus,
    to_db,
    true_peak,
)
