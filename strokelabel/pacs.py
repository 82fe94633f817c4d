"""Studies from a PACS over DICOMweb: the series of a study recognised by rules, and only the series a
task needs fetched, into a study folder the one study loader reads like any other.

- **Index** (:func:`index_pacs`): QIDO-RS lists studies and their series (metadata only, no pixels);
  each series is classified by the site's rules (:data:`DEFAULT_RULES`, or a JSON file of the same
  shape: ``STROKELABEL_SERIES_RULES``) into a modality key (``tmax``, ``dwi``, ``cta1``, ``ctp``...).
  A study's reference series (Tmax, DWI, CTA phase 1, else the 4D CTP) is its datastore image; any
  series UID of the study stands for the study (OHIF sends whichever series is on screen).
- **Folder**: each study gets ``<cache>/<study UID>/sub-<patient>/ses-<key>/`` named by the naming
  rule, with a ``source.json`` naming its series. Series are fetched (WADO-RS) when a task first
  needs them (:func:`fetch_modalities`, called by the study loader) and written as NIfTI atomically;
  the 4D CTP with its frame times in a BIDS sidecar.
- **Screenshots**: secondary captures and RGB series are never taken for values; they are listed
  by :func:`classify_study` as ``screenshot``.

Credentials: ``STROKELABEL_PACS_USER``/``STROKELABEL_PACS_PASSWORD`` (basic auth) or
``STROKELABEL_PACS_TOKEN`` (bearer), never in a URL or a log line.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from strokelabel.errors import StrokeLabelError

logger = logging.getLogger(__name__)

RULES_ENV = "STROKELABEL_SERIES_RULES"
# Where a site keeps clinical values in its DICOM headers: JSON {"nihss": "<keyword or (gggg,eeee)>", ...}.
CLINICAL_ENV = "STROKELABEL_CLINICAL_ATTRIBUTES"
SOURCE_FILE = "source.json"
SECONDARY_CAPTURE_CLASSES = ("1.2.840.10008.5.1.4.1.1.7",)  # and its multi-frame variants (prefix match)

# First matching rule wins. Each rule: the modality key it gives (``null``: recognised as *not* an input, with its
# ``reason``), and criteria that must all hold (regular expressions, case-insensitive): "dicom_modality",
# "description" (SeriesDescription; a list: every pattern must match), "not_description" (must not match),
# "image_type" (any value of ImageType), "min_instances". A site's JSON file has the same shape.
# The defaults follow the descriptions scanners, post-processing software and sites write (tests/strokelabel/
# test_pacs_rules.py holds the table): planning images and reformats are recognised first so that a "CTA MIP" is
# never taken for the CTA, then the CT perfusion maps before the 4D series whose description also says "perfusion",
# then the multiphase CTA phases (3 and 2 before 1, a CTA without a phase being the single-phase, arterial CTA).


def _token(pattern: str) -> str:
    """``pattern`` as a whole word, where ``_`` and ``-`` also end a word: protocol names join words with them
    (``ep2d_diff_3scan_trace_p2_ADC``, ``CTA_MP_3``, ``RAPID_TMAX``), and regex ``\\b`` takes ``_`` for a letter."""
    return rf"(?<![a-z0-9])(?:{pattern})(?![a-z0-9])"


def _phase(number: str) -> str:
    """An explicit CTA phase ``number``: "phase 2", "Multiphase 1", "MP_3", "mCTA2"; never a slice thickness ("1.0")."""
    return rf"(?<![a-z0-9])(?:phase|ph|mp|multi\s?-?phase|m?cta)[\s_:#-]*0?(?:{number})(?![0-9.])"


_CTA = _token(r"m?cta|ct\s?angio\w*|angio\w*|multi\s?-?phase")
_THRESHOLDED = r"[<>%]|relative"  # a thresholded or relative map (RAPID "CBF<30%", "rCBF") is not in the map's units
DEFAULT_RULES = [
    {"modality": None, "description": _token(r"localizer|locator|scout|topogram|surview|scanogram|dose\s?report|dose\s?info|"
                                             r"patient\s?protocol|screen\s?save|exam\s?summary"),
     "reason": "a planning image or a report, not an image volume"},
    {"modality": None, "image_type": r"^LOCALIZER$", "reason": "a planning image (ImageType LOCALIZER)"},
    {"modality": None, "dicom_modality": "MR", "description": r"exponential|" + _token(r"eadc|fa|colfa|dti|tensor|mddw|b\s?=?\s?0"),
     "reason": "a diffusion series that is neither the b1000 trace (DWI) nor the ADC map (eADC, FA, tensor, b0)"},
    {"modality": "tmax", "dicom_modality": "CT", "description": _token(r"t\s?-?max") + r"|time\s?to\s?max", "not_description": _THRESHOLDED},
    {"modality": "cbf", "dicom_modality": "CT", "description": _token(r"cbf") + r"|blood\s?flow", "not_description": _THRESHOLDED},
    {"modality": "cbv", "dicom_modality": "CT", "description": _token(r"cbv") + r"|blood\s?volume", "not_description": _THRESHOLDED},
    {"modality": "mtt", "dicom_modality": "CT", "description": _token(r"mtt") + r"|mean\s?transit", "not_description": _THRESHOLDED},
    {"modality": "ttp", "dicom_modality": "CT", "description": _token(r"ttp") + r"|time\s?to\s?peak", "not_description": _THRESHOLDED},
    # The temporal MIP of the perfusion series; a spatial MIP of a CTA ("CTA MIP") is a reformat (next rules).
    {"modality": "mip", "dicom_modality": "CT", "description": [_token(r"t?mip"), r"perf|temporal|" + _token(r"tmip|ctp|rapid|4d")]},
    {"modality": "ctp", "dicom_modality": "CT", "description": r"perf|dynamic|" + _token(r"ctp|4d|vpct"), "min_instances": 100},
    {"modality": None, "dicom_modality": "CT",
     "description": _token(r"mip|minip|mpr|mpvr|vrt?|3d|volume\s?rendering|sag\w*|cor|coronal|curved|cpr|thick\s?slab|reformat\w*"),
     "reason": "a reformat or rendering of another series (MIP, MPR, 3D/VR, sagittal, coronal), not the acquired volume"},
    {"modality": "cta3", "dicom_modality": "CT", "description": [_CTA, _phase("3") + "|" + _token(r"late\w*|delayed|3rd|third")]},
    {"modality": "cta2", "dicom_modality": "CT", "description": [_CTA, _phase("2") + "|" + _token(r"ven(?:ous|ös|os)|2nd|second")]},
    {"modality": "cta1", "dicom_modality": "CT", "description": [_CTA, _phase("1") + "|" + _token(r"arteri\w*|1st|first|early")]},
    # A CTA without a phase is the single-phase CTA, acquired in the arterial phase ("Angio Head 1.0 CE": 1.0 mm slices).
    {"modality": "cta1", "dicom_modality": "CT", "description": _CTA, "not_description": _phase("[0-9]")},
    {"modality": "ncct", "dicom_modality": "CT", "description": r"non.?contrast|w/?o\s?contrast|" + _token(r"ncct|plain|nativ\w*|head"),
     "not_description": r"perf|" + _CTA + "|" + _token(r"ctp|4d")},
    {"modality": "adc", "dicom_modality": "MR", "description": _token(r"d?adc") + r"|apparent\s?diff"},
    {"modality": "adc", "dicom_modality": "MR", "image_type": r"^ADC$"},
    {"modality": "dwi", "dicom_modality": "MR", "description": r"diffusion|" + _token(r"dwi|trace\w*|b\s?=?\s?1000|1000\s?b|ep2d_diff|resolve")},
    {"modality": "flair", "dicom_modality": "MR", "description": r"flair|dark.?fluid"},
]
REFERENCE_ORDER = ("tmax", "dwi", "cta1", "ctp")
REFERENCE_NAMES = {"tmax": "Tmax map", "dwi": "DWI", "cta1": "CTA phase 1", "ctp": "4D CT perfusion"}


@dataclass
class SeriesInfo:
    uid: str
    description: str
    dicom_modality: str
    instances: int
    image_type: list = field(default_factory=list)
    sop_class: str = ""
    modality: str | None = None  # the key the rules gave, or "screenshot", or None (not recognised)
    reason: str = ""  # why the rules gave that key, or none (what a site reads to fix its rules)

    def as_json(self) -> dict:
        return {"uid": self.uid, "description": self.description, "dicom_modality": self.dicom_modality, "instances": self.instances,
                "image_type": self.image_type, "modality": self.modality, "reason": self.reason}


@dataclass
class PacsStudy:
    study_uid: str
    patient_id: str
    study_date: str
    series: list[SeriesInfo]

    @property
    def subject(self) -> str:
        """A pseudonym of the patient ID: the cache's folder names and the log never carry the ID itself."""
        return pseudonym(self.patient_id)

    @property
    def session(self) -> str:
        return hashlib.sha1(self.study_uid.encode()).hexdigest()[:8]  # one study, one session key

    def series_of(self) -> dict[str, SeriesInfo]:
        """Modality key -> series (the first series of each key, in the PACS' order)."""
        out: dict[str, SeriesInfo] = {}
        for s in self.series:
            if s.modality and s.modality not in ("screenshot", "seg"):
                out.setdefault(s.modality, s)
        return out

    @property
    def reference(self) -> SeriesInfo | None:
        found = self.series_of()
        return next((found[m] for m in REFERENCE_ORDER if m in found), None)

    def why_not_listed(self) -> str:
        """Why no series of the study became its reference ("" when one did): what was recognised, and that none
        of it is a reference; each series' own ``reason`` says why it was recognised as what it was, or not."""
        if self.reference is not None:
            return ""
        wanted = ", ".join(REFERENCE_NAMES[m] for m in REFERENCE_ORDER)
        found = sorted(set(self.series_of()))
        seen = f"{len(self.series)} series seen" + (f", recognised as {', '.join(found)}" if found else ", none recognised as an input")
        return f"no series is a reference ({wanted}): {seen}"


def pseudonym(patient_id: str) -> str:
    return "p" + hashlib.sha256(str(patient_id).encode()).hexdigest()[:10]


def load_rules(path: str | os.PathLike | None = None) -> list[dict]:
    path = path or os.environ.get(RULES_ENV)
    if not path:
        return DEFAULT_RULES
    try:
        rules = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise StrokeLabelError(f"the series rules {path} could not be read: {e}") from e
    return rules["rules"] if isinstance(rules, dict) else rules


def classify(series: SeriesInfo, rules: Iterable[dict]) -> str | None:
    """The modality key of ``series`` by the first rule it meets; ``screenshot`` for secondary captures/RGB."""
    return explain(series, rules)[0]


def _all_match(patterns: str | list[str], text: str) -> bool:
    return all(re.search(p, text or "", re.IGNORECASE) for p in ([patterns] if isinstance(patterns, str) else patterns))


def explain(series: SeriesInfo, rules: Iterable[dict]) -> tuple[str | None, str]:
    """(modality key, why): the key of the first rule ``series`` meets, and a sentence a site reads to fix its
    rules: the rule that decided, or for a series no rule took, the nearest miss (a rule its description met
    but another criterion did not: the DICOM modality, too few instances, an excluded word)."""
    if series.sop_class.startswith(SECONDARY_CAPTURE_CLASSES) or series.dicom_modality in ("OT", "SC"):
        return "screenshot", "a picture (Secondary Capture, OT or SC): never read for values"
    if series.dicom_modality == "SEG":
        return "seg", "a segmentation"
    near_miss = ""
    for number, rule in enumerate(rules, start=1):
        name = rule.get("modality")
        described = "description" not in rule or _all_match(rule["description"], series.description)
        typed = "image_type" not in rule or any(re.search(rule["image_type"], str(v), re.IGNORECASE) for v in series.image_type)
        if not (described and typed):
            continue
        misses = []
        if "dicom_modality" in rule and series.dicom_modality.upper() != rule["dicom_modality"].upper():
            misses.append(f"it is {series.dicom_modality or 'no modality'}, the rule wants {rule['dicom_modality']}")
        if "not_description" in rule and re.search(rule["not_description"], series.description or "", re.IGNORECASE):
            misses.append(f"its description has a word the rule excludes ({rule['not_description']!r})")
        if series.instances < int(rule.get("min_instances", 0)):
            misses.append(f"it has {series.instances} instances, the rule wants at least {rule['min_instances']}")
        if misses:
            if rule.get("modality") is not None:
                near_miss = near_miss or f"looks like {name} (rule {number}), but {'; '.join(misses)}"
            continue
        if rule.get("modality") is None:
            return None, f"rule {number}: {rule.get('reason', 'not an input')}"
        return rule["modality"], f"rule {number} ({rule['modality']})"
    return None, near_miss or "no rule matches its description or image type"


# ---- DICOMweb ---------------------------------------------------------------------------------------
def authenticated_session():
    """A requests session with the PACS credentials from the environment (module docstring)."""
    import requests

    session = requests.Session()
    if os.environ.get("STROKELABEL_PACS_TOKEN"):
        session.headers["Authorization"] = f"Bearer {os.environ['STROKELABEL_PACS_TOKEN']}"
    elif os.environ.get("STROKELABEL_PACS_USER"):
        session.auth = (os.environ["STROKELABEL_PACS_USER"], os.environ.get("STROKELABEL_PACS_PASSWORD", ""))
    return session


def client_for(url: str):
    """A DICOMweb client for ``url`` with the credentials from the environment."""
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(url=url.rstrip("/"), session=authenticated_session())
    # A few quick retries: a PACS that is down must not hold a request (or the server's start) for a minute.
    client.set_http_retry_params(retry=True, max_attempts=3, wait_exponential_multiplier=200)
    return client


def _value(item: dict, tag: str, default=""):
    values = item.get(tag, {}).get("Value")
    if not values:
        return default
    value = values[0]
    return value.get("Alphabetic", default) if isinstance(value, dict) else value


def index_pacs(client, rules: list[dict] | None = None) -> list[PacsStudy]:
    """Every study of the PACS with its series classified (metadata only: QIDO-RS, one instance header per series)."""
    rules = rules or load_rules()
    studies = []
    for item in client.search_for_studies(fields=["PatientID", "StudyDate"], get_remaining=True):
        study_uid = _value(item, "0020000D")
        series = []
        for s in client.search_for_series(study_uid, fields=["SeriesDescription", "Modality", "NumberOfSeriesRelatedInstances"]):
            info = SeriesInfo(uid=_value(s, "0020000E"), description=str(_value(s, "0008103E")), dicom_modality=str(_value(s, "00080060")),
                              instances=int(_value(s, "00201209", 0) or 0))
            first = client.search_for_instances(study_uid, info.uid, limit=1, fields=["ImageType", "SOPClassUID"])
            if first:
                info.sop_class = str(_value(first[0], "00080016"))
                info.image_type = [str(v) for v in first[0].get("00080008", {}).get("Value", [])]
            info.modality, info.reason = explain(info, rules)
            series.append(info)
        studies.append(PacsStudy(study_uid, str(_value(item, "00100020")), str(_value(item, "00080020")), series))
    return studies


def study_folder(cache: str | Path, study: PacsStudy) -> Path:
    return Path(cache) / study.study_uid / f"sub-{study.subject}" / f"ses-{study.session}"


def prepare_folder(cache: str | Path, study: PacsStudy, url: str) -> Path:
    """The study's folder with its ``source.json`` (series per modality, PACS URL); returns the reference's path."""
    from strokelabel.derived import atomic_write_bytes
    from strokelabel.naming import study_filename

    folder = study_folder(cache, study)
    source = {"url": url, "study_uid": study.study_uid, "patient_id": study.patient_id,
              "series": {m: s.uid for m, s in study.series_of().items()}}
    path = folder / SOURCE_FILE
    if not path.exists() or json.loads(path.read_text()) != source:
        atomic_write_bytes(path, json.dumps(source, indent=1).encode())
    return folder / study_filename(study.subject, study.session, study.reference.modality)


def clinical_from_header(ds, mapping: dict | None = None) -> dict:
    """Clinical values from a DICOM header by the site's mapping (``$STROKELABEL_CLINICAL_ATTRIBUTES``):
    the first number in each named attribute (``PatientComments``, ``(0011,1001)``...)."""
    if mapping is None:
        mapping = json.loads(os.environ.get(CLINICAL_ENV) or "{}")
    values = {}
    for key, attribute in mapping.items():
        tag = re.fullmatch(r"\(?([0-9A-Fa-f]{4}),([0-9A-Fa-f]{4})\)?", attribute.strip())
        element = ds.get((int(tag.group(1), 16), int(tag.group(2), 16))) if tag else ds.data_element(attribute) if attribute in ds else None
        number = re.search(r"-?\d+(?:\.\d+)?", str(element.value)) if element is not None else None
        if number:
            values[key] = float(number.group())
    return values


def write_clinical_sidecar(folder: Path, subject: str, session: str, ds) -> None:
    """The study's clinical sidecar (the naming rule's ``sub-<id>_ses-<n>.json``) from its DICOM header, once."""
    from strokelabel.derived import atomic_write_bytes
    from strokelabel.naming import sidecar_filename

    path = folder / sidecar_filename(subject, session)
    values = clinical_from_header(ds)
    if values and not path.exists():
        atomic_write_bytes(path, json.dumps(values).encode())


def fetchable_modalities(reference: str | Path) -> set[str]:
    """The modalities a PACS study folder can fetch (its source's series), on disk or not; empty for a
    study that did not come from a PACS."""
    source_path = Path(reference).parent / SOURCE_FILE
    if not source_path.exists():
        return set()
    return set(json.loads(source_path.read_text())["series"])


def fetch_modalities(reference: str | Path, wanted: Iterable[str]) -> dict[str, Path]:
    """Fetch the series of ``wanted`` modalities of a PACS study folder that are not on disk yet
    (WADO-RS), write them as NIfTI atomically; returns {modality: path} of what is there now."""
    from strokelabel.derived import atomic_save_nifti, atomic_write_bytes
    from strokelabel.dicom import read_series
    from strokelabel.naming import parse_filename, study_filename

    folder = Path(reference).parent
    source_path = folder / SOURCE_FILE
    if not source_path.exists():
        return {}
    source = json.loads(source_path.read_text())
    parsed = parse_filename(Path(reference).name)
    present = {}
    client = None
    for modality in wanted:
        uid = source["series"].get(modality)
        if uid is None:
            continue
        path = folder / study_filename(parsed.subject, parsed.session, modality)
        if not path.exists():
            client = client or client_for(source["url"])
            logger.info("%s: fetching the %s series from the PACS", parsed.study_id, modality)
            with tempfile.TemporaryDirectory() as tmp:
                files = []
                headers = folder / "dicom" / modality  # kept without pixels: a SEG drawn on this series references them
                headers.mkdir(parents=True, exist_ok=True)
                for i, ds in enumerate(client.retrieve_series(source["study_uid"], uid)):
                    files.append(Path(tmp) / f"{i:05d}.dcm")
                    ds.save_as(str(files[-1]), write_like_original=False)
                    del ds.PixelData
                    ds.save_as(str(headers / f"{i:05d}.dcm"), write_like_original=False)
                    if i == 0:
                        write_clinical_sidecar(folder, parsed.subject, parsed.session, ds)
                if not files:
                    raise StrokeLabelError(f"the PACS returned no instance of the {modality} series {uid}", study=parsed.study_id)
                values, affine, times = read_series(files)
            if times is not None:  # the 4D series: frame times in its BIDS sidecar, as dcm2niix writes them
                atomic_write_bytes(path.with_name(path.name.split(".nii")[0] + ".json"),
                                   json.dumps({"FrameTimesStart": [float(t) for t in times]}).encode())
            atomic_save_nifti(values.astype(np.float32), affine, path)
        present[modality] = path
    return present


def main(argv=None) -> int:
    """Dry run: how each series of each study on the PACS is classified by the rules in use."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m strokelabel.pacs", description=main.__doc__)
    parser.add_argument("url", help="the DICOMweb root, e.g. http://127.0.0.1:8042/dicom-web")
    parser.add_argument("--rules", default=None, help=f"a series-rules JSON file (default: ${RULES_ENV}, else the built-in rules)")
    args = parser.parse_args(argv)
    studies = index_pacs(client_for(args.url), load_rules(args.rules))
    for study in studies:
        reference = study.reference
        print(f"study {study.study_uid} patient {study.patient_id} date {study.study_date}: "
              f"{'reference ' + reference.modality + ' ' + reference.uid if reference else 'NOT LISTED: ' + study.why_not_listed()}")
        for s in study.series:
            print(f"  {s.modality or 'unrecognised':12s} {s.dicom_modality:3s} {s.instances:5d} instances  {s.description!r}  "
                  f"ImageType {'/'.join(s.image_type)}  {s.uid}")
            if reference is None or s.modality is None:  # why, where a site has something to fix
                print(f"  {'':12s} why: {s.reason}" + (f": {s.modality} is not a reference" if reference is None and s.modality else ""))
    print(f"{len(studies)} studies, {sum(1 for s in studies if s.reference)} listed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


# ---- labels as DICOM-SEG in the PACS ------------------------------------------------------------------
def corrected_segs(client, study: PacsStudy) -> list[dict]:
    """The study's SEG series a clinician corrected (SegmentAlgorithmType MANUAL or SEMIAUTOMATIC), newest first:
    only these are training labels, never unreviewed AI output (AUTOMATIC)."""
    import pydicom

    found = []
    for s in study.series:
        if s.modality != "seg":
            continue
        for metadata in client.retrieve_series_metadata(study.study_uid, s.uid):
            ds = pydicom.Dataset.from_json(metadata)
            from strokelabel.dicom import seg_algorithm_type, seg_provenance

            kind = seg_algorithm_type(ds)
            if kind in ("MANUAL", "SEMIAUTOMATIC"):
                when = f"{ds.get('ContentDate', ds.get('SeriesDate', ''))}{ds.get('ContentTime', ds.get('SeriesTime', ''))}"
                found.append({"series_uid": s.uid, "instance_uid": str(ds.SOPInstanceUID), "when": when, "algorithm_type": kind,
                              "provenance": seg_provenance(ds)})
    return sorted(found, key=lambda x: x["when"], reverse=True)


def fetch_seg_label(client, study: PacsStudy, seg: dict, reference: Path, names_to_values: dict[str, int], out_path: Path) -> Path:
    """The SEG as a label NIfTI on the reference's grid (resampled by nearest neighbour when drawn on another series), written atomically."""
    import SimpleITK as sitk

    from strokelabel.derived import atomic_write_bytes
    from strokelabel.dicom import read_seg

    dataset = client.retrieve_instance(study.study_uid, seg["series_uid"], seg["instance_uid"])
    label = read_seg(dataset, names_to_values)
    grid = sitk.ReadImage(str(reference))
    if grid.GetDimension() == 4:  # a 4D reference: its spatial grid
        grid = grid[:, :, :, 0]
    resampled = sitk.Resample(label, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    with tempfile.TemporaryDirectory() as tmp:
        written = Path(tmp) / "label.nii.gz"
        sitk.WriteImage(resampled, str(written))
        atomic_write_bytes(out_path, written.read_bytes())
    return out_path


def store_once(client, dataset) -> bool:
    """Store ``dataset`` in the PACS (STOW-RS) unless its series is already there (QIDO-RS); True when it was stored.
    With UIDs derived from the answer (:func:`strokelabel.dicom.identify`), a rerun adds nothing to the archive."""
    found = client.search_for_series(str(dataset.StudyInstanceUID), search_filters={"SeriesInstanceUID": str(dataset.SeriesInstanceUID)})
    if found:
        return False
    client.store_instances([dataset])
    return True


def store_seg(client, dataset) -> bool:
    """Store a SEG in the PACS (STOW-RS), once per series UID; True when it was stored."""
    return store_once(client, dataset)


def store_summary(reference: str | Path, png_path: str | Path, task: str) -> str | None:
    """Store the summary picture of a PACS study in the PACS as a Secondary Capture of that study, once: the same
    picture of the same task (same answer, method and model) is the same object, stored nothing new; returns its SOP
    Instance UID, or None when the study is not from a PACS."""
    import pydicom
    from PIL import Image

    from strokelabel.dicom import answer_identity, identify, secondary_capture

    folder = Path(reference).parent
    source_path = folder / SOURCE_FILE
    if not source_path.exists():
        return None
    source = json.loads(source_path.read_text())
    header_file = next((p for p in sorted((folder / "dicom").rglob("*.dcm"))), None)
    if header_file is None:
        raise StrokeLabelError("no DICOM header of the study is cached: the summary cannot be filed under it")
    dataset = secondary_capture(png_path, pydicom.dcmread(str(header_file), stop_before_pixels=True), f"StrokeLabel {task} summary")
    pixels = np.asarray(Image.open(str(png_path)).convert("RGB"))  # the picture, not its PNG encoding
    identify(dataset, answer_identity(source["study_uid"], task, "summary", pixels))
    if not store_once(client_for(source["url"]), dataset):
        logger.info("%s: the %s summary picture is already in the PACS", folder.name, task)
    return str(dataset.SOPInstanceUID)
