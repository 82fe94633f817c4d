"""The CT work-up from the scanner's own series, through the real server and client.

- A CT perfusion study that has only its raw 4D series: the series is listed as the study, the
  maps are computed from it on the first call, written beside it as derived files and reused on
  the next, and every CTP task runs on them.
- An ISLES'24 tree as the challenge distributes it, in the same studies folder: the co-registered
  studies are listed, core/penumbra and the clot task run on them with their figures, and the LVO
  mask is the CTA study's clot label.
- Every answer has a one-page summary picture, served by the URL in its result.
"""

from __future__ import annotations

import io
import time
import urllib.error
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monailabel.client.client import MONAILabelClientException

from strokelabel.computed_maps import MAPS_FROM_4D
from strokelabel.naming import truth_path
from strokelabel.phantom.isles24_layout import generate_isles24_study
from strokelabel.phantom.study import generate_study
from tests.e2e.server import running_server

pytestmark = pytest.mark.e2e

IMAGE = "sub-series_ses-01_ctp"


@pytest.fixture(scope="module")
def series_server(tmp_path_factory):
    studies = tmp_path_factory.mktemp("series-studies")
    record = generate_study(studies, "ctp", "series", seed=4401, write_ctp_series=True)
    for modality, path in record["modalities"].items():
        if modality != "ctp":
            Path(path).unlink()  # as a PACS holds it: the 4D series only
    # A 3D volume named as a 4D series: refused by name, not read.
    flat = nib.load(str(record["modalities"]["ctp"]))
    folder = studies / "sub-flat" / "ses-01"
    folder.mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.asarray(flat.dataobj)[..., 0], flat.affine), str(folder / "sub-flat_ses-01_ctp.nii.gz"))
    generate_isles24_study(studies, 1, seed=501)
    write_flat_probe(studies / PROBE)
    with running_server(tmp_path_factory.mktemp("series-server"), studies, models="core_penumbra,ischemic_lesion,clot_region") as server:
        yield server


PROBE = "sub-probe01_ses-01_ctp.nii.gz"


def write_flat_probe(path: Path) -> None:
    """A 4D series alone at the top of the studies folder, as a new user drops one in: 96 x 96 x 12 x 45,
    1 s frames in the header only (no sidecar), no derived maps, no truth beside it."""
    import dataclasses

    from strokelabel.phantom.ctp_families import simulate_family
    from strokelabel.phantom.geometry import Grid
    from strokelabel.phantom.patient import make_patient

    grid = Grid((96, 96, 12), (2.2, 2.2, 8.0))
    patient = dataclasses.replace(make_patient(1001), ctp_protocol={"dt_s": 1.0, "n_frames": 45})
    img = nib.Nifti1Image(simulate_family(patient, grid, "clean", 1).ctp, grid.affine)
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = 1.0
    nib.save(img, str(path))


def hypo_dice(label: np.ndarray, studies: Path) -> float:
    truth = np.asarray(nib.load(str(truth_path(studies, "series", "01", "corepenumbra"))).dataobj) > 0
    pred = label > 0
    return 2 * float((truth & pred).sum()) / max(float(truth.sum() + pred.sum()), 1.0)


def test_a_series_only_study_is_listed_and_core_penumbra_runs_on_maps_computed_from_it(series_server):
    client, studies = series_server.client, series_server.studies
    objects = client.datastore()["objects"]
    assert IMAGE in objects and objects[IMAGE]["image"]["info"]["kind"] == "ctp"

    started = time.perf_counter()
    label_file, result = client.infer("core_penumbra", IMAGE, {"method": "baseline"})
    first_s = time.perf_counter() - started
    series = nib.load(str(next(studies.rglob(IMAGE + ".nii.gz"))))
    label = nib.load(label_file)
    assert label.shape == series.shape[:3] and np.allclose(label.affine, series.affine, atol=1e-3)
    assert result["core_volume_ml"] >= 0 and result["mismatch_ratio"] is not None
    assert hypo_dice(np.asarray(label.dataobj), studies) > 0.6

    computed = result["maps_from_4d"]
    assert computed["reused"] is False and computed["source"] == IMAGE + ".nii.gz"
    assert len(computed["aif"]["curve_hu"]) == len(computed["aif"]["times_s"]) > 10
    assert max(computed["aif"]["curve_hu"]) > 100  # an arterial curve: a bolus peak of hundreds of HU
    assert isinstance(computed["warnings"], list)
    # A sound series: its quality figures, no flag, not put under review for the series (issue 23)
    assert computed["flags"] == [] and computed["quality"]["tissue_cnr"] > 0.7 and computed["quality"]["aif_peak_hu"] > 100
    assert "series_flags" not in result["quality"] and result["review"] is False
    derived = next(studies.rglob("derivatives/strokelabel/sub-series_ses-01"))
    assert {f"sub-series_ses-01_desc-from4d_{m}.nii.gz" for m in MAPS_FROM_4D} <= {p.name for p in derived.iterdir()}
    assert IMAGE in client.datastore()["objects"] and len([k for k in client.datastore()["objects"] if "series" in k]) == 1

    started = time.perf_counter()
    # The same request again: the stored answer (lib/infers/stored_answers.py), said so.
    _, again = client.infer("core_penumbra", IMAGE, {"method": "baseline"})
    assert again["reused"] is True and again["computed_at"] and result["reused"] is False
    assert again["core_volume_ml"] == result["core_volume_ml"] and again["maps_from_4d"] == computed
    print(f"\nthrough the server: first call {first_s:.1f} s, the same request again {time.perf_counter() - started:.1f} s")

    # Another task on the series: the maps computed from it for the first are reused.
    started = time.perf_counter()
    _, lesion = client.infer("ischemic_lesion", IMAGE, {"method": "baseline"})
    assert lesion["lesion_volume_ml"] >= 0 and lesion["maps_from_4d"]["reused"] is True and lesion["reused"] is False
    print(f"maps from the 4D series reused by another task: {time.perf_counter() - started:.1f} s")

    # The one-page summary: served by the URL in the result, a PNG of the computed maps and the AIF/VOF.
    picture = fetch(series_server, again["summary_url"])
    assert picture[:8] == b"\x89PNG\r\n\x1a\n" and len(picture) > 20_000
    from PIL import Image

    assert min(Image.open(io.BytesIO(picture)).size) >= 600

    response = client.save_label(IMAGE, label_file, tag="final")
    assert response and "final" in client.datastore()["objects"][IMAGE]["labels"]


def fetch(server, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=60) as response:
        assert response.headers["content-type"] == "image/png"
        return response.read()


def test_the_summary_route_serves_only_pictures_of_datastore_studies(series_server):
    for query, words in (("image=../../etc/passwd&task=core_penumbra", "no study"), (f"image={IMAGE}&task=nosuchtask", "no task"),
                         ("image=sub-flat_ses-01_ctp&task=core_penumbra", "no summary picture")):
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(f"http://127.0.0.1:{series_server.port}/stroke/summary?{query}", timeout=60)
        assert error.value.code == 404 and words in error.value.read().decode()


ISLES24 = "sub-stroke0001_ses-01_space-ncct"


def test_an_isles24_tree_served_as_distributed_gives_core_penumbra_and_the_clot_with_their_figures(series_server):
    client = series_server.client
    objects = client.datastore()["objects"]
    assert {f"{ISLES24}_tmax", f"{ISLES24}_cta"} <= set(objects)
    assert not any(k.startswith("sub-stroke0001_ses-01_") and "space-ncct" not in k for k in objects)  # native copies not listed twice
    assert "final" in objects[f"{ISLES24}_cta"]["labels"]  # the LVO mask, imported as the clot label
    assert "final" not in objects[f"{ISLES24}_tmax"]["labels"]  # the session-02 final infarct labels nothing

    label_file, result = client.infer("core_penumbra", f"{ISLES24}_tmax", {})
    assert result["study_id"] == "sub-stroke0001_ses-01" and result["core_volume_ml"] >= 0 and "mismatch_ratio" in result
    assert fetch(series_server, result["summary_url"])[:4] == b"\x89PNG"

    _, clot = client.infer("clot_region", f"{ISLES24}_cta", {})
    assert clot["study_kind"] == "cta" and "cow_segments" in clot
    assert fetch(series_server, clot["summary_url"])[:4] == b"\x89PNG"


def test_a_3d_volume_named_as_a_4d_series_is_refused_by_name(series_server):
    with pytest.raises(MONAILabelClientException) as error:
        series_server.client.infer("core_penumbra", "sub-flat_ses-01_ctp", {})
    assert "422" in error.value.msg and "ctp has 3 dimensions" in error.value.msg


def test_a_flat_folder_4d_series_without_sidecar_gets_its_summary_picture(series_server):
    """Issue 23: on such a study the label was served but the picture failed (matmul ... size 1 is different from 4)."""
    client, image = series_server.client, PROBE.removesuffix(".nii.gz")
    assert image in client.datastore()["objects"]
    _, result = client.infer("core_penumbra", image, {"method": "baseline"})
    assert "summary_error" not in result, result.get("summary_error")
    assert result["maps_from_4d"]["reused"] is False and "header pixdim[4]" in str(result["maps_from_4d"])
    picture = fetch(series_server, result["summary_url"])
    assert picture[:8] == b"\x89PNG\r\n\x1a\n" and len(picture) > 20_000
