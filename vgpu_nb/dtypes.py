"""The dtypes of vgpu_nb (f32 f64 i32 u32 i64 bool; u64 for sums of u32) and the array
type annotations of the kernel language.

``vg.f32`` is both a dtype (``vg.zeros(4, dtype=vg.f32)``), a cast (``vg.f32(1.5)``) and,
indexed, an array annotation for kernels (``vg.f32[:]``, ``vg.f32[:, :]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import UnsupportedDType


@dataclass(frozen=True)
class ArrayType:
    """Annotation ``vg.f32[:]`` (ndim 1) or ``vg.f32[:, :]`` (ndim 2)."""

    dtype: DType
    ndim: int

    def __repr__(self) -> str:
        return f"vg.{self.dtype.name}[{', '.join(':' * self.ndim)}]"


@dataclass(frozen=True, eq=False)
class DType:
    """One of the module-level singletons below: compared and hashed by identity (fast,
    and ``as_dtype`` always returns the singleton)."""

    name: str  # short name: f32 f64 i32 u32 i64 bool
    np: np.dtype  # the NumPy dtype with the same bytes

    @property
    def itemsize(self) -> int:
        return self.np.itemsize

    @property
    def is_float(self) -> bool:
        return self.np.kind == "f"

    @property
    def is_int(self) -> bool:
        return self.np.kind in "iu"

    def __call__(self, value: Any) -> Any:
        """Cast a Python/NumPy scalar, e.g. ``vg.f32(1.5)`` → ``np.float32(1.5)``."""
        return self.np.type(value)

    def __getitem__(self, dims: Any) -> ArrayType:
        dims = dims if isinstance(dims, tuple) else (dims,)
        if not all(isinstance(d, slice) and d == slice(None) for d in dims) or len(dims) > 2:
            raise TypeError(f"array annotations are vg.{self.name}[:] or vg.{self.name}[:, :]")
        return ArrayType(self, len(dims))

    def __repr__(self) -> str:
        return f"vg.{self.name}"

    def __str__(self) -> str:
        return self.name


f32 = DType("f32", np.dtype(np.float32))
f64 = DType("f64", np.dtype(np.float64))
i32 = DType("i32", np.dtype(np.int32))
u32 = DType("u32", np.dtype(np.uint32))
i64 = DType("i64", np.dtype(np.int64))
u64 = DType("u64", np.dtype(np.uint64))  # what NumPy's sum of u32 gives
bool_ = DType("bool", np.dtype(np.bool_))

ALL: tuple[DType, ...] = (f32, f64, i32, u32, i64, u64, bool_)
_BY_NP = {d.np: d for d in ALL}
_ALIASES = {d.name: d for d in ALL} | {str(d.np): d for d in ALL}


def as_dtype(obj: Any) -> DType:
    """Any dtype-like (``vg.f32``, ``np.float32``, ``"float32"``, ``"f32"``, ``float``) →
    our DType, or :class:`UnsupportedDType` listing what is supported."""
    if isinstance(obj, DType):
        return obj
    if isinstance(obj, str) and obj in _ALIASES:
        return _ALIASES[obj]
    try:
        npd = np.dtype(obj)
    except TypeError:
        npd = None
    if npd is not None and npd in _BY_NP:
        return _BY_NP[npd]
    raise UnsupportedDType(
        f"dtype {obj!r} is not supported",
        fix="use one of f32, f64, i32, u32, i64, u64, bool (e.g. x.astype(np.float32) first)",
    )
