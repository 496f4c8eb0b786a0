"""The ``vgpu-nb`` command line, run as a user would (a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys

from vgpu_nb.devices import discover


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vgpu_nb", *args], capture_output=True, text=True, timeout=300
    )


def test_devices_lists_every_backend_and_explains_the_missing():
    r = _cli("devices")
    assert r.returncode == 0, r.stderr
    for name in ("numpy", "numba"):
        assert name in r.stdout
    unavailable = [i for b in ("cuda", "wgpu") for i in discover(b) if not i.available]
    for info in unavailable:  # e.g. cuda on a machine without an NVIDIA GPU
        assert f"{info.name}: {info.why_not}" in r.stdout


def test_devices_json():
    rows = json.loads(_cli("devices", "--json").stdout)
    by_name = {row["device"]: row for row in rows}
    assert by_name["numpy"]["available"] is True
    assert all(row["available"] or row["why_not"] for row in rows)


def test_doctor_runs_real_ops_and_names_fixes():
    r = _cli("doctor")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok  numpy" in r.stdout and "ok  numba" in r.stdout
    assert "sum + matmul correct" in r.stdout
    for info in discover("cuda"):
        if not info.available:
            assert f"--  cuda       {info.why_not}" in r.stdout


def test_bad_subcommand_is_a_usage_error():
    r = _cli("frobnicate")
    assert r.returncode == 2 and "invalid choice" in r.stderr
