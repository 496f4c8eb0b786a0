"""The kernel language on WebGPU: generated WGSL launched through ``WgpuDevice``
(``compile_kernel`` / ``launch_kernel``, ``compile_reduction`` / ``run_reduction``) and
compared with NumPy computing the same thing.

Runs on the first WebGPU adapter with every optional feature (llvmpipe's Vulkan adapter in
CI); restricted devices (``open_device(info, features=[])``) exercise the refusals.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

import vgpu_nb as vg
from vgpu_nb.dtypes import DType, bool_, f32, i32, i64
from vgpu_nb.errors import BufferTooLarge, KernelCompileError, UnsupportedOnBackend
from vgpu_nb.kernel import cache as kcache
from vgpu_nb.kernel import codegen_wgsl as cg
from vgpu_nb.kernel import ir
from vgpu_nb.kernel.builtins import atomic_add, atomic_max, atomic_min, tid
from vgpu_nb.kernel.frontend import Func, parse_func, parse_kernel

wb = pytest.importorskip("vgpu_nb.backends.wgpu_backend")
pytest.importorskip("wgpu")

os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
ROWS = [r for r in wb.discover() if r.available]
if not ROWS:
    pytest.skip("no WebGPU adapter on this machine", allow_module_level=True)
FULL = next(
    (r for r in ROWS if set(r.extra["compute_features"]) >= {"shader-f64", "shader-int64"}),
    ROWS[0],
)


@pytest.fixture(scope="module", params=ROWS, ids=[r.name for r in ROWS])
def dev(request):
    """Every adapter (llvmpipe: Vulkan, and OpenGL where Naga emits GLSL)."""
    return wb.open_device(request.param)


def needs(dev, *features: str) -> None:
    missing = [f for f in features if f not in dev.features]
    if missing:
        pytest.skip(f"{dev.name} has no {', '.join(missing)}")


@pytest.fixture
def rng(request):
    import zlib

    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def launch(dev, pyfunc, domain, *args):
    """Compile ``pyfunc`` for ``dev``, launch it over ``domain`` with host arguments (NumPy
    arrays are uploaded, scalars converted to the parameter's dtype) and return the arrays
    afterwards, in parameter order."""
    fn = parse_kernel(pyfunc)
    why = dev.kernel_unsupported(fn)
    if why is not None:
        pytest.skip(why)
    ck = dev.compile_kernel(fn)
    native, arrays = [], []
    for p, a in zip(fn.params, args, strict=True):
        if p.is_array:
            a = np.ascontiguousarray(a, dtype=p.type.dtype.np)
            buf = dev.from_numpy(a)
            native.append((buf, a.shape))
            arrays.append((buf, a.shape, p.type.dtype))
        else:
            native.append(p.type.np.type(a))
    dev.launch_kernel(ck, domain if isinstance(domain, tuple) else (domain,), native)
    return [dev.to_numpy(b, s, d).copy() for b, s, d in arrays]


# ---- elementwise -----------------------------------------------------------------------------
def saxpy(x: vg.f32[:], y: vg.f32[:], out: vg.f32[:], a: vg.f32):
    i = tid()
    out[i] = a * x[i] + y[i]


def test_saxpy(dev, rng):
    n = 1000
    x, y = rng.standard_normal(n, np.float32), rng.standard_normal(n, np.float32)
    (_, _, out) = launch(dev, saxpy, n, x, y, np.zeros(n), 2.5)
    np.testing.assert_array_equal(out, np.float32(2.5) * x + y)


def int_wrap(x: vg.i32[:], out: vg.i32[:]):
    i = tid()
    out[i] = x[i] * 65537 + 2147483600 - (-x[i])


def test_i32_wraps(dev, rng):
    x = rng.integers(-(2**31), 2**31, 777, dtype=np.int32)
    (_, out) = launch(dev, int_wrap, x.size, x, np.zeros_like(x))
    with np.errstate(over="ignore"):
        ref = x * np.int32(65537) + np.int32(2147483600) - (-x)
    np.testing.assert_array_equal(out, ref)


def u32_hash(x: vg.u32[:], out: vg.u32[:]):
    i = tid()
    v = x[i] * 2654435761
    out[i] = (v ^ (v >> 13)) + (-x[i]) + (~v)


def test_u32_ops(dev, rng):
    x = rng.integers(0, 2**32, 513, dtype=np.uint32)
    (_, out) = launch(dev, u32_hash, x.size, x, np.zeros_like(x))
    with np.errstate(over="ignore"):
        v = x * np.uint32(2654435761)
        ref = (v ^ (v >> np.uint32(13))) + (np.uint32(0) - x) + ~v
    np.testing.assert_array_equal(out, ref)


def bool_logic(a: vg.bool[:], b: vg.bool[:], x: vg.f32[:], out: vg.bool[:], flag: vg.bool):
    i = tid()
    out[i] = (a[i] and not b[i]) or (x[i] > 0 and flag) or (a[i] ^ b[i] and x[i] < -1)


@pytest.mark.parametrize("flag", [True, False])
def test_bool_elementwise(dev, rng, flag):
    n = 1001  # not a multiple of 4: the last word is partly padding
    a, b = rng.random(n) < 0.5, rng.random(n) < 0.5
    x = rng.standard_normal(n).astype(np.float32)
    (_, _, _, out) = launch(dev, bool_logic, n, a, b, x, np.zeros(n, bool), flag)
    ref = (a & ~b) | ((x > 0) & flag) | ((a ^ b) & (x < -1))
    np.testing.assert_array_equal(out, ref)


# ---- 2-D -------------------------------------------------------------------------------------
def grid2d(a: vg.f32[:, :], out: vg.f32[:, :], t: vg.f32[:, :]):
    i, j = tid()
    out[i, j] = a[i, j] * 2 + i * 1000 - j + a.shape[0] * 0.5 + a.shape[1] * 0.25
    t[j, i] = a[i, j]


def test_2d_indices_shapes_and_transpose(dev, rng):
    ny, nx = 37, 129
    a = rng.standard_normal((ny, nx)).astype(np.float32)
    (_, out, t) = launch(dev, grid2d, (ny, nx), a, np.zeros((ny, nx)), np.zeros((nx, ny)))
    ii, jj = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    ref = a * 2 + (ii * 1000 - jj).astype(np.float32) + np.float32(ny * 0.5 + nx * 0.25)
    np.testing.assert_allclose(out, ref, rtol=1e-6)
    np.testing.assert_array_equal(t, a.T)


# ---- control flow ----------------------------------------------------------------------------
def row_sums(a: vg.f32[:, :], out: vg.f32[:]):
    i = tid()
    s = 0.0
    for k in range(a.shape[1]):
        s += a[i, k]
    out[i] = s


def test_loop_row_sums(dev, rng):
    a = rng.integers(-100, 100, (50, 33)).astype(np.float32)
    (_, out) = launch(dev, row_sums, 50, a, np.zeros(50))
    np.testing.assert_array_equal(out, a.sum(axis=1))


def neg_steps(out: vg.i32[:], step: vg.i32):
    i = tid()
    acc = 0
    for k in range(i, -1, -2):  # constant negative step
        acc = acc * 3 + k
    for k in range(20 - i, i, step):  # a step known only at launch (either sign)
        acc = acc * 7 + k
        k = 1000  # does not change the iteration (Python semantics)
    for _k in range(2147483600, 2147483647, 20):  # near the end of i32: no overflow
        acc += 1
    out[i] = acc


@pytest.mark.parametrize("step", [-3, 2])
def test_range_loops(dev, step):
    n = 24
    (out,) = launch(dev, neg_steps, n, np.zeros(n, np.int32), step)
    ref = []
    for i in range(n):
        acc = 0
        for k in range(i, -1, -2):
            acc = acc * 3 + k
        for k in range(20 - i, i, step):
            acc = acc * 7 + k
        acc += len(range(2147483600, 2147483647, 20))
        ref.append(np.int64(acc).astype(np.int32))
    np.testing.assert_array_equal(out, np.array(ref, np.int32))


def break_continue(x: vg.f32[:], first: vg.i32[:], odd_sum: vg.f32[:], thr: vg.f32):
    i = tid()
    first[i] = -1
    for k in range(x.shape[0]):
        if x[(i + k) % x.shape[0]] > thr:
            first[i] = k
            break
    s = 0.0
    k = 0
    while k < x.shape[0]:
        k += 1
        if (k + i) % 2 == 1:
            continue
        s += x[k - 1]
    odd_sum[i] = s


def test_break_continue_while(dev, rng):
    x = rng.integers(0, 100, 64).astype(np.float32)
    n = 16
    (_, first, odd_sum) = launch(dev, break_continue, n, x, np.zeros(n), np.zeros(n), 90.0)
    for i in range(n):
        hits = [k for k in range(x.size) if x[(i + k) % x.size] > 90]
        assert first[i] == (hits[0] if hits else -1)
        assert odd_sum[i] == sum(x[k - 1] for k in range(1, x.size + 1) if (k + i) % 2 == 0)


def collatz(x: vg.u32[:], steps: vg.i32[:]):
    i = tid()
    v = x[i]
    c = 0
    while v != 1:
        if v % 2 == 0:
            v = v // 2
        else:
            v = 3 * v + 1
        c += 1
    steps[i] = c


def test_while_collatz(dev):
    x = np.arange(1, 301, dtype=np.uint32)
    (_, steps) = launch(dev, collatz, x.size, x, np.zeros(x.size, np.int32))

    def ref(v: int) -> int:
        c = 0
        while v != 1:
            v = v // 2 if v % 2 == 0 else 3 * v + 1
            c += 1
        return c

    np.testing.assert_array_equal(steps, [ref(int(v)) for v in x])


def classify(x: vg.f32[:], out: vg.i32[:]):
    i = tid()
    v = x[i]
    if v < -1:
        out[i] = 0
    elif v < 0:
        out[i] = 1
    elif v == 0:
        out[i] = 2
    elif v <= 1:
        out[i] = 3
    else:
        out[i] = 4
        if v > 2:
            return
        out[i] = 5


def test_if_elif_else_return(dev):
    x = np.array([-3, -1, -0.5, 0, 0.5, 1, 1.5, 2, 3], np.float32)
    (_, out) = launch(dev, classify, x.size, x, np.zeros(x.size, np.int32))
    np.testing.assert_array_equal(out, [0, 1, 1, 2, 3, 3, 5, 5, 4])


# ---- device functions ------------------------------------------------------------------------
@Func
def cube(v):
    return v * v * v


@Func
def poly(v):
    return cube(v) - 2 * v + 1


@Func
def get2(a, i):
    return a[i] + a[i + 1]


@Func
def put(out, i, v):
    out[i] = v
    return


@Func
def scatter_pair(src, out, i):
    put(out, i, get2(src, i) + poly(src[i]))


def funcs_kernel(x: vg.f32[:], y: vg.f32[:], ox: vg.f32[:], oy: vg.f32[:]):
    i = tid()
    if i + 1 < x.shape[0]:
        scatter_pair(x, ox, i)
        scatter_pair(y, oy, i)
        put(ox, 0, get2(y, 0))


def test_device_functions_with_arrays(dev, rng):
    n = 100
    x = rng.integers(-5, 5, n).astype(np.float32)
    y = rng.integers(-5, 5, n).astype(np.float32)
    (_, _, ox, oy) = launch(dev, funcs_kernel, n, x, y, np.zeros(n), np.zeros(n))

    def ref(src):
        out = np.zeros(n, np.float32)
        out[:-1] = src[:-1] + src[1:] + (src[:-1] ** 3 - 2 * src[:-1] + 1)
        return out

    rx, ry = ref(x), ref(y)
    rx[0] = y[0] + y[1]
    np.testing.assert_array_equal(ox, rx)
    np.testing.assert_array_equal(oy, ry)
    source = dev.kernel_source(parse_kernel(funcs_kernel))
    # specialised per binding: one copy of scatter_pair per pair of arrays
    assert source.count("fn scatter_pair") == 2


@Func
def bump(v: vg.f32) -> vg.f32:
    v = v + 1.0  # assigning a parameter (a var copy in WGSL)
    return v


def keywords(loop: vg.f32[:], fn: vg.f32[:], p: vg.f32):
    _ = tid()
    let = loop[_]
    var = let * p
    select = bump(var)
    main = 0
    for _i in range(2):
        main += 1
    fn[_] = select + main


def test_wgsl_keywords_as_names(dev):
    x = np.arange(10, dtype=np.float32)
    (_, out) = launch(dev, keywords, 10, x, np.zeros(10), 3.0)
    np.testing.assert_array_equal(out, x * 3 + 1 + 2)


# ---- math ------------------------------------------------------------------------------------
def unary_math(x: vg.f32[:], o: vg.f32[:, :]):
    i = tid()
    v = x[i]
    a = abs(v) + 0.5
    o[0, i] = math.sqrt(a)
    o[1, i] = math.exp(v)
    o[2, i] = math.log(a)
    o[3, i] = math.sin(v)
    o[4, i] = math.cos(v)
    o[5, i] = math.tan(v * 0.3)
    o[6, i] = math.tanh(v)
    o[7, i] = math.floor(v)
    o[8, i] = math.ceil(v)
    o[9, i] = math.asin(v * 0.2)
    o[10, i] = math.acos(v * 0.2)
    o[11, i] = math.atan(v)
    o[12, i] = math.sinh(v)
    o[13, i] = math.cosh(v)
    o[14, i] = math.exp2(v)
    o[15, i] = math.log2(a)
    o[16, i] = math.log10(a)
    o[17, i] = math.trunc(v)
    o[18, i] = round(v * 2)
    o[19, i] = math.atan2(v, a - 1)
    o[20, i] = math.pow(a, v)
    o[21, i] = vg.fma(v, a, 1.5)
    o[22, i] = math.fmod(v * 7, 2.5)
    o[23, i] = v**3
    o[24, i] = (v - 0.5) ** 0.5


def test_math_functions(dev, rng):
    x = np.concatenate([rng.uniform(-4, 4, 500), [-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0]])
    x = x.astype(np.float32)
    (_, o) = launch(dev, unary_math, x.size, x, np.zeros((25, x.size)))
    a = np.abs(x) + np.float32(0.5)
    with np.errstate(invalid="ignore"):
        ref = [
            np.sqrt(a), np.exp(x), np.log(a), np.sin(x), np.cos(x), np.tan(x * np.float32(0.3)),
            np.tanh(x), np.floor(x), np.ceil(x), np.arcsin(x * np.float32(0.2)),
            np.arccos(x * np.float32(0.2)), np.arctan(x), np.sinh(x), np.cosh(x), np.exp2(x),
            np.log2(a), np.log10(a), np.trunc(x), np.rint(x * 2), np.arctan2(x, a - 1),
            np.power(a, x), x * a + np.float32(1.5), np.fmod(x * 7, np.float32(2.5)), x**3,
            np.sqrt(x - np.float32(0.5)),
        ]  # fmt: skip
    # transcendental functions are the driver's (llvmpipe: up to ~1e-5 off); the others
    # are exactly rounded or nearly
    loose = {1, 5, 11, 12, 13, 14, 19, 20}
    for k, r in enumerate(ref):
        tol = 2e-5 if k in loose else 2e-6
        np.testing.assert_allclose(o[k], r, rtol=tol, atol=tol, err_msg=f"row {k}")
    # exact ones: rounding (half to even), floor/ceil/trunc
    for k in (7, 8, 17, 18):
        np.testing.assert_array_equal(o[k], ref[k])


def erf_kernel(x: vg.f32[:], out: vg.f32[:]):
    i = tid()
    out[i] = math.erf(x[i])


def test_erf_accuracy(dev):
    x = np.concatenate(
        [np.linspace(-7, 7, 400_001), [0.0, 1e-30, -1e-8, 0.999999, 1.0, 1.000001, np.inf]]
    ).astype(np.float32)
    (_, out) = launch(dev, erf_kernel, x.size, x, np.zeros(x.size))
    ref = np.array([math.erf(float(v)) for v in x])
    assert np.max(np.abs(out - ref)) <= 1e-6
    assert out[-1] == 1.0  # erf(inf)
    np.testing.assert_allclose(out[x.size - 6], 2 / math.sqrt(math.pi) * 1e-30, rtol=1e-6)


def powers(x: vg.f32[:], y: vg.f32[:], out: vg.f32[:]):
    i = tid()
    out[i] = x[i] ** y[i]


def test_pow_negative_bases(dev):
    x = np.array([-2, -2, -2, -8, 0, 0, 2, -1.5, 1, -0.0], np.float32)
    y = np.array([3, 2, 0.5, -1, 0, -1, 10, 0, np.nan, 3], np.float32)
    (_, _, out) = launch(dev, powers, x.size, x, y, np.zeros(x.size))
    with np.errstate(all="ignore"):
        ref = np.power(x, y)
    np.testing.assert_allclose(out, ref, rtol=1e-6)


def predicates(x: vg.f32[:], out: vg.i32[:]):
    i = tid()
    v = x[i]
    out[i] = math.isnan(v) * 1 + math.isinf(v) * 2 + math.isfinite(v) * 4


def nan_compares(a: vg.f32[:], b: vg.f32[:], o: vg.bool[:, :]):
    i = tid()
    o[0, i] = a[i] != b[i]  # true with a NaN (Naga's != alone is an ordered compare)
    o[1, i] = a[i] == b[i]
    o[2, i] = a[i] < b[i]
    o[3, i] = a[i] >= b[i]
    o[4, i] = vg.bool(a[i])  # bool(nan) is True
    o[5, i] = not a[i]


def test_comparisons_with_nan(dev):
    a = np.array([np.nan, 1, np.nan, 2, 0, -0.0], np.float32)
    b = np.array([1, np.nan, np.nan, 2, -0.0, 3], np.float32)
    (_, _, o) = launch(dev, nan_compares, 6, a, b, np.zeros((6, 6), bool))
    want = [a != b, a == b, a < b, a >= b, a.astype(bool), ~a.astype(bool)]
    np.testing.assert_array_equal(o, want)


def test_isnan_isinf_isfinite(dev):
    x = np.array([np.nan, -np.nan, np.inf, -np.inf, 0, -0.0, 1e-45, 3.4e38, -1], np.float32)
    (_, out) = launch(dev, predicates, x.size, x, np.zeros(x.size, np.int32))
    np.testing.assert_array_equal(out, np.isnan(x) * 1 + np.isinf(x) * 2 + np.isfinite(x) * 4)


def minmax_select(x: vg.f32[:], y: vg.f32[:], o: vg.f32[:, :], ints: vg.i32[:]):
    i = tid()
    o[0, i] = min(x[i], y[i])
    o[1, i] = max(x[i], y[i])
    o[2, i] = x[i] if x[i] > y[i] else -y[i]
    o[3, i] = vg.where(x[i] < 0, y[i], 7.0)
    ints[i] = min(i, 5) + max(-i, -3) * 10


def test_min_max_select(dev):
    x = np.array([1, np.nan, 3, -1, 0, np.nan], np.float32)
    y = np.array([2, 1, np.nan, -1, -0.0, np.nan], np.float32)
    (_, _, o, ints) = launch(dev, minmax_select, 6, x, y, np.zeros((4, 6)), np.zeros(6, np.int32))
    py_min = [y_ if y_ < x_ else x_ for x_, y_ in zip(x, y, strict=True)]  # Python's min
    py_max = [y_ if y_ > x_ else x_ for x_, y_ in zip(x, y, strict=True)]
    np.testing.assert_array_equal(o[0], py_min)
    np.testing.assert_array_equal(o[1], py_max)
    np.testing.assert_array_equal(o[2], np.where(x > y, x, -y))
    np.testing.assert_array_equal(o[3], np.where(x < 0, y, 7))
    np.testing.assert_array_equal(ints, [min(i, 5) + max(-i, -3) * 10 for i in range(6)])


# ---- integer semantics -----------------------------------------------------------------------
def divmod_kernel(a: vg.i32[:], b: vg.i32[:], q: vg.i32[:], r: vg.i32[:]):
    i = tid()
    q[i] = a[i] // b[i]
    r[i] = a[i] % b[i]


def fdivmod_kernel(a: vg.f32[:], b: vg.f32[:], q: vg.f32[:], r: vg.f32[:]):
    i = tid()
    q[i] = a[i] // b[i]
    r[i] = a[i] % b[i]


def udivmod_kernel(a: vg.u32[:], b: vg.u32[:], q: vg.u32[:], r: vg.u32[:]):
    i = tid()
    q[i] = a[i] // b[i]
    r[i] = a[i] % b[i]


def test_floor_divmod_ints(dev):
    vals = [-7, -6, -1, 0, 1, 6, 7, 2**31 - 1, -(2**31)]
    divs = [-3, -1, 0, 1, 3, 2**31 - 1, -(2**31)]
    a = np.array([v for v in vals for _ in divs], np.int32)
    b = np.array([d for _ in vals for d in divs], np.int32)
    (_, _, q, r) = launch(dev, divmod_kernel, a.size, a, b, np.zeros_like(a), np.zeros_like(a))
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(q, np.floor_divide(a, b))  # NumPy: x // 0 == 0
        np.testing.assert_array_equal(r, np.remainder(a, b))
    ua, ub = np.array([7, 0, 2**32 - 1, 5], np.uint32), np.array([2, 0, 7, 0], np.uint32)
    (_, _, uq, ur) = launch(dev, udivmod_kernel, 4, ua, ub, np.zeros(4), np.zeros(4))
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(uq, ua // ub)
        np.testing.assert_array_equal(ur, ua % ub)


def test_floor_divmod_floats(dev):
    vals = [-7.5, -6, -0.5, 0, 0.5, 6, 7.5, 1, 1e10]
    divs = [-2.5, -1, 0.1, 2, 3.5, 0]
    a = np.array([v for v in vals for _ in divs], np.float32)
    b = np.array([d for _ in vals for d in divs], np.float32)
    (_, _, q, r) = launch(dev, fdivmod_kernel, a.size, a, b, np.zeros_like(a), np.zeros_like(a))
    with np.errstate(all="ignore"):
        qr, rr = np.floor_divide(a, b), np.remainder(a, b)
    np.testing.assert_array_equal(q, qr)  # inf / nan for x // 0, as NumPy
    np.testing.assert_array_equal(np.signbit(q[qr == 0]), np.signbit(qr[qr == 0]))
    np.testing.assert_allclose(r, rr, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.isnan(r), np.isnan(rr))


def shifts(x: vg.i32[:], s: vg.i32[:], o: vg.i32[:, :], u: vg.u32[:]):
    i = tid()
    o[0, i] = x[i] << s[i]
    o[1, i] = x[i] >> s[i]
    o[2, i] = x[i] << 4
    u[i] = vg.u32(x[i]) >> vg.u32(s[i])


def test_shifts_by_large_amounts(dev):
    x = np.array([1, -1, 12345, -12345, 2**30, -(2**31)], np.int32)
    s = np.array([0, 31, 32, 33, 40, 5], np.int32)
    (_, _, o, u) = launch(dev, shifts, 6, x, s, np.zeros((3, 6), np.int32), np.zeros(6, np.uint32))

    def wrap(v: int) -> int:
        return int(np.int64(v & 0xFFFFFFFF).astype(np.uint32).view(np.int32))

    np.testing.assert_array_equal(o[0], [wrap(int(a) << int(b)) for a, b in zip(x, s, strict=True)])
    np.testing.assert_array_equal(o[1], [int(a) >> int(b) for a, b in zip(x, s, strict=True)])
    np.testing.assert_array_equal(o[2], x << 4)
    np.testing.assert_array_equal(
        u, [(int(a) & 0xFFFFFFFF) >> int(b) for a, b in zip(x, s, strict=True)]
    )


def casts(x: vg.f32[:], n: vg.i32[:], fi: vg.i32[:], nf: vg.f32[:], nu: vg.u32[:], o: vg.f32[:]):
    i = tid()
    fi[i] = vg.i32(x[i])  # truncates toward zero
    nf[i] = vg.f32(n[i])
    nu[i] = vg.u32(n[i])  # wraps
    o[i] = vg.f32(x[i] > 0) + vg.f32(vg.bool(n[i])) * 2 + vg.f32(vg.u32(7)) * 0 + vg.f64(x[i]) * 0


def test_casts(dev):
    x = np.array([-2.7, -0.5, 0, 0.5, 2.7, 1e6 + 0.5, -1e9], np.float32)
    n = np.array([-5, 0, 3, 2**24, -(2**31), 2**31 - 1, 7], np.int32)
    outs = launch(dev, casts, 7, x, n, *(np.zeros(7) for _ in range(4)))
    _, _, fi, nf, nu, o = outs
    np.testing.assert_array_equal(fi, x.astype(np.int32))
    np.testing.assert_array_equal(nf, n.astype(np.float32))
    np.testing.assert_array_equal(nu, n.astype(np.uint32))
    np.testing.assert_array_equal(o, (x > 0) + (n != 0) * 2)


def wide_types(
    x: vg.f64[:], y: vg.i64[:], z: vg.u64[:], o: vg.f64[:], p: vg.i64[:], s: vg.f64, t: vg.i64
):
    i = tid()
    o[i] = x[i] * s + 1e-300 + math.sqrt(abs(x[i])) + x[i] // 0.25
    p[i] = y[i] * 3 + vg.i64(z[i] >> 3) - y[i] // t


def test_f64_i64_u64(dev, rng):
    needs(dev, "shader-f64", "shader-int64")
    x = rng.standard_normal(100) * 1e10
    y = rng.integers(-(2**62), 2**62, 100)
    z = rng.integers(0, 2**63, 100).astype(np.uint64)
    zeros = np.zeros(100), np.zeros(100, np.int64)
    (_, _, _, o, p) = launch(dev, wide_types, 100, x, y, z, *zeros, 3.0, -(2**40) - 7)
    np.testing.assert_array_equal(o, x * 3.0 + 1e-300 + np.sqrt(np.abs(x)) + x // 0.25)
    t = np.int64(-(2**40) - 7)  # (a 64-bit scalar in the uniform block)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(p, y * 3 + (z >> np.uint64(3)).astype(np.int64) - y // t)


# ---- atomics ---------------------------------------------------------------------------------
def histogram(
    x: vg.i32[:], hist: vg.i32[:], uhist: vg.u32[:], lo: vg.i32[:], hi: vg.u32[:], h2: vg.f32[:, :]
):
    i = tid()
    b = x[i] % hist.shape[0]
    atomic_add(hist, b, 1)
    atomic_add(h2, (b % 4, b // 4), 0.5)  # 2-D index
    atomic_add(uhist, b, vg.u32(x[i]))
    atomic_min(lo, 0, x[i] - 500)
    atomic_max(hi, 0, vg.u32(x[i]))
    hist[0] = hist[0]  # a plain access to an atomic array (atomicLoad/atomicStore)


def test_atomic_histogram_i32_u32(dev, rng):
    x = rng.integers(0, 1000, 50_000).astype(np.int32)
    outs = launch(
        dev, histogram, x.size, x, np.zeros(16, np.int32), np.zeros(16, np.uint32),
        np.array([2**31 - 1], np.int32), np.zeros(1, np.uint32), np.zeros((4, 4), np.float32),
    )  # fmt: skip
    _, hist, uhist, lo, hi, h2 = outs
    ref = np.bincount(x % 16, minlength=16)
    np.testing.assert_array_equal(hist, ref)
    np.testing.assert_array_equal(uhist, np.bincount(x % 16, weights=x, minlength=16))
    assert lo[0] == x.min() - 500 and hi[0] == x.max()
    np.testing.assert_array_equal(h2, ref.reshape(4, 4).T * 0.5)


def float_atomics(x: vg.f32[:], total: vg.f32[:], lo: vg.f32[:], hi: vg.f32[:], old: vg.f32[:]):
    i = tid()
    old[i] = atomic_add(total, i % 2, x[i])
    atomic_min(lo, 0, x[i])
    atomic_max(hi, 0, x[i])


def test_f32_atomics(dev, rng):
    x = rng.integers(-1000, 1000, 4096).astype(np.float32)  # sums stay exact in f32
    outs = launch(
        dev, float_atomics, x.size, x, np.zeros(2), np.array([np.inf]), np.array([-np.inf]),
        np.zeros(x.size),
    )  # fmt: skip
    _, total, lo, hi, old = outs
    np.testing.assert_array_equal(total, [x[0::2].sum(), x[1::2].sum()])
    assert lo[0] == x.min() and hi[0] == x.max()
    # the old values returned chain up: in the order the additions happened, each thread
    # saw the sum of the values added before its own
    from collections import Counter

    for slot in (0, 1):
        seen, mine = old[slot::2], x[slot::2]
        assert Counter([0.0, *(seen + mine).tolist()]) == Counter([*seen.tolist(), total[slot]])


def tickets(counter: vg.i32[:], order: vg.i32[:]):
    i = tid()
    t = atomic_add(counter, 0, 1)  # the returned old value is a unique ticket
    order[t] = i


def test_atomic_return_values(dev):
    n = 10_000
    (counter, order) = launch(dev, tickets, n, np.zeros(1, np.int32), np.full(n, -1, np.int32))
    assert counter[0] == n
    np.testing.assert_array_equal(np.sort(order), np.arange(n))


def bool_writes(x: vg.i32[:], out: vg.bool[:], flip: vg.bool[:]):
    i = tid()
    out[i] = x[i] % 3 == 0  # neighbouring bytes of one word written by different threads
    if x[i] % 2 == 0:
        flip[i] = True
    else:
        flip[i] = False
    if flip[i]:
        out[i] = out[i] and x[i] > 10


def test_bool_array_writes_from_many_threads(dev, rng):
    n = 100_003
    x = rng.integers(0, 100, n).astype(np.int32)
    ones = np.ones(n, bool)
    (_, out, flip) = launch(dev, bool_writes, n, x, ones, ~ones)
    even = x % 2 == 0
    np.testing.assert_array_equal(flip, even)
    ref = (x % 3 == 0) & (~even | (x > 10))
    np.testing.assert_array_equal(out, ref)
    assert out.view(np.uint8).max() <= 1  # NumPy's bytes: 0 or 1


# ---- launches --------------------------------------------------------------------------------
def iota(out: vg.i32[:]):
    i = tid()
    out[i] = i


def test_more_than_65535_workgroups(dev):
    n = 65535 * dev.kernel_workgroup + 77  # needs a 2-D dispatch of workgroups
    (out,) = launch(dev, iota, n, np.zeros(n, np.int32))
    np.testing.assert_array_equal(out, np.arange(n, dtype=np.int32))


def no_tid(counter: vg.u32[:]):
    atomic_add(counter, 0, vg.u32(1))


def test_kernel_without_tid_runs_every_thread_once(dev):
    (counter,) = launch(dev, no_tid, (123, 45), np.zeros(1, np.uint32))
    assert counter[0] == 123 * 45


def test_same_buffer_twice_when_written_is_refused(dev):
    fn = parse_kernel(saxpy)
    ck = dev.compile_kernel(fn)
    b = dev.from_numpy(np.zeros(8, np.float32))
    with pytest.raises(UnsupportedOnBackend, match="copy"):
        dev.launch_kernel(ck, (8,), [(b, (8,)), (b, (8,)), (b, (8,)), np.float32(1)])
    # read twice is fine
    out = dev.from_numpy(np.zeros(8, np.float32))
    dev.launch_kernel(ck, (8,), [(b, (8,)), (b, (8,)), (out, (8,)), np.float32(1)])


# ---- capability, errors, cache ---------------------------------------------------------------
def f64_kernel(x: vg.f64[:]):
    i = tid()
    x[i] = x[i] * 2


def i64_kernel(x: vg.i64[:], s: vg.i64):
    i = tid()
    x[i] = x[i] + s


def f64_exp(x: vg.f64[:]):
    i = tid()
    x[i] = math.exp(x[i])


def printing(x: vg.f32[:]):
    i = tid()
    print("x =", x[i])


def test_unsupported_reasons():
    bare = wb.open_device(FULL, features=[])
    why = bare.kernel_unsupported(parse_kernel(f64_kernel))
    assert why is not None and "shader-f64" in why and FULL.adapter in why
    why = bare.kernel_unsupported(parse_kernel(i64_kernel))
    assert why is not None and "shader-int64" in why
    assert bare.kernel_unsupported(parse_kernel(saxpy)) is None
    assert "numpy backend" in (bare.kernel_unsupported(parse_kernel(printing)) or "")
    full = wb.open_device(FULL)
    assert "exp" in (full.kernel_unsupported(parse_kernel(f64_exp)) or "")


def test_compile_error_names_the_wgsl_line(dev, monkeypatch, tmp_path):
    monkeypatch.setattr(kcache, "CACHE", kcache.KernelCache(tmp_path))
    broken = wb.Shader(
        "@group(0) @binding(0) var<storage, read_write> o: array<f32>;\n"
        "@compute @workgroup_size(64)\nfn main() {\n  o[0] = 1.0f +;\n}\n",
        (("o", "rw"),),
        (),
        64,
    )
    monkeypatch.setattr(cg, "kernel_source", lambda fn, features, wg=64: broken)
    with pytest.raises(KernelCompileError) as info:
        dev.compile_kernel(parse_kernel(iota))
    msg = str(info.value)
    assert "generated WGSL line 4: o[0] = 1.0f +;" in msg and "kernel iota()" in msg


def test_generated_source_is_cached(dev, monkeypatch, tmp_path):
    cache = kcache.KernelCache(tmp_path)
    monkeypatch.setattr(kcache, "CACHE", cache)
    fn = parse_kernel(saxpy)
    first = dev.compile_kernel(fn)
    assert not first.cache_hit and list(tmp_path.rglob("*.bin"))
    cache.clear_memory()  # as a fresh process: only the disk copy is left

    def no_codegen(*args, **kwargs):
        raise AssertionError("code generation should have been skipped")

    monkeypatch.setattr(cg, "kernel_source", no_codegen)
    second = dev.compile_kernel(parse_kernel(saxpy))
    assert second.cache_hit and second.source == first.source
    assert second.compile_s >= 0 and first.compile_s > 0


def test_source_is_readable_wgsl(dev):
    src = dev.kernel_source(parse_kernel(saxpy))
    assert "var<storage, read> x: array<f32>;" in src
    assert "var<storage, read_write> out: array<f32>;" in src
    assert "out[i] = a * x[i] + y[i];" in src
    assert "if (gid >= p.threads)" in src


# ---- reductions ------------------------------------------------------------------------------
@Func
def ident(v):
    return v


@Func
def to_f32(v):
    return vg.f32(v)


@Func
def nonzero(v):
    return v != 0


@Func
def mul2(x, y):
    return x * y


@Func
def absmax(a: vg.f32, b: vg.f32) -> vg.f32:
    return max(abs(a), abs(b))


@Func
def mean_post(acc, n):
    return acc / vg.f32(n)


@Func
def plus_one(acc):
    return acc + 1


def reduction(
    mapf: Func,
    inputs: list[DType],
    combine: str | Func,
    identity: float | int | bool,
    post: Func | None = None,
    post_n: bool = False,
) -> ir.Reduction:
    m = parse_func(mapf, inputs)
    acc = m.ret
    c = parse_func(combine, [acc, acc]) if isinstance(combine, Func) else combine
    pf = parse_func(post, [acc, i64] if post_n else [acc]) if post is not None else None
    funcs = [m, *([c] if isinstance(c, ir.Function) else []), *([pf] if pf else [])]
    return ir.Reduction(
        name=f"r_{mapf.__name__}",
        map=m,
        combine=c,
        identity=ir.Const(acc, identity),
        post=pf,
        post_takes_n=post_n,
        inputs=tuple(inputs),
        acc=acc,
        out=pf.ret if pf else acc,
        funcs=funcs,
    )


def reduce_on(dev, red: ir.Reduction, arrays: list[np.ndarray], axis: int | None = None):
    cr = dev.compile_reduction(red)
    bufs = [dev.from_numpy(a) for a in arrays]
    res = dev.run_reduction(cr, bufs, arrays[0].shape, axis)
    out_shape = () if axis is None else (arrays[0].shape[1 - axis],)
    return dev.to_numpy(res, out_shape, red.out).copy()


SHAPES = [(5000, 3), (7, 300), (300, 7), (20, 5000), (40000, 3), (3000, 100), (1, 999)]


@pytest.mark.parametrize("shape", SHAPES, ids=[f"{a}x{b}" for a, b in SHAPES])
def test_reduction_sum_full_and_axes(dev, rng, shape):
    x = rng.integers(-50, 50, shape).astype(np.float32)  # exact sums in f32
    red = reduction(ident, [f32], "add", 0.0)
    assert reduce_on(dev, red, [x]) == x.sum()
    for axis in (0, 1):
        np.testing.assert_array_equal(reduce_on(dev, red, [x], axis), x.sum(axis=axis))


@pytest.mark.parametrize("n", [1, 5, 1000, 1_000_003])
def test_reduction_every_combine(dev, rng, n):
    xf = rng.uniform(0.999, 1.001, n).astype(np.float32)
    xi = rng.integers(-(2**31), 2**31, n, dtype=np.int32)
    xb = rng.random(n) < 0.999
    prod = reduce_on(dev, reduction(ident, [f32], "mul", 1.0), [xf])
    # (a plain f32 product: a rounding bias per multiply, ~1e-3 over 1e6 factors)
    np.testing.assert_allclose(prod, np.prod(xf.astype(np.float64)), rtol=2e-3)
    assert reduce_on(dev, reduction(ident, [f32], "min", np.inf), [xf]) == xf.min()
    assert reduce_on(dev, reduction(ident, [f32], "max", -np.inf), [xf]) == xf.max()
    assert reduce_on(dev, reduction(ident, [i32], "min", 2**31 - 1), [xi]) == xi.min()
    assert reduce_on(dev, reduction(ident, [i32], "max", -(2**31)), [xi]) == xi.max()
    # i32 sums wrap (the accumulator is i32)
    assert reduce_on(dev, reduction(ident, [i32], "add", 0), [xi]) == np.add.reduce(
        xi, dtype=np.int32
    )
    assert reduce_on(dev, reduction(ident, [i32], "and", -1), [xi]) == np.bitwise_and.reduce(xi)
    assert reduce_on(dev, reduction(ident, [i32], "or", 0), [xi]) == np.bitwise_or.reduce(xi)
    assert reduce_on(dev, reduction(ident, [bool_], "and", True), [xb]) == xb.all()
    assert reduce_on(dev, reduction(ident, [bool_], "or", False), [xb]) == xb.any()
    assert reduce_on(dev, reduction(nonzero, [bool_], "or", False), [~xb]) == (~xb).any()


def test_reduction_nan_propagates(dev):
    x = np.arange(1000, dtype=np.float32)
    x[537] = np.nan
    assert np.isnan(reduce_on(dev, reduction(ident, [f32], "min", np.inf), [x]))
    assert np.isnan(reduce_on(dev, reduction(ident, [f32], "max", -np.inf), [x]))
    y = x.reshape(10, 100)
    mins = reduce_on(dev, reduction(ident, [f32], "min", np.inf), [y], axis=1)
    np.testing.assert_array_equal(np.isnan(mins), np.isnan(np.min(y, axis=1)))


def test_reduction_user_combine_post_and_zip(dev, rng):
    needs(dev, "shader-int64")  # post(acc, n): n is an i64
    x = rng.standard_normal((123, 457)).astype(np.float32)
    y = rng.standard_normal((123, 457)).astype(np.float32)
    am = reduction(ident, [f32], absmax, 0.0)
    assert reduce_on(dev, am, [x]) == np.abs(x).max()
    np.testing.assert_array_equal(reduce_on(dev, am, [x], 0), np.abs(x).max(axis=0))
    mean = reduction(ident, [f32], "add", 0.0, mean_post, post_n=True)
    np.testing.assert_allclose(reduce_on(dev, mean, [x]), x.mean(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(reduce_on(dev, mean, [x], 1), x.mean(axis=1), rtol=1e-4, atol=1e-6)
    dot = reduction(mul2, [f32, f32], "add", 0.0)
    np.testing.assert_allclose(reduce_on(dev, dot, [x, y]), np.sum(x * y), rtol=1e-4)
    np.testing.assert_allclose(
        reduce_on(dev, dot, [x, y], 0), np.sum(x * y, axis=0), rtol=1e-4, atol=1e-4
    )
    # zip of different item sizes (element loads) and a post without n
    xi = rng.integers(-3, 3, (123, 457)).astype(np.int32)
    mixed = reduction(mul2, [f32, i32], "add", 0.0, plus_one)
    np.testing.assert_allclose(reduce_on(dev, mixed, [x, xi]), np.sum(x * xi) + 1, rtol=1e-4)
    # bool in, count out (map to i32), bool out (any)
    count = reduction(to_f32, [bool_], "add", 0.0)
    xb = x > 0.5
    assert reduce_on(dev, count, [xb]) == xb.sum()
    any_ = reduction(nonzero, [bool_], "or", False)
    np.testing.assert_array_equal(reduce_on(dev, any_, [x > 2], 1), (x > 2).any(axis=1))


def test_reduction_is_deterministic(dev, rng):
    x = rng.standard_normal(3_000_001).astype(np.float32)
    red = reduction(ident, [f32], "add", 0.0)
    cr = dev.compile_reduction(red)
    b = dev.from_numpy(x)
    runs = [
        dev.to_numpy(dev.run_reduction(cr, [b], x.shape, None), (), f32).copy() for _ in range(3)
    ]
    assert runs[0].tobytes() == runs[1].tobytes() == runs[2].tobytes()
    np.testing.assert_allclose(runs[0], x.astype(np.float64).sum(), rtol=1e-5, atol=1e-2)
    y = x[: 3000 * 1000].reshape(3000, 1000)
    by = dev.from_numpy(y)
    cols = [
        dev.to_numpy(dev.run_reduction(cr, [by], y.shape, 0), (1000,), f32).copy() for _ in range(2)
    ]
    assert cols[0].tobytes() == cols[1].tobytes()


def test_reduction_larger_than_a_binding(dev):
    limit = dev.limits["max-storage-buffer-binding-size"]
    if limit > 1 << 28:
        pytest.skip("binding limit too large to test windows cheaply")
    n = limit // 4 + 12345  # f32: two binding windows
    x = np.ones(n, np.float32)
    x[-1] = 5
    red = reduction(to_f32, [f32], "add", 0.0)
    assert reduce_on(dev, red, [x]) == n + 4
    del x
    wide = np.zeros((limit // 16 + 1, 4), np.float32)  # one binding cannot hold it
    with pytest.raises(BufferTooLarge, match="max-storage-buffer-binding-size"):
        reduce_on(dev, red, [wide], 0)


def test_reduction_unsupported_and_source(dev):
    needs(dev, "shader-int64")
    bare = wb.open_device(FULL, features=[])
    mean = reduction(ident, [f32], "add", 0.0, mean_post, post_n=True)
    assert "shader-int64" in (bare.reduction_unsupported(mean) or "")
    assert bare.reduction_unsupported(reduction(ident, [f32], "add", 0.0)) is None
    src = dev.reduction_source(mean)
    assert "fn vg_comb" in src and "fn vg_finish" in src and "// ==== gather ====" in src
    assert len(list(cg.reduction_source(mean, cg.ALL_FEATURES))) == 7


def test_reduction_without_subgroups_matches(rng):
    """The workgroup-memory tree (no 'subgroup' feature) gives the same exact sums."""
    plain = wb.open_device(FULL, features=["shader-f64", "shader-int64"])
    x = rng.integers(-9, 9, (333, 777)).astype(np.int32)
    red = reduction(ident, [i32], "add", 0)
    assert reduce_on(plain, red, [x]) == x.sum()
    np.testing.assert_array_equal(reduce_on(plain, red, [x], 0), x.sum(axis=0))
    np.testing.assert_array_equal(reduce_on(plain, red, [x], 1), x.sum(axis=1))
    am = reduction(ident, [f32], absmax, 0.0)
    xf = x.astype(np.float32)
    assert reduce_on(plain, am, [xf]) == np.abs(xf).max()
