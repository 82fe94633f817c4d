#!/usr/bin/env bash
# The main job: set up the environment, generate the phantom sample studies (once), and start
# the MONAI Label server with the stroke app on them.
#   PORT     server port (default 8000)
#   STUDIES  studies folder to serve (default: sample-data/studies, generated if missing)
#   MODELS   tasks to serve (default: all)
#   HOST     address to listen on (default 127.0.0.1; see scripts/server_host.sh)
# Extra arguments go to `monailabel start_server`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
PY="${VENV:-$ROOT/.venv}/bin/python"
PORT="${PORT:-8000}"
STUDIES="${STUDIES:-$ROOT/sample-data/studies}"
MODELS="${MODELS:-all}"
source "$ROOT/scripts/server_host.sh"

if [ "$STUDIES" = "$ROOT/sample-data/studies" ]; then
  # Skips studies that already exist, so a restart is quick.
  "$PY" -m strokelabel.phantom --out "$STUDIES" --per-kind 12 --labelled 8 --size small --seed 2026
fi

# Experiment tracking is off by default: MLflow 3 rejects the file-store URI MONAI Label
# builds. Enable it per training request with tracking=mlflow (a SQLite URI is used).
export MONAI_LABEL_TRACKING_ENABLED="${MONAI_LABEL_TRACKING_ENABLED:-false}"
cd "$ROOT"
# Byte code is written (once) even where the environment forbids it: otherwise each server, training and
# scoring process would compile torch, MONAI and the app from source again (scripts/setup_env.sh).
unset PYTHONDONTWRITEBYTECODE
echo "[server] http://$HOST:$PORT  (studies: $STUDIES)"
exec "$PY" -m monailabel.main start_server --app "$ROOT/apps/stroke" --studies "$STUDIES" --host "$HOST" --port "$PORT" --conf models "$MODELS" "$@"
