"""Series rules: common vendor series names are recognised, screenshots never are, a site's own rules replace them."""

from __future__ import annotations

import json

import pytest

from strokelabel.pacs import PacsStudy, SeriesInfo, classify, load_rules


@pytest.mark.parametrize(
    "description,modality,instances,expected",
    [
        ("RAPID TMAX", "CT", 20, "tmax"), ("Tmax perfusion map", "CT", 20, "tmax"), ("CBF", "CT", 20, "cbf"),
        ("Cerebral Blood Volume", "CT", 20, "cbv"), ("MTT", "CT", 20, "mtt"), ("Brain Perfusion 4D", "CT", 900, "ctp"),
        ("Brain Perfusion 4D", "CT", 20, None), ("CTA Head arterial", "CT", 300, "cta1"), ("CTA phase 3 late venous", "CT", 300, "cta3"),
        ("Head non-contrast", "CT", 30, "ncct"), ("ep2d_diff_3scan_trace_p2_ADC", "MR", 25, "adc"), ("DWI b1000 TRACE", "MR", 25, "dwi"),
        ("t2_tirm_tra_dark-fluid FLAIR", "MR", 25, "flair"), ("Localizer", "CT", 3, None),
    ],
)
def test_common_series_names_are_recognised(description, modality, instances, expected):
    assert classify(SeriesInfo("1.2", description, modality, instances), load_rules()) == expected


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
