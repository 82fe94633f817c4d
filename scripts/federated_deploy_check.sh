#!/usr/bin/env bash
# Run the federated job as real NVFlare processes on this machine, offline, the two ways a federation runs
# outside the simulator (docs/federated.md):
#   poc        NVFlare's POC mode: `nvflare poc prepare`, `nvflare poc start` per participant
#   provision  a provisioned deployment: `nvflare provision -p docs/federated/project.yml` (the aggregator renamed
#              localhost, free ports), startup kits with mutual TLS, server and two sites started from their kits
# Each way: two phantom hospitals (2 labelled MRI studies each, the shipped ischemic_lesion_mri model), their kits
# prepared (lib.federated allowed, custom code closed at the sites), the exported job (no code, no site path)
# submitted through the admin API (FLARE API secure session), one round, the global model offered to each site's
# app by its own no-regression rule; then the system is shut down through the admin API.
#
#   scripts/federated_deploy_check.sh [poc|provision|both] [WORK_DIR]
#
# Needs the app's environment (VENV, default .venv) and no network. Prints seconds, ports and certificate dates.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
APP="$ROOT/apps/stroke"
VENV="${VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
MODE="${1:-both}"
WORK="$(mkdir -p "${2:-/tmp/strokelabel-fl-deploy}" && cd "${2:-/tmp/strokelabel-fl-deploy}" && pwd)"
TRAIN="max_epochs=1,slices_per_study=2,dataset=Dataset,crop_size=96"
SITES=(hospital-a hospital-b)
export PATH="$VENV/bin:$PATH"   # the kits' start scripts run `python3`
export PYTHONPATH="$APP:$ROOT" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MONAI_LABEL_TRACKING_ENABLED=false
STARTED_PIDS=()

say() { echo "[deploy-check $(date -u +%H:%M:%S)] $*"; }

cleanup() {  # only what this script started: the kits' daemons (pid files) and the POC launcher's children
  for pid in "${STARTED_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for f in "$WORK"/*/kits/*/daemon_pid.fl "$WORK"/*/kits/*/pid.fl "$WORK"/poc/workspace/*/prod_00/*/daemon_pid.fl \
           "$WORK"/poc/workspace/*/prod_00/*/pid.fl; do
    [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
  done
}
trap cleanup EXIT

phantom_sites() {  # $1: folder; two hospitals of 2 labelled studies, each with the app's shipped model folder
  "$PY" - "$1" <<'EOF'
import shutil, sys
from pathlib import Path
from strokelabel.phantom.isles_layout import generate_isles_study
root, shipped = Path(sys.argv[1]), Path("apps/stroke/model/shipped/ischemic_lesion_mri.pt")
for n, site in enumerate(("hospital-a", "hospital-b")):
    if not (root / site / "studies").exists():
        for i in (1, 2):
            generate_isles_study(root / site / "studies", i, seed=7700 + 100 * n + i)
    (root / site / "model" / "shipped").mkdir(parents=True, exist_ok=True)
    shutil.copy(shipped, root / site / "model" / "shipped")
EOF
}

wait_port() {  # $1 port: until something listens on 127.0.0.1:$1
  for _ in $(seq 120); do
    "$PY" -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1', $1)))" && return 0
    sleep 1
  done
  say "nothing listens on port $1"; return 1
}

submit_and_wait() {  # $1 submitter, $2 its kit, $3 operator (project admin), $4 its kit, $5 job folder, $6 label
  # submit through the admin API, wait for the end; then the operator shuts the system down (a lead may not stop sites)
  "$PY" - "$@" <<'EOF'
import os, sys, time
from nvflare.fuel.flare_api.flare_api import new_secure_session
submitter, submitter_kit, operator, operator_kit, job, label = sys.argv[1:7]
session = new_secure_session(submitter, submitter_kit, timeout=120)
deadline = time.time() + 300
while len(session.get_system_info().client_info) < 2:
    if time.time() > deadline:
        raise SystemExit(f"{label}: the two sites did not connect in 300 s")
    time.sleep(2)
print(f"{label}: sites connected: {[c.name for c in session.get_system_info().client_info]}", flush=True)
started = time.time()
job_id = session.submit_job(job)
print(f"{label}: job {job_id} submitted through the admin API by {submitter}", flush=True)
rc, meta = session.monitor_job_and_return_job_meta(job_id, timeout=1800, poll_interval=5)
print(f"{label}: job {job_id} {rc} status {meta.get('status') if meta else None} in {time.time() - started:.0f} s", flush=True)
session.close()
operator_session = new_secure_session(operator, operator_kit, timeout=120)
operator_session.shutdown_system()  # server and every site
print(f"{label}: system shut down through the admin API by {operator}", flush=True)
completed = bool(meta) and meta.get("status") == "FINISHED:COMPLETED"
if not completed:
    print(f"{label}: the job did not complete: {meta}", flush=True)
# the admin session keeps reconnecting to the server it has just shut down (NVFlare's connector threads): end here
os._exit(0 if completed else 1)
EOF
}

check_home() {  # $1 sites folder, $2 label: the global model came home to each site's app and its rule decided
  "$PY" - "$@" <<'EOF'
import json, sys
from pathlib import Path
root, label = Path(sys.argv[1]), sys.argv[2]
for site in ("hospital-a", "hospital-b"):
    found = sorted((root / site / "model" / "ischemic_lesion_mri" / "versions").glob("*_fl_*.json"))
    if not found:
        raise SystemExit(f"{label}: the global model did not come home to {site}")
    record = json.loads(found[-1].read_text())
    fed = record["federation"]
    print(f"{label}: {site}: {found[-1].stem}: published {record['published']} ({record['reason']}); federation {fed['federation']} "
          f"round {fed['round']}, sites {json.dumps(fed['sites'])}, seconds per round {fed['round_seconds']}")
EOF
}

start_kit() {  # $1 kit folder, $2.. environment (KEY=VALUE) of that participant: its startup kit's own start.sh,
  # or in POC mode `nvflare poc start -p <participant>` (which runs the same script)
  local kit="$1"; shift
  if [[ "${POC:-0}" == 1 ]]; then
    env "$@" nvflare poc start -p "$(basename "$kit")" --no-wait > "$kit/start.out" 2>&1
  else
    env "$@" "$kit/startup/start.sh" > "$kit/start.out" 2>&1
  fi
}

run() {  # $1 label, $2 kits (prod_00), $3 server name, $4 submitter, $5 operator (project admin), $6 fed_learn port, $7 admin port,
  # $8 sites folder
  local label="$1" kits="$2" server="$3" admin="$4" operator="$5" fed_port="$6" admin_port="$7" data="$8" t0=$SECONDS
  for site in "${SITES[@]}"; do (cd "$APP" && "$PY" -m lib.federated.job site-kit --workspace "$kits/$site"); done
  (cd "$APP" && "$PY" -m lib.federated.job server-kit --workspace "$kits/$server")
  say "$label: certificates (root CA, server, site):"
  for cert in "$kits/$server/startup/rootCA.pem" "$kits/$server/startup/server.crt" "$kits/${SITES[0]}/startup/client.crt"; do
    echo "  $(basename "$cert"): $(openssl x509 -in "$cert" -noout -subject -startdate -enddate | tr '\n' ' ')"
  done
  start_kit "$kits/$server"
  wait_port "$fed_port" && wait_port "$admin_port"
  say "$label: aggregator $server listening on $fed_port (the sites connect here; scheme $(grep -o "\"scheme\": *\"[a-z]*\"" "$kits/$server/startup/fed_server.json" | grep -o "[a-z]*\"$" | tr -d \"), mutual TLS) and $admin_port (admin) after $((SECONDS - t0)) s"
  for site in "${SITES[@]}"; do
    start_kit "$kits/$site" STROKELABEL_FL_MODEL_DIR="$data/$site/model" STROKELABEL_FL_STUDIES="$data/$site/studies"
  done
  (cd "$APP" && "$PY" -m lib.federated.job export --task ischemic_lesion --rounds 1 --min-labels 2 --train "$TRAIN" \
      --name "strokelabel-$label" --site hospital-a --site hospital-b --workspace "$WORK/$label/jobs")
  submit_and_wait "$admin" "$kits/$admin" "$operator" "$kits/$operator" "$WORK/$label/jobs/strokelabel-$label" "$label"
  check_home "$data" "$label"
  say "$label: done in $((SECONDS - t0)) s (kits prepared, processes started, job run, model home, system shut down)"
}

free_port() { "$PY" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }

cd "$ROOT"
if [[ "$MODE" == provision || "$MODE" == both ]]; then
  say "provision: phantom sites in $WORK/provision/sites"
  phantom_sites "$WORK/provision/sites"
  fed_port="$(free_port)" admin_port="$(free_port)"
  # the project file as shipped, the aggregator renamed localhost (its name is the host the sites reach), free ports
  "$PY" - "$ROOT/docs/federated/project.yml" "$WORK/provision/project.yml" "$fed_port" "$admin_port" <<'EOF'
import sys, yaml
project = yaml.safe_load(open(sys.argv[1]))
for p in project["participants"]:
    if p["type"] == "server":
        p.update(name="localhost", fed_learn_port=int(sys.argv[3]), admin_port=int(sys.argv[4]))
project["participants"] = [p for p in project["participants"] if p["name"] != "hospital-c"]
yaml.safe_dump(project, open(sys.argv[2], "w"), sort_keys=False)
EOF
  t0=$SECONDS
  nvflare provision -p "$WORK/provision/project.yml" -w "$WORK/provision/workspace" --force > "$WORK/provision/provision.log"
  rm -rf "$WORK/provision/kits" && cp -r "$WORK/provision/workspace/strokelabel-federation/prod_00" "$WORK/provision/kits"
  say "provision: startup kits in $((SECONDS - t0)) s: $(ls "$WORK/provision/kits" | tr '\n' ' ')"
  run provision "$WORK/provision/kits" localhost "lead@coordinating-centre.example.org" "admin@coordinating-centre.example.org" \
      "$fed_port" "$admin_port" "$WORK/provision/sites"
fi
if [[ "$MODE" == poc || "$MODE" == both ]]; then
  say "poc: phantom sites in $WORK/poc/sites"
  phantom_sites "$WORK/poc/sites"
  export NVFLARE_POC_WORKSPACE="$WORK/poc/workspace"
  t0=$SECONDS
  nvflare poc prepare -c "${SITES[@]}" --force > "$WORK/poc/prepare.log" 2>&1
  kits="$(dirname "$(find "$NVFLARE_POC_WORKSPACE" -maxdepth 4 -type d -name "${SITES[0]}" | head -1)")"
  server=server lead=lead@nvidia.com admin=admin@nvidia.com   # the participants `nvflare poc prepare` makes
  for p in "$server" "$lead" "$admin"; do [ -d "$kits/$p/startup" ] || { say "poc: no kit $kits/$p"; exit 1; }; done
  ports="$("$PY" -c "import json,sys; s=json.load(open(sys.argv[1]))['servers'][0]; print(s['service']['target'].split(':')[-1], s['admin_port'])" "$kits/$server/startup/fed_server.json" 2>/dev/null || true)"
  say "poc: prepared in $((SECONDS - t0)) s: $kits ($(ls "$kits" | tr '\n' ' '); ports ${ports:-see fed_server.json})"
  POC=1 run poc "$kits" "$server" "$lead" "$admin" ${ports:-8002 8003} "$WORK/poc/sites"
fi
