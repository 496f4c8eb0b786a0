"""Frontend: the Python AST of a kernel or device function → typed IR (:mod:`.ir`).

Sources come from :func:`inspect.getsource`, which works for files and for notebook cells
(IPython keeps each cell's source in :mod:`linecache`); line numbers in errors are those of
the file or cell. Globals are looked up once, at compile time: ``int``/``float``/``bool``
constants and NumPy scalars are frozen into the kernel (as Numba does), modules and
``@vg.func`` functions are resolved by identity, anything else is a
:class:`~vgpu_nb.errors.KernelSyntaxError` that names it and says what to do instead.

Typing rules (see :mod:`.ir` for the promotion lattice):

* parameters are annotated (``vg.f32``, ``vg.f32[:]``, ``vg.i32[:, :]``); a local's type is
  fixed by its first assignment (``x: vg.f64 = 0`` declares one explicitly);
* Python literals are *weak* (int → i32, float → f32 when alone) and adopt the other
  operand's type (``x * 2`` keeps x's type; a float literal next to an int gives f32); a
  literal must fit the type it adopts (``u - 1`` is fine, ``u * -1`` with a u32 ``u`` is an
  error); an explicit cast (``vg.i64(1)``, ``np.float32(2)``) makes a strong value;
* arithmetic on literals only is folded at compile time in Python's precision (the result
  must fit in 64 bits; ``1 << 40`` is an i64), except that division by zero folds to the
  run-time answer (integer ``x // 0 == x % 0 == 0``, IEEE inf/nan for floats);
* ``/`` on integers gives f32 (f64 for 64-bit ints); ``and``/``or``/``not`` give bool;
* implicit conversions (stores, annotated locals, arguments of annotated ``@vg.func``
  parameters, annotated returns) widen or narrow freely except float → int/bool, which needs
  an explicit cast;
* a ``@vg.func`` returns its annotation, else the common type of all its ``return``
  values (``return 0`` and ``return x`` with an f32 ``x`` return f32), and must not be able
  to fall off its end once it returns a value.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import itertools
import math
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
_OP_TEXT = {
    "add": "+", "sub": "-", "mul": "*", "div": "/", "floordiv": "//", "mod": "%", "pow": "**",
    "and": "&", "or": "|", "xor": "^", "lshift": "<<", "rshift": ">>",
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


def _round_float(v: Any, t: DType) -> float:
    """``v`` rounded to the float type ``t`` (a Python float holding that value)."""
    with np.errstate(over="ignore"):
        return float(np.asarray(float(v), dtype=t.np))


def _literal_type(v: Any) -> DType | None:
    """The type of a Python number in a kernel (see :func:`.ir.literal_type`): bool, i32,
    i64 beyond i32, u64 beyond i64, f32 for floats; None beyond 64 bits."""
    if isinstance(v, int) and not isinstance(v, bool):
        if not -(2**63) <= v < 2**64:
            return None
        if v >= 2**63:
            return u64
    return ir.literal_type(v)


#: constructs that are not in the language: AST class → (name, what to use instead)
_UNSUPPORTED: dict[type, tuple[str, str]] = {
    ast.List: (
        "a list literal",
        "kernels have no lists: use scalar locals, or pass an array argument (vg.zeros(n)) "
        "and index it",
    ),
    ast.ListComp: ("a list comprehension", "write a for loop over range(...)"),
    ast.Dict: ("a dict literal", "kernels have no dicts: use scalar locals or array arguments"),
    ast.DictComp: ("a dict comprehension", "use scalars or array arguments"),
    ast.Set: ("a set literal", "use scalars or array arguments"),
    ast.SetComp: ("a set comprehension", "use scalars or array arguments"),
    ast.GeneratorExp: ("a generator expression", "write a for loop over range(...)"),
    ast.Lambda: ("a lambda", "define a @vg.func function"),
    ast.JoinedStr: (
        "an f-string",
        "print values as separate arguments: print('x =', x) (numpy backend only)",
    ),
    ast.MatMult: ("the @ operator", "write the dot product as a loop, or use vg.matmul outside"),
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
    specialised per argument types and inlined. Parameters may be annotated (arguments
    convert to the annotation: ints and floats widen or narrow implicitly, float → int
    needs a cast, as for stores) or left generic (specialised on the argument's type). The
    return type is the annotation, else the common type of every ``return`` value. Called
    from Python, it runs the plain Python function."""

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
        self.lines = "".join(lines).splitlines()
        # Remove the first line's indentation (a function defined in a class, an if or a
        # function) from every line that has it. Unlike textwrap.dedent this keeps working
        # when a docstring or a bracketed continuation line is indented less.
        self.indent = len(lines[0]) - len(lines[0].lstrip()) if lines else 0
        self.cut = [min(self.indent, len(ln) - len(ln.lstrip())) for ln in self.lines]
        self.text = "\n".join(ln[c:] for ln, c in zip(self.lines, self.cut, strict=True))
        try:
            tree = ast.parse(self.text)
        except SyntaxError as exc:  # the file changed since it was imported
            raise KernelSyntaxError(
                f"cannot parse the source of {self.name!r}: {exc.msg}",
                filename=self.filename,
                lineno=self.firstline + (exc.lineno or 1) - 1,
                func=self.name,
                fix="re-run the cell or re-import the module that defines it",
            ) from exc
        node = tree.body[0] if tree.body else None
        if not isinstance(node, ast.FunctionDef):
            self.error(
                f"{self.name!r} is not a def function",
                node,
                KernelSyntaxError,
                fix="decorate a def statement (not a lambda or an async def)",
            )
        self.tree: ast.FunctionDef = node
        #: the line of ``def`` (decorators come before it)
        self.defline = self.line_of(node)

    def line_of(self, node: ast.AST) -> int:
        return self.firstline + getattr(node, "lineno", 1) - 1

    def error(
        self,
        what: str,
        node: ast.AST | None,
        cls: type = KernelSyntaxError,
        fix: str | None = None,
    ) -> NoReturn:
        raise cls(what, fix=fix, **self.site(node))

    def site(self, node: ast.AST | None) -> dict[str, Any]:
        """Where ``node`` is, as keyword arguments of :class:`~vgpu_nb.errors.KernelError`:
        file, line, column (of the caret), the source line and the function's name."""
        lineno = getattr(node, "lineno", None) if node is not None else None
        lineno = lineno or (self.tree.lineno if hasattr(self, "tree") else 1)
        col = getattr(node, "col_offset", None) if node is not None else None
        text = None
        if 0 < lineno <= len(self.lines):
            text = self.lines[lineno - 1]
            if col is not None:  # col_offset counts UTF-8 bytes of the dedented line
                cut = self.cut[lineno - 1]
                col = cut + len(text[cut:].encode()[:col].decode(errors="ignore"))
        return {
            "filename": self.filename,
            "lineno": self.firstline + lineno - 1,
            "col": col,
            "source_line": text,
            "func": self.name,
        }


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
        self.names: set[str] = set()  # function names given out
        self.identifiers: set[str] = set()  # every name in the sources seen so far
        self.sources: dict[Any, Source] = {}  # Func → its parsed source

    def see(self, src: Source) -> None:
        """Remember the identifiers of ``src``: generated names must not collide."""
        for node in ast.walk(src.tree):
            if isinstance(node, ast.Name):
                self.identifiers.add(node.id)
            elif isinstance(node, ast.arg):
                self.identifiers.add(node.arg)

    def unique(self, base: str) -> str:
        name = base
        for k in itertools.count(1):
            if name not in self.names and name not in self.identifiers:
                break
            name = f"{base}_{k}"
        self.names.add(name)
        return name


def _terminates(body: list[Stmt]) -> bool:
    """Whether every path through ``body`` ends in a ``return`` (or loops forever)."""
    for s in body:
        if isinstance(s, Return):
            return True
        if isinstance(s, If) and _terminates(s.body) and _terminates(s.orelse):
            return True
        if (
            isinstance(s, While)
            and isinstance(s.cond, Const)
            and s.cond.value
            and not any(isinstance(x, Break) for x in _own_stmts(s.body))
        ):
            return True
    return False


def _own_stmts(body: list[Stmt]) -> list[Stmt]:
    """The statements of a loop body outside nested loops (whose break is their own)."""
    out: list[Stmt] = []
    for s in body:
        out.append(s)
        if isinstance(s, If):
            out += _own_stmts(s.body) + _own_stmts(s.orelse)
    return out


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
                self.where[p.name] = src.defline
        self.literal_init: set[str] = set()  # locals first assigned a bare literal
        self.ret = ret
        self.ret_fixed = ret is not None
        self.returns: list[tuple[Return, Expr, ast.expr]] = []  # typed at the end
        self.bare_returns: list[ast.Return] = []
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
        if self.kind == "func":
            self.finish_returns(stmts)
        return Function(
            name=self.name,
            params=self.param_list,
            locals=dict(self.locals),
            body=stmts,
            ret=self.ret,
            ndim=self.ndim,
            filename=self.src.filename,
            firstline=self.src.defline,
            py_name=self.src.name,
        )

    def finish_returns(self, stmts: list[Stmt]) -> None:
        """Type the ``return`` values of a device function: its annotation, else the common
        type of every returned value (so ``return 0`` then ``return x`` with an f32 ``x``
        returns f32, the 0 adapting like any literal); and check that a function that
        returns a value cannot fall off its end (Python would return None)."""
        if self.returns and self.bare_returns:
            self.type_fail(
                f"a bare 'return' in {self.src.name}(), which returns a value elsewhere",
                self.bare_returns[0],
                "return a value on every path (e.g. return 0.0)",
            )
        if not self.returns:
            if self.ret is not None:
                self.type_fail(
                    f"{self.src.name}() is annotated to return {self.ret.name} but has no "
                    "return statement",
                    self.src.tree,
                    "return a value, or remove the return annotation",
                )
            return
        if not self.ret_fixed:
            strong = [e.type for _, e, _ in self.returns if not (isinstance(e, Const) and e.weak)]
            weak = [e for _, e, _ in self.returns if isinstance(e, Const) and e.weak]
            t: DType | None = None
            for x in strong:
                t = x if t is None or t is x else ir.promote(t, x)
            if t is None:  # only literals: their common type (True/False stay bool)
                kinds = {w.type for w in weak}
                t = bool_ if kinds == {bool_} else f32 if f32 in kinds else i32
                if t is i32 and i64 in kinds:
                    t = i64
            else:  # literals adopt the strong type, as in x * 2
                for w in weak:
                    t = self.adopt(w, t)
            self.ret = t
            self.ret_fixed = True
        for stmt, e, node in self.returns:
            what = f"the return value of {self.src.name}()"
            stmt.value = self.convert_implicit(e, self.ret, node, what)  # type: ignore[arg-type]
        if not _terminates(stmts):
            last = self.src.tree.body[-1]
            self.type_fail(
                f"{self.src.name}() returns a {self.ret.name} on some paths but can reach "  # type: ignore[union-attr]
                "its end without a return",
                last,
                "end the function with a return statement (Python would return None, "
                "which kernels cannot represent)",
            )

    def hidden_local(self, base: str, t: DType) -> str:
        taken = self.program.identifiers
        while True:
            name = f"_{base}{next(self.hidden)}"
            if name not in self.locals and name not in self.params and name not in self.env:
                if name not in taken:
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
                word = type(n).__name__.lower()
                self.fail(
                    f"'{word}' outside a loop",
                    n,
                    f"'{word}' only works inside for/while; to stop a thread early, use return",
                )
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
            self.fail(
                "print() keywords (sep=, end=, …) are not supported in kernels",
                v.keywords[0],
                "print(a, b) separates values with spaces; pass the pieces as arguments",
            )
        items: list[str | Expr] = []
        for a in v.args:
            if isinstance(a, ast.Constant) and isinstance(a.value, str):
                items.append(a.value)
            else:
                items.append(self.finish(self.expr(a)))
        return Print(line, tuple(items))

    def return_(self, n: ast.Return, line: int) -> Return:
        if n.value is None:
            if self.kind == "func":
                self.bare_returns.append(n)
            return Return(line)
        if self.kind == "kernel":
            self.fail(
                "a kernel cannot return a value",
                n,
                "write the result into an output array: out[i] = value",
            )
        e = self.expr(n.value)
        stmt = Return(line, e)
        self.returns.append((stmt, e, n.value))
        return stmt

    def assign(self, n: ast.Assign, line: int) -> list[Stmt]:
        out: list[Stmt] = []
        for t in n.targets:  # x = ... with x an array: say so before looking at the value
            for sub in ast.walk(t) if isinstance(t, ast.Tuple) else [t]:
                if isinstance(sub, ast.Name) and sub.id in self.params:
                    if self.params[sub.id].is_array:
                        self.assign_local(sub.id, Const(i32, 0), sub, line)  # raises
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
                    fix="i = vg.tid() for 1-D launches, i, j = vg.tid() for 2-D ones",
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
            self.fail(
                "assigning to an attribute is not supported",
                t,
                fix="kernels have no objects: assign to a local or store into an array element",
            )
        self.unsupported(t)

    def assign_local(self, name: str, value: Expr, node: ast.AST, line: int) -> Assign:
        if name in self.params and self.params[name].is_array:
            self.type_fail(
                f"cannot assign to the array parameter {name!r}",
                node,
                f"arrays cannot be rebound inside a kernel: write elements ({name}[i] = "
                "value), or use a local with another name",
            )
        if name in self.locals:
            want = self.locals[name]
            if isinstance(value, Const) and value.weak:
                what = f"the local {name!r}"
                return Assign(line, name, self.convert(value, want, node, what=what))
            if value.type is not want:
                first = self.where.get(name)
                fix = (
                    f"a local keeps the type of its first assignment: convert explicitly "
                    f"({name} = vg.{want.name}(...)) or use another name"
                )
                if name in self.literal_init and ir.promote(want, value.type) is value.type:
                    zero = "0.0" if ir.is_float(value.type) else "0"
                    fix = (
                        f"start it with the wider type: {name} = {zero}, or declare it: "
                        f"{name}: vg.{value.type.name} = 0"
                    )
                self.type_fail(
                    f"local variable {name!r} is {want.name} (first assigned on line "
                    f"{first}) but this assigns a {value.type.name}",
                    node,
                    fix,
                )
            return Assign(line, name, value)
        if name in self.env and isinstance(self.env[name], Func | pytypes.ModuleType):
            what = "module" if isinstance(self.env[name], pytypes.ModuleType) else "@vg.func"
            self.fail(
                f"the local variable {name!r} would hide the {what} {name!r}",
                node,
                "use another name for the local",
            )
        if isinstance(value, Const) and value.weak:
            self.literal_init.add(name)
        value = self.finish(value)
        self.locals[name] = value.type
        self.where[name] = line
        return Assign(line, name, value)

    def annassign(self, n: ast.AnnAssign, line: int) -> list[Stmt]:
        """``x: vg.f64 = 0`` declares a local of that type (the value converts to it as in
        a store: ints and narrower floats implicitly, float → int only with a cast)."""
        if not isinstance(n.target, ast.Name):
            self.fail(
                "annotations are only allowed on local names",
                n.target,
                "annotate the name when it is first assigned: x: vg.f32 = 0",
            )
        t = annotation_type(self.annotation_value(n.annotation))
        if not isinstance(t, DType):
            self.type_fail(
                f"the annotation {ast.unparse(n.annotation)!r} is not a scalar type",
                n.annotation,
                "locals are scalars: vg.f32 vg.f64 vg.i32 vg.u32 vg.i64 vg.bool",
            )
        name = n.target.id
        if name in self.params and self.params[name].is_array:
            self.type_fail(
                f"{name!r} is an array parameter; it cannot be redeclared as a {t.name} local",
                n.target,
                "use another name for the local",
            )
        if name in self.locals and self.locals[name] is not t:
            self.type_fail(
                f"local variable {name!r} is already {self.locals[name].name} (since line "
                f"{self.where.get(name)}); it cannot become {t.name}",
                n,
                "use another name, or annotate its first assignment",
            )
        if n.value is None:
            self.locals[name] = t
            self.where.setdefault(name, line)
            return []
        value = self.convert_implicit(self.expr(n.value), t, n.value, f"the local {name!r}")
        self.locals[name] = t
        self.where.setdefault(name, line)
        return [Assign(line, name, value)]

    def annotation_value(self, n: ast.expr) -> Any:
        """The object an annotation names; a string annotation ("vg.f32[:]") is parsed."""
        if isinstance(n, ast.Constant) and isinstance(n.value, str):
            try:
                inner = ast.parse(n.value.strip(), mode="eval").body
            except SyntaxError:
                self.type_fail(
                    f"the annotation {n.value!r} is not a type",
                    n,
                    fix="write the annotation without quotes: x: vg.f32",
                )
            ast.copy_location(inner, n)
            for sub in ast.walk(inner):
                ast.copy_location(sub, n)
            return self.static_value(inner)
        return self.static_value(n)

    def augassign(self, n: ast.AugAssign, line: int) -> list[Stmt]:
        op = _BINOPS.get(type(n.op))
        if op is None:
            self.unsupported(n.op)
        if isinstance(n.target, ast.Name):
            name = n.target.id
            if name in self.params and self.params[name].is_array:
                self.type_fail(
                    f"cannot apply {_OP_TEXT[op]}= to the whole array {name!r}",
                    n.target,
                    f"update elements: {name}[i] {_OP_TEXT[op]}= value",
                )
            if name not in self.locals:
                self.fail(
                    f"local variable {name!r} is used before assignment",
                    n.target,
                    f"initialise it first: {name} = 0.0 (or 0)",
                )
            cur = Var(self.locals[name], name)
            value = self.binop(op, cur, self.expr(n.value), n)
            return [self.assign_local(name, value, n, line)]
        if isinstance(n.target, ast.Subscript):
            arr, index = self.subscript_parts(n.target)
            pre: list[Stmt] = []
            hoisted = []
            for e in index:  # a[f(i)] += v evaluates f(i) once, as Python does
                if any(isinstance(x, Atomic | Call) for x in ir.walk_expr(e)):
                    tmp = self.hidden_local("i", e.type)
                    pre.append(Assign(line, tmp, e))
                    e = Var(e.type, tmp)
                hoisted.append(e)
            index = tuple(hoisted)
            cur = Load(arr.type.dtype, arr.name, index)  # type: ignore[union-attr]
            value = self.binop(op, cur, self.expr(n.value), n)
            return [*pre, self.store_parts(arr, index, value, n, line)]
        if isinstance(n.target, ast.Attribute):
            self.fail(
                "assigning to an attribute is not supported in kernels",
                n.target,
                fix="kernels have no objects: assign to a local or store into an array element",
            )
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
            text = ast.unparse(node) if isinstance(node, ast.expr) else "value"
            self.type_fail(
                f"storing a {value.type.name} into {arr.name!r} ({dt.name}) would truncate",
                node,
                f"convert explicitly: vg.{dt.name}({text}) (truncates toward zero)",
            )
        what = f"an element of {arr.name!r}"
        return Store(line, arr.name, index, self.convert(value, dt, node, what=what))

    def for_range(self, n: ast.For, line: int) -> ForRange:
        if n.orelse:
            self.fail("for ... else is not supported", n, "use a flag variable")
        if not isinstance(n.target, ast.Name):
            self.fail(
                "the loop variable must be a single name",
                n.target,
                "for k in range(n): ... (unpack inside the body)",
            )
        it = n.iter
        if not (isinstance(it, ast.Call) and self.builtin_of(it.func) == ("py", "range")):
            self.fail(
                "only 'for ... in range(...)' loops are supported",
                it,
                "loop over indices: for k in range(a.shape[0]): ... a[k] ...",
            )
        if it.keywords or not 1 <= len(it.args) <= 3:
            self.fail(
                "range() takes 1 to 3 positional arguments",
                it,
                "range(stop), range(start, stop) or range(start, stop, step)",
            )
        args = [self.expr(a) for a in it.args]
        for a, node in zip(args, it.args, strict=True):
            if not (ir.is_int(a.type) or a.type is bool_):
                self.type_fail(
                    f"range() arguments must be integers, got {a.type.name}",
                    node,
                    f"convert: range(vg.i32({ast.unparse(node)}))",
                )
        if len(args) == 1:
            args = [Const(i32, 0, weak=True), args[0], Const(i32, 1, weak=True)]
        elif len(args) == 2:
            args.append(Const(i32, 1, weak=True))
        if isinstance(args[2], Const) and args[2].value == 0:
            self.fail("range() step must not be zero", it.args[2], "use a step of 1 or -1")
        t = i32
        negative = False
        for a in args:
            weak = isinstance(a, Const) and a.weak
            if weak and a.value < 0:  # type: ignore[union-attr, operator]
                negative = True
            if not weak or a.type in (i64, u64):
                t = ir.promote(t, a.type)
        if negative and t is u32:  # range(u, 0, -1) over a u32: count in i64
            t = i64
        name = n.target.id
        if name in self.params and self.params[name].is_array:
            self.type_fail(
                f"the loop variable {name!r} would hide the array parameter {name!r}",
                n.target,
                "use another name for the loop variable",
            )
        if name in self.locals and self.locals[name] is not t:
            have = self.locals[name]
            if not ir.is_int(have) or ir.promote(have, t) is not have:
                self.type_fail(
                    f"loop variable {name!r} is {have.name} (since line {self.where.get(name)}) "
                    f"but this range counts in {t.name}",
                    n.target,
                    "use another name for the loop variable",
                )
            t = have
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
        """Give a weak literal its default type (int → i32, float → f32; the value rounded
        to that type, so ``x = 0.1`` holds the f32 nearest to 0.1)."""
        if isinstance(e, Const) and e.weak:
            v = e.value
            if ir.is_float(e.type):
                v = _round_float(v, e.type)
            return Const(e.type, v)
        return e

    def expr(self, n: ast.expr) -> Expr:
        if isinstance(n, ast.Constant):
            v = n.value
            if isinstance(v, bool | int | float):
                return self.literal(v, n)
            if isinstance(v, str):
                self.fail(
                    "strings are not supported in kernels",
                    n,
                    "strings only appear in print() on the numpy backend",
                )
            self.fail(
                f"the constant {v!r} is not supported in kernels",
                n,
                fix="kernels compute with int, float and bool values",
            )
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
            self.pure(n.body)
            self.pure(n.orelse)
            a, b = self.expr(n.body), self.expr(n.orelse)
            self.pure_ir(a, n.body)
            self.pure_ir(b, n.orelse)
            a, b, t = self.unify(a, b, n)
            return Select(t, cond, a, b)
        if isinstance(n, ast.Subscript):
            return self.subscript(n)
        if isinstance(n, ast.Call):
            return self.call(n)
        if isinstance(n, ast.Attribute):
            base = n.value
            if isinstance(base, ast.Name) and (base.id in self.params or base.id in self.locals):
                if base.id in self.params and self.params[base.id].is_array:
                    nd = self.params[base.id].type.ndim  # type: ignore[union-attr]
                    if n.attr == "ndim":
                        return Const(i32, nd)
                    if n.attr == "size":
                        out: Expr = Shape(i32, base.id, 0)
                        for d in range(1, nd):
                            out = Binary(i32, "mul", out, Shape(i32, base.id, d))
                        return out
                    self.fail(
                        f"{ast.unparse(n)} is not available in kernels"
                        + (" unindexed" if n.attr == "shape" else ""),
                        n,
                        f"use {base.id}.shape[0]"
                        + (f" / {base.id}.shape[1]" if nd > 1 else "")
                        + f", {base.id}.size or {base.id}.ndim",
                    )
                self.fail(
                    f"{base.id!r} is a number: it has no attribute {n.attr!r}",
                    n,
                    "kernel values are plain numbers (use abs(x), vg.f32(x), math.floor(x) …)",
                )
            value = self.static_value(n, strict=False)
            if value is None:
                self.fail(
                    f"'{ast.unparse(n)}' cannot be used as a value in a kernel",
                    n,
                    fix="kernels use numbers: parameters, locals, global constants and builtins",
                )
            return self.constant(value, n)
        if isinstance(n, ast.Tuple):
            self.fail(
                "tuples are only supported in assignments (a, b = b, a / i, j = vg.tid())",
                n,
                "use one local per value",
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

    def pure_ir(self, e: Expr, node: ast.expr) -> None:
        """No call in a conditional-expression branch may write memory or print."""
        for x in ir.walk_expr(e):
            if isinstance(x, Call):
                u = ir.usage(x.func)
                if u.written or u.atomic or u.prints:
                    self.fail(
                        f"{x.func.py_name}() writes to memory (or prints), so it cannot be "
                        "called inside 'x if c else y' (both sides may run)",
                        node,
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
            if hasattr(builtins, n.id):
                self.fail(
                    f"the builtin {n.id!r} cannot be used as a value here",
                    n,
                    f"call it ({n.id}(...)) if it is a kernel builtin",
                )
            self.fail(
                f"name {n.id!r} is not defined (or used before assignment)",
                n,
                "assign a local before its first use (e.g. before the loop), or define the "
                "global before the kernel is first launched",
            )
        return self.constant(self.env[n.id], n)

    def constant(self, value: Any, n: ast.AST) -> Expr:
        """A global (or closure variable) used as a value: int/float/bool constants and
        NumPy scalars are frozen into the kernel when it is compiled; anything else is an
        error that says what to do with it."""
        name = ast.unparse(n)
        if isinstance(value, np.generic):  # before float: np.float64 subclasses float
            try:
                t = as_dtype(value.dtype)
            except UnsupportedDType:
                self.type_fail(
                    f"the global {name!r} is a NumPy {value.dtype} scalar, which kernels "
                    "do not have",
                    n,
                    "convert it where it is defined: np.float32(...), np.int32(...), …",
                )
            return Const(t, value.item())
        if isinstance(value, bool | int | float):
            return self.literal(value, n)
        if isinstance(value, pytypes.ModuleType):
            self.fail(
                f"the module {name!r} cannot be used as a value in a kernel",
                n,
                f"call its functions or use its constants: {name}.sqrt(x), {name}.pi",
            )
        if isinstance(value, Func):
            self.fail(
                f"the device function {name!r} cannot be used as a value",
                n,
                f"call it: {name}(...)",
            )
        if isinstance(value, DType):
            self.fail(
                f"{name} is a type, not a value",
                n,
                f"convert a value with it: {name}(x)",
            )
        kind = type(value)
        what = (
            kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"
        )
        if isinstance(value, np.ndarray) or kind.__name__ == "Array":
            self.fail(
                f"the kernel uses the global array {name!r} ({what}): kernels only see the "
                "arrays passed to them",
                n,
                f"add a parameter ({name}: vg.f32[:]) and pass it at launch as a vg.Array",
            )
        if isinstance(value, list | dict | set | tuple | bytearray):
            self.fail(
                f"the kernel uses the global {name!r}, a {what}: kernels can only capture "
                "int/float/bool constants (a container can change after compiling)",
                n,
                "pass the values as an array argument (vg.asarray(...)) or as scalar arguments",
            )
        self.fail(
            f"the kernel uses the global {name!r} (a {what}); only int/float/bool constants, "
            "the vg and math modules and @vg.func functions can be used from outside a kernel",
            n,
            "pass it as an argument (arrays as vg.Array, numbers as scalars)",
        )

    def static_value(self, n: ast.expr, strict: bool = True) -> Any:
        """The Python object a Name/Attribute chain refers to (globals only)."""
        if isinstance(n, ast.Name):
            if n.id in self.locals or n.id in self.params:
                if strict:
                    self.fail(
                        f"{n.id!r} is a kernel variable, not a global",
                        n,
                        fix="annotations name types: vg.f32, vg.f32[:]",
                    )
                return None
            if n.id in self.env:
                return self.env[n.id]
            if hasattr(builtins, n.id):
                return getattr(builtins, n.id)
            if strict:
                self.fail(
                    f"name {n.id!r} is not defined",
                    n,
                    fix="define it before the kernel is first launched",
                )
            return None
        if isinstance(n, ast.Attribute):
            base = self.static_value(n.value, strict)
            if base is None:
                return None
            if isinstance(base, pytypes.ModuleType) and base.__name__ == "math":
                if n.attr in kb.MATH_CONSTANTS:
                    return kb.MATH_CONSTANTS[n.attr]
            if not hasattr(base, n.attr):
                self.fail(
                    f"{ast.unparse(n.value)} has no attribute {n.attr!r}",
                    n,
                    fix="check the spelling (math.sqrt, vg.f32, …)",
                )
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
            self.fail(
                f"'{ast.unparse(n)}' is not a known name",
                n,
                fix="use a parameter, a local, a global constant or a builtin",
            )
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
        what: str = "the other operand",
        explicit: bool = False,
    ) -> Expr:
        """``e`` as type ``t``. Literals are converted at compile time: a weak literal must
        fit (``u32`` can't hold -1, an int can't hold 2.5) unless ``explicit`` (a cast
        ``vg.u32(-1)`` wraps, ``vg.i32(2.5)`` truncates). The result of an explicit cast is
        strong: ``vg.i64(1) << 40`` computes in i64."""
        if isinstance(e, Const):
            if e.weak or explicit or e.type is not t:
                weak = e.weak and not explicit
                return Const(t, self.const_as(e.value, t, node, weak, what), weak)
            return e
        if e.type is t:
            return e
        return Cast(t, e)

    def convert_implicit(self, e: Expr, t: DType, node: ast.AST, what: str) -> Expr:
        """An implicit conversion (a store, an annotated local, an argument for an annotated
        parameter, a return value): like C, except that float → int or bool needs a cast."""
        if (
            not (isinstance(e, Const) and e.weak)
            and ir.is_float(e.type)
            and (ir.is_int(t) or t is bool_)
        ):
            self.type_fail(
                f"{what} is {t.name} but this value is {e.type.name}: an implicit conversion "
                "would truncate",
                node,
                f"convert explicitly: vg.{t.name}(...) (truncates toward zero), or "
                f"vg.{t.name}(round(...))",
            )
        return self.convert(e, t, node, what=what)

    def const_as(
        self, v: Any, t: DType, node: ast.AST, weak: bool, what: str = "the other operand"
    ) -> Any:
        if t is bool_:
            return bool(v)
        if ir.is_float(t):
            out = _round_float(v, t)
            if weak and math.isinf(out) and not math.isinf(float(v)):
                self.type_fail(
                    f"the literal {v!r} does not fit in {t.name}, the type of {what}",
                    node,
                    f"use vg.f64 for {what}" if t is f32 else "use a smaller number",
                )
            return out
        if isinstance(v, float):
            if weak:
                self.type_fail(
                    f"the float literal {v!r} would be truncated to {t.name}, the type of {what}",
                    node,
                    f"write an integer, or convert explicitly: vg.{t.name}({v!r})",
                )
            if not math.isfinite(v):
                self.type_fail(
                    f"converting {v!r} to {t.name} has no defined result",
                    node,
                    "use a finite number",
                )
        v = int(v)
        lo, hi = _INT_RANGE[t]
        if not lo <= v <= hi:
            if weak:
                self.type_fail(
                    f"the literal {v} does not fit in {t.name}, the type of {what}",
                    node,
                    f"use a wider type (vg.i64) or wrap explicitly: vg.{t.name}({v})",
                )
            v = int(np.array(v & 0xFFFFFFFFFFFFFFFF, dtype=np.uint64).astype(t.np))
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
                    self.type_fail(
                        f"shifts need integers, got {x.type.name}",
                        node,
                        fix="convert to an integer first: vg.i32(x)",
                    )
            a = self.finish(a) if not aw else self.convert(a, self.adopt(a, b.type), node)
            b = self.finish(b) if not bw else self.convert(b, a.type, node)
            return Binary(a.type, op, a, b)
        a, b, t = self.unify(a, b, node)
        if op in ("and", "or", "xor"):
            if ir.is_float(t):
                self.type_fail(
                    f"bitwise '{op}' needs integers or bools, got {t.name}",
                    node,
                    fix="convert to an integer first: vg.i32(x)",
                )
            return Binary(t, op, a, b)
        if t is bool_:  # arithmetic on bools computes in i32 (True + True == 2)
            a, b, t = Cast(i32, a), Cast(i32, b), i32
        if op == "div":
            ft = ir.true_div_type(t)
            return Binary(ft, "div", self.convert(a, ft, node), self.convert(b, ft, node))
        return Binary(t, op, a, b)

    def fold(self, op: str, a: Const, b: Const, node: ast.AST) -> Expr:
        """Arithmetic on two literals, at compile time, in Python's precision (the result
        must fit in 64 bits; its type follows the literal rules: ``1 << 40`` is an i64).
        Division by zero folds to what the kernel computes at run time: integer ``//`` and
        ``%`` give 0 (NumPy's answer), float division gives inf or nan (IEEE)."""
        x, y = a.value, b.value
        if op in ("div", "floordiv", "mod") and y == 0:
            if op != "div" and not (isinstance(x, float) or isinstance(y, float)):
                return self.literal(0, node)
            with np.errstate(all="ignore"):
                fx, fy = np.float64(x), np.float64(y)
                r = {"div": np.divide, "floordiv": np.floor_divide, "mod": np.mod}[op](fx, fy)
            return self.literal(float(r), node)
        try:
            v = _PY_BINOP[op](x, y)
        except (OverflowError, ValueError, TypeError, ZeroDivisionError) as exc:
            self.fail(
                f"invalid constant expression: {exc}",
                node,
                fix="compute the constant outside the kernel and pass it as an argument",
            )
        if isinstance(v, complex):
            self.fail("this constant expression is complex", node, fix="use real numbers")
        return self.literal(v, node)

    def literal(self, v: Any, node: ast.AST) -> Const:
        """A weak literal for the Python number ``v`` (checked to fit in 64 bits)."""
        t = _literal_type(v)
        if t is None:
            self.type_fail(
                f"the integer {v} does not fit in 64 bits",
                node,
                "kernels compute with at most 64-bit integers (vg.i64 / vg.u64)",
            )
        return Const(t, v, weak=True)

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
            return self.literal(v, n)
        if isinstance(n.op, ast.USub):
            if e.type is bool_:
                e = Cast(i32, e)
            return Unary(e.type, "neg", e)
        if not ir.is_int(e.type) and e.type is not bool_:
            self.type_fail(
                f"'~' needs an integer, got {e.type.name}",
                n,
                fix="~ is bitwise not on integers; for bools use not",
            )
        if e.type is bool_:
            e = Cast(i32, e)
        return Unary(e.type, "invert", e)

    def compare(self, n: ast.Compare) -> Expr:
        left = self.expr(n.left)
        out: Expr | None = None
        for op_node, right_node in zip(n.ops, n.comparators, strict=True):
            op = _CMPOPS.get(type(op_node))
            if op is None:
                if isinstance(op_node, ast.Is | ast.IsNot):
                    self.fail(
                        "'is' / 'is not' comparisons are not supported in kernels",
                        n,
                        "kernel values are numbers, not objects: use == or !=",
                    )
                self.fail(
                    "'in' / 'not in' tests are not supported in kernels",
                    n,
                    "compare explicitly: x == a or x == b, or loop over an array",
                )
            right = self.expr(right_node)
            if right_node is not n.comparators[-1] and any(
                isinstance(x, Atomic | Call) for x in ir.walk_expr(right)
            ):
                self.fail(
                    "a chained comparison would evaluate this atomic or function call twice",
                    right_node,
                    "assign it to a local first: v = f(x); lo < v < hi",
                )
            if isinstance(left, Const) and left.weak and isinstance(right, Const) and right.weak:
                c: Expr = Const(bool_, _PY_CMP[op](left.value, right.value))
            else:
                a, b, _ = self.unify(left, right, n)
                c = Compare(bool_, op, a, b)
            if out is None:
                out = c
            elif isinstance(out, Const) and isinstance(c, Const):
                out = Const(bool_, bool(out.value and c.value))
            else:
                out = Logical(bool_, "and", out, c)
            left = right
        return out  # type: ignore[return-value]

    # ---- subscripts ---------------------------------------------------------------------
    def array_param(self, n: ast.expr) -> Param:
        if isinstance(n, ast.Name) and n.id in self.params and self.params[n.id].is_array:
            return self.params[n.id]
        if isinstance(n, ast.Name) and n.id in self.locals:
            self.type_fail(
                f"{n.id!r} is a {self.locals[n.id].name} scalar, not an array",
                n,
                fix="only array parameters (annotated vg.f32[:] …) can be indexed",
            )
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
                self.fail(
                    "slicing is not supported in kernels",
                    it,
                    f"index single elements: {arr.name}[{', '.join('ijk'[:nd])}] (loop over "
                    "the range you need)",
                )
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
                    f"convert: {arr.name}[vg.i32({ast.unparse(it)})] (truncates toward zero)",
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
                    fix="a.shape[0] or a.shape[1]",
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
            self.fail(
                f"keyword arguments are not supported in calls to {ast.unparse(n.func)}()",
                n.keywords[0],
                "pass the arguments by position (kernel builtins take no keywords)",
            )
        for a in n.args:
            if isinstance(a, ast.Starred):
                self.unsupported(a)
        kind, name = b.kind, b.name
        if kind == "tid":
            if n.args:
                self.fail("vg.tid() takes no arguments", n, fix="i = vg.tid()")
            self.use_tid(1, n)
            return ThreadId(i32, 0)
        if kind == "atomic":
            return self.atomic(name, n)
        if kind == "cast":
            return self.cast_call(as_dtype(name), n)
        if kind == "where":
            if len(n.args) != 3:
                self.fail("vg.where(cond, a, b) takes 3 arguments", n, fix="vg.where(cond, a, b)")
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
        if mod.startswith("numpy") or (
            isinstance(target, pytypes.ModuleType) and target.__name__.startswith("numpy")
        ):
            attr = n.func.attr if isinstance(n.func, ast.Attribute) else text
            alias = {"absolute": "abs", "arcsin": "asin", "arccos": "acos", "arctan": "atan",
                     "arctan2": "atan2", "power": "pow", "rint": "round", "minimum": "min",
                     "maximum": "max"}.get(attr, attr)  # fmt: skip
            if alias in ir.MATH_FUNCS:
                fix = f"use the kernel builtin: math.{alias}(...) or vg.{alias}(...)"
                if alias in ("abs", "min", "max", "round"):
                    fix = f"use the kernel builtin: {alias}(...)"
            else:
                fix = (
                    "use the kernel builtins (math.sqrt, vg.exp, abs, min, max …), casts vg.f32(x)"
                )
            self.fail(
                f"NumPy call {text}() inside a kernel: NumPy does not run on the device", n, fix
            )
        from .api import Kernel  # (cycle: api imports this module)

        f = n.func
        if isinstance(f, ast.Subscript):  # k[n](...)
            target = self.static_value(f.value, strict=False)
        if isinstance(target, Kernel):
            self.fail(
                f"a kernel cannot launch another kernel ({text})",
                n,
                "turn the shared code into a @vg.func and call that",
            )
        if mod.startswith("vgpu_nb.") and callable(target):
            name = getattr(target, "__name__", text)
            fix = "call it outside the kernel, on whole arrays"
            if name in ("min", "max", "sum", "prod", "mean"):
                fix = (
                    f"{name}() of vgpu_nb reduces an array; in a kernel use Python's "
                    "min(a, b) / max(a, b), or a loop"
                )
            self.fail(f"{text}() is a vgpu_nb array operation, not a kernel builtin", n, fix)
        if (
            isinstance(f, ast.Name)
            and hasattr(builtins, f.id)
            and target is getattr(builtins, f.id)
        ):
            self.fail(
                f"the Python builtin {f.id}() is not supported in kernels",
                n,
                "kernels have abs, min, max, round, len, range, int, float, bool and print; "
                "write other things as a loop or a @vg.func",
            )
        if isinstance(f, ast.Name) and (f.id in self.locals or f.id in self.params):
            self.fail(
                f"{f.id!r} is a variable of the kernel, not a function",
                n,
                "call a @vg.func or a builtin",
            )
        if isinstance(f, ast.Name) and target is None:
            self.fail(
                f"name {f.id!r} is not defined",
                n,
                "define it as a @vg.func before the kernel is first launched",
            )
        if target is None and isinstance(f, ast.Attribute):
            self.fail(
                f"method calls are not supported in kernels ({text}())",
                n,
                "kernel values are plain numbers: use builtins (abs(x), math.floor(x), vg.f32(x))"
                " or a @vg.func",
            )
        self.fail(
            f"{text}() is a plain Python function: kernels can only call @vg.func device "
            "functions and builtins",
            n,
            f"decorate {text} with @vg.func, or use a builtin (math.exp, vg.sqrt, abs, min, max …)",
        )

    def cast_call(self, t: DType, n: ast.Call) -> Expr:
        if len(n.args) != 1:
            self.fail(f"vg.{t.name}(x) takes one argument", n, fix=f"vg.{t.name}(value)")
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
                self.fail("len() takes one argument", n, "len(a) is a.shape[0]")
            arr = self.array_param(args[0])
            return Shape(i32, arr.name, 0)
        if name in ("min", "max"):
            if len(args) < 2:
                self.fail(
                    f"{name}() in a kernel takes 2 or more numbers",
                    n,
                    f"{name}(a, b); to reduce an array write a loop or a @vg.reduction",
                )
            out = self.expr(args[0])
            for a in args[1:]:
                x, y, t = self.unify(out, self.expr(a), n)
                out = Math(t, name, (self.finish(x), self.finish(y)))
            return out
        if name == "abs":
            return self.math("abs", n)
        if name == "round":
            if len(args) != 1:
                self.fail(
                    "round() takes one argument in kernels (no ndigits)",
                    n,
                    "scale first: round(x * 100.0) / 100.0",
                )
            return self.math("round", n)
        if name == "range":
            self.fail(
                "range() is only allowed as the iterable of a for loop",
                n,
                "for k in range(n): ...",
            )
        if name == "print":
            self.fail(
                "print() is a statement in kernels, not a value",
                n,
                "call print(...) on its own line",
            )
        self.fail(f"{name}() is not supported in kernels", n, "write it as a loop or a @vg.func")

    def math(self, name: str, n: ast.Call) -> Expr:
        arity = ir.MATH_FUNCS[name]
        if len(n.args) != arity:
            self.fail(
                f"{name}() takes {arity} argument{'s' if arity > 1 else ''}",
                n,
                f"call it as {name}({', '.join('xyz'[:arity])})",
            )
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
                fix="vg.atomic_add(counts, i, 1) or vg.atomic_add(grid, (i, j), v)",
            )
        arr = self.array_param(n.args[0])
        dt = arr.type.dtype  # type: ignore[union-attr]
        if dt not in (i32, u32, f32):
            self.type_fail(
                f"vg.atomic_{op} supports i32, u32 and f32 arrays; {arr.name!r} is {dt.name}",
                n.args[0],
                fix="use an i32, u32 or f32 array for the atomic",
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
            self.type_fail(
                f"{arr.name!r} is {nd}-D: give {nd} indices",
                idx_node,
                fix=f"index it like the array: {arr.name}[" + ", ".join("ij"[:nd]) + "]",
            )
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
            self.fail(
                f"keyword arguments are not supported in calls to {f.__name__}()",
                n.keywords[0],
                "pass the arguments by position, in the order of the parameters",
            )
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
                    self.type_fail(
                        f"{f.__name__}() parameter {p.name!r} is {p.type!r} but {a.name!r} "
                        f"is {a.type!r}",
                        node,
                        "pass an array of that type, or leave the parameter unannotated (generic)",
                    )
                final.append(a)
            else:
                if p.is_array:
                    self.type_fail(
                        f"{f.__name__}() parameter {p.name!r} needs an array",
                        node,
                        "pass an array parameter of the caller by name",
                    )
                what = f"{f.__name__}() parameter {p.name!r}"
                final.append(self.convert_implicit(a, p.type, node, what))  # type: ignore[arg-type]
        if fn.ret is None and not statement:
            self.type_fail(
                f"{f.__name__}() returns no value",
                n,
                f"call it as a statement, or return a value from {f.__name__}()",
            )
        return Call(fn.ret or bool_, fn, tuple(final))


def _signature(
    src: Source, builder_env: dict[str, Any], kind: str = "func"
) -> list[tuple[str, Any, ast.arg]]:
    """(name, annotation value or None, node) per parameter; rejects what we lack."""
    args = src.tree.args
    if args.vararg or args.kwarg or args.kwonlyargs or args.posonlyargs:
        bad = args.vararg or args.kwarg or (args.kwonlyargs or args.posonlyargs)[0]
        src.error(
            "*args, **kwargs, keyword-only and positional-only parameters are not supported "
            f"in {'kernels' if kind == 'kernel' else 'device functions'}",
            bad,
            fix="list every parameter by name, each with its annotation: def k(x: vg.f32[:], "
            "n: vg.i32)",
        )
    if args.defaults:
        src.error(
            "default parameter values are not supported",
            args.defaults[0],
            fix="pass every argument at the call",
        )
    out = []
    probe = _Builder.__new__(_Builder)
    probe.src, probe.env, probe.locals, probe.params = src, builder_env, {}, {}
    probe.kind = kind
    for a in args.args:
        ann = probe.annotation_value(a.annotation) if a.annotation is not None else None
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
        raise KernelSyntaxError(
            f"recursion is not supported in kernels ({chain})", fix="rewrite it as a loop"
        )
    src = program.sources.get(f)
    if src is None:
        src = program.sources[f] = Source(f.pyfunc)
        program.see(src)
    env = _globals_of(f.pyfunc)
    sig = _signature(src, env)
    names = ", ".join(name for name, _, _ in sig)
    if len(sig) != len(types):
        n = len(sig)
        msg = f"{f.__name__}({names}) takes {n} argument{'s' if n != 1 else ''}, got {len(types)}"
        if caller is not None:
            caller.error(msg, node, KernelTypeError, fix=f"call it as {f.__name__}({names})")
        raise KernelTypeError(msg, fix=f"call it as {f.__name__}({names})")
    params = []
    for (name, ann, anode), t in zip(sig, types, strict=True):
        pt = annotation_type(ann) if ann is not None else t
        if ann is not None and pt is None:
            src.error(
                f"unknown type annotation for {name!r}: {ann!r}",
                anode,
                KernelTypeError,
                fix="use vg.f32 vg.f64 vg.i32 vg.u32 vg.i64 vg.bool, vg.f32[:] / vg.f32[:, :], "
                "or leave it out (generic)",
            )
        if isinstance(t, ArrayType) != isinstance(pt, ArrayType):
            what = f"{f.__name__}() parameter {name!r} is {pt}, got {t}"
            fix = (
                "pass an array parameter of the caller by name"
                if isinstance(pt, ArrayType)
                else "pass a scalar (index the array: a[i])"
            )
            if caller is not None:
                caller.error(what, node, KernelTypeError, fix=fix)
            raise KernelTypeError(what, fix=fix)
        params.append(Param(name, pt))  # type: ignore[arg-type]
    key = (f, tuple(p.type for p in params))
    hit = program.funcs.get(key)
    if hit is not None:
        return hit
    ret_ann = src.tree.returns
    ret: DType | None = None
    if ret_ann is not None and not (isinstance(ret_ann, ast.Constant) and ret_ann.value is None):
        probe = _Builder(src, params, "func", program)
        rt = annotation_type(probe.annotation_value(ret_ann))
        if not isinstance(rt, DType):
            src.error(
                "the return annotation must be a scalar type",
                ret_ann,
                KernelTypeError,
                fix="-> vg.f32 (or vg.f64 vg.i32 vg.u32 vg.i64 vg.bool), or leave it out",
            )
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
    for name, ann, anode in _signature(src, env, "kernel"):
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
    program.see(src)
    b = _Builder(src, params, "kernel", program)
    fn = b.build()
    fn.funcs = list(program.order)
    return fn


def parse_func(f: Func, types: Sequence[ir.Type], program: _Program | None = None) -> Function:
    """A device function specialised for ``types``, standalone (reductions use it)."""
    program = program or _Program()
    return specialize(f, types, program)


# ---- where launch-time errors point -----------------------------------------------------------
def signature_site(pyfunc: Callable[..., Any], param: str | None = None) -> dict[str, Any]:
    """Keyword arguments of :class:`~vgpu_nb.errors.KernelError` that point at the ``def``
    line of ``pyfunc``, the caret under parameter ``param`` (for launch errors: a wrong
    argument count, dtype or kind of argument). Empty if the source cannot be read."""
    try:
        src = Source(pyfunc)
    except KernelSyntaxError:
        return {}
    node: ast.AST = src.tree
    for a in src.tree.args.args:
        if a.arg == param:
            node = a
    site = src.site(node)
    if node is src.tree:  # point at the parameter list, not at "def"
        site["col"] = None
    return site


def line_site(fn: Function, line: int | None) -> dict[str, Any]:
    """:class:`~vgpu_nb.errors.KernelError` keyword arguments for line ``line`` of the file
    of ``fn`` (an IR statement's ``line``); the def line when ``line`` is None."""
    import linecache

    line = line or fn.firstline
    text = linecache.getline(fn.filename, line) or None
    return {
        "filename": fn.filename,
        "lineno": line,
        "source_line": text.rstrip("\n") if text else None,
        "func": fn.py_name or fn.name,
    }


def use_site(fn: Function, what: Any) -> dict[str, Any]:
    """Where a kernel first uses ``what``: ``"tid"`` (vg.tid()), ``"print"``, or a scalar
    DType (f64 on WGSL …), searching its device functions too — so an error raised at
    launch or compile time ("f64 is not supported on this adapter", "print() only runs on
    numpy", "2-D launch of a 1-D kernel") can show the user's line. Falls back to the
    kernel's def line."""

    for f in (fn, *fn.funcs):
        for s in ir.walk_stmts(f.body):
            if _uses(f, s, what):
                return line_site(f, s.line)
        if isinstance(what, DType) and any(
            (p.type.dtype if isinstance(p.type, ArrayType) else p.type) is what for p in f.params
        ):
            return line_site(f, f.firstline)
    return line_site(fn, fn.firstline)


def _uses(f: Function, s: Stmt, what: Any) -> bool:
    if what == "print":
        return isinstance(s, Print)
    if isinstance(what, DType) and isinstance(s, Assign) and f.locals.get(s.name) is what:
        return True
    for e in ir.stmt_exprs(s):
        for x in ir.walk_expr(e):
            if what == "tid" and isinstance(x, ThreadId):
                return True
            if isinstance(what, DType) and isinstance(x, Expr) and x.type is what:
                return True
    return False


def format_site(site: dict[str, Any]) -> str | None:
    """``File "…", line N`` and the source line, for errors that are not KernelErrors
    (``UnsupportedOnBackend(where=...)``)."""
    if not site.get("lineno"):
        return None
    out = f'File "{site["filename"]}", line {site["lineno"]}'
    if site.get("func"):
        out += f", in {site['func']}"
    if site.get("source_line"):
        out += "\n    " + site["source_line"].strip()
    return out


__all__ = [
    "Func", "Source", "annotation_type", "format_site", "line_site", "parse_func",
    "parse_kernel", "signature_site", "specialize", "use_site",
]  # fmt: skip
