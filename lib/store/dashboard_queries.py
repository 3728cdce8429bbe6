"""The read-only queries behind `reports/dashboard.html` and the Grafana dashboard, one function per panel's question.

The SQL lives in named constants without parameters, written for Grafana too: the time column is
called `time`, and a Grafana panel wraps a query as `SELECT * FROM (<query>) q WHERE $__timeFilter(time)`
(tests/test_compose.py runs every Grafana query against the real schema).
"""

from __future__ import annotations

from lib.store.db import fetch_dicts
from lib.store.metrics import DRIFT_WINDOWS_SQL, ESTIMATED, FEATURE_SCORE_PREFIX, LATEST_WINDOW_SQL, QUALITY

SCORED_PER_DAY_SQL = """
SELECT collision_date AS time,
       count(*) AS scored,
       avg(p_ksi) AS mean_p_ksi,
       avg(ksi_alert::int)::double precision AS alert_rate
FROM predictions
GROUP BY collision_date
ORDER BY collision_date
"""

# The first scored day of each model version: where the model serving the collisions changed.
MODEL_VERSION_STARTS_SQL = """
SELECT min(collision_date) AS time, model_version
FROM predictions
GROUP BY model_version
ORDER BY min(collision_date), model_version
"""

DRIFT_SHARE_SQL = f"""
SELECT window_end AS time, window_start, model_version, share_drifted_features, rows
FROM ({DRIFT_WINDOWS_SQL}) d
ORDER BY window_end, model_version
"""

# Every per-window scalar but the per-feature ones, long format. Quality rows exist only once a
# window's labels have all arrived (known_at).
WINDOW_METRICS_SQL = """
SELECT window_end AS time, window_start, model_version, known_at, metric, value
FROM monitoring_metrics
WHERE NOT starts_with(metric, 'drift.feature')
ORDER BY window_end, model_version, metric
"""

# Each window's estimated KSI quality (known at its end) beside the realised figure once its labels have all
# arrived: `value` is the realised one from then on (NULL where the labels cannot define it), the estimate before.
ESTIMATED_QUALITY_SQL = f"""
SELECT e.window_end AS time, e.window_start, e.model_version,
       substr(e.metric, length('{ESTIMATED}.') + 1) AS metric,
       e.value AS estimated, q.value AS realised, q.known_at AS labelled_on,
       CASE WHEN q.metric IS NULL THEN e.value ELSE q.value END AS value
FROM monitoring_metrics e
LEFT JOIN monitoring_metrics q
  ON q.window_start = e.window_start AND q.window_end = e.window_end AND q.model_version = e.model_version
  AND q.metric = '{QUALITY}.' || substr(e.metric, length('{ESTIMATED}.') + 1)
WHERE starts_with(e.metric, '{ESTIMATED}.ksi_')
ORDER BY e.window_end, e.model_version, metric
"""

# Each feature's drift score per window: the window x feature heatmap.
FEATURE_DRIFT_SQL = f"""
SELECT window_end AS time, model_version, substr(metric, length('{FEATURE_SCORE_PREFIX}') + 1) AS feature,
       value AS score
FROM monitoring_metrics
WHERE starts_with(metric, '{FEATURE_SCORE_PREFIX}')
ORDER BY window_end, model_version, feature
"""

# Promotions and retraining on the simulated timeline (the baseline promotion has no simulated date).
MODEL_EVENTS_SQL = """
SELECT simulated_date AS time, event, model_version, details
FROM model_events
WHERE event IN ('promoted', 'retrained') AND simulated_date IS NOT NULL
ORDER BY simulated_date, created_at
"""

# The latest retraining decision of the monitoring (lib.monitoring.retraining.record_decision).
LATEST_DECISION_SQL = """
SELECT simulated_date AS time, event, model_version, details
FROM model_events
WHERE event IN ('retraining_recommended', 'retraining_not_needed')
ORDER BY simulated_date DESC, created_at DESC
LIMIT 1
"""

# How far the runner has scored, and how many simulated days have ended that it has not scored yet
# (lib.runner.clock: a day has ended once `seconds_per_day` real seconds per day have passed since the start).
RUNNER_SQL = """
SELECT updated_at AS time, start_date, last_inferred_date, last_monitored_end,
       start_date + floor(extract(epoch FROM now() - started_at) / seconds_per_day)::int - 1 AS due_through,
       (start_date + floor(extract(epoch FROM now() - started_at) / seconds_per_day)::int - 1)
         - coalesce(last_inferred_date, start_date - 1) AS days_behind
FROM simulation_state
WHERE name = 'default'
"""

# The collisions of the latest window monitored for drift, scored by the version monitored: the map.
LATEST_WINDOW_MAP_SQL = f"""
SELECT p.collision_index, p.latitude, p.longitude, p.p_ksi, p.ksi_alert, w.window_start, w.window_end
FROM ({LATEST_WINDOW_SQL}) w
JOIN predictions p ON p.model_version = w.model_version AND p.collision_date BETWEEN w.window_start AND w.window_end
WHERE p.latitude IS NOT NULL AND p.longitude IS NOT NULL
"""

# Observed against expected KSI collisions per place, as the latest snapshot has them: ranked places first
# (rank 1: the largest shrunk excess), then those too small to rank, largest first (lib.monitoring.places).
LATEST_PLACES_SQL = """
SELECT known_at AS time, period_start, period_end, windows, model_versions, grid_degrees, min_expected,
       level, place, name,
       latitude, longitude, collisions, observed, expected, excess, excess_low, excess_high,
       shrunk_ratio, shrunk_ratio_low, shrunk_ratio_high, shrunk_excess, prior_strength, rank
FROM place_risk
WHERE known_at = (SELECT max(known_at) FROM place_risk)
ORDER BY level, rank NULLS LAST, expected DESC
"""

# The champion's score on its test rows, as the promotion decision recorded it (lib.modeling.registry).
CHAMPION_SCORE_SQL = """
SELECT created_at AS time, model_version, details->>'primary_metric' AS metric,
       (details->>'score')::double precision AS test_score
FROM model_events
WHERE event = 'promoted'
ORDER BY created_at DESC
LIMIT 1
"""


def rows(conn, query: str) -> list[dict]:
    """The rows of one of this module's queries (they take no parameters)."""
    return fetch_dicts(conn, query)


def first_row(conn, query: str) -> dict | None:
    """The first row of one of this module's queries, or None when it has none."""
    found = fetch_dicts(conn, query)
    return found[0] if found else None
