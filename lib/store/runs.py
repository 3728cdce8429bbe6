"""The `notebook_runs` table: every notebook execution, failures included, as the executor records it."""

from __future__ import annotations

import json
from datetime import datetime

from lib.store.db import fetch_dicts


def insert_running(conn, run_id: str, notebook: str, parameters: dict, started_at: datetime, output_ipynb: str,
                   process: dict) -> None:
    """Record a run as 'running' by `process` ({'host', 'pid', 'process_started'})."""
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO notebook_runs (run_id, notebook, parameters, status, started_at, output_ipynb, host, pid,"
            " process_started) VALUES (%s, %s, %s, 'running', %s, %s, %s, %s, %s)",
            (run_id, notebook, json.dumps(parameters, default=str), started_at, output_ipynb,
             process["host"], process["pid"], process["process_started"]),
        )


def record_outcome(conn, run_id: str, *, status: str, finished_at: datetime, duration_s: float | None,
                   output_ipynb: str | None, output_html: str | None, failed_cell: int | None,
                   error_name: str | None, error_value: str | None, warnings: list[str]) -> None:
    """Close a run with its outcome."""
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE notebook_runs SET status = %s, finished_at = %s, duration_s = %s, output_ipynb = %s,"
            " output_html = %s, failed_cell = %s, error_name = %s, error_value = %s, warnings = %s"
            " WHERE run_id = %s",
            (status, finished_at, duration_s, output_ipynb, output_html, failed_cell, error_name, error_value,
             warnings, run_id),
        )


def running_on(conn, host: str) -> list[tuple[str, int | None, float | None]]:
    """(run_id, pid, process start time) of the runs still marked 'running' by processes of `host`."""
    rows = fetch_dicts(
        conn, "SELECT run_id, pid, process_started FROM notebook_runs WHERE status = 'running' AND host = %s", (host,)
    )
    return [(row["run_id"], row["pid"], row["process_started"]) for row in rows]


def mark_interrupted(conn, run_id: str, error_name: str, error_value: str) -> None:
    """Close a run left 'running' as 'interrupted', with the reason."""
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE notebook_runs SET status = 'interrupted', finished_at = now(), error_name = %s, error_value = %s"
            " WHERE run_id = %s AND status = 'running'",
            (error_name, error_value, run_id),
        )


def all_runs(conn) -> list[dict]:
    """Every run, newest first, with what the run index shows."""
    return fetch_dicts(
        conn,
        "SELECT run_id, notebook, parameters, status, started_at, duration_s, output_ipynb, output_html,"
        " failed_cell, error_name, error_value, warnings FROM notebook_runs ORDER BY started_at DESC, run_id DESC",
    )


def successful_beyond_newest(conn, keep: int) -> list[dict]:
    """{'run_id', 'output_ipynb', 'output_html'} of the successful runs beyond the newest `keep` of their notebook."""
    return fetch_dicts(
        conn,
        "SELECT run_id, output_ipynb, output_html FROM ("
        " SELECT run_id, output_ipynb, output_html,"
        " row_number() OVER (PARTITION BY notebook ORDER BY started_at DESC, run_id DESC) AS newest"
        " FROM notebook_runs WHERE status = 'succeeded') ranked"
        " WHERE newest > %s",
        (keep,),
    )
