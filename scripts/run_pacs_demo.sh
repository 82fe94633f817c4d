#!/usr/bin/env bash
# The server on an embedded PACS, to try the PACS mode (and OHIF) on a fresh machine: Debian's
# Orthanc on loopback with the sample studies stored in it as DICOM (one series per map or phase),
# and the server started on its DICOMweb URL. The folder mode (scripts/run_server.sh) stays the default.
#   PORT       server port (default 8000)      PACS_PORT  Orthanc's HTTP port (default 8042)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_system.sh"
bash "$ROOT/scripts/setup_viewer.sh"
bash "$ROOT/scripts/setup_env.sh"
PY="${VENV:-$ROOT/.venv}/bin/python"
PORT="${PORT:-8000}"
PACS_PORT="${PACS_PORT:-8042}"
source "$ROOT/scripts/server_host.sh"
STUDIES="$ROOT/sample-data/studies"
"$PY" -m strokelabel.phantom --out "$STUDIES" --per-kind 12 --labelled 8 --size small --seed 2026
READY="$ROOT/sample-data/pacs/ready"
rm -f "$READY"
"$PY" -m strokelabel.orthanc --workdir "$ROOT/sample-data/pacs" --port "$PACS_PORT" --load "$STUDIES" --ready-file "$READY" &
PACS_PID=$!
trap 'kill $PACS_PID 2>/dev/null || true' EXIT
echo "[pacs] converting the sample studies to DICOM and storing them in Orthanc (the first time takes a few minutes)"
until [ -f "$READY" ]; do
  kill -0 $PACS_PID 2>/dev/null || { echo "[pacs] Orthanc did not start: see $ROOT/sample-data/pacs/orthanc.log" >&2; exit 1; }
  sleep 2
done
export MONAI_LABEL_TRACKING_ENABLED="${MONAI_LABEL_TRACKING_ENABLED:-false}"
cd "$ROOT"
echo "[server] http://localhost:$PORT  (PACS: http://127.0.0.1:$PACS_PORT/dicom-web; OHIF: http://localhost:$PORT/ohif3/stroke: run, correct, save, retrain)"
"$PY" -m monailabel.main start_server --app "$ROOT/apps/stroke" --studies "http://127.0.0.1:$PACS_PORT/dicom-web" --host "$HOST" --port "$PORT" "$@"
