"""What an open ``vg.dashboard()`` costs the launches it watches (DESIGN.md, "Telemetry":
subscribers must never slow a launch by more than a few percent; rendering is throttled and
happens off the hot path).

A launch loop of a tiny ``@vg.kernel`` saxpy (``--n`` elements, default 64) on ``--device``
runs for ``--seconds`` per sample — long enough for the render thread to draw several times,
which a 10⁴-launch sample (``bench_telemetry.py``) is not. Contenders, interleaved over
``--rounds`` rounds:

* ``none``: nobody subscribed;
* ``state``: a widget dashboard without its render thread (``interval=None``): only its bus
  subscriber — what every launch pays;
* ``live``: a widget dashboard as ``vg.dashboard()`` opens it (``interval=0.5``, PNG
  charts: no front end here), its thread redrawing while the loop runs. Its first render
  (matplotlib's import, done when a user opens it) happens before the clock starts.

Overhead = the median over rounds of (contender / ``none`` in that round − 1). The render
thread only prepares the data and the widgets (``COST`` bounds its share of the GIL); the
drawing happens in a helper process, kept to ``SHARE`` of the machine's CPU. Reported beside
it: renders per second, the thread's and the helper's CPU time per render.

    python bench/bench_dashboard.py                  # numba, tag vm-2core
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")

import vgpu_nb as vg  # noqa: E402
from bench.common import machine as machine_info  # noqa: E402
from bench.common import write_json  # noqa: E402
from vgpu_nb.notebook import dashboard as dash  # noqa: E402
from vgpu_nb.telemetry import BUS  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_PCT = {"state": 3.0, "live": 5.0}


@vg.kernel
def saxpy(a: vg.f32, x: vg.f32[:], y: vg.f32[:]):
    i = vg.tid()
    y[i] = a * x[i] + y[i]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="numba", help="numba (default) or cuda[:N]")
    ap.add_argument("--n", type=int, default=64, help="elements per launch (default 64)")
    ap.add_argument("--seconds", type=float, default=3.0, help="seconds per sample")
    ap.add_argument("--rounds", type=int, default=7, help="samples per contender (>= 5)")
    ap.add_argument("--tag", default="vm-2core", help="results file suffix")
    ap.add_argument("--out", help="JSON path (default bench/results/dashboard_<tag>.json)")
    args = ap.parse_args(argv)
    if args.rounds < 5:
        ap.error("--rounds must be >= 5 (figures are medians)")

    load0 = os.getloadavg()
    dev = vg.get_device(args.device)
    x = vg.asarray(np.ones(args.n, np.float32), device=dev)
    y = vg.asarray(np.zeros(args.n, np.float32), device=dev)
    launch = saxpy[args.n]

    def loop() -> float:
        """µs per launch over ``--seconds`` of launches (checked every 1000)."""
        k, t0 = 0, time.perf_counter()
        end = t0 + args.seconds
        while True:
            for _ in range(1000):
                launch(0.5, x, y)
            k += 1000
            dev.sync()
            if (t := time.perf_counter()) > end:
                return (t - t0) / k * 1e6

    renders: list[float] = []
    cpu: list[float] = []
    worker: list[float] = []

    def none() -> float:
        assert not BUS.active, "someone else is subscribed: the baseline would be wrong"
        return loop()

    def state() -> float:
        with dash.Dashboard("widgets", interval=None, charts="png"):
            return loop()

    def live() -> float:
        with dash.Dashboard("widgets", interval=0.5, charts="png") as d:
            while d.renders < 1:  # (the first render, matplotlib's import: before the clock)
                time.sleep(0.02)
            r0, t0 = d.renders, time.perf_counter()
            us = loop()
            renders.append((d.renders - r0) / (time.perf_counter() - t0))
            cpu.append(d.render_cpu_s)
            worker.append(d.render_worker_cpu_s)
        return us

    contenders = {"none": none, "state": state, "live": live}
    loop()  # warm-up: compile, first touch
    live()
    renders.clear()
    cpu.clear()
    worker.clear()
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, fn in contenders.items():
            samples[name].append(fn())
    us = {name: statistics.median(v) for name, v in samples.items()}
    base = samples["none"]
    over = {
        name: statistics.median([(t / b - 1) * 100 for t, b in zip(v, base, strict=True)])
        for name, v in samples.items()
        if name != "none"
    }
    targets = [
        {
            "id": f"overhead_{name}",
            "what": "per-launch overhead of an open dashboard "
            + ("(its bus subscriber only)" if name == "state" else "(subscriber + render thread)"),
            "target": f"<= {TARGET_PCT[name]:g} %",
            "value": over[name],
            "unit": "%",
            "met": over[name] <= TARGET_PCT[name],
        }
        for name in ("state", "live")
    ]
    print(f"{dev.name}: saxpy over {args.n} elements, {args.seconds:g} s × {args.rounds} rounds")
    for name in contenders:
        extra = f"  {over[name]:+6.1f} %" if name in over else ""
        print(f"  {name:6s} {us[name]:7.3f} µs/launch{extra}")
    print(
        f"  live: {statistics.median(renders):.2f} renders/s, last render "
        f"{statistics.median(cpu) * 1e3:.0f} ms CPU here, "
        f"{statistics.median(worker) * 1e3:.0f} ms in the helper (SHARE {dash.SHARE})"
    )
    for t in targets:
        print(f"  {t['id']:16s} {t['value']:6.1f} %  target {t['target']}  "
              f"{'met' if t['met'] else 'MISSED'}")  # fmt: skip

    report: dict[str, Any] = {
        "benchmark": "dashboard",
        "machine": machine_info(),
        "versions": {"numpy": np.__version__, "vgpu_nb": getattr(vg, "__version__", "?")},
        "device": {"name": dev.name, "backend": dev.backend, "adapter": dev.info.adapter},
        "kernel": f"saxpy over {args.n} elements (f32)",
        "seconds_per_sample": args.seconds,
        "rounds": args.rounds,
        "cost_factor": dash.COST,
        "machine_share": dash.SHARE,
        "us_per_launch": us,
        "overhead_pct": over,
        "overhead_pct_definition": "median over rounds of (contender / none in that round - 1)",
        "live_renders_per_s": statistics.median(renders),
        "live_render_cpu_s": statistics.median(cpu),
        "live_render_helper_cpu_s": statistics.median(worker),
        "samples_us_per_launch": {n: [round(t, 4) for t in v] for n, v in samples.items()},
        "targets": targets,
        "loadavg_1_5_15min": {"start": load0, "end": os.getloadavg()},
    }
    print("wrote", write_json(args.out or RESULTS / f"dashboard_{args.tag}.json", report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
