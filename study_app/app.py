"""The listening-study app (Streamlit). UI only: every rule lives in sonieval.study.

Run by ``sonieval study serve``; reads ``SONIEVAL_STUDY_STORAGE`` and ``SONIEVAL_STUDY_ID``.
Raters open ``/?rater=TOKEN``, the organiser ``/?admin=TOKEN``.

Three things keep a rater's intent from being lost or turned into a traceback:

- **A submit is handled by the form's ``on_click`` callback, and by its return value when the
  callback did not run.** The callback runs before the script, so the next page is rendered
  in the same run (one script run per page). But Streamlit runs a callback only for widgets
  registered in the current server session: after a server restart or an expired session the
  browser's first click arrives in a new session and its callback is skipped. The button's
  return value is read from the browser's own widget state, so that click is still stored.
- **The page a browser shows is kept in its URL** (``&page=N``): a submit is matched to the
  page it was made on, even when another window rated that page meanwhile (it is then told
  so and shown its next page: :meth:`sonieval.study.session.RaterSession.page`).
- **Every page runs under :func:`guarded`**: an unexpected error (a tampered widget value
  Streamlit cannot deserialise, a database hiccup) is logged to the server log, answered with
  one plain sentence, and the page's widgets are renewed so the rater can go on. Streamlit's
  own error details are switched off in the served config (``client.showErrorDetails``).
"""

from __future__ import annotations

import io
import logging
import os
import time
from dataclasses import replace

import streamlit as st

from sonieval.study import texts
from sonieval.study.server import ENV_STORAGE, ENV_STUDY_ID, rater_link
from sonieval.study.session import AccessDenied, AdminSession, RaterSession, trial_files
from sonieval.study.store import StepState, StudyStore

log = logging.getLogger("sonieval.study.app")
PAGE_PARAM = "page"

st.set_page_config(page_title="Listening study", page_icon=None, layout="centered")


@st.cache_resource(show_spinner=False)
def get_store(url: str) -> StudyStore:
    return StudyStore(url)


# ----------------------------------------------------------------------------- page plumbing


def _flash(message: str | None) -> None:
    """Keep a message for the next run of this session (shown at the top of the next page)."""
    if message:
        st.session_state["flash"] = message


def _show_flash() -> None:
    msg = st.session_state.pop("flash", None)
    if msg:
        st.warning(msg)


def _key(*parts: object) -> str:
    """A widget key; renewed (new generation) after a page could not be read."""
    return "-".join(map(str, parts)) + f"-g{st.session_state.get('widget_generation', 0)}"


def _renew_widgets() -> None:
    st.session_state["widget_generation"] = st.session_state.get("widget_generation", 0) + 1


def guarded(render, *args) -> None:
    """Run one page; an unexpected error is logged, answered in one sentence and the page renewed.

    A second failure in a row (the error is not in the widgets) asks for a reload instead of
    looping.
    """
    try:
        render(*args)
    except Exception:  # noqa: BLE001 - a rater must never see a traceback; the log keeps it
        log.exception("study page failed")
        failures = st.session_state.get("failures_in_a_row", 0) + 1
        st.session_state["failures_in_a_row"] = failures
        if failures >= 2:
            st.error(texts.RELOAD)
            st.stop()
        _renew_widgets()
        _flash(texts.PAGE_PROBLEM)
        st.rerun()
    except BaseException:  # st.rerun / st.stop: the page ran as meant
        st.session_state["failures_in_a_row"] = 0
        raise
    st.session_state["failures_in_a_row"] = 0


def _go_to_next_page() -> None:
    if PAGE_PARAM in st.query_params:
        del st.query_params[PAGE_PARAM]
    st.rerun()


# ----------------------------------------------------------------------------- rater


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
        _audio_pair(files)
        st.image(str(files.waveform), caption="Top: original. Bottom: sonification.")
    if st.button("I am ready: start the study", type="primary", shortcut="Enter", key=_key("ready")):
        session.finish_familiarisation()
        st.rerun()


def _audio_pair(files) -> None:
    c1, c2 = st.columns(2)
    c1.caption("Original")
    c1.audio(str(files.original), format="audio/wav")
    c2.caption("Sonification")
    c2.audio(str(files.stimulus), format="audio/wav")


def rater_page(store: StudyStore, study_id: str, token: str) -> None:
    try:
        session = RaterSession(store, study_id, token)
    except AccessDenied:
        st.error(texts.BAD_LINK)
        st.stop()
    if session.info.status != "open":
        st.info(texts.CLOSED)
        st.stop()
    if not session.familiarised:
        familiarisation_page(session)
        return
    state = session.page(st.query_params.get(PAGE_PARAM))
    if state.finished:
        if PAGE_PARAM in st.query_params:
            del st.query_params[PAGE_PARAM]
        _show_flash()
        st.title("Thank you!")
        st.success(f"All {state.total} pages are rated and saved. You can close this tab.")
        return
    if not state.stale:
        state = replace(state, shown_at=session.show(state))
    st.query_params[PAGE_PARAM] = str(state.step.position)
    st.progress(state.done / max(state.total, 1), text=f"Page {state.done + 1} of {state.total}")
    _show_flash()
    _stimuli(session, state)
    form_key, submitted, marks = rating_form(session, state)
    if submitted and st.session_state.pop("handled_submit", None) != form_key:
        _record_submit(session, state.step.position, marks)  # the callback did not run (new session)
        st.rerun()
    if state.stale:  # rated meanwhile in another window and not submitted here: show the next page
        _go_to_next_page()
    st.caption(texts.KEYBOARD_HINT)


def _stimuli(session: RaterSession, state: StepState) -> None:
    step, trial = state.step, state.trial
    files = session.files(state)
    st.caption(texts.block_intro(step.block))
    if trial.instruction:
        st.info(trial.instruction)
    if step.block in ("joint", "audio"):
        _audio_pair(files)
    if step.block in ("joint", "visual"):
        st.image(str(files.waveform), caption="Top: original. Bottom: sonification.")
    wait = session.listen_wait(state, time.time())
    if wait > 0:
        st.caption(f"Please play the sonification: the audio mark can be submitted about {wait:.0f} s after the page opened.")


def rating_form(session: RaterSession, state: StepState) -> tuple[str, bool, dict[str, object]]:
    """The marks of one page; returns (form key, submitted, marks by attribute)."""
    info, step = session.info, state.step
    form_key = _key("page", step.position)
    keys = {a: _key("mark", step.position, a) for a in step.attributes}
    marks: dict[str, object] = {}
    with st.form(form_key, clear_on_submit=False, enter_to_submit=True):
        st.caption(texts.scale_caption(info.scale_min, info.scale_max))
        for attribute, key in keys.items():
            marks[attribute] = st.radio(
                texts.QUESTIONS[attribute],
                options=list(range(info.scale_min, info.scale_max + 1)),
                index=None,
                horizontal=True,
                format_func=lambda m: texts.mark_label(m, info.scale_min, info.scale_max),
                key=key,
            )
        submitted = st.form_submit_button("Submit and continue", type="primary", shortcut="Enter",
                                          on_click=_on_submit, args=(session, step.position, keys, form_key))
    return form_key, bool(submitted), marks


def _on_submit(session: RaterSession, position: int, keys: dict[str, str], form_key: str) -> None:
    """The submit callback (runs before the script): store, and leave the answer for the page."""
    st.session_state["handled_submit"] = form_key
    try:
        marks = {a: st.session_state.get(k) for a, k in keys.items()}
    except Exception:  # noqa: BLE001 - a widget value that cannot be read (tampered): renew the page
        log.exception("submitted marks could not be read")
        _renew_widgets()
        _flash(texts.PAGE_PROBLEM)
        return
    _record_submit(session, position, marks)


def _record_submit(session: RaterSession, position: int, marks: dict[str, object]) -> None:
    """Submit one page; its answer is flashed on the page rendered next (the next page on success)."""
    try:
        outcome = session.submit_page(position, marks)
    except Exception:  # noqa: BLE001 - storage did not answer: say so, keep the page and its marks
        log.exception("submit failed")
        _flash(texts.NOT_SAVED)
        return
    _flash(outcome.message)
    if outcome.move_on and PAGE_PARAM in st.query_params:
        del st.query_params[PAGE_PARAM]


# ----------------------------------------------------------------------------- admin


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
    label, opening = ("Close the study", False) if info.status == "open" else ("Open the study", True)
    if st.button(label, key=_key("status")):
        admin.set_open(opening)
        st.rerun()
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
        n = st.number_input("New raters", min_value=1, max_value=200, value=1, step=1, key=_key("invite-n"))
        if st.button("Invite", key=_key("invite")):
            links = [f"{rid}: {rater_link(_base_url(), tok)}" for rid, tok in admin.invite(int(n))]
            st.warning("Copy these links now: only their hashes are stored.")
            st.code("\n".join(links), language=None)


# ----------------------------------------------------------------------------- entry


def main() -> None:
    storage = os.environ.get(ENV_STORAGE)
    study_id = os.environ.get(ENV_STUDY_ID)
    if not storage or not study_id:
        st.error("No study configured. Start the app with: sonieval study serve PROTOCOL")
        st.stop()
    try:
        store = get_store(storage)
    except Exception:  # noqa: BLE001 - the cause goes to the server log, not to the rater
        log.exception("cannot open the study storage")
        st.error(texts.UNAVAILABLE)
        st.stop()
    admin_token = st.query_params.get("admin")
    rater_token = st.query_params.get("rater")
    if admin_token:
        guarded(admin_page, store, study_id, admin_token)
    elif rater_token:
        guarded(rater_page, store, study_id, rater_token)
    else:
        st.error(texts.NO_LINK)


main()
