"""The cost model (issue 5, step 2): roofline predictions from synthetic calibrations and
the robust per-(kernel, device) history correction."""

from __future__ import annotations

import pytest

from vgpu_nb.scheduler.calibration import Calibration
from vgpu_nb.scheduler.cost import History, Prediction, roofline

GPU = Calibration("cuda:0", launch_us=10.0, enqueue_us=5.0, read_gbps=2000.0, copy_gbps=1800.0,
                  gflops=50_000.0, h2d_pinned_gbps=50.0, d2h_pinned_gbps=50.0)  # fmt: skip
CPU = Calibration("numba", launch_us=3.0, enqueue_us=3.0, read_gbps=20.0, copy_gbps=20.0,
                  gflops=100.0)  # fmt: skip


def test_roofline_parts():
    p = roofline(GPU, flops=2e9, nbytes=8e9, h2d_bytes=1e9)
    assert p.parts == pytest.approx(
        {"latency": 10e-6, "compute": 2e9 / 50e12, "memory": 8e9 / 2e12, "transfer": 1e9 / 50e9}
    )
    assert p.seconds == pytest.approx(10e-6 + 8e9 / 2e12 + 1e9 / 50e9)
    assert p.source == "roofline" and p.device == "cuda:0"


@pytest.mark.parametrize(
    ("n", "winner"),
    [(100, "numba"), (10**4, "numba"), (10**8, "cuda:0")],  # saxpy: 2 flops, 12 bytes
)
def test_saxpy_decisions_with_data_on_the_host(n, winner):
    """Tiny launches stay on the CPU (launch latency), big ones go to the GPU even when
    the data must cross the link first."""
    cpu = roofline(CPU, 2 * n, 12 * n)
    gpu = roofline(GPU, 2 * n, 12 * n, h2d_bytes=8 * n)
    assert min((cpu, gpu), key=lambda p: p.seconds).device == winner


def test_compute_bound_kernel_uses_the_flops_roof():
    p = roofline(CPU, flops=1e12, nbytes=1e6)
    assert p.parts["compute"] == pytest.approx(10.0) and p.seconds == pytest.approx(10.0, 1e-6)


def test_history_converges_on_a_slower_backend():
    h = History(window=16, trust_after=5)
    pred = roofline(CPU, 0, 1e9)  # 50 ms predicted
    for _ in range(4):
        h.record("k", "numba", pred.seconds, 3 * pred.seconds)
        assert h.correct("k", pred).source == "roofline"  # not trusted yet
    h.record("k", "numba", pred.seconds, 3 * pred.seconds)
    got = h.correct("k", pred)
    assert got.source == "history" and got.samples == 5
    assert got.seconds == pytest.approx(3 * pred.seconds)


def test_history_ignores_one_100x_outlier():
    h = History(window=16, trust_after=5)
    pred = Prediction("numba", 1e-3, "roofline")
    for t in [2e-3] * 8 + [0.2] + [2e-3] * 3:
        h.record("k", "numba", pred.seconds, t)
    assert h.correct("k", pred).seconds == pytest.approx(2e-3)


def test_history_follows_a_slowdown_within_three_quarters_and_a_speedup_within_a_quarter():
    """The lower quartile: interference (only ever slower, in bursts) must outnumber normal
    samples three to one before it counts; a device that got faster is believed sooner."""
    h = History(window=16, trust_after=5)
    pred = Prediction("numba", 1e-3, "roofline")
    for _ in range(16):
        h.record("k", "numba", 1e-3, 1e-3)
    for _ in range(12):
        h.record("k", "numba", 1e-3, 4e-3)
    assert h.correct("k", pred).seconds == pytest.approx(1e-3)  # a burst of 12 in 16: ignored
    h.record("k", "numba", 1e-3, 4e-3)
    assert h.correct("k", pred).seconds == pytest.approx(4e-3)  # 13 in 16: it got slower
    for _ in range(4):
        h.record("k", "numba", 1e-3, 2e-3)
    assert h.correct("k", pred).seconds == pytest.approx(2e-3)  # 4 in 16 faster: followed


def test_a_burst_of_stalls_on_first_use_does_not_lock_a_device_out():
    """5 stalled launches in the first 7 samples (6 ms instead of 20 µs: workers woken late
    after an idle moment) still predict the device's real speed."""
    h = History(window=32, trust_after=5)
    for t in (6e-3, 6e-3, 20e-6, 6e-3, 21e-6, 6e-3, 6e-3):
        h.record("k", "numba", 10e-6, t)
    assert h.correct("k", Prediction("numba", 10e-6, "roofline")).seconds < 25e-6


def test_history_is_bounded():
    h = History(window=8, trust_after=1, max_keys=100)
    for k in range(1000):
        for _ in range(20):
            h.record(k, "numba", 1.0, 2.0)
    assert len(h) == 100 and h.samples(999, "numba") == 8 and h.samples(0, "numba") == 0


def test_history_is_per_device():
    h = History(trust_after=1)
    h.record("k", "numba", 1.0, 5.0)
    assert h.correct("k", Prediction("cuda:0", 1.0, "roofline")).source == "roofline"
    assert h.correct("k", Prediction("numba", 1.0, "roofline")).seconds == 5.0
