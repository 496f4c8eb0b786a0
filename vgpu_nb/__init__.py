"""vgpu_nb: GPU computing you can see in a notebook.

``import vgpu_nb as vg`` — this module only re-exports the public API.
"""

from . import errors, memory, scheduler, telemetry
from .array import Array, arange, asarray, empty, full, ones, zeros
from .backends.base import Device, DeviceInfo
from .devices import default_device, device, devices, get_device, use
from .dtypes import ALL as dtypes
from .dtypes import DType, f32, f64, i32, i64, u32, u64
from .dtypes import bool_ as bool  # noqa: A004  (vg.bool, as in the kernel language)
from .errors import (
    AxisOutOfRange,
    BackendError,
    BufferTooLarge,
    CannotSplit,
    DeviceMismatch,
    DeviceUnavailable,
    EmptyReduction,
    KernelCompileError,
    KernelError,
    KernelRuntimeError,
    KernelSyntaxError,
    KernelTypeError,
    NotAnArray,
    OutOfDeviceMemory,
    ShapeMismatch,
    SpillFailed,
    TraceTooLarge,
    UnknownDevice,
    UnsupportedDType,
    UnsupportedOnBackend,
    VgpuError,
)
from .kernel.api import Kernel, ReductionFunction, func, kernel, reduction
from .kernel.builtins import atomic_add, atomic_max, atomic_min, tid
from .kernel.native import NativeKernel, native_kernel
from .notebook.dashboard import dashboard  # (widgets and matplotlib load when called)
from .ops import (  # reductions, linalg, elementwise math (lazy, fused; kernel builtins)
    abs,
    acos,
    argmax,
    argmin,
    asin,
    atan,
    atan2,
    ceil,
    cos,
    cosh,
    dot,
    erf,
    exp,
    exp2,
    floor,
    fma,
    fmod,
    isfinite,
    isinf,
    isnan,
    log,
    log2,
    log10,
    matmul,
    max,
    maximum,
    mean,
    min,
    minimum,
    norm,
    pow,
    prod,
    round,
    sin,
    sinh,
    sqrt,
    std,
    sum,
    tan,
    tanh,
    trunc,
    var,
    where,
)
from .scheduler import calibrate
from .telemetry import profile, timeit

__version__ = "0.1.0"


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext vgpu_nb``: the ``%vgpu`` / ``%%vgpu`` magics (:mod:`vgpu_nb.notebook`)."""
    from .notebook.magics import load_ipython_extension as load

    load(ipython)


__all__ = [
    "Array", "AxisOutOfRange", "BackendError", "BufferTooLarge", "CannotSplit", "DType", "Device",
    "DeviceInfo", "DeviceMismatch", "DeviceUnavailable", "EmptyReduction", "NotAnArray",
    "OutOfDeviceMemory", "SpillFailed", "TraceTooLarge",
    "ShapeMismatch", "UnknownDevice", "UnsupportedDType", "UnsupportedOnBackend", "VgpuError",
    "arange", "argmax", "argmin", "asarray", "bool", "dashboard", "default_device", "device",
    "devices",
    "dot", "dtypes", "empty", "errors", "f32", "f64", "full", "get_device", "i32", "i64",
    "matmul", "max", "mean", "min", "norm", "ones", "prod", "profile", "std", "sum", "timeit",
    "calibrate", "memory", "scheduler", "telemetry", "u32", "u64", "use", "var", "zeros",
    "Kernel", "KernelCompileError", "KernelError", "KernelRuntimeError", "KernelSyntaxError",
    "KernelTypeError", "ReductionFunction", "atomic_add", "atomic_max", "atomic_min", "func",
    "kernel", "reduction", "tid", "NativeKernel", "native_kernel",
    "abs", "acos", "asin", "atan", "atan2", "ceil", "cos", "cosh", "erf", "exp", "exp2",
    "floor", "fma", "fmod", "isfinite", "isinf", "isnan", "log", "log10", "log2", "maximum",
    "minimum", "pow", "round", "sin", "sinh", "sqrt", "tan", "tanh", "trunc", "where",
]  # fmt: skip
