"""Regression tests for ten bugs a review found in the tiered-memory code
(``vgpu_nb.memory`` and ``vgpu_nb.ops.streamed``), one test (or parametrised test) per
bug, each a small version of the reviewer's reproduction script.

Budgets are tiny (16 KiB of device memory, tens of KiB of host memory), so a few KiB of
data is enough to make arrays spill and ops stream; every test restores the default
budgets, waits for prefetches and removes the spill directory afterwards.
"""

from __future__ import annotations

import errno
import gc
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import vgpu_nb as vg
from vgpu_nb.array import Array
from vgpu_nb.memory import spill_dir as sd
from vgpu_nb.memory.manager import MEM

KIB = 1024


@pytest.fixture(autouse=True)
def _restore_memory(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Undo monkeypatches, wait for prefetches, restore budgets, remove spill files."""
    yield
    monkeypatch.undo()
    vg.memory.wait(timeout=30)
    gc.collect()
    vg.memory.reset()
    vg.memory.clear()


def _get(name: str) -> vg.Device:
    """The device ``name``, or skip the test saying why it is unavailable."""
    try:
        return vg.get_device(name)
    except vg.errors.VgpuError as exc:
        pytest.skip(f"{name} unavailable: {exc}")


@vg.kernel
def saxpy(a: vg.f32, x: vg.f32[:], y: vg.f32[:]):
    i = vg.tid()
    y[i] = a * x[i] + y[i]


@vg.kernel
def relu_into(x: vg.f32[:], y: vg.f32[:]):
    i = vg.tid()
    if x[i] > 0.0:
        y[i] = x[i]


@vg.kernel
def dbl_acc(x: vg.f32[:], y: vg.f32[:]):
    i = vg.tid()
    y[i] = x[i] * 2.0 + y[i]


@vg.kernel
def dbl(x: vg.f32[:], y: vg.f32[:]):
    i = vg.tid()
    y[i] = x[i] * 2.0


@vg.reduction(identity=0.0, combine="add")
def sumsq(v: vg.f32) -> vg.f32:
    return v * v


# ---- r1 --------------------------------------------------------------------------------------
def test_prefetched_array_written_by_stream_keeps_writes_after_eviction(device, tmp_path):
    """r1: a prefetched array written by a streamed kernel is not evicted to its stale copy."""
    vg.memory.configure(device=16 * KIB, host=32 * KIB, spill_dir=tmp_path)
    n = 3072  # 12 KiB per array
    x = vg.asarray(np.ones(n, np.float32), device=device)
    y = vg.zeros(n, device=device)
    vg.memory.spill(x, "host")
    vg.memory.spill(y, "disk")
    vg.memory.prefetch(y)
    assert vg.memory.wait(timeout=30)
    assert y.placement == {"device", "disk"}  # a clean device copy next to the disk file
    saxpy[n](2.0, x, y)  # streams (x is in the host tier) and writes y
    # push y off the device
    z = vg.zeros(n, device=device)
    w = vg.zeros(n, device=device)
    z2 = (z + 1).eval()
    assert y.tier != "device", "the setup did not evict y"
    np.testing.assert_array_equal(y.numpy(), np.full(n, 2.0, np.float32))
    del z, w, z2


# ---- r5 --------------------------------------------------------------------------------------
def test_streamed_conditional_store_keeps_unwritten_elements(device, tmp_path):
    """r5: a streamed kernel with a conditional store keeps the elements it skips."""
    vg.memory.configure(device=16 * KIB, host=1 << 30, spill_dir=tmp_path)
    n = 8192  # 32 KiB per array
    h = np.where(np.arange(n) % 2 == 0, 1.0, -1.0).astype(np.float32)
    x = vg.asarray(h, device=device)
    y = vg.full(n, 7.0, vg.f32, device=device)
    assert (x.tier, y.tier) == ("host", "host")
    relu_into[n](x, y)
    np.testing.assert_array_equal(y.numpy(), np.where(h > 0, h, np.float32(7.0)))


# ---- r6 --------------------------------------------------------------------------------------
def test_stream_writes_during_inflight_prefetch_are_kept(device, tmp_path, monkeypatch):
    """r6: writes made by a stream while a prefetch of the same array is in flight are kept."""
    vg.memory.configure(device=16 * KIB, host=32 * KIB, spill_dir=tmp_path)
    n = 3072
    h = np.arange(n, dtype=np.float32)
    x = vg.asarray(h, device=device)
    y = vg.zeros(n, device=device)
    vg.memory.spill(y, "disk")
    vg.memory.spill(x, "host")
    dbl_acc[4](vg.zeros(4, device=device), vg.zeros(4, device=device))  # compile first
    loaded = threading.Event()
    real = MEM._load
    target = y._st

    def slow(st: Any) -> Any:
        out = real(st)
        if st is target:  # a slow disk read of y: the copy is taken, not yet installed
            loaded.set()
            time.sleep(0.3)
        return out

    monkeypatch.setattr(MEM, "_load", slow)
    vg.memory.prefetch(y)
    assert loaded.wait(timeout=10), "the prefetch did not start"
    dbl_acc[n](x, y)  # streams while the prefetch of y is in flight, and writes y
    assert vg.memory.wait(timeout=30)
    monkeypatch.undo()
    np.testing.assert_array_equal(y.numpy(), 2 * h)


# ---- r2 --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["numba", "numpy"])
def test_numpy_view_of_nd_expression_result_pins_it(name, tmp_path):
    """r2: a NumPy view of an N-D expression result pins it (spill raises SpillFailed)."""
    dev = _get(name)
    vg.memory.configure(device=64 * KIB, host=64 * KIB, spill_dir=tmp_path)
    a = vg.asarray(np.ones((32, 32), np.float32), device=dev)
    b = (a + a).eval()
    row = b.numpy()[0]  # a NumPy view of b's memory
    with pytest.raises(vg.SpillFailed):
        vg.memory.spill(b, "disk")
    row[:] = 42  # writes through the view reach b
    np.testing.assert_array_equal(b.numpy()[0], np.full(32, 42, np.float32))
    np.testing.assert_array_equal(b.numpy()[1:], np.full((31, 32), 2, np.float32))


# ---- r3 --------------------------------------------------------------------------------------
def _disk_output(name: str, tmp_path: Path) -> tuple[vg.Device, np.ndarray, Array, Array]:
    dev = _get(name)
    vg.memory.configure(device=16 * KIB, host=32 * KIB, spill_dir=tmp_path)
    n = 4096  # 16 KiB per array
    h = np.arange(n, dtype=np.float32)
    x = vg.asarray(h, device=dev)
    y = vg.zeros(n, device=dev)
    vg.memory.spill(y, "disk")
    vg.memory.spill(x, "host")
    assert (x.tier, y.tier) == ("host", "disk")
    dbl[4](vg.zeros(4, device=dev), vg.zeros(4, device=dev))  # compile first
    return dev, h, x, y


@pytest.mark.parametrize("name", ["wgpu:0", "wgpu:1"])
def test_write_only_disk_output_with_slow_writes_is_complete(name, tmp_path, monkeypatch):
    """r3: a write-only disk-tier output whose disk writes are slow is written completely."""
    dev, h, x, y = _disk_output(name, tmp_path)
    real = sd.write_at

    def slow(*args: Any) -> None:
        time.sleep(0.02)
        real(*args)

    monkeypatch.setattr(sd, "write_at", slow)
    dbl[h.size](x, y)
    monkeypatch.undo()
    np.testing.assert_array_equal(y.numpy(), 2 * h)


@pytest.mark.parametrize("name", ["wgpu:0", "wgpu:1"])
def test_disk_write_error_during_stream_is_raised(name, tmp_path, monkeypatch):
    """r3: a disk write error (ENOSPC) during a stream is raised, not dropped."""
    dev, h, x, y = _disk_output(name, tmp_path)
    used = MEM.device_used(dev)
    calls = []

    def full(*args: Any) -> None:
        calls.append(args)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sd, "write_at", full)
    with pytest.raises(OSError) as info:
        dbl[h.size](x, y)
    monkeypatch.undo()
    assert calls, "the stream never wrote to disk"
    assert info.value.errno == errno.ENOSPC or isinstance(info.value, vg.SpillFailed)
    assert MEM.device_used(dev) == used


# ---- r8 --------------------------------------------------------------------------------------
def test_bringing_back_spilled_inputs_when_tight_never_breaks_them(tmp_path):
    """r8: bringing back spilled expression inputs with little room raises OOM or works,
    and the inputs stay usable."""
    dev = _get("numba")
    vg.memory.configure(device=16 * KIB, host=1 << 30, spill_dir=tmp_path)
    big = vg.asarray(np.zeros(2560, np.float32), device=dev)  # 10 KiB
    hold = big.numpy()  # in use: cannot be spilled
    a = vg.asarray(np.ones(1024, np.float32), device=dev)  # 4 KiB
    b = vg.asarray(np.full(1024, 2, np.float32), device=dev)  # 4 KiB
    vg.memory.spill(a)
    vg.memory.spill(b)
    assert (a.tier, b.tier) == ("host", "host")
    try:
        c = a + b
        np.testing.assert_array_equal(c.numpy(), np.full(1024, 3, np.float32))
        del c
    except vg.OutOfDeviceMemory:
        pass  # a clear error is fine; a half-moved array is not
    for v, value in ((a, 1.0), (b, 2.0)):
        if type(v) is Array:  # a plain array must have its device buffer
            assert v._buf is not None
            assert v.tier == "device"
        np.testing.assert_array_equal(v.numpy(), np.full(1024, value, np.float32))
    assert hold.shape == (2560,)


# ---- r10 -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["numba", "wgpu:0"])
def test_stream_with_host_tier_and_resident_operand(name, tmp_path):
    """r10: a streamed kernel with one operand in the host tier and one resident works."""
    dev = _get(name)
    vg.memory.configure(device=16 * KIB, host=1 << 30, spill_dir=tmp_path)
    n = 3072  # 12 KiB per array
    x = vg.asarray(np.ones(n, np.float32), device=dev)
    vg.memory.spill(x)
    y = vg.zeros(n, device=dev)
    assert (x.tier, y.tier) == ("host", "device")
    saxpy[n](2.0, x, y)
    np.testing.assert_array_equal(y.numpy(), np.full(n, 2.0, np.float32))
    np.testing.assert_array_equal(x.numpy(), np.ones(n, np.float32))


# ---- r4 --------------------------------------------------------------------------------------
def test_streamed_full_reductions_are_0d(device, tmp_path):
    """r4: streamed full reductions (sum, mean, argmax, @vg.reduction) return 0-d arrays."""
    n = 8192  # 32 KiB: more than the 16 KiB device budget
    h = ((np.arange(n, dtype=np.int64) * 7919) % 251 - 125).astype(np.float32) / 4
    ops = {"sum": vg.sum, "mean": vg.mean, "argmax": vg.argmax, "sumsq": sumsq}

    def run() -> dict[str, tuple[tuple[int, ...], np.ndarray]]:
        x = vg.asarray(h, device=device)
        out = {}
        for what, f in ops.items():
            r = f(x)
            out[what] = (r.shape, np.asarray(r.numpy()))
        return out

    vg.memory.configure(device=16 * KIB, host=1 << 30, spill_dir=tmp_path)
    assert vg.asarray(h, device=device).tier != "device"
    streamed = run()
    vg.memory.reset()
    assert vg.asarray(h, device=device).tier == "device"
    incore = run()
    for what in ops:
        (s_shape, s_val), (c_shape, c_val) = streamed[what], incore[what]
        assert s_shape == c_shape == (), (what, s_shape, c_shape)
        assert s_val.shape == c_val.shape == (), (what, s_val.shape, c_val.shape)
        assert s_val.dtype == c_val.dtype, (what, s_val.dtype, c_val.dtype)
        # values as the reviewer's script compares them (f32 accumulators round differently)
        np.testing.assert_allclose(s_val, c_val, rtol=1e-4, err_msg=what)
    assert int(streamed["argmax"][1]) == int(h.argmax())


# ---- r7 --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["wgpu:0", "wgpu:1"])
def test_failed_stream_setup_keeps_device_accounting(name, tmp_path, monkeypatch):
    """r7: a failure while setting up a stream leaves the device accounting unchanged."""
    dev = _get(name)
    vg.memory.configure(device=16 * KIB, host=1 << 30, spill_dir=tmp_path)
    x = vg.asarray(np.ones(8192, np.float32), device=dev)
    assert x.tier == "host"
    before = MEM.device_used(dev)

    def boom(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise vg.errors.BackendError("out of memory (simulated)")

    monkeypatch.setattr(type(dev), "empty", boom)
    with pytest.raises(vg.errors.BackendError):
        vg.sum(x)
    monkeypatch.undo()
    assert MEM.device_used(dev) == before
    assert float(vg.sum(x)) == 8192.0  # and the next stream works


# ---- r9 --------------------------------------------------------------------------------------
def test_configure_reset_cycles_leave_no_spill_directories(tmp_path):
    """r9: configure(spill_dir=...)/reset() cycles leave no spill directories after clear()."""
    dev = _get("numba")
    parent = tmp_path / "spill-parent"
    parent.mkdir()
    for _ in range(3):
        vg.memory.configure(device=16 * KIB, host=16 * KIB, spill_dir=parent)
        x = vg.asarray(np.ones(8192, np.float32), device=dev)  # 32 KiB: to disk
        assert x.tier == "disk"
        del x
        vg.memory.reset()
        vg.memory.clear()
        assert sorted(p.name for p in parent.glob("vgpu_nb-spill-*")) == []
