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
