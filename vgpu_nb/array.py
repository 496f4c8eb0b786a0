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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import dtypes as _dt
from .backends.base import Device
from .devices import get_device
from .dtypes import DType, as_dtype
from .errors import DeviceMismatch, NotAnArray, ShapeMismatch

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
    """An array on one device. Create with :func:`asarray`, :func:`zeros` & co."""

    __slots__ = ("_buf", "shape", "dtype", "device", "__weakref__")
    __array_priority__ = 100

    def __init__(self, buf: Any, shape: tuple[int, ...], dtype: DType, device: Device):
        self._buf = buf
        self.shape = tuple(shape)
        self.dtype = dtype
        self.device = device

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

    # ---- data movement ------------------------------------------------------------
    def numpy(self) -> np.ndarray:
        """Host copy (GPU) or the memory itself (host backends), shaped and typed."""
        return self.device.to_numpy(self._buf, self.shape, self.dtype)

    def to(self, device: str | Device) -> Array:
        """This array on ``device`` (itself if already there). Bit-exact."""
        dev = get_device(device)
        if dev is self.device:
            return self
        host = np.ascontiguousarray(self.numpy())
        return Array(dev.from_numpy(host), self.shape, self.dtype, dev)

    def copy(self) -> Array:
        return Array(self.device.copy(self._buf, self.shape, self.dtype), *self._meta())

    def astype(self, dtype: Any) -> Array:
        dst = as_dtype(dtype)
        if dst == self.dtype:
            return self.copy()
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
        buf = self.device.reshape(self._buf, tuple(shp))
        return Array(buf, tuple(shp), self.dtype, self.device)

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

    # CUDA interop (CuPy, PyTorch, Numba-CUDA): present only on CUDA arrays.
    def __getattr__(self, name: str) -> Any:
        if name in ("__cuda_array_interface__", "__dlpack__", "__dlpack_device__"):
            if self.device.backend == "cuda":
                return getattr(self._buf, name)
            raise AttributeError(
                f"{name} is only available on CUDA arrays (this one is on {self.device.name}); "
                "use x.to('cuda') first, or np.asarray(x) for host data"
            )
        raise AttributeError(f"'vg.Array' object has no attribute {name!r}")


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
    return np.ascontiguousarray(a, dtype=dt.np)


def asarray(obj: Any, dtype: Any = None, device: str | Device | None = None) -> Array:
    """Copy data (list, NumPy array, scalar, vg.Array) onto ``device`` (default device
    if None). A vg.Array already on that device with that dtype is returned as is."""
    if isinstance(obj, Array) and (dtype is None or as_dtype(dtype) == obj.dtype):
        return obj.to(device if device is not None else obj.device)
    host = _host_array(obj, dtype)
    dev = get_device(device)
    return Array(dev.from_numpy(host), host.shape, as_dtype(host.dtype), dev)


def empty(shape: ShapeLike, dtype: Any = _dt.f32, device: str | Device | None = None) -> Array:
    """Uninitialised (contents unspecified) array; default dtype f32, like Warp."""
    dev, shp, dt = get_device(device), _shape(shape), as_dtype(dtype)
    return Array(dev.empty(shp, dt), shp, dt, dev)


def full(
    shape: ShapeLike, value: Any, dtype: Any = None, device: str | Device | None = None
) -> Array:
    dt = as_dtype(dtype) if dtype is not None else as_dtype(np.asarray(value).dtype)
    dev, shp = get_device(device), _shape(shape)
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
