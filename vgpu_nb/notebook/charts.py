"""The dashboard's charts: what is drawn (:class:`ChartData`, a small picklable copy of the
dashboard's state) and how (:func:`draw_charts` with matplotlib's Agg, no pyplot). The same
code draws in the kernel's process (a fallback) and in the helper process of
:mod:`vgpu_nb.notebook.render_worker`.
"""

from __future__ import annotations

import io
import math
import threading
from dataclasses import dataclass
from typing import Any

FIGSIZE = (11.0, 4.2)
DPI = 80
DRAW_LOCK = threading.Lock()  # matplotlib is not thread-safe: one render at a time


@dataclass(frozen=True)
class ChartData:
    """What the charts show, as plain data (sent to the helper process): device order, the
    points over time per device (``(t, gflops, gbps)``), the latest records per device (for
    the roofline: ``op device bytes flops gflops`` of each), the record counts, the clock,
    and each shown device's calibration (its roofs)."""

    t0: float
    now: float
    devices: list[str]
    series: dict[str, list[tuple[float, float, float]]]
    recent: dict[str, list[Any]]
    records: int
    pending: int
    cals: dict[str, Any]


def chart_data(snap: Any) -> ChartData:
    """The :class:`ChartData` of a dashboard snapshot (calibrations read here: cached)."""
    from ..telemetry.profile import calibrations

    shown = [d for d in snap.devices if snap.series.get(d) and snap.recent.get(d)]
    return ChartData(t0=snap.t0, now=snap.now, devices=list(snap.devices), series=snap.series,
                     recent=snap.recent, records=snap.records, pending=snap.pending,
                     cals=calibrations(shown))  # fmt: skip


def draw_charts(fig: Any, snap: ChartData) -> None:
    """Draw the charts on ``fig``: the roofline of the latest records (left), GFLOPS and GB/s
    over time per device (right). A figure drawn by this before keeps its axes (and their
    ticks, most of a first render's cost): only the data artists are replaced. (In the
    kernel's process the caller holds :data:`DRAW_LOCK`.)"""
    from ..telemetry.profile import _color, draw_roofline

    if getattr(fig, "_vgpu_charts", None) is not None:
        roof, top, bottom = fig._vgpu_charts
        for ax in (roof, top, bottom):
            for art in [*ax.lines, *ax.collections, *ax.texts]:
                art.remove()
            if (legend := ax.get_legend()) is not None:
                legend.remove()
    else:
        fig.clear()
        gs = fig.add_gridspec(2, 2, width_ratios=(1.0, 1.3), left=0.065, right=0.985,
                              bottom=0.12, top=0.88, wspace=0.2, hspace=0.42)  # fmt: skip
        roof = fig.add_subplot(gs[:, 0])
        top = fig.add_subplot(gs[0, 1])
        bottom = fig.add_subplot(gs[1, 1], sharex=top)
        fig._vgpu_charts = (roof, top, bottom)
    # (records in device order: the roofline's colours match the timelines')
    shown = [d for d in snap.devices if snap.series.get(d) and snap.recent.get(d)]
    draw_roofline(roof, [r for d in shown for r in snap.recent[d]], snap.cals)
    for d in shown:
        pts = sorted(snap.series[d])
        color = _color(shown, d)
        for ax, k, gid in ((top, 1, "gflops"), (bottom, 2, "gbps")):
            xy = [(t - snap.t0, p[k]) for p in pts for t in (p[0],) if math.isfinite(p[k])]
            if xy:
                xs, ys = zip(*xy, strict=True)
                ax.plot(xs, ys, marker="o", ms=3, drawstyle="steps-post", color=color,
                        label=d, gid=f"{gid}:{d}")  # fmt: skip
    n = snap.records
    title = f"{n} record{'s' if n != 1 else ''} since the dashboard opened"
    if n > (kept := sum(len(v) for v in snap.series.values())):
        title += f", the last {kept} shown"
    if snap.pending:
        title += f" ({snap.pending} waiting for device time)"
    top.set_title(title, fontsize="medium")
    top.set_ylabel("GFLOPS")
    bottom.set_ylabel("GB/s")
    bottom.set_xlabel("seconds since the dashboard opened")
    if shown:
        top.legend(fontsize="small", loc="upper left")
    else:
        top.text(0.5, 0.5, "no launches yet", ha="center", va="center",
                 transform=top.transAxes)  # fmt: skip
    for ax in (top, bottom):
        # (set_ylim below turns y autoscaling off: turn it back on, or a reused figure keeps
        # the first frame's limits and later points are drawn off the axes)
        ax.set_autoscaley_on(True)
        ax.relim()  # (the limits of this frame's lines only)
        ax.autoscale_view()
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
    bottom.set_xlim(0, max(snap.now - snap.t0, 1.0))  # (the axis moves with the clock)


def chart_figure(dpi: float = DPI) -> Any:
    """An Agg figure for :func:`render_png` (fixed margins: a constrained layout would cost
    more than all the drawing). No pyplot, no GUI; safe in a thread."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def render_png(snap: ChartData, fig: Any = None) -> bytes:
    """The charts (:func:`draw_charts`) as PNG bytes, on ``fig`` (from :func:`chart_figure`,
    kept between renders: a redraw then costs ~half of a first one) or a new figure."""
    with DRAW_LOCK:
        fig = chart_figure() if fig is None else fig
        draw_charts(fig, snap)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=fig.dpi)
    return buf.getvalue()


def render_rgba(snap: ChartData, fig: Any) -> tuple[bytes, tuple[int, int]]:
    """The charts drawn on ``fig`` as raw RGBA bytes and their (height, width) in pixels:
    what an ipympl canvas of the same figure size and dpi holds in its renderer."""
    with DRAW_LOCK:
        draw_charts(fig, snap)
        fig.canvas.draw()
        buf = fig.canvas.buffer_rgba()
        return bytes(buf), (buf.shape[0], buf.shape[1])
