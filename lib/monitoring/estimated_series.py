"""The dashboard's estimated quality: each KSI metric drawn as one line, solid where a window's labels have
landed (the realised `quality.*` series) and dashed beyond, through the estimates of the windows whose labels
are still due (lib.monitoring.estimated_quality). Open circles keep each labelled window's estimate, so the
distance between what was expected and what the labels showed stays visible."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from lib.store.metrics import QUALITY

# Each estimated metric: the dashboard panel (row) of its realised twin, its name there, and the colour of both.
ESTIMATED_SERIES = {
    "ksi_roc_auc": (6, "KSI ROC-AUC", "#1f77b4"),
    "ksi_pr_auc": (6, "KSI PR-AUC", "#d62728"),
    "ksi_precision": (7, "KSI precision at the alert threshold", "#9467bd"),
    "ksi_recall": (7, "KSI recall at the alert threshold", "#17becf"),
}


def realised_style(metric: str) -> dict:
    """The style of a realised `quality.*` series: its estimated twin's colour (nothing for a metric without one)."""
    twin = ESTIMATED_SERIES.get(metric.removeprefix(f"{QUALITY}.")) if metric.startswith(f"{QUALITY}.") else None
    return {"line": {"color": twin[2]}} if twin else {}


def _hover(rows: pd.DataFrame, what: str) -> list[str]:
    return [
        f"{start}..{end}, model {version}: {what}"
        for start, end, version in zip(rows["window_start"], rows["time"], rows["model_version"], strict=True)
    ]


def add_estimated_lines(figure: go.Figure, estimated: pd.DataFrame) -> None:
    """Per metric, the dashed continuation from the last labelled window through the windows awaiting labels,
    and the open circles of the labelled windows' estimates. `estimated` holds the rows of
    lib.store.dashboard_queries.ESTIMATED_QUALITY_SQL."""
    if estimated.empty:
        return
    for name, (row, label, colour) in ESTIMATED_SERIES.items():
        rows = estimated[estimated["metric"] == name].sort_values("time")
        labelled = rows["labelled_on"].notna()
        due = rows[~labelled].dropna(subset=["value"])
        if not due.empty:
            before = rows[labelled & (rows["time"] < due["time"].min())].dropna(subset=["value"]).tail(1)
            line = pd.concat([before, due])
            figure.add_trace(
                go.Scatter(
                    x=line["time"],
                    y=line["value"],
                    mode="lines+markers",
                    name=f"{label}: estimated until the labels arrive",
                    line={"color": colour, "dash": "dash"},
                    text=_hover(before, "realised") + _hover(due, "estimated, labels still due"),
                ),
                row=row,
                col=1,
            )
        kept = rows[labelled].dropna(subset=["estimated"])
        if not kept.empty:
            figure.add_trace(
                go.Scatter(
                    x=kept["time"],
                    y=kept["estimated"],
                    mode="markers",
                    marker={"symbol": "circle-open", "size": 9, "color": colour},
                    name=f"{label}: its estimate before the labels",
                    text=_hover(kept, "estimated before the labels"),
                ),
                row=row,
                col=1,
            )
