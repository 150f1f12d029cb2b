"""Test harnesses shared by the suite and the benchmarks (not part of the library): required-part
checks (parts), a temporary PostgreSQL server (pgtemp), the headless-Chromium rater driver (browser)
the Streamlit-protocol load test (loadtest) and the API examples of README.md and docs/*.md (readme). The suite
imports them as ``harness.*`` (pytest puts ``tests/`` on the path); benchmarks add ``tests/`` to ``sys.path``."""
