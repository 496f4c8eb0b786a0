"""The ``wgpu`` backend: WebGPU through wgpu-py, on any Vulkan / Metal / D3D12 / OpenGL
adapter (Mesa's llvmpipe gives CPU-emulated adapters on machines without a GPU).

The compute is our own WGSL (:mod:`vgpu_nb.backends.wgsl`): reductions and a tiled matmul.
This module owns the device side: adapters and their order, device features and limits,
buffers, pipelines (cached by source), dispatch, timestamp timers and errors.

Decisions:

* Optional features (``shader-f64``, ``shader-int64``, ``subgroup``, ``timestamp-query``)
  are requested when the adapter has them; a dtype that needs a missing one is refused by
  :meth:`WgpuDevice.unsupported` (``UnsupportedOnBackend``), never computed approximately.
  ``open_device(info, features=...)`` opens a device with fewer features (tests use it to
  exercise the fallback paths on llvmpipe).
* Buffers are flat, padded to 16 bytes (so every array has a 16-byte vector view) and
  zero-initialised by WebGPU. Sizes above ``max-buffer-size`` raise ``BufferTooLarge``
  before anything is allocated.
* Each op is one command buffer with one compute pass (WebGPU orders dispatches within a
  pass), submitted without waiting: results stay on the GPU until someone reads them.
* wgpu validation and driver errors become ``BackendError`` with the original text.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..dtypes import DType
from ..errors import (
    BackendError,
    BufferTooLarge,
    KernelCompileError,
    UnsupportedOnBackend,
    VgpuError,
)
from ..kernel import cache as kcache
from ..kernel import codegen_wgsl as cg  # (here: kernel compile times exclude its import)
from .base import CompiledKernel, Device, DeviceInfo, ReduceRequest, Resolver, StopTimer
from .numpy_backend import host_memory_bytes
from .wgsl import ITEMSIZE, VALUE_TYPE, Shader, dispatch_2d
from .wgsl import matmul as wmm
from .wgsl import reduce as wred

if TYPE_CHECKING:
    from ..kernel import ir

OPTIONAL_FEATURES: tuple[str, ...] = ("shader-f64", "shader-int64", "subgroup", "timestamp-query")
#: Limits raised to the adapter's maxima when the device is requested.
RAISED_LIMITS: tuple[str, ...] = (
    "max-buffer-size",
    "max-storage-buffer-binding-size",
    "max-compute-workgroup-storage-size",
    "max-compute-invocations-per-workgroup",
    "max-compute-workgroup-size-x",
    "max-compute-workgroups-per-dimension",
    "max-storage-buffers-per-shader-stage",
    "max-uniform-buffer-binding-size",
)
#: Limits shown in ``DeviceInfo.extra``.
KEY_LIMITS: tuple[str, ...] = RAISED_LIMITS + (
    "min-storage-buffer-offset-alignment",
    "min-uniform-buffer-offset-alignment",
)
_TYPE_ORDER = {"DiscreteGPU": 0, "IntegratedGPU": 1, "CPU": 3}  # anything else: 2
_BACKEND_ORDER = {"Vulkan": 0, "Metal": 1, "D3D12": 2, "OpenGL": 3}  # anything else: 4
_FIX_WGPU = "wgpu-py is not installed: pip install 'vgpu-nb[wgpu]'"
_FIX_ADAPTER = (
    "no WebGPU adapter found: install or update the GPU driver (Vulkan, Metal or D3D12), or "
    "on Linux without a GPU install Mesa's CPU adapter: sudo apt-get install "
    "mesa-vulkan-drivers"
)
_TIMER_QUERIES = 128  # timestamp slots per timer: two per compute pass
_UNIFORM_CACHE = 256  # parameter blocks kept (by content) for reuse
#: threads per workgroup of user kernels on real GPUs / CPU-emulated adapters (llvmpipe,
#: 2 cores, saxpy of 2**24 f32: 256 → 2.5 GB/s, 64 → 2.1 GB/s, best of 6)
KERNEL_WORKGROUP_GPU = 256
KERNEL_WORKGROUP_CPU = 256

_lock = threading.Lock()
_adapters: list[Any] | None = None


# ---- discovery ----------------------------------------------------------------------------
def _adapter_key(adapter: Any) -> tuple[int, int]:
    info = adapter.info
    return (
        _TYPE_ORDER.get(str(info.get("adapter_type", "")), 2),
        _BACKEND_ORDER.get(str(info.get("backend_type", "")), 4),
    )


def adapters() -> list[Any]:
    """All WebGPU adapters, best first (real GPUs, then Vulkan > Metal > D3D12 > OpenGL).
    Enumeration costs ~0.7 s, so it happens once per process."""
    global _adapters
    with _lock:
        if _adapters is None:
            import wgpu

            found = list(wgpu.gpu.enumerate_adapters_sync())
            _adapters = sorted(found, key=_adapter_key)  # stable: driver order within a class
        return _adapters


def _describe(adapter: Any) -> tuple[str, str]:
    """(adapter text, kind) for a device row."""
    info = adapter.info
    name = str(info.get("device") or info.get("description") or info.get("vendor") or "?")
    backend = str(info.get("backend_type", "?"))
    cpu = str(info.get("adapter_type", "")) == "CPU"
    text = f"{name} / {backend}" + (" (CPU-emulated)" if cpu else "")
    return text, "cpu-emulated gpu" if cpu else "gpu"


def discover() -> list[DeviceInfo]:
    """One row per WebGPU adapter (``wgpu:0`` is the best), or one unavailable row that
    says why and what to install. Never raises."""
    try:
        import wgpu  # noqa: F401
    except ImportError:
        return [DeviceInfo("wgpu", "wgpu", "-", "gpu", available=False, why_not=_FIX_WGPU)]
    try:
        found = adapters()
    except Exception as exc:  # a broken driver stack must not break vg.devices()
        why = f"WebGPU adapter enumeration failed ({exc}); {_FIX_ADAPTER.split(': ', 1)[1]}"
        return [DeviceInfo("wgpu", "wgpu", "-", "gpu", available=False, why_not=why)]
    if not found:
        return [DeviceInfo("wgpu", "wgpu", "-", "gpu", available=False, why_not=_FIX_ADAPTER)]
    try:
        return _rows(found)
    except Exception as exc:
        why = f"reading the WebGPU adapters failed: {exc!r}"
        return [DeviceInfo("wgpu", "wgpu", "-", "gpu", available=False, why_not=why)]


def _rows(found: list[Any]) -> list[DeviceInfo]:
    rows = []
    for i, ad in enumerate(found):
        text, kind = _describe(ad)
        info = ad.info
        why_not = _no_compute(ad)
        limits = {k: int(ad.limits[k]) for k in KEY_LIMITS if k in ad.limits}
        cpu = kind != "gpu"  # llvmpipe & co: host memory, one worker thread per core
        rows.append(
            DeviceInfo(
                name=f"wgpu:{i}",
                backend="wgpu",
                adapter=text,
                kind=kind,
                memory_bytes=host_memory_bytes() if cpu else None,
                compute_units=os.cpu_count() if cpu else None,
                available=why_not is None,
                why_not=why_not,
                extra={
                    "index": i,
                    "adapter_type": str(info.get("adapter_type", "")),
                    "backend_type": str(info.get("backend_type", "")),
                    "vendor": str(info.get("vendor", "")),
                    "driver": str(info.get("description", "")),
                    "features": sorted(str(f) for f in ad.features),
                    "compute_features": [f for f in OPTIONAL_FEATURES if f in ad.features],
                    "limits": limits,
                },
            )
        )
    return rows


def _no_compute(adapter: Any) -> str | None:
    """Why an OpenGL adapter cannot run compute shaders, or None. wgpu's GL backend needs
    OpenGL 4.3 / OpenGL ES 3.1; NVIDIA's EGL gives it a 3.3 context, where requesting a
    device fails ("Parent device is lost")."""
    info = adapter.info
    if str(info.get("backend_type", "")) != "OpenGL":
        return None
    desc = str(info.get("description", ""))
    found = re.search(r"(\d+)\.(\d+)", desc)
    if not found:
        return None
    version = (int(found.group(1)), int(found.group(2)))
    need = (3, 1) if "OpenGL ES" in desc else (4, 3)
    if version >= need:
        return None
    return (
        f"this OpenGL context is version {version[0]}.{version[1]} ({desc}); compute shaders "
        f"need {need[0]}.{need[1]}: use this GPU's Vulkan (or Metal/D3D12) adapter instead"
    )


def open_device(info: DeviceInfo, features: Iterable[str] | None = None) -> WgpuDevice:
    """The live device of a row. ``features`` restricts the optional features requested
    (default: all of ``OPTIONAL_FEATURES`` the adapter has)."""
    return WgpuDevice(info, adapters()[info.extra["index"]], features)


# ---- buffers ------------------------------------------------------------------------------
@dataclass(eq=False)
class WgpuBuffer:
    """A GPU buffer and the number of bytes that belong to the array (the rest is padding
    up to a multiple of 16 bytes)."""

    buffer: Any  # wgpu.GPUBuffer
    nbytes: int

    @property
    def size(self) -> int:
        return int(self.buffer.size)

    def __repr__(self) -> str:
        return f"<WgpuBuffer {self.nbytes} bytes>"


def _pad(n: int, to: int = 16) -> int:
    return max(to, -(-n // to) * to)


def _human(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


# ---- timers -------------------------------------------------------------------------------
class _Timer:
    """Timestamp queries around the compute passes encoded while it runs.

    The span runs from the beginning of the first pass to the end of the last. A pass that
    does not depend on work queued before it (two matmuls in a row) may begin while that
    work still runs, so per-op times of independent back-to-back ops can include some of
    their predecessors' time; a timer around a whole batch measures its throughput."""

    def __init__(self, device: WgpuDevice):
        self.device = device
        self.query_set = device._dev.create_query_set(type="timestamp", count=_TIMER_QUERIES)
        self.used = 0

    def writes(self) -> dict[str, Any]:
        """Timestamp writes for the next pass: slots (2i, 2i+1); when the slots run out
        the last pass's end slot is overwritten, so the span still ends at the last pass."""
        if self.used + 2 <= _TIMER_QUERIES:
            i = self.used
            self.used += 2
            return {
                "query_set": self.query_set,
                "beginning_of_pass_write_index": i,
                "end_of_pass_write_index": i + 1,
            }
        return {"query_set": self.query_set, "end_of_pass_write_index": _TIMER_QUERIES - 1}

    def stop(self) -> Resolver:
        """Queue the copy of the timestamps (no waiting); the resolver maps them later."""
        import wgpu

        n = self.used
        if n == 0:
            return lambda: None
        dev = self.device._dev
        resolve = dev.create_buffer(
            size=8 * n, usage=wgpu.BufferUsage.QUERY_RESOLVE | wgpu.BufferUsage.COPY_SRC
        )
        readback = dev.create_buffer(
            size=8 * n, usage=wgpu.BufferUsage.MAP_READ | wgpu.BufferUsage.COPY_DST
        )
        with self.device._errors("reading timestamps"):
            enc = dev.create_command_encoder()
            enc.resolve_query_set(self.query_set, 0, n, resolve, 0)
            enc.copy_buffer_to_buffer(resolve, 0, readback, 0, 8 * n)
            dev.queue.submit([enc.finish()])
        cache: list[float | None] = []

        def resolver() -> float | None:
            if not cache:
                with self.device._errors("reading timestamps"):
                    readback.map_sync("READ")
                    ts = np.frombuffer(readback.read_mapped(), np.uint64).copy()
                    readback.unmap()
                # wgpu-native reports timestamps in nanoseconds (already scaled by the
                # queue's timestamp period), so the span needs no further conversion.
                begins, ends = ts[0::2], ts[1::2]
                begins = begins[begins > 0]
                span = int(ends.max()) - int(begins.min()) if begins.size else 0
                cache.append(span * 1e-9 if span > 0 else None)
            return cache[0]

        return resolver


# ---- the device ---------------------------------------------------------------------------
class WgpuDevice(Device):
    """A WebGPU device: buffers, cached compute pipelines, our reduction/matmul shaders."""

    backend = "wgpu"
    device_clock = True

    def __init__(self, info: DeviceInfo, adapter: Any, features: Iterable[str] | None = None):
        super().__init__(info)
        import wgpu

        self._wgpu = wgpu
        wanted = set(OPTIONAL_FEATURES if features is None else features)
        feats = [f for f in OPTIONAL_FEATURES if f in adapter.features and f in wanted]
        limits = {k: int(adapter.limits[k]) for k in RAISED_LIMITS if k in adapter.limits}
        with self._errors("requesting the device"):
            self._dev = adapter.request_device_sync(
                label=f"vgpu_nb {info.name}", required_features=feats, required_limits=limits
            )
        self.features: frozenset[str] = frozenset(feats)
        self.limits: dict[str, int] = {k: int(v) for k, v in self._dev.limits.items()}
        self.cpu_emulated = info.kind != "gpu"
        self._pipelines: dict[str, tuple[Any, Any]] = {}
        self._scratch: dict[str, WgpuBuffer] = {}
        self._uniforms: OrderedDict[bytes, Any] = OrderedDict()
        self._timer: _Timer | None = None
        self._fence: Any = None
        self._usage = (
            wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC | wgpu.BufferUsage.COPY_DST
        )
        self._warm_up()

    def _warm_up(self) -> None:
        """Build one trivial pipeline now: the first shader of a process costs ~0.2-0.3 s
        of one-time Naga/driver start-up (llvmpipe; later ones take < 1 ms), which belongs
        to opening the device, not to the compile time of whichever kernel comes first."""
        with self._errors("starting the shader compiler"):
            self._pipeline(_WARM_UP)

    def __repr__(self) -> str:
        feats = ", ".join(sorted(self.features)) or "no optional features"
        return f"<vg.Device {self.name}: {self.info.adapter} [{feats}]>"

    # ---- errors -------------------------------------------------------------------------
    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Turn wgpu/driver failures into BackendError (our own errors pass through)."""
        try:
            yield
        except VgpuError:
            raise
        except Exception as exc:
            raise BackendError(
                f"{what} failed on {self.name} ({self.info.adapter}): {exc}",
                fix="this is a driver or vgpu_nb bug; the original error is attached",
            ) from exc

    # ---- capability ---------------------------------------------------------------------
    def unsupported(
        self, op: str, inputs: Sequence[DType], out: DType, acc: DType | None = None
    ) -> str | None:
        if op == "matmul":
            bad = sorted({d.name for d in (*inputs, out) if d.name != "f32"})
            if bad:
                return f"the WGSL matmul is f32-only (got {', '.join(bad)})"
            return None
        used = list(inputs)
        if op not in ("argmin", "argmax"):
            used.append(out)  # (the int64 index of arg* is written as two u32 words)
        if acc is not None and not _bool_dot(op, used):
            used.append(acc)  # (bool · bool is any(x & y): its int64 count is never formed)
        names = {d.name for d in used}
        wide = sorted(names & {"i64", "u64"})
        missing = []
        if "f64" in names and "shader-f64" not in self.features:
            missing.append("float64 needs the WebGPU feature 'shader-f64'")
        if wide and "shader-int64" not in self.features:
            missing.append(f"{'/'.join(wide)} needs 'shader-int64'")
        if (
            "f64" in names
            and op in ("min", "max", "argmin", "argmax")
            and "shader-int64" not in self.features
            and not missing
        ):
            missing.append("NaN detection on float64 needs 'shader-int64' (64-bit bitcast)")
        if missing:
            return "; ".join(missing) + f", which {self.info.adapter} does not offer here"
        return None

    # ---- memory -------------------------------------------------------------------------
    def _check_size(self, nbytes: int, what: str = "array") -> None:
        size = _pad(nbytes)
        limit = self.limits.get("max-buffer-size", 0)
        if size > limit:
            raise BufferTooLarge(
                f"{what} of {nbytes} bytes ({_human(nbytes)}) is larger than the WebGPU "
                f"limit max-buffer-size = {limit} bytes ({_human(limit)}) of {self.name} "
                f"({self.info.adapter})",
                fix="split the array into smaller pieces, or keep it on a device without "
                "this limit ('numba', 'cuda')",
            )

    def _alloc(self, nbytes: int, what: str = "array") -> WgpuBuffer:
        """A zero-initialised buffer; the size is checked before anything is allocated."""
        self._check_size(nbytes, what)
        size = _pad(nbytes)
        with self._errors(f"allocating {_human(size)}"):
            buf = self._dev.create_buffer(size=size, usage=self._usage)
        return WgpuBuffer(buf, nbytes)

    def from_numpy(self, a: np.ndarray) -> WgpuBuffer:
        a = np.ascontiguousarray(a)
        buf = self._alloc(a.nbytes)
        if a.nbytes:
            raw = a.reshape(-1).view(np.uint8)
            if a.nbytes % 4:  # queue writes are whole u32 words
                raw = np.concatenate([raw, np.zeros(-a.nbytes % 4, np.uint8)])
            with self._errors("uploading"):
                self._dev.queue.write_buffer(buf.buffer, 0, raw)
        return buf

    def to_numpy(self, buf: WgpuBuffer, shape: tuple[int, ...], dtype: DType) -> np.ndarray:
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes == 0:
            return np.empty(shape, dtype.np)
        with self._errors("downloading"):
            data = self._dev.queue.read_buffer(buf.buffer, 0, _pad(nbytes, 4))
        return np.frombuffer(data, np.uint8, count=nbytes).view(dtype.np).reshape(shape)

    def empty(self, shape: tuple[int, ...], dtype: DType) -> WgpuBuffer:
        return self._alloc(math.prod(shape) * dtype.itemsize)

    def full(self, shape: tuple[int, ...], value: Any, dtype: DType) -> WgpuBuffer:
        nbytes = math.prod(shape) * dtype.itemsize
        if not np.full(1, value, dtype.np).view(np.uint8).any():  # zero bytes: fresh buffer
            return self._alloc(nbytes)
        self._check_size(nbytes)  # before building the host copy
        return self.from_numpy(np.full(shape, value, dtype.np))

    def copy(self, buf: WgpuBuffer, shape: tuple[int, ...], dtype: DType) -> WgpuBuffer:
        new = self._alloc(buf.nbytes)
        with self._errors("copying"):
            enc = self._dev.create_command_encoder()
            enc.copy_buffer_to_buffer(buf.buffer, 0, new.buffer, 0, min(buf.size, new.size))
            self._dev.queue.submit([enc.finish()])
        return new

    # ---- memory tiers ---------------------------------------------------------------------
    def held_bytes(self, buf: WgpuBuffer) -> int:
        return buf.size

    def chunk_view(self, buf: WgpuBuffer, shape: tuple[int, ...], dtype: DType) -> WgpuBuffer:
        return WgpuBuffer(buf.buffer, math.prod(shape) * dtype.itemsize)

    def upload_into(self, dst: WgpuBuffer, host: np.ndarray) -> None:
        if not host.nbytes:
            return
        raw = np.ascontiguousarray(host).reshape(-1).view(np.uint8)
        if raw.size % 4:
            raw = np.concatenate([raw, np.zeros(-raw.size % 4, np.uint8)])
        with self._errors("uploading"):
            self._dev.queue.write_buffer(dst.buffer, 0, raw)

    def sync(self) -> None:
        """Wait for all submitted work. Done by mapping a tiny buffer written by a last
        submission (the queue runs in order), because ``on_submitted_work_done`` is broken
        in wgpu-py 0.32 with its wgpu-native (a callback signature mismatch)."""
        wgpu = self._wgpu
        with self._errors("waiting for the queue"):
            if self._fence is None:
                self._fence = self._dev.create_buffer(
                    size=16, usage=wgpu.BufferUsage.MAP_READ | wgpu.BufferUsage.COPY_DST
                )
            enc = self._dev.create_command_encoder()
            enc.clear_buffer(self._fence, 0, 16)
            self._dev.queue.submit([enc.finish()])
            self._fence.map_sync("READ")
            self._fence.unmap()

    def _scratch_buffer(self, key: str, nbytes: int) -> WgpuBuffer:
        """A reusable temporary (partials). Reuse across ops is safe: WebGPU executes
        submissions and the dispatches of a pass in order."""
        buf = self._scratch.get(key)
        if buf is None or buf.size < nbytes:
            buf = self._alloc(max(nbytes, 4096), f"scratch buffer {key}")
            self._scratch[key] = buf
        return buf

    # ---- pipelines and dispatch ---------------------------------------------------------
    def _pipeline(
        self,
        shader: Shader,
        kernel: str | None = None,
        entry: str = "main",
        constants: dict[str, float] | None = None,
        native: bool = False,
    ) -> tuple[Any, Any]:
        """Compiled pipeline and bind group layout, cached by source (and entry point and
        override constants, for native kernels). ``kernel``: the name of the user
        kernel/reduction the shader was generated from (or, with ``native``, whose WGSL
        the user wrote); its compile errors become :class:`KernelCompileError` (ours stay
        ``BackendError``: a vgpu_nb bug)."""
        key = shader.code
        if entry != "main" or constants:
            key = f"{shader.code}\0{entry}\0{sorted((constants or {}).items())}"
        hit = self._pipelines.get(key)
        if hit is not None:
            return hit
        wgpu = self._wgpu
        types = {"read": "read-only-storage", "rw": "storage", "uniform": "uniform"}
        try:
            with self._errors("compiling a WGSL shader"):
                layout = self._dev.create_bind_group_layout(
                    entries=[
                        {
                            "binding": i,
                            "visibility": wgpu.ShaderStage.COMPUTE,
                            "buffer": {"type": types[kind]},
                        }
                        for i, (_, kind) in enumerate(shader.bindings)
                    ]
                )
                module = self._dev.create_shader_module(code=shader.code)
                stage: dict[str, Any] = {"module": module, "entry_point": entry}
                if constants:
                    stage["constants"] = constants
                pipe = self._dev.create_compute_pipeline(
                    layout=self._dev.create_pipeline_layout(bind_group_layouts=[layout]),
                    compute=stage,
                )
        except BackendError as exc:
            if kernel is None or exc.__cause__ is None:
                raise
            raise self._compile_error(kernel, shader, exc.__cause__, native) from exc.__cause__
        self._pipelines[key] = (pipe, layout)
        return pipe, layout

    def _compile_error(
        self, kernel: str, shader: Shader, exc: BaseException, native: bool = False
    ) -> VgpuError:
        """Naga's message with the WGSL line it points at (generated, or the user's own
        for ``native`` kernels)."""
        msg = str(exc).strip()
        lines = [ln.strip() for ln in msg.splitlines()]
        summary = next(
            (ln for ln in lines if "parsing error" in ln or "validation error" in ln),
            lines[0] if lines else "?",
        )
        notes = [ln[2:] for ln in lines if ln.startswith("= ") and "note" not in ln]
        detail = notes[-1] if notes else ""  # (the most specific one)
        if detail:
            summary += f" ({detail})"
        where = ""
        found = re.search(r"┌─ [^\n]*?:(\d+):(\d+)", msg)
        if found:
            line = int(found.group(1))
            code = shader.code.splitlines()
            if 0 < line <= len(code):
                gen = "WGSL" if native else "generated WGSL"
                where = f"\n  {gen} line {line}: {code[line - 1].strip()}"
        if native:
            return KernelCompileError(
                f"WebGPU (Naga) rejected the WGSL of {kernel} on {self.name} "
                f"({self.info.adapter}): {summary}{where}\n\n{msg}",
                fix="fix the WGSL source (the line numbers above are the source's own)",
            )
        return KernelCompileError(
            f"WebGPU (Naga) rejected the WGSL generated for {kernel} on {self.name} "
            f"({self.info.adapter}): {summary}{where}\n\n{msg}",
            fix="this is a vgpu_nb bug or a WebGPU limit; kernel.source('wgpu') shows the "
            "generated code — please report it, and use another backend meanwhile",
        )

    def _uniform_block(self, blobs: list[bytes]) -> tuple[Any, list[int]]:
        """One uniform buffer holding every parameter block of an op (offsets aligned),
        reused when the same parameters come again."""
        stride = max(256, self.limits.get("min-uniform-buffer-offset-alignment", 256))
        offsets, data = [], bytearray()
        for blob in blobs:
            data += b"\0" * (-len(data) % stride)
            offsets.append(len(data))
            data += blob
        key = bytes(data)
        buf = self._uniforms.get(key)
        if buf is None:
            wgpu = self._wgpu
            buf = self._dev.create_buffer(
                size=_pad(len(key)), usage=wgpu.BufferUsage.UNIFORM | wgpu.BufferUsage.COPY_DST
            )
            if key:  # (native kernels may have no uniform: nothing to write)
                self._dev.queue.write_buffer(buf, 0, key + b"\0" * (-len(key) % 4))
            self._uniforms[key] = buf
            if len(self._uniforms) > _UNIFORM_CACHE:
                self._uniforms.popitem(last=False)
        else:
            self._uniforms.move_to_end(key)
        return buf, offsets

    def _run(self, what: str, dispatches: list[_Dispatch]) -> None:
        """Encode ``dispatches`` in one compute pass and submit (no waiting)."""
        with self._errors(what):
            blobs = [
                d.shader.pack(d.params)
                if isinstance(d.params, list)
                else d.shader.pack_params(**d.params)
                for d in dispatches
            ]
            ubuf, offsets = self._uniform_block(blobs)
            enc = self._dev.create_command_encoder()
            ts = self._timer.writes() if self._timer is not None else None
            cp = enc.begin_compute_pass(timestamp_writes=ts)
            for d, off, blob in zip(dispatches, offsets, blobs, strict=True):
                pipe, layout = self._pipeline(d.shader, entry=d.entry, constants=d.constants)
                entries = []
                for i, (name, kind) in enumerate(d.shader.bindings):
                    if kind == "uniform":
                        res = {"buffer": ubuf, "offset": off, "size": len(blob)}
                    else:
                        b, o, s = d.resources[name]
                        res = {"buffer": b.buffer, "offset": o, "size": s}
                    entries.append({"binding": i, "resource": res})
                group = self._dev.create_bind_group(layout=layout, entries=entries)
                cp.set_pipeline(pipe)
                cp.set_bind_group(0, group)
                cp.dispatch_workgroups(*d.groups)
            cp.end()
            self._dev.queue.submit([enc.finish()])

    def max_array_bytes(self) -> int | None:
        return min(self.limits.get("max-buffer-size", 0), self._binding_limit())

    def _binding_limit(self) -> int:
        return self.limits.get("max-storage-buffer-binding-size", 1 << 27)

    def _check_binding(self, op: str, nbytes: int, what: str) -> None:
        limit = self._binding_limit()
        if _pad(nbytes) > limit:
            raise BufferTooLarge(
                f"{op}: {what} of {nbytes} bytes ({_human(nbytes)}) is larger than the WebGPU "
                f"limit max-storage-buffer-binding-size = {limit} bytes ({_human(limit)}) of "
                f"{self.name} ({self.info.adapter})",
                fix="full reductions (axis=None) work at any size; split the array, or use "
                "a device without this limit ('numba', 'cuda')",
            )

    # ---- reductions ---------------------------------------------------------------------
    def _spec(self, req: ReduceRequest) -> wred.ReduceSpec:
        arg = req.kind in ("argmin", "argmax")
        acc = req.dtype.name if arg else req.acc.name
        if _bool_dot(req.kind, [req.dtype, req.y_dtype, req.out]):
            acc = "bool"  # any(x & y): exact, and needs no 64-bit counter
        return wred.ReduceSpec(
            kind=req.kind,
            x=req.dtype.name,
            acc=acc,
            out="i64" if arg else req.out.name,
            y=req.y_dtype.name if req.kind == "dot" and req.y_dtype is not None else None,
            divide=req.divisor is not None and not arg,
            sqrt=req.sqrt and not arg,
            subgroups="subgroup" in self.features,
            int64=req.acc.name == "f64" and "shader-int64" in self.features,
        )

    def reduce(self, req: ReduceRequest) -> WgpuBuffer:
        if req.kind not in wred.COMBINE:
            raise ValueError(f"unknown reduction kind {req.kind!r}")
        arg = req.kind in ("argmin", "argmax")  # (ops checked support before calling us)
        spec = self._spec(req)
        out_items = math.prod(req.out_shape)
        res = self._alloc(out_items * (8 if arg else req.out.itemsize), "reduction result")
        params: dict[str, Any] = {}
        if spec.divide:
            params["div"] = float(req.divisor)  # type: ignore[arg-type]
        if req.axis is None:
            self._reduce_full(spec, req, res, params)
        else:
            self._reduce_axis(spec, req, res, params)
        return res

    def _reduce_full(
        self, spec: wred.ReduceSpec, req: ReduceRequest, res: WgpuBuffer, params: dict[str, Any]
    ) -> None:
        n = req.length
        if spec.arg and n >= 1 << 32:
            raise BufferTooLarge(
                f"{req.kind} over {n} elements: indices are computed as u32 on WebGPU "
                "(at most 2**32 - 1 elements)",
                fix="reduce pieces and combine, or use 'numba' / 'cuda'",
            )
        operands = [("xv", req.x, ITEMSIZE[spec.x])]
        if spec.y is not None:
            operands.append(("yv", req.y, ITEMSIZE[spec.y]))
        # binding windows: whole buffers when they fit, else ranges of ``per_window``
        # elements at offsets that are multiples of 4096 bytes (≥ any offset alignment)
        limit = self._binding_limit()
        widest = max(isz for _, _, isz in operands)
        if all(b.size <= limit for _, b, _ in operands):
            per_window = n
        else:
            per_window = (limit // widest) // 4096 * 4096
        windows = [(s, min(per_window, n - s)) for s in range(0, n, per_window)]

        per_vec = 16 // ITEMSIZE[spec.x] if spec.vectorised else 1
        vectors = -(-min(per_window, n) // per_vec)
        cap = wred.FULL_MAX_WORKGROUPS_CPU if self.cpu_emulated else wred.FULL_MAX_WORKGROUPS_GPU
        threads_work = spec.workgroup * wred.FULL_UNROLL * wred.FULL_MIN_ITERS
        groups = max(1, min(cap, -(-vectors // threads_work)))
        partials = groups * len(windows)

        pv = self._scratch_buffer("pv", partials * spec.partial_bytes)
        pi = self._scratch_buffer("pi", partials * 4) if spec.arg else None
        p1, p2 = wred.full_pass1(spec), wred.full_pass2(spec)
        dispatches = []
        center = self._center(req)
        for w, (start, count) in enumerate(windows):
            resources: dict[str, tuple[WgpuBuffer, int, int]] = {}
            for name, buf, isz in operands:
                off = start * isz
                resources[name] = (buf, off, min(_pad(count * isz), buf.size - off))
            if center is not None:
                resources["cen"] = center
            resources["pv"] = (pv, 0, pv.size)
            if pi is not None:
                resources["pi"] = (pi, 0, pi.size)
            prm = {"n": count, "base": start if spec.arg else 0, "pbase": w * groups}
            dispatches.append(_Dispatch(p1, resources, prm, (groups, 1, 1)))
        resources = {"pv": (pv, 0, pv.size), "res": (res, 0, res.size)}
        if pi is not None:
            resources["pi"] = (pi, 0, pi.size)
        dispatches.append(_Dispatch(p2, resources, {**params, "n": partials}, (1, 1, 1)))
        self._run(f"{req.kind} reduction", dispatches)

    def _center(self, req: ReduceRequest) -> tuple[WgpuBuffer, int, int] | None:
        if req.kind != "sqdev":
            return None
        c = req.center
        if not isinstance(c, WgpuBuffer):  # a host scalar/array of dtype acc
            c = self.from_numpy(np.asarray(c, dtype=req.acc.np).reshape(-1))
        return (c, 0, c.size)

    def _reduce_axis(
        self, spec: wred.ReduceSpec, req: ReduceRequest, res: WgpuBuffer, params: dict[str, Any]
    ) -> None:
        rows, cols = req.shape
        outputs = math.prod(req.out_shape)
        if outputs == 1:  # (1, n) / (n, 1): a full reduction, windows and all
            self._reduce_full(spec, req, res, params)
            return
        what = f"{req.kind}(axis={req.axis})"
        self._check_binding(what, req.x.nbytes, "the input")
        if req.y is not None:
            self._check_binding(what, req.y.nbytes, "the 2nd input")
        self._check_binding(what, res.nbytes, "the result")
        target = wred.AXIS_TARGET_THREADS_CPU if self.cpu_emulated else wred.AXIS_TARGET_THREADS_GPU
        mode, slices = wred.axis_plan(req.axis, rows, cols, target)  # type: ignore[arg-type]
        length = req.shape[req.axis]  # type: ignore[index]
        per_slice = -(-length // slices)
        resources = {"xv": (req.x, 0, req.x.size)}
        if req.y is not None:
            resources["yv"] = (req.y, 0, req.y.size)
        center = self._center(req)
        if center is not None:
            resources["cen"] = center
        per_dim = self.limits.get("max-compute-workgroups-per-dimension", 65535)
        groups = wred.axis_groups(mode, outputs, slices, spec.workgroup)
        prm = {"rows": rows, "cols": cols, "slice": per_slice, "nsl": slices}
        dispatches = []
        if slices == 1:
            resources["res"] = (res, 0, res.size)
            shader = wred.axis_shader(spec, mode, False)
            dispatches.append(
                _Dispatch(shader, resources, {**params, **prm}, (*dispatch_2d(groups, per_dim), 1))
            )
        else:
            pv = self._scratch_buffer("pv", outputs * slices * spec.partial_bytes)
            parts = {"pv": (pv, 0, pv.size)}
            if spec.arg:
                pi = self._scratch_buffer("pi", outputs * slices * 4)
                parts["pi"] = (pi, 0, pi.size)
            shader = wred.axis_shader(spec, mode, True)
            dispatches.append(
                _Dispatch(shader, {**resources, **parts}, prm, (*dispatch_2d(groups, per_dim), 1))
            )
            gather = wred.axis_gather(spec)
            g2 = dispatch_2d(-(-outputs // spec.workgroup), per_dim)
            prm2 = {**params, "nout": outputs, "nsl": slices}
            dispatches.append(
                _Dispatch(gather, {**parts, "res": (res, 0, res.size)}, prm2, (*g2, 1))
            )
        self._run(f"{what} reduction", dispatches)

    # ---- matmul -------------------------------------------------------------------------
    def matmul(self, a: Any, b: Any, m: int, k: int, n: int, dtype: DType) -> WgpuBuffer:
        for what, nbytes in (("A", m * k * 4), ("B", k * n * 4), ("the result", m * n * 4)):
            self._check_binding("matmul", nbytes, what)
        res = self._alloc(m * n * 4, "matmul result")
        shared = self.limits.get("max-compute-workgroup-storage-size", 16384)
        spec = wmm.spec_for(m, k, n, shared)
        shader = wmm.matmul_shader(spec)
        per_dim = self.limits.get("max-compute-workgroups-per-dimension", 65535)
        groups = wmm.groups(spec, m, n, per_dim)
        resources = {"A": (a, 0, a.size), "B": (b, 0, b.size), "C": (res, 0, res.size)}
        self._run("matmul", [_Dispatch(shader, resources, {"M": m, "N": n, "K": k}, groups)])
        return res

    # ---- the kernel language -------------------------------------------------------------
    # Generated WGSL (vgpu_nb.kernel.codegen_wgsl) is stored in the kernel cache keyed by the
    # IR, the device features and the workgroup size, so a fresh process skips code
    # generation; the pipeline itself is always built here (wgpu has no pipeline cache).
    @property
    def kernel_workgroup(self) -> int:
        return KERNEL_WORKGROUP_CPU if self.cpu_emulated else KERNEL_WORKGROUP_GPU

    def _why_not(self, reason: str | None, arrays: int) -> str | None:
        limit = self.limits.get("max-storage-buffers-per-shader-stage", 8)
        if reason is None and arrays > limit:
            reason = (
                f"{arrays} storage buffers, but at most {limit} can be bound per shader "
                "(max-storage-buffers-per-shader-stage)"
            )
        return None if reason is None else f"{reason} (adapter: {self.info.adapter})"

    def kernel_unsupported(self, fn: ir.Function) -> str | None:
        why = self._why_not(cg.kernel_unsupported(fn, self.features), len(fn.arrays))
        return why or self._f64_fmod([fn])

    def _f64_fmod(self, fns: list[ir.Function]) -> str | None:
        """float64 ``//``, ``%`` and ``fmod`` are refused on hardware adapters: NVIDIA's
        Vulkan driver lost the device compiling their exact loop (H200, 2026-11-23), and a
        lost device takes every later op of the process with it."""
        if self.cpu_emulated or not cg.uses_f64_fmod(fns):
            return None
        return (
            "float64 floor division, modulo and fmod are not supported on hardware WebGPU "
            f"adapters ({self.info.adapter}): compute them in float32, or on 'cuda' / 'numba'"
        )

    def _cached(self, kind: str, obj: Any, build: Any) -> tuple[Any, bool]:
        """Generated shaders of ``obj`` (an IR function or reduction) through the kernel
        cache: ``(shaders, whether the cache had them)``."""
        key = kcache.make_key(
            "wgpu", kind, cg.fingerprint(), ",".join(sorted(self.features)),
            str(self.kernel_workgroup), repr(obj),
        )  # fmt: skip
        payload = kcache.CACHE.get("wgpu", key)
        if payload is not None:
            try:
                return _shaders_from_json(json.loads(payload)), True
            except (ValueError, KeyError, TypeError):
                pass  # written by another version: regenerate
        shaders = build()
        kcache.CACHE.put("wgpu", key, json.dumps(_shaders_to_json(shaders)).encode())
        return shaders, False

    def _kernel_shader(self, fn: ir.Function) -> tuple[Shader, bool]:
        return self._cached(  # type: ignore[return-value]
            "kernel", fn, lambda: cg.kernel_source(fn, self.features, self.kernel_workgroup)
        )

    def kernel_source(self, fn: ir.Function) -> str:
        return self._kernel_shader(fn)[0].code

    def compile_kernel(self, fn: ir.Function) -> CompiledKernel:
        t0 = time.perf_counter()
        shader, hit = self._kernel_shader(fn)
        t1 = time.perf_counter()
        had_pipeline = shader.code in self._pipelines
        self._pipeline(shader, kernel=f"kernel {fn.py_name or fn.name}()")
        t2 = time.perf_counter()
        return CompiledKernel(
            source=shader.code,
            handle=_KernelHandle(fn, shader),
            compile_s=t2 - t0,
            cache_hit=hit,
            extra={
                "workgroup": shader.workgroup,
                "codegen_s": t1 - t0,  # WGSL from the kernel cache, or generated
                "pipeline_s": t2 - t1,  # Naga + driver (always: wgpu caches no pipelines)
                "pipeline_cached": had_pipeline,  # (built before in this process)
            },
        )

    def launch_kernel(
        self, ck: CompiledKernel, domain: tuple[int, ...], args: Sequence[Any]
    ) -> None:
        h: _KernelHandle = ck.handle
        fn, shader = h.fn, h.shader
        name = f"kernel {fn.py_name or fn.name}()"
        if fn.ndim is not None and len(domain) != fn.ndim:
            raise ValueError(f"{name} uses {fn.ndim}-D thread ids, launched over {domain}")
        threads = math.prod(domain)
        if threads >= 2**31:
            raise UnsupportedOnBackend(
                f"{name} launched over {threads} threads: WebGPU kernels index threads with "
                "32-bit integers (at most 2**31 - 1 threads)",
                fix="launch several smaller domains, or use 'cuda' / 'numba'",
            )
        if threads == 0:
            return
        resources: dict[str, tuple[WgpuBuffer, int, int]] = {}
        bound: dict[int, tuple[str, bool]] = {}
        written = {b for b, kind in shader.bindings if kind == "rw"}
        for p, a in zip(fn.params, args, strict=True):
            if not p.is_array:
                continue
            buf: WgpuBuffer = a[0]
            self._bind_once(name, bound, buf, p.name, p.name in written)
            resources[p.name] = (buf, 0, buf.size)
        values = cg.launch_values(fn, domain, args)
        per_dim = self.limits.get("max-compute-workgroups-per-dimension", 65535)
        gx, gy = dispatch_2d(-(-threads // shader.workgroup), per_dim)
        self._run(name, [_Dispatch(shader, resources, values, (gx, gy, 1))])

    def _bind_once(
        self, what: str, bound: dict[int, tuple[str, bool]], buf: WgpuBuffer, name: str, rw: bool
    ) -> None:
        """Check array ``name`` for binding: its size, and that a buffer bound twice in one
        dispatch is never written (WebGPU refuses that usage conflict)."""
        self._check_binding(what, buf.nbytes, f"array {name!r}")
        other = bound.get(id(buf.buffer))
        if other is not None and (other[1] or rw):
            raise UnsupportedOnBackend(
                f"{what}: the same array is passed as {other[0]!r} and {name!r}, and "
                "the kernel writes it; WebGPU cannot bind one buffer twice when it is "
                "written",
                fix=f"pass a copy as one of them ({name}.copy())",
            )
        bound[id(buf.buffer)] = (name, rw)

    # ---- native kernels: the user's own WGSL (vgpu_nb.kernel.native) ----------------------
    def compile_native(
        self, shader: Shader, entry: str, what: str, constants: dict[str, float] | None = None
    ) -> CompiledKernel:
        """Build the pipeline of user-written WGSL: ``shader.bindings`` are its group-0
        bindings in binding order, ``shader.params`` the fields of its uniform (if any);
        Naga's errors become :class:`KernelCompileError` with the user's line."""
        t0 = time.perf_counter()
        self._pipeline(shader, what, entry, constants, native=True)
        return CompiledKernel(
            source=shader.code,
            handle=_NativeHandle(shader, entry, constants),
            compile_s=time.perf_counter() - t0,
            cache_hit=False,  # (wgpu caches no pipelines across processes)
            extra={"entry": entry, "workgroup": shader.workgroup},
        )

    def launch_native(
        self,
        ck: CompiledKernel,
        arrays: dict[str, WgpuBuffer],
        values: list[int | float],
        groups: tuple[int, int, int],
        what: str,
    ) -> None:
        """One dispatch of ``groups`` workgroups of a native kernel (not waiting). Each
        storage binding gets its array's own bytes (so ``arrayLength`` is the array's
        length; an empty array binds 4 bytes), the uniform the scalar ``values`` in
        field order."""
        h: _NativeHandle = ck.handle
        per_dim = self.limits.get("max-compute-workgroups-per-dimension", 65535)
        if max(groups) > per_dim:
            raise UnsupportedOnBackend(
                f"{what} needs {groups[0]} x {groups[1]} workgroups, but {self.name} allows "
                f"at most {per_dim} per dimension (max-compute-workgroups-per-dimension)",
                fix="launch a 2-D domain k[(ny, nx)], use a larger @workgroup_size, or let "
                "each invocation loop over several elements",
            )
        resources: dict[str, tuple[WgpuBuffer, int, int]] = {}
        bound: dict[int, tuple[str, bool]] = {}
        for name, kind in h.shader.bindings:
            if kind == "uniform":
                continue
            buf = arrays[name]
            self._bind_once(what, bound, buf, name, kind == "rw")
            resources[name] = (buf, 0, min(buf.size, max(4, -(-buf.nbytes // 4) * 4)))
        self._run(what, [_Dispatch(h.shader, resources, values, groups, h.entry, h.constants)])

    # ---- @vg.reduction ----------------------------------------------------------------------
    def reduction_unsupported(self, red: ir.Reduction) -> str | None:
        why = self._why_not(cg.reduction_unsupported(red, self.features), len(red.inputs) + 1)
        return why or self._f64_fmod(list(red.funcs))

    def _reduction_shaders(self, red: ir.Reduction) -> tuple[cg.ReductionShaders, bool]:
        return self._cached(  # type: ignore[return-value]
            "reduction", red, lambda: cg.reduction_source(red, self.features)
        )

    def reduction_source(self, red: ir.Reduction) -> str:
        return self._reduction_shaders(red)[0].source

    def compile_reduction(self, red: ir.Reduction) -> CompiledKernel:
        """Generates every shader of ``red`` and builds the full-reduction pipelines; the
        axis pipelines are built on their first use."""
        t0 = time.perf_counter()
        shaders, hit = self._reduction_shaders(red)
        for shader in (shaders.full1, shaders.full2):
            self._pipeline(shader, kernel=f"reduction {red.name}")
        return CompiledKernel(
            source=shaders.source,
            handle=_ReductionHandle(red, shaders),
            compile_s=time.perf_counter() - t0,
            cache_hit=hit,
        )

    def run_reduction(
        self,
        cr: CompiledKernel,
        inputs: Sequence[Any],
        shape: tuple[int, ...],
        axis: int | None,
    ) -> WgpuBuffer:
        h: _ReductionHandle = cr.handle
        red = h.red
        out_shape = () if axis is None else (shape[1 - axis],)
        res = self._alloc(math.prod(out_shape) * red.out.itemsize, "reduction result")
        if axis is None or math.prod(out_shape) == 1:  # (1, n) / (n, 1): a full reduction
            self._red_full(h, list(inputs), math.prod(shape), res)
        else:
            self._red_axis(h, list(inputs), shape, axis, res)
        return res

    def _red_full(
        self, h: _ReductionHandle, inputs: list[WgpuBuffer], n: int, res: WgpuBuffer
    ) -> None:
        """Pass 1 per binding window (a fixed number of workgroups for a given n, each
        writing one partial), then one workgroup combines the partials in order."""
        red, sh = h.red, h.shaders
        sizes = [d.itemsize for d in red.inputs]
        limit = self._binding_limit()
        if all(b.size <= limit for b in inputs):
            per_window = max(n, 1)
        else:  # ranges at offsets that are multiples of 4096 bytes (≥ any alignment)
            per_window = (limit // max(sizes)) // 4096 * 4096
        windows = [(s, min(per_window, n - s)) for s in range(0, n, per_window)] or [(0, 0)]
        vectors = -(-min(per_window, n) // sh.vector)
        cap = wred.FULL_MAX_WORKGROUPS_CPU if self.cpu_emulated else wred.FULL_MAX_WORKGROUPS_GPU
        per_group = sh.full1.workgroup * cg.RED_UNROLL * cg.RED_MIN_ITERS
        groups = max(1, min(cap, -(-vectors // per_group)))
        partials = groups * len(windows)
        pv = self._scratch_buffer("kpv", partials * _state_bytes(red))
        dispatches = []
        for w, (start, count) in enumerate(windows):
            resources = {}
            for i, (b, isz) in enumerate(zip(inputs, sizes, strict=True)):
                off = start * isz
                resources[f"x{i}"] = (b, off, min(_pad(count * isz), b.size - off))
            resources["pv"] = (pv, 0, pv.size)
            prm = {"n": count, "pbase": w * groups}
            dispatches.append(_Dispatch(sh.full1, resources, prm, (groups, 1, 1)))
        final = {"pv": (pv, 0, pv.size), "res": (res, 0, res.size)}
        prm = {"n": partials, "n_lo": n & 0xFFFFFFFF, "n_hi": n >> 32}
        dispatches.append(_Dispatch(sh.full2, final, prm, (1, 1, 1)))
        self._run(f"reduction {red.name}", dispatches)

    def _red_axis(
        self,
        h: _ReductionHandle,
        inputs: list[WgpuBuffer],
        shape: tuple[int, ...],
        axis: int,
        res: WgpuBuffer,
    ) -> None:
        """Along one axis of a 2-D array: a thread or a workgroup per output (the layout
        decides, as for the built-in reductions), the axis cut into slices combined by a
        gather pass when there are too few outputs to fill the device."""
        red, sh = h.red, h.shaders
        rows, cols = shape
        nout, length = shape[1 - axis], shape[axis]
        what = f"reduction {red.name}(axis={axis})"
        for i, b in enumerate(inputs):
            self._check_binding(what, b.nbytes, f"input {i}")
        self._check_binding(what, res.nbytes, "the result")
        target = wred.AXIS_TARGET_THREADS_CPU if self.cpu_emulated else wred.AXIS_TARGET_THREADS_GPU
        mode, slices = wred.axis_plan(axis, rows, cols, target)
        group = mode.endswith("_wg")
        wg = sh.full1.workgroup
        so, sk = (cols, 1) if axis == 1 else (1, cols)
        prm = {
            "nout": nout, "len": length, "so": so, "sk": sk, "slice": -(-length // slices),
            "nsl": slices, "n_lo": length & 0xFFFFFFFF, "n_hi": length >> 32,
        }  # fmt: skip
        per_dim = self.limits.get("max-compute-workgroups-per-dimension", 65535)
        groups = (*dispatch_2d(wred.axis_groups(mode, nout, slices, wg), per_dim), 1)
        resources = {f"x{i}": (b, 0, b.size) for i, b in enumerate(inputs)}
        kernel = f"reduction {red.name}"
        if slices == 1:
            shader = sh.axis_group if group else sh.axis_thread
            self._pipeline(shader, kernel)
            resources["res"] = (res, 0, res.size)
            self._run(what, [_Dispatch(shader, resources, prm, groups)])
            return
        shader = sh.axis_group_split if group else sh.axis_thread_split
        for s_ in (shader, sh.gather):
            self._pipeline(s_, kernel)
        pv = self._scratch_buffer("kpv", nout * slices * _state_bytes(red))
        resources["pv"] = (pv, 0, pv.size)
        g2 = (*dispatch_2d(-(-nout // wg), per_dim), 1)
        gather = {"pv": (pv, 0, pv.size), "res": (res, 0, res.size)}
        prm2 = {"nout": nout, "nsl": slices, "n_lo": prm["n_lo"], "n_hi": prm["n_hi"]}
        dispatches = [
            _Dispatch(shader, resources, prm, groups),
            _Dispatch(sh.gather, gather, prm2, g2),
        ]
        self._run(what, dispatches)

    # ---- timing -------------------------------------------------------------------------
    def start_timer(self) -> StopTimer | None:
        """Timestamps around the compute passes encoded until ``stop()``; None when the
        device has no ``timestamp-query``. Nothing here waits for the GPU."""
        if "timestamp-query" not in self.features:
            return None
        with self._errors("starting a timer"):
            timer = _Timer(self)
        self._timer = timer

        def stop() -> Resolver:
            if self._timer is timer:
                self._timer = None
            return timer.stop()

        return stop


def _bool_dot(kind: str, dtypes: list[DType | None]) -> bool:
    """A dot product of bools giving bool: NumPy counts in int64 and tests != 0, which is
    exactly any(x & y) — computed that way, it needs no 64-bit integers."""
    return kind == "dot" and all(d is not None and d.name == "bool" for d in dtypes)


_WARM_UP = Shader(
    "@group(0) @binding(0) var<storage, read_write> o: array<u32>;\n"
    "@compute @workgroup_size(1)\nfn main() {\n  o[0] = 0u;\n}\n",
    (("o", "rw"),),
    (),
    1,
)


@dataclass(frozen=True)
class _KernelHandle:
    fn: ir.Function
    shader: Shader


@dataclass(frozen=True)
class _NativeHandle:
    shader: Shader
    entry: str
    constants: dict[str, float] | None


@dataclass(frozen=True)
class _ReductionHandle:
    red: ir.Reduction
    shaders: cg.ReductionShaders


def _state_bytes(red: ir.Reduction) -> int:
    """Bytes of one partial state of ``red`` (bool states are u32)."""
    return 8 if VALUE_TYPE[red.acc.name] in ("f64", "i64", "u64") else 4


def _shaders_to_json(obj: Any) -> Any:
    if isinstance(obj, Shader):
        return {"shader": asdict(obj)}
    return {"reduction": {k: _shaders_to_json(v) if isinstance(v, Shader) else v
                          for k, v in obj.__dict__.items()}}  # fmt: skip


def _shaders_from_json(data: Any) -> Any:
    """Inverse of :func:`_shaders_to_json` (a Shader or ReductionShaders)."""
    if "shader" in data:
        d = data["shader"]
        return Shader(
            d["code"],
            tuple(tuple(b) for b in d["bindings"]),  # type: ignore[misc]
            tuple(tuple(p) for p in d["params"]),  # type: ignore[misc]
            int(d["workgroup"]),
        )
    fields = {
        k: _shaders_from_json(v) if isinstance(v, dict) else v for k, v in data["reduction"].items()
    }
    return cg.ReductionShaders(**fields)


@dataclass
class _Dispatch:
    shader: Shader
    resources: dict[str, tuple[WgpuBuffer, int, int]]  # binding name → (buffer, offset, size)
    params: dict[str, Any] | list[int | float]  # by name, or in field order
    groups: tuple[int, int, int]
    entry: str = "main"  # (native kernels: the user's entry point and override constants)
    constants: dict[str, float] | None = None


__all__ = [
    "OPTIONAL_FEATURES",
    "WgpuBuffer",
    "WgpuDevice",
    "adapters",
    "discover",
    "open_device",
]
