"""Shared helpers for the benchmark scripts: timing and JSON results."""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vgpu_nb.backends.numpy_backend import cpu_model


def median_time(
    fn: Callable[[], Any], sync: Callable[[], None], runs: int = 10, warmup: int = 3
) -> list[float]:
    """Wall-clock seconds of ``fn(); sync()`` per run (what a user waits for), after warm-up."""
    for _ in range(warmup):
        fn()
        sync()
    times = []
    for _ in range(runs):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def summary(times: list[float]) -> dict[str, float]:
    return {
        "median_ms": statistics.median(times) * 1e3,
        "min_ms": min(times) * 1e3,
        "max_ms": max(times) * 1e3,
        "runs": len(times),
    }


def machine() -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def write_json(path: str | Path, payload: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"command": " ".join([Path(sys.executable).name, *sys.argv]), **payload}
    payload.setdefault("machine", machine())
    payload.setdefault("date", time.strftime("%Y-%m-%d %H:%M:%S"))
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path
