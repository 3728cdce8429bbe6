"""Synthetic STATS19 files in DfT's raw format, for offline demos, tests and scale benchmarks.

`generate(years, collisions_per_year, seed)` draws linked collision, vehicle and casualty tables;
`write_files(tables, out_dir, era=...)` writes them as DfT publishes them: the 2024 specification
(`dft-road-casualty-statistics-collision-YYYY.csv`, `collision_*` identity, `*_historic` twins), the
older "accident" era (`...-accident-YYYY.csv`, `accident_*` identity, historic codes under the plain
names), or one `...-1979-latest-published-year.csv` per table holding every year.

The data never pretends to be real:
* every index has the police-force segment `SY` (`2024SY0000123`). Real references start with the
  two digits of a police force code (`2016010000005`, `201401GD10691`), so no real index can match;
* every output folder gets a `SYNTHETIC-README.md` marker saying so.

What is realistic enough for a model to learn something:
* tables are linked and consistent: `number_of_vehicles` and `number_of_casualties` equal the child
  rows, every casualty's vehicle exists, and the collision severity is the worst casualty severity;
* severity depends on real risk factors (speed limit, rural roads, darkness, motorcycles, pedal
  cycles, pedestrians, single-vehicle collisions). The intercepts are calibrated per year to about
  1.4% fatal and a serious share rising from 18.7% (2018) to 23.4% (2024), as DfT's published series;
* dates follow a seasonal and weekly pattern, and times have weekday rush-hour peaks.

`Shift` injects a data shift for monitoring tests: between two dates, a share of collisions move to
rural 60 mph roads at night (their severity follows the same risk model, so it rises too).

The same seed gives the same files, and each year is drawn from its own stream, so a year's rows do
not depend on which other years are generated.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from lib.data.codes import TO_2024, VEHICLE_GROUPS, dft_day_of_week, lookup
from lib.data.stats19 import FILE_PREFIX, HISTORIC_TWINS, OLDER_ERA_COLUMNS, SCHEMA, combined_file_name

logger = logging.getLogger(__name__)

SYNTHETIC_FORCE_SEGMENT = "SY"
MARKER_FILE = "SYNTHETIC-README.md"
ERAS = ("2024", "accident")
FIRST_2024_SPEC_YEAR = 2024  # rows of this year and later have no historic codes in the 2024 specification

# Older-era layouts: canonical names in the order of the 2021-2022 "accident_*" files (SCHEMA.md 2.B).
ACCIDENT_ERA_COLUMNS = {
    "collision": [
        "collision_index", "collision_year", "collision_ref_no", "location_easting_osgr",
        "location_northing_osgr", "longitude", "latitude", "police_force", "collision_severity",
        "number_of_vehicles", "number_of_casualties", "date", "day_of_week", "time",
        "local_authority_district", "local_authority_ons_district", "local_authority_highway",
        "first_road_class", "first_road_number", "road_type", "speed_limit", "junction_detail_historic",
        "junction_control", "second_road_class", "second_road_number",
        "pedestrian_crossing_human_control_historic", "pedestrian_crossing_physical_facilities_historic",
        "light_conditions", "weather_conditions", "road_surface_conditions", "special_conditions_at_site",
        "carriageway_hazards_historic", "urban_or_rural_area", "did_police_officer_attend_scene_of_accident",
        "trunk_road_flag", "lsoa_of_accident_location",
    ],
    "vehicle": [
        "collision_index", "collision_year", "collision_ref_no", "vehicle_reference", "vehicle_type",
        "towing_and_articulation", "vehicle_manoeuvre_historic", "vehicle_direction_from",
        "vehicle_direction_to", "vehicle_location_restricted_lane_historic", "junction_location",
        "skidding_and_overturning", "hit_object_in_carriageway", "vehicle_leaving_carriageway",
        "hit_object_off_carriageway", "first_point_of_impact", "vehicle_left_hand_drive",
        "journey_purpose_of_driver_historic", "sex_of_driver", "age_of_driver", "age_band_of_driver",
        "engine_capacity_cc", "propulsion_code", "age_of_vehicle", "generic_make_model", "driver_imd_decile",
        "driver_home_area_type", "lsoa_of_driver",
    ],
    "casualty": [
        "collision_index", "collision_year", "collision_ref_no", "vehicle_reference", "casualty_reference",
        "casualty_class", "sex_of_casualty", "age_of_casualty", "age_band_of_casualty", "casualty_severity",
        "pedestrian_location", "pedestrian_movement", "car_passenger", "bus_or_coach_passenger",
        "pedestrian_road_maintenance_worker", "casualty_type", "casualty_home_area_type",
        "casualty_imd_decile", "lsoa_of_casualty",
    ],
}  # fmt: skip
ACCIDENT_ERA_NAMES = {
    "collision_index": "accident_index",
    "collision_year": "accident_year",
    "collision_ref_no": "accident_reference",
    "collision_severity": "accident_severity",
    **{historic: plain for plain, historic in HISTORIC_TWINS.items()},
}
# The real 2024-specification headers (SCHEMA.md 2.C): the canonical schema without older-era columns.
SPEC_2024_COLUMNS = {
    table: [c for c in columns if c not in OLDER_ERA_COLUMNS] for table, columns in SCHEMA.items()
}
# Columns the 2024 specification leaves at -1 for rows collected under it (SCHEMA.md 2.C and 4).
HISTORIC_ONLY_COLUMNS = {
    "collision": [*HISTORIC_TWINS.values(), "special_conditions_at_site"],
    "vehicle": list(HISTORIC_TWINS.values()),
    "casualty": [],
}

# Police force codes with rough weights by collision volume (Metropolitan Police the largest).
FORCES = np.array([1, 3, 4, 5, 6, 7, 10, 11, 12, 13, 14, 16, 17, 20, 21, 22, 23, 30, 31, 32, 33, 34, 35,
                   36, 37, 40, 41, 42, 43, 44, 45, 46, 47, 48, 50, 52, 53, 54, 55, 60, 61, 62, 63, 99])
FORCE_WEIGHTS = np.array([20, 1, 3, 2, 4, 2, 2, 1, 1, 4, 2, 1, 1, 4, 2, 2, 1, 2, 2, 1, 2, 1, 2, 2, 1, 1, 2,
                          3, 4, 3, 3, 4, 3, 0.3, 3, 3, 1, 1, 1, 1, 1, 2, 1, 5], dtype=float)  # fmt: skip

# vehicle_type code -> casualty_type code of its occupants.
OCCUPANT_TYPE = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 8: 8, 9: 9, 10: 10, 11: 11, 17: 17, 19: 19, 20: 20, 21: 21,
                 22: 22, 23: 23, 90: 90}  # fmt: skip


@dataclass(frozen=True)
class Shift:
    """Between `start` and `end` (inclusive), move `fraction` of collisions to rural 60 mph roads at night."""

    start: date
    end: date
    fraction: float = 0.8

    def __post_init__(self):
        if self.end < self.start:
            raise ValueError(f"shift window ends ({self.end}) before it starts ({self.start})")
        if not 0 < self.fraction <= 1:
            raise ValueError(f"shift fraction {self.fraction} must be in (0, 1]")


@dataclass(frozen=True)
class SyntheticTables:
    """Canonical columns as `lib.data.stats19.read_table` returns them (`date` a datetime, `time` HH:MM text),
    with the historic twins filled for every row; `lib.data.curated.build_curated` accepts them as they are."""

    collisions: pd.DataFrame
    vehicles: pd.DataFrame
    casualties: pd.DataFrame

    def table(self, name: str) -> pd.DataFrame:
        return {"collision": self.collisions, "vehicle": self.vehicles, "casualty": self.casualties}[name]


def serious_share(year: int) -> float:
    """Target serious share: DfT's 18.7% (2018) to 23.4% (2024), extended flat-ish outside."""
    return float(np.clip(0.187 + 0.0078 * (year - 2018), 0.17, 0.25))


FATAL_SHARE = 0.014


def generate(
    years: Iterable[int], collisions_per_year: int, seed: int = 0, shift: Shift | None = None
) -> SyntheticTables:
    """Draw `collisions_per_year` linked collisions for each year."""
    if collisions_per_year < 1 or collisions_per_year > 9_999_999:
        raise ValueError(f"collisions_per_year={collisions_per_year} must be between 1 and 9,999,999")
    parts = [_generate_year(year, collisions_per_year, seed, shift) for year in sorted(set(years))]
    if not parts:
        raise ValueError("no years to generate")
    return SyntheticTables(*(pd.concat(tables, ignore_index=True) for tables in zip(*parts, strict=True)))


def write_files(tables: SyntheticTables, out_dir: Path, era: str = "2024", combined: bool = False) -> list[Path]:
    """Write DfT-named CSV files (one per table and year, or one combined per table) and the marker."""
    if era not in ERAS:
        raise ValueError(f"era {era!r} is not one of {ERAS}")
    if combined and era != "2024":
        raise ValueError("1979-latest-published-year files exist only in the 2024 specification")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for table in ("collision", "vehicle", "casualty"):
        frame = tables.table(table)
        if combined:
            path = out_dir / combined_file_name(table)
            _write_csv(_era_layout(frame, table, era), path)
            written.append(path)
            continue
        for year, rows in frame.groupby("collision_year", sort=True):
            name = "accident" if (table == "collision" and era == "accident") else table
            path = out_dir / f"{FILE_PREFIX}{name}-{year}.csv"
            _write_csv(_era_layout(rows, table, era), path)
            written.append(path)
    (out_dir / MARKER_FILE).write_text(_marker_text(tables, era, combined))
    logger.info("Wrote %d synthetic STATS19 files to %s.", len(written), out_dir)
    return written


def _marker_text(tables: SyntheticTables, era: str, combined: bool) -> str:
    years = sorted(tables.collisions["collision_year"].unique())
    return (
        "# SYNTHETIC DATA: not DfT road safety data\n\n"
        "Every file in this folder was generated by `lib/data/synth.py` (accident-severity-forecast).\n"
        f"Years {years[0]}-{years[-1]}, {len(tables.collisions):,} collisions, era {era!r}"
        f"{', combined 1979-latest style files' if combined else ''}.\n"
        f"Indexes carry the police-force segment '{SYNTHETIC_FORCE_SEGMENT}' (e.g. {years[0]}SY0000001), "
        "which no real STATS19 index has.\n"
    )


def _era_layout(frame: pd.DataFrame, table: str, era: str) -> pd.DataFrame:
    """The columns, names and conventions of the requested era."""
    frame = frame.copy()
    if table == "collision":
        frame["date"] = pc.strftime(pa.array(frame["date"]), format="%d/%m/%Y").to_numpy(zero_copy_only=False)
    if era == "accident":
        if table == "collision":
            # 2021-era files write -1 for "no second road" / "no junction control" (SCHEMA.md, RECONSTRUCTION.md).
            not_at_junction = frame["junction_detail_historic"] == 0
            frame.loc[not_at_junction, ["second_road_class", "junction_control"]] = -1
        return frame[ACCIDENT_ERA_COLUMNS[table]].rename(columns=ACCIDENT_ERA_NAMES)
    collected_2024 = frame["collision_year"].to_numpy() >= FIRST_2024_SPEC_YEAR
    frame.loc[collected_2024, HISTORIC_ONLY_COLUMNS[table]] = -1
    return frame[SPEC_2024_COLUMNS[table]]


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    """Unquoted CSV with DfT's header line (pyarrow would quote header names)."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    with open(path, "wb") as out:
        out.write((",".join(frame.columns) + "\n").encode())
        pacsv.write_csv(table, out, pacsv.WriteOptions(include_header=False, quoting_style="none"))


def _choice(rng: np.random.Generator, codes, weights, size: int) -> np.ndarray:
    weights = np.asarray(weights, dtype=float)
    return np.asarray(codes)[rng.choice(len(weights), size=size, p=weights / weights.sum())]


def _calibrate(linear: np.ndarray, target: float, weight: np.ndarray | float = 1.0) -> float:
    """Intercept b with mean(weight * sigmoid(linear + b)) == target (bisection: the mean rises with b)."""
    low, high = -20.0, 20.0
    for _ in range(60):
        middle = (low + high) / 2
        if np.mean(weight * _sigmoid(linear + middle)) < target:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def _generate_year(year: int, n: int, seed: int, shift: Shift | None):
    rng = np.random.default_rng([seed, year])

    # --- when -------------------------------------------------------------------------------------
    days = np.arange(np.datetime64(f"{year}-01-01"), np.datetime64(f"{year + 1}-01-01"))
    month = days.astype("datetime64[M]").astype(int) % 12 + 1
    weekday = (days.astype(int) + 3) % 7  # Monday 0 .. Sunday 6
    month_weight = np.array([0.95, 0.9, 0.95, 0.95, 1.0, 1.0, 1.05, 1.0, 1.05, 1.1, 1.1, 1.0])
    weekday_weight = np.array([1.0, 1.05, 1.05, 1.07, 1.15, 0.95, 0.8])
    day_weight = month_weight[month - 1] * weekday_weight[weekday]
    collision_day = rng.choice(len(days), size=n, p=day_weight / day_weight.sum())
    dates = days[collision_day]
    weekend = weekday[collision_day] >= 5
    weekday_hours = np.array([0.6, 0.4, 0.3, 0.3, 0.4, 0.9, 2.2, 4.6, 6.5, 4.6, 4.2, 4.6, 5.2, 5.3, 5.6,
                              7.2, 8.1, 8.4, 6.5, 4.6, 3.4, 2.6, 2.0, 1.3])  # fmt: skip
    weekend_hours = np.array([1.5, 1.3, 1.1, 0.9, 0.7, 0.8, 1.2, 1.9, 3.0, 4.2, 5.4, 6.3, 6.7, 6.8, 6.7,
                              6.6, 6.4, 6.0, 5.4, 4.4, 3.6, 3.0, 2.6, 2.0])  # fmt: skip
    hour = np.where(
        weekend,
        _choice(rng, np.arange(24), weekend_hours, n),
        _choice(rng, np.arange(24), weekday_hours, n),
    )
    minute = _choice(rng, np.arange(60), np.where(np.arange(60) % 5 == 0, 5.0, 1.0), n)

    # --- where --------------------------------------------------------------------------------------
    police_force = _choice(rng, FORCES, FORCE_WEIGHTS, n)
    rural = rng.random(n) < 0.33
    speed_limit = np.where(
        rural,
        _choice(rng, [30, 40, 50, 60, 70], [0.16, 0.1, 0.08, 0.5, 0.16], n),
        _choice(rng, [20, 30, 40, 50, 60, 70], [0.24, 0.6, 0.09, 0.03, 0.02, 0.02], n),
    )

    # --- shift: rural 60 mph at night inside the window ----------------------------------------------
    # Severity intercepts are calibrated on the unshifted rows, so the shift raises severity as it would.
    shifted = np.zeros(n, dtype=bool)
    if shift is not None:
        in_window = (dates >= np.datetime64(shift.start)) & (dates <= np.datetime64(shift.end))
        shifted = in_window & (rng.random(n) < shift.fraction)
    unshifted_covariates = (rural.copy(), speed_limit.copy(), hour.copy())
    rural[shifted] = True
    speed_limit[shifted] = 60
    hour[shifted] = _choice(rng, [21, 22, 23, 0, 1, 2, 3, 4], [1, 1, 1, 1, 1, 1, 1, 1], int(shifted.sum()))

    first_road_class = np.where(
        speed_limit == 70,
        _choice(rng, [1, 2, 3], [0.6, 0.05, 0.35], n),
        np.where(rural, _choice(rng, [3, 4, 5, 6], [0.5, 0.2, 0.15, 0.15], n),
                 _choice(rng, [3, 4, 5, 6], [0.42, 0.12, 0.08, 0.38], n)),
    )  # fmt: skip
    road_type = np.where(
        first_road_class <= 2,
        _choice(rng, [3, 7], [0.9, 0.1], n),
        _choice(rng, [1, 2, 3, 6, 7, 9], [0.07, 0.02, 0.12, 0.76, 0.01, 0.02], n),
    )
    junction_detail = np.where(
        road_type == 1,
        _choice(rng, [1, 2], [0.85, 0.15], n),
        _choice(rng, [0, 3, 5, 6, 7, 8, 9], [0.45, 0.33, 0.02, 0.1, 0.01, 0.04, 0.05], n),
    )
    at_junction = junction_detail != 0
    junction_control = np.where(
        at_junction, _choice(rng, [1, 2, 3, 4, 9], [0.003, 0.2, 0.01, 0.77, 0.017], n), 0
    )
    second_road_class = np.where(at_junction, _choice(rng, [3, 4, 5, 6, 9], [0.15, 0.07, 0.05, 0.7, 0.03], n), 0)
    first_road_number = np.where(first_road_class <= 4, rng.integers(1, 10000, n), 0)
    first_road_number = np.where(first_road_class <= 2, rng.integers(1, 100, n), first_road_number)
    second_road_number = np.where(
        at_junction & (second_road_class <= 4), rng.integers(1, 10000, n), np.where(at_junction, 0, -1)
    )
    pedestrian_crossing = np.where(
        rural, 0, _choice(rng, [0, 11, 12, 13, 14, 15, 16, 17], [0.8, 0.004, 0.003, 0.02, 0.05, 0.08, 0.003, 0.04], n)
    )
    human = lookup(pedestrian_crossing, {11: 1, 12: 2}, default=0)
    physical = lookup(pedestrian_crossing, {13: 1, 14: 4, 15: 5, 16: 7, 17: 8}, default=0)

    # Hazards and special conditions: at most one of the two, so the 2024 single column can hold it.
    hazard_2024 = _choice(rng, [0, 11, 12, 13, 14, 15, 21, 16, 17, 18, 19, 20],
                          [955, 3, 2, 12, 4, 2, 4, 3, 6, 3, 2, 4], n)  # fmt: skip
    special_historic = lookup(hazard_2024, {11: 1, 12: 3, 13: 4, 14: 6, 15: 7, 21: 5}, default=0)
    hazard_historic = lookup(hazard_2024, {16: 1, 17: 2, 18: 3, 19: 6, 20: 7}, default=0)

    weather = _choice(rng, [1, 2, 3, 4, 5, 6, 7, 8, 9], [0.8, 0.12, 0.005, 0.012, 0.012, 0.001, 0.006, 0.02, 0.024], n)
    road_surface = np.select(
        [np.isin(weather, [2, 5]), np.isin(weather, [3, 6]), weather == 9],
        [np.full(n, 2), _choice(rng, [3, 4], [0.6, 0.4], n), _choice(rng, [1, 2, 9], [0.5, 0.3, 0.2], n)],
        _choice(rng, [1, 2, 4, 5], [0.76, 0.21, 0.025, 0.005], n),
    )
    month_of = dates.astype("datetime64[M]").astype(int) % 12 + 1
    sunrise = np.array([8, 7, 6, 6, 5, 4, 4, 5, 6, 7, 7, 8])[month_of - 1]
    sunset = np.array([16, 17, 18, 20, 20, 21, 21, 20, 19, 18, 16, 16])[month_of - 1]
    dark = (hour < sunrise) | (hour >= sunset)
    light = np.where(
        dark,
        np.where(rural, _choice(rng, [4, 5, 6, 7], [0.2, 0.02, 0.7, 0.08], n),
                 _choice(rng, [4, 5, 6, 7], [0.86, 0.03, 0.05, 0.06], n)),
        1,
    )  # fmt: skip
    light[shifted] = np.where(rng.random(int(shifted.sum())) < 0.85, 6, 4)
    dark = light != 1

    # --- vehicles -----------------------------------------------------------------------------------------
    n_vehicles = _choice(rng, [1, 2, 3, 4, 5, 6], [0.3, 0.58, 0.09, 0.02, 0.007, 0.003], n)
    collision_of_vehicle = np.repeat(np.arange(n), n_vehicles)
    first_vehicle = np.cumsum(n_vehicles) - n_vehicles
    vehicle_reference = np.arange(len(collision_of_vehicle)) - first_vehicle[collision_of_vehicle] + 1
    m = len(collision_of_vehicle)
    vehicle_type = _choice(rng, [9, 1, 2, 3, 4, 5, 8, 19, 20, 21, 11, 10, 17, 90, 22, 23],
                           [0.68, 0.08, 0.01, 0.03, 0.01, 0.03, 0.025, 0.065, 0.008, 0.017, 0.017, 0.003, 0.002,
                            0.006, 0.002, 0.002], m)  # fmt: skip

    def involved(group: str) -> np.ndarray:
        return np.bincount(collision_of_vehicle, np.isin(vehicle_type, list(VEHICLE_GROUPS[group])), n) > 0

    motorcycle, pedal_cycle, goods = involved("motorcycle"), involved("pedal_cycle"), involved("goods")
    pedestrian = rng.random(n) < np.where(n_vehicles == 1, np.where(rural, 0.25, 0.6), 0.02)
    single = n_vehicles == 1

    # --- severity: worst casualty, from a logistic risk model calibrated per year ---------------------------
    def ksi_score(rural_, speed_, dark_, hour_):
        return (1.2 * (speed_ >= 60) + 0.45 * np.isin(speed_, [40, 50]) + 0.4 * rural_ + 0.4 * dark_
                + 1.4 * motorcycle + 1.2 * pedestrian + 0.6 * pedal_cycle + 0.3 * single
                + 0.3 * (weekend & ((hour_ >= 22) | (hour_ <= 4))) - 0.1 * (road_surface == 2))  # fmt: skip

    def fatal_score(rural_, speed_, dark_):
        return 1.0 * (speed_ >= 60) + 0.5 * dark_ + 0.6 * pedestrian + 0.5 * motorcycle + 0.4 * rural_ + 0.5 * goods

    base_rural, base_speed, base_hour = unshifted_covariates
    base_dark = (base_hour < sunrise) | (base_hour >= sunset)
    ksi_target = FATAL_SHARE + serious_share(year)
    ksi_intercept = _calibrate(ksi_score(base_rural, base_speed, base_dark, base_hour), ksi_target)
    p_ksi_base = _sigmoid(ksi_score(base_rural, base_speed, base_dark, base_hour) + ksi_intercept)
    # P(fatal) = P(KSI) * P(fatal | KSI) averages FATAL_SHARE
    fatal_intercept = _calibrate(fatal_score(base_rural, base_speed, base_dark), FATAL_SHARE, weight=p_ksi_base)
    p_ksi = _sigmoid(ksi_score(rural, speed_limit, dark, hour) + ksi_intercept)
    p_fatal = _sigmoid(fatal_score(rural, speed_limit, dark) + fatal_intercept)
    ksi = rng.random(n) < p_ksi
    fatal = ksi & (rng.random(n) < p_fatal)
    severity = np.where(fatal, 1, np.where(ksi, 2, 3))

    # --- casualties -------------------------------------------------------------------------------------------
    # A pedestrian collision has the pedestrian plus 0-4 injured occupants; any other has 1-5 occupants.
    n_casualties = _choice(rng, [1, 2, 3, 4, 5], [0.72, 0.18, 0.06, 0.03, 0.01], n)
    collision_of_casualty = np.repeat(np.arange(n), n_casualties)
    first_casualty = np.cumsum(n_casualties) - n_casualties
    k = np.arange(len(collision_of_casualty)) - first_casualty[collision_of_casualty]  # 0-based within collision
    c = len(collision_of_casualty)
    is_pedestrian = pedestrian[collision_of_casualty] & (k == 0)
    occupant_k = k - pedestrian[collision_of_casualty]  # 0-based among occupants
    casualty_vehicle = np.where(is_pedestrian, 1, occupant_k % n_vehicles[collision_of_casualty] + 1)
    vehicle_row = first_vehicle[collision_of_casualty] + casualty_vehicle - 1
    casualty_class = np.where(is_pedestrian, 3, np.where(occupant_k < n_vehicles[collision_of_casualty], 1, 2))
    casualty_type = np.where(is_pedestrian, 0, lookup(vehicle_type[vehicle_row], OCCUPANT_TYPE, default=90))
    worst = severity[collision_of_casualty]
    casualty_severity = np.where(k == 0, worst, np.where(rng.random(c) < 0.3, worst, 3))

    # --- identity -------------------------------------------------------------------------------------------------
    reference = np.char.add(SYNTHETIC_FORCE_SEGMENT, np.char.zfill(np.arange(1, n + 1).astype(str), 7))
    index = np.char.add(str(year), reference)
    timestamps = dates.astype("datetime64[s]") + (hour * 3600 + minute * 60).astype("timedelta64[s]")
    stamp_array = pa.array(timestamps)
    easting = rng.integers(150_000, 655_000, n)
    northing = rng.integers(15_000, 970_000, n)
    latitude = np.round(49.766 + northing / 111_200, 6)
    longitude = np.round(-7.557 + easting / (111_320 * np.cos(np.radians(latitude))), 6)
    injury_based = rng.random(n) < float(np.clip(0.45 + 0.06 * (year - 2016), 0.0, 0.95))
    adjusted_serious = np.where(severity == 2, 1.0, np.where(injury_based, 0.0, np.round(rng.uniform(0.02, 0.2, n), 4)))
    adjusted_serious[severity == 1] = 0.0
    enhanced = np.where(
        injury_based & (year >= 2023),
        np.where(severity == 2, _choice(rng, [5, 6, 7], [0.2, 0.4, 0.4], n), severity),
        -1,
    )
    sex_driver = _choice(rng, [1, 2, 3], [0.66, 0.26, 0.08], m)
    age_driver = np.where(sex_driver == 3, -1, np.clip(rng.normal(42, 16, m).astype(int), 17, 95))
    age_casualty = np.clip(rng.normal(38, 19, c).astype(int), 0, 99)
    age_casualty[casualty_class == 1] = np.clip(age_casualty[casualty_class == 1], 16, 99)

    collisions = pd.DataFrame({
        "collision_index": index,
        "collision_year": year,
        "collision_ref_no": reference,
        "location_easting_osgr": easting,
        "location_northing_osgr": northing,
        "longitude": longitude,
        "latitude": latitude,
        "police_force": police_force,
        "collision_severity": severity,
        "number_of_vehicles": n_vehicles,
        "number_of_casualties": n_casualties,
        "date": dates.astype("datetime64[ns]"),
        "day_of_week": dft_day_of_week(weekday[collision_day]),
        "time": pc.strftime(stamp_array, format="%H:%M").to_numpy(zero_copy_only=False),
        "local_authority_district": -1,
        "local_authority_ons_district": "-1",
        "local_authority_highway": "-1",
        "local_authority_highway_current": "-1",
        "first_road_class": first_road_class,
        "first_road_number": first_road_number,
        "road_type": road_type,
        "speed_limit": speed_limit,
        "junction_detail_historic": junction_detail,
        "junction_detail": lookup(junction_detail, TO_2024["junction_detail"]),
        "junction_control": junction_control,
        "second_road_class": second_road_class,
        "second_road_number": second_road_number,
        "pedestrian_crossing_human_control_historic": human,
        "pedestrian_crossing_physical_facilities_historic": physical,
        "pedestrian_crossing": pedestrian_crossing,
        "light_conditions": light,
        "weather_conditions": weather,
        "road_surface_conditions": road_surface,
        "special_conditions_at_site": special_historic,
        "carriageway_hazards_historic": hazard_historic,
        "carriageway_hazards": hazard_2024,
        "urban_or_rural_area": np.where(rural, 2, 1),
        "did_police_officer_attend_scene_of_accident": np.where(
            rng.random(n) < np.where(severity < 3, 0.95, 0.7), 1, _choice(rng, [2, 3], [0.7, 0.3], n)
        ),
        "trunk_road_flag": np.where((first_road_class <= 2) | (rng.random(n) < 0.05), 1, 2),
        "lsoa_of_accident_location": "-1",
        "enhanced_severity_collision": enhanced,
        "collision_injury_based": injury_based.astype(int),
        "collision_adjusted_severity_serious": adjusted_serious,
        "collision_adjusted_severity_slight": np.where(severity == 1, 0.0, np.round(1 - adjusted_serious, 4)),
    })
    manoeuvre = _choice(rng, [18, 4, 3, 9, 2, 7, 5, 16, 17, 13, 1, 10, 6, 11, 12, 14, 15, 8],
                        [0.46, 0.08, 0.07, 0.07, 0.06, 0.04, 0.04, 0.03, 0.03, 0.02, 0.02, 0.02, 0.01, 0.01, 0.01,
                         0.01, 0.01, 0.01], m)  # fmt: skip
    vehicle_at_junction = at_junction[collision_of_vehicle]
    # Codes that mean the same in both specifications, so one value serves both twins.
    restricted_lane = _choice(rng, [0, 2, 4, 6, 9], [0.97, 0.01, 0.01, 0.005, 0.005], m)
    journey_purpose = _choice(rng, [1, 2, 6], [0.1, 0.1, 0.8], m)
    vehicles = pd.DataFrame({
        "collision_index": index[collision_of_vehicle],
        "collision_year": year,
        "collision_ref_no": reference[collision_of_vehicle],
        "vehicle_reference": vehicle_reference,
        "vehicle_type": vehicle_type,
        "towing_and_articulation": np.where(np.isin(vehicle_type, [20, 21]) & (rng.random(m) < 0.5), 1, 0),
        "vehicle_manoeuvre_historic": manoeuvre,
        "vehicle_manoeuvre": lookup(manoeuvre, TO_2024["vehicle_manoeuvre"]),
        "vehicle_direction_from": rng.integers(1, 9, m),
        "vehicle_direction_to": rng.integers(1, 9, m),
        "vehicle_location_restricted_lane_historic": restricted_lane,
        "vehicle_location_restricted_lane": restricted_lane,
        "junction_location": np.where(vehicle_at_junction, rng.integers(1, 9, m), 0),
        "skidding_and_overturning": _choice(rng, [0, 1, 2, 5], [0.9, 0.07, 0.01, 0.02], m),
        "hit_object_in_carriageway": _choice(rng, [0, 4, 10, 11], [0.95, 0.02, 0.02, 0.01], m),
        "vehicle_leaving_carriageway": _choice(rng, [0, 1, 7], [0.93, 0.05, 0.02], m),
        "hit_object_off_carriageway": _choice(rng, [0, 4, 11], [0.95, 0.02, 0.03], m),
        "first_point_of_impact": _choice(rng, [0, 1, 2, 3, 4], [0.05, 0.5, 0.2, 0.12, 0.13], m),
        "vehicle_left_hand_drive": _choice(rng, [1, 2], [0.99, 0.01], m),
        "journey_purpose_of_driver_historic": journey_purpose,
        "journey_purpose_of_driver": journey_purpose,
        "sex_of_driver": sex_driver,
        "age_of_driver": age_driver,
        "age_band_of_driver": _age_band(age_driver),
        "engine_capacity_cc": np.where(vehicle_type == 1, -1, rng.integers(50, 3000, m)),
        "propulsion_code": np.where(vehicle_type == 1, -1, _choice(rng, [1, 2, 3, 8], [0.5, 0.4, 0.04, 0.06], m)),
        "age_of_vehicle": np.where(vehicle_type == 1, -1, rng.integers(0, 20, m)),
        "generic_make_model": "-1",
        "driver_imd_decile": rng.integers(1, 11, m),
        "lsoa_of_driver": "-1",
        "escooter_flag": 0,
        "driver_distance_banding": np.where(year >= 2023, rng.integers(1, 6, m), -1),
        "driver_home_area_type": _choice(rng, [1, 2, 3], [0.8, 0.1, 0.1], m),
    })
    casualties = pd.DataFrame({
        "collision_index": index[collision_of_casualty],
        "collision_year": year,
        "collision_ref_no": reference[collision_of_casualty],
        "vehicle_reference": casualty_vehicle,
        "casualty_reference": k + 1,
        "casualty_class": casualty_class,
        "sex_of_casualty": _choice(rng, [1, 2], [0.6, 0.4], c),
        "age_of_casualty": age_casualty,
        "age_band_of_casualty": _age_band(age_casualty),
        "casualty_severity": casualty_severity,
        "pedestrian_location": np.where(is_pedestrian, _choice(rng, [1, 5, 6, 9, 10], [0.2, 0.5, 0.1, 0.1, 0.1], c), 0),
        "pedestrian_movement": np.where(is_pedestrian, _choice(rng, [1, 3, 5, 9], [0.4, 0.3, 0.1, 0.2], c), 0),
        "car_passenger": np.where((casualty_class == 2) & (casualty_type == 9), _choice(rng, [1, 2], [0.6, 0.4], c), 0),
        "bus_or_coach_passenger": np.where((casualty_class == 2) & (casualty_type == 11), 4, 0),
        "pedestrian_road_maintenance_worker": np.where(is_pedestrian, 2, 0),
        "casualty_type": casualty_type,
        "casualty_imd_decile": rng.integers(1, 11, c),
        "lsoa_of_casualty": "-1",
        "enhanced_casualty_severity": np.where(
            enhanced[collision_of_casualty] == -1, -1, np.where(casualty_severity == 2, 6, casualty_severity)
        ),
        "casualty_injury_based": injury_based[collision_of_casualty].astype(int),
        "casualty_adjusted_severity_serious": np.where(casualty_severity == 2, 1.0, 0.0),
        "casualty_adjusted_severity_slight": np.where(casualty_severity == 3, 1.0, 0.0),
        "casualty_distance_banding": np.where(year >= 2023, rng.integers(1, 6, c), -1),
        "casualty_home_area_type": _choice(rng, [1, 2, 3], [0.8, 0.1, 0.1], c),
    })
    return collisions, vehicles, casualties


def _age_band(age: np.ndarray) -> np.ndarray:
    """DfT age bands: 1 = 0-5, 2 = 6-10, ... 11 = over 75; -1 where the age is missing."""
    edges = np.array([6, 11, 16, 21, 26, 36, 46, 56, 66, 76])
    return np.where(age < 0, -1, np.searchsorted(edges, age, side="right") + 1)
