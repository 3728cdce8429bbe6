"""Observed against expected by place (lib.monitoring.places): a planted over-risk place comes out on top, a
place of two collisions is never ranked, the intervals hold their coverage, and the snapshot reaches
PostgreSQL and the dashboard."""

from __future__ import annotations

import json
import re
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from lib.data.curated import build_curated
from lib.data.stats19 import load_year
from lib.monitoring import monitor, places
from lib.monitoring.dashboard import write_dashboard
from lib.monitoring.place_report import latest_places
from lib.store import db
from lib.store.metrics import DRIFT, DRIFT_SHARE_METRIC, LABELLED_ROWS_METRIC, QUALITY, labelled_windows

FIRST = date(2024, 1, 1)
TINY = "E09000031"
WINDOWS = [(FIRST + timedelta(days=7 * week), FIRST + timedelta(days=7 * week + 6), "1") for week in range(4)]


def authority_collisions(
    rng: np.random.Generator, authorities: int, per_authority: int, ratios: dict[int, float] | None = None
) -> pd.DataFrame:
    """Scored, labelled collisions in `authorities` places, each in its own 0.25° cell: the model's P(KSI) is
    right except where `ratios` multiplies an authority's true KSI probability."""
    ratios = ratios or {}
    frames = []
    for number in range(authorities):
        p_ksi = rng.uniform(0.03, 0.3, per_authority)
        truth = np.minimum(1.0, p_ksi * ratios.get(number, 1.0))
        frames.append(pd.DataFrame({
            "ksi": (rng.random(per_authority) < truth).astype(int),
            "p_ksi": p_ksi,
            "local_authority_highway": f"T{number:04d}",
            "latitude": 50.0 + 0.5 * (number // 10) + rng.uniform(0.01, 0.24, per_authority),
            "longitude": -4.0 + 0.5 * (number % 10) + rng.uniform(0.01, 0.24, per_authority),
        }))  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def two_collisions_both_ksi() -> pd.DataFrame:
    """A place whose raw observed/expected is the highest of all, on two collisions: Waltham Forest's code."""
    return pd.DataFrame({
        "ksi": [1, 1], "p_ksi": [0.05, 0.05], "local_authority_highway": [TINY] * 2,
        "latitude": [58.1, 58.1], "longitude": [1.1, 1.1],
    })  # fmt: skip


def snapshot_of(scored: pd.DataFrame, known_at: date = FIRST + timedelta(days=58)) -> places.PlaceSnapshot:
    return places.place_snapshot(scored, WINDOWS, known_at, places.PlacePolicy())


def level(snapshot: places.PlaceSnapshot, name: str) -> pd.DataFrame:
    return snapshot.places[snapshot.places["level"] == name].set_index("place")


def test_a_planted_over_risk_place_tops_both_levels_and_two_collisions_are_never_ranked():
    rng = np.random.default_rng(7)
    scored = pd.concat([authority_collisions(rng, 30, 200, {12: 1.6}), two_collisions_both_ksi()], ignore_index=True)
    snapshot = snapshot_of(scored)
    authorities, cells = level(snapshot, places.LOCAL_AUTHORITY), level(snapshot, places.GRID)

    assert authorities["rank"].idxmin() == "T0012"
    planted = authorities.loc["T0012"]
    assert planted["excess_low"] > 0 and planted["shrunk_ratio_low"] > 1
    # The planted authority's cell tops the grid too.
    assert cells.loc[cells["rank"].idxmin(), "name"] == "0.25° cell at 50.6250, -2.8750"
    tiny = authorities.loc[TINY]
    assert tiny["name"] == "Waltham Forest"  # from DfT's guide
    raw_ratio = authorities["observed"] / authorities["expected"]
    assert raw_ratio.idxmax() == TINY  # ranked on its raw ratio, it would top the list
    assert pd.isna(tiny["rank"]) and tiny["collisions"] == 2
    assert pd.isna(cells.loc[cells["collisions"] == 2, "rank"]).all()
    assert authorities["rank"].notna().sum() == 30 and sorted(authorities["rank"].dropna()) == list(range(1, 31))
    # Shrinkage: two collisions move the ratio little, 200 move it most of the way.
    assert tiny["shrunk_ratio"] < 1.1 < planted["shrunk_ratio"]


def test_a_large_excess_outranks_a_high_ratio_on_few_collisions():
    def place(code: str, collisions: int, ksi: int) -> pd.DataFrame:
        return pd.DataFrame({"ksi": [1] * ksi + [0] * (collisions - ksi), "p_ksi": 0.2, "local_authority_highway": code,
                             "latitude": 52.0, "longitude": -1.0})  # fmt: skip

    as_expected = [place(f"T{number:04d}", 200, 40) for number in range(20)]
    scored = pd.concat([place("BIG", 300, 90), place("SMALL", 30, 14), *as_expected], ignore_index=True)
    authorities = level(snapshot_of(scored), places.LOCAL_AUTHORITY)
    big, small = authorities.loc["BIG"], authorities.loc["SMALL"]
    assert small["observed"] / small["expected"] > 2 > big["observed"] / big["expected"]
    assert (big["rank"], small["rank"]) == (1, 2)
    assert big["shrunk_excess"] > 5 * small["shrunk_excess"] > 0


def test_the_excess_interval_holds_its_coverage_where_the_model_is_right():
    rng = np.random.default_rng(11)
    authorities = level(snapshot_of(authority_collisions(rng, 400, 120)), places.LOCAL_AUTHORITY)
    covered = ((authorities["excess_low"] <= 0) & (authorities["excess_high"] >= 0)).mean()
    assert 0.92 <= covered <= 0.98, covered
    # The places differ by chance alone: the prior is as strong as allowed, and no excess survives shrinkage.
    assert (authorities["prior_strength"] == places.MAX_PRIOR_STRENGTH).all()
    raw_ratio = authorities["observed"] / authorities["expected"]
    assert (authorities["shrunk_ratio"] - 1).abs().max() < 0.5 * (raw_ratio - 1).abs().max()


def test_the_spread_between_places_is_estimated_from_their_excess_variance():
    rng = np.random.default_rng(3)
    true_strength = 8.0  # theta ~ Gamma(8, 8): places differ by about 35%
    theta = rng.gamma(true_strength, 1 / true_strength, 300)
    scored = authority_collisions(rng, 300, 250, dict(enumerate(theta)))
    expected = scored.groupby("local_authority_highway")["p_ksi"].sum().to_numpy()
    observed = scored.groupby("local_authority_highway")["ksi"].sum().to_numpy()
    variance = (scored["p_ksi"] * (1 - scored["p_ksi"])).groupby(scored["local_authority_highway"]).sum().to_numpy()
    assert 5.5 <= places.prior_strength(observed, expected, variance) <= 11.5
    # With real differences, the shrunk ratios follow the true ones more closely than the raw ratios do.
    shrunk = level(snapshot_of(scored), places.LOCAL_AUTHORITY).sort_index()["shrunk_ratio"].to_numpy()
    assert np.mean((shrunk - theta) ** 2) < np.mean((observed / expected - theta) ** 2)


def test_on_the_mirror_waltham_forest_is_ranked_and_its_neighbours_few_collisions_are_not(mirror, tmp_path):
    years = {year: load_year(mirror.as_uri(), year, tmp_path, progress=False) for year in (2016, 2017, 2018)}
    curated = {year: build_curated(y.collisions, y.vehicles, y.casualties) for year, y in years.items()}
    # A model that knows only 2016's KSI share, judged on 2017-2018.
    scored = pd.concat([curated[2017], curated[2018]], ignore_index=True).assign(p_ksi=curated[2016]["ksi"].mean())
    authorities = level(snapshot_of(scored), places.LOCAL_AUTHORITY)
    borough = authorities.loc["E09000031"]
    assert borough["rank"] == 1 and borough["name"] == "Waltham Forest"
    neighbours = authorities.drop("E09000031")
    assert set(neighbours["name"]) <= {"Newham", "Redbridge"} and (neighbours["collisions"] <= 5).all()
    assert neighbours["rank"].isna().all()
    # The serious share rose after 2016 (injury-based reporting): more KSI than 2016's share expects.
    assert borough["excess_low"] > 0 and borough["shrunk_ratio_low"] > 1


def test_grid_cells_are_named_by_their_centre_and_hold_the_collisions_inside_them():
    latitude = pd.Series([51.01, 51.24, 51.26, -0.01])
    longitude = pd.Series([-0.01, -0.24, -0.26, 0.01])
    cells = places.grid_cells(latitude, longitude, 0.25)
    assert list(cells["place"]) == ["51.1250,-0.1250", "51.1250,-0.1250", "51.3750,-0.3750", "-0.1250,0.1250"]
    assert cells["name"].iloc[0] == "0.25° cell at 51.1250, -0.1250"


def test_a_policy_refuses_settings_that_cannot_work():
    with pytest.raises(ValueError, match="place_windows \\(0\\) must be at least 1"):
        places.PlacePolicy(windows=0)


# ------------------------------------------------------------------------------------ PostgreSQL and the page


@pytest.fixture
def database_url(fresh_database):
    return fresh_database


def test_the_latest_labelled_windows_are_pooled_once_each(database_url):
    with db.session(database_url) as conn:
        for start, end, version in WINDOWS:
            monitor.store_metrics(conn, start, end, version, DRIFT, {DRIFT_SHARE_METRIC: 0.1}, end)
            monitor.store_metrics(conn, start, end, version, QUALITY, {LABELLED_ROWS_METRIC: 100}, end + timedelta(30))
    # The last window evaluated again, later, for a second version: it counts once, for the version evaluated last.
    last_start, last_end, _ = WINDOWS[-1]
    with db.session(database_url) as conn:
        monitor.store_metrics(conn, last_start, last_end, "2", QUALITY, {LABELLED_ROWS_METRIC: 90},
                              last_end + timedelta(30))
    with db.session(database_url) as conn:
        as_of = WINDOWS[2][1] + timedelta(30)
        assert labelled_windows(conn, as_of, 13) == WINDOWS[:3]  # the fourth's labels were not all known
        assert labelled_windows(conn, as_of, 2) == WINDOWS[1:3]
        assert labelled_windows(conn, last_end + timedelta(30), 13) == [*WINDOWS[:3], (last_start, last_end, "2")]


def test_a_snapshot_is_stored_replaced_and_drawn_on_the_dashboard(database_url, tmp_path):
    rng = np.random.default_rng(5)
    scored = pd.concat([authority_collisions(rng, 12, 150, {4: 1.8}), two_collisions_both_ksi()], ignore_index=True)
    older, newer = FIRST + timedelta(days=50), FIRST + timedelta(days=58)
    with db.session(database_url) as conn:
        places.store_snapshot(conn, snapshot_of(scored.iloc[:300], older))
        places.store_snapshot(conn, snapshot_of(scored, newer))
        written = places.store_snapshot(conn, snapshot_of(scored, newer))  # a rerun replaces its day's rows
        stored = latest_places(conn)
        page = write_dashboard(conn, tmp_path).read_text()

    assert written == len(stored) and set(stored["time"]) == {newer}
    authorities = stored[stored["level"] == places.LOCAL_AUTHORITY]
    assert authorities["place"].iloc[0] == "T0004" and authorities["rank"].iloc[0] == 1
    assert authorities["rank"].notna().sum() == 12 and authorities["place"].iloc[-1] == TINY
    assert pd.isna(authorities["rank"].iloc[-1])

    assert "Observed against expected KSI collisions, by place" in page
    assert re.search(r"<td>1</td><td>T0004</td><td>150</td>", page)
    assert "Not ranked, expecting fewer than 5 KSI collisions: 1 place, those with the most KSI first: " \
           "Waltham Forest: 2 collisions, 2 KSI against 0.1 expected." in page
    figure = json.loads(
        re.search(r"<script type='application/json' data-plotly-figure='places-map'>(.*?)</script>", page).group(1)
    )
    traces = {trace["name"]: trace for trace in figure["data"]}
    assert traces["local highway authority"]["text"][0] == "T0004"  # the top ranked authority is named
    assert traces["local highway authority, too small to rank"]["x"] == [1.1]
    cells = traces["grid cell"]
    assert cells["dx"] == 0.25 and cells["type"] == "heatmap"
