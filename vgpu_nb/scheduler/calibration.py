"""Calibration: what each device really does, measured by micro-benchmarks.

``vg.calibrate()`` measures, per device, in a few seconds:

* ``launch_us``: a one-thread kernel launched and waited for (what a tiny op costs when
  its result is needed); ``enqueue_us``: the same launch without waiting (what a stream of
  async launches costs per launch);
* ``read_gbps``: ``vg.sum`` of a large f32 array (bytes read / time);
* ``copy_gbps``: a kernel ``y[i] = x[i]`` (bytes read + written / time);
* ``gflops``: an FMA-heavy f32 kernel (8 independent chains per thread); on the NumPy
  device, vectorised NumPy multiply-adds instead (``auto`` sends it built-in ops only, which
  run vectorised; its kernels run thread by thread in Python, for debugging);
* ``matmul_gflops``: ``vg.matmul`` of square f32 matrices (BLAS, cuBLAS or our WGSL
  shader): the compute roof of matrix products, far above the FMA kernel's on CPUs;
* devices with their own memory (CUDA, WebGPU, llvmpipe included): ``h2d_pinned_gbps``,
  ``d2h_pinned_gbps`` (the host tier's memory: pinned for CUDA) and ``h2d_pageable_gbps``,
  ``d2h_pageable_gbps`` (plain NumPy arrays). numpy/numba have no link: their device
  memory is RAM.

Each figure is the best of a few runs (a peak, as a roofline wants). Results are cached
as JSON in the kernel cache directory (``$VGPU_NB_CACHE_DIR``), keyed by a fingerprint of
the machine (host, CPU, RAM, each device's adapter, library versions), so they are
measured once per machine; ``force=True`` measures again. The NumPy device runs kernels
thread by thread in Python (it is the debugging backend), so its kernel figures are
measured on small domains and are honestly tiny.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

FIELDS = ("launch_us", "enqueue_us", "read_gbps", "copy_gbps", "gflops", "matmul_gflops",
          "h2d_pinned_gbps", "d2h_pinned_gbps", "h2d_pageable_gbps",
          "d2h_pageable_gbps")  # fmt: skip
VERSION = 3  # bump when what is measured changes: old cache files are then ignored


@dataclass
class Calibration:
    """Measured peaks of one device (see the module docstring for each field)."""

    device: str
    launch_us: float
    enqueue_us: float
    read_gbps: float
    copy_gbps: float
    gflops: float
    matmul_gflops: float | None = None
    h2d_pinned_gbps: float | None = None
    d2h_pinned_gbps: float | None = None
    h2d_pageable_gbps: float | None = None
    d2h_pageable_gbps: float | None = None
    seconds: float = 0.0  # how long calibrating took
    sizes: dict[str, int] = field(default_factory=dict)  # elements per benchmark
    measured_at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- the micro-benchmark kernels (written in the kernel language, so every backend runs
# exactly what it will run for users) --------------------------------------------------------
def _kernels() -> dict[str, Any]:
    import vgpu_nb as vg

    @vg.kernel
    def vg_calib_noop(x: vg.f32[:]):
        i = vg.tid()
        x[i] = x[i] + 1.0

    @vg.kernel
    def vg_calib_copy(x: vg.f32[:], y: vg.f32[:]):
        i = vg.tid()
        y[i] = x[i]

    @vg.kernel(flops=2 * 8 * 64, bytes=8)
    def vg_calib_fma(x: vg.f32[:], n: vg.i32):
        i = vg.tid()
        a0 = x[i]
        a1 = a0 + 0.1
        a2 = a0 + 0.2
        a3 = a0 + 0.3
        a4 = a0 + 0.4
        a5 = a0 + 0.5
        a6 = a0 + 0.6
        a7 = a0 + 0.7
        for _k in range(n):
            a0 = a0 * 0.9999 + 0.0001
            a1 = a1 * 0.9999 + 0.0001
            a2 = a2 * 0.9999 + 0.0001
            a3 = a3 * 0.9999 + 0.0001
            a4 = a4 * 0.9999 + 0.0001
            a5 = a5 * 0.9999 + 0.0001
            a6 = a6 * 0.9999 + 0.0001
            a7 = a7 * 0.9999 + 0.0001
        x[i] = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7

    return {"noop": vg_calib_noop, "copy": vg_calib_copy, "fma": vg_calib_fma}


_FMA_ITERS = 64


def _sizes(dev: Any, scale: float) -> dict[str, int]:
    """Elements per benchmark: large enough to reach the peak, small enough for ~1 s."""
    if dev.backend == "numpy":  # kernels run thread by thread in Python
        base = {"read": 1 << 22, "copy": 1 << 12, "fma": 1 << 20, "link": 0, "mm": 384}
    elif dev.host_is_device:  # numba: RAM is device memory, no link
        base = {"read": 1 << 24, "copy": 1 << 23, "fma": 1 << 18, "link": 0, "mm": 384}
    elif dev.info.kind != "gpu":  # a CPU-emulated GPU: its "link" is a memcpy
        base = {"read": 1 << 24, "copy": 1 << 23, "fma": 1 << 18, "link": 1 << 22, "mm": 384}
    else:
        base = {"read": 1 << 26, "copy": 1 << 26, "fma": 1 << 22, "link": 1 << 26, "mm": 4096}
    return {k: max(1, int(v * scale)) if v else 0 for k, v in base.items()}


def _best(fn: Callable[[], Any], sync: Callable[[], None], repeat: int) -> float:
    """Best wall time of ``fn`` (followed by ``sync``) over ``repeat`` runs, after two
    warm-up runs (compiles, first touch, thread pools starting)."""
    for _ in range(2):
        fn()
        sync()
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def measure(dev: Any, scale: float = 1.0, repeat: int = 3, progress: Any = None) -> Calibration:
    """Run the micro-benchmarks on ``dev`` now (no cache). Under ``device="auto"`` too:
    its ops run where their arrays are, never scheduled (scheduling needs this figure)."""
    from .auto import _INSIDE

    token = _INSIDE.set(True)
    try:
        return _measure(dev, scale, repeat, progress)
    finally:
        _INSIDE.reset(token)


def _measure(dev: Any, scale: float, repeat: int, progress: Any) -> Calibration:
    import vgpu_nb as vg

    t_start = time.perf_counter()
    k = _kernels()
    sizes = _sizes(dev, scale)
    sync = dev.sync

    def step() -> None:
        if progress is not None:
            progress.update(1)

    one = vg.zeros(1, device=dev)
    noop = k["noop"]
    launch = _best(lambda: noop[1](one), sync, max(repeat, 20) if dev.backend != "numpy" else 5)
    n_enq = 200 if dev.backend != "numpy" else 20

    def many() -> None:
        for _ in range(n_enq):
            noop[1](one)

    enqueue = _best(many, sync, repeat) / n_enq
    step()

    # (bandwidths: more runs — a cold thread pool or page faults make early runs slow)
    read_gbps = _read_gbps(dev, sizes["read"], repeat + 4)
    step()
    copy_gbps = _copy_gbps(dev, k["copy"], sizes["copy"], repeat + 4)
    step()
    if dev.backend == "numpy":
        gflops = _numpy_gflops(sizes["fma"], repeat)
    else:
        gflops = _gflops(dev, k["fma"], sizes["fma"], repeat)
    matmul_gflops = _matmul_gflops(dev, sizes["mm"], repeat)
    step()

    links: dict[str, float | None] = {}
    if sizes["link"]:
        links = _links(dev, sizes["link"], repeat)
    step()
    return Calibration(
        device=dev.name, launch_us=launch * 1e6, enqueue_us=enqueue * 1e6, read_gbps=read_gbps,
        copy_gbps=copy_gbps, gflops=gflops, matmul_gflops=matmul_gflops,
        seconds=time.perf_counter() - t_start, sizes=sizes, **links,
    )  # fmt: skip


# (one function per benchmark: its arrays are freed before the next one starts)
def _read_gbps(dev: Any, n: int, repeat: int) -> float:
    import vgpu_nb as vg

    x = vg.full(n, 1.0, vg.f32, device=dev)
    return x.nbytes / _best(lambda: float(vg.sum(x)), lambda: None, repeat) / 1e9


def _copy_gbps(dev: Any, kernel: Any, n: int, repeat: int) -> float:
    import vgpu_nb as vg

    a, b = vg.ones(n, device=dev), vg.zeros(n, device=dev)
    return 2 * a.nbytes / _best(lambda: kernel[n](a, b), dev.sync, repeat) / 1e9


def _gflops(dev: Any, kernel: Any, n: int, repeat: int) -> float:
    import vgpu_nb as vg

    f = vg.ones(n, device=dev)
    return 2 * 8 * _FMA_ITERS * n / _best(lambda: kernel[n](f, _FMA_ITERS), dev.sync, repeat) / 1e9


def _numpy_gflops(n: int, repeat: int) -> float:
    """Vectorised NumPy multiply-adds (what the NumPy device's built-in ops run)."""
    x = np.ones(n, np.float32)

    def fma() -> None:
        for _ in range(8):
            np.multiply(x, np.float32(0.9999), out=x)
            np.add(x, np.float32(0.0001), out=x)

    return 2 * 8 * n / _best(fma, lambda: None, repeat) / 1e9


def _matmul_gflops(dev: Any, n: int, repeat: int) -> float:
    import vgpu_nb as vg

    a = vg.full((n, n), 0.5, vg.f32, device=dev)
    return 2 * n**3 / _best(lambda: vg.matmul(a, a), dev.sync, repeat) / 1e9


def _links(dev: Any, n: int, repeat: int) -> dict[str, float | None]:
    """Host↔device bandwidth, pinned (the host tier's memory) and pageable."""
    from ..dtypes import f32

    shape = (n,)
    pinned = dev.host_empty(shape, f32)
    pinned[...] = 1.0
    pageable = np.ones(n, np.float32)
    nbytes = pageable.nbytes
    buf = dev.from_host_tier(pinned)
    out: dict[str, float | None] = {}
    t = _best(lambda: dev.from_host_tier(pinned), dev.sync, repeat)
    out["h2d_pinned_gbps"] = nbytes / t / 1e9
    t = _best(lambda: dev.to_host_tier(buf, shape, f32), dev.sync, repeat)
    out["d2h_pinned_gbps"] = nbytes / t / 1e9
    t = _best(lambda: dev.from_numpy(pageable), dev.sync, repeat)
    out["h2d_pageable_gbps"] = nbytes / t / 1e9
    t = _best(lambda: dev.to_numpy(buf, shape, f32), dev.sync, repeat)
    out["d2h_pageable_gbps"] = nbytes / t / 1e9
    return out


# ---- the per-machine cache ------------------------------------------------------------------
def fingerprint() -> str:
    """Identifies this machine and software stack: calibrations are valid for it only."""
    import importlib.metadata as md

    from ..backends.numpy_backend import cpu_model, host_memory_bytes
    from ..devices import all_infos

    parts = [f"v{VERSION}", platform.node(), platform.machine(), cpu_model() or "?",
             str(host_memory_bytes()), str(os.cpu_count())]  # fmt: skip
    for i in all_infos():
        if i.available:
            parts.append(f"{i.name}={i.adapter}")
    for dist in ("vgpu-nb", "numpy", "numba", "cupy-cuda12x", "cupy-cuda13x", "wgpu"):
        try:
            parts.append(f"{dist}={md.version(dist)}")
        except md.PackageNotFoundError:
            pass
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _cache_file() -> str:
    from ..kernel.cache import cache_dir

    return os.path.join(str(cache_dir()), f"calibration-{fingerprint()}.json")


def load() -> dict[str, Calibration]:
    """The cached calibrations of this machine (empty if none or unreadable)."""
    try:
        with open(_cache_file(), encoding="utf-8") as f:
            data = json.load(f)
        return {name: Calibration(**row) for name, row in data.items()}
    except (OSError, ValueError, TypeError):
        return {}


def save(cals: dict[str, Calibration]) -> None:
    path = _cache_file()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({n: c.as_dict() for n, c in cals.items()}, f, indent=1)
    os.replace(tmp, path)  # atomic: a concurrent reader sees the old or the new file


_MEMO: dict[str, Calibration] | None = None


def cached(name: str) -> Calibration | None:
    """The calibration of device ``name`` if this machine has one (never measures)."""
    global _MEMO
    if _MEMO is None:
        _MEMO = load()
    return _MEMO.get(name)


def calibrate(
    devices: Any = None, *, force: bool = False, progress: bool = True, scale: float = 1.0
) -> Any:
    """Measure (or load from the cache) every available device, or ``devices`` (a name
    or a list); returns a pandas DataFrame, one row per device. ``scale`` shrinks or grows
    the benchmark sizes (tests use small ones)."""
    global _MEMO
    import pandas as pd

    from ..devices import all_infos, get_device

    if devices is None:
        names = [i.name for i in all_infos() if i.available]
    else:
        names = [devices] if isinstance(devices, str) else list(devices)
    devs = [get_device(n) for n in names]
    cals = load()
    todo = [d for d in devs if force or d.name not in cals]
    bar = None
    if todo and progress:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=5 * len(todo), desc="vg.calibrate", unit="step", leave=False)
        except ImportError:  # pragma: no cover
            bar = None
    try:
        for d in todo:
            if bar is not None:
                bar.set_postfix_str(d.name)
            cals[d.name] = measure(d, scale=scale, progress=bar)
    finally:
        if bar is not None:
            bar.close()
    if todo:
        save(cals)
    _MEMO = cals
    rows = [cals[d.name].as_dict() for d in devs]
    cols = ["device", *FIELDS, "seconds"]
    return pd.DataFrame(rows, columns=cols).set_index("device")
