"""The federated retraining job of a stroke task, on NVIDIA FLARE, and how to run it.

One job definition for the three ways NVFlare runs it:

- ``simulate``: NVFlare's simulator, all sites on this machine (tests, benchmarks)::

      python -m lib.federated.job simulate --task ischemic_lesion --rounds 2 --workspace /tmp/fl \\
          --site hospital-a=/srv/a/model:/srv/a/studies --site hospital-b=/srv/b/model:/srv/b/studies

- ``export``: the job folder for POC mode or a provisioned federation (``nvflare job submit``);
  it carries no site path and no code: each site's client finds its app and data from its own
  environment (``STROKELABEL_FL_MODEL_DIR``, ``STROKELABEL_FL_STUDIES``), and every component is
  NVFlare's or installed with the app (``lib``), so a site's closed custom-code policy accepts it.

Privacy knobs are NVFlare's own task-result filters, applied at the site before anything leaves:
``--percentile-privacy 10`` (``PercentilePrivacy``: weight changes below that percentile of their size
are sent as 0, every change clipped to ``gamma``) and ``--exclude-vars REGEX`` (``ExcludeVars``: the
matching layers never leave). A site with fewer than ``--min-labels`` final labels sends no update.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Dict, List, Sequence

APP_DIR = Path(__file__).resolve().parents[2]


def start_checkpoint(task: str, checkpoint: str | None = None) -> str:
    """The federation's starting model: ``checkpoint``, else the app's shipped model of the task."""
    from lib.federated.site import TRAINERS

    path = Path(checkpoint) if checkpoint else APP_DIR / "model" / "shipped" / f"{TRAINERS[task][1]}.pt"
    if not path.is_file():
        raise SystemExit(f"no starting model {path}")
    return str(path.resolve())


def excluded_layers(checkpoint: str, pattern: str) -> List[str]:
    """The averaged entries of ``checkpoint`` that ``pattern`` (a regular expression) matches, by name: the job
    names them (NVFlare's exporter cannot write a compiled pattern into a job's config)."""
    import re

    from lib.federated.site import read_state, trainable_state

    names = [k for k in trainable_state(read_state(checkpoint)) if re.search(pattern, k)]
    if not names:
        raise SystemExit(f"--exclude-vars {pattern!r} matches no layer of {checkpoint}")
    return names


def build_job(task: str, rounds: int, sites: Dict[str, Dict[str, str]] | Sequence[str], *, name: str | None = None,
              start: str | None = None, min_sites: int | None = None, min_labels: int = 3, train: Dict | None = None,
              percentile_privacy: float | None = None, privacy_gamma: float = 0.01, exclude_vars: str | None = None,
              round_timeout_s: int = 0, fedprox_mu: float | None = None):
    """The NVFlare job. ``sites`` maps a site to its ``model_dir``/``studies`` (simulator: one machine), or
    lists site names only (export: each site's client reads its own environment)."""
    from nvflare.app_common.filters.exclude_vars import ExcludeVars
    from nvflare.app_common.filters.percentile_privacy import PercentilePrivacy
    from nvflare.job_config.api import FedJob
    from nvflare.job_config.defs import FilterType

    from lib.federated.controller import StrokeFedAvg
    from lib.federated.executor import StrokeSiteExecutor

    names = list(sites)
    name = name or f"strokelabel-{task}"
    start = start_checkpoint(task, start)
    excluded = excluded_layers(start, exclude_vars) if exclude_vars else []
    min_sites = min_sites or len(names)
    if min_sites < len(names) and round_timeout_s <= 0:
        raise SystemExit(f"--min-sites {min_sites} of {len(names)} needs --round-timeout: how long the others are waited for "
                         f"once {min_sites} sites have answered")
    job = FedJob(name=name, min_clients=min_sites)
    job.set_app_packages(["lib", "strokelabel"])  # installed with the app at every site: never sent as job code
    job.to_server(StrokeFedAvg(num_clients=len(names), num_rounds=rounds, start_checkpoint=start, save_filename=None,
                               federation=name, min_sites=min_sites, round_timeout_s=round_timeout_s, fedprox_mu=fedprox_mu))
    for site in names:
        paths = sites[site] if isinstance(sites, dict) else {}
        executor = StrokeSiteExecutor(task=task, min_labels=min_labels, train=dict(train or {}),
                                      model_dir=paths.get("model_dir") or "", studies=paths.get("studies") or "",
                                      server_url=paths.get("server_url") or "")
        job.to(executor, site, tasks=["*"])
        if excluded:
            job.to(ExcludeVars(exclude_vars=excluded), site, filter_type=FilterType.TASK_RESULT, tasks=["train"])
        if percentile_privacy is not None:
            job.to(PercentilePrivacy(percentile=percentile_privacy, gamma=privacy_gamma), site, filter_type=FilterType.TASK_RESULT,
                   tasks=["train"])
    return job


#: what the app adds to NVFlare's default component allow-list (a site's ``local/resources.json``): its aggregator
APP_COMPONENTS = ("lib.federated.",)


def allow_app_components(local_dir: str | Path) -> Path:
    """``local/resources.json`` with NVFlare's default component allow-list plus the app's aggregator: NVFlare
    builds only listed components of a job without custom code (the app's classes are installed, not sent)."""
    from nvflare.app_common.default_component_policy import DEFAULT_CLASS_ALLOW_LIST

    path = Path(local_dir) / "resources.json"
    # a startup kit ships only resources.json.default (NVFlare reads it while no resources.json exists): start from it,
    # or the site would lose its default components (resource manager, process launcher) once resources.json exists
    source = path if path.exists() else path.with_name("resources.json.default")
    resources = json.loads(source.read_text()) if source.exists() else {}
    allowed = list(resources.get("class_allow_list", DEFAULT_CLASS_ALLOW_LIST))
    resources["class_allow_list"] = allowed + [c for c in APP_COMPONENTS if c not in allowed]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(resources, indent=2))
    return path


def close_custom_code(local_dir: str | Path) -> Path:
    """``local/authorization.json`` with ``byoc`` (bring your own code) set to ``none`` for every role: the site
    accepts no job that carries code (the app's job carries none; its classes are installed with the app)."""
    path = Path(local_dir) / "authorization.json"
    source = path if path.exists() else path.with_name("authorization.json.default")
    if not source.exists():
        raise SystemExit(f"{local_dir}: no authorization.json(.default): not the local folder of an NVFlare startup kit")
    policy = json.loads(source.read_text())
    for role, rights in policy.get("permissions", {}).items():
        if isinstance(rights, dict):
            rights["byoc"] = "none"
        else:  # a role given one word ("any") for every right: spell them out, custom code closed
            policy["permissions"][role] = {"byoc": "none", "submit_job": rights, "clone_job": rights, "manage_job": rights,
                                           "download_job": rights, "view": rights, "operate": rights, "shell_commands": rights}
    path.write_text(json.dumps(policy, indent=2))
    return path


def prepare_kit(kit: str | Path, site: bool = True) -> None:
    """A participant's startup kit ready for the app's job: the app's components allowed; at a site, custom code closed."""
    allow_app_components(Path(kit) / "local")
    if site:
        close_custom_code(Path(kit) / "local")


def parse_site(text: str) -> tuple[str, Dict[str, str]]:
    """``name=MODEL_DIR:STUDIES[@SERVER_URL]``"""
    try:
        name, rest = text.split("=", 1)
        rest, _, server = rest.partition("@")
        model_dir, studies = rest.split(":", 1)
    except ValueError:
        raise SystemExit(f"--site {text!r}: expected name=MODEL_DIR:STUDIES[@SERVER_URL]")
    return name, {"model_dir": model_dir, "studies": studies, "server_url": server or None}


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("simulate", "export", "site-kit", "server-kit"),
                        help="site-kit / server-kit: prepare the startup kit folder given as --workspace")
    parser.add_argument("--task", choices=("ischemic_lesion", "core_penumbra"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--site", action="append", default=[], help="simulate: name=MODEL_DIR:STUDIES[@SERVER_URL]; export: name")
    parser.add_argument("--name", default=None, help="federation/job name")
    parser.add_argument("--start", default=None, help="starting checkpoint (default: the app's shipped model)")
    parser.add_argument("--min-sites", type=int, default=None, help="updates that close a round (default: all sites)")
    parser.add_argument("--min-labels", type=int, default=3, help="fewest final labels for a site to send an update")
    parser.add_argument("--train", default="", help="the trainer's request options, e.g. max_epochs=2,slices_per_study=8")
    parser.add_argument("--percentile-privacy", type=float, default=None)
    parser.add_argument("--privacy-gamma", type=float, default=0.01)
    parser.add_argument("--exclude-vars", default=None)
    parser.add_argument("--fedprox-mu", type=float, default=None,
                        help="FedProx: each site's loss gains mu/2 ||w - w_global||^2 (NVFlare's PTFedProxLoss); default FedAvg")
    parser.add_argument("--round-timeout", type=int, default=0,
                        help="with --min-sites below all: seconds the other sites are waited for once min-sites have answered")
    parser.add_argument("--workspace", default="/tmp/strokelabel-fl")
    parser.add_argument("--threads", type=int, default=1, help="simulator: sites trained at once")
    args = parser.parse_args(argv)
    from lib.federated.client import training_options

    if args.mode in ("site-kit", "server-kit"):
        prepare_kit(args.workspace, site=args.mode == "site-kit")
        print(f"{args.workspace}: lib.federated allowed" + ("; custom code closed (byoc none)" if args.mode == "site-kit" else ""))
        return 0
    if not args.task:
        parser.error("--task is needed")
    if not args.site:
        raise SystemExit("at least one --site")
    sites = dict(parse_site(s) for s in args.site) if args.mode == "simulate" else [s.split("=")[0] for s in args.site]
    job = build_job(args.task, args.rounds, sites, name=args.name, start=args.start, min_sites=args.min_sites, min_labels=args.min_labels,
                    train=training_options(args.train), percentile_privacy=args.percentile_privacy, privacy_gamma=args.privacy_gamma,
                    exclude_vars=args.exclude_vars, round_timeout_s=args.round_timeout, fedprox_mu=args.fedprox_mu)
    if args.mode == "export":
        job.export_job(args.workspace)
        print(f"job {job.name} in {args.workspace}")
        return 0
    allow_app_components(Path(args.workspace) / "local")  # the simulator copies it to every participant
    os.environ["PYTHONPATH"] = os.pathsep.join([str(APP_DIR), str(APP_DIR.parents[1]), os.environ.get("PYTHONPATH", "")])
    job.simulator_run(args.workspace, clients=list(sites), threads=args.threads)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(APP_DIR))
    sys.exit(main())
