"""scripts/train_ischemic_lesion.py: the training tree of phantoms + real cases (links, never copies;
a left-out case is absent; name clashes and unknown cases are refused)."""

import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))

from train_ischemic_lesion import training_tree  # noqa: E402

from strokelabel.naming import find_reference_volumes  # noqa: E402


def isles_case(root: Path, subject: str) -> None:
    ses = root / "rawdata" / f"sub-{subject}" / "ses-0001" / "dwi"
    ses.mkdir(parents=True)
    for modality in ("dwi", "adc"):
        (ses / f"sub-{subject}_ses-0001_{modality}.nii.gz").write_bytes(b"x")
    mask = root / "derivatives" / f"sub-{subject}" / "ses-0001"
    mask.mkdir(parents=True)
    (mask / f"sub-{subject}_ses-0001_msk.nii.gz").write_bytes(b"x")


@pytest.fixture()
def sources(tmp_path):
    phantoms, real = tmp_path / "phantoms", tmp_path / "isles22"
    for s in ("strokecase1001", "strokecase1002"):
        isles_case(phantoms, s)
    for s in ("strokecase0001", "strokecase0002", "strokecase0003"):
        isles_case(real, s)
    return phantoms, real


def test_the_tree_links_phantoms_and_the_real_cases_but_the_left_out_one(sources, tmp_path):
    phantoms, real = sources

    tree, cases = training_tree(tmp_path / "tree", phantoms, ["strokecase1001", "strokecase1002"], real, {"sub-strokecase0002"})

    assert cases == ["isles22/sub-strokecase0001", "isles22/sub-strokecase0003"]
    studies = sorted(find_reference_volumes(str(tree)))
    assert studies == [f"sub-strokecase{n}_ses-0001_dwi.nii.gz" for n in ("0001", "0003", "1001", "1002")]
    mask = tree / "derivatives" / "sub-strokecase0003" / "ses-0001" / "sub-strokecase0003_ses-0001_msk.nii.gz"
    assert mask.is_symlink() and mask.resolve() == (real / mask.relative_to(tree)).resolve()
    assert not (tree / "rawdata" / "sub-strokecase0002").exists()


def test_a_phantom_named_as_a_real_case_or_an_unknown_left_out_case_is_refused(sources, tmp_path):
    phantoms, real = sources
    with pytest.raises(SystemExit, match="share the names"):
        training_tree(tmp_path / "tree", phantoms, ["strokecase0001"], real, set())
    with pytest.raises(SystemExit, match="does not hold"):
        training_tree(tmp_path / "tree", phantoms, ["strokecase1001"], real, {"sub-strokecase0009"})
