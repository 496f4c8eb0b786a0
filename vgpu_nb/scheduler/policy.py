"""Policies: which candidate device runs an op, and the one-sentence reason why.

Given a :class:`~vgpu_nb.scheduler.cost.Prediction` per candidate (devices that are
available and support the op's types), a policy picks one:

* ``performance``: the fastest predicted (the device where the operands already are, if
  it is within :data:`STAY_MARGIN` of the fastest);
* ``locality``: the one that moves the fewest bytes (operands already resident there), ties
  broken by speed;
* ``cpu_only`` / ``gpu_only``: the fastest among CPU devices (numpy, numba, CPU-emulated
  WebGPU) / real GPUs;
* ``power_saver``: the least power-hungry device whose prediction is within 1.5× of the
  fastest (CPU before an emulated GPU before a GPU; then the fastest of those).

Pure functions over predictions: the launch paths (next step of issue 5) build the
candidates, call :func:`choose` and keep the :class:`Decision`.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import DeviceUnavailable
from .cost import Prediction

POLICIES = ("performance", "locality", "cpu_only", "gpu_only", "power_saver")
#: performance: operands stay where they are unless another device is predicted this much
#: faster (moving them back and forth between two equal devices would cost both ways)
STAY_MARGIN = 1.1
#: power_saver's order of preference, by DeviceInfo.kind
_POWER = {"cpu": 0, "cpu-emulated gpu": 1, "gpu": 2}


@dataclass(eq=False)
class Decision:
    """One scheduling decision: every candidate's prediction, the choice and why; the
    actual time and the prediction error are filled in after the op ran."""

    kind: ClassVar[str] = "decision"  # (its kind on the telemetry bus)
    op: str
    policy: str
    candidates: list[Prediction]
    choice: str
    reason: str
    moved: dict[str, int] = field(default_factory=dict)  # bytes to move in, per candidate
    actual_s: float | None = None  # mean measured seconds of the launches it served
    t: float = field(default_factory=time.time)
    launches: int = 1  # launches served by this decision (the scheduler reuses it)
    measured: int = 0  # of which were measured
    shares: dict[str, float] = field(default_factory=dict)  # split: fraction per device

    _recent: deque[float] = field(default_factory=lambda: deque(maxlen=31), repr=False)

    def observe(self, seconds: float) -> None:
        """One more measured launch: ``actual_s`` is the median of the last ones (a first
        launch that compiled, or one timing spike, does not stand for the rest)."""
        self.measured += 1
        self._recent.append(seconds)
        self.actual_s = statistics.median(list(self._recent))

    @property
    def predicted_s(self) -> float:
        return next(p.seconds for p in self.candidates if p.device == self.choice)

    @property
    def error(self) -> float | None:
        """(actual - predicted) / predicted, once the op ran."""
        if self.actual_s is None or self.predicted_s <= 0:
            return None
        return (self.actual_s - self.predicted_s) / self.predicted_s

    def _repr_html_(self) -> str:
        """The reason, then every candidate's prediction (the choice in bold)."""
        from ..reprs import esc, num, table

        rows, bold = [], -1
        for k, p in enumerate(self.candidates):
            if p.device == self.choice:
                bold = k
            rows.append((p.device, f"{num(p.seconds * 1e3, '.4g')} ms", p.source, p.samples,
                         self.moved.get(p.device, 0)))  # fmt: skip
        t = table(("candidate", "predicted", "from", "samples", "bytes to move"), rows, bold)
        actual = "" if self.actual_s is None else f"; measured {num(self.actual_s * 1e3, '.4g')} ms"
        return (f"<div><b>vg decision</b> ({esc(self.op)}, policy {esc(self.policy)}, "
                f"{self.launches} launches{esc(actual)}): {esc(self.reason)}{t}</div>")  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        return {
            "op": self.op, "policy": self.policy, "choice": self.choice, "reason": self.reason,
            "predicted_ms": self.predicted_s * 1e3,
            "actual_ms": None if self.actual_s is None else self.actual_s * 1e3,
            "error": self.error,
            "launches": self.launches, "measured": self.measured,
            "shares": dict(self.shares) or None,
            "candidates": {p.device: p.seconds * 1e3 for p in self.candidates}, "t": self.t,
        }  # fmt: skip


def _ms(s: float) -> str:
    if s >= 1:
        return f"{s:.3g} s"
    return f"{s * 1e3:.3g} ms" if s >= 1e-4 else f"{s * 1e6:.3g} µs"


def choose(
    op: str,
    preds: list[Prediction],
    kinds: dict[str, str],
    policy: str = "performance",
    moved: dict[str, int] | None = None,
) -> Decision:
    """Pick a device among ``preds`` under ``policy``. ``kinds``: DeviceInfo.kind per
    device; ``moved``: bytes that would have to be moved in, per device."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}: use one of {', '.join(POLICIES)}")
    moved = moved or {}
    pool = list(preds)
    if policy == "cpu_only":
        pool = [p for p in preds if kinds.get(p.device) != "gpu"]
    elif policy == "gpu_only":
        pool = [p for p in preds if kinds.get(p.device) == "gpu"]
    if not pool:
        have = ", ".join(f"{p.device} ({kinds.get(p.device, '?')})" for p in preds) or "none"
        raise DeviceUnavailable(
            f"policy {policy!r} leaves no device for {op} (candidates: {have})",
            fix="use policy 'performance', or a machine with such a device",
        )
    fastest = min(pool, key=lambda p: p.seconds)
    if policy == "locality":
        pick = min(pool, key=lambda p: (moved.get(p.device, 0), p.seconds))
    elif policy == "power_saver":
        ok = [p for p in pool if p.seconds <= 1.5 * fastest.seconds]
        pick = min(ok, key=lambda p: (_POWER.get(kinds.get(p.device, "gpu"), 2), p.seconds))
    else:
        pick = fastest
        here = [p for p in pool if moved.get(p.device, 0) == 0]
        if here and any(moved.values()):  # hysteresis: data stays unless moving pays clearly
            best_here = min(here, key=lambda p: p.seconds)
            if best_here.seconds <= STAY_MARGIN * fastest.seconds:
                pick = best_here
    others = sorted((p for p in preds if p is not pick), key=lambda p: p.seconds)
    vs = ", ".join(f"{p.device} {_ms(p.seconds)}" for p in others[:3])
    reason = f"{pick.device}: {_ms(pick.seconds)} predicted" + (f" vs {vs}" if vs else "")
    if pick.source == "history":
        reason += f" (from {pick.samples} past runs)"
    if moved.get(pick.device, 0) == 0 and any(moved.values()):
        reason += "; operands already resident there"
    elif moved.get(pick.device, 0):
        reason += f"; moves {moved[pick.device]} bytes in first"
    if policy != "performance":
        reason += f" [policy {policy}]"
    return Decision(op, policy, list(preds), pick.device, reason, dict(moved))
