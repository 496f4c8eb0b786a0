"""The ``numba`` backend: the CPU "virtual GPU".

Memory is host memory (NumPy arrays), so the memory primitives and ``matmul`` (BLAS through
NumPy) are those of :class:`~vgpu_nb.backends.numpy_backend.NumpyDevice`. Reductions run
on our own parallel Numba kernels (``@njit(parallel=True)``, ``prange``), with the
semantics of :func:`~vgpu_nb.backends.numpy_backend.reduce_host` and its epilogue
(``post_host``, applied to the small result).

**Determinism.** A result never depends on the number of threads or on scheduling: the
work is cut into a fixed grid whatever ``NUMBA_NUM_THREADS`` is, and partials are combined
in a fixed order:

* along a contiguous row (``axis=None`` flattens C-order into one row; ``axis=1``), each
  chunk of :data:`CHUNK` elements is reduced by :data:`LANES` accumulators (element ``o``
  of a chunk goes to lane ``o % LANES``, each lane in order), the lanes are folded by a
  fixed pairwise tree, and the chunk partials of a row are then folded pairwise
  (:func:`_tree`); rows shorter than a chunk are grouped into one work item;
* along ``axis=0`` each block of :data:`ROW_BLOCK` rows is reduced in row order per column
  (columns are independent accumulators, so the inner loop runs along memory), and the
  block partials are folded pairwise.

Sums thus see at most 64 (rows: ``CHUNK / LANES``) or 256 (columns: ``ROW_BLOCK``)
sequential adds plus logarithmic trees — more accurate than a plain loop, and bit-identical
run to run. No ``fastmath``: LLVM may not
reassociate, so the order written here is the order executed; it vectorises the loops over
the lanes (elementwise, hence order-preserving). min/max/argmin/argmax have a unique answer
(the first index wins, NaN propagates), so their order does not matter. One deliberate
difference from ``reduce_host``: float32 products accumulate in float64 (see ``reduce``).

**Compile time.** Kernels compile lazily on first use and are cached on disk
(``cache=True``). There are four parallel kernels — additive (sum prod sqdev dot; sumsq is
dot(x, x)) and extremum (min max argmin argmax), each in a row and a column layout — each
specialised only on the dtypes; the op is a runtime int, branched on outside the inner
loops, so one specialisation serves every op of its family. (Per-op kernels or per-op
helper functions compiled ~1.6x slower: Numba's per-function cost dominates. Passing the
per-op functions as arguments instead would embed object addresses in a ``prange`` body,
which disables the disk cache.)
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import numpy as np

from ..dtypes import i64
from .base import CompiledKernel, DeviceInfo, ReduceRequest
from .numpy_backend import NumpyDevice, cpu_model, host_memory_bytes, post_host


def default_threads(cpus: int | None = None) -> int:
    """Threads of the numba device unless ``NUMBA_NUM_THREADS`` says otherwise: every core
    but one on machines with more than 4. OpenMP workers wait for each other at the end of
    every parallel loop; with one worker per core, any other runnable thread (the notebook's
    own, a GPU driver's, wgpu's poller) preempts a worker and the whole launch waits a
    scheduler slice. On a 16-vCPU VM that made a 20 µs reduction take 6 ms for runs of 5-15
    launches after an idle moment; with 15 (or 12) threads it never did (lent H200
    machine, issue 5). Numba imported before vgpu_nb keeps its own count."""
    n = cpus if cpus is not None else (os.cpu_count() or 1)
    return n - 1 if n > 4 else n


_NUMBA_WAS_IMPORTED = "numba" in sys.modules
if "NUMBA_NUM_THREADS" not in os.environ and not _NUMBA_WAS_IMPORTED:
    os.environ["NUMBA_NUM_THREADS"] = str(default_threads())

try:
    import numba
    from numba import njit, prange

    _IMPORT_ERROR: str | None = None
except ImportError as exc:  # the row says why; kernels below are then plain functions
    numba = None
    _IMPORT_ERROR = str(exc)
    prange = range

    def njit(*args: Any, **kwargs: Any) -> Any:
        return args[0] if args and callable(args[0]) else (lambda f: f)


CHUNK = 4096  #: elements per work item along a row (a multiple of LANES)
LANES = 64  #: independent accumulators (SIMD-friendly lanes) per chunk
ROW_BLOCK = 256  #: rows per work item when reducing along axis 0
COL_TILE = 1024  #: columns per work item when reducing along axis 0

_SUM, _PROD, _SQDEV, _DOT = range(4)
#: sumsq is dot(x, x): the same arithmetic (x converted to acc, squared), one kernel fewer
_KIND_CODE = {"sum": _SUM, "prod": _PROD, "sumsq": _DOT, "sqdev": _SQDEV, "dot": _DOT}


# ---- discovery ---------------------------------------------------------------------------
def discover() -> list[DeviceInfo]:
    """One row: the CPU cores as a virtual GPU (unavailable with the reason if no Numba)."""
    if numba is None:
        return [
            DeviceInfo(
                name="numba",
                backend="numba",
                adapter="Numba (not installed)",
                kind="cpu",
                memory_bytes=host_memory_bytes(),
                compute_units=os.cpu_count(),
                available=False,
                why_not="Numba is not installed: pip install numba",
                extra={"import_error": _IMPORT_ERROR},
            )
        ]
    threads = int(numba.config.NUMBA_NUM_THREADS)
    version = ".".join(numba.__version__.split(".")[:2])
    cpu = cpu_model()
    adapter = f"Numba {version} / LLVM on {threads} CPU thread{'s' if threads != 1 else ''}"
    return [
        DeviceInfo(
            name="numba",
            backend="numba",
            adapter=f"{adapter} ({cpu})" if cpu else adapter,
            kind="cpu",
            memory_bytes=host_memory_bytes(),
            compute_units=threads,
            extra={
                "numba_version": numba.__version__,
                "threads": threads,
                "cpu_model": cpu,
                "chunk": CHUNK,
                "lanes": LANES,
            },
        )
    ]


def open_device(info: DeviceInfo) -> NumbaDevice:
    return NumbaDevice(info)


@njit
def _u(i: int) -> Any:
    """An index known to be >= 0, as uint64: Numba emits no negative-index wrap-around for
    unsigned indices (with it, vector loads become gathers: 3 instead of 25 GB/s a thread)."""
    return np.uint64(i)


# ---- per-op inner loops --------------------------------------------------------------------
# Every element is converted to the accumulator type first (as ``reduce_host`` does) and
# every result is cast back: Numba widens int32*int32 to int64, and the cast restores NumPy's
# wrap-around in the accumulator type. Lanes live in a small scratch array updated by an
# inner loop over the lanes: a plain elementwise loop, which LLVM's loop vectorizer turns
# into SIMD without reassociating anything (scalar accumulators would stay scalar: Numba
# runs LLVM without the SLP vectorizer). The op branch sits outside each loop nest.
@njit
def _fold(mul: bool, acc: Any, acc_t: Any, n: int) -> Any:
    """Fold ``acc[:n]`` by the fixed pairwise tree of :func:`_tree` (it depends on n only)."""
    step = 1
    while step < n:
        if mul:
            for j in range(0, n - step, 2 * step):
                acc[j] = acc_t(acc[j] * acc[j + step])
        else:
            for j in range(0, n - step, 2 * step):
                acc[j] = acc_t(acc[j] + acc[j + step])
        step *= 2
    return acc[0]


@njit
def _row_chunk(
    kind: int, x: Any, y: Any, cen: Any, ci: int, acc_t: Any, s: int, e: int, acc: Any
) -> Any:
    """Reduce flat elements ``[s, e)``: element ``o`` goes to lane ``o % LANES`` (each lane
    in order), then the lanes are folded pairwise. ``acc`` is the caller's scratch."""
    xs = x[s:e]
    ys = y[s:e]
    n = e - s
    nl = min(n, LANES)
    ident = acc_t(1) if kind == _PROD else acc_t(0)
    for j in range(nl):
        acc[j] = ident
    if kind == _SUM:
        for r in range(0, n, LANES):
            for j in range(min(LANES, n - r)):
                acc[j] = acc_t(acc[j] + acc_t(xs[_u(r + j)]))
    elif kind == _PROD:
        for r in range(0, n, LANES):
            for j in range(min(LANES, n - r)):
                acc[j] = acc_t(acc[j] * acc_t(xs[_u(r + j)]))
    elif kind == _SQDEV:
        c = cen[ci]
        for r in range(0, n, LANES):
            for j in range(min(LANES, n - r)):
                d = acc_t(acc_t(xs[_u(r + j)]) - c)
                acc[j] = acc_t(acc[j] + acc_t(d * d))
    else:
        for r in range(0, n, LANES):
            for j in range(min(LANES, n - r)):
                acc[j] = acc_t(acc[j] + acc_t(acc_t(xs[_u(r + j)]) * acc_t(ys[_u(r + j)])))
    return _fold(kind == _PROD, acc, acc_t, nl)


@njit
def _col_block(
    kind: int, x: Any, y: Any, cen: Any, acc_t: Any, P: Any, b: int,
    r0: int, r1: int, c0: int, c1: int, cols: int,
) -> None:  # fmt: skip
    """Reduce rows ``[r0, r1)`` of columns ``[c0, c1)`` into ``P[b, c0:c1]``: one
    accumulator per column, rows in order (the inner loop runs along memory)."""
    pb = P[b, c0:c1]
    nc = c1 - c0
    ident = acc_t(1) if kind == _PROD else acc_t(0)
    for j in range(nc):
        pb[j] = ident
    for r in range(r0, r1):
        xr = x[r * cols + c0 : r * cols + c1]
        if kind == _SUM:
            for j in range(nc):
                pb[j] = acc_t(pb[j] + acc_t(xr[_u(j)]))
        elif kind == _PROD:
            for j in range(nc):
                pb[j] = acc_t(pb[j] * acc_t(xr[_u(j)]))
        elif kind == _SQDEV:
            cb = cen[c0:c1]
            for j in range(nc):
                d = acc_t(acc_t(xr[_u(j)]) - cb[_u(j)])
                pb[j] = acc_t(pb[j] + acc_t(d * d))
        else:
            yr = y[r * cols + c0 : r * cols + c1]
            for j in range(nc):
                pb[j] = acc_t(pb[j] + acc_t(acc_t(xr[_u(j)]) * acc_t(yr[_u(j)])))


@njit
def _lt(v: Any, m: Any) -> bool:
    """Does ``v`` replace the running minimum ``m``? If strictly smaller (so the first index
    wins ties), or if it is the first NaN (which nothing replaces: NaN is sticky)."""
    return v < m or (v != v and m == m)


@njit
def _gt(v: Any, m: Any) -> bool:
    return v > m or (v != v and m == m)


@njit
def _arg_scan(is_max: bool, x: Any, s: int, e: int, acc: Any) -> tuple[Any, int]:
    """(value, offset) of the best of flat elements ``[s, e)``, the first one on ties.

    Two passes over the chunk (the second from cache): the best value by LANES vectorised
    running bests (NaN is sticky, so the best is NaN if any element is), then the first
    element equal to it (the first NaN if it is NaN). ``acc`` is the caller's scratch."""
    xs = x[s:e]
    n = e - s
    nl = min(n, LANES)
    for j in range(nl):
        acc[j] = xs[_u(j)]
    if is_max:
        for r in range(LANES, n, LANES):
            for j in range(min(LANES, n - r)):
                v = xs[_u(r + j)]
                acc[j] = v if _gt(v, acc[j]) else acc[j]
        best = acc[0]
        for j in range(1, nl):
            best = acc[j] if _gt(acc[j], best) else best
    else:
        for r in range(LANES, n, LANES):
            for j in range(min(LANES, n - r)):
                v = xs[_u(r + j)]
                acc[j] = v if _lt(v, acc[j]) else acc[j]
        best = acc[0]
        for j in range(1, nl):
            best = acc[j] if _lt(acc[j], best) else best
    if best != best:
        for i in range(n):
            if xs[_u(i)] != xs[_u(i)]:
                return xs[_u(i)], i
    for i in range(n):
        if xs[_u(i)] == best:
            return xs[_u(i)], i
    return best, 0  # not reached: best is one of the elements


@njit
def _arg_block(
    is_max: bool, x: Any, Pv: Any, Pi: Any, b: int, r0: int, r1: int, c0: int, c1: int,
    cols: int,
) -> None:  # fmt: skip
    """Per column of ``[c0, c1)``: the best value over rows ``[r0, r1)`` (the first on
    ties, the first NaN if any) into ``Pv[b]`` and its row into ``Pi[b]``."""
    pv = Pv[b, c0:c1]
    pi = Pi[b, c0:c1]
    nc = c1 - c0
    xr = x[r0 * cols + c0 : r0 * cols + c1]
    for j in range(nc):
        pv[j] = xr[_u(j)]
        pi[j] = r0
    for r in range(r0 + 1, r1):
        xr = x[r * cols + c0 : r * cols + c1]
        if is_max:
            for j in range(nc):
                v = xr[_u(j)]
                if _gt(v, pv[j]):
                    pv[j] = v
                    pi[j] = r
        else:
            for j in range(nc):
                v = xr[_u(j)]
                if _lt(v, pv[j]):
                    pv[j] = v
                    pi[j] = r


# ---- the parallel kernels (one per family × layout, specialised on dtypes only) -----------
@njit
def _row_items(rows: int, cols: int, nch: int) -> tuple[int, int]:
    """Work items of the row layout: one chunk of one row, or, when rows are shorter than
    a chunk, a group of ``rpi`` whole rows (so short rows do not cost one item each)."""
    rpi = max(1, CHUNK // max(cols, 1)) if nch == 1 else 1
    return rpi, (rows + rpi - 1) // rpi * nch


@njit(parallel=True, nogil=True, cache=True)
def _add_rows(
    kind: int, x: Any, y: Any, cen: Any, acc_t: Any, rows: int, cols: int, P: Any
) -> None:
    """``P[r, k]`` = chunk ``k`` of row ``r`` (``cen[r]`` is row r's center for sqdev)."""
    nch = P.shape[1]
    rpi, items = _row_items(rows, cols, nch)
    for t in prange(items):
        acc = np.empty(LANES, P.dtype)  # the lanes: per item, so per thread
        q = t // nch
        k = t - q * nch
        for r in range(q * rpi, min(rows, q * rpi + rpi)):
            s = r * cols + k * CHUNK
            e = min(s + CHUNK, r * cols + cols)
            P[r, k] = _row_chunk(kind, x, y, cen, r, acc_t, s, e, acc)


@njit(parallel=True, nogil=True, cache=True)
def _add_cols(
    kind: int, x: Any, y: Any, cen: Any, acc_t: Any, rows: int, cols: int, P: Any
) -> None:
    """``P[b, c]`` = rows of block ``b`` of column ``c`` (``cen[c]``: its sqdev center)."""
    nct = (cols + COL_TILE - 1) // COL_TILE
    for t in prange(P.shape[0] * nct):
        b = t // nct
        c0 = (t - b * nct) * COL_TILE
        r0 = b * ROW_BLOCK
        _col_block(
            kind, x, y, cen, acc_t, P, b, r0, min(rows, r0 + ROW_BLOCK),
            c0, min(cols, c0 + COL_TILE), cols,
        )  # fmt: skip


@njit(parallel=True, nogil=True, cache=True)
def _arg_rows(is_max: bool, x: Any, rows: int, cols: int, Pv: Any, Pi: Any) -> None:
    """``(Pv, Pi)[r, k]`` = best value of chunk ``k`` of row ``r`` and its index in the row."""
    nch = Pv.shape[1]
    rpi, items = _row_items(rows, cols, nch)
    for t in prange(items):
        acc = np.empty(LANES, Pv.dtype)
        q = t // nch
        k = t - q * nch
        for r in range(q * rpi, min(rows, q * rpi + rpi)):
            s = r * cols + k * CHUNK
            v, i = _arg_scan(is_max, x, s, min(s + CHUNK, r * cols + cols), acc)
            Pv[r, k] = v
            Pi[r, k] = i + k * CHUNK


@njit(parallel=True, nogil=True, cache=True)
def _arg_cols(is_max: bool, x: Any, rows: int, cols: int, Pv: Any, Pi: Any) -> None:
    """``(Pv, Pi)[b, c]`` = best value of column ``c`` over row block ``b`` and its row."""
    nct = (cols + COL_TILE - 1) // COL_TILE
    for t in prange(Pv.shape[0] * nct):
        b = t // nct
        c0 = (t - b * nct) * COL_TILE
        r0 = b * ROW_BLOCK
        _arg_block(
            is_max, x, Pv, Pi, b, r0, min(rows, r0 + ROW_BLOCK),
            c0, min(cols, c0 + COL_TILE), cols,
        )  # fmt: skip


# ---- host side -----------------------------------------------------------------------------
def _tree(P: np.ndarray, axis: int, op: np.ufunc) -> np.ndarray:
    """Combine the partials along ``axis`` by a fixed pairwise tree (it depends only on
    their number), in place; returns the combined vector. Elementwise NumPy ops, so the
    order is exactly this one (integers wrap like NumPy)."""
    A = P if axis == 1 else P.T
    n = A.shape[1]
    step = 1
    while step < n:
        left = A[:, 0 : n - step : 2 * step]
        op(left, A[:, step : n : 2 * step], out=left)
        step *= 2
    return A[:, 0]


def _layout(req: ReduceRequest) -> tuple[int, int, bool]:
    """(rows, cols, by_cols): the 2-D view reduced along its rows (contiguous) or, when
    ``by_cols``, down its columns. A single column is a row."""
    if req.axis is None:
        return 1, int(np.prod(req.shape)), False
    rows, cols = req.shape
    if req.axis == 1:
        return rows, cols, False
    if cols == 1:
        return 1, rows, False
    return rows, cols, True


def _nblocks(n: int, size: int) -> int:
    return (n + size - 1) // size


class NumbaDevice(NumpyDevice):
    """Host memory (NumPy arrays, BLAS matmul) with reductions on parallel Numba kernels."""

    backend = "numba"
    target = "numba"

    # ---- the kernel language: prange over the domain ------------------------------------
    def kernel_unsupported(self, fn: Any) -> str | None:
        from ..kernel import ir

        if ir.usage(fn).prints:
            return "print() only runs on the 'numpy' debugging backend (device='numpy')"
        return None

    def compile_kernel(self, fn: Any) -> CompiledKernel:
        """Generate, import (disk cache) and compile now for the kernel's exact types."""
        from ..kernel import pyload

        t0 = time.perf_counter()
        src = self.kernel_source(fn)
        mod, file_hit = pyload.load(src, "numba")
        launcher = getattr(mod, fn.name)
        sig = [pyload.numba_type(i64), pyload.numba_type(i64)]
        for p in fn.params:
            t = p.type
            sig.append(pyload.numba_type((t.dtype, t.ndim) if p.is_array else t))
        _, hit = pyload.compile_numba(launcher, tuple(sig))
        return CompiledKernel(src, launcher, time.perf_counter() - t0, hit and file_hit)

    def launch_kernel(self, ck: CompiledKernel, domain: tuple[int, ...], args: Any) -> None:
        n0, n1 = (domain[0], 1) if len(domain) == 1 else domain
        ck.handle(n0, n1, *[a[0] if isinstance(a, tuple) else a for a in args])

    def compile_reduction(self, red: Any) -> CompiledKernel:
        """Import and compile the row layout and the epilogue now (the column layout,
        for axis=0, compiles on first use)."""
        from ..kernel import pyload

        t0 = time.perf_counter()
        src = self.reduction_source(red)
        mod, file_hit = pyload.load(src, "numba")
        i64t = pyload.numba_type(i64)
        xs = [pyload.numba_type((d, 1)) for d in red.inputs]
        P = pyload.numba_type((red.acc, 2))
        _, hit = pyload.compile_numba(mod.rows, (*xs, i64t, i64t, P))
        pyload.compile_numba(mod.finish, (P, i64t, i64t, pyload.numba_type((red.out, 1))))
        t = time.perf_counter() - t0
        return CompiledKernel(src, mod, t, hit and file_hit, {"red": red})

    def reduce(self, req: ReduceRequest) -> np.ndarray:
        rows, cols, by_cols = _layout(req)
        x = np.ascontiguousarray(req.x).reshape(-1)
        if req.kind in ("min", "max", "argmin", "argmax"):
            return self._extremum(req, x, rows, cols, by_cols)
        if req.kind not in _KIND_CODE:
            raise ValueError(f"unknown reduction kind {req.kind!r}")
        kind = _KIND_CODE[req.kind]
        acc = req.acc.np
        if kind == _PROD and acc == np.float32:
            # A product's rounding errors compound instead of cancelling, and chunked or
            # tree-shaped products keep partials near 1.0, where f32 rounding is biased
            # (ties at the binade edge break one way): -2.5e-3 relative error over 10^6
            # factors of 1±5e-4 for a pairwise f32 tree. f64 partials avoid it; the result
            # is rounded to f32 once.
            acc = np.dtype(np.float64)
        elif acc.kind in "iu" and acc.itemsize < 8:
            # (u)int32 dots: wrapping arithmetic in 64 bits, truncated to 32 at the end, has
            # the same bits (mod 2^32 is a ring homomorphism), and reuses the kernels that
            # (u)int32 sums into (u)int64 compile anyway.
            acc = np.dtype(np.int64 if acc.kind == "i" else np.uint64)
        y = x if req.y is None else np.ascontiguousarray(req.y).reshape(-1)
        if req.center is None:
            cen = np.zeros(1, acc)
        else:
            cen = np.ascontiguousarray(req.center, dtype=acc).reshape(-1)
        if by_cols:
            P = np.empty((_nblocks(rows, ROW_BLOCK), cols), acc)
            _add_cols(kind, x, y, cen, acc.type, rows, cols, P)
            r = _tree(P, 0, np.multiply if kind == _PROD else np.add)
        else:
            P = np.empty((rows, _nblocks(cols, CHUNK)), acc)
            _add_rows(kind, x, y, cen, acc.type, rows, cols, P)
            r = _tree(P, 1, np.multiply if kind == _PROD else np.add)
        r = np.ascontiguousarray(r).astype(req.acc.np, copy=False).reshape(req.out_shape)
        return post_host(req, r)

    @staticmethod
    def _extremum(
        req: ReduceRequest, x: np.ndarray, rows: int, cols: int, by_cols: bool
    ) -> np.ndarray:
        """Per-block winners from the kernel; the first best block is NumPy's arg-reduction
        of the winners (it too returns the first NaN), so the first index overall wins."""
        is_max = req.kind in ("max", "argmax")
        pick = np.argmax if is_max else np.argmin
        if by_cols:
            shape = (_nblocks(rows, ROW_BLOCK), cols)
            Pv, Pi = np.empty(shape, x.dtype), np.empty(shape, np.int64)
            _arg_cols(is_max, x, rows, cols, Pv, Pi)
            best = pick(Pv, axis=0)
            lanes = np.arange(cols)
            value, index = Pv[best, lanes], Pi[best, lanes]
        else:
            shape = (rows, _nblocks(cols, CHUNK))
            Pv, Pi = np.empty(shape, x.dtype), np.empty(shape, np.int64)
            _arg_rows(is_max, x, rows, cols, Pv, Pi)
            best = pick(Pv, axis=1)
            lanes = np.arange(rows)
            value, index = Pv[lanes, best], Pi[lanes, best]
        out = index if req.kind.startswith("arg") else value
        return np.ascontiguousarray(out).reshape(req.out_shape)
