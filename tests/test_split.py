"""Split (issue 5): one op over several devices; results identical to one device (exact
for integer reductions), shares in the decision, clear errors for what cannot split."""

from __future__ import annotations

import numpy as np
import pytest

import vgpu_nb as vg
from vgpu_nb.dtypes import as_dtype
from vgpu_nb.scheduler import auto, partition

# (scheduler: run on the GPU machine too, where cuda is a candidate)
pytestmark = [pytest.mark.scheduler, pytest.mark.usefixtures("fresh_scheduler")]


def _two_devices(dtype: object = vg.i32) -> None:
    """Skip unless two devices besides numpy can reduce ``dtype`` (an OpenGL-only WebGPU
    adapter has no 64-bit integers for an i32 sum, for one)."""
    work = vg.ops.reductions._reduce_work("sum", vg.ones(8, dtype=dtype), None,
                                          (as_dtype(dtype),), vg.i64, vg.i64)  # fmt: skip
    if len([d for d in auto.candidates(work)[0] if d.backend != "numpy"]) < 2:
        pytest.skip(f"split needs two devices besides numpy that reduce {dtype} "
                    "(numba + a WebGPU adapter)")  # fmt: skip


@vg.kernel
def iaxpy(a: vg.i32, x: vg.i32[:], y: vg.i32[:]):
    i = vg.tid()
    y[i] = a * x[i] + y[i]


@vg.kernel
def clip_store(x: vg.f32[:], y: vg.f32[:]):
    i = vg.tid()
    if x[i] > 0.5:
        y[i] = x[i]


@vg.kernel
def shift(x: vg.f32[:], y: vg.f32[:]):
    i = vg.tid()
    if i + 1 < x.shape[0]:
        y[i] = x[i + 1]


@vg.kernel
def grid(m: vg.f32[:, :]):
    i, j = vg.tid()
    m[i, j] = 1.0


@vg.reduction(identity=0, combine="add")
def isumsq(v: vg.i32) -> vg.i64:
    return vg.i64(v) * vg.i64(v)


N = 100_003  # not a multiple of anything: shares have ragged edges


def test_kernel_split_equals_one_device(rng):
    _two_devices()
    xh = rng.integers(-1000, 1000, N).astype(np.int32)
    yh = rng.integers(-1000, 1000, N).astype(np.int32)
    x, y = vg.asarray(xh), vg.asarray(yh)
    rec = iaxpy.launch(N, 3, x, y, split=True)
    np.testing.assert_array_equal(y.numpy(), 3 * xh + yh)
    d = vg.scheduler.log.__globals__["_LOG"][-1]
    assert len(d.shares) >= 2 and sum(d.shares.values()) == pytest.approx(1.0)
    assert rec.device == d.choice and "+" in d.choice
    assert "split" in d.reason and "split" in vg.scheduler.explain(d)


def test_conditional_stores_keep_untouched_elements(rng):
    _two_devices()
    xh = rng.random(N).astype(np.float32)
    y = vg.full(N, -1.0, dtype=vg.f32)
    clip_store[N](vg.asarray(xh), y, split=True)
    np.testing.assert_array_equal(y.numpy(), np.where(xh > 0.5, xh, -1.0).astype(np.float32))


def test_integer_reductions_are_exact(rng):
    _two_devices()
    xh = rng.integers(-(2**20), 2**20, N).astype(np.int32)
    x = vg.asarray(xh)
    assert int(vg.sum(x, split=True)) == int(vg.sum(x)) == int(xh.astype(np.int64).sum())
    assert int(isumsq(x, split=True)) == int(isumsq(x)) == int((xh.astype(np.int64) ** 2).sum())
    assert int(vg.dot(x, x, split=True)) == int(vg.dot(x, x))
    assert int(vg.max(x, split=True)) == int(xh.max()) and int(vg.min(x, split=True)) == int(
        xh.min()
    )


def test_float_reductions_agree(rng):
    _two_devices()
    xh = rng.standard_normal(N).astype(np.float32)
    x = vg.asarray(xh)
    np.testing.assert_allclose(float(vg.sum(x, split=True)), float(vg.sum(x)), rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(float(vg.mean(x, split=True)), float(xh.mean()), atol=1e-5)
    np.testing.assert_allclose(float(vg.norm(x, split=True)), float(np.linalg.norm(xh)), rtol=1e-5)
    assert float(vg.max(x, split=True)) == float(xh.max())


def test_what_cannot_split_says_why():
    x, y = vg.ones(64), vg.zeros(64)
    with pytest.raises(vg.CannotSplit, match="vg.tid"):
        shift[64](x, y, split=True)
    with pytest.raises(vg.CannotSplit, match="2-D"):
        grid[(4, 4)](vg.zeros((4, 4)), split=True)
    with pytest.raises(vg.CannotSplit, match="argmin"):
        vg.argmin(x, split=True)
    with pytest.raises(vg.CannotSplit, match="axis"):
        vg.sum(vg.ones((4, 4)), axis=0, split=True)


def test_shares_cover_the_range_exactly():
    numba = vg.get_device("numba")
    for n in (1, 2, 7, 1000, 100_003):
        for fr in ([0.5, 0.5], [0.9, 0.1], [0.33, 0.33, 0.34], [0.999, 0.001]):
            parts = partition.bounds(n, [(numba, f) for f in fr])
            assert parts[0][1] == 0 and parts[-1][2] == n
            assert all(a[2] == b[1] for a, b in zip(parts, parts[1:], strict=False))


def test_the_splits_own_history_decides(monkeypatch):
    """What a split really took decides: measured fast, auto splits; measured slower than
    the best device alone, auto stops splitting; split=True still splits and the reason
    says it was forced. (Each device counted as its own hardware here, as a CPU and a GPU
    are: on a CPU-only machine they all share it, see the next test.)"""
    _two_devices()
    monkeypatch.setattr(partition, "hardware", lambda dev: dev.name)
    x = vg.ones(1 << 22, dtype=vg.i32)
    work = vg.ops.reductions._reduce_work("sum", x, None, (vg.i32,), vg.i64, vg.i64)
    fractions, d = partition.plan(work, True, "performance")
    assert len(fractions) >= 2
    name = d.choice
    best = min(p.seconds for p in d.candidates if "+" not in p.device)
    key = partition._key(work, name)
    for _ in range(auto.HISTORY.trust_after):  # measured at a tenth of the best single device
        auto.HISTORY.record(key, name, d._roof, 0.1 * best)
    fast, d1 = partition.plan(work, False, "performance")
    assert d1.choice == name and len(fast) >= 2 and "split" in d1.reason
    for _ in range(auto.HISTORY.window):  # then at ten times it
        auto.HISTORY.record(key, name, d._roof, 10 * best)
    slow, d2 = partition.plan(work, False, "performance")
    assert len(slow) == 1 and "would not pay" in d2.reason
    forced, d3 = partition.plan(work, True, "performance")
    assert len(forced) >= 2 and "forced" in d3.reason


def test_a_first_share_is_no_rate(rng):
    """A device's first share of an op compiles and first-touches: its time is not the
    device's speed (taken as one, it ranked cuda:0 below its own Vulkan adapter for good).
    Rates come from the second split on."""
    _two_devices()
    x = vg.asarray(rng.integers(-9, 9, N).astype(np.int32))
    y = vg.zeros(N, dtype=vg.i32)
    key = iaxpy[N].key
    iaxpy[N](1, x, y, split=True)
    assert not [k for k in partition._RATES if k[0] == key]
    iaxpy[N](1, x, y, split=True)
    shares = vg.scheduler.log.__globals__["_LOG"][-1].shares
    assert {k[1] for k in partition._RATES if k[0] == key} == set(shares)
    np.testing.assert_array_equal(y.numpy(), 2 * x.numpy())


def test_devices_on_one_piece_of_hardware_split_only_when_asked():
    """numba and CPU-emulated GPUs (or a GPU's CUDA and Vulkan adapters) compete for the
    same hardware: auto never splits over them; split=True does, and says so."""
    _two_devices()
    devs = [d for d in auto._available() if d.backend != "numpy"]
    x = vg.ones(1 << 22, dtype=vg.i32)
    work = vg.ops.reductions._reduce_work("sum", x, None, (vg.i32,), vg.i64, vg.i64)
    if len({partition.hardware(d) for d in devs}) > 1:
        pytest.skip("this machine has devices on different hardware")
    single, d = partition.plan(work, False, "performance")
    assert len(single) == 1 and "no second device on other hardware" in d.reason
    forced, d2 = partition.plan(work, True, "performance")
    assert len(forced) >= 2 and "share the same hardware" in d2.reason
    gpu = [d for d in devs if d.info.kind == "gpu"]
    assert all(partition.hardware(d) == "host CPU" for d in devs if d not in gpu)


def test_auto_with_the_split_setting_gives_correct_results():
    _two_devices()
    vg.scheduler.split = True
    n = 1 << 20
    with vg.device("auto"):
        x = vg.ones(n, dtype=vg.i32)
        for _ in range(2 * auto.HISTORY.trust_after):
            assert int(vg.sum(x)) == n
    assert vg.scheduler.log()["launches"].sum() >= 2 * auto.HISTORY.trust_after - 1


@pytest.mark.usefixtures("restore_memory")
def test_split_reads_a_host_tier_array_in_place(rng):
    """An array larger than its device budget lives in the host tier: the split reads it
    there (no move), and the result is exact."""
    _two_devices()
    vg.memory.configure(devices="numba", device="1MiB")
    xh = rng.integers(-1000, 1000, 1 << 20).astype(np.int32)  # 4 MiB
    x = vg.asarray(xh, device="numba")
    assert x.tier == "host"
    assert int(vg.sum(x, split=True)) == int(xh.astype(np.int64).sum())
    assert x.tier == "host" and x.device.name == "numba"


def test_split_evaluates_pending_operands_and_checks_the_axis():
    _two_devices()
    x = vg.asarray(np.arange(1000, dtype=np.int32))
    assert int(vg.sum(x * 2, split=True)) == 2 * int(np.arange(1000).sum())
    with pytest.raises(vg.AxisOutOfRange):
        vg.sum(x, axis=3, split=True)


def test_timeit_and_profile_see_split_ops():
    _two_devices()
    x = vg.ones(1 << 16, dtype=vg.i32)
    r = vg.timeit(lambda: vg.sum(x, split=True), number=2, repeat=2)
    assert r.records and all("+" in rec.device for rec in r.records)
    with vg.profile() as p:
        vg.sum(x, split=True)
    assert len(p.records) == 1 and p.records[0].op == "sum"


def test_a_kernel_split_counts_copying_its_writes_back():
    """A GPU's share of a kernel that writes ``y`` ends with ``y``'s share copied back to
    host memory: the plan counts it (at the device's calibrated link speed), CPU devices
    pay nothing."""
    _two_devices()
    y = vg.zeros(N, dtype=vg.i32)
    for d in auto._available():
        t = partition._write_back(d, [y, y])
        if d.host_is_device:
            assert t == 0.0
        else:
            gbps = auto.calibration(d).d2h_pageable_gbps
            assert t == pytest.approx(2 * y.nbytes / (gbps * 1e9))
