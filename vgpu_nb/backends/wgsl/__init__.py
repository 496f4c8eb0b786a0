"""WGSL generation for the wgpu backend: our own hand-written compute kernels.

Each generator returns a :class:`Shader`: the WGSL source, the bindings it declares (in
binding order, with how the backend must bind them) and the layout of its uniform
parameter block. The backend caches compiled pipelines by source, so generators must be
deterministic and should vary the source only where the code really differs (sizes that
change per call travel in the uniform block, not in the source).

Storage conventions shared with the backend (``wgpu_backend.py``):

* every buffer is padded to a multiple of 16 bytes, so an array is always readable through
  a 16-byte vector view (``array<vec4<f32>>``, ``array<vec2<i64>>``, …);
* ``bool`` is one byte per element, four per ``u32`` word (NumPy's layout, so round trips
  are byte-exact); shaders unpack bytes and treat any nonzero byte as ``true``;
* 64-bit types are native WGSL ``i64``/``u64``/``f64`` (needs ``shader-int64`` /
  ``shader-f64``); ``argmin``/``argmax`` indices (int64) are written as two ``u32`` words
  (low, high), so they need no 64-bit support.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

#: WGSL value type used in shaders for each vgpu dtype (bool is a u32 holding 0 or 1).
VALUE_TYPE = {
    "f32": "f32",
    "f64": "f64",
    "i32": "i32",
    "u32": "u32",
    "i64": "i64",
    "u64": "u64",
    "bool": "u32",
}
ITEMSIZE = {"f32": 4, "f64": 8, "i32": 4, "u32": 4, "i64": 8, "u64": 8, "bool": 1}
FLOATS = ("f32", "f64")


@dataclass(frozen=True)
class Shader:
    """Generated WGSL plus what the backend needs to bind and parametrise it.

    ``bindings``: ``(name, kind)`` for bindings 0, 1, …; kind is ``"read"`` (read-only
    storage), ``"rw"`` (read-write storage) or ``"uniform"`` (the parameter block).
    ``params``: ``(name, wgsl type)`` of the uniform struct ``P`` in declaration order.
    ``workgroup``: threads per workgroup (for dispatch arithmetic on the host).
    """

    code: str
    bindings: tuple[tuple[str, str], ...]
    params: tuple[tuple[str, str], ...]
    workgroup: int

    def pack_params(self, **values: float | int) -> bytes:
        """The uniform block as bytes, laid out by WGSL's rules (fields are 4- or 8-byte
        scalars, so each sits at the next multiple of its size)."""
        return self.pack([values[name] for name, _ in self.params])

    def pack(self, values: Sequence[float | int]) -> bytes:
        """The uniform block from values in field order (see :meth:`pack_params`)."""
        out = bytearray()
        for (_, typ), value in zip(self.params, values, strict=True):
            fmt = _FORMATS[typ]
            size = struct.calcsize(fmt)
            out += b"\0" * (-len(out) % size)
            out += struct.pack(fmt, value)
        out += b"\0" * (-len(out) % 16)
        return bytes(out)


_FORMATS = {"u32": "<I", "i32": "<i", "f32": "<f", "f64": "<d", "u64": "<Q", "i64": "<q"}


def vec_type(dt: str) -> tuple[str, int]:
    """The 16-byte storage vector for ``dt`` and how many elements it holds."""
    if dt == "bool":
        return "vec4<u32>", 16
    if ITEMSIZE[dt] == 8:
        return f"vec2<{VALUE_TYPE[dt]}>", 2
    return f"vec4<{VALUE_TYPE[dt]}>", 4


def component(vec: str, dt: str, e: int | str) -> str:
    """WGSL expression for element ``e`` (literal int or a u32 expression) of a 16-byte
    vector value ``vec`` of dtype ``dt``, as the shader value type."""
    if dt != "bool":
        return f"{vec}[{e}]" if isinstance(e, str) else f"{vec}[{e}u]"
    if isinstance(e, int):
        word, shift = f"{vec}[{e // 4}u]", 8 * (e % 4)
        byte = f"(({word} >> {shift}u) & 0xffu)" if shift else f"({word} & 0xffu)"
    else:
        byte = f"(({vec}[({e} >> 2u) & 3u] >> (({e} & 3u) << 3u)) & 0xffu)"
    return f"select(0u, 1u, {byte} != 0u)"


def load(view: str, dt: str, i: str) -> str:
    """Element ``i`` (u32 expression) of an array seen through its 16-byte vector view."""
    _, per = vec_type(dt)
    shift = {16: 4, 4: 2, 2: 1}[per]
    return component(f"{view}[({i}) >> {shift}u]", dt, f"(({i}) & {per - 1}u)")


def convert(expr: str, src: str, dst: str) -> str:
    """Value conversion between shader value types (bool is already 0/1)."""
    if VALUE_TYPE[src] == VALUE_TYPE[dst]:
        return expr
    return f"{VALUE_TYPE[dst]}({expr})"


def literal(value: int | float, dt: str) -> str:
    """A WGSL literal of ``dt`` (finite values; infinities via :func:`extreme`)."""
    t = VALUE_TYPE[dt]
    if t == "f32":
        return f"{float(value)!r}f"
    if t == "f64":
        return f"{float(value)!r}lf"
    suffix = {"i32": "i", "u32": "u", "i64": "li", "u64": "lu"}[t]
    return f"{int(value)}{suffix}"


def extreme(dt: str, largest: bool) -> str:
    """+inf / -inf for floats, the largest / smallest value for integers (as bit patterns
    where WGSL has no literal for them)."""
    t = VALUE_TYPE[dt]
    if t == "f32":
        return f"bitcast<f32>({'0x7f800000u' if largest else '0xff800000u'})"
    if t == "f64":
        bits = "0x7ff0000000000000lu" if largest else "0xfff0000000000000lu"
        return f"bitcast<f64>({bits})"
    if dt == "bool":
        return "1u" if largest else "0u"
    return {
        ("i32", True): "2147483647i",
        ("i32", False): "bitcast<i32>(0x80000000u)",
        ("u32", True): "0xffffffffu",
        ("u32", False): "0u",
        ("i64", True): "9223372036854775807li",
        ("i64", False): "bitcast<i64>(0x8000000000000000lu)",
        ("u64", True): "0xfffffffffffffffflu",
        ("u64", False): "0lu",
    }[(t, largest)]


def isnan_fn(dt: str) -> str:
    """``is_nan`` by bit pattern: drivers may fold ``v != v`` away (fast-math)."""
    if dt == "f32":
        return (
            "fn is_nan(v: f32) -> bool {\n"
            "  return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;\n}\n"
        )
    return (
        "fn is_nan(v: f64) -> bool {\n"
        "  return (bitcast<u64>(v) & 0x7ffffffffffffffflu) > 0x7ff0000000000000lu;\n}\n"
    )


def linear_workgroup() -> str:
    """Linear workgroup id of a (possibly 2-D, for > 65535 groups) dispatch."""
    return "wid.x + wid.y * nwg.x"


def dispatch_2d(groups: int, max_per_dim: int) -> tuple[int, int]:
    """Split ``groups`` workgroups over x and y (WebGPU caps each dimension)."""
    if groups <= max_per_dim:
        return max(groups, 1), 1
    y = -(-groups // max_per_dim)
    x = -(-groups // y)
    return x, y
