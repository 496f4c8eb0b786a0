"""``vg.dashboard()``: a live view of the devices, the memory tiers, the scheduler's decisions
and the GFLOPS / GB/s that launches reach — updated while a long cell still runs.

Layout (the notebook layer only *subscribes* to the telemetry bus):

* :class:`DashboardState` is the model: pure Python, no widgets. Its bus subscriber
  (:meth:`DashboardState.on_event`) only appends to bounded deques and counters under a lock
  — it never renders, never reads a device clock, so a launch pays a few dict updates.
* :class:`Dashboard` owns a state, the widgets and a background thread that renders at most
  every ``interval`` seconds, and only when something changed: the memory tiers
  (``vg.memory.stats()``) and the last decisions as HTML, and the charts — GFLOPS and GB/s
  over time per device, and a roofline of the latest launches under the calibrated roofs
  (``vg.scheduler.cached(name)``, drawn by :func:`vgpu_nb.telemetry.profile.draw_roofline`) —
  with matplotlib (Agg, a :class:`~matplotlib.figure.Figure`, no pyplot state) into PNG
  bytes in an ``ipywidgets.Image`` (or an ipympl canvas: see :class:`Dashboard`). A
  widget value set from a thread reaches the front end through the kernel's comm even while
  a cell runs. The figure and its axes are kept between renders (new axes cost most of a
  render: their ticks). A render that takes long stretches the wait before the next one (at
  least :data:`COST` × its own CPU time); the drawing itself happens in a helper process
  (:mod:`~vgpu_nb.notebook.render_worker`: matplotlib holds the GIL while it draws), kept
  to :data:`SHARE` of the machine's CPU. ``bench/bench_dashboard.py`` measures the cost.
* Without a widget front end (plain Python, or ``mode="text"``) there are no widgets and
  no thread: the dashboard's ``repr`` is :meth:`Dashboard.summary`, a text that is the
  same for the same work (see there), so notebooks checked by nbval can print it.
  ``VGPU_NB_DASHBOARD=text`` forces that mode everywhere (nbval, nbconvert).

Identical launches in a row reach the bus as one record when their run ends
(:mod:`vgpu_nb.telemetry.runs`): another op, 4096 launches, or 50 ms at the run's timed
launches (one in 32). The render thread never ends a run itself (a flush racing with a launch
on another thread can drop that launch from the counts); a widget dashboard ends the run a
cell leaves open when the cell finishes (IPython's ``post_run_cell``), and ``render()`` /
``summary()`` called by hand end it first.

Device times of GPU records are read lazily (:mod:`vgpu_nb.telemetry.records`): the render
thread reads CUDA events itself (idempotent and thread-safe; it keeps the value in its own
:class:`Point` and leaves the record alone), but never WebGPU timestamps (a one-shot buffer
mapping that must not race with the thread that owns the device); such records join the
charts once someone read them (a profile, ``rec.device_s``, or :meth:`Dashboard.summary`
from the launching thread) and are counted as "waiting for device time" meanwhile.

Several dashboards can be open at once; ``close()`` (or closing its widget, or leaving a
``with`` block) unsubscribes it and stops its thread. :func:`close_all` closes every one.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import re
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..memory.report import EVENT_KINDS
from ..telemetry.bus import BUS, Subscription
from ..telemetry.records import LaunchRecord, MemoryEvent, OpRecord
from . import render_worker
from .charts import DPI, DRAW_LOCK, FIGSIZE, chart_data, chart_figure, draw_charts, render_png

#: the bus kinds a dashboard listens to: op/launch records, decisions, memory moves
KINDS = ("op", "decision", *EVENT_KINDS)
MODES = ("widgets", "text")
#: how a widget dashboard draws its charts (see :func:`resolve_charts`)
CHARTS = ("auto", "png", "ipympl")
#: backends whose device clocks the render thread may read itself (see the module doc)
THREAD_SAFE_CLOCKS = ("cuda",)
#: the PNG's CSS classes and sizes (an end-to-end test finds the chart by its class)
CHART_CLASS = "vgpu-dashboard-chart"
ROOT_CLASS = "vgpu-dashboard"
#: the render thread waits at least this many times its own CPU time of a render before the
#: next one (so it takes at most ~1/COST of the GIL from the work it shows) ...
COST = 16
#: ... and so that the helper process's drawing takes at most this share of the machine's
#: CPU (all cores): on a 2-core machine a frame of ~0.1 s CPU every ~1.5 s, on 16 cores at
#: every ``interval``
SHARE = 0.03

_OPEN: set[Dashboard] = set()  # dashboards not closed yet (close_all)
_OPEN_LOCK = threading.Lock()


def _time_known(r: OpRecord) -> bool:
    """True when ``r.seconds`` needs no device clock read (CPU records, or already read)."""
    return r._device_timer is None


@dataclass
class DeviceStats:
    """What one device did since the dashboard opened (``bytes``/``flops`` are the records'
    static counts, so they are the same for the same work)."""

    launches: int = 0  # kernel launches (a run of identical launches counts each one)
    ops: int = 0  # built-in op calls (reductions, matmul ...)
    bytes: int = 0
    flops: int = 0
    spilled: int = 0  # bytes spilled down a tier (spill events) since the dashboard opened


@dataclass(frozen=True)
class Point:
    """One record on the charts, with its time (what ``draw_roofline`` reads of a record)."""

    op: str
    device: str
    bytes: int
    flops: int
    seconds: float
    t_start: float

    @classmethod
    def of(cls, r: OpRecord, seconds: float) -> Point:
        return cls(r.op, r.device, r.bytes, r.flops, seconds, r.t_start)

    @property
    def gflops(self) -> float:
        return self.flops / self.seconds / 1e9 if self.seconds > 0 else math.nan

    @property
    def gbps(self) -> float:
        return self.bytes / self.seconds / 1e9 if self.seconds > 0 else math.nan


@dataclass
class Snapshot:
    """A consistent copy of a :class:`DashboardState` for one render."""

    t0: float
    version: int
    devices: list[str]
    stats: dict[str, DeviceStats]
    series: dict[str, list[tuple[float, float, float]]]
    recent: dict[str, list[Point]]
    decisions: list[Any]
    decision_count: int
    records: int
    pending: int
    memory: dict[str, dict[str, int]]
    tiers: dict[str, dict[str, Any]] = field(default_factory=dict)
    now: float = field(default_factory=time.time)


class DashboardState:
    """The dashboard's model, fed by :meth:`on_event` (a bus subscriber).

    * ``stats[device]``: launches, ops, bytes, flops, spilled bytes since it opened;
    * ``series[device]``: a bounded deque of ``(t, gflops, gbps)`` (``t``: the record's start,
      seconds since the epoch; NaN GFLOPS for records without flops);
    * ``recent[device]``: the latest records as :class:`Point` s, for the roofline;
    * ``decisions``: the last scheduler decisions (newest last), ``decision_count`` in all;
    * ``memory[device]``: each tier's bytes right after the device's latest memory event;
    * ``tiers``: the last :meth:`refresh_tiers` snapshot of ``vg.memory.stats()``.

    ``version`` grows with every event, so a renderer can tell whether anything changed.
    Thread-safe: events may arrive from any thread while another renders.
    """

    def __init__(self, history: int = 512, roofline: int = 32, decisions: int = 8) -> None:
        self._lock = threading.Lock()
        self.t0 = time.time()
        self.version = 0
        self.devices: list[str] = []  # in order of first appearance (stable chart colours)
        self.stats: dict[str, DeviceStats] = {}
        self._history, self._roofline = history, roofline
        self.series: dict[str, deque[tuple[float, float, float]]] = {}
        self.recent: dict[str, deque[Point]] = {}
        self.pending: deque[OpRecord] = deque(maxlen=4 * history)  # device time not read yet
        self.decisions: deque[Any] = deque(maxlen=decisions)
        self.decision_count = 0
        self.records = 0  # op and launch records seen (a run of launches is one)
        self.memory: dict[str, dict[str, int]] = {}
        self.tiers: dict[str, dict[str, Any]] = {}

    # ---- the subscriber (the launch path: cheap, never renders) ---------------------------
    def on_event(self, ev: Any) -> None:
        kind = getattr(ev, "kind", None)
        with self._lock:
            if isinstance(ev, OpRecord):
                self._record(ev)
            elif kind == "decision":
                if ev in self.decisions:  # (a decision re-recorded: it moves to the end)
                    self.decisions.remove(ev)
                self.decisions.append(ev)
                self.decision_count += 1
            elif isinstance(ev, MemoryEvent):
                self.memory[ev.device] = dict(ev.used)
                if ev.kind == "spill":
                    self._device(ev.device).spilled += ev.bytes
            else:
                return
            self.version += 1

    def _device(self, name: str) -> DeviceStats:
        s = self.stats.get(name)
        if s is None:
            s = self.stats[name] = DeviceStats()
        return s

    def _record(self, r: OpRecord) -> None:
        d = r.device
        if d not in self.series:
            self.devices.append(d)
            self.series[d] = deque(maxlen=self._history)
            self.recent[d] = deque(maxlen=self._roofline)
        self.records += 1
        s = self._device(d)
        if isinstance(r, LaunchRecord):
            s.launches += r.count
        else:
            s.ops += 1
        s.bytes += r.bytes
        s.flops += r.flops
        if _time_known(r):
            self._place(Point.of(r, r.seconds))
        else:
            self.pending.append(r)

    def _place(self, p: Point) -> None:
        """(Lock held.) One point on the charts."""
        gflops = p.gflops if p.flops > 0 else math.nan
        self.series[p.device].append((p.t_start, gflops, p.gbps))
        self.recent[p.device].append(p)

    # ---- the render side ----------------------------------------------------------------
    def resolve(self, backends: tuple[str, ...] | None = THREAD_SAFE_CLOCKS) -> int:
        """Place the records whose device time is now known, reading the device clocks of
        ``backends`` here (None: every backend — only from the thread that launches);
        returns how many still wait. Call it off the launch path."""
        with self._lock:
            todo = list(self.pending)
            self.pending.clear()
        ready, wait = [], []
        for r in todo:
            timer = r._device_timer
            try:  # (may wait for the device: outside the lock)
                if timer is None or backends is None:
                    secs = r.seconds  # (known, or this is the thread that launched)
                elif r.device.partition(":")[0] in backends:
                    # the clock read here, the record left alone: another thread reading
                    # rec.device_s meanwhile reads the same (idempotent) clock itself
                    d = timer()
                    secs = d if d is not None else r.host_s
                else:
                    wait.append(r)
                    continue
            except Exception:  # noqa: BLE001  (a failed clock: the point is dropped)
                continue
            ready.append(Point.of(r, secs))
        with self._lock:
            for p in ready:
                self._place(p)
            self.pending.extendleft(reversed(wait))
            if ready:
                self.version += 1
            return len(self.pending)

    def refresh_tiers(self) -> dict[str, dict[str, Any]]:
        """Read ``vg.memory.stats()`` and ``budgets()`` into ``tiers``: per device, each
        tier's ``(used, capacity)`` (disk: capacity is used + free space, which varies),
        its arrays, and ``spilled_bytes`` (process-wide, as ``vg.memory.report()``)."""
        from .. import memory

        df = memory.stats()  # (takes the memory lock: never with ours held)
        budgets = memory.budgets()
        tiers: dict[str, dict[str, Any]] = {}
        for (device, tier), row in df.iterrows():
            t = tiers.setdefault(device, _empty_tiers(device, budgets))
            cap = row["capacity"]
            cap = None if cap != cap else int(cap)
            t[tier] = (int(row["used"]), cap)
            t["arrays"] += int(row["arrays"])
            t["spilled_bytes"] += int(row["spilled_bytes"])
        with self._lock:
            self.tiers = tiers
        return tiers

    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(
                t0=self.t0,
                version=self.version,
                devices=list(self.devices),
                stats={k: DeviceStats(**vars(v)) for k, v in self.stats.items()},
                series={k: list(v) for k, v in self.series.items()},
                recent={k: list(v) for k, v in self.recent.items()},
                decisions=list(self.decisions),
                decision_count=self.decision_count,
                records=self.records,
                pending=len(self.pending),
                memory={k: dict(v) for k, v in self.memory.items()},
                tiers={k: dict(v) for k, v in self.tiers.items()},
            )

    # ---- text -----------------------------------------------------------------------------
    def summary(self, default: str = "?", policy: str = "?", timings: bool = False) -> str:
        """The text of :meth:`Dashboard.summary` (tiers as last refreshed)."""
        return summary_text(self.snapshot(), default, policy, timings)


def _empty_tiers(device: str, budgets: dict[str, Any]) -> dict[str, Any]:
    return {"device": (0, budgets.get(device)), "host": (0, budgets.get("host")),
            "disk": (0, None), "arrays": 0, "spilled_bytes": 0}  # fmt: skip


# ---- text summary -------------------------------------------------------------------------
_TIME = re.compile(r"\d[\d.]*(?:e[+-]?\d+)?\s?(?:µs|ms|s)\b")
_RUNS = re.compile(r"from \d+ past runs")


def mask_timings(reason: str) -> str:
    """A decision's reason without the numbers that vary run to run: predicted and
    measured times become ``…``, and so does the number of past runs behind a prediction."""
    return _RUNS.sub("from … past runs", _TIME.sub("…", reason))


def _plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word if n == 1 else (many or word + 's')}"


def _emulated() -> set[str]:
    """Devices that are CPU-emulated GPUs (a WebGPU adapter on Mesa's llvmpipe: no GPU
    driver here): the dashboard says so next to them, as ``vg.devices()`` does."""
    from ..devices import all_infos

    return {i.name for i in all_infos() if i.kind == "cpu-emulated gpu"}


_EMULATED_NOTE = "CPU-emulated WebGPU adapter, no GPU"


def summary_text(snap: Snapshot, default: str, policy: str, timings: bool = False) -> str:
    """Devices with their tiers (used / budget), counts per device, the last decisions."""
    from ..memory.budgets import human

    lines = [f"vg.dashboard: default device {default}, policy {policy}"]
    names = sorted(set(snap.tiers) | {d for d, s in snap.stats.items() if s.launches or s.ops})
    if not names:
        lines.append("  no device used yet")
    emulated = _emulated()
    for d in names:
        t = snap.tiers.get(d)
        if d in emulated:
            lines.append(f"  {d}: ({_EMULATED_NOTE})")
        if t is not None:
            (du, dc), (hu, hc), (ku, _) = t["device"], t["host"], t["disk"]
            lines.append(f"  {d}: device {human(du)} / {human(dc)}, host {human(hu)} / "
                         f"{human(hc)}, disk {human(ku)}; {_plural(t['arrays'], 'array')}, "
                         f"spilled {human(t['spilled_bytes'])}")  # fmt: skip
        else:
            lines.append(f"  {d}: no arrays")
        s = snap.stats.get(d)
        if s is not None and (s.launches or s.ops):
            launches = _plural(s.launches, "kernel launch", "kernel launches")
            lines.append(
                f"    since opened: {launches}, {_plural(s.ops, 'op')}; "
                f"{human(s.bytes)} moved, {s.flops} flop"
            )
        if timings and snap.series.get(d):
            _, gf, bw = snap.series[d][-1]
            lines.append(f"    latest: {gf:.3g} GFLOPS, {bw:.3g} GB/s (varies run to run)")
    n = snap.decision_count
    if n:
        shown = snap.decisions
        lines.append(f"decisions: {n}" + (f" (last {len(shown)})" if len(shown) < n else ""))
        for dec in shown:
            reason = dec.reason if timings else mask_timings(dec.reason)
            served = _plural(dec.launches, "launch", "launches")
            lines.append(f"  {dec.op} [{dec.policy}] → {dec.choice} ({served}): {reason}")
    else:
        lines.append("decisions: none")
    return "\n".join(lines)


# ---- HTML and charts ----------------------------------------------------------------------
def _bar(used: int, cap: int | None) -> str:
    pct = 100.0 * used / cap if cap else None
    if pct is None:
        return ""
    color = "#4c78a8" if pct <= 80 else ("#f58518" if pct <= 100 else "#e45756")
    return (
        '<span style="display:inline-block;width:90px;height:8px;background:#e6e6e6;'
        'border-radius:2px;vertical-align:middle;margin:0 6px;overflow:hidden">'
        f'<span style="display:block;height:100%;width:{min(100.0, pct):.1f}%;'
        f'background:{color}"></span></span>{pct:.0f}%'
    )


def tiers_html(snap: Snapshot) -> str:
    """Per device: device / host / disk used against the budget (bars), arrays, spills."""
    from ..memory.budgets import human
    from ..reprs import esc

    out = ['<div class="vgpu-dashboard-tiers" style="font-size:12px"><b>memory tiers</b>']
    if not snap.tiers:
        out.append("<div>no arrays made yet</div>")
    emulated = _emulated()
    for d, t in sorted(snap.tiers.items()):
        note = f" <i>({_EMULATED_NOTE})</i>" if d in emulated else ""
        out.append(f'<div style="margin-top:4px"><b>{esc(d)}</b>{note}: {t["arrays"]} arrays, '
                   f'spilled {esc(human(t["spilled_bytes"]))}</div>')  # fmt: skip
        for tier in ("device", "host", "disk"):
            used, cap = t[tier]
            of = "" if tier == "disk" else f" / {esc(human(cap))}"
            bar = _bar(used, cap) if tier != "disk" else ""
            out.append(f'<div style="white-space:nowrap"><span style="display:inline-block;'
                       f'width:44px">{tier}</span>{bar} {esc(human(used))}{of}</div>')  # fmt: skip
    out.append("</div>")
    return "".join(out)


def decisions_html(snap: Snapshot) -> str:
    """The last decisions, newest first: op, policy, choice, launches served, reason."""
    from ..reprs import esc

    out = ['<div class="vgpu-dashboard-decisions" style="font-size:12px">'
           f"<b>scheduler decisions</b> ({snap.decision_count} since opened)"]  # fmt: skip
    if not snap.decisions:
        out.append("<div>none yet (ops on device &quot;auto&quot; are decided)</div>")
    else:
        out.append('<table style="border-collapse:collapse"><thead><tr><th>op</th>'
                   "<th>policy</th><th>choice</th><th>launches</th><th style='text-align:left'>"
                   "reason</th></tr></thead><tbody>")  # fmt: skip
        for d in reversed(snap.decisions):
            out.append(f"<tr><td>{esc(d.op)}</td><td>{esc(d.policy)}</td><td><b>"
                       f"{esc(d.choice)}</b></td><td>{d.launches}</td>"
                       f"<td style='text-align:left'>{esc(d.reason)}</td></tr>")  # fmt: skip
        out.append("</tbody></table>")
    out.append("</div>")
    return "".join(out)


def resolve_charts(charts: str | None) -> str:
    """``"png"`` or ``"ipympl"`` for ``charts`` (None: ``$VGPU_NB_CHARTS``, else
    ``"auto"``); ``"auto"`` is ipympl where it is installed, else PNG."""
    charts = (charts or os.environ.get("VGPU_NB_CHARTS", "") or "auto").strip().lower()
    if charts not in CHARTS:
        raise ValueError(f"charts must be one of {', '.join(CHARTS)}, got {charts!r}")
    if charts == "auto":
        return "ipympl" if importlib.util.find_spec("ipympl") is not None else "png"
    if charts == "ipympl" and importlib.util.find_spec("ipympl") is None:
        raise ImportError(
            "charts='ipympl' needs ipympl: pip install ipympl (or vgpu-nb[notebook]); "
            "charts='png' needs nothing more"
        )
    return charts


def ipympl_chart(
    on_ready: Callable[[], None] | None = None, on_stale: Callable[[], None] | None = None
) -> Any:
    """A live ipympl canvas widget for the charts (CSS class :data:`CHART_CLASS`), outside
    pyplot's figure registry: no toolbar, header or footer, a fixed size.

    Frames come drawn (RGBA, from the helper process): ``canvas.show_frame(rgba, shape)``
    puts one in the canvas's buffer and pushes the changed pixels to the front end through
    the widget's comm at once (no round trip to the browser, so it moves while a cell runs).
    The front end's own requests (its handshake, pixel ratio, a redraw) are handled on the
    kernel's main thread between cells, under :data:`~vgpu_nb.notebook.charts.DRAW_LOCK`;
    a redraw repaints the last frame (``on_stale`` is called when that frame no longer fits,
    after a change of pixel ratio). Without a frame (the fallback, drawing in this process)
    ``canvas.draw()`` draws ``canvas.figure`` as any ipympl canvas does.

    A browser shows no frame pushed before its handshake (``"initialized"``) reached the
    kernel — with *Run All*, not before the kernel is idle (seen in JupyterLab 4.6 with
    ipympl 0.10). ``on_ready`` is called (main thread) when it has; the dashboard shows a
    PNG chart until then."""
    import numpy as np
    from ipympl.backend_nbagg import Canvas, FigureManager
    from matplotlib.figure import Figure

    class _Chart(Canvas):  # type: ignore[misc,valid-type]
        _frame: tuple[bytes, tuple[int, int]] | None = None  # (drawn elsewhere)

        def _handle_message(self, obj: Any, content: Any, buffers: Any) -> None:
            with DRAW_LOCK:
                super()._handle_message(obj, content, buffers)
            if on_ready is not None and content.get("type") == "initialized":
                on_ready()

        def show_frame(self, rgba: bytes, shape: tuple[int, int]) -> bool:
            """Show a frame drawn elsewhere; False if it does not fit the canvas now."""
            with DRAW_LOCK:
                self._frame = (rgba, tuple(shape))
                return self._paint()

        def _paint(self) -> bool:
            rgba, shape = self._frame
            buf = np.asarray(self.get_renderer().buffer_rgba())
            if buf.shape[:2] != shape:
                return False
            buf[...] = np.frombuffer(rgba, np.uint8).reshape(buf.shape)
            self._png_is_old = True
            self.manager.refresh_all()  # (the changed pixels to the front end)
            return True

        def draw(self) -> None:  # (the front end's redraw request, under DRAW_LOCK)
            if self._frame is None:
                super().draw()
            elif not self._paint() and on_stale is not None:
                on_stale()

    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    with warnings.catch_warnings():  # (ipympl's toolbar trips a traitlets deprecation)
        warnings.simplefilter("ignore", DeprecationWarning)
        canvas = _Chart(fig)
        FigureManager(canvas, 0)  # (it sends the frames: canvas.draw() → refresh_all)
    canvas.toolbar_visible = canvas.header_visible = canvas.footer_visible = False
    canvas.resizable = False
    # the size now, as ipympl does when the front end says "initialized": a browser running
    # a whole notebook sends that only when the kernel is idle, and till then the view has
    # a 0×0 canvas
    canvas.manager.resize(*fig.bbox.size)
    canvas.add_class(CHART_CLASS)
    return canvas


# ---- the dashboard --------------------------------------------------------------------------
def _default_name() -> str:
    """The default device as ``vg.use`` takes it (``"auto"``, or a device's name)."""
    from ..devices import auto_requested, default_device

    return "auto" if auto_requested() else default_device().name


def _policy() -> str:
    from .. import scheduler

    return str(scheduler.policy)


def _ipython_events() -> Any:
    """The running IPython shell if it has event hooks, else None."""
    ipython = sys.modules.get("IPython")
    ip = ipython.get_ipython() if ipython is not None else None
    return ip if ip is not None and hasattr(ip, "events") else None


def detect_mode() -> str:
    """``"widgets"`` inside an IPython kernel (a front end that can show widgets) with
    ipywidgets installed, else ``"text"``; ``VGPU_NB_DASHBOARD=text|widgets`` overrides."""
    env = os.environ.get("VGPU_NB_DASHBOARD", "").strip().lower()
    if env in MODES:
        return env
    ipython = sys.modules.get("IPython")  # (not imported: surely no kernel; nothing imported)
    if ipython is None or importlib.util.find_spec("ipywidgets") is None:
        return "text"
    ip = ipython.get_ipython()
    return "widgets" if ip is not None and hasattr(ip, "kernel") else "text"


class Dashboard:
    """A live dashboard (see the module doc). ``mode``: ``"widgets"``, ``"text"`` or None
    (:func:`detect_mode`); ``interval``: seconds between renders at most (None: no thread,
    call :meth:`render` yourself); ``decisions``: how many decisions to show; ``history``:
    points kept per device for the time charts; ``roofline``: latest records per device on
    the roofline.

    Widgets (``mode="widgets"``): ``widget`` (the root ``VBox``, CSS class
    ``vgpu-dashboard``), ``device_dropdown`` (sets ``vg.use``), ``policy_dropdown`` (sets
    ``vg.scheduler.policy``), ``tiers`` and ``decisions_view`` (HTML), ``chart`` (the chart
    shown now, CSS class ``vgpu-dashboard-chart``), ``status``.

    ``charts`` (:func:`resolve_charts`; default ``"auto"`` or ``$VGPU_NB_CHARTS``: ipympl
    where it is installed, else PNG) says how the charts are drawn. ``"png"``: ``chart`` is
    ``chart_image``, an ``ipywidgets.Image`` the thread sets to PNG bytes (works in every
    front end that shows ipywidgets, at once). ``"ipympl"``: also ``chart_canvas``, an
    ipympl canvas (:func:`ipympl_chart`: only changed pixels travel); ``chart`` becomes the
    canvas once its front end has answered, which a notebook run with *Run All* does only
    when the kernel is idle — till then the PNG chart moves instead.
    """

    def __init__(
        self,
        mode: str | None = None,
        *,
        interval: float | None = 0.5,
        decisions: int = 8,
        history: int = 512,
        roofline: int = 32,
        charts: str | None = None,
    ) -> None:
        mode = detect_mode() if mode is None else mode
        if mode not in MODES:
            raise ValueError(f"dashboard mode must be one of {', '.join(MODES)}, got {mode!r}")
        if interval is not None and not interval > 0:
            raise ValueError(f"interval must be a positive number of seconds, got {interval!r}")
        self.mode = mode
        self.interval = interval
        self.charts = resolve_charts(charts) if mode == "widgets" else "none"
        self.chart_canvas: Any = None
        self._figure: Any = None  # (the PNG chart's figure, kept between renders)
        self._in_process = not render_worker.enabled()  # (draw here, not in the helper)
        self._redraw = False  # (a render is due though no event came: the chart changed)
        self.state = DashboardState(history=history, roofline=roofline, decisions=decisions)
        self.renders = 0  # charts drawn so far (the thread's and render()'s)
        self.render_cpu_s = 0.0  # CPU seconds of the thread's last render (this thread)
        self.render_worker_cpu_s = 0.0  # the helper process's CPU seconds for it
        self._worker_cpu = 0.0
        self.widget: Any = None
        self._closed = False
        self._stop = threading.Event()
        self._render_lock = threading.Lock()  # one render at a time (thread, render())
        self._ui_lock = threading.RLock()  # widget values and the dropdowns' effects
        self._thread: threading.Thread | None = None
        self._note = ""  # shown in the status line (a failed vg.use, a failed render)
        self._sub: Subscription | None = BUS.subscribe(self.state.on_event, kinds=KINDS)
        try:
            if mode == "widgets":
                self._build()
        except BaseException:
            self._sub.close()
            raise
        with _OPEN_LOCK:
            _OPEN.add(self)
        if mode == "widgets" and interval is not None:
            self._thread = threading.Thread(target=self._loop, name="vgpu-dashboard", daemon=True)
            self._thread.start()

    # ---- widgets --------------------------------------------------------------------------
    def _build(self) -> None:
        import ipywidgets as w

        from .. import scheduler
        from ..devices import all_infos

        default = _default_name()
        names = [i.name for i in all_infos() if i.available]
        options = [*names, "auto"] + ([default] if default not in names + ["auto"] else [])
        self.device_dropdown = w.Dropdown(options=options, value=default, description="device")
        self.policy_dropdown = w.Dropdown(options=list(scheduler.POLICIES), value=_policy(),
                                          description="policy")  # fmt: skip
        self.status = w.HTML(value="")
        self.status.add_class("vgpu-dashboard-status")
        self.close_button = w.Button(description="close", icon="times",
                                     tooltip="close the dashboard (stops listening)",
                                     layout=w.Layout(width="auto"))  # fmt: skip
        self.tiers = w.HTML(value="", layout=w.Layout(min_width="320px"))
        self.decisions_view = w.HTML(value="", layout=w.Layout(flex="1 1 auto"))
        self.chart_image = w.Image(format="png", layout=w.Layout(width="100%",
                                                                 max_width="1100px"))  # fmt: skip
        self.chart_image.add_class(CHART_CLASS)
        self.chart = self.chart_image
        self.chart_box = w.Box([self.chart])
        if self.charts == "ipympl":
            self.chart_canvas = ipympl_chart(on_ready=self._canvas_ready,
                                             on_stale=self._stale)  # fmt: skip
        head = w.HBox([self.device_dropdown, self.policy_dropdown, self.status,
                       self.close_button])  # fmt: skip
        middle = w.HBox([self.tiers, self.decisions_view])
        self.widget = w.VBox([head, middle, self.chart_box])
        self.widget.add_class(ROOT_CLASS)
        self._widgets = [self.device_dropdown, self.policy_dropdown, self.status,
                         self.close_button, self.tiers, self.decisions_view, self.chart_image,
                         self.chart_box, head, middle, self.widget]  # fmt: skip
        if self.chart_canvas is not None:
            self._widgets += [self.chart_canvas, self.chart_canvas.toolbar]
        self.device_dropdown.observe(self._on_device, names="value")
        self.policy_dropdown.observe(self._on_policy, names="value")
        self.close_button.on_click(lambda _b: self.close())
        self.widget.observe(self._on_comm, names="comm")  # (widget.close() → self.close())
        self.state.refresh_tiers()
        self._update_views(self.state.snapshot())
        self._ip = _ipython_events()
        if self._ip is not None:
            self._ip.events.register("post_run_cell", self._after_cell)

    def _stale(self) -> None:
        self._redraw = True

    def _canvas_ready(self) -> None:
        """(The ipympl canvas's front end answered: main thread.) Show the canvas instead of
        the PNG chart and draw it at the next turn of the render thread."""
        with self._ui_lock:
            if self._closed or self.chart is self.chart_canvas:
                return
            self.chart = self.chart_canvas
            self.chart_box.children = (self.chart_canvas,)
            self._redraw = True

    def _on_device(self, change: dict[str, Any]) -> None:
        from ..devices import use

        new = change["new"]
        with self._ui_lock:
            if new == _default_name():
                return
            try:
                use(new)
            except Exception as exc:  # noqa: BLE001  (shown, and the dropdown goes back)
                self._set_status(f"vg.use({new!r}) failed: {exc}")
                self.device_dropdown.value = change["old"]
            else:
                self._set_status("")

    def _on_policy(self, change: dict[str, Any]) -> None:
        from .. import scheduler

        with self._ui_lock:
            if change["new"] != _policy():
                scheduler.policy = change["new"]

    def _after_cell(self, *_: Any) -> None:
        """(IPython's ``post_run_cell``, on the kernel's main thread.) A run of launches the
        cell left open is emitted now: the render thread never flushes runs itself (a flush
        racing with a launch on another thread can drop that launch from the counts)."""
        BUS.flush()

    def _on_comm(self, change: dict[str, Any]) -> None:
        if change["new"] is None:
            self.close()

    def _set_status(self, note: str) -> None:
        """A note next to the counts (an error of the dropdowns, of a render)."""
        self._note = note
        self._update_views(self.state.snapshot())

    def _sync_controls(self) -> None:
        """The dropdowns follow ``vg.use`` / ``vg.scheduler.policy`` set elsewhere. (The UI
        lock: a choice made in a dropdown meanwhile is applied, never undone by this.)"""
        with self._ui_lock:
            default = _default_name()
            if default not in self.device_dropdown.options:
                self.device_dropdown.options = [*self.device_dropdown.options, default]
            if self.device_dropdown.value != default:
                self.device_dropdown.value = default
            if self.policy_dropdown.value != _policy():
                self.policy_dropdown.value = _policy()

    def _update_views(self, snap: Snapshot, png: bytes | None = None) -> None:
        """Set the widgets that changed (each set is a comm message)."""
        from ..reprs import esc

        s = snap.stats.values()
        status = (f"{sum(x.launches for x in s)} launches, {sum(x.ops for x in s)} ops, "
                  f"{snap.decision_count} decisions since opened")  # fmt: skip
        if snap.pending:
            status += f"; {snap.pending} waiting for device time"
        if self._note:
            status += f" — {self._note}"
        views = [(self.tiers, tiers_html(snap)), (self.decisions_view, decisions_html(snap)),
                 (self.status, f"<span style='font-size:12px'>{esc(status)}</span>")]  # fmt: skip
        if png is not None:
            views.append((self.chart_image, png))
        with self._ui_lock:
            for widget, value in views:
                if widget.value != value:
                    widget.value = value

    # ---- rendering ----------------------------------------------------------------------
    def render(self) -> bytes:
        """Render now: read pending device clocks, the memory tiers, draw the charts and
        (in widget mode) update the widgets; returns the charts as PNG bytes (drawn once
        more for that where the ipympl canvas is shown). Called from another thread than
        the dashboard's (the one that launches), it first emits a run of launches in
        progress (``vg.telemetry.flush()``)."""
        png = self._render()
        if png is None:  # (the canvas is shown: the same charts as a PNG)
            with self._render_lock:
                png = self._png(chart_data(self.state.snapshot()))
        return png

    def _render(self) -> bytes | None:
        """:meth:`render` without the PNG where the canvas is shown (the thread's call)."""
        if threading.current_thread() is not self._thread:
            BUS.flush()  # (called by hand, from the launching thread: runs in progress too)
        with self._render_lock:
            self.state.resolve()
            self.state.refresh_tiers()
            snap = self.state.snapshot()
            self._redraw = False
            data = chart_data(snap)
            png, canvas = None, self.chart_canvas
            if canvas is None or self.chart is not canvas:
                png = self._png(data)
            elif not self._closed:
                self._paint_canvas(data)
            self.renders += 1
            if self.widget is not None and not self._closed:
                self._sync_controls()
                self._update_views(snap, png)
            return png

    def _fallback(self, exc: Exception) -> None:
        """The helper process failed: draw in this process from now on, and say so."""
        self._in_process = True
        self._note = f"charts drawn in the kernel's process ({exc})"

    def _png(self, data: Any) -> bytes:
        """The charts as PNG: from the helper process, or drawn here (the fallback)."""
        if not self._in_process:
            try:
                png, _, self._worker_cpu = render_worker.frame(data, "png", DPI)
                return png
            except render_worker.RenderWorkerError as exc:
                self._fallback(exc)
        if self._figure is None:
            self._figure = chart_figure()
        return render_png(data, self._figure)

    def _paint_canvas(self, data: Any) -> None:
        canvas = self.chart_canvas
        if not self._in_process:
            try:
                rgba, shape, self._worker_cpu = render_worker.frame(
                    data, "rgba", float(canvas.figure.dpi)
                )
            except render_worker.RenderWorkerError as exc:
                self._fallback(exc)
            else:
                if not canvas.show_frame(rgba, shape):  # (its dpi changed meanwhile)
                    self._redraw = True
                return
        with DRAW_LOCK:
            canvas._frame = None
            draw_charts(canvas.figure, data)
            canvas.draw()  # (sends the changed pixels to the front end)

    def _loop(self) -> None:
        """Render when something changed, at most every ``interval`` s (and at most
        1/:data:`COST` of the time); otherwise refresh the tiers and the dropdowns every ~2 s."""
        assert self.interval is not None
        seen, wait, quiet = -1, 0.0, 0.0
        while not self._stop.wait(wait):
            try:
                self.state.resolve()  # (device times read elsewhere meanwhile: new points)
                if self.state.version != seen or self._redraw:
                    seen = self.state.version
                    t = time.thread_time()  # (CPU time: waiting for the GIL is not cost)
                    self._worker_cpu = 0.0
                    self._render()
                    cpu = time.thread_time() - t
                    # (the first render starts the helper and imports matplotlib: not a
                    # measure of the next ones)
                    if self.renders > 1:
                        cores = os.cpu_count() or 1
                        wait = max(self.interval, COST * cpu,
                                   self._worker_cpu / (SHARE * cores))  # fmt: skip
                    else:
                        wait = self.interval
                    self.render_cpu_s, self.render_worker_cpu_s = cpu, self._worker_cpu
                    quiet = 0.0
                    continue
                wait = self.interval
                quiet += wait
                if quiet >= 2.0 and self.widget is not None:  # budgets, vg.use from elsewhere
                    quiet = 0.0
                    with self._render_lock:
                        self.state.refresh_tiers()
                        if not self._closed:
                            self._sync_controls()
                            self._update_views(self.state.snapshot())
            except Exception as exc:  # noqa: BLE001  (a broken render must not kill the thread)
                if self.widget is not None and not self._closed:
                    try:
                        self._set_status(f"render failed: {exc!r}")
                    except Exception:  # noqa: BLE001,S110
                        pass
                wait = max(self.interval, 2.0)

    # ---- text -------------------------------------------------------------------------------
    def summary(self, timings: bool = False) -> str:
        """A text summary that is the same for the same work: the default device and
        policy; per device, the tiers' used / budget bytes (``vg.memory.stats()`` now:
        budgets depend on the machine's memory), arrays and spilled bytes (process-wide,
        as ``vg.memory.report()``), the kernel launches, op calls, bytes and flops since
        the dashboard opened (static counts, not measurements); the last decisions — op,
        policy, choice, launches served and the reason with its times masked as ``…``
        (the choice itself follows measurements: the same where one device is clearly
        best). ``timings=True`` keeps the times and adds each device's latest GFLOPS and
        GB/s (these vary run to run). A run of launches in progress is counted first."""
        BUS.flush()
        self.state.resolve(backends=None)  # (this is the launching thread: every clock)
        self.state.refresh_tiers()
        return self.state.summary(_default_name(), _policy(), timings)

    def __repr__(self) -> str:
        return self.summary()

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        """The widget, with the text summary as its ``text/plain`` (what nbval compares)."""
        bundle: dict[str, Any] = {}
        if self.widget is not None and not self._closed:
            bundle = dict(self.widget._repr_mimebundle_(**kwargs) or {})
        bundle["text/plain"] = self.summary()
        return bundle

    # ---- life cycle ---------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Unsubscribe, stop the render thread and close the widgets (idempotent). The
        state stays readable (``summary()``)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._sub is not None:
            self._sub.close()
            self._sub = None
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=10)
        with _OPEN_LOCK:
            _OPEN.discard(self)
        ip = getattr(self, "_ip", None)
        if ip is not None:
            with contextlib.suppress(ValueError):
                ip.events.unregister("post_run_cell", self._after_cell)
        if self.widget is not None:
            with self._render_lock:
                for widget in self._widgets:
                    widget.close()

    def __enter__(self) -> Dashboard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def dashboard(mode: str | None = None, **kwargs: Any) -> Dashboard:
    """``vg.dashboard()``: a live :class:`Dashboard` — in a notebook, widgets (device and
    policy pickers, memory tiers, the last scheduler decisions, GFLOPS / GB/s over time and
    a roofline) that update while a cell runs; elsewhere (``mode="text"``), an object whose
    repr is a text summary. ``close()`` it (or use ``with``) to stop listening."""
    return Dashboard(mode, **kwargs)


def close_all() -> None:
    """Close every open dashboard."""
    with _OPEN_LOCK:
        dashes = list(_OPEN)
    for d in dashes:
        d.close()
