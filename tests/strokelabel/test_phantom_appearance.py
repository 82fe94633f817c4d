"""The phantom's appearance chain: the fixed look is today's files (labels to the voxel, maps within
their physical tolerance); a random look
varies by seed, stays physiological, renders the stroke mimics outside the truth label, and
gives vendor-like CT perfusion maps and varied CTA."""

import json

import nibabel as nib
import numpy as np
import pytest

from strokelabel.phantom import generate_study
from strokelabel.phantom.appearance import CHAINS, draw_appearance, ranges
from strokelabel.phantom.cta import phase_times_s
from strokelabel.phantom.mri import MIMIC_CODES
from strokelabel.phantom.study import simulate_study
from tests.golden import assert_matches_golden, study_figures

ALL_MIMICS = {"setting": "random", "on": ["susceptibility", "cortical_rim", "regional_t2", "shine_through", "old_infarcts", "wmh"], "off": ["skull"]}


def written_volumes(study: dict) -> dict[str, np.ndarray]:
    files = {**study["modalities"], **study["truth"]}
    return {name: np.asarray(nib.load(str(path)).dataobj) for name, path in files.items() if str(path).endswith(".nii.gz")}


@pytest.mark.golden
@pytest.mark.parametrize("kind", ["mri", "ctp", "cta"])
def test_fixed_appearance_writes_the_same_arrays_as_before(tmp_path, kind):
    """Seed 4 at size small, fixed look: every label written is the same to the voxel, and every map is the
    same within its physical tolerance (tests/golden.py), as the generator wrote before the appearance chain
    existed (commit b41b049; the golden figures were taken from this generator, whose files were still
    byte-identical to b41b049's)."""
    study = generate_study(tmp_path, kind, f"{kind}h", 4, write_ctp_series=False)
    assert_matches_golden(study_figures(written_volumes(study)), f"fixed_appearance_seed4_{kind}")
    record = json.loads(study["truth"]["truth"].read_text())
    assert record["appearance"] == {"setting": "fixed"} and record["conventions"]["default"]


@pytest.mark.golden
def test_every_step_has_documented_ranges_and_switches_off_without_moving_the_others():
    for kind, chain in CHAINS.items():
        table = ranges(kind)
        assert [s.name for s in chain] == list(table)
        assert all(table[s]["doc"] and table[s]["knobs"] for s in table)
    full = draw_appearance(21, "mri", "random")
    some_off = draw_appearance(21, "mri", {"setting": "random", "off": ["bias_field", "susceptibility"]})
    assert some_off["steps"]["bias_field"] is None and some_off["steps"]["susceptibility"] is None
    for name, values in full["steps"].items():
        if name not in ("bias_field", "susceptibility"):
            assert some_off["steps"][name] == values, name
    assert draw_appearance(21, "mri", "random") == full  # deterministic
    assert draw_appearance(22, "mri", "random") != full
    forced = draw_appearance(21, "mri", {"setting": "random", "on": ["shine_through"], "ranges": {"noise.fraction": [0.02, 0.02]}})
    assert forced["steps"]["shine_through"] is not None and forced["steps"]["noise"]["fraction"] == 0.02
    with pytest.raises(ValueError, match="step"):
        draw_appearance(1, "mri", {"setting": "random", "off": ["glitter"]})
    with pytest.raises(ValueError, match="setting"):
        draw_appearance(1, "mri", "psychedelic")


@pytest.fixture(scope="module")
def random_mri():
    # thick slices keep the test fast; the in-plane spacing, contrasts and lesion contrast are drawn in full
    spec = {"setting": "random", "ranges": {"resolution.slice_mm": [4.0, 6.0]}}
    return [simulate_study("mri", seed, appearance=spec) for seed in (21, 24)]


def brain_tissue(study):
    adc, mim, lesion = study.images["adc"], study.labels["mimics"], study.labels["lesion"] > 0
    return study.foreground["adc"] & (adc > 0.1) & (adc < 1.5) & (mim == 0) & ~lesion


def test_random_mri_varies_across_seeds_and_stays_physiological(random_mri):
    grids = {s.grid for s in random_mri}
    assert len(grids) == 2  # resolution and slice thickness are drawn
    for s in random_mri:
        spacing = s.grid.spacing_mm
        assert 0.9 <= spacing[0] <= 2.2 and 4.0 <= spacing[2] <= 6.0
        tissue = brain_tissue(s)
        assert 0.6 < np.median(s.images["adc"][tissue]) < 1.1  # 10^-3 mm²/s
        lesion = s.labels["lesion"] > 0
        assert lesion.sum() > 20
        assert s.images["dwi"][lesion].mean() > 1.15 * s.images["dwi"][tissue].mean()  # a lesion is DWI-bright
    scales = [np.median(s.images["dwi"][brain_tissue(s)]) for s in random_mri]
    assert max(scales) > 1.2 * min(scales)  # scanner units differ by study
    lesion_adc = [s.truth["record"]["lesion"]["adc_ratio"] for s in random_mri]
    assert max(lesion_adc) - min(lesion_adc) > 0.05  # faint to strong


@pytest.fixture(scope="module")
def mimics_study():
    return simulate_study("mri", 14, appearance=ALL_MIMICS)


def test_mimics_are_rendered_outside_the_truth_label_with_their_own_signature(mimics_study):
    s = mimics_study
    mim, lesion = s.labels["mimics"], s.labels["corepenumbra"] > 0
    dwi, adc, flair = s.images["dwi"], s.images["adc"], s.images["flair"]
    present = {name: int((mim == code).sum()) for name, code in MIMIC_CODES.items()}
    assert all(n > 0 for n in present.values()), present
    assert not (mim[lesion] > 0).any()  # mimics are label 0
    tissue = brain_tissue(s)
    wm_level = lambda img: np.median(img[tissue])  # noqa: E731
    shine = mim == MIMIC_CODES["shine_through"]
    assert np.median(dwi[shine]) > 1.2 * wm_level(dwi) and np.median(adc[shine]) > 1.1 * wm_level(adc)  # DWI bright, ADC high
    cavity = mim == MIMIC_CODES["old_infarct"]
    assert np.median(dwi[cavity]) < wm_level(dwi) and np.median(adc[cavity]) > 1.5 * wm_level(adc)  # DWI dark, ADC high
    assert np.median(flair[cavity]) < wm_level(flair)  # FLAIR-dark centre...
    assert np.median(flair[mim == MIMIC_CODES["gliosis"]]) > np.median(flair[cavity])  # ...with a brighter gliotic rim
    regional = mim == MIMIC_CODES["regional_t2"]
    assert np.median(dwi[regional]) > wm_level(dwi) and 0.8 * wm_level(adc) < np.median(adc[regional]) < 1.3 * wm_level(adc)  # bright, ADC normal
    wmh = mim == MIMIC_CODES["wmh"]
    assert np.median(flair[wmh]) > 1.2 * wm_level(flair)
    drawn = s.truth["record"]["susceptibility"]
    assert drawn["brain_ml_dropout"] > 1 or drawn["max_shift_px_in_brain"] > 1  # EPI distortion at the skull base


def test_random_cta_moves_the_phases_and_sets_the_noise():
    study = simulate_study("cta", 4, appearance={"setting": "random", "ranges": {"noise.hu": [15.0, 16.0], "timing.offset_s": [4.0, 6.0]}})
    assert study.acquisition["phase_times_s"][0] > phase_times_s(study.patient)[0] + 3.9  # a late arterial phase
    corner = study.images["cta1"][:16, :16, :].astype(float)  # air, where only noise varies (clipped at -1024)
    fixed = simulate_study("cta", 4).images["cta1"][:16, :16, :].astype(float)
    assert np.std(corner[corner > -1024]) > 1.5 * np.std(fixed[fixed > -1024])


def test_chronic_findings_from_the_anatomy_are_used_when_render_chunk_provides_them(monkeypatch):
    from strokelabel.phantom import mri

    real = mri.render_chunk

    def with_findings(patient, grid, zs, pieces=None):
        r = real(patient, grid, zs, pieces)
        deep_wm = (r["wm"] > 0.9) & (r["head_mm"][..., 2] > 20)  # a band of "WMH" high in the white matter
        return {**r, "wmh": deep_wm.astype(np.float32), "old_infarct": np.zeros_like(r["wm"]),
                "gliosis": np.zeros_like(r["wm"]), "skull_base_air": np.zeros_like(r["wm"])}

    monkeypatch.setattr(mri, "render_chunk", with_findings)
    spec = {"setting": "random", "on": ["wmh", "old_infarcts"], "off": ["skull", "susceptibility"],
            "ranges": {"resolution.slice_mm": [5.0, 6.0]}}
    s = simulate_study("mri", 24, appearance=spec)
    assert s.truth["record"]["fields_from_anatomy"] == ["gliosis", "old_infarct", "skull_base_air", "wmh"]
    assert not (s.labels["mimics"] == MIMIC_CODES["old_infarct"]).any()  # the anatomy has none: none drawn
    wmh = s.labels["mimics"] == MIMIC_CODES["wmh"]
    assert wmh.sum() > 100 and np.median(s.images["flair"][wmh]) > 1.2 * np.median(s.images["flair"][brain_tissue(s)])
