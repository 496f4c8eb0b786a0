"""Elementwise math on ``vg.Array``: lazy expressions fused into one kernel each.

``x * 2 + y``, comparisons, ``vg.where(c, a, b)`` and the math functions below build an
expression instead of computing: the result is a *pending* ``vg.Array`` whose shape, dtype
and device are known at once. The expression is turned into one kernel of the kernel
language's IR (no Python source: :mod:`vgpu_nb.kernel.ir` directly), compiled for the
array's device through the normal ``Device.compile_kernel`` / ``launch_kernel`` interface,
and launched when the value is first needed (a reduction, ``.numpy()``, ``repr``,
``.to()``, ``float()``, a kernel launch argument, ``x.eval()``). Like ``cupy.fuse``, but
without a decorator: a whole chain of operators is one pass over memory.

Decisions (a NumPy / CuPy user would ask):

* **Result dtypes are NumPy 2's** (NEP 50), asked of NumPy itself
  (``ufunc.resolve_dtypes``): Python scalars are *weak* (``f32_array * 2.0`` is f32,
  ``i32_array + 1`` is i32 and a Python int that does not fit raises ``OverflowError``),
  NumPy scalars are strong (``f32_array * np.float64(2)`` is f64), ``i32 + i64`` is i64,
  ``f32 + i32`` is f64, ``/`` on integers is f64, ``+``/``*`` on bools are or/and, float
  math on integers gives f64. The kernel gets an explicit cast for every conversion, so
  every backend computes in exactly those types. The few results NumPy gives in dtypes
  vg.Arrays do not have (float16, int8/int16, uint8/uint16 — only from bool inputs, e.g.
  ``vg.sqrt(bool_array)`` or ``b // b``) compute in f32 / i32 / u32 instead.
* **NumPy's special cases**: integer ``//`` and ``%`` by zero give 0 (no warning: kernels
  cannot warn); ``x ** 2`` is ``x * x`` and ``x ** 0.5`` is ``sqrt(x)`` for a Python scalar
  exponent, as in NumPy; an integer to a negative Python-int power raises ``ValueError``
  (with an *array* of exponents a negative one gives 0, or ±1 for a base of ±1: kernels
  cannot raise); ``vg.minimum``/``vg.maximum`` propagate NaN; comparing with a Python int
  outside the array's range is answered exactly (``u8 < -1`` is all False); comparisons
  of i64 with u64 are exact. ``vg.round`` is ``np.rint`` (half to even), ``vg.fmod`` is C's
  remainder (sign of the dividend). ``vg.fma`` is ``a * b + c`` rounded once on host data
  and f32 on the host backends; elsewhere it is as exact as the device's ``fma`` (WGSL
  only promises ``a * b + c``).
* **Broadcasting** follows NumPy. The kernel is 1-D over the flattened output when every
  array operand has the output's shape or a single element (the fast path); otherwise the
  shapes are merged into at most 2 dimensions and the kernel is 2-D, each operand indexed
  ``[i, j]``, ``[j]`` (a row), ``[i]`` (a column) or ``[0]``. Broadcasts that need 3 or
  more dimensions after merging raise :class:`~vgpu_nb.errors.ShapeMismatch`.
* **Operands**: ``vg.Array`` s on one device (:class:`~vgpu_nb.errors.DeviceMismatch`
  otherwise — arrays never move implicitly) and Python/NumPy scalars, which become kernel
  *parameters*: ``x * 2`` and ``x * 3`` run the same compiled kernel. NumPy arrays mixed
  with vg.Arrays are an error (wrap them with ``vg.asarray``). With no vg.Array at all
  (``vg.sqrt(2.0)``, ``vg.where(c, a, b)`` on NumPy data) the functions compute with NumPy
  and return NumPy results. NumPy's ufuncs called on vg.Arrays (``np.sqrt(x)``,
  ``np.float32(2) * x``) run here, lazily; other ufunc uses (``np.sum(x)``, ``out=``)
  compute with NumPy on host copies, as before vg.Array had operators.
* **Fusion**: an operand that is itself pending is fused into the new expression (not
  evaluated). Expressions are DAGs: an array (or a pending sub-expression) used twice is
  one kernel parameter (one value per thread). A chain longer than
  :data:`MAX_FUSED_OPS` operations evaluates its longest pending operand first. Evaluating
  a pending array whose sub-expression was already evaluated elsewhere recomputes it
  inside the fused kernel (cheap, and always the value of the inputs it was built from).
* **Compiled kernels are cached** by the expression's structure (operations, dtypes,
  broadcast pattern, number of launch dimensions) and the device — never by array
  identity, sizes or scalar values (:func:`cache_info`).
* **Inputs are read when the expression is evaluated**, so anything that could write an
  input first evaluates the expressions that read it: reading an input's buffer (a kernel
  launch, ``.numpy()``, a reduction) evaluates its pending dependents. Writing an input's
  memory through *another* alias (a ``reshape`` view, or ``x.numpy()`` on the host
  backends, obtained earlier) is not seen: call ``y.eval()`` before such writes. An
  expression whose evaluation fails there (say, a dtype the device lacks) keeps that
  error and raises it when read.
* **In-place operators** (``x += 1``) make a new array and rebind the name (documented in
  :mod:`vgpu_nb.array`).
* Every function is also a **kernel builtin**: ``vg.sqrt``, ``vg.where``,
  ``vg.minimum`` … inside ``@vg.kernel`` mean the kernel language's math (where
  ``vg.minimum``/``vg.maximum`` are ``min``/``max``: Python's builtins, no NaN propagation).
* Launch records (``vg.profile()``) name expression kernels ``fused:<ops>``, e.g.
  ``fused:mul_add``.
"""

from __future__ import annotations

import builtins
import math
import sys
import threading
import time
import weakref
from collections.abc import Callable
from fractions import Fraction
from functools import lru_cache
from typing import Any

import numpy as np

from .. import array as _array
from ..array import _BUF, _DEPS, _ST, Array, _Pending, _Spilled, _Watched, check_same_device
from ..backends.base import CompiledKernel, Device
from ..dtypes import ArrayType, DType, as_dtype, bool_, f32, f64, i32, i64, u32, u64
from ..errors import NotAnArray, ShapeMismatch, UnsupportedDType, UnsupportedOnBackend
from ..kernel import ir
from ..kernel.builtins import register
from ..memory.manager import MEM, _now
from ..memory.stream import streaming
from ..telemetry import BUS
from ..telemetry.records import LaunchRecord

#: Operations fused into one kernel at most (casts not counted); longer chains evaluate
#: their longest pending operand first.
MAX_FUSED_OPS = 32

# ---- dtypes -----------------------------------------------------------------------------
#: NumPy result dtypes that vg.Arrays do not have (they arise from bool inputs only)
_WIDEN = {"float16": f32, "int8": i32, "int16": i32, "uint8": u32, "uint16": u32}

#: our op name → the NumPy ufunc whose dtype rules (and, on host data, values) it follows
_UFUNC = {
    "add": "add", "sub": "subtract", "mul": "multiply", "div": "true_divide",
    "floordiv": "floor_divide", "mod": "remainder", "pow": "power",
    "and": "bitwise_and", "or": "bitwise_or", "xor": "bitwise_xor",
    "lt": "less", "le": "less_equal", "gt": "greater", "ge": "greater_equal",
    "eq": "equal", "ne": "not_equal",
    "min": "minimum", "max": "maximum", "atan2": "arctan2", "fmod": "fmod",
    "neg": "negative", "pos": "positive", "invert": "invert", "abs": "absolute",
    "sqrt": "sqrt", "exp": "exp", "log": "log", "sin": "sin", "cos": "cos", "tan": "tan",
    "tanh": "tanh", "floor": "floor", "ceil": "ceil", "asin": "arcsin", "acos": "arccos",
    "atan": "arctan", "sinh": "sinh", "cosh": "cosh", "exp2": "exp2", "log2": "log2",
    "log10": "log10", "trunc": "trunc", "round": "rint", "isnan": "isnan",
    "isinf": "isinf", "isfinite": "isfinite",
    "erf": "sqrt",  # no NumPy ufunc: typed like the other float functions
}  # fmt: skip
_COMPARE = ("lt", "le", "gt", "ge", "eq", "ne")
_MIRROR = {"lt": "gt", "le": "ge", "gt": "lt", "ge": "le", "eq": "eq", "ne": "ne"}
_PREDICATES = ("isnan", "isinf", "isfinite")
#: ops whose IR is ir.Binary with the same name
_BINARY_IR = ("add", "sub", "mul", "div", "floordiv", "mod", "and", "or", "xor")


def _widen(d: np.dtype) -> DType:
    hit = _WIDEN.get(d.name)
    if hit is not None:
        return hit
    try:
        return as_dtype(d)
    except UnsupportedDType:
        raise UnsupportedDType(
            f"the result dtype {d} is not supported by vg.Arrays",
            fix="use f32, f64, i32, u32, i64, u64 or bool operands",
        ) from None


@lru_cache(maxsize=4096)
def _resolve(op: str, rtypes: tuple[Any, ...]) -> tuple[tuple[DType, ...], DType]:
    """(operand types, result type) of ``op`` on operands of NumPy dtypes / weak Python
    scalar types, as NumPy's ufunc type resolution decides them."""
    uf = getattr(np, _UFUNC[op])
    try:
        dts = uf.resolve_dtypes((*rtypes, None))
    except TypeError as exc:
        names = ", ".join(t.__name__ if isinstance(t, type) else str(t) for t in rtypes)
        raise UnsupportedDType(
            f"{_SYMBOL.get(op, op)} is not defined for operands of type ({names}): {exc}",
            fix="cast explicitly with x.astype(...)",
        ) from None
    return tuple(_widen(d) for d in dts[:-1]), _widen(dts[-1])


_SYMBOL = {"add": "+", "sub": "-", "mul": "*", "div": "/", "floordiv": "//", "mod": "%",
           "pow": "**", "and": "&", "or": "|", "xor": "^", "lt": "<", "le": "<=", "gt": ">",
           "ge": ">=", "eq": "==", "ne": "!=", "neg": "unary -", "pos": "unary +",
           "invert": "~"}  # fmt: skip


# ---- expression terms ---------------------------------------------------------------------
class _Raw:
    """A scalar operand before its type is decided: ``weak`` for Python int/float."""

    __slots__ = ("value", "rtype", "weak")

    def __init__(self, value: Any, rtype: Any, weak: bool):
        self.value, self.rtype, self.weak = value, rtype, weak


class _Scalar:
    """A scalar kernel parameter: ``value`` is already a NumPy scalar of ``dtype``."""

    __slots__ = ("value", "dtype")
    shape: tuple[int, ...] = ()
    nops = 0

    def __init__(self, value: Any, dtype: DType):
        self.value, self.dtype = value, dtype


class _Node:
    """An operation of a pending expression. ``args``: _Node, materialised Array (a leaf)
    or _Scalar. ``leaves``: the distinct leaf arrays below it; ``nops``: operations below
    it (counted with multiplicity; casts are free)."""

    __slots__ = ("op", "args", "dtype", "shape", "nops", "leaves")

    def __init__(self, op: str, args: tuple[Any, ...], dtype: DType, shape: tuple[int, ...]):
        self.op, self.args, self.dtype, self.shape = op, args, dtype, shape
        n = 0 if op == "cast" else 1
        leaves: list[Array] = []
        for a in args:
            if isinstance(a, _Node):
                n += a.nops
                for leaf in a.leaves:
                    if not any(leaf is x for x in leaves):
                        leaves.append(leaf)
            elif isinstance(a, Array) and not any(a is x for x in leaves):
                leaves.append(a)
        self.nops = n
        self.leaves = tuple(leaves)


class _Fill:
    """An op whose answer does not depend on the array values (a comparison with an
    out-of-range Python int): a constant of the broadcast shape."""

    __slots__ = ("value",)

    def __init__(self, value: bool):
        self.value = value


def _raw(v: Any) -> Any:
    """A scalar operand as a :class:`_Raw`, NotImplemented for unknown types; host arrays
    raise NotAnArray (arrays never move implicitly)."""
    tv = type(v)
    if tv is int or tv is float:  # the common case first
        return _Raw(v, tv, True)
    if isinstance(v, bool | np.bool_):
        return _Raw(np.bool_(v), np.dtype(np.bool_), False)
    if isinstance(v, np.generic):
        return _Raw(v, v.dtype, False)
    if isinstance(v, np.ndarray):
        if v.ndim == 0:
            return _Raw(v[()], v.dtype, False)
        raise NotAnArray(
            f"a NumPy array ({v.dtype}, shape {v.shape}) cannot be combined with vg.Arrays "
            "(arrays never move implicitly)",
            fix="copy it to the device first: vg.asarray(a, device=x.device)",
        )
    if isinstance(v, list | tuple):
        raise NotAnArray(
            f"a {type(v).__name__} cannot be combined with vg.Arrays",
            fix="copy it to the device first: vg.asarray(data, device=x.device)",
        )
    if isinstance(v, int):  # Python ints (and subclasses such as IntEnum) are weak
        return _Raw(int(v), int, True)
    if isinstance(v, float):
        return _Raw(float(v), float, True)
    if isinstance(v, complex):
        raise UnsupportedDType("complex numbers are not supported", fix="use real numbers")
    return NotImplemented


def _rtype(t: Any) -> Any:
    return t.rtype if type(t) is _Raw else t.dtype.np


def _broadcast2(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """NumPy's broadcast of two shapes (plain Python: this is on every operator's path)."""
    n = builtins.max(len(a), len(b))
    a = (1,) * (n - len(a)) + a
    b = (1,) * (n - len(b)) + b
    out = []
    for x, y in zip(a, b, strict=True):
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        else:
            raise ShapeMismatch(
                f"operands could not be broadcast together with shapes {a} {b}",
                fix="reshape one operand (x.reshape(...)) so that the shapes broadcast",
            )
    return tuple(out)


def _coerce(t: Any, dt: DType) -> Any:
    """Operand ``t`` converted to ``dt``: scalars become typed parameters (a weak Python
    int must fit, as in NumPy), arrays and nodes get a cast node."""
    if type(t) is _Raw:
        v = t.value
        if t.weak and isinstance(v, int) and dt.is_int:
            info = np.iinfo(dt.np)
            if not info.min <= v <= info.max:
                raise OverflowError(f"Python integer {v} out of bounds for {dt.np}")
        return _Scalar(dt.np.type(v), dt)  # (NumPy's own overflow warning, e.g. f32(1e300))
    if t.dtype is dt:
        return t
    return _Node("cast", (t,), dt, t.shape)


# ---- building expressions -------------------------------------------------------------
_LOCK = threading.RLock()


def _cap(terms: list[Any], pend: list[Array]) -> list[Any]:
    """Evaluate pending operands (longest first) until the fused op count fits."""
    while 1 + builtins.sum(t.nops for t in terms if isinstance(t, _Node)) > MAX_FUSED_OPS:
        big = builtins.max(pend, key=lambda p: _BUF.__get__(p, Array).nops)
        node = _BUF.__get__(big, Array)
        materialize(big)
        terms = [big if t is node else t for t in terms]
        pend = [p for p in pend if p is not big]
    return terms


def _pending(res: Any, dev: Device, shape: tuple[int, ...]) -> Array:
    """A pending vg.Array for node ``res`` (or a filled array for a :class:`_Fill`)."""
    if isinstance(res, _Fill):
        return Array(dev.full(shape, res.value, bool_), shape, bool_, dev)
    if len(shape) > 2 and builtins.any(leaf.shape != shape for leaf in res.leaves):
        _domain(res.leaves, shape)  # raise now (on the user's line) if not expressible
    p = object.__new__(_Pending)
    _BUF.__set__(p, res)
    _ST.__set__(p, None)
    p.shape, p.dtype, p.device = shape, res.dtype, dev
    if res.leaves:
        spilled = [leaf for leaf in res.leaves if type(leaf) is _Spilled]
        if spilled:
            # A spilled leaf cannot be watched (its buffer is elsewhere). Bring it back
            # when everything fits; otherwise evaluate now, streaming (vgpu_nb.memory).
            need = builtins.sum(leaf.nbytes for leaf in res.leaves) + p.nbytes
            if not MEM.fits_device(dev, need):
                materialize(p)
                return p
            held = [leaf._buf for leaf in spilled]  # (unspilled; held: none evicts another)
            del held
        _watch(res.leaves, p)
    return p


def _apply(op: str, args: tuple[Any, ...], host: Callable[..., Any] | None = None) -> Any:
    """``op`` on ``args``: a pending vg.Array (NumPy results when no vg.Array is among
    them; NotImplemented for operands of unknown types)."""
    dev: Device | None = None
    for a in args:
        if isinstance(a, Array):
            dev = a.device
            break
    if dev is None:  # host data: NumPy computes
        return (host or getattr(np, _UFUNC[op]))(*args)
    terms: list[Any] = []
    pend: list[Array] = []
    shape: tuple[int, ...] = ()
    for a in args:
        if isinstance(a, Array):
            if a.device is not dev:
                check_same_device(op, *[x for x in args if isinstance(x, Array)])
            if type(a) is _Pending:
                node = _BUF.__get__(a, Array)
                if type(node) is not _Node:
                    materialize(a)  # a failed evaluation: raises its error again
                terms.append(node)
                pend.append(a)
                a = node
            else:
                terms.append(a)
            s = a.shape
            if s != shape:
                shape = _broadcast2(shape, s) if shape else s
        else:
            r = _raw(a)
            if r is NotImplemented:
                return NotImplemented
            terms.append(r)
    if pend and 1 + builtins.sum(t.nops for t in terms if type(t) is _Node) > MAX_FUSED_OPS:
        terms = _cap(terms, pend)
    res = _BUILD.get(op, _ufunc_node)(op, terms, shape)
    return _pending(res, dev, shape)


def binary(op: str, a: Any, b: Any) -> Any:
    """``a <op> b`` for the Array operators (NotImplemented for unknown operand types)."""
    return _apply(op, (a, b))


def unary(op: str, a: Any) -> Any:
    return _apply(op, (a,))


def _ufunc_node(op: str, terms: list[Any], shape: tuple[int, ...]) -> Any:
    ins, out = _resolve(op, tuple([_rtype(t) for t in terms]))
    if op in _COMPARE:
        fill = _out_of_range(op, terms, ins)
        if fill is not None:
            return fill
    args = tuple([_coerce(t, d) for t, d in zip(terms, ins, strict=True)])
    return _Node(op, args, out, shape)


def _out_of_range(op: str, terms: list[Any], ins: tuple[DType, ...]) -> _Fill | None:
    """``u8_array < -1``: a weak Python int outside the integer operand type compares the
    same with every element (NumPy 2 answers it exactly)."""
    for k, t in enumerate(terms):
        if isinstance(t, _Raw) and t.weak and isinstance(t.value, int) and ins[k].is_int:
            info = np.iinfo(ins[k].np)
            if info.min <= t.value <= info.max:
                continue
            above = t.value > info.max  # the scalar is larger than every element
            o = op if k == 1 else _MIRROR[op]  # as "element <o> scalar"
            if o == "eq":
                return _Fill(False)
            if o == "ne":
                return _Fill(True)
            return _Fill(above == (o in ("lt", "le")))
    return None


def _pow_node(op: str, terms: list[Any], shape: tuple[int, ...]) -> Any:
    base, ex = terms
    ins, out = _resolve(op, (_rtype(base), _rtype(ex)))
    if isinstance(ex, _Raw):
        v = ex.value
        if out.is_int and not isinstance(v, np.bool_) and v < 0:
            raise ValueError("Integers to negative integer powers are not allowed.")
        if ex.weak and not isinstance(base, _Raw):
            b = _coerce(base, ins[0])
            if v == 2:  # NumPy: x ** 2 is np.square(x)
                return _Node("mul", (b, b), out, shape)
            if v == 0.5 and out.is_float:  # NumPy: x ** 0.5 is np.sqrt(x)
                return _Node("sqrt", (b,), out, shape)
    args = tuple(_coerce(t, d) for t, d in zip(terms, ins, strict=True))
    return _Node(op, args, out, shape)


def _float_type(terms: list[Any]) -> DType:
    """Common type of float-function operands (weak scalars weak); ints → f64 as NumPy."""
    rt = np.result_type(*[t.value if isinstance(t, _Raw) and t.weak else _rtype(t) for t in terms])
    return _resolve("sqrt", (rt,))[1]


def _where_node(op: str, terms: list[Any], shape: tuple[int, ...]) -> Any:
    c, a, b = terms
    vals = [t.value if isinstance(t, _Raw) and t.weak else _rtype(t) for t in (a, b)]
    dt = _widen(np.result_type(*vals))
    return _Node("where", (_coerce(c, bool_), _coerce(a, dt), _coerce(b, dt)), dt, shape)


def _fma_node(op: str, terms: list[Any], shape: tuple[int, ...]) -> Any:
    dt = _float_type(terms)
    return _Node("fma", tuple(_coerce(t, dt) for t in terms), dt, shape)


_BUILD: dict[str, Callable[[str, list[Any], tuple[int, ...]], Any]] = {
    "pow": _pow_node,
    "where": _where_node,
    "fma": _fma_node,
}


# ---- the dependency watch ------------------------------------------------------------------
def _watch(leaves: tuple[Array, ...], p: Array) -> None:
    """Record that pending ``p`` reads ``leaves``: reading a leaf's buffer evaluates it."""
    ref = weakref.ref(p)
    with _LOCK:
        for leaf in leaves:
            if type(leaf) is _Watched:
                deps = _DEPS.__get__(leaf, Array)
                deps.append(ref)
                n = len(deps)
                if n >= 64 and n & (n - 1) == 0:
                    deps[:] = [r for r in deps if type(r()) is _Pending]
            else:
                _DEPS.__set__(leaf, [ref])
                leaf.__class__ = _Watched


def _unwatch(leaves: tuple[Array, ...]) -> None:
    """Drop evaluated/dead dependents; leaves with none left become plain Arrays."""
    for leaf in leaves:
        if type(leaf) is _Watched:
            deps = [r for r in _DEPS.__get__(leaf, Array) if type(r()) is _Pending]
            if deps:
                _DEPS.__set__(leaf, deps)
            else:
                _DEPS.__set__(leaf, None)
                leaf.__class__ = Array


class _Broken:
    """The state of a pending array whose evaluation failed during a flush: reading it
    raises that error again (its inputs may have changed since: never recompute)."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException):
        self.exc = exc


def flush(leaf: Array) -> None:
    """Evaluate every pending expression that reads ``leaf`` (its buffer is about to be
    handed out, maybe to be written), then make it a plain Array again."""
    with _LOCK:
        if type(leaf) is not _Watched:
            return
        deps = _DEPS.__get__(leaf, Array)
        _DEPS.__set__(leaf, None)
        leaf.__class__ = Array
        for ref in deps:
            p = ref()
            if p is None or type(p) is not _Pending:
                continue
            try:
                materialize(p)
            except Exception as exc:  # keep the error for whoever reads p
                _BUF.__set__(p, _Broken(exc))


# ---- evaluation ------------------------------------------------------------------------------
class _Plan:
    """A pending expression laid out for a kernel: operations in dependency order, leaf
    arrays and scalars (the parameters), the launch domain and the cache key."""

    def __init__(self, root: _Node, shape: tuple[int, ...]):
        self.instrs: list[tuple[str, DType, tuple[tuple[str, int], ...]]] = []
        self.leaves: list[Array] = []
        self.scalars: list[_Scalar] = []
        self._ids: dict[int, tuple[str, int]] = {}
        self._ref(root)
        self.domain, self.kinds = _domain(tuple(self.leaves), shape)
        self.key = (
            tuple(self.instrs),
            tuple((leaf.dtype, k) for leaf, k in zip(self.leaves, self.kinds, strict=True)),
            tuple(s.dtype for s in self.scalars),
            len(self.domain),
        )

    def _ref(self, t: Any) -> tuple[str, int]:
        hit = self._ids.get(id(t))
        if hit is not None:
            return hit
        if isinstance(t, _Node):
            args = tuple(self._ref(a) for a in t.args)
            ref = ("n", len(self.instrs))
            self.instrs.append((t.op, t.dtype, args))
        elif isinstance(t, _Scalar):
            ref = ("s", len(self.scalars))
            self.scalars.append(t)
        else:
            ref = ("a", len(self.leaves))
            self.leaves.append(t)
        self._ids[id(t)] = ref
        return ref


def _domain(
    leaves: tuple[Array, ...], shape: tuple[int, ...]
) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Launch domain ((n,) or (ny, nx)) and how each leaf is indexed: "full" (1-D, [t0]),
    "full2" ([t0, t1]), "col" ([t0]), "row" ([t1]), "one" ([0]). Output dimensions of 1
    are dropped and neighbours that every leaf broadcasts alike are merged."""
    nd = len(shape)
    pats = [
        (0,) * (nd - len(leaf.shape)) + tuple(1 if s != 1 else 0 for s in leaf.shape)
        for leaf in leaves
    ]
    dims: list[list[Any]] = []  # [size, bits per leaf]
    for d in range(nd):
        if shape[d] == 1:
            continue
        bits = tuple(p[d] for p in pats)
        if dims and dims[-1][1] == bits:
            dims[-1][0] *= shape[d]
        else:
            dims.append([shape[d], bits])
    if len(dims) <= 1:
        n = dims[0][0] if dims else math.prod(shape)
        bits = dims[0][1] if dims else (0,) * len(leaves)
        return (n,), tuple("full" if b else "one" for b in bits)
    if len(dims) > 2:
        raise ShapeMismatch(
            f"broadcasting the shapes {', '.join(str(leaf.shape) for leaf in leaves)} to "
            f"{shape} needs {len(dims)} dimensions; fused expressions broadcast over at most 2",
            fix="reshape the operands to 2-D (or to the same shape) first",
        )
    names = {(1, 1): "full2", (1, 0): "col", (0, 1): "row", (0, 0): "one"}
    kinds = tuple(names[(a, b)] for a, b in zip(dims[0][1], dims[1][1], strict=True))
    return (dims[0][0], dims[1][0]), kinds


def _leaf_shape(kind: str, domain: tuple[int, ...]) -> tuple[int, ...]:
    if kind == "full":
        return (domain[0],)
    if kind == "full2":
        return domain
    if kind == "col":
        return (domain[0],)
    if kind == "row":
        return (domain[1],)
    return (1,)


class _Entry:
    __slots__ = ("fn", "ck", "name", "flops", "estimated", "launched")

    def __init__(self, fn: ir.Function, ck: CompiledKernel, name: str):
        self.fn, self.ck, self.name = fn, ck, name
        c = ir.cost(fn)
        self.flops, self.estimated = c.flops, c.estimated
        self.launched = False


_KERNELS: dict[tuple[Device, Any], _Entry] = {}
_STATS = {"hits": 0, "compiles": 0}


def cache_info() -> dict[str, int]:
    """Expression-kernel cache statistics: ``hits`` (evaluations that reused a compiled
    kernel), ``compiles`` (kernels built), ``size`` (kernels held)."""
    return {**_STATS, "size": len(_KERNELS)}


def clear_cache() -> None:
    """Forget the compiled expression kernels (the disk cache of the backends stays)."""
    with _LOCK:
        _KERNELS.clear()
        _STATS.update(hits=0, compiles=0)


def materialize(p: Array) -> Any:
    """Evaluate pending ``p``: one fused kernel launch; returns the native buffer and
    turns ``p`` into a plain Array."""
    with _LOCK:
        if type(p) is not _Pending:
            return _BUF.__get__(p, Array)
        node = _BUF.__get__(p, Array)
        if isinstance(node, _Broken):
            raise node.exc
        try:
            buf = _run(node, p.shape, p.device)
        except AttributeError as exc:  # would be masked by Array.__getattr__
            raise RuntimeError(f"evaluating a vg.Array expression failed: {exc!r}") from exc
        if isinstance(buf, Array):  # streamed out-of-core: p shares the result's storage
            _BUF.__set__(p, _BUF.__get__(buf, Array))
            _ST.__set__(p, buf._st)
            buf._st.views.append(weakref.ref(p))
            p.__class__ = type(buf)  # _Spilled unless it was brought back meanwhile
            _unwatch(node.leaves)
            return None  # (_Pending._buf then reads p._buf, which unspills it if asked)
        _BUF.__set__(p, buf)
        _ST.__set__(p, MEM.track(buf, p.device, p.shape, p.dtype, p))
        p.__class__ = Array
        _unwatch(node.leaves)
        return buf


def _run(node: _Node, shape: tuple[int, ...], dev: Device) -> Any:
    size = math.prod(shape)
    if size == 0:
        return dev.empty(shape, node.dtype)
    plan = _Plan(node, shape)
    entry = _KERNELS.get((dev, plan.key))
    fresh = entry is None
    if entry is None:
        entry = _compile(plan, node.dtype, dev)
    else:
        _STATS["hits"] += 1
    dom = plan.domain
    if builtins.any(type(leaf) is _Spilled for leaf in plan.leaves) and streaming(
        plan.leaves, dev, size * node.dtype.itemsize
    ):
        return _run_streamed(plan, entry, node.dtype, shape, dev)
    args: list[Any] = [(dev.empty(dom, node.dtype), dom)]
    t = _now()
    for leaf, kind in zip(plan.leaves, plan.kinds, strict=True):
        shp = _leaf_shape(kind, dom)
        b = _BUF.__get__(leaf, Array)
        leaf._st.last = t  # LRU: a use
        args.append((b if leaf.shape == shp else dev.reshape(b, shp), shp))
    args += [s.value for s in plan.scalars]
    if not BUS.active:
        dev.launch_kernel(entry.ck, dom, args)
    else:
        stop = dev.start_timer()
        t0 = time.perf_counter()
        dev.launch_kernel(entry.ck, dom, args)
        host = time.perf_counter() - t0
        first = fresh or not entry.launched
        nbytes = builtins.sum(leaf.nbytes for leaf in plan.leaves) + size * node.dtype.itemsize
        dts = sorted({leaf.dtype.name for leaf in plan.leaves} | {node.dtype.name})
        rec = LaunchRecord(
            op=entry.name, device=dev.name, shape=dom, dtype="/".join(dts), bytes=int(nbytes),
            flops=int(entry.flops * size), host_s=host, t_start=time.time() - host,
            compile_s=entry.ck.compile_s if first else 0.0,
            cache_hit=entry.ck.cache_hit if first else True, estimated=entry.estimated,
        )  # fmt: skip
        rec._device_timer = stop() if stop is not None else None
        BUS.emit(rec)
    entry.launched = True
    out = args[0][0]
    return out if dom == shape else dev.reshape(out, shape)


def _run_streamed(
    plan: _Plan, entry: _Entry, dtype: DType, shape: tuple[int, ...], dev: Device
) -> Array:
    """An expression over out-of-core operands: the result is made in the tier it fits
    (host or disk) and the fused kernel runs chunk by chunk (vgpu_nb.ops.streamed)."""
    from ..array import empty
    from .streamed import launch

    if len(plan.domain) != 1:
        from ..memory.stream import too_big

        raise too_big(
            f"the expression {entry.name}",
            dev,
            math.prod(shape) * dtype.itemsize,
            "broadcasting over 2-D cannot stream; give the operands the same shape",
        )
    n = plan.domain[0]
    out = empty((n,), dtype, device=dev)
    args: list[Any] = [out]
    for leaf, kind in zip(plan.leaves, plan.kinds, strict=True):
        shp = _leaf_shape(kind, plan.domain)
        args.append(leaf if leaf.shape == shp else leaf.reshape(shp))
    args += [s.value for s in plan.scalars]
    launch(dev, entry.fn, entry.ck, n, args, entry.name)
    return out if out.shape == shape else out.reshape(shape)


def _compile(plan: _Plan, out: DType, dev: Device) -> _Entry:
    ops = [op for op, _, _ in plan.instrs if op not in ("cast", "pos")] or ["copy"]
    label = "_".join(ops[:8]) + ("_etc" if len(ops) > 8 else "")
    fn = _Builder(plan, out).function(f"fused_{label}", f"fused:{label}")
    why = dev.kernel_unsupported(fn)
    if why:
        raise UnsupportedOnBackend(
            f"the expression fused:{label} cannot run on {dev.name}: {why}",
            fix="move the arrays to another device (x.to('numba')) or cast them (x.astype(vg.f32))",
        )
    ck = dev.compile_kernel(fn)
    entry = _Entry(fn, ck, f"fused:{label}")
    _KERNELS[(dev, plan.key)] = entry
    _STATS["compiles"] += 1
    return entry


# ---- IR generation ---------------------------------------------------------------------------
def _c(t: DType, v: Any) -> ir.Const:
    return ir.Const(t, v)


class _Builder:
    """Turns a :class:`_Plan` into an ``ir.Function``: one local per operation (so shared
    sub-expressions are computed once), every conversion an explicit ``ir.Cast``."""

    def __init__(self, plan: _Plan, out: DType):
        self.plan, self.out = plan, out
        self.locals: dict[str, DType] = {}
        self.body: list[ir.Stmt] = []
        self.ntmp = 0

    def tmp(self, e: ir.Expr) -> ir.Var:
        name = f"w{self.ntmp}"
        self.ntmp += 1
        self.locals[name] = e.type
        self.body.append(ir.Assign(1, name, e))
        return ir.Var(e.type, name)

    def function(self, name: str, label: str) -> ir.Function:
        plan = self.plan
        nd = len(plan.domain)
        tids = tuple(ir.ThreadId(i32, k) for k in range(nd))
        params = [ir.Param("out", ArrayType(self.out, nd))]
        vals: dict[tuple[str, int], ir.Expr] = {}
        for k, (leaf, kind) in enumerate(zip(plan.leaves, plan.kinds, strict=True)):
            params.append(ir.Param(f"a{k}", ArrayType(leaf.dtype, 2 if kind == "full2" else 1)))
            idx: tuple[ir.Expr, ...] = {
                "full": tids[:1], "full2": tids, "col": tids[:1], "row": tids[1:],
                "one": (_c(i32, 0),),
            }[kind]  # fmt: skip
            name_k = f"x{k}"
            self.locals[name_k] = leaf.dtype
            self.body.append(ir.Assign(1, name_k, ir.Load(leaf.dtype, f"a{k}", idx)))
            vals[("a", k)] = ir.Var(leaf.dtype, name_k)
        for k, s in enumerate(plan.scalars):
            params.append(ir.Param(f"s{k}", s.dtype))
            vals[("s", k)] = ir.Var(s.dtype, f"s{k}")
        last: ir.Expr | None = None
        for k, (op, dt, refs) in enumerate(plan.instrs):
            e = self.lower(op, dt, [vals[r] for r in refs])
            if isinstance(e, ir.Var):
                vals[("n", k)] = e
            else:
                v = f"v{k}"
                self.locals[v] = dt
                self.body.append(ir.Assign(1, v, e))
                vals[("n", k)] = ir.Var(dt, v)
            last = vals[("n", k)]
        assert last is not None
        self.body.append(ir.Store(1, "out", tids, last))
        return ir.Function(
            name=name, params=tuple(params), locals=self.locals, body=self.body, ret=None,
            ndim=nd, funcs=[], filename="<vg expression>", firstline=1, py_name=label,
        )  # fmt: skip

    def lower(self, op: str, t: DType, a: list[ir.Expr]) -> ir.Expr:
        """The IR of one operation on already-typed operands (see _resolve)."""
        if op == "cast":
            return ir.Cast(t, a[0]) if a[0].type is not t else a[0]
        if op == "pos":
            return a[0]
        if op in _BINARY_IR:
            x, y = a
            if t is bool_ and op in ("add", "mul"):  # NumPy: + is or, * is and on bools
                op = "or" if op == "add" else "and"
            return ir.Binary(t, op, x, y)
        if op in _COMPARE:
            return self.compare(op, *a)
        if op in ("min", "max"):
            x, y = a
            if t is bool_:
                return ir.Binary(t, "and" if op == "min" else "or", x, y)
            m = ir.Math(t, op, (x, y))
            if t.is_float:  # NumPy propagates NaN from either side
                return ir.Select(t, ir.Math(bool_, "isnan", (y,)), y, m)
            return m
        if op == "pow":
            if t.is_float:
                return ir.Math(t, "pow", (a[0], a[1]))
            return self.ipow(t, a[0], a[1])
        if op == "fmod":
            x, y = a
            if t.is_float:
                return ir.Math(t, "fmod", (x, y))
            r = self.tmp(ir.Binary(t, "mod", x, y))  # floor remainder (0 for y == 0)
            if t in (u32, u64):
                return r
            zero = _c(t, 0)
            wrong_sign = ir.Logical(
                bool_, "and", ir.Compare(bool_, "ne", r, zero),
                ir.Compare(bool_, "ne", ir.Compare(bool_, "lt", r, zero),
                           ir.Compare(bool_, "lt", x, zero)),
            )  # fmt: skip
            return ir.Select(t, wrong_sign, ir.Binary(t, "sub", r, y), r)
        if op == "atan2":
            return ir.Math(t, "atan2", (a[0], a[1]))
        if op == "where":
            return ir.Select(t, a[0], a[1], a[2])
        if op == "fma":
            return ir.Math(t, "fma", (a[0], a[1], a[2]))
        x = a[0]
        if op == "neg":
            if t in (u32, u64):
                return ir.Binary(t, "sub", _c(t, 0), x)
            return ir.Unary(t, "neg", x)
        if op == "invert":
            return ir.Unary(t, "not" if t is bool_ else "invert", x)
        if op == "abs":
            return ir.Math(t, "abs", (x,)) if t in (f32, f64, i32, i64) else x
        if op in _PREDICATES:
            if not x.type.is_float:
                x = ir.Cast(f32, x)
            return ir.Math(bool_, op, (x,))
        # float functions; floor/ceil/trunc of an integer are the integer itself
        if not t.is_float:
            return x
        return ir.Math(t, op, (x,))

    def compare(self, op: str, x: ir.Expr, y: ir.Expr) -> ir.Expr:
        if x.type is not y.type:  # NumPy's exact i64-vs-u64 loops
            if x.type is u64:
                op, x, y = _MIRROR[op], y, x
            s, u = x, y  # s signed, u unsigned: "s <op> u"
            zero = _c(s.type, 0)
            cmp = ir.Compare(bool_, op, ir.Cast(u.type, s), u)
            if op in ("lt", "le", "ne"):
                return ir.Logical(bool_, "or", ir.Compare(bool_, "lt", s, zero), cmp)
            return ir.Logical(bool_, "and", ir.Compare(bool_, "ge", s, zero), cmp)
        if x.type is bool_ and op not in ("eq", "ne"):
            x, y = ir.Cast(i32, x), ir.Cast(i32, y)
        return ir.Compare(bool_, op, x, y)

    def ipow(self, t: DType, base: ir.Expr, ex: ir.Expr) -> ir.Expr:
        """Integer power by squaring (wraps like NumPy's); a negative exponent gives 0,
        or ±1 for a base of ±1."""
        r = self.tmp(_c(t, 1))
        b = self.tmp(base)
        e = self.tmp(ex)
        one, zero = _c(t, 1), _c(t, 0)
        if t in (i32, i64):
            odd = ir.Compare(bool_, "ne", ir.Binary(t, "and", e, one), zero)
            neg = ir.Select(
                t, ir.Compare(bool_, "eq", b, one), one,
                ir.Select(t, ir.Compare(bool_, "eq", b, _c(t, -1)),
                          ir.Select(t, odd, _c(t, -1), one), zero),
            )  # fmt: skip
            self.body.append(
                ir.If(1, ir.Compare(bool_, "lt", e, zero),
                      [ir.Assign(1, r.name, neg), ir.Assign(1, e.name, zero)], [])
            )  # fmt: skip
        odd = ir.Compare(bool_, "ne", ir.Binary(t, "and", e, one), zero)
        loop = [
            ir.If(1, odd, [ir.Assign(1, r.name, ir.Binary(t, "mul", r, b))], []),
            ir.Assign(1, b.name, ir.Binary(t, "mul", b, b)),
            ir.Assign(1, e.name, ir.Binary(t, "rshift", e, one)),
        ]
        self.body.append(ir.While(1, ir.Compare(bool_, "gt", e, zero), loop))
        return r


# ---- NumPy ufuncs on vg.Arrays ---------------------------------------------------------
def array_ufunc(ufunc: Any, method: str, inputs: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``Array.__array_ufunc__``: plain calls of the ufuncs we implement run on the
    device, lazily (``np.sqrt(x)``, ``np.float32(2) * x``). Anything else (``np.sum(x)``,
    which is ``np.add.reduce``; ``out=``; ufuncs we lack) computes with NumPy on host
    copies and returns NumPy results, as NumPy did before vg.Array had ufuncs."""
    op = _FROM_NUMPY.get(ufunc.__name__)
    if method == "__call__" and not kwargs and op is not None and ufunc.nin == len(inputs):
        return _apply(op, inputs)
    conv = [np.asarray(a) if isinstance(a, Array) else a for a in inputs]
    if "out" in kwargs:
        outs = kwargs["out"] if isinstance(kwargs["out"], tuple) else (kwargs["out"],)
        if builtins.any(isinstance(o, Array) for o in outs):
            return NotImplemented  # NumPy cannot write into device memory
    return getattr(ufunc, method)(*conv, **kwargs)


_FROM_NUMPY = {v: k for k, v in _UFUNC.items() if k != "erf"} | {"divide": "div", "mod": "mod"}


# ---- host (NumPy) versions of the functions without a NumPy ufunc ------------------------
def _erf_host(x: Any) -> Any:
    a = np.asarray(x)
    ins, out = _resolve("erf", (a.dtype,))
    r = np.vectorize(math.erf, otypes=[out.np])(a.astype(ins[0].np))
    return r[()] if r.ndim == 0 else r


def _fma1(a: float, b: float, c: float) -> float:
    if math.isfinite(a) and math.isfinite(b) and math.isfinite(c):
        return float(Fraction(a) * Fraction(b) + Fraction(c))  # exact, one rounding
    return a * b + c


def _fma_host(a: Any, b: Any, c: Any) -> Any:
    terms = [_raw(v) if not isinstance(v, np.ndarray) or v.ndim == 0 else v for v in (a, b, c)]
    rt = np.result_type(*[t.value if isinstance(t, _Raw) and t.weak else (
        t.rtype if isinstance(t, _Raw) else t.dtype) for t in terms])  # fmt: skip
    dt = _resolve("sqrt", (rt,))[1].np
    xs = [np.asarray(v).astype(np.float64) for v in (a, b, c)]
    r = np.vectorize(_fma1, otypes=[np.float64])(*xs).astype(dt)
    return r[()] if r.ndim == 0 else r


# ---- the public functions ------------------------------------------------------------------
def _unary_fn(op: str, doc: str) -> Callable[[Any], Any]:
    host = _erf_host if op == "erf" else None

    def fn(x: Any) -> Any:
        return _apply(op, (x,), host)

    fn.__name__ = fn.__qualname__ = op
    fn.__doc__ = doc
    fn.__module__ = __name__
    return fn


sqrt = _unary_fn("sqrt", "Square root, elementwise (``np.sqrt``).")
exp = _unary_fn("exp", "e**x, elementwise (``np.exp``).")
log = _unary_fn("log", "Natural logarithm, elementwise (``np.log``).")
sin = _unary_fn("sin", "Sine, elementwise (``np.sin``).")
cos = _unary_fn("cos", "Cosine, elementwise (``np.cos``).")
tan = _unary_fn("tan", "Tangent, elementwise (``np.tan``).")
tanh = _unary_fn("tanh", "Hyperbolic tangent, elementwise (``np.tanh``).")
floor = _unary_fn("floor", "Floor, elementwise (``np.floor``; integers stay integers).")
ceil = _unary_fn("ceil", "Ceiling, elementwise (``np.ceil``; integers stay integers).")
abs = _unary_fn("abs", "Absolute value, elementwise (``np.abs``; the same as ``abs(x)``).")  # noqa: A001
erf = _unary_fn("erf", "Error function, elementwise (``scipy.special.erf``; f32 stays f32).")
asin = _unary_fn("asin", "Inverse sine, elementwise (``np.arcsin``).")
acos = _unary_fn("acos", "Inverse cosine, elementwise (``np.arccos``).")
atan = _unary_fn("atan", "Inverse tangent, elementwise (``np.arctan``).")
sinh = _unary_fn("sinh", "Hyperbolic sine, elementwise (``np.sinh``).")
cosh = _unary_fn("cosh", "Hyperbolic cosine, elementwise (``np.cosh``).")
exp2 = _unary_fn("exp2", "2**x, elementwise (``np.exp2``).")
log2 = _unary_fn("log2", "Base-2 logarithm, elementwise (``np.log2``).")
log10 = _unary_fn("log10", "Base-10 logarithm, elementwise (``np.log10``).")
trunc = _unary_fn("trunc", "Round toward zero, elementwise (``np.trunc``).")
round = _unary_fn(  # noqa: A001
    "round", "Round half to even, elementwise (``np.rint``; integers give f64, as np.rint)."
)
isnan = _unary_fn("isnan", "True where NaN (``np.isnan``).")
isinf = _unary_fn("isinf", "True where ±inf (``np.isinf``).")
isfinite = _unary_fn("isfinite", "True where neither NaN nor ±inf (``np.isfinite``).")


def pow(x: Any, y: Any) -> Any:  # noqa: A001
    """``x ** y``, elementwise (``np.power``)."""
    return _apply("pow", (x, y))


def atan2(y: Any, x: Any) -> Any:
    """Angle of the point (x, y), elementwise (``np.arctan2``)."""
    return _apply("atan2", (y, x))


def fmod(x: Any, y: Any) -> Any:
    """C remainder (sign of ``x``), elementwise (``np.fmod``; integer ``y == 0`` gives 0)."""
    return _apply("fmod", (x, y))


def minimum(x: Any, y: Any) -> Any:
    """Elementwise minimum, NaN-propagating (``np.minimum``). Inside kernels: ``min``."""
    return _apply("min", (x, y))


def maximum(x: Any, y: Any) -> Any:
    """Elementwise maximum, NaN-propagating (``np.maximum``). Inside kernels: ``max``."""
    return _apply("max", (x, y))


def fma(a: Any, b: Any, c: Any) -> Any:
    """``a * b + c``, elementwise, rounded once where the device can (see the module
    docstring); the result is a float (integers give f64)."""
    return _apply("fma", (a, b, c), _fma_host)


def where(cond: Any, a: Any, b: Any) -> Any:
    """``a`` where ``cond`` else ``b``, elementwise (``np.where`` with three arguments;
    ``cond`` is converted to bool, the result dtype is ``np.result_type(a, b)``)."""
    return _apply("where", (cond, a, b), np.where)


# ---- kernel builtins: the same objects inside @vg.kernel --------------------------------
_MATH_NAMES = ("sqrt", "exp", "log", "sin", "cos", "tan", "tanh", "floor", "ceil", "abs", "erf",
               "asin", "acos", "atan", "sinh", "cosh", "exp2", "log2", "log10", "trunc",
               "round", "isnan", "isinf", "isfinite", "pow", "atan2", "fmod", "fma")  # fmt: skip
for _name in _MATH_NAMES:
    register(globals()[_name], "math", _name)
register(minimum, "math", "min")
register(maximum, "math", "max")
register(where, "where", "where")

_array._ew = sys.modules[__name__]

__all__ = [
    "abs", "acos", "asin", "atan", "atan2", "cache_info", "ceil", "clear_cache", "cos",
    "cosh", "erf", "exp", "exp2", "floor", "fma", "fmod", "isfinite", "isinf", "isnan",
    "log", "log10", "log2", "maximum", "minimum", "pow", "round", "sin", "sinh", "sqrt",
    "tan", "tanh", "trunc", "where",
]  # fmt: skip
