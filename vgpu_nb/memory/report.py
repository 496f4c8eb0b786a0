"""``vg.memory.report()`` and ``vg.memory.trace()``: what the tiers hold, and how they
moved.

* :func:`report` renders :func:`vgpu_nb.memory.stats` for reading: one table per device
  (tier, capacity, used with a bar, peak, arrays, spills, unspills, prefetches,
  evictions, spilled bytes) as HTML in notebooks and as plain text elsewhere. The text
  is deterministic for a given memory state: the disk tier's free space (which changes
  run to run) is on a line of its own, never inside the table's columns.
* :func:`trace` collects the memory events of a block of code (``with`` or
  ``t = trace(); …; t.close()``) into a table, a summary and a chart of tier usage over
  time. Its subscriber only appends: rendering happens when asked.
"""

from __future__ import annotations

import html
import time
from typing import Any

from ..telemetry.bus import BUS, Subscription
from ..telemetry.records import MemoryEvent
from .budgets import human
from .manager import DEVICE, DISK, HOST, MEM, TIERS

#: the kinds of :class:`MemoryEvent` (the bus filters on them)
EVENT_KINDS = ("alloc", "free", "spill", "unspill", "prefetch", "evict")

_COUNTS = ("arrays", "spills", "unspills", "prefetches", "evictions")
_BAR = 10  # characters of the text bar


def _pct(used: int, cap: int | None) -> float | None:
    if not cap:
        return None
    return 100.0 * used / cap


class MemoryReport:
    """A snapshot of :func:`vgpu_nb.memory.stats` made for reading.

    ``rows`` are plain dicts (one per device and tier); ``disk_free`` is the free space
    where the spill directory lives (bytes; ``None`` when unknown)."""

    def __init__(self, stats: Any, disk_free: int | None = None) -> None:
        self.stats = stats
        self.disk_free = disk_free
        self.rows: list[dict[str, Any]] = []
        for (device, tier), r in stats.iterrows():
            row = {"device": device, "tier": tier}
            row.update({k: (None if r[k] != r[k] else int(r[k])) for k in stats.columns})
            self.rows.append(row)

    @property
    def devices(self) -> list[str]:
        return list(dict.fromkeys(r["device"] for r in self.rows))

    def _device_rows(self, device: str) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["device"] == device]

    @staticmethod
    def _capacity(r: dict[str, Any]) -> str:
        return "no budget" if r["tier"] == DISK else human(r["capacity"])

    # ---- plain text ---------------------------------------------------------------------
    def _text_bar(self, r: dict[str, Any]) -> str:
        pct = None if r["tier"] == DISK else _pct(r["used"], r["capacity"])
        if pct is None:
            return " " * (_BAR + 2 + 5)
        fill = min(_BAR, round(pct / 100 * _BAR))
        if r["used"] and not fill:
            fill = 1  # something is there: show it
        return "[" + "#" * fill + "." * (_BAR - fill) + f"] {pct:3.0f}%"

    def __repr__(self) -> str:
        lines = ["vg.memory.report()"]
        if not self.rows:
            lines.append("  no arrays made yet")
            return "\n".join(lines)
        head = (
            f"  {'tier':<6} {'capacity':>10} {'used':>10} {'':17} {'peak':>10} "
            f"{'arrays':>6} {'spills':>6} {'unspills':>8} {'prefetches':>10} "
            f"{'evictions':>9} {'spilled':>10}"
        )
        for dev in self.devices:
            lines.append(dev)
            lines.append(head)
            for r in self._device_rows(dev):
                lines.append(
                    f"  {r['tier']:<6} {self._capacity(r):>10} {human(r['used']):>10} "
                    f"{self._text_bar(r)} {human(r['peak']):>10} {r['arrays']:>6} "
                    f"{r['spills']:>6} {r['unspills']:>8} {r['prefetches']:>10} "
                    f"{r['evictions']:>9} {human(r['spilled_bytes']):>10}"
                )
        if self.disk_free is not None:
            lines.append(f"disk tier: no budget; {human(self.disk_free)} free")
        return "\n".join(lines)

    __str__ = __repr__

    # ---- HTML ----------------------------------------------------------------------------
    @staticmethod
    def _html_bar(r: dict[str, Any]) -> str:
        pct = None if r["tier"] == DISK else _pct(r["used"], r["capacity"])
        if pct is None:
            return ""
        color = "#4c78a8" if pct <= 80 else ("#f58518" if pct <= 100 else "#e45756")
        width = min(100.0, pct)
        return (
            '<span style="display:inline-block;width:80px;height:8px;background:#e6e6e6;'
            'border-radius:2px;vertical-align:middle;margin-right:6px;overflow:hidden">'
            f'<span style="display:block;height:100%;width:{width:.1f}%;background:{color}">'
            f"</span></span>{pct:.0f}%"
        )

    def _repr_html_(self) -> str:
        esc = html.escape
        cell = 'style="padding:2px 8px;text-align:right"'
        left = 'style="padding:2px 8px;text-align:left"'
        heads = ["tier", "capacity", "used", "", "peak", "arrays", "spills", "unspills",
                 "prefetches", "evictions", "spilled"]  # fmt: skip
        out = ['<div class="vg-memory-report" style="font-family:sans-serif;font-size:12px">']
        if not self.rows:
            out.append("<p><b>vg.memory</b>: no arrays made yet</p></div>")
            return "".join(out)
        for dev in self.devices:
            out.append('<table style="border-collapse:collapse;margin-bottom:8px">')
            out.append(
                '<caption style="text-align:left;font-weight:bold;padding:2px 8px">'
                f"{esc(dev)}</caption><thead><tr>"
            )
            out += [f"<th {left if h == 'tier' else cell}>{esc(h)}</th>" for h in heads]
            out.append("</tr></thead><tbody>")
            for r in self._device_rows(dev):
                vals = [
                    self._capacity(r),
                    human(r["used"]),
                    self._html_bar(r),
                    human(r["peak"]),
                    *(str(r[k]) for k in _COUNTS),
                    human(r["spilled_bytes"]),
                ]
                tr = '<tr style="border-top:1px solid #ddd">'
                out.append(f"{tr}<td {left}>{esc(r['tier'])}</td>")
                for k, v in enumerate(vals):
                    style = left if k == 2 else cell
                    out.append(f"<td {style}>{v if k == 2 else esc(v)}</td>")
                out.append("</tr>")
            out.append("</tbody></table>")
        if self.disk_free is not None:
            out.append(
                '<div style="color:#666">disk tier: no budget; '
                f"{esc(human(self.disk_free))} free</div>"
            )
        out.append("</div>")
        return "".join(out)


def report(device: str | None = None) -> MemoryReport:
    """What each tier holds now, per device (``device=``: only that one): HTML in a
    notebook, plain text elsewhere (``print(vg.memory.report())``)."""
    import shutil
    import tempfile

    from . import stats
    from .spill_dir import SPILL

    df = stats()
    if device is not None:
        from ..devices import get_device

        name = get_device(device).name
        df = df[df.index.get_level_values("device") == name]
    try:
        free = shutil.disk_usage(SPILL.path or SPILL.parent or tempfile.gettempdir()).free
    except OSError:
        free = None
    return MemoryReport(df, free)


# ---- trace ---------------------------------------------------------------------------------
class MemoryTrace:
    """Collects :class:`MemoryEvent` s from the bus while open.

    >>> with vg.memory.trace() as t:
    ...     work()
    >>> t.summary()        # count and bytes per (event, from, to)
    >>> t.plot()           # device / host / disk bytes over time
    """

    def __init__(self) -> None:
        self.events: list[MemoryEvent] = []
        self.t0 = time.time()
        self.t1: float | None = None
        with MEM._lock:  # where the tiers stand at the start (the chart's first step)
            self.start_used: dict[str, Any] = {
                DEVICE: {name: t.used for (name, tier), t in MEM._stats.items() if tier == DEVICE},
                HOST: MEM._host_used,
                DISK: MEM._disk_used,
            }
        self._sub: Subscription | None = BUS.subscribe(self.events.append, kinds=EVENT_KINDS)

    @property
    def closed(self) -> bool:
        return self._sub is None

    def close(self) -> None:
        """Stop collecting (idempotent)."""
        if self._sub is not None:
            self._sub.close()
            self._sub = None
            self.t1 = time.time()

    def __enter__(self) -> MemoryTrace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self.events)

    def to_pandas(self) -> Any:
        """One row per event (:meth:`MemoryEvent.as_dict`), with ``t_rel``: seconds since
        the trace started."""
        import pandas as pd

        cols = ["t_rel", "event", "array", "device", "bytes", "from", "to", "ms", "GB/s",
                "reason", "t", "device_used", "host_used", "disk_used"]  # fmt: skip
        rows = []
        for ev in list(self.events):
            d = ev.as_dict()
            d["t_rel"] = ev.t - self.t0
            rows.append(d)
        extra = [c for r in rows for c in r if c not in cols]
        return pd.DataFrame(rows, columns=cols + list(dict.fromkeys(extra)))

    def table(self) -> Any:
        return self.to_pandas()

    def summary(self) -> Any:
        """A DataFrame: ``count`` and ``bytes`` per (event, from, to), in event order
        (alloc, spill, unspill, prefetch, evict, free); ``-`` for no tier."""
        import pandas as pd

        order = {k: i for i, k in enumerate(("alloc", "spill", "unspill", "prefetch", "evict",
                                             "free"))}  # fmt: skip
        tiers = {t: i for i, t in enumerate((*TIERS, "-"))}
        acc: dict[tuple[str, str, str], list[int]] = {}
        for ev in list(self.events):
            key = (ev.kind, ev.src or "-", ev.dst or "-")
            c = acc.setdefault(key, [0, 0])
            c[0] += 1
            c[1] += ev.bytes
        keys = sorted(acc, key=lambda k: (order.get(k[0], 99), tiers.get(k[1], 9),
                                          tiers.get(k[2], 9)))  # fmt: skip
        idx = pd.MultiIndex.from_tuples(keys, names=["event", "from", "to"])
        return pd.DataFrame([acc[k] for k in keys], index=idx, columns=["count", "bytes"])

    def _series(self) -> tuple[list[float], dict[str, list[int]]]:
        """Times (seconds from the start) and bytes per layer after each event: one layer
        per device's device tier, then host, then disk."""
        evs = list(self.events)
        dev_used = dict(self.start_used[DEVICE])
        for ev in evs:
            dev_used.setdefault(ev.device, 0)
        devs = sorted(d for d in dev_used if dev_used[d] or any(e.device == d for e in evs))
        host, disk = self.start_used[HOST], self.start_used[DISK]
        ts = [0.0]
        layers: dict[str, list[int]] = {f"device ({d})": [dev_used[d]] for d in devs}
        layers[HOST], layers[DISK] = [host], [disk]
        for ev in evs:
            dev_used[ev.device] = ev.used.get(DEVICE, dev_used[ev.device])
            host = ev.used.get(HOST, host)
            disk = ev.used.get(DISK, disk)
            ts.append(ev.t - self.t0)
            for d in devs:
                layers[f"device ({d})"].append(dev_used[d])
            layers[HOST].append(host)
            layers[DISK].append(disk)
        end = (self.t1 if self.t1 is not None else time.time()) - self.t0
        ts.append(max(end, ts[-1]))
        for v in layers.values():
            v.append(v[-1])
        return ts, layers

    def plot(self, ax: Any = None, x: str = "time") -> Any:
        """A step chart of the bytes each tier holds over the trace (stacked: device
        tier(s), host, disk), with markers where arrays were spilled (▼), brought back
        (▲) or prefetched (▶). ``x="event"``: one step per event instead of seconds (JIT
        compiles and long ops then do not squeeze the moves together). Returns the
        matplotlib Axes."""
        import matplotlib.pyplot as plt
        import numpy as np

        if x not in ("time", "event"):
            raise ValueError(f"plot(x={x!r}): use 'time' or 'event'")
        if ax is None:
            _fig, ax = plt.subplots(figsize=(8, 3.2), layout="constrained")
        ts, layers = self._series()
        if x == "event":
            ts = [float(k) for k in range(len(ts))]
        peak = max((sum(v[k] for v in layers.values()) for k in range(len(ts))), default=0)
        scale, unit = 1, "B"
        for s, u in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
            if peak >= s:
                scale, unit = s, u
                break
        t = np.asarray(ts)
        base = np.zeros(len(ts))
        colors = {HOST: "#f58518", DISK: "#54a24b"}
        dev_colors = ["#4c78a8", "#72b7b2", "#9d755d", "#b279a2"]
        k = 0
        for name, vals in layers.items():
            top = base + np.asarray(vals, dtype=float) / scale
            if name.startswith(DEVICE):
                color = dev_colors[k % len(dev_colors)]
                k += 1
            else:
                color = colors[name]
            ax.fill_between(t, base, top, step="post", alpha=0.35, color=color, linewidth=0)
            ax.step(t, top, where="post", color=color, linewidth=1.2, label=name)
            base = top
        total = base
        marks = {"spill": ("v", "#e45756", "spill"), "unspill": ("^", "#2ca02c", "unspill"),
                 "prefetch": (">", "#9467bd", "prefetch")}  # fmt: skip
        evs = list(self.events)
        for kind, (m, color, label) in marks.items():
            idx = [i for i, ev in enumerate(evs) if ev.kind == kind and ev.dst is not None]
            if idx:
                xs = [ts[i + 1] for i in idx]
                ys = [total[i + 1] for i in idx]
                ax.plot(xs, ys, linestyle="none", marker=m, color=color, markersize=7, label=label)
        ax.set_xlabel("seconds since the trace started" if x == "time" else "event")
        ax.set_ylabel(f"bytes held ({unit})")
        ax.set_title("memory tiers over time")
        ax.set_xlim(0, max(ts[-1], 1e-6))
        ax.set_ylim(bottom=0)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
        ax.grid(alpha=0.3)
        return ax

    def __repr__(self) -> str:
        counts: dict[str, int] = {}
        for ev in list(self.events):
            counts[ev.kind] = counts.get(ev.kind, 0) + 1
        parts = ", ".join(f"{k} {counts[k]}" for k in EVENT_KINDS if k in counts)
        state = "closed" if self.closed else "open"
        sep = ": " if parts else ""
        return f"<vg.memory.trace ({state}): {len(self.events)} events{sep}{parts}>"


def trace() -> MemoryTrace:
    """Start collecting memory events now; use as ``with vg.memory.trace() as t:`` or
    ``t = vg.memory.trace(); …; t.close()``."""
    return MemoryTrace()
