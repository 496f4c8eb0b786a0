"""The cost model: a roofline prediction from calibration, corrected by history.

``roofline(cal, flops, nbytes, h2d_bytes)`` predicts

    latency + max(flops / peak GFLOPS, bytes / read bandwidth) + h2d_bytes / link

(the link is the pinned one: non-resident operands come from the host tier, which is
pinned on CUDA). Real kernels rarely reach the peaks, so a per-(kernel, device)
:class:`History` learns how far off the roofline each one is: the *lower quartile* of
``measured / predicted`` over its last samples. Interference only ever slows a launch down,
and it comes in bursts: right after an idle moment, OpenMP workers woken late stalled the
first 5-15 launches of a 20 µs Numba reduction at 6 ms each on a 16-vCPU machine — a median
of the first samples took them for the device's speed and never went back to it. The lower
quartile ignores up to three outliers in four (one 100× spike moves it by at most one
rank), and the window is bounded, so a kernel that really got slower (throttling) is
followed within three quarters of a window. Until ``trust_after`` samples the roofline
alone is used.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .calibration import Calibration


@dataclass
class Prediction:
    """Predicted seconds of one op on one device, and where the figure comes from."""

    device: str
    seconds: float
    source: str  # "roofline" or "history"
    samples: int = 0  # history samples behind it
    parts: dict[str, float] = field(default_factory=dict)  # latency, compute, memory, transfer

    def __repr__(self) -> str:
        how = f"history of {self.samples}" if self.source == "history" else "roofline"
        return f"<Prediction {self.device}: {self.seconds * 1e3:.3f} ms ({how})>"


def roofline(
    cal: Calibration,
    flops: float,
    nbytes: float,
    h2d_bytes: float = 0.0,
    peak: str = "gflops",
    latency_field: str = "launch_us",
) -> Prediction:
    """Latency + the slower of compute and memory + moving non-resident operands in.
    ``peak``: the calibrated compute roof that applies (``"matmul_gflops"`` for matrix
    products, which BLAS runs far above a plain kernel's FMA rate on CPUs). ``latency_field``:
    ``"launch_us"`` (launched and waited for: ops whose result is read, like reductions)
    or ``"enqueue_us"`` (asynchronous launches in a stream: kernels, matmul)."""
    latency = (getattr(cal, latency_field, None) or cal.launch_us) * 1e-6
    gflops = getattr(cal, peak, None) or cal.gflops
    compute = flops / (gflops * 1e9) if flops and gflops else 0.0
    memory = nbytes / (cal.read_gbps * 1e9) if nbytes and cal.read_gbps else 0.0
    link = cal.h2d_pinned_gbps
    transfer = h2d_bytes / (link * 1e9) if h2d_bytes and link else 0.0
    parts = {"latency": latency, "compute": compute, "memory": memory, "transfer": transfer}
    return Prediction(cal.device, latency + max(compute, memory) + transfer, "roofline", 0, parts)


class History:
    """Per-(kernel, device) correction of the roofline, learnt from measured times."""

    def __init__(self, window: int = 32, trust_after: int = 5, max_keys: int = 4096):
        self.window, self.trust_after, self.max_keys = window, trust_after, max_keys
        self._ratios: dict[tuple[Any, str], deque[float]] = {}
        self._lock = threading.Lock()

    def record(self, key: Any, device: str, predicted: float, measured: float) -> None:
        """One launch of ``key`` on ``device``: roofline said ``predicted``, it took
        ``measured`` seconds."""
        if predicted <= 0 or measured <= 0:
            return
        with self._lock:
            q = self._ratios.get((key, device))
            if q is None:
                if len(self._ratios) >= self.max_keys:  # bounded: forget the oldest key
                    self._ratios.pop(next(iter(self._ratios)))
                q = self._ratios[(key, device)] = deque(maxlen=self.window)
            q.append(measured / predicted)

    def samples(self, key: Any, device: str) -> int:
        q = self._ratios.get((key, device))
        return len(q) if q is not None else 0

    def correct(self, key: Any, pred: Prediction) -> Prediction:
        """``pred`` scaled by the lower quartile of the ratios once there are enough."""
        with self._lock:
            q = self._ratios.get((key, pred.device))
            n = len(q) if q is not None else 0
            if n < self.trust_after:
                return pred
            scale = sorted(q)[(n - 1) // 4]  # type: ignore[arg-type]
        parts = {k: v * scale for k, v in pred.parts.items()}
        return Prediction(pred.device, pred.seconds * scale, "history", n, parts)

    def __len__(self) -> int:
        return len(self._ratios)
