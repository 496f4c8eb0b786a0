"""Rich reprs (issue 6): arrays, launch records, op records and decisions render as
compact HTML tables in notebooks; their text reprs are unchanged."""

from __future__ import annotations

import numpy as np
import pytest

import vgpu_nb as vg


@vg.kernel
def inc(x: vg.f32[:]):
    i = vg.tid()
    x[i] = x[i] + 1.0


def test_array_html_says_where_it_lives_and_shows_values():
    x = vg.asarray(np.arange(5, dtype=np.float32), device="numba")
    h = x._repr_html_()
    for fact in ("<table>", "(5,)", "f32", "numba", "device", "20 B", "0., 1., 2., 3., 4."):
        assert fact in h, fact
    assert repr(x).startswith("vg.Array([0., 1., 2., 3., 4.]")


def test_a_long_array_is_summarised_and_escaped():
    x = vg.arange(1000, dtype=vg.i32, device="numba")
    h = x._repr_html_()
    assert "..." in h and "999" in h and h.count("<td>") == 5


def test_launch_and_op_records_render_one_row():
    x = vg.zeros(64, device="numba")
    rec = inc.launch(64, x)
    h = rec._repr_html_()
    assert "vg.LaunchRecord" in h and "inc" in h and "numba" in h and "(64,)" in h
    assert "launches" in h and "compile" in h and " ms " in h and h.count("<tr>") == 2
    assert "GB/s</td>" in h and "GFLOPS</td>" in h  # (units on measured values)
    with vg.profile() as p:
        vg.sum(x)
    op = next(r for r in p.records if r.op == "sum")
    h = op._repr_html_()
    assert "vg.OpRecord" in h and "sum" in h and "launches" not in h


@pytest.mark.scheduler
def test_decision_html_lists_candidates_with_the_choice_in_bold(fresh_scheduler):
    x = vg.ones(1 << 12, device="numba")
    with vg.device("auto"):
        float(vg.sum(x))
    d = vg.scheduler.decisions()[-1]
    h = d._repr_html_()
    assert d.reason.split(":")[0] in h and f"<td><b>{d.choice}</b></td>" in h
    assert all(p.device in h for p in d.candidates)
