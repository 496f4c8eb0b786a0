"""Built-in reductions with NumPy semantics, on every backend.

This module owns the semantics once — result dtypes (derived from NumPy itself, so
``int32 → int64`` for ``sum``), empty inputs (``sum`` → 0, ``max`` → error, ``mean`` → NaN
with a warning), ``axis`` handling and the composition of mean/var/std/norm — and hands
backends plain :class:`~vgpu_nb.backends.base.ReduceRequest` s.

``axis`` is ``None`` (all elements) or, on n-D arrays, the first or the last axis
(n-D arrays are viewed as 2-D). Results are ``vg.Array`` s on the input's device; full
reductions give 0-d arrays (``float(r)`` / ``r.item()`` read them).
"""

from __future__ import annotations

import builtins
import functools
import math
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import scheduler
from ..array import Array, _Spilled, check_same_device
from ..backends.base import Device, ReduceRequest
from ..devices import AUTO, auto_requested
from ..dtypes import DType, as_dtype, i64
from ..errors import AxisOutOfRange, EmptyReduction, ShapeMismatch
from ..memory.manager import _now
from ..memory.stream import streaming
from ..scheduler import auto
from ..telemetry import BUS, OpRecord, recorded

_NUMPY_OP: dict[str, Callable[..., Any]] = {
    "sum": np.sum,
    "prod": np.prod,
    "min": np.min,
    "max": np.max,
    "argmin": np.argmin,
    "argmax": np.argmax,
    "mean": np.mean,
    "var": np.var,
    "std": np.std,
    "norm": np.linalg.norm,
}
# flops per element and passes over the input, for telemetry
_COST = {"var": (4, 2), "std": (4, 2), "norm": (2, 1), "dot": (2, 1)}
_IDENTITY = {"sum": 0, "prod": 1, "norm": 0, "dot": 0}
# public op → (backend kind, divide by the reduced length, sqrt): the one-pass ops
_ONE_PASS = {
    "sum": ("sum", False, False),
    "prod": ("prod", False, False),
    "min": ("min", False, False),
    "max": ("max", False, False),
    "argmin": ("argmin", False, False),
    "argmax": ("argmax", False, False),
    "mean": ("sum", True, False),
    "norm": ("sumsq", False, True),
    "dot": ("dot", False, False),
}


@functools.cache
def result_dtype(op: str, dtype: DType) -> DType:
    """The dtype NumPy gives ``op`` on ``dtype`` (asked of NumPy, not re-implemented)."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return as_dtype(np.asarray(_NUMPY_OP[op](np.ones(3, dtype.np))).dtype)


@functools.cache
def roles(op: str, x: DType, y: DType | None = None) -> tuple[tuple[DType, ...], DType, DType]:
    """(inputs, result dtype, accumulator dtype) of a reduction, as NumPy defines them.
    arg* accumulate in the input dtype; a bool·bool dot counts in int64."""
    if op == "dot":
        out = as_dtype(np.result_type(x.np, y.np))  # type: ignore[union-attr]
        return (x, y), out, (i64 if out.name == "bool" else out)  # type: ignore[return-value]
    out = result_dtype(op, x)
    return (x,), out, (x if op in ("argmin", "argmax") else out)


def _layout(
    op: str, shape: tuple[int, ...], axis: Any
) -> tuple[tuple[int, ...], int | None, tuple[int, ...]]:
    """(shape seen by the backend, its axis, user-visible result shape)."""
    nd = len(shape)
    if axis is None or (
        isinstance(axis, tuple) and sorted(a % builtins.max(nd, 1) for a in axis) == list(range(nd))
    ):
        return shape, None, ()
    if isinstance(axis, tuple):
        if len(axis) != 1:
            raise AxisOutOfRange(
                f"{op}: axis={axis} is not supported on a {nd}-D array",
                fix="reduce over one axis, or all of them (axis=None)",
            )
        axis = axis[0]
    if not isinstance(axis, (int, np.integer)) or not -nd <= axis < nd or nd == 0:
        raise AxisOutOfRange(
            f"{op}: axis {axis!r} is out of bounds for an array of dimension {nd}",
            fix=f"use axis=None or an int in [-{nd}, {nd - 1}]" if nd else "use axis=None",
        )
    axis = int(axis) % nd
    if nd == 1:
        return shape, None, ()
    if axis == 0:
        return (shape[0], math.prod(shape[1:])), 0, shape[1:]
    if axis == nd - 1:
        return (math.prod(shape[:-1]), shape[-1]), 1, shape[:-1]
    raise AxisOutOfRange(
        f"{op}: axis={axis} of a {nd}-D array is not supported (only the first or last axis)",
        fix="reshape to 2-D so that the axis is first or last",
    )


def _reduce(
    op: str,
    x: Array,
    axis: Any = None,
    *,
    ddof: int = 0,
    y: Array | None = None,
    split: bool = False,
) -> Array:
    if split:
        return _reduce_split(op, x, axis, y, force=True)
    if AUTO[0] and auto_requested() and not auto.inside():
        if (
            scheduler.split
            and x.size >= _SPLIT_MIN
            and _unsplittable(op, x, axis) is None
            and type(x) is Array
        ):
            return _reduce_split(op, x, axis, y, force=False)
        return _reduce_auto(op, x, axis, ddof, y)
    return _reduce_here(op, x, axis, ddof=ddof, y=y)


_SPLIT_MIN = 1 << 20
#: ops that split: (backend kind of each share, combine, divide by n, sqrt)
_SPLITS = {"sum": "sum", "prod": "prod", "min": "min", "max": "max", "mean": "sum",
           "dot": "dot", "norm": "sumsq"}  # fmt: skip


def _unsplittable(op: str, x: Any, axis: Any) -> str | None:
    if op not in _SPLITS:
        return f"vg.{op} does not split (only {', '.join(f'vg.{k}' for k in _SPLITS)})"
    if axis is not None and not (isinstance(x, Array) and x.ndim <= 1):
        return "only reductions over all elements (axis=None) split"
    return None


def _reduce_split(op: str, x: Array, axis: Any, y: Array | None, force: bool) -> Array:
    """Shares of ``x`` on several devices, partials combined on the host exactly as a
    streamed reduction combines its chunks (:mod:`vgpu_nb.scheduler.partition`)."""
    from ..errors import CannotSplit
    from ..scheduler import partition
    from .streamed import _result, combine_partials, finish_builtin

    arrays = (x,) if y is None else (x, y)
    for a in arrays:
        check_same_device(op, a)
    _layout(op, x.shape, axis)  # (axis out of range: the usual error first)
    why = _unsplittable(op, x, axis)
    if why:
        raise CannotSplit(f"vg.{op} cannot be split: {why}", fix="call it without split=True")
    if y is not None and y.shape != x.shape:
        raise ShapeMismatch(f"{op}: shapes {x.shape} and {y.shape} differ")
    inputs, out, acc = roles(op, x.dtype, None if y is None else y.dtype)
    n = x.size
    if n == 0:
        return _reduce_here(op, x, axis, y=y)
    kind = _SPLITS[op]
    work = _reduce_work(op, x, y, inputs, out, acc)

    def task(dev: Device, lo: int, hi: int, hosts: list[Any]) -> np.ndarray:
        m = hi - lo
        bufs = [h.share(dev, lo, hi) for h in hosts]
        req = ReduceRequest(kind, bufs[0], (m,), x.dtype, None, acc, acc)
        if y is not None:
            req.y, req.y_dtype = bufs[1], y.dtype
        return np.asarray(dev.to_numpy(dev.reduce(req), (), acc))

    def combine(parts: list[np.ndarray]) -> np.ndarray:
        total = combine_partials(kind, parts, acc)
        return finish_builtin(total, acc, out, n if op == "mean" else None, op == "norm")

    t0 = time.perf_counter()
    res, d, ran = partition.run(work, n, force, task, combine)
    if not ran:
        return _reduce_auto(op, x, axis, 0, y)
    if BUS.active:  # one record for the whole split op, named after all its devices
        flops, nbytes = work.cost()
        host = time.perf_counter() - t0
        BUS.emit(OpRecord(f"{op}", d.choice, x.shape, x.dtype.name, int(nbytes), int(flops),
                          host, time.time() - host))  # fmt: skip
    return _result(x.device, res, ())


def _reduce_work(
    op: str, x: Array, y: Array | None, inputs: Any, out: DType, acc: DType, axis: Any = None
) -> auto.Work:
    arrays = (x,) if y is None else (x, y)
    key = (op, x.dtype, None if y is None else y.dtype, axis, x.size.bit_length())
    flops, passes = _COST.get(op, (1, 1))
    nbytes = passes * x.nbytes + (y.nbytes if y is not None else 0)
    return auto.Work(
        f"vg.{op}", key, lambda: (flops * x.size, nbytes), arrays,
        lambda d: d.unsupported(op, inputs, out, acc), readback=True,
    )  # fmt: skip


def _reduce_auto(op: str, x: Array, axis: Any, ddof: int, y: Array | None) -> Array:
    """Under ``auto``: the scheduler picks the device (and moves the operands there)."""
    arrays = (x,) if y is None else (x, y)
    for a in arrays:
        check_same_device(op, a)  # (vg.Array operands: the precise error otherwise)
    inputs, out, acc = roles(op, x.dtype, None if y is None else y.dtype)
    key = (op, x.dtype, None if y is None else y.dtype, axis, x.size.bit_length())
    return auto.route(
        key,
        arrays,
        lambda: _reduce_work(op, x, y, inputs, out, acc, axis),
        lambda d: _reduce_here(op, x, axis, ddof=ddof, y=y),
        readback=True,
    )


def _reduce_here(
    op: str, x: Array, axis: Any = None, *, ddof: int = 0, y: Array | None = None
) -> Array:
    # This is the hot path of every reduction: keep it to plain attribute work.
    dev = check_same_device(op, x) if y is None else check_same_device(op, x, y)
    if (type(x) is _Spilled or type(y) is _Spilled) and x.size:
        if streaming((x,) if y is None else (x, y), dev):  # out-of-core: chunk by chunk
            from .streamed import reduce_builtin

            return reduce_builtin(op, x, y, axis, ddof)
    shape2, ax, out_shape = _layout(op, x.shape, axis)
    inputs, out, acc = roles(op, x.dtype, None if y is None else y.dtype)
    dev.require(op, inputs, out, acc)
    length = x.size if ax is None else shape2[ax]
    if length == 0 or 0 in out_shape:
        return _empty_reduction(op, dev, out_shape, out, axis)

    reshape = shape2 != x.shape
    xb = dev.reshape(x._buf, shape2) if reshape else x._buf
    x._st.last = _now()  # LRU: a use
    if op in _ONE_PASS:
        kind, divide, sqrt = _ONE_PASS[op]
        req = ReduceRequest(
            kind, xb, shape2, x.dtype, ax, acc, out, length if divide else None, sqrt
        )
        if y is not None:
            req.y, req.y_dtype = (dev.reshape(y._buf, shape2) if reshape else y._buf), y.dtype
            y._st.last = x._st.last

        def compute() -> Any:
            return dev.reduce(req)
    else:  # var / std: two passes, the mean stays on the device
        dof = length - ddof
        if dof <= 0:
            warnings.warn("Degrees of freedom <= 0 for slice", RuntimeWarning, stacklevel=3)

        def compute() -> Any:
            mean = dev.reduce(ReduceRequest("sum", xb, shape2, x.dtype, ax, acc, acc, length))
            return dev.reduce(
                ReduceRequest(
                    "sqdev", xb, shape2, x.dtype, ax, acc, out, builtins.max(dof, 0),
                    op == "std", center=mean,
                )
            )  # fmt: skip

    flops, passes = _COST.get(op, (1, 1))
    nbytes = passes * x.nbytes + (y.nbytes if y is not None else 0)
    nbytes += math.prod(out_shape) * out.itemsize
    buf = recorded(dev, op, x.shape, x.dtype.name, nbytes, flops * x.size, compute)
    if ax is not None and len(out_shape) != 1:  # n-D viewed as 2-D: restore the shape
        buf = dev.reshape(buf, out_shape)
    return Array(buf, out_shape, out, dev)


def _empty_reduction(
    op: str, dev: Device, out_shape: tuple[int, ...], out: DType, axis: Any
) -> Array:
    if 0 in out_shape:  # nothing to compute, whatever the op
        return Array(dev.empty(out_shape, out), out_shape, out, dev)
    if op in _IDENTITY:
        return Array(dev.full(out_shape, _IDENTITY[op], out), out_shape, out, dev)
    if op in ("mean", "var", "std"):
        warnings.warn("Mean of empty slice", RuntimeWarning, stacklevel=3)
        return Array(dev.full(out_shape, np.nan, out), out_shape, out, dev)
    np_name = {"min": "minimum", "max": "maximum"}.get(op, op)
    raise EmptyReduction(
        f"zero-size array to reduction operation {np_name} which has no identity",
        where=f"vg.{op}(axis={axis})",
        fix="check x.size first, or use vg.sum / vg.mean which are defined on empty input",
    )


def sum(x: Array, axis: Any = None, *, split: bool = False) -> Array:
    """Sum of elements (int32/bool → int64, uint32 → uint64, like NumPy)."""
    return _reduce("sum", x, axis, split=split)


def prod(x: Array, axis: Any = None, *, split: bool = False) -> Array:
    return _reduce("prod", x, axis, split=split)


def min(x: Array, axis: Any = None, *, split: bool = False) -> Array:
    """Minimum; NaN if any element is NaN; ValueError-like error on empty input."""
    return _reduce("min", x, axis, split=split)


def max(x: Array, axis: Any = None, *, split: bool = False) -> Array:
    return _reduce("max", x, axis, split=split)


def argmin(x: Array, axis: Any = None, *, split: bool = False) -> Array:
    """Index of the first minimum (of the first NaN if any), int64; flat index for
    ``axis=None``."""
    return _reduce("argmin", x, axis, split=split)


def argmax(x: Array, axis: Any = None, *, split: bool = False) -> Array:
    return _reduce("argmax", x, axis, split=split)


def mean(x: Array, axis: Any = None, *, split: bool = False) -> Array:
    """Arithmetic mean (f32 stays f32, integers give f64)."""
    return _reduce("mean", x, axis, split=split)


def var(x: Array, axis: Any = None, ddof: int = 0, *, split: bool = False) -> Array:
    """Variance, two-pass (mean, then squared deviations), like NumPy."""
    return _reduce("var", x, axis, ddof=ddof, split=split)


def std(x: Array, axis: Any = None, ddof: int = 0, *, split: bool = False) -> Array:
    return _reduce("std", x, axis, ddof=ddof, split=split)


def norm(x: Array, axis: Any = None, *, split: bool = False) -> Array:
    """2-norm of a vector, Frobenius norm of a matrix (``axis=None``), or per row/column."""
    return _reduce("norm", x, axis, split=split)


def dot(a: Array, b: Array, *, split: bool = False) -> Array:
    """Inner product of two 1-D arrays; for 2-D operands the matrix product (as np.dot)."""
    check_same_device("dot", a)  # (operands on two devices: an error, unless on auto)
    check_same_device("dot", b)
    if a.ndim == 1 and b.ndim == 1:
        if a.shape != b.shape:
            raise ShapeMismatch(
                f"dot: shapes {a.shape} and {b.shape} are not aligned",
                fix="both vectors need the same length",
            )
        return _reduce("dot", a, None, y=b, split=split)
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeMismatch("dot: 0-d operands are not supported", fix="multiply instead")
    from .linalg import matmul

    return matmul(a, b)
