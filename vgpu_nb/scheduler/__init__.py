"""The scheduler (issue 5, in progress): calibration of every device and the cost model
(roofline + robust history). Policies, ``device="auto"``, splitting and decision records
come next."""

from __future__ import annotations

from .calibration import Calibration, cached, calibrate, fingerprint
from .cost import History, Prediction, roofline

__all__ = ["Calibration", "History", "Prediction", "cached", "calibrate", "fingerprint", "roofline"]
