"""Static files that pages of more than one floor use (no Python logic, ground floor).

- ``ab/engine.js``: the A/B transport's audio engine (one playhead over several decoded sounds,
  equal-power switching, faded loop, keys; its header shows how to drive it). The study's player
  (:mod:`sonieval.study.player`, served by Streamlit) and the listening gallery
  (:mod:`sonieval.gallery`, a static page opened from the file system) both load this one file.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["AB_DIR", "ASSETS_DIR", "ENGINE_JS"]

ASSETS_DIR = Path(__file__).resolve().parent
AB_DIR = ASSETS_DIR / "ab"  # served whole to the study's player frame: only the transport's files live here
ENGINE_JS = AB_DIR / "engine.js"
