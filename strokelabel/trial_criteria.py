"""The late-window imaging criteria a thrombectomy or thrombolysis decision reads: one place for the rules.

DEFUSE 3 (Albers et al., NEJM 2018): core < 70 mL, mismatch ratio ≥ 1.8, mismatch volume ≥ 15 mL.
EXTEND (Ma et al., NEJM 2019): core < 70 mL, mismatch ratio > 1.2, mismatch volume > 10 mL.
Mismatch volume = hypoperfusion (Tmax > 6 s) - core; mismatch ratio = hypoperfusion / core.

Every caller (the result's figures, the summary picture, scripts/evaluate_maps.py's decision table)
asks these objects, so a verdict cannot differ between the answer a clinician reads and the
figures it was measured by.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MismatchCriteria:
    """Imaging criteria of a late-window trial: core below a volume, mismatch ratio and volume above limits.

    ``inclusive``: the ratio and mismatch limits are met at equality (DEFUSE 3: ≥) or only above (EXTEND: >).
    """

    name: str
    max_core_ml: float
    min_ratio: float
    min_mismatch_ml: float
    inclusive: bool

    def check(self, core_ml: float, hypoperfusion_ml: float) -> dict[str, bool]:
        """Each criterion in words -> met. With no core the ratio is unbounded: met when there is any hypoperfusion."""
        at_least = (lambda a, b: a >= b) if self.inclusive else (lambda a, b: a > b)
        sign = "≥" if self.inclusive else ">"
        mismatch_ml = hypoperfusion_ml - core_ml
        ratio_ok = at_least(hypoperfusion_ml / core_ml, self.min_ratio) if core_ml > 0 else hypoperfusion_ml > 0
        return {
            f"core < {self.max_core_ml:g} mL": bool(core_ml < self.max_core_ml),
            f"mismatch ratio {sign} {self.min_ratio:g}": bool(ratio_ok),
            f"mismatch volume {sign} {self.min_mismatch_ml:g} mL": bool(at_least(mismatch_ml, self.min_mismatch_ml)),
        }

    def met(self, core_ml: float, hypoperfusion_ml: float) -> bool:
        """The verdict: every criterion met."""
        return all(self.check(core_ml, hypoperfusion_ml).values())


DEFUSE3 = MismatchCriteria("DEFUSE 3", 70.0, 1.8, 15.0, inclusive=True)
EXTEND = MismatchCriteria("EXTEND", 70.0, 1.2, 10.0, inclusive=False)
CRITERIA = (DEFUSE3, EXTEND)
