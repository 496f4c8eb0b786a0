"""``device="auto"``: where each op runs, decided from measurements, and why.

An op on ``auto`` (``k.launch(n, ..., device="auto")``, or any op under
``vg.use("auto")`` / ``with vg.device("auto"):``) describes itself as a :class:`Work`:
its name, a history key, its flops and bytes, its array operands and which devices
support it. :func:`run` then

1. takes the **candidates**: available devices that support the op's types and features
   (the NumPy device only for built-in ops — it runs kernel-language code thread by thread
   in Python, for debugging — and never for kernels);
2. **predicts** each one: the calibrated roofline (``vg.calibrate()``, measured on first
   use if this machine has no calibration yet), corrected by the per-(op, size, device)
   :class:`~vgpu_nb.scheduler.cost.History` once it has enough samples, plus the time to
   move the operands that are not there yet (pageable link speeds, both ends);
3. lets the **policy** choose (:func:`~vgpu_nb.scheduler.policy.choose`), logs the
   :class:`~vgpu_nb.scheduler.policy.Decision` and **moves the operands** to the chosen
   device: they live there afterwards (like StarPU or Legate: data follows work), so the
   next launch finds them resident. An array that cannot move — spilled or out-of-core, read
   by a pending expression, or held by someone outside (a NumPy view from ``x.numpy()``,
   DLPack) — keeps the op on its device, and the reason says so;
4. runs the op and, on sampled launches, **measures** it (:func:`measure`: its cost per
   call in a loop) to teach the history: every launch until the history is trusted, then
   one in :data:`SAMPLE_EVERY`.

A decision is reused for the same op, size bucket, operand devices and policy — that is
what keeps ``auto`` within a few percent of a hand-placed launch — and re-made when the
chosen device's history becomes trusted, then after as many launches again as it served
so far (at most :data:`MAX_RECHECK`). The log shows
each decision once with the number of launches it served and their mean measured time.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..array import Array as _ARRAY
from ..backends.base import Device
from ..devices import all_infos, get_device
from ..errors import DeviceUnavailable, UnsupportedOnBackend
from . import current_policy
from .calibration import Calibration, cached, calibrate
from .cost import History, Prediction, roofline
from .log import record
from .policy import Decision, choose

HISTORY = History()
SAMPLE_EVERY = 32  # once trusted, one launch in this many is measured
RECHECK = 64  # launches between re-plans of a split
MAX_RECHECK = 4096  # the longest a decision serves before it is made again

#: set while a scheduled op runs, so that the op's own code does not schedule again
_INSIDE: contextvars.ContextVar[bool] = contextvars.ContextVar("vg_auto_inside", default=False)
_lock = threading.Lock()


@dataclass
class Work:
    """One op, as the scheduler sees it."""

    op: str  # its name in the log
    key: tuple[Any, ...]  # history key: op, dtypes, size bucket
    cost: Callable[[], tuple[float, float]]  # → (flops, bytes), only called when deciding
    arrays: Sequence[Any]  # the vg.Array operands (moved to the chosen device)
    unsupported: Callable[[Device], str | None]  # why a device cannot run it, or None
    language: bool = False  # kernel-language code (never on the NumPy device)
    peak: str = "gflops"  # the calibrated compute roof that applies (matmul_gflops)
    latency: str = "launch_us"  # enqueue_us for asynchronous launches (kernels, matmul)
    readback: bool = False  # its result is read (reductions): measured launches read it too


class _Entry:
    """A decision in use: the device, the roofline seconds per device (the history's
    reference), launches left before deciding again, launches served."""

    __slots__ = ("device", "decision", "roof", "left", "count", "warm")

    def __init__(self, device: Device, decision: Decision, roof: dict[str, float], left: int):
        self.device, self.decision, self.roof, self.left, self.count = (
            device, decision, roof, left, 0,
        )  # fmt: skip
        self.warm = False  # the device's history has its first samples: sampling is sparse


_ENTRIES: dict[tuple[Any, ...], _Entry] = {}
#: (key, policy, device) → the entry in use when every operand already lives on that device:
#: the launch fast paths' one lookup (:func:`stay`)
_STAY: dict[tuple[Any, ...], _Entry] = {}
_MAX_ENTRIES = 4096
#: (key, device) pairs that have run once: a first run (compiling, first touch) is never a
#: sample of the history
_WARMED: set[tuple[Any, str]] = set()


def stay(key: tuple[Any, ...], dev: Device) -> int:
    """Fast path for a launch of ``key`` whose operands all live on ``dev``: 1 if the
    decision in use for ``dev`` serves it (the caller just runs it there), 2 if it serves it
    and wants it measured (the caller syncs, times it and calls :func:`observe`), 0 to send
    it through :func:`run` (no decision yet, time to decide again, or still learning)."""
    ent = _STAY.get((key, current_policy(), dev))
    if ent is None or not ent.warm or ent.left <= 1 or _INSIDE.get():
        return 0
    ent.left -= 1
    ent.count = ent.decision.launches = c = ent.count + 1
    return 2 if c % SAMPLE_EVERY == 0 else 1


def observe(key: tuple[Any, ...], dev: Device, seconds: float) -> None:
    """A launch served by :func:`stay` took ``seconds`` (measured by the caller)."""
    ent = _STAY.get((key, current_policy(), dev))
    if ent is not None:
        HISTORY.record(key, dev.name, ent.roof.get(dev.name, 0.0), seconds)
        ent.decision.observe(seconds)


def measure(dev: Device, fn: Callable[[], Any], readback: bool = False) -> tuple[Any, float]:
    """Run ``fn`` on ``dev`` and say what it costs per call when called again and again —
    what the oracle of the regret benchmark measures, and what a user's loop pays.

    An op whose result is read (``readback``: reductions) waits for the device each time:
    its cost is the time until the result is on the host. An asynchronous launch (a kernel,
    a matmul on CUDA) costs a loop of them the longer of the host's enqueue time and the
    device's own time (CUDA events), not a synchronised round trip: timing launch + sync
    would charge a 6 µs CUDA launch 15-20 µs and send small kernels to the CPU (measured on
    an H200, issue 5). Other devices are timed round trip."""
    perf = time.perf_counter
    dev.sync()  # (the op alone: nothing queued before it counts)
    # (Device.timer_covers_launch: CUDA events bracket everything the launch queued; WebGPU
    # timestamps only its compute passes: wgpu is timed round trip)
    stop = dev.start_timer() if not readback and dev.timer_covers_launch else None
    t0 = perf()
    out = fn()
    if readback and out is not None:
        out.numpy()  # (waits for the op: no second sync, which a caller would not pay)
        return out, perf() - t0
    host = perf() - t0
    resolve = stop() if stop is not None else None
    dev.sync()
    if resolve is None:
        return out, perf() - t0
    on_device = resolve()
    return out, max(host, on_device) if on_device is not None else perf() - t0


def timed(key: tuple[Any, ...], dev: Device, fn: Callable[[], Any], readback: bool = False) -> Any:
    """Run ``fn`` :func:`measure` d and :func:`observe` it."""
    out, seconds = measure(dev, fn, readback)
    observe(key, dev, seconds)
    return out


def inside() -> bool:
    return _INSIDE.get()


# ---- calibration and candidates -------------------------------------------------------------
def calibration(dev: Device) -> Calibration:
    """The device's calibration, measured now (once per machine, cached) if missing."""
    cal = cached(dev.name)
    if cal is None:
        calibrate([dev.name], progress=True)
        cal = cached(dev.name)
        assert cal is not None
    return cal


def _available() -> list[Device]:
    out = []
    for info in all_infos():
        if info.available:
            try:
                out.append(get_device(info.name))
            except Exception:  # noqa: BLE001  (a device that fails to open is no candidate)
                continue
    return out


def candidates(work: Work) -> tuple[list[Device], dict[str, str]]:
    """Devices that can run ``work``, and why each other one cannot."""
    ok, why_not = [], {}
    for dev in _available():
        if work.language and dev.backend == "numpy":
            why_not[dev.name] = "runs kernel-language code thread by thread (debugging only)"
            continue
        why = work.unsupported(dev) or _room(work, dev)
        if why:
            why_not[dev.name] = why
        else:
            ok.append(dev)
    return ok, why_not


def _room(work: Work, dev: Device) -> str | None:
    """Why the operands cannot all move to ``dev`` (a buffer limit, its memory budget)."""
    from ..memory.budgets import human
    from ..memory.manager import MEM

    limit = dev.max_array_bytes()
    big = max((a.nbytes for a in work.arrays), default=0)
    if limit is not None and big > limit:
        return f"an operand ({human(big)}) is larger than its buffer limit ({human(limit)})"
    away = sum(a.nbytes for a in work.arrays if a.device is not dev)
    if away and not MEM.fits_device(dev, away):
        return f"the operands ({human(away)}) do not fit its memory budget"
    return None


def _stuck(a: Any) -> str | None:
    """Why array ``a`` cannot move to another device, or None if it can."""
    from ..array import Array, _Pending
    from ..memory.manager import DEVICE, MEM

    if type(a) is _Pending:
        a._buf  # noqa: B018  (evaluate a pending expression: its result can move)
    if type(a) is not Array:
        return "spilled or out-of-core" if a.tier != DEVICE else "read by a pending expression"
    st = a._st
    if st is not None and (st.tier != DEVICE or MEM._in_use(st)):
        return "held outside vgpu_nb (a NumPy view or DLPack)" if st.tier == DEVICE else "spilled"
    return None


def _link(cal: Calibration, to_device: bool) -> float:
    """Seconds per byte of a plain (pageable) copy to or from the device; 0 on devices
    whose memory is RAM."""
    gbps = cal.h2d_pageable_gbps if to_device else cal.d2h_pageable_gbps
    return 1.0 / (gbps * 1e9) if gbps else 0.0


def predict(
    work: Work, cands: list[Device], flops: float, nbytes: float, reuse: int = 1
) -> tuple[list[Prediction], dict[str, int], dict[str, float]]:
    """Per candidate: the corrected prediction (with transfers), bytes to move in, and the
    bare roofline seconds (the history's reference). Moved operands stay where they go, so
    their transfer is shared by the ``reuse`` launches expected to find them there."""
    preds, moved, roof = [], {}, {}
    for dev in cands:
        cal = calibration(dev)
        base = roofline(cal, flops, nbytes, peak=work.peak, latency_field=work.latency)
        roof[dev.name] = base.seconds
        p = HISTORY.correct(work.key, base)
        move, transfer = 0, 0.0
        for a in work.arrays:
            st = a._st
            if st is not None and st.tier == "host" and st.buf is None:
                # in host RAM (pinned when its device is CUDA): CPU devices read it where it
                # is, its own device at the pinned link's speed, others at the pageable one
                if not dev.host_is_device:
                    pinned = a.device is dev and cal.h2d_pinned_gbps
                    transfer += a.nbytes / (cal.h2d_pinned_gbps * 1e9) if pinned else (
                        a.nbytes * _link(cal, to_device=True))  # fmt: skip
                continue
            if a.device is not dev:
                move += a.nbytes
                src = a.device
                if not src.host_is_device:
                    transfer += a.nbytes * _link(calibration(src), to_device=False)
                if not dev.host_is_device:
                    transfer += a.nbytes * _link(cal, to_device=True)
        moved[dev.name] = move
        transfer /= reuse
        if transfer:
            parts = dict(p.parts, transfer=transfer)
            p = Prediction(p.device, p.seconds + transfer, p.source, p.samples, parts)
        preds.append(p)
    return preds, moved, roof


def _kinds(devs: Sequence[Device]) -> dict[str, str]:
    return {d.name: d.info.kind for d in devs}


# ---- deciding -----------------------------------------------------------------------------------
def decide(work: Work, policy: str, served: int = 0) -> _Entry:
    """Make a decision for ``work`` under ``policy``. ``served``: launches this op already
    ran with these operands where they are. Moving operands is charged to ``served + 1``
    launches — ski rental: stay (rent) until what staying has cost over the faster device
    reaches the price of the move, then move (buy). A first launch pays the whole move, so
    a one-off op never moves for nothing, and an op repeated N times never pays more than
    about twice what placing it right from the start would have cost."""
    cands, why_not = candidates(work)
    if not cands:
        detail = "; ".join(f"{k}: {v}" for k, v in why_not.items()) or "no device available"
        raise UnsupportedOnBackend(
            f"{work.op}: no device can run it ({detail})",
            fix="check vg.devices(), or cast the data (x.astype(vg.f32))",
        )
    stuck = {}
    for a in work.arrays:
        why = _stuck(a)
        if why:
            stuck[a.device.name] = why
    pinned_to = {a.device for a in work.arrays if a.device.name in stuck}
    if len(pinned_to) > 1:
        names = ", ".join(sorted(d.name for d in pinned_to))
        raise DeviceUnavailable(
            f"{work.op}: operands that cannot move live on {names}",
            fix="bring them to one device first (x = x.to(...)), or free the NumPy views",
        )
    if pinned_to:
        home = next(iter(pinned_to))
        if home not in cands:
            raise UnsupportedOnBackend(
                f"{work.op}: an operand must stay on {home.name} ({stuck[home.name]}), which "
                f"cannot run it: {why_not.get(home.name, 'unavailable')}",
                fix="free the NumPy views of the operand, or move it explicitly (x.to(...))",
            )
        cands = [home]
    flops, nbytes = work.cost()
    reuse = served + 1
    preds, moved, roof = predict(work, cands, flops, nbytes, reuse)
    d = choose(work.op, preds, _kinds(cands), policy, moved)
    if reuse > 1 and moved.get(d.choice):
        d.reason += f" (shared by the {reuse} launches so far: this op keeps coming back)"
    if pinned_to:
        d.reason += f"; an operand must stay on {home.name} ({stuck[home.name]})"
    dev = next(c for c in cands if c.name == d.choice)
    return _Entry(dev, d, roof, HISTORY.trust_after)


def _move(work: Work, dev: Device) -> None:
    """Move every operand to ``dev`` (in place: the same vg.Array objects, and every
    reshaped view of their memory, now live there)."""
    from ..array import migrate

    for a in work.arrays:
        if a.device is not dev:
            migrate(a, dev)


def place(work: Work, policy: str) -> tuple[Device, _Entry]:
    """The device for this launch of ``work`` (deciding if needed), operands moved there."""
    homes = tuple(a.device for a in work.arrays)
    ck = (work.key, policy, homes)
    ent = _ENTRIES.get(ck)
    if ent is None or ent.left <= 0:
        old, ent = ent, decide(work, policy, ent.count if ent is not None else 0)
        if old is not None and old.device is ent.device and old.decision.choice == ent.device.name:
            # the same choice again: one decision in the log, its figures brought up to date
            d, new = old.decision, ent.decision
            d.candidates, d.reason, d.moved = new.candidates, new.reason, new.moved
            ent.decision, ent.count = d, old.count
            ent.warm = old.warm
            # stable: decide again after as many launches as so far (a move that starts to
            # pay is seen within 2x; a settled op is checked less and less often)
            ent.left = min(MAX_RECHECK, max(ent.left, old.count))
        else:
            record(ent.decision)
        with _lock:
            if len(_ENTRIES) >= _MAX_ENTRIES:
                _ENTRIES.pop(next(iter(_ENTRIES)))
                _STAY.clear()
            _ENTRIES[ck] = ent
            if homes and all(h is ent.device for h in homes):
                _STAY[(work.key, policy, ent.device)] = ent
    if any(h is not ent.device for h in homes) and any(
        _stuck(a) or _room(work, ent.device) for a in work.arrays if a.device is not ent.device
    ):  # a reused decision, but an operand cannot move now (a NumPy view, a spill): again
        ent = decide(work, policy, ent.count)
        record(ent.decision)
        _ENTRIES[ck] = ent
    ent.left -= 1
    ent.count += 1
    ent.decision.launches = ent.count
    if any(h is not ent.device for h in homes):
        _move(work, ent.device)
    return ent.device, ent


def run(work: Work, policy: str, fn: Callable[[Device], Any]) -> Any:
    """Place ``work``, run ``fn(device)`` there, and measure it when sampling."""
    dev, ent = place(work, policy)
    name = dev.name
    n = HISTORY.samples(work.key, name)
    ent.warm = n >= HISTORY.trust_after + 2
    sample = not ent.warm or ent.count % SAMPLE_EVERY == 0
    warmup = (work.key, name) not in _WARMED  # a first run compiles, allocates, faults
    token = _INSIDE.set(True)
    ok = False
    try:
        if warmup or not sample:
            out = fn(dev)
            ok = True
            if warmup:
                _WARMED.add((work.key, name))
                if len(_WARMED) > 4 * _MAX_ENTRIES:
                    _WARMED.clear()
            return out
        out, dt = measure(dev, lambda: fn(dev), work.readback)
        ok = True
    finally:
        _INSIDE.reset(token)
        if not ok:  # it failed there: the next launch decides afresh
            _forget(work.key)
    HISTORY.record(work.key, name, ent.roof.get(name, 0.0), dt)
    ent.decision.observe(dt)
    return out


def route(
    key: tuple[Any, ...],
    arrays: Sequence[Any],
    work: Callable[[], Work],
    fn: Callable[[Device], Any],
    readback: bool = False,
) -> Any:
    """An op under ``auto``: ``fn(device)`` runs it on ``device`` (its operands there,
    without asking the scheduler again); ``work()`` describes it when a decision is needed."""
    dev = arrays[0].device if arrays else None
    here = dev is not None
    for a in arrays:
        if type(a) is not _ARRAY or a.device is not dev:
            here = False
            break
    if here:
        how = stay(key, dev)  # type: ignore[arg-type]
        if how == 1:
            return fn(dev)
        if how == 2:
            return timed(key, dev, lambda: fn(dev), readback)
    return run(work(), current_policy(), fn)


def _forget(key: tuple[Any, ...]) -> None:
    with _lock:
        for k in [k for k in _ENTRIES if k[0] == key]:
            del _ENTRIES[k]
        for k in [k for k in _STAY if k[0] == key]:
            del _STAY[k]


def reset() -> None:
    """Forget every decision in use and every history (tests, or after re-calibrating)."""
    global HISTORY
    from .partition import _PLANS, _RATES, _TRIED

    with _lock:
        _ENTRIES.clear()
        _STAY.clear()
        _PLANS.clear()
        _RATES.clear()
        _TRIED.clear()
        _WARMED.clear()
        HISTORY = History()


__all__ = ["HISTORY", "Work", "candidates", "decide", "inside", "measure", "place", "reset",
           "run", "observe", "route", "stay", "timed"]  # fmt: skip
