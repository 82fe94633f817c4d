"""The template anatomy family (MNI ICBM152 2009a, warped per patient), the focal lesion
scenarios of both families, the chronic findings, and the family plumbing."""

import dataclasses
import json

import numpy as np
import pytest

from strokelabel.phantom import REGIONS, generate_dataset, make_patient, truth_volumes
from strokelabel.phantom.__main__ import main
from strokelabel.phantom.anatomy import region_id
from strokelabel.phantom.chronic import ChronicFindings, OldInfarct
from strokelabel.phantom.geometry import Grid
from strokelabel.phantom.isles_layout import generate_isles_dataset
from strokelabel.phantom.render import CORE, render_chunk, true_perfusion
from tests.golden import assert_matches_golden, figures_of

COARSE_MM = 3.0
FOCAL = ("lacunar", "shower", "watershed", "cortical")


def head_grid(anatomy, step_mm=COARSE_MM, margin_mm=0.0):
    lo, hi = anatomy.bounds_mm
    axes = [np.arange(a - margin_mm, b + margin_mm + step_mm, step_mm) for a, b in zip(lo, hi)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)


def volumes_ml(anatomy, step_mm=COARSE_MM):
    points = head_grid(anatomy, step_mm, margin_mm=10.0)
    f = anatomy.tissue_fractions(points, step_mm)
    ml = step_mm**3 / 1000.0
    return {"brain": float((f["gm"] + f["wm"]).sum() * ml), "icv": float(f["icv"].sum() * ml), "csf_in_icv": float((f["icv"] - f["gm"] - f["wm"]).sum() * ml)}


@pytest.fixture(scope="module")
def template_patients():
    return [make_patient(seed, "template") for seed in (1, 2, 3)]


def test_template_brains_have_adult_volumes(template_patients):
    for patient in template_patients:
        v = volumes_ml(patient.anatomy)
        assert 1000 < v["brain"] < 1500, v
        assert 1150 < v["icv"] < 1900, v
        assert 0.08 < v["csf_in_icv"] / v["icv"] < 0.40, v


def test_csf_share_grows_with_atrophy_and_ventricle_enlargement(template_patients):
    anatomy = template_patients[0].anatomy
    young = dataclasses.replace(anatomy, atrophy=0.0, ventricle_dilation_mm=0.0, csf_mm=0.5)
    old = dataclasses.replace(anatomy, atrophy=1.0, ventricle_dilation_mm=6.0, csf_mm=1.7)
    v_young, v_old = volumes_ml(young), volumes_ml(old)
    assert v_old["csf_in_icv"] / v_old["icv"] > v_young["csf_in_icv"] / v_young["icv"] + 0.08
    assert v_old["brain"] < 0.9 * v_young["brain"]


def test_the_head_is_nearly_but_not_exactly_mirror_symmetric(template_patients):
    anatomy = template_patients[1].anatomy
    points = head_grid(anatomy, 2.5)
    mirrored = points * [-1.0, 1.0, 1.0]
    here, there = anatomy.tissue_fractions(points, 2.5), anatomy.tissue_fractions(mirrored, 2.5)
    brain = (here["gm"] + here["wm"] > 0.5) | (there["gm"] + there["wm"] > 0.5)
    difference = np.abs(here["gm"] - there["gm"])[brain].mean()
    correlation = np.corrcoef(here["wm"][brain], there["wm"][brain])[0, 1]
    assert difference > 0.05 and 0.6 < correlation < 0.99
    # The asymmetry is the patient's warp: without it (and without chronic findings) the template is symmetric.
    flat = dataclasses.replace(anatomy, warp_mm=np.zeros_like(anatomy.warp_mm), chronic=ChronicFindings())
    here, there = flat.tissue_fractions(points, 2.5), flat.tissue_fractions(mirrored, 2.5)
    assert np.abs(here["gm"] - there["gm"])[brain].mean() < 0.01


def territory_centroids(anatomy):
    points = head_grid(anatomy)
    f = anatomy.tissue_fractions(points, COARSE_MM)
    brain = f["gm"] + f["wm"] > 0.5
    atlas = np.argmin(anatomy.territory_distances_mm(points[brain]), axis=1) + 1
    return {name: points[brain][atlas == region_id(name)].mean(axis=0) for name in REGIONS}


def test_territories_lie_where_the_arteries_feed(template_patients):
    for patient in template_patients:
        c = territory_centroids(patient.anatomy)
        for side, sign in (("L", -1.0), ("R", 1.0)):
            aca, sup, inf, deep = (c[f"{n}-{side}"] for n in ("ACA", "MCA-superior", "MCA-inferior", "MCA-deep"))
            pca, thal, acha = c[f"PCA-{side}"], c[f"thalamic-{side}"], c[f"AChA-{side}"]
            assert sign * aca[0] > 0 and sign * pca[0] > 0 and sign * thal[0] > 0  # each on its own side
            assert abs(sup[0]) > abs(aca[0]) + 15 and abs(inf[0]) > abs(aca[0]) + 15  # MCA lateral to ACA
            assert sup[2] > inf[2] + 10  # superior division above the inferior one
            assert pca[1] < sup[1] - 20 and pca[1] < inf[1]  # PCA posterior
            assert abs(deep[0]) < abs(sup[0]) - 8 and abs(thal[0]) < abs(deep[0]) - 4  # deep nuclei medial
            assert thal[1] < deep[1]  # thalamus behind the basal ganglia
            assert acha[2] < deep[2]  # internal capsule's posterior limb and medial temporal lobe, below
        assert c["vertebrobasilar"][2] < min(v[2] for k, v in c.items() if k != "vertebrobasilar") - 15


def test_arteries_follow_the_template(template_patients):
    for patient in template_patients:
        tree, anatomy = patient.tree, patient.anatomy
        for side, sign in (("L", -1.0), ("R", 1.0)):
            m1 = tree.vessels[f"M1-{side}"].points_mm
            assert sign * (m1[-1][0] - m1[0][0]) > 15  # M1 runs laterally ...
            assert np.all(anatomy.tissue_fractions(m1, 1.0)["icv"] > 0.5)  # ... inside the skull
            end_region = np.argmin(anatomy.territory_distances_mm(m1[-1:]), axis=1)[0] + 1
            assert REGIONS[end_region - 1].startswith("MCA")  # into the Sylvian region
        basilar = tree.vessels["BA"].points_mm
        assert np.all(np.abs(basilar[:, 0]) < 4) and basilar[-1, 2] > basilar[0, 2]


def test_air_cavities_sit_at_the_skull_base(template_patients):
    anatomy = template_patients[0].anatomy
    # Sphenoid sinus, both maxillary sinuses, nasal cavity, pharynx (MNI mm): air inside the head.
    cavities = anatomy.to_head(np.array([[0.0, 14.0, -45.0], [-29.0, 52.0, -68.0], [29.0, 52.0, -68.0], [0.0, 56.0, -62.0], [0.0, 0.0, -115.0]]))
    f = anatomy.tissue_fractions(cavities, 1.0)
    assert np.all(f["air"] > 0.9)
    above = anatomy.tissue_fractions(cavities[:1] + [0.0, 0.0, 30.0], 1.0)  # the sella's cisterns and the brain above
    assert above["icv"][0] > 0.9
    points = head_grid(anatomy, 3.0)
    f = anatomy.tissue_fractions(points, 3.0)
    brain = f["gm"] + f["wm"] > 0.5
    distance, z = f["air_cavity_distance_mm"][brain], points[brain][:, 2]
    assert distance.min() < 10.0  # brain next to the ethmoid cells, the sphenoid sinus, the mastoid
    assert np.median(distance[z < np.percentile(z, 10)]) + 40 < np.median(distance[z > np.percentile(z, 90)])


def blob_truth(patient, blob, step_mm=0.75):
    """Core and penumbra (mL) in the box around one blob, and the core's centroid."""
    reach = blob[3] * blob[7] + 3.0
    axes = [np.arange(c - reach, c + reach + step_mm, step_mm) for c in blob[:3]]
    points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    f = patient.anatomy.tissue_fractions(points, step_mm)
    labels = true_perfusion(patient, points, f)["corepenumbra"]
    ml = step_mm**3 / 1000.0
    core = labels == CORE
    return (labels == 1).sum() * ml, (labels == 2).sum() * ml, points[core].mean(axis=0) if core.any() else None


@pytest.mark.parametrize("family", ["template", "ellipsoid"])
@pytest.mark.parametrize("scenario", FOCAL)
def test_focal_scenarios_make_lesions_of_their_kind(family, scenario):
    patient = make_patient(11, family, scenario=scenario)
    isch, anatomy = patient.ischemia, patient.anatomy
    blobs = isch.blobs
    low, high = {"lacunar": (1, 1), "shower": (2, 12), "watershed": (1, 7), "cortical": (1, 3)}[scenario]
    assert low <= len(blobs) <= high and isch.scenario == scenario
    truths = [blob_truth(patient, b) for b in blobs]
    core = sum(t[0] for t in truths)
    assert all(t[0] > 0 for t in truths)  # every infarct shows up as core ...
    assert sum(t[1] for t in truths) < 0.5 * core  # ... and is mostly core
    centres = np.array([b[:3] for b in blobs])
    sites = [REGIONS[i] for i in np.argmin(anatomy.territory_distances_mm(centres), axis=1)]
    f = anatomy.tissue_fractions(centres, 1.0)
    if scenario == "lacunar":
        assert core < 1.8 and 2 * blobs[0][3] * blobs[0][7] <= 15.01 and isch.clot is None
        assert sites[0].rsplit("-", 1)[0] in ("MCA-deep", "AChA", "thalamic") or sites[0] == "vertebrobasilar"
    elif scenario == "shower":
        assert all(2.0 <= 2 * b[3] <= 10.0 for b in blobs) and core < 10
        if isch.bilateral:
            assert {np.sign(b[0]) for b in blobs} == {-1.0, 1.0}
    elif scenario == "watershed":
        assert all(s.split("-")[0] in ("ACA", "MCA", "PCA") for s in sites) and isch.clot is None
        assert np.mean(f["wm"]) > 0.5  # deep white matter
    else:
        territory = isch.site.removesuffix(" cortex")
        assert all(s.startswith(territory) for s in sites) and np.mean(f["gm"]) > 0.3
        assert isch.clot is not None and isch.clot.vessel.startswith(f"{territory}-{isch.side}-branch")


def test_a_bilateral_shower_is_core_on_both_sides_and_its_mirror_points_are_healthy():
    patient = next(p for p in (make_patient(s, "template", scenario="shower") for s in range(40)) if p.ischemia.bilateral)
    centres = np.array([b[:3] for b in patient.ischemia.blobs])
    mirrored = centres * [-1.0, 1.0, 1.0]
    f_here, f_there = patient.anatomy.tissue_fractions(centres, 0.5), patient.anatomy.tissue_fractions(mirrored, 0.5)
    here, there = true_perfusion(patient, centres, f_here), true_perfusion(patient, mirrored, f_there)
    tissue = f_here["gm"] + f_here["wm"] >= 0.5
    assert np.all(here["rcbf"][tissue] < 0.3) and np.all(here["corepenumbra"][tissue] == CORE)
    assert np.all(there["corepenumbra"] == 0) and np.all(there["rcbf"] > 1.0)  # the mirror of an infarct is healthy
    assert {np.sign(c[0]) for c in centres} == {-1.0, 1.0}


def test_chronic_findings_are_label_zero_and_leave_the_acute_truth_alone():
    patient = make_patient(3, "template", scenario="cortical")
    # An old lacune at the end of the right lenticulostriate artery, and confluent leukoaraiosis.
    lacune = tuple(float(v) for v in patient.tree.vessels["LSA-R"].points_mm[-1])
    chronic = ChronicFindings((OldInfarct("lacunar", lacune, 5.0, 2.0),), wmh_grade=3, periventricular_mm=8.0)
    with_findings = dataclasses.replace(patient, anatomy=dataclasses.replace(patient.anatomy, chronic=chronic))
    without = dataclasses.replace(patient, anatomy=dataclasses.replace(patient.anatomy, chronic=ChronicFindings()))
    grid = Grid((64, 64, 32), (3.5, 3.5, 5.0))
    v = truth_volumes(with_findings, grid, keys=("old_infarct", "gliosis", "wmh", "csf", "corepenumbra"))
    plain = truth_volumes(without, grid, keys=("corepenumbra", "wmh", "old_infarct"))
    assert v["old_infarct"].sum() * grid.voxel_ml > 0.1 and v["gliosis"].max() > 0.2 and v["wmh"].sum() * grid.voxel_ml > 5
    assert not plain["wmh"].any() and not plain["old_infarct"].any()
    cavity = v["old_infarct"] > 0.5
    assert cavity.any() and np.all(v["corepenumbra"][cavity] == 0) and np.all(v["csf"][cavity] > 0.5)
    assert (plain["corepenumbra"] > 0).sum() > 10  # the acute lesion is there ...
    changed = v["corepenumbra"] != plain["corepenumbra"]
    assert np.all(v["old_infarct"][changed] > 0)  # ... and only a cavity changes its truth


def test_render_chunk_exports_the_chronic_and_air_fields_only_for_the_anatomy_that_models_them():
    grid = Grid((40, 40, 6), (5.0, 5.0, 10.0))
    for family in ("ellipsoid", "template"):
        r = render_chunk(make_patient(5, family), grid, slice(0, 6))
        total = sum(r[k] for k in ("air", "scalp", "bone", "csf", "gm", "wm"))
        np.testing.assert_allclose(total, 1.0, atol=1e-4)
        keys = ("old_infarct", "gliosis", "wmh", "air_cavity_distance_mm", "skull_base_air")
        if family == "ellipsoid":  # the MRI renderer draws its own chronic findings and air for this head
            assert not any(k in r for k in keys)
        else:
            for key in keys:
                assert r[key].shape == grid.shape and np.all(np.isfinite(r[key]))
            assert 0 <= r["skull_base_air"].min() and r["skull_base_air"].max() <= 1


ELLIPSOID_TRUTH_KINDS = {"gm": "fraction", "wm": "fraction", "csf": "fraction", "bone": "fraction", "tmax": "tmax", "lumen_clot": "clot_fraction"}


def ellipsoid_truth_figures(patients) -> dict:
    """Golden figures of the truth volumes of ellipsoid patients on a coarse grid: labels (core/penumbra,
    atlas) exactly, tissue fractions, Tmax and the clot's partial volume within their tolerance."""
    grid, figures = Grid((48, 48, 12), (4.0, 4.0, 8.0)), {}
    for patient in patients:
        v = truth_volumes(patient, grid, keys=("corepenumbra", "atlas", *ELLIPSOID_TRUTH_KINDS))
        fields = {f"seed{patient.seed}_{k}": (v[k], kind) for k, kind in ELLIPSOID_TRUTH_KINDS.items()}
        labels = {f"seed{patient.seed}_{k}": v[k] for k in ("corepenumbra", "atlas")}
        figures.update(figures_of(fields, labels, regions=v["atlas"] + 16 * v["corepenumbra"]))
    return figures


@pytest.mark.golden
def test_the_ellipsoid_family_draws_the_same_patients_as_before():
    """The ellipsoid family draws the same patients as before the template family existed (generator of
    commit b41b049): labels to the voxel, fields within their physical tolerance (tests/golden.py)."""
    assert_matches_golden(ellipsoid_truth_figures([make_patient(4), make_patient(9)]), "ellipsoid_truth_seeds_4_9")


@pytest.mark.golden
def test_template_patients_are_deterministic():
    a, b = make_patient(8, "template"), make_patient(8, "template")
    assert a.describe() == b.describe() and a.describe()["family"] == "template"
    assert a.describe() != make_patient(9, "template").describe()
    grid = Grid((32, 32, 8), (6.0, 6.0, 12.0))
    va, vb = (truth_volumes(p, grid, keys=("gm", "corepenumbra")) for p in (a, b))
    assert all(np.array_equal(va[k], vb[k]) for k in va)
    with pytest.raises(ValueError, match="family"):
        make_patient(1, "sphere")
    with pytest.raises(ValueError, match="scenario"):
        make_patient(1, scenario="migraine")


def test_the_family_is_recorded_and_studies_of_another_family_are_regenerated(tmp_path):
    lines = []
    first = generate_dataset(tmp_path, per_kind=1, labelled_per_kind=1, kinds=("mri",), seed=3, family="template", progress=lines.append)
    record = json.loads(first[0]["truth"]["truth"].read_text())
    assert record["family"] == "template" and record["patient"]["family"] == "template"
    lines.clear()
    generate_dataset(tmp_path, per_kind=1, labelled_per_kind=1, kinds=("mri",), seed=3, family="template", progress=lines.append)
    assert all("skipped" in line for line in lines)
    lines.clear()
    generate_dataset(tmp_path, per_kind=1, labelled_per_kind=1, kinds=("mri",), seed=3, family="ellipsoid", progress=lines.append)
    assert not any("skipped" in line for line in lines)
    assert json.loads(first[0]["truth"]["truth"].read_text())["family"] == "ellipsoid"
    assert main(["--out", str(tmp_path / "cli"), "--per-kind", "1", "--labelled", "0", "--kinds", "mri", "--family", "template"]) == 0
    assert json.loads(next((tmp_path / "cli").rglob("*truth.json")).read_text())["family"] == "template"
    isles = generate_isles_dataset(tmp_path / "isles", n=1, family="template", progress=None)
    assert isles[0]["family"] == "template"
    again = generate_isles_dataset(tmp_path / "isles", n=1, family="ellipsoid", progress=None)
    assert again[0]["family"] == "ellipsoid" and again[0]["figures"] != isles[0]["figures"]
