"""``vg.dashboard()`` (issue 6, item 2): the state fed by real bus events, the headless text
summary, the widgets (built with ipywidgets directly, no browser), the render thread,
closing, several dashboards at once, and the device / policy dropdowns."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import vgpu_nb as vg
from vgpu_nb.devices import auto_requested
from vgpu_nb.notebook import dashboard as dash
from vgpu_nb.notebook.dashboard import Dashboard, DashboardState, mask_timings
from vgpu_nb.telemetry import BUS, LaunchRecord

N = 4096
PNG = b"\x89PNG\r\n\x1a\n"


@vg.kernel
def saxpy(a: vg.f32, x: vg.f32[:], y: vg.f32[:]):
    i = vg.tid()
    y[i] = a * x[i] + y[i]


@pytest.fixture(autouse=True)
def _leave_as_found(monkeypatch):
    """Default device, policy and bus subscribers as before; no dashboard left open."""
    monkeypatch.delenv("VGPU_NB_DASHBOARD", raising=False)
    device, policy, subs = dash._default_name(), vg.scheduler.policy, BUS._subs
    yield
    dash.close_all()
    vg.use(device)
    vg.scheduler.policy = policy
    assert BUS._subs == subs


def _launches(k: int = 5, ops: int = 1) -> None:
    """``k`` saxpy launches and ``ops`` sums on numba; its arrays die on return."""
    x = vg.asarray(np.arange(N, dtype=np.float32), device="numba")
    y = vg.zeros(N, device="numba")
    for _ in range(k):
        saxpy[N](2.0, x, y)
    for _ in range(ops):
        vg.sum(x)
    vg.telemetry.flush()  # (a run of launches in progress becomes its record)


# ---- the state, from real events ------------------------------------------------------------
def test_state_counts_series_and_bytes_match_a_profile():
    state = DashboardState()
    with BUS.subscribe(state.on_event, kinds=dash.KINDS), vg.profile() as p:
        _launches(5, 2)
    s = state.stats["numba"]
    assert (s.launches, s.ops) == (5, 2)
    assert s.bytes == sum(r.bytes for r in p.records) > 0
    assert s.flops == sum(r.flops for r in p.records) > 0
    assert state.devices == ["numba"] and not state.pending
    pts = list(state.series["numba"])
    assert len(pts) == len(p.records)  # (a run of launches is one point)
    assert all(math.isfinite(gbps) and gbps > 0 for _, _, gbps in pts)
    assert all(t >= state.t0 - 1 for t, _, _ in pts)
    got = [(q.op, q.device, q.bytes, q.flops, q.seconds) for q in state.recent["numba"]]
    assert got == [(r.op, r.device, r.bytes, r.flops, r.seconds) for r in p.records]


def test_device_clocks_are_read_off_the_launch_path():
    """GPU records wait for their device time; the render side reads CUDA clocks itself
    (leaving the record alone) but WebGPU ones only from the launching thread."""
    reads = []

    def clock(seconds):
        return lambda: reads.append(seconds) or seconds

    def rec(device, seconds):
        r = LaunchRecord("k", device, (1000,), "f32", 12_000, 2_000, host_s=1e-6)
        r._device_timer = clock(seconds)
        return r

    state = DashboardState()
    cuda, wgpu = rec("cuda:0", 1e-3), rec("wgpu:0", 2e-3)
    state.on_event(cuda)
    state.on_event(wgpu)
    assert not reads and len(state.pending) == 2 and state.stats["cuda:0"].launches == 1
    assert state.resolve() == 1 and reads == [1e-3]  # (the render thread's call)
    assert cuda._device_timer is not None  # (not resolved through the record)
    (point,) = state.recent["cuda:0"]
    assert point.seconds == 1e-3 and point.gbps == pytest.approx(12e-3)
    assert not state.series.get("wgpu:0")
    assert state.resolve(backends=None) == 0 and wgpu.device_s == 2e-3  # (summary's call)
    assert state.series["wgpu:0"][0][1:] == pytest.approx((1e-3, 6e-3))


def test_state_is_bounded():
    state = DashboardState(history=3, roofline=2, decisions=2)
    x = vg.asarray(np.ones(64, np.float32), device="numba")
    with BUS.subscribe(state.on_event, kinds=dash.KINDS):
        for _ in range(7):
            vg.sum(x)  # (op records are not merged into runs: seven records)
    del x
    assert state.stats["numba"].ops == 7
    assert len(state.series["numba"]) == 3 and len(state.recent["numba"]) == 2


def test_state_memory_events_and_tiers(restore_memory):
    state = DashboardState()
    with BUS.subscribe(state.on_event, kinds=dash.KINDS):
        x = vg.zeros(N, device="numba")
        v0 = state.version
        assert state.memory["numba"]["device"] >= x.nbytes
        vg.memory.spill(x, "host")
        assert state.stats["numba"].spilled == x.nbytes and state.version > v0
        tiers = state.refresh_tiers()
        assert tiers["numba"]["device"][1] == vg.memory.budgets()["numba"]
        assert tiers["numba"]["host"] == (x.nbytes, vg.memory.budgets()["host"])
        assert tiers["numba"]["spilled_bytes"] >= x.nbytes
        del x


def test_state_decisions_under_auto(fresh_scheduler):
    state = DashboardState(decisions=4)
    xh = np.arange(N, dtype=np.float32)
    with BUS.subscribe(state.on_event, kinds=dash.KINDS):
        vg.use("auto")
        x, y = vg.asarray(xh), vg.zeros(N)
        for _ in range(3):
            saxpy[N](1.0, x, y)
        vg.telemetry.flush()
        np.testing.assert_allclose(y.numpy(), 3 * xh)
        del x, y
    assert state.decision_count >= 1 and len(state.decisions) >= 1
    d = state.decisions[-1]
    assert d.op == "saxpy" and d.policy == "performance"
    assert d.reason.startswith(d.choice + ":") and "predicted" in d.reason
    assert state.stats[d.choice].launches >= 1
    assert d in vg.scheduler.decisions()


def test_mask_timings():
    r = "numba: 1.23 ms predicted vs wgpu:0 45.6 µs, numpy 2 s (from 12 past runs)"
    assert mask_timings(r) == "numba: … predicted vs wgpu:0 …, numpy … (from … past runs)"
    assert mask_timings("cuda:0: 1e+03 µs predicted; moves 4096 bytes in first") == (
        "cuda:0: … predicted; moves 4096 bytes in first"
    )


# ---- headless: the text summary -------------------------------------------------------------
def _summary_of_work() -> tuple[Dashboard, str]:
    """The same work from a fresh scheduler: launches, a sum, one op on auto (one candidate)."""
    from vgpu_nb.scheduler import auto

    auto.reset()
    vg.scheduler.clear()
    with vg.dashboard() as d:
        assert d.mode == "text" and d.widget is None and d._thread is None
        _launches(5, 1)
        x = vg.asarray(np.arange(N, dtype=np.float32), device="numba")
        y = vg.zeros(N, device="numba")
        saxpy.launch(N, 1.0, x, y, device="auto")
        del x, y
        text = d.summary()
        assert repr(d) == text
    return d, text


def test_text_summary_is_deterministic(fresh_scheduler, monkeypatch):
    from vgpu_nb.scheduler import auto

    numba = vg.get_device("numba")
    monkeypatch.setattr(auto, "_available", lambda: [numba])
    _summary_of_work()  # (compiles, opens devices: the runs below find the same machine)
    d1, s1 = _summary_of_work()
    d2, s2 = _summary_of_work()
    assert s1 == s2
    lines = s1.splitlines()
    assert lines[0] == "vg.dashboard: default device numba, policy performance"
    budget = vg.memory.human(vg.memory.budgets()["numba"])
    assert any(ln.startswith("  numba: device ") and f" / {budget}, host " in ln for ln in lines)
    # 5 + 1 launches (the one on auto included), 1 sum: their static bytes, not measurements
    assert "    since opened: 6 kernel launches, 1 op; 304 KiB moved, 53248 flop" in lines
    assert lines[-2] == "decisions: 1"
    assert lines[-1] == "  saxpy [performance] → numba (1 launch): numba: … predicted"
    assert " ms" not in s1 and "µs" not in s1  # (no measured numbers)
    # timings=True adds the measured values (they vary run to run)
    assert "GFLOPS" in d2.summary(timings=True) and "GFLOPS" not in d2.summary()
    assert d1.closed and d2.closed


def test_mode_detection(monkeypatch):
    assert dash.detect_mode() == "text"  # (pytest: no IPython kernel)
    monkeypatch.setenv("VGPU_NB_DASHBOARD", "widgets")
    assert dash.detect_mode() == "widgets"
    monkeypatch.setenv("VGPU_NB_DASHBOARD", "text")
    assert dash.detect_mode() == "text"

    class Kernelish:
        kernel = object()

    import IPython

    monkeypatch.delenv("VGPU_NB_DASHBOARD")
    monkeypatch.setattr(IPython, "get_ipython", lambda: Kernelish())
    assert dash.detect_mode() == "widgets"
    monkeypatch.setattr(IPython, "get_ipython", lambda: object())  # (a terminal IPython)
    assert dash.detect_mode() == "text"
    with pytest.raises(ValueError, match="mode must be one of widgets, text"):
        vg.dashboard(mode="html")
    with pytest.raises(ValueError, match="interval"):
        vg.dashboard(mode="text", interval=0)


def test_importing_vgpu_nb_loads_no_widgets_or_pyplot():
    code = (
        "import sys, vgpu_nb as vg; assert callable(vg.dashboard); "
        "bad = [m for m in ('ipywidgets', 'matplotlib', 'IPython') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    assert "dashboard" in vg.__all__


# ---- widgets ------------------------------------------------------------------------------------
def test_widgets_and_chart_update_after_events():
    d = vg.dashboard(mode="widgets", charts="png", interval=None)
    assert d.mode == "widgets" and d._thread is None
    assert "vgpu-dashboard" in d.widget._dom_classes
    assert "vgpu-dashboard-chart" in d.chart._dom_classes and d.chart.format == "png"
    assert d.chart is d.chart_image and d.chart_canvas is None
    png0 = d.render()
    assert png0.startswith(PNG) and d.chart.value == png0 and d.renders == 1
    assert "0 launches" in d.status.value
    _launches(5, 1)
    png1 = d.render()
    assert png1.startswith(PNG) and png1 != png0 and d.chart.value == png1
    assert "5 launches, 1 ops" in d.status.value
    assert "numba" in d.tiers.value and "memory tiers" in d.tiers.value
    assert "none yet" in d.decisions_view.value
    bundle = d._repr_mimebundle_()
    assert bundle["text/plain"] == d.summary()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "since opened: 5 kernel launches, 1 op;" in d.summary()
    d.close()
    assert d.closed and d.widget.comm is None and d.chart.comm is None


def test_a_reused_figure_rescales_to_each_frame():
    """The helper keeps one figure between frames; each frame's timelines still fit their
    axes (a figure reused without re-enabling y autoscaling kept the first frame's limits,
    and the mid-run screenshot showed later points drawn off the top)."""
    from vgpu_nb.notebook.charts import ChartData, chart_figure, draw_charts
    from vgpu_nb.notebook.dashboard import Point

    def frame(scale: float) -> ChartData:
        pts = [(float(t), scale * (t + 1), 2 * scale * (t + 1)) for t in range(5)]
        rec = [Point("saxpy", "numba", 1000, 2000, 1e-3, 0.0)]
        series, recent = {"numba": pts}, {"numba": rec}
        return ChartData(t0=0.0, now=5.0, devices=["numba"], series=series, recent=recent,
                         records=5, pending=0, cals={"numba": None})  # fmt: skip

    fig = chart_figure()
    for scale in (0.01, 100.0, 0.5):
        draw_charts(fig, frame(scale))
        _, top, bottom = fig._vgpu_charts
        for ax, peak in ((top, 5 * scale), (bottom, 10 * scale)):
            lo, hi = ax.get_ylim()
            assert lo == 0 and peak <= hi < 2 * peak, (scale, ax.get_ylabel(), lo, hi)


def test_render_thread_updates_the_chart_within_seconds():
    d = vg.dashboard(mode="widgets", charts="png", interval=0.05)
    assert d._thread is not None and d._thread.is_alive()
    _launches(3, 0)
    deadline = time.monotonic() + 20  # (~1 s on an idle machine; CI shares 2 cores)
    while time.monotonic() < deadline and "3 launches" not in d.status.value:
        time.sleep(0.05)
    assert "3 launches" in d.status.value
    while time.monotonic() < deadline and not bytes(d.chart.value).startswith(PNG):
        time.sleep(0.05)
    assert bytes(d.chart.value).startswith(PNG) and d.renders >= 1
    d.close()
    assert not d._thread.is_alive()


def test_ipympl_chart_after_its_front_end_answers():
    """charts="ipympl": a PNG chart first; once the canvas's front end says "initialized"
    (the message a browser sends, driven here through the canvas's comm handler), the
    canvas (no toolbar, same CSS class) replaces it, and each render puts a frame drawn in
    the helper process into the canvas and pushes it through the widget."""
    pytest.importorskip("ipympl", reason="ipympl is not installed (the notebook extra has it)")
    d = vg.dashboard(mode="widgets", interval=None, charts="ipympl")
    canvas = d.chart_canvas
    assert d.charts == "ipympl" and type(canvas).__module__ == dash.__name__
    assert "vgpu-dashboard-chart" in canvas._dom_classes and not canvas.toolbar_visible
    assert d.chart is d.chart_image and d.chart_box.children == (d.chart_image,)
    assert d.render().startswith(PNG) and bytes(d.chart_image.value).startswith(PNG)
    canvas._handle_message(canvas, {"type": "initialized"}, [])
    assert d.chart is canvas and d.chart_box.children == (canvas,) and d._redraw
    assert d._render() is None and not d._redraw and d.renders == 2
    assert d.render().startswith(PNG) and d.renders == 3  # (by hand: a PNG as well)
    rgba0, shape = canvas._frame
    assert shape == (336, 880) and len(rgba0) == 336 * 880 * 4
    assert canvas._last_buff.tobytes() == rgba0  # (the frame last sent to the front end)
    _launches(5, 1)
    d._render()
    assert canvas._frame[0] != rgba0 and canvas._last_buff.tobytes() == canvas._frame[0]
    canvas.draw()  # (what the front end's redraw request does: the last frame again)
    assert canvas._last_buff.tobytes() == canvas._frame[0]
    d.close()
    assert canvas.comm is None and canvas.toolbar.comm is None and d.chart_box.comm is None


def test_charts_are_drawn_in_a_helper_process():
    from vgpu_nb.notebook import render_worker

    d = vg.dashboard(mode="widgets", interval=None, charts="png")
    _launches(3, 1)
    assert d.render().startswith(PNG) and not d._in_process
    assert render_worker.pid() != os.getpid()
    d.close()


def test_in_process_fallback_draws_the_same_charts(monkeypatch):
    """VGPU_NB_RENDER=thread (or a helper process that fails: here one that cannot answer in
    time) draws in the dashboard's thread, and the status says so when it was a failure."""
    pytest.importorskip("ipympl", reason="ipympl is not installed (the notebook extra has it)")
    from vgpu_nb.notebook import render_worker

    monkeypatch.setenv("VGPU_NB_RENDER", "thread")
    d = vg.dashboard(mode="widgets", interval=None, charts="ipympl")
    assert d._in_process
    canvas = d.chart_canvas
    canvas._handle_message(canvas, {"type": "initialized"}, [])
    _launches(5, 1)
    d._render()
    assert canvas._frame is None  # (drawn on the canvas's own figure)
    gids = {ln.get_gid() for ax in canvas.figure.axes for ln in ax.get_lines()}
    assert {"gflops:numba", "gbps:numba"} <= gids
    d.close()
    monkeypatch.delenv("VGPU_NB_RENDER")
    monkeypatch.setattr(render_worker, "TIMEOUT_S", 1e-6)
    e = vg.dashboard(mode="widgets", interval=None, charts="png")
    assert e.render().startswith(PNG) and e._in_process
    assert "charts drawn in the kernel" in e.status.value and "TimeoutError" in e.status.value
    e.close()


def test_charts_choice(monkeypatch):
    has_ipympl = dash.importlib.util.find_spec("ipympl") is not None
    assert dash.resolve_charts("png") == "png"
    assert dash.resolve_charts(None) == ("ipympl" if has_ipympl else "png")
    monkeypatch.setenv("VGPU_NB_CHARTS", "png")
    assert dash.resolve_charts(None) == "png" and dash.resolve_charts("auto") != "auto"
    with pytest.raises(ValueError, match="charts must be one of auto, png, ipympl"):
        dash.resolve_charts("svg")
    d = vg.dashboard(mode="text", charts="svg")  # (text mode draws no charts: not checked)
    assert d.charts == "none"
    with pytest.raises(ValueError, match="charts must be one of"):
        vg.dashboard(mode="widgets", charts="svg")


def test_after_cell_hook_ends_an_open_run():
    d = vg.dashboard(mode="widgets", interval=None)
    x = vg.asarray(np.arange(N, dtype=np.float32), device="numba")
    y = vg.zeros(N, device="numba")
    saxpy[N](2.0, x, y)
    saxpy[N](2.0, x, y)  # (a run in progress: not on the bus yet)
    assert "numba" not in d.state.stats
    d._after_cell(None)
    assert d.state.stats["numba"].launches == 2
    del x, y


def test_close_unsubscribes_and_stops():
    n = len(BUS._subs)
    d = vg.dashboard(mode="widgets", interval=0.05)
    sub = d._sub
    assert sub in BUS._subs and len(BUS._subs) == n + 1 and d in dash._OPEN
    d.close()
    assert sub not in BUS._subs and len(BUS._subs) == n and d._sub is None
    assert not d._thread.is_alive() and d not in dash._OPEN
    d.close()  # (idempotent)
    v = d.state.version
    _launches(1, 1)
    assert d.state.version == v  # (no longer listening) ...
    assert "decisions: none" in d.summary()  # ... and still readable


def test_closing_the_widget_closes_the_dashboard():
    d = vg.dashboard(mode="widgets", interval=0.05)
    sub = d._sub
    d.widget.close()  # (what the front end's "close" does)
    assert d.closed and sub not in BUS._subs and not d._thread.is_alive()
    e = vg.dashboard(mode="widgets", interval=None)
    e.close_button.click()
    assert e.closed and e.device_dropdown.comm is None


def test_two_dashboards_at_once():
    with vg.dashboard(mode="widgets", interval=None) as a, vg.dashboard(mode="text") as b:
        assert a._sub in BUS._subs and b._sub in BUS._subs
        _launches(2, 1)
        assert a.state.stats["numba"].launches == b.state.stats["numba"].launches == 2
        a.close()
        assert a._sub is None and b._sub in BUS._subs
        _launches(3, 0)
        assert a.state.stats["numba"].launches == 2
        assert b.state.stats["numba"].launches == 5
    assert b.closed


def test_dropdowns_set_the_default_device_and_policy(monkeypatch):
    vg.use("numba")
    d = vg.dashboard(mode="widgets", interval=None)
    assert d.device_dropdown.value == "numba" and "auto" in d.device_dropdown.options
    assert "numpy" in d.device_dropdown.options
    assert d.policy_dropdown.value == vg.scheduler.policy == "performance"
    d.device_dropdown.value = "numpy"
    assert vg.default_device().name == "numpy"
    d.device_dropdown.value = "auto"
    assert auto_requested() and vg.default_device().name == "numba"
    d.policy_dropdown.value = "locality"
    assert vg.scheduler.policy == "locality"
    # vg.use / the policy set elsewhere: the dropdowns follow at the next render
    vg.use("numba")
    vg.scheduler.policy = "cpu_only"
    d.render()
    assert d.device_dropdown.value == "numba" and d.policy_dropdown.value == "cpu_only"
    # a device that fails: the dropdown goes back and says why

    def refuse(spec):
        raise vg.DeviceUnavailable(f"device {spec!r} is not available: test")

    monkeypatch.setattr(sys.modules["vgpu_nb.devices"], "use", refuse)
    d.device_dropdown.value = "numpy"
    assert d.device_dropdown.value == "numba" and vg.default_device().name == "numba"
    assert "failed" in d.status.value and "not available: test" in d.status.value
    d.close()


def test_cpu_emulated_adapters_are_named_as_such():
    """On a GPU-less host (CI, Binder) the WebGPU adapters run on Mesa's llvmpipe: the
    dashboard says so next to them, as vg.devices() does."""
    emulated = [
        n for n, r in vg.devices().iterrows() if r.available and r.kind == "cpu-emulated gpu"
    ]
    if not emulated:
        pytest.skip("no CPU-emulated WebGPU adapter on this machine")
    name = emulated[0]
    keep = vg.zeros(8, device=name)
    d = vg.dashboard(mode="text", interval=None)
    try:
        d.state.refresh_tiers()
        text = d.summary()
        assert f"{name}: (CPU-emulated WebGPU adapter, no GPU)" in text
        from vgpu_nb.notebook.dashboard import tiers_html

        assert "CPU-emulated WebGPU adapter" in tiers_html(d.state.snapshot())
    finally:
        d.close()
    del keep
