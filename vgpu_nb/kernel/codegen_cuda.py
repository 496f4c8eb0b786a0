"""CUDA C emitter: kernel-language IR (:mod:`.ir`) → one NVRTC-compilable translation unit.

The output is what ``kernel.source("cuda")`` shows users, so it is meant to be read: one
statement per IR statement, C operators where C already has Python's semantics, and small
named helpers (``vg_floordiv_i32``, ``vg_add`` …) where it does not. It includes no headers
(NVRTC has none): only built-in types, math functions and intrinsics.

**Kernel parameters** (the launcher in ``backends/cuda_backend.py`` builds them in this
order):

1. the launch domain: ``int n0`` (1-D launch, or the *flattened* total when the kernel never
   calls ``vg.tid()``), or ``int n0, int n1`` (2-D: rows, columns);
2. for each IR parameter, in order: an array ``a`` as ``T* __restrict__ a`` (``const`` when
   the kernel never writes it) followed by ``int a_shape<d>`` for each dimension ``d``, in
   increasing order, that the kernel needs (:attr:`GeneratedKernel.shape_dims`): those it
   reads as ``a.shape[d]`` and, for a 2-D array it indexes, the row length ``a_shape1`` —
   through the device functions it calls too (fewer parameters, cheaper launches); a
   scalar by value. ``bool`` arrays are ``unsigned char`` (NumPy's byte layout), ``bool``
   scalars ``bool``. Device functions take array arguments the same way.

**Launch geometry** (:func:`launch_config`): 1-D kernels run one thread per element in
blocks of 256 (``tid0 = blockIdx.x * 256 + threadIdx.x``). 2-D kernels use 256-thread
blocks, 32 × 8 (narrower in x when there are fewer than 32 columns), with ``tid1`` (the
column) along x so that neighbouring threads touch neighbouring elements; row blocks are
split over grid y and z (``grid.y`` stops at 65535). The guard is done in unsigned
arithmetic, then ``tid0``/``tid1`` are ``int``: every dimension must be < 2**31.

**Semantics** follow the :mod:`.ir` docstring: signed ``+ - *`` and negation wrap (done in
unsigned arithmetic, no C undefined behaviour), ``//`` and ``%`` floor (integer division by
zero gives 0; floats follow NumPy's ``divmod``), shifts by ≥ the width give 0 (or -1 for a
negative ``>>``), ``range`` loops count their trips up front in unsigned arithmetic (any
step sign, no overflow at the ends of the type), ``round`` is ``rint`` (half to even).

**Reductions** (:func:`reduction_source`) are one module of fixed-name kernels
(:data:`REDUCTION_ENTRIES`), chosen and sized by :func:`reduction_launches` from the shape
and the SM count only, so a result is bit-identical run to run; no float atomics. All
elements: grid-stride partials per block (16-byte vector loads when every input is aligned,
then a scalar tail), warp shuffles + shared memory inside a block, the block partials
combined by a second one-block kernel in a fixed order (one launch when one block is
enough). ``axis=1`` (rows): a thread per row up to 16 columns, 16/32 lanes per row with
four rows in flight up to 128, a warp per row beyond, and for few long rows row segments
per block plus a combining pass. ``axis=0`` (columns): threads along a row (coalesced),
block rows and row segments added only when the columns alone cannot fill the GPU.
Combines need only be associative and commutative with ``identity`` as identity (the
combining order is a tree, fixed for a shape).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..dtypes import ArrayType, DType, bool_, f32, f64, i32, i64, u32, u64
from ..errors import KernelCompileError
from . import ir

#: threads per block of every kernel we launch (user kernels and reductions)
BLOCK = 256
#: 2-D user kernels: block shape (x = columns, y = rows) when there are ≥ 32 columns
BLOCK_2D = (32, 8)
_MAX_GRID_YZ = 65535

#: C type of a value (locals, scalar parameters, expressions)
C_TYPE: dict[str, str] = {
    "f32": "float",
    "f64": "double",
    "i32": "int",
    "u32": "unsigned int",
    "i64": "long long",
    "u64": "unsigned long long",
    "bool": "bool",
}
#: C type of an array element in memory (NumPy layout: bool is one byte)
STORAGE_TYPE: dict[str, str] = {**C_TYPE, "bool": "unsigned char"}

_SIGNED = (i32, i64)
_UNSIGNED = (u32, u64)

# ---- names ---------------------------------------------------------------------------------
_CXX_KEYWORDS = """
alignas alignof and and_eq asm auto bitand bitor bool break case catch char char8_t char16_t
char32_t class compl concept const consteval constexpr constinit const_cast continue co_await
co_return co_yield decltype default delete do double dynamic_cast else enum explicit export
extern false float for friend goto if inline int long mutable namespace new noexcept not
not_eq nullptr operator or or_eq private protected public register reinterpret_cast requires
return short signed sizeof static static_assert static_cast struct switch template this
thread_local throw true try typedef typeid typename union unsigned using virtual void volatile
wchar_t while xor xor_eq restrict
"""
_CUDA_NAMES = """
threadIdx blockIdx blockDim gridDim warpSize dim3 size_t ptrdiff_t NULL INFINITY NAN HUGE_VAL
HUGE_VALF printf malloc free memcpy memset assert main std cuda texture surface uint ushort
ulong uchar longlong ulonglong min max abs fabs fabsf fminf fmaxf fmin fmax copysign copysignf
rint rintf isnan isinf isfinite signbit atomicAdd atomicSub atomicMin atomicMax atomicCAS
atomicExch atomicAnd atomicOr atomicXor n0 n1 tid0 tid1
"""
_MATH_C: dict[str, tuple[str, str]] = {
    # IR name → (f32 function, f64 function)
    "sqrt": ("sqrtf", "sqrt"),
    "exp": ("expf", "exp"),
    "log": ("logf", "log"),
    "sin": ("sinf", "sin"),
    "cos": ("cosf", "cos"),
    "tan": ("tanf", "tan"),
    "tanh": ("tanhf", "tanh"),
    "floor": ("floorf", "floor"),
    "ceil": ("ceilf", "ceil"),
    "erf": ("erff", "erf"),
    "abs": ("fabsf", "fabs"),
    "asin": ("asinf", "asin"),
    "acos": ("acosf", "acos"),
    "atan": ("atanf", "atan"),
    "sinh": ("sinhf", "sinh"),
    "cosh": ("coshf", "cosh"),
    "exp2": ("exp2f", "exp2"),
    "log2": ("log2f", "log2"),
    "log10": ("log10f", "log10"),
    "trunc": ("truncf", "trunc"),
    "round": ("rintf", "rint"),  # rint rounds half to even (the default rounding mode)
    "pow": ("powf", "pow"),
    "atan2": ("atan2f", "atan2"),
    "fmod": ("fmodf", "fmod"),
    "fma": ("fmaf", "fma"),
    "isnan": ("isnan", "isnan"),
    "isinf": ("isinf", "isinf"),
    "isfinite": ("isfinite", "isfinite"),
}
RESERVED: frozenset[str] = frozenset(
    _CXX_KEYWORDS.split() + _CUDA_NAMES.split() + [n for pair in _MATH_C.values() for n in pair]
)
_VECTOR_TYPE = re.compile(r"^u?(char|short|int|long|longlong|float|double)[1-4]$")


class _Scope:
    """C identifiers of one scope: user names that would clash with C/CUDA names, our
    helpers (``vg_*``) or names we generate get a suffix; everything else is kept."""

    def __init__(self, taken: Iterable[str] = ()):
        self.taken: set[str] = set(taken)

    def fresh(self, base: str) -> str:
        name = base
        if name.startswith(("vg_", "__")):
            name = "u" + name
        elif name in RESERVED or _VECTOR_TYPE.match(name):
            name = name + "_"
        cand, k = name, 1
        while cand in self.taken:
            k += 1
            cand = f"{name}_{k}"
        self.taken.add(cand)
        return cand


# ---- helpers (emitted only when used, in a fixed order) -----------------------------------
def _signed_helpers(c: str, u: str, bits: int, t: str) -> dict[str, str]:
    """Helpers for the signed type ``c`` (IR name ``t``) whose unsigned twin is ``u``: C
    leaves signed overflow undefined, so wrapping arithmetic goes through ``u``."""
    fn = "static __device__ __forceinline__"
    return {
        f"add_{t}": f"{fn} {c} vg_add({c} a, {c} b) {{ return ({c})(({u})a + ({u})b); }}",
        f"sub_{t}": f"{fn} {c} vg_sub({c} a, {c} b) {{ return ({c})(({u})a - ({u})b); }}",
        f"mul_{t}": f"{fn} {c} vg_mul({c} a, {c} b) {{ return ({c})(({u})a * ({u})b); }}",
        f"neg_{t}": f"{fn} {c} vg_neg({c} a) {{ return ({c})(({u})0 - ({u})a); }}",
        f"abs_{t}": f"{fn} {c} vg_abs({c} a) {{ return a < 0 ? ({c})(({u})0 - ({u})a) : a; }}",
        f"floordiv_{t}": f"""\
// Python floor division; x // 0 == 0 (as NumPy); MIN // -1 wraps
{fn} {c} vg_floordiv_{t}({c} a, {c} b) {{
    if (b == 0) return 0;
    if (b == -1) return ({c})(({u})0 - ({u})a);
    const {c} q = a / b;
    return (q * b != a && ((a < 0) != (b < 0))) ? q - 1 : q;
}}""",
        f"mod_{t}": f"""\
// Python modulo: the result has the divisor's sign; x % 0 == 0 (as NumPy)
{fn} {c} vg_mod_{t}({c} a, {c} b) {{
    if (b == 0 || b == -1) return 0;
    const {c} r = a % b;
    return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r;
}}""",
        f"shl_{t}": f"{fn} {c} vg_shl_{t}({c} a, unsigned long long b) "
        f"{{ return b < {bits}ull ? ({c})(({u})a << b) : 0; }}",
        f"shr_{t}": f"{fn} {c} vg_shr_{t}({c} a, unsigned long long b) "
        f"{{ return b < {bits}ull ? (a >> b) : (a < 0 ? -1 : 0); }}",
        f"trips_{t}": f"""\
// trip count of range(start, stop, step), step != 0, computed without overflow
{fn} {u} vg_trips({c} start, {c} stop, {c} step) {{
    if (step > 0) return start < stop ? (({u})stop - ({u})start - 1) / ({u})step + 1 : 0;
    return start > stop ? (({u})start - ({u})stop - 1) / (({u})0 - ({u})step) + 1 : 0;
}}""",
    }


def _unsigned_helpers(c: str, bits: int, t: str) -> dict[str, str]:
    fn = "static __device__ __forceinline__"
    return {
        f"floordiv_{t}": f"{fn} {c} vg_floordiv_{t}({c} a, {c} b) {{ return b == 0 ? 0 : a / b; }}",
        f"mod_{t}": f"{fn} {c} vg_mod_{t}({c} a, {c} b) {{ return b == 0 ? 0 : a % b; }}",
        f"shl_{t}": f"{fn} {c} vg_shl_{t}({c} a, unsigned long long b) "
        f"{{ return b < {bits}ull ? a << b : 0; }}",
        f"shr_{t}": f"{fn} {c} vg_shr_{t}({c} a, unsigned long long b) "
        f"{{ return b < {bits}ull ? a >> b : 0; }}",
        f"trips_{t}": f"{fn} {c} vg_trips({c} start, {c} stop, {c} step) "
        "{ return start < stop ? (stop - start - 1) / step + 1 : 0; }",
    }


def _float_helpers(c: str, s: str, t: str) -> dict[str, str]:
    """Floor division and modulo as NumPy's ``npy_divmod`` (Python's semantics, and
    inf/nan instead of an exception for a zero divisor)."""
    fn = "static __device__ __forceinline__"
    return {
        f"floordiv_{t}": f"""\
// Python/NumPy float floor division (npy_divmod): fmod, then fix the sign
{fn} {c} vg_floordiv_{t}({c} a, {c} b) {{
    if (b == 0) return a / b;
    const {c} mod = fmod{s}(a, b);
    {c} div = (a - mod) / b;
    if (mod != 0 && ((b < 0) != (mod < 0))) div -= 1;
    if (div == 0) return copysign{s}(({c})0, a / b);
    {c} fl = floor{s}(div);
    if (div - fl > ({c})0.5) fl += 1;
    return fl;
}}""",
        f"mod_{t}": f"""\
// Python/NumPy float modulo: the result has the divisor's sign
{fn} {c} vg_mod_{t}({c} a, {c} b) {{
    {c} mod = fmod{s}(a, b);
    if (b == 0) return mod;
    if (mod != 0) {{
        if ((b < 0) != (mod < 0)) mod += b;
    }} else {{
        mod = copysign{s}(({c})0, b);
    }}
    return mod;
}}""",
    }


_HELPERS: dict[str, str] = {
    **_signed_helpers("int", "unsigned int", 32, "i32"),
    **_signed_helpers("long long", "unsigned long long", 64, "i64"),
    **_unsigned_helpers("unsigned int", 32, "u32"),
    **_unsigned_helpers("unsigned long long", 64, "u64"),
    **_float_helpers("float", "f", "f32"),
    **_float_helpers("double", "", "f64"),
}
_HELPERS["minmax"] = (
    "// Python's min/max: min(a, b) is b only if b < a (NaN included)\n"
    "template <typename T> static __device__ __forceinline__ T vg_min(T a, T b) "
    "{ return b < a ? b : a; }\n"
    "template <typename T> static __device__ __forceinline__ T vg_max(T a, T b) "
    "{ return b > a ? b : a; }"
)
for _op, _f in (("min", "fminf"), ("max", "fmaxf")):
    _HELPERS[f"atomic_{_op}_f32"] = (
        f"// atomic float {_op} (IEEE {_f}) by compare-and-swap on the bits; returns the old\n"
        f"static __device__ __forceinline__ float vg_atomic_{_op}_f32(float* p, float v) {{\n"
        f"    int* bits = (int*)p;\n"
        f"    int old = *bits, seen;\n"
        f"    do {{\n"
        f"        seen = old;\n"
        f"        const int want = __float_as_int({_f}(__int_as_float(seen), v));\n"
        f"        if (want == seen) break;\n"
        f"        old = atomicCAS(bits, seen, want);\n"
        f"    }} while (old != seen);\n"
        f"    return __int_as_float(old);\n"
        f"}}"
    )
_HELPER_ORDER = list(_HELPERS)


# ---- constants ----------------------------------------------------------------------------
def c_const(value: int | float | bool, t: DType) -> str:
    """A C literal of type ``t`` holding exactly ``value`` (negative ones parenthesised;
    inf/nan through bit-cast intrinsics, since NVRTC has no <cmath> macros)."""
    if t is bool_:
        return "true" if value else "false"
    if t is f32 or t is f64:
        v = float(value)
        single = t is f32
        if v != v:
            return (
                "__int_as_float(0x7fc00000)"
                if single
                else "__longlong_as_double(0x7ff8000000000000LL)"
            )
        if v in (float("inf"), float("-inf")):
            inf = (
                "__int_as_float(0x7f800000)"
                if single
                else "__longlong_as_double(0x7ff0000000000000LL)"
            )
            return inf if v > 0 else f"(-{inf})"
        text = str(np.float32(v)) if single else repr(v)
        if "e" not in text and "." not in text:
            text += ".0"
        text += "f" if single else ""
        return f"({text})" if text.startswith("-") else text
    v = int(value)
    if t is i32:
        return "(-2147483647 - 1)" if v == -(2**31) else (f"({v})" if v < 0 else str(v))
    if t is i64:
        if v == -(2**63):
            return "(-9223372036854775807LL - 1)"
        return f"({v}LL)" if v < 0 else f"{v}LL"
    if t is u32:
        return f"{v}u"
    return f"{v}ull"


def c_cast(text: str, prec: int, src: DType, dst: DType) -> tuple[str, int]:
    """``text`` (of C precedence ``prec``) converted from ``src`` to ``dst`` (IR rules:
    float→int truncates, x→bool is x != 0)."""
    if src is dst:
        return text, prec
    if dst is bool_:
        zero = "0.0f" if src is f32 else ("0.0" if src is f64 else "0")
        return f"{_paren(text, prec, 10)} != {zero}", 9
    return f"({C_TYPE[dst.name]}){_paren(text, prec, 15)}", 15


def _paren(text: str, prec: int, need: int) -> str:
    return text if prec >= need else f"({text})"


# ---- the emitter -------------------------------------------------------------------------
@dataclass
class _FuncNames:
    """C names inside one function: scalars/locals → name, arrays → (name, shape names)."""

    values: dict[str, str] = field(default_factory=dict)
    arrays: dict[str, tuple[str, dict[int, str]]] = field(default_factory=dict)


class _Program:
    """One translation unit: device functions (named once, emitted callees first) and the
    helpers their code uses."""

    def __init__(self, reserved: Iterable[str] = ()):
        self.globals = _Scope(reserved)
        self.helpers: set[str] = set()
        self.func_names: dict[int, str] = {}
        self.func_defs: list[str] = []
        self._emitted: set[int] = set()
        self._dims: dict[tuple[int, str], tuple[int, ...]] = {}

    def shape_dims(self, fn: ir.Function, array: str) -> tuple[int, ...]:
        """The dimensions of ``fn``'s array parameter ``array`` whose extent ``fn`` needs
        (and so takes as parameters): those read as ``array.shape[d]`` and, for a 2-D
        array that is indexed, the row length (dim 1) — through called functions too."""
        key = (id(fn), array)
        hit = self._dims.get(key)
        if hit is not None:
            return hit
        self._dims[key] = ()  # (recursion guard; the frontend rejects recursion anyway)
        two_d = fn.param(array).type.ndim == 2  # type: ignore[union-attr]
        dims: set[int] = set()
        for s in ir.walk_stmts(fn.body):
            if isinstance(s, ir.Store) and s.array == array and two_d:
                dims.add(1)
        for e in ir.all_exprs(fn):
            if isinstance(e, ir.Shape) and e.array == array:
                dims.add(e.dim)
            elif isinstance(e, ir.Load | ir.Atomic) and e.array == array and two_d:
                dims.add(1)
            elif isinstance(e, ir.Call):
                for q, a in zip(e.func.params, e.args, strict=True):
                    if isinstance(a, ir.ArrayArg) and a.name == array:
                        dims.update(self.shape_dims(e.func, q.name))
        self._dims[key] = tuple(sorted(dims))
        return self._dims[key]

    def use(self, helper: str) -> None:
        self.helpers.add(helper)

    def name_funcs(self, funcs: Iterable[ir.Function]) -> None:
        """Give every reachable device function a C name (before any body is emitted, so
        locals can avoid them)."""
        for f in _reachable(funcs):
            if id(f) not in self.func_names:
                self.func_names[id(f)] = self.globals.fresh(f.name)

    def emit_funcs(self, funcs: Iterable[ir.Function]) -> None:
        for f in _reachable(funcs):
            if id(f) not in self._emitted:
                self._emitted.add(id(f))
                self.func_defs.append(_FunctionEmitter(self, f, kernel=False).device_function())

    def preamble(self) -> str:
        return "\n".join(_HELPERS[h] for h in _HELPER_ORDER if h in self.helpers)


def _reachable(funcs: Iterable[ir.Function]) -> list[ir.Function]:
    """``funcs`` and every function they call, callees before callers, each once."""
    out: list[ir.Function] = []
    seen: set[int] = set()

    def visit(f: ir.Function, stack: tuple[int, ...]) -> None:
        if id(f) in seen or id(f) in stack:
            return
        for e in ir.all_exprs(f):
            if isinstance(e, ir.Call):
                visit(e.func, (*stack, id(f)))
        seen.add(id(f))
        out.append(f)

    for f in funcs:
        visit(f, ())
    return out


class _FunctionEmitter:
    """Statements and expressions of one function (kernel or device function)."""

    def __init__(self, prog: _Program, fn: ir.Function, kernel: bool):
        self.prog = prog
        self.fn = fn
        self.kernel = kernel
        self.scope = _Scope(prog.globals.taken)
        self.names = _FuncNames()
        self.trips = 0
        written = ir.usage(fn).written
        self.const_arrays = {p.name for p in fn.arrays if p.name not in written}
        # arrays first, so their shape names are theirs; then scalars, then locals
        for p in fn.arrays:
            base = self.scope.fresh(p.name)
            dims = prog.shape_dims(fn, p.name)
            shapes = {k: self.scope.fresh(f"{base}_shape{k}") for k in dims}
            self.names.arrays[p.name] = (base, shapes)
        for p in fn.scalars:
            self.names.values[p.name] = self.scope.fresh(p.name)
        for name in fn.locals:
            if name not in self.names.values:
                self.names.values[name] = self.scope.fresh(name)

    # ---- declarations ---------------------------------------------------------------------
    def param_decls(self) -> list[str]:
        out = []
        for p in self.fn.params:
            if isinstance(p.type, ArrayType):
                base, shapes = self.names.arrays[p.name]
                const = "const " if p.name in self.const_arrays else ""
                # (only kernel parameters are restrict: a device function may receive
                # one array through two parameters)
                restrict = " __restrict__" if self.kernel else ""
                out.append(f"{const}{STORAGE_TYPE[p.type.dtype.name]}*{restrict} {base}")
                out.extend(f"int {s}" for s in shapes.values())
            else:
                out.append(f"{C_TYPE[p.type.name]} {self.names.values[p.name]}")
        return out

    def local_decls(self) -> list[str]:
        params = {p.name for p in self.fn.params}
        return [
            f"{C_TYPE[t.name]} {self.names.values[name]} = {c_const(0, t)};"
            for name, t in self.fn.locals.items()
            if name not in params
        ]

    def device_function(self) -> str:
        fn = self.fn
        ret = C_TYPE[fn.ret.name] if fn.ret is not None else "void"
        name = self.prog.func_names[id(fn)]
        params = ", ".join(self.param_decls()) or "void"
        lines = [
            f"// {fn.py_name or fn.name} ({_where(fn)})",
            f"static __device__ __forceinline__ {ret} {name}({params}) {{",
        ]
        body = [*self.local_decls(), *self.block(fn.body)]
        if fn.ret is not None and not (fn.body and isinstance(fn.body[-1], ir.Return)):
            body.append(f"return {c_const(0, fn.ret)};  // (not reached)")
        lines += ["    " + b for b in body]
        lines.append("}")
        return "\n".join(lines)

    # ---- statements -----------------------------------------------------------------------
    def block(self, body: Sequence[ir.Stmt]) -> list[str]:
        out: list[str] = []
        for s in body:
            out.extend(self.stmt(s))
        return out

    def indented(self, body: Sequence[ir.Stmt]) -> list[str]:
        return ["    " + line for line in self.block(body)]

    def stmt(self, s: ir.Stmt) -> list[str]:
        if isinstance(s, ir.Assign):
            t = self.fn.locals[s.name]
            text, prec = self.expr(s.value)
            text, _ = c_cast(text, prec, s.value.type, t)
            return [f"{self.names.values[s.name]} = {text};"]
        if isinstance(s, ir.Store):
            ref = self.element(s.array, s.index)
            text, prec = self.expr(s.value)
            if self.fn.param(s.array).type.dtype is bool_:  # type: ignore[union-attr]
                text = f"(unsigned char){_paren(text, prec, 15)}"
            return [f"{ref} = {text};"]
        if isinstance(s, ir.If):
            return self.if_(s, "if")
        if isinstance(s, ir.ForRange):
            return self.for_range(s)
        if isinstance(s, ir.While):
            cond, _ = self.expr(s.cond)
            return [f"while ({cond}) {{", *self.indented(s.body), "}"]
        if isinstance(s, ir.Break):
            return ["break;"]
        if isinstance(s, ir.Continue):
            return ["continue;"]
        if isinstance(s, ir.Return):
            if s.value is None:
                return ["return;"]
            text, prec = self.expr(s.value)
            text, _ = c_cast(text, prec, s.value.type, self.fn.ret or s.value.type)
            return [f"return {text};"]
        if isinstance(s, ir.ExprStmt):
            text, _ = self.expr(s.value)
            return [f"{text};"]
        if isinstance(s, ir.Print):
            return [
                f"// print(...) on line {s.line} omitted: print() only runs on the numpy backend"
            ]
        raise KernelCompileError(f"CUDA codegen: unknown statement {type(s).__name__}")

    def if_(self, s: ir.If, kw: str) -> list[str]:
        cond, _ = self.expr(s.cond)
        out = [f"{kw} ({cond}) {{", *self.indented(s.body)]
        if len(s.orelse) == 1 and isinstance(s.orelse[0], ir.If):
            nested = self.if_(s.orelse[0], "} else if")
            return out + nested
        if s.orelse:
            out += ["} else {", *self.indented(s.orelse)]
        return out + ["}"]

    def for_range(self, s: ir.ForRange) -> list[str]:
        t = self.fn.locals[s.counter]
        k, stop, step = (self.names.values[n] for n in (s.counter, s.limit, s.stride))
        var = self.names.values[s.var]
        start_e, stop_e, step_e = (self.expr(e)[0] for e in (s.start, s.stop, s.step))
        trips = f"vg_trips{self.trips}"  # (user names never start with vg_: see _Scope)
        self.trips += 1
        self.prog.use(f"trips_{'i32' if t is i32 else t.name}")
        unsigned = C_TYPE[{i32: u32, i64: u64}.get(t, t).name]
        if t in _SIGNED:
            self.prog.use(f"add_{t.name}")
            advance = f"{k} = vg_add({k}, {step})"
        else:
            advance = f"{k} += {step}"
        return [
            f"// for {s.var} in range(...)",
            f"{k} = {start_e};",
            f"{stop} = {stop_e};",
            f"{step} = {step_e};",
            f"for ({unsigned} {trips} = vg_trips({k}, {stop}, {step}); {trips} != 0; "
            f"--{trips}, {advance}) {{",
            f"    {var} = {k};",
            *self.indented(s.body),
            "}",
        ]

    # ---- expressions (text, C precedence: 16 postfix/atom … 3 conditional) -------------------
    def element(self, array: str, index: Sequence[ir.Expr]) -> str:
        base, shapes = self.names.arrays[array]
        if len(index) == 1:
            return f"{base}[{self.expr(index[0])[0]}]"
        (i, ip), (j, jp) = self.expr(index[0]), self.expr(index[1])
        return f"{base}[(long long){_paren(i, ip, 15)} * {shapes[1]} + {_paren(j, jp, 13)}]"

    def expr(self, e: ir.Expr) -> tuple[str, int]:
        if isinstance(e, ir.Const):
            return c_const(e.value, e.type), 16  # (negative literals come parenthesised)
        if isinstance(e, ir.Var):
            return self.names.values[e.name], 16
        if isinstance(e, ir.ThreadId):
            return f"tid{e.axis}", 16
        if isinstance(e, ir.Shape):
            return self.names.arrays[e.array][1][e.dim], 16
        if isinstance(e, ir.Load):
            ref = self.element(e.array, e.index)
            if e.type is bool_:
                return f"{ref} != 0", 9
            return ref, 16
        if isinstance(e, ir.Unary):
            return self.unary(e)
        if isinstance(e, ir.Binary):
            return self.binary(e)
        if isinstance(e, ir.Compare):
            op = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}[e.op]
            prec = 10 if op in ("<", "<=", ">", ">=") else 9
            a, b = self.expr(e.lhs), self.expr(e.rhs)
            return f"{_paren(a[0], a[1], 11)} {op} {_paren(b[0], b[1], 11)}", prec
        if isinstance(e, ir.Logical):
            op, prec = ("&&", 5) if e.op == "and" else ("||", 4)
            a, b = self.expr(e.lhs), self.expr(e.rhs)
            lhs = a[0] if a[1] > 5 or (a[1] == prec) else f"({a[0]})"
            rhs = _paren(b[0], b[1], 6)
            return f"{lhs} {op} {rhs}", prec
        if isinstance(e, ir.Select):
            c, a, b = self.expr(e.cond), self.expr(e.a), self.expr(e.b)
            cond = _paren(c[0], c[1], 6)
            return f"{cond} ? {_paren(a[0], a[1], 4)} : {_paren(b[0], b[1], 4)}", 3
        if isinstance(e, ir.Cast):
            text, prec = self.expr(e.operand)
            return c_cast(text, prec, e.operand.type, e.type)
        if isinstance(e, ir.Math):
            return self.math(e)
        if isinstance(e, ir.Call):
            return self.call(e)
        if isinstance(e, ir.Atomic):
            return self.atomic(e)
        raise KernelCompileError(f"CUDA codegen: unknown expression {type(e).__name__}")

    def unary(self, e: ir.Unary) -> tuple[str, int]:
        text, prec = self.expr(e.operand)
        if e.op == "not":
            return f"!{_paren(text, prec, 16)}", 15
        if e.op == "invert":
            return f"~{_paren(text, prec, 16)}", 15
        if e.type in _SIGNED:
            self.prog.use(f"neg_{e.type.name}")
            return f"vg_neg({text})", 16
        if e.type in _UNSIGNED:
            return f"{c_const(0, e.type)} - {_paren(text, prec, 13)}", 12
        return f"-{_paren(text, prec, 16)}", 15

    def binary(self, e: ir.Binary) -> tuple[str, int]:
        t, op = e.type, e.op
        a, b = self.expr(e.lhs), self.expr(e.rhs)
        tag = t.name
        if op in ("add", "sub", "mul") and t in _SIGNED:
            self.prog.use(f"{op}_{tag}")
            return f"vg_{op}({a[0]}, {b[0]})", 16
        if op in ("add", "sub", "mul", "div"):
            sym = {"add": "+", "sub": "-", "mul": "*", "div": "/"}[op]
            prec = 12 if sym in "+-" else 13
            return f"{_paren(a[0], a[1], prec)} {sym} {_paren(b[0], b[1], prec + 1)}", prec
        if op in ("floordiv", "mod"):
            self.prog.use(f"{op}_{tag}")
            return f"vg_{op}_{tag}({a[0]}, {b[0]})", 16
        if op == "pow":
            return f"{_MATH_C['pow'][0 if t is f32 else 1]}({a[0]}, {b[0]})", 16
        if op in ("lshift", "rshift"):
            self.prog.use(f"{'shl' if op == 'lshift' else 'shr'}_{tag}")
            return f"vg_{'shl' if op == 'lshift' else 'shr'}_{tag}({a[0]}, {b[0]})", 16
        sym, prec = {"and": ("&", 8), "or": ("|", 6), "xor": ("^", 7)}[op]
        # bitwise operands are parenthesised unless atoms (C's precedence there surprises)
        same = a[1] == prec and isinstance(e.lhs, ir.Binary)
        lhs = a[0] if a[1] >= 15 or same else f"({a[0]})"
        rhs = _paren(b[0], b[1], 15)
        return f"{lhs} {sym} {rhs}", prec

    def math(self, e: ir.Math) -> tuple[str, int]:
        args = [self.expr(a)[0] for a in e.args]
        at = e.args[0].type
        if e.fn in ("min", "max"):
            self.prog.use("minmax")
            return f"vg_{e.fn}({args[0]}, {args[1]})", 16
        if e.fn == "abs" and at in _SIGNED:
            self.prog.use(f"abs_{at.name}")
            return f"vg_abs({args[0]})", 16
        if e.fn == "abs" and at in _UNSIGNED:
            return args[0], self.expr(e.args[0])[1]
        if at not in (f32, f64):
            raise KernelCompileError(f"CUDA codegen: {e.fn}() on {at.name}")
        name = _MATH_C[e.fn][0 if at is f32 else 1]
        return f"{name}({', '.join(args)})", 16

    def call(self, e: ir.Call) -> tuple[str, int]:
        args: list[str] = []
        for p, a in zip(e.func.params, e.args, strict=True):
            if isinstance(a, ir.ArrayArg):
                base, shapes = self.names.arrays[a.name]
                args += [base, *(shapes[d] for d in self.prog.shape_dims(e.func, p.name))]
            else:
                text, prec = self.expr(a)
                args.append(c_cast(text, prec, a.type, p.type)[0])  # type: ignore[arg-type]
        return f"{self.prog.func_names[id(e.func)]}({', '.join(args)})", 16

    def atomic(self, e: ir.Atomic) -> tuple[str, int]:
        ref = "&" + self.element(e.array, e.index)
        value = self.expr(e.value)[0]
        if e.type is f32 and e.op in ("min", "max"):
            self.prog.use(f"atomic_{e.op}_f32")
            return f"vg_atomic_{e.op}_f32({ref}, {value})", 16
        fn = {"add": "atomicAdd", "min": "atomicMin", "max": "atomicMax"}[e.op]
        return f"{fn}({ref}, {value})", 16


def _where(fn: ir.Function) -> str:
    return f"{fn.filename}:{fn.firstline}"


# ---- kernels ------------------------------------------------------------------------------
@dataclass(frozen=True)
class GeneratedKernel:
    """The CUDA C of a kernel and what its launcher needs to know."""

    source: str
    entry: str  # the extern "C" name (fn.name unless that is a C/CUDA name)
    ndim: int | None  # fn.ndim: 1, 2, or None (launched flat)
    params: tuple[ir.Param, ...]
    shape_dims: tuple[tuple[int, ...], ...]  # per parameter: the shape entries passed


def generate_kernel(fn: ir.Function) -> GeneratedKernel:
    """Emit ``fn`` as one ``extern "C" __global__`` entry plus its device functions."""
    prog = _Program()
    prog.name_funcs([*fn.funcs, *_reachable([fn])[:-1]])
    # (locals may shadow the entry's name: nothing calls it, so it is not reserved for them)
    entry = _Scope(prog.globals.taken).fresh(fn.name)
    prog.emit_funcs([*fn.funcs, *_reachable([fn])[:-1]])
    em = _FunctionEmitter(prog, fn, kernel=True)
    dims = ["int n0", "int n1"] if fn.ndim == 2 else ["int n0"]
    params = ",\n    ".join([*dims, *em.param_decls()])
    if fn.ndim == 2:
        prologue = [
            "const unsigned int vg_row = (blockIdx.z * gridDim.y + blockIdx.y) * blockDim.y"
            " + threadIdx.y;",
            "const unsigned int vg_col = blockIdx.x * blockDim.x + threadIdx.x;",
            "if (vg_row >= (unsigned int)n0 || vg_col >= (unsigned int)n1) return;",
            "const int tid0 = (int)vg_row;  // vg.tid() row",
            "const int tid1 = (int)vg_col;  // vg.tid() column",
        ]
    elif fn.ndim == 1:
        prologue = [
            "const int tid0 = blockIdx.x * blockDim.x + threadIdx.x;  // vg.tid()",
            "if (tid0 >= n0) return;",
        ]
    else:
        prologue = ["if (blockIdx.x * blockDim.x + threadIdx.x >= (unsigned int)n0) return;"]
    body = [*prologue, *em.local_decls(), *em.block(fn.body)]
    kernel = "\n".join(
        [
            f"// kernel {fn.py_name or fn.name} ({_where(fn)})",
            f'extern "C" __global__ void __launch_bounds__({BLOCK}) {entry}(',
            f"    {params})",
            "{",
            *("    " + line for line in body),
            "}",
        ]
    )
    header = (
        f"// Generated by vgpu_nb from {fn.py_name or fn.name} ({_where(fn)}) for NVRTC.\n"
        f"// Parameters: the launch domain (n0{', n1' if fn.ndim == 2 else ''}), then each "
        f"argument; arrays are followed by the extents the kernel uses."
    )
    parts = [header, prog.preamble(), *prog.func_defs, kernel]
    return GeneratedKernel(
        source="\n\n".join(p for p in parts if p) + "\n",
        entry=entry,
        ndim=fn.ndim,
        params=fn.params,
        shape_dims=tuple(prog.shape_dims(fn, p.name) if p.is_array else () for p in fn.params),
    )


def kernel_source(fn: ir.Function) -> str:
    """Readable CUDA C for ``fn`` (see the module docstring for the parameter convention)."""
    return generate_kernel(fn).source


def launch_config(
    ndim: int | None, domain: tuple[int, ...]
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """``(grid, block)`` for a launch of a kernel whose ``fn.ndim`` is ``ndim`` over
    ``domain`` (every dimension in 1 … 2**31 - 1; flat launches: the product too)."""
    if ndim == 2:
        ny, nx = domain
        bx = BLOCK_2D[0] if nx >= BLOCK_2D[0] else 1 << (nx - 1).bit_length()
        by = BLOCK // bx
        row_blocks = -(-ny // by)
        gy = min(row_blocks, _MAX_GRID_YZ)
        gz = -(-row_blocks // gy)
        return (-(-nx // bx), gy, gz), (bx, by, 1)
    n = domain[0] if len(domain) == 1 else domain[0] * domain[1]
    return (-(-n // BLOCK), 1, 1), (BLOCK, 1, 1)


# ---- reductions --------------------------------------------------------------------------
#: entry points of a reduction module (all blocks of BLOCK threads, except cols_part: 2-D)
REDUCTION_ENTRIES = (
    "vg_full_part",
    "vg_full_part_vec",
    "vg_full_final",
    "vg_rows_thread",
    "vg_rows_group",
    "vg_rows_warp",
    "vg_rows_part",
    "vg_rows_final",
    "vg_cols_part",
    "vg_cols_final",
)
_VEC_TYPES = {
    (4, 4): {"f32": "float4", "i32": "int4", "u32": "uint4"},
    (4, 2): {"f32": "float2", "i32": "int2", "u32": "uint2"},
    (8, 2): {"f64": "double2", "i64": "longlong2", "u64": "ulonglong2"},
    (1, 4): {"bool": "uchar4"},
    (1, 2): {"bool": "uchar2"},
}


def reduction_vector_width(inputs: Sequence[DType]) -> int:
    """Elements per vectorised load of every input (16 bytes for the widest), or 1."""
    width = min(4, 16 // max(t.itemsize for t in inputs))
    if width < 2:
        return 1
    ok = all(t.name in _VEC_TYPES.get((t.itemsize, width), {}) for t in inputs)
    return width if ok else 1


def _combine_body(red: ir.Reduction, prog: _Program, acc: DType) -> str:
    """The body of ``vg_combine(a, b)``: a built-in combine or the user's function."""
    c = red.combine
    if isinstance(c, ir.Function):
        a, _ = c_cast("a", 16, acc, c.params[0].type)  # type: ignore[arg-type]
        b, _ = c_cast("b", 16, acc, c.params[1].type)  # type: ignore[arg-type]
        call = f"{prog.func_names[id(c)]}({a}, {b})"
        return f"return {c_cast(call, 16, c.ret or acc, acc)[0]};"
    if c not in ir.COMBINES:
        raise KernelCompileError(f"unknown combine {c!r}")
    if acc is bool_:
        sym = {"add": "||", "or": "||", "max": "||", "mul": "&&", "and": "&&", "min": "&&"}[c]
        return f"return a {sym} b;"
    if c in ("add", "mul"):
        if acc in _SIGNED:
            prog.use(f"{c}_{acc.name}")
            return f"return vg_{c}(a, b);"
        return f"return a {'+' if c == 'add' else '*'} b;"
    if c in ("min", "max"):
        sym = "<" if c == "min" else ">"
        if acc in (f32, f64):
            return f"return (a != a || a {sym} b) ? a : b; /* NaN propagates, as np.{c} */"
        return f"return b {sym} a ? b : a;"
    if acc in (f32, f64):
        raise KernelCompileError(f"combine {c!r} needs integers or bools, not {acc.name}")
    return f"return a {'&' if c == 'and' else '|'} b;"


def reduction_source(red: ir.Reduction) -> str:
    """One CUDA module with every kernel a reduction needs (:data:`REDUCTION_ENTRIES`);
    :func:`reduction_launches` says which to launch, how, for a given shape."""
    prog = _Program(reserved=REDUCTION_ENTRIES)
    for name in ("acc_t", "out_t", "vg_combine", "vg_map", "vg_finish", "vg_shfl_down"):
        prog.globals.taken.add(name)
    user = [*red.funcs, red.map]
    if isinstance(red.combine, ir.Function):
        user.append(red.combine)
    if red.post is not None:
        user.append(red.post)
    prog.name_funcs(user)
    prog.emit_funcs(user)
    acc, out = red.acc, red.out
    ident = c_const(red.identity.value, acc)
    k = len(red.inputs)
    xs = [f"x{i}" for i in range(k)]
    st = [STORAGE_TYPE[t.name] for t in red.inputs]
    in_params = ", ".join(f"const {s}* __restrict__ {x}" for s, x in zip(st, xs, strict=True))
    xs_args = ", ".join(xs)

    # map: storage values → acc
    m = red.map
    margs = []
    for i, (t, p) in enumerate(zip(red.inputs, m.params, strict=True)):
        text, prec = (f"v{i} != 0", 9) if t is bool_ else (f"v{i}", 16)
        margs.append(c_cast(text, prec, t, p.type)[0])  # type: ignore[arg-type]
    mcall = f"{prog.func_names[id(m)]}({', '.join(margs)})"
    map_def = (
        "static __device__ __forceinline__ acc_t vg_map("
        + ", ".join(f"{s} v{i}" for i, s in enumerate(st))
        + f") {{ return {c_cast(mcall, 16, m.ret or acc, acc)[0]}; }}"
    )
    # finish: acc (and n) → out
    if red.post is None:
        fin = c_cast("a", 16, acc, out)[0]
    else:
        p = red.post
        pargs = [c_cast("a", 16, acc, p.params[0].type)[0]]  # type: ignore[arg-type]
        if red.post_takes_n:
            pargs.append(c_cast("n", 16, i64, p.params[1].type)[0])  # type: ignore[arg-type]
        fin = c_cast(f"{prog.func_names[id(p)]}({', '.join(pargs)})", 16, p.ret or out, out)[0]
    finish_def = (
        "static __device__ __forceinline__ out_t vg_finish(acc_t a, long long n) "
        f"{{ {'(void)n; ' if not red.post_takes_n else ''}return {fin}; }}"
    )
    combine_def = (
        "static __device__ __forceinline__ acc_t vg_combine(acc_t a, acc_t b) "
        f"{{ {_combine_body(red, prog, acc)} }}"
    )
    shfl = (
        "(acc_t)__shfl_down_sync(0xffffffffu, (int)v, offset, width)"
        if acc is bool_
        else "__shfl_down_sync(0xffffffffu, v, offset, width)"
    )

    def load(idx: str) -> str:
        return ", ".join(f"{x}[{idx}]" for x in xs)

    width = reduction_vector_width(red.inputs)

    common = f"""\
typedef {C_TYPE[acc.name]} acc_t;
typedef {C_TYPE[out.name]} out_t;
#define VG_IDENTITY {ident}

{combine_def}
{map_def}
{finish_def}

// (within segments of `width` lanes)
static __device__ __forceinline__ acc_t vg_shfl_down(acc_t v, int offset, int width = 32) {{
    return {shfl};
}}

// tree over the 32 lanes of a warp: the result is in lane 0
static __device__ __forceinline__ acc_t vg_warp_reduce(acc_t v) {{
    for (int offset = 16; offset > 0; offset >>= 1) v = vg_combine(v, vg_shfl_down(v, offset));
    return v;
}}

// every thread of a 1-D block calls it; the result is in thread 0
static __device__ __forceinline__ acc_t vg_block_reduce(acc_t v) {{
    __shared__ acc_t warp_part[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = vg_warp_reduce(v);
    if (lane == 0) warp_part[warp] = v;
    __syncthreads();
    if (warp == 0) {{
        v = lane < (int)((blockDim.x + 31) >> 5) ? warp_part[lane] : VG_IDENTITY;
        v = vg_warp_reduce(v);
    }}
    return v;
}}"""

    def scalar_pass(comment: str, name: str, pragma: str) -> str:
        """Pass 1 of a full reduction, one element a load (grid-stride)."""
        return f"""
{comment}
extern "C" __global__ void __launch_bounds__({BLOCK}) {name}(
    long long n, {in_params}, acc_t* __restrict__ partial, out_t* __restrict__ out)
{{
    acc_t acc = VG_IDENTITY;
    const long long stride = (long long)gridDim.x * blockDim.x;
{pragma}    for (long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x; p < n; p += stride)
        acc = vg_combine(acc, vg_map({load("p")}));
    acc = vg_block_reduce(acc);
    if (threadIdx.x == 0) {{
        if (gridDim.x == 1) out[0] = vg_finish(acc, n);
        else partial[blockIdx.x] = acc;
    }}
}}"""

    if width > 1:
        vt = [_VEC_TYPES[(t.itemsize, width)][t.name] for t in red.inputs]
        comps = "xyzw"[:width]
        vec_loads = "\n".join(
            f"        const {v} w{i} = reinterpret_cast<const {v}*>(x{i})[q];"
            for i, v in enumerate(vt)
        )
        vec_maps = "\n".join(
            f"        acc = vg_combine(acc, vg_map({', '.join(f'w{i}.{c}' for i in range(k))}));"
            for c in comps
        )
        vec_kernel = f"""
// full reduction, pass 1, vectorised ({width} elements a load; inputs aligned to that)
extern "C" __global__ void __launch_bounds__({BLOCK}) vg_full_part_vec(
    long long n, {in_params}, acc_t* __restrict__ partial, out_t* __restrict__ out)
{{
    acc_t acc = VG_IDENTITY;
    const long long stride = (long long)gridDim.x * blockDim.x;
    const long long first = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long nvec = n / {width};
#pragma unroll 4
    for (long long q = first; q < nvec; q += stride) {{
{vec_loads}
{vec_maps}
    }}
    for (long long p = nvec * {width} + first; p < n; p += stride)
        acc = vg_combine(acc, vg_map({load("p")}));
    acc = vg_block_reduce(acc);
    if (threadIdx.x == 0) {{
        if (gridDim.x == 1) out[0] = vg_finish(acc, n);
        else partial[blockIdx.x] = acc;
    }}
}}"""
    else:
        vec_kernel = scalar_pass(
            "// (no vectorised variant for these input types: an alias of the scalar pass)",
            "vg_full_part_vec",
            "",
        )

    kernels = (
        scalar_pass(
            "// full reduction, pass 1: grid-stride partial per block (the final result if one "
            "block)",
            "vg_full_part",
            "#pragma unroll 4\n",
        )
        + f"""
{vec_kernel}

// full reduction, pass 2: one block combines the m partials in a fixed order
extern "C" __global__ void __launch_bounds__({BLOCK}) vg_full_final(
    int m, const acc_t* __restrict__ partial, out_t* __restrict__ out, long long n)
{{
    acc_t acc = VG_IDENTITY;
    for (int p = threadIdx.x; p < m; p += blockDim.x) acc = vg_combine(acc, partial[p]);
    acc = vg_block_reduce(acc);
    if (threadIdx.x == 0) out[0] = vg_finish(acc, n);
}}

// axis=1 on (R, C), many short rows (C <= 16): one thread per row
extern "C" __global__ void __launch_bounds__({BLOCK}) vg_rows_thread(
    int R, int C, {in_params}, out_t* __restrict__ out)
{{
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long r = (long long)blockIdx.x * blockDim.x + threadIdx.x; r < R; r += stride) {{
        const long long row = r * C;
        acc_t acc = VG_IDENTITY;
#pragma unroll 4
        for (int c = 0; c < C; ++c) acc = vg_combine(acc, vg_map({load("row + c")}));
        out[r] = vg_finish(acc, C);
    }}
}}

// axis=1 on (R, C), many rows: G lanes per row (G a power of two <= 32), so a warp covers
// 32 / G consecutive rows, with K such row sets in flight per iteration (memory-level
// parallelism for short rows); the loop is uniform per warp, as the shuffles need
template <int K, int G>
static __device__ __forceinline__ void vg_rows_body(
    int R, int C, {in_params}, out_t* __restrict__ out)
{{
    const int sub = threadIdx.x & (G - 1);
    const long long rows_per_block = blockDim.x / G;
    const long long stride = (long long)gridDim.x * rows_per_block;
    const long long warp_first = (long long)blockIdx.x * rows_per_block + (threadIdx.x & ~31) / G;
    for (long long base = warp_first; base < R; base += K * stride) {{
        long long r[K];
        acc_t acc[K];
#pragma unroll
        for (int k = 0; k < K; ++k) {{
            r[k] = base + k * stride + (threadIdx.x & 31) / G;
            acc[k] = VG_IDENTITY;
        }}
        for (long long c = sub; c < C; c += G) {{
#pragma unroll
            for (int k = 0; k < K; ++k)
                if (r[k] < R) acc[k] = vg_combine(acc[k], vg_map({load("r[k] * C + c")}));
        }}
#pragma unroll
        for (int offset = G >> 1; offset > 0; offset >>= 1) {{
#pragma unroll
            for (int k = 0; k < K; ++k)
                acc[k] = vg_combine(acc[k], vg_shfl_down(acc[k], offset, G));
        }}
#pragma unroll
        for (int k = 0; k < K; ++k)
            if (sub == 0 && r[k] < R) out[r[k]] = vg_finish(acc[k], C);
    }}
}}

// rows of 17 to 128 columns: 16 or 32 lanes a row, 4 row sets in flight
extern "C" __global__ void __launch_bounds__({BLOCK}) vg_rows_group(
    int R, int C, int G, {in_params}, out_t* __restrict__ out)
{{
    if (G == 16) vg_rows_body<4, 16>(R, C, {xs_args}, out);
    else vg_rows_body<4, 32>(R, C, {xs_args}, out);
}}

// longer rows: a warp per row
extern "C" __global__ void __launch_bounds__({BLOCK}) vg_rows_warp(
    int R, int C, {in_params}, out_t* __restrict__ out)
{{
    vg_rows_body<1, 32>(R, C, {xs_args}, out);
}}

// axis=1 on (R, C), few long rows: block (s, r) reduces segment s of row r
extern "C" __global__ void __launch_bounds__({BLOCK}) vg_rows_part(
    int R, int C, int seg, {in_params}, acc_t* __restrict__ partial, out_t* __restrict__ out)
{{
    const int r = blockIdx.y;
    const long long row = (long long)r * C;
    const long long stop = (long long)(blockIdx.x + 1) * seg;
    const long long end = stop < C ? stop : C;
    acc_t acc = VG_IDENTITY;
#pragma unroll 4
    for (long long c = (long long)blockIdx.x * seg + threadIdx.x; c < end; c += blockDim.x)
        acc = vg_combine(acc, vg_map({load("row + c")}));
    acc = vg_block_reduce(acc);
    if (threadIdx.x == 0) {{
        if (gridDim.x == 1) out[r] = vg_finish(acc, C);
        else partial[(long long)r * gridDim.x + blockIdx.x] = acc;
    }}
}}

// axis=1, pass 2: one warp per row combines its S partials in order
extern "C" __global__ void __launch_bounds__({BLOCK}) vg_rows_final(
    int R, int S, const acc_t* __restrict__ partial, out_t* __restrict__ out, long long n)
{{
    const int lane = threadIdx.x & 31;
    const long long r = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (r >= R) return;
    acc_t acc = VG_IDENTITY;
    for (int s = lane; s < S; s += 32) acc = vg_combine(acc, partial[r * S + s]);
    acc = vg_warp_reduce(acc);
    if (lane == 0) out[r] = vg_finish(acc, n);
}}

// axis=0 on (R, C): block (bx, by) covers bx columns; its by thread rows stride over the
// rows of segment blockIdx.y, then combine through shared memory in a fixed tree
extern "C" __global__ void __launch_bounds__({BLOCK}) vg_cols_part(
    int R, int C, int seg, {in_params}, acc_t* __restrict__ partial, out_t* __restrict__ out)
{{
    __shared__ acc_t part[{BLOCK}];
    const long long c = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long stop = (long long)(blockIdx.y + 1) * seg;
    const long long end = stop < R ? stop : R;
    acc_t acc = VG_IDENTITY;
    if (c < C) {{
#pragma unroll 4
        for (long long r = (long long)blockIdx.y * seg + threadIdx.y; r < end; r += blockDim.y)
            acc = vg_combine(acc, vg_map({load("r * C + c")}));
    }}
    const int me = threadIdx.y * blockDim.x + threadIdx.x;
    part[me] = acc;
    __syncthreads();
    for (int half = blockDim.y >> 1; half > 0; half >>= 1) {{
        if ((int)threadIdx.y < half) part[me] = vg_combine(part[me], part[me + half * blockDim.x]);
        __syncthreads();
    }}
    if (threadIdx.y == 0 && c < C) {{
        if (gridDim.y == 1) out[c] = vg_finish(part[me], R);
        else partial[(long long)blockIdx.y * C + c] = part[me];
    }}
}}

// axis=0, pass 2: one thread per column combines its S partials in order
extern "C" __global__ void __launch_bounds__({BLOCK}) vg_cols_final(
    int C, int S, const acc_t* __restrict__ partial, out_t* __restrict__ out, long long n)
{{
    const long long c = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    acc_t acc = VG_IDENTITY;
    for (int s = 0; s < S; ++s) acc = vg_combine(acc, partial[s * C + c]);
    out[c] = vg_finish(acc, n);
}}"""
    )
    m_desc = f"{red.name}: map {m.py_name or m.name}"
    header = (
        f"// Generated by vgpu_nb for the reduction {m_desc}, combine "
        f"{red.combine if isinstance(red.combine, str) else red.combine.py_name}, inputs "
        f"{', '.join(t.name for t in red.inputs)} -> acc {acc.name} -> out {out.name}.\n"
        "// Deterministic: the launch shapes depend only on the data shape and the SM count."
    )
    parts = [header, prog.preamble(), *prog.func_defs, common, kernels.strip("\n")]
    return "\n\n".join(p for p in parts if p) + "\n"


#: an argument of a reduction launch: ("i32" | "i64", value), or "inputs" (every input
#: array, in order), "partial" (the acc scratch of :attr:`Launch.partials` elements, shared
#: by the two launches of one reduction) or "out" (the result array)
Arg = tuple[str, int] | str


@dataclass(frozen=True)
class Launch:
    """One kernel launch of a reduction: entry name, grid, block and its arguments."""

    entry: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    args: tuple[Arg, ...]
    partials: int = 0  # acc elements of scratch the reduction needs (0: none)


def reduction_launches(
    shape: tuple[int, ...], axis: int | None, sms: int, vectorised: bool
) -> list[Launch]:
    """The launches (1 or 2) that reduce ``shape`` (C order) along ``axis`` on a GPU with
    ``sms`` multiprocessors. Only the shape and ``sms`` decide (``vectorised`` only swaps
    in the vectorised twin of the same partition), so results are reproducible; a second
    launch combines the partials the first wrote, in a fixed order."""
    target = 4 * sms  # blocks of 256 threads worth having in flight
    warps = BLOCK // 32
    if axis is None or len(shape) == 1:
        n = int(np.prod(shape))
        blocks = max(1, min(target, -(-n // (BLOCK * 8))))
        entry = "vg_full_part_vec" if vectorised else "vg_full_part"
        args: tuple[Arg, ...] = (("i64", n), "inputs", "partial", "out")
        if blocks == 1:
            return [Launch(entry, (1, 1, 1), (BLOCK, 1, 1), args)]
        final = (("i32", blocks), "partial", "out", ("i64", n))
        return [
            Launch(entry, (blocks, 1, 1), (BLOCK, 1, 1), args, blocks),
            Launch("vg_full_final", (1, 1, 1), (BLOCK, 1, 1), final, blocks),
        ]
    rows, cols = shape
    if axis == 1:
        dims: tuple[Arg, ...] = (("i32", rows), ("i32", cols))
        if cols <= 16:  # (measured on an H100: 2-3x the group kernel's bandwidth there)
            grid = min(-(-rows // BLOCK), 32 * sms)
            args = (*dims, "inputs", "out")
            return [Launch("vg_rows_thread", (grid, 1, 1), (BLOCK, 1, 1), args)]
        lanes = 16 if cols < 32 else 32
        rows_per_block = BLOCK // lanes
        if rows >= rows_per_block * target:
            if cols <= 128:  # 4 row sets in flight per warp
                grid = min(-(-rows // (4 * rows_per_block)), 32 * sms)
                args = (*dims, ("i32", lanes), "inputs", "out")
                return [Launch("vg_rows_group", (grid, 1, 1), (BLOCK, 1, 1), args)]
            grid = min(-(-rows // rows_per_block), 32 * sms)
            return [Launch("vg_rows_warp", (grid, 1, 1), (BLOCK, 1, 1), (*dims, "inputs", "out"))]
        splits = max(1, min(-(-target // rows), -(-cols // (BLOCK * 8))))
        seg = -(-cols // splits)
        splits = -(-cols // seg)
        part = Launch(
            "vg_rows_part",
            (splits, rows, 1),
            (BLOCK, 1, 1),
            (*dims, ("i32", seg), "inputs", "partial", "out"),
            rows * splits if splits > 1 else 0,
        )
        if splits == 1:
            return [part]
        final = (("i32", rows), ("i32", splits), "partial", "out", ("i64", cols))
        grid = -(-rows // warps)
        return [part, Launch("vg_rows_final", (grid, 1, 1), (BLOCK, 1, 1), final, part.partials)]
    # axis == 0: each column reduced over the rows; x runs along a row (coalesced). Block
    # rows (by) share a column's rows, combined through shared memory: worth it only when
    # the columns alone do not fill the GPU (2048 threads per SM)
    if cols < 32:
        bx = 1 << (cols - 1).bit_length()
        by = BLOCK // bx
    else:
        by = 8
        while by > 1 and cols * (by // 2) >= 2048 * sms:
            by //= 2
        bx = BLOCK // by
    gx = -(-cols // bx)
    splits = max(1, min(-(-target // gx), -(-rows // (by * 8)), _MAX_GRID_YZ))
    seg = -(-rows // splits)
    splits = -(-rows // seg)
    part = Launch(
        "vg_cols_part",
        (gx, splits, 1),
        (bx, by, 1),
        (("i32", rows), ("i32", cols), ("i32", seg), "inputs", "partial", "out"),
        cols * splits if splits > 1 else 0,
    )
    if splits == 1:
        return [part]
    final = (("i32", cols), ("i32", splits), "partial", "out", ("i64", rows))
    grid = -(-cols // BLOCK)
    return [part, Launch("vg_cols_final", (grid, 1, 1), (BLOCK, 1, 1), final, part.partials)]


__all__ = [
    "BLOCK",
    "BLOCK_2D",
    "C_TYPE",
    "REDUCTION_ENTRIES",
    "STORAGE_TYPE",
    "GeneratedKernel",
    "Launch",
    "c_const",
    "generate_kernel",
    "kernel_source",
    "launch_config",
    "reduction_launches",
    "reduction_source",
    "reduction_vector_width",
]
