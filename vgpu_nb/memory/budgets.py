"""Sizes and budgets of the memory tiers.

Defaults (the issue's, written down here):

* **device tier**: 80 % of the device's memory (CUDA: total global memory; WebGPU: the
  adapter's memory where the backend knows it, else its ``max-buffer-size`` limit × 4);
  CPU backends (numpy, numba) get a *vVRAM* budget of 25 % of RAM, so a laptop behaves
  like a small GPU and out-of-core code paths are exercised for real;
* **host tier**: 50 % of RAM, one budget shared by every device (it is one RAM);
* **disk tier**: a private spill directory, limited by free disk space only.

Environment overrides (read at import and by :func:`reset`): ``VGPU_NB_DEVICE_BUDGET``
(all devices), ``VGPU_NB_HOST_BUDGET``, ``VGPU_NB_SPILL_DIR``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import BadBudget

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_size(value: Any, what: str = "size") -> int:
    """Bytes from ``1024``, ``"64MiB"``, ``"1.5 GB"``, ``"2g"`` (SI for kB/MB/GB, binary
    for KiB/MiB/GiB, as the units say)."""
    if isinstance(value, bool):
        raise BadBudget(f"{what} must be a size, got {value!r}", fix='use bytes or "1GiB"')
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0 or value != value:
            raise BadBudget(f"{what} must be ≥ 0, got {value!r}")
        return int(value)
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m and m.group(2).lower() in _UNITS:
            return int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    raise BadBudget(
        f"cannot read {what} {value!r}",
        fix='give bytes (1073741824) or a string like "1GiB", "512MiB", "2GB"',
    )


def human(n: float | None) -> str:
    """``1536`` → ``"1.5 KiB"`` (binary units, as budgets are usually given)."""
    if n is None:
        return "?"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} TiB"  # pragma: no cover


def ram_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return 8 << 30


def default_device_budget(dev: Any) -> int:
    """80 % of the device's memory; 25 % of RAM ("vVRAM") for CPU backends."""
    info = dev.info
    if dev.backend in ("numpy", "numba") or info.kind == "cpu-emulated gpu":
        return ram_bytes() // 4
    if info.memory_bytes:
        return int(info.memory_bytes * 0.8)
    limit = int(info.extra.get("limits", {}).get("max-buffer-size", 0) or 0)
    return limit * 4 if limit else ram_bytes() // 4


@dataclass
class Budgets:
    """The configured budgets. ``device``: per device name (``None`` key: all devices)."""

    device: dict[str | None, int] = field(default_factory=dict)
    host: int = 0
    spill_dir: str | None = None

    def device_budget(self, dev: Any) -> int:
        b = self.device.get(dev.name)
        if b is None:
            b = self.device.get(None)
        return b if b is not None else default_device_budget(dev)


def from_env() -> Budgets:
    b = Budgets(host=ram_bytes() // 2)
    env = os.environ
    if env.get("VGPU_NB_DEVICE_BUDGET"):
        b.device[None] = parse_size(env["VGPU_NB_DEVICE_BUDGET"], "VGPU_NB_DEVICE_BUDGET")
    if env.get("VGPU_NB_HOST_BUDGET"):
        b.host = parse_size(env["VGPU_NB_HOST_BUDGET"], "VGPU_NB_HOST_BUDGET")
    b.spill_dir = env.get("VGPU_NB_SPILL_DIR") or None
    return b
