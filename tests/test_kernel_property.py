"""Property test: random typed expression kernels give the same answer on every device as
on the NumPy backend (the reference).

The generated kernels compute one i32 and one f32 expression per thread. Integer
expressions use every integer operator (wrap-around, floor ``//`` and ``%`` by zero
included), so they must agree **bit for bit**. Float expressions are built so that every
intermediate value is an exactly representable f32 (integer-valued inputs, ``+ - *``,
``* 0.5``, ``min``/``max``/``abs``, selects on integer conditions, i32→f32 casts, with
magnitudes checked below 2**24): any correctly rounded backend — with or without fused
multiply-add — must agree bit for bit too. (Transcendental functions, which legitimately
differ by ulps, are covered with tolerances in ``test_kernel_conformance``.)

It runs once per device (the ``device`` fixture, so CUDA and hardware WebGPU runs carry
the ``gpu`` mark), each against exact Python arithmetic.
"""

from __future__ import annotations

import itertools
import linecache
import operator
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import vgpu_nb as vg

N = 64
EXAMPLES = int(os.environ.get("VGPU_PROPERTY_EXAMPLES", "200"))
_LIMIT = 2**24  # f32 integers are exact below this
_counter = itertools.count()

# expression trees: (text, python evaluator over a dict of per-thread values)
INT_LEAVES = ["a[i]", "b[i]"]
FLOAT_LEAVES = ["x[i]", "y[i]"]


def _wrap32(v: int) -> int:
    return (v + 2**31) % 2**32 - 2**31


def _fdiv(p: int, q: int) -> int:
    return 0 if q == 0 else p // q


def _fmod(p: int, q: int) -> int:
    return 0 if q == 0 else p % q


@st.composite
def int_expr(draw, depth: int = 3):  # noqa: ANN001, ANN201
    """(text, f(env) -> int wrapped to i32)."""
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        if draw(st.booleans()):
            leaf = draw(st.sampled_from(INT_LEAVES))
            return leaf, lambda env, leaf=leaf: env[leaf]
        c = draw(st.integers(-20, 20))
        return (f"({c})" if c < 0 else str(c)), lambda env, c=c: c
    kind = draw(st.sampled_from(["bin", "bin", "bin", "fn", "sel", "neg", "bits", "shift"]))
    if kind == "bin":
        op = draw(st.sampled_from(["+", "-", "*", "//", "%"]))
        (ta, fa), (tb, fb) = draw(int_expr(depth - 1)), draw(int_expr(depth - 1))
        f = {
            "+": lambda p, q: p + q, "-": lambda p, q: p - q, "*": lambda p, q: p * q,
            "//": _fdiv, "%": _fmod,
        }[op]  # fmt: skip
        return f"({ta} {op} {tb})", lambda env: _wrap32(f(fa(env), fb(env)))
    if kind == "bits":
        op = draw(st.sampled_from(["&", "|", "^"]))
        (ta, fa), (tb, fb) = draw(int_expr(depth - 1)), draw(int_expr(depth - 1))
        f = {"&": lambda p, q: p & q, "|": lambda p, q: p | q, "^": lambda p, q: p ^ q}[op]
        return f"({ta} {op} {tb})", lambda env: _wrap32(f(fa(env), fb(env)))
    if kind == "shift":
        ta, fa = draw(int_expr(depth - 1))
        k = draw(st.integers(0, 31))
        if draw(st.booleans()):
            return f"({ta} << {k})", lambda env: _wrap32(fa(env) << k)
        return f"({ta} >> {k})", lambda env: fa(env) >> k
    if kind == "fn":
        fn = draw(st.sampled_from(["min", "max", "abs"]))
        ta, fa = draw(int_expr(depth - 1))
        if fn == "abs":
            return f"abs({ta})", lambda env: _wrap32(abs(fa(env)))
        tb, fb = draw(int_expr(depth - 1))
        f = min if fn == "min" else max
        return f"{fn}({ta}, {tb})", lambda env: f(fa(env), fb(env))
    if kind == "neg":
        ta, fa = draw(int_expr(depth - 1))
        return f"(-{ta})", lambda env: _wrap32(-fa(env))
    (tc, fc), (ta, fa), (tb, fb) = (
        draw(cond()),
        draw(int_expr(depth - 1)),
        draw(int_expr(depth - 1)),
    )
    return f"({ta} if {tc} else {tb})", lambda env: fa(env) if fc(env) else fb(env)


@st.composite
def cond(draw):  # noqa: ANN001, ANN201
    """Integer comparisons combined with and/or/not (exact on every backend)."""
    (ta, fa), (tb, fb) = draw(int_expr(1)), draw(int_expr(1))
    op = draw(st.sampled_from(["<", "<=", ">", ">=", "==", "!="]))
    f = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
         "==": operator.eq, "!=": operator.ne}[op]  # fmt: skip
    text, fn = f"({ta} {op} {tb})", (lambda env: f(fa(env), fb(env)))
    how = draw(st.sampled_from(["plain", "not", "and", "or"]))
    if how == "not":
        return f"(not {text})", lambda env: not fn(env)
    if how in ("and", "or"):
        t2, f2 = draw(cond_leaf())
        if how == "and":
            return f"({text} and {t2})", lambda env: fn(env) and f2(env)
        return f"({text} or {t2})", lambda env: fn(env) or f2(env)
    return text, fn


@st.composite
def cond_leaf(draw):  # noqa: ANN001, ANN201
    leaf = draw(st.sampled_from(INT_LEAVES))
    c = draw(st.integers(-5, 5))
    return f"({leaf} > {c})", lambda env: env[leaf] > c


class TooBig(Exception):
    pass


def _f(v: float) -> float:
    if abs(v) >= _LIMIT:
        raise TooBig
    return v


@st.composite
def float_expr(draw, depth: int = 3):  # noqa: ANN001, ANN201
    """(text, f(env) -> exact float); every intermediate stays an exact f32."""
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        choice = draw(st.integers(0, 2))
        if choice == 0:
            leaf = draw(st.sampled_from(FLOAT_LEAVES))
            return leaf, lambda env, leaf=leaf: env[leaf]
        if choice == 1:
            c = draw(st.integers(-16, 16)) / 2
            return f"({c!r})", lambda env, c=c: c
        leaf = draw(st.sampled_from(INT_LEAVES))
        return f"vg.f32({leaf} % 1000)", lambda env, leaf=leaf: float(_fmod(env[leaf], 1000))
    kind = draw(st.sampled_from(["bin", "bin", "half", "fn", "sel", "neg"]))
    ta, fa = draw(float_expr(depth - 1))
    if kind == "bin":
        op = draw(st.sampled_from(["+", "-", "*"]))
        tb, fb = draw(float_expr(depth - 1))
        f = {"+": lambda p, q: p + q, "-": lambda p, q: p - q, "*": lambda p, q: p * q}[op]
        return f"({ta} {op} {tb})", lambda env: _f(f(fa(env), fb(env)))
    if kind == "half":
        return f"({ta} * 0.5)", lambda env: fa(env) * 0.5
    if kind == "fn":
        fn = draw(st.sampled_from(["min", "max", "abs"]))
        if fn == "abs":
            return f"abs({ta})", lambda env: abs(fa(env))
        tb, fb = draw(float_expr(depth - 1))
        f = min if fn == "min" else max
        return f"{fn}({ta}, {tb})", lambda env: f(fa(env), fb(env))
    if kind == "neg":
        return f"(-{ta})", lambda env: -fa(env)
    (tc, fc), (tb, fb) = draw(cond()), draw(float_expr(depth - 1))
    return f"({ta} if {tc} else {tb})", lambda env: fa(env) if fc(env) else fb(env)


def _make_kernel(itext: str, ftext: str) -> vg.Kernel:
    name = f"prop_{next(_counter)}"
    src = (
        f"def {name}(a: vg.i32[:], b: vg.i32[:], x: vg.f32[:], y: vg.f32[:], "
        "oi: vg.i32[:], of: vg.f32[:]):\n"
        "    i = vg.tid()\n"
        f"    oi[i] = {itext}\n"
        f"    of[i] = {ftext}\n"
    )
    filename = f"<vgpu_nb-property {name}>"
    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
    ns = {"vg": vg}
    exec(compile(src, filename, "exec"), ns)  # noqa: S102
    return vg.kernel(ns[name])


def _inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1234)
    a = rng.integers(-(2**31), 2**31, N, dtype=np.int64).astype(np.int32)
    a[:16] = rng.integers(-10, 10, 16)  # small values too, and zeros as divisors
    b = rng.integers(-6, 7, N).astype(np.int32)
    b[-8:] = rng.integers(-(2**31), 2**31, 8, dtype=np.int64).astype(np.int32)
    x = rng.integers(-20, 21, N).astype(np.float32)
    y = (rng.integers(-40, 41, N) / 4).astype(np.float32)
    return {"a": a, "b": b, "x": x, "y": y}


INPUTS = _inputs()
ENV_ROWS = [
    {"a[i]": int(INPUTS["a"][t]), "b[i]": int(INPUTS["b"][t]), "x[i]": float(INPUTS["x"][t]),
     "y[i]": float(INPUTS["y"][t])}
    for t in range(N)
]  # fmt: skip


def _run(k: vg.Kernel, device: vg.Device) -> tuple[np.ndarray, np.ndarray]:
    arrs = {n: vg.asarray(v, device=device) for n, v in INPUTS.items()}
    oi = vg.zeros(N, dtype=vg.i32, device=device)
    of = vg.zeros(N, dtype=vg.f32, device=device)
    k[N](arrs["a"], arrs["b"], arrs["x"], arrs["y"], oi, of)
    return oi.numpy(), of.numpy()


def test_random_kernels_agree(device):
    """Every device computes exactly what Python's integer arithmetic (wrapped to i32)
    and exact float arithmetic say — the NumPy backend included."""

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        derandomize=True,
        database=None,
    )
    @given(int_expr(), float_expr())
    def check(ie, fe):  # noqa: ANN001, ANN202
        (itext, ifn), (ftext, ffn) = ie, fe
        try:
            want_f = np.array([ffn(env) for env in ENV_ROWS], np.float32)
        except TooBig:
            assume(False)
        want_i = np.array([ifn(env) for env in ENV_ROWS], np.int64).astype(np.int32)
        k = _make_kernel(itext, ftext)
        got_i, got_f = _run(k, device)
        np.testing.assert_array_equal(got_i, want_i, err_msg=f"{device.name}: {itext}")
        np.testing.assert_array_equal(got_f, want_f, err_msg=f"{device.name}: {ftext}")

    check()


def test_property_runs_enough_examples():
    if os.environ.get("VGPU_PROPERTY_EXAMPLES"):
        pytest.skip("example count overridden by VGPU_PROPERTY_EXAMPLES")
    assert EXAMPLES >= 200
