"""Every error a vgpu_nb user can see, in one hierarchy.

Each error says *what* went wrong, *where* (the call, the device, the argument) and *what
to do instead*. They also subclass the built-in exception a NumPy user would expect
(``ValueError``, ``TypeError`` …) so existing ``except`` clauses keep working.
"""

from __future__ import annotations


class VgpuError(Exception):
    """Base class of every vgpu_nb error."""

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None):
        self.what = what
        self.where = where
        self.fix = fix
        parts = [what]
        if where:
            parts.append(f"(in {where})")
        msg = " ".join(parts)
        if fix:
            msg += f"\n  → {fix}"
        super().__init__(msg)


class UnknownDevice(VgpuError, ValueError):
    """A device name that matches no backend ("cuda:7", "tpu")."""


class DeviceUnavailable(VgpuError, RuntimeError):
    """The device exists in principle but cannot be used on this machine."""


class DeviceMismatch(VgpuError, ValueError):
    """Operands of one call live on different devices and no transfer was asked for."""


class UnsupportedDType(VgpuError, TypeError):
    """A dtype outside f32 f64 i32 u32 i64 bool."""


class UnsupportedOnBackend(VgpuError, NotImplementedError):
    """The backend cannot compute this exactly (e.g. float64 on a WebGPU adapter without
    ``shader-f64``); we refuse rather than return a silently wrong answer."""


class ShapeMismatch(VgpuError, ValueError):
    """Operand shapes that do not fit together (matmul, dot, copies)."""


class AxisOutOfRange(VgpuError, ValueError):
    """An ``axis=`` that the array does not have."""


class EmptyReduction(VgpuError, ValueError):
    """A reduction without identity (min, max, argmin, argmax) over zero elements."""


class NotAnArray(VgpuError, TypeError):
    """Input that cannot be turned into an array (strings, objects, ragged lists)."""


class BufferTooLarge(VgpuError, ValueError):
    """A buffer above what the device allows (WebGPU ``max-buffer-size`` or
    ``max-storage-buffer-binding-size``)."""


class BackendError(VgpuError, RuntimeError):
    """The backend library itself failed (driver, compiler, runtime); the original
    message is kept in the text and as ``__cause__``."""
