"""The listening-study app (Streamlit). UI only: every rule lives in sonieval.study.

Run by ``sonieval study serve``; reads ``SONIEVAL_STUDY_STORAGE`` and ``SONIEVAL_STUDY_ID``.
Raters open ``/?rater=TOKEN``, the organiser ``/?admin=TOKEN``.
"""

from __future__ import annotations

import dataclasses
import io
import os
import time

import streamlit as st

from sonieval.errors import SonievalError
from sonieval.study import texts
from sonieval.study.server import ENV_STORAGE, ENV_STUDY_ID, rater_link
from sonieval.study.session import AccessDenied, AdminSession, RaterSession, trial_files
from sonieval.study.store import StudyStore

st.set_page_config(page_title="Listening study", page_icon=None, layout="centered")


@st.cache_resource(show_spinner=False)
def get_store(url: str) -> StudyStore:
    return StudyStore(url)


def _flash(message: str) -> None:
    st.session_state["flash"] = message


def _show_flash() -> None:
    msg = st.session_state.pop("flash", None)
    if msg:
        st.warning(msg)


def _submit(session: RaterSession, position: int, attributes: tuple[str, ...]) -> None:
    keys = {a: f"mark-{session.rater.rater_id}-{position}-{a}" for a in attributes}
    marks = {a: st.session_state.get(k) for a, k in keys.items()}
    if any(m is None for m in marks.values()):
        _flash("Please choose a mark for every question before submitting.")
        return
    try:
        session.submit(position, marks)
    except SonievalError as exc:
        _flash(exc.problem + (f" ({exc.hint})" if exc.hint else ""))


def _finish_familiarisation(session: RaterSession) -> None:
    session.finish_familiarisation()


def familiarisation_page(session: RaterSession) -> None:
    info = session.info
    st.title("Before you start")
    st.write(
        "You will compare sonifications with their original recordings. Each page shows the original and a "
        f"sonification; you give marks from {info.scale_min} to {info.scale_max}. Here are two examples near the ends "
        "of the scale (you do not mark these)."
    )
    for end, mark, label in (("low", info.scale_min, texts.LOW_END), ("high", info.scale_max, texts.HIGH_END)):
        example = info.familiarisation.get(end)
        if not example:
            continue
        files = trial_files(info, example["original_file"], example["stimulus_file"], example["waveform_file"])
        st.subheader(f"An example near {mark}: {label}")
        c1, c2 = st.columns(2)
        c1.caption("Original")
        c1.audio(str(files.original), format="audio/wav")
        c2.caption("Sonification")
        c2.audio(str(files.stimulus), format="audio/wav")
        st.image(str(files.waveform), caption="Top: original. Bottom: sonification.")
    st.button("I am ready: start the study", type="primary", on_click=_finish_familiarisation, args=(session,), shortcut="Enter")


def rater_page(store: StudyStore, study_id: str, token: str) -> None:
    try:
        session = RaterSession(store, study_id, token)
    except AccessDenied:
        st.error("This link is not valid. Please use the exact link you were given.")
        st.stop()
    info = session.info
    if info.status != "open":
        st.info("This study is closed at the moment. Thank you for your interest.")
        st.stop()
    if not session.familiarised:
        familiarisation_page(session)
        return
    state = session.next_step()
    if state.finished:
        st.title("Thank you!")
        st.success(f"All {state.total} pages are rated and saved. You can close this tab.")
        return
    shown_at = session.show(state)
    state = dataclasses.replace(state, shown_at=shown_at)
    step, trial = state.step, state.trial
    st.progress(state.done / max(state.total, 1), text=f"Page {state.done + 1} of {state.total}")
    _show_flash()
    files = session.files(state)
    st.caption(texts.block_intro(step.block))
    if trial.instruction:
        st.info(trial.instruction)
    if step.block in ("joint", "audio"):
        c1, c2 = st.columns(2)
        c1.caption("Original")
        c1.audio(str(files.original), format="audio/wav")
        c2.caption("Sonification")
        c2.audio(str(files.stimulus), format="audio/wav")
    if step.block in ("joint", "visual"):
        st.image(str(files.waveform), caption="Top: original. Bottom: sonification.")
    wait = session.listen_wait(state, time.time())
    if wait > 0:
        st.caption(f"Please play the sonification: the audio mark can be submitted about {wait:.0f} s after the page opened.")
    with st.form(f"page-{session.rater.rater_id}-{step.position}", clear_on_submit=False, enter_to_submit=True):
        st.caption(texts.scale_caption(info.scale_min, info.scale_max))
        for attribute in step.attributes:
            st.radio(
                texts.QUESTIONS[attribute],
                options=list(range(info.scale_min, info.scale_max + 1)),
                index=None,
                horizontal=True,
                format_func=lambda m: texts.mark_label(m, info.scale_min, info.scale_max),
                key=f"mark-{session.rater.rater_id}-{step.position}-{attribute}",
            )
        st.form_submit_button("Submit and continue", type="primary", on_click=_submit, args=(session, step.position, step.attributes),
                              shortcut="Enter")
    st.caption(texts.KEYBOARD_HINT)


def _base_url() -> str:
    url = getattr(st.context, "url", None)
    if url:
        return str(url).split("?")[0].rstrip("/")
    host = st.context.headers.get("Host", "localhost:8501")
    return f"http://{host}"


def admin_page(store: StudyStore, study_id: str, token: str) -> None:
    try:
        admin = AdminSession(store, study_id, token)
    except AccessDenied:
        st.error("This admin link is not valid.")
        st.stop()
    info = admin.info
    st.title(f"Study {study_id}: admin")
    st.write(f"Mode **{info.mode}**, design **{info.design}**, scale {info.scale_min}–{info.scale_max}, status **{info.status}**.")
    if info.status == "open":
        st.button("Close the study", on_click=admin.set_open, args=(False,))
    else:
        st.button("Open the study", on_click=admin.set_open, args=(True,))
    per_rater, per_trial = admin.progress()
    tab_progress, tab_screening, tab_export, tab_invite = st.tabs(["Progress", "Screening", "Export", "Invite"])
    with tab_progress:
        st.subheader("Per rater")
        st.dataframe(per_rater, hide_index=True)
        st.subheader("Per trial")
        st.dataframe(per_trial, hide_index=True)
    with tab_screening:
        st.caption("Hidden reference marks at or below 3, anchor marks at or above 4, failed attention checks (counts; the report decides exclusions).")
        st.dataframe(admin.screening(), hide_index=True)
    with tab_export:
        ratings = admin.ratings()
        st.write(f"{len(ratings)} marks stored.")
        st.dataframe(ratings, hide_index=True)
        st.download_button("Download CSV", ratings.to_csv(index=False).encode(), file_name=f"{study_id}-ratings.csv", mime="text/csv")
        buf = io.BytesIO()
        ratings.to_parquet(buf, index=False)
        st.download_button("Download Parquet", buf.getvalue(), file_name=f"{study_id}-ratings.parquet", mime="application/octet-stream")
    with tab_invite:
        n = st.number_input("New raters", min_value=1, max_value=200, value=1, step=1)
        if st.button("Invite"):
            links = [f"{rid}: {rater_link(_base_url(), tok)}" for rid, tok in admin.invite(int(n))]
            st.warning("Copy these links now: only their hashes are stored.")
            st.code("\n".join(links), language=None)


def main() -> None:
    storage = os.environ.get(ENV_STORAGE)
    study_id = os.environ.get(ENV_STUDY_ID)
    if not storage or not study_id:
        st.error("No study configured. Start the app with: sonieval study serve PROTOCOL")
        st.stop()
    try:
        store = get_store(storage)
    except SonievalError as exc:
        st.error(str(exc))
        st.stop()
    admin_token = st.query_params.get("admin")
    rater_token = st.query_params.get("rater")
    if admin_token:
        admin_page(store, study_id, admin_token)
    elif rater_token:
        rater_page(store, study_id, rater_token)
    else:
        st.error("This study needs the personal link you were given.")


main()
