"""Tiered memory: device → host → disk, with budgets, LRU spill, prefetch and
out-of-core streaming (``vg.memory``).

``vg.memory.configure(device="1GiB", host="4GiB", spill_dir=None)`` sets budgets;
``stats()`` / ``report()`` show what each tier holds; every move is a telemetry event
(``alloc free spill unspill prefetch evict``). See :mod:`vgpu_nb.memory.manager` for how
placement, accounting and eviction work, and :mod:`vgpu_nb.memory.stream` for streaming.
"""

from __future__ import annotations

from typing import Any

from .budgets import human, parse_size
from .manager import DEVICE, DISK, HOST, MEM, TIERS, Storage
from .report import report, trace

__all__ = [
    "DEVICE", "DISK", "HOST", "MEM", "TIERS", "Storage", "budgets", "clear", "configure",
    "human", "parse_size", "prefetch", "report", "spill", "stats", "trace", "wait",
]  # fmt: skip


def configure(
    device: Any = None, host: Any = None, spill_dir: Any = ..., *, devices: Any = None
) -> None:
    """Set tier budgets: ``device`` for every device (or only ``devices=``, a name or a
    list), ``host`` (one budget: all devices share the RAM), ``spill_dir`` (parent of the
    private spill directory; ``None``: the system temp dir). Sizes are bytes or strings
    ("512MiB", "1.5GB"). Lowering a budget spills at once, so the tiers fit it."""
    MEM.configure(device=device, host=host, spill_dir=spill_dir, devices=devices)


def reset() -> None:
    """Budgets back to their defaults (and the environment overrides)."""
    MEM.reset()


def budgets() -> dict[str, Any]:
    """The budgets in force: ``{"host": bytes, "spill_dir": ..., "<device>": bytes}``
    for every device opened so far."""
    from ..devices import _open

    out: dict[str, Any] = {"host": MEM.budgets.host, "spill_dir": MEM.budgets.spill_dir}
    for name, dev in sorted(_open.items()):
        out[name] = MEM.device_budget(dev)
    return out


def prefetch(*arrays: Any) -> None:
    """Start bringing ``arrays`` back to their devices in the background (they must fit
    in the free room: a prefetch never evicts). ``wait()`` blocks until done."""
    for a in arrays:
        MEM.prefetch(a)


def wait(timeout: float | None = None) -> bool:
    """Wait for queued prefetches; False if ``timeout`` seconds passed first."""
    return MEM.wait_prefetches(timeout)


def spill(x: Any, to: str = HOST) -> None:
    """Move ``x`` down to ``"host"`` or ``"disk"`` now (it comes back when touched)."""
    if to not in (HOST, DISK):
        from ..errors import BadBudget

        raise BadBudget(f"spill(to={to!r}): use 'host' or 'disk'")
    MEM.spill(x, to)


def clear() -> None:
    """Give cached memory back (CuPy pools), reset peaks, and remove the spill directory
    when no live array has a file there. Live arrays keep their data."""
    MEM.clear()


def stats() -> Any:
    """A pandas DataFrame, one row per (device, tier): capacity (the budget; disk: free
    space), used, peak, arrays, and counts/bytes of allocs, frees, spills, unspills,
    prefetches, evictions."""
    import os
    import shutil
    import tempfile

    import pandas as pd

    from .spill_dir import SPILL

    rows = []
    with MEM._lock:
        items = sorted(MEM._stats.items())
        where = SPILL.path or SPILL.parent or tempfile.gettempdir()
        while not os.path.isdir(where) and os.path.dirname(where) != where:
            where = os.path.dirname(where)  # (the spill directory is made on first use)
        disk_free = shutil.disk_usage(where).free
        for (name, tier), t in items:
            dev = MEM._device_named(name)
            if tier == DEVICE:
                cap = MEM.device_budget(dev) if dev is not None else None
            elif tier == HOST:
                cap = MEM.budgets.host
            else:
                cap = disk_free + MEM._disk_used
            rows.append({"device": name, "tier": tier, "capacity": cap, "used": t.used,
                         "peak": t.peak, "arrays": t.arrays, "allocs": t.allocs,
                         "frees": t.frees, "spills": t.spills, "spilled_bytes": t.spilled_bytes,
                         "unspills": t.unspills, "unspilled_bytes": t.unspilled_bytes,
                         "prefetches": t.prefetches, "evictions": t.evictions})  # fmt: skip
    cols = ["device", "tier", "capacity", "used", "peak", "arrays", "allocs", "frees", "spills",
            "spilled_bytes", "unspills", "unspilled_bytes", "prefetches", "evictions"]  # fmt: skip
    df = pd.DataFrame(rows, columns=cols)
    order = {t: k for k, t in enumerate(TIERS)}
    df = df.sort_values(["device", "tier"], key=lambda s: s.map(order) if s.name == "tier" else s)
    return df.set_index(["device", "tier"])
