"""The dashboard's section on observed against expected KSI collisions by place (lib.monitoring.places): what
was pooled, a map drawn without map tiles (so it opens offline) and the ranked places of each level, with the
places too small to rank named, not ranked."""

from __future__ import annotations

import html
import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from lib.monitoring.places import GRID, LEVEL_TITLES, LOCAL_AUTHORITY
from lib.store import dashboard_queries as queries

TABLE_ROWS = 15  # ranked places listed per level
UNRANKED_NAMED = 5  # places too small to rank, named per level
LABELLED_ON_MAP = 5  # ranked authorities named on the map


def latest_places(conn) -> pd.DataFrame:
    """Every place of the latest stored snapshot, ranked places first within each level (`rank` NaN: not ranked)."""
    places = pd.DataFrame(queries.rows(conn, queries.LATEST_PLACES_SQL))
    return places.assign(rank=pd.to_numeric(places["rank"])) if not places.empty else places


def _ratio_scale(places: pd.DataFrame) -> dict:
    """One diverging colour axis for both levels, centred on the model (a shrunk ratio of 1)."""
    spread = max(0.25, float((places["shrunk_ratio"] - 1).abs().max()))
    return {"colorscale": "RdBu_r", "cmin": 1 - spread, "cmax": 1 + spread,
            "colorbar": {"title": "shrunk<br>observed /<br>expected"}}


def _hover(rows: pd.DataFrame) -> list[str]:
    return [
        f"{row.name}<br>{row.collisions:,} collisions: {row.observed:,} KSI, {row.expected:.1f} expected<br>"
        f"excess {row.excess:+.1f} ({row.excess_low:+.1f} to {row.excess_high:+.1f})<br>"
        f"shrunk ratio {row.shrunk_ratio:.2f} ({row.shrunk_ratio_low:.2f} to {row.shrunk_ratio_high:.2f})<br>"
        + (f"rank {int(row.rank)}" if not pd.isna(row.rank) else "too few expected KSI collisions to rank")
        for row in rows.itertuples()
    ]


def _cell_grid(cells: pd.DataFrame, degrees: float, values: pd.Series) -> dict:
    """The cells on a regular grid for a heatmap: x and y of the cell centres, z (NaN where no cell) and hover."""
    column = np.rint((cells["longitude"] / degrees) - 0.5).astype(int)
    row = np.rint((cells["latitude"] / degrees) - 0.5).astype(int)
    first_column, first_row = int(column.min()), int(row.min())
    z = np.full((int(row.max()) - first_row + 1, int(column.max()) - first_column + 1), np.nan)
    text = np.full(z.shape, "", dtype=object)
    for r, c, value, hover in zip(row - first_row, column - first_column, values, _hover(cells), strict=True):
        z[r, c], text[r, c] = value, hover
    return {
        "x0": (first_column + 0.5) * degrees, "dx": degrees, "y0": (first_row + 0.5) * degrees, "dy": degrees,
        "z": z, "text": text, "hovertemplate": "%{text}<extra></extra>",
    }  # fmt: skip


def _cell_traces(cells: pd.DataFrame) -> list[go.Heatmap]:
    """The grid cells, each its true size: ranked ones coloured by their shrunk ratio, the others grey."""
    degrees = float(cells["grid_degrees"].iloc[0])
    ranked, unranked = cells[cells["rank"].notna()], cells[cells["rank"].isna()]
    traces = []
    if not ranked.empty:
        traces.append(go.Heatmap(**_cell_grid(ranked, degrees, ranked["shrunk_ratio"]), coloraxis="coloraxis",
                                 name="grid cell"))
    if not unranked.empty:
        grey = [[0, "#e4e6e8"], [1, "#e4e6e8"]]
        traces.append(go.Heatmap(**_cell_grid(unranked, degrees, pd.Series(0.0, index=unranked.index)),
                                 colorscale=grey, showscale=False, name="grid cell, too small to rank"))
    return traces


def _authority_traces(authorities: pd.DataFrame) -> list[go.Scatter]:
    """The authorities at the median of their collisions, area by expected KSI collisions: ranked ones coloured
    by their shrunk ratio (the first few named), the others hollow."""
    size = 8 + 30 * np.sqrt(authorities["expected"] / max(float(authorities["expected"].max()), 1e-9))
    ranked = authorities["rank"].notna()
    shown, hidden = authorities[ranked], authorities[~ranked]
    return [
        go.Scatter(
            x=shown["longitude"], y=shown["latitude"], mode="markers+text", name="local highway authority",
            text=shown["name"].where(shown["rank"] <= LABELLED_ON_MAP, ""), textposition="top center",
            hovertext=_hover(shown), hoverinfo="text",
            marker={"size": size[ranked], "color": shown["shrunk_ratio"], "coloraxis": "coloraxis",
                    "line": {"color": "black", "width": 1}},
        ),
        go.Scatter(
            x=hidden["longitude"], y=hidden["latitude"], mode="markers",
            name="local highway authority, too small to rank", hovertext=_hover(hidden), hoverinfo="text",
            marker={"size": size[~ranked], "symbol": "circle-open", "color": "grey"},
        ),
    ]  # fmt: skip


def places_figure(places: pd.DataFrame) -> go.Figure:
    """Grid cells coloured by their shrunk ratio (grey: too few expected KSI collisions to rank) under the
    local authorities' markers; no map tiles, so it opens offline."""
    cells = places[places["level"] == GRID]
    authorities = places[places["level"] == LOCAL_AUTHORITY]
    figure = go.Figure()
    for trace in [*(_cell_traces(cells) if not cells.empty else []),
                  *(_authority_traces(authorities) if not authorities.empty else [])]:
        figure.add_trace(trace)
    latitude = float(places["latitude"].mean()) if places["latitude"].notna().any() else 54.0
    figure.update_xaxes(title_text="longitude (degrees)", constrain="domain")
    figure.update_yaxes(
        title_text="latitude (degrees)", scaleanchor="x", scaleratio=1 / math.cos(math.radians(latitude))
    )
    figure.update_layout(
        title="Observed against expected KSI collisions: red, more than the model expected; blue, fewer",
        coloraxis=_ratio_scale(places), height=700, legend={"orientation": "h", "y": -0.1}, margin={"t": 50},
    )
    return figure


def _interval(value: float, low: float, high: float, signed: bool) -> str:
    form = "{:+.1f}" if signed else "{:.2f}"
    return f"{form.format(value)} <span class='detail'>({form.format(low)} to {form.format(high)})</span>"


def _table(rows: pd.DataFrame) -> str:
    body = "".join(
        f"<tr><td>{int(row.rank)}</td><td>{html.escape(row.name)}"
        f"{'' if row.name == row.place else f' <span class=detail>{html.escape(row.place)}</span>'}</td>"
        f"<td>{row.collisions:,}</td><td>{row.observed:,}</td><td>{row.expected:.1f}</td>"
        f"<td>{_interval(row.excess, row.excess_low, row.excess_high, signed=True)}</td>"
        f"<td>{_interval(row.shrunk_ratio, row.shrunk_ratio_low, row.shrunk_ratio_high, signed=False)}</td>"
        f"<td>{row.shrunk_excess:+.1f}</td></tr>"
        for row in rows.itertuples()
    )
    return (
        "<table><thead><tr><th>rank</th><th>place</th><th>collisions</th><th>KSI observed</th><th>KSI expected</th>"
        "<th>excess (95% interval)</th><th>shrunk observed / expected (95%)</th><th>shrunk excess</th></tr></thead>"
        f"<tbody>{body}</tbody></table>"
    )


def _level_section(rows: pd.DataFrame, level: str, min_expected: float) -> str:
    ranked, unranked = rows[rows["rank"].notna()], rows[rows["rank"].isna()]
    title = LEVEL_TITLES[level]
    if level == GRID:
        title += f" ({rows['grid_degrees'].iloc[0]:g}° of latitude and longitude)"
    parts = [f"<h3>{html.escape(title)}</h3>"]
    if ranked.empty:
        parts.append(f"<p>No place expects {min_expected:g} KSI collisions or more yet: none is ranked.</p>")
    else:
        parts.append(_table(ranked.head(TABLE_ROWS)))
        if len(ranked) > TABLE_ROWS:
            parts.append(f"<p class='detail'>{len(ranked) - TABLE_ROWS:,} more ranked places are not listed.</p>")
    if not unranked.empty:
        examples = unranked.sort_values("observed", ascending=False).head(UNRANKED_NAMED)
        named = "; ".join(
            f"{html.escape(row.name)}: {row.collisions:,} collision{'s' if row.collisions != 1 else ''}, "
            f"{row.observed:,} KSI against {row.expected:.1f} expected"
            for row in examples.itertuples()
        )
        parts.append(
            f"<p>Not ranked, expecting fewer than {min_expected:g} KSI collisions: {len(unranked):,} "
            f"place{'s' if len(unranked) != 1 else ''}, those with the most KSI first: {named}.</p>"
        )
    return "".join(parts)


def places_heading(places: pd.DataFrame) -> str:
    """The section's heading and what the snapshot pooled, before the map."""
    first = places.iloc[0]
    return (
        "<h2 id='places'>Observed against expected KSI collisions, by place</h2>"
        f"<p>The {int(first['windows'])} latest labelled windows, {first['period_start']}..{first['period_end']} "
        f"(model {html.escape(str(first['model_versions']))}; labels known by {first['time']}). Per place, the KSI "
        "collisions observed against those the model expected (the sum of P(KSI)), their difference with a 95% "
        "interval, and the ratio shrunk towards the model by empirical Bayes, so that a place with few collisions "
        "cannot top the list by chance. Places are ranked by the shrunk excess, (shrunk ratio - 1) x expected: "
        "among many places, about one in twenty excess intervals leaves out zero by chance alone.</p>"
    )


def places_tables(places: pd.DataFrame) -> str:
    """The ranked places of each level, and the places too small to rank."""
    min_expected = float(places["min_expected"].iloc[0])
    return "".join(
        _level_section(places[places["level"] == level], level, min_expected)
        for level in (LOCAL_AUTHORITY, GRID)
        if (places["level"] == level).any()
    )
