"""CUDA-specific behaviour (runs on the lent GPU through scripts/gpu-check.sh; skipped
elsewhere with the reason)."""

from __future__ import annotations

import numpy as np
import pytest

import vgpu_nb as vg
from vgpu_nb.devices import discover

_cuda = [i for i in discover("cuda") if i.available]
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not _cuda, reason=f"no CUDA device: {discover('cuda')[0].why_not}"),
]


def test_staged_copies_round_trip_large():
    """Through the pinned double buffer: sizes around and over the 32 MiB stage."""
    rng = np.random.default_rng(0)
    for nbytes in (1 << 20, (32 << 20) - 4, (32 << 20) + 12, (100 << 20) + 8):
        a = rng.integers(0, 256, nbytes, dtype=np.uint8).view(np.float32)
        x = vg.asarray(a, device="cuda")
        assert x.numpy().tobytes() == a.tobytes()


def test_cuda_array_interface_and_dlpack():
    import cupy as cp

    x = vg.asarray(np.arange(10, dtype=np.float32), device="cuda")
    c = cp.asarray(x)  # via __cuda_array_interface__, zero-copy
    assert c.data.ptr == x.__cuda_array_interface__["data"][0]
    d = cp.from_dlpack(x)
    assert float(d.sum()) == 45.0
    assert x.__dlpack_device__()[0] == 2  # kDLCUDA


def test_device_time_from_events():
    x = vg.asarray(np.ones(1 << 22, np.float32), device="cuda")
    with vg.profile() as p:
        vg.sum(x)
    (rec,) = p.records
    assert rec.device_s is not None and 0 < rec.device_s < 1.0
    assert rec.gbps > 0


def test_device_info():
    info = vg.get_device("cuda").info
    assert info.memory_bytes > 2**30 and info.compute_units > 0
    assert "CUDA" in info.adapter
