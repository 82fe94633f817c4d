"""The shared trainer's promises, on a toy task small enough to train in seconds:
bad labels are refused before training, one label is enough to train, the checkpoint is chosen on
reference studies other than those that decide publication, a first model is published, a worse
one is kept aside and never replaces the model in use, and MLflow tracking works with its SQLite
default. The reference studies are toy studies here (the app's own are phantoms, see
``lib.trainers.reference_studies``)."""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.inferers import SimpleInferer
from monai.losses import DiceCELoss
from monai.transforms import AsDiscreted, EnsureChannelFirstd, EnsureTyped, LoadImaged, ScaleIntensityd

from lib.datastore import StrokeDatastore
from lib.trainers.stroke_train import StrokeTrainTask
from strokelabel.errors import StrokeLabelError
from strokelabel.naming import study_filename

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
SHAPE = (16, 16, 8)


class ToyLesionTrainer(StrokeTrainTask):
    """Segments a bright cube on DWI: enough to prove the base class's bookkeeping."""

    def loss_function(self, context):
        return DiceCELoss(to_onehot_y=True, softmax=True)

    def train_pre_transforms(self, context):
        return [LoadImaged(keys=("image", "label")), EnsureChannelFirstd(keys=("image", "label")),
                ScaleIntensityd(keys="image"), EnsureTyped(keys=("image", "label"))]

    def train_post_transforms(self, context):
        return [AsDiscreted(keys=("pred", "label"), argmax=(True, False), to_onehot=(2, 2))]

    def val_inferer(self, context):
        return SimpleInferer()


def toy_network():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv3d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(8, 2, 1))


def make_studies(root, n=4, prefix="m", seed=0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        subject = f"{prefix}{i}"
        folder = root / f"sub-{subject}" / "ses-01"
        folder.mkdir(parents=True)
        lesion = np.zeros(SHAPE, np.uint8)
        x, y = rng.integers(2, 9, size=2)
        lesion[x : x + 5, y : y + 5, 2:6] = 1
        dwi = 100 + 10 * rng.standard_normal(SHAPE) + 200 * lesion
        nib.save(nib.Nifti1Image(dwi.astype(np.float32), AFFINE), str(folder / study_filename(subject, "01", "dwi")))
        labels = root / "labels" / "final"
        labels.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(lesion, AFFINE), str(labels / f"sub-{subject}_ses-01_dwi.nii.gz"))
    return StrokeDatastore(str(root))


def toy_references(root):
    """Four toy studies apart from the site's: two choose the checkpoint, two help decide."""
    make_studies(root, n=4, prefix="ref", seed=1)
    items = [{"image": str(root / f"sub-ref{i}" / "ses-01" / study_filename(f"ref{i}", "01", "dwi")),
              "label": str(root / "labels" / "final" / f"sub-ref{i}_ses-01_dwi.nii.gz"), "kind": "mri"} for i in range(4)]
    return lambda kind: (items[:2], items[2:])


def toy_trainer(tmp_path, network=None, config=None):
    model_dir = tmp_path / "model"
    model_dir.mkdir(exist_ok=True)
    return ToyLesionTrainer(
        model_dir=str(model_dir), network=network or toy_network(), publish_path=str(model_dir / "toy_lesion.pt"),
        kinds=("mri",), labels={"lesion": 1}, description="toy",
        config=config or {"max_epochs": 25, "train_batch_size": 2, "learning_rate": 0.02},
        reference_studies=toy_references(tmp_path / "references"),
    )


@pytest.fixture
def trainer(tmp_path):
    return toy_trainer(tmp_path)


def train(trainer, datastore, **request):
    return trainer({"model": "toy_lesion", "device": "cpu", "dataset": "Dataset", "dataloader": "DataLoader", "multi_gpu": False, **request}, datastore)


def test_training_needs_labelled_studies_of_its_kind(trainer, tmp_path):
    datastore = StrokeDatastore(str(tmp_path / "empty"))
    with pytest.raises(StrokeLabelError, match="needs a final label for at least 1 MRI study; the datastore has none"):
        train(trainer, datastore)


def test_one_label_is_enough_to_train_and_publication_is_decided_on_other_studies_than_the_checkpoint_choice(trainer, tmp_path):
    stats = train(trainer, make_studies(tmp_path / "studies", n=1), max_epochs=100)  # one study: one step per epoch
    assert stats["train_studies"] == 1 and stats["site_held_out_studies"] == []
    assert stats["selection_studies"] == ["reference/sub-ref0_ses-01_dwi", "reference/sub-ref1_ses-01_dwi"]
    assert stats["deciding_studies"] == stats["val_studies"] == ["reference/sub-ref2_ses-01_dwi", "reference/sub-ref3_ses-01_dwi"]
    assert stats["published"] and stats["candidate_val_dice"] > 0.5, stats
    assert 0 < stats["selection_best_dice"]["dice"] <= 1 and stats["selection_best_dice"]["epoch"] >= 1
    assert set(stats["candidate_dice_by_study"]) == set(stats["deciding_studies"])
    assert stats["candidate_val_dice"] == pytest.approx(np.mean(list(stats["candidate_dice_by_study"].values())), abs=1e-4)


def test_from_three_labels_one_of_the_site_joins_the_deciding_studies(trainer, tmp_path):
    stats = train(trainer, make_studies(tmp_path / "studies", n=3), max_epochs=3)
    assert stats["train_studies"] == 2 and len(stats["site_held_out_studies"]) == 1
    assert stats["deciding_studies"][0] == stats["site_held_out_studies"][0]
    assert set(stats["deciding_studies"]).isdisjoint(stats["selection_studies"])


def test_rehearsal_phantoms_train_beside_the_site_labels_and_never_choose_or_decide(tmp_path):
    make_studies(tmp_path / "rehearsal", n=2, prefix="reh", seed=2)
    rehearsal = [{"image": str(tmp_path / "rehearsal" / f"sub-reh{i}" / "ses-01" / study_filename(f"reh{i}", "01", "dwi")),
                  "label": str(tmp_path / "rehearsal" / "labels" / "final" / f"sub-reh{i}_ses-01_dwi.nii.gz"), "kind": "mri"} for i in range(2)]
    asked = []
    trainer = toy_trainer(tmp_path)
    trainer._rehearsal_studies = lambda kind, n: asked.append((kind, n)) or rehearsal[:n]
    stats = train(trainer, make_studies(tmp_path / "studies", n=1), max_epochs=2, rehearsal_studies=2)
    assert asked == [("mri", 2)]
    assert [d["image"] for d in trainer._rehearsal] == [d["image"] for d in rehearsal]
    assert stats["train_studies"] == 1  # the site's labels; the rehearsal phantoms are not the site's data
    assert not any("reh" in s for s in [*stats["selection_studies"], *stats["deciding_studies"]])
    assert stats["training_data"]["studies"] == 1


def test_a_label_with_wrong_values_stops_training_and_names_the_study(trainer, tmp_path):
    datastore = make_studies(tmp_path / "studies")
    bad = tmp_path / "studies" / "labels" / "final" / "sub-m2_ses-01_dwi.nii.gz"
    nib.save(nib.Nifti1Image(np.full(SHAPE, 5, np.uint8), AFFINE), str(bad))
    with pytest.raises(StrokeLabelError, match=r"sub-m2_ses-01_dwi: the label holds values \[5\]"):
        train(trainer, datastore)
    assert not os.path.exists(trainer._publish_path_in_use)


def test_first_model_is_published_and_a_worse_one_is_kept_aside(trainer, tmp_path):
    datastore = make_studies(tmp_path / "studies")
    first = train(trainer, datastore)
    assert first["published"] and first["reason"] == "first trained model"
    assert first["candidate_val_dice"] > 0.5, first
    # Recorded as a version (lib/model_versions.py): in use, with its date, training data and checksum.
    from lib import model_versions

    assert model_versions.in_use(trainer._model_dir, trainer._task_name)["version"] == first["version"]
    # the site's labels (trained on or held out), not the reference phantoms that also decide
    assert first["training_data"]["studies"] == first["train_studies"] + len(first["site_held_out_studies"]) and first["created"]
    assert [e["action"] for e in model_versions.history(trainer._model_dir, trainer._task_name)] == ["publish"]
    in_use = trainer._publish_path_in_use
    before = open(in_use, "rb").read()

    # A learning rate this large wrecks the weights: the candidate is worse and must not replace.
    second = train(trainer, datastore, learning_rate=50.0, max_epochs=1, pretrained=True)
    assert not second["published"], second
    assert second["candidate_val_dice"] < second["in_use_val_dice"]
    assert "kept aside" in second["reason"]
    assert open(in_use, "rb").read() == before
    assert os.path.exists(second["version_path"])
    with open(second["version_path"].replace(".pt", ".json")) as f:
        assert json.load(f)["published"] is False
    assert trainer.stats()["published"] is False  # what /info shows as train stats


def test_mlflow_tracking_writes_to_its_sqlite_default(trainer, tmp_path):
    datastore = make_studies(tmp_path / "studies")
    result = train(trainer, datastore, tracking="mlflow", max_epochs=1)
    assert "candidate_val_dice" in result
    assert os.path.getsize(tmp_path / "model" / "mlflow.db") > 0


def test_a_first_model_that_gets_nothing_right_is_not_published(tmp_path):
    network = toy_network()
    with torch.no_grad():
        network[-1].bias[0] = 50.0  # background everywhere: no lesion voxel on any validation study
    blind = toy_trainer(tmp_path, network=network, config={"max_epochs": 1})
    stats = train(blind, make_studies(tmp_path / "studies"), learning_rate=0.0)
    assert stats["candidate_val_dice"] == 0 and stats["in_use_val_dice"] is None
    assert stats["published"] is False and "got nothing right" in stats["reason"]
    assert not os.path.exists(blind._publish_path_in_use) and os.path.exists(stats["version_path"])


def test_a_run_whose_server_is_gone_publishes_nothing(trainer, tmp_path, monkeypatch):
    # In MONAI Label's training child the server's pid is recorded at start; a child re-parented since
    # (its server killed) must not publish into whatever server runs now.
    import lib.trainers.stroke_train as stroke_train
    from strokelabel import lifeline

    monkeypatch.setattr(lifeline, "_server_pid", os.getppid() + 1_000_000)  # a parent that is not ours any more
    monkeypatch.setattr(stroke_train, "server_alive", lifeline.server_alive)
    assert not lifeline.server_alive()
    result = train(trainer, make_studies(tmp_path / "studies"), max_epochs=2)
    assert result["published"] is False and "server that started this training is gone" in result["reason"]
    assert not os.path.exists(trainer._publish_path_in_use)
