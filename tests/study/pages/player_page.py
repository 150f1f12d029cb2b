"""A minimal Streamlit page hosting the A/B player, for the browser tests (not part of the app).

Environment: ``SONIEVAL_PLAYER_DIR`` holds the stimuli (``<label>.wav``) and receives one JSON
line per script run in ``<log>.jsonl``: the state the player reported back to Python.
Query parameters: ``log`` (file stem), ``labels`` (comma-separated, from the folder), ``mode``
(crossfade | restart), ``min`` (minimum listening seconds), ``required`` (labels that count,
default all), ``loop`` ("start,end"), ``report`` (heartbeat seconds), ``form`` (1: inside a form),
``ref`` (the label of the open reference: key r, the others numbered from 1).
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import streamlit as st

from sonieval.study.player import ab_player

folder = Path(os.environ["SONIEVAL_PLAYER_DIR"])
q = st.query_params
log = q.get("log", "states")
if not re.fullmatch(r"[A-Za-z0-9_-]{1,120}", log):
    st.error("bad log name")
    st.stop()
labels = q.get("labels", "Original,A,B").split(",")
required = set(q.get("required", ",".join(labels)).split(","))
loop = tuple(float(x) for x in q["loop"].split(",")) if "loop" in q else None
stimuli = [
    {"label": lb, "path": folder / f"{lb}.wav", "required": lb in required, "reference": lb == q.get("ref")}
    for lb in labels
]
options = dict(
    key="player",
    loop_region=loop,
    min_listen_s=float(q.get("min", 0)),
    switch_mode=q.get("mode", "crossfade"),
    report_every_s=float(q.get("report", 0.5)),
)

st.title("A/B player test page")
if q.get("form") == "1":
    with st.form("rating"):
        state = ab_player(stimuli, **options)
        submitted = st.form_submit_button("Submit")
else:
    state = ab_player(stimuli, **options)
    submitted = False
with open(folder / f"{log}.jsonl", "a", encoding="utf-8") as fh:
    fh.write(json.dumps({"server_time": time.time(), "submitted": submitted, "state": state}) + "\n")
st.caption(f"reported: {state['event']} #{state['seq']}")
