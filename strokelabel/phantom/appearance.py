"""Per-study appearance: one explicit chain of randomisations between the physics and the files.

Why: models trained on phantoms of one look (fixed contrasts, clean textures, a 6 % bias
field, one resolution) learned the generator, not stroke: on a real ISLES'22 case they drew
80-100 mL along the cortical rim and in the temporal lobes where the expert drew 7 mL
(issue 9). As SynthSeg does (Billot et al., brain_generator.py), each study's look is drawn
from its seed by a short chain of named steps, every knob with its range written here, in
one place, and every step switchable off. The physics stays as it is: the tissue state,
indicator dilution, the definitions of core and penumbra, and the truth labels.

Two settings:

- ``"fixed"`` (default): today's look, byte for byte (existing data sets and tests unchanged);
- ``"random"``: every step of the study kind's chain drawn from the study seed, each step on
  its own RNG stream (turning one step off leaves the others' draws unchanged).

A spec is ``"fixed"``, ``"random"`` or a dict ``{"setting": "random", "off": [step, ...],
"on": [step, ...], "ranges": {"step.knob": [low, high]}}`` (``off`` steps keep today's values,
or do nothing where today had nothing; ``on`` steps apply whatever their chance; ``ranges``
widen or narrow a knob's range). The drawn values, which :func:`draw_appearance`
returns, go into the study's truth JSON.

Ranges and where they come from (real cases in ``../shared/real``, measured, never copied):

- ISLES'22 sub-strokecase0001 (3 T, 2 mm): brain ADC median 0.87 x 10^-3 mm²/s, the expert's
  lesion ADC only 0.94 x tissue while its DWI is 1.37 x tissue (faint ADC, T2 shine), CSF
  on DWI 0.5 x tissue (noise floor): hence lesion ADC ratios up to 0.95 and a DWI contrast
  drawn down to 1.2, and noise up to 4 % of grey matter on b = 0.
- ISLES'24 sub-stroke0143 maps: brain CBF median 10.6 mL/100g/min and MTT 15.7 s (a long
  vendor MTT, i.e. a strongly regularised deconvolution), Tmax in 0.5 s steps, bright vessels
  on CBF/CBV (CBF to 446, CBV to 115), negative CBV inside the brain, maps cut to the brain.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

SETTINGS = ("fixed", "random")
_STREAM = 0xA99E  # the appearance's RNG streams, apart from the patient's and the noise's


@dataclass(frozen=True)
class Uniform:
    """A value drawn uniformly in [low, high] (log-uniform with ``log``)."""

    low: float
    high: float
    log: bool = False

    def draw(self, rng: np.random.Generator) -> float:
        if self.log:
            return float(np.exp(rng.uniform(np.log(self.low), np.log(self.high))))
        return float(rng.uniform(self.low, self.high))

    def describe(self):
        return [self.low, self.high] + (["log"] if self.log else [])


@dataclass(frozen=True)
class Choice:
    """One of ``options`` with probabilities ``weights``."""

    options: tuple
    weights: tuple

    def draw(self, rng: np.random.Generator):
        value = self.options[int(rng.choice(len(self.options), p=np.asarray(self.weights) / np.sum(self.weights)))]
        return value.item() if hasattr(value, "item") else value

    def describe(self):
        return {"options": list(self.options), "weights": list(self.weights)}


@dataclass(frozen=True)
class Step:
    """One named step of a chain: what it does, its knobs, and its values when it is off."""

    name: str
    doc: str
    knobs: dict
    off: dict = field(default_factory=dict)  # values when off: today's look, or the identity
    chance: float = 1.0  # probability that the step applies in a random study (mimics, stripping)


# ---------------------------------------------------------------------------------------------
# The chains. Each range is a documented physiological or scanner range; see the module doc.
# ---------------------------------------------------------------------------------------------
MRI_CHAIN = (
    Step("resolution", "acquisition grid: in-plane and slice spacing (partial volume along z by sub-samples), field of "
         "view; k-space kept as a fraction of the grid's (acquired matrix < reconstructed: blur and Gibbs ringing)",
         {"inplane_mm": Uniform(0.9, 2.2), "slice_mm": Uniform(2.0, 6.0), "fov_mm": Uniform(220.0, 250.0),
          "coverage_mm": Uniform(125.0, 150.0), "kspace_fraction": Uniform(0.55, 1.0)},
         off={"inplane_mm": None, "slice_mm": None, "kspace_fraction": 1.0}),
    Step("tissue_contrast", "b = 0 (T2-weighted) and FLAIR signal per tissue, relative to grey matter; scanner units",
         {"b0_wm": Uniform(0.72, 0.95), "b0_csf": Uniform(1.4, 2.6), "b0_scalp": Uniform(0.1, 0.9), "b0_bone": Uniform(0.0, 0.08),
          "flair_wm": Uniform(0.62, 0.9), "flair_csf": Uniform(0.03, 0.2), "flair_scalp": Uniform(0.5, 1.4),
          "signal_scale": Uniform(150.0, 3000.0, log=True)},
         off={"b0_wm": 0.86, "b0_csf": 1.9, "b0_scalp": 0.2, "b0_bone": 0.03, "flair_wm": 0.78, "flair_csf": 0.10, "flair_scalp": 1.1,
              "signal_scale": None}),
    Step("tissue_adc", "ADC per tissue, 10^-3 mm²/s (healthy adult ranges)",
         {"adc_gm": Uniform(0.74, 0.95), "adc_wm": Uniform(0.62, 0.82), "adc_csf": Uniform(2.6, 3.3)},
         off={"adc_gm": None, "adc_wm": None, "adc_csf": None}),
    Step("lesion_contrast", "infarct ADC as a ratio of its tissue's, DWI contrast from faint to strong (T2 prolongation "
         "makes up what ADC does not give); subacute pseudo-normalisation: ADC near normal, DWI bright from T2 (still lesion); "
         "heterogeneity: smooth patchiness of the ADC ratio",
         {"subacute": Choice((False, True), (0.8, 0.2)), "adc_ratio": Uniform(0.45, 0.95), "adc_ratio_subacute": Uniform(0.85, 1.02),
          "dwi_contrast": Uniform(1.2, 2.6), "heterogeneity": Uniform(0.0, 0.15)},
         off={"subacute": False, "adc_ratio": None, "dwi_contrast": None, "heterogeneity": 0.0}),
    Step("texture", "smooth multiplicative tissue texture (correlation length in mm) on b = 0/FLAIR and on ADC",
         {"signal_amplitude": Uniform(0.0, 0.08), "adc_amplitude": Uniform(0.0, 0.05), "length_mm": Uniform(2.0, 6.0)},
         off={"signal_amplitude": 0.0, "adc_amplitude": 0.0, "length_mm": 3.0}),
    Step("susceptibility", "EPI (DWI, b = 0): off-resonance from air spaces at the skull base (dipole field), shifting signal "
         "along the phase-encode axis (pile-up, stretching) and dephasing thick slices (drop-out); b = 1000 adds an eddy-"
         "current shift, so the fitted ADC is wrong there. FLAIR (spin echo) is not distorted",
         {"field_t": Choice((1.5, 3.0), (0.4, 0.6)), "pe_axis": Choice((1, 0), (0.85, 0.15)), "pe_sign": Choice((1, -1), (0.5, 0.5)),
          "bandwidth_hz_per_px": Uniform(10.0, 30.0), "te_ms": Uniform(55.0, 100.0), "eddy_shift_px": Uniform(-0.8, 0.8),
          "cavity_scale": Uniform(0.6, 1.2)},
         off={}, chance=0.9),
    Step("cortical_rim", "bright cortical ribbon on DWI and b = 0 (T2 of the outer cortex), normal ADC",
         {"gain": Uniform(1.06, 1.35), "width_mm": Uniform(1.5, 4.0)}, off={}, chance=0.6),
    Step("regional_t2", "regional brightness of clinical DWI and b = 0 with a normal ADC (T2 weighting and EPI signal pile-up), "
         "broad and roughly bilateral where real scans show it: temporal lobes, orbitofrontal cortex, cerebellar hemispheres "
         "(label 0; the false positives of the first models on a real ISLES'22 case lay there)",
         {"temporal_gain": Uniform(1.0, 1.45), "frontal_gain": Uniform(1.0, 1.35), "cerebellar_gain": Uniform(1.0, 1.4),
          "side_ratio": Uniform(0.6, 1.0), "smoothing_mm": Uniform(4.0, 10.0)}, off={}, chance=0.6),
    Step("shine_through", "T2 shine-through blobs in white matter: DWI bright, ADC high (label 0)",
         {"count": Choice((1, 2, 3), (0.5, 0.3, 0.2)), "radius_mm": Uniform(4.0, 11.0), "t2_gain": Uniform(1.6, 2.6),
          "adc_gain": Uniform(1.15, 1.6)}, off={}, chance=0.4),
    Step("old_infarcts", "chronic infarcts: a CSF cavity (DWI dark, ADC high, FLAIR dark) with a gliotic rim (FLAIR bright, "
         "ADC slightly high), used only when the anatomy does not provide old_infarct/gliosis",
         {"count": Choice((1, 2), (0.7, 0.3)), "radius_mm": Uniform(4.0, 14.0), "rim_mm": Uniform(1.5, 4.0)}, off={}, chance=0.35),
    Step("wmh", "white-matter hyperintensities (periventricular caps and deep patches): FLAIR bright, DWI mildly bright, "
         "ADC slightly high; the pattern is drawn only when the anatomy does not provide wmh",
         {"grade": Choice((1, 2, 3), (0.45, 0.35, 0.2)), "flair_gain": Uniform(1.5, 2.6), "t2_gain": Uniform(1.15, 1.6),
          "adc_gain": Uniform(1.08, 1.35)}, off={}, chance=0.6),
    Step("bias_field", "smooth coil sensitivity exp(Legendre polynomial of degree 3), largest deviation up to ±25 %; "
         "DWI and b = 0 share one coil (ADC cancels it), FLAIR has its own",
         {"amplitude": Uniform(0.05, 0.25)}, off={"amplitude": 0.0}),
    Step("noise", "Rician noise, sigma as a fraction of grey matter's b = 0 signal (b = 0 SNR 25-100, DWI 11-45)",
         {"fraction": Uniform(0.01, 0.04)}, off={"fraction": None}),
    Step("skull", "skull present or stripped by the site; stripping is imperfect (boundary moved by a smooth field: scalp "
         "left or cortex cut)", {"offset_mm": Uniform(-2.5, 2.5), "wobble_mm": Uniform(0.0, 2.5)}, off={}, chance=0.5),
)

PIAL_VESSELS = Step(
    "pial_vessels", "small cortical veins in the subarachnoid and sulcal CSF (lumen fraction at a line's centre, line width in "
    "standard deviations of a smooth field whose zero set they follow, its correlation length): bright vessels on CBF/CBV and CTA",
    {"fraction": Uniform(0.15, 0.5), "width": Uniform(0.08, 0.2), "spacing_mm": Uniform(5.0, 9.0)}, off={}, chance=0.85)

CTP_CHAIN = (
    Step("series_noise", "noise of each CT perfusion frame (HU), low-dose to standard", {"hu": Uniform(3.0, 9.0)}, off={"hu": None}),
    PIAL_VESSELS,
    Step("deconvolution", "the vendor's deconvolution: SVD threshold (higher underestimates CBF and lengthens MTT), "
         "oscillation-index SVD or plain, in-plane smoothing sigma",
         {"svd_threshold": Uniform(0.05, 0.3), "oscillation": Choice((True, False), (0.75, 0.25)), "smooth_mm": Uniform(3.0, 5.5)},
         off={"svd_threshold": 0.1, "oscillation": True, "smooth_mm": 3.0}),
    Step("vendor_mask", "maps cut to the vendor's brain mask: the intracranial space (CSF and vessels included) from the NCCT, "
         "shrunk or grown; vessels kept (bright on CBF/CBV) or removed",
         {"offset_mm": Uniform(-3.0, 1.5), "keep_vessels": Choice((True, False), (0.8, 0.2))}, off={}),
    Step("vendor_scale", "calibration of CBF and CBV (tissue density, haematocrit correction): one factor for both, so MTT is unchanged",
         {"factor": Uniform(0.75, 1.25)}, off={"factor": 1.0}),
    Step("vendor_smoothing", "extra Gaussian smoothing of the maps (sigma mm, in-plane), inside the mask",
         {"sigma_mm": Uniform(0.0, 1.5)}, off={"sigma_mm": 0.0}),
    Step("tmax_quantisation", "Tmax in steps of 0.5 or 1 s (0: continuous), capped at the vendor's maximum",
         {"step_s": Choice((0.0, 0.5, 1.0), (0.2, 0.5, 0.3)), "cap_s": Uniform(20.0, 40.0)}, off={"step_s": 0.0, "cap_s": None}),
)

CTA_CHAIN = (
    Step("timing", "acquisition timing: phase 1 offset from the arterial peak (early to late arterial), phase spacing, bolus strength",
         {"offset_s": Uniform(-3.0, 6.0), "spacing_s": Uniform(6.0, 10.0), "peak_scale": Uniform(0.75, 1.3)},
         off={"offset_s": 0.0, "spacing_s": 8.0, "peak_scale": 1.0}),
    Step("noise", "image noise (HU)", {"hu": Uniform(4.0, 16.0)}, off={"hu": None}),
    PIAL_VESSELS,
    Step("resolution", "reconstruction kernel and slice thickness: Gaussian point spread, sigma in mm in-plane and along z",
         {"inplane_sigma_mm": Uniform(0.2, 0.9), "slice_sigma_mm": Uniform(0.3, 1.5)}, off={"inplane_sigma_mm": 0.0, "slice_sigma_mm": 0.0}),
)

CHAINS = {"mri": MRI_CHAIN, "ctp": CTP_CHAIN, "cta": CTA_CHAIN}
_KIND_TAG = {"ctp": 1, "mri": 2, "cta": 3}


def ranges(kind: str) -> dict:
    """Every step of ``kind``'s chain with its doc, knob ranges and chance (for docs and records)."""
    return {s.name: {"doc": s.doc, "chance": s.chance, "knobs": {k: v.describe() for k, v in s.knobs.items()}} for s in CHAINS[kind]}


def _parse(spec) -> tuple[str, set, dict]:
    if spec is None:
        spec = "fixed"
    if isinstance(spec, str):
        spec = {"setting": spec}
    if not isinstance(spec, dict):
        raise ValueError(f"appearance must be 'fixed', 'random' or a dict, not {spec!r}")
    unknown = set(spec) - {"setting", "off", "on", "ranges"}
    if unknown:
        raise ValueError(f"unknown appearance keys {sorted(unknown)}; expected setting, off, on, ranges")
    setting = spec.get("setting", "random")
    if setting not in SETTINGS:
        raise ValueError(f"unknown appearance setting {setting!r}; expected one of {SETTINGS}")
    off, on = set(spec.get("off", ())), set(spec.get("on", ()))
    if off & on:
        raise ValueError(f"appearance steps {sorted(off & on)} are both on and off")
    return setting, off, on, dict(spec.get("ranges", {}))


def draw_appearance(seed: int, kind: str, spec="fixed") -> dict:
    """The appearance of study ``seed`` of ``kind``: ``{"setting", "steps": {name: values or None}}``.

    A step that is off or not drawn (its ``chance``) has the value None; code reading a step
    uses its ``off`` values then. ``"fixed"`` returns ``{"setting": "fixed", "steps": {}}``.
    """
    if kind not in CHAINS:
        raise ValueError(f"unknown study kind {kind!r}; expected one of {tuple(CHAINS)}")
    setting, off, on, overrides = _parse(spec)
    if setting == "fixed":
        return {"setting": "fixed", "steps": {}}
    chain = CHAINS[kind]
    names = {s.name for s in chain}
    bad = (off - names) | (on - names) | {k.split(".")[0] for k in overrides} - names
    if bad:
        raise ValueError(f"unknown {kind} appearance step(s) {sorted(bad)}; steps are {[s.name for s in chain]}")
    steps: dict = {}
    for index, step in enumerate(chain):
        # Each step on its own stream: switching one off leaves the others' values as they were.
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), _KIND_TAG[kind], _STREAM, index]))
        applies = rng.random() < step.chance
        values = {}
        for name, knob in step.knobs.items():
            key = f"{step.name}.{name}"
            if key in overrides:
                low, high = overrides[key]
                knob = Uniform(float(low), float(high), getattr(knob, "log", False))
            values[name] = knob.draw(rng)
        values["stream"] = [int(seed), _KIND_TAG[kind], _STREAM, index, 1]  # seed of the step's spatial draws
        steps[step.name] = values if ((applies or step.name in on) and step.name not in off) else None
    return {"setting": "random", "steps": steps, "off": sorted(off), "on": sorted(on)}


def step_values(appearance: dict | None, kind: str, name: str) -> dict | None:
    """The drawn values of step ``name`` (None when the study has it off or is ``fixed``)."""
    if not appearance or appearance.get("setting") != "random":
        return None
    values = appearance["steps"].get(name)
    return None if values is None else dict(values)


def value(appearance: dict | None, kind: str, name: str) -> dict:
    """Step ``name``'s values, its ``off`` values where it is off (today's look, or the identity)."""
    step = next(s for s in CHAINS[kind] if s.name == name)
    drawn = step_values(appearance, kind, name)
    return copy.deepcopy(step.off) if drawn is None else drawn


def step_rng(values: dict, salt: int = 0) -> np.random.Generator:
    """The RNG of a step's spatial draws (blob positions, fields), from the stream recorded in its values."""
    return np.random.default_rng(np.random.SeedSequence([*values["stream"], salt]))


def is_random(appearance: dict | None) -> bool:
    return bool(appearance) and appearance.get("setting") == "random"
