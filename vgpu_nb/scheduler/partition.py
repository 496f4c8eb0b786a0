"""Split: one large op over several devices at once, in proportion to their predicted
throughput.

What splits: 1-D kernels whose every array is touched only at the thread's own element
(``x[i]`` with ``i = vg.tid()``, arrays of the launch's length), the built-in reductions
``sum prod min max mean dot norm`` over all elements, and ``@vg.reduction`` s over all
elements. The data lives in host memory (the :data:`~vgpu_nb.devices.HOME` device; operands
elsewhere are moved there first): CPU devices work on their share in place, the others
copy their share in (and, for kernels, the arrays they write back out) through their
staged, pinned copies.

How much each device gets: every candidate's prediction for the whole op (roofline or
history, plus moving the data in) minus its launch latency is its time per element; shares
are inversely proportional to it, so that all devices finish together. Devices are added
fastest first while the predicted split time still drops (each extra device costs a thread
hand-off). ``split=True`` on an op splits over at least the two best devices even when the
prediction says one is enough (the user asked; the log says it was forced);
``vg.scheduler.split = True`` lets ``auto`` split when the prediction says it pays.

Partial reductions are combined on the host in device order with the op's own combine
(integer reductions are exact, identical to one device; float ones differ from one device
by rounding only). Each share runs on its own thread — GPU work and copies release the
GIL, and so do our Numba kernels (``nogil``) — the CPU share on the caller's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import numpy as np

from ..backends.base import Device
from ..errors import DeviceUnavailable
from . import auto
from .cost import Prediction
from .log import record
from .policy import Decision, _ms

HAND_OFF_S = 100e-6  # cost of one more device: a thread hand-off and its own launch
#: (op key, device) → seconds per element its share took in the last splits (a moving
#: average): shares are rebalanced by what devices really do side by side (two devices
#: sharing cores or memory bandwidth run slower together than alone)
_RATES: dict[tuple[Any, str], float] = {}
#: (op key, device) pairs that have run a share once: a first share compiles its kernel and
#: first-touches its buffers (hundreds of ms on a GPU), which is no rate — taken as one, it
#: ranked cuda:0 below its own Vulkan adapter for good (H200, issue 5)
_TRIED: set[tuple[Any, str]] = set()
#: plans in use, per (op key, policy, forced): (fractions, decision, uses left)
_PLANS: dict[tuple[Any, ...], tuple[list[tuple[Device, float]], Decision, int]] = {}
_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="vg-split")
    return _POOL


def plan(
    work: auto.Work, force: bool, policy: str, back: Sequence[Any] = ()
) -> tuple[list[tuple[Device, float]], Decision]:
    """The devices and their fractions, and the decision saying why. ``back``: the arrays
    the op writes, whose shares GPUs copy back to host memory."""
    cands, why_not = auto.candidates(work)
    # the NumPy device shares the numba device's memory and cores, single-threaded: never a
    # share of its own
    cands = [d for d in cands if d.backend != "numpy"]
    if not cands:
        raise DeviceUnavailable(f"{work.op}: no device can run it ({why_not})")
    flops, nbytes = work.cost()
    preds, moved, _ = auto.predict(work, cands, flops, nbytes)
    by_name = {d.name: d for d in cands}
    lat = {p.device: p.parts.get("latency", 0.0) for p in preds}
    per = {p.device: max(p.seconds - lat[p.device], 1e-12) for p in preds}  # whole op, no latency
    for name in per:  # + copying what it wrote back (auto's prediction leaves results there)
        per[name] += _write_back(by_name[name], back)
    n = _elements(work)
    for name in per:  # what each device's share really took in earlier splits, per element
        rate = _RATES.get((work.key, name))
        if rate is not None and n:
            per[name] = rate * n
    ranked = sorted(preds, key=lambda p: per[p.device])
    best_single = min(preds, key=lambda p: p.seconds)
    # one share per piece of hardware: two adapters of one GPU (CUDA and its Vulkan
    # adapter), or numba and a CPU-emulated GPU, only compete for the same cores
    order, seen = [], set()
    for p in ranked:
        hw = hardware(by_name[p.device])
        if hw not in seen:
            seen.add(hw)
            order.append(p)
    shared = len(order) < 2 <= len(ranked)
    if shared:  # nothing independent to split over: only split=True gets here, share anyway
        order = ranked

    def split_time(k: int) -> float:
        use = order[:k]
        inv = sum(1.0 / per[p.device] for p in use)
        return max(lat[p.device] for p in use) + 1.0 / inv + HAND_OFF_S * (k - 1)

    k_best = min(range(1, len(order) + 1), key=split_time)
    if k_best == 1 and len(order) > 1:
        k_best = 2  # (the best split, to compare: its history may say more)
    use = order[:k_best]
    inv = sum(1.0 / per[p.device] for p in use)
    fractions = [(by_name[p.device], (1.0 / per[p.device]) / inv) for p in use]
    name = "+".join(d.name for d, _ in fractions)
    roof = Prediction(name, split_time(k_best), "roofline", 0,
                      {"latency": max(lat[p.device] for p in use)})  # fmt: skip
    # split runs teach their own history: devices that share cores or memory bandwidth
    # (numba and a CPU-emulated GPU) run slower together than the roofline says
    split_pred = auto.HISTORY.correct(_key(work, name), roof)
    t = split_pred.seconds
    forced = False
    if len(use) > 1 and shared and not force:
        fractions, name = [(by_name[best_single.device], 1.0)], best_single.device
    elif len(use) > 1 and t >= best_single.seconds:
        if force:
            forced = True
        else:
            fractions, name = [(by_name[best_single.device], 1.0)], best_single.device
    elif len(use) == 1:
        fractions, name = [(by_name[use[0].device], 1.0)], use[0].device
    shares = ", ".join(f"{d.name} {f:.0%}" for d, f in fractions)
    if len(fractions) == 1 and shared:
        reason = (
            f"{name}: {_ms(best_single.seconds)} predicted; no second device on other "
            f"hardware to split with ({', '.join(p.device for p in ranked)} share it)"
        )
    elif len(fractions) == 1:
        reason = (f"{name}: {_ms(best_single.seconds)} predicted; splitting would not pay "
                  f"({split_pred.device} {_ms(t)})" if len(order) > 1
                  else f"{name}: the only device that can run it")  # fmt: skip
    else:
        reason = (f"split {shares}: {_ms(t)} predicted vs {best_single.device} alone "
                  f"{_ms(best_single.seconds)}")  # fmt: skip
        if forced:
            reason += " (split=True: forced although one device is predicted faster)"
        if shared:
            reason += "; these devices share the same hardware, so their shares compete"
    cands_out = [*preds, split_pred] if split_pred.device not in by_name else preds
    d = Decision(work.op, policy, cands_out, name, reason, dict(moved))
    d.shares = {dev.name: f for dev, f in fractions} if len(fractions) > 1 else {}
    d._roof = roof.seconds  # type: ignore[attr-defined]  (the split history's reference)
    return fractions, d


def _key(work: auto.Work, name: str) -> tuple[Any, ...]:
    return (*work.key, "split", name)


def hardware(dev: Device) -> str:
    """What a device really runs on: the host CPU (numpy, numba, CPU-emulated GPUs), or the
    GPU named by its adapter (``"NVIDIA H100 80GB HBM3"`` for cuda:0 and its Vulkan
    adapter alike)."""
    if dev.info.kind != "gpu":
        return "host CPU"
    return dev.info.adapter.split(" / ")[0].split("/")[0].strip()


def bounds(n: int, fractions: Sequence[tuple[Device, float]]) -> list[tuple[Device, int, int]]:
    """Contiguous element ranges, in device order, covering ``[0, n)`` exactly."""
    out, lo, acc = [], 0, 0.0
    for k, (dev, f) in enumerate(fractions):
        acc += f
        hi = n if k == len(fractions) - 1 else min(n, int(round(acc * n)))
        out.append((dev, lo, hi))
        lo = hi
    return [(d, a, b) for d, a, b in out if b > a]


def execute(
    parts: list[tuple[Device, int, int]],
    task: Callable[[Device, int, int], Any],
    seconds: list[float] | None = None,
) -> list[Any]:
    """``task(dev, lo, hi)`` for every share, concurrently; results in share order (and,
    in ``seconds``, how long each share took)."""
    if seconds is not None:
        seconds[:] = [0.0] * len(parts)
        inner = task

        def task(dev: Device, lo: int, hi: int) -> Any:  # type: ignore[no-redef]
            t0 = time.perf_counter()
            out = inner(dev, lo, hi)
            dev.sync()
            seconds[next(k for k, p in enumerate(parts) if p[1] == lo)] = time.perf_counter() - t0
            return out

    futures: list[Any] = []
    local: list[tuple[int, Device, int, int]] = []
    for k, (dev, lo, hi) in enumerate(parts):
        if dev.host_is_device and not local:
            local.append((k, dev, lo, hi))  # the first CPU share runs on this thread
            futures.append(None)
        else:
            futures.append(_pool().submit(task, dev, lo, hi))
    out: list[Any] = [None] * len(parts)
    try:
        for k, dev, lo, hi in local:
            out[k] = task(dev, lo, hi)
    finally:  # every share has finished (or failed) before anything is released
        wait([f for f in futures if f is not None])
    for k, f in enumerate(futures):
        if f is not None:
            out[k] = f.result()
    return out


class Hosted:
    """One operand in host RAM: ``view`` (flat), and the device whose host tier it is
    (pinned there, so that device copies its share in at link speed), if any."""

    __slots__ = ("view", "pinned_on")

    def __init__(self, view: np.ndarray, pinned_on: Device | None):
        self.view, self.pinned_on = view, pinned_on

    def share(self, dev: Device, lo: int, hi: int) -> Any:
        """Elements ``[lo, hi)`` as a buffer of ``dev``: in place on CPU devices, a DMA
        from pinned memory on the operand's own GPU, a staged copy elsewhere."""
        v = self.view[lo:hi]
        if dev.host_is_device:
            return v
        if dev is self.pinned_on:
            return dev.from_host_tier(v)
        return dev.from_numpy(v)


def host_operands(work: auto.Work, writes: bool, held: list[Any]) -> list[Hosted]:
    """The operands' memory in host RAM: arrays of CPU devices in place, arrays spilled to
    their device's host tier in place (held there meanwhile: appended to ``held``), anything
    else moved to the home device first."""
    from ..array import Array, _Pending, migrate
    from ..devices import HOME, get_device
    from ..memory.manager import HOST, MEM

    home = get_device(HOME)
    out = []
    for a in work.arrays:
        if type(a) is _Pending:
            a._buf  # noqa: B018  (evaluate a pending expression first)
        st = a._st
        if type(a) is not Array and st.tier == HOST and st.host is not None:
            if writes and st.path is not None:
                raise DeviceUnavailable(
                    f"{work.op}: split cannot write an array that also has a copy on disk",
                    fix="launch without split=True",
                )
            MEM.hold(st)
            held.append(st)
            out.append(Hosted(st.host.reshape(-1), a.device))
            continue
        if type(a) is not Array and writes:
            raise DeviceUnavailable(
                f"{work.op}: split cannot write an array that lives on disk (it would write "
                "a copy)",
                fix="launch without split=True (out-of-core kernels stream on one device)",
            )
        if not a.device.host_is_device:
            why = auto._stuck(a)
            if why:
                raise DeviceUnavailable(
                    f"{work.op}: split needs its operands in host memory; one is on "
                    f"{a.device.name} and cannot move ({why})",
                    fix="launch without split=True, or free the NumPy views of it",
                )
            migrate(a, home)
        out.append(Hosted(a.numpy().reshape(-1), None))
    return out


def _execute_on_host(
    work: auto.Work,
    parts: list[tuple[Device, int, int]],
    task: Callable[[Device, int, int, list[Hosted]], Any],
    combine: Callable[[list[Any]], Any],
    writes: bool,
) -> Any:
    """The shares, on views of the operands' host memory (released on return: a view held
    on would pin the arrays where they are, see ``auto._stuck``)."""
    from ..memory.manager import MEM

    held: list[Any] = []
    seconds: list[float] = []
    try:
        hosts = host_operands(work, writes, held)
        out = combine(execute(parts, lambda dev, lo, hi: task(dev, lo, hi, hosts), seconds))
    finally:
        for st in held:
            MEM.unhold(st)
    for (dev, lo, hi), t in zip(parts, seconds, strict=True):
        if t > 0:
            key = (work.key, dev.name)
            if key not in _TRIED:
                _TRIED.add(key)
                continue
            old = _RATES.get(key)
            rate = t / (hi - lo)
            _RATES[key] = rate if old is None else 0.5 * (old + rate)
    if len(_RATES) > 4096:
        _RATES.clear()
        _TRIED.clear()
    return out


def _write_back(dev: Device, back: Sequence[Any]) -> float:
    """Seconds for ``dev`` to copy the written arrays back to host memory: at the pinned
    link's speed into its own host tier, the staged (pageable) one elsewhere."""
    if dev.host_is_device or not back:
        return 0.0
    cal = auto.calibration(dev)
    t = 0.0
    for a in back:
        st = a._st
        pinned = st is not None and st.tier == "host" and a.device is dev
        gbps = cal.d2h_pinned_gbps if pinned else cal.d2h_pageable_gbps
        t += a.nbytes / (gbps * 1e9) if gbps else 0.0
    return t


def _elements(work: auto.Work) -> int:
    return max((a.size for a in work.arrays), default=0)


def run(
    work: auto.Work,
    n: int,
    force: bool,
    task: Callable[[Device, int, int, list[Hosted]], Any],
    combine: Callable[[list[Any]], Any],
    back: Sequence[Any] = (),
) -> tuple[Any, Decision, bool]:
    """Plan (or reuse the plan in use for this op and size), run ``task(dev, lo, hi,
    host views of the operands)`` per share and
    ``combine`` the results; returns (result, decision, ran). A plan of one device runs
    nothing (ran False: the caller places the op as any ``auto`` op) unless forced.
    ``back``: the arrays the op writes (its tasks copy their shares back to host memory)."""
    from . import current_policy

    policy = current_policy()
    ck = (work.key, policy, force)
    hit = _PLANS.get(ck)
    if hit is None or hit[2] <= 0:
        fractions, d = plan(work, force, policy, back)
        if len(_PLANS) >= 1024:
            _PLANS.clear()
        single = len(fractions) < 2 and not force
        if not single:
            record(d)
        # a first split is re-planned at once, with the shares' measured speeds
        first = not any((work.key, dev.name) in _RATES for dev, _ in fractions)
        left = auto.RECHECK if len(fractions) < 2 else 1 if first else auto.HISTORY.trust_after
    else:
        fractions, d, left = hit
        single = len(fractions) < 2 and not force
        if not single:
            d.launches += 1
    _PLANS[ck] = (fractions, d, left - 1)
    if single:  # one device: the caller places it as any auto op (and logs that decision)
        return None, d, False
    parts = bounds(n, fractions)
    t0 = time.perf_counter()
    out = _execute_on_host(work, parts, task, combine, bool(back))
    dt = time.perf_counter() - t0
    d.observe(dt)
    if len(fractions) > 1:
        auto.HISTORY.record(_key(work, d.choice), d.choice, d._roof, dt)  # type: ignore[attr-defined]
    return out, d, True
