"""Mid-sagittal plane: found on an off-centre, rotated head with a one-sided lesion; mirroring about it."""

import numpy as np
import pytest

from strokelabel.midsagittal import MidSagittalPlane, find_midsagittal_plane, mirror_about_plane


def synthetic_head(shape, spacing, shift_mm, yaw_deg, lesion_side=1, lesion_value=3.0, seed=0):
    """A head symmetric about its own midline, shifted and yawed in the grid; a lesion on one side.

    Returns the image, the lesion mask and the true plane offset in voxels (at the middle
    of the anterior-posterior axis, the convention of MidSagittalPlane).
    """
    rng = np.random.default_rng(seed)
    idx = np.indices(shape).astype(float)
    x, y, z = (idx[i] * spacing[i] for i in range(3))
    mid = [(n - 1) / 2 * s for n, s in zip(shape, spacing)]
    cx, cy = mid[0] + shift_mm[0], mid[1] + shift_mm[1]
    a = np.radians(yaw_deg)
    u = np.cos(a) * (x - cx) + np.sin(a) * (y - cy)  # left-right in the head frame
    w = -np.sin(a) * (x - cx) + np.cos(a) * (y - cy)  # anterior-posterior in the head frame
    v = z - mid[2]
    r = np.sqrt((u / 70) ** 2 + (w / 88) ** 2 + (v / 65) ** 2)
    image = np.where(r < 1.0, 0.4, 0.0)  # scalp and skull
    brain = r < 0.92
    image = np.where(brain, 1.0 + 0.15 * np.cos(np.abs(u) * 0.25) * np.cos(w * 0.18), image)
    ventricles = ((np.abs(u) - 9) / 6) ** 2 + ((w + 5) / 25) ** 2 + (v / 15) ** 2 < 1
    image = np.where(ventricles, 0.3, image)
    lesion = brain & ((u - lesion_side * 30) ** 2 + (w - 15) ** 2 + (v - 5) ** 2 < 24**2)
    image = np.where(lesion, lesion_value, image) + rng.normal(0, 0.05, shape)
    x_at_mid = cx - np.tan(a) * (mid[1] - cy)
    return image, lesion, (x_at_mid - mid[0]) / spacing[0]


SHAPE, SPACING = (96, 112, 24), (2.0, 2.0, 5.0)


@pytest.mark.parametrize(
    "shift_mm, yaw_deg, lesion_side, lesion_value",
    [
        ((13.0, -6.0), 7.0, 1, 3.0),  # DWI-like bright lesion on the right of the head
        ((-11.0, 4.0), -9.0, -1, 0.5),  # ADC/NCCT-like dark lesion on the left
        ((6.0, 10.0), 11.0, -1, 5.0),  # a very bright one
    ],
)
def test_recovers_offset_and_angle_of_an_off_centre_rotated_head_with_a_one_sided_lesion(
    shift_mm, yaw_deg, lesion_side, lesion_value
):
    image, _, offset_vox = synthetic_head(SHAPE, SPACING, shift_mm, yaw_deg, lesion_side, lesion_value)
    plane = find_midsagittal_plane(image, spacing_mm=SPACING)
    assert abs(plane.offset_vox - offset_vox) < 1.0
    assert abs(plane.angle_deg - yaw_deg) < 2.0
    assert plane.offset_mm == pytest.approx(plane.offset_vox * SPACING[0])


def test_mirroring_about_the_found_plane_superimposes_the_hemispheres_outside_the_lesion():
    image, lesion, _ = synthetic_head(SHAPE, SPACING, (9.0, 0.0), 6.0)
    plane = find_midsagittal_plane(image, spacing_mm=SPACING)
    mirrored = mirror_about_plane(image, plane)
    lesion_either_side = lesion | (mirror_about_plane(lesion.astype(float), plane) > 0.5)
    head = (image > 0.2) & ~lesion_either_side
    centre_plane = MidSagittalPlane(0.0, 0.0, SPACING, SHAPE)  # the array middle, for comparison
    naive = mirror_about_plane(image, centre_plane)
    assert np.abs(mirrored - image)[head].mean() < 0.5 * np.abs(naive - image)[head].mean()
    assert np.abs(mirrored - image)[lesion].mean() > 1.0  # the lesion stands out against its mirror


def test_a_2d_slice_and_anisotropic_voxels_are_handled():
    spacing = (1.5, 2.5, 5.0)
    image, _, offset_vox = synthetic_head((112, 80, 12), spacing, (-8.0, 3.0), -6.0)
    plane = find_midsagittal_plane(image[:, :, 6], spacing_mm=spacing[:2])
    assert plane.shape == (112, 80)
    assert abs(plane.offset_vox - offset_vox) < 1.0
    assert abs(plane.angle_deg + 6.0) < 2.0


def test_reflection_is_its_own_inverse():
    plane = MidSagittalPlane(offset_vox=3.2, angle_deg=8.0, spacing_mm=(0.9, 1.3, 4.0), shape=(60, 70, 20))
    for ndim in (2, 3):
        m, b = plane.reflection_affine(ndim)
        np.testing.assert_allclose(m @ m, np.eye(ndim), atol=1e-12)
        np.testing.assert_allclose(m @ b + b, 0.0, atol=1e-12)
    # points of the plane stay, and its distance flips sign
    m, b = plane.reflection_affine()
    p = np.array([10.0, 20.0, 5.0])
    assert plane.signed_distance_mm(m @ p + b) == pytest.approx(-plane.signed_distance_mm(p))


def test_mirror_about_plane_twice_returns_the_volume_and_keeps_channels():
    rng = np.random.default_rng(0)
    from scipy import ndimage

    volume = ndimage.gaussian_filter(rng.normal(size=(40, 36, 6)), (3, 3, 0))
    plane = MidSagittalPlane(offset_vox=-1.5, angle_deg=0.0, spacing_mm=(1.0, 1.0, 3.0), shape=volume.shape)
    twice = mirror_about_plane(mirror_about_plane(volume, plane), plane)
    np.testing.assert_allclose(twice[:30], volume[:30], atol=1e-9)
    stacked = mirror_about_plane(np.stack([volume, 2 * volume]), plane)
    assert stacked.shape == (2,) + volume.shape
    np.testing.assert_allclose(stacked[1], 2 * stacked[0])
    labels = (volume > 0).astype(np.uint8)
    assert mirror_about_plane(labels, plane, order=0).dtype == np.uint8


def test_an_empty_image_is_refused():
    with pytest.raises(ValueError):
        find_midsagittal_plane(np.zeros((20, 20, 4)))


def test_symmetry_scores_equal_the_map_coordinates_form():
    """The batched grid_sample scores are the scores of the per-candidate scipy form (order 1, constant mode)."""
    from scipy import ndimage

    from strokelabel.midsagittal import _level, _symmetry_scores

    rng = np.random.default_rng(3)
    stack = ndimage.gaussian_filter(rng.normal(size=(41, 35, 3)), (2, 2, 0))
    mask = np.zeros(stack.shape, bool)
    mask[:, 3:32] = True  # head voxels up to the left-right edges: reflections fall off the grid
    spacing, centre = (1.2, 0.9), np.array([20 * 1.2, 17 * 0.9])
    offsets, angles = rng.uniform(-12, 12, 60), np.radians(rng.uniform(-15, 15, 60))
    offsets[0], angles[0] = 0.0, 0.0  # an exact mirror: reflected indices land on grid points and edges
    level = _level(stack, mask, spacing, 1.0, background=-0.7, max_points=500)
    expected = np.zeros(len(offsets))
    for m, (offset, angle) in enumerate(zip(offsets, angles)):
        normal = np.array([np.cos(angle), np.sin(angle)])
        penalty = 0.0
        for k, (pts, vals) in enumerate(zip(level.points, level.values)):
            p = pts * np.asarray(spacing)
            d = (p - (centre + [offset, 0.0])) @ normal
            q = (p - 2.0 * d[:, None] * normal) / np.asarray(spacing)
            mirrored = ndimage.map_coordinates(level.image[:, :, k], q.T, order=1, mode="constant", cval=level.background)
            r2 = (vals - mirrored) ** 2
            penalty += (r2 / (r2 + 1.0)).sum()
        expected[m] = 1.0 - penalty / sum(len(p) for p in level.points)
    np.testing.assert_allclose(_symmetry_scores(level, centre, offsets, angles), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape,spacing", [((48, 40, 6), (0.9, 0.9, 5.0)), ((33, 29), (1.0, 1.3))])
def test_linear_mirroring_equals_scipy_affine_transform(shape, spacing):
    """The grid_sample path of mirror_about_plane (order 1, edge values beyond the grid) is scipy's affine_transform."""
    from scipy import ndimage

    volume = ndimage.gaussian_filter(np.random.default_rng(1).normal(size=shape), 2).astype(np.float32)
    for offset_vox, angle_deg in ((0.0, 0.0), (-5.3, 7.2), (9.0, -15.0)):
        plane = MidSagittalPlane(offset_vox, angle_deg, spacing, shape)
        matrix, offset = plane.reflection_affine(len(shape))
        expected = ndimage.affine_transform(volume, matrix, offset=offset, order=1, mode="nearest")
        mirrored = mirror_about_plane(volume, plane)
        assert mirrored.dtype == np.float32
        np.testing.assert_allclose(mirrored, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("shift_mm, yaw_deg", [((13.0, -6.0), 7.0), ((-4.0, 3.0), -2.5)])
def test_a_head_stored_mirrored_gets_exactly_the_mirrored_plane(shift_mm, yaw_deg):
    """A left-right flip maps the plane (offset, angle) to (-offset, -angle); the search alone is not
    symmetric (strided points, pyramid), the mirror-consistent combination is, to float rounding."""
    image, _, _ = synthetic_head(SHAPE, SPACING, shift_mm, yaw_deg)
    plane = find_midsagittal_plane(image, spacing_mm=SPACING)
    mirrored = find_midsagittal_plane(np.flip(image, axis=0).copy(), spacing_mm=SPACING)
    assert mirrored.offset_vox == pytest.approx(-plane.offset_vox, abs=1e-9)
    assert mirrored.angle_deg == pytest.approx(-plane.angle_deg, abs=1e-9)
    # and mirroring about it commutes with the flip (bilinear sampling: float32 rounding)
    np.testing.assert_allclose(np.flip(mirror_about_plane(image, plane), axis=0), mirror_about_plane(np.flip(image, axis=0).copy(), mirrored),
                               rtol=0, atol=1e-4)
