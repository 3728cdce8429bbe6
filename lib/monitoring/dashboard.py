"""`REPORTS_DIR/dashboard.html`: one self-contained page over the monitoring tables, read at a glance.

At the top a row of status tiles answers the questions a person comes with (which model serves, is it
drifting, is its labelled quality below the champion's test figure, when did it last retrain, is the
runner keeping up); below them every stored metric over time on one date axis, with model versions,
promotions and retraining marked on each panel; a map of the latest window's collisions; observed against
expected KSI collisions by place, once labels have landed (lib.monitoring.place_report); and links to each
window's Evidently reports, the run index and the champion's MLflow run.

The page is rebuilt from PostgreSQL each time, so it always shows what the tables hold; its queries,
shared with Grafana, are in lib/store/dashboard_queries.py.
"""

from __future__ import annotations

import html
import logging
import os
from collections.abc import Mapping
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lib.monitoring import html_packing
from lib.monitoring.collision_map import map_figure
from lib.monitoring.dashboard_data import DashboardData, load_dashboard_data
from lib.monitoring.estimated_series import add_estimated_lines, realised_style
from lib.monitoring.evidently_report import report_path
from lib.monitoring.place_report import latest_places, places_figure, places_heading, places_tables
from lib.monitoring.retraining import RetrainingPolicy
from lib.monitoring.status_tiles import status_tiles
from lib.store.metrics import (
    ACTUAL_SHARE_PREFIX,
    DRIFT,
    LABELS,
    PR_AUC_METRIC,
    PREDICTED_SHARE_PREFIX,
    QUALITY,
    ROC_AUC_METRIC,
)

log = logging.getLogger(__name__)

QUALITY_SERIES = {ROC_AUC_METRIC: "KSI ROC-AUC", PR_AUC_METRIC: "KSI PR-AUC", f"{QUALITY}.ksi_brier": "KSI Brier score"}
CHAMPION_SERIES = {"test_ksi_roc_auc": "champion test ROC-AUC", "test_ksi_pr_auc": "champion test PR-AUC"}
RECALL_SERIES = {
    f"{QUALITY}.recall_fatal": "recall, fatal",
    f"{QUALITY}.recall_serious": "recall, serious",
    f"{QUALITY}.recall_slight": "recall, slight",
    f"{QUALITY}.ksi_recall": "KSI recall at the alert threshold",
    f"{QUALITY}.ksi_precision": "KSI precision at the alert threshold",
}
PREDICTION_DRIFT_SERIES = {
    f"{DRIFT}.p_ksi_score": "P(KSI) drift score",
    f"{DRIFT}.predicted_class_score": "predicted severity drift score",
}
KSI_CLASSES = ("fatal", "serious")
# The KSI share by reporting regime and DfT's adjusted share, once labels arrive (lib.monitoring.label_drift).
LABEL_SERIES = {
    f"{LABELS}.adjusted_ksi_share": ("adjusted KSI share (DfT, as if all injury-based)", {"dash": "dot"}),
    f"{LABELS}.regime.injury_based.ksi_share": ("actual KSI share, injury-based reporting", {"width": 1}),
    f"{LABELS}.regime.severity_reporting.ksi_share": ("actual KSI share, severity reporting", {"width": 1}),
    f"{LABELS}.reference.ksi_share": ("KSI share of the training sample", {"dash": "dashdot", "color": "grey"}),
}
PANELS = (
    ("Collisions scored per day", "collisions / day"),
    ("Mean P(KSI) and KSI alert rate per day", "share of collisions"),
    ("Drift per window: share of drifted features, and drift of the predictions", "share / drift score"),
    ("KSI share per window: predicted against actual (label drift)", "share of collisions"),
    ("Fatal and serious shares per window: predicted (dashed) against actual", "share of collisions"),
    ("KSI quality per window: estimated (dashed) until its labels arrive", "score"),
    ("Recall per severity, and KSI precision and recall at the alert threshold", "recall / precision"),
    ("Drift score of each feature per window (darker: more drift)", "feature"),
)
COLOURS = {"fatal": "#8b0000", "serious": "#d95f02", "slight": "#1b9e77", "ksi": "#7570b3"}


# ------------------------------------------------------------------------------------------- status


# ------------------------------------------------------------------------------------------ figures


def _window_hover(frame: pd.DataFrame) -> list[str]:
    return [
        f"{start}..{end}, model {version}"
        for start, end, version in zip(frame["window_start"], frame["time"], frame["model_version"], strict=True)
    ]


def _series(figure: go.Figure, row: int, frame: pd.DataFrame, column: str, name: str, **style) -> None:
    """A per-window line of `column` (skipping windows without it) in panel `row`."""
    if column not in frame:
        return
    rows = frame.dropna(subset=[column])
    if rows.empty:
        return
    figure.add_trace(
        go.Scatter(x=rows["time"], y=rows[column], mode="lines+markers", name=name, text=_window_hover(rows), **style),
        row=row,
        col=1,
    )


def _shares(frame: pd.DataFrame, prefix: str, classes: tuple[str, ...]) -> pd.Series | None:
    columns = [f"{prefix}{name}" for name in classes]
    if not set(columns) <= set(frame.columns):
        return None
    return frame[columns].sum(axis=1, min_count=len(columns))


def _markers(figure: go.Figure, data: DashboardData, rows: int) -> None:
    """Model version changes, promotions and retraining across every panel, labelled above the first."""
    marks = [
        (start.time, f"model {start.model_version} scores", "grey")
        for start in data.model_version_starts.iloc[1:].itertuples()
    ]
    for event in data.model_events.itertuples() if not data.model_events.empty else ():
        if event.event == "retrained":
            marks.append((event.time, "retrained", "darkorange"))
        else:
            marks.append((event.time, f"model {event.model_version} promoted", "purple"))
    for number, (when, label, colour) in enumerate(marks):
        for row in range(1, rows + 1):
            figure.add_vline(x=str(when), line_dash="dot", line_color=colour, row=row, col=1)
        figure.add_annotation(
            x=str(when),
            y=1.0,
            yref="paper",
            text=label,
            showarrow=False,
            yanchor="bottom",
            yshift=12 * (number % 2),
            font={"color": colour, "size": 11},
        )


def dashboard_figure(data: DashboardData, policy: RetrainingPolicy | None = None) -> go.Figure:
    """Every stored series on one date axis, a panel per question; model versions, promotions and
    retraining drawn across all of them. With `policy`, the drift panel shows its retraining threshold
    and circles the windows too small to count, and the quality panel the retraining floor."""
    figure = make_subplots(
        rows=len(PANELS),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.035,
        subplot_titles=[title for title, _ in PANELS],
        row_heights=[1, 1, 1, 1, 1, 1, 1, 2.2],
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
        counts = [None if pd.isna(r) else int(r) for r in drift["rows"]]
        hover = [
            f"{window}, {count:,} collisions" if count is not None else window
            for window, count in zip(_window_hover(drift), counts, strict=True)
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
            small = drift[[policy.too_small_for_drift(count) for count in counts]]
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
    metrics = data.window_metrics
    for metric, label in PREDICTION_DRIFT_SERIES.items():
        _series(figure, 3, metrics, metric, label, line={"dash": "dot"})

    predicted_ksi, actual_ksi = (
        _shares(metrics, PREDICTED_SHARE_PREFIX, KSI_CLASSES),
        _shares(metrics, ACTUAL_SHARE_PREFIX, KSI_CLASSES),
    )
    shares = metrics.assign(predicted_ksi=predicted_ksi, actual_ksi=actual_ksi)
    _series(figure, 4, shares, "predicted_ksi", "predicted KSI share", line={"dash": "dash", "color": COLOURS["ksi"]})
    _series(figure, 4, shares, "actual_ksi", "actual KSI share (labels)", line={"color": COLOURS["ksi"]})
    for metric, (label, line) in LABEL_SERIES.items():
        _series(figure, 4, metrics, metric, label, line=line)
    for name in KSI_CLASSES:
        colour = COLOURS[name]
        _series(
            figure,
            5,
            metrics,
            f"{PREDICTED_SHARE_PREFIX}{name}",
            f"predicted {name} share",
            line={"dash": "dash", "color": colour},
        )
        _series(figure, 5, metrics, f"{ACTUAL_SHARE_PREFIX}{name}", f"actual {name} share", line={"color": colour})

    for metric, label in QUALITY_SERIES.items():
        _series(figure, 6, metrics, metric, label, **realised_style(metric))
    times = [pd.to_datetime(frame["time"]) for frame in (daily, drift, metrics) if not frame.empty]
    span = pd.concat(times, ignore_index=True) if times else None
    for key, label in CHAMPION_SERIES.items():
        if key in data.champion_scores and span is not None:
            score = data.champion_scores[key]
            figure.add_trace(
                go.Scatter(
                    x=[span.min(), span.max()], y=[score, score], mode="lines", name=label, line={"dash": "dot"}
                ),
                row=6,
                col=1,
            )
    pr_auc = data.champion_scores.get("test_ksi_pr_auc")
    if policy is not None and pr_auc is not None:
        figure.add_hline(
            y=policy.quality_fraction * pr_auc,
            line_dash="dash",
            line_color="firebrick",
            row=6,
            col=1,
            annotation_text=f"retraining floor: {policy.quality_fraction:g} x champion test PR-AUC",
        )
    for metric, label in RECALL_SERIES.items():
        colour = next((COLOURS[name] for name in COLOURS if metric.endswith(name)), None)
        style = {"line": {"color": colour}} if colour else realised_style(metric)
        _series(figure, 7, metrics, metric, label, **style)
    add_estimated_lines(figure, data.estimated_quality)

    features = data.feature_drift
    if not features.empty:
        grid = features.pivot_table(index="feature", columns="time", values="score", aggfunc="max")
        figure.add_trace(
            go.Heatmap(
                x=[str(column) for column in grid.columns],
                y=list(grid.index),
                z=grid.to_numpy(),
                colorscale="Reds",
                zmin=0,
                zmax=max(0.3, float(grid.max().max())),
                colorbar={"title": "drift score", "len": 0.2, "y": 0.1},
                name="feature drift score",
                hovertemplate="%{y}, window ending %{x}: %{z:.3f}<extra></extra>",
            ),
            row=8,
            col=1,
        )
    _markers(figure, data, len(PANELS))
    for row, (_, unit) in enumerate(PANELS, start=1):
        figure.update_yaxes(title_text=unit, row=row, col=1)
    for row in (2, 3, 4, 5, 6, 7):
        figure.update_yaxes(rangemode="tozero", row=row, col=1)
    figure.update_xaxes(showticklabels=True)
    figure.update_xaxes(
        title_text="simulated date (collision date; for windows, the window's last day)", row=len(PANELS), col=1
    )
    _legend_per_panel(figure, len(PANELS))
    figure.update_layout(height=2600, hovermode="x unified", showlegend=True, margin={"t": 70, "l": 70, "r": 250})
    return figure


def _legend_per_panel(figure: go.Figure, rows: int) -> None:
    """Each panel's legend beside it, rather than one legend for all below the last panel."""
    for trace in figure.data:
        row = int(trace.xaxis[1:] or 1)
        trace.legend = "legend" if row == 1 else f"legend{row}"
    for row in range(1, rows + 1):
        top = figure.layout["yaxis" if row == 1 else f"yaxis{row}"].domain[1]
        figure.layout["legend" if row == 1 else f"legend{row}"] = {
            "x": 1.01,
            "y": top,
            "xanchor": "left",
            "yanchor": "top",
            "font": {"size": 11},
        }


# --------------------------------------------------------------------------------------------- page

STYLE = """
body { font-family: sans-serif; margin: 1em 2em; color: #1f2328; }
h1 { margin: 0 0 0.2em 0; font-size: 1.5em; }
.links { margin: 0.3em 0 0.8em 0; }
.tiles { display: grid; grid-template-columns: repeat(auto-fit, minmax(13em, 1fr)); gap: 0.6em; }
.tile { border: 1px solid #d0d7de; border-left: 0.5em solid #8c959f; border-radius: 6px; padding: 0.5em 0.8em; }
.tile.ok { border-left-color: #1a7f37; } .tile.warn { border-left-color: #bf8700; }
.tile.alert { border-left-color: #cf222e; background: #fff5f5; }
.question { font-size: 0.8em; color: #57606a; text-transform: uppercase; letter-spacing: 0.03em; }
.answer { font-size: 1.25em; font-weight: bold; margin: 0.15em 0; }
.detail { font-size: 0.85em; color: #57606a; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.2em 0.6em; text-align: left; }
"""


def _report_links(reports_dir: Path, data: DashboardData) -> str:
    """A row per monitored window, newest first, with its Evidently reports where they exist."""
    drift = data.drift_share
    if drift.empty:
        return "<p>No window has been monitored yet.</p>"
    metrics = data.window_metrics
    pr_aucs = (
        {
            (row["time"], row["model_version"]): row[PR_AUC_METRIC]
            for _, row in metrics.iterrows()
            if not pd.isna(row[PR_AUC_METRIC])
        }
        if PR_AUC_METRIC in metrics
        else {}
    )
    rows = []
    for window in drift.iloc[::-1].itertuples():
        links = []
        for kind in (DRIFT, QUALITY):
            path = report_path(reports_dir, kind, window.window_start, window.time, window.model_version)
            if path.exists():
                links.append(f'<a href="monitoring/{html.escape(path.name)}">{kind}</a>')
        pr_auc = pr_aucs.get((window.time, window.model_version))
        rows.append(
            f"<tr><td>{window.window_start}..{window.time}</td><td>{html.escape(str(window.model_version))}</td>"
            f"<td>{'' if pd.isna(window.rows) else f'{int(window.rows):,}'}</td>"
            f"<td>{window.share_drifted_features:.0%}</td><td>{'' if pr_auc is None else f'{pr_auc:.3f}'}</td>"
            f"<td>{' · '.join(links)}</td></tr>"
        )
    return (
        "<table><thead><tr><th>window</th><th>model</th><th>collisions</th><th>features drifted</th>"
        "<th>KSI PR-AUC</th><th>Evidently reports</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


# Unpacks plotly.js, then draws every figure from its JSON.
DRAW_FIGURES = """
(async () => {
  runScript(await unpackText(document.getElementById("plotly-js").textContent));
  for (const spec of document.querySelectorAll("script[data-plotly-figure]")) {
    const figure = JSON.parse(spec.textContent);
    Plotly.newPlot(spec.dataset.plotlyFigure, figure.data, figure.layout, {responsive: true});
  }
})();
"""


@cache
def _packed_plotly() -> str:
    """plotly.js, packed (lib.monitoring.html_packing): 1.4 MB instead of 3.6 MB in every rebuild of the page."""
    from plotly.offline import get_plotlyjs

    return html_packing.pack(get_plotlyjs())


def _figure_block(div_id: str, figure: go.Figure) -> str:
    """The figure's placeholder and its JSON, which DRAW_FIGURES draws; `</` escaped so no text ends the script."""
    spec = figure.to_json().replace("</", "<\\/")
    height = figure.layout.height or 450
    return (
        f"<div id='{div_id}' style='height: {height}px'></div>"
        f"<script type='application/json' data-plotly-figure='{div_id}'>{spec}</script>"
    )


def _place_blocks(places: pd.DataFrame) -> list[str]:
    """The section on observed against expected by place, when a snapshot exists."""
    if places.empty:
        return []
    return [places_heading(places), _figure_block("places-map", places_figure(places)), places_tables(places)]


def mlflow_run_url(tracking_uri: str, run_id: str) -> str:
    """The MLflow UI's page of a run (the UI resolves the run's experiment itself)."""
    return f"{tracking_uri.rstrip('/')}/#/runs/{run_id}"


def write_dashboard(
    conn,
    reports_dir: Path,
    champion_scores: Mapping[str, float] | None = None,
    policy: RetrainingPolicy | None = None,
    *,
    latest_collisions: pd.DataFrame | None = None,
    latest_window: tuple[date, date] | None = None,
    champion_run_url: str | None = None,
) -> Path:
    """Rebuild `reports_dir/dashboard.html` from the tables; it carries plotly.js (packed) and opens offline.

    `latest_collisions` (latitude, longitude, collision_index, p_ksi, ksi_alert) of `latest_window` draw
    the map; `champion_run_url` links the champion's MLflow run."""
    reports_dir = Path(reports_dir)
    policy = policy or RetrainingPolicy()
    data = load_dashboard_data(conn, champion_scores)
    figure = dashboard_figure(data, policy)
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    links = ['<a href="index.html">every notebook run</a>', '<a href="#reports">Evidently reports per window</a>']
    if champion_run_url:
        links.append(f'<a href="{html.escape(champion_run_url)}">the champion\'s MLflow run</a>')
    figures = {"monitoring-dashboard": figure}
    if latest_collisions is not None and latest_window is not None:
        first, last = latest_window
        title = f"Collisions of the latest window, {first}..{last}, by P(KSI); KSI alerts circled"
        figures["latest-window-map"] = map_figure(latest_collisions, title)
    parts = [
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>Accident severity forecast: monitoring</title>"
        f"<style>{STYLE}</style></head><body>",
        "<h1>Accident severity forecast: monitoring</h1>",
        f"<div class='links'>Generated {generated} from the predictions, monitoring_metrics, place_risk, model_events"
        f" and simulation_state tables · {' · '.join(links)}</div>",
        "<div class='tiles' id='status'>" + "".join(tile.html() for tile in status_tiles(data, policy)) + "</div>",
        *(_figure_block(div_id, each) for div_id, each in figures.items()),
        *_place_blocks(latest_places(conn)),
        "<h2 id='reports'>Evidently reports per window</h2>",
        _report_links(reports_dir, data),
        f"<script type='application/octet-stream' id='plotly-js'>{_packed_plotly()}</script>",
        f"<script>{html_packing.UNPACK_JS}{DRAW_FIGURES}</script>",
        "</body></html>\n",
    ]
    target = reports_dir / "dashboard.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    partial.write_text("".join(parts), encoding="utf-8")
    os.replace(partial, target)
    log.info("Wrote the monitoring dashboard to %s.", target)
    return target
