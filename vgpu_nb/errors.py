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


class CannotSplit(VgpuError, ValueError):
    """``split=True`` on an op that cannot be cut into independent shares (a kernel that
    uses its thread id for more than ``x[i]``, a reduction along an axis, argmin …)."""


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


class KernelError(VgpuError):
    """Base of errors about a kernel's source. The message shows the user's line (file and
    line number as in a traceback, the cell for notebook kernels) with a caret under the
    offending construct."""

    def __init__(
        self,
        what: str,
        *,
        filename: str = "<kernel>",
        lineno: int | None = None,
        col: int | None = None,
        source_line: str | None = None,
        func: str | None = None,
        fix: str | None = None,
    ):
        self.filename, self.lineno, self.col = filename, lineno, col
        self.source_line, self.func = source_line, func
        where = None
        if lineno is not None:
            where = f'File "{filename}", line {lineno}' + (f", in {func}" if func else "")
            if source_line is not None:
                text = source_line.rstrip("\n")
                stripped = text.lstrip()
                where += f"\n    {stripped}"
                if col is not None:
                    caret = max(0, col - (len(text) - len(stripped)))
                    where += "\n    " + " " * caret + "^"
        super().__init__(what, where=None, fix=fix)
        self.where = where
        if where:
            msg = what + "\n  " + where.replace("\n", "\n  ")
            if fix:
                msg += f"\n  → {fix}"
            self.args = (msg,)

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else self.what


class KernelSyntaxError(KernelError, ValueError):
    """A construct the kernel language does not have (lists, dicts, strings, recursion,
    NumPy calls, closures over non-constant globals …); the message names the construct,
    shows the line and says what to use instead."""


class KernelTypeError(KernelError, TypeError):
    """A type error in a kernel (a local changing type, float indices, a bad argument at
    launch: wrong count, dtype or dimensions)."""


class KernelCompileError(VgpuError, RuntimeError):
    """The backend's compiler (NVRTC, Naga/WGSL validation, Numba) rejected generated
    code: the compiler's message and the generated source line are in the text. This is a
    vgpu_nb bug or a limit of the backend; ``kernel.source(backend)`` shows the code."""


class KernelRuntimeError(KernelError, RuntimeError):
    """A kernel failed while running (on the NumPy backend: an out-of-range index, naming
    the thread, the array, the index and the user's line)."""


class MemoryTierError(VgpuError, RuntimeError):
    """Base of errors about the memory tiers (budgets, spilling, streaming)."""


class OutOfDeviceMemory(MemoryTierError, MemoryError):
    """Even after spilling every array that may move, the device budget cannot hold what
    an allocation or a launch needs. The message says how much was needed, what is held
    and by whom, and what to do (free arrays, raise the budget, use a streaming op)."""


class SpillFailed(MemoryTierError, OSError):
    """Moving an array down a tier failed (disk full, unwritable spill directory, host
    memory exhausted). The array stays where it was, with its data; nothing is lost."""


class BadBudget(MemoryTierError, ValueError):
    """A memory budget or size that cannot be understood ("1 GB", "-3", "lots")."""


class TraceTooLarge(VgpuError, ValueError):
    """``kernel.trace(n, ...)`` over more threads than its ``max_threads``: a trace runs
    every thread in Python and records every access, so it is meant for small launches
    (the access pattern of a kernel does not depend on the problem's size)."""
