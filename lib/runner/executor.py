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

import asyncio
import importlib
import logging
import math
import signal
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import nbformat
import papermill
import psycopg2
from jupyter_core.utils import ensure_event_loop
from nbclient.exceptions import CellTimeoutError
from papermill.exceptions import PapermillExecutionError

from lib.config import ROOT, Settings, environment, load_settings
from lib.runner import archive, leftovers
from lib.runner.kernels import KERNEL_NAME, CallerKernelManager, WarmKernel
from lib.runner.parameters import check_parameters, read_notebook, resolve_notebook
from lib.runner.run_result import NotebookInterrupted, RunResult
from lib.store import db

logger = logging.getLogger(__name__)


# A notebook that declares this parameter receives its run id unless the caller sets it (e.g. to
# tag an MLflow run with the notebook run that produced it).
RUN_ID_PARAMETER = "notebook_run_id"


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


def after_run_hooks(nb) -> list[str]:
    """The functions the notebook asks to be called after each of its runs, from its metadata (the
    jupytext header), as `package.module:function`:

        # jupyter:
        #   executor:
        #     after_run:
        #     - lib.modeling.training_run:attach_to_tagged_runs

    Each is called with the `RunResult` and the run's `Settings` and returns a warning or None. This is
    how 02_train attaches its executed notebook to its MLflow run without the executor knowing MLflow.
    """
    return list(nb.metadata.get("executor", {}).get("after_run", []))


def _call_after_run(hook: str, result: RunResult, settings: Settings) -> str | None:
    module_name, _, function_name = hook.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
        return function(result, settings)
    except Exception as error:  # the run's outcome matters more than what a hook adds to it
        logger.exception("The after-run hook %s failed for run %s.", hook, result.run_id)
        return f"the after-run hook {hook} failed: {type(error).__name__}: {error}"


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
    html_copy: bool = True,
) -> RunResult:
    """Run a notebook with parameters, archive it and record it; see the module docstring for outcomes.

    `settings` are the settings the notebook runs with (its kernel's environment); by default this
    process's. `reports_dir`, `database_url` and `timeout` (seconds per cell) default to their
    REPORTS_DIR, DATABASE_URL and NOTEBOOK_TIMEOUT. `record=False` skips the database. A
    `notebook_run_id` parameter left at None receives the run id. `kernel` runs the notebook in a
    `WarmKernel` shared with other runs (and so with this process's settings) instead of a kernel of its own.
    With `html_copy=False` only a run that did not succeed gets its HTML copy (a runner catching up writes
    dozens of runs nobody opens; converting each took a sixth of the run).
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
    run_id = archive.new_run_id(started)
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
        archive.insert_running(database_url, running)
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
    failed_cell, failed_line = archive.finish_output(output, source, status, error_value)
    warnings: list[str] = []
    result = replace(
        running,
        status=status,
        duration_s=duration,
        output_ipynb=output if output.exists() else None,
        output_html=archive.html_copy(output, warnings) if html_copy or status != "succeeded" else None,
        failed_cell=failed_cell,
        failed_line=failed_line,
        error_name=error_name,
        error_value=error_value,
    )
    if result.output_ipynb is not None:
        warnings += [_call_after_run(hook, result, settings or load_settings()) for hook in after_run_hooks(nb)]
    result = replace(result, warnings=tuple(filter(None, warnings)))
    for warning in result.warnings:
        logger.warning("Run %s of %s: %s.", run_id, source.stem, warning)
    if record:
        try:
            archive.record_outcome(database_url, result)
        except (db.DatabaseError, psycopg2.Error) as error:
            logger.error("Could not record the outcome of run %s in notebook_runs: %s", run_id, error)
            result = replace(result, recorded=False)
        else:
            archive.refresh_index(database_url, Path(reports_dir))

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
