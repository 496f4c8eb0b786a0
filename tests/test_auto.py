"""``device="auto"`` (issue 5): candidates, decisions, moving operands, history, policies."""

from __future__ import annotations

import numpy as np
import pytest

import vgpu_nb as vg
from vgpu_nb.array import migrate
from vgpu_nb.devices import AUTO, HOME, auto_requested
from vgpu_nb.scheduler import auto

# (scheduler: run on the GPU machine too, where cuda is a candidate)
pytestmark = [pytest.mark.scheduler, pytest.mark.usefixtures("fresh_scheduler")]


@vg.kernel
def saxpy(a: vg.f32, x: vg.f32[:], y: vg.f32[:]):
    i = vg.tid()
    y[i] = a * x[i] + y[i]


@vg.kernel
def axpy64(a: vg.f64, x: vg.f64[:], y: vg.f64[:]):
    i = vg.tid()
    y[i] = a * x[i] + y[i]


@vg.reduction(identity=0.0)
def sumsq(v: vg.f32) -> vg.f32:
    return v * v


def _available() -> list[vg.Device]:
    return auto._available()


def test_auto_launch_is_correct_and_logged(rng):
    xh = rng.standard_normal(1000).astype(np.float32)
    yh = rng.standard_normal(1000).astype(np.float32)
    x, y = vg.asarray(xh), vg.asarray(yh)
    rec = saxpy.launch(1000, 2.0, x, y, device="auto")
    np.testing.assert_allclose(y.numpy(), 2 * xh + yh, rtol=1e-6)
    for _ in range(3):  # (a first run is a warm-up, never a measurement)
        rec = saxpy.launch(1000, 0.0, x, y, device="auto")
    df = vg.scheduler.log()
    assert len(df) >= 1
    d = df.iloc[-1]
    names = {dev.name for dev in _available()}
    assert d["choice"] in names and d["choice"] == rec.device == x.device.name == y.device.name
    assert d["reason"].startswith(d["choice"] + ":") and "predicted" in d["reason"]
    assert d["measured"] >= 1 and d["actual_ms"] > 0


def test_one_candidate_is_that_candidate(monkeypatch):
    numba = vg.get_device("numba")
    monkeypatch.setattr(auto, "_available", lambda: [numba])
    x = vg.ones(64, device="numba")
    y = vg.zeros(64, device="numba")
    saxpy[64](3.0, x, y, device="auto")
    d = vg.scheduler.log().iloc[-1]
    assert d["choice"] == "numba" and " vs " not in d["reason"]
    assert list(y.numpy()) == [3.0] * 64


def test_never_an_unsupporting_or_numpy_device():
    """f64 kernels skip WebGPU adapters without shader-f64; kernels never go to numpy."""
    x = vg.asarray(np.arange(256, dtype=np.float64))
    y = vg.zeros(256, dtype=vg.f64)
    axpy64[256](2.0, x, y, device="auto")
    d = vg.scheduler.log.__globals__["_LOG"][-1]
    cands = {p.device for p in d.candidates}
    for dev in _available():
        refuses = dev.kernel_unsupported(axpy64.ir) is not None
        if refuses or dev.backend == "numpy":
            assert dev.name not in cands, dev.name
        else:
            assert dev.name in cands, dev.name
    np.testing.assert_array_equal(y.numpy(), 2.0 * np.arange(256))


def test_builtins_may_use_the_numpy_device():
    x = vg.asarray(np.arange(10_000, dtype=np.float32))
    with vg.device("auto"):
        s = vg.sum(x)
    assert float(s) == float(np.arange(10_000, dtype=np.float32).sum())
    d = vg.scheduler.log.__globals__["_LOG"][-1]
    assert "numpy" in {p.device for p in d.candidates}


def test_use_auto_and_with_block():
    assert not auto_requested()
    with vg.device("auto") as home:
        assert auto_requested() and home.name == HOME
        x = vg.ones(100)  # new arrays: host memory
        assert x.device.name == HOME
        vg.sum(x)
    assert not auto_requested() and AUTO[0] == 0
    n = len(vg.scheduler.log())
    vg.sum(x)  # outside the block: not scheduled
    assert len(vg.scheduler.log()) == n
    vg.use("auto")
    assert AUTO[0] == 1
    float(vg.mean(x))
    assert len(vg.scheduler.log()) == n + 1
    vg.use("numba")
    assert AUTO[0] == 0


def test_decisions_are_reused_and_counted():
    x, y = vg.ones(4096), vg.zeros(4096)
    for _ in range(40):
        saxpy[4096](1.0, x, y, device="auto")
    log = vg.scheduler.log()
    assert log["launches"].sum() == 40
    assert len(log) <= 8  # decisions are reused: far fewer than launches
    assert log["measured"].sum() >= auto.HISTORY.trust_after
    assert float(y.numpy()[0]) == 40.0


def test_history_takes_over_from_the_roofline(monkeypatch):
    numba = vg.get_device("numba")
    monkeypatch.setattr(auto, "_available", lambda: [numba])  # (x must not move meanwhile)
    x, y = vg.ones(2048), vg.zeros(2048)
    for _ in range(3 * auto.HISTORY.trust_after):
        saxpy[2048](1.0, x, y, device="auto")
    auto.decide(
        auto.Work("saxpy", (saxpy, 2048 .bit_length()), lambda: (4096.0, 24576.0), [x, y],
                  lambda d: d.kernel_unsupported(saxpy.ir), language=True),
        "performance",
    )  # fmt: skip
    d = auto.decide(
        auto.Work("saxpy", (saxpy, 2048 .bit_length()), lambda: (4096.0, 24576.0), [x, y],
                  lambda d: d.kernel_unsupported(saxpy.ir), language=True),
        "performance",
    ).decision  # fmt: skip
    chosen = next(p for p in d.candidates if p.device == x.device.name)
    assert chosen.source == "history" and chosen.samples >= auto.HISTORY.trust_after


def test_an_array_held_from_numpy_stays_put():
    x, y = vg.ones(512), vg.zeros(512)
    view = x.numpy()  # numba: the memory itself; moving x would orphan this view
    saxpy[512](1.0, x, y, device="auto")
    assert x.device.name == "numba"
    d = vg.scheduler.log().iloc[-1]
    if d["choice"] == "numba" and len(vg.scheduler.log()) == 1:
        assert "must stay on numba" in d["reason"] or set(_available()) == {x.device}
    view[0] = 5.0
    assert float(x.numpy()[0]) == 5.0


def test_operands_on_different_devices_are_brought_together():
    other = next((d for d in _available() if d.backend == "wgpu"), None)
    if other is None:
        pytest.skip("needs a WebGPU adapter as a second device")
    x = vg.asarray(np.arange(300, dtype=np.float32), device="numba")
    y = vg.asarray(np.ones(300, dtype=np.float32), device=other)
    saxpy.launch(300, 2.0, x, y, device="auto")
    assert x.device is y.device
    np.testing.assert_array_equal(y.numpy(), 2 * np.arange(300, dtype=np.float32) + 1)


def test_migrate_moves_every_view():
    other = next((d for d in _available() if d.backend == "wgpu"), None)
    if other is None:
        pytest.skip("needs a WebGPU adapter as a second device")
    x = vg.asarray(np.arange(12, dtype=np.float32))
    v = x.reshape(3, 4)
    migrate(x, other)
    assert x.device is other and v.device is other and x._st is v._st
    np.testing.assert_array_equal(v.numpy(), np.arange(12, dtype=np.float32).reshape(3, 4))
    saxpy[12](1.0, vg.ones(12, device=other), x)
    np.testing.assert_array_equal(v.numpy().ravel(), np.arange(12, dtype=np.float32) + 1)


def test_reductions_and_matmul_on_auto(rng):
    xh = rng.standard_normal(5000).astype(np.float32)
    a = rng.standard_normal((40, 30)).astype(np.float32)
    b = rng.standard_normal((30, 20)).astype(np.float32)
    with vg.device("auto"):
        x = vg.asarray(xh)
        np.testing.assert_allclose(float(sumsq(x)), float((xh.astype(np.float64) ** 2).sum()),
                                   rtol=1e-4)  # fmt: skip
        np.testing.assert_allclose(float(vg.dot(x, x)), float(sumsq(x)), rtol=1e-4)
        c = vg.matmul(vg.asarray(a), vg.asarray(b))
        np.testing.assert_allclose(c.numpy(), a @ b, rtol=1e-4, atol=1e-4)
    ops = set(vg.scheduler.log()["op"])
    assert {"sumsq", "vg.dot", "vg.matmul"} <= ops


def test_cpu_only_and_gpu_only():
    x, y = vg.ones(256), vg.zeros(256)
    with vg.scheduler.policy("cpu_only"):
        saxpy[256](1.0, x, y, device="auto")
    d = vg.scheduler.log.__globals__["_LOG"][-1]
    assert d.policy == "cpu_only" and vg.get_device(d.choice).info.kind != "gpu"
    if any(dev.info.kind == "gpu" for dev in _available()):
        with vg.scheduler.policy("gpu_only"):
            saxpy[256](1.0, x, y, device="auto")
        assert vg.get_device(vg.scheduler.log().iloc[-1]["choice"]).info.kind == "gpu"
    else:
        with vg.scheduler.policy("gpu_only"), pytest.raises(vg.DeviceUnavailable, match="gpu"):
            saxpy[256](1.0, x, y, device="auto")


def test_explain_names_every_candidate():
    x, y = vg.ones(1000), vg.zeros(1000)
    saxpy[1000](1.0, x, y, device="auto")
    d = vg.scheduler.log.__globals__["_LOG"][-1]
    text = vg.scheduler.explain(d)
    for p in d.candidates:
        assert p.device in text
    assert "roofline" in text or "history" in text


# ---- on the lent GPU machine (scripts/gpu-check.sh) -----------------------------------------
def _cuda() -> vg.Device:
    try:
        return vg.get_device("cuda")
    except vg.VgpuError as exc:
        pytest.skip(f"cuda unavailable: {exc}")


@pytest.mark.gpu
def test_big_work_goes_to_the_gpu_and_its_data_stays_there():
    cuda = _cuda()
    n = 1 << 26
    x, y = vg.ones(n), vg.zeros(n)  # in host memory
    for _ in range(12):  # the first launches stay on the host; repeated, the move pays
        saxpy[n](1.0, x, y, device="auto")
    assert x.device is cuda and y.device is cuda
    assert float(y.numpy()[-1]) == 12.0
    log = vg.scheduler.log()
    assert log.iloc[-1]["choice"] == "cuda:0" and "already resident" in log.iloc[-1]["reason"]


@pytest.mark.gpu
def test_tiny_work_goes_where_it_is_predicted_fastest():
    """Tiny launches on host data: whichever device wins, it is the one with the lowest
    prediction (latency and moving the data included), and the result is right."""
    _cuda()
    x, y = vg.ones(64), vg.zeros(64)
    saxpy[64](1.0, x, y, device="auto")
    d = vg.scheduler.decisions()[0]
    assert d.choice == min(d.candidates, key=lambda p: p.seconds).device or (
        d.policy == "performance" and "already resident" in d.reason
    )
    assert "cuda:0" in {p.device for p in d.candidates} and float(y.numpy()[0]) == 1.0


@pytest.mark.gpu
def test_split_over_cpu_and_gpu_is_exact(rng):
    cuda = _cuda()
    xh = rng.integers(-(2**20), 2**20, (1 << 22) + 7).astype(np.int32)
    x = vg.asarray(xh)
    assert int(vg.sum(x, split=True)) == int(xh.astype(np.int64).sum())
    d = vg.scheduler.log.__globals__["_LOG"][-1]
    assert cuda.name in d.shares and len(d.shares) >= 2


# ---- regressions (review of issue 5) ----------------------------------------------------------
def test_auto_calibrates_on_first_use_without_recursing(tmp_path, monkeypatch):
    from vgpu_nb.scheduler import calibration as cal

    monkeypatch.setattr(cal, "_cache_file", lambda: str(tmp_path / "calibration.json"))
    monkeypatch.setattr(cal, "_MEMO", None)
    monkeypatch.setattr(auto, "_available", lambda: [vg.get_device("numba")])
    with vg.device("auto"):
        assert float(vg.sum(vg.ones(16))) == 16.0  # (calibrates numba first, not under auto)
    assert cal.cached("numba") is not None


def test_a_reused_decision_never_moves_an_array_held_from_numpy():
    a = vg.asarray(np.ones(4096, np.float32), device="numpy")
    with vg.device("auto"):
        vg.sum(a)  # decided: numpy → wherever sum is predicted fastest
        where = a.device
        if where.name == "numpy":
            pytest.skip("sum stayed on the numpy device here: nothing would move")
        c = vg.asarray(np.ones(4096, np.float32), device="numpy")
        view = c.numpy()  # the memory itself: c must not move now
        vg.sum(c)
        view[:] = 2.0
        assert c.device.name == "numpy" and float(vg.sum(c)) == 8192.0
