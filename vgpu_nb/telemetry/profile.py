"""``vg.profile()``: collect the records of a block of code into a table and charts.

Decisions:

* ``table()`` is the compact view notebooks print (its columns and their order are kept)
  plus ``roofline_%``; ``to_pandas()`` is every field of every record; ``report()`` is the
  compact view with units and *without* ``roofline_%``, so a printed profile does not change
  with whether the machine happens to be calibrated.
* ``roofline_%`` = 100 · achieved GFLOPS / min(peak GFLOPS, read GB/s · flops/bytes)
  against the device's cached calibration (``vg.calibrate()``; never measured here), i.e.
  the larger of the compute and bandwidth fractions, so copies (no flops) are judged on
  bandwidth. NaN without a calibration or without bytes.
* Charts are :class:`matplotlib.figure.Figure` s made without pyplot: no global state, no
  GUI, safe in headless processes and threads; Jupyter shows them as PNG.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .bus import BUS, Subscription
from .records import OpRecord, roofline_pct

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ..scheduler.calibration import Calibration

#: the compact columns of ``table()`` (notebooks print them: keep names and order)
COMPACT = ["op", "device", "shape", "dtype", "bytes", "flops", "host_ms", "device_ms"]
COMPACT += ["GB/s", "GFLOPS"]
ROOF_COL = "roofline_%"


def calibrations(devices: Sequence[str]) -> dict[str, Calibration | None]:
    """The cached calibration of each device (None where this machine has none)."""
    from ..scheduler.calibration import cached

    return {d: cached(d) for d in devices}


def _devices(records: Sequence[OpRecord]) -> list[str]:
    """Device names in order of first appearance (stable colours across charts)."""
    return list(dict.fromkeys(r.device for r in records))


class Profile:
    """Context manager that subscribes to the bus while open.

    >>> with vg.profile() as p:
    ...     vg.sum(x)
    >>> p.table()          # one row per op: device, bytes, flops, ms, GB/s, GFLOPS, roofline_%
    >>> p.plot()           # roofline + GFLOPS / GB/s over time
    """

    def __init__(self) -> None:
        self.records: list[OpRecord] = []
        self._sub: Subscription | None = None

    def __enter__(self) -> Profile:
        self._sub = BUS.subscribe(self.records.append, kinds=("op",))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._sub is not None:
            self._sub.close()  # (flushes a run of launches in progress into this profile)
            self._sub = None

    # ---- tables ---------------------------------------------------------------------------
    def roofline_pcts(self) -> list[float]:
        """Percent of its device's calibrated roofline per record (NaN where unknown)."""
        cals = calibrations(_devices(self.records))
        return [
            roofline_pct(r.bytes, r.flops, r.seconds, cals[r.device], r.op) for r in self.records
        ]

    def _compact(self) -> Any:
        import pandas as pd

        return pd.DataFrame([r.as_dict() for r in self.records], columns=COMPACT)

    def table(self) -> Any:
        """A pandas DataFrame, one row per record (device times resolved now): the
        compact columns, then ``roofline_%``."""
        t = self._compact()
        t[ROOF_COL] = self.roofline_pcts()
        return t

    def to_pandas(self) -> Any:
        """Every field of every record (``as_dict()``: ``t_start``, compile times, cache
        hits … where the record has them, NaN elsewhere), then ``roofline_%``."""
        import pandas as pd

        rows = [r.as_dict() for r in self.records]
        cols = list(dict.fromkeys([*COMPACT, "t_start", *(k for row in rows for k in row)]))
        t = pd.DataFrame(rows, columns=cols)
        t[ROOF_COL] = self.roofline_pcts()
        return t

    def report(self) -> Any:
        """The compact table with units, for reading (and for notebooks, whose timing
        columns a sanitizer can recognise by their units)."""
        t = self._compact()
        fmt = {
            "host_ms": lambda v: f"{v:.3f} ms",
            "device_ms": lambda v: "-" if v != v else f"{v:.3f} ms",
            "GB/s": lambda v: f"{v:.2f} GB/s",
            "GFLOPS": lambda v: f"{v:.2f} GFLOPS",
        }
        for col, f in fmt.items():
            t[col] = t[col].map(f)
        return t.rename(columns={"host_ms": "host", "device_ms": "device time"})

    # ---- charts ---------------------------------------------------------------------------
    def roofline(self, ax: Axes | None = None) -> Figure:
        """Log-log roofline: one point per record (x = flops/bytes, y = GFLOPS, a colour
        per device) under each calibrated device's roof min(GFLOPS, GB/s · x). Records
        without flops, bytes or time cannot be placed and are counted in the title."""
        fig, ax = _one_axes(ax, (6.5, 4.8))
        draw_roofline(ax, self.records)
        return fig

    def timeline(self, ax: Axes | Sequence[Axes] | None = None) -> Figure:
        """GFLOPS (top) and GB/s (bottom) of each record against seconds since the first
        record started, one series per device. ``ax``: two Axes, or one subplot whose
        area is split in two."""
        top, bottom = _two_axes(ax)
        draw_timeline(top, bottom, self.records)
        return top.figure  # type: ignore[return-value]

    def plot(self) -> Figure:
        """The roofline (left) and the two timelines (right) in one figure."""
        from matplotlib.figure import Figure

        _ensure_display()
        fig = Figure(figsize=(13, 5), layout="constrained")
        gs = fig.add_gridspec(2, 2)
        roof = fig.add_subplot(gs[:, 0])
        top = fig.add_subplot(gs[0, 1])
        bottom = fig.add_subplot(gs[1, 1], sharex=top)
        draw_roofline(roof, self.records)
        draw_timeline(top, bottom, self.records)
        return fig

    # ---- display --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.records)

    def _repr_html_(self) -> str:
        return self.report().to_html()

    def __repr__(self) -> str:
        # one unpadded line per op: measured values never shift the facts' columns
        lines = [f"vg.Profile: {len(self.records)} ops"]
        for r in self.report().itertuples(index=False):
            shape = "x".join(map(str, r.shape)) or "()"
            lines.append(
                f"  {r.op:8s} {r.device:8s} {shape:>14s} {r.dtype:4s} {r.bytes:>12d} B "
                f"{r.flops:>12d} flop  host {r.host}  device {r[7]}  {r[8]}  {r.GFLOPS}"
            )
        return "\n".join(lines)


def profile() -> Profile:
    return Profile()


# ---- drawing (module level: vg.timeit and dashboards reuse them) ------------------------------
def _ensure_display() -> None:
    """Inside IPython, make sure a pyplot-free Figure shows as a PNG (the inline backend
    registers that only once pyplot is imported)."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency of the notebook extra
        return
    ip = get_ipython()
    if ip is None or not hasattr(ip, "display_formatter"):
        return
    from matplotlib.figure import Figure

    fmt = ip.display_formatter.formatters["image/png"]
    try:
        fmt.lookup_by_type(Figure)
    except KeyError:
        from IPython.core.pylabtools import print_figure

        fmt.for_type(Figure, lambda fig: print_figure(fig, "png"))


def _one_axes(ax: Axes | None, size: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax  # type: ignore[return-value]
    from matplotlib.figure import Figure

    _ensure_display()
    fig = Figure(figsize=size, layout="constrained")
    return fig, fig.add_subplot()


def _two_axes(ax: Axes | Sequence[Axes] | None) -> tuple[Axes, Axes]:
    if ax is None:
        from matplotlib.figure import Figure

        _ensure_display()
        fig = Figure(figsize=(7, 5), layout="constrained")
        top, bottom = fig.subplots(2, 1, sharex=True)
        return top, bottom
    if isinstance(ax, Sequence):
        if len(ax) != 2:
            raise TypeError(f"timeline() draws on 2 Axes (GFLOPS, GB/s), got {len(ax)}")
        return ax[0], ax[1]
    spec = ax.get_subplotspec()
    if spec is None:
        raise TypeError("timeline(ax=...) needs a subplot (to split in two) or two Axes")
    fig = ax.figure
    ax.remove()
    sub = spec.subgridspec(2, 1)
    top = fig.add_subplot(sub[0])
    return top, fig.add_subplot(sub[1], sharex=top)


def _color(devices: list[str], device: str) -> str:
    return f"C{devices.index(device) % 10}"


def _finite_pos(v: float) -> bool:
    return math.isfinite(v) and v > 0


def draw_roofline(
    ax: Axes,
    records: Sequence[OpRecord],
    cals: dict[str, Calibration | None] | None = None,
) -> None:
    """Draw the roofline chart of ``records`` on ``ax``. Artists carry gids
    ``roof:<device>`` (the roof line) and ``points:<device>`` (the records' scatter)."""
    import numpy as np

    devices = _devices(records)
    cals = calibrations(devices) if cals is None else cals
    placed: dict[str, tuple[list[float], list[float]]] = {d: ([], []) for d in devices}
    skipped = 0
    for r in records:
        g = r.gflops if r.bytes > 0 and r.flops > 0 else math.nan
        if not _finite_pos(g):
            skipped += 1
            continue
        xs, ys = placed[r.device]
        xs.append(r.flops / r.bytes)
        ys.append(g)
    roofs = {d: c for d, c in cals.items() if d in placed and c is not None}
    ais = [x for xs, _ in placed.values() for x in xs]
    ais += [c.gflops / c.read_gbps for c in roofs.values() if c.read_gbps > 0 and c.gflops > 0]
    lo, hi = (min(ais) / 4, max(ais) * 4) if ais else (1 / 16, 64.0)
    if hi / lo < 100:  # at least two decades: readable log ticks around the points
        mid = math.sqrt(lo * hi)
        lo, hi = mid / 10, mid * 10
    grid = np.logspace(math.log10(lo), math.log10(hi), 256)
    mm = {r.device for r in records if r.op == "matmul"}
    for d, c in roofs.items():
        y = np.minimum(c.gflops, c.read_gbps * grid)
        ax.plot(grid, y, color=_color(devices, d), lw=2, label=f"{d} (calibrated)", gid=f"roof:{d}")
        peak = getattr(c, "matmul_gflops", None)
        if d in mm and peak and peak > c.gflops:  # matrix products have their own roof
            y = np.minimum(peak, c.read_gbps * grid)
            ax.plot(grid, y, color=_color(devices, d), lw=1, ls="--",
                    label=f"{d} matmul (calibrated)", gid=f"roof-matmul:{d}")  # fmt: skip
    n = 0
    for d, (xs, ys) in placed.items():
        if xs:
            n += len(xs)
            ax.scatter(xs, ys, color=_color(devices, d), s=24, zorder=3, label=d, gid=f"points:{d}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ys = [y for _, ys in placed.values() for y in ys]
    ys += [c.gflops for c in roofs.values() if c.gflops > 0]
    ys += [c.matmul_gflops for d, c in roofs.items() if d in mm and getattr(c, "matmul_gflops", 0)]
    ys += [c.read_gbps * lo for c in roofs.values() if c.read_gbps > 0]
    if ys:  # (at least two decades, as x)
        ylo, yhi = min(ys) / 2, max(ys) * 2
        if yhi / ylo < 100:
            mid = math.sqrt(ylo * yhi)
            ylo, yhi = mid / 10, mid * 10
        ax.set_ylim(ylo, yhi)
    ax.set_xlabel("arithmetic intensity (flop/byte)")
    ax.set_ylabel("GFLOPS")
    title = f"roofline: {n} record{'s' if n != 1 else ''}"
    if skipped:
        title += f" ({skipped} without flops, bytes or time not shown)"
    uncal = [d for d in devices if cals.get(d) is None]
    if uncal:
        title += f"\n{', '.join(uncal)}: no calibration, run vg.calibrate() for roofs"
    ax.set_title(title, fontsize="medium")
    if not n and not roofs:
        ax.text(0.5, 0.5, "nothing to place", ha="center", va="center", transform=ax.transAxes)
    if n or roofs:
        ax.legend(fontsize="small", loc="lower right")
    ax.grid(True, which="major", alpha=0.3)


def draw_timeline(top: Axes, bottom: Axes, records: Sequence[OpRecord]) -> None:
    """GFLOPS on ``top``, GB/s on ``bottom`` against seconds since the first record;
    one series per device (gids ``gflops:<device>``, ``gbps:<device>``)."""
    devices = _devices(records)
    t0 = min((r.t_start for r in records), default=0.0)
    for d in devices:
        rs = [r for r in records if r.device == d]
        color = _color(devices, d)
        for ax, attr, gid in ((top, "gflops", "gflops"), (bottom, "gbps", "gbps")):
            pts = [(r.t_start - t0, getattr(r, attr)) for r in rs]
            pts = [(x, y) for x, y in pts if math.isfinite(y)]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, marker="o", ms=3, drawstyle="steps-post", color=color,
                        label=d, gid=f"{gid}:{d}")  # fmt: skip
    top.set_ylabel("GFLOPS")
    bottom.set_ylabel("GB/s")
    bottom.set_xlabel("seconds since the first record")
    top.set_title(f"{len(records)} record{'s' if len(records) != 1 else ''} over time",
                  fontsize="medium")  # fmt: skip
    if devices:
        top.legend(fontsize="small", loc="upper right")
    for ax in (top, bottom):
        ax.grid(True, alpha=0.3)
