"""The `simulation_state` table (the simulated timeline and how far the runner has come), what a reset
removes, and the advisory lock that lets one runner at a time work on a database."""

from __future__ import annotations

from datetime import date, datetime

import psycopg2

from lib.store.db import fetch_dicts

SIMULATION_NAME = "default"
PROGRESS_COLUMNS = ("last_inferred_date", "last_monitored_end", "monitored_through")
RUNNER_LOCK_KEY = 7_319_002  # the migrations use 7_319_001

# What a reset removes: (table, condition, parameters). Promotions (`promoted` / `not_promoted`)
# stay: they describe the model registry, which a reset does not touch.
_SIMULATION_ROWS = (
    ("predictions", "TRUE", ()),
    ("monitoring_metrics", "TRUE", ()),
    ("place_risk", "TRUE", ()),
    ("model_events", "event LIKE %s", ("retrain%",)),
    ("simulation_state", "name = %s", (SIMULATION_NAME,)),
)


def timeline(conn) -> dict | None:
    """{'started_at', 'start_date', 'seconds_per_day'} of the simulation, or None before it starts."""
    rows = fetch_dicts(
        conn, "SELECT started_at, start_date, seconds_per_day FROM simulation_state WHERE name = %s", (SIMULATION_NAME,)
    )
    return rows[0] if rows else None


def create_timeline(conn, started_at: datetime, start_date: date, seconds_per_day: float) -> bool:
    """Start the timeline unless one exists; True when this call created it. Two runners starting at
    once cannot both create it: the insert is the arbiter."""
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO simulation_state (name, started_at, start_date, seconds_per_day) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (name) DO NOTHING",
            (SIMULATION_NAME, started_at, start_date, seconds_per_day),
        )
        return cur.rowcount == 1


def progress(conn) -> dict | None:
    """The PROGRESS_COLUMNS of the simulation (None where nothing happened yet), or None before it starts."""
    rows = fetch_dicts(
        conn, f"SELECT {', '.join(PROGRESS_COLUMNS)} FROM simulation_state WHERE name = %s", (SIMULATION_NAME,)
    )
    return rows[0] if rows else None


def set_progress(conn, **columns: date) -> None:
    """Move the named PROGRESS_COLUMNS to the given days."""
    unknown = set(columns) - set(PROGRESS_COLUMNS)
    if unknown:
        raise ValueError(f"not progress columns of simulation_state: {', '.join(sorted(unknown))}")
    assignments = ", ".join(f"{column} = %s" for column in columns)
    with conn.cursor() as cur:
        cur.execute(
            f"UPDATE simulation_state SET {assignments}, updated_at = now() WHERE name = %s",
            (*columns.values(), SIMULATION_NAME),
        )


def count_simulation_rows(conn) -> dict[str, int]:
    """The rows a reset removes, per table."""
    counts = {}
    with conn.cursor() as cur:
        for table, condition, parameters in _SIMULATION_ROWS:
            cur.execute(f"SELECT count(*) FROM {table} WHERE {condition}", parameters)
            counts[table] = cur.fetchone()[0]
    return counts


def delete_simulation_rows(conn) -> dict[str, int]:
    """Remove the simulation's timeline, predictions, metrics and retraining events; return the rows removed."""
    removed = {}
    with conn.cursor() as cur:
        for table, condition, parameters in _SIMULATION_ROWS:
            cur.execute(f"DELETE FROM {table} WHERE {condition}", parameters)
            removed[table] = cur.rowcount
    return removed


def try_runner_lock(conn) -> bool:
    """Take the session-level runner lock on this (autocommit) connection; False when another session holds it."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(%s)", (RUNNER_LOCK_KEY,))
        return cur.fetchone()[0]


def still_connected(conn) -> bool:
    """Whether the connection still reaches the server (a restart breaks it, and the lock with it)."""
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
        return True
    except psycopg2.Error:
        return False
