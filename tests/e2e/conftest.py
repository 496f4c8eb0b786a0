"""Real-browser end-to-end tests (issue 6): JupyterLab + headless Chromium through Playwright.

What the fixtures do
--------------------
* ``lab`` (session): starts ``jupyter lab`` from this venv on 127.0.0.1, a free port, a
  random token, no browser, ``--ServerApp.root_dir`` a temporary directory (the notebooks
  under test are *copies* put there, so the repository's notebooks are never modified), and
  private config / data / runtime / settings / workspace / IPython directories, so neither
  the user's Jupyter setup nor their history is read or written. ``--allow-root`` when uid 0.
  The finalizer always stops it: SIGTERM (the server shuts its kernels down), SIGKILL after
  15 s, then any process it started that is still alive (kernels run in their own session).
  Its log is ``artifacts/e2e/jupyterlab.log``.
* ``browser`` (session): Debian's Chromium (``shutil.which("chromium")``, or
  ``$VGPU_E2E_CHROMIUM``) driven by Playwright; never a downloaded browser.
* ``lab_page`` (per test): a fresh browser page; ``run_notebook(page, lab, name, stem)``
  opens a notebook, runs all cells through JupyterLab's *Run > Run All Cells* menu, samples
  the dashboard chart while cells execute, and reports errors, prompts and screenshots.

When they run
-------------
The tests are marked ``e2e`` and are collected only when selected: ``-m e2e`` (as
``scripts/test.sh`` does, in a step of its own) or ``tests/e2e`` named on the command line.
A plain ``pytest tests`` (the main step of ``scripts/test.sh``, ``scripts/gpu-check.sh``)
ignores this directory (``pytest_ignore_collect`` below), so no browser starts there.

Without Playwright or Chromium the tests skip with the reason (``-ra`` prints it), unless
``VGPU_E2E_REQUIRE=1`` (set by ``scripts/test.sh`` where ``scripts/sysdeps.sh`` installs
Chromium: root with apt, as in CI), where a missing browser is a failure.

Everything is bounded: the whole e2e session has ``$VGPU_E2E_BUDGET_S`` seconds (default
180) and every wait takes the smaller of its own timeout and what is left.
Screenshots go to ``artifacts/e2e/`` (git-ignored; ``$VGPU_E2E_ARTIFACTS`` moves it).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

E2E_DIR = Path(__file__).resolve().parent
REPO = E2E_DIR.parents[1]
ARTIFACTS = Path(os.environ.get("VGPU_E2E_ARTIFACTS", REPO / "artifacts" / "e2e"))
BUDGET_S = float(os.environ.get("VGPU_E2E_BUDGET_S", "180"))


# -- collection: only when selected ---------------------------------------------------------


def _named_on_command_line(config: pytest.Config) -> bool:
    for arg in config.args:
        p = (config.invocation_params.dir / arg.split("::")[0]).resolve()
        if p == E2E_DIR or E2E_DIR in p.parents:
            return True
    return False


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if "e2e" in (config.option.markexpr or "") or _named_on_command_line(config):
        return None  # selected: collect as usual (``-m "not e2e"`` then deselects)
    return True


# -- time -----------------------------------------------------------------------------------


class Deadline:
    """The session's time budget; ``left(cap)`` is what one wait may use."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self, cap: float | None = None) -> float:
        rest = self.end - time.monotonic()
        if rest <= 0:
            pytest.fail(f"e2e time budget of {self.seconds:.0f} s spent (VGPU_E2E_BUDGET_S)")
        return rest if cap is None else min(cap, rest)

    def ms(self, cap: float) -> float:
        return 1000 * self.left(cap)


@pytest.fixture(scope="session")
def deadline() -> Deadline:
    return Deadline(BUDGET_S)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def _missing(reason: str) -> None:
    if os.environ.get("VGPU_E2E_REQUIRE") == "1":
        pytest.fail(f"{reason} (VGPU_E2E_REQUIRE=1: the e2e tests must run here)")
    pytest.skip(reason)


# -- the JupyterLab server ------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    try:
        import psutil  # (a dependency of ipykernel)

        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except Exception:
        return []


@dataclass
class Lab:
    root: Path
    port: int
    token: str
    proc: subprocess.Popen
    log: Path
    children: set[int] = field(default_factory=set)

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def get(self, path: str, timeout: float = 5) -> dict:
        req = urllib.request.Request(
            self.url(path), headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())

    def log_tail(self, n: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        return ""

    def stop(self) -> None:
        self.children.update(_descendants(self.proc.pid))
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for pid in self.children:  # kernels the server did not shut down
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def _write_settings(settings: Path) -> None:
    def put(plugin: str, values: dict) -> None:
        f = settings / f"{plugin}.jupyterlab-settings"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(values))

    # every cell attached to the DOM (the default windowing skips painting off-screen cells)
    put("@jupyterlab/notebook-extension/tracker", {"windowingMode": "none"})
    # no news / update toasts over the notebook (there is no network anyway)
    put(
        "@jupyterlab/apputils-extension/notification",
        {"fetchNews": "false", "checkForUpdates": False},
    )


@pytest.fixture(scope="session")
def lab(deadline: Deadline, artifacts: Path) -> Iterator[Lab]:
    pytest.importorskip("jupyterlab", reason="JupyterLab missing (the `notebook` extra)")
    tmp = Path(tempfile.mkdtemp(prefix="vgpu-e2e-"))
    root = tmp / "notebooks"
    root.mkdir()
    _write_settings(tmp / "settings")
    env = dict(
        os.environ,
        JUPYTER_CONFIG_DIR=str(tmp / "config"),
        JUPYTER_DATA_DIR=str(tmp / "data"),
        JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(tmp / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"),
        IPYTHONDIR=str(tmp / "ipython"),
        JUPYTER_PLATFORM_DIRS="1",
        XDG_RUNTIME_DIR=os.environ.get("XDG_RUNTIME_DIR", "/tmp"),
        PYTHONUNBUFFERED="1",
    )
    port, token = _free_port(), secrets.token_hex(24)
    cmd = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: kernel status, outputs
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    if os.getuid() == 0:
        cmd.append("--allow-root")
    log = artifacts / "jupyterlab.log"
    with open(log, "wb") as logf:
        proc = subprocess.Popen(
            cmd, cwd=root, env=env, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Lab(root=root, port=port, token=token, proc=proc, log=log)
    try:
        end = time.monotonic() + deadline.left(60)
        while True:
            if proc.poll() is not None:
                pytest.fail(f"jupyter lab exited ({proc.returncode}):\n{server.log_tail()}")
            with contextlib.suppress(OSError, ValueError):
                server.get("api/status", timeout=2)
                break
            if time.monotonic() > end:
                pytest.fail(f"jupyter lab did not answer within 60 s:\n{server.log_tail()}")
            time.sleep(0.25)
        yield server
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


# -- the browser ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser(deadline: Deadline):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright not installed (pip install -e '.[test]')")
    exe = (
        os.environ.get("VGPU_E2E_CHROMIUM")
        or shutil.which("chromium")
        or shutil.which("chromium-browser")
    )
    if not exe:
        _missing("no chromium on PATH (apt-get install chromium; `make test` does it as root)")
    args = ["--disable-dev-shm-usage", "--disable-gpu"]
    if os.getuid() == 0:
        args.append("--no-sandbox")  # Chromium refuses to sandbox as root
    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=exe, headless=True, args=args, timeout=deadline.ms(60)
        )
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def lab_page(browser, deadline: Deadline, request: pytest.FixtureRequest):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(deadline.ms(60))
    console: list[str] = []  # (the page's console: warnings and errors, for a failure's why)
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    try:
        yield page
    finally:
        context.close()
        log = ARTIFACTS / "browser-console.log"
        with log.open("a") as f:
            f.write(f"== {request.node.nodeid}\n")
            f.writelines(f"{line[:2000]}\n" for line in console)


# -- driving a notebook ---------------------------------------------------------------------

# JupyterLab's panel showing notebook `path` (through the app exposed as window.jupyterapp).
_PANEL_JS = """const panelOf = (path) => {
  const app = window.jupyterapp;
  if (app) for (const w of app.shell.widgets('main'))
    if (w.context && w.context.path === path) return w;
  return null;
};"""

# The panel's code-cell prompts, kernel status and the dashboard chart.
_STATE_JS = """(path) => {
  /*panelOf*/
  const panel = panelOf(path), node = panel ? panel.node : null;
  if (!node) return {ready: false};
  const prompts = [...node.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]
      .map(e => e.textContent.trim());
  const kernel = panel.sessionContext && panel.sessionContext.session
      && panel.sessionContext.session.kernel;
  const dash = node.querySelector('.vgpu-dashboard');
  const chart = (dash && dash.querySelector('.vgpu-dashboard-chart'))
      || node.querySelector('.vgpu-dashboard-chart');
  // an ipympl chart draws into its first <canvas>; a PNG chart is an <img>
  const canvas = chart && (chart.tagName === 'CANVAS' ? chart : chart.querySelector('canvas'));
  const img = chart && (chart.tagName === 'IMG' ? chart : chart.querySelector('img'));
  let kind = null, src = null;
  if (canvas && canvas.width > 0) {
    const url = canvas.toDataURL();
    let h = 0;
    for (let i = 0; i < url.length; i++) h = (Math.imul(h, 31) + url.charCodeAt(i)) | 0;
    kind = 'canvas'; src = `canvas:${url.length}:${h}`;
  } else if (img) {
    kind = 'img'; src = img.getAttribute('src');
  }
  return {ready: true, prompts, status: kernel ? kernel.status : null, dashboard: !!dash,
          chart: !!chart, kind, src};
}""".replace("/*panelOf*/", _PANEL_JS)

# Select code cell i (counting code cells only) and run it (the command behind Shift+Enter).
_RUN_CELL_JS = """([path, i]) => {
  /*panelOf*/
  const panel = panelOf(path), nb = panel.content;
  const code = nb.widgets.map((c, k) => [c, k]).filter(([c]) => c.model.type === 'code');
  nb.activeCellIndex = code[i][1];
  nb.mode = 'command';
  window.jupyterapp.commands.execute('notebook:run-cell');  // (not awaited: it runs on)
  return null;
}""".replace("/*panelOf*/", _PANEL_JS)

# Error outputs as the notebook model holds them (output_type "error").
_MODEL_ERRORS_JS = """(path) => {
  /*panelOf*/
  const cells = panelOf(path).content.model.cells, out = [];
  for (let i = 0; i < cells.length; i++) {
    const c = cells.get(i);
    if (c.type !== 'code') continue;
    for (const o of c.outputs.toJSON())
      if (o.output_type === 'error') out.push({cell: i, ename: o.ename, evalue: o.evalue});
  }
  return out;
}""".replace("/*panelOf*/", _PANEL_JS)

# Error outputs as JupyterLab renders them: an error is drawn with the stderr renderer, its
# traceback as text (stream stderr, e.g. warnings, uses the same renderer: told apart by text).
_DOM_ERRORS_JS = r"""(path) => {
  /*panelOf*/
  const cells = [...panelOf(path).node.querySelectorAll('.jp-Cell')], out = [];
  const looksLikeError = /Traceback \(most recent call last\)|^\s*\w*(Error|Exception)\b.*:/m;
  cells.forEach((cell, i) => {
    for (const o of cell.querySelectorAll(
        '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')) {
      const text = o.textContent;
      if (looksLikeError.test(text)) out.push({cell: i, text: text.slice(-600)});
    }
  });
  return out;
}""".replace("/*panelOf*/", _PANEL_JS)

_NUMBER = re.compile(r"^\[\d+\]:?$")


@dataclass
class NotebookRun:
    name: str
    prompts: list[str]
    model_errors: list[dict]
    dom_errors: list[dict]
    dashboard: bool
    chart: bool
    chart_kind: str | None  # "img" (a PNG chart) or "canvas" (ipympl), as last seen
    samples: list[str]  # the chart's <img> src or a hash of its canvas, while a cell ran
    kinds: set[str]  # what the chart was in those samples ("img", "canvas")
    seconds: float
    screenshots: dict[str, Path]
    #: ``rerun(i)``: run code cell ``i`` of this notebook again (:func:`rerun_cell`)
    rerun: Callable[[int], NotebookRun] | None = None
    #: ``wait_for_chart(kind, seconds)``: wait till the chart is a ``kind``; the kind seen
    wait_for_chart: Callable[[str, float], str | None] | None = None

    @property
    def unexecuted(self) -> list[int]:
        return [i for i, p in enumerate(self.prompts) if not _NUMBER.match(p)]

    @property
    def distinct_srcs(self) -> int:
        return len(set(self.samples))


def prepare_copy(lab: Lab, source, name: str, first_cell: str | None = None) -> str:
    """Copy notebook ``source`` (a path or an nbformat notebook) into the server's root as
    ``name``, outputs and counts cleared (what is seen afterwards is this run's), with code
    ``first_cell`` (if given) put before its cells. Returns its path relative to the root."""
    import nbformat
    import nbformat.v4 as nbf

    nb = nbformat.read(source, as_version=4) if isinstance(source, str | Path) else source
    if first_cell is not None:
        nb.cells.insert(0, nbf.new_code_cell(first_cell))
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, lab.root / name)
    return name


def _watch(page, path: str, stem: str, shots: dict[str, Path], deadline: Deadline,
           mid: str = "dashboard-mid") -> tuple[list[str], set[str], dict]:  # fmt: skip
    """Until no cell is queued or running and the kernel is idle: every ~0.2 s, read the
    chart while a cell runs (its ``src``, and its kind), and take ``{stem}-{mid}.png`` each
    time it has changed. Returns the samples, their kinds and the last state."""
    samples: list[str] = []
    kinds: set[str] = set()
    started = False
    end = time.monotonic() + deadline.left()
    while True:
        s = page.evaluate(_STATE_JS, path)
        prompts = s.get("prompts", [])
        running = any("*" in p for p in prompts)
        started = started or running or any(_NUMBER.match(p) for p in prompts)
        if running and s.get("src"):
            new = s["src"] not in samples
            samples.append(s["src"])
            kinds.add(s["kind"])
            # (taken again at every redraw while cells run: the last one shows the most)
            if new and len(set(samples)) >= 2:
                shots[mid] = ARTIFACTS / f"{stem}-{mid}.png"
                with contextlib.suppress(Exception):
                    page.locator(".vgpu-dashboard").first.screenshot(
                        path=shots[mid], timeout=10_000
                    )
        if started and not running and s.get("status") == "idle":
            return samples, kinds, s
        if time.monotonic() > end:
            shots["end"] = ARTIFACTS / f"{stem}-end.png"
            page.screenshot(path=shots["end"])
            pytest.fail(
                f"{path}: cells still running when the e2e budget ran out "
                f"(prompts {prompts}, kernel {s.get('status')}); see {shots['end']}"
            )
        time.sleep(0.2)


def wait_for_chart(page, path: str, kind: str, seconds: float) -> str | None:
    """Wait up to ``seconds`` for the dashboard chart of ``path`` to be a ``kind`` ("img",
    "canvas"); returns the kind it is then."""
    end = time.monotonic() + seconds
    while (now := page.evaluate(_STATE_JS, path).get("kind")) != kind:
        if time.monotonic() > end:
            break
        time.sleep(0.2)
    return now


def rerun_cell(page, path: str, index: int, stem: str, deadline: Deadline) -> NotebookRun:
    """Run code cell ``index`` of the open notebook ``path`` again (select it, then JupyterLab's
    *Run Selected Cell* command, as Shift+Enter does) and watch it like :func:`run_notebook`
    (``{stem}-rerun-dashboard-mid.png``)."""
    shots: dict[str, Path] = {}
    t0 = time.monotonic()
    before = page.evaluate(_STATE_JS, path)["prompts"][index]
    page.evaluate(_RUN_CELL_JS, [path, index])
    page.wait_for_function(  # (its prompt changes: queued, running or done)
        f"([path, i, before]) => ({_STATE_JS})(path).prompts[i] !== before",
        arg=[path, index, before],
        timeout=deadline.ms(30),
        polling=100,
    )
    samples, kinds, s = _watch(page, path, stem, shots, deadline, "rerun-dashboard-mid")
    return NotebookRun(
        name=path,
        prompts=s.get("prompts", []),
        model_errors=page.evaluate(_MODEL_ERRORS_JS, path),
        dom_errors=page.evaluate(_DOM_ERRORS_JS, path),
        dashboard=bool(s.get("dashboard")),
        chart=bool(s.get("chart")),
        chart_kind=s.get("kind"),
        samples=samples,
        kinds=kinds,
        seconds=time.monotonic() - t0,
        screenshots={k: v for k, v in shots.items() if v.exists()},
    )


def run_notebook(page, lab: Lab, path: str, stem: str, deadline: Deadline) -> NotebookRun:
    """Open ``path`` (relative to the server root) in JupyterLab, Run > Run All Cells, wait
    until no cell is queued or running and the kernel is idle. While cells run, read the
    dashboard chart's ``src`` every ~0.2 s; take ``{stem}-dashboard-mid.png`` each time it
    has changed (the last redraw before the cells finish is kept), ``{stem}-end.png`` (and
    ``{stem}-dashboard-end.png``) at the end."""
    for old in ARTIFACTS.glob(f"{stem}-*.png"):
        old.unlink()
    shots: dict[str, Path] = {}
    t0 = time.monotonic()
    page.goto(lab.url(f"lab/tree/{path}?token={lab.token}"), timeout=deadline.ms(60))

    # the notebook is open, its kernel started and idle
    page.wait_for_function(
        f"(path) => {{ const s = ({_STATE_JS})(path); return s.ready && s.status === 'idle'; }}",
        arg=path,
        timeout=deadline.ms(90),
        polling=250,
    )
    # Run > Run All Cells, as a user would
    page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-item:visible", has_text=re.compile(r"^Run All Cells")).first.click()

    samples, kinds, s = _watch(page, path, stem, shots, deadline)
    seconds = time.monotonic() - t0
    model_errors = page.evaluate(_MODEL_ERRORS_JS, path)
    dom_errors = page.evaluate(_DOM_ERRORS_JS, path)
    shots["end"] = ARTIFACTS / f"{stem}-end.png"
    page.screenshot(path=shots["end"])
    if s.get("dashboard"):
        shots["dashboard-end"] = ARTIFACTS / f"{stem}-dashboard-end.png"
        with contextlib.suppress(Exception):
            page.locator(".vgpu-dashboard").first.screenshot(
                path=shots["dashboard-end"], timeout=10_000
            )
    return NotebookRun(
        name=path,
        prompts=s.get("prompts", []),
        model_errors=model_errors,
        dom_errors=dom_errors,
        dashboard=bool(s.get("dashboard")),
        chart=bool(s.get("chart")),
        chart_kind=s.get("kind"),
        samples=samples,
        kinds=kinds,
        seconds=seconds,
        screenshots={k: v for k, v in shots.items() if v.exists()},
    )


@pytest.fixture
def run_in_lab(browser, lab: Lab, lab_page, deadline: Deadline):
    """``run_in_lab(notebook, stem, first_cell=None)``: copy ``notebook`` (path or nbformat
    object) into the server's root as ``{stem}.ipynb`` (``first_cell`` before its cells) and
    run it there with :func:`run_notebook`. (``browser`` first: without
    one the test skips before a server starts.)"""

    def run(source, stem: str, first_cell: str | None = None) -> NotebookRun:
        name = f"{stem}.ipynb"
        path = prepare_copy(lab, source, name, first_cell)
        run = run_notebook(lab_page, lab, path, stem, deadline)
        run.rerun = lambda index: rerun_cell(lab_page, path, index, stem, deadline)
        run.wait_for_chart = lambda kind, seconds: wait_for_chart(
            lab_page, path, kind, min(seconds, deadline.left())
        )
        return run

    return run
