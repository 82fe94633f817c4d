"""``python -m strokelabel.phantom --out DIR``: generate a phantom data set (skips studies already there)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from strokelabel.phantom.patient import FAMILIES
from strokelabel.phantom.study import KINDS, generate_dataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m strokelabel.phantom", description=__doc__)
    parser.add_argument("--out", required=True, help="studies root folder")
    parser.add_argument("--per-kind", type=int, default=12, help="studies per kind (default 12)")
    parser.add_argument("--labelled", type=int, default=8, help="studies per kind with a final label (default 8)")
    parser.add_argument("--size", choices=("small", "full"), default="small")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated subset of ctp,mri,cta")
    parser.add_argument("--ctp-series", choices=("auto", "yes", "no"), default="auto",
                        help="write the 4D CTP series (auto: at size small only; the maps are written either way)")
    parser.add_argument("--appearance", default="fixed",
                        help="fixed (today's look), random (each study's look drawn from its seed), or a JSON dict "
                             '(e.g. \'{"setting": "random", "off": ["susceptibility"]}\'; steps in strokelabel.phantom.appearance)')
    parser.add_argument("--conventions", default="none",
                        help="none (RAS float32, no fills), random (drawn per study), or a JSON dict "
                             '(e.g. \'{"orientation": "LPS", "fill": "isles24"}\'; keys in strokelabel.phantom.conventions)')
    parser.add_argument("--isles22", action="store_true", help="write MRI studies in the ISLES'22 tree (--per-kind of them) instead")
    parser.add_argument("--family", choices=FAMILIES, default="ellipsoid",
                        help="anatomy: ellipsoid (analytic) or template (the MNI ICBM152 template warped per patient)")
    parser.add_argument("--force", action="store_true", help="regenerate studies that already exist")
    args = parser.parse_args(argv)
    try:
        appearance = _spec(args.appearance, ("fixed", "random"))
        conventions = _spec(args.conventions, ("none", "random"))
    except ValueError as error:
        parser.error(str(error))
    conventions = None if conventions == "none" else conventions
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        parser.error(f"unknown kind(s) {', '.join(bad)}; choose from {', '.join(KINDS)}")
    if args.labelled > args.per_kind or args.per_kind < 0 or args.labelled < 0:
        parser.error("need 0 <= --labelled <= --per-kind")
    started = time.perf_counter()
    series = {"auto": None, "yes": True, "no": False}[args.ctp_series]
    if args.isles22:
        from strokelabel.phantom.isles_layout import generate_isles_dataset

        results = generate_isles_dataset(args.out, n=args.per_kind, size=args.size, seed=args.seed, progress=print,
                                         appearance=appearance, conventions=conventions, family=args.family)
    else:
        results = generate_dataset(args.out, per_kind=args.per_kind, labelled_per_kind=args.labelled, size=args.size,
                                   seed=args.seed, kinds=kinds, progress=print, skip_existing=not args.force,
                                   write_ctp_series=series, appearance=appearance, conventions=conventions, family=args.family)
    print(f"{len(results)} studies in {args.out} ({time.perf_counter() - started:.1f} s)")
    return 0


def _spec(text: str, names: tuple):
    """A named setting or a JSON dict."""
    if text in names:
        return text
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError(f"{text!r} is neither one of {', '.join(names)} nor a JSON dict") from None
    if not isinstance(value, dict):
        raise ValueError(f"{text!r} is neither one of {', '.join(names)} nor a JSON dict")
    return value


if __name__ == "__main__":
    sys.exit(main())
