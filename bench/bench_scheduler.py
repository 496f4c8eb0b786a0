"""Scheduler benchmarks (issue 5): regret of ``device="auto"`` against the per-size
oracle, and the speedup of a split over the best single device.

**Regret.** For saxpy (a ``@vg.kernel``), sumsq (a ``@vg.reduction``, read back with
``float``) and matmul (``vg.matmul`` of two n×n f32 matrices, ``size`` = n² elements), at
sizes 10^2 … 10^``--max-exp``:

* the **oracle** is the best single device *measured in this run*: the op timed on every
  device auto may use, with its data already there (kernels and ``@vg.reduction`` s never
  go to the NumPy device, which runs kernel-language code thread by thread; matmul may);
  a device is skipped at a size where its time at the previous size, scaled by the size
  ratio, exceeds ``--cap`` seconds per call (it cannot be the oracle there);
* **auto** starts from data in host memory (``vg.use("auto")``'s home, numba), with a
  fresh scheduler (no history): ``--learn`` calls first (deciding, measuring until the
  history is trusted, moving the data once staying has cost as much as the move — ski
  rental) are timed as ``cold``; then the same number of
  calls as the oracle's are timed as ``steady``.

Each device's timing, and auto's, starts after ``--pause`` idle seconds (a device's worker
threads may spin for a while after its work, slowing the next contender on a small
machine). Per-call times are the median of 3 rounds of R calls (R grows until a round takes about
``--round`` seconds). The oracle's device is picked from those times; then it and auto's
steady state are timed again in ``--alternate`` alternating rounds (a pause between them
when they are different devices), and those medians are the oracle's and auto's figures:
timed in separate phases, drift of a small machine (its clock, its page cache, another
tenant) shows up as regret even where auto runs the oracle's device. Regret = auto steady /
oracle per size; the total regret is the sum
over sizes of auto's per-call times over the sum of the oracle's (each size weighted by
one call). Target ≤ 1.10. Every result is checked against NumPy.

**Split.** ``vg.sum`` and a saxpy kernel over ``--split-exp`` elements in host memory:
``split=True`` against each single device running the same op from host memory (numba in
place; other devices copy their operands in, and saxpy's result out, as their share of a
split does). With a CUDA GPU, also over data in the GPU's pinned host tier (an array larger
than its device budget): the GPU alone streams it at link speed, numba alone reads the same
values in RAM, the split does both at once. Speedup = best single / split.

    python bench/bench_scheduler.py --label vm-2core --max-exp 8 --matmul-max-exp 7
    python bench/bench_scheduler.py --label h100 --max-exp 9    # on the lent GPU machine
"""

from __future__ import annotations

import argparse
import functools
import gc
import math
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import vgpu_nb as vg  # noqa: E402
from bench.common import write_json  # noqa: E402
from vgpu_nb.scheduler import auto  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


@vg.kernel
def saxpy(a: vg.f32, x: vg.f32[:], y: vg.f32[:]):
    i = vg.tid()
    y[i] = a * x[i] + y[i]


@vg.reduction(identity=0.0)
def sumsq(v: vg.f32) -> vg.f32:
    return v * v


class Case:
    """One op at one size: make its operands on a device, call it, check it."""

    def __init__(self, op: str, size: int, rng: np.random.Generator):
        self.op, self.size = op, size
        if op == "matmul":
            n = max(1, round(math.sqrt(size)))
            self.n = n
            self.a = rng.standard_normal((n, n)).astype(np.float32)
            self.b = rng.standard_normal((n, n)).astype(np.float32)
        else:
            self.x = rng.standard_normal(size).astype(np.float32)
            self.y = rng.standard_normal(size).astype(np.float32)

    def language(self) -> bool:
        return self.op != "matmul"

    def make(self, dev: Any) -> tuple[Any, ...]:
        if self.op == "matmul":
            return vg.asarray(self.a, device=dev), vg.asarray(self.b, device=dev)
        if self.op == "saxpy":
            return vg.asarray(self.x, device=dev), vg.asarray(self.y, device=dev)
        return (vg.asarray(self.x, device=dev),)

    def call(self, st: tuple[Any, ...], on_auto: bool) -> Any:
        dev = "auto" if on_auto else None
        if self.op == "saxpy":
            saxpy[self.size](1.0, st[0], st[1], device=dev)
            return None
        if self.op == "sumsq":
            return float(sumsq(st[0]))
        return vg.matmul(st[0], st[1])

    def check(self, st: tuple[Any, ...], out: Any, calls: int) -> None:
        if self.op == "saxpy":
            want = self.y + np.float32(calls) * self.x
            np.testing.assert_allclose(st[1].numpy(), want, rtol=1e-3, atol=1e-3 * calls)
        elif self.op == "sumsq":
            want = float((self.x.astype(np.float64) ** 2).sum())
            assert abs(out - want) <= 1e-3 * want + 1e-3, (out, want)
        else:
            np.testing.assert_allclose(out.numpy(), self.a @ self.b, rtol=1e-3, atol=1e-2)


def _sync(st: tuple[Any, ...]) -> None:
    for a in st:
        a.device.sync()


def _round(fn: Callable[[], Any], st: tuple[Any, ...], reps: int) -> float:
    _sync(st)
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    _sync(st)
    return (time.perf_counter() - t0) / reps


def per_call(fn: Callable[[], Any], st: tuple[Any, ...], target: float) -> tuple[float, int]:
    """(median per-call seconds of 3 rounds, calls per round)."""
    reps = 1
    while True:
        t = _round(fn, st, reps)
        if t * reps >= target / 4 or reps >= 4096:
            break
        reps = min(4096, reps * max(2, int(target / 4 / max(t * reps, 1e-9))))
    reps = max(1, min(4096, int(target / max(t, 1e-9))))
    return statistics.median(_round(fn, st, reps) for _ in range(3)), reps


def alternate(
    fns: list[tuple[Callable[[], Any], tuple[Any, ...], Any]], reps: int, rounds: int, pause: float
) -> list[float]:
    """Median per-call seconds of each ``(fn, operands, default device)``, timed in
    alternating rounds of ``reps`` calls: both under the same machine state."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for k, (fn, st, dev) in enumerate(fns):
            if pause:
                time.sleep(pause)
            vg.use(dev)
            times[k].append(_round(fn, st, reps))
    return [statistics.median(t) for t in times]


def regret(args: argparse.Namespace, report: dict[str, Any]) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    out: dict[str, Any] = report.setdefault("regret", {})
    for op in args.ops.split(","):
        top = args.matmul_max_exp if op == "matmul" else args.max_exp
        rows = []
        prev: dict[str, float] = {}
        for e in range(2, top + 1):
            size = 10**e
            case = Case(op, size, rng)
            devs = [d for d in auto._available() if not (case.language() and d.backend == "numpy")]
            times: dict[str, Any] = {}
            reps_oracle = 1
            for d in devs:
                time.sleep(args.pause)
                if d.name in prev and prev[d.name] * 10 > args.cap:
                    times[d.name] = f"skipped: ~{prev[d.name] * 10:.3g} s per call"
                    prev[d.name] = prev[d.name] * 10
                    continue
                try:
                    st = case.make(d)
                    out1 = case.call(st, False)  # warm-up (compiles)
                    t, reps = per_call(functools.partial(case.call, st, False), st, args.round)
                    if case.op != "saxpy":
                        case.check(st, out1, 1)
                    times[d.name], prev[d.name] = t, t
                    reps_oracle = max(reps_oracle, reps)
                except vg.VgpuError as exc:
                    times[d.name] = f"error: {type(exc).__name__}: {exc.what}"
                del st
                gc.collect()
            measured = {k: v for k, v in times.items() if isinstance(v, float)}
            best = min(measured, key=measured.get)  # type: ignore[arg-type]
            oracle_dev = vg.get_device(best)
            st_best = case.make(oracle_dev)  # (timed again below, alternating with auto)
            case.call(st_best, False)
            # auto: fresh scheduler, data in host memory; after a pause, so that worker
            # threads of the devices just timed (llvmpipe's spin a while) have gone idle
            time.sleep(args.pause)
            auto.reset()
            vg.scheduler.clear()
            vg.use("auto")
            try:
                st = case.make(None)
                t0 = time.perf_counter()
                for _ in range(args.learn):
                    r = case.call(st, True)
                _sync(st)
                cold = (time.perf_counter() - t0) / args.learn
                if case.op != "saxpy":
                    case.check(st, r, 1)
                where = st[0].device.name
                pause = args.pause if where != best else 0.0
                oracle, steady = alternate(
                    [(functools.partial(case.call, st_best, False), st_best, oracle_dev),
                     (functools.partial(case.call, st, True), st, "auto")],
                    reps_oracle, args.alternate, pause,
                )  # fmt: skip
                where = st[0].device.name
                log = vg.scheduler.log()
                choices = sorted(set(log["choice"])) if len(log) else []
                final = log.iloc[-1]["choice"] if len(log) else where
                reason = log.iloc[-1]["reason"] if len(log) else ""
                steps = [  # the decisions, in order: what auto tried while learning
                    {"choice": r.choice, "launches": int(r.launches), "measured": int(r.measured),
                     "predicted_ms": r.predicted_ms, "actual_ms": r.actual_ms}
                    for r in log.itertuples()
                ][-8:]  # fmt: skip
            finally:
                vg.use("numba")
            del st, st_best
            gc.collect()
            row = {
                "size": size, "oracle_device": best, "oracle_ms": oracle * 1e3,
                "auto_steady_ms": steady * 1e3, "auto_cold_ms": cold * 1e3,
                "regret": steady / oracle, "auto_device": final, "auto_choices": choices,
                "reason": reason, "decisions": steps, "alternating_rounds": args.alternate,
                "per_device_ms": {k: (v * 1e3 if isinstance(v, float) else v)
                                  for k, v in times.items()},
            }  # fmt: skip
            rows.append(row)
            print(f"{op:6s} 1e{e}: oracle {best} {oracle * 1e3:.4g} ms, auto {final} "
                  f"{steady * 1e3:.4g} ms (cold {cold * 1e3:.4g}) → {steady / oracle:.3f}",
                  flush=True)  # fmt: skip
        tot_auto = sum(r["auto_steady_ms"] for r in rows)
        tot_oracle = sum(r["oracle_ms"] for r in rows)
        out[op] = {
            "rows": rows,
            "total_regret": tot_auto / tot_oracle,
            "max_regret": max(r["regret"] for r in rows),
            "sizes_within_1_10": sum(r["regret"] <= 1.10 for r in rows),
            "sizes": len(rows),
        }
        print(f"{op}: total regret {tot_auto / tot_oracle:.3f}", flush=True)
        _save(args, report)  # (what was measured so far survives a timeout)
    return out


def split(args: argparse.Namespace) -> dict[str, Any]:
    n = 2**args.split_exp
    xh = np.random.default_rng(1).standard_normal(n).astype(np.float32)
    out: dict[str, Any] = {"n": n}
    gpu = next((d for d in auto._available() if d.info.kind == "gpu" and d.backend == "cuda"), None)
    for op in ("sum", "saxpy"):
        out[op] = _split_one(op, xh, args.split_runs, None)
        if gpu is not None:  # data larger than the GPU's budget, in its pinned host tier
            out[f"{op}_pinned"] = _split_one(op, xh, args.split_runs, gpu)
    return out


class _Split:
    """One split benchmark over data in host RAM: in the numba device's memory, or (with
    ``gpu``) in ``gpu``'s pinned host tier (the array is larger than its device budget)."""

    def __init__(self, op: str, xh: np.ndarray, gpu: Any):
        self.op, self.n = op, xh.size
        self.home = vg.get_device("numba")
        self.gpu = gpu
        if gpu is not None:
            vg.memory.configure(devices=gpu.name, device=xh.nbytes // 4)
            self.x = vg.asarray(xh, device=gpu)
            self.y = vg.zeros(xh.size, device=gpu)
            assert self.x.tier == "host", self.x.tier
        else:
            self.x = vg.asarray(xh, device=self.home)
            self.y = vg.zeros(xh.size, device=self.home)
        self.xn = vg.asarray(xh, device=self.home)  # (numba alone, on the same values)
        self.yn = vg.zeros(xh.size, device=self.home)

    def single(self, d: Any) -> Any:
        n = self.n
        if d is self.home:
            x, y = self.xn, self.yn
            return float(vg.sum(x)) if self.op == "sum" else saxpy[n](1.0, x, y)
        if d is self.gpu:  # streamed from its pinned host tier
            return float(vg.sum(self.x)) if self.op == "sum" else saxpy[n](1.0, self.x, self.y)
        x, y = self.xn, self.yn
        if self.op == "sum":  # from host memory, as its share of a split would be
            return float(vg.sum(vg.asarray(x.numpy(), device=d)))
        xd, yd = vg.asarray(x.numpy(), device=d), vg.asarray(y.numpy(), device=d)
        saxpy[n](1.0, xd, yd)
        y.numpy()[...] = yd.numpy()
        return None

    def split(self) -> Any:
        if self.op == "sum":
            return float(vg.sum(self.x, split=True))
        return saxpy[self.n](1.0, self.x, self.y, split=True)


def _split_one(op: str, xh: np.ndarray, runs: int, gpu: Any) -> dict[str, Any]:
    b = _Split(op, xh, gpu)
    singles: dict[str, float] = {}
    try:
        for d in (d for d in auto._available() if d.backend != "numpy"):
            try:
                b.single(d)
                fn = functools.partial(b.single, d)
                singles[d.name] = statistics.median(_timed(fn, d) for _ in range(runs))
            except vg.VgpuError as exc:
                singles[d.name] = float("nan")
                print(f"split {op}: {d.name} failed: {exc.what}")
        auto.reset()
        vg.scheduler.clear()
        b.split()
        t_split = statistics.median(_timed(b.split, b.home) for _ in range(runs))
        d = vg.scheduler.decisions()[-1]
        if op == "sum":
            assert abs(b.split() - float(xh.astype(np.float64).sum())) < 1
    finally:
        vg.memory.reset()
    ok = {k: v for k, v in singles.items() if v == v}
    best = min(ok, key=ok.get)  # type: ignore[arg-type]
    ratio = max(ok.values()) / min(ok.values()) if len(ok) > 1 else float("nan")
    where = f"pinned host tier of {gpu.name}" if gpu is not None else "numba memory"
    print(f"split {op} ({where}): best single {best} {ok[best] * 1e3:.3f} ms, split "
          f"{d.shares} {t_split * 1e3:.3f} ms → speedup {ok[best] / t_split:.2f}",
          flush=True)  # fmt: skip
    return {
        "data": where, "single_ms": {k: v * 1e3 for k, v in singles.items()},
        "best_single": best, "split_ms": t_split * 1e3, "shares": d.shares,
        "speedup": ok[best] / t_split, "slowest_over_fastest_single": ratio,
        "reason": d.reason,
    }  # fmt: skip


def _timed(fn: Callable[[], Any], dev: Any) -> float:
    dev.sync()
    t0 = time.perf_counter()
    fn()
    dev.sync()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--label", default="vm-2core")
    ap.add_argument("--ops", default="saxpy,sumsq,matmul")
    ap.add_argument("--max-exp", type=int, default=8, help="sizes 10^2 … 10^max-exp")
    ap.add_argument("--matmul-max-exp", type=int, default=7)
    ap.add_argument("--cap", type=float, default=2.0, help="skip a device beyond s per call")
    ap.add_argument("--round", type=float, default=0.2, help="seconds per timing round")
    ap.add_argument("--learn", type=int, default=64, help="auto calls before timing")
    ap.add_argument("--alternate", type=int, default=5, help="rounds of oracle vs auto")
    ap.add_argument("--pause", type=float, default=0.5, help="idle seconds before auto runs")
    ap.add_argument("--split-exp", type=int, default=24, help="split over 2^k elements")
    ap.add_argument("--split-runs", type=int, default=7)
    ap.add_argument("--parts", default="regret,split")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    t0 = time.time()
    print("calibration:")
    print(vg.calibrate(progress=False).round(2).to_string(), flush=True)
    report: dict[str, Any] = {
        "label": args.label,
        "devices": [d.name + " = " + d.info.adapter for d in auto._available()],
        "calibration": {
            d.name: vg.scheduler.cached(d.name).as_dict()  # type: ignore[union-attr]
            for d in auto._available()
        },
    }
    parts = args.parts.split(",")
    try:
        for part in parts:  # (in the order given: what comes first survives a timeout)
            if part == "regret":
                regret(args, report)
            elif part == "split":
                report["split"] = split(args)
                _save(args, report)
    except Exception:  # noqa: BLE001  (keep what was measured, and say what broke)
        report["error"] = traceback.format_exc()
        print(report["error"], file=sys.stderr)
    report["seconds"] = time.time() - t0
    print(f"wrote {_save(args, report)}")
    return 1 if "error" in report else 0


def _save(args: argparse.Namespace, report: dict[str, Any]) -> Path:
    return write_json(args.out or RESULTS / f"scheduler_{args.label}.json", report)


if __name__ == "__main__":
    raise SystemExit(main())
