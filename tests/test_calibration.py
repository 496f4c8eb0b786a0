"""Calibration (issue 5, first step): micro-benchmarks per device, cached per machine."""

from __future__ import annotations

import json
import math
import os

import pytest

import vgpu_nb as vg
from vgpu_nb import cli
from vgpu_nb.scheduler import calibration as cal


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh, private calibration cache."""
    monkeypatch.setenv("VGPU_NB_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cal, "_MEMO", None)
    return tmp_path


def _available(name: str) -> vg.Device:
    try:
        return vg.get_device(name)
    except vg.errors.VgpuError as exc:
        pytest.skip(f"{name} unavailable: {exc}")


@pytest.mark.parametrize("name", ["numba", "numpy", "wgpu:0"])
def test_measures_positive_peaks(cache, name):
    dev = _available(name)
    df = vg.calibrate(name, progress=False, scale=1 / 16)
    row = df.loc[dev.name]
    for field in ("launch_us", "enqueue_us", "read_gbps", "copy_gbps", "gflops"):
        assert math.isfinite(row[field]) and row[field] > 0, field
    if dev.host_is_device:  # numpy/numba: device memory is RAM, there is no link
        assert row[["h2d_pinned_gbps", "d2h_pageable_gbps"]].isna().all()
    else:
        assert row["h2d_pinned_gbps"] > 0 and row["d2h_pageable_gbps"] > 0
    assert row["seconds"] < 5  # the limit per device


def test_cached_per_machine(cache, monkeypatch):
    vg.calibrate("numba", progress=False, scale=1 / 16)
    files = [f for f in os.listdir(cache) if f.startswith("calibration-")]
    assert files == [f"calibration-{cal.fingerprint()}.json"]
    data = json.loads((cache / files[0]).read_text())
    assert data["numba"]["gflops"] > 0

    def boom(*a, **k):
        raise AssertionError("measured again although cached")

    monkeypatch.setattr(cal, "measure", boom)
    monkeypatch.setattr(cal, "_MEMO", None)  # (a fresh process: read from disk)
    again = vg.calibrate("numba", progress=False)
    assert again.loc["numba", "gflops"] == data["numba"]["gflops"]
    with pytest.raises(AssertionError, match="measured again"):
        vg.calibrate("numba", progress=False, force=True)


def test_fingerprint_is_stable_and_short():
    a, b = cal.fingerprint(), cal.fingerprint()
    assert a == b and len(a) == 16 and int(a, 16) >= 0


def test_a_damaged_cache_file_is_ignored(cache):
    path = cache / f"calibration-{cal.fingerprint()}.json"
    path.write_text("{not json")
    assert cal.load() == {}
    df = vg.calibrate("numba", progress=False, scale=1 / 16)
    assert df.loc["numba", "read_gbps"] > 0
    assert json.loads(path.read_text())["numba"]["device"] == "numba"


def test_devices_shows_calibrated_peaks_once_measured(cache):
    before = vg.devices()
    assert "GFLOPS" not in before.columns  # nothing measured on this (fresh) cache
    vg.calibrate("numba", progress=False, scale=1 / 16)
    after = vg.devices()
    assert after.loc["numba", "GFLOPS"] > 0 and after.loc["numba", "GB/s"] > 0
    assert math.isnan(after.loc["numpy", "GFLOPS"])  # not calibrated: no figure


def test_cli_calibrate(cache, capsys):
    assert cli.main(["calibrate", "--device", "numba"]) == 0
    out = capsys.readouterr().out
    assert "numba" in out and "gflops" in out and "read_gbps" in out
