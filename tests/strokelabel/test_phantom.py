"""The digital phantom: files and headers, units and ranges, ground-truth definitions, determinism,
agreement between study kinds of the same patient, and the data set / CLI entry points."""

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from strokelabel.naming import find_modalities, find_sidecar, parse_filename, study_filename, truth_path
from strokelabel.phantom import REGIONS, generate_dataset, generate_study, grid_for, make_patient, study_seed, truth_volumes
from strokelabel.phantom.__main__ import main
from strokelabel.phantom.anatomy import tissue_fractions
from strokelabel.phantom.render import true_perfusion

LVO_SEED = 4  # an M1 occlusion of the right hemisphere
EMBOLIC_SEED = 9  # a small cortical embolus
KIND_FILES = {
    "ctp": {"ctp", "cbf", "cbv", "mtt", "tmax", "ttp", "mip", "ncct"},
    "mri": {"dwi", "adc", "flair"},
    "cta": {"cta1", "cta2", "cta3", "spiral", "atlas"},
}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("phantom")


@pytest.fixture(scope="module")
def studies(root):
    """One study of each kind of the same patient (an M1 occlusion), all labelled."""
    return {kind: generate_study(root, kind, f"{kind}lvo", LVO_SEED, write_label=True) for kind in ("ctp", "mri", "cta")}


def load(path):
    return np.asarray(nib.load(str(path)).dataobj)


def test_every_file_follows_the_naming_rule(root, studies):
    for kind, study in studies.items():
        subject = f"{kind}lvo"
        assert set(study["modalities"]) == KIND_FILES[kind]
        assert study["reference"].name == study_filename(subject, "01", {"ctp": "tmax", "mri": "dwi", "cta": "cta1"}[kind])
        for key, path in study["modalities"].items():
            assert path.name == study_filename(subject, "01", key)
            assert path.parent == root / f"sub-{subject}" / "ses-01"
            parsed = parse_filename(path.name)
            assert parsed.subject == subject and parsed.modality == key
        assert find_modalities(study["reference"]) == study["modalities"]
        sidecar = json.loads(find_sidecar(study["reference"]).read_text())
        assert set(sidecar) == {"nihss", "onset_to_imaging_min"} and isinstance(sidecar["nihss"], int)
        for target, path in study["truth"].items():
            assert path == truth_path(root, subject, "01", target)
            assert path.exists()
        label = root / "labels" / "final" / study["reference"].name
        target = {"ctp": "corepenumbra", "mri": "lesion", "cta": "clot"}[kind]
        np.testing.assert_array_equal(load(label), load(study["truth"][target]))


def test_headers_are_ras_in_mm_with_the_right_types(studies):
    for kind, study in studies.items():
        grid = grid_for(kind, "small")
        for key, path in {**study["modalities"], **{k: p for k, p in study["truth"].items() if k != "truth"}}.items():
            img = nib.load(str(path))
            assert nib.aff2axcodes(img.affine) == ("R", "A", "S"), key
            np.testing.assert_allclose(img.header.get_zooms()[:3], grid.spacing_mm, rtol=1e-6)
            np.testing.assert_allclose(img.affine, grid.affine, atol=1e-4)
            assert img.header.get_xyzt_units() == ("mm", "sec")
            assert img.shape[:3] == grid.shape
            expected = {"ctp": np.int16, "mip": np.int16, "ncct": np.int16, "cta1": np.int16, "cta2": np.int16, "cta3": np.int16, "atlas": np.uint8}
            dtype = expected.get(key, np.uint8 if key in ("corepenumbra", "lesion", "clot") else np.float32)
            assert img.get_data_dtype() == dtype, key
    ctp = nib.load(str(studies["ctp"]["modalities"]["ctp"]))
    truth = json.loads(studies["ctp"]["truth"]["truth"].read_text())
    assert ctp.ndim == 4 and 30 <= ctp.shape[3] <= 40
    assert ctp.header.get_zooms()[3] == pytest.approx(truth["acquisition"]["dt_s"])


def test_perfusion_maps_have_realistic_units_and_show_the_lesion(studies):
    m = {k: load(p) for k, p in studies["ctp"]["modalities"].items() if k != "ctp"}
    labels = load(studies["ctp"]["truth"]["corepenumbra"])
    brain = m["cbf"] > 0
    healthy = brain & (labels == 0)
    assert 15 < np.median(m["cbf"][healthy]) < 80  # mL/100g/min (SVD underestimates grey matter)
    assert 1.0 < np.median(m["cbv"][healthy]) < 6.0  # mL/100g
    assert 2.0 < np.median(m["mtt"][healthy]) < 10.0  # s
    assert 0.0 <= np.median(m["tmax"][healthy]) < 4.0  # s
    assert np.median(m["tmax"][labels > 0]) > 6.0
    assert np.median(m["cbf"][labels == 1]) < 0.6 * np.median(m["cbf"][healthy])
    assert m["ncct"].min() >= -1024 and m["ncct"].max() > 700  # air and bone in HU
    assert 20 < np.median(m["ncct"][healthy]) < 45
    assert np.all(m["mip"] >= m["ncct"] - 30)
    # The maps are derived from the series, so they find the hypoperfusion the truth defines.
    derived = m["tmax"] > 6
    dice = 2 * (derived & (labels > 0)).sum() / (derived.sum() + (labels > 0).sum())
    assert dice > 0.7


def test_mri_units_and_the_lesion_restricts_diffusion(studies):
    adc = load(studies["mri"]["modalities"]["adc"])
    dwi = load(studies["mri"]["modalities"]["dwi"])
    lesion = load(studies["mri"]["truth"]["lesion"]) > 0
    patient = make_patient(LVO_SEED)
    grid = grid_for("mri", "small")
    v = truth_volumes(patient, grid, keys=("gm", "wm", "csf"))
    white = (v["wm"] > 0.95) & ~lesion
    grey = (v["gm"] > 0.95) & ~lesion
    assert 0.65 < np.median(adc[white]) < 0.85  # 10^-3 mm²/s
    assert 0.7 < np.median(adc[grey]) < 0.95
    assert np.median(adc[v["csf"] > 0.95]) > 2.5
    assert lesion.sum() > 50 and np.median(adc[lesion]) < 0.62
    assert np.median(dwi[lesion]) > 1.3 * np.median(dwi[white | grey])


def test_cta_phases_show_vessels_a_filling_defect_and_late_collateral_filling(studies):
    phases = [load(studies["cta"]["modalities"][f"cta{i}"]).astype(float) for i in (1, 2, 3)]
    clot = load(studies["cta"]["truth"]["clot"]) > 0
    patient = make_patient(LVO_SEED)
    v = truth_volumes(patient, grid_for("cta", "small"), keys=("lumen_artery", "lumen_delay_s", "icv"))
    normal = (v["lumen_artery"] > 0.7) & (v["lumen_delay_s"] == 0)
    beyond = (v["lumen_artery"] > 0.7) & (v["lumen_delay_s"] > 0)
    assert phases[0].min() >= -1024 and np.median(phases[0][v["icv"] > 0.99]) < 80
    assert np.median(phases[0][normal]) > 250  # opacified arteries, HU
    assert np.all(phases[0][clot] < np.median(phases[0][normal]) - 100)  # the clot does not fill
    assert beyond.any()
    assert np.median(phases[1][beyond]) > np.median(phases[0][beyond]) + 40  # late collateral filling
    spiral = load(studies["cta"]["modalities"]["spiral"])
    assert spiral.min() >= 0 and spiral.max() <= 1
    assert spiral[clot].max() > 0.8
    atlas = load(studies["cta"]["modalities"]["atlas"])
    assert set(np.unique(atlas)) == set(range(16))


def clot_regions_check(study):
    atlas = load(study["modalities"]["atlas"])
    clot = load(study["truth"]["clot"]) > 0
    record = json.loads(study["truth"]["truth"].read_text())
    flags = record["figures"]["clot_region_flags"]
    assert clot.any() and len(flags) == 15
    assert np.all(atlas[clot] > 0)  # clot lies inside the atlas
    assert {r for r in np.unique(atlas[clot])} == {i + 1 for i, f in enumerate(flags) if f}
    assert record["figures"]["clot_regions"] == [REGIONS[i] for i, f in enumerate(flags) if f]
    assert clot.sum() * np.prod(grid_for("cta", "small").spacing_mm) < 300  # a few mm, mm³


def test_clot_lies_in_the_atlas_regions_listed_in_the_truth(studies):
    clot_regions_check(studies["cta"])


def test_a_small_embolus_is_tiny_and_lies_in_its_listed_regions(root):
    study = generate_study(root, "cta", "ctaemb", EMBOLIC_SEED)
    clot_regions_check(study)
    figures = study["figures"]
    assert figures["severity_class"] == "small-embolic"
    assert figures["clot_voxels"] <= 6 and figures["clot_length_mm"] < 5
    assert figures["core_volume_ml"] < 30


def test_core_and_penumbra_follow_the_accepted_definitions():
    patient = make_patient(LVO_SEED)
    grid = grid_for("ctp", "small")
    v = truth_volumes(patient, grid, keys=("corepenumbra", "rcbf", "tmax", "parenchyma", "cbf", "cbv", "mtt", "gm", "wm", "membership"))
    core, penumbra = v["corepenumbra"] == 1, v["corepenumbra"] == 2
    tissue = v["parenchyma"] >= 0.5
    assert core.sum() > 100 and penumbra.sum() > 100
    np.testing.assert_array_equal(core, tissue & (v["rcbf"] < 0.3))
    np.testing.assert_array_equal(penumbra, tissue & (v["tmax"] > 6) & ~core)
    assert np.all(v["tmax"][penumbra] > 6)
    # Central volume theorem holds for the true values.
    perfused = v["cbf"] > 1
    np.testing.assert_allclose(v["cbv"][perfused], v["cbf"][perfused] * v["mtt"][perfused] / 60, rtol=1e-4)
    # Healthy true values: grey ~60, white ~25 mL/100g/min; Tmax 0-2 s.
    tv = v
    healthy = tv["membership"] < 0.01  # outside the field of the occluded vessel
    assert 45 < np.median(tv["cbf"][healthy & (tv["gm"] > 0.99)]) < 75
    assert 17 < np.median(tv["cbf"][healthy & (tv["wm"] > 0.99)]) < 32
    assert 3 < np.median(tv["cbv"][healthy & (tv["gm"] > 0.99)]) < 5.5
    assert np.percentile(tv["tmax"][healthy & (tv["gm"] + tv["wm"] > 0.5)], 99) < 2.5


def test_rcbf_is_cbf_over_the_cbf_at_the_mirror_point_about_the_true_midsagittal_plane():
    patient = make_patient(LVO_SEED)
    grid = grid_for("ctp", "small")
    zs = slice(10, 13)
    head = patient.pose.to_head(grid.world_points(zs))
    mirror = head * np.array([-1.0, 1.0, 1.0])
    here = true_perfusion(patient, head, tissue_fractions(head, patient.anatomy, grid.edge_mm))
    there = true_perfusion(patient, mirror, tissue_fractions(mirror, patient.anatomy, grid.edge_mm))
    defined = there["cbf"] > 1.0
    np.testing.assert_allclose(here["rcbf"][defined], here["cbf"][defined] / there["cbf"][defined], rtol=1e-3)
    # The same from the truth JSON's plane, by interpolation on the grid: core is below 30 % of its mirror.
    plane = patient.pose.midsagittal_plane(grid)["plane_world_mm"]
    normal, d = np.array(plane[:3]), plane[3]
    v = truth_volumes(patient, grid, keys=("corepenumbra", "cbf"))
    core = v["corepenumbra"] == 1
    world = nib.affines.apply_affine(grid.affine, np.argwhere(core))
    mirrored = world - 2 * (world @ normal + d)[:, None] * normal[None, :]
    cbf_mirror = ndimage.map_coordinates(v["cbf"], grid.index_of(mirrored).T, order=1)
    ratio = v["cbf"][core] / np.maximum(cbf_mirror, 1e-6)
    assert np.mean(ratio < 0.35) > 0.9


def test_the_midsagittal_plane_is_not_the_array_middle():
    planes = [make_patient(s).pose.midsagittal_plane(grid_for("ctp", "small")) for s in range(8)]
    assert all(abs(p["offset_vox"]) > 0.5 or abs(p["angle_deg"]) > 1.0 for p in planes)
    assert max(abs(p["angle_deg"]) for p in planes) > 3.0
    for p in planes:
        assert np.linalg.norm(p["plane_world_mm"][:3]) == pytest.approx(1.0)


@pytest.mark.golden
def test_same_seed_gives_identical_studies_and_another_seed_does_not(root, studies, tmp_path):
    again = {kind: generate_study(tmp_path / "again", kind, f"{kind}lvo", LVO_SEED) for kind in ("ctp", "mri")}
    for kind, study in again.items():
        for key, path in study["modalities"].items():
            np.testing.assert_array_equal(load(path), load(studies[kind]["modalities"][key]), err_msg=f"{kind} {key}")
        for target in ("corepenumbra", "lesion"):
            np.testing.assert_array_equal(load(study["truth"][target]), load(studies[kind]["truth"][target]))
    other = generate_study(tmp_path / "other", "mri", "mrilvo", LVO_SEED + 1)
    assert not np.array_equal(load(other["modalities"]["dwi"]), load(studies["mri"]["modalities"]["dwi"]))
    assert make_patient(3).describe() == make_patient(3).describe()
    assert make_patient(3).describe() != make_patient(4).describe()


def test_kinds_of_the_same_patient_agree(studies):
    ctp, mri, cta = (json.loads(studies[k]["truth"]["truth"].read_text()) for k in ("ctp", "mri", "cta"))
    assert ctp["clinical"] == mri["clinical"] == cta["clinical"]
    assert ctp["patient"] == mri["patient"] == cta["patient"]
    assert ctp["figures"]["core_volume_ml"] == pytest.approx(mri["figures"]["core_volume_ml"], rel=0.15)
    assert ctp["figures"]["penumbra_volume_ml"] == pytest.approx(mri["figures"]["penumbra_volume_ml"], rel=0.15)

    def centroid_mm(study):
        img = nib.load(str(study["truth"]["lesion"]))
        idx = np.argwhere(np.asarray(img.dataobj) > 0)
        return nib.affines.apply_affine(img.affine, idx).mean(axis=0)

    assert np.linalg.norm(centroid_mm(studies["ctp"]) - centroid_mm(studies["mri"])) < 5.0
    assert np.linalg.norm(centroid_mm(studies["ctp"]) - centroid_mm(studies["cta"])) < 5.0


def test_severity_and_nihss_vary_with_the_seed():
    patients = [make_patient(study_seed(0, "ctp", i)) for i in range(1, 41)]
    classes = {p.ischemia.severity_class for p in patients}
    assert classes == {"large-vessel", "medium-vessel", "small-embolic"}
    sizes = [p.anatomy.brain_axes_mm[0] for p in patients]
    assert np.std(sizes) > 1.0


def test_nihss_grows_with_the_lesion(studies):
    from strokelabel.phantom.patient import nihss
    from strokelabel.phantom.render import reference_volumes_ml

    assert nihss(0.0, 2.0) < nihss(10.0, 30.0) < nihss(120.0, 150.0)
    embolic = make_patient(EMBOLIC_SEED)
    volumes = reference_volumes_ml(embolic)
    assert nihss(volumes["core_ml"], volumes["penumbra_ml"], embolic.nihss_offset) < studies["mri"]["figures"]["nihss"]


def test_generate_dataset_names_subjects_labels_the_first_and_skips_existing(tmp_path):
    lines = []
    first = generate_dataset(tmp_path, per_kind=2, labelled_per_kind=1, kinds=("mri",), seed=5, progress=lines.append)
    assert [r["reference"].name for r in first] == ["sub-mri0001_ses-01_dwi.nii.gz", "sub-mri0002_ses-01_dwi.nii.gz"]
    assert (tmp_path / "labels" / "final" / "sub-mri0001_ses-01_dwi.nii.gz").exists()
    assert not (tmp_path / "labels" / "final" / "sub-mri0002_ses-01_dwi.nii.gz").exists()
    record = json.loads(first[0]["truth"]["truth"].read_text())
    assert record["seed"] == study_seed(5, "mri", 1)
    lines.clear()
    again = generate_dataset(tmp_path, per_kind=2, labelled_per_kind=2, kinds=("mri",), seed=5, progress=lines.append)
    assert all("skipped" in line for line in lines)
    assert [r["figures"] for r in again] == [r["figures"] for r in first]
    assert (tmp_path / "labels" / "final" / "sub-mri0002_ses-01_dwi.nii.gz").exists()


def test_cli_generates_and_reports_progress(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--per-kind", "1", "--labelled", "1", "--kinds", "mri", "--seed", "2"]) == 0
    out = capsys.readouterr().out
    assert "sub-mri0001" in out and "1 studies" in out
    assert (tmp_path / "sub-mri0001" / "ses-01" / "sub-mri0001_ses-01_dwi.nii.gz").exists()
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--kinds", "pet"])


def test_unknown_kind_or_size_is_refused(tmp_path):
    with pytest.raises(ValueError, match="kind"):
        generate_study(tmp_path, "pet", "x", 1)
    with pytest.raises(ValueError, match="size"):
        generate_study(tmp_path, "mri", "x", 1, size="huge")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ctp", "mri", "cta"])
def test_full_size_studies_have_the_benchmark_grids(tmp_path, kind):
    study = generate_study(tmp_path, kind, f"{kind}full", LVO_SEED, size="full")
    grid = grid_for(kind, "full")
    img = nib.load(str(study["reference"]))
    assert img.shape == grid.shape
    assert "ctp" not in study["modalities"] if kind == "ctp" else True
    if kind == "cta":
        assert grid.shape == (512, 512, 257)
    clot_or_lesion = load(study["truth"]["clot" if kind == "cta" else "lesion"])
    assert clot_or_lesion.any()
