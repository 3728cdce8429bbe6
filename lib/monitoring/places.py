"""Observed against expected, by place: where more collisions were killed-or-seriously-injured (KSI) than the
model expected from their conditions.

Over the last labelled windows (04_monitor pools them once labels land), per local highway authority and per
cell of a latitude/longitude grid:

* **observed** O: the KSI collisions; **expected** E: the sum of the model's P(KSI) over the same collisions,
  what the model expected given each collision's road, light, vehicles, people involved and so on;
* **excess** O - E, with a 95% interval of +-1.96 sqrt(V), V = sum P(KSI) (1 - P(KSI)): the variance of a
  sum of independent Bernoulli draws (Poisson-binomial), so an interval that excludes 0 is a place the model
  under- (or over-) predicts beyond chance, were it right for the place;
* a **shrunk ratio** by empirical Bayes, the method road-safety engineers rank sites with (Hauer, *Observational
  Before-After Studies in Road Safety*, 1997; the Highway Safety Manual's "excess expected crash frequency with
  EB adjustment"), with the model in the role of the safety performance function: each place's true ratio
  theta ~ Gamma(alpha, alpha) around the model (mean 1), so given O it is Gamma(alpha + O, alpha + E), with
  mean (alpha + O) / (alpha + E) and a 95% interval from its quantiles. A place with few expected collisions
  stays near 1; one with many keeps its own ratio;
* the **shrunk excess** (shrunk ratio - 1) x E = (O - E) E / (E + alpha): KSI collisions above the model's
  expectation that the evidence supports, Hauer's "potential for safety improvement". Places are ranked by it.

alpha (the prior's strength, in expected KSI collisions) is estimated per level by the method of moments:
E[(O - E)^2] = V + E^2 / alpha summed over places; it is capped at `MAX_PRIOR_STRENGTH` (a spread of 20%
around the model), so when the places differ no more than chance, a place with a clear excess still shows.

Places with fewer than `min_expected` expected KSI collisions are listed but never ranked: two collisions,
both KSI, are no evidence about a place. Collisions without an authority or a position count in the level
they have.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
from scipy import stats

from lib.data.curated import Window, read_window
from lib.data.lake import Lake
from lib.data.local_authorities import authority_name
from lib.monitoring import monitor
from lib.store import metrics as metric_store
from lib.store import places as place_store
from lib.store.places import PLACE_COLUMNS

log = logging.getLogger(__name__)

LOCAL_AUTHORITY, GRID = "local_authority", "grid"
LEVEL_TITLES = {LOCAL_AUTHORITY: "Local highway authorities", GRID: "Grid cells"}
MAX_PRIOR_STRENGTH = 25.0  # expected KSI collisions; a Gamma(25, 25) prior has a standard deviation of 0.2
Z_95 = float(stats.norm.ppf(0.975))


@dataclass(frozen=True)
class PlacePolicy:
    """Which labelled collisions are pooled, how coarse the grid is, and which places are too small to rank."""

    windows: int = 13  # the latest labelled windows pooled (13 weekly windows: a quarter)
    grid_degrees: float = 0.25  # cell size in latitude and longitude
    min_expected: float = 5.0  # places expecting fewer KSI collisions are listed, not ranked

    def __post_init__(self):
        if self.windows < 1 or self.grid_degrees <= 0 or self.min_expected < 0:
            raise ValueError(f"place_windows ({self.windows}) must be at least 1, place_grid_degrees "
                             f"({self.grid_degrees}) above 0 and place_min_expected ({self.min_expected}) not negative")


@dataclass(frozen=True)
class PlaceSnapshot:
    """Observed against expected for every place, from the labelled collisions known on `known_at`."""

    known_at: date
    period: Window  # the first and last day of the pooled windows
    windows: int
    model_versions: tuple[str, ...]
    policy: PlacePolicy
    places: pd.DataFrame  # PLACE_COLUMNS, ranked places first within each level

    def summary(self) -> str:
        """What was pooled and how many places could be ranked, in a sentence per level."""
        sentences = [
            f"{self.windows} labelled window{'s' if self.windows != 1 else ''} ({self.period}, model "
            f"{', '.join(self.model_versions)}), labels known by {self.known_at}."
        ]
        for level, rows in self.places.groupby("level", sort=False):
            ranked = int(rows["rank"].notna().sum())
            sentences.append(
                f"{LEVEL_TITLES[level]}: {rows['collisions'].sum():,} collisions, "
                f"{rows['observed'].sum():,} KSI observed against {rows['expected'].sum():,.1f} expected; "
                f"{ranked} of {len(rows)} places ranked, the rest expect fewer than {self.policy.min_expected:g} KSI "
                "collisions."
            )
        return " ".join(sentences)


# -------------------------------------------------------------------------------------------- the statistics


def grid_cells(latitude: pd.Series, longitude: pd.Series, degrees: float) -> pd.DataFrame:
    """Each collision's grid cell: `place` (its centre, "lat,lon"), `name`, and the centre's coordinates."""
    centre_latitude = (np.floor(latitude / degrees) + 0.5) * degrees
    centre_longitude = (np.floor(longitude / degrees) + 0.5) * degrees
    place = centre_latitude.map("{:.4f}".format) + "," + centre_longitude.map("{:.4f}".format)
    return pd.DataFrame({
        "place": place,
        "name": f"{degrees:g}° cell at " + place.str.replace(",", ", "),
        "latitude": centre_latitude,
        "longitude": centre_longitude,
    })  # fmt: skip


def prior_strength(observed: np.ndarray, expected: np.ndarray, variance: np.ndarray) -> float:
    """alpha of the Gamma(alpha, alpha) spread of the places' true ratios, by the method of moments, at most
    MAX_PRIOR_STRENGTH: E[(O - E)^2] = V + E^2 / alpha, summed over the places."""
    beyond_chance = float(((observed - expected) ** 2 - variance).sum())
    if beyond_chance <= 0:
        return MAX_PRIOR_STRENGTH
    return min(MAX_PRIOR_STRENGTH, float((expected**2).sum()) / beyond_chance)


def compare_places(scored: pd.DataFrame, places: pd.DataFrame, level: str, min_expected: float) -> pd.DataFrame:
    """Observed against expected per place of one level, `PLACE_COLUMNS`, ranked places first.

    `scored` holds `ksi` (0/1) and `p_ksi` per collision; `places` the same rows' `place` (NA: no place at
    this level) and `name`, and where the place is drawn: `latitude` and `longitude` (a place's marker is
    at the median of its rows').
    """
    frame = pd.DataFrame({
        "place": places["place"].to_numpy(),
        "name": places["name"].to_numpy(),
        "latitude": places["latitude"].to_numpy(dtype=float),
        "longitude": places["longitude"].to_numpy(dtype=float),
        "ksi": scored["ksi"].to_numpy(dtype=int),
        "p_ksi": scored["p_ksi"].to_numpy(dtype=float),
    }).dropna(subset=["place"])  # fmt: skip
    frame["variance"] = frame["p_ksi"] * (1 - frame["p_ksi"])
    per = frame.groupby("place", sort=True).agg(
        name=("name", "first"),
        latitude=("latitude", "median"),
        longitude=("longitude", "median"),
        collisions=("ksi", "size"),
        observed=("ksi", "sum"),
        expected=("p_ksi", "sum"),
        variance=("variance", "sum"),
    ).reset_index()
    if per.empty:
        return pd.DataFrame(columns=PLACE_COLUMNS)
    observed, expected = per["observed"].to_numpy(dtype=float), per["expected"].to_numpy()
    per["excess"] = observed - expected
    half_width = Z_95 * np.sqrt(per["variance"])
    per["excess_low"], per["excess_high"] = per["excess"] - half_width, per["excess"] + half_width
    alpha = prior_strength(observed, expected, per["variance"].to_numpy())
    shape, rate = alpha + observed, alpha + expected
    per["shrunk_ratio"] = shape / rate
    per["shrunk_ratio_low"] = stats.gamma.ppf(0.025, shape, scale=1 / rate)
    per["shrunk_ratio_high"] = stats.gamma.ppf(0.975, shape, scale=1 / rate)
    per["shrunk_excess"] = (per["shrunk_ratio"] - 1) * expected
    per["prior_strength"] = alpha
    per["level"] = level
    rankable = per["expected"] >= min_expected
    per = per.sort_values(["shrunk_excess", "expected"], ascending=False)
    per["rank"] = pd.array([pd.NA] * len(per), dtype="Int64")
    per.loc[rankable, "rank"] = np.arange(1, int(rankable.sum()) + 1)
    ordered = pd.concat([per[per["rank"].notna()], per[per["rank"].isna()].sort_values("expected", ascending=False)])
    log.info("%s: %d places, %d ranked; prior strength %.1f expected KSI collisions.",
             LEVEL_TITLES[level], len(per), int(rankable.sum()), alpha)
    return ordered[PLACE_COLUMNS].reset_index(drop=True)


def place_snapshot(scored: pd.DataFrame, windows: list[tuple[date, date, str]], known_at: date,
                   policy: PlacePolicy) -> PlaceSnapshot:
    """Both levels for the labelled collisions `scored` of `windows` ((start, end, model version)).

    `scored` holds `ksi`, `p_ksi`, `latitude`, `longitude` and `local_authority_highway` per collision.
    """
    authority = scored["local_authority_highway"].astype("string")
    authorities = pd.DataFrame({
        "place": authority,
        "name": authority.map(authority_name, na_action="ignore"),
        "latitude": scored["latitude"],
        "longitude": scored["longitude"],
    })  # fmt: skip
    located = scored["latitude"].notna() & scored["longitude"].notna()
    cells = grid_cells(scored["latitude"], scored["longitude"], policy.grid_degrees).where(located)
    places = pd.concat([
        compare_places(scored, authorities, LOCAL_AUTHORITY, policy.min_expected),
        compare_places(scored, cells, GRID, policy.min_expected),
    ], ignore_index=True)  # fmt: skip
    period = Window(min(start for start, _, _ in windows), max(end for _, end, _ in windows))
    versions = tuple(sorted({version for _, _, version in windows}, key=lambda v: (len(v), v)))
    return PlaceSnapshot(known_at, period, len(windows), versions, policy, places)


# ---------------------------------------------------------------------------------------------- the inputs


def labelled_collisions(
    conn, lake: Lake, as_of: date, windows: int
) -> tuple[pd.DataFrame, list[tuple[date, date, str]]]:
    """The scored collisions of the latest `windows` windows whose quality was known by `as_of`, joined with
    their curated labels and places, and those windows ((start, end, model version), oldest first)."""
    chosen = metric_store.labelled_windows(conn, as_of, windows)
    if not chosen:
        return pd.DataFrame(), []
    predictions = pd.concat(
        [monitor.load_predictions(conn, start, end, version) for start, end, version in chosen], ignore_index=True
    )
    span = Window(chosen[0][0], max(end for _, end, _ in chosen))
    return monitor.join_truth(predictions, read_window(lake, span, with_labels=True)), chosen


def store_snapshot(conn, snapshot: PlaceSnapshot) -> int:
    """Replace the stored snapshot of the same day with this one; return the place rows written."""
    places = snapshot.places[PLACE_COLUMNS].astype(object)
    places = places.where(places.notna(), None)
    shared = (snapshot.known_at, snapshot.period.start, snapshot.period.end, snapshot.windows,
              ", ".join(snapshot.model_versions), snapshot.policy.grid_degrees, snapshot.policy.min_expected)
    rows = [shared + row for row in places.itertuples(index=False, name=None)]
    written = place_store.replace_snapshot(conn, snapshot.known_at, rows)
    log.info("Stored observed against expected for %d places, as known on %s.", written, snapshot.known_at)
    return written
