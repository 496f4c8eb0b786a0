"""Tiered memory (``vg.memory``): budgets, placement, spill and unspill, prefetch, LRU
order, accounting, telemetry events, the spill directory, out-of-memory errors and arrays
made directly in the host or disk tier.

Most tests run on every device of the machine (the ``device`` fixture) under small budgets
(``small``: 16 KiB of device memory for the device under test, 32 KiB of host memory)
with arrays of 4 KiB, so the tier of every array is known exactly. On the CPU devices
(numpy, numba) the device and host tiers are the same RAM: a device→host spill relabels
the buffer, which the tests check as well as the copies made on WebGPU.
"""

from __future__ import annotations

import contextlib
import gc
import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import vgpu_nb as vg
from vgpu_nb.array import _Spilled
from vgpu_nb.dtypes import as_dtype
from vgpu_nb.errors import BadBudget, OutOfDeviceMemory, SpillFailed
from vgpu_nb.memory.budgets import default_device_budget, human, parse_size, ram_bytes
from vgpu_nb.memory.manager import DEVICE, DISK, HOST, MEM, TIERS
from vgpu_nb.telemetry import BUS

KIB = 1024
DEVICE_BUDGET = 16 * KIB
HOST_BUDGET = 32 * KIB
N = 1024  # elements of a 4 KiB f32/i32 test array
KINDS = ("alloc", "free", "spill", "unspill", "prefetch", "evict")
DTYPES = ["f32", "f64", "i32", "u32", "i64", "bool"]


# ---- fixtures and helpers ---------------------------------------------------------------------
pytestmark = pytest.mark.usefixtures("restore_memory")  # (tests/conftest.py)


@pytest.fixture
def small(device: vg.Device, tmp_path: Any) -> vg.Device:
    """16 KiB for the device under test, 32 KiB of host memory, spills into ``tmp_path``."""
    vg.memory.configure(
        device=DEVICE_BUDGET, host=HOST_BUDGET, spill_dir=tmp_path, devices=device.name
    )
    return device


@contextlib.contextmanager
def events(*kinds: str) -> Iterator[list[Any]]:
    got: list[Any] = []
    sub = BUS.subscribe(got.append, kinds=kinds or KINDS)
    try:
        yield got
    finally:
        sub.close()


def used(dev: vg.Device, tier: str) -> int:
    """Bytes accounted to ``dev`` on ``tier``."""
    return MEM._tier(dev.name, tier).used


def f32(rng: np.random.Generator, n: int = N) -> np.ndarray:
    return rng.standard_normal(n).astype(np.float32)


def sample(rng: np.random.Generator, dt: str, n: int) -> np.ndarray:
    """Random values covering the dtype's range (floats: NaN, ±inf and -0.0 included)."""
    npd = as_dtype(dt).np
    if dt == "bool":
        return rng.random(n) < 0.5
    if dt in ("f32", "f64"):
        a = (rng.standard_normal(n) * 1e3).astype(npd)
        a[:4] = [np.nan, np.inf, -np.inf, -0.0]
        return a
    info = np.iinfo(npd)
    return rng.integers(info.min, info.max, n, dtype=npd, endpoint=True)


def same_bits(got: Any, want: np.ndarray) -> None:
    got = np.asarray(got)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.tobytes() == want.tobytes()


def touch(a: vg.Array) -> None:
    """What every op does first: read the native buffer (a spilled array comes back)."""
    assert a._buf is not None


def files_under(root: Any) -> set[str]:
    return {os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs}


# kernels that write their argument (one per dtype) and what they compute, in NumPy
@vg.kernel
def bump_f32(x: vg.f32[:]):
    i = vg.tid()
    x[i] = x[i] * 2.0 + 1.0


@vg.kernel
def bump_f64(x: vg.f64[:]):
    i = vg.tid()
    x[i] = x[i] * 2.0 + 1.0


@vg.kernel
def bump_i32(x: vg.i32[:]):
    i = vg.tid()
    x[i] = x[i] * 3 + 1


@vg.kernel
def bump_u32(x: vg.u32[:]):
    i = vg.tid()
    x[i] = x[i] * 3 + 1


@vg.kernel
def bump_i64(x: vg.i64[:]):
    i = vg.tid()
    x[i] = x[i] * 3 + 1


@vg.kernel
def flip_bool(x: vg.bool[:]):
    i = vg.tid()
    x[i] = not x[i]


@vg.kernel
def add_into(a: vg.i32[:], b: vg.i32[:]):
    i = vg.tid()
    a[i] = a[i] + b[i]


def _float_bump(a: np.ndarray) -> np.ndarray:
    return a * a.dtype.type(2) + a.dtype.type(1)


def _int_bump(a: np.ndarray) -> np.ndarray:
    return a * a.dtype.type(3) + a.dtype.type(1)


BUMP = {
    "f32": (bump_f32, _float_bump),
    "f64": (bump_f64, _float_bump),
    "i32": (bump_i32, _int_bump),
    "u32": (bump_u32, _int_bump),
    "i64": (bump_i64, _int_bump),
    "bool": (flip_bool, np.logical_not),
}


# ---- sizes ------------------------------------------------------------------------------------
def test_parse_size_and_human():
    assert parse_size(1024) == 1024
    assert parse_size(1500.9) == 1500
    assert parse_size(0) == 0
    assert parse_size("0") == 0
    assert parse_size("64MiB") == 64 << 20
    assert parse_size("1GiB") == 1 << 30
    assert parse_size("1.5 GB") == 1_500_000_000
    assert parse_size("2g") == 2_000_000_000
    assert parse_size(" 10 kib ") == 10 * 1024
    assert parse_size("3KB") == 3000
    assert parse_size("512b") == 512
    assert parse_size("1e3") == 1000
    assert parse_size("1TiB") == 1 << 40
    assert human(0) == "0 B"
    assert human(1023) == "1023 B"
    assert human(1536) == "1.5 KiB"
    assert human(1 << 30) == "1 GiB"
    assert human(5 * (1 << 40)) == "5 TiB"
    assert human(None) == "?"
    for n in (1, 4096, 123_456_789, 3 << 30):
        assert parse_size(human(n).replace(" ", "")) == pytest.approx(n, rel=1e-2)


@pytest.mark.parametrize("bad", ["lots", "-3", "1 XB", "GiB", "", "1..5MiB", -3, -0.5, True, None])
def test_bad_sizes_raise_bad_budget(bad):
    with pytest.raises(BadBudget) as ei:
        parse_size(bad, "device budget")
    assert isinstance(ei.value, ValueError)
    assert "device budget" in str(ei.value)


def test_nan_size_raises_bad_budget():
    with pytest.raises(BadBudget):
        parse_size(float("nan"))


def test_bad_budgets_through_the_api(tmp_path):
    before = vg.memory.budgets()
    with pytest.raises(BadBudget, match="device budget"):
        vg.memory.configure(device="lots")
    with pytest.raises(BadBudget, match="host budget"):
        vg.memory.configure(host=-1)
    assert vg.memory.budgets() == before  # a refused budget changes nothing
    x = vg.asarray([1.0, 2.0], device="numpy")
    with pytest.raises(BadBudget, match="'host' or 'disk'"):
        vg.memory.spill(x, "device")
    with pytest.raises(BadBudget):
        vg.memory.spill(x, "gpu")
    assert x.tier == DEVICE


# ---- budgets: configure, reset, environment ---------------------------------------------------
def test_configure_budgets_and_reset(tmp_path):
    numpy, numba = vg.get_device("numpy"), vg.get_device("numba")
    vg.memory.configure(device="1GiB", host="4GiB", spill_dir=tmp_path)
    b = vg.memory.budgets()
    assert b["host"] == 4 << 30 and b["spill_dir"] == str(tmp_path)
    assert b["numpy"] == b["numba"] == 1 << 30
    assert MEM.device_budget(numpy) == 1 << 30
    vg.memory.configure(device=3 << 20, devices="numba")  # only numba
    b = vg.memory.budgets()
    assert b["numba"] == 3 << 20 and b["numpy"] == 1 << 30 and b["host"] == 4 << 30
    vg.memory.configure(device="5MiB", devices=["numpy", "numba"])
    assert vg.memory.budgets()["numpy"] == vg.memory.budgets()["numba"] == 5 << 20
    vg.memory.configure(spill_dir=None)
    assert vg.memory.budgets()["spill_dir"] is None
    vg.memory.reset()
    b = vg.memory.budgets()
    assert b["host"] == ram_bytes() // 2
    assert b["numpy"] == default_device_budget(numpy) == ram_bytes() // 4
    assert b["numba"] == default_device_budget(numba)


def test_environment_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("VGPU_NB_DEVICE_BUDGET", "2MiB")
    monkeypatch.setenv("VGPU_NB_HOST_BUDGET", "3MB")
    monkeypatch.setenv("VGPU_NB_SPILL_DIR", str(tmp_path))
    vg.memory.reset()
    b = vg.memory.budgets()
    assert b["numpy"] == b["numba"] == 2 << 20
    assert b["host"] == 3_000_000 and b["spill_dir"] == str(tmp_path)
    x = vg.asarray(np.arange(100.0), device="numpy")
    vg.memory.spill(x, DISK)
    assert x._st.path.startswith(str(tmp_path) + os.sep)
    # configure() wins over the environment until the next reset()
    vg.memory.configure(device="1MiB")
    assert vg.memory.budgets()["numpy"] == 1 << 20
    vg.memory.reset()
    assert vg.memory.budgets()["numpy"] == 2 << 20
    monkeypatch.setenv("VGPU_NB_HOST_BUDGET", "plenty")
    with pytest.raises(BadBudget, match="VGPU_NB_HOST_BUDGET"):
        vg.memory.reset()


def test_lowering_a_budget_spills_at_once(device, tmp_path, rng):
    vg.memory.configure(spill_dir=tmp_path)
    hs = [f32(rng) for _ in range(4)]
    xs = [vg.asarray(h, device=device) for h in hs]
    assert [x.tier for x in xs] == [DEVICE] * 4
    vg.memory.configure(device="8KiB", devices=device.name)
    assert [x.tier for x in xs] == [HOST, HOST, DEVICE, DEVICE]  # oldest first
    assert used(device, DEVICE) <= 8 * KIB
    vg.memory.configure(host="4KiB")
    assert [x.tier for x in xs] == [DISK, HOST, DEVICE, DEVICE]
    assert MEM._host_used <= 4 * KIB
    for x, h in zip(xs, hs, strict=True):
        same_bits(x.numpy(), h)


# ---- placement, spill, unspill ----------------------------------------------------------------
def test_new_arrays_are_on_the_device(device):
    made = [
        vg.asarray([1.0, 2.0], dtype=vg.f32, device=device),
        vg.zeros((3, 4), device=device),
        vg.ones(5, dtype=vg.i32, device=device),
        vg.full(7, 2.5, dtype=vg.f32, device=device),
        vg.empty(6, device=device),
        vg.arange(10, dtype=vg.i32, device=device),
        vg.sum(vg.ones(5, device=device)),
        (vg.ones(5, device=device) * 2 + 1).eval(),
        vg.ones(8, device=device).reshape(2, 4),
    ]
    for x in made:
        assert x.tier == DEVICE and x.placement == frozenset({DEVICE})
        assert type(x) is vg.Array


def test_spill_then_touch(small, rng):
    dev = small
    h = f32(rng)
    x = vg.asarray(h, device=dev)
    assert x.placement == {DEVICE} and used(dev, DEVICE) == x._st.held
    vg.memory.spill(x)  # default: the host tier
    assert x.tier == HOST and x.placement == {HOST} and type(x) is _Spilled
    assert used(dev, DEVICE) == 0 and used(dev, HOST) == h.nbytes
    same_bits(x.numpy(), h)  # read from the host tier...
    assert x.placement == {HOST}  # ...without moving the array
    vg.memory.spill(x, DISK)
    assert x.tier == DISK and x.placement == {DISK}
    assert used(dev, HOST) == 0 and used(dev, DISK) == h.nbytes
    same_bits(x.numpy(), h)
    assert x.placement == {DISK}
    vg.memory.spill(x, DISK)  # already there: nothing to do
    assert x.placement == {DISK}
    r = float(vg.sum(x))  # an op reading the array brings it back
    assert r == pytest.approx(float(h.astype(np.float64).sum()), rel=1e-4, abs=1e-3)
    assert x.tier == DEVICE and x.placement == {DEVICE} and type(x) is vg.Array
    assert used(dev, DISK) == 0 and used(dev, HOST) == 0
    same_bits(x.numpy(), h)
    # straight from the device tier to disk
    vg.memory.spill(x, DISK)
    assert x.placement == {DISK} and used(dev, DEVICE) == 0 and used(dev, HOST) == 0
    y = x.copy()  # touching again (copy reads the buffer)
    assert x.tier == DEVICE
    same_bits(y.numpy(), h)


def test_launch_brings_its_arguments_back(small, rng):
    dev = small
    ha = rng.integers(-1000, 1000, N, dtype=np.int32)
    hb = rng.integers(-1000, 1000, N, dtype=np.int32)
    a, b = vg.asarray(ha, device=dev), vg.asarray(hb, device=dev)
    vg.memory.spill(a, HOST)
    vg.memory.spill(b, DISK)
    fill = [vg.zeros(N, dtype=vg.i32, device=dev) for _ in range(4)]  # the device is full
    assert used(dev, DEVICE) == DEVICE_BUDGET
    add_into[N](a, b)  # needs both arguments on the device at once: two others go
    assert a.tier == b.tier == DEVICE
    assert [f.tier for f in fill] == [HOST, HOST, DEVICE, DEVICE]
    assert used(dev, DEVICE) <= DEVICE_BUDGET
    np.testing.assert_array_equal(a.numpy(), ha + hb)
    np.testing.assert_array_equal(b.numpy(), hb)


def test_expression_brings_its_leaves_back(small, rng):
    dev = small
    ha, hb = f32(rng), f32(rng)
    a, b = vg.asarray(ha, device=dev), vg.asarray(hb, device=dev)
    vg.memory.spill(a, DISK)
    vg.memory.spill(b, HOST)
    r = a * 2 + b
    np.testing.assert_array_equal(r.numpy(), ha * np.float32(2) + hb)
    assert a.tier == b.tier == r.tier == DEVICE
    assert used(dev, DEVICE) <= DEVICE_BUDGET


# ---- round trips ------------------------------------------------------------------------------
@pytest.mark.parametrize("dt", DTYPES)
def test_round_trips_are_bit_exact(small, dt, rng):
    h = sample(rng, dt, 600)
    x = vg.asarray(h, dtype=dt, device=small)
    v = x.reshape(20, 30)  # a view of the same memory
    assert v._st is x._st
    for to, other in ((HOST, v), (DISK, x), (DISK, v), (HOST, x)):
        vg.memory.spill(v if other is x else x, to)  # spill one view...
        assert x.tier == v.tier == to  # ...both are spilled
        assert x.placement == v.placement == {to}
        same_bits(x.numpy(), h)
        same_bits(v.numpy(), h.reshape(20, 30))
        touch(other)  # touching either view brings both back
        assert x.tier == v.tier == DEVICE and type(x) is type(v) is vg.Array
        same_bits(x.numpy(), h)
        same_bits(v.numpy(), h.reshape(20, 30))
    # a reshape of a spilled array is a spilled view of the same memory
    vg.memory.spill(x, DISK)
    w = x.reshape(600, 1)
    assert w.tier == DISK and w._st is x._st
    same_bits(w.numpy(), h.reshape(600, 1))
    same_bits(w.copy().numpy(), h.reshape(600, 1))
    assert x.tier == DEVICE


@pytest.mark.parametrize("dt", DTYPES)
def test_kernel_writes_after_unspill_are_seen_by_every_view(small, dt, rng):
    kern, ref = BUMP[dt]
    why = small.kernel_unsupported(kern.ir)
    if why:
        pytest.skip(f"{small.name} cannot run a {dt} kernel: {why}")
    h = sample(rng, dt, 600)
    x = vg.asarray(h, dtype=dt, device=small)
    v = x.reshape(20, 30)
    want = h
    for to in (HOST, DISK):
        vg.memory.spill(v, to)
        kern[x.size](x)  # the launch brings the memory back and writes it
        want = ref(want)
        assert x.tier == v.tier == DEVICE
        np.testing.assert_array_equal(x.numpy(), want)
        np.testing.assert_array_equal(v.numpy(), want.reshape(20, 30))
        # what the kernel wrote survives the next round trip bit for bit
        bits = x.numpy().copy()
        vg.memory.spill(x, DISK)
        same_bits(v.numpy(), bits.reshape(20, 30))
        touch(v)
        same_bits(x.numpy(), bits)


# ---- prefetch ---------------------------------------------------------------------------------
def test_prefetch_from_host_and_disk(small, rng):
    dev = small
    h = f32(rng)
    x = vg.asarray(h, device=dev)
    vg.memory.prefetch(x)  # resident already: nothing to do
    assert vg.memory.wait(timeout=30)
    assert x.placement == {DEVICE}
    prefetches = MEM._tier(dev.name, DEVICE).prefetches

    vg.memory.spill(x, HOST)
    vg.memory.prefetch(x)
    assert vg.memory.wait(timeout=30)
    assert x.tier == DEVICE
    if dev.host_is_device:  # the same RAM: the host copy *is* the device copy now
        assert x.placement == {DEVICE} and used(dev, HOST) == 0
    else:  # two valid copies until an op touches it (it might write)
        assert x.placement == {DEVICE, HOST} and used(dev, HOST) == h.nbytes
    assert used(dev, DEVICE) == x._st.held
    same_bits(x.numpy(), h)
    assert float(vg.sum(x)) == pytest.approx(float(h.sum()), rel=1e-4, abs=1e-3)
    assert x.placement == {DEVICE} and type(x) is vg.Array and used(dev, HOST) == 0

    vg.memory.spill(x, DISK)
    path = x._st.path
    vg.memory.prefetch(x)
    assert vg.memory.wait(timeout=30)
    assert x.tier == DEVICE and x.placement == {DEVICE, DISK} and os.path.exists(path)
    assert used(dev, DISK) == h.nbytes
    touch(x)  # touched: the disk copy is stale from now on, its file goes
    assert x.placement == {DEVICE} and not os.path.exists(path) and used(dev, DISK) == 0
    same_bits(x.numpy(), h)
    assert MEM._tier(dev.name, DEVICE).prefetches == prefetches + 2


def test_writes_through_numpy_of_a_prefetched_array_are_kept(small):
    """CPU devices: ``x.numpy()`` of an array prefetched from disk (not touched by an op
    yet) is the device memory; what is written through it must survive an eviction."""
    dev = small
    if not dev.host_is_device:
        pytest.skip(f"{dev.name}: x.numpy() is a copy of the device memory there")
    x = vg.asarray(np.zeros(N, np.float32), device=dev)
    vg.memory.spill(x, DISK)
    vg.memory.prefetch(x)
    assert vg.memory.wait(timeout=30)
    v = x.numpy()
    v[:] = 5.0
    del v
    vg.memory.spill(x, HOST)  # the disk copy must not be taken for the current one
    same_bits(x.numpy(), np.full(N, 5.0, np.float32))
    vg.memory.spill(x, DISK)
    touch(x)
    same_bits(x.numpy(), np.full(N, 5.0, np.float32))


def test_prefetch_never_evicts(small, rng):
    dev = small
    xs = [vg.asarray(f32(rng), device=dev) for _ in range(4)]
    h = f32(rng)
    a = vg.asarray(h, device=dev)  # the device is full: xs[0] went to the host tier
    assert xs[0].tier == HOST and used(dev, DEVICE) == DEVICE_BUDGET
    vg.memory.spill(a, HOST)
    b = vg.zeros(N, device=dev)  # fills the room a left
    with events("prefetch", "spill", "evict") as got:
        vg.memory.prefetch(a)
        assert vg.memory.wait(timeout=30)
    assert a.tier == HOST and a.placement == {HOST}
    assert [x.tier for x in xs[1:]] + [b.tier] == [DEVICE] * 4
    assert [(e.kind, e.dst) for e in got] == [("prefetch", None)]
    assert "never evicts" in got[0].reason
    same_bits(a.numpy(), h)


def test_prefetched_copy_is_evicted_without_a_copy(small, rng):
    dev = small
    h = f32(rng)
    x = vg.asarray(h, device=dev)  # the oldest array: the first to go
    vg.memory.spill(x, DISK)
    path = x._st.path
    vg.memory.prefetch(x)
    assert vg.memory.wait(timeout=30)
    assert x.placement == {DEVICE, DISK}
    with events() as got:
        others = [vg.zeros(N, device=dev) for _ in range(4)]  # x must make room
    mine = [(e.kind, e.src, e.dst) for e in got if e.array == x._st.id]
    assert mine == [("evict", DEVICE, DISK)]  # nothing written: the file is still valid
    assert x.tier == DISK and x.placement == {DISK} and x._st.path == path
    assert all(o.tier == DEVICE for o in others)
    same_bits(x.numpy(), h)
    touch(x)
    same_bits(x.numpy(), h)
    if not dev.host_is_device:  # WebGPU: a prefetched host copy is dropped the same way
        vg.memory.spill(x, HOST)
        vg.memory.prefetch(x)
        assert vg.memory.wait(timeout=30)
        assert x.placement == {DEVICE, HOST}
        host_before = used(dev, HOST)
        with events() as got:
            vg.memory.spill(x, HOST)
        assert [(e.kind, e.src, e.dst) for e in got] == [("evict", DEVICE, HOST)]
        assert x.placement == {HOST} and used(dev, HOST) == host_before  # no new copy
        same_bits(x.numpy(), h)


# ---- LRU and budgets --------------------------------------------------------------------------
def test_lru_spills_the_least_recently_used_first(small, rng):
    dev = small
    a, b, c = (vg.asarray(f32(rng), device=dev) for _ in range(3))
    vg.memory.spill(a, HOST)
    touch(a)  # brought back: now the most recently used of the three
    d = vg.zeros(N, device=dev)
    assert [x.tier for x in (a, b, c, d)] == [DEVICE] * 4  # exactly full, nothing spilled
    e = vg.zeros(N, device=dev)
    assert [x.tier for x in (a, b, c, d, e)] == [DEVICE, HOST, DEVICE, DEVICE, DEVICE]
    f = vg.zeros(N, device=dev)
    assert [x.tier for x in (a, b, c, d, e, f)] == [DEVICE, HOST, HOST] + [DEVICE] * 3
    g = vg.zeros(N, device=dev)
    assert [x.tier for x in (a, d, e, f, g)] == [HOST] + [DEVICE] * 4
    touch(b)  # b comes back; d is now the least recently used resident array
    assert [x.tier for x in (b, d, e, f, g)] == [DEVICE, HOST, DEVICE, DEVICE, DEVICE]


def test_lru_is_refreshed_by_ops_on_resident_arrays(small, rng):
    """Using a resident array (an op, a kernel, an expression) makes it recently used."""
    dev = small
    a, b, c = (vg.asarray(f32(rng), device=dev) for _ in range(3))
    float(vg.sum(a))  # a is used by an op...
    bump_f32[N](c)  # ...and c by a kernel: b is the least recently used now
    d = vg.zeros(N, device=dev)
    e = vg.zeros(N, device=dev)
    assert [x.tier for x in (a, b, c, d, e)] == [DEVICE, HOST, DEVICE, DEVICE, DEVICE]
    # a is used by an expression whose result needs room: c (used before d and e were
    # made) goes, not a
    r = (a * 2).eval()
    assert [x.tier for x in (a, c, d, e, r)] == [DEVICE, HOST, DEVICE, DEVICE, DEVICE]


def _check_budgets(dev: vg.Device, largest: int) -> None:
    s = vg.memory.stats().loc[dev.name]
    for tier in TIERS:
        assert s.loc[tier, "used"] == used(dev, tier)
    dv, hs = s.loc[DEVICE], s.loc[HOST]
    assert dv["capacity"] == DEVICE_BUDGET and hs["capacity"] == HOST_BUDGET
    assert dv["used"] <= dv["capacity"]  # nothing is in use: the device never goes over
    assert dv["peak"] <= dv["capacity"] + largest
    assert MEM._host_used <= HOST_BUDGET + largest  # over by at most the array moving in
    assert hs["peak"] <= hs["capacity"] + largest
    assert s.loc[DISK, "capacity"] > 0


def test_budgets_are_never_exceeded(small, rng):
    dev = small
    vg.memory.clear()  # peaks := what is used now, so that they describe this test
    hs = [f32(rng) for _ in range(20)]
    xs = []
    for h in hs:
        xs.append(vg.asarray(h, device=dev))
        _check_budgets(dev, h.nbytes)
    assert sum(used(dev, t) for t in TIERS) == sum(h.nbytes for h in hs)
    assert [x.tier for x in xs] == [DISK] * 8 + [HOST] * 8 + [DEVICE] * 4
    for x, h in zip(xs, hs, strict=True):  # bring every one back, in order of age
        touch(x)
        same_bits(x.numpy(), h)
        _check_budgets(dev, h.nbytes)
    assert [x.tier for x in xs[-4:]] == [DEVICE] * 4
    s = vg.memory.stats().loc[dev.name]
    assert s.loc[DEVICE, "spills"] >= 20 and s.loc[HOST, "spills"] >= 8
    assert s.loc[DISK, "unspills"] >= 8 and s.loc[DISK, "unspilled_bytes"] >= 8 * 4 * KIB
    for x, h in zip(xs, hs, strict=True):
        same_bits(x.numpy(), h)
    del x, xs
    gc.collect()
    assert [used(dev, t) for t in TIERS] == [0, 0, 0]
    vg.memory.clear()  # peaks back to what is used now
    s = vg.memory.stats().loc[dev.name]
    assert list(s["peak"]) == [0, 0, 0] and list(s["arrays"]) == [0, 0, 0]


# ---- telemetry --------------------------------------------------------------------------------
def test_memory_events(small, rng):
    dev = small
    h = f32(rng)
    with events() as got:
        x = vg.asarray(h, device=dev)
        sid = x._st.id
        vg.memory.spill(x, HOST)
        vg.memory.spill(x, DISK)
        touch(x)
        vg.memory.spill(x, HOST)
        vg.memory.prefetch(x)
        assert vg.memory.wait(timeout=30)
        touch(x)  # prefetched: no move (WebGPU: its host copy is dropped)
        del x
        gc.collect()
    mine = [e for e in got if e.array == sid]
    nb = h.nbytes
    want = [
        ("alloc", None, DEVICE, nb),
        ("spill", DEVICE, HOST, nb),
        ("spill", HOST, DISK, nb),
        ("unspill", DISK, DEVICE, nb),
        ("spill", DEVICE, HOST, nb),
        ("prefetch", HOST, DEVICE, nb),
    ]
    if not dev.host_is_device:
        want.append(("evict", HOST, None, nb))
    want.append(("free", DEVICE, None, nb))
    assert [(e.kind, e.src, e.dst, e.bytes) for e in mine] == want
    for e in mine:
        assert e.device == dev.name and e.reason and e.seconds >= 0
        assert set(e.used) == {DEVICE, HOST, DISK}
        d = e.as_dict()
        assert (d["event"], d["from"], d["to"], d["bytes"]) == (e.kind, e.src, e.dst, nb)
        assert d["device_used"] == e.used[DEVICE]
        assert e.kind in repr(e)
    assert mine[0].used[DEVICE] >= nb  # the tiers right after each event
    assert mine[1].used[HOST] >= nb and mine[2].used[DISK] >= nb
    if dev.host_is_device:
        assert "same RAM" in mine[1].reason  # a relabel, said so
    assert mine[-1].used == {DEVICE: used(dev, DEVICE), HOST: MEM._host_used,
                             DISK: MEM._disk_used}  # fmt: skip
    # kinds filter the subscription
    with events("spill") as only:
        y = vg.asarray(h, device=dev)
        vg.memory.spill(y, HOST)
        touch(y)
    assert [e.kind for e in only] == ["spill"]


# ---- the spill directory ----------------------------------------------------------------------
def test_spill_files_are_private_and_removed(small, tmp_path, rng):
    dev = small
    hx, hy = f32(rng), f32(rng)
    x, y = vg.asarray(hx, device=dev), vg.asarray(hy, device=dev)
    vg.memory.spill(x, DISK)
    vg.memory.spill(y, DISK)
    px, py = x._st.path, y._st.path
    d = os.path.dirname(px)
    assert os.path.dirname(py) == d and os.path.dirname(d) == str(tmp_path)
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    for p in (px, py):
        assert os.path.isfile(p) and stat.S_IMODE(os.stat(p).st_mode) == 0o600
    same_bits(np.load(px), hx)  # a .npy anybody (with the rights) can inspect
    assert files_under(tmp_path) == {px, py}
    touch(x)  # back on the device: its file is stale and goes
    assert not os.path.exists(px) and files_under(tmp_path) == {py}
    del y
    gc.collect()
    assert not os.path.exists(py) and files_under(tmp_path) == set()
    assert os.path.isdir(d)
    assert MEM._disk_used == 0
    vg.memory.clear()  # no array has a file there any more: the directory goes
    assert not os.path.exists(d)
    vg.memory.spill(x, DISK)  # and is made again when needed
    assert os.path.isfile(x._st.path) and os.path.dirname(x._st.path) != d
    vg.memory.clear()  # not while an array needs it
    assert os.path.isfile(x._st.path)
    same_bits(x.numpy(), hx)


def test_spill_directory_is_removed_at_exit(tmp_path):
    code = textwrap.dedent(
        """
        import sys
        import numpy as np
        import vgpu_nb as vg
        vg.memory.configure(spill_dir=sys.argv[1])
        x = vg.asarray(np.arange(1000.0), device="numpy")
        vg.memory.spill(x, "disk")
        print(x._st.path)
        """
    )
    env = {**os.environ, "XDG_RUNTIME_DIR": os.environ.get("XDG_RUNTIME_DIR", "/tmp")}
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True, text=True, timeout=120, env=env, check=True,
    )  # fmt: skip
    path = out.stdout.strip().splitlines()[-1]
    assert path.startswith(str(tmp_path) + os.sep) and path.endswith(".npy")
    assert not os.path.exists(path) and os.listdir(tmp_path) == []


# ---- out of device memory ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ["numpy", "numba"])
def test_numpy_views_pin_arrays(name, tmp_path):
    dev = vg.get_device(name)
    vg.memory.configure(device="16KiB", host="32KiB", spill_dir=tmp_path, devices=name)
    a = vg.asarray(np.arange(2048, dtype=np.int32), device=dev)  # 8 KiB each
    b = vg.asarray(np.arange(2048, dtype=np.int32) * 2, device=dev)
    va, vb = a.numpy(), b.numpy()  # zero-copy views of the device memory
    assert np.shares_memory(va, a.numpy())
    with pytest.raises(OutOfDeviceMemory) as ei:
        vg.zeros(1024, dtype=vg.i32, device=dev)
    err = ei.value
    assert isinstance(err, MemoryError)
    msg = str(err)
    assert "needs 4 KiB" in msg and name in msg and "16 KiB" in msg  # needed, where, budget
    assert f"#{a._st.id}" in msg and f"#{b._st.id}" in msg and "in use" in msg  # held by
    assert "drop NumPy views" in err.fix and "configure(device=" in err.fix  # what to do
    assert a.tier == b.tier == DEVICE and used(dev, DEVICE) == 16 * KIB
    with pytest.raises(SpillFailed, match="in use"):
        vg.memory.spill(a)
    assert a.tier == DEVICE
    va[0] = 99  # the views are still the arrays' memory
    assert int(a.numpy()[0]) == 99
    del va
    c = vg.zeros(1024, dtype=vg.i32, device=dev)  # now a may go; b (still viewed) stays
    assert (a.tier, b.tier, c.tier) == (HOST, DEVICE, DEVICE)
    assert int(a.numpy()[0]) == 99 and np.shares_memory(vb, b.numpy())
    np.testing.assert_array_equal(b.numpy(), np.arange(2048, dtype=np.int32) * 2)


def test_array_larger_than_the_device_cannot_come_back(small, rng):
    x = vg.asarray(f32(rng, 6000), device=small)  # 24000 B > 16 KiB
    with pytest.raises(OutOfDeviceMemory, match="more than its whole device budget") as ei:
        x._buf  # noqa: B018  (what every non-streaming op reads)
    assert "configure(device=" in ei.value.fix
    assert x.tier == HOST


# ---- arrays larger than a tier ----------------------------------------------------------------
def test_arrays_larger_than_a_budget_are_made_lower(small, tmp_path, rng):
    dev = small
    h = f32(rng, 6000)  # 24000 B: more than the device budget, fits the host's
    with events("alloc") as got:
        x = vg.asarray(h, device=dev)
    assert x.tier == HOST and x.placement == {HOST} and type(x) is _Spilled
    assert [(e.src, e.dst, e.bytes) for e in got] == [(None, HOST, h.nbytes)]
    assert "larger than the device budget" in got[0].reason
    h_copy = h.copy()
    h[:] = 0  # the array is a copy of the data
    same_bits(x.numpy(), h_copy)
    assert used(dev, DEVICE) == 0 and used(dev, HOST) == h.nbytes
    big = rng.integers(-(2**31), 2**31, 10_000, dtype=np.int64).astype(np.int32)  # 40000 B
    with events("alloc") as got:
        y = vg.asarray(big, device=dev)
    assert y.tier == DISK and y.placement == {DISK}
    assert [(e.src, e.dst) for e in got] == [(None, DISK)]
    assert os.path.isfile(y._st.path) and stat.S_IMODE(os.stat(y._st.path).st_mode) == 0o600
    same_bits(y.numpy(), big)
    z = vg.zeros(6000, device=dev)  # host tier (x goes to disk to make room)
    assert z.tier == HOST and x.tier == DISK
    same_bits(z.numpy(), np.zeros(6000, np.float32))
    same_bits(x.numpy(), h_copy)
    w = vg.zeros((100, 100), dtype=vg.i32, device=dev)
    f = vg.full(10_000, 7.5, dtype=vg.f32, device=dev)
    g = vg.full((50, 200), -3, dtype=vg.i32, device=dev)
    e = vg.empty(20_000, dtype=vg.u32, device=dev)
    o = vg.ones(12_000, dtype=vg.f32, device=dev)
    for a in (w, f, g, e, o):
        assert a.tier == DISK and a.placement == {DISK}
    same_bits(w.numpy(), np.zeros((100, 100), np.int32))
    same_bits(f.numpy(), np.full(10_000, 7.5, np.float32))
    same_bits(g.numpy(), np.full((50, 200), -3, np.int32))
    same_bits(o.numpy(), np.ones(12_000, np.float32))
    assert e.numpy().shape == (20_000,) and e.numpy().dtype == np.uint32
    arrays = (x, y, z, w, f, g, e, o)
    assert used(dev, DEVICE) == 0
    assert used(dev, HOST) == z.nbytes
    assert used(dev, DISK) == sum(a.nbytes for a in arrays if a.tier == DISK)
    assert files_under(tmp_path) == {a._st.path for a in arrays if a.tier == DISK}
    del a, arrays, x, y, z, w, f, g, e, o
    gc.collect()
    assert [used(dev, t) for t in TIERS] == [0, 0, 0]
    assert files_under(tmp_path) == set()
