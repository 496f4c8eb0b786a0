"""Bad kernels: each gets the *named* error class, on the user's exact line (marked
``# <- error`` below), with a message that names the construct, shows the source line and
says what to do instead (``→``).

Kernels are compiled lazily, so the bad ones are defined at module level and only
``k.ir`` (or a launch) raises. Launch-time errors (argument count, dtype, domain) point at
the kernel's ``def`` line, the parameter in question under the caret.
"""

from __future__ import annotations

import inspect
import linecache
import math
from typing import Any

import numpy as np
import pytest

import vgpu_nb as vg
from vgpu_nb.backends.base import Device
from vgpu_nb.devices import discover
from vgpu_nb.kernel import frontend

MARK = "# <- error"

G_LIST = [1.0, 2.0, 3.0]
G_ARRAY = np.arange(4, dtype=np.float32)


# ---- helpers ----------------------------------------------------------------------------------
def marked_line(obj: Any) -> tuple[int, str]:
    """(line number, text) of the one line of ``obj``'s source that carries MARK."""
    obj = getattr(obj, "pyfunc", obj)
    lines, first = inspect.getsourcelines(obj)
    hits = [(first + k, ln) for k, ln in enumerate(lines) if MARK in ln]
    assert len(hits) == 1, f"{obj.__name__}: mark exactly one line with {MARK!r}"
    return hits[0]


def check(exc: BaseException, cls: type, obj: Any, *words: str, source: bool = True) -> str:
    """``exc`` is exactly ``cls``, on the marked line of ``obj``, names ``words``, shows
    the line (``source``) and carries a fix."""
    assert type(exc) is cls, f"{type(exc).__name__} is not {cls.__name__}: {exc}"
    msg = str(exc)
    line, text = marked_line(obj)
    assert exc.lineno == line, f"line {exc.lineno} != {line}\n{msg}"
    assert exc.filename == inspect.getsourcefile(getattr(obj, "pyfunc", obj))
    assert f", line {line}" in msg
    for w in words:
        assert w in msg, f"{w!r} not in:\n{msg}"
    if source:
        assert text.strip() in msg, f"source line not shown:\n{msg}"
    assert "→" in msg and exc.fix, f"no fix in:\n{msg}"
    return msg


def caret_under(msg: str, token: str) -> bool:
    """The caret line of ``msg`` points at the first ``token`` of the source line above it."""
    lines = msg.splitlines()
    k = next(i for i, ln in enumerate(lines) if ln.strip() == "^")
    return lines[k - 1].index(token) == lines[k].index("^")


def compile_error(k: vg.Kernel) -> vg.KernelError:
    with pytest.raises(vg.KernelError) as e:
        k.ir  # noqa: B018  (parsing is lazy: .ir compiles)
    return e.value


# ---- constructs the language does not have ---------------------------------------------------
@vg.kernel
def list_literal(out: vg.f32[:]):
    i = vg.tid()
    w = [1.0, 2.0]  # <- error
    out[i] = w[0]


@vg.kernel
def dict_literal(out: vg.f32[:]):
    i = vg.tid()
    w = {"a": 1.0}  # <- error
    out[i] = w["a"]


@vg.kernel
def string_value(out: vg.f32[:]):
    i = vg.tid()
    name = "weight"  # <- error
    out[i] = name


@vg.kernel
def uses_lambda(out: vg.f32[:]):
    i = vg.tid()
    f = lambda v: v * 2.0  # <- error  # noqa: E731
    out[i] = f(1.0)


@vg.kernel
def uses_listcomp(out: vg.f32[:]):
    i = vg.tid()
    vals = [k * 1.0 for k in range(4)]  # <- error
    out[i] = vals[0]


@vg.kernel
def uses_sum(x: vg.f32[:], out: vg.f32[:]):
    i = vg.tid()
    out[i] = sum(x)  # <- error


@vg.kernel
def uses_try(out: vg.f32[:]):
    i = vg.tid()
    try:  # <- error
        out[i] = 1.0
    except IndexError:
        pass


@vg.kernel
def uses_with(out: vg.f32[:]):
    i = vg.tid()
    with np.errstate(all="ignore"):  # <- error
        out[i] = 1.0


@vg.kernel
def uses_slice(x: vg.f32[:], out: vg.f32[:]):
    i = vg.tid()
    out[i] = x[1:3]  # <- error


@vg.kernel
def float_index(x: vg.f32[:], out: vg.f32[:]):
    i = vg.tid()
    out[i] = x[i * 0.5]  # <- error


@vg.kernel
def unannotated(x, out: vg.f32[:]):  # <- error
    i = vg.tid()
    out[i] = x


@vg.kernel
def returns_value(x: vg.f32[:]):
    i = vg.tid()
    return x[i] * 2.0  # <- error


def plain_python(v):
    return v * 2.0


@vg.kernel
def calls_plain(x: vg.f32[:]):
    i = vg.tid()
    x[i] = plain_python(x[i])  # <- error


@vg.kernel
def method_call(x: vg.f32[:]):
    i = vg.tid()
    x[i] = x[i].conjugate()  # <- error


@vg.kernel
def assigns_array(x: vg.f32[:], y: vg.f32[:]):
    i = vg.tid()
    x = y  # <- error
    x[i] = 0.0


@vg.kernel
def negative_index(x: vg.f32[:]):
    x[-1] = 0.0  # <- error


@vg.kernel
def keyword_builtin(x: vg.f32[:]):
    i = vg.tid()
    x[i] = max(x[i], 1.0, key=abs)  # <- error


@vg.kernel
def star_params(*arrays):  # <- error
    pass


@vg.func
def scale(v, k):
    return v * k


@vg.kernel
def keyword_func(x: vg.f32[:]):
    i = vg.tid()
    x[i] = scale(x[i], k=2.0)  # <- error


@vg.kernel
def star_call(x: vg.f32[:], k: vg.f32):
    i = vg.tid()
    x[i] = scale(*x)  # <- error


@vg.kernel
def is_compare(x: vg.f32[:], n: vg.i32):
    i = vg.tid()
    if i is n:  # <- error
        x[i] = 0.0


@vg.kernel
def in_test(x: vg.i32[:]):
    i = vg.tid()
    if i in (1, 2):  # <- error
        x[i] = 0


@vg.kernel
def module_value(x: vg.f32[:]):
    i = vg.tid()
    x[i] = math  # <- error


@vg.kernel
def fstring_print(x: vg.f32[:]):
    i = vg.tid()
    print(f"x = {x[i]}")  # <- error


@vg.kernel
def kernel_calls_kernel(x: vg.f32[:]):
    list_literal[1](x)  # <- error


@vg.kernel
def vg_reduction_in_kernel(x: vg.f32[:], y: vg.f32[:]):
    i = vg.tid()
    x[i] = vg.min(x[i], y[i])  # <- error


@vg.kernel
def loop_over_array(x: vg.f32[:]):
    for v in x:  # <- error
        v += 1.0


SYNTAX_CASES = {
    "list_literal": (list_literal, ["a list literal", "vg.zeros"]),
    "dict_literal": (dict_literal, ["a dict literal"]),
    "string": (string_value, ["strings are not supported", "print()"]),
    "lambda": (uses_lambda, ["a lambda", "@vg.func"]),
    "list_comprehension": (uses_listcomp, ["a list comprehension", "for loop"]),
    "try_except": (uses_try, ["try/except", "if"]),
    "with": (uses_with, ["a with statement"]),
    "slicing": (uses_slice, ["slicing", "x[i]"]),
    "builtin_sum": (uses_sum, ["builtin sum()", "loop"]),
    "calls_plain_function": (calls_plain, ["plain_python()", "@vg.func"]),
    "method_call": (method_call, ["method calls", "conjugate"]),
    "negative_literal_index": (negative_index, ["negative indices", "x.shape[0] - 1"]),
    "keyword_arguments_builtin": (keyword_builtin, ["keyword arguments", "max()"]),
    "keyword_arguments_func": (keyword_func, ["keyword arguments", "scale()"]),
    "star_args_call": (star_call, ["*-unpacking"]),
    "star_args_params": (star_params, ["*args", "def k(x: vg.f32[:]"]),
    "is_comparison": (is_compare, ["'is'", "=="]),
    "in_test": (in_test, ["'in'", "x == a or x == b"]),
    "module_as_value": (module_value, ["the module 'math'", "math.sqrt(x)"]),
    "fstring": (fstring_print, ["an f-string", "print('x =', x)"]),
    "kernel_calls_kernel": (kernel_calls_kernel, ["cannot launch another kernel", "@vg.func"]),
    "vg_min_in_kernel": (vg_reduction_in_kernel, ["vg.min()", "array operation", "min(a, b)"]),
    "for_over_array": (loop_over_array, ["for ... in range(...)", "range(a.shape[0])"]),
    "returns_value": (returns_value, ["cannot return a value", "out[i] = value"]),
}


@pytest.mark.parametrize("case", list(SYNTAX_CASES))
def test_syntax_error(case):
    k, words = SYNTAX_CASES[case]
    check(compile_error(k), vg.KernelSyntaxError, k, *words)


TYPE_CASES = {
    "float_index": (float_index, ["array indices must be integers", "f32", "vg.i32("]),
    "unannotated_param": (unannotated, ["parameter 'x' has no type annotation", "x: vg.f32"]),
    "assign_array_param": (assigns_array, ["cannot assign to the array parameter 'x'"]),
}


@pytest.mark.parametrize("case", list(TYPE_CASES))
def test_type_error(case):
    k, words = TYPE_CASES[case]
    check(compile_error(k), vg.KernelTypeError, k, *words)


def test_caret_points_at_the_construct():
    msg = str(compile_error(list_literal))
    assert caret_under(msg, "[1.0")
    msg = str(compile_error(float_index))
    assert caret_under(msg, "i * 0.5")
    msg = str(compile_error(unannotated))
    assert caret_under(msg, "x, out")


# ---- recursion --------------------------------------------------------------------------------
@vg.func
def countdown(n):
    return 0 if n <= 0 else countdown(n - 1)  # <- error


@vg.kernel
def self_recursive(out: vg.i32[:]):
    i = vg.tid()
    out[i] = countdown(i)


@vg.func
def is_even(n):
    if n == 0:
        return True
    return is_odd(n - 1)


@vg.func
def is_odd(n):
    if n == 0:
        return False
    return is_even(n - 1)  # <- error


@vg.kernel
def mutually_recursive(out: vg.bool[:]):
    i = vg.tid()
    out[i] = is_even(i)


def test_recursion():
    msg = check(compile_error(self_recursive), vg.KernelSyntaxError, countdown, "recursion")
    assert "countdown → countdown" in msg and "loop" in msg


def test_mutual_recursion():
    msg = check(compile_error(mutually_recursive), vg.KernelSyntaxError, is_odd, "recursion")
    assert "is_even → is_odd → is_even" in msg


# ---- NumPy and globals -------------------------------------------------------------------------
@vg.kernel
def numpy_call(x: vg.f32[:]):
    i = vg.tid()
    x[i] = np.sqrt(x[i])  # <- error


@vg.kernel
def global_list(x: vg.f32[:]):
    i = vg.tid()
    x[i] = G_LIST[i]  # <- error


@vg.kernel
def global_array(x: vg.f32[:]):
    i = vg.tid()
    x[i] = G_ARRAY[i] * 2.0  # <- error


def test_numpy_call():
    check(compile_error(numpy_call), vg.KernelSyntaxError, numpy_call, "NumPy call np.sqrt()",
          "math.sqrt")  # fmt: skip


def test_global_list():
    check(compile_error(global_list), vg.KernelSyntaxError, global_list, "'G_LIST'", "a list",
          "array argument")  # fmt: skip


def test_global_numpy_array():
    check(compile_error(global_array), vg.KernelSyntaxError, global_array, "'G_ARRAY'",
          "numpy.ndarray", "add a parameter")  # fmt: skip


def test_closure_over_mutable_locals():
    weights = [0.5, 0.25]
    table = np.ones(3, dtype=np.float32)

    @vg.kernel
    def closes_over_list(x: vg.f32[:]):
        i = vg.tid()
        x[i] = weights[0]  # <- error

    @vg.kernel
    def closes_over_array(x: vg.f32[:]):
        i = vg.tid()
        x[i] = table[0]  # <- error

    check(compile_error(closes_over_list), vg.KernelSyntaxError, closes_over_list, "'weights'")
    check(compile_error(closes_over_array), vg.KernelSyntaxError, closes_over_array, "'table'")


# ---- typing ----------------------------------------------------------------------------------
@vg.kernel
def local_changes_type(x: vg.f32[:]):
    i = vg.tid()
    acc = 0
    for k in range(4):
        acc += x[k]  # <- error
    x[i] = acc


@vg.kernel
def float_into_int(x: vg.f32[:], out: vg.i32[:]):
    i = vg.tid()
    out[i] = x[i] * 2.0  # <- error


@vg.kernel
def float_literal_into_int(out: vg.i32[:]):
    i = vg.tid()
    out[i] = 2.5  # <- error


@vg.kernel
def literal_overflow(out: vg.u32[:]):
    i = vg.tid()
    v: vg.u32 = -1  # <- error
    out[i] = v


@vg.kernel
def huge_literal(out: vg.i64[:]):
    out[0] = 2**70  # <- error


@vg.func
def half_return(v):
    if v > 0.0:
        return v
    v = -v  # <- error


@vg.kernel
def falls_off_end(x: vg.f32[:]):
    i = vg.tid()
    x[i] = half_return(x[i])


@vg.func
def wants_int(n: vg.i32):
    return n * 2


@vg.kernel
def float_for_int_param(x: vg.f32[:], out: vg.i32[:]):
    i = vg.tid()
    out[i] = wants_int(x[i])  # <- error


@vg.kernel
def whole_array_update(x: vg.f32[:]):
    x += 1.0  # <- error


@vg.kernel
def unknown_name(x: vg.f32[:]):
    i = vg.tid()
    x[i] = undefined_helper(x[i])  # <- error  # noqa: F821


TYPING_CASES = {
    "local_changes_type": (local_changes_type, vg.KernelTypeError,
                           ["'acc' is i32", "assigns a f32", "acc = 0.0"]),
    "float_into_int_array": (float_into_int, vg.KernelTypeError,
                             ["storing a f32 into 'out' (i32)", "vg.i32("]),
    "float_literal_into_int_array": (float_literal_into_int, vg.KernelTypeError,
                                     ["float literal 2.5", "i32"]),
    "literal_does_not_fit": (literal_overflow, vg.KernelTypeError, ["-1 does not fit in u32"]),
    "literal_beyond_64_bits": (huge_literal, vg.KernelTypeError, ["does not fit in 64 bits"]),
    "falls_off_end": (falls_off_end, vg.KernelTypeError,
                      ["can reach its end without a return", "return"]),
    "float_for_int_param": (float_for_int_param, vg.KernelTypeError,
                            ["wants_int() parameter 'n' is i32", "f32", "vg.i32("]),
    "whole_array_update": (whole_array_update, vg.KernelTypeError,
                           ["whole array 'x'", "x[i] += value"]),
    "unknown_name": (unknown_name, vg.KernelSyntaxError, ["'undefined_helper' is not defined"]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(TYPING_CASES))
def test_typing_error(case):
    k, cls, words = TYPING_CASES[case]
    where = half_return if k is falls_off_end else k
    check(compile_error(k), cls, where, *words)


# ---- threads ------------------------------------------------------------------------------------
@vg.func
def my_index():
    return vg.tid()  # <- error


@vg.kernel
def tid_in_func(x: vg.f32[:]):
    x[my_index()] = 1.0


@vg.kernel
def mixed_tid(x: vg.f32[:, :]):
    k = vg.tid()
    i, j = vg.tid()  # <- error
    x[i, j] = vg.f32(k)


def test_tid_in_func():
    check(compile_error(tid_in_func), vg.KernelSyntaxError, my_index, "vg.tid()",
          "kernel body", "argument")  # fmt: skip


def test_mixed_1d_2d_tid():
    check(compile_error(mixed_tid), vg.KernelSyntaxError, mixed_tid, "1-D and a 2-D",
          "i, j = vg.tid()")  # fmt: skip


# ---- break outside a loop ---------------------------------------------------------------------
def cell(source: str, filename: str) -> dict[str, Any]:
    """Run ``source`` the way IPython runs a cell: compiled with the cell's name and kept
    in linecache so that inspect (and our errors) can show its lines."""
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    ns: dict[str, Any] = {"vg": vg}
    exec(compile(source, filename, "exec"), ns)  # noqa: S102
    return ns


BREAK_CELL = """\
@vg.kernel
def k(x: vg.f32[:]):
    i = vg.tid()
    if i > 2:
        break
    x[i] = 1.0
"""


def test_break_outside_loop():
    # Python rejects it when the cell runs, before vgpu_nb sees the kernel, on that line.
    with pytest.raises(SyntaxError) as e:
        cell(BREAK_CELL, "<ipython-input-7-break>")
    assert e.value.lineno == 5 and "outside loop" in e.value.msg
    # The frontend checks it as well (a source that changed after the cell ran).
    ns = cell(BREAK_CELL.replace("break", "pass"), "<ipython-input-8-break>")
    name = "<ipython-input-8-break>"
    linecache.cache[name] = (len(BREAK_CELL), None, BREAK_CELL.splitlines(True), name)
    err = compile_error(ns["k"])
    assert type(err) is vg.KernelSyntaxError and err.lineno == 5
    assert "'break' outside a loop" in str(err) and "break" in str(err).splitlines()[2]
    assert "→" in str(err)


# ---- a notebook cell ------------------------------------------------------------------------
NOTEBOOK_CELL = """\
import numpy as np

@vg.kernel
def scaled(x: vg.f32[:], out: vg.f32[:]):
    i = vg.tid()
    out[i] = np.exp(x[i])

@vg.kernel
def fine(x: vg.f32[:], out: vg.f32[:]):
    i = vg.tid()
    out[i] = x[i] * 2.0
"""


def test_notebook_cell_line_numbers():
    name = "<ipython-input-1-abc>"
    ns = cell(NOTEBOOK_CELL, name)
    err = compile_error(ns["scaled"])
    assert type(err) is vg.KernelSyntaxError
    assert err.filename == name and err.lineno == 6 and err.func == "scaled"
    msg = str(err)
    assert f'File "{name}", line 6, in scaled' in msg
    assert "out[i] = np.exp(x[i])" in msg and caret_under(msg, "np.exp")
    assert "→" in msg
    # and a good kernel from the same cell runs
    x = vg.arange(4, dtype=vg.f32, device="numpy")
    out = vg.zeros(4, device="numpy")
    ns["fine"][4](x, out)
    np.testing.assert_array_equal(out.numpy(), [0, 2, 4, 6])


def test_source_unavailable():
    ns: dict[str, Any] = {"vg": vg}
    exec(compile(BREAK_CELL.replace("break", "pass"), "<no-such-cell>", "exec"), ns)  # noqa: S102
    err = compile_error(ns["k"])
    assert type(err) is vg.KernelSyntaxError and "cannot read the source" in str(err)
    assert "→" in str(err)


# ---- launching ----------------------------------------------------------------------------------
@vg.kernel
def axpy(a: vg.f32, x: vg.f32[:], y: vg.f32[:]):  # <- error
    i = vg.tid()
    y[i] = a * x[i] + y[i]


@vg.kernel
def prints(x: vg.f32[:]):
    i = vg.tid()
    print("x =", x[i])


def test_launch_wrong_arg_count():
    x = vg.ones(4, device="numpy")
    with pytest.raises(vg.KernelTypeError) as e:
        axpy[4](2.0, x)
    err = e.value
    assert type(err) is vg.KernelTypeError
    assert err.lineno == marked_line(axpy)[0]
    assert "axpy(a, x, y) takes 3 arguments, got 2" in str(err)


def test_launch_wrong_dtype():
    x = vg.ones(4, dtype=vg.f64, device="numpy")
    y = vg.ones(4, device="numpy")
    with pytest.raises(vg.KernelTypeError) as e:
        axpy[4](2.0, x, y)
    err = e.value
    assert type(err) is vg.KernelTypeError and err.lineno == marked_line(axpy)[0]
    assert "argument 'x'" in str(err) and "vg.f32[:]" in str(err) and "f64" in str(err)
    assert "→ convert explicitly: x.astype(vg.f32)" in str(err)


def test_launch_numpy_array():
    y = vg.ones(4, device="numpy")
    with pytest.raises(vg.KernelTypeError) as e:
        axpy[4](2.0, np.ones(4, dtype=np.float32), y)
    err = e.value
    assert type(err) is vg.KernelTypeError and err.lineno == marked_line(axpy)[0]
    assert "NumPy array" in str(err) and "→ wrap it: vg.asarray(" in str(err)


def test_launch_2d_domain_for_1d_kernel():
    x, y = vg.ones(4, device="numpy"), vg.ones(4, device="numpy")
    with pytest.raises(vg.KernelTypeError) as e:
        axpy[(2, 2)](2.0, x, y)
    msg = str(e.value)
    assert type(e.value) is vg.KernelTypeError
    assert "i = vg.tid() (1-D)" in msg and "2-D domain (2, 2)" in msg
    assert "→ k[n](...) for 1-D kernels" in msg


def test_launch_arrays_on_two_devices():
    x, y = vg.ones(4, device="numpy"), vg.ones(4, device="numba")
    with pytest.raises(vg.DeviceMismatch) as e:
        axpy[4](2.0, x, y)
    assert type(e.value) is vg.DeviceMismatch
    assert "'y' is on numba" in str(e.value) and "y.to('numpy')" in str(e.value)


def test_launch_print_on_numba():
    x = vg.ones(4, device="numba")
    with pytest.raises(vg.UnsupportedOnBackend) as e:
        prints[4](x)
    assert type(e.value) is vg.UnsupportedOnBackend
    msg = str(e.value)
    assert "'prints'" in msg and "print()" in msg and "'numpy'" in msg and "→" in msg
    prints[4](x.to("numpy"))  # the numpy backend runs it


# What the launch errors should also show (needs vgpu_nb/kernel/api.py to pass
# frontend.signature_site(...) / frontend.use_site(...) into the errors it raises).
def _launch_wrong_count() -> None:
    axpy[4](2.0, vg.ones(4, device="numpy"))


def _launch_wrong_dtype() -> None:
    axpy[4](2.0, vg.ones(4, dtype=vg.f64, device="numpy"), vg.ones(4, device="numpy"))


def _launch_numpy() -> None:
    axpy[4](2.0, np.ones(4, dtype=np.float32), vg.ones(4, device="numpy"))


@pytest.mark.parametrize(
    "launch", [_launch_wrong_count, _launch_wrong_dtype, _launch_numpy], ids=lambda f: f.__name__
)
def test_launch_errors_show_the_signature(launch):
    with pytest.raises(vg.KernelTypeError) as e:
        launch()
    msg = check(e.value, vg.KernelTypeError, axpy)
    if launch is not _launch_wrong_count:
        assert caret_under(msg, "x: vg.f32[:]")


@vg.kernel
def one_d(out: vg.f32[:]):
    i = vg.tid()  # <- error
    out[i] = 1.0


def test_2d_launch_points_at_tid():
    with pytest.raises(vg.KernelTypeError) as e:
        one_d[(2, 2)](vg.zeros(4, device="numpy"))
    check(e.value, vg.KernelTypeError, one_d, "1-D")


def test_site_helpers():
    fn = one_d.ir
    site = frontend.use_site(fn, "tid")
    assert site["lineno"] == marked_line(one_d)[0]
    assert site["source_line"].strip().startswith("i = vg.tid()")
    sig = frontend.signature_site(axpy.pyfunc, "x")
    assert sig["lineno"] == marked_line(axpy)[0]
    assert sig["source_line"][sig["col"] :].startswith("x: vg.f32[:]")
    assert frontend.format_site(site).startswith(f'File "{__file__}", line ')


# ---- f64 on a WebGPU adapter without shader-f64 ---------------------------------------------
@vg.kernel
def daxpy(a: vg.f64, x: vg.f64[:], y: vg.f64[:]):
    i = vg.tid()
    y[i] = a * x[i] + y[i]


def _llvmpipe():
    try:
        rows = [i for i in discover("wgpu") if i.available and "llvmpipe" in i.adapter]
    except Exception as exc:  # noqa: BLE001  (no wgpu-py, no Vulkan loader …)
        pytest.skip(f"no wgpu adapter: {exc}")
    if not rows:
        pytest.skip("no wgpu llvmpipe adapter on this machine")
    vulkan = [i for i in rows if i.extra.get("backend_type") == "Vulkan"]
    return (vulkan or rows)[0]


def test_f64_on_wgsl_without_shader_f64():
    from vgpu_nb.backends import wgpu_backend

    dev = wgpu_backend.open_device(_llvmpipe(), features=[])
    assert "shader-f64" not in dev.features
    if type(dev).compile_kernel is Device.compile_kernel:
        pytest.xfail("kernels are not implemented on the wgpu backend yet")
    x = vg.ones(4, dtype=vg.f64, device=dev)
    y = vg.ones(4, dtype=vg.f64, device=dev)
    with pytest.raises(vg.UnsupportedOnBackend) as e:
        daxpy[4](2.0, x, y)
    msg = str(e.value)
    assert type(e.value) is vg.UnsupportedOnBackend
    assert "'daxpy'" in msg and "shader-f64" in msg and "→" in msg
    np.testing.assert_array_equal(y.numpy(), np.ones(4))  # nothing ran, nothing changed
