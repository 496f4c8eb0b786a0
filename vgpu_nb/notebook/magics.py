"""``%vgpu`` and ``%%vgpu``: the notebook front door (``%load_ext vgpu_nb``).

Line magic ``%vgpu COMMAND``:

* ``devices`` — the device table (``vg.devices()``);
* ``use DEVICE`` — the default device (``vg.use``; ``auto`` lets the scheduler place ops);
* ``policy [NAME]`` — show or set the scheduler policy;
* ``memory [--device SIZE] [--host SIZE]`` — set tier budgets, show the tiers;
* ``calibrate [--device D ...] [--force]`` — measure the devices' peaks (cached);
* ``doctor`` — what works here and how to fix what does not;
* ``dashboard [--charts auto|png|ipympl]`` — the live dashboard (``vg.dashboard()``:
  devices, tiers, decisions, charts; drawn with ipympl where it is installed, else as PNG);
* ``timeit [-n N] [-r R] EXPR`` — ``vg.timeit`` of a statement: mean ± std, GB/s, GFLOPS.

Cell magics:

* ``%%vgpu kernel [--device D]`` — the cell is plain kernel-language Python: every
  top-level ``def`` without a decorator becomes a ``@vg.kernel`` (or, with a return
  annotation, a ``@vg.func``); decorated ones (``@vg.reduction(...)``) stay as written.
  With ``--device`` the kernels are compiled for it at once, so that compile errors fail
  this cell and not a later one.
* ``%%vgpu run [--device D] [--policy P] [--profile]`` — run the cell with that default
  device and policy, then show its launches (a table; ``--profile`` adds the roofline and
  GFLOPS chart).
* ``%%vgpu cuda NAME [--block B] [--grid G] [--shared BYTES] [--device D]`` — the cell is
  raw CUDA C holding ``extern "C" __global__ void NAME(...)``; ``NAME`` becomes a launchable
  kernel in the namespace: ``NAME[n](args)`` / ``NAME.launch(n, *args)`` (a launch record),
  with ``vg.Array`` s for pointer parameters (dtype checked: ``float*`` takes f32) and
  numbers for value parameters. ``--block`` threads per block (default 256; ``16,16`` for
  2-D), ``--grid`` a fixed grid (default ``ceil(n / block)``), ``--shared`` dynamic shared
  memory. Nothing is passed implicitly: the kernel guards its own bounds, so pass ``n`` if
  it needs it.
* ``%%vgpu wgsl NAME [--workgroup W] [--device D]`` — the cell is raw WGSL with the entry
  point ``@compute @workgroup_size(W) fn NAME(...)``; arguments are its ``@group(0)
  @binding(k)`` variables in binding order: ``var<storage, read|read_write> x:
  array<f32|i32|u32>`` take arrays, and one ``var<uniform> p: Params`` takes the scalars,
  one per field of ``struct Params`` in order. ``ceil(n / W)`` workgroups are dispatched
  (``NAME[(ny, nx)]``: a 2-D dispatch). ``--workgroup`` must match a literal size or sets an
  ``override`` constant.

  Both compile at once (on ``--device``, else on the default device or the backend's first
  one), so that compiler errors — NVRTC's log, Naga's message — fail this cell;
  ``--device`` also binds the kernel to that device. See ``vgpu_nb.kernel.native``.

Bad arguments raise IPython's ``UsageError`` (a short message, no traceback); failures of
the work itself (a kernel that does not compile, an error in the cell) raise the real
exception, so the cell fails — under nbval too. (nvcc4jupyter prints compiler errors and
lets the cell pass; we do not.)
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import keyword
import shlex
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import MagicArgumentParser

import vgpu_nb as vg

from ..errors import VgpuError


def _parser() -> MagicArgumentParser:
    """The ``%vgpu`` grammar (``MagicArgumentParser`` raises ``UsageError`` on bad input)."""
    p = MagicArgumentParser(prog="%vgpu", add_help=False, description=__doc__)
    sub = p.add_subparsers(dest="cmd", parser_class=MagicArgumentParser, metavar="COMMAND")
    sub.required = True
    sub.add_parser("devices", add_help=False, help="the device table")
    s = sub.add_parser("use", add_help=False, help="set the default device")
    s.add_argument("device", help="a device name (numba, cuda:0, wgpu:1 ...) or auto")
    s = sub.add_parser("policy", add_help=False, help="show or set the scheduler policy")
    s.add_argument("name", nargs="?", help=", ".join(vg.scheduler.POLICIES))
    s = sub.add_parser("memory", add_help=False, help="tier budgets and usage")
    s.add_argument("--device", metavar="SIZE", help="device-tier budget, e.g. 512MiB")
    s.add_argument("--host", metavar="SIZE", help="host-tier budget, e.g. 4GiB")
    s = sub.add_parser("calibrate", add_help=False, help="measure the devices' peaks")
    s.add_argument("--device", action="append", help="only this device (repeatable)")
    s.add_argument("--force", action="store_true", help="measure again, ignoring the cache")
    sub.add_parser("doctor", add_help=False, help="check each backend")
    s = sub.add_parser("dashboard", add_help=False, help="the live dashboard")
    s.add_argument("--charts", choices=("auto", "png", "ipympl"),
                   help="ipympl or PNG charts (default: ipympl if installed)")  # fmt: skip
    s = sub.add_parser("timeit", add_help=False, help="time a statement with its GB/s")
    s.add_argument("-n", "--number", type=int, help="loops per repeat (default: automatic)")
    s.add_argument("-r", "--repeat", type=int, default=7, help="repeats (default 7)")
    s.add_argument("stmt", nargs=argparse.REMAINDER, help="the statement to time")
    return p


def _cell_parser(kind: str) -> MagicArgumentParser:
    p = MagicArgumentParser(prog=f"%%vgpu {kind}", add_help=False)
    p.add_argument("--device", help="default device (run) / compile for it now (kernel)")
    if kind == "run":
        p.add_argument("--policy", help="scheduler policy for the cell")
        p.add_argument("--profile", action="store_true", help="also draw the launches")
    if kind in ("cuda", "wgsl"):
        p.add_argument("name", metavar="NAME", type=_identifier, help="the kernel's name")
    if kind == "cuda":
        p.add_argument("--block", type=_dims("--block", 1024), help="threads per block")
        p.add_argument("--grid", type=_dims("--grid"), help="blocks (default ceil(n / block))")
        p.add_argument("--shared", type=_bytes, default=0, help="dynamic shared memory bytes")
    if kind == "wgsl":
        p.add_argument("--workgroup", type=_dims("--workgroup"), help="workgroup size")
    return p


_CELL_KINDS = ("kernel", "run", "cuda", "wgsl")


def _identifier(text: str) -> str:
    if not text.isidentifier() or keyword.iskeyword(text):
        raise argparse.ArgumentTypeError(f"NAME must be a Python identifier, got {text!r}")
    return text


def _dims(option: str, limit: int | None = None) -> Any:
    """An argparse type: ``256`` or ``16,16`` → a tuple of positive ints."""

    def parse(text: str) -> tuple[int, ...]:
        from ..kernel.native import parse_size

        try:
            return parse_size(text, option, limit)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = option.lstrip("-")  # (argparse names the type in its messages)
    return parse


def _bytes(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"--shared must be a number of bytes >= 0, got {text!r}")
    return value


def _split(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError as exc:  # an unclosed quote
        raise UsageError(f"%vgpu: cannot parse {line!r}: {exc}") from None


def _usage(exc: Exception, what: str) -> UsageError:
    msg = exc.what if isinstance(exc, VgpuError) else str(exc)
    fix = getattr(exc, "fix", None)
    return UsageError(f"{what}: {msg}" + (f"\n  → {fix}" if fix else ""))


@magics_class
class VgpuMagics(Magics):
    """``%vgpu`` / ``%%vgpu`` (see the module docstring; ``%vgpu?`` shows it)."""

    @line_magic
    def vgpu(self, line: str) -> Any:
        """(replaced by the module docstring below: what ``%vgpu?`` shows)"""
        args = _parser().parse_args(_split(line))
        return getattr(self, f"_cmd_{args.cmd}")(args)

    @cell_magic("vgpu")
    def vgpu_cell(self, line: str, cell: str) -> Any:
        """(replaced by the module docstring below: what ``%%vgpu?`` shows)"""
        words = _split(line)
        if not words or words[0] not in _CELL_KINDS:
            raise UsageError(
                f"%%vgpu needs a cell command first: one of {', '.join(_CELL_KINDS)} "
                f"(got {words[0] if words else 'nothing'!r}); line commands go in %vgpu"
            )
        args = _cell_parser(words[0]).parse_args(words[1:])
        if words[0] == "kernel":
            return self._cell_kernel(args, cell)
        if words[0] in ("cuda", "wgsl"):
            return self._cell_native(words[0], args, cell)
        return self._cell_run(args, cell)

    # ---- line commands ------------------------------------------------------------------
    def _cmd_devices(self, args: argparse.Namespace) -> Any:
        return vg.devices()

    def _cmd_use(self, args: argparse.Namespace) -> None:
        try:
            vg.use(args.device)
        except (VgpuError, ValueError) as exc:
            raise _usage(exc, f"%vgpu use {args.device}") from None
        print(f"default device: {vg.default_device()}")

    def _cmd_policy(self, args: argparse.Namespace) -> None:
        if args.name is not None:
            try:
                vg.scheduler.policy = args.name
            except ValueError as exc:
                raise _usage(exc, "%vgpu policy") from None
        print(f"scheduler policy: {vg.scheduler.policy}")

    def _cmd_memory(self, args: argparse.Namespace) -> Any:
        if args.device is not None or args.host is not None:
            try:
                vg.memory.configure(device=args.device, host=args.host)
            except (VgpuError, ValueError) as exc:
                raise _usage(exc, "%vgpu memory") from None
        return vg.memory.stats()

    def _cmd_calibrate(self, args: argparse.Namespace) -> Any:
        try:
            return vg.calibrate(args.device, force=args.force)
        except (VgpuError, ValueError) as exc:
            raise _usage(exc, "%vgpu calibrate") from None

    def _cmd_dashboard(self, args: argparse.Namespace) -> Any:
        try:
            return vg.dashboard(charts=args.charts)
        except ImportError as exc:
            raise _usage(exc, "%vgpu dashboard") from None

    def _cmd_doctor(self, args: argparse.Namespace) -> None:
        from ..cli import cmd_doctor

        cmd_doctor(args)

    def _cmd_timeit(self, args: argparse.Namespace) -> Any:
        stmt = " ".join(args.stmt).strip()
        if not stmt:
            raise UsageError("%vgpu timeit needs a statement: %vgpu timeit saxpy[n](2.0, x, y)")
        if args.number is not None and args.number < 1:
            raise UsageError(f"%vgpu timeit -n must be >= 1, got {args.number}")
        if args.repeat < 1:
            raise UsageError(f"%vgpu timeit -r must be >= 1, got {args.repeat}")
        try:
            code = compile(stmt, "<vgpu timeit>", "exec")
        except SyntaxError as exc:
            raise UsageError(f"%vgpu timeit: not a Python statement: {exc.msg}") from None
        ns = self.shell.user_ns
        return vg.timeit(lambda: exec(code, ns), number=args.number, repeat=args.repeat)  # noqa: S102

    # ---- cell commands ------------------------------------------------------------------
    def _cell_kernel(self, args: argparse.Namespace, cell: str) -> None:
        """Run the cell, then make its undecorated top-level functions kernels (or device
        functions); the cell's source is registered so errors point at its lines."""
        import ast

        dev = None
        if args.device is not None:
            try:
                dev = vg.get_device(args.device)
            except (VgpuError, ValueError) as exc:
                raise _usage(exc, "%%vgpu kernel --device") from None
        filename = self.shell.compile.cache(cell)  # (linecache: inspect.getsource works)
        tree = ast.parse(cell, filename)
        plain = [
            n.name for n in tree.body if isinstance(n, ast.FunctionDef) and not n.decorator_list
        ]
        ns = self.shell.user_ns
        exec(compile(tree, filename, "exec"), ns)  # noqa: S102
        empty = inspect.Signature.empty
        funcs = [n for n in plain if inspect.signature(ns[n]).return_annotation is not empty]
        for name in funcs:  # device functions first: kernels resolve them by name
            ns[name] = vg.func(ns[name])
        kernels = [n for n in plain if n not in funcs]
        for name in kernels:
            ns[name] = vg.kernel(ns[name])
        if dev is not None:
            for name in kernels:
                ns[name].compile(dev)
        defined = ", ".join([*(f"{n} (kernel)" for n in kernels), *(f"{n} (func)" for n in funcs)])
        print(f"defined {defined}" if defined else "no undecorated functions in this cell")

    def _cell_native(self, lang: str, args: argparse.Namespace, cell: str) -> None:
        """Register the cell's CUDA C / WGSL as a launchable kernel named ``args.name``,
        compiled now where a device of its backend is available."""
        from ..errors import DeviceUnavailable, UnknownDevice
        from ..kernel.native import BACKENDS, NativeKernel

        what = f"%%vgpu {lang} {args.name}"
        dev = None
        if args.device is not None:
            try:
                dev = vg.get_device(args.device)
            except (VgpuError, ValueError) as exc:
                raise _usage(exc, f"{what} --device") from None
            if dev.backend != BACKENDS[lang]:
                raise UsageError(
                    f"{what} --device {args.device}: {lang.upper()} kernels run on "
                    f"{BACKENDS[lang]} devices, not on {dev.name}"
                )
        options: dict[str, Any] = {"device": dev, "filename": f"<{what}>"}
        if lang == "cuda":
            options.update(block=args.block, grid=args.grid, shared_mem=args.shared)
        else:
            options.update(workgroup=args.workgroup)
        k = NativeKernel(cell, args.name, lang, **options)  # (source errors fail the cell)
        note = ""
        try:
            target = k._resolve(None, None)
        except (DeviceUnavailable, UnknownDevice) as exc:
            note = f"; not compiled: no {BACKENDS[lang]} device here ({exc.what})"
        else:
            k.compile(target)
            note = f", compiled for {target.name}"
        self.shell.user_ns[args.name] = k
        print(f"defined {k.signature} ({lang} kernel{note})")

    def _cell_run(self, args: argparse.Namespace, cell: str) -> Any:
        if args.policy is not None and args.policy not in vg.scheduler.POLICIES:
            raise UsageError(
                f"%%vgpu run --policy {args.policy!r}: use one of "
                f"{', '.join(vg.scheduler.POLICIES)}"
            )
        with contextlib.ExitStack() as stack:
            if args.device is not None:
                try:
                    stack.enter_context(vg.device(args.device))
                except (VgpuError, ValueError) as exc:
                    raise _usage(exc, "%%vgpu run --device") from None
            if args.policy is not None:
                stack.enter_context(vg.scheduler.policy(args.policy))
            prof = stack.enter_context(vg.profile())
            result = self.shell.run_cell(cell, store_history=False)
        result.raise_error()  # (the cell's own exception: this cell fails too)
        return _Launches(prof, args.profile)


VgpuMagics.vgpu.__doc__ = VgpuMagics.vgpu_cell.__doc__ = __doc__


class _Launches:
    """What ``%%vgpu run`` shows after the cell: its launches (and, with --profile, the
    chart)."""

    def __init__(self, prof: Any, chart: bool):
        self.prof, self.chart = prof, chart

    def _table(self) -> Any:
        return self.prof.table()

    def __repr__(self) -> str:
        t = self._table()
        return f"{len(t)} launch record(s)\n" + (t.to_string() if len(t) else "")

    def _repr_html_(self) -> str:
        t = self._table()
        html = f"<b>{len(t)} launch record(s)</b>" + (t.to_html() if len(t) else "")
        if self.chart and len(t):
            import base64
            import io

            fig = self.prof.plot()
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
            import matplotlib.pyplot as plt

            plt.close(fig)
            png = base64.b64encode(buf.getvalue()).decode()
            html += f'<img src="data:image/png;base64,{png}"/>'
        return html


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext vgpu_nb``."""
    ipython.register_magics(VgpuMagics)
