"""Timing of the automatically selected arterial input against the phantom's true one (issue 23).

For each study: the selected AIF's time of peak and first moment (s, from the first frame) beside the true AIF's
(perfusion.arterial_input_hu with the patient's bolus, no delay), and how many of the chosen voxels the phantom
renders as artery, vein or neither (render.render_chunk's lumen fractions at the voxel). A late AIF shortens every
Tmax and biases CBF. Studies: the 8-slice LVO phantom of tests/strokelabel/test_ctp4d.py (at 1.7 mm and in 3.4 mm
blocks) and boundary studies of scripts/evaluate_maps.py (--boundary; clean and clinical-noise series).

    PYTHONPATH=$PWD .venv/bin/python scripts/aif_timing.py [--boundary-studies 10001,10005,10012] [--families clean,clinical_noise]
"""

from __future__ import annotations

import argparse

import numpy as np

from strokelabel import perfusion
from strokelabel.ctp4d import CtpSeries, compute_maps
from strokelabel.phantom.ctp_families import simulate_family
from strokelabel.phantom.geometry import Grid, grid_for
from strokelabel.phantom.patient import make_patient
from strokelabel.phantom.render import patient_pieces, render_chunk
from strokelabel.phantom.study import study_seed

TEST_GRID = Grid((128, 128, 8), (1.7, 1.7, 5.0))  # tests/strokelabel/test_ctp4d.py's GRID and LVO patient
TEST_PATIENT_SEED = 4
LUMEN_MIN = 0.05  # a voxel with at least this lumen fraction of a kind counts as that vessel


def first_moment_s(curve, times) -> float:
    c = np.clip(np.asarray(curve, np.float64), 0.0, None)
    return float((c * times).sum() / max(c.sum(), 1e-9))


def vessel_kinds(patient, grid: Grid, voxels: np.ndarray) -> dict:
    """How many of ``voxels`` (n, 3) are artery / vein / neither by the phantom's own rendering."""
    counts = {"artery": 0, "vein": 0, "neither": 0}
    pieces = patient_pieces(patient)
    for z in np.unique(voxels[:, 2]):
        r = render_chunk(patient, grid, slice(int(z), int(z) + 1), pieces)
        for i, j, _ in voxels[voxels[:, 2] == z]:
            artery, vein = float(r["lumen_artery"][i, j, 0]), float(r["lumen_vein"][i, j, 0])
            kind = "artery" if artery >= LUMEN_MIN and artery >= vein else "vein" if vein >= LUMEN_MIN else "neither"
            counts[kind] += 1
    return counts


def probe(name: str, patient, grid: Grid, family: str, seed: int, in_plane_mm=None) -> str:
    case = simulate_family(patient, grid, family, seed)
    kwargs = {} if in_plane_mm is None else {"in_plane_mm": in_plane_mm}
    computed = compute_maps(CtpSeries(case.ctp, grid.affine, case.times_s), grid.spacing_mm, **kwargs)
    times = np.asarray(computed.aif["times_s"], np.float64) - case.times_s[0]
    selected = np.asarray(computed.aif["curve_hu"], np.float64)
    true = perfusion.arterial_input_hu(times, **patient.aif_ctp)
    kinds = vessel_kinds(patient, grid, np.asarray(computed.aif["voxels_ijk"]))
    return (f"| {name} | {family} | {times[np.argmax(selected)]:.1f} | {times[np.argmax(true)]:.1f} | {first_moment_s(selected, times):.1f} | "
            f"{first_moment_s(true, times):.1f} | {kinds['artery']} | {kinds['vein']} | {kinds['neither']} | {selected.max():.0f} |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boundary-studies", default="10001,10005,10012")
    parser.add_argument("--families", default="clean,clinical_noise")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print("| study | family | selected peak s | true peak s | selected first moment s | true first moment s | artery | vein | neither | selected peak HU |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    test_patient = make_patient(TEST_PATIENT_SEED)
    print(probe("test 8-slice, 1.7 mm", test_patient, TEST_GRID, "clean", 1), flush=True)
    print(probe("test 8-slice, 3.4 mm blocks", test_patient, TEST_GRID, "clean", 1, in_plane_mm=3.4), flush=True)
    grid = grid_for("ctp", "small")
    for index in [int(i) for i in args.boundary_studies.split(",") if i]:
        patient = make_patient(study_seed(args.seed, "ctp", index), scenario="M2")  # evaluate_maps.BOUNDARY_SCENARIO
        for family in args.families.split(","):
            print(probe(f"boundary {index}", patient, grid, family, args.seed * 1000 + index), flush=True)


if __name__ == "__main__":
    main()
