"""StrokeLabel: the non-MONAI-Label core of the stroke app.

Phantom generator, perfusion maths, study naming, training-free baselines and metrics.
The MONAI Label app in ``apps/stroke`` imports this package.
"""

__version__ = "0.1.0"
