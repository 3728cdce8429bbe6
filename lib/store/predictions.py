"""The `predictions` table: one row per collision and model version, written by 03_infer."""

from __future__ import annotations

from datetime import date

import psycopg2.extras

from lib.store.db import fetch_dicts, fetch_tuples

COLUMNS = [
    "collision_index", "model_version", "collision_date", "window_start", "window_end",
    "p_fatal", "p_serious", "p_slight", "p_ksi", "predicted_severity", "ksi_alert", "alert_threshold",
    "latitude", "longitude",
]  # fmt: skip
# The columns 04_monitor reads back for a window.
SCORED_COLUMNS = [
    "collision_index", "collision_date", "p_fatal", "p_serious", "p_slight", "p_ksi", "predicted_severity",
    "ksi_alert", "alert_threshold",
]  # fmt: skip

_UPSERT_SQL = (
    f"INSERT INTO predictions ({', '.join(COLUMNS)}) VALUES %s"
    " ON CONFLICT (collision_index, model_version) DO UPDATE SET "
    + ", ".join(f"{column} = EXCLUDED.{column}" for column in [*COLUMNS[2:], "scored_at"])
)


def replace_window(conn, model_version: str, start: date, end: date, rows: list[tuple]) -> int:
    """Replace the version's rows for collisions dated start..end with `rows` (tuples in COLUMNS order);
    return how many earlier rows were removed. Both happen in the caller's transaction."""
    with conn.cursor() as cur:
        cur.execute(
            "DELETE FROM predictions WHERE model_version = %s AND collision_date BETWEEN %s AND %s",
            (model_version, start, end),
        )
        replaced = cur.rowcount
        psycopg2.extras.execute_values(cur, _UPSERT_SQL, rows, page_size=1000)
    return replaced


def scored_in_window(conn, start: date, end: date, model_version: str) -> list[tuple]:
    """The version's predictions for collisions dated start..end (tuples in SCORED_COLUMNS order), in date and
    index order."""
    return fetch_tuples(
        conn,
        f"SELECT {', '.join(SCORED_COLUMNS)} FROM predictions"
        " WHERE model_version = %s AND collision_date BETWEEN %s AND %s ORDER BY collision_date, collision_index",
        (model_version, start, end),
    )


def versions_in_window(conn, start: date, end: date) -> list[str]:
    """Model versions that scored collisions dated start..end, the one with most rows first."""
    rows = fetch_dicts(
        conn,
        "SELECT model_version, count(*) AS rows, max(scored_at) AS last_scored_at FROM predictions"
        " WHERE collision_date BETWEEN %s AND %s GROUP BY model_version ORDER BY rows DESC, last_scored_at DESC",
        (start, end),
    )
    return [row["model_version"] for row in rows]


def count_scored(conn, start: date, end: date) -> dict[str, int]:
    """{'collisions', 'alerts'}: rows scored for collisions dated start..end, and how many raised the KSI alert."""
    return fetch_dicts(
        conn,
        "SELECT count(*) AS collisions, count(*) FILTER (WHERE ksi_alert) AS alerts FROM predictions"
        " WHERE collision_date BETWEEN %s AND %s",
        (start, end),
    )[0]


def delete_after(conn, day: date) -> int:
    """Remove every prediction for collisions dated after `day` (they are scored again); return how many."""
    with conn.cursor() as cur:
        cur.execute("DELETE FROM predictions WHERE collision_date > %s", (day,))
        return cur.rowcount
