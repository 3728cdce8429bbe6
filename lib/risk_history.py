"""Where and how collisions were severe before: KSI shares of earlier collisions, as model features.

A road-safety analyst asks how often collisions were KSI in the same place, on the same kind of road
and at the same speed limit. `RiskHistory` answers from the training rows only (their labels are all
known before the training period ends, also in the simulation's `labels_known_by` split), and keeps
the answers inside the fitted model, so it needs no input beyond the features a request carries:

* `history_area_ksi`: the KSI share of collisions in the same cell of a ~1 km grid (from latitude and
  longitude), shrunk towards its ~5 km cell, that towards the police force, that towards all rows;
* `history_road_ksi`: the same ~1 km cell and `first_road_class` (the road a collision happened on,
  as far as the features tell: the curated table has no road number), shrunk towards the area share;
* `history_speed_ksi`: the same `speed_limit` and `urban_or_rural_area`, shrunk towards all rows.

Shrinkage is empirical-Bayes style: a group with n collisions, k of them KSI, gets
(k + PRIOR_COLLISIONS * parent) / (n + PRIOR_COLLISIONS), so a cell with two collisions says almost
nothing and one with hundreds speaks for itself. Shares are given as log-odds.

A training row must not see its own label (a tree would learn that the feature "knows" the answer), so
training rows get out-of-fold values: each of `FOLDS` random folds is encoded from the other folds.
Every other row (validation, test, serving) is encoded from all training rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from lib.features import FEATURE_COLUMNS

HISTORY_FEATURES = ["history_area_ksi", "history_road_ksi", "history_speed_ksi"]
PRIOR_COLLISIONS = 30.0
FOLDS = 5
# Grid steps in degrees: about 1 km and 5 km at British latitudes (a degree of longitude is ~0.64 of one
# of latitude there).
FINE_CELL = (0.009, 0.014)
COARSE_CELL = (0.045, 0.07)
_KEYS = ("police_force", "coarse_cell", "fine_cell", "first_road_class", "speed_limit", "urban_or_rural_area")
# Each history: the keys that define a group, and the share its groups shrink towards (None: all rows).
_LEVELS = {
    "force": (("police_force",), None),
    "coarse": (("police_force", "coarse_cell"), "force"),
    "history_area_ksi": (("police_force", "coarse_cell", "fine_cell"), "coarse"),
    "history_road_ksi": (("police_force", "coarse_cell", "fine_cell", "first_road_class"), "history_area_ksi"),
    "history_speed_ksi": (("speed_limit", "urban_or_rural_area"), None),
}


def _cell(degrees: np.ndarray, step: float) -> np.ndarray:
    return np.where(np.isfinite(degrees), np.floor(degrees / step), -1e9)  # -1e9: location unknown


def group_keys(X: np.ndarray) -> pd.DataFrame:
    """The grouping keys of each row of a feature matrix (columns in `FEATURE_COLUMNS` order); missing -> -1."""
    column = {name: X[:, FEATURE_COLUMNS.index(name)] for name in FEATURE_COLUMNS}
    latitude, longitude = column["latitude"], column["longitude"]
    keys = {
        "police_force": column["police_force"],
        "coarse_cell": _cell(latitude, COARSE_CELL[0]) * 1e5 + _cell(longitude, COARSE_CELL[1]),
        "fine_cell": _cell(latitude, FINE_CELL[0]) * 1e5 + _cell(longitude, FINE_CELL[1]),
        "first_road_class": column["first_road_class"],
        "speed_limit": column["speed_limit"],
        "urban_or_rural_area": column["urban_or_rural_area"],
    }
    return pd.DataFrame({name: np.nan_to_num(values, nan=-1.0) for name, values in keys.items()})


@dataclass
class RiskHistory:
    """KSI counts per group of the training rows; `transform` turns them into shrunk log-odds."""

    overall: float
    counts: dict[str, pd.DataFrame]  # per level: keys -> n (collisions), k (KSI)

    @classmethod
    def fit(cls, X: np.ndarray, ksi: np.ndarray) -> RiskHistory:
        keys = group_keys(X).assign(n=1.0, k=np.asarray(ksi, dtype=float))
        counts = {level: keys.groupby(list(by))[["n", "k"]].sum().reset_index() for level, (by, _) in _LEVELS.items()}
        return cls(float(np.mean(ksi)), counts)

    def shares(self, X: np.ndarray) -> pd.DataFrame:
        """The shrunk KSI share of every level for each row of X."""
        keys = group_keys(X)
        shares = {}
        for level, (by, parent) in _LEVELS.items():
            found = keys[list(by)].merge(self.counts[level], on=list(by), how="left")
            n, k = found["n"].fillna(0).to_numpy(), found["k"].fillna(0).to_numpy()
            prior = self.overall if parent is None else shares[parent]
            shares[level] = (k + PRIOR_COLLISIONS * prior) / (n + PRIOR_COLLISIONS)
        return pd.DataFrame(shares)

    def transform(self, X: np.ndarray) -> np.ndarray:
        share = self.shares(X)[HISTORY_FEATURES].to_numpy()
        return np.log(share / (1 - share))


def out_of_fold(X: np.ndarray, ksi: np.ndarray, seed: int) -> np.ndarray:
    """History features for the training rows themselves: each row encoded without its own fold."""
    fold = np.random.default_rng(seed).integers(0, FOLDS, len(X))
    encoded = np.empty((len(X), len(HISTORY_FEATURES)))
    for f in range(FOLDS):
        inside = fold == f
        encoded[inside] = RiskHistory.fit(X[~inside], ksi[~inside]).transform(X[inside])
    return encoded
