"""Runs: repeated identical launches, recorded as one record with a count.

A tiny kernel launched 10⁴ times in a loop costs ~4 µs a launch on the CPU device; building,
timing and delivering one :class:`LaunchRecord` per launch costs several µs more, so a
profile or a dashboard would slow that loop several-fold. Instead, while someone listens,
consecutive launches of the same kernel over the same domain on the same device (with a
per-thread cost known from the IR alone) form a *run*: the launch path bumps a counter
and reads the clock every 8th launch; the run becomes one ``LaunchRecord`` with ``count``
launches, total bytes and flops, and its wall time (from its first launch's start to the
last clock reading, scaled to all its launches) when it ends: another op is recorded,
the run reaches :data:`MAX_COUNT` launches or :data:`MAX_SPAN_S` seconds (so live charts
keep moving), or someone flushes the bus (profiles and ``timeit`` do when they stop
listening, ``vg.telemetry.flush()`` does).

Only devices without a device clock (numpy, numba: their host time is their device time)
form runs; GPU launches are recorded one by one with device timers.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from .bus import BUS
from .records import LaunchRecord

MAX_COUNT = 4096
MAX_SPAN_S = 0.05


class Runs:
    """The run in progress (one, process-wide). The launch fast path extends it inline
    (``count``, ``last``) when the same launch comes again; :meth:`start` begins a new
    one. Launches from several threads at once merge into one run's count."""

    __slots__ = ("key", "dev", "tel", "dims", "first", "last", "at", "count", "_lock")

    def __init__(self) -> None:
        self.key: Any = None
        self.dev: Any = None
        self.count = self.at = 0
        self.first = self.last = 0.0
        self._lock = threading.Lock()

    def start(
        self, key: Any, dev: Any, tel: Any, dims: tuple[int, ...], t0: float, t1: float
    ) -> None:
        """End the run in progress, begin one with a launch from ``t0`` to ``t1``."""
        self.flush()
        self.key, self.dev, self.tel, self.dims = key, dev, tel, dims
        self.first, self.last, self.count, self.at = t0, t1, 1, 1

    def flush(self) -> None:
        """End the run in progress: emit its record."""
        with self._lock:
            if not self.count:
                return
            count, self.count, key, dev = self.count, 0, self.key, self.dev
            self.key = self.dev = None
        name, dtype, flops, nbytes = self.tel
        n = 1
        for d in self.dims:
            n *= d
        # the clock was last read after launch number `at`: the run's time is that span
        # scaled to all its launches (a steady loop's rate, without reading the clock at
        # every launch)
        host = (self.last - self.first) * count / max(self.at, 1)
        rec = LaunchRecord(
            op=name, device=dev.name, shape=self.dims, dtype=dtype,
            bytes=int(nbytes * n * count), flops=int(flops * n * count), host_s=host,
            t_start=_EPOCH + self.first, count=count,
        )  # fmt: skip
        del key  # (the run no longer keeps its launch object alive)
        BUS.emit(rec)


_EPOCH = time.time() - time.perf_counter()
RUNS = Runs()
BUS._flushers.append(RUNS)
