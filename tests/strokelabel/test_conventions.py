"""The study-variant derivations of strokelabel.conventions, on small synthetic images."""

import math

import nibabel as nib
import numpy as np
import pytest

from strokelabel import conventions


def world(affine, index):
    return np.asarray(affine)[:3, :3] @ np.asarray(index, dtype=np.float64) + np.asarray(affine)[:3, 3]


def voxel(affine, point):
    return np.linalg.solve(np.asarray(affine)[:3, :3], np.asarray(point, dtype=np.float64) - np.asarray(affine)[:3, 3])


def centred_affine(shape, spacing, codes="RAS"):
    """An affine with the given axis codes whose field of view is centred on world (0, 0, 0)."""
    signs = {"R": 1, "L": -1, "A": 1, "P": -1, "S": 1, "I": -1}
    world_axis = {"R": 0, "L": 0, "A": 1, "P": 1, "S": 2, "I": 2}
    affine = np.eye(4)
    affine[:3, :3] = 0.0
    for axis, (code, step) in enumerate(zip(codes, spacing)):
        affine[world_axis[code], axis] = signs[code] * step
    affine[:3, 3] = -affine[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    return affine


def random_image(shape=(12, 10, 8), spacing=(2.0, 2.0, 3.0), codes="LAS", dtype=np.float64, seed=0):
    data = np.random.default_rng(seed).normal(size=shape).astype(dtype)
    return nib.Nifti1Image(data, centred_affine(shape, spacing, codes))


def brain_and_background(shape=(24, 24, 16), spacing=(2.0, 2.0, 2.0), fill=0.0):
    """An ellipsoid 'brain' of value 100 + a ramp, ``fill`` outside; returns (image, brain mask)."""
    idx = np.indices(shape).astype(np.float64)
    centre = (np.asarray(shape) - 1) / 2.0
    brain = sum(((idx[i] - centre[i]) / (0.35 * shape[i])) ** 2 for i in range(3)) <= 1.0
    data = np.where(brain, 100.0 + idx[0], fill).astype(np.float32)
    return nib.Nifti1Image(data, centred_affine(shape, spacing, "LAS")), brain


@pytest.mark.parametrize("codes", ["RAS", "LPS", "LAS", "PIR"])
def test_reorient_round_trips_and_keeps_every_voxel_at_its_world_position(codes):
    img = random_image()
    turned = conventions.reorient(img, codes)
    assert nib.aff2axcodes(turned.affine) == tuple(codes)
    back = conventions.reorient(turned, nib.aff2axcodes(img.affine))
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), np.asanyarray(img.dataobj))
    np.testing.assert_allclose(back.affine, img.affine, atol=1e-9)
    index = np.array([3, 7, 5])
    turned_index = np.round(voxel(turned.affine, world(img.affine, index))).astype(int)
    assert np.asanyarray(turned.dataobj)[tuple(turned_index)] == np.asanyarray(img.dataobj)[tuple(index)]
    # the file on disk says the same
    assert np.allclose(nib.Nifti1Image.from_bytes(turned.to_bytes()).affine, turned.affine)


def test_oblique_resample_gives_each_world_point_the_intensity_it_had():
    shape, spacing = (40, 40, 24), (2.0, 2.0, 2.0)
    affine = centred_affine(shape, spacing, "LAS")
    # A linear field of world position inside a block, 0 outside: trilinear interpolation and
    # Gaussian smoothing both keep a linear field exactly away from the block's edges.
    index = np.indices(shape).reshape(3, -1).T
    points = index @ affine[:3, :3].T + affine[:3, 3]
    field = lambda p: 500.0 + 2.0 * p[..., 0] - 1.5 * p[..., 1] + 3.0 * p[..., 2]  # noqa: E731
    values = field(points).reshape(shape)
    block = np.zeros(shape, bool)
    block[4:-4, 4:-4, 3:-3] = True
    img = nib.Nifti1Image(np.where(block, values, 0.0), affine)

    out = conventions.resample_oblique(img, spacing_mm=(1.8, 1.8, 4.8), rotation_deg=(4.0, -3.0, 5.0), order=1)

    assert np.allclose(np.linalg.norm(out.affine[:3, :3], axis=0), (1.8, 1.8, 4.8))
    tilt = np.degrees(np.arccos(np.clip(np.sum(out.affine[:3, :3] / (1.8, 1.8, 4.8) * affine[:3, :3] / 2.0, axis=0), -1, 1)))
    assert np.all((tilt > 2.0) & (tilt < 10.0))  # each axis tilted a few degrees
    out_index = np.indices(out.shape).reshape(3, -1).T
    out_points = out_index @ out.affine[:3, :3].T + out.affine[:3, 3]
    # output voxels whose world point lies well inside the block (3 source voxels from its faces)
    source = np.asarray([voxel(affine, p) for p in out_points])
    deep = np.all((source >= np.array([7, 7, 6])) & (source <= np.array(shape) - 1 - np.array([7, 7, 6])), axis=1)
    assert deep.sum() > 500
    got = np.asanyarray(out.dataobj).reshape(-1)[deep]
    np.testing.assert_allclose(got, field(out_points[deep]), atol=0.05)
    # outside the head the fill stays exactly the fill
    far = np.all((source < 0) | (source > np.array(shape) - 1), axis=1)
    assert np.all(np.asanyarray(out.dataobj).reshape(-1)[far] == 0.0)


def test_oblique_resample_of_a_label_is_nearest_neighbour_on_the_same_grid_as_the_image():
    img, brain = brain_and_background()
    label = nib.Nifti1Image(brain.astype(np.uint16), img.affine)
    out_img = conventions.resample_oblique(img, order=1)
    out_label = conventions.resample_oblique(label, order=0)
    assert out_label.shape == out_img.shape and np.allclose(out_label.affine, out_img.affine)
    assert out_label.get_data_dtype() == np.uint16
    assert set(np.unique(np.asanyarray(out_label.dataobj))) <= {0, 1}
    # the label's volume in mL is kept to within the resampling of its surface
    volume = lambda im: np.count_nonzero(np.asanyarray(im.dataobj)) * abs(np.linalg.det(im.affine[:3, :3]))  # noqa: E731
    assert volume(out_label) == pytest.approx(volume(label), rel=0.1)
    # and it covers the image's foreground
    inside = np.asanyarray(out_label.dataobj) > 0
    assert np.all(np.asanyarray(out_img.dataobj)[inside] > 50)


@pytest.mark.parametrize("codes", ["RAS", "LAS", "LPS", "ALS"])
def test_mirror_twice_is_identity_and_puts_the_right_hemisphere_content_on_the_left(codes):
    shape, spacing = (21, 23, 10), (2.0, 2.0, 3.0)
    affine = centred_affine(shape, spacing, codes)
    data = np.zeros(shape, np.float32)
    right = np.round(voxel(affine, (20.0, 4.0, 3.0))).astype(int)  # world x = +20 mm: the right hemisphere
    data[tuple(right)] = 7.0
    img = nib.Nifti1Image(data, affine)

    mirrored = conventions.mirror_left_right(img)

    np.testing.assert_array_equal(mirrored.affine, img.affine)
    left = np.round(voxel(affine, (-20.0, 4.0, 3.0))).astype(int)
    assert np.asanyarray(mirrored.dataobj)[tuple(left)] == 7.0
    assert np.asanyarray(mirrored.dataobj)[tuple(right)] == 0.0
    twice = conventions.mirror_left_right(mirrored)
    np.testing.assert_array_equal(np.asanyarray(twice.dataobj), data)


@pytest.mark.golden
def test_synthetic_skull_changes_only_voxels_outside_the_brain():
    dwi, brain = brain_and_background()
    adc = nib.Nifti1Image(np.where(brain, 0.8, 0.0).astype(np.float32), dwi.affine)

    skull_dwi, skull_adc = conventions.add_synthetic_skull(dwi, adc, seed=3)

    for before, after in ((dwi, skull_dwi), (adc, skull_adc)):
        b, a = np.asanyarray(before.dataobj), np.asanyarray(after.dataobj)
        np.testing.assert_array_equal(a[brain], b[brain])
        assert np.count_nonzero(a[~brain] != b[~brain]) > 0.5 * np.count_nonzero(~brain)
        assert after.get_data_dtype() == before.get_data_dtype()
    # the bone shell is dark on DWI, the scalp keeps signal: a threshold mask sees two separate objects
    distance = __import__("scipy.ndimage", fromlist=["x"]).distance_transform_edt(~brain, sampling=(2.0, 2.0, 2.0))
    bone = (distance > 2) & (distance <= 7)
    scalp = (distance > 7) & (distance <= 11)
    median = np.median(np.asanyarray(dwi.dataobj)[brain])
    assert np.asanyarray(skull_dwi.dataobj)[bone].max() < 0.1 * median
    assert np.asanyarray(skull_dwi.dataobj)[scalp].mean() > 0.5 * median
    # deterministic from the seed
    again, _ = conventions.add_synthetic_skull(dwi, adc, seed=3)
    np.testing.assert_array_equal(np.asanyarray(again.dataobj), np.asanyarray(skull_dwi.dataobj))


@pytest.mark.parametrize("value", [0.0, -30.0, float("nan")])
def test_background_fill_changes_only_voxels_outside_the_mask(value):
    img, brain = brain_and_background(fill=1e-6)
    assert conventions.fill_value(img) == pytest.approx(1e-6)
    np.testing.assert_array_equal(conventions.foreground_mask(img), brain)

    out = conventions.with_background_fill(img, value, brain)

    data = np.asanyarray(out.dataobj)
    np.testing.assert_array_equal(data[brain], np.asanyarray(img.dataobj)[brain])
    outside = data[~brain]
    assert np.all(np.isnan(outside)) if math.isnan(value) else np.all(outside == value)
    assert (math.isnan(conventions.fill_value(out)) if math.isnan(value) else conventions.fill_value(out) == value)


def test_scale_and_dtype_keep_geometry_and_change_only_values():
    img = random_image(dtype=np.float64)
    scaled = conventions.scale_values(img, 1000.0)
    np.testing.assert_allclose(np.asanyarray(scaled.dataobj), 1000.0 * np.asanyarray(img.dataobj))
    single = conventions.as_dtype(img, np.float32)
    assert single.get_data_dtype() == np.float32 and np.allclose(single.affine, img.affine)
    reloaded = nib.Nifti1Image.from_bytes(single.to_bytes())
    np.testing.assert_allclose(np.asanyarray(reloaded.dataobj), np.asanyarray(img.dataobj).astype(np.float32))


def test_a_variant_carries_label_maps_by_nearest_neighbour_and_leaves_them_unscaled():
    dwi, brain = brain_and_background()
    adc = nib.Nifti1Image(np.where(brain, 0.8, 0.0).astype(np.float32), dwi.affine)
    label = nib.Nifti1Image(brain.astype(np.uint8), dwi.affine)
    variants = {v.name: v for v in conventions.standard_variants("mri", stored_dtype=np.float32)}
    assert {"stored RAS", "stored LAS", "stored LPS", "oblique 1.8x1.8x4.8", "mirrored L-R", "float64", "ADC x1000",
            "synthetic skull", "int16", "4D DWI + bval", "singleton 4D"} == set(variants)
    assert {"fill 0", "fill nan", "fill -30"} <= {v.name for v in conventions.standard_variants("ctp")}

    scaled = variants["ADC x1000"].apply({"adc": adc, "dwi": dwi, "msk": label}, labels={"msk"})
    np.testing.assert_allclose(np.asanyarray(scaled["adc"].dataobj), 1000 * np.asanyarray(adc.dataobj))
    np.testing.assert_array_equal(np.asanyarray(scaled["dwi"].dataobj), np.asanyarray(dwi.dataobj))
    np.testing.assert_array_equal(np.asanyarray(scaled["msk"].dataobj), brain.astype(np.uint8))

    lps = variants["stored LPS"].apply({"dwi": dwi, "msk": label}, labels={"msk"})
    assert nib.aff2axcodes(lps["msk"].affine) == ("L", "P", "S")
    np.testing.assert_array_equal(np.asanyarray(lps["msk"].dataobj) > 0, np.asanyarray(lps["dwi"].dataobj) > 50)


def test_write_variant_study_keeps_the_tree_and_the_file_names(tmp_path):
    dwi, brain = brain_and_background()
    adc = nib.Nifti1Image(np.where(brain, 0.8, 0.0).astype(np.float32), dwi.affine)
    root = tmp_path / "isles22"
    files = {
        "dwi": root / "rawdata/sub-a/ses-0001/dwi/sub-a_ses-0001_dwi.nii.gz",
        "adc": root / "rawdata/sub-a/ses-0001/dwi/sub-a_ses-0001_adc.nii.gz",
        "msk": root / "derivatives/sub-a/ses-0001/sub-a_ses-0001_msk.nii.gz",
    }
    for key, img in (("dwi", dwi), ("adc", adc), ("msk", nib.Nifti1Image(brain.astype(np.uint16), dwi.affine))):
        files[key].parent.mkdir(parents=True, exist_ok=True)
        nib.save(img, str(files[key]))
    mirror = next(v for v in conventions.standard_variants("mri") if v.name == "mirrored L-R")

    written = conventions.write_variant_study(files, root, tmp_path / "out", mirror, labels={"msk"})

    for key, path in files.items():
        assert written[key] == tmp_path / "out" / path.relative_to(root)
        assert written[key].exists()
    mask = nib.load(str(written["msk"]))
    assert mask.get_data_dtype() == np.uint16
    np.testing.assert_array_equal(np.asanyarray(mask.dataobj), np.flip(brain, axis=0).astype(np.uint16))
