"""GPU benchmarks of the foundation issue, as ratios against the raw library in one process.

* ``vg.sum`` on cuda vs ``cupy.sum``           (target ≥ 0.95×)
* ``vg.sum`` on wgpu (hardware adapter)        (target ≥ 3.4 TB/s)
* ``vg.matmul`` 4096² f32 on cuda vs ``cupy.matmul``  (target ≥ 0.98×)
* ``vg.matmul`` 4096² f32 on wgpu              (target ≥ 5 TFLOPS)

f32, 2²⁸ elements (1 GiB) for sums; each figure is the median of ≥ 10 runs of
``op(); sync()`` timed on the host clock (what a user waits for), after warm-up. Device
clocks (CUDA events / WebGPU timestamps, through ``vg.profile``) are reported beside.

    python3 bench/bench_gpu.py --out bench/results/gpu_<label>.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")

import vgpu_nb as vg  # noqa: E402
from bench.common import median_time, summary, write_json  # noqa: E402


def device_ms(fn, runs: int) -> float | None:
    """Median device time of ``fn`` from the records it emits (None without a clock)."""
    with vg.profile() as p:
        for _ in range(runs):
            fn()
    times = [r.device_s for r in p.records]
    if not times or times[0] is None:
        return None
    return statistics.median(times) * 1e3


def queued_ms(fn, sync, k: int = 50) -> float:
    """Mean time per call of ``k`` calls queued back to back, then one sync: the device's
    throughput with launch and sync latency amortised (how GPU libraries are benchmarked)."""
    fn()
    sync()
    t0 = time.perf_counter()
    for _ in range(k):
        fn()
    sync()
    return (time.perf_counter() - t0) / k * 1e3


def bench_sum(dev_name: str, log2n: int, runs: int, results: list) -> None:
    dev = vg.get_device(dev_name)
    n = 1 << log2n
    host = np.random.default_rng(0).random(n, dtype=np.float32)
    x = vg.asarray(host, device=dev)
    got = float(vg.sum(x))
    ref = float(np.sum(host, dtype=np.float64))
    assert abs(got - ref) <= 1e-4 * ref, (got, ref)
    t = median_time(lambda: vg.sum(x), dev.sync, runs=runs)
    row = {
        "bench": "sum",
        "device": dev.name,
        "adapter": dev.info.adapter,
        "n": n,
        "dtype": "f32",
        "vg": summary(t),
        "vg_GBps": x.nbytes / statistics.median(t) / 1e9,
        "vg_device_ms": device_ms(lambda: vg.sum(x), runs),
        "vg_queued_ms": queued_ms(lambda: vg.sum(x), dev.sync),
    }
    for key in ("vg_device_ms", "vg_queued_ms"):
        if row[key]:
            row[key.replace("_ms", "_GBps")] = x.nbytes / row[key] / 1e6
    if dev.backend == "cuda":
        import cupy as cp

        cx = x._buf
        tc = median_time(lambda: cp.sum(cx), dev.sync, runs=runs)
        row["cupy"] = summary(tc)
        row["cupy_GBps"] = x.nbytes / statistics.median(tc) / 1e9
        row["ratio_vs_cupy"] = statistics.median(tc) / statistics.median(t)
        row["cupy_queued_ms"] = queued_ms(lambda: cp.sum(cx), dev.sync)
        row["ratio_vs_cupy_queued"] = row["cupy_queued_ms"] / row["vg_queued_ms"]
        row["target"] = "ratio_vs_cupy >= 0.95"
    else:
        row["target"] = "vg GB/s >= 3400 (device clock, queued and single-call all reported)"
    results.append(row)
    print(
        f"sum  {dev.name:8s} {row['vg']['median_ms']:8.3f} ms  {row['vg_GBps']:8.1f} GB/s"
        f"  queued {row['vg_queued_GBps']:7.1f} GB/s"
        f"  device clock {row.get('vg_device_GBps') or float('nan'):7.1f} GB/s"
        + (
            f"  cupy {row['cupy']['median_ms']:.3f} ms  ratio {row['ratio_vs_cupy']:.3f}"
            if "cupy" in row
            else ""
        )
    )


def bench_matmul(dev_name: str, size: int, runs: int, results: list) -> None:
    dev = vg.get_device(dev_name)
    rng = np.random.default_rng(1)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    A, B = vg.asarray(a, device=dev), vg.asarray(b, device=dev)
    # correctness on a slice (full f64 reference would take seconds on the host)
    got = vg.matmul(A, B).numpy()[:64]
    ref = a[:64].astype(np.float64) @ b.astype(np.float64)
    rel = np.linalg.norm(got - ref) / np.linalg.norm(ref)
    flops = 2 * size**3
    t = median_time(lambda: vg.matmul(A, B), dev.sync, runs=runs, warmup=2)
    row = {
        "bench": "matmul",
        "device": dev.name,
        "adapter": dev.info.adapter,
        "size": size,
        "dtype": "f32",
        "rel_err_vs_f64": float(rel),
        "vg": summary(t),
        "vg_TFLOPS": flops / statistics.median(t) / 1e12,
        "vg_device_ms": device_ms(lambda: vg.matmul(A, B), runs),
    }
    if dev.backend == "cuda":
        import cupy as cp

        ca, cb = A._buf, B._buf
        tc = median_time(lambda: cp.matmul(ca, cb), dev.sync, runs=runs, warmup=2)
        row["cupy"] = summary(tc)
        row["cupy_TFLOPS"] = flops / statistics.median(tc) / 1e12
        row["ratio_vs_cupy"] = statistics.median(tc) / statistics.median(t)
        row["target"] = "ratio_vs_cupy >= 0.98"
    else:
        row["target"] = "vg_TFLOPS >= 5"
    results.append(row)
    print(
        f"mm   {dev.name:8s} {row['vg']['median_ms']:8.3f} ms  {row['vg_TFLOPS']:8.2f} TFLOPS"
        f"  relerr {rel:.1e}"
        + (
            f"  cupy {row['cupy']['median_ms']:.3f} ms ratio {row['ratio_vs_cupy']:.3f}"
            if "cupy" in row
            else ""
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--log2n", type=int, default=28)
    ap.add_argument("--matmul", type=int, default=4096)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--devices", default="", help="comma list; default: cuda:* and hardware wgpu")
    ap.add_argument("--out", default="bench/results/gpu.json")
    args = ap.parse_args()
    infos = [i for i in vg.devices().itertuples() if i.available]
    names = (
        args.devices.split(",")
        if args.devices
        else [
            i.Index
            for i in infos
            if i.backend == "cuda" or (i.backend == "wgpu" and i.kind == "gpu")
        ]
    )
    print(vg.devices()[["adapter", "kind", "available"]].to_string())
    results: list = []
    for name in names:
        try:
            bench_sum(name, args.log2n, args.runs, results)
        except Exception as exc:  # record, keep going: one failure must not hide the rest
            results.append({"bench": "sum", "device": name, "error": repr(exc)})
            print(f"sum  {name}: FAILED {exc!r}")
        try:
            bench_matmul(name, args.matmul, args.runs, results)
        except Exception as exc:
            results.append({"bench": "matmul", "device": name, "error": repr(exc)})
            print(f"mm   {name}: FAILED {exc!r}")
    path = write_json(args.out, {"results": results, "vgpu_nb": vg.__version__})
    print("wrote", path)


if __name__ == "__main__":
    main()
