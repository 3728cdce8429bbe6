"""What a run leaves behind: the executed notebook (pointed at its source, with a banner where it
stopped early), its HTML copy, its `notebook_runs` row and the run index that lists it."""

from __future__ import annotations

import logging
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path

import nbformat
import psycopg2
from papermill.execute import ERROR_MARKER_TAG

from lib.runner import leftovers
from lib.runner.notebook_html import write_html
from lib.runner.parameters import INJECTED_TAG
from lib.runner.run_index import INDEX_FILE, write_index
from lib.runner.run_result import RunResult
from lib.store import db, runs

logger = logging.getLogger(__name__)


def new_run_id(now: datetime) -> str:
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def insert_running(database_url: str, result: RunResult) -> None:
    """Record the run as 'running' by this process, after marking runs whose process died as interrupted."""
    process = leftovers.this_process()
    with db.session(database_url) as conn:
        leftovers.mark_abandoned_runs(conn)
        runs.insert_running(conn, result.run_id, result.notebook, result.parameters, result.started_at,
                            str(result.output_ipynb), process)


def refresh_index(database_url: str, reports_dir: Path) -> None:
    """Rebuild REPORTS_DIR/index.html so it lists this run; a failure here leaves the run recorded."""
    try:
        with db.session(database_url) as conn:
            write_index(conn, reports_dir)
    except (db.DatabaseError, psycopg2.Error, OSError) as error:
        logger.warning("The run index %s was not rebuilt: %s", reports_dir / INDEX_FILE, error)


def record_outcome(database_url: str, result: RunResult) -> None:
    with db.session(database_url) as conn:
        runs.record_outcome(
            conn,
            result.run_id,
            status=result.status,
            finished_at=datetime.now(UTC),
            duration_s=result.duration_s,
            output_ipynb=str(result.output_ipynb) if result.output_ipynb else None,
            output_html=str(result.output_html) if result.output_html else None,
            failed_cell=result.failed_cell,
            error_name=result.error_name,
            error_value=result.error_value,
            warnings=list(result.warnings),
        )


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


def finish_output(output: Path, source: Path, status: str, error_value: str | None) -> tuple[int | None, str | None]:
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


def html_copy(output: Path, warnings: list[str]) -> Path | None:
    if not output.exists():
        return None
    try:
        return write_html(output)
    except Exception as error:  # the run's outcome matters more than its HTML copy: a warning, not a failure
        logger.exception("Could not write the HTML copy of %s.", output)
        warnings.append(f"the HTML copy of {output.name} was not written: {type(error).__name__}: {error}")
        return None
