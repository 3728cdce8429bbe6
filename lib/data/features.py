"""What the curated table holds: its columns, their dtypes, and which raw columns never become features.

`lib.data.curated.build_curated` builds the table from one year's raw tables; this module defines
what it builds: `CURATED_COLUMNS` (identity, targets, how the target was reported, features, context) with
`CURATED_DTYPES`.

Rules:
* Only what is known when the collision happens is a feature. Everything describing the outcome or
  the aftermath is excluded by name in `LEAKAGE_COLUMNS`, with the reason; no feature is computed from
  those columns (a test perturbs them and expects the same identity and feature columns). Only the
  targets read severities: `collision_severity`, `ksi` (fatal or serious) and `casualty_severity_score`.
* How the severity was reported (`REPORTING_COLUMNS`: injury-based or not, DfT's adjusted severity) sits
  with the targets, on the labels side (`LABEL_COLUMNS`): the monitoring reads it to tell a reporting
  change from label drift (`lib.monitoring.label_drift`), and, like the targets, it is dropped from
  what a model sees (`lib.data.curated.read_window`). They stay in `LEAKAGE_COLUMNS` as never features.
* Personal attributes of drivers and casualties stay out (data protection): `PERSONAL_COLUMNS`.
* Categorical codes are nullable Int16, all below 255 as HistGradientBoostingClassifier requires.
* `number_of_casualties` is excluded: it counts the injured, an outcome of the impact, and the
  collision severity is the worst of exactly those casualties, so each extra casualty is one more draw
  of the target. Whether a pedestrian was hit (`pedestrian_involved`) is kept: it describes who was
  involved, which is known at the scene before any injury is assessed.
"""

from __future__ import annotations

from lib.data.codes import VEHICLE_GROUPS

IDENTITY_COLUMNS = ["collision_index", "collision_year", "date"]
# `casualty_severity_score` is the original project's regression target (a baseline in lib.modeling.candidates): per
# casualty fatal 3, serious 2, slight 1, summed over the collision. A target, never a feature.
TARGET_COLUMNS = ["collision_severity", "ksi", "casualty_severity_score"]
# Missing (<NA>, NaN) where a file does not say: DfT's files carry them from the 2024 specification on
# (lib/data/README.md, "Severity").
REPORTING_COLUMNS = [
    "collision_injury_based",
    "collision_adjusted_severity_serious",
    "collision_adjusted_severity_slight",
]
LABEL_COLUMNS = TARGET_COLUMNS + REPORTING_COLUMNS
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
# Where a collision happened, for the monitoring's reports by place (lib.monitoring.places); never a feature:
# the model sees the place through latitude, longitude and police force, and takes only FEATURE_COLUMNS.
# `local_authority_highway` is the ONS code of the local highway authority, the one local-authority column
# that every era of the files fills (lib/data/README.md, "Local authority").
CONTEXT_COLUMNS = ["local_authority_highway"]
CURATED_COLUMNS = IDENTITY_COLUMNS + LABEL_COLUMNS + FEATURE_COLUMNS + CONTEXT_COLUMNS
CURATED_DTYPES = {
    "collision_index": "string",
    "collision_year": "int16",
    "date": "datetime64[ns]",
    "collision_severity": "int8",
    "ksi": "int8",
    "casualty_severity_score": "int16",
    "collision_injury_based": "Int16",
    "collision_adjusted_severity_serious": "float64",
    "collision_adjusted_severity_slight": "float64",
    **{column: "Int16" for column in CATEGORICAL_FEATURES},
    "speed_limit": "Int16",
    "hour": "Int8",
    "latitude": "float64",
    "longitude": "float64",
    "number_of_vehicles": "int16",
    **{column: "int16" for column in VEHICLE_COUNT_FEATURES},
    "pedestrian_involved": "int8",
    "vehicle_overtaking": "int8",
    "local_authority_highway": "string",
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
