"""Real atomics for kernels compiled by the numba backend.

Kernels run inside ``prange`` and may update one element from many threads, so a plain
``a[i] += v`` would lose updates. These three functions are Numba *intrinsics*: they emit
LLVM atomic instructions directly, work in ``@njit``, in ``prange`` bodies of
``@njit(parallel=True)`` and with ``cache=True`` (the IR holds no object addresses).

``atomic_add(arr, index, value)``, ``atomic_min(...)``, ``atomic_max(...)``:

- ``arr``: a writable 1-D array of int32, uint32 or float32 (pass 2-D arrays as
  ``a.reshape(a.size)`` with a flat index); strided 1-D views work too. Elements must be
  4-byte aligned, as every NumPy allocation is; Numba's typing cannot see a misaligned view
  (``bytes[1:].view(np.int32)``), on which atomicity is not guaranteed.
- ``index``: any integer, used as an unsigned 64-bit element offset: no bounds check and no
  negative wrap-around (an out-of-range index is undefined behaviour, as on a GPU).
- ``value``: any integer, float or bool, converted to the array's dtype as Numba casts.
- Returns the OLD element (array dtype), like CUDA's ``atomicAdd``.

LLVM operations, all ``seq_cst``, including the loops' atomic loads and failure orderings, so
each call is one sequentially consistent step (no extra cost on x86, where every locked
instruction is a full barrier anyway):

- int32: ``atomicrmw add`` / ``min`` / ``max`` (signed); uint32: ``add`` / ``umin`` / ``umax``.
  Addition wraps around at 32 bits.
- float32 add: ``atomicrmw fadd`` (LLVM >= 9; x86 lowers it to a compare-exchange loop itself),
  else a ``cmpxchg`` loop on the i32 bits.
- float32 min/max: a ``cmpxchg`` loop on the i32 bits with Python semantics
  ``new = v if v < old else old`` (``v > old`` for max). Comparisons with NaN are false, so a
  NaN ``value`` never replaces the stored element and a stored NaN is never replaced; between
  ``-0.0`` and ``0.0`` the stored one stays. When the element would not change the loop exits
  without writing (a plain atomic read), which keeps contended min/max reductions cheap.

Importing this module imports Numba but compiles nothing; code is generated only when a
function using these is compiled.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llvmlite import ir
from numba.core import cgutils, types
from numba.core.errors import TypingError
from numba.extending import intrinsic

__all__ = ["atomic_add", "atomic_max", "atomic_min"]

_ORDER = "seq_cst"
_DTYPES = (types.int32, types.uint32, types.float32)
_I32 = ir.IntType(32)
_F32 = ir.FloatType()

# Per (operation, dtype): the ``atomicrmw`` operation for integer arrays.
_INT_RMW = {
    ("add", types.int32): "add",
    ("min", types.int32): "min",
    ("max", types.int32): "max",
    ("add", types.uint32): "add",
    ("min", types.uint32): "umin",
    ("max", types.uint32): "umax",
}

# Tests set this to False to exercise the cmpxchg fallback for float add; None means "ask LLVM".
_FADD_OVERRIDE: bool | None = None


def _fadd_supported() -> bool:
    """Whether ``atomicrmw fadd`` exists (LLVM 9+); read at code generation, not at import."""
    if _FADD_OVERRIDE is not None:
        return _FADD_OVERRIDE
    from llvmlite import binding

    return tuple(binding.llvm_version_info) >= (9, 0)


def _check_types(name: str, arr: Any, index: Any, value: Any) -> None:
    """Raise a TypingError that names what is wrong, so kernels fail at compile time clearly."""
    if not (
        isinstance(arr, types.Array)
        and arr.ndim == 1
        and arr.dtype in _DTYPES
        and arr.mutable
        and arr.aligned
    ):
        raise TypingError(
            f"{name}: arr must be a writable, aligned 1-D int32, uint32 or float32 array "
            f"(flatten 2-D arrays with a.reshape(a.size)); got {arr}"
        )
    if not isinstance(index, types.Integer):
        raise TypingError(f"{name}: index must be an integer; got {index}")
    if not isinstance(value, (types.Integer, types.Float, types.Boolean)):
        raise TypingError(f"{name}: value must be an integer, float or bool; got {value}")


def _element_pointer(context: Any, builder: ir.IRBuilder, sig: Any, args: tuple) -> ir.Value:
    """Address of ``arr[index]``: the index is cast to u64, no bounds check, no wrap-around."""
    arrty, idxty, _ = sig.args
    ary = context.make_array(arrty)(context, builder, args[0])
    idx = context.cast(builder, args[1], idxty, types.uint64)
    return cgutils.get_item_pointer(context, builder, arrty, ary, [idx])


def _cas_loop(
    builder: ir.IRBuilder,
    ptr: ir.Value,
    combine: Callable[[ir.IRBuilder, ir.Value], ir.Value],
    skip_if_unchanged: bool,
) -> ir.Value:
    """Compare-exchange loop on a float32 element viewed as i32; returns the old float.

    ``combine(builder, old_float)`` computes the new float. With ``skip_if_unchanged`` the loop
    exits without writing when the new bits equal the old ones (min/max that keep the old).
    """
    iptr = builder.bitcast(ptr, _I32.as_pointer())
    first = builder.load_atomic(iptr, _ORDER, 4)
    entry = builder.block
    loop = builder.append_basic_block("atomic.cas.loop")
    store = builder.append_basic_block("atomic.cas.store")
    done = builder.append_basic_block("atomic.cas.done")
    builder.branch(loop)

    builder.position_at_end(loop)
    old_bits = builder.phi(_I32)
    old_bits.add_incoming(first, entry)
    new_bits = builder.bitcast(combine(builder, builder.bitcast(old_bits, _F32)), _I32)
    if skip_if_unchanged:
        builder.cbranch(builder.icmp_unsigned("==", new_bits, old_bits), done, store)
    else:
        builder.branch(store)

    builder.position_at_end(store)
    pair = builder.cmpxchg(iptr, old_bits, new_bits, _ORDER, _ORDER)
    seen, ok = builder.extract_value(pair, 0), builder.extract_value(pair, 1)
    old_bits.add_incoming(seen, store)
    builder.cbranch(ok, done, loop)

    builder.position_at_end(done)
    return builder.bitcast(old_bits, _F32)


def _codegen(op: str) -> Callable[..., ir.Value]:
    """The code generator for one operation, shared by the three intrinsics."""

    def codegen(context: Any, builder: ir.IRBuilder, sig: Any, args: tuple) -> ir.Value:
        arrty, _, valty = sig.args
        dtype = arrty.dtype
        ptr = _element_pointer(context, builder, sig, args)
        val = context.cast(builder, args[2], valty, dtype)
        if dtype != types.float32:
            return builder.atomic_rmw(_INT_RMW[op, dtype], ptr, val, _ORDER)
        if op == "add":
            if _fadd_supported():
                return builder.atomic_rmw("fadd", ptr, val, _ORDER)
            return _cas_loop(builder, ptr, lambda b, old: b.fadd(old, val), False)
        # Python semantics: `v if v < old else old`; ordered comparisons are false on NaN.
        cmp = "<" if op == "min" else ">"
        return _cas_loop(
            builder,
            ptr,
            lambda b, old: b.select(b.fcmp_ordered(cmp, val, old), val, old),
            True,
        )

    return codegen


@intrinsic
def atomic_add(typingctx: Any, arr: Any, index: Any, value: Any) -> tuple:
    """``old = arr[index]; arr[index] = old + value`` atomically; returns ``old``."""
    _check_types("atomic_add", arr, index, value)
    return arr.dtype(arr, index, value), _codegen("add")


@intrinsic
def atomic_min(typingctx: Any, arr: Any, index: Any, value: Any) -> tuple:
    """``old = arr[index]; arr[index] = value if value < old else old`` atomically."""
    _check_types("atomic_min", arr, index, value)
    return arr.dtype(arr, index, value), _codegen("min")


@intrinsic
def atomic_max(typingctx: Any, arr: Any, index: Any, value: Any) -> tuple:
    """``old = arr[index]; arr[index] = value if value > old else old`` atomically."""
    _check_types("atomic_max", arr, index, value)
    return arr.dtype(arr, index, value), _codegen("max")
