"""The listening-study app (Streamlit). UI only: every rule lives in sonieval.study.

Run by ``sonieval study serve``; reads ``SONIEVAL_STUDY_STORAGE`` and ``SONIEVAL_STUDY_ID``.
Raters open ``/?rater=TOKEN``, the organiser ``/?admin=TOKEN``, crowd raters the public
``/?enrol=KEY`` (plus the platform's participant ids), which issues their personal link.

A rater goes through: the headphone check (when the study has one), the familiarisation
examples, then the rating pages, split into sessions with a break between them when the study
says so, and at the end the thank-you page with the completion code and the platform's return
address. Every rating page holds the A/B player (:mod:`sonieval.study.player`) *inside* the
page's form, so the listening time it measured arrives with the submit (no rerun per report).
One player frame serves all rating pages (one widget key); each page gives it a page id, the
next page's sound files to decode ahead, and reads back only reports stamped with that id. On a
multi-stimulus page the player is the whole rating panel (MUSHRA layout: every condition's button
and vertical slider side by side, in a wide page that fits 1280 x 800) and the marks arrive in its
report.

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
from dataclasses import dataclass, replace

import streamlit as st

from sonieval.study import texts
from sonieval.study.player import ab_player, normalise_state
from sonieval.study.server import ENV_STORAGE, ENV_STUDY_ID, enrol_link, rater_link
from sonieval.study.session import AccessDenied, AdminSession, RaterSession, enrol, trial_files
from sonieval.study.store import EnrolmentRefused, StepState, StudyInfo, StudyStore

log = logging.getLogger("sonieval.study.app")
PAGE_PARAM = "page"
WAVEFORM_CAPTION = "Top: original. Bottom: sonification."


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


# ----------------------------------------------------------------------------- rater: before the ratings


def enrol_page(store: StudyStore, study_id: str) -> None:
    """The public link: issue a personal link (kept in the address bar from now on), or say why not."""
    params = {k: st.query_params.get(k) for k in st.query_params.keys()}
    try:
        token = enrol(
            store,
            study_id,
            params,
            getattr(st.context, "ip_address", None),
            dict(st.context.headers or {}),
            dict(st.context.cookies or {}),
        )
    except EnrolmentRefused as exc:
        (st.info if exc.reason in ("full", "closed") else st.error)(texts.enrol_refusal(exc.reason))
        st.stop()
    st.query_params.clear()
    st.query_params["rater"] = token
    _flash(texts.PERSONAL_LINK)
    st.rerun()


def _keep_browser_marker(session: RaterSession) -> None:
    """Leave the study's first-party marker in the rater's browser (a cookie, set by a tiny script
    frame of the app's own origin), once per browser session: a re-enrolment from this browser after
    a screen-out is then recognised (:func:`sonieval.study.session.enrol`)."""
    marker = session.browser_marker()
    if marker is None or st.session_state.get("marker_set"):
        return
    name, value, keep_s = marker
    if (st.context.cookies or {}).get(name) != value:
        import streamlit.components.v1 as components

        components.html(
            f"<script>document.cookie = '{name}={value}; Path=/; Max-Age={int(keep_s)}; SameSite=Lax';</script>",
            height=0,
        )
    st.session_state["marker_set"] = True


def headphone_page(session: RaterSession) -> None:
    """The antiphase check (Woods et al. 2017): a calibration tone, then six three-tone questions."""
    st.title(f"{session.info.title}: headphone check")
    st.write(texts.HEADPHONE_INTRO)
    calibration, trials, files = session.headphone_plan()
    st.caption("Calibration tone: set a comfortable volume.")
    st.audio(str(calibration), format="audio/wav")
    started = st.session_state.setdefault("headphone_started", time.time())
    keys = [_key("headphone", t.number) for t in trials]
    with st.form(_key("headphone-form"), enter_to_submit=False):
        for trial, path, key in zip(trials, files, keys):
            st.markdown(f"**Question {trial.number} of {len(trials)}**")
            st.audio(str(path), format="audio/wav")
            st.radio(
                "Which tone was the quietest?",
                options=[1, 2, 3],
                index=None,
                horizontal=True,
                key=key,
                format_func=lambda k: f"tone {k}",
            )
        submitted = st.form_submit_button("Submit the answers", type="primary")
    if submitted:
        outcome = session.submit_headphone([st.session_state.get(k) for k in keys], started)
        _flash(outcome.message)
        st.rerun()


def familiarisation_page(session: RaterSession) -> None:
    info = session.info
    st.title("Before you start")
    st.caption(info.title)
    st.write(
        "You will compare sonifications with their original recordings. Each page shows the original and "
        f"sonifications; you give marks from {info.scale_min} to {info.scale_max}. Here are two examples near the ends "
        "of the scale (you do not mark these). " + texts.PLAYER_HINT
    )
    with st.form(_key("familiarisation"), enter_to_submit=False):
        for end, mark, label in (("low", info.scale_min, texts.LOW_END), ("high", info.scale_max, texts.HIGH_END)):
            example = info.familiarisation.get(end)
            if not example:
                continue
            files = trial_files(info, example["original_file"], example["stimulus_file"], example["waveform_file"])
            st.subheader(f"An example near {mark}: {label}")
            ab_player(
                [
                    {"label": "R", "path": files.original, "required": False, "reference": True},
                    {"label": "A", "path": files.stimulus, "required": False},
                ],
                key=_key("example", end),
            )
            st.image(str(files.waveform), caption=WAVEFORM_CAPTION)
        ready = st.form_submit_button("I am ready: start the study", type="primary")
    if ready:
        session.finish_familiarisation()
        st.rerun()


def break_page(session: RaterSession, state: StepState, ended: dict) -> None:
    st.title(f"{session.info.title}: time for a break")
    st.progress(state.done / max(state.total, 1), text=f"{state.done} of {state.total} pages rated")
    st.write(texts.break_text(int(ended["session"]), session.sessions_planned(state.total)))
    if st.button("Go on with the next session", type="primary", key=_key("continue")):
        session.continue_after_break()
        st.rerun()


def thank_you_page(session: RaterSession, total: int | None) -> None:
    if PAGE_PARAM in st.query_params:
        del st.query_params[PAGE_PARAM]
    _show_flash()
    st.title("Thank you!")
    if total is None:
        st.info(texts.HEADPHONE_SCREENED_OUT)
    else:
        st.success(f"All {total} pages are rated and saved. You can close this tab.")
    code, url = session.completion()
    if code:
        st.markdown(f"Your completion code: **{code}** (copy it into the recruiting site, or use the button below)")
        st.code(code, language=None)
    if url:
        st.link_button("Return to the recruiting site", url, type="primary")


# ----------------------------------------------------------------------------- rater: the rating pages


def rater_page(store: StudyStore, study_id: str, token: str, info: StudyInfo | None = None) -> None:
    try:
        session = RaterSession(store, study_id, token, info)
    except AccessDenied:
        st.error(texts.BAD_LINK)
        st.stop()
    if session.info.status != "open":
        st.info(texts.CLOSED)
        st.stop()
    _keep_browser_marker(session)
    if session.screened_out:
        thank_you_page(session, None)
        return
    if session.needs_headphone_check:
        _show_flash()
        headphone_page(session)
        return
    if not session.familiarised:
        familiarisation_page(session)
        return
    state = session.page(st.query_params.get(PAGE_PARAM))
    if state.finished:
        thank_you_page(session, state.total)
        return
    number = None
    if not state.stale:
        session.settle_sessions()
        sessions = session.sessions()
        ended = session.on_break(sessions)
        if ended is not None:
            _show_flash()
            break_page(session, state, ended)
            return
        number = session.open_session(sessions)  # back after idle_minutes: session 2 starts now, and says so
        state = replace(state, shown_at=session.show(state))
    st.query_params[PAGE_PARAM] = str(state.step.position)
    if state.step.block == "multi":
        _compact_page()
    st.progress(state.done / max(state.total, 1), text=f"Page {state.done + 1} of {state.total}")
    _show_flash()
    st.caption(f"{session.info.title} · session {number if number is not None else session.session_number()}")
    form_key, submitted, collect = rating_form(session, state)
    if submitted and st.session_state.pop("handled_submit", None) != form_key:
        _record_submit(session, state.step.position, *collect())  # the callback did not run (new session)
        st.rerun()
    if state.stale:  # rated meanwhile in another window and not submitted here: show the next page
        _go_to_next_page()
    st.caption(texts.KEYBOARD_HINT)


@dataclass(frozen=True)
class PagePlayer:
    """What the page's player shows, to read its report back: its widget key, sound labels, the
    minimum listening time, the page it is about and, on a rating panel, its options and the label
    of each trial (the marks come from the panel)."""

    key: str
    labels: list[str]
    min_s: float
    page: str
    rating: dict | None = None
    trial_labels: dict | None = None  # trial id -> label on the panel


def _compact_page() -> None:
    """A multi-stimulus page fits a laptop screen (1280 x 800) with its transport, every condition's
    button and slider and the submit button: less of Streamlit's empty margin above and below."""
    st.html(
        "<style>[data-testid='stMainBlockContainer']{padding-top:1.25rem;padding-bottom:1rem}"
        "[data-testid='stMainBlockContainer'] [data-testid='stVerticalBlock']{gap:0.6rem}</style>"
    )


def _player(session: RaterSession, state: StepState, sounds, *, panel: bool = False) -> PagePlayer:
    """The page's A/B player (inside the form). On a multi-stimulus page with sound (``panel``) it
    is the whole rating panel: each condition's button, its waveform thumbnail (visual attribute)
    and its vertical slider(s) side by side under the transport, the MUSHRA layout.

    One player frame serves every rating page (one key): the next page then needs no new frame to
    load, and it decodes the next page's sounds while the rater works on this one. Its reports
    carry the page they are about, so the last page's listening never counts for this one."""
    min_s = session.min_listen_s(state)
    key, page = _key("player"), f"page-{state.step.position}"
    sources = [
        {"label": s.label, "path": s.path, "required": s.required, "reference": s.trial_id is None} for s in sounds
    ]
    rating, trial_labels = None, None
    if panel:
        info, attrs = session.info, state.step.attributes
        asked = [info.rating_attribute(a) for a in attrs]  # one pair of ends on a panel (the protocol checks)
        rating = {
            "scale_min": info.scale_min,
            "scale_max": info.scale_max,
            "attributes": [{"id": a.name, "label": a.question, "short": a.short} for a in asked],
            "low": asked[0].low_short,
            "high": asked[0].high_short,
        }
        by_id = {t.trial_id: t for t in state.trials}
        for src, sound in zip(sources, sounds):
            if sound.trial_id is not None and info.with_waveform(attrs):
                src["image"] = session.waveform(state, by_id[sound.trial_id])
        trial_labels = {s.trial_id: s.label for s in sounds if s.trial_id is not None}
    ab_player(sources, key=key, min_listen_s=min_s, page=page, prefetch=session.following_sounds(state), rating=rating)
    if min_s > 0 and not panel:
        st.caption(f"Play every sound (not R) for at least {min_s:.1f} s before you submit: the player counts down.")
    return PagePlayer(key, [s.label for s in sounds], min_s, page, rating, trial_labels)


def _mark_widget(session: RaterSession, attribute: str, key: str, label: str | None = None) -> None:
    info = session.info
    asked = info.rating_attribute(attribute)
    question = f"{label}: {asked.question}" if label else asked.question
    ends = (asked.low_short, asked.high_short)
    if info.options.rating_scale == "mushra":
        st.select_slider(
            question,
            options=[texts.UNRATED, *range(info.scale_min, info.scale_max + 1)],
            value=texts.UNRATED,
            format_func=lambda m: texts.slider_label(m, info.scale_min, info.scale_max, *ends),
            key=key,
        )
    else:
        st.radio(
            question,
            options=list(range(info.scale_min, info.scale_max + 1)),
            index=None,
            horizontal=True,
            format_func=lambda m: texts.mark_label(m, info.scale_min, info.scale_max, *ends),
            key=key,
        )


def rating_form(session: RaterSession, state: StepState):
    """One page: player, waveform(s) and marks in one form; returns (form key, submitted, collect)
    where ``collect()`` reads (marks, player report) from the widgets."""
    info, step = session.info, state.step
    form_key = _key("page", step.position)
    multi = step.block == "multi"
    shows = info.page_shows(step.attributes)  # what the page's attributes ask to see and hear
    panel = multi and "sound" in shows  # every condition's button and slider side by side
    keys: dict = {}
    with st.form(form_key, clear_on_submit=False, enter_to_submit=True):
        st.caption(texts.block_intro("panel" if panel else step.block, shows, len(step.attributes)))
        if state.trial.instruction:
            st.info(state.trial.instruction)
        sounds = session.sounds(state) if "sound" in shows or multi else []
        player = _player(session, state, sounds, panel=panel) if "sound" in shows else None
        if not panel:
            asked = [info.rating_attribute(a) for a in step.attributes]
            st.caption(texts.page_scale_caption(asked, info.scale_min, info.scale_max))
        if multi and not panel:  # visual only: the waveforms one under the other, a mark each
            for label, trial in zip([s.label for s in sounds][1:], state.trials):
                st.subheader(f"Sound {label}")
                st.image(str(session.waveform(state, trial)), caption=WAVEFORM_CAPTION)
                keys[trial.trial_id] = {a: _key("mark", step.position, label, a) for a in step.attributes}
                for a, k in keys[trial.trial_id].items():
                    _mark_widget(session, a, k, label)
        elif not multi:
            if "waveform" in shows:
                st.image(str(session.waveform(state)), caption=WAVEFORM_CAPTION)
            keys = {a: _key("mark", step.position, a) for a in step.attributes}
            for a, k in keys.items():
                _mark_widget(session, a, k)
        submitted = st.form_submit_button(
            "Submit and continue",
            type="primary",
            shortcut="Enter",
            on_click=_on_submit,
            args=(session, step.position, keys, form_key, player),
        )
    return form_key, bool(submitted), lambda: _collect(keys, player)


def _collect(keys: dict, player: PagePlayer | None) -> tuple[dict, dict | None]:
    """(marks, player report) from the session state; an untouched slider counts as no mark. On a
    rating panel the marks are the player's: ``{trial id: {attribute: mark}}``."""

    def read(k: str) -> object:
        v = st.session_state.get(k)
        return None if v == texts.UNRATED else v

    marks = {t: ({a: read(k) for a, k in v.items()} if isinstance(v, dict) else read(v)) for t, v in keys.items()}
    report = None
    if player is not None:
        rated = list(player.trial_labels.values()) if player.trial_labels else ()
        report = normalise_state(
            st.session_state.get(player.key),
            player.labels,
            min_listen_s=player.min_s,
            required=[lb != "R" for lb in player.labels],
            page=player.page,
            rating=player.rating,
            rated=rated,
        )
        if player.trial_labels:
            marks = {tid: dict(report["marks"].get(label, {})) for tid, label in player.trial_labels.items()}
    return marks, report


def _on_submit(session: RaterSession, position: int, keys: dict, form_key: str, player) -> None:
    """The submit callback (runs before the script): store, and leave the answer for the page."""
    st.session_state["handled_submit"] = form_key
    try:
        marks, report = _collect(keys, player)
    except Exception:  # noqa: BLE001 - a widget value that cannot be read (tampered): renew the page
        log.exception("submitted marks could not be read")
        _renew_widgets()
        _flash(texts.PAGE_PROBLEM)
        return
    _record_submit(session, position, marks, report)


def _record_submit(session: RaterSession, position: int, marks: dict, report: dict | None) -> None:
    """Submit one page; its answer is flashed on the page rendered next (the next page on success)."""
    try:
        outcome = session.submit_page(position, marks, report)
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
    st.title(f"{info.title}: admin")
    st.write(
        f"Study id `{study_id}`: mode **{info.mode}**, design **{info.design}**, scale {info.scale_min}–{info.scale_max} "
        f"({info.options.rating_scale}), status **{info.status}**."
    )
    label, opening = ("Close the study", False) if info.status == "open" else ("Open the study", True)
    if st.button(label, key=_key("status")):
        admin.set_open(opening)
        st.rerun()
    per_rater, per_trial = admin.progress()
    tabs = st.tabs(["Progress", "Where raters stop", "Screening", "Export", "Invite and enrol"])
    with tabs[0]:
        st.subheader("Per rater")
        st.dataframe(per_rater, hide_index=True, width="stretch")
        st.subheader("Per trial")
        st.dataframe(per_trial, hide_index=True, width="stretch")
    with tabs[1]:
        _dropoff_tab(admin)
    with tabs[2]:
        st.caption(
            "Hidden reference and anchor marks beyond the report's thresholds (on this study's scale), failed "
            "attention checks and the headphone check (counts; the report decides exclusions)."
        )
        st.dataframe(admin.screening(), hide_index=True, width="stretch")
    with tabs[3]:
        ratings = admin.ratings()
        st.write(f"{len(ratings)} marks stored.")
        st.dataframe(ratings, hide_index=True, width="stretch")
        st.download_button(
            "Download CSV", ratings.to_csv(index=False).encode(), file_name=f"{study_id}-ratings.csv", mime="text/csv"
        )
        buf = io.BytesIO()
        ratings.to_parquet(buf, index=False)
        st.download_button(
            "Download Parquet", buf.getvalue(), file_name=f"{study_id}-ratings.parquet", mime="application/octet-stream"
        )
    with tabs[4]:
        _invite_tab(admin, info)


def _dropoff_tab(admin: AdminSession) -> None:
    stops, sessions = admin.where_raters_stop()
    st.caption(
        "Raters who have not finished, by the last page they submitted and what they are doing now; "
        "sessions with their length and why each ended."
    )
    if len(stops):
        st.bar_chart(stops.set_index("pages_done")["raters"], x_label="pages done", y_label="raters not finished")
    st.dataframe(stops, hide_index=True, width="stretch")
    st.dataframe(sessions, hide_index=True, width="stretch")


def _invite_tab(admin: AdminSession, info) -> None:
    n = st.number_input("New raters", min_value=1, max_value=200, value=1, step=1, key=_key("invite-n"))
    if st.button("Invite", key=_key("invite")):
        links = [f"{rid}: {rater_link(_base_url(), tok)}" for rid, tok in admin.invite(int(n))]
        st.warning("Copy these links now: only their hashes are stored.")
        st.code("\n".join(links), language=None)
    enrol_opts = info.options.enrolment
    if not enrol_opts.enabled:
        st.caption("Public enrolment is off (study.enrolment.enabled in the protocol).")
        return
    st.subheader("Public enrolment")
    st.write(
        f"Cap {enrol_opts.cap} raters; completion code `{enrol_opts.completion_code}`"
        + (f"; return address {enrol_opts.completion_url}" if enrol_opts.completion_url else "")
        + "."
    )
    st.caption("The current link was printed by `sonieval study serve` (and is in links.txt). A new one replaces it.")
    if st.button("Make a new enrolment link", key=_key("rotate-enrol")):
        key = admin.rotate_enrolment_key()
        st.warning("Copy this link now: only its hash is stored; the previous link no longer works.")
        st.code(f"{enrol_link(_base_url(), key)}\nProlific: {enrol_link(_base_url(), key, 'prolific')}", language=None)


# ----------------------------------------------------------------------------- entry


def main() -> None:
    storage = os.environ.get(ENV_STORAGE)
    study_id = os.environ.get(ENV_STUDY_ID)
    admin_token = st.query_params.get("admin")
    st.set_page_config(page_title="Listening study", page_icon=None, layout="wide" if admin_token else "centered")
    if not storage or not study_id:
        st.error("No study configured. Start the app with: sonieval study serve PROTOCOL")
        st.stop()
    try:
        store = get_store(storage)
        info = store.study(study_id)  # read once per page view: the rater's page uses it too
    except Exception:  # noqa: BLE001 - the cause goes to the server log, not to the rater
        log.exception("cannot open the study storage")
        st.error(texts.UNAVAILABLE)
        st.stop()
    wide = bool(admin_token) or info.mode == "multi"  # a multi-stimulus page: every condition side by side
    st.set_page_config(
        page_title=f"{info.title}: admin" if admin_token else info.title, layout="wide" if wide else "centered"
    )
    rater_token = st.query_params.get("rater")
    if admin_token:
        guarded(admin_page, store, study_id, admin_token)
    elif rater_token:
        guarded(rater_page, store, study_id, rater_token, info)
    elif st.query_params.get("enrol"):
        guarded(enrol_page, store, study_id)
    else:
        st.error(texts.NO_LINK)


main()
