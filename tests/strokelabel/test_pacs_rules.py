"""Series rules: common vendor series names are recognised, screenshots never are, a site's own rules replace them."""

from __future__ import annotations

import json

import pytest

from strokelabel.pacs import PacsStudy, SeriesInfo, classify, explain, load_rules


# The default rules on descriptions that scanners, post-processing software and sites really write: (description,
# DICOM modality, number of instances, the key the rules must give, why). None: not an input of any task.
CTA_PHASES = [
    ("mCTA phase 1 (arterial)", "CT", 300, "cta1", "a usual multiphase-CTA name: the m glued to CTA must not hide it"),
    ("CTA Multiphase 1", "CT", 300, "cta1", "the phase number after 'Multiphase'"),
    ("Multiphase CTA Phase 2", "CT", 300, "cta2", "'Phase 2' after the CTA word"),
    ("CTA_MP_3", "CT", 300, "cta3", "a protocol name: words joined by _, MP = multiphase, phase 3"),
    ("Arterial phase CTA", "CT", 300, "cta1", "the arterial phase is phase 1 of a multiphase CTA"),
    ("Angio Head 1.0 CE", "CT", 300, "cta1",
     "Siemens' single-phase CT angiography: 1.0 is the slice thickness in mm, not a phase, CE = contrast-enhanced; "
     "a single-phase CTA is acquired in the arterial phase"),
    ("CTA Head 3.0 mm", "CT", 300, "cta1", "a slice thickness of 3.0 is not phase 3"),
    ("mCTA phase 2 (peak venous)", "CT", 300, "cta2", "the peak venous phase is phase 2"),
    ("mCTA phase 3 (late venous)", "CT", 300, "cta3", "'late venous' must not be read as the venous phase 2"),
    ("Venous phase CTA", "CT", 300, "cta2", "the venous phase of a multiphase CTA is phase 2"),
    ("CTA delayed", "CT", 300, "cta3", "the delayed phase is phase 3"),
    ("mCTA_2", "CT", 300, "cta2", "the phase number glued to the protocol name"),
    ("CT Angiography Circle of Willis", "CT", 300, "cta1", "a single-phase CTA"),
    ("CTA phase 1 arterial", "CT", 300, "cta1", "as the project's converter writes it"),
]
NOT_CTA_PHASES = [
    ("CTA MIP", "CT", 40, None, "a maximum-intensity projection rendered from the CTA, not its acquired slices"),
    ("CTA 3D VR", "CT", 1, None, "a volume rendering (a picture) of the CTA"),
    ("CTA Sag MIP", "CT", 40, None, "a sagittal reformat"),
    ("CTP 4D", "CT", 900, "ctp", "the raw 4D CT perfusion series"),
    ("CTP 4D", "CT", 20, None, "20 instances cannot be a 4D perfusion series of a brain (at least 100)"),
    ("Perfusion", "CT", 900, "ctp", "the 4D perfusion series as many sites name it"),
    ("Perfusion", "CT", 20, None, "too few instances for the 4D series, and no map name"),
    ("CTP Head", "CT", 20, None, "a perfusion series (too short) is not a non-contrast head CT because it says 'head'"),
    ("Localizer", "CT", 3, None, "a planning image"),
    ("Topogram", "CT", 1, None, "Siemens' planning image"),
    ("Dose Report", "CT", 1, None, "the dose report, stored by some scanners as a CT series"),
    ("Scout", "CT", 2, None, "GE's planning image"),
    ("Surview", "CT", 1, None, "Philips' planning image"),
]
PERFUSION_MAPS = [
    ("RAPID Tmax", "CT", 20, "tmax", "RAPID's map series"), ("RAPID_TMAX", "CT", 20, "tmax", "the same, words joined by _"),
    ("Tmax perfusion map", "CT", 20, "tmax", "as the project's converter writes it"),
    ("Time to Maximum", "CT", 20, "tmax", "spelled out"),
    ("CBF", "CT", 20, "cbf", "the usual map name"), ("RAPID CBF", "CT", 20, "cbf", "RAPID's CBF map"),
    ("Cerebral Blood Flow", "CT", 20, "cbf", "spelled out"), ("Cerebral Blood Volume", "CT", 20, "cbv", "spelled out"),
    ("CBV", "CT", 20, "cbv", "the usual map name"), ("MTT", "CT", 20, "mtt", "the usual map name"),
    ("Mean Transit Time", "CT", 20, "mtt", "spelled out"), ("TTP", "CT", 20, "ttp", "the usual map name"),
    ("tMIP", "CT", 20, "mip", "the temporal MIP of the perfusion series"), ("MIP perfusion", "CT", 20, "mip", "the converter's"),
    ("Brain Perfusion 4D", "CT", 900, "ctp", "the 4D series (the maps come before it)"),
    ("RAPID CBF<30%", "CT", 20, None, "a thresholded mask, not CBF in mL/100g/min"),
    ("rCBF", "CT", 20, None, "relative CBF, not in mL/100g/min"),
    ("RAPID Tmax", "MR", 20, None, "an MR perfusion map: the app's perfusion tasks are CT ones"),
    ("CBF", "MR", 20, None, "an arterial spin labelling map: MR, not CT perfusion"),
]
DIFFUSION = [
    ("ep2d_diff_3scan_trace_p2_ADC", "MR", 25, "adc", "Siemens' ADC map"),
    ("ep2d_diff_3scan_trace_p2_TRACEW", "MR", 50, "dwi", "Siemens' trace-weighted DWI"),
    ("ep2d_diff_3scan_trace_p2", "MR", 50, "dwi", "Siemens' DWI series"),
    ("DWI b1000", "MR", 25, "dwi", "the usual name"), ("DWI b1000 TRACE", "MR", 25, "dwi", "as the converter writes it"),
    ("Ax DWI 1000b", "MR", 25, "dwi", "GE's axial DWI"), ("DWI_SENSE", "MR", 25, "dwi", "Philips' DWI"),
    ("RESOLVE_DWI_TRACEW", "MR", 25, "dwi", "Siemens' readout-segmented DWI"),
    ("Apparent Diffusion Coefficient (mm2/s)", "MR", 25, "adc", "GE's ADC map"),
    ("ADC (10^-6 mm²/s)", "MR", 25, "adc", "an ADC map with its units"), ("dADC", "MR", 25, "adc", "Philips' ADC map"),
    ("DWI_ADC", "MR", 25, "adc", "an ADC map named after its DWI"),
    ("Exponential Apparent Diffusion Coefficient", "MR", 25, None, "GE's eADC = exp(-b·ADC): not an ADC map"),
    ("eADC", "MR", 25, None, "the exponential ADC"),
    ("ep2d_diff_3scan_trace_p2_FA", "MR", 25, None, "fractional anisotropy"), ("DTI_ColFA", "MR", 25, None, "a colour FA map"),
    ("DWI b0", "MR", 25, None, "the b = 0 image is not the b1000 DWI"),
    ("t2_tirm_tra_dark-fluid", "MR", 25, "flair", "Siemens' FLAIR"), ("AX T2 FLAIR", "MR", 25, "flair", "GE's FLAIR"),
    ("t1_mprage_sag_p2_iso", "MR", 176, None, "a T1 is not an input"),
    ("Head non-contrast", "CT", 30, "ncct", "the non-contrast CT"),
]


@pytest.mark.parametrize("description,modality,instances,expected,why", CTA_PHASES + NOT_CTA_PHASES + PERFUSION_MAPS + DIFFUSION)
def test_the_default_rules_read_real_series_descriptions(description, modality, instances, expected, why):
    found, reason = explain(SeriesInfo("1.2", description, modality, instances), load_rules())
    assert found == expected, f"{description!r} ({modality}, {instances} instances) is {expected} because {why}; the rules say {found}: {reason}"


@pytest.mark.parametrize("description,modality,instances,expected,why", NOT_CTA_PHASES)
def test_reformats_planning_images_and_perfusion_are_never_a_cta_phase(description, modality, instances, expected, why):
    assert classify(SeriesInfo("1.2", description, modality, instances), load_rules()) not in ("cta1", "cta2", "cta3"), why


def test_a_series_no_rule_takes_says_which_rule_it_nearly_met():
    _, reason = explain(SeriesInfo("1.2", "CT Perfusion 4D", "CT", 20), load_rules())
    assert "looks like ctp" in reason and "20 instances" in reason and "at least 100" in reason
    _, reason = explain(SeriesInfo("1.2", "RAPID Tmax", "MR", 20), load_rules())
    assert "looks like tmax" in reason and "it is MR, the rule wants CT" in reason
    _, reason = explain(SeriesInfo("1.2", "CTA MIP", "CT", 40), load_rules())
    assert "reformat" in reason


def test_a_study_without_a_reference_says_what_it_saw():
    series = [SeriesInfo("1.1", "CTA MIP", "CT", 40), SeriesInfo("1.2", "mCTA phase 2 (peak venous)", "CT", 300),
              SeriesInfo("1.3", "Localizer", "CT", 3)]
    for s in series:
        s.modality, s.reason = explain(s, load_rules())
    study = PacsStudy("1.9", "PAT 7", "20260101", series)
    assert study.reference is None
    why = study.why_not_listed()
    assert "no series is a reference" in why and "CTA phase 1" in why and "3 series seen" in why and "cta2" in why
    series.append(SeriesInfo("1.4", "mCTA phase 1 (arterial)", "CT", 300, modality="cta1"))
    assert study.reference.uid == "1.4" and study.why_not_listed() == ""


def test_a_coloured_screenshot_is_never_taken_for_a_map():
    screenshot = SeriesInfo("1.3", "RAPID CBF Tmax summary", "CT", 1, sop_class="1.2.840.10008.5.1.4.1.1.7")
    assert classify(screenshot, load_rules()) == "screenshot"


def test_a_sites_rules_file_replaces_the_defaults_and_picks_the_reference(tmp_path, monkeypatch):
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"rules": [{"modality": "tmax", "description": "^Zeit bis Maximum$"}]}))
    monkeypatch.setenv("STROKELABEL_SERIES_RULES", str(rules))
    series = [SeriesInfo("1.4", "Zeit bis Maximum", "CT", 20), SeriesInfo("1.5", "Tmax", "CT", 20)]
    for s in series:
        s.modality = classify(s, load_rules())
    assert [s.modality for s in series] == ["tmax", None]
    assert PacsStudy("1.9", "PAT 7", "20260101", series).reference.uid == "1.4"


def test_clinical_values_come_from_the_attribute_a_site_names():
    import pydicom

    from strokelabel.pacs import clinical_from_header

    ds = pydicom.Dataset()
    ds.PatientComments = "NIHSS 14, wake-up stroke"
    ds.add_new((0x0011, 0x1001), "LO", "onset 95 min")
    mapping = {"nihss": "PatientComments", "onset_to_imaging_min": "(0011,1001)", "missing": "StudyComments"}
    assert clinical_from_header(ds, mapping) == {"nihss": 14.0, "onset_to_imaging_min": 95.0}


def test_clinical_values_of_a_request_are_checked():
    from strokelabel.errors import StrokeLabelError
    from strokelabel.study import clinical_from_request

    assert clinical_from_request({"nihss": "12", "method": "auto"}, "s") == {"nihss": 12.0}
    assert clinical_from_request({"nihss": [7]}, "s") == {"nihss": 7.0}  # dropdown-style lists as the clients send them
    for bad, words in (({"nihss": "high"}, "not a number"), ({"nihss": 50}, "outside 0-42")):
        with pytest.raises(StrokeLabelError, match=words):
            clinical_from_request(bad, "s")


def test_the_dry_run_says_why_a_study_on_a_real_pacs_is_not_listed(tmp_path, capsys):
    """``python -m strokelabel.pacs <url>`` on Debian's Orthanc: a multiphase CTA named as sites name it is listed by
    its phase 1; a study holding only a CTA MIP, its venous phase and a localizer is not, and the dry run says why."""
    import numpy as np

    from strokelabel.dicom import SeriesSpec, StudySpec, write_series
    from strokelabel.orthanc import orthanc_binary, running_orthanc
    from strokelabel.pacs import main

    if orthanc_binary() is None:
        pytest.skip("Orthanc is not installed (scripts/setup_system.sh)")
    values, affine = np.zeros((8, 8, 3), np.float32), np.diag([2.0, 2.0, 5.0, 1.0])
    listed, unlisted = StudySpec(patient_id="DRY-1"), StudySpec(patient_id="DRY-2")
    files = []
    for number, (study, description) in enumerate([(listed, "mCTA phase 1 (arterial)"), (listed, "mCTA phase 3 (late venous)"),
                                                   (unlisted, "CTA MIP"), (unlisted, "mCTA phase 2 (peak venous)"), (unlisted, "Localizer")], 1):
        files += write_series(values, affine, tmp_path / "dicom" / str(number), study, SeriesSpec(description, number=number))
    with running_orthanc(tmp_path / "orthanc") as orthanc:
        orthanc.upload(files)
        assert main([orthanc.dicomweb]) == 0
    out = capsys.readouterr().out
    lines = {line.split(" patient ")[0]: line for line in out.splitlines() if line.startswith("study ")}
    assert "reference cta1" in lines[f"study {listed.study_uid}"]
    assert "NOT LISTED: no series is a reference (Tmax map, DWI, CTA phase 1, 4D CT perfusion): 3 series seen, recognised as cta2" \
        in lines[f"study {unlisted.study_uid}"]
    unlisted_block = out.split(f"study {unlisted.study_uid}")[1].split("\nstudy ")[0]
    assert "why: rule" in unlisted_block and "a reformat or rendering" in unlisted_block and "a planning image" in unlisted_block
    assert out.rstrip().endswith("2 studies, 1 listed")
