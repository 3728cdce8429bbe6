"""The values each model feature can hold, for rows that come from outside the lake (server requests).

Curated rows are built from validated DfT files, so they hold these values by construction; a
request to the model server is checked against the same list before the model sees it. Coded
features hold a code of the DfT guide (`lib.data.codes.LABELS`) other than the codes for "missing" or
"unknown", which the curated table stores as missing: a request sends null for those. Counts are
whole numbers, coordinates lie in a box around Great Britain. Null is always allowed (missing).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lib.data.codes import LABELS, missing_codes
from lib.data.features import CATEGORICAL_FEATURES, VEHICLE_COUNT_FEATURES


@dataclass(frozen=True)
class Domain:
    """Allowed values: a set of codes, or whole/real numbers between `low` and `high` (both included)."""

    codes: frozenset[int] | None = None
    low: float = -np.inf
    high: float = np.inf
    whole: bool = True

    def describe(self) -> str:
        if self.codes is not None:
            return f"one of the codes {', '.join(map(str, sorted(self.codes)))}, or null"
        kind = "a whole number" if self.whole else "a number"
        return f"{kind} from {self.low:g} to {self.high:g}, or null"

    def allows(self, values: np.ndarray) -> np.ndarray:
        """Elementwise: is each float64 value (NaN: missing) allowed?"""
        missing = np.isnan(values)
        if self.codes is not None:
            inside = np.isin(values, np.fromiter(self.codes, dtype=np.float64))
        else:
            inside = (values >= self.low) & (values <= self.high)
            if self.whole:
                inside &= np.floor(values) == values
        return missing | inside


def _codes(column: str) -> Domain:
    return Domain(codes=frozenset(LABELS[column]) - missing_codes(column))


MAX_VEHICLES = 999  # more than any collision in STATS19 has
DOMAINS: dict[str, Domain] = {
    **{column: _codes(column) for column in CATEGORICAL_FEATURES if column in LABELS},
    "month": Domain(low=1, high=12),
    "speed_limit": _codes("speed_limit"),
    "hour": Domain(low=0, high=23),
    # A box around Great Britain (STATS19 covers nothing else) and the synthetic data's grid, which reaches
    # 3.7 E in the north: it catches swapped, zeroed or foreign coordinates, not a point in the sea.
    "latitude": Domain(low=49.0, high=61.5, whole=False),
    "longitude": Domain(low=-9.0, high=4.0, whole=False),
    "number_of_vehicles": Domain(low=1, high=MAX_VEHICLES),
    **{column: Domain(low=0, high=MAX_VEHICLES) for column in VEHICLE_COUNT_FEATURES},
    "pedestrian_involved": Domain(codes=frozenset({0, 1})),
    "vehicle_overtaking": Domain(codes=frozenset({0, 1})),
}
