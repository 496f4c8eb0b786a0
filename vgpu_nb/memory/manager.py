"""The memory manager: per-array placement, per-tier accounting, LRU spill and unspill,
and the prefetch thread.

How it fits together:

* every materialised ``vg.Array`` points at a :class:`Storage` (reshaped views share
  one). The storage holds the copies — ``buf`` (device), ``host`` (host RAM, pinned for
  CUDA), ``path`` (a ``.npy`` in the spill directory) — and knows which is authoritative
  (``tier``) and which are valid (``placement``);
* accounting is what we hold: :meth:`Device.held_bytes` of each device buffer (CuPy pool
  blocks, padded WebGPU buffers, ``nbytes`` on the CPU), ``nbytes`` of host copies and of
  spill files. A storage's accounting is returned when its last array dies;
* when a device tier would go over its budget, least-recently-used storages move one tier
  down (host tier over budget → disk). A storage is never moved while it is *in use*:
  somebody other than its arrays holds its native buffer (a running op's locals, a NumPy
  view handed out by ``x.numpy()`` on the CPU backends, a CuPy array made from it) — seen
  exactly from CPython reference counts — or it was exported through
  ``__cuda_array_interface__`` / DLPack (then it is pinned to the device for good);
* a spilled array is an instance of ``_Spilled`` (array.py); reading its ``_buf`` brings
  the storage back (:meth:`MemoryManager.unspill`) and turns every view back into a plain
  ``Array``. Resident arrays cost nothing extra on the hot path but an LRU time stamp;
* moves run on the thread that needs the room, under one lock. The prefetch thread only
  copies into *free* room (it never evicts), so it can never move an array that another
  thread is about to use.
"""

from __future__ import annotations

import itertools
import math
import os
import queue
import sys
import threading
import time
import weakref
from typing import Any

import numpy as np

from ..errors import OutOfDeviceMemory, SpillFailed
from ..telemetry.bus import BUS
from ..telemetry.records import MemoryEvent
from . import spill_dir as _disk
from .budgets import Budgets, from_env, human, parse_size

DEVICE, HOST, DISK = "device", "host", "disk"
TIERS = (DEVICE, HOST, DISK)
_IDS = itertools.count(1)
_now = time.monotonic

#: set by vgpu_nb.array at import (the manager switches arrays between these classes)
ARRAY: Any = None
SPILLED: Any = None
_BUF: Any = None


class Storage:
    """The memory behind one array and its reshaped views."""

    __slots__ = (
        "id", "device", "shape", "dtype", "nbytes", "held", "buf", "host", "path", "offset",
        "tier", "last", "views", "pinned", "busy", "__weakref__",
    )  # fmt: skip

    def __init__(self, device: Any, shape: tuple[int, ...], dtype: Any) -> None:
        self.id = next(_IDS)
        self.device = device
        self.shape = shape
        self.dtype = dtype
        self.nbytes = math.prod(shape) * dtype.itemsize
        self.held = 0  # bytes accounted on the device tier while buf is set
        self.buf: Any = None
        self.host: np.ndarray | None = None
        self.path: str | None = None
        self.offset = 0
        self.tier = DEVICE
        self.last = _now()
        self.views: list[weakref.ref] = []
        self.pinned = False
        self.busy: threading.Event | None = None

    @property
    def placement(self) -> frozenset[str]:
        tiers = set()
        if self.buf is not None:
            tiers.add(DEVICE)
        if self.host is not None and not (self.device.host_is_device and self.buf is not None):
            tiers.add(HOST)
        if self.path is not None:
            tiers.add(DISK)
        return frozenset(tiers)

    def live_views(self) -> list[Any]:
        out = [a for a in (r() for r in self.views) if a is not None]
        if len(out) != len(self.views):
            self.views = [weakref.ref(a) for a in out]
        return out

    def __del__(self) -> None:
        try:
            MEM._release(self)
        except Exception:  # noqa: BLE001,S110  (interpreter shutdown: modules are gone)
            pass

    def __repr__(self) -> str:
        return f"<Storage #{self.id} {human(self.nbytes)} on {self.device.name}: {self.tier}>"


class _Tier:
    """Counters of one (device, tier) pair."""

    __slots__ = ("used", "peak", "arrays", "allocs", "frees", "spills", "spilled_bytes",
                 "unspills", "unspilled_bytes", "prefetches", "evictions")  # fmt: skip

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)


class MemoryManager:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.budgets: Budgets = from_env()
        _disk.SPILL.set_parent(self.budgets.spill_dir)
        self._budget: dict[str, int] = {}  # device name → bytes (resolved)
        self._resident: dict[str, dict[int, weakref.ref]] = {}  # device tier, per device
        self._on_host: dict[int, weakref.ref] = {}  # host tier, every device
        self._stats: dict[tuple[str, str], _Tier] = {}
        self._host_used = 0
        self._disk_used = 0
        self._q: queue.Queue | None = None
        self._pending = 0
        self._idle = threading.Condition(self._lock)
        #: storages being brought back, or streamed, right now: never pushed down to make
        #: room, never prefetched (a list: holds nest)
        self._moving: list[Storage] = []

    # ---- configuration -----------------------------------------------------------------
    def configure(
        self,
        device: Any = None,
        host: Any = None,
        spill_dir: Any = ...,
        devices: Any = None,
    ) -> None:
        """See :func:`vgpu_nb.memory.configure`."""
        with self._lock:
            if device is not None:
                size = parse_size(device, "device budget")
                if devices is None:
                    self.budgets.device = {None: size}
                else:
                    from ..devices import get_device

                    names = [devices] if isinstance(devices, str) else list(devices)
                    for n in names:
                        self.budgets.device[get_device(n).name] = size
                self._budget.clear()
            if host is not None:
                self.budgets.host = parse_size(host, "host budget")
            if spill_dir is not ...:
                self.budgets.spill_dir = None if spill_dir is None else os.fspath(spill_dir)
                _disk.SPILL.set_parent(self.budgets.spill_dir)
            for name in list(self._resident):
                dev = self._device_named(name)
                if dev is not None:
                    self._fit_device(dev, 0, "the device budget was lowered")
            self._fit_host(0, "the host budget was lowered")

    def reset(self) -> None:
        """Budgets back to the defaults (environment included); counters kept."""
        with self._lock:
            self.budgets = from_env()
            self._budget.clear()
            _disk.SPILL.set_parent(self.budgets.spill_dir)

    def device_budget(self, dev: Any) -> int:
        b = self._budget.get(dev.name)
        if b is None:
            b = self._budget[dev.name] = self.budgets.device_budget(dev)
        return b

    def _device_named(self, name: str) -> Any:
        from ..devices import _open

        return _open.get(name)

    def _tier(self, dev_name: str, tier: str) -> _Tier:
        t = self._stats.get((dev_name, tier))
        if t is None:
            t = self._stats[(dev_name, tier)] = _Tier()
        return t

    def device_used(self, dev: Any) -> int:
        return self._tier(dev.name, DEVICE).used

    # ---- accounting primitives (call with the lock held) ---------------------------------
    def _add(self, st: Storage, tier: str, n: int, sign: int = 1) -> None:
        """Account ``n`` bytes of ``st`` on ``tier`` (``sign=-1``: give them back)."""
        t = self._tier(st.device.name, tier)
        t.used += sign * n
        t.arrays += sign
        if t.used > t.peak:
            t.peak = t.used
        if tier == DEVICE:
            reg = self._resident.setdefault(st.device.name, {})
            if sign > 0:
                reg[st.id] = weakref.ref(st)
            else:
                reg.pop(st.id, None)
        elif tier == HOST:
            self._host_used += sign * n
            if sign > 0:
                self._on_host[st.id] = weakref.ref(st)
            else:
                self._on_host.pop(st.id, None)
        else:
            self._disk_used += sign * n

    def _sub(self, st: Storage, tier: str, n: int) -> None:
        self._add(st, tier, n, -1)

    def _snapshot(self, dev_name: str) -> dict[str, int]:
        return {DEVICE: self._tier(dev_name, DEVICE).used, HOST: self._host_used,
                DISK: self._disk_used}  # fmt: skip

    def _emit(
        self, kind: str, st: Storage, src: str | None, dst: str | None, secs: float, why: str
    ) -> None:
        if BUS._subs:
            name = st.device.name
            BUS.emit(MemoryEvent(kind, st.id, name, st.nbytes, src, dst, secs, why,
                                 self._snapshot(name)))  # fmt: skip

    # ---- life cycle ------------------------------------------------------------------------
    def track(self, buf: Any, dev: Any, shape: tuple[int, ...], dtype: Any, arr: Any) -> Storage:
        """A fresh device buffer made by an op: account it (making room after the fact)."""
        owner = getattr(buf, "base", None)
        if (
            owner is not None
            and type(owner) is type(buf)
            and owner.base is None
            and owner.size == buf.size
            and owner.dtype == buf.dtype
            and owner.flags.c_contiguous
        ):  # a reshaped view (N-D op results): the storage holds the owner, so that views
            buf, shape = owner, owner.shape  # of views still count as "in use"
        st = Storage(dev, shape, dtype)
        st.buf = buf
        st.views.append(weakref.ref(arr))
        held = st.held = dev.held_bytes(buf)
        name = dev.name
        with self._lock:  # (the _add of the device tier, inlined: this runs for every op)
            t = self._stats.get((name, DEVICE)) or self._tier(name, DEVICE)
            t.used += held
            t.arrays += 1
            t.allocs += 1
            if t.used > t.peak:
                t.peak = t.used
            reg = self._resident.get(name)
            if reg is None:
                reg = self._resident[name] = {}
            reg[st.id] = weakref.ref(st)
            over = t.used > (self._budget.get(name) or self.device_budget(dev))
        if over:  # made already: make room after the fact, or stay over by this array
            try:
                self._fit_device(dev, 0, f"a new {human(held)} array #{st.id} was made", keep=st)
            except OutOfDeviceMemory:
                pass  # (e.g. the 0-d result of a reduction over a budget-sized input)
        if BUS._subs:
            self._emit("alloc", st, None, DEVICE, 0.0, "allocated on the device")
        return st

    def reserve(self, dev: Any, nbytes: int, why: str) -> None:
        """Make room for ``nbytes`` on ``dev`` before allocating them (spilling LRU
        arrays); :class:`OutOfDeviceMemory` if that cannot be done."""
        budget = self.device_budget(dev)
        if self._tier(dev.name, DEVICE).used + nbytes <= budget:
            return
        if nbytes > budget:
            raise self._oom(dev, nbytes, why, too_big=True)
        self._fit_device(dev, nbytes, why)

    def fits_device(self, dev: Any, nbytes: int) -> bool:
        return nbytes <= self.device_budget(dev)

    def fits_host(self, nbytes: int) -> bool:
        return nbytes <= self.budgets.host

    def new_array(self, dev: Any, host: np.ndarray, shape: tuple[int, ...], dtype: Any,
                  arr: Any, *, copy: bool = True) -> Storage | None:  # fmt: skip
        """Where a new array of ``host``'s bytes goes when it does not fit the device
        budget: the host tier (``None`` is returned when it fits the device: the caller
        uploads as usual), else the disk tier. ``copy=False``: ``host`` is ours to keep."""
        nbytes = host.nbytes
        if self.fits_device(dev, nbytes):
            self.reserve(dev, nbytes, f"a new {human(nbytes)} array")
            return None
        st = Storage(dev, shape, dtype)
        st.views.append(weakref.ref(arr))
        budget = human(self.device_budget(dev))
        if self.fits_host(nbytes):
            with self._lock:
                self._fit_host(nbytes, f"a new {human(nbytes)} array")
                if dev.host_is_device:
                    h = np.array(host, copy=True, order="C") if copy else host
                else:
                    h = dev.host_empty(shape, dtype)
                    h[...] = host
                st.host = h
                self._placed(st, HOST, f"larger than the device budget ({budget}): kept in "
                             "host memory; ops on it stream in chunks")  # fmt: skip
            return st
        st.path, st.offset = _disk.SPILL.write(np.ascontiguousarray(host), f"a{st.id}")
        self._placed(st, DISK, f"larger than the device ({budget}) and host "
                     f"({human(self.budgets.host)}) budgets: written to the spill directory; "
                     "ops stream it from disk")  # fmt: skip
        return st

    def _placed(self, st: Storage, tier: str, why: str) -> None:
        """A new array made directly in the host or disk tier: account and announce it."""
        with self._lock:
            st.tier = tier
            self._add(st, tier, st.nbytes)
            self._tier(st.device.name, tier).allocs += 1
        self._emit("alloc", st, None, tier, 0.0, why)

    def new_empty(self, dev: Any, shape: tuple[int, ...], dtype: Any, arr: Any,
                  fill: Any = None) -> Storage | None:  # fmt: skip
        """Like :meth:`new_array` for ``empty``/``full`` without building the host copy
        first (a 4 GiB ``vg.zeros`` must not need 4 GiB of scratch)."""
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if self.fits_device(dev, nbytes):
            self.reserve(dev, nbytes, f"a new {human(nbytes)} array")
            return None
        if self.fits_host(nbytes):
            h = np.empty(shape, dtype.np) if dev.host_is_device else dev.host_empty(shape, dtype)
            if fill is not None:
                h[...] = fill
            return self.new_array(dev, h, shape, dtype, arr, copy=False)
        st = Storage(dev, shape, dtype)
        st.views.append(weakref.ref(arr))
        path, off = _disk.SPILL.create(shape, dtype.np, f"a{st.id}")
        if fill is not None and np.asarray(fill, dtype.np).tobytes() != bytes(dtype.itemsize):
            row = np.full(min(int(np.prod(shape)), (16 << 20) // dtype.itemsize), fill, dtype.np)
            try:
                for k in range(0, int(np.prod(shape)), row.size):
                    n = min(row.size, int(np.prod(shape)) - k)
                    _disk.write_at(path, off + k * dtype.itemsize, row[:n])
            except OSError as exc:
                _disk.unlink(path)
                raise _disk._failed(exc, path) from exc
            except BaseException:  # KeyboardInterrupt mid-fill: no partial file left behind
                _disk.unlink(path)
                raise
        st.path, st.offset = path, off
        self._placed(st, DISK, "larger than the device and host budgets: a spill file; ops "
                     "on it stream from disk")  # fmt: skip
        return st

    def _release(self, st: Storage) -> None:
        """The last array of ``st`` died: give everything back."""
        name = st.device.name
        if st.host is None and st.path is None and st.buf is not None:  # the common case
            with self._lock:
                t = self._stats[(name, DEVICE)]
                t.used -= st.held
                t.arrays -= 1
                t.frees += 1
                self._resident[name].pop(st.id, None)
                st.buf = None
            if BUS._subs:
                self._emit("free", st, DEVICE, None, 0.0, "its last array was deleted")
            return
        with self._lock:
            if st.buf is not None:
                self._sub(st, DEVICE, st.held)
            if st.host is not None and not (st.device.host_is_device and st.buf is not None):
                self._sub(st, HOST, st.nbytes)
            if st.path is not None:
                self._sub(st, DISK, st.nbytes)
                _disk.unlink(st.path)
            self._tier(name, st.tier).frees += 1
            tier = st.tier
            st.buf = st.host = st.path = None
        if BUS._subs:
            self._emit("free", st, tier, None, 0.0, "its last array was deleted")

    # ---- LRU eviction ------------------------------------------------------------------------
    def _in_use(self, st: Storage) -> bool:
        """True if anybody but ``st`` and its arrays holds ``st.buf`` (CPython refcounts:
        a running op's locals, a NumPy/CuPy view handed out, a DLPack capsule)."""
        if st.pinned:
            return True
        base = st.buf
        n_base = 0
        for v in st.live_views():
            if type(v) is not ARRAY and type(v) is not SPILLED:
                return True  # read by pending expressions (_Watched)
            b = _BUF.__get__(v, ARRAY)
            if b is None:
                continue
            if b is base:
                n_base += 1
            else:
                if sys.getrefcount(b) > 3:  # the slot, b, the argument
                    return True
                n_base += 1  # the view keeps base alive (.base)
            del b
        # st.buf, base, the argument, and the views
        return sys.getrefcount(base) > 3 + n_base

    def _candidates(self, reg: dict[int, weakref.ref], keep: Any) -> list[Storage]:
        out = []
        for ref in list(reg.values()):
            st = ref()
            if st is not None and st is not keep and st.busy is None and st not in self._moving:
                out.append(st)
        out.sort(key=lambda s: s.last)
        return out

    def _fit_device(self, dev: Any, need: int, why: str, keep: Any = None) -> None:
        with self._lock:
            budget = self.device_budget(dev)
            t = self._tier(dev.name, DEVICE)
            if t.used + need <= budget:
                return
            for st in self._candidates(self._resident.get(dev.name, {}), keep):
                if t.used + need <= budget:
                    return
                if st.buf is None or self._in_use(st):
                    continue
                self._spill_device(st, f"LRU: room for {why} on {dev.name} "
                                   f"(budget {human(budget)})")  # fmt: skip
            if t.used + need > budget:
                raise self._oom(dev, need, why)

    def _fit_host(self, need: int, why: str, keep: Any = None) -> None:
        with self._lock:
            budget = self.budgets.host
            if self._host_used + need <= budget:
                return
            for st in self._candidates(self._on_host, keep):
                if self._host_used + need <= budget:
                    return
                if st.host is None or (st.device.host_is_device and st.buf is not None):
                    continue
                if st.device.host_is_device and _host_in_use(st):
                    continue
                self._spill_host(st, f"LRU: room for {why} in host memory "
                                 f"(budget {human(budget)})")  # fmt: skip
            # the host tier may end over budget by the array being moved in: allowed

    def _oom(self, dev: Any, need: int, why: str, too_big: bool = False) -> OutOfDeviceMemory:
        budget = self.device_budget(dev)
        used = self._tier(dev.name, DEVICE).used
        if too_big:
            return OutOfDeviceMemory(
                f"{why} needs {human(need)} on {dev.name}, more than its whole device budget "
                f"of {human(budget)}",
                fix="ops that stream (vg.sum & co, @vg.reduction, elementwise kernels and "
                "expressions, vg.matmul) process such arrays in chunks; otherwise raise the "
                f"budget: vg.memory.configure(device=...) (now {human(budget)})",
            )
        stuck = []
        for ref in list(self._resident.get(dev.name, {}).values()):
            st = ref()
            if st is not None and st.buf is not None:
                how = "pinned (exported)" if st.pinned else "in use"
                stuck.append(f"#{st.id} {st.dtype.name}{list(st.shape)} {human(st.held)} {how}")
        held = "; ".join(stuck[:5]) + (f"; … {len(stuck) - 5} more" if len(stuck) > 5 else "")
        return OutOfDeviceMemory(
            f"{why} needs {human(need)} on {dev.name} but only {human(budget - used)} of its "
            f"{human(budget)} budget is free and nothing more can be spilled: {used} bytes "
            f"are held by arrays in use ({held or 'none'})",
            fix="free arrays you no longer need (del x), drop NumPy views of them, or raise "
            "the budget: vg.memory.configure(device=...)",
        )

    # ---- moves ---------------------------------------------------------------------------------
    def _spill_device(self, st: Storage, why: str) -> None:
        """device → host (relabel on CPU backends). Lock held."""
        dev = st.device
        clean = st.host is not None or st.path is not None  # a prefetched, untouched copy
        t0 = _now()
        if clean:
            src_copy = HOST if st.host is not None else DISK
        else:
            self._fit_host(st.nbytes, f"array #{st.id} spilled from {dev.name}", keep=st)
            try:
                host = dev.to_host_tier(st.buf, st.shape, st.dtype)
            except MemoryError as exc:
                raise SpillFailed(
                    f"spilling array #{st.id} ({human(st.nbytes)}) from {dev.name} to host "
                    "memory failed: out of host memory",
                    fix="lower the host budget so older arrays go to disk earlier",
                ) from exc
        for v in st.live_views():
            if type(v) is ARRAY:
                _BUF.__set__(v, None)
                v.__class__ = SPILLED
        self._sub(st, DEVICE, st.held)
        st.buf = None
        t = self._tier(dev.name, DEVICE)
        if clean:
            st.tier = src_copy
            t.evictions += 1
            self._emit("evict", st, DEVICE, src_copy, _now() - t0,
                       f"{why}; its {src_copy} copy is still valid (no copy needed)")  # fmt: skip
            return
        st.host, st.tier = host, HOST
        self._add(st, HOST, st.nbytes)
        t.spills += 1
        t.spilled_bytes += st.nbytes
        note = " (CPU device: same RAM, accounting only)" if dev.host_is_device else ""
        self._emit("spill", st, DEVICE, HOST, _now() - t0, why + note)

    def _spill_host(self, st: Storage, why: str) -> None:
        """host → disk. On failure (disk full, unwritable) the array stays in host memory
        and :class:`SpillFailed` says why. Lock held."""
        t0 = _now()
        try:
            path, off = _disk.SPILL.write(st.host, f"a{st.id}")
        except SpillFailed as exc:  # st is intact; drop the frames that reference its data
            raise _bare(exc) from exc.__cause__
        for v in st.live_views():  # CPU relabelled views still hold the RAM: switch them
            if type(v) is ARRAY:
                _BUF.__set__(v, None)
                v.__class__ = SPILLED
        self._sub(st, HOST, st.nbytes)
        st.host, st.path, st.offset, st.tier = None, path, off, DISK
        self._add(st, DISK, st.nbytes)
        t = self._tier(st.device.name, HOST)
        t.spills += 1
        t.spilled_bytes += st.nbytes
        self._emit("spill", st, HOST, DISK, _now() - t0, why)

    def spill(self, arr: Any, to: str = HOST) -> None:
        """Move ``arr`` one or two tiers down now (``vg.memory.spill``)."""
        st = _storage_of(arr)
        with self._lock:
            self._wait(st)
            if st.buf is not None and TIERS.index(to) >= 1:
                if self._in_use(st):
                    raise SpillFailed(
                        f"array #{st.id} is in use (a NumPy/CuPy view of it or an export "
                        "exists), so it cannot be spilled",
                        fix="drop the views (del v) first",
                    )
                self._spill_device(st, "asked for (vg.memory.spill)")
            if to == DISK and st.host is not None and st.path is None:
                if st.device.host_is_device and _host_in_use(st):
                    raise SpillFailed(f"array #{st.id} is in use, it cannot go to disk")
                self._spill_host(st, "asked for (vg.memory.spill)")

    def _wait(self, st: Storage) -> None:
        while st.busy is not None:
            ev = st.busy
            self._lock.release()
            try:
                ev.wait()
            finally:
                self._lock.acquire()

    def unspill(self, st: Storage, why: str = "touched by an op") -> None:
        """Bring ``st`` onto its device and make all its views plain arrays again."""
        dev = st.device
        with self._lock:
            self._wait(st)
            t0 = _now()
            src = st.tier
            if st.buf is None:
                if st.nbytes > self.device_budget(dev):
                    raise self._oom(dev, st.nbytes, f"array #{st.id} {st.dtype.name}"
                                    f"{list(st.shape)}", too_big=True)  # fmt: skip
                self._moving.append(st)
                try:
                    self._fit_device(dev, st.nbytes, f"bringing back array #{st.id}", keep=st)
                finally:
                    self._moving.remove(st)
                buf = self._load(st)
                st.buf = buf
                st.held = dev.held_bytes(buf)
                self._add(st, DEVICE, st.held)
                moved = True
            else:
                moved = False  # prefetched: the device copy is already there
            self._drop_lower(st)
            st.tier = DEVICE
            st.last = _now()
            self._attach(st)
            if moved:
                t = self._tier(dev.name, src)
                t.unspills += 1
                t.unspilled_bytes += st.nbytes
                self._emit("unspill", st, src, DEVICE, _now() - t0, why)

    def hold(self, st: Storage) -> None:
        """Keep ``st`` where it is (no eviction, no prefetch) until :meth:`unhold`: a
        stream reads and writes its tiers directly. Waits for a prefetch in flight."""
        with self._lock:
            self._wait(st)
            self._moving.append(st)

    def unhold(self, st: Storage) -> None:
        with self._lock:
            if st in self._moving:
                self._moving.remove(st)

    def _load(self, st: Storage) -> Any:
        dev = st.device
        if st.host is not None:
            return dev.from_host_tier(st.host)
        if dev.host_is_device:
            out = np.empty(st.shape, st.dtype.np)
            _disk.read_into(st.path, st.offset, out)  # type: ignore[arg-type]
            return out
        tmp = np.load(st.path, mmap_mode="r")  # type: ignore[arg-type]
        return dev.from_numpy(np.ascontiguousarray(tmp))

    def _drop_lower(self, st: Storage) -> None:
        """The device copy is about to be handed out (and maybe written): other copies
        are stale from now on."""
        if st.host is not None:
            if not st.device.host_is_device or st.host is not st.buf:
                self._sub(st, HOST, st.nbytes)
                if st.host is not st.buf and BUS._subs:
                    why = "host copy dropped: the device copy is authoritative now"
                    self._emit("evict", st, HOST, None, 0.0, why)
            else:
                self._sub(st, HOST, st.nbytes)
            st.host = None
        if st.path is not None:
            self._sub(st, DISK, st.nbytes)
            _disk.unlink(st.path)
            st.path = None

    def _attach(self, st: Storage) -> None:
        dev, base = st.device, st.buf
        for v in st.live_views():
            if type(v) is SPILLED:
                _BUF.__set__(v, base if v.shape == st.shape else dev.reshape(base, v.shape))
                v.__class__ = ARRAY

    # ---- host-side reads of non-resident arrays ---------------------------------------------
    def read_host(self, st: Storage) -> np.ndarray:
        """The values of a non-resident storage as a host array, without bringing it back
        to the device (a view of the host copy on CPU backends, else a fresh copy)."""
        with self._lock:
            self._wait(st)
            if st.buf is not None:
                if st.device.host_is_device:  # (prefetched) we hand out the device memory
                    self.unspill(st, "read by x.numpy()")  # it may be written: drop stale copies
                return st.device.to_numpy(st.buf, st.shape, st.dtype)
            if st.host is not None:
                return st.host if st.device.host_is_device else np.array(st.host)
            out = np.empty(st.shape, st.dtype.np)
            _disk.read_into(st.path, st.offset, out)  # type: ignore[arg-type]
            return out

    # ---- prefetch -------------------------------------------------------------------------------
    def prefetch(self, arr: Any) -> None:
        st = _storage_of(arr)
        if st.buf is not None:
            return
        with self._lock:
            if self._q is None:
                self._q = queue.Queue()
                threading.Thread(target=self._worker, name="vgpu_nb-prefetch",
                                 daemon=True).start()  # fmt: skip
            self._pending += 1
        self._q.put(weakref.ref(st))

    def wait_prefetches(self, timeout: float | None = None) -> bool:
        """Block until every queued prefetch is done; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def _worker(self) -> None:
        assert self._q is not None
        while True:
            ref = self._q.get()
            try:
                st = ref()
                if st is not None:
                    self._prefetch_one(st)
                    del st
            except Exception as exc:  # noqa: BLE001  (a prefetch is a hint: never fatal)
                import warnings

                warnings.warn(f"vgpu_nb prefetch failed: {exc!r}", RuntimeWarning, stacklevel=1)
            finally:
                st = None  # (a failed prefetch must not keep a deleted array's storage alive)
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def _prefetch_one(self, st: Storage) -> None:
        dev = st.device
        with self._lock:
            if st.buf is not None or st.busy is not None or st in self._moving:
                return
            budget = self.device_budget(dev)
            t = self._tier(dev.name, DEVICE)
            if t.used + st.nbytes > budget:
                self._emit("prefetch", st, st.tier, None, 0.0,
                           f"skipped: {human(st.nbytes)} does not fit the free room of "
                           f"{dev.name} and a prefetch never evicts")  # fmt: skip
                return
            st.busy = threading.Event()
            t.used += st.nbytes  # reserved while copying
            src = st.tier
        t0 = _now()
        buf, err = None, None
        try:
            buf = self._load(st)
        except Exception as exc:  # noqa: BLE001
            err = exc
        with self._lock:
            t.used -= st.nbytes
            ev, st.busy = st.busy, None
            if buf is not None:
                st.buf, st.held = buf, dev.held_bytes(buf)
                self._add(st, DEVICE, st.held)
                if dev.host_is_device and st.host is not None:
                    self._sub(st, HOST, st.nbytes)  # the same RAM: relabel
                    st.host = None
                st.tier = DEVICE
                t.prefetches += 1
            ev.set()
        if err is not None:
            raise err
        self._emit("prefetch", st, src, DEVICE, _now() - t0,
                   "asked for (vg.memory.prefetch)")  # fmt: skip

    # ---- whole-process operations ---------------------------------------------------------------
    def hold_slots(self, dev: Any, nbytes: int) -> None:
        """Account ``nbytes`` of a stream's chunk buffers on ``dev``'s device tier
        (negative: give them back); the stream reserved the room first."""
        with self._lock:
            t = self._tier(dev.name, DEVICE)
            t.used += nbytes
            t.peak = max(t.peak, t.used)

    def chunk_prefetched(self, st: Storage, nbytes: int, why: str) -> None:
        """A stream fetches a chunk of ``st`` ahead: count it, and say so on the bus."""
        name = st.device.name
        with self._lock:
            self._tier(name, st.tier).prefetches += 1
        if BUS._subs:
            BUS.emit(MemoryEvent("prefetch", st.id, name, nbytes, st.tier, DEVICE, 0.0, why,
                                 self._snapshot(name)))  # fmt: skip

    def clear(self) -> None:
        """Release cached pool memory, reset peaks, remove the spill directory when no
        live array has a file in it."""
        import gc

        gc.collect()
        with self._lock:
            for (_name, _tier), t in self._stats.items():
                t.peak = t.used
            if self._disk_used == 0:
                _disk.SPILL.remove()
        for name in list(self._resident):
            dev = self._device_named(name)
            if dev is not None and dev.backend == "cuda":
                dev.cp.get_default_memory_pool().free_all_blocks()
                dev.cp.get_default_pinned_memory_pool().free_all_blocks()


def _bare(exc: BaseException) -> BaseException:
    """``exc`` without tracebacks (its own and its cause's): their frames hold the data
    being spilled, which would count as "in use" for as long as the error is kept (a
    notebook keeps the last one), and refuse a retry."""
    cause = exc.__cause__
    if cause is not None:
        cause.__traceback__ = None
    exc.__suppress_context__ = False
    return exc.with_traceback(None)


def _host_in_use(st: Storage) -> bool:
    """CPU backends: the host copy is the RAM views may still point at."""
    h = st.host
    n = 0
    for v in st.live_views():
        b = _BUF.__get__(v, ARRAY)
        if b is not None:
            n += 1
            if b is not h and sys.getrefcount(b) > 3:
                return True
        del b
    return sys.getrefcount(h) > 3 + n


def _storage_of(arr: Any) -> Storage:
    from ..array import Array, is_pending

    if not isinstance(arr, Array):
        from ..errors import NotAnArray

        raise NotAnArray(f"expected a vg.Array, got {type(arr).__name__}")
    if is_pending(arr):
        arr.eval()
    return arr._st


MEM = MemoryManager()
