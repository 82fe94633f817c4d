"""ischemic_lesion: the ischemic lesion on MRI (DWI with or without ADC) or on CT perfusion maps.

One task; the study's modalities choose the model (see ``lib.transforms.ischemic_lesion``):
MDANet (seed 003) on CTP (CBF, CBV | MTT, Tmax) and on MRI (DWI | ADC); the hemispheric
Siamese net (seed 000) on a study with DWI alone. A study given by its ADC file alone gets a
clear error: no model reads ADC without DWI.
"""

from __future__ import annotations

import os
from typing import Any, Dict

import numpy as np
import torch
from monai.transforms import Transform

from lib.checkpoints import checkpoint_in_use, load_weights, model_paths
from lib.infers.stroke_infer import METHODS, StrokeInferTask, first_choice, label_array
from lib.networks.inference import for_inference
from lib.transforms.baselines import LesionBaselined
from lib.transforms.figures import LesionFiguresd
from lib.transforms.ischemic_lesion import (
    CTP_COMPONENT_RULE,
    KIND_OF_ROUTE,
    MRI_COMPONENT_RULE,
    STRICT_MRI_COMPONENT_RULE,
    binary_entropy,
    build_network,
    lesion_from_probability,
    predict_volume,
    route_for,
    uncertainty_score,
    working_image,
)
from lib.transforms.study import LoadStudyd
from strokelabel import baselines, guard
from strokelabel.errors import StrokeLabelError
from strokelabel.lifeline import wait_for_foreground
from strokelabel.midsagittal import mirror_about_plane
from strokelabel.naming import parse_filename, study_kind
from strokelabel.study import available_modalities

# Modalities per study kind: required, optional.
MODALITIES = {"mri": (("dwi",), ("adc", "flair")), "ctp": (("cbf", "cbv", "mtt", "tmax"), ("mip",))}
LESION_COMPONENTS = ["evidence", "strict", "all"]
MODEL_NAMES = {"ctp": "MDANet (CBF, CBV | MTT, Tmax)", "mri": "MDANet (DWI | ADC)", "siamese": "hemispheric Siamese net (DWI and its mirror)"}


def route_paths(model_dir: str) -> Dict[str, list]:
    """Per route: [shipped starting model, model in use]; the last existing one is loaded."""
    return {r: model_paths(model_dir, f"ischemic_lesion_{r}") for r in KIND_OF_ROUTE}


class DwiOnlyBaselined(Transform):
    """DWI alone: hyperintense (robust z > 3) and brighter than the mirror point by 3 robust SD."""

    def __call__(self, data):
        d = dict(data)
        study = d["study"]
        dwi = np.asarray(d["dwi"], dtype=np.float64)
        brain = study.brain_mask
        mirror = mirror_about_plane(dwi, study.midsagittal_plane)
        values = dwi[brain]
        robust_sd = 1.4826 * np.median(np.abs(values - np.median(values)))
        lesion = baselines.mri.dwi_hyperintense(dwi, brain, 3.0) & (dwi - mirror > 3.0 * robust_sd)
        d["pred"] = baselines.remove_small_clusters(lesion, study.spacing_mm, 0.1).astype(np.uint8)
        d.setdefault("result", {})["rule"] = "DWI robust z > 3 and DWI - mirror > 3 robust SD (no ADC in the study)"
        return d


class IschemicLesionInfer(StrokeInferTask):
    def __init__(self, path, network, labels, model_dir: str | None = None, lesion_components: str = "strict", **kwargs):
        if lesion_components not in LESION_COMPONENTS:
            raise ValueError(f"--conf ischemic_lesion_components: unknown rule {lesion_components!r}; use one of {LESION_COMPONENTS}")
        self.lesion_components = lesion_components  # the site's default rule; a request may ask for another
        super().__init__(
            path,
            network,
            labels,
            description="Ischemic lesion (1) on MRI (DWI + ADC, or DWI alone) or CT perfusion; volume in mL and lesion count",
            # "siamese": the DWI-only Siamese model even when the study has ADC (to compare the two)
            # "lesion_components": "evidence" keeps only the MRI components the study's DWI/ADC supports; "strict" also
            # drops faint (probability <= 0.6) and small (< 0.3 mL) ones and asks 85 % support (fewer false positives,
            # misses more small lesions: lib.transforms.ischemic_lesion.STRICT_MRI_COMPONENT_RULE); "all" keeps all
            config={"method": METHODS + ["siamese"],
                    "lesion_components": [lesion_components, *(c for c in LESION_COMPONENTS if c != lesion_components)]},
            **kwargs,
        )
        self.model_dir = model_dir or os.path.dirname(path[-1] if isinstance(path, (list, tuple)) else path)
        self.route_paths = route_paths(self.model_dir)
        self._loaded: Dict[str, tuple] = {}

    # ---- which model -----------------------------------------------------------------------
    def model_available(self, route: str | None = None) -> bool:
        routes = [route] if route else list(self.route_paths)
        return any(checkpoint_in_use(self.route_paths[r]) for r in routes)

    def pre_transforms(self, data=None):
        image = data["image"]
        parsed = parse_filename(os.path.basename(str(image)))
        if parsed is not None and parsed.modality == "adc":
            raise StrokeLabelError(
                "an ADC map alone cannot be read: ischemic_lesion needs DWI (MDANet on DWI + ADC, the Siamese model on DWI "
                f"alone); put sub-{parsed.subject}_ses-{parsed.session}_dwi.nii.gz beside it and open the study by its DWI",
                study=parsed.study_id,
            )
        kind = study_kind(image)
        if kind not in MODALITIES:
            raise StrokeLabelError(f"ischemic_lesion reads MRI (DWI/ADC) or CT perfusion studies, not {kind.upper()}")
        required, optional = MODALITIES[kind]
        data["route"] = route_for(kind, available_modalities(image))
        return [LoadStudyd(required, optional)]

    def chosen_method(self, data) -> str:
        route = data.get("route") or route_for(data["study"].kind, data["study"].images)
        method = first_choice(data.get("method", "auto"))
        if method == "siamese":
            if data["study"].kind != "mri":
                raise StrokeLabelError("method=siamese reads DWI: it needs an MRI study", study=data["study"].study_id)
            route = data["route"] = "siamese"
            method = "model"
        if method not in METHODS:
            raise StrokeLabelError(f"unknown method {method!r}; use one of {METHODS + ['siamese']}")
        available = self.model_available(route)
        if method == "model" and not available:
            raise StrokeLabelError(f"no trained {MODEL_NAMES[route]} model is installed yet; train ischemic_lesion_{route} or use method=baseline")
        if method == "auto":
            method = "model" if available else "baseline"
        return method

    def baseline_transforms(self, data):
        route = data.get("route")
        if route == "siamese":
            return [DwiOnlyBaselined()]
        return [LesionBaselined()]

    def run_inferer(self, data: Dict[str, Any], convert_to_batch=True, device="cuda"):
        data = super().run_inferer(data, convert_to_batch, device)
        if data["result"].get("method") == "baseline":
            data["result"]["route"] = data.get("route")
            if not self.model_available(data.get("route")):
                data["result"]["method_reason"] = f"no trained {MODEL_NAMES[data.get('route')]} model installed: training-free baseline used"
        return data

    # ---- the learned model -----------------------------------------------------------------
    def _network(self, route: str, device: str) -> tuple[torch.nn.Module, str]:
        path = checkpoint_in_use(self.route_paths[route])
        mtime = os.path.getmtime(path)
        cached = self._loaded.get(route)
        if cached and cached[1] == path and cached[2] == mtime and cached[3] == device:
            return cached[0], path
        # folded batch norms, channels-last: the trained function, faster (lib.networks.inference)
        network = for_inference(load_weights(build_network(route), path, device))
        self._loaded[route] = (network, path, mtime, device)
        return network, path

    def run_model(self, data: Dict[str, Any], device: str):
        if device.startswith("cuda") and not torch.cuda.is_available():
            device = "cpu"
        study = data["study"]
        route = data.get("route") or route_for(study.kind, study.images)
        image, out_size, info = working_image(study, route)
        network, path = self._network(route, device)
        with torch.inference_mode():
            prob = predict_volume(network, image, out_size, device=device).numpy()
        result = data["result"]
        components = first_choice(data.get("lesion_components", self.lesion_components))
        if components not in LESION_COMPONENTS:
            raise StrokeLabelError(f"unknown lesion_components {components!r}; use one of {LESION_COMPONENTS}", study=study.study_id)
        if study.kind == "mri" and components != "all":
            rule = STRICT_MRI_COMPONENT_RULE if components == "strict" else MRI_COMPONENT_RULE
            label, removed = lesion_from_probability(prob, study.spacing_mm, rule, self._mri_evidence(data))
            result["components_removed_without_evidence"] = removed
            if components == "strict":  # the guard judges coverage on what the network sees (guard.lesion_mri_figures)
                data["coverage_label"] = lesion_from_probability(prob, study.spacing_mm, MRI_COMPONENT_RULE, self._mri_evidence(data))[0]
        else:
            label, _ = lesion_from_probability(prob, study.spacing_mm, CTP_COMPONENT_RULE)
        data["pred"] = label
        data["lesion_probability"] = prob
        result.update(info)
        result["route"] = route
        result["model"] = MODEL_NAMES[route]
        result["model_file"] = os.path.relpath(path, self.model_dir)
        result["uncertainty"] = round(uncertainty_score(prob), 4)
        return data

    def figure_transforms(self, data):
        return [LesionFiguresd()]

    @staticmethod
    def _mri_evidence(data) -> np.ndarray:
        """The study's DWI/ADC evidence of acute ischemia (guard.mri_lesion_evidence), computed once per infer."""
        if data.get("mri_evidence") is None:
            study = data["study"]
            dwi, adc = study.images["dwi"], study.images.get("adc")
            mirror = guard.mirror_reference(dwi * study.brain_mask, study.spacing_mm, plane=study.midsagittal_plane)
            data["mri_evidence"] = guard.mri_lesion_evidence(dwi, adc, study.brain_mask, mirror)
        return data["mri_evidence"]

    def guard(self, data, physics):
        study = data["study"]
        pred = label_array(data["pred"])
        if study.kind == "ctp":
            return guard.verdict("lesion_ctp", pred, physics["pred"], spacing_mm=study.spacing_mm)
        covering = data.get("coverage_label")
        return guard.verdict("lesion_mri", pred, self._mri_evidence(data), physics["pred"] > 0, study.brain_mask, spacing_mm=study.spacing_mm,
                             coverage_label=None if covering is None else label_array(covering))

    def model_path_lists(self) -> list:
        return [list(paths) for _, paths in sorted(self.route_paths.items())]

    def get_path(self, validate=True):
        """The newest model file of any route (active learning rescores when it changes)."""
        found = [p for p in (checkpoint_in_use(paths) for paths in self.route_paths.values()) if p]
        return max(found, key=os.path.getmtime) if found else None

    # ---- active learning -------------------------------------------------------------------
    def mc_dropout_uncertainty(self, image_path: str, samples: int = 4, device: str = "cpu") -> Dict[str, float]:
        """Monte-Carlo dropout over ``samples`` passes of the study's model.

        ``entropy_lesion``: mean binary entropy (bits) of the mean lesion probability over the
        voxels any pass finds suspicious (see ``uncertainty_score``); ``disagreement``: mean
        standard deviation of the passes there; ``lesion_volume_ml`` of the mean prediction.
        """
        from strokelabel.study import load_study

        kind = study_kind(image_path)
        required, optional = MODALITIES[kind]
        study = load_study(image_path, required, optional)
        route = route_for(kind, study.images)
        if not self.model_available(route):
            raise StrokeLabelError(f"no {MODEL_NAMES[route]} model to score with", study=study.study_id)
        image, out_size, _ = working_image(study, route)
        network, _ = self._network(route, device)
        try:
            passes = []
            for _ in range(max(1, samples)):
                wait_for_foreground()  # background scoring: a clinician's infer or save goes first, pass by pass
                passes.append(predict_volume(network, image, out_size, device=device, mc_dropout=True, mirror_average=False).numpy())
            passes = np.stack(passes)
        finally:
            network.net.set_mc_dropout(False)
        mean = passes.mean(axis=0)
        suspicious = passes.max(axis=0) > 0.05
        return {
            "entropy_lesion": float(binary_entropy(mean[suspicious]).mean()) if suspicious.any() else 0.0,
            "disagreement": float(passes.std(axis=0)[suspicious].mean()) if suspicious.any() else 0.0,
            "lesion_volume_ml": float((mean > 0.5).sum() * study.voxel_volume_ml),
            "route": route,
        }
