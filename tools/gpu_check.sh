#!/usr/bin/env bash
# The GPU check (docs/performance.md, "GPU check"): `nasseg gpucheck` run by a Python whose torch
# sees a GPU. PYTHON=/path/to/python chooses it; otherwise the project's .venv (make setup) when its
# torch sees CUDA, else python3 (a GPU machine's own CUDA build of torch), else .venv, where nasseg
# says in one line that there is no CUDA device. nasseg is imported from this checkout either way.
# Arguments go to `nasseg gpucheck` (tools/gpu_check.sh --help lists them); default output:
# runs/gpucheck/gpucheck.md, .csv and .json.
set -euo pipefail
cd "$(dirname "$0")/.."

sees_cuda() { "$1" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; }

python=${PYTHON:-}
if [ -z "$python" ]; then
  for candidate in .venv/bin/python python3; do
    if command -v "$candidate" >/dev/null 2>&1 && sees_cuda "$candidate"; then python=$candidate; break; fi
  done
  python=${python:-.venv/bin/python}
fi
command -v "$python" >/dev/null 2>&1 || { echo "gpu_check: no Python at $python (make setup, or set PYTHON)" >&2; exit 2; }

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's nasseg, also for Ray's workers
if ! problem=$("$python" -c 'import nasseg.shell.cli.main' 2>&1); then
  echo "gpu_check: $python cannot import nasseg: $(printf '%s\n' "$problem" | tail -n 1) (make setup, or install" \
       "pyproject.toml's dependencies for that Python; ray is needed only by the nccl check)" >&2
  exit 2
fi
exec "$python" -m nasseg gpucheck "$@"
