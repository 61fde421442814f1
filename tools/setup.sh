#!/usr/bin/env bash
# Set up a fresh machine for nasseg: venv, the package (editable), graphviz's `dot`.
# Idempotent and quick when nothing changed. Used by `make demo` and `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PYTHON=$candidate; break; fi
  done
fi
[ -n "$PYTHON" ] || { echo "setup: Python 3.11 not found (set PYTHON=/path/to/python3.11)" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $PYTHON"
  "$PYTHON" -m venv .venv
fi

# Reinstall only when the package metadata changed since the last install.
stamp=.venv/.nasseg-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing nasseg and its dependencies (torch==2.13.0 CPU, ray, optuna, ...)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  # torch first, the tested release's CPU wheel: the package accepts a range, and any other torch
  # here would pull a multi-GB CUDA build. Then the package with every extra the tests use.
  .venv/bin/python -m pip install --quiet "torch==2.13.0"
  .venv/bin/python -m pip install --quiet -e ".[dev]"
  touch "$stamp"
fi

if ! command -v dot >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing graphviz (dot) with apt-get"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null
  else
    echo "setup: warning: graphviz's 'dot' is missing and cannot be installed here (need root + apt-get);" \
         "drawings will not render until it is installed" >&2
  fi
fi
