"""Out-of-core streaming: ops on arrays larger than a device budget, chunk by chunk.

An op streams when one of its operands is not on the device and all of them together do
not fit the device budget. Operands are seen as ``(rows, cols)`` and cut into chunks of
rows; each chunk goes through two device slots (double buffering), so the transfer of
chunk k+1 overlaps the compute of chunk k:

* **CUDA**: host-tier memory is pinned; chunk k+1 is copied on a second CUDA stream while
  chunk k computes on the current one (events order slot reuse); disk chunks are read by
  a reader thread into pinned staging first, so disk, link and GPU all overlap;
* **WebGPU**: queue writes into two slot buffers (the queue runs them in order);
* **CPU backends** (numpy, numba): host-tier chunks are used in place (device memory *is*
  RAM); disk-tier arrays are memory-mapped (``MADV_SEQUENTIAL``) and chunks are views of
  the mapping, so the kernel's own threads fault the pages in, in parallel, with no copy.
  (A reader thread + staging copies was measured slower on a 2-core VM: the reader and
  Numba's spinning workers fought for the cores.)

Chunk size: up to 64 MiB per operand slot, less when the device budget is small (all
slots of all operands fit in half of the free budget). Slots are accounted on the device
tier while the stream runs. Streams longer than ~2 s show a ``tqdm.auto`` progress bar.
An interrupted stream (KeyboardInterrupt, an error) frees its slots; the inputs are never
modified, outputs written in place keep the chunks finished so far (as an interrupted
in-place kernel on a GPU would).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from ..errors import OutOfDeviceMemory
from . import spill_dir as _disk
from .budgets import human
from .manager import DEVICE, DISK, HOST, MEM

CHUNK_BYTES = 64 << 20  # per operand slot, at most
PROGRESS_AFTER_S = 2.0


def streaming(arrays: Sequence[Any], dev: Any, extra: int = 0) -> bool:
    """True if an op over ``arrays`` (plus ``extra`` output bytes) must stream: one is
    not on the device, and together they do not fit the device budget."""
    from ..array import _Spilled

    if not any(type(a) is _Spilled for a in arrays):
        return False
    seen: dict[int, int] = {}
    for a in arrays:
        seen[id(a._st)] = a._st.nbytes
    return not MEM.fits_device(dev, sum(seen.values()) + extra)


class Operand:
    """One array of a streamed op, seen as ``(rows, cols)``; ``mode`` "r", "w" or "rw"."""

    def __init__(self, arr: Any, rows: int, cols: int, mode: str = "r"):
        st = arr._st
        self.arr, self.st, self.rows, self.cols, self.mode = arr, st, rows, cols, mode
        self.dtype = arr.dtype
        self.row_bytes = cols * arr.dtype.itemsize
        MEM.hold(st)  # no eviction / prefetch while the stream uses its tiers directly
        if st.buf is not None and (st.host is not None or st.path is not None):
            MEM.unspill(st)  # prefetched: the device copy becomes the only one (no copy)
        self.tier = DEVICE if st.buf is not None else st.tier
        self.slots: list[Any] = []  # device buffers (R, cols)
        self.stage: list[np.ndarray] = []  # host staging (disk), (R, cols)
        self.mapped: np.ndarray | None = None  # CPU devices: the spill file, mapped
        self._mm: Any = None

    def map(self) -> None:
        """Map the spill file (shared, writable: writes land in the file)."""
        import mmap

        with open(self.st.path, "r+b") as f:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_WRITE)
        try:
            mm.madvise(mmap.MADV_SEQUENTIAL)
        except (AttributeError, OSError):  # pragma: no cover (not Linux)
            pass
        n = self.rows * self.cols
        self._mm = mm
        self.mapped = np.frombuffer(mm, self.dtype.np, count=n, offset=self.st.offset).reshape(
            self.rows, self.cols
        )

    def release(self) -> None:
        self.unmap()
        MEM.unhold(self.st)

    def unmap(self) -> None:
        self.mapped = None
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:  # a view is still alive somewhere: the GC closes it later
                pass
            self._mm = None

    def host_rows(self, r0: int, r1: int) -> np.ndarray:
        return self.st.host.reshape(self.rows, self.cols)[r0:r1]

    def device_rows(self, r0: int, r1: int) -> Any:
        dev = self.st.device
        return dev.reshape(self.st.buf, (self.rows, self.cols))[r0:r1]


def _chunk_rows(dev: Any, ops: list[Operand], staged: list[Operand], reserved: int) -> int:
    """Rows per chunk: slots of every staged operand, twice (double buffering), in half
    of the budget left by what the op keeps on the device whole (``reserved``)."""
    avail = max(MEM.device_budget(dev) - reserved, 0)
    row_bytes = sum(op.row_bytes for op in staged) or 1
    per_slot = max(op.row_bytes for op in ops)
    rows = max(1, min(CHUNK_BYTES // per_slot, (avail // 2) // (2 * row_bytes)))
    if dev.backend == "wgpu":  # copy offsets must be multiples of 4 bytes
        rows = max(4, rows - rows % 4)
    return rows


class _Progress:
    def __init__(self, total: int, label: str):
        self.total, self.label = total, label
        self.t0 = time.perf_counter()
        self.bar: Any = None

    def update(self, k: int) -> None:
        if self.bar is None:
            if time.perf_counter() - self.t0 < PROGRESS_AFTER_S or k >= self.total:
                return
            try:
                from tqdm.auto import tqdm
            except ImportError:  # pragma: no cover
                self.bar = False
                return
            self.bar = tqdm(total=self.total, initial=k, desc=self.label, unit="chunk",
                            leave=False)  # fmt: skip
        elif self.bar:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar:
            self.bar.close()


class Stream:
    """Runs ``body(k, r0, r1, chunks)`` over row chunks of ``ops`` (``chunks[i]``: the
    native device buffer of op i's rows ``r0:r1``, shape ``(r1 - r0, cols)``)."""

    def __init__(self, dev: Any, ops: list[Operand], rows: int, label: str, keep: int = 0):
        """``keep``: bytes the op holds on the device whole besides ``ops`` (a matmul's
        right operand, a kernel's lookup tables)."""
        self.dev, self.ops, self.rows, self.label = dev, ops, rows, label
        self.kind = "cuda" if dev.backend == "cuda" else "wgpu" if dev.backend == "wgpu" else "cpu"
        # operands that need device slots: all non-resident ones on GPUs; on wgpu also
        # resident ones (its buffers have no offsets); on the CPU none (RAM is RAM)
        if self.kind == "cpu":
            self.staged = []
        elif self.kind == "wgpu":
            self.staged = list(ops)
        else:
            self.staged = [op for op in ops if op.tier != DEVICE]
        disk = [op for op in ops if op.tier == DISK]
        keep += sum(op.st.held for op in ops if op.tier == DEVICE)
        self.R = _chunk_rows(dev, ops, self.staged + ([] if self.kind == "cpu" else disk), keep)
        self.slot_bytes = 0
        self.pool: ThreadPoolExecutor | None = None
        self._writes: dict[tuple[int, int], Future] = {}  # (operand, slot) → disk write

    # ---- resources --------------------------------------------------------------------
    def _alloc(self) -> None:
        dev, R = self.dev, self.R
        cpu = self.kind == "cpu"
        need = sum(2 * R * op.row_bytes for op in self.staged)
        need += sum(2 * R * op.row_bytes for op in self.ops if op.tier == DISK and not cpu)
        MEM.reserve(dev, need, f"streaming {self.label} ({human(need)} of chunk buffers)")
        MEM.hold_slots(dev, need)
        self.slot_bytes = need
        for op in self.staged:
            op.slots = [dev.empty((R, op.cols), op.dtype) for _ in range(2)]
        for op in self.ops:
            if op.tier == DISK and cpu:
                op.map()
            elif op.tier == DISK:
                op.stage = [dev.host_empty((R, op.cols), op.dtype) for _ in range(2)]
        if any(op.tier == DISK for op in self.ops) and not cpu:
            self.pool = ThreadPoolExecutor(1, thread_name_prefix="vgpu_nb-stream")

    def _free(self) -> None:
        if self.kind == "cuda":  # copies in flight must finish before the buffers go back
            self.dev.cp.cuda.get_current_stream().synchronize()
            cs = getattr(self.dev, "_copy_stream", None)
            if cs is not None:
                cs.synchronize()
        if self.pool is not None:
            self.pool.shutdown(wait=True)
        for op in self.ops:
            op.slots, op.stage = [], []
            op.release()
        MEM.hold_slots(self.dev, -self.slot_bytes)
        self.slot_bytes = 0

    def _read(self, op: Operand, s: int, r0: int, r1: int, wait: Any = None) -> None:
        if wait is not None:
            wait.synchronize()
        off = op.st.offset + r0 * op.row_bytes
        _disk.read_into(op.st.path, off, op.stage[s][: r1 - r0])

    def _write(self, op: Operand, s: int, r0: int, r1: int, wait: Any = None) -> None:
        if wait is not None:
            wait.synchronize()
        off = op.st.offset + r0 * op.row_bytes
        _disk.write_at(op.st.path, off, op.stage[s][: r1 - r0])

    def _announce(self, k: int, n: int) -> None:
        """Chunk k is being fetched ahead (while chunk k-1 computes): a ``prefetch`` event
        per non-resident operand, and the tier's prefetch count."""
        r0, r1 = k * self.R, min(self.rows, (k + 1) * self.R)
        for op in self.ops:
            if op.tier == DEVICE or "r" not in op.mode:
                continue
            why = f"chunk {k + 1}/{n} of {self.label}, fetched while chunk {k} computes"
            MEM.chunk_prefetched(op.st, (r1 - r0) * op.row_bytes, why)

    def _wait_write(self, op: Operand, s: int) -> None:
        f = self._writes.pop((id(op), s), None)
        if f is not None:
            f.result()  # (raises the write's error, e.g. a full disk)

    def _submit_write(self, op: Operand, s: int, r0: int, r1: int, wait: Any = None) -> None:
        pool = self.pool
        assert pool is not None
        self._writes[(id(op), s)] = pool.submit(self._write, op, s, r0, r1, wait)

    def _prefetch_reads(self, k: int) -> list[Future | None]:
        """Submit disk reads of chunk k (reader thread)."""
        r0, r1 = k * self.R, min(self.rows, (k + 1) * self.R)
        futs: list[Future | None] = []
        for op in self.ops:
            if op.tier == DISK and "r" in op.mode:
                wait = self._up_done[k % 2] if self.kind == "cuda" else None
                futs.append(self.pool.submit(self._read, op, k % 2, r0, r1, wait))  # type: ignore[union-attr]
            else:
                futs.append(None)
        return futs

    # ---- the loop ---------------------------------------------------------------------------
    def run(self, body: Callable[[int, int, int, list[Any]], None]) -> None:
        n = -(-self.rows // self.R)
        progress = _Progress(n, self.label)
        try:
            self._alloc()
            if self.kind == "cuda":
                self._run_cuda(n, body, progress)
            else:
                self._run_simple(n, body, progress)
            for f in self._writes.values():  # the last chunks' disk writes (and errors)
                f.result()
        finally:
            progress.close()
            self._free()

    def _run_simple(self, n: int, body: Callable, progress: _Progress) -> None:
        dev, R = self.dev, self.R
        futs = self._prefetch_reads(0) if self.pool else [None] * len(self.ops)
        for k in range(n):
            s, r0, r1 = k % 2, k * R, min(self.rows, (k + 1) * R)
            for f in futs:
                if f is not None:
                    f.result()
            if k + 1 < n:
                self._announce(k + 1, n)
                if self.pool is not None:
                    futs = self._prefetch_reads(k + 1)
            chunks = []
            for op in self.ops:
                m = r1 - r0
                if self.kind == "cpu":
                    if op.tier == DEVICE:
                        chunks.append(op.device_rows(r0, r1))
                    elif op.tier == HOST:
                        chunks.append(op.host_rows(r0, r1))
                    else:
                        chunks.append(op.mapped[r0:r1])  # type: ignore[index]
                    continue
                slot = dev.chunk_view(op.slots[s], (m, op.cols), op.dtype)
                if "r" in op.mode:
                    if op.tier == DEVICE:
                        _wgpu_copy(dev, op.st.buf, r0 * op.row_bytes, slot, 0, m * op.row_bytes)
                    elif op.tier == HOST:
                        dev.upload_into(slot, op.host_rows(r0, r1))
                    else:
                        dev.upload_into(slot, op.stage[s][:m])
                chunks.append(slot)
            body(k, r0, r1, chunks)
            for op, c in zip(self.ops, chunks, strict=True):
                if "w" not in op.mode:
                    continue
                m = r1 - r0
                if self.kind == "cpu":
                    continue  # written in place (RAM, or the shared mapping of the file)
                if op.tier == DEVICE:
                    _wgpu_copy(dev, c, 0, op.st.buf, r0 * op.row_bytes, m * op.row_bytes)
                else:
                    host = dev.to_numpy(c, (m, op.cols), op.dtype)
                    if op.tier == HOST:
                        op.host_rows(r0, r1)[...] = host
                    else:
                        self._wait_write(op, s)  # stage[s]'s previous chunk is on disk
                        op.stage[s][:m] = host
                        self._submit_write(op, s, r0, r1)
            progress.update(k + 1)

    def _run_cuda(self, n: int, body: Callable, progress: _Progress) -> None:
        dev, R = self.dev, self.R
        cp = dev.cp
        rt = cp.cuda.runtime
        with dev._dev:
            main = cp.cuda.get_current_stream()
            cs = getattr(dev, "_copy_stream", None)
            if cs is None:
                cs = dev._copy_stream = cp.cuda.Stream(non_blocking=True)
            Ev = cp.cuda.Event
            self._up_done = [Ev(disable_timing=True) for _ in range(2)]
            comp_done = [Ev(disable_timing=True) for _ in range(2)]
            down_done = [Ev(disable_timing=True) for _ in range(2)]
            h2d, d2h = rt.memcpyHostToDevice, rt.memcpyDeviceToHost

            def upload(k: int, futs: list[Future | None]) -> None:
                s, r0, r1 = k % 2, k * R, min(self.rows, (k + 1) * R)
                cs.wait_event(comp_done[s])  # the slot's previous chunk is computed
                for op, f in zip(self.ops, futs, strict=True):
                    if op.tier == DEVICE or "r" not in op.mode:
                        continue
                    if f is not None:
                        f.result()
                    src = op.host_rows(r0, r1) if op.tier == HOST else op.stage[s][: r1 - r0]
                    nb = (r1 - r0) * op.row_bytes
                    rt.memcpyAsync(op.slots[s].data.ptr, src.ctypes.data, nb, h2d, cs.ptr)
                self._up_done[s].record(cs)

            futs = self._prefetch_reads(0) if self.pool else [None] * len(self.ops)
            upload(0, futs)
            for k in range(n):
                s, r0, r1 = k % 2, k * R, min(self.rows, (k + 1) * R)
                m = r1 - r0
                if k + 1 < n:
                    self._announce(k + 1, n)
                    if self.pool is not None:
                        futs = self._prefetch_reads(k + 1)
                main.wait_event(self._up_done[s])
                chunks = [
                    op.device_rows(r0, r1) if op.tier == DEVICE else op.slots[s][:m]
                    for op in self.ops
                ]
                body(k, r0, r1, chunks)
                comp_done[s].record(main)
                writes = [op for op in self.ops if "w" in op.mode and op.tier != DEVICE]
                if writes:
                    cs.wait_event(comp_done[s])
                    for op in writes:
                        if op.tier == DISK:
                            self._wait_write(op, s)  # stage[s]'s previous chunk is on disk
                        dst = op.host_rows(r0, r1) if op.tier == HOST else op.stage[s][:m]
                        nb = m * op.row_bytes
                        rt.memcpyAsync(dst.ctypes.data, op.slots[s].data.ptr, nb, d2h, cs.ptr)
                    down_done[s].record(cs)
                    for op in writes:
                        if op.tier == DISK:
                            self._submit_write(op, s, r0, r1, down_done[s])
                if k + 1 < n:
                    upload(k + 1, futs)
                progress.update(k + 1)
            main.synchronize()
            cs.synchronize()


def _wgpu_copy(dev: Any, src: Any, src_off: int, dst: Any, dst_off: int, nbytes: int) -> None:
    """Buffer-to-buffer copy on a WebGPU queue (sizes rounded up to whole words)."""
    n = -(-nbytes // 4) * 4
    n = min(n, src.size - src_off, dst.size - dst_off)
    if n <= 0:
        return
    enc = dev._dev.create_command_encoder()
    enc.copy_buffer_to_buffer(src.buffer, src_off, dst.buffer, dst_off, n)
    dev._dev.queue.submit([enc.finish()])


def too_big(what: str, dev: Any, nbytes: int, fix: str) -> OutOfDeviceMemory:
    return OutOfDeviceMemory(
        f"{what} needs {human(nbytes)} on {dev.name} at once, more than its device budget "
        f"of {human(MEM.device_budget(dev))}, and cannot be streamed",
        fix=fix,
    )


def as_2d(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], 1
    return shape[0], math.prod(shape[1:])
