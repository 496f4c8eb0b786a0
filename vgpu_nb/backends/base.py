"""The small interface every backend implements.

A *backend module* (``numpy_backend``, ``numba_backend``, ``cuda_backend``,
``wgpu_backend``) exposes two functions:

* ``discover() -> list[DeviceInfo]`` — one row per device it could offer, including
  unavailable ones with ``why_not`` filled in (never raises);
* ``open_device(info) -> Device`` — the live device for an available row.

A :class:`Device` owns buffers in its native form (``np.ndarray`` for numpy/numba,
``cupy.ndarray`` for cuda, a GPU buffer for wgpu) and implements a handful of primitives.
All NumPy semantics (result dtypes, empty inputs, ``axis`` handling, mean/var/std
composition) live once in ``vgpu_nb.ops``; backends only see non-empty, well-formed
:class:`ReduceRequest` s.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..dtypes import DType
from ..errors import UnsupportedOnBackend

if TYPE_CHECKING:
    from ..kernel import ir

#: Reduction kinds a backend implements. ``x`` is first converted to ``acc``, then mapped:
#:   sum: x       prod: x        min/max: x (NaN propagates)     argmin/argmax: first index
#:   sumsq: x*x   sqdev: (x - center)**2     dot: x*y
#: then combined (add, mul, min, max). Afterwards ``post``: divide by ``divisor`` (in acc),
#: ``sqrt`` if asked, cast to ``out``. argmin/argmax ignore acc/post and give int64.
REDUCE_KINDS = ("sum", "prod", "min", "max", "argmin", "argmax", "sumsq", "sqdev", "dot")

#: A timer is started before an op and stopped right after it is enqueued. ``stop()``
#: returns a resolver giving device seconds (or None) — called lazily, maybe much later.
Resolver = Callable[[], "float | None"]
StopTimer = Callable[[], Resolver]


@dataclass
class CompiledKernel:
    """A kernel or reduction compiled for one device: what the launch needs (``handle``,
    backend-specific), the generated ``source``, and how it was obtained (for launch
    records: seconds spent generating + compiling + loading, and whether a cache served
    it)."""

    source: str
    handle: Any
    compile_s: float
    cache_hit: bool
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class DeviceInfo:
    """One row of ``vg.devices()``."""

    name: str  # "numpy", "numba", "cuda:0", "wgpu:1"
    backend: str  # "numpy" | "numba" | "cuda" | "wgpu"
    adapter: str  # human name: "NVIDIA H200 / Vulkan", "llvmpipe / Vulkan (CPU-emulated)"
    kind: str  # "cpu" | "gpu" | "cpu-emulated gpu"
    memory_bytes: int | None = None
    compute_units: int | None = None
    available: bool = True
    why_not: str | None = None  # when unavailable: the reason and the fix
    extra: dict[str, Any] = field(default_factory=dict)  # backend details (features, limits)


@dataclass(slots=True)
class ReduceRequest:
    """A reduction as backends see it: non-empty, 1-D or 2-D, ``axis`` in (None, 0, 1).
    Treat it as immutable (not frozen only because frozen dataclasses are slow to build,
    and this is built on every op)."""

    kind: str
    x: Any  # native buffer of ``shape`` / ``dtype``
    shape: tuple[int, ...]
    dtype: DType
    axis: int | None  # None: all elements (C order) → 0-d; else 0 or 1 of a 2-D array
    acc: DType  # accumulate (and map) in this dtype
    out: DType  # result dtype
    divisor: float | None = None
    sqrt: bool = False
    y: Any = None  # dot: second operand, same shape (its own dtype is ``y_dtype``)
    y_dtype: DType | None = None
    center: Any = None  # sqdev: native buffer of dtype ``acc`` with the output's shape

    @property
    def out_shape(self) -> tuple[int, ...]:
        if self.axis is None:
            return ()
        return (self.shape[1 - self.axis],)

    @property
    def length(self) -> int:
        """Elements reduced into each output."""
        if self.axis is None:
            return int(np.prod(self.shape))
        return self.shape[self.axis]


class Device(ABC):
    """A live device. Subclasses set ``backend`` and implement the abstract primitives."""

    backend: str = ""

    def __init__(self, info: DeviceInfo):
        self.info = info

    @property
    def name(self) -> str:
        return self.info.name

    def __repr__(self) -> str:
        return f"<vg.Device {self.name}: {self.info.adapter}>"

    # ---- capability ---------------------------------------------------------------
    def unsupported(
        self, op: str, inputs: Sequence[DType], out: DType, acc: DType | None = None
    ) -> str | None:
        """Why ``op`` on ``inputs`` (accumulating in ``acc``, giving ``out``) cannot be
        computed exactly here, or None if it can."""
        return None

    def require(
        self, op: str, inputs: Sequence[DType], out: DType, acc: DType | None = None
    ) -> None:
        """Raise :class:`UnsupportedOnBackend` with the reason and a fix, if unsupported."""
        reason = self.unsupported(op, inputs, out, acc)
        if reason:
            names = "/".join(sorted({d.name for d in inputs}))
            raise UnsupportedOnBackend(
                f"{op} on {names} is not supported on {self.name}: {reason}",
                fix="move the data to a device that supports it (x.to('numba')) or cast "
                "(x.astype(vg.f32))",
            )

    def max_array_bytes(self) -> int | None:
        """The largest array a kernel can bind here (None: no limit but memory). The
        scheduler never moves an array to a device that cannot hold it."""
        return None

    # ---- memory --------------------------------------------------------------------
    @abstractmethod
    def from_numpy(self, a: np.ndarray) -> Any:
        """Copy a C-contiguous host array of a supported dtype onto the device."""

    @abstractmethod
    def to_numpy(self, buf: Any, shape: tuple[int, ...], dtype: DType) -> np.ndarray:
        """The device buffer as a host array (a view on host-memory devices)."""

    def download_into(self, host: np.ndarray, buf: Any, dtype: DType) -> None:
        """Copy device buffer ``buf`` into the contiguous host array ``host`` (a split's
        share of an array it wrote, back into the array's host memory)."""
        host[...] = self.to_numpy(buf, host.shape, dtype)

    def empty(self, shape: tuple[int, ...], dtype: DType) -> Any:
        return self.from_numpy(np.empty(shape, dtype.np))

    def full(self, shape: tuple[int, ...], value: Any, dtype: DType) -> Any:
        return self.from_numpy(np.full(shape, value, dtype.np))

    def reshape(self, buf: Any, shape: tuple[int, ...]) -> Any:
        """The same memory seen with a new shape. Flat buffers (wgpu) need nothing."""
        return buf

    def copy(self, buf: Any, shape: tuple[int, ...], dtype: DType) -> Any:
        return self.from_numpy(np.array(self.to_numpy(buf, shape, dtype)))

    def astype(self, buf: Any, shape: tuple[int, ...], src: DType, dst: DType) -> Any:
        """Convert dtype (NumPy ``astype`` semantics). Default: through the host."""
        return self.from_numpy(self.to_numpy(buf, shape, src).astype(dst.np))

    def sync(self) -> None:
        """Wait until all queued work on this device is done (host backends: nothing)."""
        return None

    # ---- memory tiers (vgpu_nb.memory) ---------------------------------------------------
    #: True where device memory *is* host RAM (numpy, numba): moving an array between the
    #: device and host tiers then relabels the same buffer instead of copying it.
    host_is_device: bool = False

    def held_bytes(self, buf: Any) -> int:
        """Bytes the allocator really holds for ``buf`` (padding, pool rounding)."""
        return int(buf.nbytes)

    def host_empty(self, shape: tuple[int, ...], dtype: DType) -> np.ndarray:
        """Host-tier memory for this device's arrays (pinned where that speeds copies)."""
        return np.empty(shape, dtype.np)

    def to_host_tier(self, buf: Any, shape: tuple[int, ...], dtype: DType) -> np.ndarray:
        """The data of ``buf`` in host-tier memory (a relabel where host is device)."""
        if self.host_is_device:
            return buf
        out = self.host_empty(shape, dtype)
        out[...] = self.to_numpy(buf, shape, dtype)
        return out

    def from_host_tier(self, host: np.ndarray) -> Any:
        """A device buffer holding ``host`` (a relabel where host is device)."""
        if self.host_is_device:
            return host
        return self.from_numpy(host)

    def chunk_view(self, buf: Any, shape: tuple[int, ...], dtype: DType) -> Any:
        """The first ``prod(shape)`` elements of ``buf`` seen with ``shape`` (streaming
        reuses one buffer per slot for every chunk, the last one shorter)."""
        n = int(np.prod(shape))
        return buf.reshape(-1)[:n].reshape(shape)

    def upload_into(self, dst: Any, host: np.ndarray) -> None:
        """Copy ``host`` into the start of device buffer ``dst`` (same dtype), queued."""
        dst.reshape(-1)[: host.size] = host.reshape(-1)

    # ---- compute -------------------------------------------------------------------
    @abstractmethod
    def reduce(self, req: ReduceRequest) -> Any:
        """Native buffer with ``req.out_shape`` and dtype ``req.out`` (int64 for arg*)."""

    @abstractmethod
    def matmul(self, a: Any, b: Any, m: int, k: int, n: int, dtype: DType) -> Any:
        """``(m, k) @ (k, n)`` of two buffers of ``dtype`` → buffer ``(m, n)``."""

    # ---- the kernel language ----------------------------------------------------------
    # Arguments of a launch, in ``fn.params`` order: an array parameter gets a tuple
    # ``(native buffer, shape)``, a scalar parameter a NumPy scalar of its dtype. The
    # ``domain`` is ``(n,)`` or ``(ny, nx)`` (all > 0); thread (i, j) runs the body with
    # ``vg.tid() == (i, j)``; threads outside the domain never run it.
    def kernel_unsupported(self, fn: ir.Function) -> str | None:
        """Why this device cannot run ``fn`` exactly (a type, print(), a feature), or None."""
        return None

    def kernel_source(self, fn: ir.Function) -> str:
        """The generated native source of ``fn`` for this device (no compiling)."""
        raise UnsupportedOnBackend(f"kernels are not implemented on {self.name} yet")

    def compile_kernel(self, fn: ir.Function) -> CompiledKernel:
        """Generate, compile and load ``fn`` (through the kernel cache)."""
        raise UnsupportedOnBackend(f"kernels are not implemented on {self.name} yet")

    def launch_kernel(
        self, ck: CompiledKernel, domain: tuple[int, ...], args: Sequence[Any]
    ) -> None:
        """Enqueue one launch (asynchronous on GPUs)."""
        raise UnsupportedOnBackend(f"kernels are not implemented on {self.name} yet")

    def fast_launcher(self, ck: CompiledKernel) -> Callable[[tuple[int, ...], Any], None]:
        """``launch(domain, args)`` for the API's hot path: the same as
        :meth:`launch_kernel`; a backend may return something leaner (no error translation,
        no device switching) when that is safe."""
        return lambda domain, args: self.launch_kernel(ck, domain, args)

    def reduction_unsupported(self, red: ir.Reduction) -> str | None:
        return None

    def reduction_source(self, red: ir.Reduction) -> str:
        raise UnsupportedOnBackend(f"@vg.reduction is not implemented on {self.name} yet")

    def compile_reduction(self, red: ir.Reduction) -> CompiledKernel:
        raise UnsupportedOnBackend(f"@vg.reduction is not implemented on {self.name} yet")

    def run_reduction(
        self,
        cr: CompiledKernel,
        inputs: Sequence[Any],
        shape: tuple[int, ...],
        axis: int | None,
    ) -> Any:
        """Reduce native buffers ``inputs`` (all of ``shape``, 1-D or 2-D, non-empty) over
        all elements (``axis=None`` → 0-d result) or along ``axis`` 0/1 of a 2-D shape;
        returns a native buffer of dtype ``red.out`` with the result's shape."""
        raise UnsupportedOnBackend(f"@vg.reduction is not implemented on {self.name} yet")

    # ---- timing --------------------------------------------------------------------
    #: True where :meth:`start_timer` gives a device clock (GPUs); telemetry merges repeated
    #: launches into runs only where the host clock is the device clock
    device_clock: bool = False
    #: True where that clock brackets everything a launch queues (CUDA events), so that it
    #: is a launch's cost in a loop; WebGPU timestamps cover its compute passes only, not
    #: the uploads and submission around them (the scheduler times those round trip)
    timer_covers_launch: bool = False

    def start_timer(self) -> StopTimer | None:
        """Start a device clock for the next ops, or None when the host clock is the
        device clock (CPU backends)."""
        return None
