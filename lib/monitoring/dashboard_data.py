"""Every series the dashboard draws, read from the monitoring tables through lib/store/dashboard_queries.py."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pandas as pd

from lib.store import dashboard_queries as queries


@dataclass(frozen=True)
class DashboardData:
    scored_per_day: pd.DataFrame
    model_version_starts: pd.DataFrame
    drift_share: pd.DataFrame
    window_metrics: pd.DataFrame  # one row per window and model version, a column per metric
    feature_drift: pd.DataFrame
    model_events: pd.DataFrame
    latest_decision: dict | None
    runner: dict | None
    champion_scores: dict[str, float]
    # Per window and KSI metric: the estimate, the realised figure once labels arrived, and `value`, the one to draw.
    estimated_quality: pd.DataFrame = field(default_factory=pd.DataFrame)


def _frame(conn, query: str) -> pd.DataFrame:
    return pd.DataFrame(queries.rows(conn, query))


def _wide(long: pd.DataFrame) -> pd.DataFrame:
    if long.empty:
        return pd.DataFrame(columns=["time", "window_start", "model_version"])
    return (
        long.pivot_table(
            index=["time", "window_start", "model_version"], columns="metric", values="value", dropna=False
        )
        .reset_index()
        .sort_values(["time", "model_version"])
    )


def load_dashboard_data(conn, champion_scores: Mapping[str, float] | None = None) -> DashboardData:
    """Read every series of the dashboard. `champion_scores` (MLflow run metric names, as the keys of
    CHAMPION_SERIES) replaces the score recorded by the latest promotion in `model_events`."""
    if champion_scores is None:
        latest = queries.rows(conn, queries.CHAMPION_SCORE_SQL)
        champion_scores = {
            f"test_{row['metric']}": row["test_score"] for row in latest if row["test_score"] is not None
        }
    return DashboardData(
        scored_per_day=_frame(conn, queries.SCORED_PER_DAY_SQL),
        model_version_starts=_frame(conn, queries.MODEL_VERSION_STARTS_SQL),
        drift_share=_frame(conn, queries.DRIFT_SHARE_SQL),
        window_metrics=_wide(_frame(conn, queries.WINDOW_METRICS_SQL)),
        feature_drift=_frame(conn, queries.FEATURE_DRIFT_SQL),
        model_events=_frame(conn, queries.MODEL_EVENTS_SQL),
        latest_decision=queries.first_row(conn, queries.LATEST_DECISION_SQL),
        runner=queries.first_row(conn, queries.RUNNER_SQL),
        champion_scores=dict(champion_scores),
        estimated_quality=_frame(conn, queries.ESTIMATED_QUALITY_SQL),
    )
