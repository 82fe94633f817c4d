"""The site's NVFlare client script (NVFlare's Client API): what a site runs in each round.

``train`` task: the global model in, the site's local training (``Site.train_round``), the local
weights out as their difference from the global model (the executor's DIFF transfer) (NVFlare's task-result filters, configured in the job, may then drop or perturb it).
A site with fewer final labels than ``--min-labels``, or whose data cannot be read, sends an empty
update with the reason (the aggregator skips it; the site stays in the federation).
``validate`` task, sent once after the last round: the final global model comes home as a
candidate for this site's own no-regression decision.

Where the site's data and app live is the site's own setting, never the job's: ``--model-dir`` /
``--studies`` here, or ``STROKELABEL_FL_MODEL_DIR`` / ``STROKELABEL_FL_STUDIES`` (and
``STROKELABEL_FL_SERVER`` with ``STROKELABEL_FL_TOKEN`` to hand the model to the site's running
server) in the environment of the site's NVFlare client.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # apps/stroke: lib, main

from lib.federated.site import Site, app_on_path, pseudonym  # noqa: E402


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True)
    parser.add_argument("--model-dir", default=os.environ.get("STROKELABEL_FL_MODEL_DIR"))
    parser.add_argument("--studies", default=os.environ.get("STROKELABEL_FL_STUDIES"))
    parser.add_argument("--server-url", default=os.environ.get("STROKELABEL_FL_SERVER"))
    parser.add_argument("--min-labels", type=int, default=int(os.environ.get("STROKELABEL_FL_MIN_LABELS", "3")))
    parser.add_argument("--train", default="", help="the trainer's request options: max_epochs=2,slices_per_study=4")
    return parser.parse_args(argv)


def training_options(text: str) -> dict:
    """``a=1,b=x,c=true`` -> ``{"a": 1, "b": "x", "c": True}`` (numbers as numbers, true/false as booleans: the
    trainers read a flag with ``bool()``, which the text "false" would turn on): NVFlare splits a script's arguments on spaces."""
    options = {}
    for item in filter(None, (text or "").split(",")):
        key, _, value = item.partition("=")
        if value.lower() in ("true", "false"):
            options[key] = value.lower() == "true"
            continue
        for kind in (int, float):
            try:
                options[key] = kind(value)
                break
            except ValueError:
                continue
        else:
            options[key] = value
    return options


def main(argv=None):
    import nvflare.client as flare
    from nvflare.app_common.abstract.fl_model import FLModel, ParamsType
    from nvflare.app_common.app_constant import AlgorithmConstants
    from nvflare.app_common.utils.fedprox_utils import get_fedprox_mu

    args = parse(argv)
    if not args.model_dir or not args.studies:
        raise SystemExit("the site's --model-dir and --studies (or STROKELABEL_FL_MODEL_DIR / STROKELABEL_FL_STUDIES) are needed")
    app_on_path()
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    site = Site(args.model_dir, args.studies, args.task, min_labels=args.min_labels, request=training_options(args.train))
    flare.init()
    name = flare.get_site_name()
    while flare.is_running():
        model = flare.receive()
        if model is None:
            break
        meta = model.meta or {}
        if flare.is_train():
            started = time.time()
            try:
                # a FedProx aggregator sends its mu with every round's model (NVFlare's FedAvg with fedprox_mu)
                mu = get_fedprox_mu(model) if AlgorithmConstants.FEDPROX_MU in meta else None
                local, n_train, metrics = site.train_round(model.params, fedprox_mu=mu)
            except Exception as error:  # SiteNotReady, or any other failure of this site's data: no update, the reason sent, the others go on
                print(f"[{name}] round {model.current_round}: no update: {error}", flush=True)
                flare.send(FLModel(params={}, params_type=ParamsType.DIFF, metrics={}, meta={"no_update": str(error)[:500]}))
                continue
            metrics["train_seconds"] = round(time.time() - started, 1)
            print(f"[{name}] round {model.current_round}: trained on {n_train} studies, selection Dice {metrics['val_dice']:.4f}", flush=True)
            flare.send(FLModel(params=local, params_type=ParamsType.FULL, metrics=metrics, meta={"NUM_STEPS_CURRENT_ROUND": n_train}))
        elif flare.is_evaluate():
            origin = {**meta.get("federation_record", {}), "received_as": pseudonym(meta.get("federation_record", {}).get("federation", ""), name)}
            try:
                decision = site.offer_global(model.params, origin, server_url=args.server_url, token=os.environ.get("STROKELABEL_FL_TOKEN"))
            except Exception as error:  # the site's decision failed: its model in use is unchanged; say why
                print(f"[{name}] the global model was not offered: {error}", flush=True)
                flare.send(FLModel(metrics={"published": 0.0}, meta={"error": str(error)[:500]}))
                continue
            print(f"[{name}] global model: {decision.get('reason')}", flush=True)
            flare.send(FLModel(metrics={"published": float(bool(decision.get("published"))),
                                        "candidate_val_dice": float(decision.get("candidate_val_dice") or 0.0),
                                        "in_use_val_dice": float(decision.get("in_use_val_dice") or 0.0)},
                               meta={"version": decision.get("version"), "reason": decision.get("reason")}))
        else:  # submit_model (cross-site evaluation) is not part of this job
            flare.send(FLModel(params={}, meta={"no_update": f"task {flare.get_task_name()} not handled by this site"}))


if __name__ == "__main__":
    main()
