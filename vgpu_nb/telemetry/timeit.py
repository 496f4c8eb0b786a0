"""``vg.timeit(fn)``: IPython's ``%timeit`` for GPU code, with bytes, flops and roofline.

Decisions:

* **What is timed**: ``repeat`` runs of ``loops`` calls of ``fn()``, host wall clock
  (``time.perf_counter``). Launches are asynchronous on GPUs, so every device seen so far
  is synchronised *before* each run (outside the clock: earlier work must not leak in) and
  *after* it (inside: the run's launches must finish to count). Devices are learnt from
  the launch records, so the warm-up calls (``warmup``, default 1: compile, first touch)
  also tell which devices to wait for.
* **Loops** (``number=None``): grown 1, 2, 5, 10, 20, 50 … until one run takes ≥ 0.2 s,
  like IPython's ``%timeit`` (whose 10× steps can overshoot a slow call tenfold).
* **Bytes and flops per call** come from the records of the timed runs (the kernels'
  static cost, summed), divided by ``loops × repeat``; GB/s and GFLOPS are per call over
  the mean time per call. The roofline share is against the cached calibration of the
  device that moved most of the bytes (``vg.calibrate()``; None if it has none).
* The garbage collector is paused during each run, as :mod:`timeit` does.
* Recording is a ``list.append`` subscribed to the bus; note that with a subscriber,
  launches take the recording path (see ``bench/bench_telemetry.py`` for its cost).
"""

from __future__ import annotations

import gc
import html
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .bus import BUS
from .records import OpRecord, roofline_pct

_AUTORANGE_S = 0.2


def _fmt_time(s: float) -> str:
    """Seconds as IPython prints them: 3 significant digits, s / ms / µs / ns."""
    if s >= 1.0 or s == 0.0:
        return f"{s:.3g} s"
    for scale, unit in ((1e3, "ms"), (1e6, "µs"), (1e9, "ns")):
        if s * scale >= 1.0 or unit == "ns":
            return f"{s * scale:.3g} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def _fmt_rate(v: float, unit: str) -> str:
    return f"{v:.3g} {unit}"


@dataclass
class TimeitSummary:
    """What ``vg.timeit`` measured (names as IPython's ``TimeitResult``): ``all_runs``
    are seconds per run of ``loops`` calls; ``average``, ``stdev``, ``best`` are per call."""

    all_runs: list[float]
    loops: int
    repeat: int
    bytes: float  # per call
    flops: float  # per call
    devices: set[str] = field(default_factory=set)
    records: list[OpRecord] = field(default_factory=list, repr=False)
    roofline_device: str | None = None  # the device that moved most bytes
    roofline_pct: float | None = None

    @property
    def timings(self) -> list[float]:
        """Seconds per call of each run."""
        return [t / self.loops for t in self.all_runs]

    @property
    def average(self) -> float:
        return math.fsum(self.timings) / len(self.timings)

    @property
    def stdev(self) -> float:
        """Population standard deviation of the per-call times (as IPython)."""
        m = self.average
        return math.sqrt(math.fsum((t - m) ** 2 for t in self.timings) / len(self.timings))

    @property
    def best(self) -> float:
        return min(self.timings)

    @property
    def worst(self) -> float:
        return max(self.timings)

    @property
    def gbps(self) -> float | None:
        """Bytes per call / mean seconds per call, in GB/s (None without records)."""
        return self.bytes / self.average / 1e9 if self.bytes and self.average > 0 else None

    @property
    def gflops(self) -> float | None:
        return self.flops / self.average / 1e9 if self.flops and self.average > 0 else None

    # ---- display ---------------------------------------------------------------------------
    def _rates(self) -> list[str]:
        parts = []
        if self.gbps is not None:
            parts.append(_fmt_rate(self.gbps, "GB/s"))
        if self.gflops is not None:
            parts.append(_fmt_rate(self.gflops, "GFLOPS"))
        if self.roofline_pct is not None:
            parts.append(f"{self.roofline_pct:.0f}% of roofline on {self.roofline_device}")
        return parts

    def __repr__(self) -> str:
        runs, loops = self.repeat, self.loops
        line = (
            f"{_fmt_time(self.average)} ± {_fmt_time(self.stdev)} per loop (mean ± std. dev. "
            f"of {runs} run{'s' if runs != 1 else ''}, {loops:,} loop{'s' if loops != 1 else ''}"
            " each)"
        )
        rates = self._rates()
        return line + ("; " + ", ".join(rates) if rates else "")

    def _repr_html_(self) -> str:
        rows = [
            ("per loop", f"{_fmt_time(self.average)} ± {_fmt_time(self.stdev)} (mean ± std)"),
            ("best / worst", f"{_fmt_time(self.best)} / {_fmt_time(self.worst)}"),
            ("runs × loops", f"{self.repeat} × {self.loops:,}"),
        ]
        if self.records:
            rows.append(("per call", f"{self.bytes:,.0f} bytes, {self.flops:,.0f} flop"))
        if self.gbps is not None:
            rows.append(("GB/s", f"{self.gbps:.3g}"))
        if self.gflops is not None:
            rows.append(("GFLOPS", f"{self.gflops:.3g}"))
        if self.roofline_pct is not None:
            rows.append(("roofline", f"{self.roofline_pct:.0f}% on {self.roofline_device}"))
        if self.devices:
            rows.append(("devices", ", ".join(sorted(self.devices))))
        body = "".join(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
            f"<td style='text-align:left'>{html.escape(v)}</td></tr>"
            for k, v in rows
        )
        return f"<table class='vg-timeit'>{body}</table>"

    def to_pandas(self) -> Any:
        """One row per run: its seconds, seconds per call, GB/s and GFLOPS per call."""
        import pandas as pd

        rows = []
        for i, (run, per) in enumerate(zip(self.all_runs, self.timings, strict=True)):
            rows.append(
                {
                    "run": i,
                    "loops": self.loops,
                    "seconds": run,
                    "per_loop_s": per,
                    "GB/s": self.bytes / per / 1e9 if self.bytes and per > 0 else math.nan,
                    "GFLOPS": self.flops / per / 1e9 if self.flops and per > 0 else math.nan,
                }
            )
        return pd.DataFrame(rows, columns=["run", "loops", "seconds", "per_loop_s", "GB/s",
                                           "GFLOPS"])  # fmt: skip


class _Recorder:
    """The bus subscriber: a ``list.append`` (it runs on every launch) plus the devices."""

    def __init__(self) -> None:
        self.records: list[OpRecord] = []
        self.devices: dict[str, Any] = {}  # name → Device, in order of appearance
        self._seen = 0  # records already scanned for new devices

    def sync(self) -> None:
        """Wait for every device the records have named so far (a run of launches in
        progress is flushed first, so that its device is known)."""
        from ..devices import get_device

        BUS.flush()
        for r in self.records[self._seen :]:
            for name in r.device.split("+"):  # (a split op names all its devices)
                if name not in self.devices:
                    self.devices[name] = get_device(name)
        self._seen = len(self.records)
        for dev in self.devices.values():
            dev.sync()


def timeit(
    fn: Callable[[], Any], *, number: int | None = None, repeat: int = 7, warmup: int = 1
) -> TimeitSummary:
    """Time ``fn()`` like IPython's ``%timeit`` and add what its launches moved and
    computed: ``vg.timeit(lambda: saxpy[n](2.0, x, y))``. See the module docstring."""
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    if number is not None and number < 1:
        raise ValueError(f"number must be >= 1 or None (automatic), got {number}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    rec = _Recorder()
    perf = time.perf_counter

    def run(loops: int) -> float:
        rec.sync()
        gc_was = gc.isenabled()
        gc.disable()
        try:
            t0 = perf()
            for _ in range(loops):
                fn()
            rec.sync()
            return perf() - t0
        finally:
            if gc_was:
                gc.enable()

    with BUS.subscribe(rec.records.append, kinds=("op",)):
        for _ in range(warmup):
            fn()
        rec.sync()
        if number is None:
            number = _autorange(run)
        rec.sync()  # (learn the devices of the last trial before forgetting its records)
        BUS.flush()
        del rec.records[:]
        rec._seen = 0
        all_runs = [run(number) for _ in range(repeat)]
        BUS.flush()
    return _summary(all_runs, number, repeat, rec.records)


def _autorange(run: Callable[[int], float]) -> int:
    """Loops per run: 1, 2, 5, 10, 20, 50 … until a run takes at least 0.2 s."""
    k = 1
    while True:
        for m in (1, 2, 5):
            loops = k * m
            if run(loops) >= _AUTORANGE_S or loops >= 10**9:
                return loops
        k *= 10


def _summary(
    all_runs: list[float], loops: int, repeat: int, records: list[OpRecord]
) -> TimeitSummary:
    calls = loops * repeat
    per_dev: dict[str, int] = {}
    for r in records:
        per_dev[r.device] = per_dev.get(r.device, 0) + r.bytes
    nbytes = sum(per_dev.values()) / calls
    flops = sum(r.flops for r in records) / calls
    s = TimeitSummary(list(all_runs), loops, repeat, nbytes, flops, set(per_dev), list(records))
    if per_dev:
        from ..scheduler.calibration import cached

        dev = max(per_dev, key=lambda d: per_dev[d])
        ops = {r.op for r in records}
        pct = roofline_pct(
            nbytes, flops, s.average, cached(dev), ops.pop() if len(ops) == 1 else None
        )
        s.roofline_device = dev
        s.roofline_pct = pct if math.isfinite(pct) else None
    return s
