"""The decision log and the policy setting (issue 5, step 4)."""

from __future__ import annotations

import pytest

import vgpu_nb as vg
from vgpu_nb.scheduler.cost import Prediction
from vgpu_nb.scheduler.log import CAPACITY
from vgpu_nb.telemetry import BUS

KINDS = {"numba": "cpu", "cuda:0": "gpu"}


@pytest.fixture(autouse=True)
def _fresh():
    vg.scheduler.clear()
    yield
    vg.scheduler.clear()
    vg.scheduler.policy = "performance"


def _decide(op: str = "saxpy") -> vg.scheduler.Decision:
    preds = [Prediction("numba", 9.8e-3, "roofline", parts={"memory": 9.8e-3}),
             Prediction("cuda:0", 0.42e-3, "history", 6)]  # fmt: skip
    return vg.scheduler.record(vg.scheduler.choose(op, preds, KINDS))


def test_log_dataframe_and_bus():
    seen = []
    with BUS.subscribe(seen.append, kinds=["decision"]):
        d = _decide()
    assert seen == [d]
    d.actual_s = 0.5e-3
    df = vg.scheduler.log()
    assert list(df["choice"]) == ["cuda:0"]
    assert df.loc[0, "pred:numba"] == pytest.approx(9.8) and df.loc[0, "actual_ms"] == 0.5
    assert df.loc[0, "error"] == pytest.approx(0.5e-3 / 0.42e-3 - 1)


def test_log_is_a_bounded_ring():
    for k in range(CAPACITY + 5):
        _decide(f"op{k}")
    df = vg.scheduler.log()
    assert len(df) == CAPACITY and df["op"].iloc[0] == "op5"
    assert list(vg.scheduler.log(last=2)["op"]) == [f"op{CAPACITY + 3}", f"op{CAPACITY + 4}"]


def test_explain():
    d = _decide()
    d.actual_s = 0.5e-3
    text = vg.scheduler.explain(d)
    assert text.splitlines()[0].startswith("saxpy [performance] → cuda:0: cuda:0: 0.42 ms")
    assert "* cuda:0" in text and "history (6 runs)" in text and "(memory 9.8 ms)" in text
    assert "error +19%" in text


def test_policy_setting_and_block():
    assert vg.scheduler.policy == "performance"
    vg.scheduler.policy = "locality"
    assert vg.scheduler.policy == "locality" == vg.scheduler.current_policy()
    with vg.scheduler.policy("cpu_only"):
        assert vg.scheduler.policy == "cpu_only"
    assert vg.scheduler.policy == "locality"
    with pytest.raises(ValueError, match="unknown policy 'fastest'"):
        vg.scheduler.policy = "fastest"
    with pytest.raises(ValueError, match="unknown policy"), vg.scheduler.policy("nope"):
        pass


def test_empty_log():
    assert len(vg.scheduler.log()) == 0 and "choice" in vg.scheduler.log().columns
