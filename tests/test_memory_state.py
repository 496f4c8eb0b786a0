"""A stateful (hypothesis) test of the memory tiers: random sequences of allocations,
reads, kernel writes, frees, explicit spills, prefetches, reshaped views, expressions and
two-array launches under small budgets (device 64 KiB, host 128 KiB, arrays of 1-16 KiB),
checked against a NumPy reference model after every step.

Invariants (checked once queued prefetches are done):

* every live array's ``.numpy()`` equals the model (bit for bit: the data is int32);
* ``tier ∈ placement`` for every array, and views of one memory agree;
* each tier's accounted bytes equal the sum over the live storages (ours, and any that
  other tests left alive: our budgets move those too), and no tier exceeds its budget by
  more than the largest live array;
* the spill directory holds exactly the files of the arrays with a disk copy;
* on CPU devices, a NumPy view of a resident array pins it (it never moves while held),
  and writes through ``x.numpy()`` are writes to the array.

After each example everything made is freed and the accounting must be back where it was.

Runs on numba (device and host tier are one RAM: spills are relabels) and on wgpu:0
(real copies), each as its own ``TestCase``.
"""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
import weakref
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import vgpu_nb as vg
from vgpu_nb.array import _Spilled
from vgpu_nb.devices import all_infos
from vgpu_nb.errors import SpillFailed
from vgpu_nb.memory.manager import DEVICE, DISK, HOST, MEM, TIERS, Storage

DEVICE_BUDGET = 64 * 1024
HOST_BUDGET = 128 * 1024
MAX_ARRAYS = 12
AVAILABLE = {i.name for i in all_infos() if i.available}


pytestmark = pytest.mark.usefixtures("restore_memory")  # (tests/conftest.py)


@vg.kernel
def bump(x: vg.i32[:]):
    i = vg.tid()
    x[i] = x[i] * 3 + 1


@vg.kernel
def add_into(a: vg.i32[:], b: vg.i32[:]):
    i = vg.tid()
    a[i] = a[i] + b[i]


def _bump(a: np.ndarray) -> np.ndarray:
    return a * np.int32(3) + np.int32(1)


class MemoryMachine(RuleBasedStateMachine):
    """The model: ``arrays`` (handles, several per storage once reshaped) and ``model``
    (storage id → flat int32 reference data)."""

    DEVICE_NAME = "numba"

    def __init__(self) -> None:
        super().__init__()
        self.dev = vg.get_device(self.DEVICE_NAME)
        assert vg.memory.wait(timeout=60)
        self.dir = tempfile.mkdtemp(prefix="vgpu_nb-state-")
        vg.memory.configure(device=DEVICE_BUDGET, host=HOST_BUDGET, spill_dir=self.dir,
                            devices=self.dev.name)  # fmt: skip
        self.arrays: list[vg.Array] = []
        self.model: dict[int, np.ndarray] = {}
        self.views: dict[int, np.ndarray] = {}  # storage id → a NumPy view held (CPU)
        # storages that were alive before (other tests', or a failed example's still held
        # by its traceback): our budgets may move them too, so they are counted as well
        self.others = [weakref.ref(o) for o in gc.get_objects() if type(o) is Storage]

    # ---- helpers ----------------------------------------------------------------------------
    def pick(self, k: int) -> vg.Array:
        return self.arrays[k % len(self.arrays)]

    def add(self, x: vg.Array, data: np.ndarray) -> None:
        assert x.device is self.dev and x.dtype is vg.i32
        self.arrays.append(x)
        self.model[x._st.id] = data.reshape(-1).copy()

    def flat(self, x: vg.Array) -> vg.Array:
        return x if x.ndim == 1 else x.reshape(-1)

    # ---- rules --------------------------------------------------------------------------------
    @precondition(lambda self: len(self.arrays) < MAX_ARRAYS)
    @rule(
        n=st.integers(256, 4096),  # 1 KiB .. 16 KiB of int32
        seed=st.integers(0, 2**32 - 1),
        how=st.sampled_from(["asarray", "full", "zeros", "arange"]),
    )
    def allocate(self, n: int, seed: int, how: str) -> None:
        if how == "asarray":
            data = np.random.default_rng(seed).integers(-(2**31), 2**31, n, dtype=np.int32)
            x = vg.asarray(data, device=self.dev)
        elif how == "full":
            data = np.full(n, seed % 1000 - 500, np.int32)
            x = vg.full(n, int(data[0]), dtype=vg.i32, device=self.dev)
        elif how == "zeros":
            data = np.zeros(n, np.int32)
            x = vg.zeros(n, dtype=vg.i32, device=self.dev)
        else:
            data = np.arange(n, dtype=np.int32)
            x = vg.arange(n, dtype=vg.i32, device=self.dev)
        assert x.tier == DEVICE and x.placement == {DEVICE}
        self.add(x, data)

    @precondition(lambda self: self.arrays and len(self.arrays) < MAX_ARRAYS)
    @rule(k=st.integers(0, MAX_ARRAYS - 1), rows=st.sampled_from([2, 4, 8]))
    def reshape(self, k: int, rows: int) -> None:
        x = self.pick(k)
        if x.size % rows:
            return
        tier = x.tier
        v = x.reshape(rows, -1)
        assert v._st is x._st and v.tier == tier  # a view: nothing moves
        self.arrays.append(v)

    @precondition(lambda self: self.arrays)
    @rule(k=st.integers(0, MAX_ARRAYS - 1))
    def touch_sum(self, k: int) -> None:
        x = self.pick(k)
        got = int(vg.sum(x))
        assert got == int(self.model[x._st.id].sum(dtype=np.int64))
        assert x.tier == DEVICE and x.placement == {DEVICE}

    @precondition(lambda self: self.arrays)
    @rule(k=st.integers(0, MAX_ARRAYS - 1))
    def touch_kernel(self, k: int) -> None:
        x = self.pick(k)
        f = self.flat(x)
        bump[f.size](f)
        ref = self.model[x._st.id]
        ref[:] = _bump(ref)
        assert x.tier == DEVICE and x.placement == {DEVICE}

    @precondition(lambda self: self.arrays)
    @rule(i=st.integers(0, MAX_ARRAYS - 1), j=st.integers(0, MAX_ARRAYS - 1))
    def launch_two(self, i: int, j: int) -> None:
        a, b = self.flat(self.pick(i)), self.flat(self.pick(j))
        n = min(a.size, b.size)
        ra, rb = self.model[a._st.id], self.model[b._st.id]
        if a._st is b._st and not self.dev.host_is_device:
            b = b.copy()  # WebGPU cannot bind one buffer twice when a kernel writes it
        add_into[n](a, b)
        ra[:n] = ra[:n] + rb[:n]  # (rb may be ra: each thread reads and writes its own i)
        assert a.tier == b.tier == DEVICE

    @precondition(lambda self: self.arrays and len(self.arrays) < MAX_ARRAYS)
    @rule(k=st.integers(0, MAX_ARRAYS - 1))
    def expression(self, k: int) -> None:
        x = self.pick(k)
        y = (x * 3 + 1).eval()
        assert y.shape == x.shape and y._st is not x._st
        self.add(y, _bump(self.model[x._st.id]))

    @precondition(lambda self: self.arrays)
    @rule(k=st.integers(0, MAX_ARRAYS - 1))
    def free(self, k: int) -> None:
        self.arrays.pop(k % len(self.arrays))
        live = {a._st.id for a in self.arrays}
        for sid in set(self.model) - live:
            del self.model[sid]
            self.views.pop(sid, None)  # (a view of a freed array is plain NumPy memory)

    @precondition(lambda self: self.dev.host_is_device and self.arrays and not self.views)
    @rule(k=st.integers(0, MAX_ARRAYS - 1))
    def hold_view(self, k: int) -> None:
        """CPU devices: ``x.numpy()`` of a resident array is its memory; while a NumPy view
        is held the array is in use and must stay put (one at a time: 16 KiB at most)."""
        x = self.pick(k)
        if x.tier != DEVICE:
            return
        v = x.numpy()
        assert np.shares_memory(v, x._st.buf)
        self.views[x._st.id] = v

    @precondition(lambda self: self.dev.host_is_device and self.arrays)
    @rule(k=st.integers(0, MAX_ARRAYS - 1), value=st.integers(-(2**31), 2**31 - 1))
    def write_through_numpy(self, k: int, value: int) -> None:
        """CPU devices: ``x.numpy()`` of an array in device or host memory is that memory
        (from disk it is a copy); a write through it is a write to the array."""
        x = self.pick(k)
        assert vg.memory.wait(timeout=60)
        tier = x.tier
        v = x.numpy()
        if tier == DISK:
            return
        v.reshape(-1)[0] = value
        self.model[x._st.id][0] = value

    @precondition(lambda self: self.views)
    @rule(value=st.integers(-(2**31), 2**31 - 1))
    def write_view(self, value: int) -> None:
        """Writing through the held view writes the array (it is its memory)."""
        for sid, v in self.views.items():
            v.reshape(-1)[0] = value
            self.model[sid][0] = value

    @precondition(lambda self: self.views)
    @rule()
    def drop_view(self) -> None:
        self.views.clear()

    @precondition(lambda self: self.arrays)
    @rule(k=st.integers(0, MAX_ARRAYS - 1), to=st.sampled_from([HOST, DISK]))
    def spill(self, k: int, to: str) -> None:
        x = self.pick(k)
        if x._st.id in self.views:
            with pytest.raises(SpillFailed, match="in use"):
                vg.memory.spill(x, to)
            assert x.tier == DEVICE
            return
        vg.memory.spill(x, to)
        # at least that far down (an array with a valid disk copy, say prefetched from
        # disk and not touched since, just drops its device copy)
        assert DEVICE not in x.placement and TIERS.index(x.tier) >= TIERS.index(to)

    @precondition(lambda self: self.arrays)
    @rule(k=st.integers(0, MAX_ARRAYS - 1), wait=st.booleans())
    def prefetch(self, k: int, wait: bool) -> None:
        x = self.pick(k)
        vg.memory.prefetch(x)
        if wait:
            assert vg.memory.wait(timeout=60)

    @precondition(lambda self: self.arrays)
    @rule(k=st.integers(0, MAX_ARRAYS - 1))
    def read(self, k: int) -> None:
        x = self.pick(k)
        assert vg.memory.wait(timeout=60)
        tier, placement = x.tier, x.placement
        np.testing.assert_array_equal(x.numpy().reshape(-1), self.model[x._st.id])
        assert x.tier == tier  # reading does not move the array...
        if self.dev.host_is_device and tier == DEVICE:  # ...but where the result is the
            assert x.placement == {DEVICE}  # device memory, lower copies are stale now
        else:
            assert x.placement == placement

    # ---- invariants ---------------------------------------------------------------------------
    @invariant()
    def consistent(self) -> None:
        assert vg.memory.wait(timeout=60)
        storages: dict[int, Any] = {}
        for x in self.arrays:
            s = x._st
            storages[s.id] = s
            assert x.tier == s.tier and x.placement == s.placement
            assert x.tier in x.placement and x.placement <= set(TIERS)
            if type(x) is vg.Array:  # touched since it last moved: only the device copy
                assert s.buf is not None and x.placement == {DEVICE}
            else:  # spilled (or prefetched, not touched yet)
                assert type(x) is _Spilled and (s.buf is None) == (s.tier != DEVICE)
            assert all(type(v) is type(x) for v in self.arrays if v._st is s)
            if self.dev.host_is_device and type(x) is _Spilled and s.buf is not None:
                got = np.array(s.buf)  # (x.numpy() would end the prefetched state: see read)
            else:
                got = x.numpy()
            np.testing.assert_array_equal(got.reshape(-1), self.model[s.id])
            del got
        assert set(storages) == set(self.model)
        for sid, v in self.views.items():  # pinned: never moved, and the view is its memory
            s = storages[sid]
            assert s.tier == DEVICE and s.placement == {DEVICE} and np.shares_memory(v, s.buf)
            np.testing.assert_array_equal(v.reshape(-1), self.model[sid])
        largest = max((max(s.nbytes, s.held) for s in storages.values()), default=0)
        self.check_accounting(list(storages.values()))
        assert MEM._tier(self.dev.name, DEVICE).used <= DEVICE_BUDGET + largest
        assert MEM._host_used <= HOST_BUDGET + largest

    def check_accounting(self, mine: list[Any]) -> None:
        """Every tier's bytes equal the sum over the live storages; the spill directory
        holds exactly the files of the storages with a disk copy."""
        alive = {s.id: s for s in (r() for r in self.others) if s is not None}
        alive.update((s.id, s) for s in mine)
        here = dict.fromkeys(TIERS, 0)  # this device
        every = dict.fromkeys(TIERS, 0)  # the process (host and disk are shared)
        for s in alive.values():
            if s.path is not None:
                assert DISK in s.placement
            for tier, n in ((DEVICE, s.held if s.buf is not None else 0),
                            (HOST, s.nbytes if HOST in s.placement else 0),
                            (DISK, s.nbytes if s.path is not None else 0)):  # fmt: skip
                every[tier] += n
                if s.device is self.dev:
                    here[tier] += n
        assert {t: MEM._tier(self.dev.name, t).used for t in TIERS} == here
        assert (MEM._host_used, MEM._disk_used) == (every[HOST], every[DISK])
        files = {os.path.join(d, f) for d, _, fs in os.walk(self.dir) for f in fs}
        mine_or_moved = {s.path for s in alive.values() if s.path is not None}
        assert files == {p for p in mine_or_moved if p.startswith(self.dir + os.sep)}

    def teardown(self) -> None:
        try:
            self.views.clear()
            self.arrays.clear()
            self.model.clear()
            assert vg.memory.wait(timeout=60)
            gc.collect()
            self.check_accounting([])  # everything we made is given back
        finally:
            vg.memory.reset()
            shutil.rmtree(self.dir, ignore_errors=True)


SETTINGS = settings(
    max_examples=35,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    print_blob=True,
)


class NumbaMachine(MemoryMachine):
    DEVICE_NAME = "numba"


class WgpuMachine(MemoryMachine):
    DEVICE_NAME = "wgpu:0"


TestNumbaTiers = pytest.mark.skipif("numba" not in AVAILABLE, reason="numba unavailable")(
    NumbaMachine.TestCase
)
TestNumbaTiers.settings = SETTINGS
TestWgpuTiers = pytest.mark.skipif("wgpu:0" not in AVAILABLE, reason="no WebGPU adapter")(
    WgpuMachine.TestCase
)
TestWgpuTiers.settings = SETTINGS
