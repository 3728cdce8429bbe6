"""The curated table: its place in the lake, how a year of it is built, and how a window of it is read.

`CURATED` is the table's dataset key in the lake (one partition per collision year, `lib.data.lake`);
`CURATION_VERSION` is stored in each partition's manifest, so that partitions built by an older
curation are rebuilt once (`lib.data.ingest`). What the table holds is defined in `lib.data.features`.

`curated_table(collisions, vehicles, casualties)` takes one year's tables in canonical Arrow columns (as
`lib.data.stats19` reads and `lib.data.validate` checks them) and returns `CURATED_COLUMNS` as an Arrow
table whose pandas metadata gives `CURATED_DTYPES` back (ingestion writes it to parquet as it is);
`build_curated` does the same from DataFrames to a DataFrame. Either way:
* One coding whichever era a file comes from: the 2024 specification's. Historic codes are converted
  with `lib.data.codes.TO_2024` where a row has them, and the 2024 column is used only where the historic
  one is missing (rows collected under the 2024 specification). Older rows of a 2024-specification
  file therefore give the same curated row as the same collision read from an "accident" file.
  `junction_control` and `second_road_class` are 0 ("not at junction") whenever the junction detail
  says so, since older files wrote -1 there (lib/data/README.md, "Not at a junction").
* Missing and "unknown" codes (`lib.data.codes.missing_codes`) become <NA>, and so does a local authority
  recorded as "-1"; so does the reporting regime (`collision_injury_based`) of a file that does not carry
  it, and its adjusted severities are NaN.

A `Window` is a span of collision dates, both ends included: the days 03_infer scores and 04_monitor
monitors. `read_window` reads only the curated year partitions the window touches and drops the
label columns (the targets and how they were reported), so the truth never reaches the model.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lib.data.codes import MISSING, TO_2024, VEHICLE_GROUPS, dft_day_of_week, lookup, missing_codes
from lib.data.features import CURATED_COLUMNS, CURATED_DTYPES, LABEL_COLUMNS, OVERTAKING, REPORTING_COLUMNS
from lib.data.lake import Lake
from lib.data.schema import TABLES
from lib.data.tables import RawTable, from_frame
from lib.data.validate import Links, find_links

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

CURATED = "curated/collisions"
# Bump when the curated table changes meaning, so existing partitions are rebuilt once.
# 2: the local highway authority (a context column); 3: the reporting columns (features.REPORTING_COLUMNS)
CURATION_VERSION = 3


# -- building a year ------------------------------------------------------------------------------


def build_curated(collisions: pd.DataFrame, vehicles: pd.DataFrame, casualties: pd.DataFrame) -> pd.DataFrame:
    """One row per collision: identity, target and features, in `CURATED_COLUMNS` order and dtypes."""
    frames = (collisions, vehicles, casualties)
    return curated_table(*(from_frame(frame, table) for frame, table in zip(frames, TABLES, strict=True))).to_pandas()


def curated_table(collisions: RawTable, vehicles: RawTable, casualties: RawTable,
                  links: Links | None = None) -> pa.Table:
    """`build_curated` in Arrow; `links` (`lib.data.validate.find_links`) is found if not given."""
    c = collisions
    n = len(c)
    links = links or find_links(collisions, vehicles, casualties)
    severity = c["collision_severity"].to_numpy()
    when = c["date"]
    converted_junction = lookup(c["junction_detail_historic"].to_numpy(), TO_2024["junction_detail"])
    junction_detail = _prefer_historic(c, "junction_detail", converted_junction)
    not_at_junction = junction_detail == 0
    columns = {
        "collision_index": c["collision_index"],
        "collision_year": c["collision_year"].to_numpy(),
        "date": when,
        "collision_severity": severity,
        "ksi": severity <= 2,
        "casualty_severity_score": _casualty_severity_score(links.casualty_rows, casualties, n),
        "collision_injury_based": _categorical(c, "collision_injury_based"),
        **{column: _probability(c[column]) for column in REPORTING_COLUMNS[1:]},
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
        "month": pc.month(when),
        "day_of_week": dft_day_of_week(pc.day_of_week(when).to_numpy()),
        "speed_limit": _categorical(c, "speed_limit"),
        "hour": _hour(c["time"]),
        "latitude": c["latitude"],
        "longitude": c["longitude"],
        "number_of_vehicles": c["number_of_vehicles"],
        **_vehicle_features(links.vehicle_rows, vehicles, n),
        "pedestrian_involved": _count_per_collision(links.casualty_rows, casualties["casualty_class"].to_numpy() == 3,
                                                    n) > 0,  # fmt: skip
        "local_authority_highway": _local_authority(c["local_authority_highway"]),
    }
    arrays = [_typed(columns[name], ARROW_TYPES[name]) for name in CURATED_COLUMNS]
    return pa.Table.from_arrays(arrays, schema=CURATED_SCHEMA)


# The Arrow type of each pandas dtype in CURATED_DTYPES; the nullable ones (Int16, Int8) hold nulls.
_ARROW_OF_DTYPE = {"string": pa.string(), "datetime64[ns]": pa.timestamp("ns"), "float64": pa.float64(),
                   "int16": pa.int16(), "Int16": pa.int16(), "int8": pa.int8(), "Int8": pa.int8()}  # fmt: skip
ARROW_TYPES = {name: _ARROW_OF_DTYPE[dtype] for name, dtype in CURATED_DTYPES.items()}
_PANDAS_TYPE = {pa.string(): "unicode", pa.timestamp("ns"): "datetime"}  # pyarrow's names in pandas metadata
# The metadata pyarrow writes for a DataFrame with CURATED_DTYPES (`to_pandas` reads it back), written here
# so that ingestion writes the table without a DataFrame; tests/test_features.py compares the two.
PANDAS_METADATA = {
    "index_columns": [], "column_indexes": [], "attributes": {},
    "columns": [{"name": name, "field_name": name, "pandas_type": _PANDAS_TYPE.get(ARROW_TYPES[name], dtype.lower()),
                 "numpy_type": dtype, "metadata": None} for name, dtype in CURATED_DTYPES.items()],
    "creator": {"library": "pyarrow", "version": pa.__version__},
}  # fmt: skip
CURATED_SCHEMA = pa.schema([(name, ARROW_TYPES[name]) for name in CURATED_COLUMNS],
                           metadata={"pandas": json.dumps(PANDAS_METADATA)})  # fmt: skip


def _typed(values, arrow_type: pa.DataType) -> pa.Array | pa.ChunkedArray:
    """A column as `arrow_type`: NaN coordinates become nulls, as pandas' own conversion makes them."""
    if isinstance(values, np.ndarray):
        values = pa.array(values, from_pandas=values.dtype.kind == "f")
    elif pa.types.is_floating(values.type):
        values = pc.if_else(pc.is_nan(values), pa.scalar(None, values.type), values)
    values = values if values.type == arrow_type else pc.cast(values, arrow_type)
    return pa.chunked_array([values]) if isinstance(values, pa.Array) else values


def _missing_mask(values: np.ndarray, column: str) -> np.ndarray:
    return np.isin(values, list(missing_codes(column)))


def _as_nullable(values: np.ndarray, column: str, zero_where: np.ndarray | None = None) -> pa.Array:
    values = np.asarray(values)
    if zero_where is not None:
        values = np.where(zero_where, 0, values)
    return pa.array(values.astype(np.int16), mask=_missing_mask(values, column))


def _categorical(c: RawTable, column: str, zero_where: np.ndarray | None = None) -> pa.Array:
    return _as_nullable(c[column].to_numpy(), column, zero_where)


def _probability(values: pa.ChunkedArray) -> np.ndarray:
    """A probability column; NaN where the file has none (absent, empty, or -1 for missing)."""
    values = np.asarray(values.to_numpy(), dtype=np.float64)
    return np.where((values >= 0) & (values <= 1), values, np.nan)


def _prefer_historic(c: RawTable, column: str, converted: np.ndarray, historic_known=None) -> np.ndarray:
    """The converted historic value where the row has one, else the 2024-coded column."""
    if historic_known is None:
        historic_known = ~_missing_mask(c[f"{column}_historic"].to_numpy(), f"{column}_historic")
    return np.where(historic_known, converted, c[column].to_numpy())


def _pedestrian_crossing(c: RawTable) -> np.ndarray:
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


def _carriageway_hazards(c: RawTable) -> np.ndarray:
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


def _local_authority(codes: pa.ChunkedArray) -> pa.ChunkedArray:
    """ONS codes of local authorities; null where the file has none (empty, or the guide's "-1")."""
    text = pc.utf8_trim_whitespace(pc.cast(codes, pa.string()))
    return pc.if_else(pc.is_in(text, pa.array(["", str(MISSING)])), pa.scalar(None, pa.string()), text)


def _hour(time: pa.ChunkedArray) -> pa.ChunkedArray:
    """Hour of an HH:MM time; null when the time is missing or malformed."""
    parts = pc.extract_regex(time, r"^(?P<hour>\d{1,2}):\d{2}")
    hour = pc.cast(pc.struct_field(parts, "hour"), pa.int16())
    return pc.if_else(pc.less(hour, 24), hour, None)


def _count_per_collision(parents: np.ndarray, mask: np.ndarray, n: int) -> np.ndarray:
    """How many child rows in `mask` each of the `n` collisions has (`parents`: each child's collision row)."""
    keep = mask & (parents >= 0)
    return np.bincount(parents[keep], minlength=n)


def _casualty_severity_score(parents: np.ndarray, casualties: RawTable, n: int) -> np.ndarray:
    """Per collision, the sum over its casualties of 4 - casualty_severity (fatal 3, serious 2, slight 1)."""
    keep = parents >= 0
    points = 4 - casualties["casualty_severity"].to_numpy()[keep].astype(np.int64)
    return np.bincount(parents[keep], weights=points, minlength=n).astype(np.int16)


def _vehicle_features(parents: np.ndarray, vehicles: RawTable, n: int) -> dict[str, np.ndarray]:
    """Vehicles per group, and whether any vehicle was overtaking (2024 manoeuvre codes 13-15)."""
    vehicle_type = vehicles["vehicle_type"].to_numpy()
    grouped = np.zeros(len(vehicles), dtype=bool)
    features = {}
    for group, codes in VEHICLE_GROUPS.items():
        member = np.isin(vehicle_type, list(codes))
        grouped |= member
        features[f"vehicles_{group}"] = _count_per_collision(parents, member, n)
    features["vehicles_other"] = _count_per_collision(parents, ~grouped, n)
    converted = lookup(vehicles["vehicle_manoeuvre_historic"].to_numpy(), TO_2024["vehicle_manoeuvre"])
    manoeuvre = _prefer_historic(vehicles, "vehicle_manoeuvre", converted)
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
    """The curated collisions dated in `window`, ordered by date and index: without the label columns
    (`features.LABEL_COLUMNS`: what 03_infer may see), or `with_labels` (what 04_monitor checks the
    predictions against).

    Only the year partitions the window touches are read; a year without a partition holds no
    collisions (logged, not an error: the simulation may run ahead of the data).
    """
    import pandas as pd

    frames = []
    # Rows outside the window are dropped while still in Arrow: converting a whole year to pandas for a
    # week of it took most of a read.
    days = [("date", ">=", pd.Timestamp(window.start)), ("date", "<", pd.Timestamp(window.end + timedelta(days=1)))]
    for year in window.years:
        manifest = lake.manifest(CURATED, year)
        if manifest is None:
            log.warning("The lake %s has no curated partition for %d; its days hold no collisions.", lake.uri, year)
            continue
        columns = [c for c in manifest["columns"] if with_labels or c not in LABEL_COLUMNS]
        frames.append(lake.read_partition(CURATED, year, columns, filters=days))
    if not frames:
        return pd.DataFrame()
    curated = pd.concat(frames, ignore_index=True)
    rows = curated.sort_values(["date", "collision_index"], kind="stable").reset_index(drop=True)
    log.info("Window %s: %s curated collisions.", window, f"{len(rows):,}")
    return rows
