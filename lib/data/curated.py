"""The curated table: its place in the lake, how a year of it is built, and how a window of it is read.

`CURATED` is the table's dataset key in the lake (one partition per collision year, `lib.data.lake`);
`CURATION_VERSION` is stored in each partition's manifest, so that partitions built by an older
curation are rebuilt once (`lib.data.ingest`). What the table holds is defined in `lib.data.features`.

`build_curated(collisions, vehicles, casualties)` takes one year's tables in canonical columns (as
`lib.data.stats19` reads and `lib.data.validate` checks them) and returns `CURATED_COLUMNS` with
`CURATED_DTYPES`:
* One coding whichever era a file comes from: the 2024 specification's. Historic codes are converted
  with `lib.data.codes.TO_2024` where a row has them, and the 2024 column is used only where the historic
  one is missing (rows collected under the 2024 specification). Older rows of a 2024-specification
  file therefore give the same curated row as the same collision read from an "accident" file.
  `junction_control` and `second_road_class` are 0 ("not at junction") whenever the junction detail
  says so, since older files wrote -1 there (lib/data/README.md, "Not at a junction").
* Missing and "unknown" codes (`lib.data.codes.missing_codes`) become <NA>, and so does a local authority
  recorded as "-1".

A `Window` is a span of collision dates, both ends included: the days 03_infer scores and 04_monitor
monitors. `read_window` reads only the curated year partitions the window touches and drops the
target columns, so the truth never reaches the model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from lib.data.codes import MISSING, TO_2024, VEHICLE_GROUPS, dft_day_of_week, lookup, missing_codes
from lib.data.features import CURATED_COLUMNS, CURATED_DTYPES, OVERTAKING, TARGET_COLUMNS
from lib.data.lake import Lake
from lib.data.validate import positions

log = logging.getLogger(__name__)

CURATED = "curated/collisions"
# Bump when the curated table changes meaning, so existing partitions are rebuilt once.
CURATION_VERSION = 2  # 2: the local highway authority (a context column)


# -- building a year ------------------------------------------------------------------------------


def build_curated(collisions: pd.DataFrame, vehicles: pd.DataFrame, casualties: pd.DataFrame) -> pd.DataFrame:
    """One row per collision: identity, target and features, in `CURATED_COLUMNS` order and dtypes."""
    c = collisions
    n = len(c)
    severity = c["collision_severity"].to_numpy()
    when = pd.DatetimeIndex(c["date"])
    hour = _hour(c["time"])

    converted_junction = lookup(c["junction_detail_historic"], TO_2024["junction_detail"])
    junction_detail = _prefer_historic(c, "junction_detail", converted_junction)
    not_at_junction = junction_detail == 0
    vehicle_rows = positions(vehicles["collision_index"], c["collision_index"])  # each vehicle's collision row
    casualty_rows = positions(casualties["collision_index"], c["collision_index"])
    columns = {
        "collision_index": c["collision_index"].astype("string").array,
        "collision_year": c["collision_year"].to_numpy(),
        "date": when.to_numpy(),
        "collision_severity": severity,
        "ksi": severity <= 2,
        "casualty_severity_score": _casualty_severity_score(casualty_rows, casualties, n),
        "police_force": _categorical(c, "police_force"),
        "first_road_class": _categorical(c, "first_road_class"),
        "road_type": _categorical(c, "road_type"),
        "junction_detail": _as_nullable(junction_detail, "junction_detail"),
        "junction_control": _categorical(c, "junction_control", zero_where=not_at_junction),
        "second_road_class": _categorical(c, "second_road_class", zero_where=not_at_junction),
        "pedestrian_crossing": _as_nullable(_pedestrian_crossing(c), "pedestrian_crossing"),
        "light_conditions": _categorical(c, "light_conditions"),
        "weather_conditions": _categorical(c, "weather_conditions"),
        "road_surface_conditions": _categorical(c, "road_surface_conditions"),
        "carriageway_hazards": _as_nullable(_carriageway_hazards(c), "carriageway_hazards"),
        "urban_or_rural_area": _categorical(c, "urban_or_rural_area"),
        "trunk_road_flag": _categorical(c, "trunk_road_flag"),
        "month": when.month.to_numpy(),
        "day_of_week": dft_day_of_week(when.dayofweek.to_numpy()),
        "speed_limit": _categorical(c, "speed_limit"),
        "hour": hour,
        "latitude": c["latitude"].to_numpy(),
        "longitude": c["longitude"].to_numpy(),
        "number_of_vehicles": c["number_of_vehicles"].to_numpy(),
        **_vehicle_features(vehicle_rows, vehicles, n),
        "pedestrian_involved": _count_per_collision(casualty_rows, casualties["casualty_class"].to_numpy() == 3, n) > 0,
        "local_authority_highway": _local_authority(c["local_authority_highway"]),
    }
    curated = pd.DataFrame(columns, index=pd.RangeIndex(n))
    return curated[CURATED_COLUMNS].astype(CURATED_DTYPES)


def _missing_mask(values: np.ndarray, column: str) -> np.ndarray:
    return np.isin(values, list(missing_codes(column)))


def _as_nullable(values: np.ndarray, column: str, zero_where: np.ndarray | None = None) -> pd.arrays.IntegerArray:
    values = np.asarray(values)
    if zero_where is not None:
        values = np.where(zero_where, 0, values)
    return pd.arrays.IntegerArray(values.astype(np.int16), _missing_mask(values, column))


def _categorical(c: pd.DataFrame, column: str, zero_where: np.ndarray | None = None) -> pd.arrays.IntegerArray:
    return _as_nullable(c[column].to_numpy(), column, zero_where)


def _prefer_historic(c: pd.DataFrame, column: str, converted: np.ndarray, historic_known=None) -> np.ndarray:
    """The converted historic value where the row has one, else the 2024-coded column."""
    if historic_known is None:
        historic_known = ~_missing_mask(c[f"{column}_historic"].to_numpy(), f"{column}_historic")
    return np.where(historic_known, converted, c[column].to_numpy())


def _pedestrian_crossing(c: pd.DataFrame) -> np.ndarray:
    """The 2024 single crossing code; from the two historic columns, human control wins (11, 12)."""
    human = c["pedestrian_crossing_human_control_historic"].to_numpy()
    physical = c["pedestrian_crossing_physical_facilities_historic"].to_numpy()
    converted = np.where(
        np.isin(human, [1, 2]),
        lookup(human, TO_2024["pedestrian_crossing_human_control"]),
        lookup(physical, TO_2024["pedestrian_crossing_physical_facilities"]),
    )
    known = ~_missing_mask(human, "pedestrian_crossing_human_control_historic") | ~_missing_mask(
        physical, "pedestrian_crossing_physical_facilities_historic"
    )
    return _prefer_historic(c, "pedestrian_crossing", converted, known)


def _carriageway_hazards(c: pd.DataFrame) -> np.ndarray:
    """The 2024 hazards code, which also covers the historic special conditions (hazards win)."""
    hazard = c["carriageway_hazards_historic"].to_numpy()
    special = c["special_conditions_at_site"].to_numpy()
    special_known = ~_missing_mask(special, "special_conditions_at_site")
    converted = np.where(
        hazard != 0,
        lookup(hazard, TO_2024["carriageway_hazards"]),
        np.where(special_known & (special != 0), lookup(special, TO_2024["special_conditions_at_site"]), 0),
    )
    return _prefer_historic(c, "carriageway_hazards", converted)


def _local_authority(codes: pd.Series) -> pd.Series:
    """ONS codes of local authorities; <NA> where the file has none (empty, or the guide's "-1")."""
    text = codes.astype("string").str.strip()
    return text.mask(text.isin(["", str(MISSING)])).array


def _hour(time: pd.Series) -> pd.arrays.IntegerArray:
    """Hour of an HH:MM time; <NA> when the time is missing or malformed."""
    parts = pc.extract_regex(pa.array(time.array, pa.string()), r"^(?P<hour>\d{1,2}):\d{2}")
    hour = pc.cast(pc.struct_field(parts, "hour"), pa.int16())
    hour = pc.if_else(pc.less(hour, 24), hour, None)
    values = hour.to_numpy(zero_copy_only=False)
    missing = np.isnan(values) if values.dtype.kind == "f" else np.zeros(len(values), dtype=bool)
    return pd.arrays.IntegerArray(np.nan_to_num(values).astype(np.int8), missing)


def _count_per_collision(parents: np.ndarray, mask: np.ndarray, n: int) -> np.ndarray:
    """How many child rows in `mask` each of the `n` collisions has (`parents`: each child's collision row)."""
    keep = mask & (parents >= 0)
    return np.bincount(parents[keep], minlength=n)


def _casualty_severity_score(parents: np.ndarray, casualties: pd.DataFrame, n: int) -> np.ndarray:
    """Per collision, the sum over its casualties of 4 - casualty_severity (fatal 3, serious 2, slight 1)."""
    keep = parents >= 0
    points = 4 - casualties["casualty_severity"].to_numpy()[keep].astype(np.int64)
    return np.bincount(parents[keep], weights=points, minlength=n).astype(np.int16)


def _vehicle_features(parents: np.ndarray, vehicles: pd.DataFrame, n: int) -> dict[str, np.ndarray]:
    """Vehicles per group, and whether any vehicle was overtaking (2024 manoeuvre codes 13-15)."""
    vehicle_type = vehicles["vehicle_type"].to_numpy()
    grouped = np.zeros(len(vehicles), dtype=bool)
    features = {}
    for group, codes in VEHICLE_GROUPS.items():
        member = np.isin(vehicle_type, list(codes))
        grouped |= member
        features[f"vehicles_{group}"] = _count_per_collision(parents, member, n)
    features["vehicles_other"] = _count_per_collision(parents, ~grouped, n)
    manoeuvre = _prefer_historic(
        vehicles, "vehicle_manoeuvre", lookup(vehicles["vehicle_manoeuvre_historic"], TO_2024["vehicle_manoeuvre"])
    )
    features["vehicle_overtaking"] = _count_per_collision(parents, np.isin(manoeuvre, OVERTAKING), n) > 0
    return features


# -- reading a window -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """Collision dates from `start` to `end`, both included."""

    start: date
    end: date

    @classmethod
    def parse(cls, start_date: str | date, end_date: str | date) -> Window:
        """From ISO dates such as "2018-01-01"; the message names a malformed or reversed parameter."""
        return cls.from_parameters(start_date=start_date, end_date=end_date)

    @classmethod
    def from_parameters(cls, **first_and_last: str | date) -> Window:
        """From two named parameters, the first day then the last, as dates or ISO dates, e.g. 04_monitor's
        `Window.from_parameters(window_start=..., window_end=...)`; the message names the parameter that
        is empty, malformed or reversed."""
        if len(first_and_last) != 2:
            raise TypeError(f"a window takes two parameters, its first and last day; got {list(first_and_last)}")
        bounds = {}
        for name, value in first_and_last.items():
            if isinstance(value, date):
                bounds[name] = value
                continue
            try:
                bounds[name] = date.fromisoformat(str(value))
            except ValueError:
                raise ValueError(f"{name}={value!r} is not an ISO date like 2018-01-31") from None
        (start_name, start), (end_name, end) = bounds.items()
        if end < start:
            raise ValueError(f"{end_name} {end} is before {start_name} {start}")
        return cls(start, end)

    @property
    def years(self) -> range:
        return range(self.start.year, self.end.year + 1)

    def __str__(self) -> str:
        return f"{self.start}..{self.end}"


def read_window(lake: Lake, window: Window, *, with_labels: bool = False) -> pd.DataFrame:
    """The curated collisions dated in `window`, ordered by date and index: without the target columns
    (what 03_infer may see), or `with_labels` (what 04_monitor checks the predictions against).

    Only the year partitions the window touches are read; a year without a partition holds no
    collisions (logged, not an error: the simulation may run ahead of the data).
    """
    frames = []
    # Rows outside the window are dropped while still in Arrow: converting a whole year to pandas for a
    # week of it took most of a read.
    days = [("date", ">=", pd.Timestamp(window.start)), ("date", "<", pd.Timestamp(window.end + timedelta(days=1)))]
    for year in window.years:
        manifest = lake.manifest(CURATED, year)
        if manifest is None:
            log.warning("The lake %s has no curated partition for %d; its days hold no collisions.", lake.uri, year)
            continue
        columns = [c for c in manifest["columns"] if with_labels or c not in TARGET_COLUMNS]
        frames.append(lake.read_partition(CURATED, year, columns, filters=days))
    if not frames:
        return pd.DataFrame()
    curated = pd.concat(frames, ignore_index=True)
    rows = curated.sort_values(["date", "collision_index"], kind="stable").reset_index(drop=True)
    log.info("Window %s: %s curated collisions.", window, f"{len(rows):,}")
    return rows
