"""`REPORTS_DIR/dashboard.html`: one self-contained plotly page over the monitoring tables.

The page is rebuilt from PostgreSQL each time, so it always shows what the tables hold. The SQL
lives in named constants without parameters, written for Grafana too: the time column is called
`time`, and a Grafana panel can wrap a query as `SELECT * FROM (<query>) q WHERE $__timeFilter(time)`.
"""

from __future__ import annotations

import html
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lib.db import fetch_dicts
from lib.monitor import DRIFT_WINDOWS_SQL, PR_AUC_METRIC, ROC_AUC_METRIC, RetrainingPolicy

log = logging.getLogger(__name__)

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

# Quality rows exist only once a window's labels have all arrived (known_at).
QUALITY_SQL = f"""
SELECT window_end AS time, window_start, model_version, known_at, metric, value
FROM monitoring_metrics
WHERE metric IN ('{ROC_AUC_METRIC}', '{PR_AUC_METRIC}')
ORDER BY window_end, model_version, metric
"""

# The champion's score on its test rows, as the promotion decision recorded it (lib.registry).
CHAMPION_SCORE_SQL = """
SELECT created_at AS time, model_version, details->>'primary_metric' AS metric,
       (details->>'score')::double precision AS test_score
FROM model_events
WHERE event = 'promoted'
ORDER BY created_at DESC
LIMIT 1
"""

QUALITY_SERIES = {ROC_AUC_METRIC: "KSI ROC-AUC", PR_AUC_METRIC: "KSI PR-AUC"}
CHAMPION_SERIES = {"test_ksi_roc_auc": "champion test ROC-AUC", "test_ksi_pr_auc": "champion test PR-AUC"}
LATEST_REPORTS = 12


@dataclass(frozen=True)
class DashboardData:
    scored_per_day: pd.DataFrame
    model_version_starts: pd.DataFrame
    drift_share: pd.DataFrame
    quality: pd.DataFrame
    champion_scores: dict[str, float]


def _frame(conn, query: str) -> pd.DataFrame:
    return pd.DataFrame(fetch_dicts(conn, query))


def load_dashboard_data(conn, champion_scores: Mapping[str, float] | None = None) -> DashboardData:
    """Read every series of the dashboard. `champion_scores` (MLflow run metric names, as the keys of
    CHAMPION_SERIES) replaces the score recorded by the latest promotion in `model_events`."""
    if champion_scores is None:
        latest = fetch_dicts(conn, CHAMPION_SCORE_SQL)
        champion_scores = {
            f"test_{row['metric']}": row["test_score"] for row in latest if row["test_score"] is not None
        }
    return DashboardData(
        scored_per_day=_frame(conn, SCORED_PER_DAY_SQL),
        model_version_starts=_frame(conn, MODEL_VERSION_STARTS_SQL),
        drift_share=_frame(conn, DRIFT_SHARE_SQL),
        quality=_frame(conn, QUALITY_SQL),
        champion_scores=dict(champion_scores),
    )


def _window_hover(frame: pd.DataFrame) -> list[str]:
    return [
        f"{start}..{end}, model {version}"
        for start, end, version in zip(frame["window_start"], frame["time"], frame["model_version"], strict=True)
    ]


def dashboard_figure(data: DashboardData, policy: RetrainingPolicy | None = None) -> go.Figure:
    """Four stacked panels on one date axis; model version changes drawn across all of them. With
    `policy`, the drift panel shows its retraining threshold and circles the windows too small to count."""
    figure = make_subplots(
        rows=4,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.06,
        subplot_titles=(
            "Collisions scored per day",
            "Mean P(KSI) and alert rate per day",
            "Share of drifted features per window",
            "KSI quality per window (once labels arrive)",
        ),
    )
    daily = data.scored_per_day
    if not daily.empty:
        figure.add_trace(go.Bar(x=daily["time"], y=daily["scored"], name="collisions scored"), row=1, col=1)
        figure.add_trace(
            go.Scatter(x=daily["time"], y=daily["mean_p_ksi"], name="mean P(KSI)", mode="lines"), row=2, col=1
        )
        figure.add_trace(
            go.Scatter(x=daily["time"], y=daily["alert_rate"], name="alert rate", mode="lines"), row=2, col=1
        )
    drift = data.drift_share
    if not drift.empty:
        rows = [None if pd.isna(r) else int(r) for r in drift["rows"]]
        hover = [
            f"{window}, {count:,} collisions" if count is not None else window
            for window, count in zip(_window_hover(drift), rows, strict=True)
        ]
        figure.add_trace(
            go.Scatter(
                x=drift["time"],
                y=drift["share_drifted_features"],
                mode="lines+markers",
                name="share of drifted features",
                text=hover,
            ),
            row=3,
            col=1,
        )
        if policy is not None:
            small = drift[[policy.too_small_for_drift(count) for count in rows]]
            if not small.empty:
                figure.add_trace(
                    go.Scatter(
                        x=small["time"],
                        y=small["share_drifted_features"],
                        mode="markers",
                        marker={"symbol": "circle-open", "size": 14, "color": "grey"},
                        name=f"window under {policy.min_drift_rows} collisions: its drift does not count",
                        hoverinfo="skip",
                    ),
                    row=3,
                    col=1,
                )
            figure.add_hline(
                y=policy.drift_share_threshold,
                line_dash="dash",
                line_color="firebrick",
                row=3,
                col=1,
                annotation_text="retraining threshold",
            )
    quality = data.quality
    for metric, label in QUALITY_SERIES.items():
        rows = quality[quality["metric"] == metric] if not quality.empty else quality
        if not rows.empty:
            figure.add_trace(
                go.Scatter(x=rows["time"], y=rows["value"], mode="lines+markers", name=label, text=_window_hover(rows)),
                row=4,
                col=1,
            )
    times = [pd.to_datetime(frame["time"]) for frame in (daily, drift, quality) if not frame.empty]
    for key, label in CHAMPION_SERIES.items():
        if key in data.champion_scores and times:
            span = pd.concat(times, ignore_index=True)
            score = data.champion_scores[key]
            figure.add_trace(
                go.Scatter(
                    x=[span.min(), span.max()], y=[score, score], mode="lines", name=label, line={"dash": "dot"}
                ),
                row=4,
                col=1,
            )
    for start in data.model_version_starts.iloc[1:].itertuples():
        figure.add_vline(x=str(start.time), line_dash="dot", line_color="grey", row="all", col=1)
        figure.add_annotation(
            x=start.time, y=1.0, yref="paper", text=f"model {start.model_version}", showarrow=False, yanchor="bottom"
        )
    figure.update_layout(height=1100, hovermode="x unified", legend={"orientation": "h", "y": -0.05}, margin={"t": 60})
    return figure


def _report_links(reports_dir: Path) -> str:
    reports = sorted((reports_dir / "monitoring").glob("drift_*.html"), reverse=True)[:LATEST_REPORTS]
    if not reports:
        return "<p>No Evidently report has been written yet.</p>"
    items = "".join(
        f'<li><a href="monitoring/{html.escape(path.name)}">{html.escape(path.stem)}</a></li>' for path in reports
    )
    return f"<ul>{items}</ul>"


def write_dashboard(
    conn,
    reports_dir: Path,
    champion_scores: Mapping[str, float] | None = None,
    policy: RetrainingPolicy | None = None,
) -> Path:
    """Rebuild `reports_dir/dashboard.html` from the tables; it embeds plotly.js and opens offline."""
    reports_dir = Path(reports_dir)
    figure = dashboard_figure(load_dashboard_data(conn, champion_scores), policy)
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    page = (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>Accident severity forecast: monitoring</title>"
        "</head><body style='font-family: sans-serif; margin: 1em 2em'>"
        "<h1>Accident severity forecast: monitoring</h1>"
        f"<p>Generated {generated} from the predictions, monitoring_metrics and model_events tables.</p>"
        + figure.to_html(full_html=False, include_plotlyjs=True, div_id="monitoring-dashboard")
        + "<h2>Latest Evidently drift reports</h2>"
        + _report_links(reports_dir)
        + "</body></html>\n"
    )
    target = reports_dir / "dashboard.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    partial.write_text(page, encoding="utf-8")
    os.replace(partial, target)
    log.info("Wrote the monitoring dashboard to %s.", target)
    return target
