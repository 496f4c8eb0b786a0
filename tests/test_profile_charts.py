"""vg.profile() charts and roofline share, vg.timeit, and the bus's routing (issue 5, point
6). Calibrations are synthetic, injected into the calibration memo and restored after."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from matplotlib.figure import Figure

import vgpu_nb as vg
from vgpu_nb.kernel import ir
from vgpu_nb.scheduler import calibration as cal
from vgpu_nb.scheduler.calibration import Calibration
from vgpu_nb.telemetry import BUS, TimeitSummary, roofline_pct, timeit
from vgpu_nb.telemetry.profile import COMPACT

CPU = Calibration("numba", launch_us=3.0, enqueue_us=3.0, read_gbps=20.0, copy_gbps=20.0,
                  gflops=100.0)  # fmt: skip
SLOW = Calibration("numpy", launch_us=50.0, enqueue_us=50.0, read_gbps=2.0, copy_gbps=1.0,
                   gflops=0.5)  # fmt: skip


@vg.kernel
def saxpy(a: vg.f32, x: vg.f32[:], y: vg.f32[:]):
    i = vg.tid()
    y[i] = a * x[i] + y[i]


@vg.kernel
def copy(x: vg.f32[:], y: vg.f32[:]):
    i = vg.tid()
    y[i] = x[i]


@pytest.fixture
def calibrated(monkeypatch):
    """numba calibrated (synthetic), every other device not; the memo is restored after."""
    cals = {"numba": CPU}
    monkeypatch.setattr(cal, "_MEMO", cals)
    return cals


def _workload(n: int = 4096) -> vg.Profile:
    """saxpy ×3 and a copy on numba (calibrated), a sum on numpy (not calibrated)."""
    x = vg.asarray(np.arange(n, dtype=np.float32), device="numba")
    y = vg.zeros(n, device="numba")
    xp = vg.asarray(np.ones(n, np.float32), device="numpy")
    with vg.profile() as p:
        for _ in range(3):
            saxpy[n](2.0, x, y)
        copy[n](x, y)
        vg.sum(xp)
    return p


def _expected_pct(r, c: Calibration | None) -> float:
    """The issue's definition, computed by hand: 100 · GFLOPS / min(peak, GB/s · AI);
    a record without flops is judged on bandwidth alone."""
    if c is None or r.bytes == 0:
        return math.nan
    if r.flops == 0:
        return 100 * (r.bytes / r.seconds / 1e9) / c.read_gbps
    ai = r.flops / r.bytes
    return 100 * (r.flops / r.seconds / 1e9) / min(c.gflops, c.read_gbps * ai)


# ---- table -------------------------------------------------------------------------------------
def test_roofline_pct_matches_hand_computation(calibrated):
    p = _workload()
    t = p.table()
    assert list(t.columns) == [*COMPACT, "roofline_%"]  # compact columns kept, in order
    # launches in a row are merged into runs (a first one, compiling, is recorded alone)
    assert len(t) == len(p.records) and len(t) <= 4
    assert sum(r.count for r in p.records if r.op == "saxpy") == 3
    for r, got in zip(p.records, t["roofline_%"], strict=True):
        want = _expected_pct(r, calibrated.get(r.device))
        if math.isnan(want):
            assert math.isnan(got), r
        else:
            assert got == pytest.approx(want, rel=1e-9), r
    on_numba = t["device"] == "numba"
    assert t["roofline_%"][on_numba].notna().all()  # numba: calibrated
    assert t["roofline_%"][~on_numba].isna().all()  # numpy: not calibrated


def test_roofline_pct_limits():
    assert math.isnan(roofline_pct(100, 10, 1.0, None))  # no calibration
    assert math.isnan(roofline_pct(0, 10, 1.0, CPU))  # no bytes
    assert math.isnan(roofline_pct(100, 10, 0.0, CPU))  # no time
    # compute-bound: 1e11 flop over 1e9 bytes in 2 s → 50 GFLOPS of a 100 GFLOPS roof
    assert roofline_pct(1e9, 1e11, 2.0, CPU) == pytest.approx(50.0)
    # memory-bound: 1e9 flop over 1e10 bytes in 1 s → 10 GB/s of 20 → 50 %
    assert roofline_pct(1e10, 1e9, 1.0, CPU) == pytest.approx(50.0)


def test_to_pandas_is_every_field_and_report_is_unchanged(calibrated):
    p = _workload()
    full = p.to_pandas()
    assert list(full.columns[: len(COMPACT)]) == COMPACT
    assert {"t_start", "compile_ms", "cache_hit", "estimated"} <= set(full.columns)
    assert full.columns[-1] == "roofline_%" and len(full) == len(p.records)
    assert full["roofline_%"].equals(p.table()["roofline_%"])
    assert full["t_start"].tolist() == [r.t_start for r in p.records]
    # the printed view does not depend on whether the machine is calibrated
    assert "roofline_%" not in p.report().columns


# ---- charts ------------------------------------------------------------------------------------
def _by_gid(fig: Figure, prefix: str) -> dict[str, object]:
    return {
        a.get_gid().split(":", 1)[1]: a
        for ax in fig.axes
        for a in (*ax.lines, *ax.collections)
        if (a.get_gid() or "").startswith(prefix)
    }


def test_roofline_chart_artists(calibrated):
    p = _workload()
    fig = p.roofline()
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    assert fig.canvas.manager is None  # not a pyplot figure: no global state touched
    roofs = _by_gid(fig, "roof:")
    assert set(roofs) == {"numba"}  # one roof per calibrated device present
    assert roofs["numba"].get_label() == "numba (calibrated)"
    x, y = roofs["numba"].get_data()
    assert np.allclose(y, np.minimum(CPU.gflops, CPU.read_gbps * x))
    points = _by_gid(fig, "points:")
    placeable = [r for r in p.records if r.bytes and r.flops]
    for dev in {r.device for r in placeable}:
        want = sorted((r.flops / r.bytes, r.gflops) for r in placeable if r.device == dev)
        got = sorted(map(tuple, np.asarray(points[dev].get_offsets())))
        assert np.allclose(got, want)
    ax = fig.axes[0]
    assert ax.get_xscale() == ax.get_yscale() == "log"
    title = ax.get_title()
    assert "1 without flops" in title  # the copy kernel
    assert "numpy" in title and "run vg.calibrate() for roofs" in title
    fig.savefig(io.BytesIO(), format="png")  # renders headless


def test_one_roof_per_calibrated_device(monkeypatch):
    monkeypatch.setattr(cal, "_MEMO", {"numba": CPU, "numpy": SLOW})
    fig = _workload().roofline()
    assert set(_by_gid(fig, "roof:")) == {"numba", "numpy"}
    assert "vg.calibrate()" not in fig.axes[0].get_title()


def test_roofline_on_given_axes(calibrated):
    fig = Figure()
    ax = fig.add_subplot()
    assert _workload().roofline(ax=ax) is fig and len(fig.axes) == 1


def test_timeline_and_plot(calibrated):
    p = _workload()
    fig = p.timeline()
    top, bottom = fig.axes
    assert top.get_ylabel() == "GFLOPS" and bottom.get_ylabel() == "GB/s"
    lines = _by_gid(fig, "gflops:")
    assert set(lines) == {"numba", "numpy"}
    xs = np.concatenate([np.asarray(line.get_xdata()) for line in lines.values()])
    assert len(xs) == len(p.records) and min(xs) == 0.0  # seconds since the first record
    assert set(_by_gid(fig, "gbps:")) == {"numba", "numpy"}

    both = p.plot()
    assert len(both.axes) == 3
    assert set(_by_gid(both, "roof:")) == {"numba"} and set(_by_gid(both, "gbps:")) == {
        "numba",
        "numpy",
    }
    both.savefig(io.BytesIO(), format="png")


def test_charts_of_an_empty_profile():
    with vg.profile() as p:
        pass
    for fig in (p.roofline(), p.timeline(), p.plot()):
        assert not _by_gid(fig, "roof:") and not _by_gid(fig, "points:")
        fig.savefig(io.BytesIO(), format="png")
    assert p.table().empty and list(p.table().columns) == [*COMPACT, "roofline_%"]


# ---- timeit ------------------------------------------------------------------------------------
def test_timeit_on_numba(calibrated, monkeypatch):
    n = 1 << 12
    dev = vg.get_device("numba")
    x = vg.asarray(np.ones(n, np.float32), device=dev)
    y = vg.zeros(n, device=dev)
    syncs = []
    monkeypatch.setattr(dev, "sync", lambda: syncs.append(1))

    r = timeit(lambda: saxpy[n](2.0, x, y), number=4, repeat=3)
    assert isinstance(r, TimeitSummary)
    assert r.loops == 4 and r.repeat == 3 and len(r.all_runs) == 3
    # the timed calls only (not warm-up); repeated launches merge into runs (count)
    assert sum(rec.count for rec in r.records) == 4 * 3
    c = ir.cost(saxpy.ir)
    assert r.bytes == c.bytes * n and r.flops == c.flops * n  # per call
    assert r.devices == {"numba"}
    assert len(syncs) >= 2 * 3  # before and after every run
    assert r.best <= r.average and r.stdev >= 0
    assert r.gbps == pytest.approx(r.bytes / r.average / 1e9)
    assert r.roofline_device == "numba"
    assert r.roofline_pct == pytest.approx(roofline_pct(r.bytes, r.flops, r.average, CPU))
    text = repr(r)
    assert "per loop" in text and "3 runs, 4 loops each" in text
    assert "GB/s" in text and "% of roofline on numba" in text
    assert "<table" in r._repr_html_()
    df = r.to_pandas()
    assert len(df) == 3 and (df["loops"] == 4).all()
    assert df["seconds"].tolist() == r.all_runs


def test_timeit_picks_loops_and_omits_unknowns(monkeypatch):
    monkeypatch.setattr(cal, "_MEMO", {})  # nothing calibrated
    n = 64
    x = vg.asarray(np.ones(n, np.float32), device="numba")
    y = vg.zeros(n, device="numba")
    r = timeit(lambda: saxpy[n](2.0, x, y), repeat=2)
    assert r.loops >= 1 and r.all_runs[0] > 0
    assert sum(rec.count for rec in r.records) == 2 * r.loops
    assert r.roofline_pct is None and "roofline" not in repr(r)

    idle = timeit(lambda: None, number=3, repeat=2, warmup=0)
    assert idle.records == [] and idle.bytes == 0 and idle.gbps is None
    assert "GB/s" not in repr(idle) and repr(idle).endswith("3 loops each)")


def test_timeit_rejects_bad_arguments():
    with pytest.raises(ValueError, match="repeat"):
        timeit(lambda: None, repeat=0)
    with pytest.raises(ValueError, match="number"):
        timeit(lambda: None, number=0)


# ---- the bus -----------------------------------------------------------------------------------
class _Ev:
    def __init__(self, kind: str):
        self.kind = kind


def test_bus_routes_follow_subscriptions():
    assert not BUS.active
    ops, alls = [], []
    a = BUS.subscribe(ops.append, kinds=("op",))
    assert BUS.active
    BUS.emit(_Ev("op"))
    BUS.emit(_Ev("spill"))  # (routes for both kinds are now memoised)
    b = BUS.subscribe(alls.append)  # a new subscriber sees the next events of every kind
    BUS.emit(_Ev("op"))
    BUS.emit(_Ev("spill"))
    a.close()
    BUS.emit(_Ev("op"))
    b.close()
    BUS.emit(_Ev("op"))
    assert [e.kind for e in ops] == ["op", "op"]
    assert [e.kind for e in alls] == ["op", "spill", "op"]
    assert not BUS.active


# ---- runs: repeated launches merged into one record -------------------------------------------
def test_repeated_launches_become_runs_in_order():
    n = 256
    x = vg.asarray(np.ones(n, np.float32), device="numba")
    y = vg.zeros(n, device="numba")
    saxpy[n](1.0, x, y)  # (compiled before listening)
    with vg.profile() as p:
        for _ in range(100):
            saxpy[n](1.0, x, y)
        vg.sum(y)  # another op ends the run, and comes after it
        for _ in range(7):
            saxpy[n](1.0, x, y)
    ops = [(r.op, getattr(r, "count", 1)) for r in p.records]
    assert ops == [("saxpy", 100), ("sum", 1), ("saxpy", 7)]
    c = ir.cost(saxpy.ir)
    run = p.records[0]
    assert run.bytes == 100 * c.bytes * n and run.flops == 100 * c.flops * n
    assert run.host_s > 0 and run.shape == (n,)
    assert float(y.numpy()[0]) == 108.0


def _clocked_devices() -> list[object]:
    """Available devices with a device clock (CUDA events, WebGPU timestamps); real GPUs
    marked ``gpu`` (run by scripts/gpu-check.sh), CPU-emulated ones run everywhere."""
    from vgpu_nb.devices import all_infos

    out = [
        pytest.param(i.name, id=i.name, marks=[pytest.mark.gpu] if i.kind == "gpu" else [])
        for i in all_infos()
        if i.available and i.backend in ("cuda", "wgpu")
    ]
    return out or [pytest.param(None, marks=pytest.mark.skip(reason="no GPU or WebGPU here"))]


@pytest.mark.parametrize("name", _clocked_devices())
def test_repeated_gpu_launches_become_a_run_with_device_time(name):
    """GPU launches merge into runs too: one record, ``count`` launches, device time from
    the sampled launches' timers (a timer on every launch cost more than a tiny launch:
    +150 % on an H200)."""
    from vgpu_nb.telemetry import runs

    dev = vg.get_device(name)
    if dev.start_timer() is None:
        pytest.skip(f"{name} has no device timer (timestamp-query)")
    x = vg.asarray(np.ones(1024, np.float32), device=dev)
    y = vg.zeros(1024, device=dev)
    saxpy[1024](1.0, x, y)  # (compiles)
    n = runs.CLOCK_EVERY + 3
    with vg.profile() as p:
        for _ in range(n):
            saxpy[1024](1.0, x, y)
    assert float(y.numpy()[0]) == n + 1
    recs = [r for r in p.records if r.op == "saxpy"]
    assert sum(r.count for r in recs) == n and len(recs) < n
    assert all(r.device_s is not None and 0 < r.device_s < r.count * 0.05 for r in recs)


def test_a_long_run_is_cut_so_live_charts_move(monkeypatch):
    import importlib

    from vgpu_nb.telemetry import runs

    api = importlib.import_module("vgpu_nb.kernel.api")  # (vg.kernel is the decorator)

    # (the count cut only: on a loaded machine 4104 launches can outlast MAX_SPAN_S, whose
    # cut would leave the last launches in a run still open)
    monkeypatch.setattr(api, "_RUN_SPAN", 1e9)

    n = 64
    x = vg.asarray(np.ones(n, np.float32), device="numba")
    y = vg.zeros(n, device="numba")
    saxpy[n](1.0, x, y)
    seen = []
    with vg.telemetry.BUS.subscribe(seen.append, kinds=("op",)):
        for _ in range(runs.MAX_COUNT + 8):
            saxpy[n](1.0, x, y)
        assert sum(r.count for r in seen) >= runs.MAX_COUNT  # emitted while still launching
    assert sum(r.count for r in seen) == runs.MAX_COUNT + 8  # the rest when it unsubscribed


def test_interleaved_runs_count_every_launch_exactly():
    """A run counts its launches down between timed ones: runs cut at any point (another
    launch, another domain, a flush) still add up to every launch, each to its own record."""
    from vgpu_nb.telemetry import runs

    x = vg.asarray(np.ones(256, np.float32), device="numba")
    y = vg.zeros(256, device="numba")
    xs, ys = vg.asarray(np.ones(128, np.float32), device="numba"), vg.zeros(128, device="numba")
    saxpy[256](1.0, x, y)
    saxpy[128](1.0, xs, ys)
    plan = [(256, 37), (128, 5), (256, runs.TIME_EVERY * 3 + 1), (128, 1), (256, 2)]
    with vg.profile() as p:
        for n, times in plan:
            a, b = (x, y) if n == 256 else (xs, ys)
            for _ in range(times):
                saxpy[n](1.0, a, b)
            if times == 5:
                vg.telemetry.flush()  # (a dashboard's flush, mid-way)
    got = {n: sum(r.count for r in p.records if r.op == "saxpy" and r.shape == (n,))
           for n in (256, 128)}  # fmt: skip
    assert got == {256: 37 + runs.TIME_EVERY * 3 + 1 + 2, 128: 6}
    assert float(y.numpy()[200]) == 1 + 37 + runs.TIME_EVERY * 3 + 1 + 2
    assert float(ys.numpy()[100]) == 1 + 6
