"""The core_penumbra loop through the real server and client: infer, correct, save, retrain, infer again,
then ask active learning for the most uncertain study.

Prints the held-out Dice before and after retraining and the retraining time (phantoms; the
figures are noisy on a shared CPU and three corrected studies are a tiny round: the test checks
the loop and the publish decision, not that Dice rises).
"""

from __future__ import annotations

import json
import time

import nibabel as nib
import numpy as np
import pytest

from lib.configs.core_penumbra import SCORING, STRATEGY, UNCERTAINTY_KEY
from lib.trainers.reference_studies import DECISION_PHANTOMS
from strokelabel.naming import parse_filename, truth_path
from strokelabel.phantom import generate_dataset
from tests.e2e.server import REPO, http, running_server, wait_for_training

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("ctp_reference_phantoms")]

TASK = "core_penumbra"
SHIPPED = REPO / "apps" / "stroke" / "model" / "shipped" / f"{TASK}.pt"
EPOCHS = 2


def dice(pred, truth) -> dict:
    out = {}
    for name, p, t in (("core", pred == 1, truth == 1), ("penumbra", pred == 2, truth == 2), ("hypo", pred > 0, truth > 0)):
        denom = int(p.sum() + t.sum())
        out[name] = 2 * int((p & t).sum()) / denom if denom else 1.0
    return out


def truth_of(studies, image_id):
    parsed = parse_filename(image_id + ".nii.gz")
    return np.asarray(nib.load(str(truth_path(studies, parsed.subject, parsed.session, "corepenumbra"))).dataobj)


def held_out_dice(client, studies, image_ids) -> tuple[dict, list]:
    scores, results = [], []
    for image_id in image_ids:
        label_file, result = client.infer(TASK, image_id, {"method": "model"})
        scores.append(dice(np.asarray(nib.load(label_file).dataobj), truth_of(studies, image_id)))
        results.append(result)
    return {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}, results


@pytest.mark.skipif(not SHIPPED.exists(), reason="no shipped core_penumbra model (scripts/train_core_penumbra.py)")
def test_infer_correct_retrain_infer_again_and_pick_the_most_uncertain_study(tmp_path):
    started = time.time()
    studies = tmp_path / "studies"
    # The maps only: the task never reads the raw 4D series (a third of a small CTP study's generation time).
    records = generate_dataset(studies, per_kind=5, labelled_per_kind=0, size="small", seed=11, kinds=("ctp",), progress=None,
                               write_ctp_series=False)
    image_ids = [r["reference"].name.split(".nii")[0] for r in records]
    corrected_ids, held_out_ids = image_ids[:3], image_ids[3:]

    # MONAI Label's automatic scoring (after start-up, training and next_sample) is off (running_server's default):
    # the test scores once, explicitly, where it checks active learning, instead of MC-dropout scoring every study
    # three times over (the start-up run alone was 20 dropout passes); the clot_region loop keeps it on, as a site runs it.
    with running_server(tmp_path / "server", studies, models=TASK) as server:
        client = server.client
        info = client.info()
        assert TASK in info["trainers"] and STRATEGY in info["strategies"] and SCORING in info["scoring"]

        before, results = held_out_dice(client, studies, held_out_ids)
        assert all(r["method"] == "model" and r["model_path"] == "shipped" for r in results)
        for r in results:  # the clinical summary holds for the model path too
            assert r["mismatch_volume_ml"] == pytest.approx(r["hypoperfusion_volume_ml"] - r["core_volume_ml"], abs=1e-6)
            assert r["defuse3_imaging_criteria_met"] == (
                r["defuse3_core_below_70ml"] and r["defuse3_ratio_at_least_1_8"] and r["defuse3_mismatch_at_least_15ml"])

        # The neuroradiologist opens a proposal, corrects it (here: to the phantom truth) and saves it. The proposal is
        # the thresholds' (method "baseline", one a user may pick): the correction replaces it whole, and the model's
        # answer through the server is checked above and below.
        for image_id in corrected_ids:
            label_file, result = client.infer(TASK, image_id, {"method": "baseline"})
            assert result["method"] == "baseline"
            proposal = nib.load(label_file)
            corrected = truth_of(studies, image_id).astype(np.uint8)
            path = tmp_path / f"{image_id}_corrected.nii.gz"
            nib.save(nib.Nifti1Image(corrected, proposal.affine), str(path))
            client.save_label(image_id, str(path), tag="final")
        labelled = [k for k, v in client.datastore()["objects"].items() if "final" in v["labels"]]
        assert sorted(labelled) == sorted(corrected_ids)

        train_started = time.time()
        # two epochs: the least that goes through both fine-tuning stages (decoder, then all), checked below
        client.train_start(TASK, {"max_epochs": EPOCHS, "device": "cpu", "slices_per_study": 4})
        status = wait_for_training(client)
        train_seconds = time.time() - train_started
        assert status["status"] == "DONE", status
        stats = client.info()["train_stats"][TASK]
        # three labels: two train; one of the site's decides beside the decision phantoms, two others chose the checkpoint
        assert stats["train_studies"] == 2 and len(stats["site_held_out_studies"]) == 1
        assert len(stats["val_studies"]) == 1 + DECISION_PHANTOMS, stats["val_studies"]
        assert set(stats["selection_studies"]).isdisjoint(stats["deciding_studies"])
        assert stats["in_use_val_dice"] is not None  # compared against the shipped model on the same deciding studies
        versions = server.app_dir / "model" / TASK / "versions"
        assert (versions / f"{stats['version']}.pt").exists() and (versions / f"{stats['version']}.json").exists()
        published = server.app_dir / "model" / f"{TASK}.pt"
        assert stats["published"] == (stats["candidate_val_dice"] >= stats["in_use_val_dice"])
        assert published.exists() == stats["published"]
        log = server.log.read_text()
        assert "fine-tuning stage 'decoder'" in log and "fine-tuning stage 'all'" in log

        after, results = held_out_dice(client, studies, held_out_ids)
        assert all(r["model_path"] == ("published" if stats["published"] else "shipped") for r in results)

        # Active learning: score the unlabelled studies now (MC dropout), then ask for the most uncertain.
        summary = http(server, "POST", f"/scoring/{SCORING}?run_sync=true")
        objects = client.datastore()["objects"]
        scores = {k: v["image"]["info"].get(UNCERTAINTY_KEY) for k, v in objects.items() if k in held_out_ids}
        assert all(isinstance(s, float) and s > 0 for s in scores.values()), (summary, scores)
        sample = client.next_sample(STRATEGY, {})
        assert sample["id"] == max(scores, key=scores.get)
        assert sample[UNCERTAINTY_KEY] == pytest.approx(scores[sample["id"]])

    print(f"\n[core_penumbra loop] held-out Dice before retraining {json.dumps({k: round(v, 3) for k, v in before.items()})}, "
          f"after {json.dumps({k: round(v, 3) for k, v in after.items()})}; decision: {stats['reason']}; "
          f"retraining {train_seconds:.0f} s wall ({stats['train_seconds']} s in the trainer) on {stats['train_studies']} studies, "
          f"{EPOCHS} epochs; uncertainty {json.dumps({k: round(v, 4) for k, v in scores.items()})}; whole test {time.time() - started:.0f} s")
