"""WGSL for reductions (``ReduceRequest`` kinds), with ``reduce_host``'s exact semantics.

Every element is converted to the accumulator type, mapped (``x``, ``x*x``, ``(x-c)**2``,
``x*y``) and combined (add, mul, min, max, or (value, index) pairs for argmin/argmax);
the final shader applies the epilogue (``/ divisor`` in acc, ``sqrt``, cast to ``out``)
and writes the result, which stays on the GPU.

Shapes of work:

* **full** (``axis=None``) — two passes. Pass 1: a fixed number of workgroups walk the array
  with a grid-stride loop of 16-byte vector loads (``vec4<f32>``, ``vec2<f64>``, 16 bools in
  a ``vec4<u32>``), ``FULL_UNROLL`` loads in flight and ``FULL_ACCUMULATORS`` independent
  accumulators per thread, then a workgroup tree (subgroup operations when the device has
  ``subgroup``, a workgroup-memory tree otherwise) writes one partial per workgroup. Pass 2:
  one workgroup reduces the partials and applies the epilogue. Arrays above the storage
  binding limit run pass 1 once per binding window, each window writing its own partials.
* **axis** (2-D, C order) — chosen by layout (:func:`axis_plan`): a workgroup per row (long
  rows), a thread per row (short rows), a thread per column looping over rows (axis=0 with
  enough columns: neighbouring threads read neighbouring addresses) or a workgroup per
  column (axis=0 with few columns and many rows). When that gives too few threads to fill
  the device (e.g. axis=0 of a 16384 × 16384 array: 16384 threads), the reduced axis is cut
  into slices, each writing partial states, and a gather pass (a thread per output)
  combines them and applies the epilogue. One output (``(1, n)``, ``(n, 1)``) is a full
  reduction.

Products of floats carry (product, rounding error) pairs (Dekker's two-product with
bit-mask splitting): products of many factors close to 1 otherwise drift by a rounding bias
per multiply (1.5e-3 relative over 10⁶ factors), far outside NumPy's own error.

NaN: min/max propagate NaN and argmin/argmax return the first NaN, NaN being detected by bit
pattern. argmin/argmax take the lower index on equal values, so any combination order gives
NumPy's first index.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

from . import (
    FLOATS,
    ITEMSIZE,
    VALUE_TYPE,
    Shader,
    component,
    convert,
    extreme,
    isnan_fn,
    linear_workgroup,
    literal,
    load,
    vec_type,
)

# ---- knobs (tune on the GPU; sources are regenerated from these) ---------------------------
# Measured on an NVIDIA H200 through Vulkan (wgpu-native 29, driver 580), device timestamps:
# vg.sum of 2**28 f32 = 0.245 ms (4.4 TB/s; 4.0 TB/s over 50 queued sums); FULL_UNROLL 1-4,
# FULL_ACCUMULATORS 4-8 and 528-4096 workgroups all landed within 3% of that.
# llvmpipe (2 cores): 256 workgroups beat 16 (1.8x) and 2048 (1.2x).
#: Threads per workgroup in every reduction shader.
WORKGROUP = 256
#: Pass 1: 16-byte loads issued per thread per grid-stride iteration.
FULL_UNROLL = 2
#: Pass 1: independent accumulators per thread (breaks the add dependency chain).
FULL_ACCUMULATORS = 8
#: Pass 1: each thread should get at least this many grid-stride iterations before another
#: workgroup is added (small arrays use few workgroups).
FULL_MIN_ITERS = 4
#: Pass 1 workgroup count cap on real GPUs (≈ 4 × compute units of a big GPU) …
FULL_MAX_WORKGROUPS_GPU = 1024
#: … and on CPU-emulated adapters (llvmpipe runs workgroups on a few CPU threads).
FULL_MAX_WORKGROUPS_CPU = 256
#: axis=1: a workgroup per row from this row length on, a thread per row below it.
ROW_WG_MIN_LEN = 256
#: axis=0: a workgroup per column when there are fewer columns than this and at least
#: ``COL_WG_MIN_ROWS`` rows; a thread per column otherwise.
COL_WG_MAX_COLS = 64
COL_WG_MIN_ROWS = 1024
#: axis reductions: threads wanted in flight; with fewer outputs than that, the reduced axis
#: is cut into slices combined by a second pass (GPU: ≈ resident threads of a big GPU).
AXIS_TARGET_THREADS_GPU = 1 << 18
AXIS_TARGET_THREADS_CPU = 1 << 12
#: … each slice keeping at least this many elements per thread.
AXIS_MIN_SLICE = 64

COMBINE = {
    "sum": "add",
    "sumsq": "add",
    "sqdev": "add",
    "dot": "add",
    "prod": "mul",
    "min": "min",
    "max": "max",
    "argmin": "min",
    "argmax": "max",
}
AXIS_MODES = ("row_wg", "row_thread", "col_thread", "col_wg")


@dataclass(frozen=True)
class ReduceSpec:
    """What a reduction shader computes (everything that changes its source)."""

    kind: str
    x: str  # input dtype name
    acc: str  # accumulator dtype name (for argmin/argmax: the input's)
    out: str  # result dtype name (int64 for argmin/argmax)
    y: str | None = None  # dot: second operand's dtype
    divide: bool = False
    sqrt: bool = False
    subgroups: bool = False  # the device has the ``subgroup`` feature
    int64: bool = False  # the device has ``shader-int64`` (f64 products split by bit mask)
    workgroup: int = WORKGROUP

    @property
    def arg(self) -> bool:
        return self.kind in ("argmin", "argmax")

    @property
    def combine(self) -> str:
        if self.kind == "dot" and self.acc == "bool":
            return "max"  # dot of bools: any(x & y), the same as (count != 0)
        return COMBINE[self.kind]

    @property
    def value(self) -> str:
        """dtype of the reduced value (the state's value part)."""
        return self.x if self.arg else self.acc

    @property
    def compensated(self) -> bool:
        """Float products keep (product, error) pairs: products of many factors close to
        1 (the usual case) otherwise drift by a rounding bias per multiply."""
        return self.combine == "mul" and self.acc in FLOATS

    @property
    def state(self) -> str:
        """WGSL type of the per-thread state."""
        if self.arg:
            return "AV"
        if self.compensated:
            return f"vec2<{VALUE_TYPE[self.acc]}>"
        return VALUE_TYPE[self.acc]

    @property
    def partial(self) -> str:
        """WGSL element type of the partials buffer (argmin/argmax: the value part)."""
        return VALUE_TYPE[self.value] if self.arg else self.state

    @property
    def partial_bytes(self) -> int:
        size = 4 if self.value == "bool" else ITEMSIZE[self.value]
        return 2 * size if self.compensated else size

    @property
    def use_subgroups(self) -> bool:
        """Subgroup reductions only on 32-bit states (64-bit subgroup ops are optional in
        Vulkan)."""
        return self.subgroups and VALUE_TYPE[self.value] in ("f32", "i32", "u32")

    @property
    def vectorised(self) -> bool:
        """Full reductions read 16-byte vectors when both operands pack the same count."""
        return self.y is None or vec_type(self.x)[1] == vec_type(self.y)[1]


# ---- building blocks ------------------------------------------------------------------------
def _helpers(spec: ReduceSpec) -> str:
    """State type, identity, combine and map helpers."""
    v, acc = spec.value, spec.acc
    vt = VALUE_TYPE[v]
    src = []
    nan_aware = v in FLOATS and spec.combine in ("min", "max")
    if nan_aware:
        src.append(isnan_fn(v))
    if spec.arg:
        src.append(f"struct AV {{ v: {vt}, i: u32 }}\n")
        ident = f"AV({extreme(v, spec.kind == 'argmin')}, 0xffffffffu)"
        less = "b.v < a.v" if spec.kind == "argmin" else "b.v > a.v"
        nan = (
            "  let na = is_nan(a.v);\n  let nb = is_nan(b.v);\n"
            "  if (na != nb) { return nb; }\n  if (na) { return b.i < a.i; }\n"
            if nan_aware
            else ""
        )
        src.append(
            "// true when b is the better (value, index) pair: NaN first, then the\n"
            "// smaller/larger value, then the lower index (NumPy's first occurrence)\n"
            f"fn better(a: AV, b: AV) -> bool {{\n{nan}"
            f"  if ({less}) {{ return true; }}\n"
            "  return b.v == a.v && b.i < a.i;\n}\n"
            "fn comb(a: AV, b: AV) -> AV {\n  if (better(a, b)) { return b; }\n  return a;\n}\n"
        )
    else:
        t = VALUE_TYPE[acc]
        op = spec.combine
        if op == "add":
            ident, body = literal(0, acc), "a + b"
        elif op == "mul" and spec.compensated:
            # Dekker's two-product (p + e == a * b exactly). Not fma(a, b, -p): WGSL's fma
            # may be unfused (it is on llvmpipe). Not Veltkamp's c - (c - a) split either:
            # NVIDIA's Vulkan compiler folds it to a. Splitting by masking mantissa bits is
            # integer work no compiler can simplify away (measured exact on both).
            if t == "f32":
                split = "let h = bitcast<f32>(bitcast<u32>(v) & 0xfffff000u);"  # 12 + 12 bits
            elif spec.int64:
                split = "let h = bitcast<f64>(bitcast<u64>(v) & 0xfffffffff8000000lu);"
            else:  # f64 without 64-bit integers: Veltkamp (2^27 + 1), best effort
                split = "let c = 134217729.0lf * v; let h = c - (c - v);"
            src.append(
                f"fn split(v: {t}) -> vec2<{t}> {{ {split} return vec2<{t}>(h, v - h); }}\n"
                f"fn two_prod(a: {t}, b: {t}) -> vec2<{t}> {{\n"
                "  let p = a * b;\n  let sa = split(a);\n  let sb = split(b);\n"
                f"  let e = ((sa.x * sb.x - p) + sa.x * sb.y + sa.y * sb.x) + sa.y * sb.y;\n"
                f"  return vec2<{t}>(p, e);\n}}\n"
                "// (product, accumulated rounding error): error terms are carried along\n"
                f"fn comb(a: vec2<{t}>, b: vec2<{t}>) -> vec2<{t}> {{\n"
                "  let t = two_prod(a.x, b.x);\n"
                f"  return vec2<{t}>(t.x, t.y + a.x * b.y + a.y * b.x);\n}}\n"
            )
            ident, body = f"vec2<{t}>({literal(1, acc)}, {literal(0, acc)})", ""
        elif op == "mul":
            ident, body = literal(1, acc), "a * b"
        else:
            ident = extreme(acc, op == "min")
            body = f"{op}(a, b)"
            if nan_aware:
                body = f"select(select({op}(a, b), b, is_nan(b)), a, is_nan(a))"
        if body:
            src.append(f"fn comb(a: {t}, b: {t}) -> {t} {{ return {body}; }}\n")
    src.append(f"fn ident() -> {spec.state} {{ return {ident}; }}\n")
    if spec.kind in ("sumsq", "sqdev"):
        t = VALUE_TYPE[acc]
        src.append(f"fn sq(v: {t}) -> {t} {{ return v * v; }}\n")
    return "".join(src)


def _map(spec: ReduceSpec, xc: str, yc: str | None, idx: str) -> str:
    """The mapped state of one element (``xc``/``yc``: its value expressions)."""
    if spec.arg:
        return f"AV({xc}, {idx})"
    xa = convert(xc, spec.x, spec.acc)
    if spec.compensated:
        return f"{spec.state}({xa}, {literal(0, spec.acc)})"
    if spec.kind == "sumsq":
        return f"sq({xa})"
    if spec.kind == "sqdev":
        return f"sq({xa} - cen0)"
    if spec.kind == "dot":
        assert yc is not None and spec.y is not None
        return f"{xa} * {convert(yc, spec.y, spec.acc)}"
    return xa


def _accumulate(spec: ReduceSpec, a: str, m: str) -> str:
    if spec.combine == "add":
        return f"{a} = {a} + {m};"
    if spec.combine == "mul" and not spec.compensated:
        return f"{a} = {a} * {m};"
    return f"{a} = comb({a}, {m});"


class _Bindings:
    """Collects binding declarations in order."""

    def __init__(self) -> None:
        self.decls: list[str] = []
        self.kinds: list[tuple[str, str]] = []

    def add(self, name: str, kind: str, wgsl: str) -> None:
        i = len(self.kinds)
        space = {"read": "storage, read", "rw": "storage, read_write", "uniform": "uniform"}[kind]
        self.decls.append(f"@group(0) @binding({i}) var<{space}> {name}: {wgsl};\n")
        self.kinds.append((name, kind))


def _params(fields: list[tuple[str, str]]) -> str:
    body = ", ".join(f"{n}: {t}" for n, t in fields)
    return f"struct P {{ {body} }}\n"


def _bind_inputs(spec: ReduceSpec, b: _Bindings) -> None:
    b.add("xv", "read", f"array<{vec_type(spec.x)[0]}>")
    if spec.kind == "dot":
        assert spec.y is not None
        b.add("yv", "read", f"array<{vec_type(spec.y)[0]}>")
    if spec.kind == "sqdev":
        b.add("cen", "read", f"array<{VALUE_TYPE[spec.acc]}>")


def _bind_result(spec: ReduceSpec, b: _Bindings) -> str:
    """Bind the result buffer; return the ``finish(o, s)`` function (epilogue + store)."""
    if spec.arg:
        b.add("res", "rw", "array<u32>")
        return (
            "fn finish(o: u32, s: AV) {\n"
            "  res[2u * o] = s.i;\n  res[2u * o + 1u] = 0u;  // int64 index: (low, high)\n}\n"
        )
    t = VALUE_TYPE[spec.acc]
    if spec.compensated:
        big = "bitcast<f32>(0x7f7fffffu)" if t == "f32" else "1.7976931348623157e308lf"
        lines = [
            f"fn finish(o: u32, s: vec2<{t}>) {{\n"
            "  var r = s.x;  // inf/NaN/overflowed splits: the plain product\n"
            f"  if (abs(s.x) <= {big} && abs(s.y) <= {big}) {{ r = s.x + s.y; }}\n"
        ]
    else:
        lines = [f"fn finish(o: u32, s: {t}) {{\n  var r = s;\n"]
    if spec.divide:
        if spec.acc not in FLOATS:
            raise ValueError(f"divisor needs a float accumulator, not {spec.acc}")
        lines.append("  r = r / p.div;\n")
    if spec.sqrt:
        lines.append("  r = sqrt(r);\n")
    if spec.out == "bool":
        # four bool bytes share a u32 word and neighbouring outputs may be written by other
        # threads: OR the byte into the (zero-initialised) word atomically
        b.add("res", "rw", "array<atomic<u32>>")
        lines.append(
            f"  let bit = select(0u, 1u, r != {literal(0, spec.acc)});\n"
            "  atomicOr(&res[o >> 2u], bit << ((o & 3u) << 3u));\n"
        )
    else:
        b.add("res", "rw", f"array<{VALUE_TYPE[spec.out]}>")
        lines.append(f"  res[o] = {convert('r', spec.acc, spec.out)};\n")
    lines.append("}\n")
    return "".join(lines)


def _shared_decls(spec: ReduceSpec) -> str:
    wg = spec.workgroup
    if spec.arg:
        return (
            f"var<workgroup> shv: array<{VALUE_TYPE[spec.value]}, {wg}>;\n"
            f"var<workgroup> shi: array<u32, {wg}>;\n"
        )
    return f"var<workgroup> shv: array<{spec.partial}, {wg}>;\n"


def _sh_get(spec: ReduceSpec, k: str) -> str:
    return f"AV(shv[{k}], shi[{k}])" if spec.arg else f"shv[{k}]"


def _sh_set(spec: ReduceSpec, k: str, val: str) -> str:
    if spec.arg:
        return f"let t_ = {val}; shv[{k}] = t_.v; shi[{k}] = t_.i;"
    return f"shv[{k}] = {val};"


def _subgroup_reduce(spec: ReduceSpec, s: str) -> str:
    vt = VALUE_TYPE[spec.value]
    if not spec.arg and spec.combine == "add":
        return f"{s} = subgroupAdd({s});\n"
    if not spec.arg and spec.combine in ("min", "max") and vt != "f32":
        return f"{s} = subgroup{spec.combine.capitalize()}({s});\n"
    # butterfly over shuffles: NaN-aware / index-aware combine on every step
    shfl = (
        f"AV(subgroupShuffleXor({s}.v, m_), subgroupShuffleXor({s}.i, m_))"
        if spec.arg
        else f"subgroupShuffleXor({s}, m_)"
    )
    return (
        f"for (var m_ = sgsize >> 1u; m_ > 0u; m_ = m_ >> 1u) {{\n  {s} = comb({s}, {shfl});\n}}\n"
    )


def _workgroup_reduce(spec: ReduceSpec) -> tuple[str, str]:
    """Code reducing each thread's ``s`` across the workgroup; returns (code, condition
    under which ``s`` holds the workgroup's result)."""
    if spec.use_subgroups:
        code = (
            _subgroup_reduce(spec, "s") + f"if (sglane == 0u) {{ {_sh_set(spec, 'sgid', 's')} }}\n"
            "workgroupBarrier();\n"
            "if (sgid == 0u) {\n"
            "  s = ident();\n"
            "  for (var k = sglane; k < nsg; k = k + sgsize) {\n"
            f"    s = comb(s, {_sh_get(spec, 'k')});\n  }}\n"
            + _indent(_subgroup_reduce(spec, "s"))
            + "}\n"
        )
        return code, "sgid == 0u && sglane == 0u"
    lines = [_sh_set(spec, "lid", "s") + "\nworkgroupBarrier();\n"]
    step = spec.workgroup // 2
    while step >= 1:
        merged = f"comb({_sh_get(spec, 'lid')}, {_sh_get(spec, f'lid + {step}u')})"
        lines.append(
            f"if (lid < {step}u) {{ {_sh_set(spec, 'lid', merged)} }}\nworkgroupBarrier();\n"
        )
        step //= 2
    lines.append(f"s = {_sh_get(spec, '0u')};\n")
    return "".join(lines), "lid == 0u"


def _entry(spec: ReduceSpec, body: str, needs_groups: bool = True) -> str:
    args = ["@builtin(local_invocation_index) lid: u32"]
    if needs_groups:
        args += ["@builtin(workgroup_id) wid: vec3<u32>", "@builtin(num_workgroups) nwg: vec3<u32>"]
    if spec.use_subgroups:
        args += [
            "@builtin(subgroup_invocation_id) sglane: u32",
            "@builtin(subgroup_size) sgsize: u32",
            "@builtin(subgroup_id) sgid: u32",
            "@builtin(num_subgroups) nsg: u32",
        ]
    sig = ",\n        ".join(args)
    indented = "".join(f"  {line}\n" if line else "\n" for line in body.splitlines())
    return f"@compute @workgroup_size({spec.workgroup})\nfn main({sig}) {{\n{indented}}}\n"


def _indent(code: str, n: int = 1) -> str:
    pad = "  " * n
    return "".join(f"{pad}{line}\n" for line in code.splitlines())


# ---- full reductions ------------------------------------------------------------------------
def full_pass1(spec: ReduceSpec) -> Shader:
    """Grid-stride pass: one partial state per workgroup at ``pv[pbase + workgroup]``.

    Params: ``n`` elements in this binding window, ``base`` global index of its first
    element (argmin/argmax), ``pbase`` first partial slot of this window."""
    return _full_pass1(spec, FULL_UNROLL, FULL_ACCUMULATORS)


@functools.lru_cache(maxsize=512)
def _full_pass1(spec: ReduceSpec, unroll: int, accumulators: int) -> Shader:
    b = _Bindings()
    _bind_inputs(spec, b)
    b.add("pv", "rw", f"array<{spec.partial}>")
    if spec.arg:
        b.add("pi", "rw", "array<u32>")
    fields = [("n", "u32"), ("base", "u32"), ("pbase", "u32")]
    b.add("p", "uniform", "P")

    wg = spec.workgroup
    vec = spec.vectorised
    per = vec_type(spec.x)[1] if vec else 1
    nacc = max(1, min(accumulators, unroll * per))
    dot = spec.kind == "dot"

    def elem_code(u_vars: list[tuple[str, str | None]], j_exprs: list[str], accs: list[int]) -> str:
        """Accumulate every element of the loaded vectors ``u_vars`` into accumulators."""
        out, slot = [], 0
        for (xv, yv), jx in zip(u_vars, j_exprs, strict=True):
            for e in range(per):
                if vec:
                    xc = component(xv, spec.x, e)
                    yc = component(yv, spec.y, e) if dot and yv else None  # type: ignore[arg-type]
                else:
                    xc, yc = xv, yv
                idx = f"p.base + ({jx}) * {per}u + {e}u" if vec else f"p.base + {jx}"
                a = f"a{accs[slot % len(accs)]}"
                out.append(_accumulate(spec, a, _map(spec, xc, yc, idx)))
                slot += 1
        return "".join(line + "\n" for line in out)

    def loads(jx: str, u: int) -> tuple[str, tuple[str, str | None]]:
        if vec:
            code = f"let x{u} = xv[{jx}];\n"
            if dot:
                code += f"let y{u} = yv[{jx}];\n"
        else:
            code = f"let x{u} = {load('xv', spec.x, jx)};\n"
            if dot:
                code += f"let y{u} = {load('yv', spec.y, jx)};\n"  # type: ignore[arg-type]
        return code, (f"x{u}", f"y{u}" if dot else None)

    body = [f"let stride = nwg.x * {wg}u;", f"let gid = wid.x * {wg}u + lid;"]
    if spec.kind == "sqdev":
        body.append("let cen0 = cen[0];")
    body.append(
        f"let nv = p.n / {per}u;  // whole {per}-element vectors" if vec else "let nv = p.n;"
    )
    body += [f"var a{k} = ident();" for k in range(nacc)]
    body.append("var j = gid;")
    # main loop: ``unroll`` independent loads in flight
    js = [f"j + {u}u * stride" if u else "j" for u in range(unroll)]
    ld, uv = zip(*(loads(js[u], u) for u in range(unroll)), strict=True)
    body.append(f"while (j + {unroll - 1}u * stride < nv) {{")
    body.append(_indent("".join(ld) + elem_code(list(uv), js, list(range(nacc)))))
    body.append(f"  j = j + {unroll}u * stride;\n}}")
    # remainder: one load per iteration
    ld1, uv1 = loads("j", 0)
    body.append("while (j < nv) {")
    body.append(_indent(ld1 + elem_code([uv1], ["j"], list(range(nacc)))))
    body.append("  j = j + stride;\n}")
    if vec:  # the last n % per elements, read element-wise
        xc = load("xv", spec.x, "i")
        yc = load("yv", spec.y, "i") if dot else None  # type: ignore[arg-type]
        body.append(f"if (gid == 0u) {{\n  for (var i = nv * {per}u; i < p.n; i = i + 1u) {{")
        body.append(_indent(_accumulate(spec, "a0", _map(spec, xc, yc, "p.base + i")), 2))
        body.append("  }\n}")
    # fold the accumulators pairwise
    step = 1
    while step < nacc:
        for k in range(0, nacc - step, 2 * step):
            body.append(_accumulate(spec, f"a{k}", f"a{k + step}"))
        step *= 2
    body.append("var s = a0;")
    red, writer = _workgroup_reduce(spec)
    body.append(red)
    store = "pv[k] = s.v;\n  pi[k] = s.i;" if spec.arg else "pv[k] = s;"
    body.append(f"if ({writer}) {{\n  let k = p.pbase + wid.x;\n  {store}\n}}")

    code = (
        f"// vgpu_nb full reduction, pass 1: {spec.kind} {spec.x}"
        f"{'·' + spec.y if spec.y else ''} -> acc {spec.acc}\n"
        + _params(fields)
        + "".join(b.decls)
        + _helpers(spec)
        + _shared_decls(spec)
        + _entry(spec, "\n".join(body))
    )
    return Shader(code, tuple(b.kinds), tuple(fields), wg)


@functools.lru_cache(maxsize=512)
def full_pass2(spec: ReduceSpec) -> Shader:
    """One workgroup reduces ``n`` partial states and applies the epilogue."""
    b = _Bindings()
    b.add("pv", "read", f"array<{spec.partial}>")
    if spec.arg:
        b.add("pi", "read", "array<u32>")
    finish = _bind_result(spec, b)
    fields = ([("div", VALUE_TYPE[spec.acc])] if spec.divide else []) + [("n", "u32")]
    b.add("p", "uniform", "P")
    part = "AV(pv[k], pi[k])" if spec.arg else "pv[k]"
    red, writer = _workgroup_reduce(spec)
    body = (
        "var s = ident();\n"
        f"for (var k = lid; k < p.n; k = k + {spec.workgroup}u) {{\n"
        f"  s = comb(s, {part});\n}}\n" + red + f"if ({writer}) {{ finish(0u, s); }}"
    )
    code = (
        f"// vgpu_nb full reduction, pass 2: {spec.kind} -> {spec.out}\n"
        + _params(fields)
        + "".join(b.decls)
        + _helpers(spec)
        + finish
        + _shared_decls(spec)
        + _entry(spec, body, needs_groups=False)
    )
    return Shader(code, tuple(b.kinds), tuple(fields), spec.workgroup)


# ---- axis reductions ------------------------------------------------------------------------
def axis_plan(axis: int, rows: int, cols: int, target_threads: int) -> tuple[str, int]:
    """(mode, slices) for a 2-D C-order ``(rows, cols)`` reduction along ``axis``.

    Modes: ``row_wg`` (a workgroup per row), ``row_thread`` (a thread per row),
    ``col_thread`` (a thread per column, rows looped: coalesced), ``col_wg`` (a workgroup
    per column). When that leaves fewer than ``target_threads`` threads, the reduced axis is
    cut into ``slices`` (each of at least ``AXIS_MIN_SLICE`` elements per thread) whose
    partials a second pass combines (:func:`axis_gather`)."""
    per_row = axis == 1
    n_out, length = (rows, cols) if per_row else (cols, rows)
    if per_row:
        by_group = cols >= ROW_WG_MIN_LEN
    else:
        by_group = cols < COL_WG_MAX_COLS and rows >= COL_WG_MIN_ROWS
    mode = ("row" if per_row else "col") + ("_wg" if by_group else "_thread")
    per_output = WORKGROUP if by_group else 1
    threads = n_out * per_output
    slices = 1
    if threads < target_threads:
        most = length // (AXIS_MIN_SLICE * per_output)
        slices = max(1, min(-(-target_threads // threads), most))
    return mode, slices


def axis_groups(mode: str, outputs: int, slices: int, workgroup: int = WORKGROUP) -> int:
    """Workgroups to dispatch for ``mode`` (``outputs`` × ``slices`` work items)."""
    items = outputs * slices
    return items if mode.endswith("_wg") else -(-items // workgroup)


@functools.lru_cache(maxsize=512)
def axis_shader(spec: ReduceSpec, mode: str, split: bool = False) -> Shader:
    """Reduction of a ``(rows, cols)`` array along one axis, slice by slice.

    Params: ``rows``, ``cols``, ``slice`` (elements of the reduced axis per slice), ``nsl``
    (slices), and ``div`` when not split. Unsplit, it applies the epilogue and writes the
    result; split, it writes partial states ``pv[slice * outputs + output]``."""
    if mode not in AXIS_MODES:
        raise ValueError(f"unknown axis mode {mode!r}")
    b = _Bindings()
    _bind_inputs(spec, b)
    finish = ""
    if split:
        b.add("pv", "rw", f"array<{spec.partial}>")
        if spec.arg:
            b.add("pi", "rw", "array<u32>")
    else:
        finish = _bind_result(spec, b)
    fields = [("div", VALUE_TYPE[spec.acc])] if spec.divide and not split else []
    fields += [("rows", "u32"), ("cols", "u32"), ("slice", "u32"), ("nsl", "u32")]
    b.add("p", "uniform", "P")
    wg = spec.workgroup
    dot = spec.kind == "dot"
    by_group = mode.endswith("_wg")

    per_row = mode.startswith("row")
    n_out, n_along = ("p.rows", "p.cols") if per_row else ("p.cols", "p.rows")
    flat = "o * p.cols + k" if per_row else "k * p.cols + o"
    xc = load("xv", spec.x, flat)
    yc = load("yv", spec.y, flat) if dot else None  # type: ignore[arg-type]
    item = linear_workgroup() if by_group else f"({linear_workgroup()}) * {wg}u + lid"
    lines = [
        f"let w = {item};",
        f"if (w >= {n_out} * p.nsl) {{ return; }}",
        f"let o = w % {n_out};",
        f"let sl = w / {n_out};",
        "let k0 = sl * p.slice;",
        f"let k1 = min({n_along}, k0 + p.slice);",
    ]
    if spec.kind == "sqdev":
        lines.append("let cen0 = cen[o];")
    first, step = ("k0 + lid", f"{wg}u") if by_group else ("k0", "1u")
    lines += [
        "var s = ident();",
        f"for (var k = {first}; k < k1; k = k + {step}) {{",
        "  " + _accumulate(spec, "s", _map(spec, xc, yc, "k")),
        "}",
    ]
    slot = f"sl * {n_out} + o"
    store = f"pv[{slot}] = s.v; pi[{slot}] = s.i;" if spec.arg else f"pv[{slot}] = s;"
    write = store if split else "finish(o, s);"
    body = "\n".join(lines) + "\n"
    if by_group:
        red, writer = _workgroup_reduce(spec)
        body += red + f"if ({writer}) {{ {write} }}"
    else:
        body += write
    code = (
        f"// vgpu_nb axis reduction ({mode}{', split' if split else ''}): "
        f"{spec.kind} {spec.x} -> {spec.out}\n"
        + _params(fields)
        + "".join(b.decls)
        + _helpers(spec)
        + finish
        + (_shared_decls(spec) if by_group else "")
        + _entry(spec if by_group else _no_subgroups(spec), body)
    )
    return Shader(code, tuple(b.kinds), tuple(fields), wg)


@functools.lru_cache(maxsize=512)
def axis_gather(spec: ReduceSpec) -> Shader:
    """Second pass of a split axis reduction: a thread per output combines its ``nsl``
    partials (coalesced: ``pv[slice * nout + output]``) and applies the epilogue."""
    b = _Bindings()
    b.add("pv", "read", f"array<{spec.partial}>")
    if spec.arg:
        b.add("pi", "read", "array<u32>")
    finish = _bind_result(spec, b)
    fields = [("div", VALUE_TYPE[spec.acc])] if spec.divide else []
    fields += [("nout", "u32"), ("nsl", "u32")]
    b.add("p", "uniform", "P")
    part = "AV(pv[k * p.nout + o], pi[k * p.nout + o])" if spec.arg else "pv[k * p.nout + o]"
    body = "\n".join(
        [
            f"let o = ({linear_workgroup()}) * {spec.workgroup}u + lid;",
            "if (o >= p.nout) { return; }",
            "var s = ident();",
            "for (var k = 0u; k < p.nsl; k = k + 1u) {",
            f"  s = comb(s, {part});",
            "}",
            "finish(o, s);",
        ]
    )
    code = (
        f"// vgpu_nb axis reduction, gather pass: {spec.kind} -> {spec.out}\n"
        + _params(fields)
        + "".join(b.decls)
        + _helpers(spec)
        + finish
        + _entry(_no_subgroups(spec), body)
    )
    return Shader(code, tuple(b.kinds), tuple(fields), spec.workgroup)


def _no_subgroups(spec: ReduceSpec) -> ReduceSpec:
    """Thread-per-output shaders need no subgroup builtins."""
    return replace(spec, subgroups=False)
