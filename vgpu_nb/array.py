"""``vg.Array``: an n-D, C-contiguous array that lives on one device.

Decisions (written down because NumPy, CuPy and Warp differ):

* Arrays never move implicitly. An op whose operands live on different devices raises
  :class:`DeviceMismatch`; ``x.to(device)`` is the explicit transfer.
* ``vg.asarray`` follows NumPy's dtype inference (Python floats → f64, ints → i64); pass
  ``dtype=vg.f32`` for GPU-friendly data.
* Full reductions return a 0-d ``vg.Array`` on the same device, like CuPy and the Array
  API, so nothing synchronises until you look: ``float(r)``, ``r.item()`` or printing it.
* ``x.numpy()`` on the host backends (numpy, numba) returns the device memory itself
  (zero-copy, like Warp); on GPUs it is a fresh host copy.
* **Operators are lazy and fused** (``x * 2 + y``, comparisons, ``vg.where``, ``vg.exp``):
  they return a *pending* ``vg.Array`` (shape, dtype and device known at once) whose value
  is one fused kernel, compiled (cached by structure) and launched when the value is first
  needed — by a reduction, ``.numpy()``, ``repr``, ``.to()``, ``float()``, a kernel
  launch. Semantics and result dtypes are NumPy 2's; see :mod:`vgpu_nb.ops.elementwise`.
* **In-place operators rebind**: ``x += 1`` makes a new array and rebinds ``x`` (other
  references to the old array keep the old values), unlike NumPy's in-place update.
* ``==`` is elementwise (a bool array), as in NumPy; hashing stays by identity, so
  arrays can still key dicts and weak sets (``x in list`` compares elementwise, though).
* **Memory tiers** (:mod:`vgpu_nb.memory`): an array may live on its device, in host RAM
  or on disk (``x.tier``, ``x.placement``). Arrays larger than the device budget are made
  in the host tier (or on disk) and ops stream them; spilled arrays come back when an op
  touches them. ``x.numpy()`` of a non-resident array reads the lower tier directly.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import dtypes as _dt
from .backends.base import Device
from .devices import get_device
from .dtypes import DType, as_dtype
from .errors import DeviceMismatch, NotAnArray, ShapeMismatch
from .memory import manager as _mm
from .memory.manager import MEM

ShapeLike = int | Sequence[int]


def _shape(shape: ShapeLike, allow_minus_one: bool = False) -> tuple[int, ...]:
    try:
        shp = (int(shape),) if np.ndim(shape) == 0 else tuple(int(s) for s in shape)  # type: ignore[union-attr]
    except (TypeError, ValueError) as exc:
        raise ShapeMismatch(f"shape must be an int or a tuple of ints, got {shape!r}") from exc
    if any(s < (-1 if allow_minus_one else 0) for s in shp):
        raise ShapeMismatch(f"negative dimensions are not allowed: {shp}")
    return shp


class Array:
    """An array on one device. Create with :func:`asarray`, :func:`zeros` & co.

    ``_buf`` (the native buffer) is a plain slot: the hot path of every op reads it
    directly. Pending expressions are instances of the same-layout subclasses below, whose
    ``_buf`` property evaluates first; once evaluated they become plain ``Array`` s again
    (``__class__`` is switched back), so laziness costs materialised arrays nothing."""

    __slots__ = ("_buf", "shape", "dtype", "device", "_deps", "_st", "__weakref__")
    __array_priority__ = 100
    __hash__ = object.__hash__  # by identity (== is elementwise)

    def __init__(
        self, buf: Any, shape: tuple[int, ...], dtype: DType, device: Device, st: Any = None
    ):
        self._buf = buf
        self.shape = shape = tuple(shape)
        self.dtype = dtype
        self.device = device
        if st is None:
            self._st = MEM.track(buf, device, shape, dtype, self)
        else:  # a view of the same memory (reshape)
            self._st = st
            st.views.append(_weakref(self))

    # ---- metadata -----------------------------------------------------------------
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d vg.Array")
        return self.shape[0]

    @property
    def tier(self) -> str:
        """The tier holding the authoritative copy: ``"device"``, ``"host"`` or ``"disk"``."""
        st = self._st
        return _mm.DEVICE if st is None else st.tier

    @property
    def placement(self) -> frozenset[str]:
        """The tiers that hold a valid copy right now (after a prefetch, more than one)."""
        st = self._st
        return frozenset({_mm.DEVICE}) if st is None else st.placement

    # ---- data movement ------------------------------------------------------------
    def numpy(self) -> np.ndarray:
        """Host copy (GPU) or the memory itself (host backends), shaped and typed."""
        return self.device.to_numpy(self._buf, self.shape, self.dtype)

    def to(self, device: str | Device) -> Array:
        """This array on ``device`` (itself if already there). Bit-exact."""
        dev = get_device(device)
        if dev is self.device:
            return self
        host = np.asarray(self.numpy(), order="C")
        return _from_host(dev, host)

    def _out_of_core(self) -> bool:
        return type(self) is _Spilled and not MEM.fits_device(self.device, self.nbytes)

    def copy(self) -> Array:
        if self._out_of_core():  # through the host (or disk) tier, never onto the device
            return _from_host(self.device, np.array(self.numpy()))
        return Array(self.device.copy(self._buf, self.shape, self.dtype), *self._meta())

    def astype(self, dtype: Any) -> Array:
        dst = as_dtype(dtype)
        if dst == self.dtype:
            return self.copy()
        if self._out_of_core():
            return _from_host(self.device, self.numpy().astype(dst.np))
        buf = self.device.astype(self._buf, self.shape, self.dtype, dst)
        return Array(buf, self.shape, dst, self.device)

    def reshape(self, *shape: Any) -> Array:
        """A new view of the same (C-contiguous) memory; one dimension may be -1."""
        shp = shape[0] if len(shape) == 1 and not isinstance(shape[0], int) else shape
        shp = list(_shape(shp, allow_minus_one=True))
        if shp.count(-1) > 1:
            raise ShapeMismatch("only one dimension may be -1 in reshape")
        if -1 in shp:
            rest = math.prod(s for s in shp if s != -1)
            shp[shp.index(-1)] = self.size // rest if rest else 0
        if math.prod(shp) != self.size:
            raise ShapeMismatch(
                f"cannot reshape an array of size {self.size} into shape {tuple(shp)}",
                where="vg.Array.reshape",
            )
        if type(self) is _Spilled:  # a view of memory that is not on the device now
            v = object.__new__(_Spilled)
            _BUF.__set__(v, None)
            _DEPS.__set__(v, None)
            v.shape, v.dtype, v.device, v._st = tuple(shp), self.dtype, self.device, self._st
            self._st.views.append(_weakref(v))
            return v
        buf = self.device.reshape(self._buf, tuple(shp))
        return Array(buf, tuple(shp), self.dtype, self.device, self._st)

    def _meta(self) -> tuple[tuple[int, ...], DType, Device]:
        return self.shape, self.dtype, self.device

    # ---- Python / NumPy interop ---------------------------------------------------
    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        a = self.numpy()
        if dtype is not None:
            a = a.astype(dtype, copy=False)
        return np.array(a, copy=True) if copy else a

    def item(self) -> Any:
        if self.size != 1:
            raise ValueError("can only convert an array of size 1 to a Python scalar")
        return self.numpy().reshape(()).item()

    def tolist(self) -> Any:
        return self.numpy().tolist()

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __index__(self) -> int:
        if not self.dtype.is_int:
            raise TypeError("only integer vg.Arrays can be used as an index")
        return int(self.item())

    def __bool__(self) -> bool:
        return bool(self.item())

    def __repr__(self) -> str:
        body = np.array2string(self.numpy(), separator=", ", threshold=20, prefix="vg.Array(")
        return f"vg.Array({body}, dtype={self.dtype.name}, device={self.device.name!r})"

    def _repr_html_(self) -> str:
        """Where it lives (device, tiers, size) above its values (at most ~20 shown)."""
        from .memory.budgets import human
        from .reprs import esc, table

        tiers = ", ".join(sorted(self.placement))
        meta = table(("shape", "dtype", "device", "tiers", "bytes"),
                     [(self.shape, self.dtype.name, self.device.name, tiers,
                       human(self.nbytes))])  # fmt: skip
        body = np.array2string(self.numpy(), separator=", ", threshold=20)
        return f"<div><b>vg.Array</b>{meta}<pre>{esc(body)}</pre></div>"

    # ---- operators: lazy, fused elementwise expressions (vgpu_nb.ops.elementwise) -------
    def eval(self) -> Array:
        """Evaluate a pending expression now (one fused kernel launch); returns ``self``.
        Nothing to do on an array that already holds its values."""
        if type(self) is _Pending:
            _ew.materialize(self)
        return self

    def __add__(self, other: Any) -> Any:
        return _ew.binary("add", self, other)

    def __radd__(self, other: Any) -> Any:
        return _ew.binary("add", other, self)

    def __sub__(self, other: Any) -> Any:
        return _ew.binary("sub", self, other)

    def __rsub__(self, other: Any) -> Any:
        return _ew.binary("sub", other, self)

    def __mul__(self, other: Any) -> Any:
        return _ew.binary("mul", self, other)

    def __rmul__(self, other: Any) -> Any:
        return _ew.binary("mul", other, self)

    def __truediv__(self, other: Any) -> Any:
        return _ew.binary("div", self, other)

    def __rtruediv__(self, other: Any) -> Any:
        return _ew.binary("div", other, self)

    def __floordiv__(self, other: Any) -> Any:
        return _ew.binary("floordiv", self, other)

    def __rfloordiv__(self, other: Any) -> Any:
        return _ew.binary("floordiv", other, self)

    def __mod__(self, other: Any) -> Any:
        return _ew.binary("mod", self, other)

    def __rmod__(self, other: Any) -> Any:
        return _ew.binary("mod", other, self)

    def __pow__(self, other: Any) -> Any:
        return _ew.binary("pow", self, other)

    def __rpow__(self, other: Any) -> Any:
        return _ew.binary("pow", other, self)

    def __and__(self, other: Any) -> Any:
        return _ew.binary("and", self, other)

    def __rand__(self, other: Any) -> Any:
        return _ew.binary("and", other, self)

    def __or__(self, other: Any) -> Any:
        return _ew.binary("or", self, other)

    def __ror__(self, other: Any) -> Any:
        return _ew.binary("or", other, self)

    def __xor__(self, other: Any) -> Any:
        return _ew.binary("xor", self, other)

    def __rxor__(self, other: Any) -> Any:
        return _ew.binary("xor", other, self)

    def __lt__(self, other: Any) -> Any:
        return _ew.binary("lt", self, other)

    def __le__(self, other: Any) -> Any:
        return _ew.binary("le", self, other)

    def __gt__(self, other: Any) -> Any:
        return _ew.binary("gt", self, other)

    def __ge__(self, other: Any) -> Any:
        return _ew.binary("ge", self, other)

    def __eq__(self, other: Any) -> Any:  # type: ignore[override]
        return _ew.binary("eq", self, other)

    def __ne__(self, other: Any) -> Any:  # type: ignore[override]
        return _ew.binary("ne", self, other)

    def __neg__(self) -> Any:
        return _ew.unary("neg", self)

    def __pos__(self) -> Any:
        return _ew.unary("pos", self)

    def __abs__(self) -> Any:
        return _ew.unary("abs", self)

    def __invert__(self) -> Any:
        return _ew.unary("invert", self)

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        """NumPy ufuncs on vg.Arrays (``np.sqrt(x)``, ``np.float32(2) * x``) run on the
        array's device, lazily; NumPy arrays mixed in are an error (no implicit moves)."""
        return _ew.array_ufunc(ufunc, method, inputs, kwargs)

    # CUDA interop (CuPy, PyTorch, Numba-CUDA): present only on CUDA arrays. An exported
    # array is pinned to the device: the consumer holds its pointer, not a reference we see.
    def __getattr__(self, name: str) -> Any:
        if name in ("__cuda_array_interface__", "__dlpack__", "__dlpack_device__"):
            if self.device.backend == "cuda":
                buf = self._buf
                self._st.pinned = True
                return getattr(buf, name)
            raise AttributeError(
                f"{name} is only available on CUDA arrays (this one is on {self.device.name}); "
                "use x.to('cuda') first, or np.asarray(x) for host data"
            )
        raise AttributeError(f"'vg.Array' object has no attribute {name!r}")


#: the slot descriptor of ``Array._buf``: raw access that never evaluates anything
_BUF = Array.__dict__["_buf"]
_DEPS = Array.__dict__["_deps"]
_ST = Array.__dict__["_st"]
_weakref = weakref.ref
#: vgpu_nb.ops.elementwise (it imports this module; it sets this when it is imported)
_ew: Any = None


class _Pending(Array):
    """A ``vg.Array`` whose value is a pending fused expression (the ``_buf`` slot holds
    the expression). Reading ``_buf`` evaluates it, stores the buffer in the slot and turns
    the object into a plain :class:`Array`. Same layout as Array (no new slots), so the
    ``__class__`` switch is allowed."""

    __slots__ = ()

    @property
    def _buf(self) -> Any:  # type: ignore[override]
        buf = _ew.materialize(self)
        return buf if buf is not None else self._buf  # None: streamed, out-of-core

    @_buf.setter
    def _buf(self, value: Any) -> None:
        _BUF.__set__(self, value)


class _Watched(Array):
    """A materialised array that pending expressions read (``_deps``: weak references to
    them). Anything that reads its buffer might write it (a kernel launch), so reading
    ``_buf`` first evaluates those expressions, then turns it back into a plain Array."""

    __slots__ = ()

    @property
    def _buf(self) -> Any:  # type: ignore[override]
        _ew.flush(self)
        return _BUF.__get__(self, Array)

    @_buf.setter
    def _buf(self, value: Any) -> None:
        _BUF.__set__(self, value)


class _Spilled(Array):
    """A ``vg.Array`` whose memory is not on its device now (spilled to host RAM or disk,
    or made there because it is larger than the device budget). Reading ``_buf`` brings
    it back (spilling others if needed) and turns every view of it into a plain Array;
    ``numpy()`` and ``repr`` read the lower tier directly, without moving anything."""

    __slots__ = ()

    @property
    def _buf(self) -> Any:  # type: ignore[override]
        MEM.unspill(_ST.__get__(self, Array))
        return _BUF.__get__(self, Array)

    @_buf.setter
    def _buf(self, value: Any) -> None:
        _BUF.__set__(self, value)

    def numpy(self) -> np.ndarray:
        st = self._st
        host = MEM.read_host(st)
        if st.shape != self.shape:
            host = host.reshape(self.shape)
        return host


def _spilled_new(st: Any, shape: tuple[int, ...], dtype: DType, dev: Device) -> Array:
    """A non-resident array over storage ``st`` (made in the host or disk tier)."""
    v = object.__new__(_Spilled)
    _BUF.__set__(v, None)
    _DEPS.__set__(v, None)
    v.shape, v.dtype, v.device = shape, dtype, dev
    _ST.__set__(v, st)
    return v


_mm.ARRAY, _mm.SPILLED, _mm._BUF = Array, _Spilled, _BUF


def migrate(x: Array, dev: Device) -> None:
    """Move ``x`` to ``dev`` in place: the same object, and every reshaped view of its
    memory, now lives on ``dev`` (bit-exact; the old buffer is freed with its storage).
    Only the scheduler does this (``device="auto"``: data follows work); users move
    arrays with :meth:`Array.to`, which makes a new array."""
    st = x._st
    views = st.live_views() if st is not None else [x]
    if not any(v is x for v in views):
        views.append(x)
    moved = x.to(dev)
    new_st = moved._st
    base = moved._buf
    for v in views:
        v._buf = base if v.shape == moved.shape else dev.reshape(base, v.shape)
        v.device = dev
        v._st = new_st
        new_st.views.append(_weakref(v))


def is_pending(x: Any) -> bool:
    """True if ``x`` is a vg.Array whose value is a not-yet-evaluated expression."""
    return type(x) is _Pending


def check_same_device(op: str, *arrays: Array) -> Device:
    """The common device of ``arrays`` or :class:`DeviceMismatch`."""
    for a in arrays:
        if not isinstance(a, Array):
            raise NotAnArray(
                f"{op}() takes vg.Array operands, got {type(a).__name__}",
                fix="wrap host data first: vg.asarray(x, device=...)",
            )
    dev = arrays[0].device
    for a in arrays[1:]:
        if a.device is not dev:
            names = ", ".join(repr(b.device.name) for b in arrays)
            raise DeviceMismatch(
                f"{op}() got operands on different devices ({names})",
                fix=f"move them explicitly, e.g. y = y.to({dev.name!r})",
            )
    return dev


# ---- creation ---------------------------------------------------------------------
def _host_array(obj: Any, dtype: Any) -> np.ndarray:
    if isinstance(obj, Array):
        a = obj.numpy()
    else:
        if isinstance(obj, (str, bytes, dict, set)) or obj is None:
            raise NotAnArray(
                f"cannot make a vg.Array from {type(obj).__name__}",
                fix="pass numbers, a (nested) list of numbers or a NumPy array",
            )
        try:
            a = np.asarray(obj)
        except ValueError as exc:  # ragged nested lists
            raise NotAnArray(f"cannot make a vg.Array from this input: {exc}") from exc
        if a.dtype == object or a.dtype.kind in "USVO":
            raise NotAnArray(
                f"cannot make a vg.Array from {type(obj).__name__} of {a.dtype}",
                fix="pass numbers, a (nested) list of numbers or a NumPy array",
            )
    dt = as_dtype(dtype if dtype is not None else a.dtype)
    return np.asarray(a, dtype=dt.np, order="C")  # (ascontiguousarray makes 0-d 1-d)


def asarray(obj: Any, dtype: Any = None, device: str | Device | None = None) -> Array:
    """Copy data (list, NumPy array, scalar, vg.Array) onto ``device`` (default device
    if None). A vg.Array already on that device with that dtype is returned as is."""
    if isinstance(obj, Array) and (dtype is None or as_dtype(dtype) == obj.dtype):
        return obj.to(device if device is not None else obj.device)
    return _from_host(get_device(device), _host_array(obj, dtype))


def _big(dev: Device, shape: tuple[int, ...], dt: DType, make: Any) -> Array:
    v = _spilled_new(None, shape, dt, dev)
    st = make(v)
    _ST.__set__(v, st)
    return v


def _from_host(dev: Device, host: np.ndarray) -> Array:
    """A new array on ``dev`` with the values of C-contiguous ``host`` (routed to the host
    or disk tier when larger than the device budget)."""
    dt = as_dtype(host.dtype)
    if host.nbytes and not MEM.fits_device(dev, host.nbytes):
        return _big(dev, host.shape, dt, lambda v: MEM.new_array(dev, host, host.shape, dt, v))
    MEM.reserve(dev, host.nbytes, f"a new {host.nbytes}-byte array")
    return Array(_upload(dev, host), host.shape, dt, dev)


def _upload(dev: Device, host: np.ndarray) -> Any:
    """``dev.from_numpy`` for any C-contiguous host array, 0-d included (backends get a
    1-element array and reshape it)."""
    if host.ndim == 0:
        return dev.reshape(dev.from_numpy(host.reshape(1)), ())
    return dev.from_numpy(host)


def empty(shape: ShapeLike, dtype: Any = _dt.f32, device: str | Device | None = None) -> Array:
    """Uninitialised (contents unspecified) array; default dtype f32, like Warp."""
    dev, shp, dt = get_device(device), _shape(shape), as_dtype(dtype)
    nbytes = math.prod(shp) * dt.itemsize
    if nbytes and not MEM.fits_device(dev, nbytes):
        return _big(dev, shp, dt, lambda v: MEM.new_empty(dev, shp, dt, v))
    MEM.reserve(dev, nbytes, f"a new {nbytes}-byte array")
    return Array(dev.empty(shp, dt), shp, dt, dev)


def full(
    shape: ShapeLike, value: Any, dtype: Any = None, device: str | Device | None = None
) -> Array:
    dt = as_dtype(dtype) if dtype is not None else as_dtype(np.asarray(value).dtype)
    dev, shp = get_device(device), _shape(shape)
    nbytes = math.prod(shp) * dt.itemsize
    if nbytes and not MEM.fits_device(dev, nbytes):
        fill = np.asarray(value).astype(dt.np)
        return _big(dev, shp, dt, lambda v: MEM.new_empty(dev, shp, dt, v, fill))
    MEM.reserve(dev, nbytes, f"a new {nbytes}-byte array")
    return Array(dev.full(shp, value, dt), shp, dt, dev)


def zeros(shape: ShapeLike, dtype: Any = _dt.f32, device: str | Device | None = None) -> Array:
    return full(shape, 0, dtype, device)


def ones(shape: ShapeLike, dtype: Any = _dt.f32, device: str | Device | None = None) -> Array:
    return full(shape, 1, dtype, device)


def arange(
    start: Any,
    stop: Any = None,
    step: Any = 1,
    dtype: Any = None,
    device: str | Device | None = None,
) -> Array:
    """Like ``np.arange`` (ints → i64, floats → f64 unless ``dtype`` is given)."""
    host = np.arange(start, stop, step) if stop is not None else np.arange(start, step=step)
    return asarray(host, dtype=dtype, device=device)
