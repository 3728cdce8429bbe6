"""Versioned migrations against the real PostgreSQL of the test stack."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from lib.store import db


def _tables(url: str) -> set[str]:
    with db.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {row[0] for row in cur.fetchall()}


def test_migrations_apply_once_and_are_safe_to_rerun(fresh_database):
    expected = [version for version, _, _ in db.migrations()]
    conn = db.connect(fresh_database)
    try:
        assert db.migrate(conn) == expected
        assert db.migrate(conn) == []
    finally:
        conn.close()
    assert {"predictions", "monitoring_metrics", "notebook_runs", "simulation_state", "model_events",
            "schema_migrations"} <= _tables(fresh_database)


def test_concurrent_migrations_apply_each_file_exactly_once(fresh_database):
    def run(_):
        conn = db.connect(fresh_database)
        try:
            return db.migrate(conn)
        finally:
            conn.close()

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run, range(4)))
    applied = [version for result in results for version in result]
    assert sorted(applied) == [version for version, _, _ in db.migrations()]
    with db.connect(fresh_database) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM schema_migrations")
        assert cur.fetchone()[0] == len(db.migrations())


def test_unreachable_database_names_the_server_without_the_password():
    with pytest.raises(db.DatabaseError, match=r"127\.0\.0\.1:1/") as error:
        db.connect("postgresql://user:hunter2@127.0.0.1:1/nothing")
    assert "hunter2" not in str(error.value)


def test_a_database_that_does_not_exist_is_refused_at_once_not_retried(settings):
    missing = settings.database_url.rsplit("/", 1)[0] + "/no_such_database"
    with pytest.raises(db.DatabaseRefused, match=r"no_such_database.* does not exist; check DATABASE_URL in \.env"):
        db.connect(missing, retries=3, delay=0.01)
