"""``vgpu-nb`` command line: ``devices`` (the table) and ``doctor`` (what works, what is
missing, and the command that fixes it)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import time
from collections.abc import Callable

os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")  # Mesa's EGL prints an error without it


def cmd_devices(args: argparse.Namespace) -> int:
    import pandas as pd

    import vgpu_nb as vg

    df = vg.devices()
    if args.json:
        print(df.reset_index().to_json(orient="records", indent=2))
        return 0
    with pd.option_context("display.max_colwidth", 90, "display.width", 200):
        print(df.drop(columns=["why_not"]).to_string())
    missing = df[~df["available"]]
    if len(missing):
        print("\nnot available:")
        for name, row in missing.iterrows():
            print(f"  {name}: {row['why_not']}")
    return 0


def _smoke(device: str) -> str:
    """Run a real sum and matmul on ``device`` and check them against NumPy."""
    import numpy as np

    import vgpu_nb as vg

    t0 = time.perf_counter()
    a = np.arange(1000, dtype=np.float32)
    s = float(vg.sum(vg.asarray(a, device=device)))
    m = vg.matmul(vg.ones((8, 8), device=device), vg.ones((8, 8), device=device)).numpy()
    if s != 499500.0 or not np.all(m == 8):
        raise RuntimeError(f"wrong result on {device}: sum {s}, matmul {m[0, 0]}")
    return f"sum + matmul correct ({(time.perf_counter() - t0) * 1e3:.0f} ms incl. compile)"


def _check(name: str, fn: Callable[[], str]) -> tuple[bool, str]:
    try:
        return True, fn()
    except Exception as exc:
        return False, str(exc).splitlines()[0] if str(exc) else repr(exc)


def cmd_doctor(args: argparse.Namespace) -> int:
    import vgpu_nb as vg
    from vgpu_nb.devices import discover

    lines: list[tuple[bool, str, str]] = []

    def add(ok: bool, what: str, msg: str) -> None:
        lines.append((ok, what, msg))
        mark = "ok " if ok else "-- "
        print(f"{mark} {what:10s} {msg}", flush=True)

    print(f"vgpu_nb {vg.__version__} on Python {sys.version.split()[0]}\n")
    for backend in ("numpy", "numba", "cuda", "wgpu"):
        infos = discover(backend)
        usable = [i for i in infos if i.available]
        if not usable:
            add(False, backend, f"{infos[0].why_not}")
            continue
        for info in usable:
            ok, msg = _check(info.name, lambda n=info.name: _smoke(n))
            add(ok, info.name, f"{info.adapter}: {msg}")
            if ok and info.kind == "cpu-emulated gpu":
                add(
                    True,
                    "",
                    "   (CPU-emulated WebGPU: correct but slow; a real GPU driver is faster)",
                )
    if (
        importlib.util.find_spec("wgpu")
        and sys.platform.startswith("linux")
        and shutil.which("ldconfig")
    ):
        import subprocess

        libs = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
        if "libvulkan.so" not in libs:
            add(
                False,
                "vulkan",
                "no Vulkan loader: sudo apt-get install libvulkan1 mesa-vulkan-drivers",
            )
    for mod, extra in (("ipywidgets", "notebook"), ("jupyterlab", "notebook")):
        present = importlib.util.find_spec(mod) is not None
        add(present, mod, "installed" if present else f"missing: pip install 'vgpu-nb[{extra}]'")
    core_ok = all(ok for ok, what, _ in lines if what in ("numpy", "numba"))
    return 0 if core_ok else 1


def cmd_calibrate(args: argparse.Namespace) -> int:
    import pandas as pd

    from .scheduler.calibration import calibrate

    df = calibrate(args.device or None, force=args.force)
    with pd.option_context("display.width", 200, "display.float_format", "{:.2f}".format):
        print(df.to_string())
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="vgpu-nb", description="vgpu_nb command line")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("devices", help="list every device, available or not (and why)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(fn=cmd_devices)
    p = sub.add_parser("doctor", help="check each backend and say how to fix what is missing")
    p.set_defaults(fn=cmd_doctor)
    p = sub.add_parser("calibrate", help="measure each device's peaks (cached per machine)")
    p.add_argument("--device", action="append", help="only this device (repeatable)")
    p.add_argument("--force", action="store_true", help="measure again, ignoring the cache")
    p.set_defaults(fn=cmd_calibrate)
    args = ap.parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
