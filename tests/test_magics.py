"""``%vgpu`` / ``%%vgpu`` driven through a real IPython ``InteractiveShell`` (issue 6): bad
arguments are ``UsageError`` s with a useful message, failures of the work are the real
exception (so the cell fails), and the commands do what they say."""

from __future__ import annotations

import gc

import numpy as np
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import vgpu_nb as vg


@pytest.fixture(scope="module")
def ip():
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "vgpu_nb")
    return shell


@pytest.fixture(autouse=True)
def _restore(ip):
    """Each test leaves the session as it found it: default device, policy, budgets, and
    no arrays left in the shell's namespace (other tests count every live array's bytes)."""
    dev, policy = vg.default_device(), vg.scheduler.policy
    names = set(ip.user_ns)
    yield
    for name in set(ip.user_ns) - names:
        del ip.user_ns[name]
    ip.displayhook.flush()  # (Out[n] / _ would keep the last results alive)
    gc.collect()
    vg.use(dev)
    vg.scheduler.policy = str(policy)
    vg.memory.reset()


BAD_LINES = [
    ("", "COMMAND"),
    ("frobnicate", "invalid choice"),
    ("use", "device"),
    ("use nosuchdevice", "nosuchdevice"),
    ("policy fastest", "fastest"),
    ("memory --device lots", "lots"),
    ("timeit", "needs a statement"),
    ("timeit -n 0 1 + 1", "-n must be >= 1"),
    ("timeit -r 0 1 + 1", "-r must be >= 1"),
    ("timeit x = (", "not a Python statement"),
    ('use "numba', "cannot parse"),
    ("calibrate --device nosuchdevice", "nosuchdevice"),
    ("dashboard --charts svg", "invalid choice"),
]


@pytest.mark.parametrize(("line", "says"), BAD_LINES)
def test_bad_line_arguments_are_usage_errors(ip, line, says):
    with pytest.raises(UsageError, match=says):
        ip.run_line_magic("vgpu", line)


BAD_CELLS = [
    ("", "needs a cell command"),
    ("compile", "one of kernel, run"),
    ("run --policy fastest", "fastest"),
    ("run --device nosuchdevice", "nosuchdevice"),
    ("run --bogus", "unrecognized"),
    ("kernel --device nosuchdevice", "nosuchdevice"),
]


@pytest.mark.parametrize(("line", "says"), BAD_CELLS)
def test_bad_cell_arguments_are_usage_errors(ip, line, says):
    with pytest.raises(UsageError, match=says):
        ip.run_cell_magic("vgpu", line, "x = 1\n")


def test_use_policy_devices_memory(ip, capsys):
    ip.run_line_magic("vgpu", "use numba")
    assert vg.default_device().name == "numba"
    ip.run_line_magic("vgpu", "policy locality")
    assert vg.scheduler.policy == "locality"
    assert "scheduler policy: locality" in capsys.readouterr().out
    df = ip.run_line_magic("vgpu", "devices")
    assert "numba" in df.index and bool(df.loc["numba", "available"])
    ip.run_line_magic("vgpu", "memory --host 1GiB")
    assert vg.memory.budgets()["host"] == 1 << 30
    keep = vg.ones(1000, device="numba")
    stats = ip.run_line_magic("vgpu", "memory")
    assert stats.loc[("numba", "device"), "used"] >= keep.nbytes


KERNEL_CELL = """\
def twice(v: vg.f32) -> vg.f32:
    return 2.0 * v

def scale(x: vg.f32[:], y: vg.f32[:]):
    i = vg.tid()
    y[i] = twice(x[i])

@vg.reduction(identity=0.0)
def sumsq(v: vg.f32) -> vg.f32:
    return v * v
"""


def test_kernel_cell_defines_kernels_funcs_and_keeps_decorated_ones(ip, capsys):
    ip.user_ns["vg"] = vg
    ip.run_cell_magic("vgpu", "kernel --device numba", KERNEL_CELL)
    assert "scale (kernel)" in capsys.readouterr().out
    ns = ip.user_ns
    assert isinstance(ns["scale"], vg.Kernel)
    assert isinstance(ns["sumsq"], vg.ReductionFunction)
    x = vg.asarray(np.arange(5, dtype=np.float32), device="numba")
    y = vg.zeros(5, device="numba")
    ns["scale"][5](x, y)
    np.testing.assert_array_equal(y.numpy(), 2 * np.arange(5, dtype=np.float32))
    assert float(ns["sumsq"](x)) == 30.0


def test_kernel_cell_errors_are_real_and_name_the_cells_line(ip):
    ip.user_ns["vg"] = vg
    cell = "def bad(x: vg.f32[:]):\n    i = vg.tid()\n    x[i] = [1, 2]\n"
    with pytest.raises(vg.KernelSyntaxError) as err:
        ip.run_cell_magic("vgpu", "kernel --device numba", cell)
    assert "x[i] = [1, 2]" in str(err.value)


def test_timeit_times_a_statement_with_its_bytes(ip):
    ip.user_ns.update(vg=vg, x=vg.ones(1000, device="numba"))
    s = ip.run_line_magic("vgpu", "timeit -n 3 -r 2 vg.sum(x)")
    assert s.loops == 3 and s.repeat == 2 and s.bytes >= 4000


def test_run_cell_uses_the_device_and_shows_its_launches(ip):
    ip.user_ns["vg"] = vg
    before = str(vg.scheduler.policy)
    out = ip.run_cell_magic("vgpu", "run --device numba --policy locality --profile",
                            "r = float(vg.sum(vg.ones(100)))\n")  # fmt: skip
    assert ip.user_ns["r"] == 100.0
    t = out.prof.table()
    assert len(t) >= 1 and set(t["device"]) == {"numba"}
    assert "launch record" in repr(out) and "<img" in out._repr_html_()
    assert vg.scheduler.policy == before  # (the cell's policy and device were for it only)


def test_a_failing_run_cell_fails(ip):
    with pytest.raises(ZeroDivisionError):
        ip.run_cell_magic("vgpu", "run --device numba", "1 / 0\n")


def test_help_documents_every_command(ip):
    for kind, name in (("line", "vgpu"), ("cell", "vgpu")):
        doc = ip.find_magic(name, kind).__doc__
        for word in ("devices", "use DEVICE", "policy", "memory", "calibrate", "doctor",
                     "timeit", "dashboard", "%%vgpu kernel", "%%vgpu run",
                     "UsageError"):  # fmt: skip
            assert word in doc, (kind, word)


def test_dashboard_command_opens_one(ip):
    dash = ip.run_line_magic("vgpu", "dashboard")
    try:
        assert "vg.dashboard: default device" in dash.summary()
    finally:
        dash.close()
    assert dash.closed
    dash = ip.run_line_magic("vgpu", "dashboard --charts png")
    dash.close()
    assert dash.charts in ("png", "none")  # ("none": a text dashboard, no front end here)
