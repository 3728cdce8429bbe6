"""The notebook executor against real kernels and the stack's PostgreSQL, one fixture per failure mode."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import jupytext
import nbformat
import pytest

from lib.config import ROOT
from lib.runner import executor, kernels, notebook_html, parameters
from lib.runner.parameters import ParameterError
from lib.runner.run_result import NotebookFailed, NotebookInterrupted
from lib.store.db import fetch_dicts, session

FIXTURES = Path(__file__).parent / "fixtures" / "notebooks"
SCRIPT = ROOT / "scripts" / "run_notebook.py"
_spec = importlib.util.spec_from_file_location("run_notebook", SCRIPT)
run_notebook = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_notebook)


@pytest.fixture(autouse=True)
def _restore_sigterm_handler():
    """`run_notebook.main` and some tests install the executor's SIGTERM handler in this process."""
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.fixture
def reports(tmp_path) -> Path:
    return tmp_path / "reports"


def _runs(settings, **where) -> list[dict]:
    column, value = next(iter(where.items()))
    with session(settings.database_url) as conn:
        return fetch_dicts(conn, f"SELECT * FROM notebook_runs WHERE {column} = %s", (value,))


def _cli(reports: Path, *args: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "REPORTS_DIR": str(reports)}
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def _only_output(reports: Path, notebook: str) -> Path:
    outputs = list((reports / "runs" / notebook).glob("*.ipynb"))
    assert len(outputs) == 1, outputs
    return outputs[0]


def _stdout_of(ipynb: Path) -> str:
    nb = nbformat.read(ipynb, as_version=4)
    return "".join(output.get("text", "") for cell in nb.cells if cell.cell_type == "code" for output in cell.outputs)


def _wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_the_runner_starts_without_building_parsers_for_a_format_no_notebook_uses():
    """jsonschema, imported by nbformat, would otherwise import rfc3987_syntax: 1.6 s of every runner start-up."""
    probe = "import sys, lib.runner.executor; print(sys.modules.get('rfc3987_syntax'), 'jsonschema' in sys.modules)"
    printed = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert printed.stdout.split() == ["None", "True"]
    # Notebooks are still validated against their schema.
    with pytest.raises(nbformat.ValidationError):
        nbformat.validate(nbformat.from_dict({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [{}]}))


def test_notebooks_resolve_by_name_file_name_or_path():
    expected = (FIXTURES / "succeeds.py").resolve()
    assert parameters.resolve_notebook("succeeds", FIXTURES) == expected
    assert parameters.resolve_notebook("succeeds.py", FIXTURES) == expected
    assert parameters.resolve_notebook(str(FIXTURES / "succeeds.py")) == expected
    with pytest.raises(parameters.NotebookNotFound, match="'nope'.*known: complex_parameters, fails"):
        parameters.resolve_notebook("nope", FIXTURES)


def test_parameters_of_reads_the_literal_defaults():
    assert parameters.parameters_of(FIXTURES / "complex_parameters.py") == {
        "years": [2014, 2015],
        "options": {"window_days": 7, "alert": "ksi"},
        "threshold": 0.5,
        "count": 3,
        "enabled": True,
        "model_version": None,
        "start_date": "2024-01-01",
    }
    assert parameters.parameters_of(FIXTURES / "no_parameters.py") == {}


def test_command_line_values_take_the_type_of_their_default():
    typed = parameters.parameters_from_text(
        FIXTURES / "complex_parameters.py",
        [
            ("years", "2016, 2017"),
            ("options", '{"window_days": 14}'),
            ("threshold", "1"),
            ("count", "4"),
            ("enabled", "false"),
            ("model_version", "7"),
            ("start_date", "2019"),
        ],
    )
    assert typed == {
        "years": [2016, 2017],
        "options": {"window_days": 14},
        "threshold": 1.0,
        "count": 4,
        "enabled": False,
        "model_version": 7,
        "start_date": "2019",  # a string default keeps digits as text, unlike papermill's own -p
    }
    assert isinstance(typed["threshold"], float)
    assert parameters.parameters_from_text(FIXTURES / "complex_parameters.py", [("years", "[2018]")]) == {
        "years": [2018]
    }


@pytest.mark.parametrize(
    ("name", "value"),
    [("years", "abc"), ("count", "1.5"), ("threshold", "half"), ("enabled", "maybe"), ("options", "[1, 2]")],
)
def test_a_value_that_does_not_fit_its_default_is_refused(name, value):
    with pytest.raises(ParameterError) as error:
        parameters.parameters_from_text(FIXTURES / "complex_parameters.py", [(name, value)])
    message = str(error.value)
    assert "complex_parameters.py" in message and repr(name) in message and repr(value) in message
    assert "its parameters are: years=[2014, 2015]" in message


def test_python_values_of_the_wrong_type_are_refused_before_anything_runs(reports):
    with pytest.raises(ParameterError, match="'count' expects int .* got str '3'"):
        executor.execute(FIXTURES / "complex_parameters.py", {"count": "3"}, reports_dir=reports, record=False)
    assert not reports.exists()


def test_a_successful_run_is_archived_and_recorded(settings, reports):
    result = executor.execute(FIXTURES / "succeeds.py", {"greeting": "bonjour"}, reports_dir=reports, progress=False)

    assert result.ok and result.describe().startswith("succeeds succeeded")
    assert result.output_ipynb.parent == (reports / "runs" / "succeeds").resolve()
    assert result.output_ipynb.stem == result.run_id
    printed = _stdout_of(result.output_ipynb)
    assert "bonjour bonjour" in printed
    # The kernel runs on the interpreter that runs the executor.
    assert f"interpreter: {sys.executable}" in printed
    # ... and starts in the repository root, so notebooks import this checkout's `lib`.
    assert f"lib: {ROOT / 'lib' / '__init__.py'}" in printed
    assert f"run id: {result.run_id}" in printed
    assert "bonjour bonjour" in result.output_html.read_text()

    [row] = _runs(settings, run_id=result.run_id)
    assert row["notebook"] == "succeeds" and row["status"] == "succeeded"
    assert row["parameters"] == {"greeting": "bonjour", "repeat": 2, "notebook_run_id": result.run_id}
    assert row["duration_s"] > 0 and row["finished_at"] > row["started_at"]
    # It takes `notebook_run_id` but logged no MLflow run: its archive could be attached to none, and
    # that is said in the result, the table and the run index instead of only in a log line.
    [warning] = result.warnings
    tracking = settings.mlflow_tracking_uri
    assert warning.startswith(f"no MLflow run at {tracking} is tagged notebook_run_id={result.run_id}")
    assert row["warnings"] == [warning] and f"warning:           {warning}" in result.describe()
    assert row["output_ipynb"] == str(result.output_ipynb) and row["output_html"] == str(result.output_html)
    assert row["failed_cell"] is None and row["error_name"] is None
    # Every run, whoever started it, is listed in the run index at once.
    index = (reports / "index.html").read_text()
    assert result.run_id in index and f'href="runs/succeeds/{result.run_id}.html"' in index
    assert "warning: no MLflow run at" in index


def test_without_html_copies_only_a_run_that_did_not_succeed_gets_one(reports):
    succeeded = executor.execute(FIXTURES / "succeeds.py", reports_dir=reports, record=False, progress=False,
                                 html_copy=False)
    failed = executor.execute(FIXTURES / "fails.py", reports_dir=reports, record=False, progress=False,
                              html_copy=False)

    assert succeeded.ok and succeeded.output_ipynb.exists() and succeeded.output_html is None
    assert not succeeded.output_ipynb.with_suffix(".html").exists()
    assert not failed.ok and failed.output_html.exists()


def test_a_failing_cell_exits_non_zero_names_the_cell_and_keeps_the_output(settings, reports):
    process = _cli(reports, str(FIXTURES / "fails.py"))
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 1
    assert "fails failed in cell 3 (`ratio = 1 / denominator`)" in stderr  # the line that raised
    assert "ZeroDivisionError: division by zero" in stderr
    output = _only_output(reports, "fails")
    assert str(output) in stderr and output.with_suffix(".html").is_file()
    printed = _stdout_of(output)
    assert "before the failure" in printed and "this cell must not run" not in printed

    [row] = _runs(settings, run_id=output.stem)
    assert row["status"] == "failed" and row["failed_cell"] == 3
    assert (row["error_name"], row["error_value"]) == ("ZeroDivisionError", "division by zero")
    assert row["finished_at"] is not None


def test_a_notebook_without_parameters_cell_runs_but_refuses_parameters(settings, reports):
    with pytest.raises(ParameterError, match="no_parameters.py has no cell tagged 'parameters'.*got colour"):
        executor.execute(FIXTURES / "no_parameters.py", {"colour": "red"}, reports_dir=reports)
    assert not reports.exists()

    result = executor.execute(FIXTURES / "no_parameters.py", reports_dir=reports, progress=False)
    assert result.ok and "ran without parameters" in _stdout_of(result.output_ipynb)
    assert _runs(settings, run_id=result.run_id)[0]["parameters"] == {}


def test_an_after_run_hook_that_fails_is_a_warning_naming_it_not_a_failed_run(settings, reports, tmp_path):
    source = (FIXTURES / "no_parameters.py").read_text()
    notebook = tmp_path / "broken_hook.py"
    notebook.write_text("# ---\n# jupyter:\n#   executor:\n#     after_run:\n#     - lib.runner.executor:no_such_hook\n"
                        "# ---\n\n" + source)

    result = executor.execute(notebook, reports_dir=reports, progress=False)

    assert result.ok
    [warning] = result.warnings
    assert warning.startswith("the after-run hook lib.runner.executor:no_such_hook failed: AttributeError")
    assert _runs(settings, run_id=result.run_id)[0]["warnings"] == [warning]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["-p", "yeers", "2016"], ["complex_parameters.py", "'yeers'", "'2016'", "years=[2014, 2015]"]),
        (["-p", "count", "many"], ["complex_parameters.py", "'count'", "'many'", "whole number", "count=3"]),
    ],
    ids=["unknown-parameter", "malformed-value"],
)
def test_bad_parameters_stop_the_command_before_any_kernel_starts(settings, reports, monkeypatch, capsys, args, named):
    monkeypatch.setenv("REPORTS_DIR", str(reports))
    before = len(_runs(settings, notebook="complex_parameters"))

    assert run_notebook.main([str(FIXTURES / "complex_parameters.py"), *args]) == 2
    stderr = capsys.readouterr().err
    assert all(text in stderr for text in named), stderr
    # The 'running' row is written before a kernel starts: no row and no output means none started.
    assert not reports.exists()
    assert len(_runs(settings, notebook="complex_parameters")) == before


def test_an_unknown_notebook_stops_the_command_with_the_known_names(capsys):
    assert run_notebook.main(["no_such_notebook"]) == 2
    stderr = capsys.readouterr().err
    assert "'no_such_notebook' not found" in stderr and str(ROOT / "notebooks") in stderr


def test_a_hanging_cell_is_stopped_at_the_timeout(settings, reports):
    result = executor.execute(FIXTURES / "hangs.py", reports_dir=reports, timeout=3, progress=False)

    assert result.status == "timed_out" and 3 <= result.duration_s < 20
    assert result.failed_cell == 1 and result.error_name == "CellTimeoutError"
    printed = _stdout_of(result.output_ipynb)
    kernel_pid = int(printed.split("kernel pid: ")[1].split()[0])
    assert _wait_gone(kernel_pid, seconds=2), "the timed-out kernel is still running"
    assert "timed out in cell 1" in result.output_html.read_text()
    with pytest.raises(NotebookFailed, match="hangs timed out in cell 1"):
        result.raise_for_status()

    [row] = _runs(settings, run_id=result.run_id)
    assert row["status"] == "timed_out" and row["failed_cell"] == 1
    assert row["error_name"] == "CellTimeoutError" and "3 s" in row["error_value"]


def _wait_for(path: Path, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not (path.exists() and path.read_text()):
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def test_ctrl_c_interrupts_the_command_and_the_run_is_recorded(settings, reports, tmp_path):
    ready = tmp_path / "kernel.pid"
    fixture = str(FIXTURES / "waits_for_interrupt.py")
    process = _cli(reports, fixture, "-p", "ready_file", str(ready), "--timeout", "30")
    _wait_for(ready)
    # The cell printed before it wrote the file, but its output still has to travel from the kernel to the
    # runner: a person presses Ctrl-C after seeing it, not in the same millisecond.
    time.sleep(1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)

    assert process.returncode == 130
    assert "waits_for_interrupt was interrupted in cell 2" in stderr
    assert _wait_gone(int(ready.read_text()), seconds=0.5), "the interrupted kernel is still running"
    output = _only_output(reports, "waits_for_interrupt")
    assert "waiting for an interrupt" in _stdout_of(output)
    assert output.with_suffix(".html").is_file()

    [row] = _runs(settings, run_id=output.stem)
    assert row["status"] == "interrupted" and row["failed_cell"] == 2
    assert row["error_name"] == "KeyboardInterrupt" and row["finished_at"] is not None
    assert row["parameters"] == {"ready_file": str(ready)}


def test_sigterm_interrupts_an_in_process_run_and_stops_its_kernel(settings, reports, tmp_path):
    ready = tmp_path / "kernel.pid"
    executor.handle_sigterm_as_interrupt()

    def terminate_once_running():
        _wait_for(ready)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=terminate_once_running, daemon=True).start()
    with pytest.raises(NotebookInterrupted) as interrupted:
        executor.execute(
            FIXTURES / "waits_for_interrupt.py",
            {"ready_file": str(ready)},
            reports_dir=reports,
            timeout=30,  # a missed signal ends as timed_out instead of hanging the suite
            progress=False,
        )

    result = interrupted.value.result
    assert isinstance(interrupted.value, KeyboardInterrupt)
    assert result.status == "interrupted" and result.failed_cell == 2
    assert _wait_gone(int(ready.read_text()), seconds=1), "the interrupted kernel is still running"
    assert "waiting for an interrupt" in _stdout_of(result.output_ipynb)
    assert "was interrupted in cell 2" in result.output_html.read_text()
    assert _runs(settings, run_id=result.run_id)[0]["status"] == "interrupted"


def test_html_copies_are_written_without_network(tmp_path, monkeypatch):
    ipynb = tmp_path / "report.ipynb"
    nbformat.write(jupytext.read(FIXTURES / "succeeds.py"), ipynb)

    def refuse(*args, **kwargs):
        raise OSError("network access during HTML export")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    notebook_html._html_exporter.cache_clear()  # build the exporter (templates, CSS) while offline too
    html = notebook_html.write_html(ipynb).read_text()
    assert "Fixture: a notebook that succeeds" in html and "<style" in html


def test_html_copies_open_on_a_summary_of_the_run_and_share_one_stylesheet(settings, reports):
    first, second = (
        executor.execute(FIXTURES / "succeeds.py", {"greeting": g}, reports_dir=reports, record=False, progress=False)
        for g in ("hej", "salut")
    )
    page = first.output_html.read_text()
    summary = page.index("class='run-summary'")
    assert summary < page.index('class="jp-Cell ') and summary < page.index("hej hej")
    assert "<b>succeeded</b>" in page[summary:] and "<code>greeting = &quot;hej&quot;</code>" in page[summary:]
    assert "Fixture: a notebook that succeeds" in page[summary : page.index("</section>")]
    # The template's CSS is one file beside the copies, not inside each of them.
    (sheet,) = re.findall(r"<link rel='stylesheet' href='([^']+)'>", page)
    assert sheet in second.output_html.read_text()
    assert (first.output_html.parent / sheet).stat().st_size > 100_000 and len(page) < 60_000
    assert ".jp-Cell" in (first.output_html.parent / sheet).read_text() and ".jp-Cell {" not in page
    assert "mermaid.esm" not in page  # no diagram to draw, so no loader for one


def _printed_value(ipynb: Path, label: str) -> str:
    return _stdout_of(ipynb).split(f"{label}: ")[1].split("\n")[0]


def test_a_warm_kernel_keeps_modules_but_not_variables_and_is_replaced_after_a_timeout(reports):
    fixture = FIXTURES / "reports_its_kernel.py"
    with kernels.WarmKernel() as kernel:

        def run(notebook=fixture, **kwargs):
            return executor.execute(
                notebook, reports_dir=reports, record=False, progress=False, kernel=kernel, **kwargs
            )

        first, second = run(), run()
        assert first.ok and second.ok
        assert _printed_value(first.output_ipynb, "kernel pid") == _printed_value(second.output_ipynb, "kernel pid")
        assert _printed_value(first.output_ipynb, "lib.runner.clock already loaded") == "False"
        assert _printed_value(second.output_ipynb, "lib.runner.clock already loaded") == "True"
        assert _printed_value(second.output_ipynb, "left behind") == "False"
        # The namespace reset also restarts the execution count: the second run reads like the first.
        cells = [nbformat.read(r.output_ipynb, as_version=4).cells for r in (first, second)]
        counts = [[cell.execution_count for cell in run_cells if cell.cell_type == "code"] for run_cells in cells]
        assert counts[0] == counts[1] == list(range(1, len(counts[0]) + 1))

        assert run(FIXTURES / "fails.py").status == "failed"  # an idle kernel after a failed cell is kept
        after_failure = run()
        pid = int(_printed_value(after_failure.output_ipynb, "kernel pid"))
        assert str(pid) == _printed_value(first.output_ipynb, "kernel pid")

        assert run(FIXTURES / "hangs.py", timeout=2).status == "timed_out"
        assert _wait_gone(pid, seconds=5), "the warm kernel of a timed-out run is still running"
        fresh = run()
        assert fresh.ok and _printed_value(fresh.output_ipynb, "lib.runner.clock already loaded") == "False"
        fresh_pid = int(_printed_value(fresh.output_ipynb, "kernel pid"))
    assert _wait_gone(fresh_pid, seconds=10), "closing the warm kernel left it running"
