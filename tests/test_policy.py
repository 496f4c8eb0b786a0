"""Scheduling policies (issue 5, step 3): the choices they must make on synthetic
predictions, and the reason sentence."""

from __future__ import annotations

import pytest

import vgpu_nb as vg
from vgpu_nb.scheduler.cost import Prediction
from vgpu_nb.scheduler.policy import POLICIES, choose

KINDS = {"numba": "cpu", "wgpu:1": "cpu-emulated gpu", "cuda:0": "gpu"}


def preds(numba: float, llvmpipe: float, cuda: float) -> list[Prediction]:
    return [Prediction("numba", numba, "roofline"), Prediction("wgpu:1", llvmpipe, "roofline"),
            Prediction("cuda:0", cuda, "history", 7)]  # fmt: skip


def test_performance_picks_the_fastest_and_says_why():
    d = choose("saxpy", preds(9.8e-3, 20e-3, 0.42e-3), KINDS)
    assert d.choice == "cuda:0"
    assert d.reason.startswith("cuda:0: 0.42 ms predicted vs numba 9.8 ms, wgpu:1 20 ms")
    assert "from 7 past runs" in d.reason


def test_locality_avoids_moving_data():
    moved = {"numba": 0, "wgpu:1": 400_000_000, "cuda:0": 400_000_000}
    d = choose("saxpy", preds(9.8e-3, 20e-3, 0.42e-3), KINDS, "locality", moved)
    assert (
        d.choice == "numba" and "already resident" in d.reason and "[policy locality]" in d.reason
    )


def test_cpu_and_gpu_only():
    p = preds(9.8e-3, 5e-3, 0.42e-3)
    assert choose("k", p, KINDS, "cpu_only").choice == "wgpu:1"  # an emulated GPU is a CPU
    assert choose("k", p, KINDS, "gpu_only").choice == "cuda:0"
    with pytest.raises(vg.DeviceUnavailable, match="gpu_only"):
        choose("k", p[:2], KINDS, "gpu_only")


@pytest.mark.parametrize(
    ("times", "want"),
    [
        ((1.4e-3, 3e-3, 1e-3), "numba"),
        ((1.6e-3, 1.2e-3, 1e-3), "wgpu:1"),
        ((2e-3, 2e-3, 1e-3), "cuda:0"),
    ],
)
def test_power_saver_takes_the_cheapest_within_1_5x(times, want):
    assert choose("k", preds(*times), KINDS, "power_saver").choice == want


def test_one_candidate_is_that_candidate():
    d = choose("k", [Prediction("numba", 1.0, "roofline")], KINDS)
    assert d.choice == "numba" and d.reason == "numba: 1 s predicted"


def test_decision_error_after_the_run():
    d = choose("k", preds(4e-3, 5e-3, 2e-3), KINDS)
    assert d.error is None
    d.actual_s = 3e-3
    assert d.predicted_s == 2e-3 and d.error == pytest.approx(0.5)
    row = d.as_dict()
    assert row["choice"] == "cuda:0" and row["actual_ms"] == pytest.approx(3.0)


def test_unknown_policy():
    with pytest.raises(ValueError, match="unknown policy 'fastest'"):
        choose("k", preds(1, 1, 1), KINDS, "fastest")
    assert "performance" in POLICIES
