"""Execute the jupytext notebooks with papermill, archive every run and record it in `notebook_runs`.

A run reads a py:percent notebook, checks the parameters against the defaults in its cell
tagged `parameters` (before any kernel starts), executes it in-process with papermill on an
ipykernel of this interpreter, and leaves `REPORTS_DIR/runs/<notebook>/<run id>.ipynb` plus an
HTML copy behind, whatever the outcome. The `notebook_runs` row is inserted as 'running' (with the
executing process) before the kernel starts and updated at the end; a run whose process was killed
outright is marked 'interrupted' by the next run's start (lib.runner.leftovers). Then
`REPORTS_DIR/index.html` (lib.runner.run_index) is rebuilt to list it.

Outcomes. `execute` returns a `RunResult` for every run that finished: succeeded, failed (a cell
raised, or the kernel died) or timed_out (a cell ran longer than the timeout). Callers that
must stop on failure call `result.raise_for_status()`, which raises `NotebookFailed`; the
simulation runner inspects `result.ok` and carries on. Bad input (unknown notebook, unknown
parameter, a value of the wrong type) raises `NotebookNotFound` or `ParameterError` before
anything is written. An interruption (KeyboardInterrupt, or SIGTERM once
`handle_sigterm_as_interrupt` is installed) saves the partial notebook, stops the kernel,
records 'interrupted' and raises `NotebookInterrupted`, a KeyboardInterrupt that carries the
result, so an interrupted caller stops too.

Cell numbers (`failed_cell`) are 0-based positions among the cells of the source notebook as
jupytext reads it, markdown cells included; papermill's injected-parameters cell is not counted.
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import html
import json
import logging
import math
import re
import shutil
import signal
import tempfile
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import jupytext
import nbformat
import papermill
import psycopg2
from ipykernel.kernelspec import RESOURCES, get_kernel_dict
from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import ensure_event_loop, run_sync
from nbclient.exceptions import CellTimeoutError
from nbconvert import HTMLExporter
from papermill.exceptions import PapermillExecutionError
from papermill.execute import ERROR_MARKER_TAG

from lib.config import NOTEBOOKS_DIR, ROOT, Settings, environment, load_settings
from lib.runner import leftovers
from lib.runner.run_index import INDEX_FILE, write_index
from lib.store import db

logger = logging.getLogger(__name__)

KERNEL_NAME = "python3"
# Added to the kernel's command line. Once pandas, MLflow and Evidently are loaded, the garbage
# collections the interpreter runs while exiting take about 2 s; freezing the heap in the last exit
# handler (atexit runs the first registered last) skips them, after the libraries' handlers have run.
FAST_EXIT = "--IPKernelApp.exec_lines=import atexit, gc; atexit.register(gc.freeze)"
PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"  # papermill's tag for the cell it adds after `parameters`
# A notebook that declares this parameter receives its run id unless the caller sets it (e.g. to
# tag an MLflow run with the notebook run that produced it).
RUN_ID_PARAMETER = "notebook_run_id"


class NotebookError(Exception):
    """Base class of the executor's errors."""


class NotebookNotFound(NotebookError):
    """The notebook name or path does not point at a notebook; the message lists the known ones."""


class ParameterError(NotebookError):
    """A parameter is unknown or its value does not fit the default's type; nothing was run."""


@dataclass(frozen=True)
class RunResult:
    """What one execution did; the same facts as its `notebook_runs` row."""

    run_id: str
    notebook: str
    source: Path
    parameters: dict
    status: str
    started_at: datetime
    duration_s: float
    output_ipynb: Path | None
    output_html: Path | None
    failed_cell: int | None = None
    failed_line: str | None = None
    error_name: str | None = None
    error_value: str | None = None
    warnings: tuple[str, ...] = ()  # what went wrong around the run without failing it
    recorded: bool = field(default=True, compare=False)

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    def describe(self) -> str:
        """One readable block: outcome, failing cell and error, and where the outputs are."""
        if self.ok:
            lines = [f"{self.notebook} succeeded in {self.duration_s:.1f} s."]
        else:
            what = {"failed": "failed", "timed_out": "timed out", "interrupted": "was interrupted"}[self.status]
            where = ""
            if self.failed_cell is not None:
                where = f" in cell {self.failed_cell} (`{self.failed_line}`)"
            lines = [
                f"{self.notebook} {what}{where} after {self.duration_s:.1f} s:",
                f"    {self.error_name}: {self.error_value}",
            ]
        if self.output_ipynb:
            lines.append(f"  executed notebook: {self.output_ipynb}")
        if self.output_html:
            lines.append(f"  HTML report:       {self.output_html}")
        lines += [f"  warning:           {warning}" for warning in self.warnings]
        table = "recorded in notebook_runs" if self.recorded else "not recorded"
        lines.append(f"  run id:            {self.run_id} ({table})")
        return "\n".join(lines)

    def raise_for_status(self) -> RunResult:
        """Raise NotebookFailed unless the run succeeded; return self to allow chaining."""
        if not self.ok:
            raise NotebookFailed(self)
        return self


class NotebookFailed(NotebookError):
    """Raised by `RunResult.raise_for_status` for a run that failed or timed out."""

    def __init__(self, result: RunResult):
        super().__init__(result.describe())
        self.result = result


class NotebookInterrupted(KeyboardInterrupt):
    """The run was interrupted; it is recorded, its partial notebook saved and its kernel stopped."""

    def __init__(self, result: RunResult):
        super().__init__(result.describe())
        self.result = result


# ---------------------------------------------------------------------------------------------
# Finding and reading notebooks


def resolve_notebook(notebook: str | Path, notebooks_dir: Path = NOTEBOOKS_DIR) -> Path:
    """`02_train`, `02_train.py` (both in `notebooks_dir`) or a path to a notebook file."""
    candidates = [Path(notebook)]
    name = Path(notebook).name
    if Path(notebook).parent == Path("."):
        candidates.append(notebooks_dir / (name if Path(name).suffix else f"{name}.py"))
    for candidate in candidates:
        if candidate.is_file() and candidate.suffix in (".py", ".ipynb"):
            return candidate.resolve()
    known = ", ".join(path.stem for path in sorted(notebooks_dir.glob("*.py"))) or "none"
    raise NotebookNotFound(
        f"notebook {str(notebook)!r} not found: it is neither a .py/.ipynb file nor a notebook in "
        f"{notebooks_dir} (known: {known})"
    )


def read_notebook(path: Path) -> nbformat.NotebookNode:
    """The notebook as jupytext reads it, set to run on this interpreter's ipykernel."""
    nb = jupytext.read(path)
    nb.metadata["kernelspec"] = {"name": KERNEL_NAME, "display_name": "Python 3 (ipykernel)", "language": "python"}
    return nb


def _parameters_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode | None:
    return next((cell for cell in nb.cells if PARAMETERS_TAG in cell.metadata.get("tags", [])), None)


def _defaults(nb: nbformat.NotebookNode, path: Path) -> dict:
    """Names and literal defaults assigned at the top level of the parameters cell."""
    cell = _parameters_cell(nb)
    if cell is None:
        return {}
    try:
        tree = ast.parse(cell.source)
    except SyntaxError as error:
        raise NotebookError(f"{path}: the parameters cell is not valid Python: {error}") from None
    defaults = {}
    for statement in tree.body:
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
            target, value = statement.targets[0], statement.value
        elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
            target, value = statement.target, statement.value
        else:
            continue
        if not isinstance(target, ast.Name):
            continue
        try:
            defaults[target.id] = ast.literal_eval(value)
        except (ValueError, TypeError, SyntaxError):
            # Papermill injects literals, so a default must be one for overrides to make sense.
            raise NotebookError(
                f"{path}: the default of parameter {target.id!r} is `{ast.unparse(value)}`; parameters "
                "cells hold literals only (numbers, strings, lists, dicts, True/False/None)"
            ) from None
    return defaults


def parameters_of(notebook: str | Path) -> dict:
    """The defaults of the notebook's parameters cell ({} when it has none)."""
    path = resolve_notebook(notebook)
    return _defaults(read_notebook(path), path)


# ---------------------------------------------------------------------------------------------
# Parameters


def _known(defaults: dict) -> str:
    return ", ".join(f"{name}={value!r}" for name, value in defaults.items()) or "none"


def _fits(value, default) -> bool:
    if value is None or default is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, int | float)
    return isinstance(value, type(default))


def _check_names(path: Path, nb: nbformat.NotebookNode, parameters: dict) -> dict:
    """Raise ParameterError for parameters the notebook does not declare; return its defaults."""
    if parameters and _parameters_cell(nb) is None:
        raise ParameterError(
            f"{path.name} has no cell tagged 'parameters', so it takes no parameters; got {', '.join(parameters)}"
        )
    defaults = _defaults(nb, path)
    for name, value in parameters.items():
        if name not in defaults:
            raise ParameterError(
                f"{path.name} has no parameter {name!r} (given value {value!r}); its parameters are: {_known(defaults)}"
            )
    return defaults


def check_parameters(path: Path, nb: nbformat.NotebookNode, parameters: dict) -> dict:
    """Validate names and types against the defaults; return the defaults updated with `parameters`."""
    defaults = _check_names(path, nb, parameters)
    for name, value in parameters.items():
        if not _fits(value, defaults[name]):
            raise ParameterError(
                f"{path.name}: parameter {name!r} expects {type(defaults[name]).__name__} like its default "
                f"{defaults[name]!r}, got {type(value).__name__} {value!r}; its parameters are: {_known(defaults)}"
            )
    return {**defaults, **parameters}


def _literal(text: str):
    """JSON or a Python literal; anything else stays the text itself (papermill's leniency)."""
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    return text


def _typed(text: str, default):
    """Parse command-line text to the type of `default`; raise ValueError with the expected form."""
    if default is None:
        return _literal(text)
    if isinstance(default, bool):
        if text.lower() in ("true", "yes", "1"):
            return True
        if text.lower() in ("false", "no", "0"):
            return False
        raise ValueError("true or false")
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            raise ValueError("a whole number") from None
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            raise ValueError("a number") from None
    if isinstance(default, str):
        return text
    if isinstance(default, list):
        kinds = {type(item) for item in default}
        item_default = default[0] if len(kinds) == 1 else None
        try:
            if not text.strip().startswith("["):
                return [_typed(item.strip(), item_default) for item in text.split(",") if item.strip()]
            value = _literal(text)
            if isinstance(value, list):
                return value
        except ValueError:
            pass
        example = ",".join(map(str, default)) or "a,b"
        raise ValueError(f"a list such as {example} or [{example.replace(',', ', ')}]")
    value = _literal(text)
    if isinstance(value, type(default)):
        return value
    raise ValueError(f"a {type(default).__name__} literal")


def parameters_from_text(notebook: str | Path, pairs: list[tuple[str, str]]) -> dict:
    """Command-line `-p name value` pairs typed against the notebook's defaults.

    A value becomes the type of its default: `-p years 2014,2015` gives [2014, 2015] when the
    default is a list of ints, `-p name 2019` stays "2019" when the default is a string, and a
    parameter whose default is None takes JSON or a Python literal (else the text).
    """
    path = resolve_notebook(notebook)
    nb = read_notebook(path)
    raw = dict(pairs)
    defaults = _check_names(path, nb, raw)
    typed = {}
    for name, text in raw.items():
        try:
            typed[name] = _typed(text, defaults[name])
        except ValueError as expected:
            raise ParameterError(
                f"{path.name}: parameter {name!r} expects {expected} (default {defaults[name]!r}), "
                f"got {text!r}; its parameters are: {_known(defaults)}"
            ) from None
    return typed


# ---------------------------------------------------------------------------------------------
# Kernel


class CallerKernelManager(AsyncKernelManager):
    """An ipykernel of the interpreter that runs the executor, over IPC sockets in a private folder.

    The kernelspec comes from ipykernel itself, so a `python3` kernelspec installed elsewhere
    (for another interpreter) cannot take over. IPC keeps the kernel off TCP ports; the
    folder is unique per kernel, so concurrent runs never share socket files. `environment` holds
    variables set in the kernel on top of this process's (a run's own settings).
    """

    def __init__(self, environment: dict[str, str] | None = None, **kwargs):
        self.environment = dict(environment or {})
        self.socket_dir = Path(tempfile.mkdtemp(prefix=leftovers.KERNEL_FOLDER_PREFIX))
        leftovers.claim_kernel_folder(self.socket_dir)
        self.clients = []
        kwargs.setdefault("transport", "ipc")
        kwargs.setdefault("ip", str(self.socket_dir / "kernel"))
        kwargs.setdefault("connection_file", str(self.socket_dir / "kernel.json"))
        super().__init__(kernel_name=KERNEL_NAME, **kwargs)

    @property
    def kernel_spec(self) -> KernelSpec:
        if self._kernel_spec is None:
            spec = get_kernel_dict()
            self._kernel_spec = KernelSpec(
                resource_dir=RESOURCES, **{**spec, "argv": [*spec["argv"], FAST_EXIT], "env": self.environment}
            )
        return self._kernel_spec

    def client(self, **kwargs):
        # Kept so `stop` can close them: nbclient leaves the clients of a manager it was given open.
        client = super().client(**kwargs)
        self.clients.append(client)
        return client

    def stop(self, now: bool) -> None:
        """Shut the kernel down (`now`: kill it without a shutdown request) and remove its sockets."""
        try:
            for client in self.clients:
                client.stop_channels()
            if run_sync(self.is_alive)():
                run_sync(self.shutdown_kernel)(now=now)
            else:
                run_sync(self.cleanup_resources)()
        finally:
            shutil.rmtree(self.socket_dir, ignore_errors=True)


class WarmKernel:
    """One kernel that consecutive runs share, for callers that run many short notebooks (the simulation).

    Each run starts from an empty namespace: IPython's reset clears every variable and restarts
    the execution count, so the executed notebook reads as if from a fresh kernel. The modules that
    earlier runs imported stay loaded, so a run skips the kernel start-up and most of its imports
    (seconds for pandas, MLflow and Evidently). A run that does not leave the kernel idle (timed
    out, interrupted, kernel died) discards it, and the next run starts a new one. `close()` shuts
    the kernel down; the caller owns it, e.g. `with WarmKernel() as kernel: execute(..., kernel=kernel)`.
    """

    RESET = "get_ipython().reset(new_session=True, aggressive=False)"

    def __init__(self, reset_timeout: float = 60):
        self.reset_timeout = reset_timeout
        self._km: CallerKernelManager | None = None

    def __enter__(self) -> WarmKernel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def manager(self) -> CallerKernelManager:
        """The kernel manager for the next run: the live kernel with a clean namespace, or a new one."""
        if self._km is not None and self._km.has_kernel:
            try:
                self._reset()
                return self._km
            except Exception:  # a kernel that cannot even reset is not worth keeping
                logger.warning("The warm kernel did not answer its reset; starting a new one.", exc_info=True)
                self.discard()
        self._km = CallerKernelManager()  # papermill starts it on first use
        return self._km

    def _reset(self) -> None:
        client = self._km.client()
        try:
            client.start_channels()
            run_sync(client.wait_for_ready)(timeout=self.reset_timeout)
            reply = run_sync(client.execute_interactive)(
                self.RESET, silent=True, store_history=False, timeout=self.reset_timeout
            )
            if reply["content"]["status"] != "ok":
                raise RuntimeError(f"the namespace reset failed: {reply['content']}")
        finally:
            client.stop_channels()
            self._km.clients.remove(client)

    def release(self, idle: bool) -> None:
        """After a run: keep an idle kernel (closing the run's client channels), discard a busy one."""
        if self._km is None:
            return
        if not idle:
            self.discard()
            return
        for client in self._km.clients:
            client.stop_channels()
        self._km.clients.clear()

    def discard(self) -> None:
        if self._km is not None:
            km, self._km = self._km, None
            km.stop(now=True)

    def close(self) -> None:
        """Shut the kernel down, asking it to exit so its libraries' exit handlers run."""
        if self._km is not None:
            km, self._km = self._km, None
            km.stop(now=False)


# ---------------------------------------------------------------------------------------------
# Execution


@cache
def _html_exporter() -> HTMLExporter:
    # The lab template inlines its CSS from the installed nbconvert files, so converting needs no
    # network; only a reader's browser fetches MathJax and require.js, for maths and widgets.
    return HTMLExporter(template_name="lab")


HTML_ASSETS = "assets"
_HEAD_STYLE = re.compile(r"<style[^>]*>.*?</style>\s*", re.DOTALL)
_MERMAID_LOADER = re.compile(r"<script type=\"module\">(?:(?!</script>).)*\.jp-Mermaid.*?</script>\s*", re.DOTALL)
# Code is folded away until asked for, so the page opens on the narrative and the results.
_SUMMARY_STYLE = """
.run-summary { font-family: sans-serif; margin: 1em 2em 0.5em; padding: 0.6em 1em; border: 1px solid #d0d7de;
  border-left: 0.5em solid #1a7f37; border-radius: 6px; background: #f6f8fa; }
.run-summary.failed { border-left-color: #cf222e; background: #fff5f5; }
.run-summary h1 { font-size: 1.2em; margin: 0 0 0.3em; } .run-summary p { margin: 0.2em 0; }
.run-summary code { font-size: 0.85em; }
body:not(.show-code) .jp-CodeCell .jp-Cell-inputWrapper, body:not(.show-code) .jp-mod-noOutputs { display: none; }
"""


def _shared_css(styles: str, folder: Path) -> str:
    """Store the template's inline CSS once per folder, named by its content; return its file name."""
    name = f"notebook-{hashlib.sha256(styles.encode()).hexdigest()[:12]}.css"
    target = folder / HTML_ASSETS / name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{name}.partial")
        partial.write_text(_css_text(styles), encoding="utf-8")
        partial.replace(target)
    return f"{HTML_ASSETS}/{name}"


def _css_text(styles: str) -> str:
    """The CSS inside a run of `<style>` elements."""
    return "\n".join(re.sub(r"^<style[^>]*>|</style>\s*$", "", block.strip()) for block in _HEAD_STYLE.findall(styles))


def _run_summary(nb) -> str:
    """The run at a glance: the notebook's title, outcome, time, duration and parameters."""
    run = nb.metadata.get("papermill", {})
    title = next(
        (
            line.lstrip("# ").strip()
            for cell in nb.cells
            if cell.cell_type == "markdown"
            for line in cell.source.splitlines()
            if line.startswith("# ")
        ),
        Path(run.get("input_path", "notebook")).stem,
    )
    failed = bool(run.get("exception"))
    outcome = "failed: the first cell says where and why" if failed else "succeeded"
    duration = f"{run['duration']:.1f} s" if run.get("duration") is not None else "unknown"
    parameters = ", ".join(
        f"<code>{html.escape(name)} = {html.escape(json.dumps(value, default=str))}</code>"
        for name, value in sorted(run.get("parameters", {}).items())
    )
    return (
        f"<section class='run-summary{' failed' if failed else ''}'><h1>{html.escape(title)}</h1>"
        f"<p><b>{outcome}</b> · started {html.escape(str(run.get('start_time', 'unknown')))} · took {duration}</p>"
        f"<p>Parameters: {parameters or 'none'}</p>"
        "<p><label><input type='checkbox' onchange=\"document.body.classList.toggle('show-code', this.checked)\">"
        " show the code</label> · <a href='../../index.html'>every notebook run</a></p></section>"
    )


def write_html(ipynb: Path) -> Path:
    """Write the HTML copy of an executed notebook next to it: a summary of the run first, the code
    folded away, and the template's 260 KB of CSS in one shared file per folder instead of every page."""
    nb = nbformat.read(ipynb, as_version=4)
    page, _ = _html_exporter().from_notebook_node(nb)
    head_end = page.index("</head>")
    styles = "".join(_HEAD_STYLE.findall(page[:head_end]))
    stylesheet = _shared_css(styles, ipynb.parent)
    head = _HEAD_STYLE.sub("", page[:head_end])
    if "jp-Mermaid" not in page[head_end:]:  # the template's 11 KB Mermaid loader has nothing to draw
        head = _MERMAID_LOADER.sub("", head)
    head += f"<link rel='stylesheet' href='{stylesheet}'><style>{_SUMMARY_STYLE}</style>"
    body = re.sub(r"<body([^>]*)>", lambda m: m.group(0) + _run_summary(nb), page[head_end:], count=1)
    target = ipynb.with_suffix(".html")
    target.write_text(head + body, encoding="utf-8")
    return target


def _new_run_id(now: datetime) -> str:
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def _insert_running(database_url: str, result: RunResult) -> None:
    """Record the run as 'running' by this process, after marking runs whose process died as interrupted."""
    process = leftovers.this_process()
    with db.session(database_url) as conn:
        leftovers.mark_abandoned_runs(conn)
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO notebook_runs (run_id, notebook, parameters, status, started_at, output_ipynb, host, pid,"
                " process_started) VALUES (%s, %s, %s, 'running', %s, %s, %s, %s, %s)",
                (
                    result.run_id,
                    result.notebook,
                    json.dumps(result.parameters, default=str),
                    result.started_at,
                    str(result.output_ipynb),
                    process["host"],
                    process["pid"],
                    process["process_started"],
                ),
            )


def _refresh_index(database_url: str, reports_dir: Path) -> None:
    """Rebuild REPORTS_DIR/index.html so it lists this run; a failure here leaves the run recorded."""
    try:
        with db.session(database_url) as conn:
            write_index(conn, reports_dir)
    except (db.DatabaseError, psycopg2.Error, OSError) as error:
        logger.warning("The run index %s was not rebuilt: %s", reports_dir / INDEX_FILE, error)


def _record_outcome(database_url: str, result: RunResult) -> None:
    with db.session(database_url) as conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE notebook_runs SET status = %s, finished_at = %s, duration_s = %s, output_ipynb = %s,"
            " output_html = %s, failed_cell = %s, error_name = %s, error_value = %s, warnings = %s"
            " WHERE run_id = %s",
            (
                result.status,
                datetime.now(UTC),
                result.duration_s,
                str(result.output_ipynb) if result.output_ipynb else None,
                str(result.output_html) if result.output_html else None,
                result.failed_cell,
                result.error_name,
                result.error_value,
                list(result.warnings),
                result.run_id,
            ),
        )


def _run_papermill(
    nb: nbformat.NotebookNode,
    output: Path,
    parameters: dict,
    timeout: float,
    progress: bool,
    kernel: WarmKernel | None = None,
    environment: dict[str, str] | None = None,
) -> tuple[str, str | None, str | None]:
    """Execute; return (status, error name, error value). KeyboardInterrupt propagates."""
    busy = True  # until papermill returns or reports a cell error, the kernel may be mid-cell
    km = kernel.manager() if kernel else CallerKernelManager(environment)
    try:
        papermill.execute_notebook(
            nb,
            str(output),
            parameters=parameters,
            kernel_name=KERNEL_NAME,
            progress_bar=progress,
            # The kernel starts in the repository root, so notebooks import `lib` and resolve relative
            # paths from there. (nbclient's start directory; papermill's `cwd` would chdir this process.)
            resources={"metadata": {"path": str(ROOT)}},
            execution_timeout=math.ceil(timeout),
            km=km,
        )
        busy = False
        return "succeeded", None, None
    except PapermillExecutionError as error:
        busy = False
        return "failed", error.ename, error.evalue
    except CellTimeoutError:
        return "timed_out", "CellTimeoutError", f"a cell ran longer than the {timeout:g} s timeout"
    except Exception as error:  # the kernel died or never started: still a recorded failure
        logger.exception("The kernel running %s stopped unexpectedly.", output.name)
        return "failed", type(error).__name__, str(error) or repr(error)
    except KeyboardInterrupt:
        _cancel_abandoned_tasks()
        raise
    finally:
        # A busy kernel is killed: a shutdown request would race its interrupted cell. An idle
        # one is asked to exit, so exit handlers in the notebook's libraries still run.
        if kernel is None:
            km.stop(now=busy)
        else:
            kernel.release(idle=not busy)


def _cancel_abandoned_tasks() -> None:
    """Cancel the cell execution an interruption left suspended in this thread's event loop.

    Otherwise it wakes up during the kernel shutdown, finds the kernel gone and asyncio reports
    "Task exception was never retrieved". asyncio.run cleans up the same way.
    """
    loop = ensure_event_loop()
    if loop.is_running():
        return
    pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in pending:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))


def _shorten(line: str, width: int = 80) -> str:
    line = line.strip()
    return line if len(line) <= width else line[: width - 1] + "…"


# IPython names the failing line of a cell in its traceback as "Cell In[7], line 12".
_CELL_FRAME = re.compile(r"Cell In\[\d+\], line (\d+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _failing_line(cell: nbformat.NotebookNode) -> str:
    """The cell's line that raised, from its error output's traceback; else its first non-blank line."""
    lines = cell.source.splitlines()
    for output in cell.get("outputs", []):
        if output.get("output_type") != "error":
            continue
        match = _CELL_FRAME.search(_ANSI.sub("", "\n".join(output.get("traceback", []))))
        if match and 0 < int(match[1]) <= len(lines):
            return _shorten(lines[int(match[1]) - 1])
    return _shorten(next((line for line in lines if line.strip()), ""))


def _stopped_cell(nb: nbformat.NotebookNode) -> tuple[int | None, str | None]:
    """The last cell that started executing, as (index in the source notebook, the line that failed)."""
    index, stopped = 0, (None, None)
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if INJECTED_TAG in tags or ERROR_MARKER_TAG in tags:
            continue
        if cell.metadata.get("papermill", {}).get("start_time"):
            stopped = (index, _failing_line(cell))
        index += 1
    return stopped


def _finish_output(output: Path, source: Path, status: str, error_value: str | None) -> tuple[int | None, str | None]:
    """Point the executed notebook at its source, flag a run that stopped early, return where it stopped."""
    if not output.exists():
        return None, None
    nb = nbformat.read(output, as_version=4)
    # papermill stores the input it was given, here the whole notebook object: keep the path instead.
    nb.metadata.setdefault("papermill", {})["input_path"] = str(source)
    cell, failed_line = (None, None) if status == "succeeded" else _stopped_cell(nb)
    if status in ("timed_out", "interrupted") and cell is not None:
        # papermill flags failed cells itself; these banners use its tag so a rerun drops them too.
        what = "timed out" if status == "timed_out" else "was interrupted"
        banner = nbformat.v4.new_markdown_cell(
            f"**This run {what} in cell {cell}** (`{failed_line}`): {error_value}. Later cells did not run."
        )
        banner.metadata["tags"] = [ERROR_MARKER_TAG]
        nb.cells.insert(0, banner)
    nbformat.write(nb, output)
    return cell, failed_line


def _html_copy(output: Path, warnings: list[str]) -> Path | None:
    if not output.exists():
        return None
    try:
        return write_html(output)
    except Exception as error:  # the run's outcome matters more than its HTML copy: a warning, not a failure
        logger.exception("Could not write the HTML copy of %s.", output)
        warnings.append(f"the HTML copy of {output.name} was not written: {type(error).__name__}: {error}")
        return None


def _attach_to_mlflow_runs(result: RunResult) -> str | None:
    """A notebook that takes `notebook_run_id` tags its MLflow runs with it: attach the archive to them.

    Returns a warning when that did not happen (None when it did, or when a failed run made no MLflow run).
    """
    from lib.modeling.training_run import attach_executed_notebook  # imports MLflow: only for notebooks that log to it

    tracking_uri = load_settings().mlflow_tracking_uri
    try:
        attached = attach_executed_notebook(tracking_uri, result.run_id, result.output_ipynb, result.output_html)
    except Exception as error:  # the run's outcome matters more than this copy of its log
        logger.exception("Could not attach run %s's executed notebook to its MLflow runs.", result.run_id)
        return f"the executed notebook was not attached to its MLflow run at {tracking_uri}: " \
               f"{type(error).__name__}: {error}"
    if not attached and result.ok:
        return f"no MLflow run at {tracking_uri} is tagged notebook_run_id={result.run_id}, so the executed " \
               "notebook was attached to none"
    return None


def execute(
    notebook: str | Path,
    parameters: dict | None = None,
    *,
    reports_dir: str | Path | None = None,
    database_url: str | None = None,
    timeout: float | None = None,
    record: bool = True,
    progress: bool = True,
    kernel: WarmKernel | None = None,
    settings: Settings | None = None,
) -> RunResult:
    """Run a notebook with parameters, archive it and record it; see the module docstring for outcomes.

    `settings` are the settings the notebook runs with (its kernel's environment); by default this
    process's. `reports_dir`, `database_url` and `timeout` (seconds per cell) default to their
    REPORTS_DIR, DATABASE_URL and NOTEBOOK_TIMEOUT. `record=False` skips the database. A
    `notebook_run_id` parameter left at None receives the run id. `kernel` runs the notebook in a
    `WarmKernel` shared with other runs (and so with this process's settings) instead of a kernel of its own.
    """
    source = resolve_notebook(notebook)
    nb = read_notebook(source)
    parameters = dict(parameters or {})
    effective = check_parameters(source, nb, parameters)
    if settings is not None and kernel is not None:
        raise ValueError("a warm kernel runs with the settings it started with; pass settings or kernel, not both")
    if reports_dir is None or timeout is None or (record and database_url is None):
        resolved = settings or load_settings()
        reports_dir = resolved.reports_dir if reports_dir is None else reports_dir
        timeout = resolved.notebook_timeout if timeout is None else timeout
        database_url = resolved.database_url if database_url is None else database_url
    if timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")

    started = datetime.now(UTC)
    run_id = _new_run_id(started)
    if RUN_ID_PARAMETER in effective and parameters.get(RUN_ID_PARAMETER) is None:
        parameters[RUN_ID_PARAMETER] = effective[RUN_ID_PARAMETER] = run_id
    output = Path(reports_dir).resolve() / "runs" / source.stem / f"{run_id}.ipynb"
    running = RunResult(
        run_id=run_id,
        notebook=source.stem,
        source=source,
        parameters=effective,
        status="running",
        started_at=started,
        duration_s=0.0,
        output_ipynb=output,
        output_html=None,
        recorded=record,
    )
    if record:
        _insert_running(database_url, running)
    leftovers.remove_orphan_kernel_folders()
    output.parent.mkdir(parents=True, exist_ok=True)
    logger.info("Running %s as run %s with parameters %s.", source.stem, run_id, parameters or "(defaults)")

    clock = time.monotonic()
    try:
        status, error_name, error_value = _run_papermill(
            nb, output, parameters, timeout, progress, kernel, environment(settings) if settings else None
        )
    except KeyboardInterrupt:
        status, error_name, error_value = "interrupted", "KeyboardInterrupt", "the run was interrupted"
    duration = time.monotonic() - clock
    failed_cell, failed_line = _finish_output(output, source, status, error_value)
    warnings: list[str] = []
    result = replace(
        running,
        status=status,
        duration_s=duration,
        output_ipynb=output if output.exists() else None,
        output_html=_html_copy(output, warnings),
        failed_cell=failed_cell,
        failed_line=failed_line,
        error_name=error_name,
        error_value=error_value,
    )
    if RUN_ID_PARAMETER in effective and result.output_ipynb is not None:
        warnings.append(_attach_to_mlflow_runs(result))
    result = replace(result, warnings=tuple(filter(None, warnings)))
    for warning in result.warnings:
        logger.warning("Run %s of %s: %s.", run_id, source.stem, warning)
    if record:
        try:
            _record_outcome(database_url, result)
        except (db.DatabaseError, psycopg2.Error) as error:
            logger.error("Could not record the outcome of run %s in notebook_runs: %s", run_id, error)
            result = replace(result, recorded=False)
        else:
            _refresh_index(database_url, Path(reports_dir))

    (logger.info if result.ok else logger.warning)(
        "Run %s of %s ended %s after %.1f s.", run_id, source.stem, status, duration
    )
    if status == "interrupted":
        raise NotebookInterrupted(result)
    return result


def handle_sigterm_as_interrupt() -> None:
    """Make SIGTERM raise KeyboardInterrupt (main thread), so a terminated run is recorded as interrupted."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
