"""The curated table: one row per collision, with the target and the features a model may use.

`build_curated(collisions, vehicles, casualties)` takes one year's tables in canonical columns (as
`lib.data.stats19` reads and `lib.data.validate` checks them) and returns `CURATED_COLUMNS` with `CURATED_DTYPES`.

Rules:
* Only what is known when the collision happens is a feature. Everything describing the outcome or
  the aftermath is excluded by name in `LEAKAGE_COLUMNS`, with the reason; no feature is computed from
  those columns (a test perturbs them and expects the same identity and feature columns). Only the
  targets read severities: `collision_severity`, `ksi` (fatal or serious) and `casualty_severity_score`.
* Personal attributes of drivers and casualties stay out (data protection): `PERSONAL_COLUMNS`.
* One coding whichever era a file comes from: the 2024 specification's. Historic codes are converted
  with `lib.data.codes.TO_2024` where a row has them, and the 2024 column is used only where the historic
  one is missing (rows collected under the 2024 specification). Older rows of a 2024-specification
  file therefore give the same curated row as the same collision read from an "accident" file.
  `junction_control` and `second_road_class` are 0 ("not at junction") whenever the junction detail
  says so, since older files wrote -1 there.
* Missing and "unknown" codes (`lib.data.codes.missing_codes`) become <NA>. Categorical codes are nullable
  Int16, all below 255 as HistGradientBoostingClassifier requires.
* `number_of_casualties` is excluded: it counts the injured, an outcome of the impact, and the
  collision severity is the worst of exactly those casualties, so each extra casualty is one more draw
  of the target. Whether a pedestrian was hit (`pedestrian_involved`) is kept: it describes who was
  involved, which is known at the scene before any injury is assessed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from lib.data.codes import TO_2024, VEHICLE_GROUPS, dft_day_of_week, lookup, missing_codes
from lib.data.validate import positions

IDENTITY_COLUMNS = ["collision_index", "collision_year", "date"]
# `casualty_severity_score` is the original project's regression target (a baseline in lib.modeling.model): per
# casualty fatal 3, serious 2, slight 1, summed over the collision. A target, never a feature.
TARGET_COLUMNS = ["collision_severity", "ksi", "casualty_severity_score"]
CATEGORICAL_FEATURES = [
    "police_force",
    "first_road_class",
    "road_type",
    "junction_detail",
    "junction_control",
    "second_road_class",
    "pedestrian_crossing",
    "light_conditions",
    "weather_conditions",
    "road_surface_conditions",
    "carriageway_hazards",
    "urban_or_rural_area",
    "trunk_road_flag",
    "month",
    "day_of_week",
]
VEHICLE_COUNT_FEATURES = [f"vehicles_{group}" for group in (*VEHICLE_GROUPS, "other")]
NUMERIC_FEATURES = [
    "speed_limit",
    "hour",
    "latitude",
    "longitude",
    "number_of_vehicles",
    *VEHICLE_COUNT_FEATURES,
    "pedestrian_involved",
    "vehicle_overtaking",
]
FEATURE_COLUMNS = CATEGORICAL_FEATURES + NUMERIC_FEATURES
CURATED_COLUMNS = IDENTITY_COLUMNS + TARGET_COLUMNS + FEATURE_COLUMNS
CURATED_DTYPES = {
    "collision_index": "string",
    "collision_year": "int16",
    "date": "datetime64[ns]",
    "collision_severity": "int8",
    "ksi": "int8",
    "casualty_severity_score": "int16",
    **{column: "Int16" for column in CATEGORICAL_FEATURES},
    "speed_limit": "Int16",
    "hour": "Int8",
    "latitude": "float64",
    "longitude": "float64",
    "number_of_vehicles": "int16",
    **{column: "int16" for column in VEHICLE_COUNT_FEATURES},
    "pedestrian_involved": "int8",
    "vehicle_overtaking": "int8",
}

_AFTER_IMPACT = "what happened in or after the impact, recorded afterwards"
LEAKAGE_COLUMNS = {
    "enhanced_severity_collision": "a finer grading of the collision severity (the target)",
    "collision_injury_based": "how the severity was assessed (injury-based reporting); decided with the target",
    "collision_adjusted_severity_serious": "DfT's modelled probability that the collision is serious",
    "collision_adjusted_severity_slight": "DfT's modelled probability that the collision is slight",
    "number_of_casualties": "counts the injured, each a draw of the target (module docstring)",
    "did_police_officer_attend_scene_of_accident": "attendance follows the reported severity",
    "casualty_severity": "the target, per casualty",
    "enhanced_casualty_severity": "a finer grading of the casualty severity",
    "casualty_injury_based": "how the casualty severity was assessed",
    "casualty_adjusted_severity_serious": "DfT's modelled probability that the casualty is serious",
    "casualty_adjusted_severity_slight": "DfT's modelled probability that the casualty is slight",
    "skidding_and_overturning": _AFTER_IMPACT,
    "hit_object_in_carriageway": _AFTER_IMPACT,
    "vehicle_leaving_carriageway": _AFTER_IMPACT,
    "hit_object_off_carriageway": _AFTER_IMPACT,
    "first_point_of_impact": _AFTER_IMPACT,
}
_PERSONAL = "personal data about a driver or casualty; not needed to forecast severity"
PERSONAL_COLUMNS = {
    column: _PERSONAL
    for column in (
        "sex_of_driver", "age_of_driver", "age_band_of_driver", "driver_imd_decile", "lsoa_of_driver",
        "driver_home_area_type", "driver_distance_banding", "journey_purpose_of_driver",
        "journey_purpose_of_driver_historic", "sex_of_casualty", "age_of_casualty", "age_band_of_casualty",
        "casualty_imd_decile", "lsoa_of_casualty", "casualty_home_area_type", "casualty_distance_banding",
    )
}  # fmt: skip

OVERTAKING = [13, 14, 15]  # 2024 vehicle_manoeuvre codes (same numbers in the historic list)


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
