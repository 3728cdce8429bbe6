"""The curated table (lib.data.curated, lib.data.features): its coding across eras, what it must never contain."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from lib.data.codes import LABELS
from lib.data.curated import CURATED_SCHEMA, build_curated
from lib.data.features import (
    CATEGORICAL_FEATURES,
    CONTEXT_COLUMNS,
    CURATED_COLUMNS,
    CURATED_DTYPES,
    FEATURE_COLUMNS,
    IDENTITY_COLUMNS,
    LABEL_COLUMNS,
    LEAKAGE_COLUMNS,
    NUMERIC_FEATURES,
    PERSONAL_COLUMNS,
    REPORTING_COLUMNS,
    TARGET_COLUMNS,
)
from lib.data.schema import HISTORIC_TWINS, SCHEMA
from lib.data.stats19 import load_year, read_table
from lib.data.synth import generate, write_files

# lib/data/README.md, "The mirror": collisions and fatal / serious / slight per year.
MIRROR_SEVERITY = {
    2014: (751, [1, 54, 696]),
    2015: (642, [1, 45, 596]),
    2016: (669, [4, 55, 610]),
    2017: (680, [4, 81, 595]),
    2018: (707, [7, 89, 611]),
}


def _curated_year(base_url: str, year: int, cache) -> pd.DataFrame:
    data = load_year(base_url, year, cache, progress=False)
    return build_curated(data.collisions, data.vehicles, data.casualties)


@pytest.fixture(scope="module")
def synthetic():
    return generate([2023], 2000, seed=21)


def _canonical(tables, year: int, folder) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The synthetic tables as read back from their 2024-specification files."""
    write_files(tables, folder)
    data = load_year(folder.as_uri(), year, folder / "cache", progress=False)
    return data.collisions, data.vehicles, data.casualties


def test_mirror_years_curate_to_the_reconstructed_counts(mirror, tmp_path):
    for year, (collisions, severities) in MIRROR_SEVERITY.items():
        curated = _curated_year(mirror.as_uri(), year, tmp_path)
        assert len(curated) == collisions
        assert curated["collision_index"].is_unique
        assert curated["collision_severity"].value_counts().reindex([1, 2, 3]).tolist() == severities
        assert curated["ksi"].sum() == severities[0] + severities[1]
        assert (curated["collision_year"] == year).all()
        # Waltham Forest's own roads, and a few collisions on its neighbours' (Newham, Redbridge).
        authorities = curated["local_authority_highway"].value_counts(dropna=False)
        assert authorities.index[0] == "E09000031" and authorities.iloc[0] > 0.98 * collisions
        assert set(authorities.index) <= {"E09000031", "E09000025", "E09000026"}


def test_the_same_collisions_curate_identically_from_either_era(tmp_path):
    # 2023 rows carry historic and 2024 codes; 2024 rows only 2024 codes in the 2024 specification.
    tables = generate([2023, 2024], 1500, seed=4)
    curated = {}
    for era in ("2024", "accident"):
        folder = tmp_path / era
        write_files(tables, folder, era=era)
        curated[era] = pd.concat(
            [_curated_year(folder.as_uri(), year, folder / "cache") for year in (2023, 2024)], ignore_index=True
        )
    header = (tmp_path / "accident" / "dft-road-casualty-statistics-accident-2024.csv").read_text().split("\n")[0]
    assert header.startswith("accident_index,accident_year,accident_reference")
    # Only the 2024 specification says how severity was reported; older files leave it missing.
    assert curated["2024"][REPORTING_COLUMNS].notna().all().all()
    assert curated["accident"][REPORTING_COLUMNS].isna().all().all()
    same = [column for column in curated["2024"] if column not in REPORTING_COLUMNS]
    pd.testing.assert_frame_equal(curated["2024"][same], curated["accident"][same])
    # The conversions were exercised, not bypassed: older junction codes and hazards occur in both years.
    assert set(curated["2024"]["junction_detail"].dropna()) == {0, 13, 16, 17, 18, 19}
    assert curated["2024"]["carriageway_hazards"].gt(0).sum() > 20


def test_historic_conversion_agrees_with_dfts_own_2024_codes(shared_data):
    """Real 2023 rows published with both codings: converting the historic ones gives DfT's 2024 ones."""
    folder = shared_data / "wpatke__crossroads-uk"
    tables = {
        table: read_table(folder / f"dft-road-casualty-statistics-{table}-2023.csv", table)
        for table in ("collision", "vehicle", "casualty")
    }
    from_historic = build_curated(tables["collision"], tables["vehicle"], tables["casualty"])
    for table in ("collision", "vehicle"):
        for historic in HISTORIC_TWINS.values():
            if historic in tables[table]:
                tables[table][historic] = -1
    tables["collision"]["special_conditions_at_site"] = -1  # as in rows collected under the 2024 specification
    from_2024 = build_curated(tables["collision"], tables["vehicle"], tables["casualty"])
    pd.testing.assert_frame_equal(from_historic, from_2024)
    assert from_historic["carriageway_hazards"].tolist()[0] == 13  # historic hazard 0 + special condition 4


def test_reporting_columns_keep_dfts_values_on_the_labels_side(shared_data):
    """Real 2023 rows in the 2024 specification: how each collision's severity was reported, and DfT's
    adjusted severities, reach the curated table as published; a missing probability (-1) becomes NaN."""
    folder = shared_data / "wpatke__crossroads-uk"
    tables = {
        table: read_table(folder / f"dft-road-casualty-statistics-{table}-2023.csv", table)
        for table in ("collision", "vehicle", "casualty")
    }
    tables["collision"].loc[0, "collision_adjusted_severity_slight"] = -1
    curated = build_curated(tables["collision"], tables["vehicle"], tables["casualty"])
    raw = tables["collision"]
    assert curated["collision_injury_based"].tolist() == raw["collision_injury_based"].tolist()
    serious = "collision_adjusted_severity_serious"
    assert curated[serious].tolist() == raw[serious].tolist()
    slight = curated["collision_adjusted_severity_slight"]
    assert np.isnan(slight.iloc[0])
    assert slight.iloc[1:].tolist() == raw["collision_adjusted_severity_slight"][1:].tolist()
    # DfT's fatal row carries 0 for both; its serious row 1 and 0; slight rows the two probabilities.
    severity = curated["collision_severity"]
    assert (curated.loc[severity == 1, serious] == 0).all() and (curated.loc[severity == 2, serious] == 1).all()


def test_leakage_and_personal_columns_never_change_the_output(tmp_path, synthetic):
    collisions, vehicles, casualties = _canonical(synthetic, 2023, tmp_path)
    expected = build_curated(collisions, vehicles, casualties)
    rng = np.random.default_rng(0)
    perturbed = []
    for frame in (collisions, vehicles, casualties):
        for column in [*LEAKAGE_COLUMNS, *PERSONAL_COLUMNS]:
            if column in frame:
                values = frame[column].to_numpy()
                frame[column] = rng.permutation(values) if values.dtype.kind != "i" else rng.integers(-1, 9, len(frame))
                perturbed.append(column)
    assert set(perturbed) == set(LEAKAGE_COLUMNS) | set(PERSONAL_COLUMNS)
    kept = IDENTITY_COLUMNS + FEATURE_COLUMNS + CONTEXT_COLUMNS
    pd.testing.assert_frame_equal(build_curated(collisions, vehicles, casualties)[kept], expected[kept])


def test_excluded_columns_are_real_columns_and_never_features():
    canonical = set().union(*(set(columns) for columns in SCHEMA.values()))
    assert set(LEAKAGE_COLUMNS) <= canonical
    assert set(PERSONAL_COLUMNS) <= canonical
    # Leakage columns reach the curated table only on the labels side, which no model reads.
    assert (set(LEAKAGE_COLUMNS) | set(PERSONAL_COLUMNS)) & set(CURATED_COLUMNS) == set(REPORTING_COLUMNS)
    assert set(REPORTING_COLUMNS) <= set(LABEL_COLUMNS) and set(TARGET_COLUMNS) <= set(LABEL_COLUMNS)
    assert all(reason.strip() for reason in LEAKAGE_COLUMNS.values())
    assert FEATURE_COLUMNS == CATEGORICAL_FEATURES + NUMERIC_FEATURES
    assert not (set(LABEL_COLUMNS) | set(LEAKAGE_COLUMNS)) & set(FEATURE_COLUMNS)
    assert set(CURATED_DTYPES) == set(CURATED_COLUMNS)


def test_missing_and_unknown_codes_become_na(tmp_path, synthetic):
    collisions, vehicles, casualties = _canonical(synthetic, 2023, tmp_path)
    edits = {"weather_conditions": 9, "speed_limit": 99, "road_type": -1, "urban_or_rural_area": 3,
             "light_conditions": -1, "junction_detail_historic": -1, "junction_detail": 99}  # fmt: skip
    for column, code in edits.items():
        collisions.loc[:9, column] = code
    collisions.loc[:4, "time"] = pd.NA
    collisions.loc[:9, "local_authority_highway"] = "-1"
    curated = build_curated(collisions, vehicles, casualties)
    for column in ("weather_conditions", "speed_limit", "road_type", "urban_or_rural_area", "light_conditions",
                   "junction_detail", "local_authority_highway"):  # fmt: skip
        assert curated[column].iloc[:10].isna().all(), column
        assert curated[column].iloc[10:].notna().any(), column
    assert curated["hour"].iloc[:5].isna().all() and curated["hour"].iloc[5:].notna().all()


def test_curated_dtypes_survive_parquet_and_suit_the_model(tmp_path, synthetic):
    collisions, vehicles, casualties = _canonical(synthetic, 2023, tmp_path)
    curated = build_curated(collisions, vehicles, casualties)
    assert list(curated.columns) == CURATED_COLUMNS
    assert {column: str(dtype) for column, dtype in curated.dtypes.items()} == CURATED_DTYPES
    curated.to_parquet(tmp_path / "curated.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "curated.parquet"), curated)
    categorical = curated[CATEGORICAL_FEATURES]
    assert ((categorical.min() >= 0) & (categorical.max() < 255)).all()
    model = HistGradientBoostingClassifier(categorical_features=CATEGORICAL_FEATURES, max_iter=20)
    model.fit(curated[FEATURE_COLUMNS], curated["ksi"])
    assert model.predict_proba(curated[FEATURE_COLUMNS]).shape == (len(curated), 2)


def test_the_curated_schema_carries_the_metadata_pyarrow_writes_for_a_dataframe():
    """Ingestion writes the curated table from Arrow; pandas reads CURATED_DTYPES back only through this metadata."""
    empty = pd.DataFrame({column: pd.Series([], dtype=dtype) for column, dtype in CURATED_DTYPES.items()})
    written_by_pandas = pa.Schema.from_pandas(empty[CURATED_COLUMNS], preserve_index=False)
    expected = json.loads(written_by_pandas.metadata[b"pandas"])
    expected.pop("pandas_version")
    assert json.loads(CURATED_SCHEMA.metadata[b"pandas"]) == expected
    assert CURATED_SCHEMA.remove_metadata() == written_by_pandas.remove_metadata()


def test_vehicle_and_casualty_aggregates_count_the_child_rows(tmp_path, synthetic):
    collisions, vehicles, casualties = _canonical(synthetic, 2023, tmp_path)
    curated = build_curated(collisions, vehicles, casualties).set_index("collision_index")
    counts = vehicles.groupby("collision_index", observed=True).size()
    groups = curated[[column for column in curated if column.startswith("vehicles_")]].sum(axis=1)
    assert (groups == counts.reindex(curated.index)).all()
    motorcycle_codes = [code for code, text in LABELS["vehicle_type"].items() if "motorcycle" in text.lower()]
    motorcycles = vehicles[vehicles["vehicle_type"].isin(motorcycle_codes)].groupby("collision_index").size()
    assert (curated["vehicles_motorcycle"] == motorcycles.reindex(curated.index, fill_value=0)).all()
    pedestrian = casualties[casualties["casualty_class"] == 3]["collision_index"].unique()
    assert set(curated.index[curated["pedestrian_involved"] == 1]) == set(pedestrian)
    not_at_junction = curated["junction_detail"] == 0
    assert (curated.loc[not_at_junction, ["junction_control", "second_road_class"]] == 0).all().all()
