#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv, CPU-only by default.
# Re-running is cheap: pip skips what is already installed at the pinned versions.
#   TORCH_SPEC   torch requirement to install first (default: torch==2.13.0, CPU build)
#   VENV         where to put the environment (default: <repo>/.venv)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
# --no-compile: pip would byte-compile all ~19,000 modules of the environment (about 140 CPU-s, most of torch,
# scipy, sympy, mlflow and pandas never imported). The modules the app imports are compiled below instead, with
# PYTHONDONTWRITEBYTECODE lifted: where it is set (as on some CI machines) and no .pyc exists, every process
# compiles what it imports from source again (measured: `import monai.apps` 43 s instead of 17 s).
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
INSTALL=(install --no-compile)
stamp="$VENV/.strokelabel-setup"
want="$(cat "$ROOT/requirements.txt" "$ROOT/requirements-nodeps.txt" "$ROOT/constraints.txt" "$ROOT/pyproject.toml"; echo "$TORCH_SPEC")"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "[setup] environment up to date ($VENV)"
  exit 0
fi
# torch and the pinned requirements in one resolver pass; then what is installed without its dependencies.
echo "[setup] installing $TORCH_SPEC and the pinned requirements"
"${PIP[@]}" "${INSTALL[@]}" "$TORCH_SPEC" -r "$ROOT/requirements.txt"
"${PIP[@]}" "${INSTALL[@]}" --no-deps -r "$ROOT/requirements-nodeps.txt" -e "$ROOT"
# Fail here, not at server start, if something the server imports is missing; this import also writes the
# byte code of what the server and its training children import.
env -u PYTHONDONTWRITEBYTECODE "$VENV/bin/python" -c "import torch, monai, monai.apps, monailabel.app, monailabel.main, strokelabel, nvflare; print('[setup] torch', torch.__version__, '| monai', monai.__version__, '| monailabel', monailabel.__version__, '| cuda', torch.cuda.is_available())"
printf '%s' "$want" > "$stamp"
