"""The AMI layout (seed 002) as sites have it: one folder per patient with CTA1, CTA2regA, CTA3regA,
SpiralregA, ATLASMASKregA (regions 0..14) and <id>_clot.nii (0/1/2), beside the BIDS naming."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from lib.datastore import StrokeDatastore
from main import build_task_configs
from strokelabel.errors import StrokeLabelError
from strokelabel.naming import find_modalities, is_reference, parse_filename, study_kind
from strokelabel.phantom import generate_dataset
from strokelabel.study import load_study

AMI_NAMES = {"cta1": "CTA1.nii", "cta2": "CTA2regA.nii", "cta3": "CTA3regA.nii", "spiral": "SpiralregA.nii", "atlas": "ATLASMASKregA.nii"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_ami_study(record, folder: Path, patient: str, drop=()) -> Path:
    """A generated CTA study rewritten as the AMI data has it (uncompressed .nii, atlas 0..14, clot 0/1/2)."""
    folder.mkdir(parents=True)
    for modality, name in AMI_NAMES.items():
        if modality in drop:
            continue
        img = nib.load(str(record["modalities"][modality]))
        data = np.asarray(img.dataobj)
        if modality == "atlas":
            data = np.where(data > 0, data - 1, 0).astype(np.uint8)  # AMI numbers regions 0..14
        nib.save(nib.Nifti1Image(data, img.affine), str(folder / name))
    truth = nib.load(str(record["truth"]["clot"]))
    clot = np.asarray(truth.dataobj).astype(np.uint8)
    where = np.argwhere(clot)
    if len(where):
        clot[tuple(where[0])] = 2  # the AMI clot files hold 1 and 2, both clot
    nib.save(nib.Nifti1Image(clot, truth.affine), str(folder / f"{patient}_clot.nii"))
    return folder / "CTA1.nii"


@pytest.fixture(scope="module")
def ami_root(tmp_path_factory):
    generated = tmp_path_factory.mktemp("generated")
    records = generate_dataset(generated, per_kind=3, labelled_per_kind=0, size="small", seed=41, kinds=("cta",), progress=lambda *a, **k: None)
    root = tmp_path_factory.mktemp("ami")
    for record, patient in zip(records, ("379", "380", "381")):
        write_ami_study(record, root / patient, patient)
    return root


def test_ami_file_names_parse_to_modalities_with_the_folder_as_subject(ami_root):
    found = find_modalities(ami_root / "379" / "CTA1.nii")
    assert sorted(found) == ["atlas", "clot", "cta1", "cta2", "cta3", "spiral"]
    parsed = parse_filename(str(ami_root / "379" / "CTA2regA.nii"))
    assert parsed.layout == "ami" and parsed.subject == "379" and parsed.modality == "cta2" and parsed.study_id == "379"
    assert is_reference(str(ami_root / "379" / "CTA1.nii")) and not is_reference(str(ami_root / "379" / "CTA2regA.nii"))
    assert study_kind("379_CTA1.nii") == "cta"  # the datastore's name for it
    assert parse_filename("sub-1_ses-01_acq-phase1_cta.nii.gz").layout == "bids"


def test_the_study_loader_reads_an_ami_study_with_atlas_numbering_0_to_14(ami_root):
    study = load_study(ami_root / "380" / "CTA1.nii", ("cta1",), ("cta2", "cta3", "spiral", "atlas"))
    assert study.study_id == "380" and study.kind == "cta" and study.region_base == 0
    assert set(study.images) == {"cta1", "cta2", "cta3", "spiral", "atlas"} and study.images["atlas"].max() <= 14


def test_a_missing_ami_file_is_named_as_the_site_names_it(ami_root, tmp_path):
    folder = tmp_path / "382"
    folder.mkdir()
    (folder / "CTA1.nii").write_bytes((ami_root / "379" / "CTA1.nii").read_bytes())
    with pytest.raises(StrokeLabelError, match="ATLASMASKregA.nii"):
        load_study(folder / "CTA1.nii", ("cta1", "atlas"))


def test_the_datastore_lists_each_patient_and_imports_the_clot_file_as_its_label(ami_root):
    datastore = StrokeDatastore(str(ami_root))
    objects = datastore.json()["objects"] if hasattr(datastore, "json") else datastore._datastore.objects
    assert sorted(objects) == ["379_CTA1", "380_CTA1", "381_CTA1"]
    items = datastore.datalist()
    assert len(items) == 3 and all(i["kind"] == "cta" for i in items)
    for item in items:
        label = np.asarray(nib.load(item["label"]).dataobj)
        patient = Path(item["image"]).parent.name
        source = np.asarray(nib.load(str(ami_root / patient / f"{patient}_clot.nii")).dataobj)
        assert set(np.unique(label).tolist()) <= {0, 1} and np.array_equal(label > 0, source > 0)


def test_an_ami_study_infers_with_the_baseline_and_the_model_regions_numbered_0_to_14(ami_root, tmp_path):
    config = build_task_configs(str(tmp_path / "model"), {}, "clot_region")["clot_region"]
    reference = str(ami_root / "381" / "CTA1.nii")
    _, data = config.infer()({"image": reference, "method": "baseline", "skip_writer": True, "device": "cpu"})
    assert [r["region"] for r in data["result"]["regions"]] == list(range(15))
    Path(config.in_use_path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": config.network.state_dict()}, config.in_use_path)
    _, data = config.infer()({"image": reference, "method": "model", "skip_writer": True, "device": "cpu"})
    result = data["result"]
    assert result["method"] == "model" and [r["region"] for r in result["regions"]] == list(range(15))
    pred = np.asarray(data["pred"])
    atlas = np.asarray(nib.load(str(ami_root / "381" / "ATLASMASKregA.nii")).dataobj)
    assert sorted(r["region"] for r in result["regions"] if r["clot"]) == sorted(np.unique(atlas[pred > 0]).tolist())


def test_the_trainers_learn_from_an_ami_site_as_it_is(ami_root, tmp_path):
    config = build_task_configs(str(tmp_path / "model"), {}, "clot_region")["clot_region"]
    datastore = StrokeDatastore(str(ami_root))
    stats = config.trainer()["clot_region_classifier"](
        {"device": "cpu", "dataset": "Dataset", "dataloader": "DataLoader", "multi_gpu": False, "max_epochs": 1, "samples_per_study": 4},
        datastore,
    )
    assert stats["val_studies"] and stats["train_studies"] == 2
    assert stats["published"] == (stats["candidate_val_dice"] > 0)  # a first model is published unless it got nothing right
