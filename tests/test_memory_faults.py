"""Faults in the memory tiers: an unwritable spill directory, a full disk, host memory
running out, arrays freed while their prefetch is queued or running, and a
KeyboardInterrupt in the middle of a spill.

The rule under test: a failed move leaves the array where it was, with its data, raises
:class:`SpillFailed` (an interrupt propagates as is), leaves no partial file behind and
keeps the accounting equal to what the live arrays hold; later operations still work.
"""

from __future__ import annotations

import errno
import gc
import os
import threading
import time
import warnings
import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import vgpu_nb as vg
from vgpu_nb.errors import SpillFailed
from vgpu_nb.memory import spill_dir as sd
from vgpu_nb.memory.manager import DEVICE, DISK, HOST, MEM, TIERS, Storage
from vgpu_nb.telemetry import BUS

KIB = 1024
N = 1024  # elements of a 4 KiB f32 array


_BEFORE: list[weakref.ref] = []  # the storages alive when the test started


@pytest.fixture(autouse=True)
def _restore_memory() -> Iterator[None]:
    _BEFORE[:] = [weakref.ref(s) for s in live_storages()]
    yield
    vg.memory.wait(timeout=60)
    vg.memory.reset()
    gc.collect()


@pytest.fixture
def small(device: vg.Device, tmp_path: Any) -> vg.Device:
    """16 KiB for the device under test, 32 KiB of host memory, spills into tmp_path/spill."""
    vg.memory.configure(device="16KiB", host="32KiB", spill_dir=tmp_path / "spill",
                        devices=device.name)  # fmt: skip
    return device


@pytest.fixture
def unwritable(tmp_path: Any) -> Iterator[str]:
    """A spill directory parent that cannot be written. Root ignores permissions, so as
    root it is a path under /proc, where nothing can be created."""
    if os.geteuid() == 0:
        yield "/proc/vgpu_nb_no_such_dir"
        return
    d = tmp_path / "read-only"
    d.mkdir()
    d.chmod(0o500)
    yield str(d)
    d.chmod(0o700)


def f32(rng: np.random.Generator, n: int = N) -> np.ndarray:
    return rng.standard_normal(n).astype(np.float32)


def same_bits(got: Any, want: np.ndarray) -> None:
    got = np.asarray(got)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.tobytes() == want.tobytes()


def used(dev: vg.Device, tier: str) -> int:
    return MEM._tier(dev.name, tier).used


def files_under(root: Any) -> set[str]:
    return {os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs}


def live_storages() -> list[Storage]:
    return [o for o in gc.get_objects() if type(o) is Storage]


def check_accounting(dev: vg.Device, arrays: list[vg.Array], root: Any) -> None:
    """Each tier's bytes are exactly what the live storages hold there: those of
    ``arrays`` and those that were alive before the test (other tests' arrays: our small
    budgets move them too); no other storage is alive (nothing leaked); the spill
    directory holds exactly the files of the storages with a disk copy."""
    try:
        _check_accounting(dev, arrays, root)
    except AssertionError:  # exception tracebacks can hold storages in reference cycles
        gc.collect()
        _check_accounting(dev, arrays, root)
    assert MEM._lock.acquire(timeout=5)  # nobody left the manager locked
    MEM._lock.release()


def _check_accounting(dev: vg.Device, arrays: list[vg.Array], root: Any) -> None:
    mine = {a._st.id: a._st for a in arrays}
    before = {s.id: s for s in (r() for r in _BEFORE) if s is not None}
    leaked = [s for s in live_storages() if s.id not in mine and s.id not in before]
    assert leaked == []
    want = dict.fromkeys(TIERS, 0)
    for st in {**before, **mine}.values():
        assert st.tier in st.placement
        if st.device is not dev:
            continue
        if st.buf is not None:
            want[DEVICE] += st.held
        if HOST in st.placement:
            want[HOST] += st.nbytes
        if st.path is not None:
            want[DISK] += st.nbytes
    assert {t: used(dev, t) for t in TIERS} == want
    paths = {st.path for st in {**before, **mine}.values() if st.path is not None}
    assert files_under(root) == {p for p in paths if p.startswith(str(root) + os.sep)}


def disk_full(path: str, offset: int, a: np.ndarray) -> None:
    """``write_at`` on a full disk: a few bytes land, then ENOSPC."""
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(a.tobytes()[:16])
    raise OSError(errno.ENOSPC, "No space left on device")


def interrupted(path: str, offset: int, a: np.ndarray) -> None:
    """``write_at`` hit by ^C half-way."""
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(a.tobytes()[: a.nbytes // 2])
    raise KeyboardInterrupt


# ---- an unwritable spill directory ------------------------------------------------------------
def test_unwritable_spill_dir(small, unwritable, tmp_path, rng):
    dev = small
    vg.memory.configure(spill_dir=unwritable)
    h = f32(rng)
    x = vg.asarray(h, device=dev)
    vg.memory.spill(x, HOST)
    with pytest.raises(SpillFailed) as ei:
        vg.memory.spill(x, DISK)
    err = ei.value
    assert isinstance(err, OSError)
    assert "spill directory" in str(err) and "configure(spill_dir=" in err.fix
    del ei, err
    assert x.tier == HOST and x.placement == {HOST}
    same_bits(x.numpy(), h)
    check_accounting(dev, [x], tmp_path)
    # straight from the device: the array stays on the device
    y = vg.asarray(h, device=dev)
    with pytest.raises(SpillFailed):
        vg.memory.spill(y, DISK)
    assert y.tier in (DEVICE, HOST) and DISK not in y.placement
    same_bits(y.numpy(), h)
    check_accounting(dev, [x, y], tmp_path)
    # later operations still work
    assert float(vg.sum(x)) == pytest.approx(float(h.sum()), rel=1e-4, abs=1e-3)
    assert x.tier == DEVICE
    same_bits(x.numpy(), h)
    # an allocation that needs the disk tier (the host tier is full) fails the same way
    keep = [x, y]
    with pytest.raises(SpillFailed, match="spill directory"):
        for _ in range(20):
            keep.append(vg.asarray(f32(rng), device=dev))
    assert len(keep) == 2 + 3 + 7  # the device (4 arrays) and host memory (8) are full
    assert MEM._host_used == 32 * KIB
    check_accounting(dev, keep, tmp_path)
    same_bits(x.numpy(), h)
    del keep[2:]  # freeing arrays makes room again
    assert float(vg.sum(x)) == pytest.approx(float(h.sum()), rel=1e-4, abs=1e-3)
    keep.append(vg.asarray(f32(rng), device=dev))
    check_accounting(dev, keep, tmp_path)
    # and with a usable directory, spilling works again
    vg.memory.configure(spill_dir=tmp_path / "ok")
    vg.memory.spill(x, DISK)
    assert x.tier == DISK
    assert x._st.path.startswith(str(tmp_path / "ok"))
    same_bits(x.numpy(), h)
    check_accounting(dev, keep, tmp_path)


def test_big_array_with_an_unwritable_spill_dir(small, unwritable, tmp_path):
    vg.memory.configure(spill_dir=unwritable)
    with pytest.raises(SpillFailed):
        vg.asarray(np.ones(20_000, np.float32), device=small)  # 80 KB: disk tier only
    with pytest.raises(SpillFailed):
        vg.full(20_000, 3.0, dtype=vg.f32, device=small)
    check_accounting(small, [], tmp_path)


def test_stats_with_a_spill_dir_that_does_not_exist_yet(tmp_path, unwritable):
    x = vg.asarray([1.0, 2.0], device="numpy")
    for where in (tmp_path / "made" / "on" / "first" / "spill", unwritable):
        vg.memory.configure(spill_dir=where)
        s = vg.memory.stats()  # (the disk row's capacity is the free space of the parent)
        assert s.loc[("numpy", DEVICE), "used"] >= x.nbytes


# ---- a full disk ------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["explicit", "lru", "big-array", "big-full"])
def test_disk_full(small, tmp_path, monkeypatch, rng, how):
    dev = small
    h = f32(rng)
    x = vg.asarray(h, device=dev)
    vg.memory.spill(x, HOST)
    keep = [x]
    if how == "lru":  # fill the device and the host tier: the next array needs the disk
        keep += [vg.asarray(f32(rng), device=dev) for _ in range(11)]
        assert MEM._host_used == 32 * KIB and x.tier == HOST
    before = {t: used(dev, t) for t in TIERS}
    tiers = [a.tier for a in keep]
    calls: list[str] = []

    def full(path: str, offset: int, a: np.ndarray) -> None:
        calls.append(path)
        disk_full(path, offset, a)

    monkeypatch.setattr(sd, "write_at", full)
    with pytest.raises(SpillFailed) as ei:
        if how == "explicit":
            vg.memory.spill(x, DISK)
        elif how == "lru":
            vg.asarray(f32(rng), device=dev)
        elif how == "big-array":
            vg.asarray(f32(rng, 20_000), device=dev)
        else:
            vg.full(20_000, 3.0, dtype=vg.f32, device=dev)
    assert "disk is full" in str(ei.value)
    assert "free disk space" in ei.value.fix
    del ei  # (test_retry_while_the_error_is_kept keeps it)
    assert calls and not any(os.path.exists(p) for p in calls)  # partial files removed
    assert [a.tier for a in keep] == tiers  # nothing moved
    assert {t: used(dev, t) for t in TIERS} == before
    same_bits(x.numpy(), h)
    check_accounting(dev, keep, tmp_path)
    monkeypatch.undo()  # space again: everything works
    vg.memory.spill(x, DISK)
    assert x.tier == DISK
    same_bits(x.numpy(), h)
    assert float(vg.sum(x)) == pytest.approx(float(h.sum()), rel=1e-4, abs=1e-3)
    check_accounting(dev, keep, tmp_path)


def test_disk_full_in_pwrite(small, tmp_path, monkeypatch, rng):
    """The same, one level down: ``os.pwrite`` itself reports ENOSPC after a short write."""
    dev = small
    h = f32(rng)
    x = vg.asarray(h, device=dev)
    vg.memory.spill(x, HOST)
    real = os.pwrite
    n = [0]

    def pwrite(fd: int, data: Any, offset: int) -> int:
        n[0] += 1
        if n[0] == 1:
            return real(fd, bytes(data)[:100], offset)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sd.os, "pwrite", pwrite)
    with pytest.raises(SpillFailed, match="disk is full"):
        vg.memory.spill(x, DISK)
    monkeypatch.undo()
    assert n[0] == 2 and x.tier == HOST
    same_bits(x.numpy(), h)
    check_accounting(dev, [x], tmp_path)


def test_host_memory_exhausted(small, tmp_path, monkeypatch, rng):
    """A device→host copy that runs out of RAM: SpillFailed, the array stays."""
    dev = small
    h = f32(rng)
    if dev.host_is_device:
        pytest.skip(f"{dev.name}: a device→host spill is a relabel, it allocates nothing")
    x = vg.asarray(h, device=dev)

    def no_ram(*args: Any) -> Any:
        raise MemoryError

    monkeypatch.setattr(dev, "to_host_tier", no_ram)
    with pytest.raises(SpillFailed, match="out of host memory"):
        vg.memory.spill(x, HOST)
    assert x.tier == DEVICE and x.placement == {DEVICE} and type(x) is vg.Array
    monkeypatch.undo()
    same_bits(x.numpy(), h)
    check_accounting(dev, [x], tmp_path)


# ---- arrays freed while prefetching -----------------------------------------------------------
def test_arrays_freed_while_their_prefetch_is_queued_or_running(small, tmp_path, monkeypatch, rng):
    dev = small
    xs = [vg.asarray(f32(rng), device=dev) for _ in range(3)]
    for x, to in zip(xs, (DISK, HOST, DISK), strict=True):
        vg.memory.spill(x, to)
    ids = {x._st.id for x in xs}
    gate, started = threading.Event(), threading.Event()
    load = MEM._load

    def slow_load(st: Any) -> Any:
        started.set()
        assert gate.wait(30)
        return load(st)

    monkeypatch.setattr(MEM, "_load", slow_load)
    freed: list[Any] = []
    sub = BUS.subscribe(freed.append, kinds=["free"])
    try:
        vg.memory.prefetch(*xs)
        assert started.wait(30)  # the first is being copied, the others are queued
        del x, xs
        gc.collect()
        gate.set()
        assert vg.memory.wait(timeout=30)
        gc.collect()
    finally:
        gate.set()
        sub.close()
    monkeypatch.undo()
    assert {e.array for e in freed} >= ids
    check_accounting(dev, [], tmp_path)  # all given back, no file left, nothing leaked
    # the prefetcher still works afterwards
    y = vg.asarray(np.arange(N, dtype=np.float32), device=dev)
    vg.memory.spill(y, DISK)
    vg.memory.prefetch(y)
    assert vg.memory.wait(timeout=30)
    assert y.tier == DEVICE
    same_bits(y.numpy(), np.arange(N, dtype=np.float32))


def test_failed_prefetch_is_harmless(small, tmp_path, monkeypatch, rng):
    """A prefetch that fails warns, leaves the array where it was and keeps nothing alive."""
    dev = small
    h = f32(rng)
    x, y = vg.asarray(h, device=dev), vg.asarray(h, device=dev)
    vg.memory.spill(x, DISK)
    vg.memory.spill(y, HOST)

    def broken(st: Any) -> Any:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(MEM, "_load", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vg.memory.prefetch(x, y)
        assert vg.memory.wait(timeout=30)
    assert sum("prefetch failed" in str(w.message) for w in caught) == 2
    monkeypatch.undo()
    assert (x.tier, y.tier) == (DISK, HOST)
    assert x._st.busy is None and y._st.busy is None
    same_bits(x.numpy(), h)
    check_accounting(dev, [x, y], tmp_path)
    assert float(vg.sum(x)) == pytest.approx(float(h.sum()), rel=1e-4, abs=1e-3)
    # a failed prefetch of an array deleted meanwhile must not keep its memory alive
    gate, started = threading.Event(), threading.Event()

    def broken_later(st: Any) -> Any:
        started.set()
        assert gate.wait(30)
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(MEM, "_load", broken_later)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vg.memory.prefetch(y)
        assert started.wait(30)
        del y  # while its prefetch runs
        gate.set()
        assert vg.memory.wait(timeout=30)
    assert any("prefetch failed" in str(w.message) for w in caught)
    monkeypatch.undo()
    gc.collect()
    check_accounting(dev, [x], tmp_path)


def test_prefetch_racing_with_ops(small, tmp_path, rng):
    """Ops on arrays whose prefetch is in flight wait for it and see the right data."""
    dev = small
    hs = [f32(rng) for _ in range(3)]
    xs = [vg.asarray(h, device=dev) for h in hs]
    for _ in range(5):
        for x in xs:
            vg.memory.spill(x, DISK)
        vg.memory.prefetch(*xs)
        for x, h in zip(xs, hs, strict=True):
            assert float(vg.sum(x)) == pytest.approx(float(h.sum()), rel=1e-4, abs=1e-3)
        vg.memory.spill(xs[0], HOST)
        vg.memory.prefetch(xs[0])
        same_bits(xs[0].numpy(), hs[0])
    assert vg.memory.wait(timeout=30)
    for x, h in zip(xs, hs, strict=True):
        same_bits(x.numpy(), h)
    check_accounting(dev, xs, tmp_path)


# ---- KeyboardInterrupt mid-spill --------------------------------------------------------------
def test_keyboard_interrupt_mid_spill(small, tmp_path, monkeypatch, rng):
    dev = small
    h = f32(rng)
    x = vg.asarray(h, device=dev)
    vg.memory.spill(x, HOST)
    before = {t: used(dev, t) for t in TIERS}
    monkeypatch.setattr(sd, "write_at", interrupted)
    with pytest.raises(KeyboardInterrupt):
        vg.memory.spill(x, DISK)
    assert x.tier == HOST and x.placement == {HOST}
    assert {t: used(dev, t) for t in TIERS} == before
    same_bits(x.numpy(), h)
    check_accounting(dev, [x], tmp_path)  # no half-written file left behind
    # ^C during an LRU spill made by an allocation: the allocation is abandoned
    keep = [x] + [vg.asarray(f32(rng), device=dev) for _ in range(4)]
    monkeypatch.undo()
    keep += [vg.asarray(f32(rng), device=dev) for _ in range(7)]  # host tier full now
    monkeypatch.setattr(sd, "write_at", interrupted)
    tiers = [a.tier for a in keep]
    with pytest.raises(KeyboardInterrupt):
        vg.asarray(f32(rng), device=dev)
    assert [a.tier for a in keep] == tiers
    check_accounting(dev, keep, tmp_path)
    monkeypatch.undo()
    vg.memory.spill(x, DISK)
    assert x.tier == DISK
    same_bits(x.numpy(), h)
    assert float(vg.sum(x)) == pytest.approx(float(h.sum()), rel=1e-4, abs=1e-3)
    check_accounting(dev, keep, tmp_path)


def test_keyboard_interrupt_while_making_a_big_array(small, tmp_path, monkeypatch):
    monkeypatch.setattr(sd, "write_at", interrupted)
    with pytest.raises(KeyboardInterrupt):
        vg.asarray(np.ones(20_000, np.float32), device=small)  # 80 KB: the disk tier
    with pytest.raises(KeyboardInterrupt):
        vg.full(20_000, 3.0, dtype=vg.f32, device=small)
    monkeypatch.undo()
    gc.collect()
    check_accounting(small, [], tmp_path)
    x = vg.full(20_000, 3.0, dtype=vg.f32, device=small)
    assert x.tier == DISK
    same_bits(x.numpy(), np.full(20_000, 3.0, np.float32))
    check_accounting(small, [x], tmp_path)


def test_keyboard_interrupt_in_a_device_to_host_copy(small, tmp_path, monkeypatch, rng):
    dev = small
    h = f32(rng)
    if dev.host_is_device:
        pytest.skip(f"{dev.name}: a device→host spill is a relabel, no copy to interrupt")
    x = vg.asarray(h, device=dev)

    def interrupt(*args: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(dev, "to_host_tier", interrupt)
    with pytest.raises(KeyboardInterrupt):
        vg.memory.spill(x, HOST)
    monkeypatch.undo()
    assert x.tier == DEVICE and x.placement == {DEVICE} and type(x) is vg.Array
    same_bits(x.numpy(), h)
    check_accounting(dev, [x], tmp_path)
    vg.memory.spill(x, HOST)
    assert x.tier == HOST
    same_bits(x.numpy(), h)


def test_spill_waits_for_a_running_prefetch(small, tmp_path, monkeypatch, rng):
    """An explicit spill of an array being prefetched waits for the copy to finish."""
    dev = small
    h = f32(rng)
    x = vg.asarray(h, device=dev)
    vg.memory.spill(x, DISK)
    gate, started = threading.Event(), threading.Event()
    load = MEM._load

    def slow_load(st: Any) -> Any:
        started.set()
        assert gate.wait(30)
        return load(st)

    monkeypatch.setattr(MEM, "_load", slow_load)
    vg.memory.prefetch(x)
    assert started.wait(30)
    done = threading.Event()

    def spill() -> None:
        vg.memory.spill(x, HOST)
        done.set()

    t = threading.Thread(target=spill)
    t.start()
    time.sleep(0.1)
    assert not done.is_set()  # waiting for the prefetch
    gate.set()
    t.join(30)
    assert done.is_set()
    monkeypatch.undo()
    assert vg.memory.wait(timeout=30)
    assert x.tier in (HOST, DISK) and DEVICE not in x.placement
    same_bits(x.numpy(), h)
    check_accounting(dev, [x], tmp_path)


def test_retry_while_the_error_is_kept(small, tmp_path, monkeypatch, rng):
    """A notebook keeps the last exception (and its traceback) alive: a failed spill's
    error must not pin the data it failed to write, or the retry is refused as in use."""
    dev = small
    h = f32(rng)
    x = vg.asarray(h, device=dev)
    vg.memory.spill(x, HOST)
    monkeypatch.setattr(sd, "write_at", disk_full)
    with pytest.raises(SpillFailed) as ei:
        vg.memory.spill(x, DISK)
    monkeypatch.undo()
    kept = ei.value
    vg.memory.spill(x, DISK)
    assert x.tier == DISK and isinstance(kept.__cause__, OSError)
    same_bits(x.numpy(), h)
