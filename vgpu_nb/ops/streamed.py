"""Out-of-core versions of the ops, on top of :class:`vgpu_nb.memory.stream.Stream`.

Called by the ops themselves when :func:`vgpu_nb.memory.stream.streaming` says their
operands do not fit the device budget together:

* built-in reductions (``vg.sum`` … ``vg.std``, ``vg.dot``, ``vg.norm``, ``axis`` None/0/1):
  each chunk reduces to a partial in the accumulator dtype on the device; partials are
  combined on the host in chunk order (argmin/argmax keep NumPy's first-index and
  first-NaN rules), then divided / square-rooted / cast as the one-pass op would;
* ``@vg.reduction``: chunks run a variant without ``post``; the partials are folded with
  the reduction's own ``combine`` and ``post`` (its generated Python, so the semantics are
  the kernel language's) — results differ from the in-core ones only by float rounding;
* kernels and fused expressions over a 1-D domain in which every thread touches only
  element ``i = vg.tid()`` of the big arrays (``x[i]``): each chunk is one launch over
  that chunk's threads. Arrays indexed any other way must fit on the device whole;
* ``vg.matmul``: row panels of ``a`` stream through while ``b`` stays on the device.

Anything else raises :class:`OutOfDeviceMemory` saying why it cannot stream.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from ..array import Array, _from_host
from ..dtypes import i64
from ..kernel import ir
from ..memory.budgets import human
from ..memory.manager import MEM
from ..memory.stream import Operand, Stream, as_2d, too_big
from ..telemetry import recorded

_HOST_COMBINE = {"add": np.add, "mul": np.multiply, "min": np.minimum, "max": np.maximum}
_KIND_COMBINE = {"sum": "add", "sumsq": "add", "dot": "add", "sqdev": "add", "prod": "mul",
                 "min": "min", "max": "max"}  # fmt: skip


def _result(dev: Any, host: np.ndarray, out_shape: tuple[int, ...]) -> Array:
    return _from_host(dev, np.array(host.reshape(out_shape), order="C"))  # (0-d stays 0-d)


# ---- built-in reductions -------------------------------------------------------------------
def reduce_builtin(op: str, x: Array, y: Array | None, axis: Any, ddof: int) -> Array:
    from ..backends.base import ReduceRequest
    from .reductions import _COST, _ONE_PASS, _layout, roles

    dev = x.device
    shape2, ax, out_shape = _layout(op, x.shape, axis)
    inputs, out, acc = roles(op, x.dtype, None if y is None else y.dtype)
    dev.require(op, inputs, out, acc)
    rows, cols = as_2d(shape2)
    length = x.size if ax is None else shape2[ax]
    label = f"vg.{op} of {human(x.nbytes)}"

    def run(kind: str, center: Any = None, post: tuple[Any, bool] | None = None) -> list[Any]:
        """Stream ``kind`` over x (and y); per chunk ``(buf, rows)``, or for arg kinds
        ``(values, indices, first row, rows)``. ``post``: axis=1 (whole rows per chunk):
        (divisor, sqrt) of the real op, giving final values."""
        ops = [Operand(x, rows, cols)] + ([Operand(y, rows, cols)] if y is not None else [])
        parts: list[Any] = []
        is_arg = kind in ("argmin", "argmax")

        def body(k: int, r0: int, r1: int, chunks: list[Any]) -> None:
            m = r1 - r0
            if ax is None:
                bufs = [dev.reshape(c, (m * cols,)) for c in chunks]
                shp: tuple[int, ...] = (m * cols,)
            else:
                bufs, shp = chunks, (m, cols)
            if post is not None:
                req = ReduceRequest(kind, bufs[0], shp, x.dtype, ax, acc, out, post[0], post[1])
            elif is_arg:
                req = ReduceRequest(kind, bufs[0], shp, x.dtype, ax, x.dtype, x.dtype)
            else:
                req = ReduceRequest(kind, bufs[0], shp, x.dtype, ax, acc, acc)
            if len(bufs) > 1:
                req.y, req.y_dtype = bufs[1], y.dtype  # type: ignore[union-attr]
            if center is not None:
                req.center = center
            if is_arg and post is None:
                vreq = dataclasses.replace(req, kind="min" if kind == "argmin" else "max")
                parts.append((dev.reduce(vreq), dev.reduce(req), r0, m))
            else:
                parts.append((dev.reduce(req), m))

        Stream(dev, ops, rows, label).run(body)
        return parts

    def host(b: Any, dt: Any, shape: tuple[int, ...]) -> np.ndarray:
        return np.asarray(dev.to_numpy(b, shape, dt))

    part_shape = () if ax is None else (cols,)

    def combine(kind: str, parts: list[Any]) -> np.ndarray:
        return combine_partials(kind, [host(p, acc, part_shape) for p, _ in parts], acc)

    def finish(total: np.ndarray, divisor: float | None, sqrt: bool) -> np.ndarray:
        return finish_builtin(total, acc, out, divisor, sqrt)

    def compute() -> Any:
        if ax == 1:  # every row is whole inside a chunk: run the real op per chunk
            if op in _ONE_PASS:
                kind, divide, sqrt = _ONE_PASS[op]
                parts = run(kind, post=(length if divide else None, sqrt))
                dt = i64 if kind in ("argmin", "argmax") else out
                return np.concatenate([host(b, dt, (m,)) for b, m in parts])
            return _var_rows(op, x, rows, cols, acc, out, ddof, label)
        if op in _ONE_PASS:
            kind, divide, sqrt = _ONE_PASS[op]
            parts = run(kind)
            if kind in ("argmin", "argmax"):
                return _arg_combine(kind, parts, host, x.dtype, part_shape, cols, ax)
            return finish(combine(kind, parts), length if divide else None, sqrt)
        # var / std: a streamed mean, then streamed squared deviations around it
        mean = finish(combine("sum", run("sum")), length, False).astype(acc.np)
        center = dev.from_numpy(np.ascontiguousarray(mean.reshape(-1)))
        if ax is None:
            center = dev.reshape(center, ())
        dof = max(length - ddof, 0)
        if length - ddof <= 0:
            import warnings

            warnings.warn("Degrees of freedom <= 0 for slice", RuntimeWarning, stacklevel=4)
        return finish(combine("sqdev", run("sqdev", center=center)), dof, op == "std")

    flops, passes = _COST.get(op, (1, 1))
    nbytes = passes * x.nbytes + (y.nbytes if y is not None else 0)
    res = recorded(dev, op, x.shape, x.dtype.name, nbytes, flops * x.size, compute)
    return _result(dev, np.asarray(res), out_shape)


def combine_partials(kind: str, parts: list[np.ndarray], acc: Any) -> np.ndarray:
    """Partials of a one-pass backend reduction ``kind`` (chunks of a stream, shares of a
    split), combined in order in the accumulator dtype."""
    return _HOST_COMBINE[_KIND_COMBINE[kind]].reduce(np.stack(parts), axis=0, dtype=acc.np)


def finish_builtin(
    total: np.ndarray, acc: Any, out: Any, divisor: float | None, sqrt: bool
) -> np.ndarray:
    """A combined total as the one-pass op would return it: divided (mean), square-rooted
    (norm), cast to the result dtype."""
    r = np.asarray(total, acc.np)
    with np.errstate(all="ignore"):
        if divisor is not None:
            r = np.asarray(r / acc.np.type(divisor)).astype(acc.np)
        if sqrt:
            r = np.sqrt(r)
    return np.asarray(r).astype(out.np)


def _arg_combine(kind: str, parts: list[Any], host: Any, dt: Any, shape: tuple[int, ...],
                 cols: int, ax: int | None) -> np.ndarray:  # fmt: skip
    """argmin/argmax over chunks: the chunk whose value wins (NumPy's rules on the stacked
    values: first minimum, first NaN), then its index shifted by the chunk's offset."""
    vals = np.stack([host(v, dt, shape) for v, _, _, _ in parts])
    idx = np.stack([host(i, i64, shape) for _, i, _, _ in parts]).astype(np.int64)
    offs = np.array([r0 for _, _, r0, _ in parts], np.int64)
    win = getattr(np, kind)(vals, axis=0)
    if ax is None:
        return np.asarray(idx[win] + offs[win] * cols, np.int64)
    sel = idx[win, np.arange(idx.shape[1])]
    return (sel + offs[win]).astype(np.int64)


def _var_rows(op: str, x: Array, rows: int, cols: int, acc: Any, out: Any, ddof: int,
              label: str) -> np.ndarray:  # fmt: skip
    from ..backends.base import ReduceRequest

    dev = x.device
    res: list[Any] = []
    dof = max(cols - ddof, 0)

    def body(k: int, r0: int, r1: int, chunks: list[Any]) -> None:
        m, c = r1 - r0, chunks[0]
        mean = dev.reduce(ReduceRequest("sum", c, (m, cols), x.dtype, 1, acc, acc, cols))
        res.append((dev.reduce(ReduceRequest("sqdev", c, (m, cols), x.dtype, 1, acc, out,
                                             dof, op == "std", center=mean)), m))  # fmt: skip

    Stream(dev, [Operand(x, rows, cols)], rows, label).run(body)
    return np.concatenate([np.asarray(dev.to_numpy(b, (m,), out)) for b, m in res])


# ---- @vg.reduction ---------------------------------------------------------------------------
def reduce_custom(rf: Any, arrays: tuple[Array, ...], red: ir.Reduction, shape2: tuple[int, ...],
                  ax: int | None, out_shape: tuple[int, ...]) -> Array:  # fmt: skip
    dev = arrays[0].device
    rows, cols = as_2d(shape2)
    cache = rf._compiled
    if ax == 1:
        cr = cache.get((dev, red.inputs))
        if cr is None:
            cr = cache[(dev, red.inputs)] = dev.compile_reduction(red)
    else:
        cr = part_reduction(rf, red, dev)
    parts: list[tuple[Any, int]] = []

    def body(k: int, r0: int, r1: int, chunks: list[Any]) -> None:
        m = r1 - r0
        if ax is None:
            bufs = [dev.reshape(c, (m * cols,)) for c in chunks]
            parts.append((dev.run_reduction(cr, bufs, (m * cols,), None), m))
        else:
            parts.append((dev.run_reduction(cr, chunks, (m, cols), ax), m))

    def compute() -> Any:
        label = f"{rf.__name__} over {human(sum(a.nbytes for a in arrays))}"
        Stream(dev, [Operand(a, rows, cols) for a in arrays], rows, label).run(body)
        if ax == 1:
            return np.concatenate([np.asarray(dev.to_numpy(b, (m,), red.out)) for b, m in parts])
        shp = () if ax is None else (cols,)
        P = np.stack([np.asarray(dev.to_numpy(b, shp, red.acc)) for b, _ in parts])
        if ax is None:
            return finish_custom(red, P.reshape(1, -1), 1, rows * cols)
        return finish_custom(red, P, 0, rows)

    n = math.prod(shape2)
    nbytes = sum(a.nbytes for a in arrays)
    dts = "/".join(d.name for d in red.inputs)
    res = recorded(dev, rf.__name__, arrays[0].shape, dts, nbytes, n, compute)
    return _result(dev, np.asarray(res), out_shape)


def part_reduction(rf: Any, red: ir.Reduction, dev: Any) -> Any:
    """``red`` without its ``post``, compiled for ``dev`` (cached on the reduction): what
    each chunk (or each device of a split) computes; :func:`finish_custom` folds them."""
    key = (dev, red.inputs, "stream")
    cr = rf._compiled.get(key)
    if cr is None:
        part = dataclasses.replace(
            red, name=red.name + "_part", post=None, post_takes_n=False, out=red.acc,
            funcs=[f for f in red.funcs if f is not red.post],
        )  # fmt: skip
        cr = rf._compiled[key] = dev.compile_reduction(part)
    return cr


def finish_custom(red: ir.Reduction, P: np.ndarray, axis: int, n: int) -> np.ndarray:
    """Fold partials ``P`` (in the accumulator dtype) along ``axis`` with the reduction's
    own combine and post (its generated Python: the kernel language's semantics)."""
    from ..kernel import codegen_numba, pyload

    mod, _ = pyload.load(codegen_numba.reduction_source(red, "python"), "python")
    res = np.empty(P.shape[1 - axis], red.out.np)
    with np.errstate(all="ignore"):
        mod.finish(P, axis, n, res)
    return res


# ---- kernels and expressions ------------------------------------------------------------------
def tid_indexed(fn: ir.Function) -> set[str] | None:
    """Array parameters that every thread touches only at its own index ``[tid]`` (plain
    loads/stores, no shape, no atomics, not passed to functions) in a 1-D kernel; None if
    the thread id is used in any other way (then chunks would see wrong ids)."""
    if fn.ndim not in (None, 1):
        return None
    tids: set[str] = set()
    for s in ir.walk_stmts(fn.body):
        if isinstance(s, ir.Assign) and isinstance(s.value, ir.ThreadId):
            tids.add(s.name)
    for s in ir.walk_stmts(fn.body):
        if isinstance(s, ir.Assign) and s.name in tids and not isinstance(s.value, ir.ThreadId):
            return None  # the id variable is reassigned
        if isinstance(s, ir.ForRange) and s.var in tids:
            return None
    good: set[str] = set()
    bad: set[str] = set()

    def is_tid(e: Any) -> bool:
        return isinstance(e, ir.ThreadId) or (isinstance(e, ir.Var) and e.name in tids)

    def visit(e: Any) -> bool:
        if isinstance(e, ir.Load | ir.Atomic):
            if isinstance(e, ir.Load) and len(e.index) == 1 and is_tid(e.index[0]):
                good.add(e.array)
            else:
                bad.add(e.array)
                if not all(visit(i) for i in e.index):
                    return False
            return visit(e.value) if isinstance(e, ir.Atomic) else True
        if isinstance(e, ir.Shape):
            bad.add(e.array)
            return True
        if isinstance(e, ir.ArrayArg):
            bad.add(e.name)
            return True
        if is_tid(e):
            return False
        return all(visit(c) for c in ir.children(e))

    for s in ir.walk_stmts(fn.body):
        if isinstance(s, ir.Assign) and s.name in tids:
            continue
        if isinstance(s, ir.Store):
            if len(s.index) == 1 and is_tid(s.index[0]):
                good.add(s.array)
            else:
                bad.add(s.array)
                if not all(visit(i) for i in s.index):
                    return None
            if not visit(s.value):
                return None
            continue
        for e in ir.stmt_exprs(s):
            if not visit(e):
                return None
    return good - bad


def launch(dev: Any, fn: ir.Function, ck: Any, n: int, args: list[Any], label: str) -> None:
    """Launch ``fn`` over ``n`` threads in chunks. ``args``: a ``vg.Array`` per array
    parameter, a native scalar per scalar parameter, in parameter order."""

    ok = tid_indexed(fn)
    use = ir.usage(fn)
    if ok is None:
        raise too_big(
            label,
            dev,
            _total(args),
            "it uses vg.tid() for something else than indexing its arrays x[i], "
            "so it cannot run in chunks; raise the budget: "
            "vg.memory.configure(device=...)",
        )
    chunked: list[tuple[Array, str]] = []
    where: list[Any] = []
    whole = 0
    for p, a in zip(fn.params, args, strict=True):
        if not p.is_array:
            where.append(("scalar", a))
            continue
        if p.name in ok and a.ndim == 1 and a.shape[0] == n:
            # written arrays are read too: a thread may store conditionally, and the
            # elements it skips must keep their values through the slot's round trip
            where.append(("chunk", len(chunked)))
            chunked.append((a, "rw" if p.name in use.written else "r"))
        else:
            where.append(("whole", a))
            whole += a.nbytes
    if whole and not MEM.fits_device(dev, whole):
        raise too_big(
            label,
            dev,
            whole,
            "arrays it indexes other than by x[i] (i = vg.tid()) must fit on the "
            "device whole; raise the budget: vg.memory.configure(device=...)",
        )
    if not chunked:
        raise too_big(label, dev, _total(args), "none of its arrays can be cut into chunks")
    # arrays used whole come back first (held by these references: nothing evicts them);
    # then the chunked ones are held where they are for the stream
    bufs = {id(a): (a._buf, a.shape) for kind, a in where if kind == "whole"}
    ops = [Operand(a, n, 1, mode) for a, mode in chunked]

    def body(k: int, r0: int, r1: int, chunks: list[Any]) -> None:
        m = r1 - r0
        native = []
        for kind, v in where:
            if kind == "scalar":
                native.append(v)
            elif kind == "chunk":
                native.append((dev.reshape(chunks[v], (m,)), (m,)))
            else:
                native.append(bufs[id(v)])
        dev.launch_kernel(ck, (m,), native)

    Stream(dev, ops, n, label, keep=whole).run(body)  # (releases the operands' holds)


def _total(args: list[Any]) -> int:
    return sum(a.nbytes for a in args if isinstance(a, Array))


# ---- matmul ---------------------------------------------------------------------------------
def matmul(a: Array, b: Array, m: int, k: int, n: int, out_dt: Any,
           shape: tuple[int, ...]) -> Array:  # fmt: skip
    """Row panels of ``a`` stream through the device; ``b`` must fit there whole."""
    dev = a.device
    if not MEM.fits_device(dev, b.nbytes * 2):
        raise too_big(
            "vg.matmul",
            dev,
            b.nbytes,
            "the right operand must fit in half the device budget (row panels of "
            "the left one stream); raise the budget: vg.memory.configure(device=...)",
        )
    from ..array import empty

    c = empty((m, n), out_dt, device=dev)
    bb = b._buf
    b2 = bb if b.shape == (k, n) else dev.reshape(bb, (k, n))
    a2 = a if a.shape == (m, k) else a.reshape(m, k)
    isz = out_dt.itemsize

    def body(j: int, r0: int, r1: int, chunks: list[Any]) -> None:
        rows = r1 - r0
        res = dev.matmul(dev.reshape(chunks[0], (rows * k,)), b2, rows, k, n, out_dt)
        dst = chunks[1]
        if dev.backend == "wgpu":
            from ..memory.stream import _wgpu_copy

            _wgpu_copy(dev, res, 0, dst, 0, rows * n * isz)
        else:
            dst[...] = res.reshape(rows, n)

    def compute() -> None:
        ops = [Operand(a2, m, k, "r"), Operand(c, m, n, "w")]
        Stream(dev, ops, m, f"vg.matmul {m}×{k} @ {k}×{n}", keep=b.nbytes).run(body)

    nbytes = (m * k + k * n + m * n) * isz
    recorded(dev, "matmul", (m, k, n), out_dt.name, nbytes, 2 * m * n * k, compute)
    del bb
    return c if shape == (m, n) else c.reshape(shape)
