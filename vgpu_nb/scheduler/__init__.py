"""The scheduler: calibration of every device (this step), then the cost model, policies
and ``device="auto"`` (issue 5, in progress)."""

from __future__ import annotations

from .calibration import Calibration, cached, calibrate, fingerprint

__all__ = ["Calibration", "cached", "calibrate", "fingerprint"]
