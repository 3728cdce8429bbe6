"""The map of the latest monitored window's collisions, coloured by P(KSI), drawn without map tiles so it
opens offline; 04_monitor shows it and the dashboard embeds it."""

from __future__ import annotations

import math
from datetime import date

import pandas as pd
import plotly.graph_objects as go

from lib.store import dashboard_queries as queries


def latest_window_map(conn) -> tuple[tuple[date, date] | None, pd.DataFrame]:
    """The latest monitored window and its located collisions, for the map."""
    rows = pd.DataFrame(queries.rows(conn, queries.LATEST_WINDOW_MAP_SQL))
    if rows.empty:
        return None, rows
    return (rows["window_start"].iloc[0], rows["window_end"].iloc[0]), rows


def map_figure(collisions: pd.DataFrame, title: str) -> go.Figure:
    """The collisions at their latitude and longitude, coloured by P(KSI), alerts circled; no map tiles,
    so it opens offline. Longitude is stretched by 1/cos(latitude) so distances look right."""
    located = collisions.dropna(subset=["latitude", "longitude"])
    figure = go.Figure()
    figure.add_trace(
        go.Scatter(
            x=located["longitude"],
            y=located["latitude"],
            mode="markers",
            name="collision",
            marker={
                "color": located["p_ksi"],
                "colorscale": "YlOrRd",
                "cmin": 0,
                "cmax": 1,
                "size": 6,
                "colorbar": {"title": "P(KSI)"},
            },
            text=[
                f"{index}: P(KSI) {p:.2f}"
                for index, p in zip(located["collision_index"], located["p_ksi"], strict=True)
            ],
            hoverinfo="text",
        )
    )
    alerts = located[located["ksi_alert"].astype(bool)]
    figure.add_trace(
        go.Scatter(
            x=alerts["longitude"],
            y=alerts["latitude"],
            mode="markers",
            name="KSI alert",
            marker={"symbol": "circle-open", "size": 11, "color": "black", "line": {"width": 1}},
            hoverinfo="skip",
        )
    )
    latitude = float(located["latitude"].mean()) if not located.empty else 54.0
    figure.update_xaxes(title_text="longitude (degrees)", constrain="domain")
    figure.update_yaxes(
        title_text="latitude (degrees)", scaleanchor="x", scaleratio=1 / math.cos(math.radians(latitude))
    )
    figure.update_layout(title=title, height=650, legend={"orientation": "h", "y": -0.12}, margin={"t": 50})
    return figure
