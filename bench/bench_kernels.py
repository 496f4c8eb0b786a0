"""Benchmarks of the kernel language (issue 3), as ratios against the raw library in one process.

Targets (f32, 2²⁸ elements on GPUs; medians):

* ``saxpy`` kernel (``y = a*x + y``, 12 bytes per element):
  cuda ≥ 1.3 × a CuPy ``ElementwiseKernel`` saxpy; wgpu (hardware adapter) ≥ 2.9 TB/s;
  numba ≥ 0.9 × a hand-written ``@njit(parallel=True)`` prange saxpy.
* ``sumsq`` reduction (``@vg.reduction(identity=0.0, combine="add")``, 4 bytes per element):
  cuda ≥ 1.0 × a CuPy ``ReductionKernel`` sumsq.
* launch overhead of a 1-element kernel, asynchronous, cuda: ≤ 1.2 × a CuPy ``RawKernel``
  launch of the same generated code (``saxpy.source("cuda")``), µs per launch of
  ``--launches`` back-to-back launches with one sync at the end.
* first launch in a fresh process with a warm disk cache: ``LaunchRecord.compile_s`` ≤ 50 ms
  on cuda and wgpu (a child process runs twice with one ``VGPU_NB_CACHE_DIR``: the first run
  fills the cache, the second is measured; both are reported). The wall time of that first
  launch (parse + compile + launch + sync) is reported beside it: work a backend defers to
  the first dispatch (pipeline creation, driver JIT) shows there, not in ``compile_s``.

How it is timed. Data lives on the device before timing (no transfers are timed). The
contenders of one benchmark run round-robin, ``--repeat`` times each, after warm-up (the
first call, compile included, is reported as ``first_call_ms``); each sample is the host
wall time of ``fn(); sync()`` (what a user waits for, as ``bench/common.py`` times). On GPUs
two more figures are taken: the **device clock** (CUDA events recorded around each call for
every contender alike; WebGPU timestamp queries from ``k.launch(...)`` records for vg on
wgpu) and the **queued** throughput (``--queued`` calls back to back, one sync). GPU targets
are judged on the device clock (queued where a device has no clock), the CPU target on host
time; every figure and ratio is in the JSON. ``ratio`` = baseline median / vg median
(> 1: vg is faster), the same as vg GB/s / baseline GB/s.

    python bench/bench_kernels.py                          # every device here, default sizes
    python bench/bench_kernels.py --log2n 24 --label vm-2core
    python bench/bench_kernels.py --devices cuda:0,wgpu:0 --out bench/results/kernels_h200.json

Devices: by default ``numba``, every ``cuda:N`` and the best wgpu adapter (a hardware GPU
when the machine has one, else the CPU-emulated one); a device that is missing or cannot
run a benchmark is skipped with the reason printed and recorded. ``--log2n`` defaults to 28
when a GPU is among the devices, else 24.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
import numpy as np
from numba import njit, prange

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")

import vgpu_nb as vg  # noqa: E402
from bench.common import machine as machine_info  # noqa: E402
from bench.common import write_json  # noqa: E402
from vgpu_nb.errors import UnsupportedOnBackend  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
A = 0.5  # saxpy's scalar: y grows by at most 0.5 per run, far from f32 trouble


# ---- the kernels under test (module level: the fresh-process child defines the same) -----
@vg.kernel
def saxpy(a: vg.f32, x: vg.f32[:], y: vg.f32[:]):
    i = vg.tid()
    y[i] = a * x[i] + y[i]


@vg.reduction(identity=0.0, combine="add")
def sumsq(v: vg.f32) -> vg.f32:
    return v * v


# ---- the hand-written Numba baselines (what a Numba user writes first) ---------------------
@njit(parallel=True)
def prange_saxpy(a, x, y):
    for i in prange(x.size):
        y[i] = a * x[i] + y[i]


@njit(parallel=True)
def prange_sumsq(x):
    """Context only (no target): ``s = 0.0`` accumulates in float64, as in bench_numba_sum."""
    s = 0.0
    for i in prange(x.size):
        s += x[i] * x[i]
    return s


#: id → (what, comparison, threshold, unit)
TARGETS: dict[str, tuple[str, str, float, str]] = {
    "saxpy_cuda_vs_cupy": ("saxpy GB/s on cuda / CuPy ElementwiseKernel", ">=", 1.3, "x"),
    "saxpy_wgpu_GBps": ("saxpy GB/s on a hardware wgpu adapter", ">=", 2900.0, "GB/s"),
    "saxpy_numba_vs_prange": ("saxpy GB/s on numba / @njit prange saxpy", ">=", 0.9, "x"),
    "sumsq_cuda_vs_cupy": ("sumsq GB/s on cuda / CuPy ReductionKernel", ">=", 1.0, "x"),
    "launch_cuda_vs_rawkernel": ("µs per 1-element launch, vg / CuPy RawKernel", "<=", 1.2, "x"),
    "first_launch_cuda_ms": ("compile+load of the first launch, warm disk cache", "<=", 50, "ms"),
    "first_launch_wgpu_ms": ("compile+load of the first launch, warm disk cache", "<=", 50, "ms"),
}


# ---- timing ------------------------------------------------------------------------------
def med(ts: list[float]) -> float:
    return statistics.median(ts)


def timed(fn: Callable[[], Any], sync: Callable[[], None]) -> float:
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def round_robin(
    contenders: dict[str, Callable[[], Any]], sync: Callable[[], None], repeat: int, warmup: int
) -> dict[str, list[float]]:
    """Host seconds of ``fn(); sync()`` per contender, interleaved so drifts hit all alike."""
    for fn in contenders.values():
        for _ in range(warmup):
            timed(fn, sync)
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeat):
        for name, fn in contenders.items():
            samples[name].append(timed(fn, sync))
    return samples


def queued(fn: Callable[[], Any], sync: Callable[[], None], k: int) -> float:
    """Mean seconds per call of ``k`` calls queued back to back, then one sync."""
    fn()
    sync()
    t0 = time.perf_counter()
    for _ in range(k):
        fn()
    sync()
    return (time.perf_counter() - t0) / k


def cuda_event_times(fn: Callable[[], Any], repeat: int) -> list[float]:
    """Device seconds of ``fn`` between two CUDA events on the current stream."""
    import cupy as cp

    out = []
    for _ in range(repeat):
        start, end = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        fn()
        end.record()
        end.synchronize()
        out.append(cp.cuda.get_elapsed_time(start, end) / 1e3)
    return out


def stats(ts: list[float], nbytes: int, first: float | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {
        "median_ms": med(ts) * 1e3,
        "min_ms": min(ts) * 1e3,
        "max_ms": max(ts) * 1e3,
        "runs": len(ts),
        "GBps": nbytes / med(ts) / 1e9,
    }
    if first is not None:
        d["first_call_ms"] = first * 1e3
    return d


# ---- devices -----------------------------------------------------------------------------
def default_devices() -> list[str]:
    """numba, every cuda:N, and the best wgpu adapter (hardware if any, else emulated)."""
    rows = [r for r in vg.devices().itertuples() if r.available]
    names = [r.Index for r in rows if r.backend == "numba"]
    names += [r.Index for r in rows if r.backend == "cuda"]
    wgpus = [r for r in rows if r.backend == "wgpu"]
    hw = [r for r in wgpus if r.kind == "gpu"]
    pick = hw or wgpus
    if pick:  # adapters come best first; prefer Vulkan/Metal/D3D12 over OpenGL
        native = [r for r in pick if "OpenGL" not in r.adapter]
        names.append((native or pick)[0].Index)
    return names


def is_gpu(dev: Any) -> bool:
    return dev.info.kind == "gpu"


def cuda_ctx(dev: Any) -> Any:
    """``with`` the CuPy device of a cuda device (a no-op context elsewhere)."""
    import contextlib

    if dev.backend != "cuda":
        return contextlib.nullcontext()
    import cupy as cp

    return cp.cuda.Device(int(dev.name.split(":")[1]))


def check_close(what: str, got: np.ndarray, ref: np.ndarray) -> float:
    err = float(np.max(np.abs(got - ref) / np.maximum(np.abs(ref), 1e-30)))
    if not np.allclose(got, ref, rtol=2e-6, atol=1e-6):
        raise AssertionError(f"{what}: wrong result (max relative error {err:.2e})")
    return err


def judge(
    targets: list[dict[str, Any]],
    tid: str,
    device: str,
    value: float | None,
    metric: str,
    also: dict[str, Any] | None = None,
) -> None:
    what, op, thr, unit = TARGETS[tid]
    met = None if value is None else (value >= thr if op == ">=" else value <= thr)
    targets.append(
        {
            "id": tid,
            "device": device,
            "what": what,
            "target": f"{op} {thr:g} {unit}",
            "value": value,
            "unit": unit,
            "metric": metric,
            "met": met,
            **({"also": also} if also else {}),
        }
    )


# ---- saxpy -------------------------------------------------------------------------------
def bench_saxpy(dev: Any, n: int, args: argparse.Namespace, targets: list) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    hx, hy = rng.random(n, dtype=np.float32), rng.random(n, dtype=np.float32)
    x, y = vg.asarray(hx, device=dev), vg.asarray(hy, device=dev)
    sync, nbytes, a32 = dev.sync, 12 * n, np.float32(A)
    launch = saxpy[n]

    first_vg = timed(lambda: launch(A, x, y), sync)
    err = check_close(f"saxpy on {dev.name}", y.numpy(), a32 * hx + hy)
    contenders: dict[str, Callable[[], Any]] = {"vg": lambda: launch(A, x, y)}
    base = None
    first: dict[str, float] = {"vg": first_vg}
    if dev.backend == "cuda":
        import cupy as cp

        base = "cupy.ElementwiseKernel"
        ek = cp.ElementwiseKernel("float32 a, float32 x", "float32 y", "y = a * x + y", "saxpy_ek")
        xb, yb = x._buf, y._buf
        contenders[base] = lambda: ek(a32, xb, yb)
    elif dev.backend == "numba":
        base = "njit_prange"
        xb, yb = x._buf, y._buf
        contenders[base] = lambda: prange_saxpy(a32, xb, yb)
    if base is not None:
        before = y.numpy().copy()
        first[base] = timed(contenders[base], sync)
        check_close(f"{base} saxpy", y.numpy(), a32 * hx + before)

    samples = round_robin(contenders, sync, args.repeat, warmup=2)
    row: dict[str, Any] = {
        "bench": "saxpy",
        "device": dev.name,
        "adapter": dev.info.adapter,
        "n": n,
        "log2n": n.bit_length() - 1,
        "dtype": "f32",
        "bytes": nbytes,
        "max_rel_err": err,
        "baseline": base,
        "contenders": {k: stats(v, nbytes, first[k]) for k, v in samples.items()},
    }
    vg_med = med(samples["vg"])
    if base is not None:
        row["ratio"] = med(samples[base]) / vg_med
    if is_gpu(dev):
        row["queued_ms"] = {k: queued(fn, sync, args.queued) * 1e3 for k, fn in contenders.items()}
        row["queued_GBps"] = {k: nbytes / v / 1e6 for k, v in row["queued_ms"].items()}
        if base is not None:
            row["ratio_queued"] = row["queued_ms"][base] / row["queued_ms"]["vg"]
        dclock = device_clock(dev, contenders, lambda: saxpy.launch(n, A, x, y), args.repeat)
        if dclock:
            row["device_clock_ms"] = {k: med(v) * 1e3 for k, v in dclock.items()}
            row["device_clock_GBps"] = {k: nbytes / med(v) / 1e9 for k, v in dclock.items()}
            if base is not None and base in dclock:
                row["ratio_device_clock"] = med(dclock[base]) / med(dclock["vg"])

    gbps = row["contenders"]["vg"]["GBps"]
    if dev.backend == "cuda":
        metric, value = gpu_metric(row, "ratio")
        also = {k: row.get(k) for k in ("ratio", "ratio_queued", "ratio_device_clock")}
        judge(targets, "saxpy_cuda_vs_cupy", dev.name, value, metric, also)
    elif dev.backend == "wgpu" and is_gpu(dev):
        metric, value = gpu_metric(row, "GBps")
        also = {
            "host_clock_GBps": gbps,
            "queued_GBps": row["queued_GBps"]["vg"],
            "device_clock_GBps": row.get("device_clock_GBps", {}).get("vg"),
        }
        judge(targets, "saxpy_wgpu_GBps", dev.name, value, metric, also)
    elif dev.backend == "numba":
        judge(targets, "saxpy_numba_vs_prange", dev.name, row["ratio"], "host clock")
    print_row(row)
    return row


def gpu_metric(row: dict[str, Any], kind: str) -> tuple[str, float | None]:
    """The judged figure of a GPU row: device clock if there is one, else queued."""
    if kind == "ratio":
        if "ratio_device_clock" in row:
            return "device clock (CUDA events)", row["ratio_device_clock"]
        return "queued", row.get("ratio_queued")
    if "device_clock_GBps" in row:
        return "device clock", row["device_clock_GBps"]["vg"]
    return "queued", row["queued_GBps"]["vg"]


def device_clock(
    dev: Any,
    contenders: dict[str, Callable[[], Any]],
    recorded: Callable[[], Any] | None,
    repeat: int,
) -> dict[str, list[float]]:
    """Device seconds per call: CUDA events around every contender on cuda; on other GPUs
    the device time of vg's own launch records (WebGPU timestamps), where it has one."""
    if dev.backend == "cuda":
        with cuda_ctx(dev):
            return {k: cuda_event_times(fn, repeat) for k, fn in contenders.items()}
    if recorded is None:
        return {}
    ts = []
    for _ in range(repeat):
        rec = recorded()
        dev.sync()
        ts.append(rec.device_s)
    return {"vg": ts} if ts and None not in ts else {}


# ---- sumsq -------------------------------------------------------------------------------
def bench_sumsq(dev: Any, n: int, args: argparse.Namespace, targets: list) -> dict[str, Any]:
    hx = np.random.default_rng(1).random(n, dtype=np.float32)
    x = vg.asarray(hx, device=dev)
    sync, nbytes = dev.sync, 4 * n
    ref = float(np.dot(hx.astype(np.float64), hx.astype(np.float64)))
    first = {"vg": timed(lambda: sumsq(x), sync)}
    values = {"exact_f64": ref, "vg": float(sumsq(x))}
    contenders: dict[str, Callable[[], Any]] = {"vg": lambda: sumsq(x)}
    base = None
    if dev.backend == "cuda":
        import cupy as cp

        base = "cupy.ReductionKernel"
        rk = cp.ReductionKernel(
            "float32 x", "float32 y", "x * x", "a + b", "y = a", "0", "sumsq_rk"
        )
        xb = x._buf
        contenders[base] = lambda: rk(xb)
    elif dev.backend == "numba":
        base = "njit_prange_f64acc"
        xb = x._buf
        contenders[base] = lambda: prange_sumsq(xb)
    if base is not None:
        first[base] = timed(contenders[base], sync)
        values[base] = float(contenders[base]())
    for k, v in values.items():
        if abs(v - ref) > 1e-4 * ref:
            raise AssertionError(f"sumsq {k} on {dev.name}: {v} vs exact {ref}")

    samples = round_robin(contenders, sync, args.repeat, warmup=2)
    row: dict[str, Any] = {
        "bench": "sumsq",
        "device": dev.name,
        "adapter": dev.info.adapter,
        "n": n,
        "log2n": n.bit_length() - 1,
        "dtype": "f32",
        "bytes": nbytes,
        "values": values,
        "baseline": base,
        "contenders": {k: stats(v, nbytes, first[k]) for k, v in samples.items()},
    }
    if base is not None:
        row["ratio"] = med(samples[base]) / med(samples["vg"])
    if is_gpu(dev):
        row["queued_ms"] = {k: queued(fn, sync, args.queued) * 1e3 for k, fn in contenders.items()}
        row["queued_GBps"] = {k: nbytes / v / 1e6 for k, v in row["queued_ms"].items()}
        if base is not None:
            row["ratio_queued"] = row["queued_ms"][base] / row["queued_ms"]["vg"]
        dclock = device_clock(dev, contenders, None, args.repeat)
        if dclock:
            row["device_clock_ms"] = {k: med(v) * 1e3 for k, v in dclock.items()}
            row["device_clock_GBps"] = {k: nbytes / med(v) / 1e9 for k, v in dclock.items()}
            if base is not None:
                row["ratio_device_clock"] = med(dclock[base]) / med(dclock["vg"])
    if dev.backend == "cuda":
        metric, value = gpu_metric(row, "ratio")
        also = {k: row.get(k) for k in ("ratio", "ratio_queued", "ratio_device_clock")}
        judge(targets, "sumsq_cuda_vs_cupy", dev.name, value, metric, also)
    print_row(row)
    return row


# ---- launch overhead ---------------------------------------------------------------------
_C_SCALARS: dict[str, Any] = {
    "bool": np.bool_, "int": np.int32, "signed int": np.int32, "int32_t": np.int32,
    "unsigned": np.uint32, "unsigned int": np.uint32, "uint32_t": np.uint32,
    "long": np.int64, "long int": np.int64, "long long": np.int64, "long long int": np.int64,
    "int64_t": np.int64, "ptrdiff_t": np.int64, "unsigned long long": np.uint64,
    "unsigned long": np.uint64, "uint64_t": np.uint64, "size_t": np.uint64,
    "float": np.float32, "double": np.float64,
}  # fmt: skip


def cuda_signature(src: str, name: str) -> tuple[str, list[tuple[str, Any]], str]:
    """(entry name, [("ptr", None) | ("val", numpy type)] per parameter, its text) of the
    ``__global__`` function ``name`` (or of the only one) in generated CUDA C."""
    typedefs = dict(
        (alias, real.strip())
        for real, alias in re.findall(r"typedef\s+([\w\s:]+?)\s+(\w+)\s*;", src)
    )
    typedefs |= {a: r.strip() for a, r in re.findall(r"using\s+(\w+)\s*=\s*([\w\s:]+?);", src)}
    code = re.sub(r"//[^\n]*|/\*.*?\*/", "", src, flags=re.S)
    code = re.sub(r"__launch_bounds__\s*\([^)]*\)", "", code)
    found = re.findall(r"__global__[^;{(]*?\b(\w+)\s*\(([^)]*)\)", code)
    hits = [f for f in found if f[0] == name] or (found if len(found) == 1 else [])
    if not hits:
        raise RuntimeError(f"no __global__ {name}(...) in the generated CUDA source")
    entry, params = hits[0]
    out: list[tuple[str, Any]] = []
    for p in params.split(","):
        p = p.strip()
        if not p or p == "void":
            continue
        if "*" in p:
            out.append(("ptr", None))
            continue
        words = [w for w in p.replace("std::", "").split() if w not in ("const", "volatile")]
        words = [w for w in words if not w.startswith("__")]  # __restrict__ and friends
        ctype = " ".join(words[:-1])
        for _ in range(4):
            ctype = typedefs.get(ctype, ctype)
        if ctype not in _C_SCALARS:
            raise RuntimeError(f"unknown C type {ctype!r} in the signature {params!r}")
        out.append(("val", _C_SCALARS[ctype]))
    return entry, out, f"{entry}({' '.join(params.split())})"


def raw_args(
    sig: list[tuple[str, Any]], domain: tuple[int, ...], params: list[tuple[bool, Any]]
) -> tuple[tuple[Any, ...], str]:
    """Kernel arguments in the generated convention (domain ints, then per parameter: an
    array as pointer + shape ints, a scalar by value), cast to the signature's C types.
    Also tries a padded domain and pointers without shapes; says which layout matched."""
    for dims in sorted({len(domain), 2, 3}, key=lambda d: d != len(domain)):
        if dims < len(domain):
            continue
        for shapes in (True, False):
            items: list[tuple[str, Any]] = [("val", d) for d in (*domain, 1, 1)[:dims]]
            for is_array, v in params:
                if is_array:
                    items.append(("ptr", v))
                    items += [("val", s) for s in v.shape] if shapes else []
                else:
                    items.append(("val", v))
            if len(items) == len(sig) and all(
                k == sk for (k, _), (sk, _) in zip(items, sig, strict=True)
            ):
                cast = tuple(v if k == "ptr" else t(v) for (k, v), (_, t) in zip(items, sig))  # noqa: B905
                return cast, f"{dims} domain ints, arrays as pointer{' + shape' if shapes else ''}"
    raise RuntimeError("the generated signature matches no known argument convention")


def bench_launch(dev: Any, args: argparse.Namespace, targets: list) -> dict[str, Any]:
    x1 = vg.asarray(np.ones(1, np.float32), device=dev)
    y1 = vg.asarray(np.zeros(1, np.float32), device=dev)
    sync, k = dev.sync, args.launches
    one = saxpy[1]
    ck = saxpy.compile(dev)
    contenders: dict[str, Callable[[], Any]] = {"vg": lambda: one(A, x1, y1)}
    row: dict[str, Any] = {
        "bench": "launch_overhead",
        "device": dev.name,
        "adapter": dev.info.adapter,
        "kernel": "saxpy over 1 element",
        "launches_per_sample": k,
    }
    base = None
    if dev.backend == "cuda":
        import cupy as cp

        base = "cupy.RawKernel"
        src = saxpy.source("cuda")
        entry, sig, text = cuda_signature(src, saxpy.__name__)
        params = [(False, np.float32(A)), (True, x1._buf), (True, y1._buf)]
        kargs, layout = raw_args(sig, (1,), params)
        opts = tuple(ck.extra.get("options", ())) if isinstance(ck.extra, dict) else ()
        with cuda_ctx(dev):
            if 'extern "C"' in src:
                rk = cp.RawKernel(src, entry, options=opts)
            else:
                rk = cp.RawModule(code=src, options=opts, name_expressions=[entry])
                rk = rk.get_function(entry)
        m = re.search(r"__launch_bounds__\s*\(\s*(\d+)", src)
        block = (int(m.group(1)) if m else 256,)
        row |= {"raw_signature": text, "raw_layout": layout, "raw_block": block[0]}
        contenders[base] = lambda: rk((1,), block, kargs)
        check_y = y1.numpy().copy()
        timed(contenders[base], sync)
        check_close("RawKernel saxpy[1]", y1.numpy(), np.float32(A) * 1 + check_y)
    elif dev.backend == "numba":
        # the compiled launcher itself (the generated @njit(parallel=True) function): vg's
        # dispatch cost over calling the same machine code directly; context, no target
        nparams = len(inspect.signature(ck.handle).parameters)
        direct = (*[1] * (nparams - 3), np.float32(A), x1._buf, y1._buf)
        base = "generated launcher, called directly"
        contenders[base] = lambda: ck.handle(*direct)

    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for fn in contenders.values():  # warm
        queued(fn, sync, 100)
    for _ in range(args.launch_repeat):
        for name, fn in contenders.items():
            samples[name].append(queued(fn, sync, k))
    row["baseline"] = base
    row["us_per_launch"] = {name: med(v) * 1e6 for name, v in samples.items()}
    row["samples_us"] = {name: [round(t * 1e6, 3) for t in v] for name, v in samples.items()}
    if base is not None:
        row["ratio_vg_over_baseline"] = med(samples["vg"]) / med(samples[base])
    us = row["us_per_launch"]
    if dev.backend == "cuda":
        also = {"vg_us": us["vg"], "rawkernel_us": us[base]}
        metric = "µs per launch, host clock, one sync per sample"
        ratio = row["ratio_vg_over_baseline"]
        judge(targets, "launch_cuda_vs_rawkernel", dev.name, ratio, metric, also)
    line = f"launch {dev.name:8s} vg {us['vg']:8.2f} µs/launch"
    if base:
        line += f"   {base} {us[base]:.2f} µs   vg/base {row['ratio_vg_over_baseline']:.2f}"
    print(line)
    return row


# ---- first launch in a fresh process -----------------------------------------------------
def child_first_launch(name: str) -> None:
    """In a fresh process: the first launch of ``saxpy`` (and first ``sumsq``) on ``name``."""
    t_import = time.perf_counter()
    dev = vg.get_device(name)
    x = vg.asarray(np.ones(1024, np.float32), device=dev)
    y = vg.asarray(np.zeros(1024, np.float32), device=dev)
    dev.sync()
    t_open = time.perf_counter() - t_import
    t0 = time.perf_counter()
    try:
        rec = saxpy.launch(1024, A, x, y)
    except UnsupportedOnBackend as exc:  # the parent records it as a skip, with the reason
        print("SKIP " + json.dumps(str(exc)))
        return
    dev.sync()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    saxpy.launch(1024, A, x, y)
    dev.sync()
    second = time.perf_counter() - t0
    out = {
        "device": dev.name,
        "adapter": dev.info.adapter,
        "compile_ms": rec.compile_s * 1e3,
        "cache_hit": rec.cache_hit,
        "first_launch_wall_ms": first * 1e3,
        "second_launch_wall_ms": second * 1e3,
        "device_open_ms": t_open * 1e3,
    }
    try:
        t0 = time.perf_counter()
        sumsq(x)
        dev.sync()
        out["first_sumsq_wall_ms"] = (time.perf_counter() - t0) * 1e3
    except Exception as exc:  # context only: the kernel figure above is the target
        out["first_sumsq_error"] = repr(exc)
    print("RESULT " + json.dumps(out))


def bench_first_launch(dev: Any, args: argparse.Namespace, targets: list) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="vgpu_nb-kcache-")
    env = os.environ | {
        "VGPU_NB_CACHE_DIR": tmp,
        "CUPY_CACHE_DIR": os.path.join(tmp, "cupy"),  # CuPy's own cache starts cold too
        "XDG_RUNTIME_DIR": os.environ.get("XDG_RUNTIME_DIR", "/tmp"),
    }
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child-first-launch", dev.name]
    row: dict[str, Any] = {
        "bench": "first_launch",
        "device": dev.name,
        "adapter": dev.info.adapter,
        "kernel": "saxpy over 1024 elements",
        "child_command": " ".join([Path(sys.executable).name, *cmd[1:]]),
        "cache_dir": "fresh temporary VGPU_NB_CACHE_DIR (and CUPY_CACHE_DIR), shared by both runs",
    }
    try:
        for run in ("cold", "warm"):
            t0 = time.perf_counter()
            p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
            wall = time.perf_counter() - t0
            skip = [ln for ln in p.stdout.splitlines() if ln.startswith("SKIP ")]
            if skip:
                raise UnsupportedOnBackend(json.loads(skip[-1][len("SKIP ") :]))
            lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
            if p.returncode or not lines:
                tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["(no output)"]
                raise RuntimeError(f"{run} child failed (rc {p.returncode}): {tail[0]}")
            row[run] = json.loads(lines[-1][len("RESULT ") :]) | {"process_wall_ms": wall * 1e3}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    cold, warm = row["cold"], row["warm"]
    if dev.backend == "cuda" or (dev.backend == "wgpu" and is_gpu(dev)):
        also = {"cold_compile_ms": cold["compile_ms"], "warm_cache_hit": warm["cache_hit"],
                "warm_first_launch_wall_ms": warm["first_launch_wall_ms"]}  # fmt: skip
        judge(targets, f"first_launch_{dev.backend}_ms", dev.name, warm["compile_ms"],
              "LaunchRecord.compile_s of the first launch, second fresh process", also)  # fmt: skip
    print(
        f"first  {dev.name:8s} cold: compile {cold['compile_ms']:8.1f} ms (hit {cold['cache_hit']})"
        f"   warm: compile {warm['compile_ms']:7.1f} ms (hit {warm['cache_hit']}), first launch "
        f"{warm['first_launch_wall_ms']:.1f} ms wall"
    )
    return row


# ---- driver ------------------------------------------------------------------------------
def print_row(row: dict[str, Any]) -> None:
    c = row["contenders"]
    line = f"{row['bench']:6s} {row['device']:8s} vg {c['vg']['median_ms']:9.3f} ms "
    line += f"{c['vg']['GBps']:8.1f} GB/s"
    base = row.get("baseline")
    if base:
        line += f"   {base} {c[base]['median_ms']:.3f} ms {c[base]['GBps']:.1f} GB/s"
        line += f"   ratio {row['ratio']:.3f}"
    if "device_clock_GBps" in row:
        dc = row["device_clock_GBps"]
        line += "   device clock " + ", ".join(f"{k} {v:.1f}" for k, v in dc.items()) + " GB/s"
        if "ratio_device_clock" in row:
            line += f" (ratio {row['ratio_device_clock']:.3f})"
    if "queued_GBps" in row:
        line += "   queued " + ", ".join(f"{k} {v:.1f}" for k, v in row["queued_GBps"].items())
    print(line)


def versions() -> dict[str, Any]:
    v: dict[str, Any] = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "vgpu_nb": vg.__version__,
    }
    for mod in ("cupy", "wgpu"):
        m = sys.modules.get(mod)
        if m is not None:
            v[mod] = getattr(m, "__version__", "?")
    if "cupy" in sys.modules:
        rt = sys.modules["cupy"].cuda.runtime
        v["cuda_runtime"], v["cuda_driver"] = rt.runtimeGetVersion(), rt.driverGetVersion()
    try:
        v["numba_threading_layer"] = numba.threading_layer()
    except ValueError:  # no parallel function ran
        pass
    return v


def unjudged(targets: list, devs: list, skipped: list, table: Any) -> None:
    """Add the issue targets this run could not judge, each with the reasons why."""
    judged = {t["id"] for t in targets}
    for tid in TARGETS:
        if tid in judged:
            continue
        backend = next(b for b in ("cuda", "wgpu", "numba") if b in tid)
        why = []
        rows = table[table.backend == backend]
        ran = [d for d in devs if d.backend == backend]
        reasons = [r for r in rows.why_not if r]
        if backend == "wgpu" and not [d for d in ran if is_gpu(d)]:
            if len(rows[rows.available & (rows.kind == "gpu")]):
                why.append("no hardware wgpu adapter in this run")
            elif rows.available.any():
                only = "; ".join(rows[rows.available].adapter)
                why.append(f"no hardware wgpu adapter on this machine (only: {only})")
            else:
                why.append("wgpu unavailable: " + "; ".join(reasons or ["?"]))
        elif not ran:
            why.append(f"no {backend} device in this run" + (f": {reasons[0]}" if reasons else ""))
        bench = tid.split("_")[0]
        for s in skipped:
            if s["device"].split(":")[0] == backend and s["bench"] in (bench, "*"):
                why.append(f"{s['bench']} on {s['device']}: " + (s.get("reason") or s["error"]))
        judge(targets, tid, "-", None, "not measured")
        targets[-1]["why_not"] = why


BENCHES = ("saxpy", "sumsq", "launch", "first")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", default="", help="comma list (default: see the docstring)")
    ap.add_argument("--log2n", type=int, help="elements = 2**log2n (default 28 on GPU, 24 on CPU)")
    ap.add_argument("--repeat", type=int, default=20, help="timed runs per contender")
    ap.add_argument("--queued", type=int, default=50, help="calls per queued-throughput sample")
    ap.add_argument("--launches", type=int, default=10000, help="launches per overhead sample")
    ap.add_argument("--launch-repeat", type=int, default=7, help="overhead samples")
    ap.add_argument("--benches", default=",".join(BENCHES), help=f"comma list of {BENCHES}")
    ap.add_argument("--label", default=socket.gethostname(), help="results file suffix")
    ap.add_argument("--out", help="JSON path (default bench/results/kernels_<label>.json)")
    ap.add_argument("--child-first-launch", metavar="DEVICE", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child_first_launch:
        child_first_launch(args.child_first_launch)
        return 0
    if args.repeat < 5:
        ap.error("--repeat must be >= 5 (figures are medians)")
    benches = [b.strip() for b in args.benches.split(",") if b.strip()]
    if unknown := set(benches) - set(BENCHES):
        ap.error(f"unknown benches {sorted(unknown)}; choose from {BENCHES}")

    load0 = os.getloadavg()  # other work on the machine skews CPU figures: recorded
    table = vg.devices()
    print(table[["adapter", "kind", "available"]].to_string())
    names = [d.strip() for d in args.devices.split(",") if d.strip()] or default_devices()
    devs, skipped, results, targets = [], [], [], []
    for name in names:
        try:
            devs.append(vg.get_device(name))
        except Exception as exc:  # missing / unavailable: say why and carry on
            skipped.append({"device": name, "bench": "*", "reason": str(exc)})
            print(f"skip   {name}: {exc}")
    log2n = args.log2n if args.log2n is not None else (28 if any(map(is_gpu, devs)) else 24)
    n = 1 << log2n

    for dev in devs:
        for bench in benches:
            try:
                with cuda_ctx(dev):
                    if bench == "saxpy":
                        results.append(bench_saxpy(dev, n, args, targets))
                    elif bench == "sumsq":
                        results.append(bench_sumsq(dev, n, args, targets))
                    elif bench == "launch":
                        results.append(bench_launch(dev, args, targets))
                    else:
                        results.append(bench_first_launch(dev, args, targets))
            except UnsupportedOnBackend as exc:  # not implemented / not representable here
                skipped.append({"device": dev.name, "bench": bench, "reason": str(exc)})
                print(f"skip   {bench} on {dev.name}: {str(exc).splitlines()[0]}")
            except Exception as exc:  # record, keep going: one failure must not hide the rest
                skipped.append({"device": dev.name, "bench": bench, "error": repr(exc)})
                print(f"FAILED {bench} on {dev.name}: {exc!r}")
                traceback.print_exc()

    unjudged(targets, devs, skipped, table)

    print("\ntargets:")
    for t in targets:
        v = "-" if t["value"] is None else f"{t['value']:.3f} {t['unit']}"
        verdict = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        print(f"  {t['id']:26s} {t['device']:8s} {v:>14s}  target {t['target']:12s} {verdict}")

    report = {
        "benchmark": "kernels",
        "machine": machine_info() | {"numba_threads": numba.config.NUMBA_NUM_THREADS},
        "versions": versions(),
        "devices": [
            {"name": d.name, "backend": d.backend, "adapter": d.info.adapter, "kind": d.info.kind}
            for d in devs
        ],
        "log2n": log2n,
        "n": n,
        "dtype": "f32",
        "repeat": args.repeat,
        "launches": args.launches,
        "loadavg_1_5_15min": {"start": load0, "end": os.getloadavg()},
        "targets": targets,
        "results": results,
        "skipped": skipped,
    }
    path = write_json(args.out or RESULTS / f"kernels_{args.label}.json", report)
    print("wrote", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
