"""Runtime helpers of the NumPy backend's thread-by-thread kernels (the debugging mode of
:mod:`.codegen_numba`): bounds checks that name the thread, array, index and line; atomics
(trivially atomic: one thread runs at a time); ``print``."""

from __future__ import annotations

import linecache
import threading
from typing import Any

import numpy as np

from ..errors import KernelRuntimeError


class _State(threading.local):
    """The running thread id and kernel (per Python thread)."""

    thread: tuple[int, ...] = ()
    kernel: str = "?"
    filename: str = "<kernel>"


STATE = _State()


def check(i: Any, arr: np.ndarray, dim: int, name: str, line: int) -> Any:
    """``i`` if it is a valid index along ``dim`` of ``arr``, else a KernelRuntimeError."""
    n = arr.shape[dim]
    if 0 <= i < n:
        return i
    tid = ", ".join(str(t) for t in STATE.thread)
    axis = f" along axis {dim}" if arr.ndim > 1 else ""
    text = linecache.getline(STATE.filename, line) if line else ""
    raise KernelRuntimeError(
        f"thread ({tid}) of kernel {STATE.kernel!r} indexed {name!r} (shape "
        f"{tuple(arr.shape)}) with {int(i)}{axis}: out of range [0, {n})",
        filename=STATE.filename,
        lineno=line or None,
        source_line=text.rstrip("\n") or None,
        func=STATE.kernel,
        fix="guard the access (if i < a.shape[0]: …) or launch fewer threads; negative "
        "indices do not wrap around in kernels",
    )


def atomic(op: str, arr: np.ndarray, idx: tuple[Any, ...], value: Any) -> Any:
    old = arr[idx]
    if op == "add":
        arr[idx] = old + value
    elif op == "min":
        arr[idx] = value if value < old else old
    else:
        arr[idx] = value if value > old else old
    return old


def emit_print(*items: Any) -> None:
    """``print`` with NumPy scalars shown as plain numbers."""
    print(*(i.item() if isinstance(i, np.generic) else i for i in items))
