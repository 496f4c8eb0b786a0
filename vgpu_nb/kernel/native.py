"""Raw native kernels: your own CUDA C or WGSL, launched like ``@vg.kernel`` s.

``vg.native_kernel(source, name, backend="cuda" | "wgsl")`` (or the cell magics
``%%vgpu cuda NAME`` / ``%%vgpu wgsl NAME``) wraps hand-written code as a
:class:`NativeKernel`::

    saxpy = vg.native_kernel(r'''
    extern "C" __global__ void saxpy(float a, const float* x, float* y, int n) {
        int i = blockIdx.x * blockDim.x + threadIdx.x;
        if (i < n) y[i] = a * x[i] + y[i];
    }''', "saxpy")
    saxpy[x.size](2.0, x, y, x.size)              # as k[n](...) for @vg.kernel s
    rec = saxpy.launch(x.size, 2.0, x, y, x.size) # a LaunchRecord (times, GB/s)

Conventions (decided here; a CuPy ``RawKernel`` / raw wgpu user should find them natural):

* **Parameters come from the source.** CUDA: the ``extern "C" __global__ void NAME(...)``
  signature; a pointer (``float*``, ``const float*``, ``float* __restrict__``, ``float x[]``)
  is an array of that dtype, a value (``float``, ``int``, ``unsigned int``, ``double``,
  ``long long`` …) a scalar. ``extern "C"`` is required (NVRTC would otherwise mangle the
  name). WGSL: the module's ``@group(0) @binding(k)`` variables, **in binding order**
  (numbered 0, 1, 2 … without gaps): ``var<storage, read> x: array<T>`` (read-only) and
  ``var<storage, read_write> y: array<T>`` with ``T`` one of ``f32 i32 u32`` (or
  ``atomic<i32>`` / ``atomic<u32>``) are arrays; one ``var<uniform> p: Params`` binding
  stands for the fields of ``struct Params`` (scalars ``f32 i32 u32``, in declaration
  order) — or for itself, if its type is a scalar. So with the uniform at binding 0 the
  scalars come first: ``saxpy[n](a, n, x, y)`` for ``Params {a: f32, n: u32}`` and ``x``,
  ``y`` at bindings 1, 2.
* **Arguments are checked, not coerced** (as for ``@vg.kernel``): an array parameter takes a
  ``vg.Array`` of exactly its dtype (any shape: the kernel sees the flat, C-ordered
  elements), a scalar a Python/NumPy number that fits its type. A wrong count or dtype is
  :class:`~vgpu_nb.errors.KernelTypeError` naming the parameter and its declaration.
* **Bounds are the kernel's job.** The launch rounds the thread count up to whole blocks /
  workgroups, so the kernel must guard its own index. Nothing is passed implicitly: give
  ``n`` as an argument when the kernel needs it (as above). In WGSL, ``arrayLength(&x)`` is
  the array's exact length (each array is bound with its own bytes; an empty array binds 4).
* **Launch geometry.** ``k[n]`` runs ``n`` threads (at least), ``k[(ny, nx)]`` a 2-D grid
  with x the fast (column) dimension. CUDA: ``block`` threads per block (default 256; a
  2-D launch defaults to (16, 16)), ``grid = ceil(n / block)`` per dimension unless
  ``grid=`` is given (then ``n`` only labels the launch record); ``shared_mem`` bytes of
  dynamic shared memory. WGSL: ``ceil(nx / X) x ceil(ny / Y)`` workgroups for
  ``@workgroup_size(X[, Y])`` (literals, ``const`` names, or ``override`` names with a
  default); ``workgroup=`` must agree with a literal size, or sets an ``override`` one.
* **Where it runs.** On the device of its array arguments, which must all be on one device
  of the kernel's backend (``cuda:*`` for CUDA, ``wgpu:*`` for WGSL), else
  :class:`~vgpu_nb.errors.DeviceMismatch` with the ``x.to(...)`` to write; ``device=`` (at
  creation: ``%%vgpu ... --device D``; or per launch) names it, and arrays elsewhere are
  then a mismatch too. Without arrays: the default device if it has the kernel's backend,
  else the backend's first device. Native kernels are never moved by the scheduler
  (``"auto"`` runs them where their arrays are).
* **Compiling.** On first use per device (``k.compile(device)`` does it now): CUDA through
  CuPy's NVRTC for the device's architecture with ``-std=c++17`` and no host headers
  (``#include <cstdint>`` fails: write ``unsigned int``, ``long long``), cached like
  generated code (memory + disk); WGSL through wgpu (Naga). Compiler errors are
  :class:`~vgpu_nb.errors.KernelCompileError` with the compiler's message and the
  source's line.
* **Telemetry.** Each recorded launch is a :class:`~vgpu_nb.telemetry.records.LaunchRecord`
  (device time from CUDA events / WebGPU timestamps). The cost of hand-written code is
  unknown: unless ``flops=`` / ``bytes=`` (per thread) are given, bytes are estimated as
  every array read once and every writable one also written once, flops as 0, and the
  record is flagged ``estimated``.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..array import Array
from ..backends.base import CompiledKernel, Device
from ..devices import default_device, get_device
from ..dtypes import DType, bool_, f32, f64, i32, i64, u32, u64
from ..errors import (
    DeviceMismatch,
    KernelSyntaxError,
    KernelTypeError,
    UnsupportedOnBackend,
)
from ..memory.manager import _now
from ..telemetry import BUS
from ..telemetry.records import LaunchRecord
from .api import _INT_LIMITS, _domain

#: backend name of the source language → backend of the devices that run it
BACKENDS = {"cuda": "cuda", "wgsl": "wgpu"}
DEFAULT_BLOCK = 256
DEFAULT_BLOCK_2D = (16, 16)
MAX_BLOCK_THREADS = 1024  # CUDA: threads per block
_CUDA_GRID_MAX = (2**31 - 1, 65535, 65535)


@dataclass(frozen=True)
class NativeParam:
    """One parameter of a native kernel, as declared in its source."""

    name: str
    dtype: DType
    array: bool
    writes: bool  # arrays: non-const pointer / read_write storage
    decl: str  # the declaration, for messages: "const float* x", "var<storage, read> x"
    pos: int = 0  # offset in the source (for the line shown in errors)
    binding: int | None = None  # WGSL: the binding (the uniform's fields share it)

    def want(self) -> str:
        return f"a vg.Array of {self.dtype.name}" if self.array else f"a {self.dtype.name} scalar"


# ---- sources without comments (offsets kept, for line numbers) ---------------------------
_C_TOKENS = re.compile(
    r'"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'|//[^\n]*|/\*.*?(?:\*/|\Z)', re.DOTALL
)


def _blank(text: str) -> str:
    return re.sub(r"[^\n]", " ", text)


def strip_c_comments(source: str) -> str:
    """``source`` with its comments blanked (string literals kept; same offsets)."""
    return _C_TOKENS.sub(lambda m: m[0] if m[0][0] in "\"'" else _blank(m[0]), source)


def strip_wgsl_comments(source: str) -> str:
    """``source`` with its comments blanked (WGSL block comments nest; same offsets)."""
    out, i, n = list(source), 0, len(source)
    while i < n:
        if source.startswith("//", i):
            j = source.find("\n", i)
            j = n if j < 0 else j
            out[i:j] = " " * (j - i)
            i = j
        elif source.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if source.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif source.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out[i:j] = _blank(source[i:j])
            i = j
        else:
            i += 1
    return "".join(out)


def _site(source: str, pos: int, filename: str, func: str | None) -> dict[str, Any]:
    """KernelError keywords pointing at offset ``pos`` of ``source``."""
    lineno = source.count("\n", 0, pos) + 1
    start = source.rfind("\n", 0, pos) + 1
    end = source.find("\n", pos)
    line = source[start : end if end >= 0 else len(source)]
    return {"filename": filename, "lineno": lineno, "col": pos - start, "source_line": line,
            "func": func}  # fmt: skip


def _close(text: str, start: int, open_: str, close: str) -> int:
    """Offset of the bracket closing the one just before ``start`` (-1 if none)."""
    depth = 1
    for k in range(start, len(text)):
        c = text[k]
        if c == open_:
            depth += 1
        elif c == close:
            depth -= 1
            if not depth:
                return k
    return -1


# ---- CUDA ----------------------------------------------------------------------------------
_C_SCALARS: dict[str, DType] = {
    "float": f32,
    "double": f64,
    "int": i32,
    "signed": i32,
    "signed int": i32,
    "int32_t": i32,
    "unsigned": u32,
    "unsigned int": u32,
    "uint32_t": u32,
    "long": i64,
    "long int": i64,
    "long long": i64,
    "long long int": i64,
    "int64_t": i64,
    "unsigned long": u64,
    "unsigned long int": u64,
    "unsigned long long": u64,
    "unsigned long long int": u64,
    "uint64_t": u64,
    "size_t": u64,
    "bool": bool_,
}
_C_QUALIFIERS = {"const", "volatile", "__restrict__", "__restrict", "restrict"}
_GLOBAL = re.compile(
    r"__global__\s+(?:(?:__launch_bounds__\s*\([^)]*\)|static|inline|__noinline__|"
    r"__forceinline__)\s+)*void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?([A-Za-z_]\w*)\s*\("
)


def parse_cuda(source: str, name: str, filename: str = "<cuda>") -> tuple[NativeParam, ...]:
    """The parameters of ``extern "C" __global__ void name(...)`` in ``source``."""
    text = strip_c_comments(source)
    found = list(_GLOBAL.finditer(text))
    match = next((m for m in found if m[1] == name), None)
    if match is None:
        have = ", ".join(dict.fromkeys(m[1] for m in found)) or "none"
        raise KernelSyntaxError(
            f"the CUDA source has no kernel named {name!r} (__global__ kernels found: {have})",
            filename=filename,
            fix=f'declare it as extern "C" __global__ void {name}(...), or give the '
            "name of one of the kernels found",
        )
    if not _extern_c(text, match.start()):
        raise KernelSyntaxError(
            f'CUDA kernel {name!r} must be declared extern "C" (NVRTC mangles C++ names)',
            **_site(source, match.start(), filename, name),
            fix=f'extern "C" __global__ void {name}(...)',
        )
    end = _close(text, match.end(), "(", ")")
    if end < 0:
        raise KernelSyntaxError(
            f"the parameter list of CUDA kernel {name!r} is not closed",
            **_site(source, match.end() - 1, filename, name),
        )
    params: list[NativeParam] = []
    body = text[match.end() : end]
    if body.strip() in ("", "void"):
        return ()
    start = match.end()
    for piece in body.split(","):
        pos = start + len(piece) - len(piece.lstrip())
        start += len(piece) + 1
        params.append(_c_param(piece.strip(), pos, source, filename, name, len(params)))
    seen: set[str] = set()
    for p in params:
        if p.name in seen:
            raise KernelSyntaxError(
                f"CUDA kernel {name!r} has two parameters named {p.name!r}",
                **_site(source, p.pos, filename, name),
            )
        seen.add(p.name)
    return tuple(params)


def _extern_c(text: str, pos: int) -> bool:
    """Whether the declaration at ``pos`` is ``extern "C"`` (directly or in a block)."""
    if re.search(r'extern\s*"C"\s*$', text[:pos]):
        return True
    for m in re.finditer(r'extern\s*"C"\s*\{', text[:pos]):
        end = _close(text, m.end(), "{", "}")
        if end < 0 or end > pos:
            return True
    return False


def _c_param(
    decl: str, pos: int, source: str, filename: str, kernel: str, index: int
) -> NativeParam:
    words = re.findall(r"[A-Za-z_]\w*|\*|\[\s*\]|&|\S", decl)
    site = _site(source, pos, filename, kernel)
    stars = sum(w == "*" or w.startswith("[") for w in words)
    if "&" in words or any(w not in ("*",) and not re.match(r"[A-Za-z_]|\[", w) for w in words):
        raise KernelTypeError(
            f"parameter {index} ({decl!r}) of CUDA kernel {kernel!r} is not a plain pointer "
            "or number",
            **site,
            fix="use pointers (float* x) for arrays and numbers (float a, int n) for scalars",
        )
    idents = [w for w in words if w not in _C_QUALIFIERS and w != "*" and not w.startswith("[")]
    # the name follows the type; an unnamed parameter ("float*") cannot be passed by name
    if len(idents) < 2 or " ".join(idents) in _C_SCALARS:
        raise KernelSyntaxError(
            f"parameter {index} ({decl!r}) of CUDA kernel {kernel!r} has no name",
            **site,
            fix="name every parameter: float* x",
        )
    pname, ctype = idents[-1], " ".join(idents[:-1])
    dtype = _C_SCALARS.get(ctype)
    if dtype is None or stars > 1:
        kinds = "pointers to " if stars else ""
        raise KernelTypeError(
            f"parameter {pname!r} of CUDA kernel {kernel!r} has type "
            f"{ctype + '*' * stars!r}, which vg arrays and scalars cannot pass",
            **site,
            fix=f"use {kinds}float, double, int, unsigned int, long long, "
            "unsigned long long or bool",
        )
    # writable data: no const before the * ("float* const p" is a const pointer only)
    star = next((k for k, w in enumerate(words) if w == "*" or w.startswith("[")), len(words))
    return NativeParam(
        name=pname,
        dtype=dtype,
        array=stars == 1,
        writes=stars == 1 and "const" not in words[:star],
        decl=" ".join(decl.split()),
        pos=pos,
    )


# ---- WGSL ----------------------------------------------------------------------------------
_WGSL_TYPES: dict[str, DType] = {"f32": f32, "i32": i32, "u32": u32}
_VAR = re.compile(
    r"((?:@[A-Za-z_]\w*\s*(?:\([^)]*\))?\s*)+)var\s*(?:<([^>]*)>)?\s*([A-Za-z_]\w*)\s*"
    r"(?::\s*([^;=]+?))?\s*;"
)
_ATTR = re.compile(r"@([A-Za-z_]\w*)\s*(?:\(([^)]*)\))?")
_INT = re.compile(r"^(0[xX][0-9a-fA-F]+|\d+)[iu]?$")
_ARRAY = re.compile(r"array\s*<\s*(?:atomic\s*<\s*(\w+)\s*>|(\w+))\s*(?:,[^>]*)?>")


@dataclass(frozen=True)
class WgslLayout:
    """What a launch needs to know about a WGSL entry point."""

    params: tuple[NativeParam, ...]
    bindings: tuple[tuple[str, str], ...]  # (name, "read" | "rw" | "uniform") by binding
    uniform: tuple[tuple[str, str], ...]  # the uniform's fields: (name, WGSL type)
    workgroup: tuple[int, int]  # (X, Y) used for the dispatch
    constants: dict[str, float] | None  # override constants set for the pipeline


def parse_wgsl(
    source: str,
    name: str,
    workgroup: int | Sequence[int] | None = None,
    filename: str = "<wgsl>",
) -> WgslLayout:
    """Bindings, uniform fields and workgroup size of entry point ``name`` in ``source``."""
    text = strip_wgsl_comments(source)
    fn = re.search(rf"\bfn\s+{re.escape(name)}\s*\(", text)
    entries = [m[1] for m in re.finditer(r"@compute\b[^;{}]*?\bfn\s+([A-Za-z_]\w*)", text)]
    if fn is None:
        raise KernelSyntaxError(
            f"the WGSL source has no function {name!r} (@compute entry points found: "
            f"{', '.join(entries) or 'none'})",
            filename=filename,
            fix=f"write @compute @workgroup_size(64) fn {name}(...), or give the name of "
            "one of the entry points found",
        )
    head_start = max(text.rfind(c, 0, fn.start()) for c in ";}") + 1
    head = text[head_start : fn.start()]
    attrs = {m[1]: (m[2] or "", head_start + m.start()) for m in _ATTR.finditer(head)}
    if "compute" not in attrs:
        raise KernelSyntaxError(
            f"WGSL function {name!r} is not a compute entry point",
            **_site(source, fn.start(), filename, name),
            fix=f"@compute @workgroup_size(64) fn {name}(@builtin(global_invocation_id) "
            "gid: vec3<u32>)",
        )
    if "workgroup_size" not in attrs:
        raise KernelSyntaxError(
            f"WGSL entry point {name!r} has no @workgroup_size",
            **_site(source, fn.start(), filename, name),
            fix="add @workgroup_size(64) after @compute",
        )
    size, constants = _workgroup(text, source, attrs["workgroup_size"], workgroup, filename, name)
    params, bindings, uniform = _bindings(text, source, filename, name)
    return WgslLayout(tuple(params), tuple(bindings), tuple(uniform), size, constants)


def _workgroup(
    text: str,
    source: str,
    attr: tuple[str, int],
    given: int | Sequence[int] | None,
    filename: str,
    kernel: str,
) -> tuple[tuple[int, int], dict[str, float] | None]:
    args, pos = attr
    site = _site(source, pos, filename, kernel)
    dims = [a.strip() for a in args.split(",") if a.strip()]
    want: list[int | None] = [None, None]
    if given is not None:
        g = (given,) if isinstance(given, int) else tuple(given)
        if not 1 <= len(g) <= 2 or len(g) > len(dims) and any(v != 1 for v in g[len(dims) :]):
            raise KernelTypeError(
                f"workgroup={given!r} does not fit @workgroup_size({args.strip()})", **site
            )
        want[: len(g)] = g
    size: list[int] = []
    constants: dict[str, float] = {}
    for k, d in enumerate(dims[:2]):
        lit = _INT.match(d)
        kind, value = ("literal", int(lit[1], 0)) if lit else _constant(text, d)
        if kind is None:
            raise KernelSyntaxError(
                f"@workgroup_size({args.strip()}) of {kernel!r}: {d!r} is not an integer "
                "literal, a const or an override constant with an integer value",
                **site,
                fix="write the size as a literal (@workgroup_size(64)) or a const",
            )
        if kind == "override":  # settable: workgroup= or its default
            if want[k] is None and value is None:
                raise KernelSyntaxError(
                    f"@workgroup_size({args.strip()}) of {kernel!r}: override {d!r} has no "
                    "default value",
                    **site,
                    fix="give it a default (override WG: u32 = 64;) or pass workgroup=",
                )
            value = want[k] if want[k] is not None else value
            constants[d] = float(value)  # type: ignore[arg-type]
        elif want[k] is not None and value != want[k]:
            raise KernelTypeError(
                f"workgroup={given!r} disagrees with @workgroup_size({args.strip()}) of {kernel!r}",
                **site,
                fix="drop workgroup= (the source's size is used), or make the size an "
                f"override constant (override WG: u32 = {want[k]}; @workgroup_size(WG))",
            )
        size.append(int(value))  # type: ignore[call-overload]
    while len(size) < 2:
        size.append(1)
    if min(size) < 1:
        raise KernelSyntaxError(f"@workgroup_size({args.strip()}) must be positive", **site)
    return (size[0], size[1]), constants or None


def _constant(text: str, ident: str) -> tuple[str | None, int | None]:
    """``("const", value)`` for a module-scope const, ``("override", default or None)`` for
    an override constant, ``(None, None)`` if ``ident`` is neither (or not an integer)."""
    m = re.search(
        rf"\b(const|override)\s+{re.escape(ident)}\s*(?::\s*\w+\s*)?(?:=\s*([^;]+?))?\s*;", text
    )
    if m is None:
        return None, None
    value = _INT.match(m[2].strip()) if m[2] else None
    if value is None and (m[1] == "const" or m[2] is not None):
        return None, None
    return m[1], int(value[1], 0) if value else None


def _bindings(
    text: str, source: str, filename: str, kernel: str
) -> tuple[list[NativeParam], list[tuple[str, str]], list[tuple[str, str]]]:
    found: dict[int, tuple[str, str, NativeParam | None, list[NativeParam]]] = {}
    uniform: list[tuple[str, str]] = []
    uniform_at: str | None = None
    for m in _VAR.finditer(text):
        attrs = {a[1]: (a[2] or "").strip() for a in _ATTR.finditer(m[1])}
        if "binding" not in attrs and "group" not in attrs:
            continue
        vname, space, vtype = m[3], (m[2] or "").replace(" ", ""), (m[4] or "").strip()
        pos = m.start(3)
        site = _site(source, pos, filename, kernel)
        decl = " ".join(text[m.start() : m.end()].split())
        if attrs.get("group") != "0" or not _INT.match(attrs.get("binding", "")):
            raise KernelSyntaxError(
                f"WGSL binding {vname!r} must be in @group(0) with a literal @binding",
                **site,
                fix="native kernels use one bind group: @group(0) @binding(0), (1), …",
            )
        b = int(_INT.match(attrs["binding"])[1], 0)  # type: ignore[index]
        if b in found:
            raise KernelSyntaxError(
                f"WGSL bindings {found[b][0]!r} and {vname!r} share @binding({b})", **site
            )
        if space in ("storage", "storage,read", "storage,read_write"):
            arr = _ARRAY.fullmatch(vtype)
            elem = (arr[1] or arr[2]) if arr else None
            if elem not in _WGSL_TYPES:
                raise KernelTypeError(
                    f"WGSL storage binding {vname!r} has type {vtype!r}; native kernels bind "
                    "vg arrays as array<f32>, array<i32> or array<u32> (or atomic<i32/u32>)",
                    **site,
                    fix=f"declare it as var<storage, read_write> {vname}: array<f32>; and "
                    "index it yourself",
                )
            rw = space == "storage,read_write"
            p = NativeParam(vname, _WGSL_TYPES[elem], True, rw, decl, pos, b)  # type: ignore[index]
            found[b] = (vname, "rw" if rw else "read", p, [])
        elif space == "uniform":
            if uniform_at is not None:
                raise KernelSyntaxError(
                    f"WGSL uniforms {uniform_at!r} and {vname!r}: native kernels take one "
                    "uniform binding (a struct holding every scalar argument)",
                    **site,
                    fix="put the scalars in one struct: struct Params { a: f32, n: u32 }",
                )
            uniform_at = vname
            fields = _uniform_fields(text, source, vname, vtype, pos, filename, kernel)
            uniform = [(f, t) for f, t, _ in fields]
            ps = [
                NativeParam(f, _WGSL_TYPES[t], False, False, f"{vname}.{f}: {t}", fp, b)
                for f, t, fp in fields
            ]
            found[b] = (vname, "uniform", None, ps)
        else:
            raise KernelTypeError(
                f"WGSL binding {vname!r} ({decl}) is not a storage buffer or a uniform; "
                "native kernels bind vg arrays and scalars only",
                **site,
                fix="use var<storage, read> / var<storage, read_write> arrays and one "
                "var<uniform> struct of scalars",
            )
    if sorted(found) != list(range(len(found))):
        raise KernelSyntaxError(
            f"WGSL bindings of {kernel!r} are numbered {sorted(found)}; native kernels need "
            f"0 … {len(found) - 1} without gaps (the binding order is the argument order)",
            filename=filename,
            fix="renumber the @binding(...) attributes 0, 1, 2, …",
        )
    params: list[NativeParam] = []
    bindings: list[tuple[str, str]] = []
    for b in sorted(found):
        vname, kind, p, fields = found[b]
        bindings.append((vname, kind))
        params.extend([p] if p is not None else fields)
    names = [p.name for p in params]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise KernelSyntaxError(
            f"two parameters of WGSL kernel {kernel!r} are named {dup!r} (a binding and a "
            "uniform field?)",
            filename=filename,
            fix="rename one: launch arguments are matched by position but named in errors",
        )
    return params, bindings, uniform


def _uniform_fields(
    text: str, source: str, vname: str, vtype: str, pos: int, filename: str, kernel: str
) -> list[tuple[str, str, int]]:
    """(name, WGSL type, offset) of each scalar the uniform ``vname: vtype`` holds."""
    site = _site(source, pos, filename, kernel)
    if vtype in _WGSL_TYPES:
        return [(vname, vtype, pos)]
    m = re.search(rf"\bstruct\s+{re.escape(vtype)}\s*\{{", text)
    if m is None:
        raise KernelTypeError(
            f"WGSL uniform {vname!r} has type {vtype!r}, which is neither f32/i32/u32 nor a "
            "struct of this source",
            **site,
            fix="struct Params { a: f32, n: u32 }  var<uniform> p: Params;",
        )
    end = _close(text, m.end(), "{", "}")
    body_at = m.end()
    fields = []
    for fm in re.finditer(r"([^,;]+)", text[body_at:end]):
        piece = fm[1].strip()
        if not piece:
            continue
        fpos = body_at + fm.start() + len(fm[1]) - len(fm[1].lstrip())
        f = re.fullmatch(r"([A-Za-z_]\w*)\s*:\s*(\w+)", piece)
        if f is None or f[2] not in _WGSL_TYPES:
            raise KernelTypeError(
                f"field {piece!r} of uniform struct {vtype!r}: native kernels pass scalars "
                "f32, i32 or u32 (no vectors, arrays or @align/@size attributes)",
                **_site(source, fpos, filename, kernel),
                fix="one scalar field per argument: struct Params { a: f32, n: u32 }",
            )
        fields.append((f[1], f[2], fpos))
    return fields


# ---- the kernel ----------------------------------------------------------------------------
def parse_size(value: Any, what: str, limit: int | None = None) -> tuple[int, ...]:
    """``256`` / ``(16, 16)`` / ``"16,16"`` → a tuple of 1-3 positive ints."""
    if isinstance(value, str):
        parts: Any = [v for v in value.replace("x", ",").split(",") if v.strip()]
    else:
        parts = value if isinstance(value, tuple | list) else [value]
    try:
        dims = tuple(int(str(v).strip()) if isinstance(v, str) else _int(v) for v in parts)
    except (TypeError, ValueError):
        dims = ()
    if not 1 <= len(dims) <= 3 or min(dims) < 1:
        raise ValueError(f"{what} must be 1 to 3 positive integers (e.g. 256 or 16,16), got "
                         f"{value!r}")  # fmt: skip
    if limit is not None and math.prod(dims) > limit:
        raise ValueError(f"{what} {value!r} has {math.prod(dims)} threads; CUDA allows at most "
                         f"{limit} per block")  # fmt: skip
    return dims


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int | np.integer):
        raise TypeError(v)
    return int(v)


class NativeKernel:
    """A hand-written CUDA or WGSL kernel, launched as ``k[n](args)`` or
    ``k.launch(n, *args)`` (see the module docstring for the conventions)."""

    def __init__(
        self,
        source: str,
        name: str,
        backend: str = "cuda",
        *,
        block: int | Sequence[int] | str | None = None,
        grid: int | Sequence[int] | str | None = None,
        shared_mem: int = 0,
        workgroup: int | Sequence[int] | None = None,
        device: str | Device | None = None,
        flops: float | None = None,
        bytes: float | None = None,  # noqa: A002  (as @vg.kernel)
        filename: str | None = None,
    ):
        lang = str(backend).lower()
        if lang == "wgpu":
            lang = "wgsl"
        if lang not in BACKENDS:
            raise ValueError(f"native kernels are written in 'cuda' or 'wgsl', got {backend!r}")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_]\w*", name):
            raise ValueError(f"a native kernel's name must be an identifier, got {name!r}")
        if lang == "wgsl" and (block is not None or grid is not None or shared_mem):
            raise ValueError("block=, grid= and shared_mem= are for CUDA kernels; WGSL uses "
                             "@workgroup_size (and workgroup=)")  # fmt: skip
        if lang == "cuda" and workgroup is not None:
            raise ValueError("workgroup= is for WGSL kernels; CUDA kernels take block=")
        self.__name__ = self.name = name
        self.language = lang
        self.backend = BACKENDS[lang]
        self.code = source
        self.filename = filename or f"<native {lang} {name}>"
        self.block = parse_size(block, "block", MAX_BLOCK_THREADS) if block is not None else None
        self.grid = parse_size(grid, "grid") if grid is not None else None
        if isinstance(shared_mem, bool) or not isinstance(shared_mem, int) or shared_mem < 0:
            raise ValueError(f"shared_mem must be a number of bytes >= 0, got {shared_mem!r}")
        self.shared_mem = shared_mem
        self.flops, self.bytes = flops, bytes
        self._layout: WgslLayout | None = None
        if lang == "cuda":
            self.params = parse_cuda(source, name, self.filename)
        else:
            wg = parse_size(workgroup, "workgroup") if workgroup is not None else None
            self._layout = parse_wgsl(source, name, wg, self.filename)
            self.params = self._layout.params
        text = strip_c_comments(source) if lang == "cuda" else strip_wgsl_comments(source)
        pattern = _GLOBAL if lang == "cuda" else re.compile(rf"\bfn\s+{name}\s*\(")
        entry = next((m for m in pattern.finditer(text) if lang != "cuda" or m[1] == name), None)
        self._entry_pos = entry.start() if entry is not None else 0  # (for messages)
        self.device: Device | None = None
        if device is not None:
            self.device = self._check_device(get_device(device))
        self._compiled: dict[Device, CompiledKernel] = {}

    def __repr__(self) -> str:
        where = f" on {self.device.name}" if self.device is not None else ""
        return f"<vg.native_kernel {self.signature} ({self.language}{where})>"

    @property
    def signature(self) -> str:
        """``saxpy(a: f32, x: f32[], y: f32[], n: i32)`` (``[]``: an array)."""
        args = ", ".join(f"{p.name}: {p.dtype.name}{'[]' if p.array else ''}" for p in self.params)
        return f"{self.name}({args})"

    @property
    def workgroup(self) -> tuple[int, int] | None:
        """WGSL: the workgroup size the dispatch is computed with."""
        return self._layout.workgroup if self._layout is not None else None

    def source(self, backend: str | None = None) -> str:
        """The source as written (native kernels have one backend)."""
        name = None if backend is None else str(backend).split(":")[0].lower()
        if name is not None and name not in (self.backend, self.language):
            raise UnsupportedOnBackend(
                f"native kernel {self.name!r} is {self.language} source; it has no "
                f"{backend} version"
            )
        return self.code

    # ---- devices and compiling ----------------------------------------------------------------
    def _check_device(self, dev: Device) -> Device:
        if dev.backend != self.backend:
            raise UnsupportedOnBackend(
                f"native {self.language.upper()} kernel {self.name!r} runs on {self.backend} "
                f"devices, not on {dev.name}",
                fix=f"use device={self.backend!r} (or '{self.backend}:1' …)",
            )
        return dev

    def compile(self, device: str | Device | None = None) -> CompiledKernel:
        """Compile for ``device`` now (default: the kernel's device, else the default
        device if it has the kernel's backend, else that backend's first device)."""
        dev = self._resolve(device, None)
        return self._compile(dev)

    def _compile(self, dev: Device) -> CompiledKernel:
        ck = self._compiled.get(dev)
        if ck is None:
            what = f"native kernel {self.name!r}"
            if self._layout is not None:
                from ..backends.wgsl import Shader

                lay = self._layout
                shader = Shader(self.code, lay.bindings, lay.uniform, lay.workgroup[0])
                ck = dev.compile_native(shader, self.name, what, lay.constants)  # type: ignore[attr-defined]
            else:
                ck = dev.compile_native(self.code, self.name, what)  # type: ignore[attr-defined]
            self._compiled[dev] = ck
        return ck

    def _resolve(self, device: str | Device | None, home: Device | None) -> Device:
        """The device of a launch: ``device=``, else the kernel's, else the arrays'
        (``home``), else the default device if it has this backend, else the backend's
        first device."""
        if device is not None and not (isinstance(device, str) and device == "auto"):
            return self._check_device(get_device(device))
        if self.device is not None:
            return self.device
        if home is not None:
            return home
        dflt = default_device()
        return (
            dflt if dflt.backend == self.backend else self._check_device(get_device(self.backend))
        )

    # ---- launching ----------------------------------------------------------------------------
    def __getitem__(self, domain: Any) -> _NativeLaunch:
        return _NativeLaunch(self, _domain(domain, None, f"native kernel {self.name!r}"))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise KernelTypeError(
            f"a native kernel is launched over a domain: {self.name}[n](...) or "
            f"{self.name}.launch(n, ...)",
            fix=f"give the number of threads in brackets, e.g. {self.name}[x.size](...)",
        )

    def launch(self, domain: Any, *args: Any, device: str | Device | None = None) -> LaunchRecord:
        """Launch and return its :class:`LaunchRecord` (device time resolves when read)."""
        dims = _domain(domain, None, f"native kernel {self.name!r}")
        return self._run(dims, args, device, record=True)  # type: ignore[return-value]

    def _args(self, args: Sequence[Any], device: str | Device | None) -> tuple[list[Any], Device]:
        params = self.params
        if len(args) != len(params):
            names = ", ".join(p.name for p in params)
            raise KernelTypeError(
                f"native kernel {self.name}({names}) takes {len(params)} argument"
                f"{'s' if len(params) != 1 else ''}, got {len(args)}",
                fix=f"launch it as {self.name}[n]({names})",
                **_site(self.code, self._entry_pos, self.filename, self.name),
            )
        home: Device | None = None
        first = ""
        scalars = {}
        for k, (p, a) in enumerate(zip(params, args, strict=True)):
            if not p.array:
                scalars[k] = self._scalar(p, a)
            else:
                if not isinstance(a, Array) or a.dtype is not p.dtype:
                    self._bad_arg(p, a)
                if home is None:
                    home, first = a.device, p.name
                elif a.device is not home:
                    raise DeviceMismatch(
                        f"native kernel {self.name!r}: array {p.name!r} is on {a.device.name} "
                        f"but {first!r} is on {home.name}",
                        fix=f"move it explicitly: {p.name} = {p.name}.to({home.name!r})",
                    )
        explicit = device is not None and not (isinstance(device, str) and device == "auto")
        if home is not None and home.backend != self.backend and not explicit:
            target = self.device.name if self.device is not None else self.backend
            raise DeviceMismatch(
                f"native {self.language.upper()} kernel {self.name!r} runs on {self.backend} "
                f"devices, but its arrays are on {home.name}",
                fix=f"move them first: {first} = {first}.to({target!r})",
            )
        dev = self._resolve(device, home)
        if home is not None and home is not dev:
            raise DeviceMismatch(
                f"native kernel {self.name!r} runs on {dev.name} but its arrays are on {home.name}",
                fix=f"move them first: {first} = {first}.to({dev.name!r})",
            )
        native: list[Any] = []
        t = _now()
        for k, (p, a) in enumerate(zip(params, args, strict=True)):
            if p.array:
                native.append(a._buf)  # (reading _buf brings a spilled array back)
                a._st.last = t  # LRU: a use
            else:
                native.append(scalars[k])
        return native, dev

    def _where(self, p: NativeParam) -> dict[str, Any]:
        return _site(self.code, p.pos, self.filename, self.name)

    def _scalar(self, p: NativeParam, a: Any) -> Any:
        t = p.dtype
        if isinstance(a, Array | np.ndarray):
            self._bad_arg(p, a)
        if t is bool_:
            if not isinstance(a, bool | np.bool_ | int | np.integer):
                self._bad_arg(p, a)
            return np.bool_(a)
        if t.is_float:
            if not isinstance(a, float | int | np.floating | np.integer) or isinstance(a, bool):
                self._bad_arg(p, a)
            return t.np.type(a)
        if not isinstance(a, int | np.integer) or isinstance(a, bool | np.bool_):
            self._bad_arg(p, a)
        lo, hi = _INT_LIMITS[t.name]
        if not lo <= int(a) <= hi:
            self._bad_arg(p, a, f"{a} does not fit in {t.name}")
        return t.np.type(a)

    def _bad_arg(self, p: NativeParam, a: Any, why: str | None = None) -> None:
        if isinstance(a, Array):
            got = f"a {a.dtype.name} vg.Array"
        elif isinstance(a, np.ndarray):
            got = f"a NumPy array ({a.dtype})"
        else:
            got = f"{type(a).__name__} {a!r}"
        if p.array and isinstance(a, np.ndarray):
            fix = f"wrap it: vg.asarray({p.name}, dtype=vg.{p.dtype.name}, device=...)"
        elif p.array and isinstance(a, Array):
            fix = f"convert explicitly: {p.name}.astype(vg.{p.dtype.name})"
        elif not p.array and isinstance(a, Array):
            fix = f"pass a number ({p.name}.item()) or make the parameter a pointer/array"
        else:
            fix = f"pass {p.want()}"
        raise KernelTypeError(
            f"argument {p.name!r} of native kernel {self.name!r} ({p.decl}) must be "
            f"{p.want()}, got {got}" + (f" ({why})" if why else ""),
            fix=fix,
            **self._where(p),
        )

    def _run(
        self,
        dims: tuple[int, ...],
        args: Sequence[Any],
        device: str | Device | None,
        record: bool = False,
    ) -> LaunchRecord | None:
        native, dev = self._args(args, device)
        fresh = dev not in self._compiled
        ck = self._compile(dev)
        go = self._launcher(dev, ck, dims, native)
        if not (record or BUS.active):
            if go is not None:
                go()
            return None
        stop = dev.start_timer()
        t0 = time.perf_counter()
        if go is not None:
            go()
        host = time.perf_counter() - t0
        threads = math.prod(dims)
        arrays = [(p, a) for p, a in zip(self.params, args, strict=True) if p.array]
        if self.bytes is not None:
            nbytes = self.bytes * threads
        else:
            nbytes = sum(a.nbytes * (2 if p.writes else 1) for p, a in arrays)
        flops = (self.flops or 0) * threads
        rec = LaunchRecord(
            op=self.name,
            device=dev.name,
            shape=dims,
            dtype="/".join(sorted({p.dtype.name for p, _ in arrays})),
            bytes=int(nbytes),
            flops=int(flops),
            host_s=host,
            t_start=time.time() - host,
            compile_s=ck.compile_s if fresh else 0.0,
            cache_hit=ck.cache_hit if fresh else True,
            estimated=self.flops is None or self.bytes is None,
        )
        rec._device_timer = stop() if stop is not None else None
        BUS.emit(rec)
        return rec

    def _launcher(
        self, dev: Device, ck: CompiledKernel, dims: tuple[int, ...], native: list[Any]
    ) -> Any:
        """A no-argument function enqueuing the launch, or None for an empty domain (with
        an explicit CUDA grid the domain only labels the launch)."""
        what = f"native kernel {self.name!r}"
        if self._layout is not None:
            if not math.prod(dims):
                return None
            wx, wy = self._layout.workgroup
            ny, nx = (1, dims[0]) if len(dims) == 1 else dims
            groups = (-(-nx // wx), -(-ny // wy), 1)
            arrays = {p.name: b for p, b in zip(self.params, native, strict=True) if p.array}
            values = [v for p, v in zip(self.params, native, strict=True) if not p.array]
            return lambda: dev.launch_native(ck, arrays, values, groups, what)  # type: ignore[attr-defined]
        block = self.block or (DEFAULT_BLOCK_2D if len(dims) == 2 else (DEFAULT_BLOCK,))
        if self.grid is not None:
            grid = self.grid
        else:
            if not math.prod(dims):
                return None
            ny, nx = (1, dims[0]) if len(dims) == 1 else dims
            by = block[1] if len(block) > 1 else 1
            grid = (-(-nx // block[0]),) if len(dims) == 1 else (-(-nx // block[0]), -(-ny // by))
        for g, top, axis in zip(grid, _CUDA_GRID_MAX, "xyz", strict=False):
            if g > top:
                raise UnsupportedOnBackend(
                    f"{what}: a grid of {g} blocks in {axis} is above CUDA's limit of {top}",
                    fix="use larger blocks (block=), a 2-D launch, or a grid-stride loop "
                    "with an explicit grid=",
                )
        shared = self.shared_mem
        return lambda: dev.launch_native(ck, grid, block, native, shared)  # type: ignore[attr-defined]


class _NativeLaunch:
    """``k[n]``: a native kernel bound to a domain, waiting for its arguments."""

    __slots__ = ("kernel", "dims")

    def __init__(self, kernel: NativeKernel, dims: tuple[int, ...]):
        self.kernel, self.dims = kernel, dims

    def __call__(self, *args: Any, device: str | Device | None = None) -> None:
        self.kernel._run(self.dims, args, device)


def native_kernel(source: str, name: str, backend: str = "cuda", **options: Any) -> NativeKernel:
    """A :class:`NativeKernel` for entry point ``name`` of CUDA C (``backend="cuda"``) or
    WGSL (``backend="wgsl"``) ``source``. Options: ``block``, ``grid``, ``shared_mem``
    (CUDA), ``workgroup`` (WGSL), ``device``, ``flops`` / ``bytes`` (per thread, for
    telemetry). See the module docstring for the conventions."""
    return NativeKernel(source, name, backend, **options)


__all__ = ["NativeKernel", "NativeParam", "native_kernel", "parse_cuda", "parse_wgsl"]
