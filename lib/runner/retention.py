"""Retention of archived notebook runs: the executed copies of old successful runs are deleted.

Every notebook run leaves an executed `.ipynb` and its HTML copy under `REPORTS_DIR/runs/` (about
90 KB a run); a simulated year at one tick a simulated day runs 03_infer 365 times. Keeping the newest
`keep_per_notebook` successful runs of each notebook bounds that archive; failed, timed-out and
interrupted runs are always kept, since they are the ones a person opens. The simulation runner
prunes after every tick, keeping RUNS_KEEP_PER_NOTEBOOK. `notebook_runs` keeps every
row, and the run index marks the runs whose copies were pruned.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lib.store import runs

log = logging.getLogger(__name__)


def prune_run_archive(conn, keep_per_notebook: int) -> list[Path]:
    """Delete the executed copies of every successful run but the newest `keep_per_notebook` of its
    notebook; return the files deleted. Safe to call after every tick: already pruned runs cost a stat."""
    if keep_per_notebook < 1:
        raise ValueError(f"keep_per_notebook must be at least 1, got {keep_per_notebook}")
    deleted = []
    for run in runs.successful_beyond_newest(conn, keep_per_notebook):
        for output in (run["output_ipynb"], run["output_html"]):
            path = Path(output) if output else None
            if path is not None and path.exists():
                path.unlink()
                deleted.append(path)
    if deleted:
        log.info(
            "Pruned %d archived notebook file(s), keeping the newest %d runs of each notebook.",
            len(deleted),
            keep_per_notebook,
        )
    return deleted
