"""Runs: repeated identical launches, recorded as one record with a count.

A tiny kernel launched 10⁴ times in a loop costs ~4 µs a launch on the CPU device; building,
timing and delivering one :class:`LaunchRecord` per launch costs several µs more, so a
profile or a dashboard would slow that loop several-fold. Instead, while someone listens,
consecutive launches of the same kernel over the same domain on the same device (with a
per-thread cost known from the IR alone) form a *run*: the launch path bumps a counter and
times every :data:`TIME_EVERY`-th launch (and the first); the run becomes one
``LaunchRecord`` with ``count`` launches, total bytes and flops, and the mean of the timed
launches times ``count`` as its time (the launches' own time: work between them is not
counted) when it ends: another op is recorded, the run reaches :data:`MAX_COUNT` launches
or :data:`MAX_SPAN_S` seconds (so live charts keep moving), or someone flushes the bus
(profiles and ``timeit`` do when they stop listening, ``vg.telemetry.flush()`` does).

GPU launches form runs too: a device timer (CUDA events, WebGPU timestamps) on the first
launch and on every :data:`CLOCK_EVERY`-th, and the run's device time is the mean of those
times ``count``. One timer per launch (two CUDA events) cost more than a 6 µs launch itself:
+150 % on 10⁴ tiny launches on an H200 (bench_telemetry.py --device cuda).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from .bus import BUS
from .records import LaunchRecord

MAX_COUNT = 4096
MAX_SPAN_S = 0.05
#: one launch of a run in this many is timed on the host: two clock readings and the
#: bookkeeping around them cost ~0.3 µs; 1 in 8 was ~1 % of a 4 µs launch
TIME_EVERY = 32
#: in a GPU run, about one launch in this many also gets a device timer (a multiple of
#: TIME_EVERY, a power of two): a CUDA timer (two events) costs ~10 µs, 1/64 of that still
#: added ~2 % to a 6 µs launch
CLOCK_EVERY = 512


class Runs:
    """The run in progress (one, process-wide). Its ``key`` (a ``k[n]`` launch object, with
    ``run`` and ``left`` slots) extends it inline: while ``key.run`` is the run's device, a
    launch only counts ``key.left`` down, and every :data:`TIME_EVERY`-th one is timed and
    added here (``count``, ``busy``, ``nsamp``); :meth:`start` begins a new run and
    :meth:`flush` ends it (``key.run = None``). A launch racing with a flush from another
    thread may be dropped from the counts (never mixed into another run's record)."""

    __slots__ = ("key", "dev", "tel", "dims", "first", "busy", "nsamp", "count", "clocks", "_lock")

    def __init__(self) -> None:
        self.key: Any = None
        self.dev: Any = None
        self.tel: Any = None
        self.dims: tuple[int, ...] = ()
        self.count = self.nsamp = 0  # launches up to the last timed one; timed launches
        self.first = self.busy = 0.0
        #: device timers of a GPU run's timed launches (resolved when the record is read)
        self.clocks: list[Any] | None = None
        self._lock = threading.Lock()

    def start(
        self,
        key: Any,
        dev: Any,
        tel: Any,
        dims: tuple[int, ...],
        t0: float,
        t1: float,
        clock: Any = None,
    ) -> None:
        """End the run in progress, begin one with a launch from ``t0`` to ``t1`` (and its
        device timer ``clock``, on GPUs)."""
        self.flush()
        with self._lock:
            self.key, self.dev, self.tel, self.dims = key, dev, tel, dims
            self.first, self.busy, self.nsamp, self.count = t0, t1 - t0, 1, 1
            self.clocks = [clock] if clock is not None else None
            key.left = TIME_EVERY
            key.run = dev

    def flush(self) -> None:
        """End the run in progress: emit its record."""
        with self._lock:
            count, key, dev = self.count, self.key, self.dev
            tel, dims, first, busy, nsamp = self.tel, self.dims, self.first, self.busy, self.nsamp
            clocks = self.clocks
            self.count, self.key, self.dev, self.clocks = 0, None, None, None
            if key is not None:
                key.run = None
                count += TIME_EVERY - key.left  # (the launches since the last timed one)
        if not count or key is None or dev is None:
            return
        name, dtype, flops, nbytes = tel
        n = 1
        for d in dims:
            n *= d
        rec = LaunchRecord(
            op=name, device=dev.name, shape=dims, dtype=dtype,
            bytes=int(nbytes * n * count), flops=int(flops * n * count),
            host_s=busy / max(nsamp, 1) * count, t_start=_EPOCH + first, count=count,
        )  # fmt: skip
        if clocks:
            rec._device_timer = _scaled(clocks, count)
        BUS.emit(rec)

    def clock(self, stop: Any) -> None:
        """Add the device timer of one launch of the GPU run in progress."""
        if self.clocks is not None and stop is not None:
            self.clocks.append(stop())


def _scaled(clocks: list[Any], count: int) -> Any:
    """The run's device seconds: the mean of its timed launches, times ``count``."""

    def resolve() -> float | None:
        times = [t for t in (c() for c in clocks) if t is not None]
        return sum(times) / len(times) * count if times else None

    return resolve


_EPOCH = time.time() - time.perf_counter()
RUNS = Runs()
BUS._flushers.append(RUNS)
