"""Shared fixtures: the ``device`` fixture runs a test once per device of this machine.

Unavailable devices appear as skipped tests with the reason (``-ra`` prints it). Tests on
``cuda:*`` and on hardware WebGPU adapters carry the ``gpu`` marker, so
``scripts/gpu-check.sh`` can select them with ``-m gpu`` on the lent machine.
``VGPU_TEST_DEVICES=numpy,wgpu:0`` restricts the run to some devices.
"""

from __future__ import annotations

import gc
import os
import zlib
from collections.abc import Iterator

import numpy as np
import pytest

import vgpu_nb as vg
from vgpu_nb.devices import all_infos

os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")  # silence Mesa's EGL warning


def _device_params() -> list:
    wanted = [w for w in os.environ.get("VGPU_TEST_DEVICES", "").split(",") if w]
    params = []
    for info in all_infos():
        if wanted and info.name not in wanted and info.backend not in wanted:
            continue
        marks = []
        if info.backend == "cuda" or (info.backend == "wgpu" and info.kind == "gpu"):
            marks.append(pytest.mark.gpu)
        if not info.available:
            marks.append(pytest.mark.skip(reason=f"{info.name} unavailable: {info.why_not}"))
        params.append(pytest.param(info.name, marks=marks, id=info.name))
    return params


DEVICE_PARAMS = _device_params()


@pytest.fixture(params=DEVICE_PARAMS)
def device(request: pytest.FixtureRequest) -> vg.Device:
    return vg.get_device(request.param)


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> np.random.Generator:
    """Fresh, reproducible random data per test (seeded by the test id)."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture
def restore_memory() -> Iterator[None]:
    """Leave the default memory budgets behind, no prefetch running and no dead arrays
    (``pytestmark = pytest.mark.usefixtures("restore_memory")`` in memory-tier tests)."""
    yield
    vg.memory.wait(timeout=60)
    vg.memory.reset()
    gc.collect()


@pytest.fixture(scope="session")
def calibrated_machine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every device of this machine calibrated once (small sizes), in a private cache."""
    from vgpu_nb.scheduler import calibration as cal

    # (only the calibration file moves: compiled kernels keep their cache, or every later
    # test would compile from scratch)
    path = str(tmp_path_factory.mktemp("calib") / "calibration.json")
    old_file, old_memo = cal._cache_file, cal._MEMO
    env = os.environ.get("VGPU_NB_CACHE_DIR")
    # (a test that points VGPU_NB_CACHE_DIR elsewhere gets its own file there)
    cal._cache_file = lambda: path if os.environ.get("VGPU_NB_CACHE_DIR") == env else old_file()
    cal._MEMO = None
    vg.calibrate(progress=False, scale=1 / 16)
    yield
    cal._cache_file, cal._MEMO = old_file, old_memo


@pytest.fixture
def fresh_scheduler(calibrated_machine: None) -> Iterator[None]:
    """No decisions, history or settings left over from another test, before or after."""
    from vgpu_nb.scheduler import auto

    auto.reset()
    vg.scheduler.clear()
    yield
    auto.reset()
    vg.scheduler.clear()
    vg.scheduler.policy = "performance"
    vg.scheduler.split = False
    vg.use("numba")
