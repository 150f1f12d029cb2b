"""The listening study: design, stimuli, storage, the rater/admin sessions, export, serving.

- ``design.py``: trials (sonification, hidden reference, low anchor, attention checks),
  full or balanced-subset designs, per-rater seeded orders, joint, split or multi mode.
- ``stimuli.py``: the study's own audio (blinded copies in one format, the anchor), safe file serving.
- ``loudness.py``: BS.1770 loudness and true peak; one level per clip under a true-peak ceiling.
- ``prepare.py``: writes a study's aligned files (originals, stimuli, waveforms) and their levels.
- ``familiarisation.py``: the "near 1" / "near 5" examples: anchor and hidden reference of a clip no one rates.
- ``texts.py``: what the pages say, including every plain-sentence answer to a rater.
- ``waveforms.py``: original-above-stimulus PNGs, rendered once and cached.
- ``store/``: SQLAlchemy storage (SQLite default, PostgreSQL by URL), schema versioned and migrated in
  place; by responsibility: ``schema``, ``migrations``, ``connection``, ``records``, ``admin`` (creating a
  study), ``planning`` and ``enrolment`` (raters and their plans), ``submissions`` and ``sessions``,
  ``exports`` (:mod:`sonieval.study.store`).
- ``tokens.py``: rater and admin tokens (256 random bits), stored only as hashes.
- ``options.py``: how a study is shown and run: title, rating scale, sessions, enrolment, headphone check.
- ``session.py``: what a rater and an admin may do, each behind a token; the listening rule,
  sessions and breaks, the headphone check, crowd enrolment (platform ids, keyed address hash).
- ``player/``: the A/B player (Streamlit component, Web Audio; its engine, sonieval/assets/ab/engine.js,
  is shared with the listening gallery): same-playhead equal-power switching, faded loop, keys, listening time per sound, the
  multi-stimulus rating panel (MUSHRA layout).
- ``headphone.py``: the antiphase headphone check of Woods et al. (2017), from its description.
- ``create.py``: make a study from the protocol's tables, ``study.audio_dir`` or folders.
- ``export.py``: the ratings table (CSV, Parquet), progress and screening tables.
- ``server.py``: start and own ``streamlit run study_app/app.py``, record its address, build links.

The questions a study asks (``visual``, ``audio``, or the protocol's own) are the rating attributes of
:mod:`sonieval.rating_attributes`. The headless-Chromium rater driver, the Streamlit-protocol raters for
crowd load and the throwaway PostgreSQL that the tests and the benchmark use live in ``tests/harness/``.
"""
