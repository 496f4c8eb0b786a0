"""The scheduler (issue 5, in progress): calibration of every device and the cost model
(roofline + robust history) and the policies that turn predictions into a decision with
its reason. Wiring ``device="auto"`` into the launch paths, splitting, and the decision
log come next."""

from __future__ import annotations

from .calibration import Calibration, cached, calibrate, fingerprint
from .cost import History, Prediction, roofline
from .policy import POLICIES, Decision, choose

__all__ = [
    "POLICIES", "Calibration", "Decision", "History", "Prediction", "cached", "calibrate",
    "choose", "fingerprint", "roofline",
]  # fmt: skip
