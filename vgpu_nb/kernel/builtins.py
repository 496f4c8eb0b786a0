"""The builtins registry: which Python objects mean what inside a kernel.

The frontend resolves a call's target to a Python object (``vg.sqrt``, ``math.sqrt``,
``abs``, ``vg.f32`` …) and looks it up here, so aliases (``import vgpu_nb as gpu``,
``from math import sqrt``) work. ``vg.tid`` and the atomics exist only inside kernels.

The math functions ``vg.sqrt``, ``vg.exp`` … ``vg.where`` are defined (lazy and fused on
``vg.Array`` s, plain on numbers) in :mod:`vgpu_nb.ops.elementwise`, which registers them
here with :func:`register`; ``math.*`` and Python's ``abs min max round`` are registered
below.

NumPy's scalar types (``np.float32(x)`` …) are casts inside kernels, as in Numba; other
NumPy functions are errors that name the builtin to use instead.
"""

from __future__ import annotations

import builtins
import math
from dataclasses import dataclass
from typing import Any

from ..errors import KernelSyntaxError


@dataclass(frozen=True)
class Builtin:
    kind: str  # "math" | "tid" | "atomic" | "cast" | "where" | "py"
    name: str  # math function / atomic op / python builtin name / dtype name


_REGISTRY: dict[int, tuple[Any, Builtin]] = {}


def register(obj: Any, kind: str, name: str) -> None:
    """Make ``obj`` mean ``Builtin(kind, name)`` inside kernels."""
    _REGISTRY[id(obj)] = (obj, Builtin(kind, name))


def lookup(obj: Any) -> Builtin | None:
    hit = _REGISTRY.get(id(obj))
    return hit[1] if hit is not None and hit[0] is obj else None


def _kernel_only(name: str) -> KernelSyntaxError:
    return KernelSyntaxError(
        f"vg.{name}() can only be called inside a @vg.kernel function",
        fix="launch a kernel: k[n](args), and call it from the kernel body",
    )


def tid() -> Any:
    """Global thread index: ``i = vg.tid()`` (1-D launch ``k[n]``) or ``i, j = vg.tid()``
    (2-D launch ``k[(ny, nx)]``, i the row). Only inside kernels."""
    raise _kernel_only("tid")


def atomic_add(array: Any, index: Any, value: Any) -> Any:
    """``array[index] += value`` atomically; returns the old value (i32, u32, f32)."""
    raise _kernel_only("atomic_add")


def atomic_min(array: Any, index: Any, value: Any) -> Any:
    """``array[index] = min(array[index], value)`` atomically; returns the old value."""
    raise _kernel_only("atomic_min")


def atomic_max(array: Any, index: Any, value: Any) -> Any:
    """``array[index] = max(array[index], value)`` atomically; returns the old value."""
    raise _kernel_only("atomic_max")


register(tid, "tid", "tid")
for _op, _f in (("add", atomic_add), ("min", atomic_min), ("max", atomic_max)):
    register(_f, "atomic", _op)

# Python builtins
for _name in ("abs", "min", "max", "len", "range", "print", "float", "int", "bool", "round"):
    register(getattr(builtins, _name), "py", _name)

# the math module (functions keep the float type: math.floor(x) is a float here)
_MATH_MODULE = {
    "sqrt": "sqrt", "exp": "exp", "log": "log", "sin": "sin", "cos": "cos", "tan": "tan",
    "tanh": "tanh", "floor": "floor", "ceil": "ceil", "erf": "erf", "fabs": "abs",
    "asin": "asin", "acos": "acos", "atan": "atan", "sinh": "sinh", "cosh": "cosh",
    "log2": "log2", "log10": "log10", "trunc": "trunc", "isnan": "isnan", "isinf": "isinf",
    "isfinite": "isfinite", "pow": "pow", "atan2": "atan2", "fmod": "fmod", "exp2": "exp2",
    "fma": "fma",
}  # fmt: skip
for _py, _ours in _MATH_MODULE.items():
    if hasattr(math, _py):
        register(getattr(math, _py), "math", _ours)

#: module-level float constants usable by name (math.pi …)
MATH_CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau, "inf": math.inf, "nan": math.nan}


def _register_casts() -> None:
    from ..dtypes import ALL

    for dt in ALL:  # vg.f32(x) & co. are casts inside kernels; so are np.float32(x) & co.
        register(dt, "cast", dt.name)
        register(dt.np.type, "cast", dt.name)


_register_casts()
