"""Telemetry: the event bus, op records and ``vg.profile()``."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from .bus import BUS, EventBus, Subscription
from .profile import Profile, profile
from .records import LaunchRecord, MemoryEvent, OpRecord, roofline_pct
from .runs import RUNS
from .timeit import TimeitSummary, timeit

if TYPE_CHECKING:
    from ..backends.base import Device

T = TypeVar("T")

__all__ = [
    "BUS",
    "EventBus",
    "LaunchRecord",
    "MemoryEvent",
    "OpRecord",
    "Profile",
    "Subscription",
    "TimeitSummary",
    "flush",
    "profile",
    "recorded",
    "roofline_pct",
    "timeit",
]


def flush() -> None:
    """Emit what the bus holds back: a run of identical launches in progress (see
    :mod:`.runs`). Profiles and ``timeit`` flush when they stop listening."""
    BUS.flush()


_ = RUNS  # (registered with the bus on import)


def recorded(
    device: Device,
    op: str,
    shape: tuple[int, ...],
    dtype: str,
    nbytes: int,
    flops: int,
    fn: Callable[[], T],
) -> T:
    """Run ``fn`` and emit an :class:`OpRecord`. With nobody subscribed this is a plain
    call: no timers, no record (the hot path stays free)."""
    if not BUS.active:
        return fn()
    stop = device.start_timer()
    t0 = time.perf_counter()
    out = fn()
    host = time.perf_counter() - t0
    rec = OpRecord(op, device.name, tuple(shape), dtype, nbytes, flops, host, time.time() - host)
    rec._device_timer = stop() if stop is not None else None
    BUS.emit(rec)
    return out
