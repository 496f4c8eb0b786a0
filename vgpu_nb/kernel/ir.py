"""The typed IR of the kernel language: what the frontend produces and every emitter reads.

Design (written down once, here):

* **Structured and fully typed.** Every :class:`Expr` has a ``type`` (a scalar
  :class:`~vgpu_nb.dtypes.DType`). The frontend inserts every conversion as an explicit
  :class:`Cast`, so emitters never promote: the operands of :class:`Binary` and
  :class:`Compare` already have the same type (``Binary.type`` for arithmetic, the
  operand type ``Compare.operand_type`` for comparisons), array stores receive values of
  the array's dtype, and indices are ``i32`` (or ``i64``) expressions.
* **Locals live for the whole function** (Python scoping): :attr:`Function.locals` maps
  every local to its type, fixed at its first assignment. Emitters declare them all at the
  top (zero-initialised), so ``if``/loop bodies only assign.
* **Python semantics where Python and C differ**, carried by the op names and implemented
  by each emitter: ``floordiv``/``mod`` floor (the remainder has the divisor's sign), and an
  integer ``floordiv``/``mod`` by zero gives 0 (NumPy's answer, where C is undefined);
  integer arithmetic wraps at the type's width; ``min``/``max`` are ``b < a ? b : a`` /
  ``b > a ? b : a`` (Python's builtins, NaN included); float→int casts truncate toward zero
  (out-of-range values and NaN give an unspecified value).
* **Loops**: :class:`ForRange` has ``start``/``stop``/``step`` evaluated once, a hidden
  counter, and assigns the user's variable at the top of each iteration (so a body that
  writes the variable does not change the iteration, as in Python). ``step`` may be
  negative; a zero step is undefined (the frontend rejects a literal 0).
* **Device functions** (``@vg.func``) are :class:`Function` s called by :class:`Call`;
  they are specialised per argument types and emitted as separate functions marked for
  inlining (``__forceinline__`` in CUDA, plain ``fn`` in WGSL which Naga/drivers inline,
  ``inline='always'`` in Numba). Array arguments are always kernel parameters passed down
  (arrays cannot be created inside kernels), so WGSL can specialise a function per binding.
* **Threads**: :class:`ThreadId` is the global thread index along one launch dimension
  (axis 0 is the outer/row dimension of a 2-D launch ``k[(ny, nx)]``, ``i, j = vg.tid()``).
  The launch guards the domain: threads outside it never run the body.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..dtypes import ArrayType, DType, bool_, f32, f64, i32, i64, u32, u64

# ---- types ------------------------------------------------------------------------------
#: Scalar types a kernel can use (u64 exists for arrays of sums; it computes like i64).
SCALARS: tuple[DType, ...] = (f32, f64, i32, u32, i64, u64, bool_)
INTS: tuple[DType, ...] = (i32, u32, i64, u64)
_INT_RANK = {i32: 0, u32: 1, i64: 2, u64: 3}

Type = DType | ArrayType


def is_float(t: DType) -> bool:
    return t is f32 or t is f64


def is_int(t: DType) -> bool:
    return t in _INT_RANK


def promote(a: DType, b: DType) -> DType:
    """The common type of two *strong* operand types (C-like, GPU-friendly):

    * a float operand makes the result a float: f64 if either is f64, else **f32** (an
      ``i64 * f32`` is f32, as in C, not f64 as in NumPy);
    * two integers: the wider one; at equal width the unsigned one (``i32 + u32`` → u32);
    * ``bool`` computes as i32 (``True + True == 2``).
    """
    if a is b:
        return i32 if a is bool_ else a
    if is_float(a) or is_float(b):
        return f64 if f64 in (a, b) else f32
    a = i32 if a is bool_ else a
    b = i32 if b is bool_ else b
    return a if _INT_RANK[a] >= _INT_RANK[b] else b


def literal_type(value: Any) -> DType:
    """Python literals: ``bool`` → bool, ``int`` → i32, ``float`` → f32 (GPU-friendly;
    written down in DESIGN.md). Ints outside i32 become i64."""
    if isinstance(value, bool):
        return bool_
    if isinstance(value, int):
        return i32 if -(2**31) <= value < 2**31 else i64
    return f32


def true_div_type(t: DType) -> DType:
    """Type of ``/`` on operands of type ``t``: floats keep theirs, 32-bit ints give f32,
    64-bit ints f64."""
    if is_float(t):
        return t
    return f64 if t in (i64, u64) else f32


# ---- expressions --------------------------------------------------------------------------
@dataclass(eq=False)
class Expr:
    """Base of expressions. ``type`` is always a scalar DType."""

    type: DType


@dataclass(eq=False)
class Const(Expr):
    """A literal or a captured global constant. ``weak``: an untyped Python literal, which
    adopts the type of the other operand (``x * 2`` keeps x's type) — resolved by the
    frontend; emitters see only its final ``type``."""

    value: int | float | bool
    weak: bool = False


@dataclass(eq=False)
class Var(Expr):
    """A local variable or a scalar parameter."""

    name: str


@dataclass(eq=False)
class ThreadId(Expr):
    """Global thread index along launch axis ``axis`` (type i32)."""

    axis: int


@dataclass(eq=False)
class Load(Expr):
    """``array[index...]`` (1 index per dimension, each i32 or i64)."""

    array: str
    index: tuple[Expr, ...]


@dataclass(eq=False)
class Shape(Expr):
    """``array.shape[dim]`` (type i32)."""

    array: str
    dim: int


#: unary ops: neg (numbers), not (bool), invert (ints: ~x)
UNARY_OPS = ("neg", "not", "invert")
#: arithmetic/bitwise binary ops. ``div`` is true division on floats only (the frontend
#: casts ints first). floordiv/mod: Python floor semantics, integer x // 0 == x % 0 == 0.
BINARY_OPS = ("add", "sub", "mul", "div", "floordiv", "mod", "pow", "and", "or", "xor")
BINARY_OPS += ("lshift", "rshift")
COMPARE_OPS = ("lt", "le", "gt", "ge", "eq", "ne")


@dataclass(eq=False)
class Unary(Expr):
    op: str
    operand: Expr


@dataclass(eq=False)
class Binary(Expr):
    """``lhs op rhs``; both operands have ``type``, except shifts (rhs any int). ``pow``
    only on floats (integer powers by a constant are expanded by the frontend). Bitwise
    and/or/xor on ints or bools (on bools: non-short-circuit logical ops)."""

    op: str
    lhs: Expr
    rhs: Expr


@dataclass(eq=False)
class Compare(Expr):
    """``lhs op rhs`` → bool; both operands have the same type."""

    op: str
    lhs: Expr
    rhs: Expr


@dataclass(eq=False)
class Logical(Expr):
    """Short-circuit ``and`` / ``or`` of two bools → bool."""

    op: str  # "and" | "or"
    lhs: Expr
    rhs: Expr


@dataclass(eq=False)
class Select(Expr):
    """``a if cond else b`` (cond bool, a and b of ``type``). Emitters may evaluate both
    branches (WGSL ``select``); the frontend only allows side-effect-free branches."""

    cond: Expr
    a: Expr
    b: Expr


@dataclass(eq=False)
class Cast(Expr):
    """Conversion to ``type`` (float→int truncates toward zero; x→bool is x != 0)."""

    operand: Expr


#: math functions: name → arity. Float-only unless noted: abs/min/max also on ints.
MATH_FUNCS: dict[str, int] = {
    "sqrt": 1, "exp": 1, "log": 1, "sin": 1, "cos": 1, "tan": 1, "tanh": 1,
    "floor": 1, "ceil": 1, "erf": 1, "abs": 1, "asin": 1, "acos": 1, "atan": 1,
    "sinh": 1, "cosh": 1, "exp2": 1, "log2": 1, "log10": 1, "trunc": 1, "round": 1,
    "isnan": 1, "isinf": 1, "isfinite": 1,
    "pow": 2, "atan2": 2, "min": 2, "max": 2, "fmod": 2,
    "fma": 3,
}  # fmt: skip
#: the math functions that give bool whatever their (float) argument
MATH_PREDICATES = ("isnan", "isinf", "isfinite")


@dataclass(eq=False)
class Math(Expr):
    """A math builtin; all args have ``type`` (predicates: all args float, type bool).
    ``round`` rounds half to even (Python's ``round``); ``trunc`` toward zero; ``fmod``
    is C's (sign of the dividend)."""

    fn: str
    args: tuple[Expr, ...]


@dataclass(eq=False)
class ArrayArg:
    """An array passed to a device function: the name of an array of the caller."""

    name: str
    type: ArrayType


@dataclass(eq=False)
class Call(Expr):
    """Call of a device function (specialised); ``type`` is its return type (None-like
    calls that return nothing have ``type`` = bool_ and appear only in :class:`ExprStmt`)."""

    func: Function
    args: tuple[Expr | ArrayArg, ...]


ATOMIC_OPS = ("add", "min", "max")


@dataclass(eq=False)
class Atomic(Expr):
    """``vg.atomic_<op>(array, index, value)`` → the old value (type = array dtype, one
    of i32 u32 f32). Float min/max follow IEEE ``fmin``/``fmax`` when no NaN is involved."""

    op: str
    array: str
    index: tuple[Expr, ...]
    value: Expr


# ---- statements ---------------------------------------------------------------------------
@dataclass(eq=False)
class Stmt:
    line: int  # line in the user's file (for errors from backends)


@dataclass(eq=False)
class Assign(Stmt):
    name: str
    value: Expr


@dataclass(eq=False)
class Store(Stmt):
    array: str
    index: tuple[Expr, ...]
    value: Expr  # of the array's dtype


@dataclass(eq=False)
class If(Stmt):
    cond: Expr
    body: list[Stmt]
    orelse: list[Stmt]


@dataclass(eq=False)
class ForRange(Stmt):
    """``for var in range(start, stop, step)``; start/stop/step/var share one int type."""

    var: str
    start: Expr
    stop: Expr
    step: Expr
    body: list[Stmt]
    counter: str  # hidden counter local (same type), unique in the function
    limit: str  # hidden local holding stop (evaluated once)
    stride: str  # hidden local holding step (evaluated once)


@dataclass(eq=False)
class While(Stmt):
    cond: Expr
    body: list[Stmt]


@dataclass(eq=False)
class Break(Stmt):
    pass


@dataclass(eq=False)
class Continue(Stmt):
    pass


@dataclass(eq=False)
class Return(Stmt):
    value: Expr | None = None


@dataclass(eq=False)
class ExprStmt(Stmt):
    """An expression evaluated for its effect (atomics, device-function calls)."""

    value: Expr


@dataclass(eq=False)
class Print(Stmt):
    """``print(...)``: strings and expressions. Only the NumPy backend runs it."""

    items: tuple[str | Expr, ...]


# ---- functions ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Param:
    name: str
    type: Type  # DType (scalar, by value) or ArrayType (C-contiguous array)

    @property
    def is_array(self) -> bool:
        return isinstance(self.type, ArrayType)


@dataclass(eq=False)
class Function:
    """A kernel body or a specialised device function.

    ``name``: a valid identifier, unique within one generated program (device functions
    are mangled with their argument types). ``ret``: None for kernels and functions that
    return nothing. ``funcs``: for a kernel, every device function it reaches, callees
    before callers (so C and WGSL can emit them in order)."""

    name: str
    params: tuple[Param, ...]
    locals: dict[str, DType]
    body: list[Stmt]
    ret: DType | None = None
    ndim: int | None = None  # launch dimensions used by vg.tid() (None: not used)
    funcs: list[Function] = field(default_factory=list)
    filename: str = "<kernel>"
    firstline: int = 1
    py_name: str = ""  # the user's name of the function

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def arrays(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.is_array)

    @property
    def scalars(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if not p.is_array)


# ---- traversal and analysis ----------------------------------------------------------------
def children(e: Expr | ArrayArg) -> tuple[Expr | ArrayArg, ...]:
    if isinstance(e, Load):
        return e.index
    if isinstance(e, Unary):
        return (e.operand,)
    if isinstance(e, Binary | Compare | Logical):
        return (e.lhs, e.rhs)
    if isinstance(e, Select):
        return (e.cond, e.a, e.b)
    if isinstance(e, Cast):
        return (e.operand,)
    if isinstance(e, Math):
        return e.args
    if isinstance(e, Call):
        return e.args
    if isinstance(e, Atomic):
        return (*e.index, e.value)
    return ()


def walk_expr(e: Expr | ArrayArg) -> Iterator[Expr | ArrayArg]:
    yield e
    for c in children(e):
        yield from walk_expr(c)


def stmt_exprs(s: Stmt) -> tuple[Expr, ...]:
    if isinstance(s, Assign | ExprStmt):
        return (s.value,)
    if isinstance(s, Store):
        return (*s.index, s.value)
    if isinstance(s, If | While):
        return (s.cond,)
    if isinstance(s, ForRange):
        return (s.start, s.stop, s.step)
    if isinstance(s, Return):
        return (s.value,) if s.value is not None else ()
    if isinstance(s, Print):
        return tuple(i for i in s.items if isinstance(i, Expr))
    return ()


def walk_stmts(body: list[Stmt]) -> Iterator[Stmt]:
    for s in body:
        yield s
        if isinstance(s, If):
            yield from walk_stmts(s.body)
            yield from walk_stmts(s.orelse)
        elif isinstance(s, ForRange | While):
            yield from walk_stmts(s.body)


def all_exprs(fn: Function) -> Iterator[Expr | ArrayArg]:
    for s in walk_stmts(fn.body):
        for e in stmt_exprs(s):
            yield from walk_expr(e)


@dataclass
class Usage:
    """How a kernel uses its array parameters, through its device functions too.
    Keyed by the *kernel's* parameter names."""

    read: set[str] = field(default_factory=set)
    written: set[str] = field(default_factory=set)
    atomic: set[str] = field(default_factory=set)
    prints: bool = False
    math: set[str] = field(default_factory=set)  # math functions used
    types: set[DType] = field(default_factory=set)  # every scalar type that appears


def usage(fn: Function) -> Usage:
    """Arrays read / written / used atomically (through calls too), math functions and
    types used, and whether it prints. WGSL needs this to declare bindings."""
    u = Usage()
    _usage(fn, {p.name: p.name for p in fn.arrays}, u, set())
    for p in fn.params:
        u.types.add(p.type.dtype if isinstance(p.type, ArrayType) else p.type)
    return u


def _usage(fn: Function, names: dict[str, str], u: Usage, stack: set[int]) -> None:
    if id(fn) in stack:  # recursion is rejected by the frontend; be safe anyway
        return
    stack = stack | {id(fn)}
    u.types.update(fn.locals.values())
    for s in walk_stmts(fn.body):
        if isinstance(s, Store):
            u.written.add(names[s.array])
        elif isinstance(s, Print):
            u.prints = True
        for e in stmt_exprs(s):
            for x in walk_expr(e):
                if isinstance(x, Expr):
                    u.types.add(x.type)
                if isinstance(x, Load):
                    u.read.add(names[x.array])
                elif isinstance(x, Atomic):
                    u.atomic.add(names[x.array])
                    u.read.add(names[x.array])
                    u.written.add(names[x.array])
                elif isinstance(x, Math):
                    u.math.add(x.fn)
                elif isinstance(x, Call):
                    sub = {
                        p.name: names[a.name]
                        for p, a in zip(x.func.params, x.args, strict=True)
                        if isinstance(a, ArrayArg)
                    }
                    _usage(x.func, sub, u, stack)


# ---- static cost --------------------------------------------------------------------------
@dataclass
class Cost:
    """Per-thread cost: float operations and bytes of array traffic. ``estimated`` when a
    loop's trip count could not be computed (data-dependent bounds, ``while``): such a loop
    counts as one iteration."""

    flops: float = 0.0
    bytes: float = 0.0
    estimated: bool = False

    def __add__(self, o: Cost) -> Cost:
        return Cost(self.flops + o.flops, self.bytes + o.bytes, self.estimated or o.estimated)

    def scaled(self, k: float) -> Cost:
        return Cost(self.flops * k, self.bytes * k, self.estimated)


_FLOP_MATH = {"fma": 2}


def cost(fn: Function, env: dict[str, Any] | None = None) -> Cost:
    """Static cost of one thread of ``fn``. ``env`` gives values for scalar parameters and
    ``("shape", array, dim)`` keys for shapes, so loops over ``range(a.shape[0])`` or
    ``range(n)`` count exactly; branches count their more expensive side."""
    return _cost_body(fn, fn.body, env or {})


def _cost_body(fn: Function, body: list[Stmt], env: dict[str, Any]) -> Cost:
    total = Cost()
    for s in body:
        total = total + _cost_stmt(fn, s, env)
    return total


def _cost_stmt(fn: Function, s: Stmt, env: dict[str, Any]) -> Cost:
    if isinstance(s, If):
        a, b = _cost_body(fn, s.body, env), _cost_body(fn, s.orelse, env)
        pick = a if (a.flops + a.bytes) >= (b.flops + b.bytes) else b
        return _cost_expr(fn, s.cond, env) + pick + Cost(estimated=a.estimated or b.estimated)
    if isinstance(s, ForRange):
        head = Cost()
        for e in (s.start, s.stop, s.step):
            head = head + _cost_expr(fn, e, env)
        body = _cost_body(fn, s.body, env)
        trips = _trip_count(s, env)
        if trips is None:
            return head + body + Cost(estimated=True)
        return head + body.scaled(trips)
    if isinstance(s, While):
        return _cost_expr(fn, s.cond, env) + _cost_body(fn, s.body, env) + Cost(estimated=True)
    total = Cost()
    if isinstance(s, Store):
        total.bytes += s.value.type.itemsize if s.value.type is not bool_ else 1
    for e in stmt_exprs(s):
        total = total + _cost_expr(fn, e, env)
    return total


def _cost_expr(fn: Function, e: Expr | ArrayArg, env: dict[str, Any]) -> Cost:
    c = Cost()
    for x in walk_expr(e):
        if isinstance(x, Load):
            c.bytes += x.type.itemsize
        elif isinstance(x, Atomic):
            c.bytes += 2 * x.type.itemsize
            c.flops += 1 if is_float(x.type) else 0
        elif isinstance(x, Binary | Unary) and is_float(x.type):
            c.flops += 1
        elif isinstance(x, Math) and any(is_float(a.type) for a in x.args):
            c.flops += _FLOP_MATH.get(x.fn, 1)
        elif isinstance(x, Compare) and is_float(x.lhs.type):
            c.flops += 1
        elif isinstance(x, Call):
            c = c + cost(x.func, {})  # array shapes inside are the caller's: not mapped
    return c


def _trip_count(s: ForRange, env: dict[str, Any]) -> int | None:
    vals = [const_value(e, env) for e in (s.start, s.stop, s.step)]
    if any(v is None for v in vals):
        return None
    start, stop, step = vals
    if step == 0:
        return None
    return len(range(int(start), int(stop), int(step)))  # type: ignore[arg-type]


def const_value(e: Expr, env: dict[str, Any]) -> int | float | None:
    """Value of an expression made of constants, scalar parameters and shapes (with
    values in ``env``) and + - * //, or None."""
    if isinstance(e, Const):
        return e.value  # type: ignore[return-value]
    if isinstance(e, Var):
        return env.get(e.name)
    if isinstance(e, Shape):
        return env.get(("shape", e.array, e.dim))  # type: ignore[call-overload]
    if isinstance(e, Cast):
        return const_value(e.operand, env)
    if isinstance(e, Binary) and e.op in ("add", "sub", "mul", "floordiv"):
        a, b = const_value(e.lhs, env), const_value(e.rhs, env)
        if a is None or b is None:
            return None
        if e.op == "add":
            return a + b
        if e.op == "sub":
            return a - b
        if e.op == "mul":
            return a * b
        return a // b if b else 0
    return None


# ---- reductions ----------------------------------------------------------------------------
#: built-in combines. min/max propagate NaN (as np.min); and/or are logical on bools and
#: bitwise on integers.
COMBINES = ("add", "mul", "min", "max", "and", "or")


@dataclass(eq=False)
class Reduction:
    """A ``@vg.reduction`` specialised for input dtypes.

    Semantics of ``r(x1, …, xk)`` over equally shaped arrays: ``acc = identity``; for every
    element position p (in an order of the backend's choosing, *fixed* for a given shape,
    so results are bit-identical run to run): ``acc = combine(acc, map(x1[p], …, xk[p]))``;
    then ``post(acc)`` or ``post(acc, n)`` (n: elements reduced, i64) if given. ``axis``
    0/1 on 2-D inputs reduces columns/rows. Zero elements give ``post(identity)``.

    ``map``/``combine``/``post`` are device functions (``combine`` may instead name a
    built-in in :data:`COMBINES`). ``funcs``: every device function to emit, callees first,
    including ``map``, ``combine`` (if a Function) and ``post``.
    """

    name: str
    map: Function
    combine: str | Function
    identity: Const  # of type acc
    post: Function | None
    post_takes_n: bool
    inputs: tuple[DType, ...]
    acc: DType
    out: DType
    funcs: list[Function]


# ---- identifiers ------------------------------------------------------------------------------
#: Names no emitter may see as a user identifier: the Python emitter's globals, C/CUDA
#: keywords and builtins, WGSL keywords and reserved words. :func:`sanitize` renames user
#: locals/parameters that collide (``float`` → ``float_``), once, for every target.
RESERVED: frozenset[str] = frozenset(
    # Python emitter
    "np math njit prange atomic atomic_add atomic_min atomic_max check STATE emit_print "
    # C / C++ / CUDA
    "auto bool break case char const continue default do double else enum extern float for "
    "goto if inline int long register restrict return short signed sizeof static struct "
    "switch typedef union unsigned void volatile while asm class delete friend mutable "
    "namespace new operator private protected public template this throw try typename "
    "using virtual true false nullptr threadIdx blockIdx blockDim gridDim warpSize "
    "min max abs sqrt exp log sin cos tan floor ceil pow fma erf "
    # WGSL keywords and reserved words
    "alias array atomic bitcast const_assert diagnostic discard enable fn let loop mat2x2 "
    "override ptr requires select storage struct texture uniform var vec2 vec3 vec4 "
    "workgroup f16 f32 f64 i32 i64 u32 u64 active as async attribute await become "
    "binding_array cast catch common compile concept constexpr crate debugger decltype "
    "demote do dynamic_cast export extends external fallthrough filter final finally "
    "from fxgroup get handle highp impl implements import in instanceof interface layout "
    "lowp macro match mediump meta mod module move mut noexcept noinline nointerpolation "
    "non_coherent noperspective null of package packoffset partition pass patch pixelfragment "
    "precise precision premerge priv read readonly ref require resource self set shared "
    "sizeof smooth snorm subroutine super target thread_local type unless unorm unsafe unsized "
    "use varying where with writeonly yield sampler uniform".split()
)


def sanitize(fn: Function) -> None:
    """Rename (in place) the locals and parameters of ``fn`` and its device functions that
    collide with :data:`RESERVED` or start with ``__``."""
    seen: set[int] = set()
    for f in [*fn.funcs, fn]:
        if id(f) in seen:
            continue
        seen.add(id(f))
        names = [p.name for p in f.params] + list(f.locals)
        bad = {n: _fresh(n, set(names)) for n in names if n in RESERVED or n.startswith("__")}
        if bad:
            _rename(f, bad)


def _fresh(name: str, taken: set[str]) -> str:
    new = name.lstrip("_") + "_"
    while new in taken or new in RESERVED:
        new += "_"
    taken.add(new)
    return new


def _rename(f: Function, m: dict[str, str]) -> None:
    f.params = tuple(Param(m.get(p.name, p.name), p.type) for p in f.params)
    f.locals = {m.get(k, k): v for k, v in f.locals.items()}
    for s in walk_stmts(f.body):
        for attr in ("name", "array", "var", "counter", "limit", "stride"):
            v = getattr(s, attr, None)
            if isinstance(v, str) and v in m:
                setattr(s, attr, m[v])
        for e in stmt_exprs(s):
            for x in walk_expr(e):
                for attr in ("name", "array"):
                    v = getattr(x, attr, None)
                    if isinstance(v, str) and v in m and not isinstance(x, Call):
                        setattr(x, attr, m[v])
