#!/usr/bin/env bash
# Builds the project environment in .venv (idempotent). Called by `make setup`.
# Order matters: torch first (pins the CPU build), then the locked stack, then the
# packages whose upstream pins contradict that stack, with --no-deps (see requirements/nodeps.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
VENV=.venv
STAMP=$VENV/.sonieval-setup
want=$(cat requirements/lock.txt requirements/nodeps.txt pyproject.toml setup.py scripts/setup_env.sh | sha256sum | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$VENV/bin/python" -c "import sonieval" 2>/dev/null; then
  echo "environment .venv is up to date"
  exit 0
fi
echo "building environment in .venv (a few minutes on first run)"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check"
# setuptools: the build backend of `pip wheel --no-build-isolation` in the packaging test (pyproject needs >=68)
$PIP install -q --upgrade pip wheel "setuptools==84.2.1"
$PIP install -q "torch==2.13.0"
$PIP install -q -r requirements/lock.txt
$PIP install -q --no-deps -r requirements/nodeps.txt
# torchaudio's wheel is a CUDA build: its extension libraries cannot load next to the CPU
# torch and torchaudio then fails at import. Without them it falls back to pure Python,
# which is all descript-audio-codec needs (we read and write audio with soundfile).
rm -f "$VENV"/lib/python3*/site-packages/torchaudio/lib/*.so
$PIP install -q --no-deps -e .
"$VENV/bin/python" -c "import sonieval, dac, kadtk, torchcrepe" >/dev/null 2>&1 || { echo "setup: import check failed" >&2; "$VENV/bin/python" -c "import sonieval, dac, kadtk, torchcrepe"; exit 1; }
echo "$want" > "$STAMP"
echo "environment ready: .venv"
