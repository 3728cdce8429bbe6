"""After kill -9: runs left 'running' and kernel folders of dead processes are cleaned up by the next run."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psutil

from lib.runner import executor
from lib.runner.leftovers import KERNEL_FOLDER_PREFIX, OWNER_FILE, this_process
from lib.store.db import fetch_dicts, session

FIXTURES = Path(__file__).parent / "fixtures" / "notebooks"


def dead_process() -> dict:
    """Host, pid and start time of a process that has exited."""
    child = psutil.Popen([sys.executable, "-c", "pass"])
    identity = {**this_process(), "pid": child.pid, "process_started": child.create_time()}
    child.wait()
    return identity


def running_row(settings, process: dict) -> str:
    run_id = f"leftover-{uuid.uuid4().hex[:8]}"
    with session(settings.database_url) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO notebook_runs (run_id, notebook, status, started_at, host, pid, process_started)"
            " VALUES (%s, 'succeeds', 'running', %s, %s, %s, %s)",
            (run_id, datetime.now(UTC), process["host"], process["pid"], process["process_started"]),
        )
    return run_id


def kernel_folder(owner: dict) -> Path:
    folder = Path(tempfile.mkdtemp(prefix=KERNEL_FOLDER_PREFIX))
    (folder / OWNER_FILE).write_text(json.dumps(owner))
    return folder


def test_the_next_run_marks_dead_processes_runs_interrupted_and_removes_their_kernel_folders(settings, tmp_path):
    dead = dead_process()
    abandoned = running_row(settings, dead)
    live = running_row(settings, this_process())
    elsewhere = running_row(settings, {**dead, "host": "another-host"})  # its pids mean nothing here
    orphan, owned = kernel_folder(dead), kernel_folder(this_process())
    try:
        result = executor.execute(FIXTURES / "succeeds.py", reports_dir=tmp_path, progress=False)
        assert result.ok
        with session(settings.database_url) as conn:
            rows = {row["run_id"]: row for row in fetch_dicts(
                conn, "SELECT run_id, status, error_name, error_value FROM notebook_runs WHERE run_id = ANY(%s)",
                ([abandoned, live, elsewhere],))}
        assert rows[abandoned]["status"] == "interrupted" and rows[abandoned]["error_name"] == "ProcessGone"
        assert f"pid {dead['pid']}" in rows[abandoned]["error_value"]
        assert rows[live]["status"] == "running" and rows[elsewhere]["status"] == "running"
        assert not orphan.exists() and owned.exists()
    finally:
        for folder in (orphan, owned):
            shutil.rmtree(folder, ignore_errors=True)
        with session(settings.database_url) as conn, conn.cursor() as cur:
            cur.execute("DELETE FROM notebook_runs WHERE run_id = ANY(%s)", ([abandoned, live, elsewhere],))
