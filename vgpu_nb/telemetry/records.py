"""Op records: what one reduction/matmul did, how long it took, how fast it went.

Device time is resolved lazily: CUDA events and WebGPU timestamp queries are read only
when someone asks (``rec.device_s``), so recording never forces a host↔device sync.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

_UNRESOLVED = object()


def roofline_pct(
    nbytes: float, flops: float, seconds: float, cal: Any, op: str | None = None
) -> float:
    """Percent of ``cal``'s roofline (a :class:`~vgpu_nb.scheduler.calibration.Calibration`)
    an op reached: 100 · achieved GFLOPS / min(peak GFLOPS, read GB/s · flops/bytes).

    That is the same as 100 · max(GFLOPS / peak GFLOPS, GB/s / read GB/s), the form used
    here because it also covers ops without flops (a copy is judged on bandwidth alone).
    NaN when there is no calibration, no bytes or no measured time. Matrix products
    (``op="matmul"``) are judged against the calibrated matmul peak (BLAS, cuBLAS), far
    above a plain kernel's FMA rate on CPUs."""
    if cal is None or nbytes <= 0 or not seconds > 0:
        return math.nan
    fracs = []
    if cal.read_gbps > 0:
        fracs.append(nbytes / seconds / 1e9 / cal.read_gbps)
    peak = (getattr(cal, "matmul_gflops", None) if op == "matmul" else None) or cal.gflops
    if flops > 0 and peak > 0:
        fracs.append(flops / seconds / 1e9 / peak)
    return 100.0 * max(fracs) if fracs else math.nan


@dataclass(eq=False)
class OpRecord:
    """One built-in op call on one device."""

    kind: ClassVar[str] = "op"
    op: str
    device: str
    shape: tuple[int, ...]
    dtype: str
    bytes: int  # bytes the op must move at least (inputs read once, output written once)
    flops: int  # arithmetic operations (one per add/mul/compare)
    host_s: float  # wall time of the call on the host (async backends return early)
    t_start: float = field(default_factory=time.time)
    _device_timer: Callable[[], float | None] | None = field(default=None, repr=False)
    _device_s: Any = field(default=_UNRESOLVED, repr=False)

    @property
    def device_s(self) -> float | None:
        """Seconds measured on the device (CUDA events, WebGPU timestamps), or None where
        the backend has no device clock (NumPy, Numba: host time is device time there)."""
        if self._device_s is _UNRESOLVED:
            self._device_s = self._device_timer() if self._device_timer else None
            self._device_timer = None
        return self._device_s

    @property
    def seconds(self) -> float:
        d = self.device_s
        return d if d is not None else self.host_s

    @property
    def gbps(self) -> float:
        return self.bytes / self.seconds / 1e9 if self.seconds > 0 else float("nan")

    @property
    def gflops(self) -> float:
        return self.flops / self.seconds / 1e9 if self.seconds > 0 else float("nan")

    def _repr_html_(self) -> str:
        """One row: what ran where, how much it moved and computed, how fast."""
        from ..memory.budgets import human
        from ..reprs import num, table, titled

        d = self.device_s  # (measured values carry their unit: notebooks' sanitizers see it)
        when = f"{num(d * 1e3)} ms device" if d is not None else f"{num(self.host_s * 1e3)} ms host"
        row = [self.op, self.device, self.shape, self.dtype, human(self.bytes), self.flops,
               when, f"{num(self.gbps)} GB/s", f"{num(self.gflops)} GFLOPS"]  # fmt: skip
        head = ["op", "device", "shape", "dtype", "bytes", "flops", "time", "bandwidth", "compute"]
        extra = self._html_extra()
        return titled(
            f"vg.{type(self).__name__}", table(head + list(extra), [row + list(extra.values())])
        )

    def _html_extra(self) -> dict[str, Any]:
        return {}

    def as_dict(self) -> dict[str, Any]:
        d = self.device_s
        return {
            "op": self.op,
            "device": self.device,
            "shape": self.shape,
            "dtype": self.dtype,
            "bytes": self.bytes,
            "flops": self.flops,
            "host_ms": self.host_s * 1e3,
            "device_ms": d * 1e3 if d is not None else float("nan"),
            "GB/s": self.gbps,
            "GFLOPS": self.gflops,
            "t_start": self.t_start,
        }


@dataclass(eq=False)
class LaunchRecord(OpRecord):
    """One kernel launch: an :class:`OpRecord` (``op`` is the kernel's name, ``shape`` the
    launch domain) plus how the code was obtained and whether the cost is estimated."""

    compile_s: float = 0.0  # generating + compiling + loading, on the first launch
    cache_hit: bool = True  # served by the kernel cache (memory or disk)
    estimated: bool = False  # flops/bytes include loops with unknown trip counts
    count: int = 1  # identical launches in a row merged into this record (a run)

    @property
    def where(self) -> str:
        return self.device

    def as_dict(self) -> dict[str, Any]:
        d = super().as_dict()
        d.update(compile_ms=self.compile_s * 1e3, cache_hit=self.cache_hit,
                 estimated=self.estimated, count=self.count)  # fmt: skip
        return d

    def _html_extra(self) -> dict[str, Any]:
        return {"launches": self.count, "compile": f"{self.compile_s * 1e3:.1f} ms",
                "cached": self.cache_hit, "estimated": self.estimated}  # fmt: skip

    def __repr__(self) -> str:
        d = self.device_s
        t = f"{d * 1e3:.3f} ms device" if d is not None else f"{self.host_s * 1e3:.3f} ms host"
        est = " (estimated)" if self.estimated else ""
        return (
            f"<vg.LaunchRecord {self.op} on {self.device} over {self.shape}: {t}, "
            f"{self.gbps:.2f} GB/s, {self.gflops:.2f} GFLOPS{est}; compile "
            f"{self.compile_s * 1e3:.1f} ms{', cached' if self.cache_hit else ''}>"
        )


@dataclass(eq=False)
class MemoryEvent:
    """One move in the memory tiers: ``kind`` is ``alloc free spill unspill prefetch
    evict``; ``src``/``dst`` are tiers (``device host disk``, or ``None`` for alloc/free);
    ``reason`` says why in words; ``used`` is each tier's bytes on ``device`` right after
    the event (host and disk: the whole process), for live charts."""

    kind: str
    array: int  # the array's storage id (shared by reshaped views)
    device: str
    bytes: int
    src: str | None
    dst: str | None
    seconds: float
    reason: str
    used: dict[str, int]
    t: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        d = {
            "event": self.kind,
            "array": self.array,
            "device": self.device,
            "bytes": self.bytes,
            "from": self.src,
            "to": self.dst,
            "ms": self.seconds * 1e3,
            "GB/s": self.bytes / self.seconds / 1e9 if self.seconds > 0 else float("nan"),
            "reason": self.reason,
            "t": self.t,
        }
        d.update({f"{k}_used": v for k, v in self.used.items()})
        return d

    def __repr__(self) -> str:
        move = f" {self.src}→{self.dst}" if self.src and self.dst else ""
        return (
            f"<vg.MemoryEvent {self.kind}{move} #{self.array} on {self.device}: "
            f"{self.bytes} bytes in {self.seconds * 1e3:.3f} ms ({self.reason})>"
        )
