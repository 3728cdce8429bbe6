"""The `monitoring_metrics` table: one scalar per window, model version and metric, written by 04_monitor.

A metric's name is `<family>.<name>`; a family (drift and estimated quality at the window's end, quality
and labels once its labels arrive) is replaced as a whole when a window is recomputed. The names below are
the ones the dashboard, Grafana and the retraining decision read.
"""

from __future__ import annotations

from datetime import date

import psycopg2.extras

from lib.store.db import fetch_dicts

DRIFT, QUALITY = "drift", "quality"
# The quality a window is expected to show, from its P(KSI) before its labels arrive (lib.monitoring.estimated_quality).
ESTIMATED = "estimated"
ESTIMATED_PR_AUC_METRIC = f"{ESTIMATED}.ksi_pr_auc"
LABELS = "labels"  # the KSI share against the reference, by reporting regime (lib.monitoring.label_drift)
LABEL_KSI_SHARE_METRIC = f"{LABELS}.ksi_share"
DRIFT_SHARE_METRIC = f"{DRIFT}.share_drifted_features"
DRIFT_ROWS_METRIC = f"{DRIFT}.rows"
PR_AUC_METRIC = f"{QUALITY}.ksi_pr_auc"
ROC_AUC_METRIC = f"{QUALITY}.ksi_roc_auc"
LABELLED_ROWS_METRIC = f"{QUALITY}.labelled_rows"
PREDICTED_SHARE_PREFIX = f"{DRIFT}.predicted_share."
ACTUAL_SHARE_PREFIX = f"{QUALITY}.actual_share."
FEATURE_SCORE_PREFIX = f"{DRIFT}.feature_score."

# Each monitored window's share of drifted features with the number of collisions it was computed on.
DRIFT_WINDOWS_SQL = f"""
SELECT s.window_start, s.window_end, s.model_version, s.known_at,
       s.value AS share_drifted_features, r.value AS rows
FROM monitoring_metrics s
LEFT JOIN monitoring_metrics r
  ON r.window_start = s.window_start AND r.window_end = s.window_end
  AND r.model_version = s.model_version AND r.metric = '{DRIFT_ROWS_METRIC}'
WHERE s.metric = '{DRIFT_SHARE_METRIC}'
"""

# The latest window monitored for drift and the version monitored.
LATEST_WINDOW_SQL = f"""
SELECT window_start, window_end, model_version
FROM monitoring_metrics
WHERE metric = '{DRIFT_SHARE_METRIC}'
ORDER BY window_end DESC, computed_at DESC
LIMIT 1
"""

# Windows monitored for drift whose labels have all arrived, and whose quality is either not stored
# yet or was completed on or after `completed_since` (recomputed, so a rerun repeats the same work).
_QUALITY_DUE_SQL = f"""
SELECT DISTINCT d.window_start, d.window_end, d.model_version
FROM monitoring_metrics d
WHERE d.metric = '{DRIFT_SHARE_METRIC}' AND d.window_end + %(label_delay_days)s <= %(as_of)s
  AND (d.window_end + %(label_delay_days)s >= %(completed_since)s OR NOT EXISTS (
    SELECT 1 FROM monitoring_metrics q
    WHERE q.window_start = d.window_start AND q.window_end = d.window_end
      AND q.model_version = d.model_version AND q.metric LIKE '{QUALITY}.%%'
  ))
ORDER BY d.window_end, d.model_version
"""


def replace_family(conn, start: date, end: date, model_version: str, family: str,
                   values: dict[str, float | None], known_at: date) -> int:
    """Replace the window's `family.*` rows with `values`; the other family's rows stay. Both statements
    share the caller's transaction, so a reader sees the old rows or the new ones. Returns the rows written."""
    rows = [(start, end, model_version, name, value, known_at) for name, value in values.items()]
    with conn.cursor() as cur:
        cur.execute(
            "DELETE FROM monitoring_metrics WHERE window_start = %s AND window_end = %s AND model_version = %s"
            " AND metric LIKE %s",
            (start, end, model_version, f"{family}.%"),
        )
        psycopg2.extras.execute_values(
            cur,
            "INSERT INTO monitoring_metrics (window_start, window_end, model_version, metric, value, known_at)"
            " VALUES %s",
            rows,
        )
    return len(rows)


def windows_awaiting_quality(conn, as_of: date, label_delay_days: int,
                             completed_since: date) -> list[tuple[date, date, str]]:
    """(start, end, model version) of the drift-monitored windows whose labels have all arrived by `as_of`
    and whose quality is not stored yet or became known on or after `completed_since`, oldest first."""
    params = {"label_delay_days": label_delay_days, "as_of": as_of, "completed_since": completed_since}
    return [(row["window_start"], row["window_end"], row["model_version"])
            for row in fetch_dicts(conn, _QUALITY_DUE_SQL, params)]


def recent_values(conn, model_version: str, metric: str, as_of: date, limit: int) -> list[float]:
    """The metric's known values for the version as of `as_of`, newest window first, at most `limit`."""
    rows = fetch_dicts(
        conn,
        "SELECT value FROM monitoring_metrics WHERE model_version = %s AND metric = %s AND known_at <= %s"
        " AND value IS NOT NULL ORDER BY window_end DESC LIMIT %s",
        (model_version, metric, as_of, limit),
    )
    return [row["value"] for row in rows]


def estimates_awaiting_labels(conn, model_version: str, as_of: date, limit: int) -> list[tuple[date, date, float]]:
    """(start, end, estimated KSI PR-AUC) of the version's windows estimated by `as_of` whose labels had not all
    arrived by then (no `quality.*` row known), newest first, at most `limit`."""
    rows = fetch_dicts(
        conn,
        "SELECT e.window_start, e.window_end, e.value FROM monitoring_metrics e"
        " WHERE e.model_version = %(version)s AND e.metric = %(metric)s AND e.known_at <= %(as_of)s"
        " AND e.value IS NOT NULL AND NOT EXISTS ("
        "  SELECT 1 FROM monitoring_metrics q WHERE q.window_start = e.window_start AND q.window_end = e.window_end"
        "  AND q.model_version = e.model_version AND q.metric LIKE %(labelled)s AND q.known_at <= %(as_of)s)"
        " ORDER BY e.window_end DESC LIMIT %(limit)s",
        {"version": model_version, "metric": ESTIMATED_PR_AUC_METRIC, "as_of": as_of,
         "labelled": f"{QUALITY}.%", "limit": limit},
    )
    return [(row["window_start"], row["window_end"], row["value"]) for row in rows]


def window_values(conn, model_version: str, metric: str, windows: list[tuple[date, date]],
                  as_of: date) -> dict[tuple[date, date], float | None]:
    """The metric's value of each of the version's `windows` that has it known by `as_of` (None: undefined there)."""
    if not windows:
        return {}
    rows = fetch_dicts(
        conn,
        "SELECT window_start, window_end, value FROM monitoring_metrics WHERE model_version = %s AND metric = %s"
        " AND known_at <= %s AND (window_start, window_end) IN %s",
        (model_version, metric, as_of, tuple(tuple(window) for window in windows)),
    )
    return {(row["window_start"], row["window_end"]): row["value"] for row in rows}


def latest_drift(conn, model_version: str, as_of: date) -> dict | None:
    """{'share_drifted_features', 'rows'} of the version's latest window known on `as_of`, or None."""
    rows = fetch_dicts(
        conn,
        f"SELECT share_drifted_features, rows FROM ({DRIFT_WINDOWS_SQL}) d"
        " WHERE model_version = %s AND known_at <= %s ORDER BY window_end DESC LIMIT 1",
        (model_version, as_of),
    )
    return rows[0] if rows else None


def drift_windows_ending_after(conn, day: date) -> list[tuple[date, date]]:
    """(start, end) of every window monitored for drift that ends after `day`."""
    rows = fetch_dicts(
        conn,
        "SELECT DISTINCT window_start, window_end FROM monitoring_metrics WHERE metric = %s AND window_end > %s",
        (DRIFT_SHARE_METRIC, day),
    )
    return [(row["window_start"], row["window_end"]) for row in rows]


def drift_share(conn, start: date, end: date) -> float | None:
    """The share of drifted features stored for the window (any version), or None."""
    rows = fetch_dicts(
        conn,
        "SELECT value FROM monitoring_metrics WHERE window_start = %s AND window_end = %s AND metric = %s",
        (start, end, DRIFT_SHARE_METRIC),
    )
    return rows[0]["value"] if rows else None


def became_known(conn, metric: str, after: date, through: date) -> list[tuple[date, float | None]]:
    """(window end, value) of the metric's rows that became known after `after` and by `through`."""
    rows = fetch_dicts(
        conn,
        "SELECT window_end, value FROM monitoring_metrics WHERE metric = %s AND known_at > %s AND known_at <= %s"
        " ORDER BY window_end",
        (metric, after, through),
    )
    return [(row["window_end"], row["value"]) for row in rows]


def labelled_windows(conn, as_of: date, limit: int) -> list[tuple[date, date, str]]:
    """(start, end, model version) of the latest `limit` windows whose quality was known by `as_of`, oldest
    first; a window evaluated for several versions counts once, with the version evaluated last."""
    rows = fetch_dicts(
        conn,
        "SELECT window_start, window_end, model_version FROM ("
        " SELECT DISTINCT ON (window_start, window_end) window_start, window_end, model_version"
        " FROM monitoring_metrics WHERE metric = %s AND known_at <= %s"
        " ORDER BY window_start, window_end, computed_at DESC) labelled"
        " ORDER BY window_end DESC LIMIT %s",
        (LABELLED_ROWS_METRIC, as_of, limit),
    )
    return [(row["window_start"], row["window_end"], row["model_version"]) for row in reversed(rows)]


def recent_family(conn, model_version: str, family: str, anchor: str, as_of: date, limit: int) -> list[dict]:
    """The `family.*` metrics of the version's newest `limit` windows that have `anchor` known by `as_of`,
    one {metric: value} per window, newest first."""
    rows = fetch_dicts(
        conn,
        "WITH recent AS (SELECT window_start, window_end FROM monitoring_metrics"
        " WHERE model_version = %(version)s AND metric = %(anchor)s AND known_at <= %(as_of)s"
        " ORDER BY window_end DESC LIMIT %(limit)s)"
        " SELECT m.window_end, m.metric, m.value FROM monitoring_metrics m"
        " JOIN recent r ON m.window_start = r.window_start AND m.window_end = r.window_end"
        " WHERE m.model_version = %(version)s AND m.metric LIKE %(family)s ORDER BY m.window_end DESC",
        {"version": model_version, "anchor": anchor, "as_of": as_of, "limit": limit, "family": f"{family}.%"},
    )
    windows: dict[date, dict] = {}
    for row in rows:
        windows.setdefault(row["window_end"], {})[row["metric"]] = row["value"]
    return list(windows.values())
