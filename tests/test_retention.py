"""Retention of archived notebook runs: the newest successful runs and every failure keep their copies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from lib.runner.retention import prune_run_archive
from lib.store import db


def test_only_old_successful_runs_lose_their_archived_copies(fresh_database, tmp_path):
    started = datetime(2025, 3, 1, tzinfo=UTC)
    runs = []  # (run_id, notebook, status), oldest first
    for n in range(5):
        runs.append((f"infer-{n}", "03_infer", "failed" if n == 0 else "succeeded"))
        runs.append((f"monitor-{n}", "04_monitor", "succeeded"))
    with db.session(fresh_database) as conn, conn.cursor() as cur:
        for minute, (run_id, notebook, status) in enumerate(runs):
            folder = tmp_path / "runs" / notebook
            folder.mkdir(parents=True, exist_ok=True)
            for suffix in (".ipynb", ".html"):
                (folder / f"{run_id}{suffix}").write_text("{}")
            cur.execute(
                "INSERT INTO notebook_runs (run_id, notebook, status, started_at, output_ipynb, output_html)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                (
                    run_id,
                    notebook,
                    status,
                    started + timedelta(minutes=minute),
                    str(folder / f"{run_id}.ipynb"),
                    str(folder / f"{run_id}.html"),
                ),
            )
        deleted = prune_run_archive(conn, keep_per_notebook=2)
        again = prune_run_archive(conn, keep_per_notebook=2)

    left = sorted(path.stem for path in tmp_path.glob("runs/*/*.html"))
    # The two newest successes of each notebook, and the failure, however old.
    assert left == ["infer-0", "infer-3", "infer-4", "monitor-3", "monitor-4"]
    assert sorted({path.stem for path in deleted}) == ["infer-1", "infer-2", "monitor-0", "monitor-1", "monitor-2"]
    assert len(deleted) == 10 and again == []
    with db.session(fresh_database) as conn:
        assert db.fetch_dicts(conn, "SELECT count(*) AS n FROM notebook_runs")[0]["n"] == 10  # every run stays listed


def test_retention_keeps_at_least_one_run(fresh_database):
    with db.session(fresh_database) as conn, pytest.raises(ValueError, match="at least 1"):
        prune_run_archive(conn, keep_per_notebook=0)
