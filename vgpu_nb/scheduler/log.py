"""The decision log: a bounded ring buffer of :class:`~vgpu_nb.scheduler.policy.Decision` s,
each also emitted on the telemetry bus (kind ``"decision"``) for live dashboards."""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from ..telemetry.bus import BUS
from .policy import Decision

CAPACITY = 1000
_LOG: deque[Decision] = deque(maxlen=CAPACITY)
_LOCK = threading.Lock()


def record(d: Decision) -> Decision:
    """Keep ``d`` (the oldest goes once the buffer is full) and emit it."""
    with _LOCK:
        _LOG.append(d)
    if BUS._subs:
        BUS.emit(d)
    return d


def decisions(last: int | None = None) -> list[Decision]:
    """The :class:`Decision` objects themselves (newest last), for ``explain``."""
    with _LOCK:
        return list(_LOG)[-last:] if last else list(_LOG)


def log(last: int | None = None) -> Any:
    """The decisions as a pandas DataFrame (newest last): op, policy, choice, reason,
    predicted and actual ms, error, and one ``pred:<device>`` column per candidate."""
    import pandas as pd

    with _LOCK:
        rows = list(_LOG)[-last:] if last else list(_LOG)
    out = []
    for d in rows:
        row = d.as_dict()
        cands = row.pop("candidates")
        row.update({f"pred:{k}": v for k, v in cands.items()})
        out.append(row)
    cols = ["op", "policy", "choice", "reason", "predicted_ms", "actual_ms", "error", "launches",
            "measured", "shares", "t"]  # fmt: skip
    df = pd.DataFrame(out)
    return df if out else pd.DataFrame(columns=cols)


def explain(d: Decision) -> str:
    """A few lines on one decision: every candidate, its prediction and where it comes
    from (roofline parts or history), the choice and the outcome."""
    lines = [f"{d.op} [{d.policy}] → {d.choice}: {d.reason}"]
    for p in sorted(d.candidates, key=lambda p: p.seconds):
        mark = "*" if p.device == d.choice else " "
        src = f"history ({p.samples} runs)" if p.source == "history" else "roofline"
        parts = ", ".join(f"{k} {v * 1e3:.3g} ms" for k, v in p.parts.items() if v)
        lines.append(f" {mark} {p.device:8s} {p.seconds * 1e3:9.3f} ms  {src}"
                     + (f"  ({parts})" if parts else ""))  # fmt: skip
    if d.shares:
        lines.append("   split: " + ", ".join(f"{k} {v:.0%}" for k, v in d.shares.items()))
    if d.actual_s is not None:
        lines.append(f"   actual {d.actual_s * 1e3:.3f} ms (mean of {d.measured} measured of "
                     f"{d.launches} launches), error {d.error:+.0%}")  # fmt: skip
    return "\n".join(lines)


def clear() -> None:
    with _LOCK:
        _LOG.clear()
