"""The project's DICOM converter: geometry, values and frame times survive the round trip, and Debian's
dcm2niix reads the same volume at the same place."""

from __future__ import annotations

import shutil
import subprocess

import nibabel as nib
import numpy as np
import pytest

from strokelabel.dicom import SeriesSpec, StudySpec, read_series, write_series

def oblique_las() -> np.ndarray:
    """Stored LAS, tilted 8 degrees about x and 5 about z (orthogonal axes: an oblique scan, not a gantry tilt), 1.7 x 1.7 x 4.8 mm."""
    a, b = np.radians(8.0), np.radians(5.0)
    about_x = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    about_z = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = about_z @ about_x @ np.diag([-1.7, 1.7, 4.8])
    affine[:3, 3] = (80.0, -100.0, -40.0)
    return affine


OBLIQUE_LAS = oblique_las()


def same_in_world(values_a, affine_a, values_b, affine_b, tolerance):
    """Two volumes hold the same values at the same places (voxel orders may differ: slices are read
    back sorted along the slice normal, as ITK and viewers sort them)."""
    a = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(values_a, np.float32), affine_a))
    b = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(values_b, np.float32), affine_b))
    return np.allclose(a.affine, b.affine, atol=1e-3) and np.abs(np.asarray(a.dataobj) - np.asarray(b.dataobj)).max() <= tolerance


def test_an_oblique_map_round_trips_with_its_geometry_and_values(tmp_path):
    values = np.random.default_rng(0).uniform(0, 80, (20, 16, 6)).astype(np.float32)
    files = write_series(values, OBLIQUE_LAS, tmp_path, StudySpec("P1"), SeriesSpec("CBF", units="mL/100g/min"))
    read, affine, times = read_series(files)
    assert times is None and read.shape == values.shape
    assert same_in_world(read, affine, values, OBLIQUE_LAS, 80 / 32000 + 1e-4)  # int16 with a rescale slope
    assert not same_in_world(read[::-1], affine, values, OBLIQUE_LAS, 1.0)  # the check sees a flip


def test_a_4d_series_keeps_its_frames_and_their_non_uniform_times(tmp_path):
    series = np.random.default_rng(1).integers(-20, 400, (8, 8, 3, 5)).astype(np.float32)
    times = [0.0, 1.0, 2.0, 4.0, 7.0]
    files = write_series(series, OBLIQUE_LAS, tmp_path, StudySpec("P1"), SeriesSpec("CT Perfusion 4D"), times_s=times)
    assert len(files) == 15
    read, affine, read_times = read_series(list(reversed(files)))  # instance order does not matter
    assert read.shape == series.shape and np.allclose(read_times, times)
    assert all(same_in_world(read[..., t], affine, series[..., t], OBLIQUE_LAS, 0) for t in range(5))


@pytest.mark.skipif(shutil.which("dcm2niix") is None, reason="dcm2niix is not installed (scripts/setup_system.sh)")
def test_dcm2niix_reads_the_converted_series_at_the_same_world_position(tmp_path):
    values = np.random.default_rng(2).uniform(0, 12, (24, 20, 5)).astype(np.float32)
    write_series(values, OBLIQUE_LAS, tmp_path / "dicom", StudySpec("P1"), SeriesSpec("Tmax", units="s"))
    out = tmp_path / "nifti"
    out.mkdir()
    subprocess.run(["dcm2niix", "-z", "y", "-f", "converted", "-o", str(out), str(tmp_path / "dicom")], check=True, capture_output=True)
    theirs = nib.load(str(out / "converted.nii.gz"))
    assert same_in_world(np.asarray(theirs.dataobj), theirs.affine, values, OBLIQUE_LAS, 12 / 32000 + 1e-4)
