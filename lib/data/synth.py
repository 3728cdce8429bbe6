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

What is realistic enough for a model to learn something (linked tables, severity from real risk
factors, calibrated to DfT's published shares) is the risk model in `lib.data.synth_risk`; this
module draws the rest of each table and writes the files. `Shift` injects a data shift for
monitoring tests: between two dates, a share of collisions move to rural 60 mph roads at night.

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

from lib.data.codes import TO_2024, dft_day_of_week, lookup
from lib.data.download import FILE_PREFIX, combined_file_name
from lib.data.schema import HISTORIC_TWINS, OLDER_ERA_COLUMNS, SCHEMA
from lib.data.synth_risk import Casualties, Collisions, Road, Scene, Vehicles, choice, draw_collisions

logger = logging.getLogger(__name__)

SYNTHETIC_FORCE_SEGMENT = "SY"
MARKER_FILE = "SYNTHETIC-README.md"
ERAS = ("2024", "accident")
FIRST_2024_SPEC_YEAR = 2024  # rows of this year and later have no historic codes in the 2024 specification

# Older-era layouts: canonical names in the order of the 2021-2022 "accident_*" files
# (lib/data/README.md, "The accident_* snake-case era").
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
# The real 2024-specification headers (lib/data/README.md, "The 2024 collision_* specification"): the canonical schema
# without older-era columns.
SPEC_2024_COLUMNS = {
    table: [c for c in columns if c not in OLDER_ERA_COLUMNS] for table, columns in SCHEMA.items()
}
# Columns the 2024 specification leaves at -1 for rows collected under it (same section).
HISTORIC_ONLY_COLUMNS = {
    "collision": [*HISTORIC_TWINS.values(), "special_conditions_at_site"],
    "vehicle": list(HISTORIC_TWINS.values()),
    "casualty": [],
}

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
            # 2021-era files write -1 for "no second road" / "no junction control"
            # (lib/data/README.md, "Not at a junction").
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


# -- one year: the rest of each DfT table ---------------------------------------------------------------------
# After `lib.data.synth_risk.draw_collisions`, from the same generator and in the order `_generate_year` calls
# them: reordering the parts, or adding a draw to one, changes every later column for the same seed.


@dataclass(frozen=True)
class _Identity:
    """Index and reference (recognisably synthetic), and the place on the map."""

    index: np.ndarray
    reference: np.ndarray
    easting: np.ndarray
    northing: np.ndarray
    latitude: np.ndarray
    longitude: np.ndarray


@dataclass(frozen=True)
class _Outcome:
    """The collision severity and how it was reported."""

    severity: np.ndarray
    injury_based: np.ndarray
    adjusted_serious: np.ndarray
    enhanced: np.ndarray


@dataclass(frozen=True)
class _People:
    sex_driver: np.ndarray
    age_driver: np.ndarray
    age_casualty: np.ndarray


def _generate_year(
    year: int, n: int, seed: int, shift: Shift | None
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """One year's three tables, from the year's own generator: the risk model's draws first, then the rest."""
    rng = np.random.default_rng([seed, year])
    drawn = draw_collisions(rng, year, n, shift)
    identity = _draw_identity(rng, year, n)
    outcome = _draw_outcome(rng, year, drawn)
    people = _draw_people(rng, drawn.vehicles, drawn.casualties)
    collisions = _collision_table(rng, year, identity, drawn.scene, drawn.vehicles, drawn.casualties, outcome)
    vehicles = _vehicle_table(rng, year, identity, drawn.scene.road, drawn.vehicles, people)
    casualties = _casualty_table(rng, year, identity, drawn.casualties, outcome, people)
    return collisions, vehicles, casualties


def _draw_identity(rng: np.random.Generator, year: int, n: int) -> _Identity:
    reference = np.char.add(SYNTHETIC_FORCE_SEGMENT, np.char.zfill(np.arange(1, n + 1).astype(str), 7))
    index = np.char.add(str(year), reference)
    easting = rng.integers(150_000, 655_000, n)
    northing = rng.integers(15_000, 970_000, n)
    latitude = np.round(49.766 + northing / 111_200, 6)
    longitude = np.round(-7.557 + easting / (111_320 * np.cos(np.radians(latitude))), 6)
    return _Identity(index, reference, easting, northing, latitude, longitude)


def _synthetic_authority(identity: _Identity) -> np.ndarray:
    """A recognisably synthetic local highway authority per 100 km square of the National Grid: `SY`, the
    square's easting digit and its two northing digits (`SY503`: 500-600 km east, 300-400 km north). Drawn
    from the place, not from the generator, so every other column stays as it was for the same seed."""
    easting = (identity.easting // 100_000).astype(str)
    northing = np.char.zfill((identity.northing // 100_000).astype(str), 2)
    return np.char.add(np.char.add(SYNTHETIC_FORCE_SEGMENT, easting), northing)


def _draw_outcome(rng: np.random.Generator, year: int, drawn: Collisions) -> _Outcome:
    """The reporting regime and adjusted severity come from the risk model (`lib.data.synth_risk`); enhanced
    severity exists from 2023, for injury-based rows."""
    severity, injury_based = drawn.severity, drawn.injury_based
    enhanced = np.where(
        injury_based & (year >= 2023),
        np.where(severity == 2, choice(rng, [5, 6, 7], [0.2, 0.4, 0.4], len(severity)), severity),
        -1,
    )
    return _Outcome(severity, injury_based, drawn.adjusted_serious, enhanced)


def _draw_people(rng: np.random.Generator, vehicles: Vehicles, casualties: Casualties) -> _People:
    """Drivers' sex and age, casualties' age (drivers and riders at least 16)."""
    m, c = len(vehicles.collision), len(casualties.collision)
    sex_driver = choice(rng, [1, 2, 3], [0.66, 0.26, 0.08], m)
    age_driver = np.where(sex_driver == 3, -1, np.clip(rng.normal(42, 16, m).astype(int), 17, 95))
    age_casualty = np.clip(rng.normal(38, 19, c).astype(int), 0, 99)
    driver = casualties.casualty_class == 1
    age_casualty[driver] = np.clip(age_casualty[driver], 16, 99)
    return _People(sex_driver, age_driver, age_casualty)


def _collision_table(
    rng: np.random.Generator, year: int, identity: _Identity, scene: Scene, vehicles: Vehicles,
    casualties: Casualties, outcome: _Outcome,
) -> pd.DataFrame:  # fmt: skip
    n = len(identity.index)
    when, where, road, conditions = scene.when, scene.where, scene.road, scene.conditions
    severity = outcome.severity
    timestamps = when.dates.astype("datetime64[s]") + (when.hour * 3600 + when.minute * 60).astype("timedelta64[s]")
    return pd.DataFrame({
        "collision_index": identity.index,
        "collision_year": year,
        "collision_ref_no": identity.reference,
        "location_easting_osgr": identity.easting,
        "location_northing_osgr": identity.northing,
        "longitude": identity.longitude,
        "latitude": identity.latitude,
        "police_force": where.police_force,
        "collision_severity": severity,
        "number_of_vehicles": vehicles.count,
        "number_of_casualties": casualties.count,
        "date": when.dates.astype("datetime64[ns]"),
        "day_of_week": dft_day_of_week(when.weekday),
        "time": pc.strftime(pa.array(timestamps), format="%H:%M").to_numpy(zero_copy_only=False),
        "local_authority_district": -1,
        "local_authority_ons_district": "-1",
        "local_authority_highway": _synthetic_authority(identity),
        "local_authority_highway_current": "-1",
        "first_road_class": road.first_road_class,
        "first_road_number": road.first_road_number,
        "road_type": road.road_type,
        "speed_limit": where.speed_limit,
        "junction_detail_historic": road.junction_detail,
        "junction_detail": lookup(road.junction_detail, TO_2024["junction_detail"]),
        "junction_control": road.junction_control,
        "second_road_class": road.second_road_class,
        "second_road_number": road.second_road_number,
        "pedestrian_crossing_human_control_historic": road.human,
        "pedestrian_crossing_physical_facilities_historic": road.physical,
        "pedestrian_crossing": road.pedestrian_crossing,
        "light_conditions": conditions.light,
        "weather_conditions": conditions.weather,
        "road_surface_conditions": conditions.road_surface,
        "special_conditions_at_site": road.special_historic,
        "carriageway_hazards_historic": road.hazard_historic,
        "carriageway_hazards": road.hazard_2024,
        "urban_or_rural_area": np.where(where.rural, 2, 1),
        "did_police_officer_attend_scene_of_accident": np.where(
            rng.random(n) < np.where(severity < 3, 0.95, 0.7), 1, choice(rng, [2, 3], [0.7, 0.3], n)
        ),
        "trunk_road_flag": np.where((road.first_road_class <= 2) | (rng.random(n) < 0.05), 1, 2),
        "lsoa_of_accident_location": "-1",
        "enhanced_severity_collision": outcome.enhanced,
        "collision_injury_based": outcome.injury_based.astype(int),
        "collision_adjusted_severity_serious": outcome.adjusted_serious,
        "collision_adjusted_severity_slight": np.where(severity == 1, 0.0, np.round(1 - outcome.adjusted_serious, 4)),
    })


def _vehicle_table(
    rng: np.random.Generator, year: int, identity: _Identity, road: Road, vehicles: Vehicles, people: _People
) -> pd.DataFrame:
    m = len(vehicles.collision)
    vehicle_type, collision_of_vehicle = vehicles.vehicle_type, vehicles.collision
    manoeuvre = choice(rng, [18, 4, 3, 9, 2, 7, 5, 16, 17, 13, 1, 10, 6, 11, 12, 14, 15, 8],
                        [0.46, 0.08, 0.07, 0.07, 0.06, 0.04, 0.04, 0.03, 0.03, 0.02, 0.02, 0.02, 0.01, 0.01, 0.01,
                         0.01, 0.01, 0.01], m)  # fmt: skip
    vehicle_at_junction = road.junction_detail[collision_of_vehicle] != 0
    # Codes that mean the same in both specifications, so one value serves both twins.
    restricted_lane = choice(rng, [0, 2, 4, 6, 9], [0.97, 0.01, 0.01, 0.005, 0.005], m)
    journey_purpose = choice(rng, [1, 2, 6], [0.1, 0.1, 0.8], m)
    return pd.DataFrame({
        "collision_index": identity.index[collision_of_vehicle],
        "collision_year": year,
        "collision_ref_no": identity.reference[collision_of_vehicle],
        "vehicle_reference": vehicles.reference,
        "vehicle_type": vehicle_type,
        "towing_and_articulation": np.where(np.isin(vehicle_type, [20, 21]) & (rng.random(m) < 0.5), 1, 0),
        "vehicle_manoeuvre_historic": manoeuvre,
        "vehicle_manoeuvre": lookup(manoeuvre, TO_2024["vehicle_manoeuvre"]),
        "vehicle_direction_from": rng.integers(1, 9, m),
        "vehicle_direction_to": rng.integers(1, 9, m),
        "vehicle_location_restricted_lane_historic": restricted_lane,
        "vehicle_location_restricted_lane": restricted_lane,
        "junction_location": np.where(vehicle_at_junction, rng.integers(1, 9, m), 0),
        "skidding_and_overturning": choice(rng, [0, 1, 2, 5], [0.9, 0.07, 0.01, 0.02], m),
        "hit_object_in_carriageway": choice(rng, [0, 4, 10, 11], [0.95, 0.02, 0.02, 0.01], m),
        "vehicle_leaving_carriageway": choice(rng, [0, 1, 7], [0.93, 0.05, 0.02], m),
        "hit_object_off_carriageway": choice(rng, [0, 4, 11], [0.95, 0.02, 0.03], m),
        "first_point_of_impact": choice(rng, [0, 1, 2, 3, 4], [0.05, 0.5, 0.2, 0.12, 0.13], m),
        "vehicle_left_hand_drive": choice(rng, [1, 2], [0.99, 0.01], m),
        "journey_purpose_of_driver_historic": journey_purpose,
        "journey_purpose_of_driver": journey_purpose,
        "sex_of_driver": people.sex_driver,
        "age_of_driver": people.age_driver,
        "age_band_of_driver": _age_band(people.age_driver),
        "engine_capacity_cc": np.where(vehicle_type == 1, -1, rng.integers(50, 3000, m)),
        "propulsion_code": np.where(vehicle_type == 1, -1, choice(rng, [1, 2, 3, 8], [0.5, 0.4, 0.04, 0.06], m)),
        "age_of_vehicle": np.where(vehicle_type == 1, -1, rng.integers(0, 20, m)),
        "generic_make_model": "-1",
        "driver_imd_decile": rng.integers(1, 11, m),
        "lsoa_of_driver": "-1",
        "escooter_flag": 0,
        "driver_distance_banding": np.where(year >= 2023, rng.integers(1, 6, m), -1),
        "driver_home_area_type": choice(rng, [1, 2, 3], [0.8, 0.1, 0.1], m),
    })


def _casualty_table(
    rng: np.random.Generator, year: int, identity: _Identity, casualties: Casualties, outcome: _Outcome,
    people: _People,
) -> pd.DataFrame:  # fmt: skip
    c = len(casualties.collision)
    collision_of_casualty, is_pedestrian = casualties.collision, casualties.is_pedestrian
    casualty_class, casualty_type, casualty_severity = (
        casualties.casualty_class, casualties.casualty_type, casualties.severity
    )
    return pd.DataFrame({
        "collision_index": identity.index[collision_of_casualty],
        "collision_year": year,
        "collision_ref_no": identity.reference[collision_of_casualty],
        "vehicle_reference": casualties.vehicle,
        "casualty_reference": casualties.k + 1,
        "casualty_class": casualty_class,
        "sex_of_casualty": choice(rng, [1, 2], [0.6, 0.4], c),
        "age_of_casualty": people.age_casualty,
        "age_band_of_casualty": _age_band(people.age_casualty),
        "casualty_severity": casualty_severity,
        "pedestrian_location": np.where(is_pedestrian, choice(rng, [1, 5, 6, 9, 10], [0.2, 0.5, 0.1, 0.1, 0.1], c), 0),
        "pedestrian_movement": np.where(is_pedestrian, choice(rng, [1, 3, 5, 9], [0.4, 0.3, 0.1, 0.2], c), 0),
        "car_passenger": np.where((casualty_class == 2) & (casualty_type == 9), choice(rng, [1, 2], [0.6, 0.4], c), 0),
        "bus_or_coach_passenger": np.where((casualty_class == 2) & (casualty_type == 11), 4, 0),
        "pedestrian_road_maintenance_worker": np.where(is_pedestrian, 2, 0),
        "casualty_type": casualty_type,
        "casualty_imd_decile": rng.integers(1, 11, c),
        "lsoa_of_casualty": "-1",
        "enhanced_casualty_severity": np.where(
            outcome.enhanced[collision_of_casualty] == -1, -1, np.where(casualty_severity == 2, 6, casualty_severity)
        ),
        "casualty_injury_based": outcome.injury_based[collision_of_casualty].astype(int),
        "casualty_adjusted_severity_serious": np.where(casualty_severity == 2, 1.0, 0.0),
        "casualty_adjusted_severity_slight": np.where(casualty_severity == 3, 1.0, 0.0),
        "casualty_distance_banding": np.where(year >= 2023, rng.integers(1, 6, c), -1),
        "casualty_home_area_type": choice(rng, [1, 2, 3], [0.8, 0.1, 0.1], c),
    })


def _age_band(age: np.ndarray) -> np.ndarray:
    """DfT age bands: 1 = 0-5, 2 = 6-10, ... 11 = over 75; -1 where the age is missing."""
    edges = np.array([6, 11, 16, 21, 26, 36, 46, 56, 66, 76])
    return np.where(age < 0, -1, np.searchsorted(edges, age, side="right") + 1)
