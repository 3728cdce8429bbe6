"""The canonical STATS19 schema, and the header names of every era that map to it.

DfT renamed its columns twice (lib/data/README.md, "Column naming eras"): legacy CamelCase headers
(`Accident_Index`, `1st_Road_Class`, `Pedestrian_Crossing-Human_Control`), snake case `accident_*`
headers, and the 2024 `collision_*` specification, which also republished every earlier year.
`SCHEMA` holds the 2024 specification's columns, in its order, with the kind each is read as, plus two
columns of older eras (`OLDER_ERA_COLUMNS`). `canonical_columns` maps a header of any era to those
names: lower-cased, `1st_`/`2nd_` spelled out, punctuation dropped, then `ALIASES`. Files published
before the 2024 specification hold the historic codes under the plain names (`junction_detail`, ...):
those become their `*_historic` twins (`HISTORIC_TWINS`). A file without one of the `REQUIRED`
columns (or its historic twin) is the wrong file.
"""

from __future__ import annotations

import re

TABLES = ("collision", "vehicle", "casualty")

TEXT, FLOAT, INT, DATE, TIME = "text", "float", "int", "date", "time"

# Canonical columns: the 2024 specification's headers, in its order, plus two columns of older eras.
SCHEMA: dict[str, dict[str, str]] = {
    "collision": {
        "collision_index": TEXT, "collision_year": INT, "collision_ref_no": TEXT,
        "location_easting_osgr": FLOAT, "location_northing_osgr": FLOAT, "longitude": FLOAT, "latitude": FLOAT,
        "police_force": INT, "collision_severity": INT, "number_of_vehicles": INT, "number_of_casualties": INT,
        "date": DATE, "day_of_week": INT, "time": TIME, "local_authority_district": INT,
        "local_authority_ons_district": TEXT, "local_authority_highway": TEXT,
        "local_authority_highway_current": TEXT, "first_road_class": INT, "first_road_number": INT,
        "road_type": INT, "speed_limit": INT, "junction_detail_historic": INT, "junction_detail": INT,
        "junction_control": INT, "second_road_class": INT, "second_road_number": INT,
        "pedestrian_crossing_human_control_historic": INT, "pedestrian_crossing_physical_facilities_historic": INT,
        "pedestrian_crossing": INT, "light_conditions": INT, "weather_conditions": INT,
        "road_surface_conditions": INT, "special_conditions_at_site": INT, "carriageway_hazards_historic": INT,
        "carriageway_hazards": INT, "urban_or_rural_area": INT, "did_police_officer_attend_scene_of_accident": INT,
        "trunk_road_flag": INT, "lsoa_of_accident_location": TEXT, "enhanced_severity_collision": INT,
        "collision_injury_based": INT, "collision_adjusted_severity_serious": FLOAT,
        "collision_adjusted_severity_slight": FLOAT,
    },
    "vehicle": {
        "collision_index": TEXT, "collision_year": INT, "collision_ref_no": TEXT, "vehicle_reference": INT,
        "vehicle_type": INT, "towing_and_articulation": INT, "vehicle_manoeuvre_historic": INT,
        "vehicle_manoeuvre": INT, "vehicle_direction_from": INT, "vehicle_direction_to": INT,
        "vehicle_location_restricted_lane_historic": INT, "vehicle_location_restricted_lane": INT,
        "junction_location": INT, "skidding_and_overturning": INT, "hit_object_in_carriageway": INT,
        "vehicle_leaving_carriageway": INT, "hit_object_off_carriageway": INT, "first_point_of_impact": INT,
        "vehicle_left_hand_drive": INT, "journey_purpose_of_driver_historic": INT,
        "journey_purpose_of_driver": INT, "sex_of_driver": INT, "age_of_driver": INT, "age_band_of_driver": INT,
        "engine_capacity_cc": INT, "propulsion_code": INT, "age_of_vehicle": INT, "generic_make_model": TEXT,
        "driver_imd_decile": INT, "lsoa_of_driver": TEXT, "escooter_flag": INT, "driver_distance_banding": INT,
        "driver_home_area_type": INT,
    },
    "casualty": {
        "collision_index": TEXT, "collision_year": INT, "collision_ref_no": TEXT, "vehicle_reference": INT,
        "casualty_reference": INT, "casualty_class": INT, "sex_of_casualty": INT, "age_of_casualty": INT,
        "age_band_of_casualty": INT, "casualty_severity": INT, "pedestrian_location": INT,
        "pedestrian_movement": INT, "car_passenger": INT, "bus_or_coach_passenger": INT,
        "pedestrian_road_maintenance_worker": INT, "casualty_type": INT, "casualty_imd_decile": INT,
        "lsoa_of_casualty": TEXT, "enhanced_casualty_severity": INT, "casualty_injury_based": INT,
        "casualty_adjusted_severity_serious": FLOAT, "casualty_adjusted_severity_slight": FLOAT,
        "casualty_distance_banding": INT, "casualty_home_area_type": INT,
    },
}  # fmt: skip
OLDER_ERA_COLUMNS = frozenset({"driver_home_area_type", "casualty_home_area_type"})

# Plain (pre-2024 file) name -> its historic twin in the 2024 specification.
HISTORIC_TWINS = {
    "junction_detail": "junction_detail_historic",
    "pedestrian_crossing_human_control": "pedestrian_crossing_human_control_historic",
    "pedestrian_crossing_physical_facilities": "pedestrian_crossing_physical_facilities_historic",
    "carriageway_hazards": "carriageway_hazards_historic",
    "vehicle_manoeuvre": "vehicle_manoeuvre_historic",
    "vehicle_location_restricted_lane": "vehicle_location_restricted_lane_historic",
    "journey_purpose_of_driver": "journey_purpose_of_driver_historic",
}

# Header names (after lower-casing) that differ from the canonical ones (lib/data/README.md, "Header names that
# differ").
ALIASES = {
    "accident_index": "collision_index",
    "accident_year": "collision_year",
    "accident_reference": "collision_ref_no",
    "accident_ref_no": "collision_ref_no",
    "collision_reference": "collision_ref_no",
    "accident_severity": "collision_severity",
    "did_police_officer_attend_scene_of_collision": "did_police_officer_attend_scene_of_accident",
    "lsoa_of_collision_location": "lsoa_of_accident_location",
    "enhanced_collision_severity": "enhanced_severity_collision",
    "collision_adjusted_serious": "collision_adjusted_severity_serious",
    "collision_adjusted_slight": "collision_adjusted_severity_slight",
    "casualty_adjusted_serious": "casualty_adjusted_severity_serious",
    "casualty_adjusted_slight": "casualty_adjusted_severity_slight",
    "was_vehicle_left_hand_drive": "vehicle_left_hand_drive",
}

# A file without one of these (or its historic twin) is the wrong file: fatal.
REQUIRED = {
    "collision": (
        "collision_index", "collision_severity", "date", "time", "number_of_vehicles", "number_of_casualties",
        "police_force", "first_road_class", "road_type", "speed_limit", "junction_detail", "junction_control",
        "light_conditions", "weather_conditions", "road_surface_conditions", "urban_or_rural_area",
    ),
    "vehicle": ("collision_index", "vehicle_reference", "vehicle_type", "vehicle_manoeuvre"),
    "casualty": ("collision_index", "vehicle_reference", "casualty_reference", "casualty_class", "casualty_severity"),
}  # fmt: skip


def canonical_name(header: str) -> str:
    """A header of any era -> its canonical name (before the historic-twin rename)."""
    name = header.strip().lstrip("\ufeff").lower()
    name = re.sub(r"^1st_", "first_", re.sub(r"^2nd_", "second_", name))
    name = re.sub(r"[()?]", "", name.replace("-", "_"))
    return ALIASES.get(name, name)


def canonical_columns(header: list[str]) -> list[str]:
    """Canonical names for a whole header, with pre-2024 plain names moved to their historic twins.

    A file is pre-2024 for a column when it has the plain name but not the `_historic` twin: its codes
    are then the historic ones.
    """
    names = [canonical_name(column) for column in header]
    present = set(names)
    return [
        HISTORIC_TWINS[name] if name in HISTORIC_TWINS and HISTORIC_TWINS[name] not in present else name
        for name in names
    ]
