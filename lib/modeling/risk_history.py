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

from lib.data.features import FEATURE_COLUMNS

HISTORY_FEATURES = ["history_area_ksi", "history_road_ksi", "history_speed_ksi"]
PRIOR_COLLISIONS = 30.0
FOLDS = 5
# Grid steps in degrees: about 1 km and 5 km at British latitudes (a degree of longitude is ~0.64 of one
# of latitude there).
FINE_CELL = (0.009, 0.014)
COARSE_CELL = (0.045, 0.07)
# Each level: the key parts that define a group, and the level its groups shrink towards (None: all rows).
_LEVELS = {
    "force": (("police_force",), None),
    "coarse": (("police_force", "coarse_lat", "coarse_lon"), "force"),
    "history_area_ksi": (("police_force", "fine_lat", "fine_lon"), "coarse"),
    "history_road_ksi": (("police_force", "fine_lat", "fine_lon", "first_road_class"), "history_area_ksi"),
    "history_speed_ksi": (("speed_limit", "urban_or_rural_area"), None),
}
_PART_BITS = 16  # every key part is an integer in [0, 2**16); a level's parts are packed into one int64


def _part(values: np.ndarray, step: float = 1.0) -> np.ndarray:
    """Codes or grid cells as integers in [1, 2**16); 0 for missing."""
    cell = np.floor(values / step) + 2 ** (_PART_BITS - 1)
    return np.where(np.isfinite(cell), np.clip(cell, 1, 2**_PART_BITS - 1), 0).astype(np.int64)


def group_keys(X: np.ndarray) -> dict[str, np.ndarray]:
    """Each level's group of each row of a feature matrix (columns in `FEATURE_COLUMNS` order), as an int64."""
    column = {name: X[:, FEATURE_COLUMNS.index(name)] for name in FEATURE_COLUMNS}
    parts = {
        "police_force": _part(column["police_force"]),
        "coarse_lat": _part(column["latitude"], COARSE_CELL[0]),
        "coarse_lon": _part(column["longitude"], COARSE_CELL[1]),
        "fine_lat": _part(column["latitude"], FINE_CELL[0]),
        "fine_lon": _part(column["longitude"], FINE_CELL[1]),
        "first_road_class": _part(column["first_road_class"]),
        "speed_limit": _part(column["speed_limit"]),
        "urban_or_rural_area": _part(column["urban_or_rural_area"]),
    }
    keys = {}
    for level, (by, _) in _LEVELS.items():
        key = np.zeros(len(X), dtype=np.int64)
        for name in by:  # at most 4 parts of 16 bits: 64 bits, read as unsigned
            key = (key << _PART_BITS) | parts[name]
        keys[level] = key
    return keys


@dataclass
class RiskHistory:
    """The shrunk KSI share of every group of the training rows, per level; `transform` looks them up."""

    overall: float
    groups: dict[str, tuple[np.ndarray, np.ndarray]]  # level -> (sorted group keys, shrunk KSI share)

    @classmethod
    def fit(cls, X: np.ndarray, ksi: np.ndarray) -> RiskHistory:
        ksi = np.asarray(ksi, dtype=float)
        overall = float(ksi.mean())
        keys, groups, shares = group_keys(X), {}, {}
        for level, (_, parent) in _LEVELS.items():
            unique, row_group, n = np.unique(keys[level], return_inverse=True, return_counts=True)
            k = np.bincount(row_group, weights=ksi, minlength=len(unique))
            prior = np.full(len(unique), overall)
            if parent is not None:  # all rows of a group are in the same parent group, so any row's will do
                some_row = np.empty(len(unique), dtype=np.int64)
                some_row[row_group] = np.arange(len(X))
                prior = shares[parent][some_row]
            share = (k + PRIOR_COLLISIONS * prior) / (n + PRIOR_COLLISIONS)
            groups[level], shares[level] = (unique, share), share[row_group]
        return cls(overall, groups)

    def shares(self, X: np.ndarray) -> pd.DataFrame:
        """The shrunk KSI share of every level for each row of X; a group absent from training gets its
        parent's share."""
        return pd.DataFrame(self._shares(X))

    def _shares(self, X: np.ndarray) -> dict[str, np.ndarray]:
        keys, shares = group_keys(X), {}
        for level, (_, parent) in _LEVELS.items():
            unique, share = self.groups[level]
            at = np.minimum(np.searchsorted(unique, keys[level]), len(unique) - 1)
            fallback = self.overall if parent is None else shares[parent]
            shares[level] = np.where(unique[at] == keys[level], share[at], fallback)
        return shares

    def transform(self, X: np.ndarray) -> np.ndarray:
        shares = self._shares(X)  # no DataFrame: this runs for every served request
        share = np.column_stack([shares[feature] for feature in HISTORY_FEATURES])
        return np.log(share / (1 - share))


def out_of_fold(X: np.ndarray, ksi: np.ndarray, seed: int) -> np.ndarray:
    """History features for the training rows themselves: each row encoded without its own fold."""
    fold = np.random.default_rng(seed).integers(0, FOLDS, len(X))
    encoded = np.empty((len(X), len(HISTORY_FEATURES)))
    for f in range(FOLDS):
        inside = fold == f
        encoded[inside] = RiskHistory.fit(X[~inside], ksi[~inside]).transform(X[inside])
    return encoded
