"""The study naming rule (BIDS, as ISLES'22 and ISLES'24 distribute their data).

A study file is ``sub-<id>_ses-<n>[_acq-<acq>]_<suffix>.nii[.gz]``; its modalities lie in
the same folder, or in sibling BIDS datatype folders (``anat``, ``dwi``, ``perf``...) of
the same session. The datastore image of a study is its *reference volume*: Tmax for CT
perfusion, DWI for MRI, the first CTA phase for multiphase CTA.

Modality keys used throughout the project: the BIDS suffix in lower case, except the
CTA phases, which are ``cta1``, ``cta2``, ``cta3``.

The AMI layout (seed 002) is accepted too, as sites have it: one folder per patient
``<id>/`` holding ``CTA1.nii``, ``CTA2regA.nii``, ``CTA3regA.nii``, ``SpiralregA.nii``,
``ATLASMASKregA.nii`` (regions 0..14) and ``<id>_clot.nii`` (0/1/2; 1 and 2 are clot), with or
without ``.gz``. The subject is the folder name (or an ``<id>_`` prefix: the datastore names
such a study ``<id>_CTA1``), the session ``01``, and ``StudyFile.layout`` is ``"ami"``.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from strokelabel.errors import StrokeLabelError

logger = logging.getLogger(__name__)

NIFTI_EXTENSIONS = (".nii.gz", ".nii")

SUFFIXES = ("cbf", "cbv", "mtt", "tmax", "ttp", "mip", "ncct", "cta", "ctp", "dwi", "adc", "flair", "spiral", "atlas")

# Study kind -> modality key of its reference volume (the datastore image).
REFERENCE_MODALITY = {"ctp": "tmax", "mri": "dwi", "cta": "cta1"}
# A CT perfusion study that has only its raw 4D series: the series is the reference, and the
# maps are computed from it (strokelabel.computed_maps).
SERIES_REFERENCE = "ctp"

# Folders under a studies root that never hold study images.
NON_STUDY_DIRS = ("labels", "derivatives", "model", "logs", ".venv")
# Under a data set's top-level ``derivatives/``, only co-registered images (a ``space-`` entity,
# ISLES'24's ``space-ncct``) are studies; these folders of it never are (phantom truth, the app's own files).
NON_STUDY_DERIVATIVES = ("truth", "strokelabel")

_NAME_RE = re.compile(
    r"^sub-(?P<subject>[A-Za-z0-9]+)_ses-(?P<session>[A-Za-z0-9]+)"
    r"(?:_acq-(?P<acq>[A-Za-z0-9]+))?(?P<entities>(?:_[a-z]+-[A-Za-z0-9]+)*)"
    r"_(?:(?P<target>[a-z]+)-(?=msk\.))?(?P<suffix>[A-Za-z0-9]+)(?P<ext>\.nii(?:\.gz)?)$"
)
_SPACE_RE = re.compile(r"_space-([A-Za-z0-9]+)")


# AMI file stem -> modality key (seed 002's data set).
AMI_FILES = {"CTA1": "cta1", "CTA2regA": "cta2", "CTA3regA": "cta3", "SpiralregA": "spiral", "ATLASMASKregA": "atlas"}
_AMI_RE = re.compile(
    r"^(?:(?P<prefix>[A-Za-z0-9]+)_)?(?:(?P<stem>CTA1|CTA2regA|CTA3regA|SpiralregA|ATLASMASKregA)|(?P<clot>clot))(?P<ext>\.nii(?:\.gz)?)$"
)


@dataclass(frozen=True)
class StudyFile:
    subject: str
    session: str
    suffix: str
    acq: str | None = None
    ext: str = ".nii.gz"
    layout: str = "bids"
    # BIDS ``space-`` entity: files of one study are in one space (ISLES'24: native raw_data, or
    # ``space-ncct`` derivatives co-registered to the NCCT); a mask pairs only with its own space.
    space: str | None = None
    # What a ``<target>-msk`` mask (ISLES'24: lvo, cow, lesion) marks; None for a plain ``_msk`` (ISLES'22).
    target: str | None = None

    @property
    def modality(self) -> str:
        """Modality key: the suffix, ``ctaN`` for CTA phase N, ``<target>-msk`` for an ISLES'24 mask."""
        if self.target:
            return f"{self.target}-msk"
        if self.suffix == "cta":
            match = re.search(r"(\d+)$", self.acq or "")
            return f"cta{match.group(1) if match else 1}"
        return self.suffix

    @property
    def study_id(self) -> str:
        return self.subject if self.layout == "ami" else f"sub-{self.subject}_ses-{self.session}"


def _parse_ami(name: str) -> StudyFile | None:
    """An AMI-layout file (see module doc); the subject is the ``<id>_`` prefix, else the folder name."""
    match = _AMI_RE.match(os.path.basename(name))
    if not match:
        return None
    subject = match["prefix"] or re.sub(r"[^A-Za-z0-9]", "", os.path.basename(os.path.dirname(name)))
    if not subject:
        return None
    if match["clot"]:
        return StudyFile(subject=subject, session="01", suffix="clot", ext=match["ext"], layout="ami")
    modality = AMI_FILES[match["stem"]]
    if modality.startswith("cta"):
        return StudyFile(subject, "01", "cta", acq=f"phase{modality[-1]}", ext=match["ext"], layout="ami")
    return StudyFile(subject, "01", modality, ext=match["ext"], layout="ami")


def ami_filename(modality: str, ext: str = ".nii") -> str:
    """File name of one modality of an AMI-layout study (``cta2`` -> ``CTA2regA.nii``)."""
    stem = {m: s for s, m in AMI_FILES.items()}.get(modality)
    if stem is None:
        raise ValueError(f"the AMI layout has no {modality!r} file; it has {sorted(AMI_FILES.values())}")
    return stem + ext


def parse_filename(name: str) -> StudyFile | None:
    """Parse a study file name (or path: the AMI layout takes the subject from the folder); None if
    it follows neither the naming rule nor the AMI layout."""
    match = _NAME_RE.match(os.path.basename(name))
    if not match:
        return _parse_ami(str(name))
    space = _SPACE_RE.search(match["entities"] or "")
    return StudyFile(
        subject=match["subject"],
        session=match["session"],
        suffix=match["suffix"].lower(),
        acq=match["acq"],
        ext=match["ext"],
        space=space.group(1) if space else None,
        target=match["target"],
    )


def study_filename(subject: str, session: str, modality: str, ext: str = ".nii.gz") -> str:
    """File name of one modality of a study; ``cta2`` becomes ``..._acq-phase2_cta``."""
    cta = re.fullmatch(r"cta(\d)", modality)
    if cta:
        return f"sub-{subject}_ses-{session}_acq-phase{cta.group(1)}_cta{ext}"
    if modality not in SUFFIXES:
        raise ValueError(f"unknown modality {modality!r}; expected one of {SUFFIXES} or cta1..cta3")
    return f"sub-{subject}_ses-{session}_{modality}{ext}"


def sidecar_filename(subject: str, session: str) -> str:
    """Clinical values (NIHSS, onset time) of a study."""
    return f"sub-{subject}_ses-{session}.json"


def truth_path(root: str | Path, subject: str, session: str, target: str) -> Path:
    """Ground truth of a generated study, kept under ``derivatives/truth`` (never a datastore label).

    ``target`` is ``corepenumbra`` (0/1/2), ``lesion`` (0/1), ``clot`` (0/1), or ``truth``
    for the JSON of generating parameters and reference figures.
    """
    ext = ".json" if target == "truth" else ".nii.gz"
    name = f"sub-{subject}_ses-{session}_truth{ext}" if target == "truth" else f"sub-{subject}_ses-{session}_desc-{target}_mask{ext}"
    return Path(root) / "derivatives" / "truth" / f"sub-{subject}" / f"ses-{session}" / name


def study_kind(reference: str | Path) -> str:
    """Kind of study (``ctp``, ``mri`` or ``cta``) from the name of its reference volume."""
    parsed = parse_filename(str(reference))
    if parsed:
        for kind, modality in REFERENCE_MODALITY.items():
            if parsed.modality == modality:
                return kind
        if parsed.modality == SERIES_REFERENCE:
            return "ctp"
    raise StrokeLabelError(
        f"{os.path.basename(str(reference))} is not a study reference volume "
        f"(expected sub-<id>_ses-<n>_tmax, _ctp (4D), _dwi or _acq-phase1_cta .nii.gz)"
    )


def is_reference(path: str | Path) -> bool:
    """Whether ``path`` is the reference volume of its study: Tmax, DWI, CTA phase 1, or the 4D CTP
    series of a study without a Tmax map."""
    parsed = parse_filename(str(path))
    if not parsed:
        return False
    if parsed.modality == SERIES_REFERENCE:
        return REFERENCE_MODALITY["ctp"] not in find_modalities(path)
    return parsed.modality in REFERENCE_MODALITY.values()


def find_modalities(reference: str | Path) -> dict[str, Path]:
    """All modality files of the study that ``reference`` belongs to, keyed by modality.

    Looks in the reference's folder and the rest of its BIDS session: the session folder and its
    datatype folders (ISLES'22 keeps DWI/ADC in ``dwi/`` and FLAIR in ``anat/``; ISLES'24 keeps
    NCCT, CTA and the 4D CTP in ``ses-01/`` and the maps in ``ses-01/perfusion-maps/``). The
    reference's own folder wins when a modality is in two places.
    """
    reference = Path(reference)
    parsed = parse_filename(str(reference))
    if not parsed:
        raise StrokeLabelError(f"{reference.name} does not follow the naming rule sub-<id>_ses-<n>_<suffix>.nii.gz")
    folders = [reference.parent]
    session_dir = reference.parent.parent if reference.parent.parent.name.startswith("ses-") else None
    if session_dir is not None and not reference.parent.name.startswith("ses-"):
        folders += [session_dir] + [d for d in sorted(session_dir.iterdir()) if d.is_dir() and d != reference.parent]
    elif reference.parent.name.startswith("ses-"):
        folders += [d for d in sorted(reference.parent.iterdir()) if d.is_dir() and d.name not in NON_STUDY_DIRS and not d.name.startswith(".")]
    found: dict[str, Path] = {}
    for folder in folders:
        for path in sorted(folder.iterdir()):
            other = parse_filename(str(path))
            if other and other.study_id == parsed.study_id and other.space == parsed.space and other.modality not in found:
                found[other.modality] = path
    if parsed.space == "ncct" and "ncct" not in found:
        native = _native_ncct(reference, parsed)
        if native is not None:
            found["ncct"] = native  # space-ncct images are on the grid of the study's own NCCT
    return found


def _native_ncct(reference: Path, parsed: StudyFile) -> Path | None:
    """ISLES'24: the raw NCCT (``raw_data``/``rawdata``) that a ``space-ncct`` derivative was registered to."""
    parts = reference.parts
    if "derivatives" not in parts:
        return None
    dataset = Path(*parts[: len(parts) - 1 - parts[::-1].index("derivatives")])
    for raw in ("raw_data", "rawdata"):
        candidate = dataset / raw / f"sub-{parsed.subject}" / f"ses-{parsed.session}" / study_filename(parsed.subject, parsed.session, "ncct")
        if candidate.exists():
            return candidate
    return None


def find_sidecar(reference: str | Path) -> Path | None:
    """The study's clinical sidecar JSON, if there is one."""
    reference = Path(reference)
    parsed = parse_filename(reference.name)
    if not parsed:
        return None
    name = sidecar_filename(parsed.subject, parsed.session)
    for folder in (reference.parent, reference.parent.parent):
        if (folder / name).exists():
            return folder / name
    return None


def find_derivative_mask(root: str | Path, reference: str | Path) -> Path | None:
    """The lesion mask a data set ships for the study of ``reference``, if any, in the study's own space.

    ISLES'22 keeps it as ``derivatives/sub-<id>/ses-<n>/[anything/]sub-<id>_ses-<n>[_...]_msk.nii.gz``
    beside ``rawdata``; ``root`` is the studies root (the folder holding ``derivatives``). ISLES'24's
    follow-up MRI (``ses-02``, ``space-ncct``) has its ``lesion-msk`` beside it. Other ISLES'24 masks
    are not lesion labels: ``lvo-msk`` is a clot (imported by the datastore for the CTA), ``cow-msk``
    an atlas, and a session-02 lesion is the *final* infarct, never a label of the acute CTP study
    (a different session, so a different study).
    """
    parsed = parse_filename(Path(reference).name)
    if not parsed:
        return None
    session_dir = Path(root) / "derivatives" / f"sub-{parsed.subject}" / f"ses-{parsed.session}"
    if not session_dir.is_dir():
        return None
    lesion_targets = (None, "lesion") if parsed.modality == REFERENCE_MODALITY["mri"] else (None,)
    for path in sorted(session_dir.rglob(f"sub-{parsed.subject}_ses-{parsed.session}*msk.nii*")):
        other = parse_filename(path.name)
        if other and other.study_id == parsed.study_id and other.suffix == "msk" and other.space == parsed.space and other.target in lesion_targets:
            return path
    return None


def _dataset_of(parts: list[str]) -> tuple[str, ...]:
    """The folder of the data set a study file's folder belongs to (above ``rawdata``/``raw_data``/``derivatives``/``sub-*``)."""
    for i, part in enumerate(parts):
        if part in ("rawdata", "raw_data", "derivatives") or part.startswith("sub-"):
            return tuple(parts[:i])
    return tuple(parts)


def find_reference_volumes(root: str | Path) -> dict[str, str]:
    """The studies under ``root``: {file name of each reference volume: its path relative to root}.

    Flat folders, BIDS ``sub-*/ses-*`` trees (ISLES'22 ``rawdata``, ISLES'24 ``raw_data``) and the AMI
    layout (``<id>/CTA1.nii`` is listed as ``<id>_CTA1.nii``). In a data set's top-level ``derivatives``
    only co-registered images count, and where a study (id and kind) exists both natively and
    co-registered, the co-registered one is listed: ISLES'24's ``space-ncct`` maps, CTA and 4D CTP share
    the NCCT grid with its masks, while ``raw_data`` holds each on its own grid without masks.
    """
    root = str(root)
    chosen: dict[tuple, tuple[str, str, bool]] = {}
    for folder, dirs, files in os.walk(root):
        parts = [] if folder == root else os.path.relpath(folder, root).split(os.sep)
        in_derivatives = "derivatives" in parts
        inside_study = any(p.startswith("sub-") for p in parts)
        # A data set's derivatives (beside its sub-* folders) may hold co-registered studies; a
        # study's own derivatives (the app's computed maps, under sub-*) never do.
        dirs[:] = sorted(
            d for d in dirs
            if not d.startswith(".")
            and (d not in NON_STUDY_DIRS or (d == "derivatives" and not inside_study and not in_derivatives))
            and not (in_derivatives and d in NON_STUDY_DERIVATIVES)
        )
        for file in sorted(files):
            path = os.path.join(folder, file)
            parsed = parse_filename(path)
            if not parsed or (in_derivatives and parsed.space is None) or not is_reference(path):
                continue
            name = file
            if parsed.layout == "ami" and not file.startswith(parsed.subject + "_"):
                name = f"{parsed.subject}_{file}"  # AMI: every patient has a CTA1.nii; the id says whose
            key = (_dataset_of(parts), parsed.study_id, study_kind(path), parsed.layout)
            entry = (name, os.path.relpath(path, root), parsed.space is not None)
            previous = chosen.get(key)
            if previous is None or (entry[2] and not previous[2]):
                chosen[key] = entry
            elif entry[2] == previous[2]:
                logger.warning("Study %s (%s) found twice: keeping %s, not %s", parsed.study_id, key[2], previous[1], entry[1])
    names: dict[str, str] = {}
    for name, relpath, _ in sorted(chosen.values(), key=lambda e: e[1]):
        if name in names:
            logger.warning("Duplicate study file %s: keeping %s", name, names[name])
            continue
        names[name] = relpath
    return names


def find_final_infarct(reference: str | Path) -> Path | None:
    """ISLES'24's target for a co-registered acute study: the final infarct on follow-up MRI, a
    ``lesion-msk`` of a later session of the same patient in the same space (``derivatives/
    sub-<id>/ses-02/…_space-ncct_lesion-msk``). For scoring final-infarct prediction only: it is
    neither core nor penumbra, and never a label of the acute study."""
    reference = Path(reference)
    parsed = parse_filename(reference.name)
    if not parsed or parsed.space is None:
        return None
    subject_dir = next((p for p in reference.parents if p.name == f"sub-{parsed.subject}"), None)
    if subject_dir is None:
        return None
    for session_dir in sorted(d for d in subject_dir.iterdir() if d.is_dir() and d.name.startswith("ses-") and d.name != f"ses-{parsed.session}"):
        for path in sorted(session_dir.rglob("*lesion-msk.nii*")):
            other = parse_filename(path.name)
            if other and other.subject == parsed.subject and other.space == parsed.space and other.target == "lesion":
                return path
    return None
