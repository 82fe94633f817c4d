"""The one check of a NIfTI file sent to the server: every file of the hostile corpus refused, naming its defect, in bounded memory."""

from __future__ import annotations

import tracemalloc

import nibabel as nib
import numpy as np
import pytest

from strokelabel.errors import StrokeLabelError
from strokelabel.study import check_nifti_file
from tests.e2e.hostile_files import make_corpus

AFFINE = np.diag([1.8, 1.8, 5.0, 1.0])
SHAPE = (64, 64, 20)


def test_every_hostile_file_is_refused_naming_its_defect_without_reading_what_its_header_claims(tmp_path):
    corpus = make_corpus(tmp_path / "corpus", SHAPE, AFFINE)
    assert len(corpus) == 14
    tracemalloc.start()
    try:
        for case, (path, words) in corpus.items():
            with pytest.raises(StrokeLabelError) as error:
                check_nifti_file(path, "the upload", "s", ndims=(3, 4))
            assert words in str(error.value), (case, str(error.value))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The gzip bomb's 2^33 voxels and the 10^9-voxel header are refused from the header alone.
    assert peak < 32 * 2**20, f"{peak / 2**20:.0f} MiB allocated to check the corpus"


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_a_sound_volume_passes_the_check(tmp_path, suffix):
    path = tmp_path / f"sound{suffix}"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random(SHAPE).astype(np.float32), AFFINE), str(path))
    check_nifti_file(path, "the upload", "s")
    series = tmp_path / f"series{suffix}"
    nib.save(nib.Nifti1Image(np.zeros((*SHAPE, 5), np.int16), AFFINE), str(series))
    check_nifti_file(series, "the upload", "s", ndims=(3, 4))
    with pytest.raises(StrokeLabelError, match="4 dimensions"):
        check_nifti_file(series, "the label", "s")
