"""The `place_risk` table: observed against expected KSI collisions per place, a snapshot per simulated day
on which labels landed, written by 04_monitor (lib.monitoring.places); the dashboards read the latest."""

from __future__ import annotations

from datetime import date

import psycopg2.extras

SNAPSHOT_COLUMNS = ["known_at", "period_start", "period_end", "windows", "model_versions", "grid_degrees",
                    "min_expected"]
# Per place, in the order lib.monitoring.places computes them.
PLACE_COLUMNS = [
    "level", "place", "name", "latitude", "longitude", "collisions", "observed", "expected", "excess",
    "excess_low", "excess_high", "shrunk_ratio", "shrunk_ratio_low", "shrunk_ratio_high", "shrunk_excess",
    "prior_strength", "rank",
]  # fmt: skip


def replace_snapshot(conn, known_at: date, rows: list[tuple]) -> int:
    """Replace the snapshot of `known_at` with `rows` (tuples in SNAPSHOT_COLUMNS + PLACE_COLUMNS order), in
    the caller's transaction, so a reader sees the old snapshot or the new one; return the rows written."""
    with conn.cursor() as cur:
        cur.execute("DELETE FROM place_risk WHERE known_at = %s", (known_at,))
        psycopg2.extras.execute_values(
            cur, f"INSERT INTO place_risk ({', '.join(SNAPSHOT_COLUMNS + PLACE_COLUMNS)}) VALUES %s", rows,
            page_size=1000,
        )
    return len(rows)
