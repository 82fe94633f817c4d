"""A clinician's infer latency while active learning scores in the background, against the same infer idle.

Starts the real server twice on the same generated studies (a task whose shipped model scores by MC
dropout), once with background work yielding (lower CPU priority, waiting between studies while a
call is in flight: strokelabel/lifeline.py) and once without (``STROKELABEL_BACKGROUND_YIELD=0``, the
baseline in the same run). In each: the infer's latency idle, then while a scoring round over every
study runs. Prints seconds, the ratios (target: during / idle <= 1.3) and the scoring round's figures.

    .venv/bin/python scripts/benchmark_scoring.py [--studies 50] [--distinct 50] [--size full] [--task core_penumbra] [--infers 5]
        [--whole-round]

``--distinct K`` generates K phantoms and serves each under several subject ids (hard links) until there are
``--studies`` studies: scoring is cached per study id and model version, so every id is scored in full, and a
full-size phantom takes minutes to generate. Without ``--whole-round`` the server is stopped ``--idle-after``
seconds after the infers during scoring are measured, and the studies scored while they ran and by then are counted (a 50-study full-size round takes
tens of minutes).

Nothing here is a pass/fail test: it prints figures.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
KIND_OF_TASK = {"core_penumbra": "ctp", "ischemic_lesion": "mri", "clot_region": "cta"}
# The scoring method each task registers, and the datastore key its score is stored under (lib/configs/<task>.py).
SCORING_OF_TASK = {"core_penumbra": "core_penumbra_mc_dropout", "ischemic_lesion": "ischemic_lesion_mc_dropout",
                   "clot_region": "clot_region_least_confidence"}
SCORE_KEY_OF_TASK = {task: f"{task}_uncertainty" for task in SCORING_OF_TASK}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(studies: Path, task: str, workdir: Path, yield_to_clinician: bool):
    port = free_port()
    env = {**os.environ, "MONAI_LABEL_AUTO_UPDATE_SCORING": "false", "MONAI_LABEL_TRACKING_ENABLED": "false",
           "STROKELABEL_BACKGROUND_YIELD": "1" if yield_to_clinician else "0", "STROKELABEL_SCORING_MAX_SECONDS": "100000",
           "STROKELABEL_SCORING_MAX_STUDIES": "100000"}
    env.pop("STROKELABEL_FOREGROUND_MARKER", None)
    log = open(server_log(workdir, yield_to_clinician), "w")
    proc = subprocess.Popen([sys.executable, "-m", "monailabel.main", "start_server", "--app", str(ROOT / "apps" / "stroke"),
                             "--studies", str(studies), "--host", "127.0.0.1", "--port", str(port), "--conf", "models", task],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(workdir))
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if requests.get(url + "/info/", timeout=5).ok:
                return proc, url
        except requests.ConnectionError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: see {log.name}")
        time.sleep(1)
    raise RuntimeError("server did not start")


def replicate_studies(folder: Path, total: int) -> None:
    """Serve the generated studies under more subject ids (hard links, sidecar JSON rewritten) until there are ``total``."""
    originals = sorted(p for p in folder.glob("sub-*") if p.is_dir() and "copy" not in p.name)
    existing = sorted(folder.glob("sub-*"))
    for n in range(len(existing), total):
        source = originals[n % len(originals)]
        subject = f"{source.name}copy{n:03d}"
        for path in source.rglob("*"):
            target = folder / subject / path.relative_to(source)
            target = target.with_name(target.name.replace(source.name, subject))
            if path.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            elif path.suffix == ".json":
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(path.read_text().replace(source.name.removeprefix("sub-"), subject.removeprefix("sub-")))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(path, target)


def server_log(workdir: Path, yield_to_clinician: bool) -> Path:
    return workdir / f"server-{'yield' if yield_to_clinician else 'noyield'}.log"


def scored_studies(log: Path, key: str) -> int:
    """Studies the round scored, from the scoring child's lines in the server log (the server's own datastore
    copy sees the child's scores only after a refresh)."""
    return sum(f"{key}: " in line and " => " in line for line in log.read_text(errors="replace").splitlines())


def infer_seconds(url: str, task: str, image: str) -> float:
    started = time.perf_counter()
    answer = requests.post(f"{url}/infer/{task}", params={"image": image, "output": "json"}, data={"params": json.dumps({"method": "model"})},
                           timeout=900)
    answer.raise_for_status()
    return time.perf_counter() - started


def scoring_running(url: str) -> bool:
    return requests.get(f"{url}/scoring/", params={"check_if_running": "true"}, timeout=30).status_code == 200


def measure(studies: Path, task: str, workdir: Path, yield_to_clinician: bool, infers: int, whole_round: bool, idle_after_s: float) -> dict:
    proc, url = start_server(studies, task, workdir, yield_to_clinician)
    log = server_log(workdir, yield_to_clinician)
    try:
        images = sorted(requests.get(f"{url}/datastore/", params={"output": "all"}, timeout=60).json()["objects"])
        image = images[0]
        infer_seconds(url, task, image)  # warm the model cache
        idle = [infer_seconds(url, task, image) for _ in range(infers)]
        started = time.perf_counter()
        requests.post(f"{url}/scoring/{SCORING_OF_TASK[task]}", params={"run_sync": "false"},
                      json={"samples": 4, "device": "cpu", "force": True}, timeout=60).raise_for_status()
        while not scoring_running(url) and time.perf_counter() - started < 30:
            time.sleep(0.2)
        during = []
        while scoring_running(url) and len(during) < infers:
            during.append(infer_seconds(url, task, image))
            time.sleep(0.5)  # a clinician looks at the answer before the next call
        if not during:
            raise RuntimeError(f"the scoring round was not running during the infers: see {log}")
        measured_s = time.perf_counter() - started
        scored_while_measured = scored_studies(log, SCORE_KEY_OF_TASK[task])
        # Then the clinician pauses: the round goes on at its own pace.
        pause_end = time.perf_counter() + idle_after_s
        while (whole_round or time.perf_counter() < pause_end) and scoring_running(url):
            time.sleep(1)
        round_s = time.perf_counter() - started
        scored = scored_studies(log, SCORE_KEY_OF_TASK[task])
        return {"idle_s": statistics.median(idle), "during_s": statistics.median(during), "during_n": len(during),
                "measured_s": measured_s, "scored_while_measured": scored_while_measured,
                "round_s": round_s, "studies": len(images), "scored": scored}
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=50)
    parser.add_argument("--distinct", type=int, default=None, help="phantoms generated (default: --studies); the rest are copies")
    parser.add_argument("--whole-round", action="store_true", help="wait for the scoring round to end before stopping the server")
    parser.add_argument("--idle-after", type=float, default=120.0, help="seconds the round runs on after the infers, counted")
    parser.add_argument("--modes", default="noyield,yield", help="servers to measure: noyield (the baseline), yield")
    parser.add_argument("--size", default="full", choices=["small", "full"])
    parser.add_argument("--task", default="core_penumbra", choices=list(KIND_OF_TASK))
    parser.add_argument("--infers", type=int, default=5, help="infers per measurement (the median is reported)")
    parser.add_argument("--folder", default=None, help="studies folder (default: temporary; reused when it has them)")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="benchmark_scoring_"))
    studies = Path(args.folder) if args.folder else workdir / "studies"
    distinct = min(args.distinct or args.studies, args.studies)
    print(f"generating {distinct} {args.size} {KIND_OF_TASK[args.task]} studies in {studies} ...", flush=True)
    subprocess.run([sys.executable, "-m", "strokelabel.phantom", "--out", str(studies), "--per-kind", str(distinct), "--labelled", "0",
                    "--size", args.size, "--kinds", KIND_OF_TASK[args.task], "--ctp-series", "no", "--seed", "7100"], check=True)
    replicate_studies(studies, args.studies)
    rows = {}
    for yielding in [mode == "yield" for mode in args.modes.split(",")]:
        print(f"server with background work {'yielding' if yielding else 'not yielding'} ...", flush=True)
        rows[yielding] = measure(studies, args.task, workdir, yielding, args.infers, args.whole_round, args.idle_after)
    print(f"\n{args.task}, {args.studies} {args.size} studies ({distinct} distinct), {os.cpu_count()} cores; infer = POST /infer "
          f"(method model), median of {args.infers}")
    print("| background work | infer idle s | infer during scoring s | during / idle | studies scored while the infers ran | studies scored by the end (s since scoring began) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for yielding, row in rows.items():
        ratio = f"{row['during_s'] / row['idle_s']:.2f}"  # measure() raises when no infer ran during the round
        during = f"{row['during_s']:.2f} (n={row['during_n']})"
        print(f"| {'yields (nice 10, waits)' if yielding else 'does not yield (baseline)'} | {row['idle_s']:.2f} | {during} | {ratio} | {row['scored_while_measured']} in {row['measured_s']:.0f} s | {row['scored']} of {row['studies']} ({row['round_s']:.0f} s) |")
    print(f"\nserver logs in {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
