# ruff: noqa: F841, B007  (kernel bodies assign locals only so that the tests can read their IR)
"""The frontend's type rules and the shape of the IR it produces (no device needed, except
a few end-to-end checks on the 'numpy' device).

Kernels here are plain functions handed to :func:`frontend.parse_kernel`; ``@vg.func``
device functions are real ones.
"""

from __future__ import annotations

import math
from math import sqrt as msqrt

import numpy as np
import pytest

import vgpu_nb as gpu
import vgpu_nb as vg
from vgpu_nb.dtypes import bool_, f32, f64, i32, i64, u32, u64
from vgpu_nb.kernel import builtins as kb
from vgpu_nb.kernel import frontend, ir
from vgpu_nb.kernel.ir import (
    Assign,
    Binary,
    Call,
    Cast,
    Compare,
    Const,
    ForRange,
    Load,
    Logical,
    Math,
    Return,
    Select,
    Shape,
    Store,
    Var,
)

N_INT = 7
F_FLOAT = 2.5
B_BOOL = True
NP_F32 = np.float32(0.1)
NP_F64 = np.float64(0.1)


def parse(pyfunc) -> ir.Function:
    return frontend.parse_kernel(pyfunc)


def values(fn: ir.Function) -> dict[str, ir.Expr]:
    """Local name → the value of its first assignment (top-level statements)."""
    out: dict[str, ir.Expr] = {}
    for s in fn.body:
        if isinstance(s, Assign):
            out.setdefault(s.name, s.value)
    return out


def stores(fn: ir.Function) -> list[Store]:
    return [s for s in ir.walk_stmts(fn.body) if isinstance(s, Store)]


def muls(e: ir.Expr) -> int:
    """Distinct multiplication nodes (x ** k shares its partial products)."""
    return len({id(x) for x in ir.walk_expr(e) if isinstance(x, Binary) and x.op == "mul"})


# ---- literals ----------------------------------------------------------------------------
def test_literal_types():
    def k(out: vg.f32[:]):
        a = 1
        b = 1.5
        c = True
        d = 2**40
        e = 2**63
        f = -(2**31)

    fn = parse(k)
    assert [fn.locals[x] for x in "abcdef"] == [i32, f32, bool_, i64, u64, i32]
    v = values(fn)
    assert isinstance(v["b"], Const) and not v["b"].weak


@pytest.mark.parametrize("t", [f64, f32, i32, u32, i64])
def test_weak_literal_keeps_the_other_type(t):
    def k(x: vg.f32[:]):
        a = x[0] * 2
        b = 2 * x[0]
        c = x[0] + 1
        d = x[0] - 3

    fn = frontend.parse_kernel(_with_array_type(k, {"x": t}))
    for name in "abcd":
        e = values(fn)[name]
        assert fn.locals[name] is t, name
        assert isinstance(e, Binary) and e.type is t
        lit = e.rhs if isinstance(e.rhs, Const) else e.lhs
        assert isinstance(lit, Const) and lit.type is t  # the literal took x's type


def _with_array_type(pyfunc, types):
    """A copy of ``pyfunc`` whose array parameters have the dtypes in ``types``: the
    frontend reads annotations from the source, so we build the source."""
    import inspect
    import linecache
    import textwrap

    src = textwrap.dedent(inspect.getsource(pyfunc))
    for name, t in types.items():
        src = src.replace(f"{name}: vg.f32[:]", f"{name}: vg.{t.name}[:]")
    filename = f"<frontend-test-{pyfunc.__name__}-{'-'.join(t.name for t in types.values())}>"
    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
    ns = {"vg": vg}
    exec(compile(src, filename, "exec"), ns)  # noqa: S102
    return ns[pyfunc.__name__]


def test_float_literal_next_to_int_is_f32():
    def k(n: vg.i32, l: vg.i64):
        a = n * 2.5
        b = l * 0.5

    fn = parse(k)
    assert fn.locals["a"] is f32 and fn.locals["b"] is f32


def test_literal_value_is_rounded_to_its_type():
    def k(x: vg.f64[:]):
        a = 0.1
        b = x[0] * 0.1

    v = values(parse(k))
    assert v["a"].value == float(np.float32(0.1))
    assert v["b"].rhs.value == 0.1 and v["b"].rhs.type is f64  # f64 keeps 0.1 exactly


def test_explicit_cast_of_a_literal_is_strong():
    def k(n: vg.i32, out: vg.f64[:]):
        a = vg.i64(1) << 40
        b = vg.f32(2) * out[0]
        c = vg.u32(-1)
        d = vg.i32(2.9)
        e = vg.i32(-2.9)
        f = np.float32(n)

    fn = parse(k)
    v = values(fn)
    assert fn.locals["a"] is i64
    assert fn.locals["b"] is f64 and isinstance(v["b"].lhs, Const) and v["b"].lhs.type is f64
    assert v["c"].value == 2**32 - 1 and v["d"].value == 2 and v["e"].value == -2
    assert fn.locals["f"] is f32 and isinstance(v["f"], Cast)


def test_weak_literal_must_fit_the_type_it_adopts():
    def ok(u: vg.u32, out: vg.u32[:]):
        out[0] = u - 1
        out[1] = vg.u32(-1)  # an explicit cast wraps

    v = [s.value for s in stores(parse(ok))]
    assert v[0].rhs.value == 1 and v[0].rhs.type is u32
    assert v[1].value == 2**32 - 1

    def bad(u: vg.u32, out: vg.u32[:]):
        out[0] = u * -1

    with pytest.raises(vg.KernelTypeError, match="-1 does not fit in u32"):
        parse(bad)


# ---- promotion ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "a, b, want",
    [
        (i32, u32, u32), (i32, i64, i64), (i64, f32, f32), (f32, f64, f64),
        (bool_, bool_, i32), (u32, i64, i64), (i32, f32, f32), (u32, u64, u64),
    ],
)  # fmt: skip
def test_promotion(a, b, want):
    assert ir.promote(a, b) is want and ir.promote(b, a) is want

    def k(x: vg.f32[:], y: vg.f32[:]):
        s = x[0] + y[0]
        m = x[0] * y[0]

    fn = frontend.parse_kernel(_with_array_type(k, {"x": a, "y": b}))
    for name in "sm":
        e = values(fn)[name]
        assert e.type is want and e.lhs.type is want and e.rhs.type is want
        for side, t in ((e.lhs, a), (e.rhs, b)):
            if t is not want:
                assert isinstance(side, Cast) and side.operand.type is t


def test_true_division():
    def k(n: vg.i32, m: vg.i32, l: vg.i64, x: vg.f64[:]):
        a = n / m
        b = l / 2
        c = x[0] / 2
        d = 7 / 2

    fn = parse(k)
    v = values(fn)
    assert fn.locals["a"] is f32 and v["a"].op == "div"
    assert isinstance(v["a"].lhs, Cast) and isinstance(v["a"].rhs, Cast)
    assert fn.locals["b"] is f64 and fn.locals["c"] is f64
    assert v["d"].value == 3.5 and fn.locals["d"] is f32


def test_floordiv_and_mod_nodes():
    def k(n: vg.i32, x: vg.f32[:]):
        a = n // 3
        b = n % 3
        c = x[0] // 2.0
        d = x[0] % 2.0

    v = values(parse(k))
    assert [v[c].op for c in "abcd"] == ["floordiv", "mod", "floordiv", "mod"]
    assert v["a"].type is i32 and v["c"].type is f32


# ---- powers -------------------------------------------------------------------------------
def test_power_by_literal_expands():
    def k(x: vg.f32[:], n: vg.i32, y: vg.f32):
        a = x[0] ** 2
        b = x[0] ** 3
        c = x[0] ** 0
        d = n**5
        e = x[0] ** 0.5
        f = x[0] ** y
        g = n**1

    v = values(parse(k))
    assert muls(v["a"]) == 1 and muls(v["b"]) == 2 and muls(v["d"]) == 3
    assert not any(isinstance(x, Math) for x in ir.walk_expr(v["a"]))
    assert isinstance(v["c"], Const) and v["c"].value == 1.0 and v["c"].type is f32
    assert v["d"].type is i32
    assert isinstance(v["e"], Math) and v["e"].fn == "sqrt"
    assert isinstance(v["f"], Math) and v["f"].fn == "pow"
    assert isinstance(v["g"], Var)


def test_integer_power_needs_literal_exponent():
    def k(n: vg.i32, m: vg.i32):
        a = n**m

    with pytest.raises(vg.KernelTypeError, match=r"literal non-negative exponent"):
        parse(k)


# ---- folding and comparisons ------------------------------------------------------------------
def test_constant_folding():
    def k(out: vg.f32[:]):
        a = 3 * 4 + 1
        b = -7 // 2
        c = -7 % 3
        d = 2**10
        e = 1 << 40
        f = True + True
        g = 1.5 * 2
        h = 10 - N_INT

    fn = parse(k)
    v = values(fn)
    got = {name: (e.value, fn.locals[name]) for name, e in v.items()}
    assert got == {
        "a": (13, i32), "b": (-4, i32), "c": (2, i32), "d": (1024, i32), "e": (2**40, i64),
        "f": (2, i32), "g": (3.0, f32), "h": (3, i32),
    }  # fmt: skip
    assert all(isinstance(e, Const) for e in v.values())


def test_constant_division_by_zero_folds_like_the_kernel_runs():
    def k(out: vg.f32[:]):
        a = 1 // 0
        b = -7 % 0
        c = 1.0 / 0
        d = -1 / 0
        e = 0.0 / 0.0

    fn = parse(k)
    v = values(fn)
    assert (v["a"].value, v["b"].value, fn.locals["a"]) == (0, 0, i32)  # integer x // 0 == 0
    assert v["c"].value == math.inf and v["d"].value == -math.inf and fn.locals["c"] is f32
    assert math.isnan(v["e"].value)


def test_chained_comparison():
    def k(n: vg.i32, x: vg.f32[:]):
        a = 0 < n < 10
        b = 0.0 <= x[0] < 1.0 != x[1]
        c = 1 < 2 < 3

    v = values(parse(k))
    a = v["a"]
    assert isinstance(a, Logical) and a.op == "and" and a.type is bool_
    assert isinstance(a.lhs, Compare) and a.lhs.op == "lt" and isinstance(a.lhs.rhs, Var)
    assert isinstance(a.rhs, Compare) and a.rhs.op == "lt" and isinstance(a.rhs.lhs, Var)
    b = v["b"]
    assert isinstance(b, Logical) and isinstance(b.lhs, Logical) and b.rhs.op == "ne"
    assert isinstance(v["c"], Const) and v["c"].value is True


@vg.func
def bump(out, i):
    vg.atomic_add(out, i, 1)
    return i


def test_chained_comparison_evaluates_calls_once():
    def k(out: vg.i32[:]):
        i = vg.tid()
        if 0 < bump(out, i) < 10:
            out[i] = 1

    with pytest.raises(vg.KernelSyntaxError, match="twice"):
        parse(k)


def test_select_branches_must_not_write():
    def k(out: vg.i32[:]):
        i = vg.tid()
        out[i] = bump(out, i) if i > 0 else 0

    with pytest.raises(vg.KernelSyntaxError, match="both sides may run"):
        parse(k)


# ---- assignments ----------------------------------------------------------------------------
def test_swap():
    def k(x: vg.f32[:], n: vg.i32):
        a = x[0]
        b = 1.0
        a, b = b, a

    fn = parse(k)
    body = fn.body[2:]
    assert len(body) == 4 and all(isinstance(s, Assign) for s in body)
    t0, t1, sa, sb = body
    assert t0.name.startswith("_") and t1.name.startswith("_")  # both read before any write
    assert isinstance(t0.value, Var) and t0.value.name == "b"
    assert (sa.name, sa.value.name) == ("a", t0.name) and (sb.name, sb.value.name) == ("b", t1.name)


def test_annotated_locals():
    def k(n: vg.i32, x: vg.f32[:]):
        a: vg.f64 = 0
        b: vg.i64 = n
        c: vg.f32
        c = 1
        a += x[0]
        d: "vg.u32" = 3  # noqa: F821, UP037  (string annotations work too)

    fn = parse(k)
    v = values(fn)
    assert [fn.locals[c] for c in "abcd"] == [f64, i64, f32, u32]
    assert isinstance(v["a"], Const) and v["a"].value == 0.0 and v["a"].type is f64
    assert isinstance(v["b"], Cast) and v["b"].type is i64
    assert v["c"].type is f32 and v["c"].value == 1.0


def test_annotated_local_float_to_int_needs_a_cast():
    def k(x: vg.f32[:]):
        a: vg.i32 = x[0]

    with pytest.raises(vg.KernelTypeError, match="would truncate"):
        parse(k)


def test_augmented_store_evaluates_index_once():
    def k(out: vg.i32[:]):
        i = vg.tid()
        out[bump(out, i)] += 1

    fn = parse(k)
    hoist, store = fn.body[1], fn.body[2]
    assert isinstance(hoist, Assign) and isinstance(hoist.value, Call)
    assert isinstance(store, Store) and isinstance(store.index[0], Var)
    assert store.index[0].name == hoist.name
    assert isinstance(store.value.lhs, Load) and store.value.lhs.index[0].name == hoist.name


def test_hidden_locals_avoid_user_names():
    def k(x: vg.f32[:]):
        for j in range(3):
            x[j] = 0.0
        _k0 = 1.5
        _stop1 = 2
        x[0] = _k0

    fn = parse(k)
    loop = fn.body[0]
    assert isinstance(loop, ForRange)
    assert len({loop.counter, loop.limit, loop.stride, "_k0", "_stop1"}) == 5
    assert fn.locals["_k0"] is f32 and fn.locals["_stop1"] is i32


def test_array_attributes():
    def k(m: vg.f32[:, :], out: vg.i32[:]):
        a = m.size
        b = m.ndim
        c = m.shape[-1]
        d = len(m)

    v = values(parse(k))
    assert isinstance(v["a"], Binary) and v["a"].op == "mul"
    assert isinstance(v["b"], Const) and v["b"].value == 2
    assert isinstance(v["c"], Shape) and v["c"].dim == 1
    assert isinstance(v["d"], Shape) and v["d"].dim == 0


# ---- loops ------------------------------------------------------------------------------
def test_for_range_forms():
    def k(x: vg.f32[:], n: vg.i32, l: vg.i64, u: vg.u32):
        for a in range(n):
            x[a] = 0.0
        for b in range(2, n):
            x[b] = 0.0
        for c in range(n, 0, -2):
            x[c] = 0.0
        for d in range(l):
            x[d] = 0.0
        for e in range(u, 0, -1):
            x[e] = 0.0
        for f in range(2**40, 0, -(2**39)):
            x[0] = 0.0

    fn = parse(k)
    loops = [s for s in fn.body if isinstance(s, ForRange)]
    bounds = [(lp.start, lp.stop, lp.step) for lp in loops]
    assert [(s.value, st.value) for s, _, st in bounds[:2]] == [(0, 1), (2, 1)]
    assert isinstance(bounds[0][1], Var) and bounds[0][1].name == "n"
    assert bounds[2][2].value == -2 and bounds[2][1].value == 0
    assert [fn.locals[v] for v in "abcdef"] == [i32, i32, i32, i64, i64, i64]
    assert all(lp.start.type is fn.locals[lp.var] for lp in loops)
    names = set()
    for lp in loops:
        names |= {lp.counter, lp.limit, lp.stride}
    assert len(names) == 3 * len(loops)  # hidden locals are unique


def test_loop_variable_type_and_zero_step():
    def k(x: vg.f32[:]):
        for s in range(0, 10, 0):
            x[s] = 0.0

    with pytest.raises(vg.KernelSyntaxError, match="step must not be zero"):
        parse(k)

    def k2(x: vg.f32[:]):
        for s in range(2.0):
            x[0] = 0.0

    with pytest.raises(vg.KernelTypeError, match="must be integers"):
        parse(k2)


# ---- device functions -------------------------------------------------------------------------
@vg.func
def twice(v):
    return v * 2


@vg.func
def lerp(a: vg.f32, b: vg.f32, t: vg.f32) -> vg.f32:
    return a + (b - a) * t


@vg.func
def inner(a, i):
    return a[i] + 1


@vg.func
def outer(a, i):
    return inner(a, i) * 2


def test_generic_and_annotated_functions():
    def k(x: vg.f32[:], y: vg.f64[:], n: vg.i32):
        a = twice(x[0])
        b = twice(y[0])
        c = twice(n)
        d = lerp(n, 2, 0.5)
        e = twice(3)

    fn = parse(k)
    v = values(fn)
    assert [fn.locals[c] for c in "abcde"] == [f32, f64, i32, f32, i32]
    names = [f.name for f in fn.funcs]
    assert len(set(names)) == len(names) == 4  # twice ×3 types, lerp once
    d = v["d"]
    assert isinstance(d, Call) and d.func.name.startswith("lerp")
    assert isinstance(d.args[0], Cast) and d.args[1].value == 2.0 and d.args[1].type is f32
    assert v["a"].func is not v["b"].func and v["a"].func is v["a"].func


def test_arrays_through_two_levels_of_functions():
    def k(x: vg.f32[:], y: vg.f64[:]):
        i = vg.tid()
        x[i] = outer(x, i)
        y[i] = outer(y, i)

    fn = parse(k)
    names = [f.name for f in fn.funcs]
    assert len(set(names)) == 4
    by = {f.name: f for f in fn.funcs}
    # callees come before callers
    for f in fn.funcs:
        for e in ir.all_exprs(f):
            if isinstance(e, Call):
                assert names.index(e.func.name) < names.index(f.name)
    call = stores(fn)[0].value
    outer_f32 = call.func
    assert isinstance(call.args[0], ir.ArrayArg) and call.args[0].name == "x"
    assert outer_f32.params[0].type == vg.f32[:] and outer_f32.ret is f32
    call_inner = outer_f32.body[0].value.lhs
    assert isinstance(call_inner, Call) and isinstance(call_inner.args[0], ir.ArrayArg)
    assert call_inner.args[0].name == "a" and by[call_inner.func.name].ret is f32
    u = ir.usage(fn)
    assert u.read == {"x", "y"} and u.written == {"x", "y"}


def test_mangled_names_unique_across_same_named_functions():
    def make():
        @vg.func
        def twice(v):  # same name as the module-level one
            return v + v

        return twice

    other = make()

    def k(x: vg.f32[:]):
        a = twice(x[0]) + other(x[0])
        twice_f32 = 1.0

    fn = parse(k)
    names = [f.name for f in fn.funcs]
    assert len(names) == 2 and len(set(names)) == 2
    assert "twice_f32" not in names  # a user local has that name


@vg.func
def relu(v):
    if v < 0:
        return 0
    return v


@vg.func
def sign(v):
    if v > 0:
        return 1
    if v < 0:
        return -1
    return 0


@vg.func
def positive(v):
    if v > 0:
        return True
    return False


@vg.func
def forever(v):
    while True:
        if v > 10:
            return v
        v += 1


def test_return_type_is_the_common_type_of_all_returns():
    def k(x: vg.f32[:], n: vg.i32):
        a = relu(x[0])
        b = sign(x[0])
        c = positive(x[0])
        d = forever(n)

    fn = parse(k)
    assert [fn.locals[c] for c in "abcd"] == [f32, i32, bool_, i32]
    relu_f32 = values(fn)["a"].func
    rets = [s for s in ir.walk_stmts(relu_f32.body) if isinstance(s, Return)]
    assert [r.value.type for r in rets] == [f32, f32]
    assert not any(isinstance(r.value, Cast) for r in rets)  # the f32 is not truncated
    assert rets[0].value.value == 0.0


def test_annotated_return_float_to_int_needs_a_cast():
    @vg.func
    def half(v: vg.f32) -> vg.i32:
        return v / 2

    def k(x: vg.f32[:]):
        a = half(x[0])

    with pytest.raises(vg.KernelTypeError, match="return value of half"):
        parse(k)


def test_bare_return_mixed_with_value():
    @vg.func
    def f(v):
        if v > 0:
            return
        return v

    def k(x: vg.f32[:]):
        a = f(x[0])

    with pytest.raises(vg.KernelTypeError, match="bare 'return'"):
        parse(k)


def test_relu_runs():
    @vg.kernel
    def apply(x: vg.f32[:], out: vg.f32[:]):
        i = vg.tid()
        out[i] = relu(x[i])

    x = vg.asarray(np.array([-1.5, 0.25, 2.75], np.float32), device="numpy")
    out = vg.zeros(3, device="numpy")
    apply[3](x, out)
    np.testing.assert_array_equal(out.numpy(), [0.0, 0.25, 2.75])


# ---- globals and aliases ----------------------------------------------------------------------
def test_globals_are_frozen_constants():
    def k(out: vg.f64[:]):
        a = N_INT
        b = F_FLOAT
        c = B_BOOL
        d = NP_F32
        e = NP_F64
        f = out[0] * NP_F32

    fn = parse(k)
    v = values(fn)
    assert [fn.locals[c] for c in "abcdef"] == [i32, f32, bool_, f32, f64, f64]
    assert (v["a"].value, v["b"].value, v["c"].value) == (7, 2.5, True)
    assert v["d"].value == float(np.float32(0.1)) and not v["d"].weak
    assert v["e"].value == 0.1 and not v["e"].weak  # np.float64 is strong f64, not weak
    assert isinstance(v["f"].rhs, Cast) or v["f"].rhs.type is f64


def test_math_constants_and_aliases():
    def k(x: vg.f32[:]):
        a = math.pi
        b = msqrt(x[0])
        c = gpu.f64(x[0])
        e = math.e * x[0]
        f = math.floor(x[0])
        g = np.float64(x[0])
        h = abs(-x[0])

    fn = parse(k)
    v = values(fn)
    assert v["a"].value == float(np.float32(math.pi)) and fn.locals["a"] is f32
    assert isinstance(v["b"], Math) and v["b"].fn == "sqrt"
    assert isinstance(v["c"], Cast) and v["c"].type is f64
    assert fn.locals["e"] is f32
    assert isinstance(v["f"], Math) and v["f"].fn == "floor" and fn.locals["f"] is f32
    assert isinstance(v["g"], Cast) and fn.locals["g"] is f64  # NumPy scalar types are casts
    assert isinstance(v["h"], Math) and v["h"].fn == "abs"
    assert kb.lookup(msqrt) == kb.Builtin("math", "sqrt")


@pytest.mark.skipif(not hasattr(gpu, "where"), reason="vg.sqrt / vg.where are not exported")
def test_vg_math_aliases():
    def k(x: vg.f32[:]):
        d = gpu.sqrt(x[0])
        f = gpu.where(x[0] > 0.0, x[0], 0.0)
        g = gpu.fma(x[0], 2.0, 1)

    v = values(parse(k))
    assert isinstance(v["d"], Math) and v["d"].fn == "sqrt"
    assert isinstance(v["f"], Select) and v["f"].type is f32
    assert isinstance(v["g"], Math) and v["g"].fn == "fma" and v["g"].type is f32


def test_func_called_from_python_runs_python():
    assert lerp(1.0, 3.0, 0.5) == 2.0
    assert relu(-2.0) == 0 and relu(3.0) == 3.0


# ---- source handling ------------------------------------------------------------------------
NESTED_CELL = """\
def make():
    @vg.kernel
    def k(x: vg.f32[:]):
        \"\"\"A docstring whose lines
are less indented than the def.\"\"\"
        i = vg.tid()
        v = (1.0 +
2.0)
        x[i] = "no"

    return k
"""


def test_nested_definition_with_unindented_lines():
    import linecache

    name = "<ipython-input-3-nested>"
    linecache.cache[name] = (len(NESTED_CELL), None, NESTED_CELL.splitlines(True), name)
    ns = {"vg": vg}
    exec(compile(NESTED_CELL, name, "exec"), ns)  # noqa: S102
    with pytest.raises(vg.KernelSyntaxError) as e:
        ns["make"]().ir  # noqa: B018
    assert e.value.lineno == 9 and 'x[i] = "no"' in str(e.value)
    lines = str(e.value).splitlines()
    caret = next(i for i, ln in enumerate(lines) if ln.strip() == "^")
    assert lines[caret - 1].index('"no"') == lines[caret].index("^")


def test_caret_after_non_ascii_text():
    def k(x: vg.f32[:]):
        i = vg.tid()
        x[i] = max(x[i], 1.0) + x["é"]  # non-ASCII before the caret

    with pytest.raises(vg.KernelSyntaxError) as e:
        parse(k)
    lines = str(e.value).splitlines()
    caret = next(i for i, ln in enumerate(lines) if ln.strip() == "^")
    assert lines[caret - 1].index('"é"') == lines[caret].index("^")


def test_function_firstline_is_the_def_line():
    import inspect

    fn = relu_kernel.ir
    lines, first = inspect.getsourcelines(relu_kernel.pyfunc)
    assert lines[fn.firstline - first].lstrip().startswith("def relu_kernel")


@vg.kernel
def relu_kernel(x: vg.f32[:]):
    i = vg.tid()
    x[i] = relu(x[i])


# ---- static cost -------------------------------------------------------------------------------
def test_cost_saxpy():
    def saxpy(a: vg.f32, x: vg.f32[:], y: vg.f32[:]):
        i = vg.tid()
        y[i] = a * x[i] + y[i]

    c = ir.cost(parse(saxpy))
    assert (c.flops, c.bytes, c.estimated) == (2, 12, False)


def test_cost_loop_counts_iterations():
    def dot_row(m: vg.f32[:, :], v: vg.f32[:], out: vg.f32[:], n: vg.i32):
        i = vg.tid()
        s = 0.0
        for k in range(n):
            s += m[i, k] * v[k]
        out[i] = s

    fn = parse(dot_row)
    c = ir.cost(fn, {"n": 100})
    assert (c.flops, c.bytes, c.estimated) == (200, 804, False)
    c = ir.cost(fn)  # n unknown: one iteration, marked estimated
    assert c.estimated and c.flops == 2

    def over_shape(m: vg.f32[:, :], out: vg.f32[:]):
        i = vg.tid()
        s = 0.0
        for k in range(1, m.shape[1], 2):
            s += m[i, k]
        out[i] = s

    c = ir.cost(parse(over_shape), {("shape", "m", 1): 11})
    assert (c.flops, c.bytes, c.estimated) == (5, 24, False)


def test_cost_while_is_estimated():
    def halve(x: vg.f32[:]):
        i = vg.tid()
        v = x[i]
        while v > 1.0:
            v = v * 0.5
        x[i] = v

    c = ir.cost(parse(halve))
    assert c.estimated and c.bytes == 8
