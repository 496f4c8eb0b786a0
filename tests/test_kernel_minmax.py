"""``min``/``max`` in kernels evaluate each argument once on every backend (the CPU code
generator once expanded them to ``b if b > a else a``: an atomic inside ran twice there,
once on CUDA and WebGPU; found while writing tutorials/07_atomics)."""

from __future__ import annotations

import numpy as np

import vgpu_nb as vg


@vg.kernel
def count_then_clamp(c: vg.i32[:], out: vg.i32[:]):
    i = vg.tid()
    out[i] = max(0, vg.atomic_add(c, 0, 1))
    out[i] = out[i] + min(100, vg.atomic_add(c, 1, 1)) * 0


def test_min_max_arguments_run_once(device):
    c = vg.zeros(2, dtype=vg.i32, device=device)
    out = vg.zeros(6, dtype=vg.i32, device=device)
    count_then_clamp[6](c, out)
    assert c.numpy().tolist() == [6, 6]
    assert sorted(out.numpy().tolist()) == [0, 1, 2, 3, 4, 5]


@vg.kernel
def relu(x: vg.f32[:], y: vg.f32[:]):
    i = vg.tid()
    y[i] = max(0.0, x[i])


def test_a_trace_counts_one_read_per_max():
    x = vg.asarray(np.array([1.0, -2.0, 3.0], np.float32), device="numba")
    y = vg.zeros(3, device="numba")
    t = relu.trace(3, x, y)
    assert t.max_reads == 1 and t.total_reads == 3
    np.testing.assert_array_equal(t.arrays["y"], [1.0, 0.0, 3.0])
