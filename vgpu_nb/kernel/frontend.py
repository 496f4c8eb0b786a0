"""Frontend: the Python AST of a kernel or device function → typed IR (:mod:`.ir`).

Sources come from :func:`inspect.getsource`, which works for files and for notebook cells
(IPython keeps each cell's source in :mod:`linecache`); line numbers in errors are those of
the file or cell. Globals are looked up once, at compile time: ``int``/``float``/``bool``
constants are frozen into the kernel (as Numba does), modules and ``@vg.func`` functions
are resolved by identity, anything else is a :class:`~vgpu_nb.errors.KernelSyntaxError`.

Typing rules (see :mod:`.ir` for the promotion lattice): parameters are annotated
(``vg.f32``, ``vg.f32[:]``, ``vg.i32[:, :]``); a local's type is fixed by its first
assignment (``x: vg.f64 = 0`` declares one explicitly); Python literals are *weak* and adopt
the other operand's type (``x * 2`` keeps x's type); ``/`` on integers gives f32;
``and``/``or``/``not`` give bool; stores convert to the array's dtype except float → int,
which needs an explicit cast.
"""

from __future__ import annotations

import ast
import inspect
import itertools
import textwrap
import types as pytypes
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import numpy as np

from ..dtypes import ArrayType, DType, as_dtype, bool_, f32, i32, i64, u32, u64
from ..errors import KernelSyntaxError, KernelTypeError, UnsupportedDType
from . import builtins as kb
from . import ir
from .ir import (
    ArrayArg,
    Assign,
    Atomic,
    Binary,
    Break,
    Call,
    Cast,
    Compare,
    Const,
    Continue,
    Expr,
    ExprStmt,
    ForRange,
    Function,
    If,
    Load,
    Logical,
    Math,
    Param,
    Print,
    Return,
    Select,
    Shape,
    Stmt,
    Store,
    ThreadId,
    Unary,
    Var,
    While,
)  # fmt: skip

_BINOPS = {
    ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "div", ast.FloorDiv: "floordiv",
    ast.Mod: "mod", ast.Pow: "pow", ast.BitAnd: "and", ast.BitOr: "or", ast.BitXor: "xor",
    ast.LShift: "lshift", ast.RShift: "rshift",
}  # fmt: skip
_CMPOPS = {ast.Lt: "lt", ast.LtE: "le", ast.Gt: "gt", ast.GtE: "ge", ast.Eq: "eq", ast.NotEq: "ne"}
_PY_BINOP: dict[str, Callable[[Any, Any], Any]] = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b, "floordiv": lambda a, b: a // b, "mod": lambda a, b: a % b,
    "pow": lambda a, b: a**b, "and": lambda a, b: a & b, "or": lambda a, b: a | b,
    "xor": lambda a, b: a ^ b, "lshift": lambda a, b: a << b, "rshift": lambda a, b: a >> b,
}  # fmt: skip
_PY_CMP: dict[str, Callable[[Any, Any], bool]] = {
    "lt": lambda a, b: a < b, "le": lambda a, b: a <= b, "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b, "eq": lambda a, b: a == b, "ne": lambda a, b: a != b,
}  # fmt: skip
_INT_RANGE = {
    i32: (-(2**31), 2**31 - 1), u32: (0, 2**32 - 1), i64: (-(2**63), 2**63 - 1),
    u64: (0, 2**64 - 1), bool_: (0, 1),
}  # fmt: skip

#: constructs that are not in the language: AST class → (name, what to use instead)
_UNSUPPORTED: dict[type, tuple[str, str]] = {
    ast.List: ("a list literal", "use scalars, or pass an array argument (vg.zeros(n))"),
    ast.ListComp: ("a list comprehension", "write a for loop over range(...)"),
    ast.Dict: ("a dict literal", "use scalars or array arguments"),
    ast.DictComp: ("a dict comprehension", "use scalars or array arguments"),
    ast.Set: ("a set literal", "use scalars or array arguments"),
    ast.SetComp: ("a set comprehension", "use scalars or array arguments"),
    ast.GeneratorExp: ("a generator expression", "write a for loop over range(...)"),
    ast.Lambda: ("a lambda", "define a @vg.func function"),
    ast.JoinedStr: ("an f-string", "strings exist only in print() on the numpy backend"),
    ast.Starred: ("*-unpacking", "pass the arguments one by one"),
    ast.Await: ("await", "kernels are synchronous code"),
    ast.Yield: ("yield", "write results into an output array"),
    ast.YieldFrom: ("yield from", "write results into an output array"),
    ast.NamedExpr: ("the walrus operator :=", "assign on its own line"),
    ast.Slice: ("slicing", "index single elements: a[i] or a[i, j]"),
    ast.With: ("a with statement", "kernels have no context managers"),
    ast.Try: ("try/except", "kernels cannot raise; check conditions with if"),
    ast.Raise: ("raise", "kernels cannot raise; write an error flag into an array"),
    ast.Assert: ("assert", "check conditions with if and write a flag into an array"),
    ast.Import: ("import", "import at module level; use vg.* or math.* inside the kernel"),
    ast.ImportFrom: ("import", "import at module level; use vg.* or math.* inside the kernel"),
    ast.Global: ("global", "pass values as arguments and write results into arrays"),
    ast.Nonlocal: ("nonlocal", "pass values as arguments and write results into arrays"),
    ast.FunctionDef: ("a nested function", "define a @vg.func at module level"),
    ast.AsyncFunctionDef: ("an async function", "define a @vg.func at module level"),
    ast.ClassDef: ("a class definition", "define classes outside kernels"),
    ast.Delete: ("del", "locals live until the kernel returns"),
    ast.AsyncFor: ("async for", "use for ... in range(...)"),
    ast.AsyncWith: ("async with", "kernels have no context managers"),
}
if hasattr(ast, "TryStar"):
    _UNSUPPORTED[ast.TryStar] = _UNSUPPORTED[ast.Try]
if hasattr(ast, "Match"):
    _UNSUPPORTED[ast.Match] = ("match", "use if/elif/else")


class Func:
    """A device function (``@vg.func``): called from kernels and other device functions,
    specialised per argument types and inlined. Parameters may be annotated (arguments are
    converted, as in C) or left generic (specialised on the argument's type). Called from
    Python, it runs the plain Python function."""

    def __init__(self, pyfunc: Callable[..., Any]):
        if not isinstance(pyfunc, pytypes.FunctionType):
            raise KernelSyntaxError(
                f"@vg.func needs a plain Python function, got {type(pyfunc).__name__}",
                fix="decorate a def statement",
            )
        self.pyfunc = pyfunc
        self.__name__ = pyfunc.__name__
        self.__doc__ = pyfunc.__doc__
        self.__wrapped__ = pyfunc

    def __call__(self, *args: Any) -> Any:
        return self.pyfunc(*args)

    def __repr__(self) -> str:
        return f"<vg.func {self.__name__}>"


# ---- sources --------------------------------------------------------------------------
class Source:
    """The parsed source of one Python function, with what errors need to point at it."""

    def __init__(self, pyfunc: Callable[..., Any]):
        self.pyfunc = pyfunc
        code = pyfunc.__code__  # type: ignore[attr-defined]
        self.filename = code.co_filename
        self.name = pyfunc.__name__
        try:
            lines, first = inspect.getsourcelines(pyfunc)
        except (OSError, TypeError) as exc:
            raise KernelSyntaxError(
                f"cannot read the source of {self.name!r} ({exc})",
                fix="define kernels in a file or a notebook cell (not with exec/eval "
                "or in the plain interactive interpreter)",
            ) from exc
        self.firstline = max(first, 1)
        raw = "".join(lines)
        text = textwrap.dedent(raw)
        self.indent = len(lines[0]) - len(lines[0].lstrip()) if lines else 0
        self.lines = raw.splitlines()
        self.text = text
        tree = ast.parse(text)
        node = tree.body[0]
        if not isinstance(node, ast.FunctionDef):
            self.error(f"{self.name!r} is not a def function", node, KernelSyntaxError)
        self.tree: ast.FunctionDef = node

    def line_of(self, node: ast.AST) -> int:
        return self.firstline + getattr(node, "lineno", 1) - 1

    def error(
        self,
        what: str,
        node: ast.AST | None,
        cls: type = KernelSyntaxError,
        fix: str | None = None,
    ) -> NoReturn:
        lineno = getattr(node, "lineno", 1) if node is not None else 1
        col = getattr(node, "col_offset", None) if node is not None else None
        text = self.lines[lineno - 1] if 0 < lineno <= len(self.lines) else None
        raise cls(
            what,
            filename=self.filename,
            lineno=self.firstline + lineno - 1,
            col=None if col is None else col + self.indent,
            source_line=text,
            func=self.name,
            fix=fix,
        )


def _globals_of(pyfunc: Callable[..., Any]) -> dict[str, Any]:
    """The names a function can see: its module globals, then its closure cells."""
    env = dict(pyfunc.__globals__)  # type: ignore[attr-defined]
    code = pyfunc.__code__  # type: ignore[attr-defined]
    if pyfunc.__closure__:  # type: ignore[attr-defined]
        for name, cell in zip(code.co_freevars, pyfunc.__closure__, strict=True):  # type: ignore[attr-defined]
            try:
                env[name] = cell.cell_contents
            except ValueError:  # empty cell
                pass
    return env


def annotation_type(value: Any) -> ir.Type | None:
    """``vg.f32`` / ``np.float32`` / ``"f32"`` / ``vg.f32[:]`` → IR type, else None."""
    if isinstance(value, ArrayType):
        return value
    if isinstance(value, DType):
        return value
    if value in (float, int, bool):
        return {float: f32, int: i32, bool: bool_}[value]
    try:
        return as_dtype(value)
    except (UnsupportedDType, TypeError):
        return None


# ---- the builder ---------------------------------------------------------------------------
class _Program:
    """State shared while compiling one kernel: the specialised device functions (in
    dependency order) and the stack of functions being built (recursion check)."""

    def __init__(self) -> None:
        self.funcs: dict[tuple[Any, ...], Function] = {}
        self.order: list[Function] = []
        self.stack: list[Any] = []
        self.names: set[str] = set()

    def unique(self, base: str) -> str:
        name = base
        for k in itertools.count(1):
            if name not in self.names:
                break
            name = f"{base}_{k}"
        self.names.add(name)
        return name


def _type_tag(t: ir.Type) -> str:
    if isinstance(t, ArrayType):
        return f"{t.dtype.name}a{t.ndim}"
    return t.name


class _Builder:
    """Translates one function body. ``kind``: "kernel" or "func"."""

    def __init__(
        self,
        src: Source,
        params: Sequence[Param],
        kind: str,
        program: _Program,
        ret: DType | None = None,
        name: str | None = None,
    ):
        self.src = src
        self.kind = kind
        self.program = program
        self.env = _globals_of(src.pyfunc)
        self.params = {p.name: p for p in params}
        self.param_list = tuple(params)
        self.locals: dict[str, DType] = {}
        self.where: dict[str, int] = {}  # local → line of its first assignment
        for p in params:
            if not p.is_array:
                self.locals[p.name] = p.type  # type: ignore[assignment]
                self.where[p.name] = src.firstline
        self.ret = ret
        self.ret_fixed = ret is not None
        self.ndim: int | None = None
        self.loops = 0
        self.hidden = itertools.count()
        self.name = name or src.name

    # ---- errors -------------------------------------------------------------------------
    def fail(self, what: str, node: ast.AST | None, fix: str | None = None) -> NoReturn:
        self.src.error(what, node, KernelSyntaxError, fix)

    def type_fail(self, what: str, node: ast.AST | None, fix: str | None = None) -> NoReturn:
        self.src.error(what, node, KernelTypeError, fix)

    def unsupported(self, node: ast.AST) -> NoReturn:
        name, fix = _UNSUPPORTED.get(type(node), (type(node).__name__, None))  # type: ignore[arg-type]
        where = "kernels" if self.kind == "kernel" else "device functions"
        self.fail(f"{name} is not supported in {where}", node, fix)

    # ---- entry ------------------------------------------------------------------------------
    def build(self) -> Function:
        tree = self.src.tree
        body = tree.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            if isinstance(body[0].value.value, str):
                body = body[1:]  # docstring
        stmts = self.block(body)
        if self.kind == "func" and self.ret is None:
            self.ret = None
        return Function(
            name=self.name,
            params=self.param_list,
            locals=dict(self.locals),
            body=stmts,
            ret=self.ret,
            ndim=self.ndim,
            filename=self.src.filename,
            firstline=self.src.firstline,
            py_name=self.src.name,
        )

    def hidden_local(self, base: str, t: DType) -> str:
        while True:
            name = f"_{base}{next(self.hidden)}"
            if name not in self.locals and name not in self.params and name not in self.env:
                break
        self.locals[name] = t
        return name

    # ---- statements ----------------------------------------------------------------------
    def block(self, nodes: list[ast.stmt]) -> list[Stmt]:
        out: list[Stmt] = []
        for n in nodes:
            out.extend(self.stmt(n))
        return out

    def stmt(self, n: ast.stmt) -> list[Stmt]:
        line = self.src.line_of(n)
        if isinstance(n, ast.Assign):
            return self.assign(n, line)
        if isinstance(n, ast.AugAssign):
            return self.augassign(n, line)
        if isinstance(n, ast.AnnAssign):
            return self.annassign(n, line)
        if isinstance(n, ast.If):
            cond = self.as_bool(self.expr(n.test), n.test)
            return [If(line, cond, self.block(n.body), self.block(n.orelse))]
        if isinstance(n, ast.For):
            return [self.for_range(n, line)]
        if isinstance(n, ast.While):
            if n.orelse:
                self.fail("while ... else is not supported", n, "use a flag variable")
            cond = self.as_bool(self.expr(n.test), n.test)
            self.loops += 1
            body = self.block(n.body)
            self.loops -= 1
            return [While(line, cond, body)]
        if isinstance(n, ast.Break | ast.Continue):
            if not self.loops:
                self.fail(f"'{type(n).__name__.lower()}' outside a loop", n)
            return [Break(line) if isinstance(n, ast.Break) else Continue(line)]
        if isinstance(n, ast.Return):
            return [self.return_(n, line)]
        if isinstance(n, ast.Pass):
            return []
        if isinstance(n, ast.Expr):
            return self.expr_stmt(n, line)
        self.unsupported(n)

    def expr_stmt(self, n: ast.Expr, line: int) -> list[Stmt]:
        v = n.value
        if isinstance(v, ast.Constant) and isinstance(v.value, str):
            return []  # a string used as a comment
        if isinstance(v, ast.Call):
            target = self.resolve(v.func)
            b = kb.lookup(target)
            if b is not None and b.kind == "py" and b.name == "print":
                return [self.print_(v, line)]
            e = self.call(v, statement=True)
            return [ExprStmt(line, e)]
        self.fail(
            "this expression statement has no effect",
            n,
            "assign it to a variable or store it into an array",
        )

    def print_(self, v: ast.Call, line: int) -> Print:
        if v.keywords:
            self.fail("print() keywords (sep=, end=, …) are not supported", v)
        items: list[str | Expr] = []
        for a in v.args:
            if isinstance(a, ast.Constant) and isinstance(a.value, str):
                items.append(a.value)
            else:
                items.append(self.finish(self.expr(a)))
        return Print(line, tuple(items))

    def return_(self, n: ast.Return, line: int) -> Return:
        if n.value is None:
            if self.kind == "func" and self.ret is not None:
                self.type_fail(f"bare return in a function that returns {self.ret.name}", n)
            return Return(line)
        if self.kind == "kernel":
            self.fail(
                "a kernel cannot return a value",
                n,
                "write the result into an output array: out[i] = value",
            )
        e = self.expr(n.value)
        if not self.ret_fixed:
            self.ret = self.finish(e).type
            self.ret_fixed = True
        return Return(line, self.convert(e, self.ret, n.value, what="the return value"))  # type: ignore[arg-type]

    def assign(self, n: ast.Assign, line: int) -> list[Stmt]:
        out: list[Stmt] = []
        if len(n.targets) > 1:  # a = b = value: evaluate once into the first, copy
            value = self.expr(n.value)
            first, *rest = n.targets
            out += self.assign_target(first, value, n.value, line)
            for t in rest:
                out += self.assign_target(t, self.expr(first), n.value, line)
            return out
        target = n.targets[0]
        if isinstance(target, ast.Tuple):
            return self.assign_tuple(target, n.value, line)
        return self.assign_target(target, self.expr(n.value), n.value, line)

    def assign_tuple(self, target: ast.Tuple, value: ast.expr, line: int) -> list[Stmt]:
        if isinstance(value, ast.Call) and self.builtin_of(value.func) == ("tid", "tid"):
            if len(target.elts) != 2:
                self.fail(
                    f"vg.tid() unpacks into 1 (1-D launch) or 2 names (2-D), not "
                    f"{len(target.elts)}",
                    target,
                )
            self.use_tid(2, value)
            out: list[Stmt] = []
            for axis, t in enumerate(target.elts):
                out += self.assign_target(t, ThreadId(i32, axis), value, line)
            return out
        if not isinstance(value, ast.Tuple) or len(value.elts) != len(target.elts):
            self.fail(
                "tuple assignment needs a tuple of the same length on the right (or vg.tid())",
                value,
                "assign one name per line",
            )
        vals = [self.finish(self.expr(v)) for v in value.elts]
        temps, out = [], []
        for v in vals:  # a, b = b, a: evaluate everything first
            tmp = self.hidden_local("t", v.type)
            out.append(Assign(line, tmp, v))
            temps.append(Var(v.type, tmp))
        for t, v, node in zip(target.elts, temps, value.elts, strict=True):
            out += self.assign_target(t, v, node, line)
        return out

    def assign_target(self, t: ast.expr, value: Expr, vnode: ast.expr, line: int) -> list[Stmt]:
        if isinstance(t, ast.Name):
            return [self.assign_local(t.id, value, t, line)]
        if isinstance(t, ast.Subscript):
            return [self.store(t, value, vnode, line)]
        if isinstance(t, ast.Attribute):
            self.fail("assigning to an attribute is not supported", t)
        self.unsupported(t)

    def assign_local(self, name: str, value: Expr, node: ast.AST, line: int) -> Assign:
        if name in self.params and self.params[name].is_array:
            self.type_fail(f"cannot assign to the array parameter {name!r}", node)
        if name in self.locals:
            want = self.locals[name]
            if isinstance(value, Const) and value.weak:
                return Assign(line, name, self.convert(value, want, node, what=name))
            if value.type is not want:
                first = self.where.get(name)
                self.type_fail(
                    f"local variable {name!r} is {want.name} (first assigned on line "
                    f"{first}) but this assigns a {value.type.name}",
                    node,
                    f"a local keeps its type: convert explicitly, e.g. {name} = "
                    f"vg.{want.name}(...), or use another name",
                )
            return Assign(line, name, value)
        value = self.finish(value)
        if name in self.env and isinstance(self.env[name], Func | pytypes.ModuleType):
            self.fail(f"local variable {name!r} shadows a global function or module", node)
        self.locals[name] = value.type
        self.where[name] = line
        return Assign(line, name, value)

    def annassign(self, n: ast.AnnAssign, line: int) -> list[Stmt]:
        if not isinstance(n.target, ast.Name):
            self.fail("annotations are only allowed on local names", n.target)
        t = annotation_type(self.static_value(n.annotation))
        if not isinstance(t, DType):
            self.type_fail(
                "local annotations must be scalar types (vg.f32, vg.i32, …)",
                n.annotation,
            )
        name = n.target.id
        if name in self.locals and self.locals[name] is not t:
            self.type_fail(f"local variable {name!r} is already {self.locals[name].name}", n)
        if n.value is None:
            self.locals[name] = t
            self.where[name] = line
            return []
        value = self.convert(self.expr(n.value), t, n.value, what=name, explicit=True)
        self.locals[name] = t
        self.where.setdefault(name, line)
        return [Assign(line, name, value)]

    def augassign(self, n: ast.AugAssign, line: int) -> list[Stmt]:
        op = _BINOPS.get(type(n.op))
        if op is None:
            self.unsupported(n.op)
        if isinstance(n.target, ast.Name):
            if n.target.id not in self.locals:
                self.fail(f"local variable {n.target.id!r} is used before assignment", n.target)
            cur = Var(self.locals[n.target.id], n.target.id)
            value = self.binop(op, cur, self.expr(n.value), n)
            return [self.assign_local(n.target.id, value, n, line)]
        if isinstance(n.target, ast.Subscript):
            arr, index = self.subscript_parts(n.target)
            cur = Load(arr.type.dtype, arr.name, index)  # type: ignore[union-attr]
            value = self.binop(op, cur, self.expr(n.value), n)
            return [self.store_parts(arr, index, value, n, line)]
        self.unsupported(n.target)

    def store(self, t: ast.Subscript, value: Expr, vnode: ast.expr, line: int) -> Store:
        arr, index = self.subscript_parts(t)
        return self.store_parts(arr, index, value, vnode, line)

    def store_parts(
        self, arr: Param, index: tuple[Expr, ...], value: Expr, node: ast.AST, line: int
    ) -> Store:
        dt = arr.type.dtype  # type: ignore[union-attr]
        value = self.finish(value) if not (isinstance(value, Const) and value.weak) else value
        if (
            not (isinstance(value, Const) and value.weak)
            and ir.is_float(value.type)
            and (ir.is_int(dt) or dt is bool_)
        ):
            self.type_fail(
                f"storing a {value.type.name} into {arr.name!r} ({dt.name}) would truncate",
                node,
                f"convert explicitly: {arr.name}[...] = vg.{dt.name}(value)",
            )
        return Store(line, arr.name, index, self.convert(value, dt, node, what=arr.name))

    def for_range(self, n: ast.For, line: int) -> ForRange:
        if n.orelse:
            self.fail("for ... else is not supported", n, "use a flag variable")
        if not isinstance(n.target, ast.Name):
            self.fail("the loop variable must be a single name", n.target)
        it = n.iter
        if not (isinstance(it, ast.Call) and self.builtin_of(it.func) == ("py", "range")):
            self.fail(
                "only 'for ... in range(...)' loops are supported",
                it,
                "loop over indices: for k in range(a.shape[0]): ... a[k] ...",
            )
        if it.keywords or not 1 <= len(it.args) <= 3:
            self.fail("range() takes 1 to 3 positional arguments", it)
        args = [self.expr(a) for a in it.args]
        for a, node in zip(args, it.args, strict=True):
            if not (ir.is_int(a.type) or a.type is bool_):
                self.type_fail(f"range() arguments must be integers, got {a.type.name}", node)
        if len(args) == 1:
            args = [Const(i32, 0, weak=True), args[0], Const(i32, 1, weak=True)]
        elif len(args) == 2:
            args.append(Const(i32, 1, weak=True))
        if isinstance(args[2], Const) and args[2].value == 0:
            self.fail("range() step must not be zero", it.args[2])
        strong = [a.type for a in args if not (isinstance(a, Const) and a.weak)]
        t = i32
        for s in strong:
            t = ir.promote(t, s)
        name = n.target.id
        if name in self.locals and self.locals[name] is not t:
            if not (ir.is_int(self.locals[name])):
                self.type_fail(
                    f"loop variable {name!r} was {self.locals[name].name} before the loop",
                    n.target,
                )
            t = self.locals[name]
        start, stop, step = (self.convert(a, t, it) for a in args)
        self.locals.setdefault(name, t)
        self.where.setdefault(name, line)
        counter = self.hidden_local("k", t)
        limit = self.hidden_local("stop", t)
        stride = self.hidden_local("step", t)
        self.loops += 1
        body = self.block(n.body)
        self.loops -= 1
        return ForRange(line, name, start, stop, step, body, counter, limit, stride)

    # ---- expressions -----------------------------------------------------------------------
    def finish(self, e: Expr) -> Expr:
        """Give a weak literal its default type (int → i32, float → f32)."""
        if isinstance(e, Const) and e.weak:
            return Const(e.type, e.value)
        return e

    def expr(self, n: ast.expr) -> Expr:
        if isinstance(n, ast.Constant):
            v = n.value
            if isinstance(v, bool | int | float):
                if isinstance(v, int) and not isinstance(v, bool) and not -(2**63) <= v < 2**64:
                    self.type_fail(f"integer literal {v} does not fit in 64 bits", n)
                return Const(ir.literal_type(v), v, weak=True)
            if isinstance(v, str):
                self.fail(
                    "strings are not supported in kernels",
                    n,
                    "strings only appear in print() on the numpy backend",
                )
            self.fail(f"the constant {v!r} is not supported in kernels", n)
        if isinstance(n, ast.Name):
            return self.load_name(n)
        if isinstance(n, ast.BinOp):
            op = _BINOPS.get(type(n.op))
            if op is None:
                self.unsupported(n.op)
            return self.binop(op, self.expr(n.left), self.expr(n.right), n)
        if isinstance(n, ast.UnaryOp):
            return self.unaryop(n)
        if isinstance(n, ast.BoolOp):
            op = "and" if isinstance(n.op, ast.And) else "or"
            vals = [self.as_bool(self.expr(v), v) for v in n.values]
            out = vals[0]
            for v in vals[1:]:
                out = Logical(bool_, op, out, v)
            return out
        if isinstance(n, ast.Compare):
            return self.compare(n)
        if isinstance(n, ast.IfExp):
            cond = self.as_bool(self.expr(n.test), n.test)
            a, b = self.expr(n.body), self.expr(n.orelse)
            self.pure(n.body)
            self.pure(n.orelse)
            a, b, t = self.unify(a, b, n)
            return Select(t, cond, a, b)
        if isinstance(n, ast.Subscript):
            return self.subscript(n)
        if isinstance(n, ast.Call):
            return self.call(n)
        if isinstance(n, ast.Attribute):
            value = self.static_value(n, strict=False)
            if isinstance(value, bool | int | float | np.generic):
                return self.constant(value, n)
            if isinstance(n.value, ast.Name) and n.value.id in self.params and n.attr == "shape":
                self.fail("a.shape must be indexed: a.shape[0]", n)
            self.fail(f"'{ast.unparse(n)}' cannot be used as a value in a kernel", n)
        if isinstance(n, ast.Tuple):
            self.fail(
                "tuples are only supported in assignments (a, b = b, a / i, j = vg.tid())",
                n,
            )
        self.unsupported(n)

    def pure(self, n: ast.expr) -> None:
        """Conditional-expression branches may both be evaluated (WGSL select)."""
        for sub in ast.walk(n):
            if isinstance(sub, ast.Call):
                b = self.builtin_of(sub.func)
                if b is not None and b[0] == "atomic":
                    self.fail(
                        "atomics are not allowed inside 'x if c else y' (both sides may run)",
                        sub,
                        "use an if statement",
                    )

    def load_name(self, n: ast.Name) -> Expr:
        if n.id in self.locals:
            return Var(self.locals[n.id], n.id)
        if n.id in self.params:
            self.fail(
                f"the array {n.id!r} cannot be used as a value",
                n,
                f"index it: {n.id}[i]; or pass it to a @vg.func",
            )
        if n.id not in self.env:
            import builtins as _b

            if hasattr(_b, n.id):
                self.fail(f"the builtin {n.id!r} cannot be used as a value here", n)
            self.fail(f"name {n.id!r} is not defined (or used before assignment)", n)
        return self.constant(self.env[n.id], n)

    def constant(self, value: Any, n: ast.AST) -> Expr:
        """A global used as a value: int/float/bool constants are frozen in."""
        if isinstance(value, bool | int | float):
            return Const(ir.literal_type(value), value, weak=True)
        if isinstance(value, np.generic):
            try:
                t = as_dtype(value.dtype)
            except UnsupportedDType:
                self.type_fail(f"the global {ast.unparse(n)} has dtype {value.dtype}", n)
            return Const(t, value.item())
        what = type(value).__name__
        self.fail(
            f"the kernel uses the global {ast.unparse(n)!r} (a {what}); only int/float/bool "
            "constants, the vg and math modules and @vg.func functions can be used from "
            "outside a kernel",
            n,
            "pass it as an argument (arrays as vg.Array, numbers as scalars)",
        )

    def static_value(self, n: ast.expr, strict: bool = True) -> Any:
        """The Python object a Name/Attribute chain refers to (globals only)."""
        if isinstance(n, ast.Name):
            if n.id in self.locals or n.id in self.params:
                if strict:
                    self.fail(f"{n.id!r} is a kernel variable, not a global", n)
                return None
            if n.id in self.env:
                return self.env[n.id]
            import builtins as _b

            if hasattr(_b, n.id):
                return getattr(_b, n.id)
            if strict:
                self.fail(f"name {n.id!r} is not defined", n)
            return None
        if isinstance(n, ast.Attribute):
            base = self.static_value(n.value, strict)
            if base is None:
                return None
            if isinstance(base, pytypes.ModuleType) and base.__name__ == "math":
                if n.attr in kb.MATH_CONSTANTS:
                    return kb.MATH_CONSTANTS[n.attr]
            if not hasattr(base, n.attr):
                self.fail(f"{ast.unparse(n.value)} has no attribute {n.attr!r}", n)
            return getattr(base, n.attr)
        if isinstance(n, ast.Subscript):  # annotations like vg.f32[:]
            base = self.static_value(n.value, strict)
            if isinstance(base, DType):
                dims = n.slice.elts if isinstance(n.slice, ast.Tuple) else [n.slice]
                if all(
                    isinstance(d, ast.Slice) and not (d.lower or d.upper or d.step) for d in dims
                ):
                    return base[tuple(slice(None) for _ in dims)]
        if strict:
            self.fail(f"'{ast.unparse(n)}' is not a known name", n)
        return None

    def resolve(self, n: ast.expr) -> Any:
        return self.static_value(n, strict=False)

    def builtin_of(self, n: ast.expr) -> tuple[str, str] | None:
        b = kb.lookup(self.resolve(n))
        return (b.kind, b.name) if b is not None else None

    # ---- typing helpers ---------------------------------------------------------------------
    def convert(
        self,
        e: Expr,
        t: DType,
        node: ast.AST,
        what: str = "value",
        explicit: bool = False,
    ) -> Expr:
        """``e`` as type ``t`` (literals are converted at compile time, checked to fit)."""
        if isinstance(e, Const):
            if e.weak or explicit or e.type is not t:
                return Const(t, self.const_as(e.value, t, node, e.weak and not explicit), e.weak)
            return e
        if e.type is t:
            return e
        return Cast(t, e)

    def const_as(self, v: Any, t: DType, node: ast.AST, weak: bool) -> Any:
        if t is bool_:
            return bool(v)
        if ir.is_float(t):
            return float(np.asarray(v, dtype=t.np))
        if isinstance(v, float):
            if weak or not np.isfinite(v):
                self.type_fail(f"the float {v!r} used as {t.name} would truncate", node)
        v = int(v)
        lo, hi = _INT_RANGE[t]
        if not lo <= v <= hi:
            if weak:
                self.type_fail(f"the literal {v} does not fit in {t.name}", node)
            v = int(np.asarray(v).astype(np.int64 if v < 0 else np.uint64).astype(t.np))
        return v

    def unify(self, a: Expr, b: Expr, node: ast.AST) -> tuple[Expr, Expr, DType]:
        """Both operands converted to their common type (weak literals adapt)."""
        aw = isinstance(a, Const) and a.weak
        bw = isinstance(b, Const) and b.weak
        if aw and bw:
            t = ir.promote(a.type, b.type)
            if ir.is_int(t) and max(abs(int(a.value)), abs(int(b.value))) >= 2**31:
                t = i64
        elif aw:
            t = self.adopt(a, b.type)
        elif bw:
            t = self.adopt(b, a.type)
        else:
            t = ir.promote(a.type, b.type)
        return self.convert(a, t, node), self.convert(b, t, node), t

    @staticmethod
    def adopt(lit: Const, strong: DType) -> DType:
        """The type a weak literal takes next to a strong operand."""
        if ir.is_float(lit.type) and not ir.is_float(strong):
            return f32
        if strong is bool_:
            return bool_ if lit.type is bool_ else i32
        return strong

    def as_bool(self, e: Expr, node: ast.AST) -> Expr:
        if e.type is bool_:
            return self.finish(e)
        if isinstance(e, Const):
            return Const(bool_, bool(e.value))
        zero = Const(e.type, 0.0 if ir.is_float(e.type) else 0)
        return Compare(bool_, "ne", e, zero)

    def binop(self, op: str, a: Expr, b: Expr, node: ast.AST) -> Expr:
        aw = isinstance(a, Const) and a.weak
        bw = isinstance(b, Const) and b.weak
        if aw and bw:
            return self.fold(op, a, b, node)
        if op == "pow":
            return self.power(a, b, node)
        if op in ("lshift", "rshift"):
            for x in (a, b):
                if not ir.is_int(x.type):
                    self.type_fail(f"shifts need integers, got {x.type.name}", node)
            a = self.finish(a) if not aw else self.convert(a, self.adopt(a, b.type), node)
            b = self.finish(b) if not bw else self.convert(b, a.type, node)
            return Binary(a.type, op, a, b)
        a, b, t = self.unify(a, b, node)
        if op in ("and", "or", "xor"):
            if ir.is_float(t):
                self.type_fail(f"bitwise '{op}' needs integers or bools, got {t.name}", node)
            return Binary(t, op, a, b)
        if t is bool_:  # arithmetic on bools computes in i32 (True + True == 2)
            a, b, t = Cast(i32, a), Cast(i32, b), i32
        if op == "div":
            ft = ir.true_div_type(t)
            return Binary(ft, "div", self.convert(a, ft, node), self.convert(b, ft, node))
        return Binary(t, op, a, b)

    def fold(self, op: str, a: Const, b: Const, node: ast.AST) -> Expr:
        """Arithmetic on two literals, at compile time (in Python's precision)."""
        try:
            v = _PY_BINOP[op](a.value, b.value)
        except ZeroDivisionError:
            self.fail("division by zero in a constant expression", node)
        except (OverflowError, ValueError, TypeError) as exc:
            self.fail(f"invalid constant expression: {exc}", node)
        if isinstance(v, complex):
            self.fail("this constant expression is complex", node)
        return Const(ir.literal_type(v), v, weak=True)

    def power(self, a: Expr, b: Expr, node: ast.AST) -> Expr:
        bw = isinstance(b, Const) and b.weak
        if bw and isinstance(b.value, int) and not isinstance(b.value, bool) and 0 <= b.value <= 64:  # type: ignore[union-attr]
            # x ** k with a literal k: exact repeated multiplication (square-and-multiply)
            a = self.finish(a) if not (isinstance(a, Const) and a.weak) else a
            if a.type is bool_:
                a = Cast(i32, a)
            return self.int_power(a, int(b.value), node)  # type: ignore[arg-type]
        a, b, t = self.unify(a, b, node)
        if not ir.is_float(t):
            self.type_fail(
                "integer ** integer needs a literal non-negative exponent (x ** 3)",
                node,
                "convert to float first: vg.f32(x) ** y, or multiply in a loop",
            )
        if isinstance(b, Const) and b.value == 0.5:
            return Math(t, "sqrt", (a,))
        return Math(t, "pow", (a, b))

    def int_power(self, a: Expr, k: int, node: ast.AST) -> Expr:
        """``a ** k`` by square-and-multiply; ``a`` is side-effect free (checked), so its
        tree may appear several times (the backend compilers share it)."""
        for x in ir.walk_expr(a):
            if isinstance(x, Atomic | Call):
                self.fail("x ** k of an atomic or a function call", node, "assign it first")
        if k == 0:
            return Const(a.type, 1.0 if ir.is_float(a.type) else 1)
        if k == 1:
            return a
        half = self.int_power(a, k // 2, node)
        sq = Binary(a.type, "mul", half, half)
        return Binary(a.type, "mul", sq, a) if k % 2 else sq

    def unaryop(self, n: ast.UnaryOp) -> Expr:
        e = self.expr(n.operand)
        if isinstance(n.op, ast.Not):
            if isinstance(e, Const):
                return Const(bool_, not e.value, weak=False)
            return Unary(bool_, "not", self.as_bool(e, n.operand))
        if isinstance(n.op, ast.UAdd):
            return e
        if isinstance(e, Const) and e.weak:
            v = -e.value if isinstance(n.op, ast.USub) else ~int(e.value)
            return Const(ir.literal_type(v), v, weak=True)
        if isinstance(n.op, ast.USub):
            if e.type is bool_:
                e = Cast(i32, e)
            return Unary(e.type, "neg", e)
        if not ir.is_int(e.type) and e.type is not bool_:
            self.type_fail(f"'~' needs an integer, got {e.type.name}", n)
        if e.type is bool_:
            e = Cast(i32, e)
        return Unary(e.type, "invert", e)

    def compare(self, n: ast.Compare) -> Expr:
        left = self.expr(n.left)
        out: Expr | None = None
        for op_node, right_node in zip(n.ops, n.comparators, strict=True):
            op = _CMPOPS.get(type(op_node))
            if op is None:
                what = "'is'/'is not'" if isinstance(op_node, ast.Is | ast.IsNot) else "'in'"
                self.fail(f"{what} comparisons are not supported in kernels", n, "use == / !=")
            right = self.expr(right_node)
            if isinstance(left, Const) and left.weak and isinstance(right, Const) and right.weak:
                c: Expr = Const(bool_, _PY_CMP[op](left.value, right.value))
            else:
                a, b, _ = self.unify(left, right, n)
                c = Compare(bool_, op, a, b)
            out = c if out is None else Logical(bool_, "and", out, c)
            left = right
        return out  # type: ignore[return-value]

    # ---- subscripts ---------------------------------------------------------------------
    def array_param(self, n: ast.expr) -> Param:
        if isinstance(n, ast.Name) and n.id in self.params and self.params[n.id].is_array:
            return self.params[n.id]
        if isinstance(n, ast.Name) and n.id in self.locals:
            self.type_fail(f"{n.id!r} is a {self.locals[n.id].name} scalar, not an array", n)
        self.fail(
            f"'{ast.unparse(n)}' is not an array parameter",
            n,
            "only array parameters (annotated vg.f32[:] …) can be indexed",
        )

    def subscript_parts(self, n: ast.Subscript) -> tuple[Param, tuple[Expr, ...]]:
        arr = self.array_param(n.value)
        nd = arr.type.ndim  # type: ignore[union-attr]
        sl = n.slice
        items = sl.elts if isinstance(sl, ast.Tuple) else [sl]
        for it in items:
            if isinstance(it, ast.Slice):
                self.unsupported(it)
        if len(items) != nd:
            self.type_fail(
                f"{arr.name!r} is {nd}-D but is indexed with {len(items)} "
                f"ind{'ex' if len(items) == 1 else 'ices'}",
                n,
                f"use {arr.name}[{', '.join('ij'[:nd])}]",
            )
        index = []
        for it in items:
            e = self.expr(it)
            if isinstance(e, Const) and e.weak and isinstance(e.value, int) and e.value < 0:
                self.fail(
                    "negative indices do not wrap around in kernels",
                    it,
                    f"index from the end explicitly: {arr.name}[{arr.name}.shape[0] - 1]",
                )
            if not (ir.is_int(e.type) or e.type is bool_):
                self.type_fail(
                    f"array indices must be integers, got {e.type.name}",
                    it,
                    "convert: a[vg.i32(x)] (truncates toward zero)",
                )
            t = i64 if e.type in (i64, u64) else i32
            index.append(self.convert(e, t, it))
        return arr, tuple(index)

    def subscript(self, n: ast.Subscript) -> Expr:
        v = n.value
        if isinstance(v, ast.Attribute) and v.attr == "shape":
            arr = self.array_param(v.value)
            k = self.expr(n.slice)
            nd = arr.type.ndim  # type: ignore[union-attr]
            if not (isinstance(k, Const) and isinstance(k.value, int) and -nd <= k.value < nd):
                self.fail(
                    f"{arr.name}.shape must be indexed by a constant 0..{nd - 1}",
                    n.slice,
                )
            return Shape(i32, arr.name, int(k.value) % nd)  # type: ignore[arg-type]
        if isinstance(v, ast.Name) and v.id not in self.params and v.id not in self.locals:
            if v.id in self.env:
                self.constant(self.env[v.id], v)  # raises with the global's type
        arr, index = self.subscript_parts(n)
        return Load(arr.type.dtype, arr.name, index)  # type: ignore[union-attr]

    # ---- calls --------------------------------------------------------------------------
    def use_tid(self, ndim: int, node: ast.AST) -> None:
        if self.kind != "kernel":
            self.fail(
                "vg.tid() is only available in the kernel body",
                node,
                "pass the index to the function as an argument",
            )
        if self.ndim is not None and self.ndim != ndim:
            self.fail(
                f"vg.tid() is used both as a {self.ndim}-D and a {ndim}-D index",
                node,
                "use i = vg.tid() for 1-D launches or i, j = vg.tid() for 2-D ones",
            )
        self.ndim = ndim

    def call(self, n: ast.Call, statement: bool = False) -> Expr:
        target = self.resolve(n.func)
        if isinstance(target, Func):
            return self.call_func(target, n, statement)
        b = kb.lookup(target)
        if b is None:
            self.bad_call(n, target)
        if n.keywords:
            self.fail(f"keyword arguments are not supported in calls to {b.name}()", n)
        for a in n.args:
            if isinstance(a, ast.Starred):
                self.unsupported(a)
        kind, name = b.kind, b.name
        if kind == "tid":
            if n.args:
                self.fail("vg.tid() takes no arguments", n)
            self.use_tid(1, n)
            return ThreadId(i32, 0)
        if kind == "atomic":
            return self.atomic(name, n)
        if kind == "cast":
            return self.cast_call(as_dtype(name), n)
        if kind == "where":
            if len(n.args) != 3:
                self.fail("vg.where(cond, a, b) takes 3 arguments", n)
            cond = self.as_bool(self.expr(n.args[0]), n.args[0])
            self.pure(n.args[1])
            self.pure(n.args[2])
            a, c, t = self.unify(self.expr(n.args[1]), self.expr(n.args[2]), n)
            return Select(t, cond, a, c)
        if kind == "py":
            return self.py_builtin(name, n)
        return self.math(name, n)

    def bad_call(self, n: ast.Call, target: Any) -> NoReturn:
        text = ast.unparse(n.func)
        mod = getattr(target, "__module__", None) or ""
        if isinstance(target, DType):
            raise AssertionError  # handled via registry
        if mod.startswith("numpy") or (
            isinstance(target, pytypes.ModuleType) and target.__name__.startswith("numpy")
        ):
            self.fail(
                f"NumPy call {text}() inside a kernel: NumPy does not run on the device",
                n,
                "use the kernel builtins: vg.sqrt/vg.exp/… or math.*, casts vg.f32(x)",
            )
        from .api import Kernel  # (cycle: api imports this module)

        if isinstance(target, Kernel):
            self.fail(
                f"a kernel cannot launch another kernel ({text})",
                n,
                "turn the shared code into a @vg.func and call that",
            )
        if target is None and isinstance(n.func, ast.Attribute):
            self.fail(f"method calls are not supported in kernels ({text}())", n)
        self.fail(
            f"calls to plain Python functions are not supported in kernels ({text}())",
            n,
            "decorate the function with @vg.func, or use a builtin (vg.sqrt, math.exp, "
            "abs, min, max …)",
        )

    def cast_call(self, t: DType, n: ast.Call) -> Expr:
        if len(n.args) != 1:
            self.fail(f"vg.{t.name}(x) takes one argument", n)
        e = self.expr(n.args[0])
        if t is bool_:
            return self.as_bool(e, n)
        return self.convert(e, t, n, explicit=True)

    def py_builtin(self, name: str, n: ast.Call) -> Expr:
        args = n.args
        if name in ("float", "int", "bool"):
            return self.cast_call({"float": f32, "int": i32, "bool": bool_}[name], n)
        if name == "len":
            if len(args) != 1:
                self.fail("len() takes one argument", n)
            arr = self.array_param(args[0])
            return Shape(i32, arr.name, 0)
        if name in ("min", "max"):
            if len(args) < 2:
                self.fail(f"{name}() in a kernel takes 2 or more numbers", n)
            out = self.expr(args[0])
            for a in args[1:]:
                x, y, t = self.unify(out, self.expr(a), n)
                out = Math(t, name, (self.finish(x), self.finish(y)))
            return out
        if name == "abs":
            return self.math("abs", n)
        if name == "round":
            if len(args) != 1:
                self.fail("round() takes one argument in kernels (no ndigits)", n)
            return self.math("round", n)
        if name == "range":
            self.fail("range() is only allowed as the iterable of a for loop", n)
        if name == "print":
            self.fail("print() is a statement in kernels, not a value", n)
        self.fail(f"{name}() is not supported in kernels", n)

    def math(self, name: str, n: ast.Call) -> Expr:
        arity = ir.MATH_FUNCS[name]
        if len(n.args) != arity:
            self.fail(f"{name}() takes {arity} argument{'s' if arity > 1 else ''}", n)
        args = [self.expr(a) for a in n.args]
        if all(isinstance(a, Const) and a.weak for a in args) and name not in ("min", "max"):
            args[0] = self.finish(args[0])
        t = args[0].type if not (isinstance(args[0], Const) and args[0].weak) else None
        for a in args[1:]:
            if isinstance(a, Const) and a.weak:
                continue
            t = a.type if t is None else ir.promote(t, a.type)
        if t is None:
            t = self.finish(args[0]).type
        int_ok = name in ("abs", "min", "max")
        if t is bool_:
            t = i32
        if not ir.is_float(t) and not int_ok:
            t = ir.true_div_type(t)  # sqrt(i) computes in f32, as a float
        conv = tuple(self.convert(a, t, n) for a in args)
        if name in ir.MATH_PREDICATES:
            return Math(bool_, name, conv)
        return Math(t, name, conv)

    def atomic(self, op: str, n: ast.Call) -> Expr:
        if len(n.args) != 3:
            self.fail(
                f"vg.atomic_{op}(array, index, value) takes 3 arguments "
                "(a tuple index (i, j) for 2-D arrays)",
                n,
            )
        arr = self.array_param(n.args[0])
        dt = arr.type.dtype  # type: ignore[union-attr]
        if dt not in (i32, u32, f32):
            self.type_fail(
                f"vg.atomic_{op} supports i32, u32 and f32 arrays; {arr.name!r} is {dt.name}",
                n.args[0],
            )
        idx_node = n.args[1]
        nd = arr.type.ndim  # type: ignore[union-attr]
        items = idx_node.elts if isinstance(idx_node, ast.Tuple) else [idx_node]
        fake = ast.Subscript(
            value=n.args[0],
            slice=ast.Tuple(elts=items, ctx=ast.Load()) if nd > 1 else items[0],
            ctx=ast.Load(),
        )
        ast.copy_location(fake, idx_node)
        if len(items) != nd:
            self.type_fail(f"{arr.name!r} is {nd}-D: give {nd} indices", idx_node)
        _, index = self.subscript_parts(fake)
        value = self.expr(n.args[2])
        if not (isinstance(value, Const) and value.weak) and ir.is_float(value.type) and dt != f32:
            self.type_fail(
                f"atomic on the {dt.name} array {arr.name!r} with a {value.type.name} value",
                n.args[2],
                f"convert: vg.{dt.name}(value)",
            )
        return Atomic(dt, op, arr.name, index, self.convert(value, dt, n.args[2]))

    def call_func(self, f: Func, n: ast.Call, statement: bool) -> Expr:
        if n.keywords:
            self.fail(f"keyword arguments are not supported in calls to {f.__name__}()", n)
        args: list[Expr | ArrayArg] = []
        types: list[ir.Type] = []
        for a in n.args:
            if isinstance(a, ast.Starred):
                self.unsupported(a)
            if isinstance(a, ast.Name) and a.id in self.params and self.params[a.id].is_array:
                p = self.params[a.id]
                args.append(ArrayArg(p.name, p.type))  # type: ignore[arg-type]
                types.append(p.type)
            else:
                e = self.expr(a)
                args.append(e)
                types.append(self.finish(e).type)
        fn = specialize(f, types, self.program, n, self.src)
        final: list[Expr | ArrayArg] = []
        for p, a, node in zip(fn.params, args, n.args, strict=True):
            if isinstance(a, ArrayArg):
                if not p.is_array or p.type != a.type:
                    self.type_fail(f"{f.__name__}() parameter {p.name!r} is {p.type}", node)
                final.append(a)
            else:
                if p.is_array:
                    self.type_fail(f"{f.__name__}() parameter {p.name!r} needs an array", node)
                final.append(self.convert(a, p.type, node, what=p.name))  # type: ignore[arg-type]
        if fn.ret is None and not statement:
            self.type_fail(f"{f.__name__}() returns no value", n)
        return Call(fn.ret or bool_, fn, tuple(final))


def _check_arity(src: Source, params: Sequence[Any], types: Sequence[ir.Type], node: Any) -> None:
    if len(params) != len(types):
        raise KernelTypeError(
            f"{src.name}() takes {len(params)} argument{'s' if len(params) != 1 else ''}, "
            f"got {len(types)}",
            filename=src.filename,
            lineno=src.firstline,
            func=src.name,
        )


def _signature(src: Source, builder_env: dict[str, Any]) -> list[tuple[str, Any, ast.arg]]:
    """(name, annotation value or None, node) per parameter; rejects what we lack."""
    args = src.tree.args
    if args.vararg or args.kwarg or args.kwonlyargs or args.posonlyargs:
        src.error("*args, **kwargs and keyword-only parameters are not supported", src.tree)
    if args.defaults:
        src.error(
            "default parameter values are not supported",
            args.defaults[0],
            fix="pass every argument at the call",
        )
    out = []
    probe = _Builder.__new__(_Builder)
    probe.src, probe.env, probe.locals, probe.params = src, builder_env, {}, {}
    probe.kind = "kernel"
    for a in args.args:
        ann = probe.static_value(a.annotation) if a.annotation is not None else None
        out.append((a.arg, ann, a))
    return out


def specialize(
    f: Func,
    types: Sequence[ir.Type],
    program: _Program,
    node: ast.AST | None = None,
    caller: Source | None = None,
) -> Function:
    """The device function ``f`` for argument ``types`` (cached in ``program``)."""
    if f in program.stack:
        chain = " → ".join(g.__name__ for g in [*program.stack, f])
        if caller is not None:
            caller.error(
                f"recursion is not supported in kernels ({chain})",
                node,
                fix="rewrite it as a loop",
            )
        raise KernelSyntaxError(f"recursion is not supported in kernels ({chain})")
    src = Source(f.pyfunc)
    env = _globals_of(f.pyfunc)
    sig = _signature(src, env)
    if len(sig) != len(types):
        msg = f"{f.__name__}() takes {len(sig)} arguments, got {len(types)}"
        if caller is not None:
            caller.error(msg, node, KernelTypeError)
        raise KernelTypeError(msg)
    params = []
    for (name, ann, anode), t in zip(sig, types, strict=True):
        pt = annotation_type(ann) if ann is not None else t
        if ann is not None and pt is None:
            src.error(f"unknown type annotation for {name!r}", anode, KernelTypeError)
        if isinstance(t, ArrayType) != isinstance(pt, ArrayType):
            what = f"{f.__name__}() parameter {name!r} is {pt}, got {t}"
            if caller is not None:
                caller.error(what, node, KernelTypeError)
            raise KernelTypeError(what)
        params.append(Param(name, pt))  # type: ignore[arg-type]
    key = (f, tuple(p.type for p in params))
    hit = program.funcs.get(key)
    if hit is not None:
        return hit
    ret_ann = src.tree.returns
    ret: DType | None = None
    if ret_ann is not None and not (isinstance(ret_ann, ast.Constant) and ret_ann.value is None):
        probe = _Builder(src, params, "func", program)
        rt = annotation_type(probe.static_value(ret_ann))
        if not isinstance(rt, DType):
            src.error("the return annotation must be a scalar type", ret_ann, KernelTypeError)
        ret = rt
    mangled = program.unique(f"{f.__name__}_" + "_".join(_type_tag(p.type) for p in params))
    program.stack.append(f)
    try:
        b = _Builder(src, params, "func", program, ret=ret, name=mangled)
        fn = b.build()
    finally:
        program.stack.pop()
    program.funcs[key] = fn
    program.order.append(fn)
    return fn


def parse_kernel(pyfunc: Callable[..., Any]) -> Function:
    """The IR of a ``@vg.kernel`` function (all parameters must be annotated)."""
    src = Source(pyfunc)
    env = _globals_of(pyfunc)
    params = []
    for name, ann, anode in _signature(src, env):
        if ann is None:
            src.error(
                f"kernel parameter {name!r} has no type annotation",
                anode,
                KernelTypeError,
                fix=f"annotate it: {name}: vg.f32[:] (array) or {name}: vg.f32 (scalar)",
            )
        t = annotation_type(ann)
        if t is None:
            src.error(
                f"unknown type annotation for {name!r}: {ann!r}",
                anode,
                KernelTypeError,
                fix="use vg.f32 vg.f64 vg.i32 vg.u32 vg.i64 vg.bool, or vg.f32[:] / vg.f32[:, :]",
            )
        params.append(Param(name, t))
    program = _Program()
    program.names.add(src.name)
    b = _Builder(src, params, "kernel", program)

    fn = b.build()
    fn.funcs = list(program.order)
    return fn


def parse_func(f: Func, types: Sequence[ir.Type], program: _Program | None = None) -> Function:
    """A device function specialised for ``types``, standalone (reductions use it)."""
    program = program or _Program()
    return specialize(f, types, program)


__all__ = ["Func", "Source", "annotation_type", "parse_func", "parse_kernel", "specialize"]


def _full_slice(d: ast.expr) -> bool:
    return isinstance(d, ast.Slice) and not (d.lower or d.upper or d.step)
