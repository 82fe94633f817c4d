"""Federated retraining (lib/federated): what leaves a site, what the job holds, how the global model is
rebuilt at a site. The simulator runs end to end in tests/e2e/test_federated.py."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

pytest.importorskip("nvflare")

from lib.federated.client import training_options  # noqa: E402
from lib.federated.executor import CLIENT_SCRIPT, StrokeSiteExecutor  # noqa: E402
from lib.federated.job import allow_app_components, build_job, parse_site  # noqa: E402
from lib.federated.site import Site, SiteNotReady, pseudonym, read_state, trainable_state, write_checkpoint  # noqa: E402


def test_only_float_weights_are_averaged_and_a_site_rebuilds_the_whole_checkpoint(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.BatchNorm2d(4))
    base = net.state_dict()
    params = trainable_state(base)
    assert "1.num_batches_tracked" not in params and all(v.dtype == np.float32 for v in params.values())
    moved = {k: v + 1.0 for k, v in params.items()}
    path = write_checkpoint(tmp_path / "global.pt", base, moved)
    state = read_state(path)
    assert set(state) == set(base)  # the integer buffers come from the site's own model
    assert torch.equal(state["1.num_batches_tracked"], base["1.num_batches_tracked"])
    np.testing.assert_allclose(state["0.weight"].numpy(), base["0.weight"].numpy() + 1.0, atol=1e-6)
    net.load_state_dict(state)  # fits the network
    with pytest.raises(ValueError, match="entries this network does not have"):
        write_checkpoint(tmp_path / "bad.pt", base, {**moved, "head.weight": np.zeros(3, np.float32)})


def test_site_pseudonyms_are_stable_within_a_federation_and_do_not_name_the_hospital():
    a = pseudonym("stroke-net", "st-mary-hospital")
    assert a == pseudonym("stroke-net", "st-mary-hospital") and "mary" not in a and a.startswith("site-")
    assert a != pseudonym("stroke-net", "general-hospital") and a != pseudonym("other-net", "st-mary-hospital")


def test_training_options_pass_as_plain_words_and_anything_else_is_refused():
    assert training_options("max_epochs=2,learning_rate=0.0005,dataset=Dataset") == {"max_epochs": 2, "learning_rate": 0.0005,
                                                                                     "dataset": "Dataset"}
    assert training_options("") == {}
    # a flag: the trainers read it with bool(), so the text "false" must arrive as False, not as a true string
    assert training_options("fixed_norm_statistics=false,freeze_encoder=True") == {"fixed_norm_statistics": False, "freeze_encoder": True}
    StrokeSiteExecutor(task="ischemic_lesion", train={"max_epochs": 2})
    with pytest.raises(ValueError, match="plain key=value"):
        StrokeSiteExecutor(task="ischemic_lesion", train={"lesion_crop_ratio": "1:3,x=1"})


def test_a_site_below_the_label_minimum_sends_no_update(tmp_path):
    from strokelabel.phantom.isles_layout import generate_isles_study

    studies = tmp_path / "studies"
    generate_isles_study(studies, 1, seed=401)
    site = Site(str(tmp_path / "model"), str(studies), "ischemic_lesion", min_labels=3)
    assert site.final_labels() == 1
    with pytest.raises(SiteNotReady, match="1 final ischemic_lesion labels at this site, fewer than the 3"):
        site.train_round({})


def test_the_exported_job_carries_no_code_and_no_site_path_and_the_privacy_filters_are_nvflares(tmp_path):
    job = build_job("ischemic_lesion", 2, ["hospital-a", "hospital-b"], name="stroke-net", min_sites=1, min_labels=4,
                    train={"max_epochs": 2}, percentile_privacy=10, exclude_vars=r"\.bias$", round_timeout_s=600)
    job.export_job(str(tmp_path))
    root = tmp_path / "stroke-net"
    assert not list(root.rglob("custom")), "the job must carry no code: the app's classes are installed at each site"
    assert not list(root.rglob("*.py"))
    server = json.loads(next(root.rglob("config_fed_server.json")).read_text())
    controller = server["workflows"][0]
    assert controller["path"] == "lib.federated.controller.StrokeFedAvg"
    assert controller["args"]["min_sites"] == 1 and controller["args"]["num_rounds"] == 2 and controller["args"]["round_timeout_s"] == 600
    client = json.loads(next(root.rglob("config_fed_client.json")).read_text())
    executor = client["executors"][0]["executor"]
    assert executor["path"] == "lib.federated.executor.StrokeSiteExecutor"
    assert executor["args"] == {"task": "ischemic_lesion", "min_labels": 4, "train": {"max_epochs": 2}}  # no path of a site
    filters = client["task_result_filters"][0]["filters"]
    excluded = filters[0]["args"]["exclude_vars"]
    assert excluded and all(name.endswith(".bias") for name in excluded)  # the pattern, as the network's layer names
    assert [f["path"] for f in filters] == ["nvflare.app_common.filters.exclude_vars.ExcludeVars", "nvflare.app_common.filters.percentile_privacy.PercentilePrivacy"]
    assert str(CLIENT_SCRIPT).endswith("apps/stroke/lib/federated/client.py")


def test_a_site_allows_the_apps_components_beside_nvflares_defaults_and_keeps_its_own_settings(tmp_path):
    from nvflare.app_common.default_component_policy import DEFAULT_CLASS_ALLOW_LIST

    (tmp_path / "resources.json").write_text(json.dumps({"format_version": 2, "class_list_enforcement_mode": "enforce"}))
    allowed = json.loads(allow_app_components(tmp_path).read_text())
    assert allowed["format_version"] == 2 and allowed["class_list_enforcement_mode"] == "enforce"
    assert allowed["class_allow_list"] == [*DEFAULT_CLASS_ALLOW_LIST, "lib.federated."]
    assert "nvflare.app_common.executors.client_api_executor.ClientAPIExecutor" not in allowed["class_allow_list"]
    allow_app_components(tmp_path)  # twice: listed once
    assert json.loads((tmp_path / "resources.json").read_text())["class_allow_list"].count("lib.federated.") == 1


def test_a_startup_kit_keeps_its_default_resources_when_the_apps_components_are_allowed(tmp_path):
    # a provisioned kit ships local/resources.json.default only; the written resources.json replaces it for NVFlare
    (tmp_path / "resources.json.default").write_text(json.dumps({"format_version": 2, "components": [{"id": "resource_manager"}]}))
    allowed = json.loads(allow_app_components(tmp_path).read_text())
    assert allowed["components"] == [{"id": "resource_manager"}] and "lib.federated." in allowed["class_allow_list"]


def test_a_site_is_given_as_name_model_dir_studies_and_optionally_its_server():
    assert parse_site("a=/m:/s") == ("a", {"model_dir": "/m", "studies": "/s", "server_url": None})
    assert parse_site("a=/m:/s@http://127.0.0.1:8000")[1]["server_url"] == "http://127.0.0.1:8000"
    with pytest.raises(SystemExit, match="name=MODEL_DIR:STUDIES"):
        parse_site("a")


def test_a_site_trains_with_the_apps_own_trainer_of_the_task(tmp_path):
    from lib.trainers.core_penumbra import CorePenumbraTrain
    from lib.trainers.ischemic_lesion import IschemicLesionTrain

    lesion = Site(str(tmp_path / "model"), str(tmp_path), "ischemic_lesion").trainer
    assert isinstance(lesion, IschemicLesionTrain) and lesion.route == "mri" and lesion._task_name == "ischemic_lesion_mri"
    perfusion = Site(str(tmp_path / "model"), str(tmp_path), "core_penumbra").trainer
    assert isinstance(perfusion, CorePenumbraTrain) and perfusion._kinds == ("ctp",)
    with pytest.raises(ValueError, match="no federated job for task 'clot_region'"):
        Site(str(tmp_path), str(tmp_path), "clot_region")


def test_fedprox_adds_nvflares_proximal_term_to_the_tasks_loss_and_only_the_local_network_learns_from_it():
    from lib.federated.proximal import ProximalLoss

    torch.manual_seed(0)
    network = torch.nn.Linear(3, 2)
    global_state = {k: v.clone() for k, v in network.state_dict().items()}
    loss = ProximalLoss(torch.nn.MSELoss(), network, global_state, mu=0.5)
    pred, target = torch.zeros(4, 2), torch.ones(4, 2)
    assert float(loss(pred, target).detach()) == pytest.approx(1.0)  # at the global model the term is 0
    with torch.no_grad():
        network.weight += 0.1  # 6 weights moved by 0.1: mu/2 * 6 * 0.01 = 0.015
    total = loss(pred, target)
    assert float(total) == pytest.approx(1.0 + 0.015, rel=1e-5)
    total.backward()
    assert torch.allclose(network.weight.grad, torch.full_like(network.weight, 0.5 * 0.1), atol=1e-6)  # d/dw mu/2 (w-g)^2
    assert all(not p.requires_grad for p in loss.global_network.parameters())
    assert [name for name, _ in loss.named_modules()] == ["", "loss", "proximal"]  # neither network is a submodule


def test_a_fedprox_job_sends_mu_from_nvflares_fedavg_and_the_record_names_it(tmp_path):
    job = build_job("ischemic_lesion", 1, ["hospital-a", "hospital-b"], name="prox-net", fedprox_mu=0.01)
    job.export_job(str(tmp_path))
    controller = json.loads(next((tmp_path / "prox-net").rglob("config_fed_server.json")).read_text())["workflows"][0]
    assert controller["args"]["fedprox_mu"] == 0.01
    from lib.federated.controller import StrokeFedAvg

    assert StrokeFedAvg(num_clients=2, fedprox_mu=0.01).record()["aggregation"].startswith("FedProx (NVFlare, mu 0.01)")
    assert StrokeFedAvg(num_clients=2).record()["aggregation"].startswith("FedAvg (NVFlare)")


def test_a_site_sent_the_round_that_never_answers_is_recorded_as_not_answering(monkeypatch):
    from nvflare.app_common.abstract.fl_model import FLModel

    from lib.federated.controller import StrokeFedAvg

    controller = StrokeFedAvg(num_clients=3, federation="net", min_sites=2, round_timeout_s=15)
    controller.current_round = 0
    controller._round_sites = ["hospital-a", "hospital-b", "hospital-c"]
    controller.site_figures = {pseudonym("net", "hospital-a"): {"round": 0, "val_dice": 0.7},
                               pseudonym("net", "hospital-b"): {"round": 0, "no_update": "2 final labels"}}
    controller.info = lambda *a, **k: None
    from nvflare.app_common.workflows.fedavg import FedAvg

    monkeypatch.setattr(FedAvg, "save_model", lambda self, model: None)  # NVFlare's persistor is not part of the record
    controller.save_model(FLModel(params={}))
    silent = controller.site_figures[pseudonym("net", "hospital-c")]
    assert silent["round"] == 0 and "no answer within the round (closed 15 s after 2 sites" in silent["no_answer"]
    assert controller.site_figures[pseudonym("net", "hospital-a")] == {"round": 0, "val_dice": 0.7}
    assert controller.round_log[-1]["sites"][pseudonym("net", "hospital-c")] == silent


def test_the_global_model_waits_for_a_site_server_that_is_not_up_yet(tmp_path):
    """The federation may end while the site's server restarts: the client tries again (a refused connection)
    until the server answers, and names the server when it never does."""
    import http.server
    import socket
    import threading

    from lib.federated.site import offer_to_server

    candidate = tmp_path / "global.pt"
    candidate.write_bytes(b"weights")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(RuntimeError, match=f"server at {url} did not answer in 0 s"):
        offer_to_server(url, "m", candidate, "v1", {"federation": "f", "round": 0}, wait_s=0.0)

    class Decides(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            body = b'{"published": true, "version": "v1"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    started = []

    def start_late():  # bound only now: until then every try is a refused connection
        started.append(http.server.HTTPServer(("127.0.0.1", port), Decides))
        started[0].serve_forever()

    threading.Timer(3.0, start_late).start()
    try:
        assert offer_to_server(url, "m", candidate, "v1", {"federation": "f", "round": 0}, wait_s=60) == {"published": True, "version": "v1"}
    finally:
        while not started:
            time.sleep(0.1)
        started[0].shutdown()
        started[0].server_close()
