"""Raw native kernels (:mod:`vgpu_nb.kernel.native`; issue 6 item 1): hand-written WGSL run
on every WebGPU adapter of the machine (llvmpipe's Vulkan and GL in CI) and compared with
NumPy; CUDA signatures parsed everywhere (no CuPy needed); CUDA launches and NVRTC errors
on a CUDA GPU only (``-m gpu``, skipped with the reason elsewhere); the ``%%vgpu cuda`` /
``%%vgpu wgsl`` cell magics through a real IPython shell."""

from __future__ import annotations

import gc
import os

import numpy as np
import pytest

import vgpu_nb as vg
from vgpu_nb.devices import discover
from vgpu_nb.dtypes import bool_, f32, f64, i32, i64, u32, u64
from vgpu_nb.errors import (
    DeviceMismatch,
    KernelCompileError,
    KernelSyntaxError,
    KernelTypeError,
    UnsupportedOnBackend,
)
from vgpu_nb.kernel.native import NativeKernel, native_kernel, parse_cuda, parse_wgsl
from vgpu_nb.telemetry.records import LaunchRecord

os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")  # silence Mesa's EGL warning

_WGPU_ROWS = [i for i in discover("wgpu") if i.available]
_WGPU = [i.name for i in _WGPU_ROWS]
_NO_WGPU = f"no WebGPU adapter: {discover('wgpu')[0].why_not}"
_CUDA = [i.name for i in discover("cuda") if i.available]
_NO_CUDA = f"no CUDA device: {discover('cuda')[0].why_not}"
needs_wgpu = pytest.mark.skipif(not _WGPU, reason=_NO_WGPU)
needs_cuda = pytest.mark.skipif(not _CUDA, reason=_NO_CUDA)


@pytest.fixture(
    params=[
        pytest.param(i.name, marks=[pytest.mark.gpu] if i.kind == "gpu" else [], id=i.name)
        for i in _WGPU_ROWS
    ]
    or [pytest.param(None, marks=pytest.mark.skip(reason=_NO_WGPU), id="wgpu")]
)
def wdev(request):
    """Each WebGPU adapter (its name; hardware ones carry the ``gpu`` marker)."""
    return request.param


@pytest.fixture
def w0():
    """The first WebGPU adapter, for the error paths (the same on every adapter)."""
    if not _WGPU:
        pytest.skip(_NO_WGPU)
    return _WGPU[0]


SAXPY_WGSL = """\
struct Params { a: f32, n: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn saxpy(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i < p.n) {
        y[i] = p.a * x[i] + y[i];
    }
}
"""


def _pair(dev, n, rng):
    xh = rng.standard_normal(n).astype(np.float32)
    yh = rng.standard_normal(n).astype(np.float32)
    return xh, yh, vg.asarray(xh, device=dev), vg.asarray(yh, device=dev)


# ==== WGSL on the WebGPU adapters ==============================================================
def test_wgsl_saxpy_matches_numpy(wdev, rng):
    k = native_kernel(SAXPY_WGSL, "saxpy", "wgsl")
    assert [(p.name, p.dtype, p.array, p.writes) for p in k.params] == [
        ("a", f32, False, False),
        ("n", u32, False, False),
        ("x", f32, True, False),
        ("y", f32, True, True),
    ]
    assert k.signature == "saxpy(a: f32, n: u32, x: f32[], y: f32[])"
    assert k.workgroup == (64, 1)
    n = 1000  # not a multiple of the workgroup: the kernel's own guard matters
    xh, yh, x, y = _pair(wdev, n, rng)
    k[n](2.5, n, x, y)
    np.testing.assert_allclose(y.numpy(), np.float32(2.5) * xh + yh, rtol=1e-6, atol=1e-6)
    assert x.device.name == wdev  # ran where its arrays are
    np.testing.assert_array_equal(x.numpy(), xh)  # read-only binding untouched


def test_wgsl_scalars_through_the_uniform(wdev):
    src = """
    struct P {
        lo: i32,
        step: u32,
        scale: f32,   // trailing comma and comments are fine
    };
    @group(0) @binding(0) var<storage, read_write> ints: array<i32>;
    @group(0) @binding(1) var<storage, read_write> flts: array<f32>;
    @group(0) @binding(2) var<uniform> prm: P;
    @compute @workgroup_size(32)
    fn fill(@builtin(global_invocation_id) gid: vec3<u32>) {
        let i = gid.x;
        if (i >= arrayLength(&ints)) { return; }
        ints[i] = prm.lo + i32(prm.step * i);
        flts[i] = prm.scale * f32(i);
    }
    """
    k = native_kernel(src, "fill", "wgsl")
    assert k.signature == "fill(ints: i32[], flts: f32[], lo: i32, step: u32, scale: f32)"
    n = 77
    ints, flts = vg.zeros(n, vg.i32, device=wdev), vg.zeros(n, vg.f32, device=wdev)
    k[n](ints, flts, -40, 3, np.float32(0.5))
    i = np.arange(n)
    np.testing.assert_array_equal(ints.numpy(), -40 + 3 * i)
    np.testing.assert_array_equal(flts.numpy(), np.float32(0.5) * i.astype(np.float32))


def test_wgsl_scalar_uniform_array_length_and_atomics(wdev):
    """A uniform of scalar type is one argument; ``arrayLength`` is the array's exact length
    (buffers are padded underneath); atomics bind as arrays of their integer type."""
    src = """
    @group(0) @binding(0) var<storage, read> x: array<u32>;
    @group(0) @binding(1) var<storage, read_write> out: array<atomic<u32>>;
    @group(0) @binding(2) var<uniform> limit: u32;
    @compute @workgroup_size(16)
    fn count(@builtin(global_invocation_id) gid: vec3<u32>) {
        let i = gid.x;
        if (i == 0u) { atomicStore(&out[1], arrayLength(&x)); }
        if (i < arrayLength(&x) && x[i] < limit) { atomicAdd(&out[0], 1u); }
    }
    """
    k = native_kernel(src, "count", "wgsl")
    assert k.signature == "count(x: u32[], out: u32[], limit: u32)"
    xh = np.arange(10, dtype=np.uint32)  # 40 bytes, a 48-byte buffer underneath
    x, out = vg.asarray(xh, device=wdev), vg.zeros(2, vg.u32, device=wdev)
    k[100](x, out, 7)
    np.testing.assert_array_equal(out.numpy(), [7, 10])


def test_wgsl_kernel_without_scalars(wdev):
    src = """
    @group(0) @binding(0) var<storage, read_write> y: array<i32>;
    @compute @workgroup_size(64)
    fn dbl(@builtin(global_invocation_id) g: vec3<u32>) {
        if (g.x < arrayLength(&y)) { y[g.x] = 2 * y[g.x]; }
    }
    """
    k = native_kernel(src, "dbl", "wgpu")  # ("wgpu" is accepted for "wgsl")
    assert k.language == "wgsl" and k.signature == "dbl(y: i32[])"
    y = vg.asarray(np.arange(-5, 6, dtype=np.int32), device=wdev)
    k[y.size](y)
    np.testing.assert_array_equal(y.numpy(), 2 * np.arange(-5, 6))


def test_wgsl_2d_launch(wdev):
    src = """
    struct Shape { rows: u32, cols: u32 }
    @group(0) @binding(0) var<uniform> s: Shape;
    @group(0) @binding(1) var<storage, read_write> m: array<f32>;
    @compute @workgroup_size(8, 4)
    fn index2d(@builtin(global_invocation_id) g: vec3<u32>) {
        if (g.x < s.cols && g.y < s.rows) {
            m[g.y * s.cols + g.x] = f32(g.y) * 1000.0 + f32(g.x);
        }
    }
    """
    k = native_kernel(src, "index2d", "wgsl")
    assert k.workgroup == (8, 4)
    rows, cols = 13, 21
    m = vg.zeros((rows, cols), vg.f32, device=wdev)  # any shape: the kernel sees it flat
    k[(rows, cols)](rows, cols, m)
    r, c = np.mgrid[:rows, :cols]
    np.testing.assert_array_equal(m.numpy(), (r * 1000 + c).astype(np.float32))


def test_wgsl_override_workgroup_size(wdev):
    src = SAXPY_WGSL.replace("@workgroup_size(64)", "@workgroup_size(WG)")
    src = "override WG: u32 = 64;\n" + src
    n = 100
    for wg in (None, 32):
        k = native_kernel(src, "saxpy", "wgsl", workgroup=wg)
        assert k.workgroup == (wg or 64, 1)
        y = vg.ones(n, device=wdev)
        k[n](1.0, n, vg.arange(n, dtype=vg.f32, device=wdev), y)
        np.testing.assert_array_equal(y.numpy(), np.arange(n, dtype=np.float32) + 1)
    with pytest.raises(KernelTypeError, match="disagrees with @workgroup_size"):
        native_kernel(SAXPY_WGSL, "saxpy", "wgsl", workgroup=32)
    assert native_kernel(SAXPY_WGSL, "saxpy", "wgsl", workgroup=64).workgroup == (64, 1)


def test_wgsl_launch_record_and_profile(w0, rng):
    k = native_kernel(SAXPY_WGSL, "saxpy", "wgsl", device=w0)
    n = 256
    xh, yh, x, y = _pair(w0, n, rng)
    rec = k.launch(n, 1.0, n, x, y)
    assert isinstance(rec, LaunchRecord)
    assert (rec.op, rec.device, rec.shape, rec.dtype) == ("saxpy", w0, (n,), "f32")
    assert rec.estimated and rec.bytes == 3 * n * 4  # x read; y read and written
    assert rec.compile_s >= 0 and rec.seconds > 0
    with vg.profile() as prof:
        k[n](1.0, n, x, y)
    table = prof.table()
    assert "saxpy" in set(table["op"])
    np.testing.assert_allclose(y.numpy(), 2 * xh + yh, rtol=1e-6, atol=1e-6)
    # flops/bytes per thread given: not estimated
    k2 = native_kernel(SAXPY_WGSL, "saxpy", "wgsl", flops=2, bytes=12)
    rec = k2.launch(n, 1.0, n, x, y)
    assert (rec.flops, rec.bytes, rec.estimated) == (2 * n, 12 * n, False)


def test_wgsl_empty_launch_does_nothing(w0):
    k = native_kernel(SAXPY_WGSL, "saxpy", "wgsl")
    y = vg.ones(4, device=w0)
    k[0](1.0, 4, vg.ones(4, device=w0), y)
    np.testing.assert_array_equal(y.numpy(), np.ones(4, np.float32))


def test_wgsl_argument_errors(w0):
    k = native_kernel(SAXPY_WGSL, "saxpy", "wgsl")
    x, y = vg.ones(8, device=w0), vg.ones(8, device=w0)
    with pytest.raises(KernelTypeError, match=r"saxpy\(a, n, x, y\) takes 4 arguments, got 3"):
        k[8](1.0, 8, x)
    with pytest.raises(KernelTypeError, match="'x'.*must be a vg.Array of f32, got a f64") as ei:
        k[8](1.0, 8, x.astype(vg.f64), y)
    assert "x.astype(vg.f32)" in str(ei.value) and "line 3" in str(ei.value)
    with pytest.raises(KernelTypeError, match="'y'.*NumPy array"):
        k[8](1.0, 8, x, np.ones(8, np.float32))
    with pytest.raises(KernelTypeError, match="'n'.*-1 does not fit in u32"):
        k[8](1.0, -1, x, y)
    with pytest.raises(KernelTypeError, match="'n'.*got float"):
        k[8](1.0, 8.0, x, y)
    with pytest.raises(KernelTypeError, match="launched over a domain"):
        k(1.0, 8, x, y)
    with pytest.raises(UnsupportedOnBackend, match="same array"):
        k[8](1.0, 8, y, y)  # bound read-only and read_write at once


def test_wgsl_arrays_must_be_on_the_kernels_device(w0):
    k = native_kernel(SAXPY_WGSL, "saxpy", "wgsl")
    x, y = vg.ones(8, device="numba"), vg.ones(8, device="numba")
    with pytest.raises(DeviceMismatch, match="runs on wgpu devices") as ei:
        k[8](1.0, 8, x, y)
    assert "x = x.to('wgpu')" in str(ei.value)
    with pytest.raises(DeviceMismatch, match="'y' is on numba"):
        k[8](1.0, 8, vg.ones(8, device=w0), y)
    with pytest.raises(DeviceMismatch, match=f"x.to\\('{w0}'\\)"):
        k[8](1.0, 8, x, y, device=w0)
    if len(_WGPU) > 1:  # a kernel bound to one adapter refuses arrays on another
        bound = native_kernel(SAXPY_WGSL, "saxpy", "wgsl", device=_WGPU[1])
        with pytest.raises(DeviceMismatch, match=f"runs on {_WGPU[1]}"):
            bound[8](1.0, 8, vg.ones(8, device=w0), vg.ones(8, device=w0))
    with pytest.raises(UnsupportedOnBackend, match="runs on wgpu devices, not on numba"):
        native_kernel(SAXPY_WGSL, "saxpy", "wgsl", device="numba")


def test_wgsl_compile_error_carries_wgpus_message(w0):
    bad = SAXPY_WGSL.replace("p.a * x[i]", "p.a * q x[i]")
    k = native_kernel(bad, "saxpy", "wgsl")  # (parsing the bindings does not compile)
    with pytest.raises(KernelCompileError) as ei:
        k.compile(w0)
    msg = str(ei.value)
    assert "expected `;`" in msg  # Naga's own words
    assert "WGSL line 10: y[i] = p.a * q x[i] + y[i];" in msg
    assert "native kernel 'saxpy'" in msg and "generated" not in msg
    bad = SAXPY_WGSL.replace("y[i] = p.a", "x[i] = p.a")  # writes a read-only binding
    with pytest.raises(KernelCompileError, match="native kernel 'saxpy'"):
        native_kernel(bad, "saxpy", "wgsl").compile(w0)


WGSL_SOURCE_ERRORS = [
    ("nosuch", SAXPY_WGSL, KernelSyntaxError, "no function 'nosuch'.*found: saxpy"),
    (
        "helper",
        SAXPY_WGSL + "fn helper() -> f32 { return 1.0; }\n",
        KernelSyntaxError,
        "not a compute entry point",
    ),
    (
        "saxpy",
        SAXPY_WGSL.replace("@workgroup_size(64)", ""),
        KernelSyntaxError,
        "no @workgroup_size",
    ),
    (
        "saxpy",
        SAXPY_WGSL.replace("@binding(2)", "@binding(3)"),
        KernelSyntaxError,
        r"numbered \[0, 1, 3\]",
    ),
    (
        "saxpy",
        SAXPY_WGSL.replace("@group(0) @binding(1)", "@group(1) @binding(1)"),
        KernelSyntaxError,
        "must be in @group\\(0\\)",
    ),
    (
        "saxpy",
        SAXPY_WGSL.replace("y: array<f32>", "y: array<vec4<f32>>"),
        KernelTypeError,
        "'y' has type 'array<vec4<f32>>'",
    ),
    (
        "saxpy",
        SAXPY_WGSL.replace("n: u32 }", "n: vec2<u32> }"),
        KernelTypeError,
        "field 'n: vec2<u32>' of uniform struct 'Params'",
    ),
    (
        "saxpy",
        SAXPY_WGSL + "@group(0) @binding(3) var<uniform> q: f32;\n",
        KernelSyntaxError,
        "one uniform binding",
    ),
    (
        "saxpy",
        SAXPY_WGSL + "@group(0) @binding(3) var t: texture_2d<f32>;\n",
        KernelTypeError,
        "not a storage buffer or a uniform",
    ),
    (
        "saxpy",
        SAXPY_WGSL.replace("@workgroup_size(64)", "@workgroup_size(WG)"),
        KernelSyntaxError,
        "'WG' is not an integer literal",
    ),
]


@pytest.mark.parametrize(("name", "src", "exc", "says"), WGSL_SOURCE_ERRORS)
def test_wgsl_source_errors(name, src, exc, says):
    """Refused when the kernel is made, without a device (parsing only)."""
    with pytest.raises(exc, match=says):
        parse_wgsl(src, name)


def test_wgsl_comments_and_const_sizes():
    src = """
    const WG: u32 = 128u;
    /* a block comment /* nested */ with a fake
       @group(0) @binding(7) var<storage, read> fake: array<f64>; */
    // @group(0) @binding(9) var<uniform> nope: f32;
    @group(0) @binding(0) var<storage> x: array<i32>;   // default access: read
    @compute @workgroup_size(WG, 2)
    fn k(@builtin(global_invocation_id) g: vec3<u32>) { }
    """
    lay = parse_wgsl(src, "k")
    assert lay.workgroup == (128, 2)
    assert lay.bindings == (("x", "read"),)
    assert [(p.name, p.dtype, p.writes) for p in lay.params] == [("x", i32, False)]


# ==== CUDA signatures (everywhere: no CuPy needed) ============================================
SAXPY_CUDA = """\
extern "C" __global__ void saxpy(float a, const float* __restrict__ x, float *y, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = a * x[i] + y[i];
}
"""


def _sig(params):
    return [(p.name, p.dtype, p.array, p.writes) for p in params]


def test_cuda_signature_of_saxpy():
    assert _sig(parse_cuda(SAXPY_CUDA, "saxpy")) == [
        ("a", f32, False, False),
        ("x", f32, True, False),
        ("y", f32, True, True),
        ("n", i32, False, False),
    ]


def test_cuda_signature_types_and_forms():
    src = """
    // extern "C" __global__ void k(double* decoy)   (a comment: ignored)
    #include <cstdint>
    extern "C" {
    __device__ float twice(float v) { return 2 * v; }
    __global__ void __launch_bounds__(256) k(
        double* d, const int* __restrict__ ci, unsigned int u, unsigned n2,
        long long ll, unsigned long long ull, uint32_t w, int64_t s, bool flag,
        float x[], const double c[], float* const fixed, const bool* mask,
        /* a comment */ size_t count)
    { printf("// not a comment, (\\"\\") ) %d\\n", 1); }
    }
    """
    assert _sig(parse_cuda(src, "k")) == [
        ("d", f64, True, True),
        ("ci", i32, True, False),
        ("u", u32, False, False),
        ("n2", u32, False, False),
        ("ll", i64, False, False),
        ("ull", u64, False, False),
        ("w", u32, False, False),
        ("s", i64, False, False),
        ("flag", bool_, False, False),
        ("x", f32, True, True),
        ("c", f64, True, False),
        ("fixed", f32, True, True),  # a const pointer to writable floats
        ("mask", bool_, True, False),
        ("count", u64, False, False),
    ]
    assert parse_cuda('extern "C" __global__ void nothing(void) {}', "nothing") == ()
    assert parse_cuda('extern "C" __global__ void nothing() {}', "nothing") == ()


CUDA_SOURCE_ERRORS = [
    ("other", SAXPY_CUDA, KernelSyntaxError, "no kernel named 'other'.*found: saxpy"),
    (
        "saxpy",
        SAXPY_CUDA.replace('extern "C" ', ""),
        KernelSyntaxError,
        'must be declared extern "C"',
    ),
    (
        "saxpy",
        SAXPY_CUDA.replace("float *y", "float2 *y"),
        KernelTypeError,
        "parameter 'y'.*'float2\\*'",
    ),
    ("saxpy", SAXPY_CUDA.replace("float *y", "float **y"), KernelTypeError, "'float\\*\\*'"),
    ("saxpy", SAXPY_CUDA.replace("float *y", "float *"), KernelSyntaxError, "has no name"),
    ("saxpy", SAXPY_CUDA.replace("float *y", "float &y"), KernelTypeError, "not a plain"),
    ("saxpy", SAXPY_CUDA.replace("int n", "int a"), KernelSyntaxError, "two parameters"),
]


@pytest.mark.parametrize(("name", "src", "exc", "says"), CUDA_SOURCE_ERRORS)
def test_cuda_source_errors(name, src, exc, says):
    with pytest.raises(exc, match=says):
        parse_cuda(src, name)


def test_cuda_error_points_at_the_parameter():
    with pytest.raises(KernelTypeError) as ei:
        parse_cuda("\n" + SAXPY_CUDA.replace("float *y", "float2 *y"), "saxpy", "<cell>")
    assert ei.value.lineno == 2 and ei.value.filename == "<cell>"
    assert ei.value.source_line.lstrip().startswith('extern "C"')


def test_cuda_kernel_without_a_gpu_checks_arguments_first():
    """Everything before the device (counts, dtypes, where the arrays are) is checked
    the same with or without CuPy."""
    k = native_kernel(SAXPY_CUDA, "saxpy")
    assert isinstance(k, NativeKernel) and k.language == "cuda" and k.backend == "cuda"
    assert k.signature == "saxpy(a: f32, x: f32[], y: f32[], n: i32)"
    assert "saxpy(a: f32" in repr(k) and k.source() == SAXPY_CUDA
    x = vg.ones(8, device="numba")
    with pytest.raises(KernelTypeError, match="takes 4 arguments, got 2"):
        k[8](1.0, x)
    with pytest.raises(KernelTypeError, match=r"'x' of native kernel 'saxpy' \(const float"):
        k[8](1.0, x.astype(vg.f64), x, 8)
    with pytest.raises(KernelTypeError, match="'n'.*got float"):
        k[8](1.0, x, x, 8.5)
    with pytest.raises(DeviceMismatch, match="runs on cuda devices") as ei:
        k[8](1.0, x, x, 8)
    assert "x = x.to('cuda')" in str(ei.value)
    with pytest.raises(UnsupportedOnBackend, match="no wgpu version"):
        k.source("wgpu")


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"block": 0}, "block must be"),
        ({"block": 2048}, "at most 1024"),
        ({"block": (64, 64)}, "at most 1024"),
        ({"grid": "a"}, "grid must be"),
        ({"shared_mem": -1}, "shared_mem"),
        ({"workgroup": 64}, "workgroup= is for WGSL"),
    ],
)
def test_cuda_bad_options(options, says):
    with pytest.raises(ValueError, match=says):
        native_kernel(SAXPY_CUDA, "saxpy", **options)


def test_bad_backend_and_name():
    with pytest.raises(ValueError, match="'cuda' or 'wgsl'"):
        native_kernel(SAXPY_CUDA, "saxpy", "opencl")
    with pytest.raises(ValueError, match="identifier"):
        native_kernel(SAXPY_CUDA, "sax py")
    with pytest.raises(ValueError, match="for CUDA kernels"):
        native_kernel(SAXPY_WGSL, "saxpy", "wgsl", block=64)


# ==== CUDA on a GPU (the lent machine: -m gpu) =================================================
@pytest.fixture
def cdev():
    if not _CUDA:
        pytest.skip(_NO_CUDA)
    return _CUDA[0]


@pytest.mark.gpu
@needs_cuda
def test_cuda_saxpy_matches_numpy(cdev, rng):
    k = native_kernel(SAXPY_CUDA, "saxpy")
    n = 100_003
    xh, yh, x, y = _pair(cdev, n, rng)
    k[n](2.5, x, y, n)
    np.testing.assert_allclose(y.numpy(), np.float32(2.5) * xh + yh, rtol=1e-6, atol=1e-6)
    rec = k.launch(n, 1.0, x, y, n, device=cdev)
    assert isinstance(rec, LaunchRecord) and rec.device == cdev and rec.op == "saxpy"
    assert rec.device_s is not None and rec.device_s > 0
    np.testing.assert_allclose(y.numpy(), 3.5 * xh + yh, rtol=1e-5, atol=1e-5)
    with pytest.raises(KernelTypeError, match="'y'.*f64"):
        k[n](1.0, x, y.astype(vg.f64), n)
    with pytest.raises(DeviceMismatch, match="to\\('cuda"):
        k[n](1.0, x.to("numba"), y.to("numba"), n)


@pytest.mark.gpu
@needs_cuda
def test_cuda_2d_block_and_explicit_grid(cdev):
    src = r"""
    extern "C" __global__ void idx2(double* m, int rows, int cols) {
        int c = blockIdx.x * blockDim.x + threadIdx.x;
        int r = blockIdx.y * blockDim.y + threadIdx.y;
        if (r < rows && c < cols) m[r * cols + c] = r * 1000.0 + c;
    }
    extern "C" __global__ void stride(unsigned int* out, unsigned int n) {
        for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < n;
             i += gridDim.x * blockDim.x) out[i] = i * 3u;
    }
    """
    rows, cols = 37, 53
    m = vg.zeros((rows, cols), vg.f64, device=cdev)
    native_kernel(src, "idx2")[(rows, cols)](m, rows, cols)  # default block (16, 16)
    r, c = np.mgrid[:rows, :cols]
    np.testing.assert_array_equal(m.numpy(), r * 1000.0 + c)
    n = 10_000
    out = vg.zeros(n, vg.u32, device=cdev)
    native_kernel(src, "stride", grid=4, block=128)[n](out, n)  # a grid-stride loop
    np.testing.assert_array_equal(out.numpy(), np.arange(n, dtype=np.uint32) * 3)


@pytest.mark.gpu
@needs_cuda
def test_cuda_compile_error_carries_nvrtc_log(cdev):
    bad = SAXPY_CUDA.replace("a * x[i]", "a * undefined_thing[i]")
    with pytest.raises(KernelCompileError) as ei:
        native_kernel(bad, "saxpy").compile(cdev)
    msg = str(ei.value)
    assert "undefined_thing" in msg and "error" in msg  # NVRTC's log
    assert "CUDA source of \"native kernel 'saxpy'\"" in msg and "generated" not in msg


@pytest.mark.gpu
@needs_cuda
def test_cuda_magic(ip, cdev, capsys, rng):
    ip.run_cell_magic("vgpu", f"cuda saxpy --block 128 --device {cdev}", SAXPY_CUDA)
    assert f"compiled for {cdev}" in capsys.readouterr().out
    k = ip.user_ns["saxpy"]
    assert k.block == (128,) and k.device.name == cdev
    xh, yh, x, y = _pair(cdev, 1000, rng)
    k[1000](2.0, x, y, 1000)
    np.testing.assert_allclose(y.numpy(), 2 * xh + yh, rtol=1e-6, atol=1e-6)
    bad = SAXPY_CUDA.replace("a * x[i]", "a * undefined_thing[i]")
    with pytest.raises(KernelCompileError, match="undefined_thing"):
        ip.run_cell_magic("vgpu", "cuda broken", bad.replace("saxpy", "broken"))
    assert "broken" not in ip.user_ns


# ==== the cell magics ============================================================================
@pytest.fixture(scope="module")
def ip():
    InteractiveShell = pytest.importorskip("IPython.core.interactiveshell").InteractiveShell
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "vgpu_nb")
    return shell


@pytest.fixture(autouse=True)
def _restore():
    """No arrays left in the shell's namespace (other tests count live arrays' bytes), and
    the default device as it was."""
    dev = vg.default_device()
    try:  # (IPython is optional: the GPU machine runs the CUDA tests without it)
        from IPython.core.interactiveshell import InteractiveShell
    except ImportError:
        shell = None
    else:
        shell = InteractiveShell.instance()
    names = set(shell.user_ns) if shell is not None else set()
    yield
    if shell is not None:
        for name in set(shell.user_ns) - names:
            del shell.user_ns[name]
        shell.displayhook.flush()
    gc.collect()
    vg.use(dev)


@needs_wgpu
def test_wgsl_magic_defines_a_launchable_kernel(ip, capsys, rng):
    dev = _WGPU[0]
    ip.run_cell_magic("vgpu", f"wgsl saxpy --device {dev}", SAXPY_WGSL)
    out = capsys.readouterr().out
    assert "defined saxpy(a: f32, n: u32, x: f32[], y: f32[])" in out
    assert f"compiled for {dev}" in out
    k = ip.user_ns["saxpy"]
    assert isinstance(k, NativeKernel) and k.device.name == dev
    n = 300
    xh, yh, x, y = _pair(dev, n, rng)
    ip.user_ns["saxpy"][n](0.5, n, x, y)
    np.testing.assert_allclose(y.numpy(), np.float32(0.5) * xh + yh, rtol=1e-6, atol=1e-6)
    # launched from the cell's own code too, with a launch record
    ip.user_ns.update(x=x, y=y, n=n)
    ip.run_cell("rec = saxpy.launch(n, 1.0, n, x, y)")
    rec = ip.user_ns["rec"]
    assert isinstance(rec, LaunchRecord) and rec.op == "saxpy" and rec.device == dev
    # without --device: compiled where it will run (no arrays: the first WebGPU adapter)
    ip.run_cell_magic("vgpu", "wgsl saxpy --workgroup 64", SAXPY_WGSL)
    assert "compiled for wgpu:" in capsys.readouterr().out
    assert ip.user_ns["saxpy"].device is None


@needs_wgpu
def test_wgsl_magic_compile_error_fails_the_cell(ip):
    bad = SAXPY_WGSL.replace("p.a * x[i]", "p.a * q x[i]")
    with pytest.raises(KernelCompileError, match="expected `;`"):
        ip.run_cell_magic("vgpu", f"wgsl saxpy --device {_WGPU[0]}", bad)
    assert "saxpy" not in ip.user_ns
    with pytest.raises(KernelSyntaxError, match="no function 'axpy'"):
        ip.run_cell_magic("vgpu", "wgsl axpy", SAXPY_WGSL)


def test_cuda_magic_without_a_gpu_defines_it_uncompiled(ip, capsys):
    if _CUDA:
        pytest.skip("a CUDA device is here: test_cuda_magic covers the compiled case")
    ip.run_cell_magic("vgpu", "cuda saxpy --block 512", SAXPY_CUDA)
    out = capsys.readouterr().out
    assert "defined saxpy(a: f32, x: f32[], y: f32[], n: i32) (cuda kernel; not compiled" in out
    assert ip.user_ns["saxpy"].block == (512,)
    with pytest.raises(KernelSyntaxError, match='must be declared extern "C"'):
        ip.run_cell_magic("vgpu", "cuda saxpy", SAXPY_CUDA.replace('extern "C" ', ""))


BAD_NATIVE_CELLS = [
    ("cuda", "required: NAME"),
    ("wgsl", "required: NAME"),
    ("cuda 1abc", "identifier"),
    ("wgsl saxpy extra", "unrecognized arguments: extra"),
    ("cuda saxpy --block 0", "--block must be"),
    ("cuda saxpy --block many", "--block must be"),
    ("cuda saxpy --block 2048", "at most 1024"),
    ("cuda saxpy --block 64,64", "at most 1024"),
    ("cuda saxpy --grid -2", "--grid must be"),
    ("cuda saxpy --shared lots", "--shared must be"),
    ("cuda saxpy --workgroup 64", "unrecognized"),
    ("wgsl saxpy --block 64", "unrecognized"),
    ("wgsl saxpy --workgroup 0", "--workgroup must be"),
    ("wgsl saxpy --device nosuchdevice", "nosuchdevice"),
    ("wgsl saxpy --device numba", "run on wgpu devices, not on numba"),
    ("cuda saxpy --device numba", "run on cuda devices, not on numba"),
]


@pytest.mark.parametrize(("line", "says"), BAD_NATIVE_CELLS)
def test_bad_native_cell_arguments_are_usage_errors(ip, line, says):
    src = SAXPY_CUDA if line.startswith("cuda") else SAXPY_WGSL
    with pytest.raises(pytest.importorskip("IPython.core.error").UsageError, match=says):
        ip.run_cell_magic("vgpu", line, src)
    assert "saxpy" not in ip.user_ns


def test_cell_kinds_are_documented(ip):
    usage = pytest.importorskip("IPython.core.error").UsageError
    with pytest.raises(usage, match="one of kernel, run, cuda, wgsl"):
        ip.run_cell_magic("vgpu", "opencl k", "x = 1\n")
    doc = ip.find_cell_magic("vgpu").__doc__
    assert "%%vgpu cuda NAME" in doc and "%%vgpu wgsl NAME" in doc
