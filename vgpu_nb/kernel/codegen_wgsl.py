"""WGSL code generation for the kernel language: :mod:`vgpu_nb.kernel.ir` → WebGPU.

Users read this code (``kernel.source("wgpu")``), so it keeps their names and structure:
one WGSL statement per IR statement, locals declared at the top of each function, helper
functions (``vg_*``) for what WGSL lacks or does differently from Python.

Conventions shared with :mod:`vgpu_nb.backends.wgpu_backend`:

* **Bindings** (group 0): the kernel's array parameters in ``fn.params`` order (binding i
  is named after the parameter), then the uniform block (last binding, kind ``"uniform"``).
  Arrays the kernel never writes are ``var<storage, read>``. Element types are the dtype's,
  except: ``bool`` arrays are ``array<u32>`` (four 1-byte elements per word, NumPy's
  layout); arrays used atomically are ``array<atomic<i32|u32>>`` (f32 atomics work on bit
  patterns in ``array<atomic<u32>>``) and every other access to them is an atomic load or
  store; written bool arrays are ``array<atomic<u32>>`` so that a store can OR/AND its byte
  into the word without losing neighbouring elements written by other threads.
* **Uniform block** ``Params``: ``threads`` (u32, threads in the launch domain), ``cols``
  (u32, 2-D kernels only: the domain's nx), one i32 per array dimension
  (``<array>_shape<d>``), then one field per scalar parameter (bool as u32).
  :func:`launch_values` lists the values in that order.
* **Threads**: workgroups of ``workgroup`` threads, dispatched over (x, y) when there are
  more than ``max-compute-workgroups-per-dimension``; thread ``gid = (wid.x + wid.y *
  nwg.x) * workgroup + lid``; threads with ``gid >= threads`` return before the body. 2-D
  kernels: ``tid0 = gid / cols`` (row), ``tid1 = gid % cols`` (column).
* **Device functions** become WGSL ``fn`` s. Core WGSL cannot pass storage arrays to
  functions, so a function taking arrays is emitted once per combination of kernel
  bindings it is called with (``f_x``, ``f_y``) and names those bindings directly.

Python semantics (see :mod:`.ir`): floor ``//`` and ``%`` (integer division by zero gives
0; floats as NumPy, on an exact ``fmod``: WGSL's float ``%`` is ``a - b * trunc(a / b)``),
wrapping integers (native in WGSL; signed remainders as ``a - (a / b) * b`` because GLSL,
which Naga emits for OpenGL adapters, leaves ``%`` of negatives undefined), ``min``/``max``
as ``select(a, b, b < a)`` (float versions guarded by NaN tests so GL compilers cannot fold
them into ``fmin``), shifts by the type's width or more give 0 (or the sign), ``range``
loops with a non-unit step count their trips up front (no overflow at the type's ends),
NaN/inf tests by bit pattern (drivers may fold ``v != v``), ``round`` half to even (WGSL's
``round``), ``asin``/``acos`` through ``atan2`` (llvmpipe's own are 2e-4 off), ``erf`` by a
Taylor series / Numerical Recipes' erfc (max abs error 1.6e-7 in f32, measured on llvmpipe).
Other transcendental functions are the driver's. f64 needs ``shader-f64`` and
``shader-int64`` (64-bit bit patterns in its helpers) and, Vulkan's transcendental
functions being 32-bit only, has + - * / // % sqrt floor ceil trunc round abs min max fma
fmod; i64/u64 need ``shader-int64``.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..backends import wgsl as _wgsl_init
from ..backends.wgsl import VALUE_TYPE, Shader, component, load, vec_type
from ..dtypes import ArrayType, DType, bool_, f32, f64, i32, i64, u32, u64
from ..errors import KernelCompileError
from . import ir

#: bump when the generated code changes, so cached sources are not reused (the cache key
#: also hashes this file: see :func:`fingerprint`)
CODEGEN_VERSION = "1"
#: threads per workgroup of kernels (the backend may pick another size per device)
WORKGROUP = 256
#: every optional WebGPU feature the generated code can use (for ``kernel.source("wgpu")``
#: without a device)
ALL_FEATURES = frozenset({"shader-f64", "shader-int64", "subgroup"})

#: math functions with no (exact) f64 version on WebGPU: Vulkan's GLSL.std.450 exp, log,
#: sin, pow … are defined for 16/32-bit floats only.
F64_UNSUPPORTED_MATH = frozenset(
    "exp log sin cos tan tanh asin acos atan atan2 sinh cosh exp2 log2 log10 pow erf".split()
)

# WGSL keywords, reserved words, and the predeclared names we use (a user name equal to one
# is renamed: shadowing ``f32`` or ``select`` would break the generated code).
_RESERVED = frozenset(
    """alias break case const const_assert continue continuing default diagnostic discard
    else enable false fn for if let loop override requires return struct switch true var while
    NULL Self abstract active alignas alignof as asm asm_fragment async attribute auto await
    become binding_array cast catch class co_await co_return co_yield coherent column_major
    common compile compile_fragment concept const_cast consteval constexpr constinit crate
    debugger decltype delete demote demote_to_helper do dynamic_cast enum explicit export
    extends extern external fallthrough filter final finally friend from fxgroup get goto
    groupshared highp impl implements import inline instanceof interface layout lowp macro
    macro_rules match mediump meta mod module move mut mutable namespace new nil noexcept
    noinline nointerpolation noperspective null nullptr of operator package packoffset
    partition pass patch pixelfragment precise precision premerge priv protected pub public
    readonly ref regardless register reinterpret_cast require resource restrict self set
    shared sizeof smooth snorm static static_assert static_cast std subroutine super target
    template this thread_local throw trait try type typedef typeid typename typeof union
    unless unorm unsafe unsized use using varying virtual volatile wgsl where with writeonly
    yield
    bool f16 f32 f64 i32 u32 i64 u64 vec2 vec3 vec4 mat2x2 mat3x3 mat4x4 array atomic ptr
    sampler texture_2d storage uniform workgroup function private read read_write write
    abs acos asin atan atan2 ceil cos cosh exp exp2 floor fma fract log log2 max min pow
    round select sign sin sinh sqrt tan tanh trunc bitcast all any arrayLength clamp
    atomicLoad atomicStore atomicAdd atomicMin atomicMax atomicAnd atomicOr
    atomicCompareExchangeWeak workgroupBarrier subgroupAdd subgroupMin subgroupMax
    subgroupShuffleXor
    Params p main wid nwg lid gid tid0 tid1""".split()
)


@functools.cache
def fingerprint() -> str:
    """Identifies this code generator (version and source) in kernel-cache keys, so that
    an edited or upgraded generator never reuses sources generated by another."""
    data = Path(__file__).read_bytes() + Path(_wgsl_init.__file__).read_bytes()
    return f"{CODEGEN_VERSION}:{hashlib.sha256(data).hexdigest()}"


# ---- names -----------------------------------------------------------------------------------
class _Names:
    """WGSL identifiers for user names: kept when valid, renamed (``x_``, ``x_2``) when they
    are WGSL words, start with ``vg_`` (ours) or ``__``, or clash with a name in scope."""

    def __init__(self, taken: Iterable[str] = ()):
        self.used: set[str] = set(taken)
        self.map: dict[str, str] = {}

    def user(self, name: str) -> str:
        hit = self.map.get(name)
        if hit is None:
            hit = self.map[name] = self.fresh(_valid(name))
        return hit

    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.used or name in _RESERVED:
            k += 1
            name = f"{base}_{k}"
        self.used.add(name)
        return name


def _valid(name: str) -> str:
    """A user name made a valid WGSL identifier that is not one of ours."""
    if name == "_" or name.startswith("__") or name.startswith("vg_"):
        name = "v" + name
    return name + "_" if name in _RESERVED else name


# ---- types and literals ----------------------------------------------------------------------
def wgsl_type(dt: DType) -> str:
    """WGSL type of a value of ``dt`` in registers (bool is ``bool``)."""
    return "bool" if dt is bool_ else dt.name


def literal(value: Any, dt: DType) -> str:
    """A WGSL literal of ``dt`` (NaN and infinities as bit patterns)."""
    if dt is bool_:
        return "true" if value else "false"
    if dt is f32 or dt is f64:
        v = float(np.float32(value)) if dt is f32 else float(value)
        if math.isnan(v) or math.isinf(v):
            bits = "0x7fc00000u" if math.isnan(v) else ("0x7f800000u" if v > 0 else "0xff800000u")
            special = f"bitcast<f32>({bits})"
            return special if dt is f32 else f"f64({special})"
        text = str(np.float32(v)) if dt is f32 else repr(v)  # shortest round-trip form
        mant, e, exp = text.partition("e")
        if "." not in mant:
            mant += ".0"
        return mant + (f"e{exp}" if e else "") + ("f" if dt is f32 else "lf")
    v = int(value)
    if dt is i32 and v == -(2**31):
        return "i32(-2147483648)"
    if dt is i64 and v == -(2**63):
        return "bitcast<i64>(0x8000000000000000lu)"
    return f"{v}{ {i32: 'i', u32: 'u', i64: 'li', u64: 'lu'}[dt] }"


def _zero(dt: DType) -> str:
    return literal(0, dt)


def _wrap(s: str) -> str:
    return f"({s})"


def _cast(s: str, src: DType, dst: DType, atom: bool = False) -> str:
    """``s`` (of type ``src``) converted to ``dst`` (IR cast semantics)."""
    if src is dst:
        return s
    if dst is bool_:
        if src in (f32, f64):  # (not x != 0: see _FuncEmitter.expr on NaN and !=)
            return f"!({s} == {_zero(src)})"
        return f"{s if atom else _wrap(s)} != {_zero(src)}"
    if src is bool_:
        if dst in (i64, u64, f64):
            return f"select({_zero(dst)}, {literal(1, dst)}, {s})"
        return f"{dst.name}({s})"
    return f"{dst.name}({s})"


# ---- helper functions (what WGSL lacks) ------------------------------------------------------
def _helper_code(name: str, dt: DType) -> str:
    """Source of the generic helper ``name`` for type ``dt`` (see ``_Module.helper``)."""
    t = wgsl_type(dt)
    z, one = _zero(dt), literal(1, dt) if dt is not bool_ else "1"
    if name == "floordiv" and dt in (i32, i64):
        return (
            f"// Python's a // b: rounds toward -inf; a // 0 == 0 (as NumPy)\n"
            f"fn vg_floordiv_{t}(a: {t}, b: {t}) -> {t} {{\n"
            f"  if (b == {z}) {{ return {z}; }}\n"
            f"  let q = a / b;\n"
            f"  if ((q * b != a) && ((a < {z}) != (b < {z}))) {{ return q - {one}; }}\n"
            f"  return q;\n}}\n"
        )
    if name == "mod" and dt in (i32, i64):
        return (
            f"// Python's a % b: the sign of b; a % 0 == 0 (as NumPy)\n"
            f"fn vg_mod_{t}(a: {t}, b: {t}) -> {t} {{\n"
            f"  if (b == {z}) {{ return {z}; }}\n"
            f"  let r = a - (a / b) * b;  // (not a % b: GLSL leaves it undefined for a < 0)\n"
            f"  if ((r != {z}) && ((r < {z}) != (b < {z}))) {{ return r + b; }}\n"
            f"  return r;\n}}\n"
        )
    if name in ("floordiv", "mod") and dt in (u32, u64):
        op = "/" if name == "floordiv" else "%"
        return (
            f"// a {op} 0 == 0 (as NumPy; WGSL gives a for /)\n"
            f"fn vg_{name}_{t}(a: {t}, b: {t}) -> {t} {{\n"
            f"  if (b == {z}) {{ return {z}; }}\n  return a {op} b;\n}}\n"
        )
    if name == "floordiv":  # floats: NumPy's npy_divmod
        return (
            f"// Python's a // b on floats (NumPy's algorithm); a // 0 is a / 0 (inf or NaN)\n"
            f"fn vg_floordiv_{t}(a: {t}, b: {t}) -> {t} {{\n"
            f"  if (b == {z}) {{ return a / b; }}\n"
            f"  let m = vg_fmod_{t}(a, b);\n"
            f"  var d = (a - m) / b;\n"
            f"  if ((m != {z}) && ((b < {z}) != (m < {z}))) {{ d = d - {one}; }}\n"
            f"  if (d == {z}) {{ return vg_zero_like_{t}(a / b); }}  // with the quotient's sign\n"
            f"  let f = floor(d);\n"
            f"  return select(f, f + {one}, d - f > {literal(0.5, dt)});\n}}\n"
        )
    if name == "mod":  # floats
        return (
            f"// Python's a % b on floats: the sign of b; a % 0 is NaN (as NumPy)\n"
            f"fn vg_mod_{t}(a: {t}, b: {t}) -> {t} {{\n"
            f"  let m = vg_fmod_{t}(a, b);\n"
            f"  if (m == {z}) {{ return vg_zero_like_{t}(b); }}  // a zero with the sign of b\n"
            f"  if ((b < {z}) != (m < {z})) {{ return m + b; }}\n"
            f"  return m;\n}}\n"
        )
    if name == "fmod":
        inf, nan = literal(float("inf"), dt), literal(float("nan"), dt)
        return (
            f"// C's fmod, exact (WGSL's % is a - b * trunc(a / b), which is not): subtract\n"
            f"// the largest |b| * 2^k that fits until less than |b| is left (each step exact)\n"
            f"fn vg_fmod_{t}(a: {t}, b: {t}) -> {t} {{\n"
            f"  let m = abs(b);\n"
            f"  var r = abs(a);\n"
            f"  if (!(r < {inf}) || !(m > {z})) {{ return {nan}; }}  // inf, NaN or b == 0\n"
            f"  if (r < m) {{ return a; }}\n"
            f"  let em = i32(frexp(m).exp);\n"
            f"  while (r >= m) {{\n"
            f"    var s = ldexp(m, i32(frexp(r).exp) - em);\n"
            f"    if (s > r) {{ s = s * {literal(0.5, dt)}; }}\n"
            f"    r = r - s;\n"
            f"  }}\n"
            f"  return select(r, -r, a < {z});  // the sign of a\n}}\n"
        )
    if name in ("asin", "acos"):
        # llvmpipe's asin/acos are off by up to 2e-4; its atan2 by ~3e-6
        y, x = ("v", "sqrt((1.0f - v) * (1.0f + v))")
        if name == "acos":
            y, x = x, y
        return (
            f"// {name} through atan2 (more accurate than some drivers' {name})\n"
            f"fn vg_{name}_f32(v: f32) -> f32 {{ return atan2({y}, {x}); }}\n"
        )
    if name == "pow":
        nan = literal(float("nan"), dt)
        inf = literal(float("inf"), dt)
        return (
            f"// x ** y with C's rules for zero and negative x (WGSL's pow is exp2(y * log2(x)))\n"
            f"fn vg_pow_{t}(x: {t}, y: {t}) -> {t} {{\n"
            f"  if (y == {z} || x == {one}) {{ return {one}; }}\n"
            f"  var r = pow(abs(x), y);\n"
            f"  if (x == {z}) {{ r = select({z}, {inf}, y < {z}); }}\n"
            f"  if (!(x < {z}) && !(x == {z} && vg_signbit_{t}(x))) {{ return r; }}  // NaN too\n"
            f"  if (trunc(y) != y) {{ return select({nan}, r, x == {z}); }}  // (-x) ** 0.5\n"
            f"  let odd = fract(y * {literal(0.5, dt)}) != {z};\n"
            f"  return select(r, -r, odd);  // negative ** odd integer: negative\n}}\n"
        )
    if name in ("min", "max"):
        cmp = "<" if name == "min" else ">"
        if dt not in (f32, f64):
            return (
                f"fn vg_{name}_{t}(a: {t}, b: {t}) -> {t} {{ return select(a, b, b {cmp} a); }}"
                f"  // Python's {name}\n"
            )
        return (
            f"// Python's {name}: b only if b {cmp} a, so a NaN in a stays (the NaN tests stop\n"
            f"// GL compilers from turning this into f{name}, which may drop NaN or swap zeros)\n"
            f"fn vg_{name}_{t}(a: {t}, b: {t}) -> {t} {{\n"
            f"  return select(a, b, b {cmp} a && !vg_isnan_{t}(a) && !vg_isnan_{t}(b));\n}}\n"
        )
    if name == "zero_like":
        if dt is f32:
            body = "bitcast<f32>(bitcast<u32>(x) & 0x80000000u)"
        else:
            body = "bitcast<f64>(bitcast<u64>(x) & 0x8000000000000000lu)"
        return (
            f"// 0 with the sign of x (0.0 * x may be folded to +0.0 by compilers)\n"
            f"fn vg_zero_like_{t}(x: {t}) -> {t} {{ return {body}; }}\n"
        )
    if name == "signbit":
        bits = "bitcast<u32>(x) >> 31u" if dt is f32 else "bitcast<u64>(x) >> 63lu"
        zero = "0u" if dt is f32 else "0lu"
        return f"fn vg_signbit_{t}(x: {t}) -> bool {{ return ({bits}) != {zero}; }}\n"
    if name in ("isnan", "isinf", "isfinite"):
        if dt is f32:
            bits, mag, exp = "bitcast<u32>(x)", "0x7fffffffu", "0x7f800000u"
        else:
            bits, mag, exp = "bitcast<u64>(x)", "0x7ffffffffffffffflu", "0x7ff0000000000000lu"
        test = {
            "isnan": f"({bits} & {mag}) > {exp}",
            "isinf": f"({bits} & {mag}) == {exp}",
            "isfinite": f"({bits} & {exp}) != {exp}",
        }[name]
        return f"fn vg_{name}_{t}(x: {t}) -> bool {{ return {test}; }}  // by bit pattern\n"
    if name in ("shl", "shr"):
        bits = 64 if dt in (i64, u64) else 32
        if name == "shl":
            body = f"select({z}, a << b, b < {bits}u)"
            what = "shifting by the width or more gives 0"
        elif dt in (i32, i64):
            body = f"a >> min(b, {bits - 1}u)"
            what = "shifting by the width or more gives the sign"
        else:
            body = f"select({z}, a >> b, b < {bits}u)"
            what = "shifting by the width or more gives 0"
        op = "<<" if name == "shl" else ">>"
        return (
            f"fn vg_{name}_{t}(a: {t}, b: u32) -> {t} {{ return {body}; }}  // a {op} b: {what}\n"
        )
    if name == "trips":
        w = "u64" if dt in (i64, u64) else "u32"
        u0, u1 = literal(0, u64 if w == "u64" else u32), literal(1, u64 if w == "u64" else u32)
        if dt in (u32, u64):
            return (
                f"// trips of range(start, stop, step), step > 0\n"
                f"fn vg_trips_{t}(start: {t}, stop: {t}, step: {t}) -> u32 {{\n"
                f"  if (start >= stop) {{ return 0u; }}\n"
                f"  return u32((stop - start - {u1}) / step + {u1});\n}}\n"
            )
        return (
            f"// trips of range(start, stop, step), step != 0, in unsigned arithmetic\n"
            f"// (no overflow at the ends of the type)\n"
            f"fn vg_trips_{t}(start: {t}, stop: {t}, step: {t}) -> u32 {{\n"
            f"  if (step > {z}) {{\n"
            f"    if (start >= stop) {{ return 0u; }}\n"
            f"    return u32(({w}(stop) - {w}(start) - {u1}) / {w}(step) + {u1});\n  }}\n"
            f"  if (start <= stop) {{ return 0u; }}\n"
            f"  return u32(({w}(start) - {w}(stop) - {u1}) / ({u0} - {w}(step)) + {u1});\n}}\n"
        )
    if name == "log10":
        return f"fn vg_log10_{t}(x: {t}) -> {t} {{ return log2(x) * 0.30102999566398120f; }}\n"
    if name == "erf":
        taylor = [
            2 / math.sqrt(math.pi) * (-1) ** n / (math.factorial(n) * (2 * n + 1))
            for n in range(11)
        ]
        horner = literal(taylor[-1], f32)
        for c in reversed(taylor[:-1]):
            horner = f"fma(z, {horner}, {literal(c, f32)})"
        nr = [-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806, 0.27886807,
              -1.13520398, 1.48851587, -0.82215223, 0.17087277]  # fmt: skip
        rational = literal(nr[-1], f32)
        for c in reversed(nr[:-1]):
            rational = f"fma(t, {rational}, {literal(c, f32)})"
        return (
            "// erf (no WGSL builtin): Taylor series below 1, Numerical Recipes' erfc above\n"
            "// (relative error 1.2e-7); max abs error ~2e-7 in f32\n"
            "fn vg_erf_f32(x: f32) -> f32 {\n"
            "  let a = abs(x);\n"
            "  var r: f32;\n"
            "  if (a < 1.0f) {\n"
            "    let z = a * a;\n"
            f"    r = a * {horner};\n"
            "  } else {\n"
            "    let t = 1.0f / (1.0f + 0.5f * a);\n"
            f"    r = 1.0f - t * exp(-a * a + {rational});\n"
            "  }\n"
            "  return select(r, -r, x < 0.0f);\n}\n"
        )
    raise AssertionError(f"no helper {name} for {dt.name}")


#: helpers that float helpers call (emitted before them)
_HELPER_DEPS = {
    "min": ("isnan",),
    "max": ("isnan",),
    "pow": ("signbit",),
    "floordiv": ("fmod", "zero_like"),
    "mod": ("fmod", "zero_like"),
}


# ---- bindings --------------------------------------------------------------------------------
@dataclass
class _Binding:
    """A kernel array parameter as a WGSL storage variable."""

    param: str  # the IR name
    name: str  # the WGSL name
    dtype: DType
    ndim: int
    written: bool
    atomic: bool  # declared array<atomic<…>> (used atomically, or a written bool array)
    shapes: tuple[str, ...]  # uniform expressions of each dimension (i32)

    @property
    def element(self) -> str:
        if self.dtype is bool_ or (self.atomic and self.dtype is f32):
            inner = "u32"
        else:
            inner = self.dtype.name
        return f"atomic<{inner}>" if self.atomic else inner


def _spec_key(fn: ir.Function, arrays: tuple[str, ...]) -> tuple[int, tuple[str, ...]]:
    return (id(fn), arrays)


# ---- the module emitter ----------------------------------------------------------------------
class _Module:
    """One WGSL module: bindings, helpers, device functions (specialised per binding)."""

    def __init__(self, taken: Iterable[str] = ()):
        self.names = _Names(taken)
        self.bindings: dict[str, _Binding] = {}  # kernel param → binding
        self.helpers: dict[str, str] = {}  # helper name → code (emission order)
        self.funcs: dict[tuple[int, tuple[str, ...]], str] = {}  # spec → WGSL name
        self.func_code: list[str] = []

    # helpers are registered on first use; their names start with vg_, which user names never do
    def helper(self, name: str, dt: DType) -> str:
        full = f"vg_{name}_{wgsl_type(dt)}"
        if full not in self.helpers:
            for dep in _HELPER_DEPS.get(name, ()) if dt in (f32, f64) else ():
                self.helper(dep, dt)
            self.helpers[full] = _helper_code(name, dt)
        return full

    def binding_helper(self, kind: str, b: _Binding) -> str:
        """Per-binding helpers: bool element load/store and f32 atomics."""
        full = f"vg_{kind}_{b.name}"
        if full in self.helpers:
            return full
        arr = b.name
        if kind == "load":  # bool element
            word = f"atomicLoad(&{arr}[k >> 2u])" if b.atomic else f"{arr}[k >> 2u]"
            code = (
                f"fn {full}(i: i32) -> bool {{  // bools: 1 byte each, 4 per u32 word\n"
                f"  let k = u32(i);\n"
                f"  return (({word} >> ((k & 3u) << 3u)) & 0xffu) != 0u;\n}}\n"
            )
        elif kind == "store":  # bool element
            code = (
                f"fn {full}(i: i32, v: bool) {{\n"
                f"  // 4 bools share a u32 word that other threads may be writing: change only\n"
                f"  // this byte, atomically\n"
                f"  let k = u32(i);\n"
                f"  let shift = (k & 3u) << 3u;\n"
                f"  if (v) {{\n    atomicOr(&{arr}[k >> 2u], 1u << shift);\n  }} else {{\n"
                f"    atomicAnd(&{arr}[k >> 2u], ~(0xffu << shift));\n  }}\n}}\n"
            )
        else:  # atomic_add / atomic_min / atomic_max on f32 bit patterns
            op = kind.removeprefix("atomic_")
            if op == "add":
                new, skip = "bitcast<f32>(old) + v", ""
            else:
                cmp = "<" if op == "min" else ">"
                new = "v"
                skip = (
                    f"    let nan = (old & 0x7fffffffu) > 0x7f800000u;  // NaN in memory: replace\n"
                    f"    if (!(v {cmp} bitcast<f32>(old)) && !nan) {{\n"
                    f"      break;  // nothing to change\n    }}\n"
                )
            code = (
                f"// f32 atomic {op}: compare-exchange on the bit pattern until no other\n"
                f"// thread wrote in between; returns the old value\n"
                f"fn {full}(i: i32, v: f32) -> f32 {{\n"
                f"  var old = atomicLoad(&{arr}[i]);\n"
                f"  loop {{\n{skip}"
                f"    let r = atomicCompareExchangeWeak(&{arr}[i], old, bitcast<u32>({new}));\n"
                f"    if (r.exchanged) {{\n      break;\n    }}\n"
                f"    old = r.old_value;\n  }}\n"
                f"  return bitcast<f32>(old);\n}}\n"
            )
        self.helpers[full] = code
        return full

    # ---- device functions ----------------------------------------------------------------------
    def collect(self, fn: ir.Function, arrays: dict[str, str], order: list[Any]) -> None:
        """Every (device function, bindings) reached from ``fn`` (whose array params map to
        the bindings ``arrays``), callees first."""
        for e in _all_exprs(fn.body):
            if isinstance(e, ir.Call):
                sub = tuple(arrays[a.name] for a in e.args if isinstance(a, ir.ArrayArg))
                key = _spec_key(e.func, sub)
                if key not in self.funcs:
                    self.funcs[key] = ""  # placeholder: named below
                    mapping = {p.name: b for p, b in zip(e.func.arrays, sub, strict=True)}
                    self.collect(e.func, mapping, order)
                    order.append((e.func, sub, mapping))

    def name_funcs(self, order: list[Any]) -> None:
        """Module-scope names of the specialisations (``f``, or ``f_x`` for bindings x)."""
        for f, sub, _ in order:
            base = "_".join([_valid(f.name), *(self.bindings[b].name for b in sub)])
            self.funcs[_spec_key(f, sub)] = self.names.fresh(base)

    def emit_funcs(self, order: list[Any]) -> None:
        for f, sub, mapping in order:
            name = self.funcs[_spec_key(f, sub)]
            em = _FuncEmitter(self, f, {k: self.bindings[v] for k, v in mapping.items()}, name)
            self.func_code.append(em.function())

    def bindings_code(self, uniform_index: int | None) -> str:
        lines = []
        for i, b in enumerate(self.bindings.values()):
            space = "storage, read_write" if b.written else "storage, read"
            lines.append(f"@group(0) @binding({i}) var<{space}> {b.name}: array<{b.element}>;")
        if uniform_index is not None:
            lines.append(f"@group(0) @binding({uniform_index}) var<uniform> p: Params;")
        return "\n".join(lines) + "\n"


def _all_exprs(body: list[ir.Stmt]) -> Iterable[Any]:
    for s in ir.walk_stmts(body):
        for e in ir.stmt_exprs(s):
            yield from ir.walk_expr(e)


# ---- function emitter ------------------------------------------------------------------------
_ARITH = {"add": "+", "sub": "-", "mul": "*", "div": "/"}
_PREC = {"add": 1, "sub": 1, "mul": 2, "div": 2}
_CMP = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}
_HELPER_MATH = "min max pow fmod isnan isinf isfinite log10 erf asin acos".split()
_SAME_NAME_MATH = (
    "sqrt exp log sin cos tan tanh floor ceil atan sinh cosh exp2 log2 trunc round abs fma atan2"
).split()


class _FuncEmitter:
    """Emits one function body (the kernel's ``main`` or a device function)."""

    def __init__(
        self,
        mod: _Module,
        fn: ir.Function,
        arrays: dict[str, _Binding],
        wgsl_name: str,
    ):
        self.mod, self.fn, self.arrays, self.wgsl_name = mod, fn, arrays, wgsl_name
        self.names = _Names(mod.names.used)
        self.assigned = {s.name for s in ir.walk_stmts(fn.body) if isinstance(s, ir.Assign)}
        self.assigned |= {s.var for s in ir.walk_stmts(fn.body) if isinstance(s, ir.ForRange)}
        self.used_locals: set[str] = set()
        self.loops = 0  # range loops with a trip counter so far

    def var(self, name: str) -> str:
        self.used_locals.add(name)
        return self.names.user(name)

    # ---- expressions ----------------------------------------------------------------------
    def sub(self, e: ir.Expr, parent: str | None = None, right: bool = False) -> str:
        """``e`` as an operand (parenthesised unless atomic, or arithmetic that binds at
        least as tightly as the ``parent`` arithmetic op on its left)."""
        s = self.expr(e)
        if isinstance(e, ir.Binary) and e.op in _ARITH and parent in _ARITH:
            mine, theirs = _PREC[e.op], _PREC[parent]
            if mine > theirs or (mine == theirs and not right):
                return s
        if _is_call(s):  # (helpers: vg_mod_i32(a, b))
            return s
        if isinstance(e, ir.Binary | ir.Compare | ir.Logical | ir.Unary) or s.startswith("-"):
            return _wrap(s)
        if isinstance(e, ir.Cast) and e.type is bool_ and e.operand.type is not bool_:
            return _wrap(s)
        return s

    def expr(self, e: ir.Expr) -> str:
        if isinstance(e, ir.Const):
            return literal(e.value, e.type)
        if isinstance(e, ir.Var):
            return self.var(e.name)
        if isinstance(e, ir.ThreadId):
            return f"tid{e.axis}"
        if isinstance(e, ir.Load):
            return self.load(e.array, e.index)
        if isinstance(e, ir.Shape):
            return self.arrays[e.array].shapes[e.dim]
        if isinstance(e, ir.Unary):
            return self.unary(e)
        if isinstance(e, ir.Binary):
            return self.binary(e)
        if isinstance(e, ir.Compare):
            a, b = e.lhs, e.rhs
            if a.type is bool_ and e.op not in ("eq", "ne"):
                return f"i32({self.expr(a)}) {_CMP[e.op]} i32({self.expr(b)})"
            if e.op == "ne" and a.type in (f32, f64):
                # Naga compiles != to an *ordered* compare (false when a NaN is involved;
                # WGSL lets implementations assume no NaN); == is ordered too, so this is
                # exact: NaN != x is true, as in Python
                return f"!({self.sub(a)} == {self.sub(b)})"
            return f"{self.sub(a)} {_CMP[e.op]} {self.sub(b)}"
        if isinstance(e, ir.Logical):
            op = "&&" if e.op == "and" else "||"
            return f"{self.sub(e.lhs)} {op} {self.sub(e.rhs)}"
        if isinstance(e, ir.Select):
            return f"select({self.expr(e.b)}, {self.expr(e.a)}, {self.expr(e.cond)})"
        if isinstance(e, ir.Cast):
            src = e.operand.type
            inner = self.expr(e.operand) if e.type is not bool_ else self.sub(e.operand)
            return _cast(inner, src, e.type, atom=True)
        if isinstance(e, ir.Math):
            return self.math(e)
        if isinstance(e, ir.Call):
            return self.call(e)
        if isinstance(e, ir.Atomic):
            return self.atomic(e)
        raise AssertionError(f"unknown expression {type(e).__name__}")

    def index(self, array: str, index: tuple[ir.Expr, ...]) -> str:
        parts = []
        for x in index:
            s = self.expr(x)
            parts.append(s if x.type is i32 else f"i32({s})")
        if len(parts) == 1:
            return parts[0]
        b = self.arrays[array]
        i = _wrap(parts[0]) if not _simple(parts[0]) else parts[0]
        j = _wrap(parts[1]) if not _simple(parts[1]) else parts[1]
        return f"{i} * {b.shapes[1]} + {j}"

    def load(self, array: str, index: tuple[ir.Expr, ...]) -> str:
        b = self.arrays[array]
        k = self.index(array, index)
        if b.dtype is bool_:
            return f"{self.mod.binding_helper('load', b)}({k})"
        if b.atomic:
            v = f"atomicLoad(&{b.name}[{k}])"
            return f"bitcast<f32>({v})" if b.dtype is f32 else v
        return f"{b.name}[{k}]"

    def unary(self, e: ir.Unary) -> str:
        if e.op == "not":
            return f"!{self.sub(e.operand)}"
        if e.op == "invert":
            return f"~{self.sub(e.operand)}"
        if e.type in (u32, u64):  # WGSL has no unary minus on unsigned types
            return f"{_zero(e.type)} - {self.sub(e.operand)}"
        return f"-{self.sub(e.operand)}"

    def binary(self, e: ir.Binary) -> str:
        t, op = e.type, e.op
        a, b = e.lhs, e.rhs
        if op in _ARITH:
            return f"{self.sub(a, op)} {_ARITH[op]} {self.sub(b, op, right=True)}"
        if op in ("floordiv", "mod"):
            return f"{self.mod.helper(op, t)}({self.expr(a)}, {self.expr(b)})"
        if op == "pow":
            return f"{self.mod.helper('pow', t)}({self.expr(a)}, {self.expr(b)})"
        if op in ("and", "or", "xor"):
            sym = {"and": "&", "or": "|", "xor": "^"}[op]
            if t is bool_ and op == "xor":
                sym = "!="
            return f"{self.sub(a)} {sym} {self.sub(b)}"
        if op in ("lshift", "rshift"):
            bits = 64 if t in (i64, u64) else 32
            sym = "<<" if op == "lshift" else ">>"
            if isinstance(b, ir.Const) and 0 <= int(b.value) < bits:
                return f"{self.sub(a)} {sym} {int(b.value)}u"
            amount = self.expr(b) if b.type is u32 else f"u32({self.expr(b)})"
            helper = self.mod.helper("shl" if op == "lshift" else "shr", t)
            return f"{helper}({self.expr(a)}, {amount})"
        raise AssertionError(f"unknown binary op {op}")

    def math(self, e: ir.Math) -> str:
        name = e.fn
        args = [self.expr(a) for a in e.args]
        t = e.args[0].type
        if name in _SAME_NAME_MATH:
            if name == "abs" and t in (u32, u64):
                return args[0]
            return f"{name}({', '.join(args)})"
        if name in _HELPER_MATH:  # (asin, acos, log10 and erf: f32 only)
            return f"{self.mod.helper(name, t)}({', '.join(args)})"
        raise AssertionError(f"unknown math function {name}")

    def call(self, e: ir.Call) -> str:
        sub = tuple(self.arrays[a.name].param for a in e.args if isinstance(a, ir.ArrayArg))
        name = self.mod.funcs[_spec_key(e.func, sub)]
        args = [self.expr(a) for a in e.args if not isinstance(a, ir.ArrayArg)]
        return f"{name}({', '.join(args)})"

    def atomic(self, e: ir.Atomic) -> str:
        b = self.arrays[e.array]
        k = self.index(e.array, e.index)
        v = self.expr(e.value)
        if b.dtype is f32:
            return f"{self.mod.binding_helper('atomic_' + e.op, b)}({k}, {v})"
        fn = {"add": "atomicAdd", "min": "atomicMin", "max": "atomicMax"}[e.op]
        return f"{fn}(&{b.name}[{k}], {v})"

    # ---- statements -----------------------------------------------------------------------------
    def block(self, body: list[ir.Stmt], depth: int) -> list[str]:
        out: list[str] = []
        for s in body:
            out += self.stmt(s, depth)
        return out

    def stmt(self, s: ir.Stmt, depth: int) -> list[str]:
        pad = "  " * depth
        if isinstance(s, ir.Assign):
            return [f"{pad}{self.var(s.name)} = {self.expr(s.value)};"]
        if isinstance(s, ir.Store):
            return [pad + self.store(s) + ";"]
        if isinstance(s, ir.If):
            return self.if_(s, depth)
        if isinstance(s, ir.ForRange):
            return self.for_range(s, depth)
        if isinstance(s, ir.While):
            return [
                f"{pad}while ({self.expr(s.cond)}) {{",
                *self.block(s.body, depth + 1),
                f"{pad}}}",
            ]
        if isinstance(s, ir.Break):
            return [f"{pad}break;"]
        if isinstance(s, ir.Continue):
            return [f"{pad}continue;"]
        if isinstance(s, ir.Return):
            if s.value is None:
                return [f"{pad}return;"]
            return [f"{pad}return {self.expr(s.value)};"]
        if isinstance(s, ir.ExprStmt):
            v = s.value
            if isinstance(v, ir.Call) and v.func.ret is None:
                return [f"{pad}{self.expr(v)};"]
            return [f"{pad}_ = {self.expr(v)};"]
        if isinstance(s, ir.Print):  # (kernel_unsupported refuses to run it)
            return [f"{pad}// print(...) (line {s.line}) runs only on the numpy backend"]
        raise AssertionError(f"unknown statement {type(s).__name__}")

    def store(self, s: ir.Store) -> str:
        b = self.arrays[s.array]
        k = self.index(s.array, s.index)
        v = self.expr(s.value)
        if b.dtype is bool_:
            return f"{self.mod.binding_helper('store', b)}({k}, {v})"
        if b.atomic:
            return f"atomicStore(&{b.name}[{k}], {f'bitcast<u32>({v})' if b.dtype is f32 else v})"
        return f"{b.name}[{k}] = {v}"

    def if_(self, s: ir.If, depth: int) -> list[str]:
        pad = "  " * depth
        out = [f"{pad}if ({self.expr(s.cond)}) {{", *self.block(s.body, depth + 1)]
        orelse = s.orelse
        while len(orelse) == 1 and isinstance(orelse[0], ir.If):
            elif_ = orelse[0]
            out += [f"{pad}}} else if ({self.expr(elif_.cond)}) {{"]
            out += self.block(elif_.body, depth + 1)
            orelse = elif_.orelse
        if orelse:
            out += [f"{pad}}} else {{", *self.block(orelse, depth + 1)]
        out.append(f"{pad}}}")
        return out

    def for_range(self, s: ir.ForRange, depth: int) -> list[str]:
        """``range(start, stop, step)``: stop and step evaluated once (into the hidden
        locals unless constant), the user's variable assigned from a hidden counter at the
        top of each iteration. A step of ±1 compares the counter with stop; other steps
        count the trips up front (in unsigned arithmetic: no overflow at the type's ends)."""
        pad = "  " * depth
        t = s.start.type
        k = self.var(s.counter)
        out = [f"{pad}{k} = {self.expr(s.start)};"]

        def once(e: ir.Expr, hidden: str) -> str:
            if isinstance(e, ir.Const):
                return self.expr(e)
            name = self.var(hidden)
            out.append(f"{pad}{name} = {self.expr(e)};")
            return name

        stop = once(s.stop, s.limit)
        step = once(s.step, s.stride)
        unit = isinstance(s.step, ir.Const) and int(s.step.value) in (1, -1)
        if unit:
            up = int(s.step.value) > 0  # type: ignore[union-attr]
            one = literal(1, t)
            advance = f"{k} = {k} + {one}" if up else f"{k} = {k} - {one}"
            out.append(f"{pad}for (; {k} {'<' if up else '>'} {stop}; {advance}) {{")
        else:
            trips = f"vg_trips{self.loops}"  # (user names never start with vg_)
            self.loops += 1
            helper = self.mod.helper("trips", t)
            if isinstance(s.step, ir.Const) and int(s.step.value) < 0:
                advance = f"{k} = {k} - {literal(-int(s.step.value), t)}"
            else:
                advance = f"{k} = {k} + {step}"
            out.append(
                f"{pad}for (var {trips} = {helper}({k}, {stop}, {step}); {trips} != 0u; "
                f"{advance}) {{"
            )
            out.append(f"{pad}  {trips} = {trips} - 1u;")
        out.append(f"{pad}  {self.var(s.var)} = {k};")
        out += self.block(s.body, depth + 1)
        out.append(f"{pad}}}")
        return out

    # ---- whole functions ------------------------------------------------------------------------
    def declarations(self, skip: Collection[str], depth: int = 1) -> list[str]:
        pad = "  " * depth
        return [
            f"{pad}var {self.names.user(n)}: {wgsl_type(t)};"
            for n, t in self.fn.locals.items()
            if n in self.used_locals and n not in skip
        ]

    def function(self) -> str:
        """A device function: scalar parameters (copied into a ``var`` when assigned)."""
        fn = self.fn
        params, copies = [], []
        scalars = {p.name for p in fn.scalars}
        for p in fn.scalars:
            t = wgsl_type(p.type)  # type: ignore[arg-type]
            if p.name in self.assigned:
                inner = self.names.fresh(self.names.user(p.name) + "_in")
                params.append(f"{inner}: {t}")
                copies.append(f"  var {self.names.user(p.name)}: {t} = {inner};")
            else:
                params.append(f"{self.names.user(p.name)}: {t}")
        body = self.block(fn.body, 1)
        if fn.ret is not None and not (fn.body and isinstance(fn.body[-1], ir.Return)):
            body.append(f"  return {_zero(fn.ret)};  // (not reached when every path returns)")
        ret = f" -> {wgsl_type(fn.ret)}" if fn.ret is not None else ""
        head = f"fn {self.wgsl_name}({', '.join(params)}){ret} {{"
        origin = f"// @vg.func {fn.py_name or fn.name} ({_where(fn)})"
        lines = [origin, head, *copies, *self.declarations(scalars), *body, "}"]
        return "\n".join(lines) + "\n"


def _is_call(s: str) -> bool:
    """Whether ``s`` is one call ``name(...)`` (its first parenthesis closes at the end)."""
    head, paren, _ = s.partition("(")
    if not paren or not head.replace("_", "a").isalnum() or not s.endswith(")"):
        return False
    depth = 0
    for pos, ch in enumerate(s):
        depth += (ch == "(") - (ch == ")")
        if depth == 0 and ch == ")":
            return pos == len(s) - 1
    return False


def _simple(s: str) -> bool:
    return s.replace("_", "").replace(".", "").isalnum()


def _where(fn: ir.Function) -> str:
    return f"{fn.filename}:{fn.firstline}"


# ---- kernels ---------------------------------------------------------------------------------
def kernel_source(fn: ir.Function, features: Collection[str], workgroup: int = WORKGROUP) -> Shader:
    """The WGSL of kernel ``fn`` (see the module docstring for the layout)."""
    u = ir.usage(fn)
    mod = _Module()
    fields = [("threads", "u32")] + ([("cols", "u32")] if fn.ndim == 2 else [])
    field_names = _Names(["threads", "cols"])
    for p in fn.arrays:
        at: ArrayType = p.type  # type: ignore[assignment]
        name = mod.names.user(p.name)
        shapes = []
        for d in range(at.ndim):
            f = field_names.fresh(f"{name}_shape{d}")
            fields.append((f, "i32"))
            shapes.append(f"p.{f}")
        written = p.name in u.written
        atomic = p.name in u.atomic or (at.dtype is bool_ and written)
        b = _Binding(p.name, name, at.dtype, at.ndim, written, atomic, tuple(shapes))
        mod.bindings[p.name] = b
    scalar_field = {}
    for p in fn.scalars:
        scalar_field[p.name] = f = field_names.user(p.name)
        fields.append((f, "u32" if p.type is bool_ else p.type.name))  # type: ignore[union-attr]

    order: list[Any] = []
    mod.collect(fn, {p.name: p.name for p in fn.arrays}, order)
    mod.name_funcs(order)
    mod.emit_funcs(order)

    em = _FuncEmitter(mod, fn, mod.bindings, "main")
    body = em.block(fn.body, 1)
    lines = [
        f"@compute @workgroup_size({workgroup})",
        "fn main(@builtin(workgroup_id) wid: vec3<u32>,",
        "        @builtin(num_workgroups) nwg: vec3<u32>,",
        "        @builtin(local_invocation_index) lid: u32) {",
        f"  let gid = (wid.x + wid.y * nwg.x) * {workgroup}u + lid;",
        "  if (gid >= p.threads) {",
        "    return;  // outside the launch domain",
        "  }",
    ]
    if fn.ndim == 2:
        lines += [
            "  let tid0 = i32(gid / p.cols);  // row",
            "  let tid1 = i32(gid % p.cols);  // column",
        ]
    elif fn.ndim == 1:
        lines.append("  let tid0 = i32(gid);")
    for p in fn.scalars:
        if p.name in em.used_locals:
            value = f"p.{scalar_field[p.name]}" + (" != 0u" if p.type is bool_ else "")
            kw = "var" if p.name in em.assigned else "let"
            lines.append(f"  {kw} {em.names.user(p.name)} = {value};")
    lines += [*em.declarations(scalar_field), *body, "}"]

    struct = "struct Params {\n" + "".join(f"  {n}: {t},\n" for n, t in fields) + "}\n"
    header = f"// vgpu_nb kernel {fn.py_name or fn.name} ({_where(fn)}): generated WGSL\n"
    parts = [
        header + struct,
        mod.bindings_code(len(mod.bindings)),
        *mod.helpers.values(),
        *mod.func_code,
        "\n".join(lines) + "\n",
    ]
    kinds = [(b.param, "rw" if b.written else "read") for b in mod.bindings.values()]
    kinds.append(("p", "uniform"))
    return Shader("\n".join(parts), tuple(kinds), tuple(fields), workgroup)


def launch_values(fn: ir.Function, domain: Sequence[int], args: Sequence[Any]) -> list[int | float]:
    """The uniform values of a launch, in the order of :func:`kernel_source`'s fields."""
    threads = math.prod(domain)
    values: list[int | float] = [threads]
    if fn.ndim == 2:
        values.append(int(domain[1]))
    arrays, scalars = [], []
    for p, a in zip(fn.params, args, strict=True):
        (arrays if p.is_array else scalars).append((p, a))
    for _, (_, shape) in arrays:
        values += [int(d) for d in shape]
    for p, a in scalars:
        v = a.item() if isinstance(a, np.generic) else a
        values.append(int(bool(v)) if p.type is bool_ else v)
    return values


# ---- capability ------------------------------------------------------------------------------
def _functions(fns: Iterable[ir.Function]) -> list[ir.Function]:
    """``fns`` and every device function they call (each once)."""
    seen: dict[int, ir.Function] = {}
    stack = list(fns)
    while stack:
        f = stack.pop()
        if id(f) in seen:
            continue
        seen[id(f)] = f
        stack += [e.func for e in _all_exprs(f.body) if isinstance(e, ir.Call)]
    return list(seen.values())


def _needs(fns: Iterable[ir.Function], extra_types: Iterable[DType] = ()) -> list[str]:
    """What the functions need that WebGPU may lack: feature names and f64 math."""
    types: set[DType] = set(extra_types)
    f64_math: set[str] = set()
    prints = False
    for f in _functions(fns):
        for p in f.params:
            types.add(p.type.dtype if isinstance(p.type, ArrayType) else p.type)
        types.update(f.locals.values())
        if f.ret is not None:
            types.add(f.ret)
        for s in ir.walk_stmts(f.body):
            prints = prints or isinstance(s, ir.Print)
        for e in _all_exprs(f.body):
            if isinstance(e, ir.Expr):
                types.add(e.type)
            if isinstance(e, ir.Math) and e.args and e.args[0].type is f64:
                if e.fn in F64_UNSUPPORTED_MATH:
                    f64_math.add(e.fn)
            if isinstance(e, ir.Binary) and e.op == "pow" and e.type is f64:
                f64_math.add("pow")
    needs = []
    if prints:
        needs.append("print")
    if f64 in types:
        needs.append("shader-f64")
    if types & {i64, u64, f64}:  # (f64 helpers use 64-bit bit patterns and frexp's i64)
        needs.append("shader-int64")
    needs += [f"f64-math:{m}" for m in sorted(f64_math)]
    return needs


def _why(needs: list[str], features: Collection[str]) -> str | None:
    reasons = []
    for n in needs:
        if n == "print":
            reasons.append("print() runs only on the numpy backend")
        elif n == "shader-f64" and n not in features:
            reasons.append("float64 needs the WebGPU feature 'shader-f64'")
        elif n == "shader-int64" and n not in features:
            reasons.append("int64/uint64 (and float64) need the WebGPU feature 'shader-int64'")
    f64_math = [n.split(":")[1] for n in needs if n.startswith("f64-math:")]
    if f64_math:
        reasons.append(
            f"{', '.join(f64_math)} on float64 has no exact WebGPU version (Vulkan's "
            "transcendental functions are 32-bit only); compute in float32 or use another "
            "backend"
        )
    return "; ".join(reasons) if reasons else None


def uses_f64_fmod(fns: Iterable[ir.Function]) -> bool:
    """Whether float64 ``//``, ``%`` or ``fmod`` appear (their exact loop, :func:`_helper`
    "fmod", lost the device when NVIDIA's Vulkan driver compiled it for f64 on the lent
    H200, 2026-11-23; the backend refuses them on hardware adapters)."""
    for f in _functions(fns):
        for e in _all_exprs(f.body):
            if isinstance(e, ir.Binary) and e.op in ("floordiv", "mod") and e.type is f64:
                return True
            if isinstance(e, ir.Math) and e.fn == "fmod" and e.type is f64:
                return True
    return False


def kernel_unsupported(fn: ir.Function, features: Collection[str]) -> str | None:
    """Why ``fn`` cannot run exactly on a WebGPU device with ``features``, or None."""
    return _why(_needs([fn]), features)


# ---- reductions ------------------------------------------------------------------------------
#: threads per workgroup of reduction shaders
RED_WORKGROUP = 256
#: full reductions, pass 1: vector loads in flight per thread and accumulators per thread
RED_UNROLL = 2
RED_ACCUMULATORS = 4
#: … and at least this many grid-stride iterations per thread before adding workgroups
RED_MIN_ITERS = 4


@dataclass(frozen=True)
class ReductionShaders:
    """The shaders of one ``@vg.reduction`` (the backend compiles them when first used).

    ``full1``: grid-stride partials, one per workgroup (params ``n``, ``pbase``);
    ``full2``: one workgroup combines ``n`` partials, applies ``post`` and stores;
    ``axis_thread`` / ``axis_group``: a 2-D reduction along one axis, a thread or a
    workgroup per output (params ``nout len so sk slice nsl``: output o, element k is at
    ``o * so + k * sk``; slice ``sl`` covers ``k`` in ``[sl * slice, (sl + 1) * slice)``),
    finishing or (``*_split``) storing partials ``pv[sl * nout + o]``; ``gather``: a
    thread per output combines its ``nsl`` partials and finishes. ``n_lo``/``n_hi``: the
    element count given to ``post(acc, n)``.
    """

    full1: Shader
    full2: Shader
    axis_thread: Shader
    axis_thread_split: Shader
    axis_group: Shader
    axis_group_split: Shader
    gather: Shader
    vector: int  # elements per 16-byte vector load in full1 (1: element loads)

    _NAMES = ("full1", "full2", "axis_thread", "axis_thread_split", "axis_group",
              "axis_group_split", "gather")  # fmt: skip

    def __iter__(self) -> Iterator[Shader]:
        return (getattr(self, name) for name in self._NAMES)

    @property
    def source(self) -> str:
        """Every shader, one after the other (what ``reduction.source("wgpu")`` shows)."""
        return "\n".join(f"// ==== {n} ====\n{getattr(self, n).code}" for n in self._NAMES)


class _Red:
    """Shared pieces of the shaders of one reduction."""

    def __init__(self, red: ir.Reduction, features: Collection[str], workgroup: int):
        self.red, self.wg = red, workgroup
        self.features = frozenset(features)
        self.acc = red.acc
        self.state = VALUE_TYPE[red.acc.name]  # bool state is u32 0/1 (storable)
        self.k = len(red.inputs)
        # module-scope names of ours, and the parameter names of our helpers
        internal = {f"x{i}" for i in range(self.k)} | {f"v{i}" for i in range(self.k)}
        internal |= {"pv", "res", "sh", "s", "o", "k", "a", "b"}
        mod = _Module(internal)
        order: list[Any] = []
        roots = [red.map, *([red.combine] if isinstance(red.combine, ir.Function) else [])]
        roots += [red.post] if red.post is not None else []
        for f in roots:
            if f.arrays:
                raise KernelCompileError(
                    f"{red.name}: the device function {f.py_name or f.name}() of a reduction "
                    "cannot take arrays"
                )
            mod.collect(f, {}, order)
            key = _spec_key(f, ())
            if key not in mod.funcs:
                mod.funcs[key] = ""
                order.append((f, (), {}))
        mod.name_funcs(order)
        mod.emit_funcs(order)
        self.mod = mod
        self.funcs_code = "".join(mod.func_code)
        self.vector = self._vector()

    def _vector(self) -> int:
        per = {vec_type(d.name)[1] for d in self.red.inputs}
        return per.pop() if len(per) == 1 else 1

    # ---- helpers ------------------------------------------------------------------------------
    def native(self, s: str) -> str:
        """A state value as the acc type."""
        return f"({s} != 0u)" if self.acc is bool_ else s

    def storable(self, v: str, t: DType) -> str:
        """A value of type ``t`` as the state type (converted to acc)."""
        v = _cast(v, t, self.acc)
        return f"select(0u, 1u, {v})" if self.acc is bool_ else v

    def helpers(self) -> str:
        red, st, acc = self.red, self.state, self.acc
        combine = self._combine()  # (registers the helpers it uses)
        out = [*self.mod.helpers.values(), self.funcs_code]
        # map: element values as storage types (bool: u32 0/1) → state
        params = [f"v{i}: {VALUE_TYPE[d.name]}" for i, d in enumerate(red.inputs)]
        args = []
        for i, (d, p) in enumerate(zip(red.inputs, red.map.params, strict=True)):
            v = f"(v{i} != 0u)" if d is bool_ else f"v{i}"
            args.append(_cast(v, d, p.type))  # type: ignore[arg-type]
        call = f"{self.mod.funcs[_spec_key(red.map, ())]}({', '.join(args)})"
        out.append(
            f"fn vg_map({', '.join(params)}) -> {st} {{\n"
            f"  return {self.storable(call, red.map.ret or acc)};\n}}\n"
        )
        out.append(f"fn vg_ident() -> {st} {{ return {self._ident()}; }}\n")
        out.append(combine)
        return "".join(out)

    def _ident(self) -> str:
        v = self.red.identity.value
        if self.acc is bool_:
            return "1u" if v else "0u"
        return literal(v, self.acc)

    def _combine(self) -> str:
        red, st, acc = self.red, self.state, self.acc
        c = red.combine
        note = ""
        if isinstance(c, ir.Function):
            name = self.mod.funcs[_spec_key(c, ())]
            a, b = self.native("a"), self.native("b")
            body = self.storable(f"{name}({a}, {b})", c.ret or acc)
        elif acc is bool_:
            body = "a | b" if c in ("add", "max", "or") else "a & b"
        elif c == "add":
            body = "a + b"
        elif c == "mul":
            body = "a * b"
        elif c in ("min", "max"):
            if acc in (f32, f64):
                isnan = self.mod.helper("isnan", acc)
                body = f"select(select({c}(a, b), b, {isnan}(b)), a, {isnan}(a))"
                note = "  // NaN propagates (as np.min/np.max)"
            else:
                body = f"{c}(a, b)"
        elif c in ("and", "or"):
            if acc in (f32, f64):
                raise KernelCompileError(f"{red.name}: combine {c!r} needs integers or bools")
            body = "a & b" if c == "and" else "a | b"
        else:
            raise KernelCompileError(f"{red.name}: unknown combine {c!r}")
        return f"fn vg_comb(a: {st}, b: {st}) -> {st} {{ return {body}; }}{note}\n"

    def subgroup_op(self) -> str | None:
        """A native subgroup reduction for the combine, if there is an exact one."""
        c = self.red.combine
        if isinstance(c, ir.Function) or self.acc is bool_:
            return None
        if c == "add":
            return "subgroupAdd"
        if c in ("min", "max") and self.acc in (i32, u32):
            return "subgroupMin" if c == "min" else "subgroupMax"
        return None

    @property
    def use_subgroups(self) -> bool:
        return "subgroup" in self.features and self.state in ("f32", "i32", "u32")

    def finish(self, res_binding: int) -> tuple[str, str]:
        """(binding declaration of ``res``, ``fn vg_finish(o, s)``: post + store)."""
        red = self.red
        out = red.out
        v = self.native("s")
        if red.post is not None:
            pname = self.mod.funcs[_spec_key(red.post, ())]
            args = [_cast(v, self.acc, red.post.params[0].type)]  # type: ignore[arg-type]
            if red.post_takes_n:
                n = "((i64(p.n_hi) << 32u) | i64(p.n_lo))"
                args.append(_cast(n, i64, red.post.params[1].type))  # type: ignore[arg-type]
            r, rt = f"{pname}({', '.join(args)})", red.post.ret or out
        else:
            r, rt = v, self.acc
        r = _cast(r, rt, out)
        head = f"@group(0) @binding({res_binding}) var<storage, read_write> res"
        if out is bool_:
            decl = f"{head}: array<atomic<u32>>;\n"
            store = (
                f"  // 4 bool results share a word: OR the byte in (the buffer starts zeroed)\n"
                f"  atomicOr(&res[o >> 2u], select(0u, 1u, {r}) << ((o & 3u) << 3u));\n"
            )
        else:
            decl = f"{head}: array<{out.name}>;\n"
            store = f"  res[o] = {r};\n"
        return decl, f"fn vg_finish(o: u32, s: {self.state}) {{\n{store}}}\n"

    def workgroup_reduce(self, subgroups: bool) -> tuple[str, str]:
        """Code reducing each thread's ``s`` over the workgroup (fixed order); returns
        (code, condition of the thread holding the result)."""
        if subgroups:
            op = self.subgroup_op()
            red = (
                f"s = {op}(s);\n"
                if op
                else "for (var m = sgsize >> 1u; m > 0u; m = m >> 1u) {\n"
                "  s = vg_comb(s, subgroupShuffleXor(s, m));\n}\n"
            )
            code = (
                red + "if (sglane == 0u) { sh[sgid] = s; }\nworkgroupBarrier();\n"
                "if (sgid == 0u) {\n  s = vg_ident();\n"
                "  for (var k = sglane; k < nsg; k = k + sgsize) {\n"
                "    s = vg_comb(s, sh[k]);\n  }\n" + _indent(red) + "}\n"
            )
            return code, "sgid == 0u && sglane == 0u"
        lines = ["sh[lid] = s;\nworkgroupBarrier();\n"]
        step = self.wg // 2
        while step >= 1:
            lines.append(
                f"if (lid < {step}u) {{ sh[lid] = vg_comb(sh[lid], sh[lid + {step}u]); }}\n"
                "workgroupBarrier();\n"
            )
            step //= 2
        lines.append("s = sh[0];\n")
        return "".join(lines), "lid == 0u"

    def entry(self, body: str, subgroups: bool) -> str:
        args = [
            "@builtin(local_invocation_index) lid: u32",
            "@builtin(workgroup_id) wid: vec3<u32>",
            "@builtin(num_workgroups) nwg: vec3<u32>",
        ]
        if subgroups:
            args += [
                "@builtin(subgroup_invocation_id) sglane: u32",
                "@builtin(subgroup_size) sgsize: u32",
                "@builtin(subgroup_id) sgid: u32",
                "@builtin(num_subgroups) nsg: u32",
            ]
        sig = ",\n        ".join(args)
        return f"@compute @workgroup_size({self.wg})\nfn main({sig}) {{\n{_indent(body)}}}\n"

    def header(self, what: str) -> str:
        ins = ", ".join(d.name for d in self.red.inputs)
        return (
            f"// vgpu_nb reduction {self.red.name}({ins}) -> {self.red.out.name}, acc "
            f"{self.acc.name}: {what}\n"
        )

    def inputs_decl(self, kind: str = "read") -> str:
        return "".join(
            f"@group(0) @binding({i}) var<storage, {kind}> x{i}: array<{vec_type(d.name)[0]}>;\n"
            for i, d in enumerate(self.red.inputs)
        )

    def element(self, idx: str) -> str:
        """``vg_map`` of element ``idx`` (u32) read element-wise."""
        args = [load(f"x{i}", d.name, idx) for i, d in enumerate(self.red.inputs)]
        return f"vg_map({', '.join(args)})"

    def shared(self) -> str:
        return f"var<workgroup> sh: array<{self.state}, {self.wg}>;\n"


def _indent(code: str, n: int = 1) -> str:
    pad = "  " * n
    return "".join(f"{pad}{line}\n" if line else "\n" for line in code.splitlines())


def _struct(fields: list[tuple[str, str]]) -> str:
    return "struct Params {\n" + "".join(f"  {n}: {t},\n" for n, t in fields) + "}\n"


def _bindings(r: _Red, extra: list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple([(f"x{i}", "read") for i in range(r.k)] + extra)


def _full1(r: _Red) -> Shader:
    per, k = r.vector, r.k
    fields = [("n", "u32"), ("pbase", "u32")]
    decl = (
        r.inputs_decl()
        + f"@group(0) @binding({k}) var<storage, read_write> pv: array<{r.state}>;\n"
    )
    decl += f"@group(0) @binding({k + 1}) var<uniform> p: Params;\n"
    nacc = max(1, min(RED_ACCUMULATORS, per * RED_UNROLL))
    body = [f"let stride = nwg.x * {r.wg}u;", f"let gid = wid.x * {r.wg}u + lid;"]
    body.append(
        f"let nv = p.n / {per}u;  // whole {per}-element vectors" if per > 1 else "let nv = p.n;"
    )
    body += [f"var a{j} = vg_ident();" for j in range(nacc)]
    body.append("var j = gid;")

    def step(js: list[str]) -> str:
        code, slot = [], 0
        for u, jx in enumerate(js):
            for i in range(k):
                code.append(
                    f"let x{i}_{u} = x{i}[{jx}];"
                    if per > 1
                    else f"let x{i}_{u} = {load(f'x{i}', r.red.inputs[i].name, jx)};"
                )
        for u in range(len(js)):
            for e in range(per):
                vals = [
                    component(f"x{i}_{u}", d.name, e) if per > 1 else f"x{i}_{u}"
                    for i, d in enumerate(r.red.inputs)
                ]
                a = f"a{slot % nacc}"
                code.append(f"{a} = vg_comb({a}, vg_map({', '.join(vals)}));")
                slot += 1
        return "\n".join(code) + "\n"

    js = [f"j + {u}u * stride" if u else "j" for u in range(RED_UNROLL)]
    body.append(f"while (j + {RED_UNROLL - 1}u * stride < nv) {{")
    body.append(_indent(step(js)).rstrip("\n"))
    body.append(f"  j = j + {RED_UNROLL}u * stride;\n}}")
    body.append("while (j < nv) {")
    body.append(_indent(step(["j"])).rstrip("\n"))
    body.append("  j = j + stride;\n}")
    if per > 1:
        body.append(f"if (gid == 0u) {{  // the last n % {per} elements")
        body.append(f"  for (var i = nv * {per}u; i < p.n; i = i + 1u) {{")
        body.append(f"    a0 = vg_comb(a0, {r.element('i')});\n  }}\n}}")
    width = 1
    while width < nacc:
        for j in range(0, nacc - width, 2 * width):
            body.append(f"a{j} = vg_comb(a{j}, a{j + width});")
        width *= 2
    body.append("var s = a0;")
    red, writer = r.workgroup_reduce(r.use_subgroups)
    body.append(red.rstrip("\n"))
    body.append(f"if ({writer}) {{\n  pv[p.pbase + wid.x] = s;\n}}")
    sub = r.use_subgroups
    code = (
        r.header("full reduction, pass 1 (a partial per workgroup)")
        + _struct(fields)
        + decl
        + r.helpers()
        + r.shared()
        + r.entry("\n".join(body) + "\n", sub)
    )
    return Shader(code, _bindings(r, [("pv", "rw"), ("p", "uniform")]), tuple(fields), r.wg)


def _full2(r: _Red) -> Shader:
    fields = [("n", "u32"), ("n_lo", "u32"), ("n_hi", "u32")]
    decl = f"@group(0) @binding(0) var<storage, read> pv: array<{r.state}>;\n"
    res_decl, finish = r.finish(1)
    decl += res_decl + "@group(0) @binding(2) var<uniform> p: Params;\n"
    red, writer = r.workgroup_reduce(r.use_subgroups)
    body = (
        "var s = vg_ident();\n"
        f"for (var k = lid; k < p.n; k = k + {r.wg}u) {{\n  s = vg_comb(s, pv[k]);\n}}\n"
        + red
        + f"if ({writer}) {{\n  vg_finish(0u, s);\n}}\n"
    )
    code = (
        r.header("full reduction, final pass")
        + _struct(fields)
        + decl
        + r.helpers()
        + finish
        + r.shared()
        + r.entry(body, r.use_subgroups)
    )
    return Shader(code, (("pv", "read"), ("res", "rw"), ("p", "uniform")), tuple(fields), r.wg)


def _axis(r: _Red, group: bool, split: bool) -> Shader:
    k = r.k
    fields = [("nout", "u32"), ("len", "u32"), ("so", "u32"), ("sk", "u32"), ("slice", "u32")]
    fields += [("nsl", "u32"), ("n_lo", "u32"), ("n_hi", "u32")]
    decl = r.inputs_decl()
    finish = ""
    if split:
        decl += f"@group(0) @binding({k}) var<storage, read_write> pv: array<{r.state}>;\n"
        extra = [("pv", "rw")]
    else:
        res_decl, finish = r.finish(k)
        decl += res_decl
        extra = [("res", "rw")]
    decl += f"@group(0) @binding({k + 1}) var<uniform> p: Params;\n"
    lin = "wid.x + wid.y * nwg.x"
    item = lin if group else f"({lin}) * {r.wg}u + lid"
    first, step = ("k0 + lid", f"{r.wg}u") if group else ("k0", "1u")
    lines = [
        f"let w = {item};  // {'workgroup' if group else 'thread'} w: output o, slice sl",
        "if (w >= p.nout * p.nsl) {\n  return;\n}",
        "let o = w % p.nout;",
        "let sl = w / p.nout;",
        "let k0 = sl * p.slice;",
        "let k1 = min(p.len, k0 + p.slice);",
        "var s = vg_ident();",
        f"for (var k = {first}; k < k1; k = k + {step}) {{",
        f"  s = vg_comb(s, {r.element('o * p.so + k * p.sk')});",
        "}",
    ]
    write = "pv[sl * p.nout + o] = s;" if split else "vg_finish(o, s);"
    body = "\n".join(lines) + "\n"
    sub = group and r.use_subgroups
    if group:
        red, writer = r.workgroup_reduce(sub)
        body += red + f"if ({writer}) {{\n  {write}\n}}\n"
    else:
        body += write + "\n"
    what = (
        ("a workgroup" if group else "a thread") + " per output" + (", partials" if split else "")
    )
    code = (
        r.header(f"2-D reduction along an axis, {what}")
        + _struct(fields)
        + decl
        + r.helpers()
        + finish
        + (r.shared() if group else "")
        + r.entry(body, sub)
    )
    return Shader(code, _bindings(r, [*extra, ("p", "uniform")]), tuple(fields), r.wg)


def _gather(r: _Red) -> Shader:
    fields = [("nout", "u32"), ("nsl", "u32"), ("n_lo", "u32"), ("n_hi", "u32")]
    decl = f"@group(0) @binding(0) var<storage, read> pv: array<{r.state}>;\n"
    res_decl, finish = r.finish(1)
    decl += res_decl + "@group(0) @binding(2) var<uniform> p: Params;\n"
    body = (
        f"let o = (wid.x + wid.y * nwg.x) * {r.wg}u + lid;\n"
        "if (o >= p.nout) {\n  return;\n}\n"
        "var s = vg_ident();\n"
        "for (var k = 0u; k < p.nsl; k = k + 1u) {\n  s = vg_comb(s, pv[k * p.nout + o]);\n}\n"
        "vg_finish(o, s);\n"
    )
    code = (
        r.header("2-D reduction, gather pass (a thread per output)")
        + _struct(fields)
        + decl
        + r.helpers()
        + finish
        + r.entry(body, False)
    )
    return Shader(code, (("pv", "read"), ("res", "rw"), ("p", "uniform")), tuple(fields), r.wg)


def reduction_source(
    red: ir.Reduction, features: Collection[str], workgroup: int = RED_WORKGROUP
) -> ReductionShaders:
    """The WGSL shaders of reduction ``red`` (see :class:`ReductionShaders`)."""
    r = _Red(red, features, workgroup)
    return ReductionShaders(
        full1=_full1(r),
        full2=_full2(r),
        axis_thread=_axis(r, False, False),
        axis_thread_split=_axis(r, False, True),
        axis_group=_axis(r, True, False),
        axis_group_split=_axis(r, True, True),
        gather=_gather(r),
        vector=r.vector,
    )


def reduction_unsupported(red: ir.Reduction, features: Collection[str]) -> str | None:
    """Why ``red`` cannot run exactly on a WebGPU device with ``features``, or None."""
    roots = [red.map, *([red.combine] if isinstance(red.combine, ir.Function) else [])]
    roots += [red.post] if red.post is not None else []
    needs = _needs(roots, [*red.inputs, red.acc, red.out])
    if red.post_takes_n and "shader-int64" not in needs:
        needs.append("shader-int64")  # n is an i64
    return _why(needs, features)
