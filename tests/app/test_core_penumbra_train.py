"""core_penumbra trainer: bad training input gets a clear error and leaves the model in use untouched."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from lib.configs.core_penumbra import CorePenumbra
from lib.datastore import StrokeDatastore
from strokelabel.errors import StrokeLabelError
from strokelabel.naming import study_filename

AFFINE = np.diag([2.0, 2.0, 4.0, 1.0])
SHAPE = (16, 16, 4)


def write_study(root, subject):
    folder = root / f"sub-{subject}" / "ses-01"
    folder.mkdir(parents=True, exist_ok=True)
    for modality, value in (("cbf", 50.0), ("cbv", 4.0), ("mtt", 4.0), ("tmax", 1.0)):
        nib.save(nib.Nifti1Image(np.full(SHAPE, value, np.float32), AFFINE), str(folder / study_filename(subject, "01", modality)))


def put_label(root, subject, values, affine=AFFINE):
    folder = root / "labels" / "final"
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(values, np.uint8), affine), str(folder / study_filename(subject, "01", "tmax")))


@pytest.fixture
def setup(tmp_path):
    studies, model_dir = tmp_path / "studies", tmp_path / "model"
    for subject in ("p1", "p2", "p3"):
        write_study(studies, subject)
    model_dir.mkdir()
    config = CorePenumbra()
    config.init("core_penumbra", str(model_dir), {}, None)
    in_use = model_dir / "core_penumbra.pt"
    in_use.write_bytes(b"the model in use")
    return studies, config, in_use


def run_training(studies, config):
    return config.trainer()({"max_epochs": 1, "device": "cpu"}, StrokeDatastore(str(studies)))


def test_training_without_labels_is_a_clear_error_and_keeps_the_model(setup):
    studies, config, in_use = setup
    with pytest.raises(StrokeLabelError, match="needs a final label for at least 1 CTP study; the datastore has none"):
        run_training(studies, config)
    assert in_use.read_bytes() == b"the model in use"


def test_a_label_with_wrong_values_stops_training_naming_the_study(setup):
    studies, config, in_use = setup
    put_label(studies, "p1", np.ones(SHAPE))
    put_label(studies, "p2", np.full(SHAPE, 3))  # 3 is not core (1) or penumbra (2)
    with pytest.raises(StrokeLabelError, match=r"sub-p2_ses-01.*values \[3\]"):
        run_training(studies, config)
    assert in_use.read_bytes() == b"the model in use"


def test_a_label_on_another_grid_stops_training_naming_the_study(setup):
    studies, config, in_use = setup
    put_label(studies, "p1", np.ones(SHAPE))
    put_label(studies, "p3", np.ones((16, 16, 5)))
    with pytest.raises(StrokeLabelError, match=r"sub-p3_ses-01.*grids do not match"):
        run_training(studies, config)
    put_label(studies, "p3", np.ones(SHAPE), affine=np.diag([1.0, 1.0, 4.0, 1.0]))
    with pytest.raises(StrokeLabelError, match="different affines"):
        run_training(studies, config)
    assert in_use.read_bytes() == b"the model in use"


def test_the_config_wires_infer_trainer_strategy_and_scoring_with_separate_networks(setup):
    _, config, _ = setup
    infer, trainer = config.infer(), config.trainer()
    assert infer.network is not trainer._network
    assert "core_penumbra_most_uncertain" in config.strategy()
    assert "core_penumbra_mc_dropout" in config.scoring_method()
    assert trainer._config["max_epochs"] >= 1 and trainer._kinds == ("ctp",)
