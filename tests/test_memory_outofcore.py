"""Out-of-core correctness: a 512 MiB array on disk (device budget 64 MiB, host budget
128 MiB) streams through sum, sumsq, saxpy and 2-D axis reductions, on every device.

The NumPy device runs kernel-language code thread by thread in Python (it is the
debugging backend), so 2**27 threads would take hours there: on it the built-ins run at
512 MiB (sumsq as ``vg.dot(x, x)``) and the ``@vg.reduction`` / ``@vg.kernel`` versions at
512 KiB with budgets scaled down by the same factor (the chunking code is the same).
"""

from __future__ import annotations

import gc
import os

import numpy as np
import pytest

import vgpu_nb as vg
from vgpu_nb.memory import MEM, spill_dir

MiB = 1 << 20


@vg.kernel
def saxpy(a: vg.f32, x: vg.f32[:], y: vg.f32[:]):
    i = vg.tid()
    y[i] = a * x[i] + y[i]


@vg.reduction(identity=0.0, combine="add")
def sumsq(v: vg.f32) -> vg.f32:
    return v * v


def _data(n: int) -> np.ndarray:
    """Exactly representable f32 values with a known f64 sum."""
    return ((np.arange(n, dtype=np.int64) * 7919) % 251 - 125).astype(np.float32) / 4


def _host_sum_sq(h: np.ndarray) -> float:
    return float(np.dot(h.astype(np.float64), h.astype(np.float64)))


@pytest.fixture
def budgets(tmp_path):
    def set_(scale: int = 1) -> None:
        vg.memory.configure(device=64 * MiB // scale, host=128 * MiB // scale, spill_dir=tmp_path)

    yield set_
    gc.collect()
    vg.memory.reset()
    vg.memory.clear()


def _big(device, budgets, scale: int = 1):
    budgets(scale)
    n = (512 * MiB // scale) // 4
    h = _data(n)
    x = vg.asarray(h, device=device)
    assert x.tier == "disk", x.tier
    return h, x


def test_sum_and_axis_reductions_512mib(device, budgets):
    h, x = _big(device, budgets)
    n = h.size
    assert float(vg.sum(x)) == pytest.approx(float(h.sum(dtype=np.float64)), rel=1e-6)
    if device.backend == "numpy":
        got = float(vg.dot(x, x))  # the built-in sum of squares (see the module docstring)
    else:
        got = float(sumsq(x))
    assert got == pytest.approx(_host_sum_sq(h), rel=1e-5)
    # 2-D views of the same spilled storage: both axes, mean and argmax
    m = x.reshape(8192, n // 8192)
    h2 = h.reshape(8192, -1)
    np.testing.assert_allclose(vg.sum(m, axis=0).numpy(), h2.sum(0, dtype=np.float64), rtol=1e-5)
    np.testing.assert_allclose(vg.mean(m, axis=1).numpy(), h2.mean(1, dtype=np.float64), rtol=1e-5)
    np.testing.assert_array_equal(vg.argmax(m, axis=0).numpy(), h2.argmax(0))
    assert x.tier == "disk"  # streaming never brought it back whole
    assert MEM.device_used(device) <= 64 * MiB


def test_saxpy_512mib(device, budgets):
    if device.backend == "numpy":
        pytest.skip("kernels run thread by thread on the numpy device: see the 512 KiB test")
    h, x = _big(device, budgets)
    y = vg.full(h.shape, 1.5, vg.f32, device=device)
    assert y.tier == "disk"
    saxpy[h.size](2.0, x, y)
    out = y.numpy()
    np.testing.assert_array_equal(out, np.float32(2.0) * h + np.float32(1.5))
    np.testing.assert_array_equal(x.numpy(), h)  # the input is untouched


@pytest.mark.parametrize("what", ["sumsq", "saxpy", "axis"])
def test_kernel_language_scaled_down(device, budgets, what):
    """The same streams at 1/1024 of the size (fast on every device, numpy included)."""
    h, x = _big(device, budgets, scale=1024)
    if what == "sumsq":  # (the numpy device adds each chunk in sequence: f32 rounding)
        assert float(sumsq(x)) == pytest.approx(_host_sum_sq(h), rel=2e-4)
    elif what == "saxpy":
        y = vg.full(h.shape, -1.0, vg.f32, device=device)
        saxpy[h.size](0.5, x, y)
        out = np.float32(0.5) * h - np.float32(1)
        np.testing.assert_array_equal(y.numpy(), out)
        z = x * 3 + y  # a fused expression over out-of-core operands streams too
        assert z.tier in ("host", "disk")
        np.testing.assert_array_equal(z.numpy(), h * np.float32(3) + out)
    else:
        m = x.reshape(128, -1)
        h2 = h.reshape(128, -1).astype(np.float64)
        np.testing.assert_allclose(sumsq(m, axis=0).numpy(), (h2 * h2).sum(0), rtol=2e-4)
        np.testing.assert_allclose(sumsq(m, axis=1).numpy(), (h2 * h2).sum(1), rtol=2e-4)


def test_matmul_row_panels(device, budgets):
    budgets(1024)  # device 64 KiB, host 128 KiB
    rng = np.random.default_rng(0)
    a = rng.integers(-3, 4, (2048, 32)).astype(np.float32)  # 256 KiB: on disk
    b = rng.integers(-3, 4, (32, 8)).astype(np.float32)
    A, B = vg.asarray(a, device=device), vg.asarray(b, device=device)
    assert A.tier == "disk"
    np.testing.assert_array_equal(vg.matmul(A, B).numpy(), a @ b)


@pytest.mark.parametrize("where", ["numba", "wgpu"])
def test_keyboard_interrupt_mid_stream(budgets, monkeypatch, where):
    """Interrupted at chunk 3 (numba: in the chunk's reduction; wgpu: reading it from the
    spill file): the slots are given back, nothing leaks, the input is intact and the same
    stream works afterwards."""
    try:
        dev = vg.get_device(where)
    except vg.errors.VgpuError as exc:
        pytest.skip(f"{where} unavailable: {exc}")
    h, x = _big(dev, budgets, scale=64)  # 8 MiB on disk, 1 MiB device budget
    before = MEM.device_used(dev)
    calls = {"n": 0}
    if where == "numba":
        owner, name = type(dev), "reduce"
    else:
        owner, name = spill_dir, "read_into"
    real = getattr(owner, name)

    def flaky(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(owner, name, flaky)
    with pytest.raises(KeyboardInterrupt):
        vg.sum(x)
    monkeypatch.setattr(owner, name, real)
    assert calls["n"] == 3
    assert MEM.device_used(dev) == before
    assert x.tier == "disk" and os.path.exists(x._st.path)
    assert float(vg.sum(x)) == pytest.approx(float(h.sum(dtype=np.float64)), rel=1e-6)
    np.testing.assert_array_equal(x.numpy(), h)


def test_not_streamable_kernel_says_why(budgets):
    budgets(1024)

    @vg.kernel
    def reverse(x: vg.f32[:], y: vg.f32[:]):
        i = vg.tid()
        y[i] = x[x.shape[0] - 1 - i]

    x = vg.asarray(np.ones(256 * 1024, np.float32), device="numba")
    y = vg.zeros(256 * 1024, device="numba")
    with pytest.raises(vg.errors.OutOfDeviceMemory, match="x\\[i\\]|vg.tid"):
        reverse[x.size](x, y)
