"""What the browser tests share: the tools they need, the phantom study on Orthanc with our server in
front, and the pixel count that tells where a segment is on a screenshot.

Everything installed by ``scripts/setup_viewer.sh`` (run by ``scripts/run_tests.sh``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pydicom
from PIL import Image

from strokelabel.dicom import write_study
from strokelabel.orthanc import orthanc_binary, running_orthanc
from strokelabel.phantom.study import generate_study
from tests.e2e.server import REPO, running_server

VIEWER_DIR = Path(os.environ.get("STROKELABEL_VIEWER_DIR", REPO / "viewer"))
CHROMIUM = os.environ.get("STROKELABEL_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
DRIVERS = Path(__file__).parent / "browser"
SETUP = "run `bash scripts/setup_viewer.sh`"
# A pixel of the segment: red well above blue. The image is grey and OHIF's own controls are blue; the
# segment's colour (reported by OHIF, checked by the tests) is warm, so its fill and outline pass this.
WARMTH = 50


def missing_browser() -> str | None:
    """Why the browser tests cannot run here (None: they can)."""
    if orthanc_binary() is None:
        return "Orthanc is not installed (scripts/setup_system.sh)"
    if not Path(CHROMIUM).exists():
        return f"no chromium at {CHROMIUM}: {SETUP}"
    if shutil.which("node") is None:
        return "node is not installed"
    if not (VIEWER_DIR / "node_modules" / "playwright-core").is_dir():
        return f"playwright-core is not in {VIEWER_DIR}/node_modules: {SETUP}"
    return None


OHIF3_DIST = VIEWER_DIR / "ohif-3.13.2" / "dist"


def missing_ohif3() -> str | None:
    """Why the OHIF 3.13 browser tests cannot run here (None: they can)."""
    if missing_browser() is not None:
        return missing_browser()
    if not (OHIF3_DIST / "index.html").is_file():
        return f"OHIF 3.13.2 is not unpacked in {OHIF3_DIST}: run `bash scripts/setup_viewer.sh`"
    return None


# The phantom studies of the browser tests, each with its finding in the patient's left hemisphere on a few
# slices: the MRI lesion on 4 of 24, the CTP core/penumbra on 5; the CTA's clot (seed 4506: the clot task's
# answer without the phantom's atlas, as from a PACS, overlaps it; seed 4505's is empty).
STUDIES = {  # kind: (phantom seed, patient ID, series written to the PACS: None = all)
    "mri": (4505, "PAT-OHIF", None),
    "ctp": (4505, "PAT-OHIF-CT", ("tmax", "cbf", "cbv", "mtt", "ttp", "mip", "ncct")),  # the maps; the 4D series is the CT work-up's
    "cta": (4506, "PAT-OHIF-CTA", ("cta1", "cta2", "cta3")),
}


@contextlib.contextmanager
def phantom_pacs_server(work: Path, models: str, kinds=("mri",), env: dict | None = None, login: tuple[str, str] | None = None):
    """Orthanc holding a phantom study of each of ``kinds`` (mri, ctp, cta; lesion in the patient's left
    hemisphere), our server in PACS mode in front.

    The studies are made and stored while the server starts (its start is mostly a process importing torch and
    MONAI); the server then looks at the PACS again, so it lists them all. ``login`` (user, password), with access
    control on: the yielded client's user, who asks for that look.

    The yielded server also has ``work``, ``orthanc`` and ``studies``: per kind, ``truth`` (the task's
    NIfTI truth by target) and ``series`` (per modality, the first DICOM header).
    """
    studies = {}
    phase = Phases("setup")
    with running_orthanc(work / "orthanc") as orthanc, ThreadPoolExecutor(max_workers=1) as pool:
        phase("orthanc started")
        stored = pool.submit(store_phantoms, work, orthanc, kinds, studies)
        with server_in_front(work, orthanc, studies, models, env) as server:
            phase("server answering")
            stored.result()
            phase("studies stored (made while the server started)")
            if login:
                server.client.update_auth(server.client.auth_token(*login))
            server.client.datastore()  # the server indexes the PACS again (STROKELABEL_PACS_REFRESH_S=0): every study
            yield server


def store_phantoms(work: Path, orthanc, kinds, studies: dict) -> None:
    """Make the phantom study of each of ``kinds``, store it in ``orthanc`` and describe it in ``studies``."""
    phase = Phases("studies")
    for kind in kinds:
        seed, patient_id, only = STUDIES[kind]
        study = generate_study(work / "nifti", kind, kind + "1", seed=seed)
        phase(f"{kind} phantom generated")
        series = write_study(study["reference"], work / "dicom" / kind, patient_id=patient_id, only=only)
        phase(f"{kind} written as DICOM")
        orthanc.upload(f for files in series.values() for f in files)
        phase(f"{kind} uploaded to Orthanc")
        truth = {target: path for target, path in study["truth"].items() if str(path).endswith(".nii.gz")}
        headers = {m: pydicom.dcmread(str(files[0]), stop_before_pixels=True) for m, files in series.items()}
        studies[kind] = SimpleNamespace(truth=truth, series=headers)


@contextlib.contextmanager
def server_in_front(work: Path, orthanc, studies: dict, models: str, env: dict | None = None):
    """Our server in PACS mode in front of ``orthanc``, which holds ``studies`` (as :func:`phantom_pacs_server`
    made them): a second server on a module's PACS, e.g. with access control on."""
    with running_server(work / "server", orthanc.dicomweb, models=models, conf={"pacs_cache": work / "cache"},
                        env={"STROKELABEL_PACS_REFRESH_S": "0", **(env or {})}) as server:
        server.work, server.orthanc, server.studies = work, orthanc, studies
        yield server


class Phases:
    """Prints the seconds each phase of a fixture took (a figure to read in the test's output, never asserted)."""

    def __init__(self, name: str):
        self.name, self.last = name, time.perf_counter()

    def __call__(self, phase: str) -> None:
        now = time.perf_counter()
        print(f"[{self.name}] {phase}: {now - self.last:.1f} s (load {os.getloadavg()[0]:.1f})", flush=True)
        self.last = now


def truth_side(truth_nifti: Path) -> str:
    """The patient's side of a lesion, from its mask (NIfTI, RAS: +x is the patient's right)."""
    truth = nib.load(str(truth_nifti))
    truth_x = (truth.affine @ [*np.argwhere(np.asarray(truth.dataobj) > 0).mean(axis=0), 1])[0]
    volume_centre_x = (truth.affine @ [*((np.array(truth.shape[:3]) - 1) / 2), 1])[0]
    return "left" if truth_x < volume_centre_x else "right"


def mask_slices_z(nifti: Path) -> tuple[list[float], list[float]]:
    """The z (mm; RAS and LPS share it) of a mask's slices with something in them, and of all its slices."""
    image = nib.load(str(nifti))
    mask = np.asarray(image.dataobj) > 0
    z_of = [round(float((image.affine @ [0, 0, k, 1])[2]), 2) for k in range(mask.shape[2])]
    return sorted(z_of[k] for k in np.nonzero(mask.any(axis=(0, 1)))[0]), z_of


def mask_sides_by_z(nifti: Path, value: int | None = None) -> dict[float, dict[str, int]]:
    """Per slice z (mm) with something in it: the mask's voxels (of label ``value``, or any) on the patient's
    left and right of the volume's centre (NIfTI, RAS)."""
    image = nib.load(str(nifti))
    values = np.asarray(image.dataobj)
    mask = values > 0 if value is None else values == value
    centre_x = (image.affine @ [*((np.array(mask.shape[:3]) - 1) / 2), 1])[0]
    out: dict[float, dict[str, int]] = {}
    for i, j, k in np.argwhere(mask):
        x, _, z, _ = image.affine @ [i, j, k, 1]
        sides = out.setdefault(round(float(z), 2), {"left": 0, "right": 0})
        sides["left" if x < centre_x else "right"] += 1  # RAS: the patient's left is -x
    return out


def coloured_pixels(png: str, colour=None) -> tuple[int, int]:
    """Pixels of the segment's colour in the left and right halves of a viewport screenshot.

    Without ``colour``: warm pixels (red well above blue). With the segment's ``colour`` (RGB[A]): pixels
    whose channel that is strongest in it stands well above the other two (the image is grey).
    """
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    if colour is None:
        coloured = (rgb[..., 0] - rgb[..., 2]) > WARMTH
    else:
        strong = int(np.argmax(colour[:3]))
        others = [c for c in range(3) if c != strong]
        coloured = (rgb[..., strong] - rgb[..., others].max(axis=-1)) > WARMTH
    half = coloured.shape[1] // 2
    return int(coloured[:, :half].sum()), int(coloured[:, half:].sum())


def screen_half(patient_side: str, patient_left_on_screen: str) -> str:
    """The half of the screen where the patient's ``patient_side`` is shown."""
    return patient_left_on_screen if patient_side == "left" else {"left": "right", "right": "left"}[patient_left_on_screen]


def run_driver(name: str, plan: dict, out_dir: Path, timeout_s: float = 600) -> dict:
    """Run a Node driver of tests/e2e/browser on a plan; its report (also written to out_dir/report.json)."""
    plan = {"viewer_dir": str(VIEWER_DIR), "chromium": CHROMIUM, "out_dir": str(out_dir), **plan}
    plan_file = out_dir / "plan.json"
    plan_file.write_text(json.dumps(plan))
    started = time.perf_counter()
    run = subprocess.run(["node", str(DRIVERS / name), str(plan_file)], capture_output=True, text=True, timeout=timeout_s)
    print(f"browser run: {time.perf_counter() - started:.0f} s; screenshots in {out_dir}")
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    (out_dir / "report.json").write_text(json.dumps(report, indent=1))
    print(f"screenshot: {report.get('screenshot')}; page errors: {report['page_errors']}; HTTP errors: {report['http_errors']}")
    return report
