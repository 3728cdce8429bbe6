"""lib.data.synth and scripts/make_synthetic.py: synthetic files that look like DfT's and never pass for real."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import date

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score

from lib.config import ROOT
from lib.data.curated import build_curated
from lib.data.download import sha256_file
from lib.data.features import CATEGORICAL_FEATURES, FEATURE_COLUMNS
from lib.data.stats19 import load_year, read_table
from lib.data.synth import MARKER_FILE, Shift, generate, write_files
from lib.data.validate import findings_frame


@pytest.fixture(scope="module")
def two_years():
    """2018 and 2024 at 20,000 collisions each: enough for shares to within about a point."""
    return generate([2018, 2024], 20_000, seed=7)


def test_the_same_seed_writes_the_same_bytes(tmp_path):
    digests = {}
    for run, seed in (("a", 3), ("b", 3), ("c", 4)):
        files = write_files(generate([2022], 300, seed=seed), tmp_path / run)
        digests[run] = [sha256_file(path) for path in files]
    assert digests["a"] == digests["b"]
    assert digests["a"] != digests["c"]


def test_a_year_does_not_depend_on_the_other_years_drawn():
    alone = generate([2020], 500, seed=9).collisions
    together = generate([2019, 2020, 2021], 500, seed=9).collisions
    pd.testing.assert_frame_equal(alone, together[together["collision_year"] == 2020].reset_index(drop=True))


def test_indexes_are_text_and_recognisably_synthetic(tmp_path, shared_data):
    write_files(generate([2024], 100, seed=1), tmp_path)
    collisions = read_table(tmp_path / "dft-road-casualty-statistics-collision-2024.csv", "collision")
    assert collisions["collision_index"].str.fullmatch(r"2024SY\d{7}").all()
    assert (collisions["collision_ref_no"] == collisions["collision_index"].str.slice(4)).all()
    assert "SYNTHETIC" in (tmp_path / MARKER_FILE).read_text()
    # Real references start with the police force number; none has letters where 'SY' sits.
    real = read_table(shared_data / "mirror" / "road-accidents-safety-data"
                      / "dft-road-casualty-statistics-accident-2014.csv", "collision")  # fmt: skip
    assert real["collision_index"].str.slice(4, 6).str.fullmatch(r"\d\d").all()
    assert not real["collision_index"].str.contains("SY").any()


def test_tables_are_linked_and_consistent(tmp_path):
    write_files(generate([2021], 2000, seed=2), tmp_path)
    data = load_year(tmp_path.as_uri(), 2021, tmp_path / "cache", progress=False)
    checks = set(findings_frame(data.findings)["check"])
    assert checks <= {"columns absent in this era"}, checks  # no unknown code, no count or severity mismatch
    assert data.collisions["number_of_vehicles"].sum() == len(data.vehicles)
    assert data.collisions["number_of_casualties"].sum() == len(data.casualties)


def test_generated_tables_curate_like_the_files_written_from_them(tmp_path):
    tables = generate([2023, 2024], 500, seed=14)
    write_files(tables, tmp_path)
    for year in (2023, 2024):
        collisions, vehicles, casualties = (
            frame[frame["collision_year"] == year].reset_index(drop=True)
            for frame in (tables.collisions, tables.vehicles, tables.casualties)
        )
        direct = build_curated(collisions, vehicles, casualties)
        pd.testing.assert_frame_equal(direct, _curated(tmp_path, year))


def test_severity_shares_follow_the_published_series(two_years):
    collisions = two_years.collisions
    shares = pd.crosstab(collisions["collision_year"], collisions["collision_severity"], normalize="index")
    assert shares[1].between(0.010, 0.019).all()  # DfT: 1.36-1.53% fatal
    assert 0.172 < shares.loc[2018, 2] < 0.202  # DfT 2018: 18.73% serious
    assert 0.219 < shares.loc[2024, 2] < 0.249  # DfT 2024: 23.35% serious


def test_the_recorded_rise_is_forces_moving_to_injury_based_reporting(two_years):
    """Recorded severity rises only because forces move to injury-based reporting: the KSI share within
    each regime, and DfT's adjusted KSI share, stay where they were."""
    collisions = two_years.collisions.assign(
        ksi=two_years.collisions["collision_severity"] <= 2,
        adjusted_ksi=two_years.collisions["collision_adjusted_severity_serious"]
        + (two_years.collisions["collision_severity"] == 1),
    )
    by_year = collisions.groupby("collision_year")
    injury_based = by_year["collision_injury_based"].mean()
    assert injury_based[2018] < 0.55 and injury_based[2024] > 0.9
    # A force reports one way for a whole year.
    assert (collisions.groupby(["collision_year", "police_force"])["collision_injury_based"].nunique() == 1).all()
    ksi = by_year["ksi"].mean()
    assert ksi[2024] > ksi[2018] + 0.03
    within = collisions.groupby(["collision_injury_based", "collision_year"])["ksi"].mean().unstack()
    assert ((within[2024] - within[2018]).abs() < 0.015).all()
    assert within.loc[1, 2018] > within.loc[0, 2018] + 0.07  # severity reporting records fewer serious
    adjusted = by_year["adjusted_ksi"].mean()
    assert abs(adjusted[2024] - adjusted[2018]) < 0.01
    assert abs(adjusted[2018] - within.loc[1, 2018]) < 0.015  # adjusted: as if every force were injury-based


def test_severity_depends_on_known_risk_factors(two_years):
    curated_input = two_years.collisions
    vehicles = two_years.vehicles
    ksi = curated_input["collision_severity"] <= 2
    fast_rural = (curated_input["urban_or_rural_area"] == 2) & (curated_input["speed_limit"] >= 60)
    slow_urban = (curated_input["urban_or_rural_area"] == 1) & (curated_input["speed_limit"] <= 30)
    assert ksi[fast_rural].mean() > ksi[slow_urban].mean() + 0.08
    dark = curated_input["light_conditions"] != 1
    assert ksi[dark].mean() > ksi[~dark].mean()
    motorcycle = curated_input["collision_index"].isin(
        vehicles.loc[vehicles["vehicle_type"].isin([2, 3, 4, 5]), "collision_index"]
    )
    assert ksi[motorcycle].mean() > ksi[~motorcycle].mean() + 0.1


def test_a_model_learns_from_the_synthetic_risk_factors(tmp_path):
    tables = generate([2022, 2023], 8000, seed=12)
    write_files(tables, tmp_path)
    curated = {year: _curated(tmp_path, year) for year in (2022, 2023)}
    model = HistGradientBoostingClassifier(categorical_features=CATEGORICAL_FEATURES, max_iter=100, random_state=0)
    model.fit(curated[2022][FEATURE_COLUMNS], curated[2022]["ksi"])
    scores = model.predict_proba(curated[2023][FEATURE_COLUMNS])[:, 1]
    assert roc_auc_score(curated[2023]["ksi"], scores) > 0.65


def _curated(folder, year: int) -> pd.DataFrame:
    data = load_year(folder.as_uri(), year, folder / "cache", progress=False)
    return build_curated(data.collisions, data.vehicles, data.casualties)


def test_dates_and_times_follow_a_weekly_and_daily_pattern(two_years):
    collisions = two_years.collisions[two_years.collisions["collision_year"] == 2018]
    dates = collisions["date"]
    assert (dates.dt.year == 2018).all() and dates.dt.month.nunique() == 12
    assert ((dates.dt.dayofweek + 1) % 7 + 1 == collisions["day_of_week"]).all()
    hours = collisions["time"].str.slice(0, 2).astype(int)
    weekday = dates.dt.dayofweek < 5
    by_hour = hours[weekday].value_counts()
    assert by_hour[17] > 4 * by_hour[3] and by_hour[8] > 2 * by_hour[5]
    assert (dates.dt.dayofweek == 4).sum() > (dates.dt.dayofweek == 6).sum()  # Fridays busier than Sundays


def test_a_shift_window_moves_collisions_to_rural_60_at_night():
    shift = Shift(date(2024, 3, 1), date(2024, 3, 31), fraction=0.8)
    shifted = generate([2024], 20_000, seed=6, shift=shift).collisions
    plain = generate([2024], 20_000, seed=6).collisions
    dates = shifted["date"]
    inside = (dates >= "2024-03-01") & (dates <= "2024-03-31")

    def rural_60_night(frame):
        hour = frame["time"].str.slice(0, 2).astype(int)
        return (frame["urban_or_rural_area"] == 2) & (frame["speed_limit"] == 60) & ((hour >= 21) | (hour <= 4))

    assert rural_60_night(shifted[inside]).mean() > 0.7
    assert rural_60_night(shifted[~inside]).mean() < 0.1
    assert rural_60_night(plain[inside.to_numpy()]).mean() < 0.1
    ksi_inside = (shifted.loc[inside, "collision_severity"] <= 2).mean()
    assert ksi_inside > (plain.loc[inside.to_numpy(), "collision_severity"] <= 2).mean() + 0.05
    with pytest.raises(ValueError, match="ends"):
        Shift(date(2024, 3, 2), date(2024, 3, 1))


def test_the_script_writes_either_era_and_combined_files(tmp_path):
    script = ROOT / "scripts" / "make_synthetic.py"

    def run(*arguments):
        return subprocess.run([sys.executable, str(script), *arguments], cwd=ROOT, capture_output=True, text=True)

    accident = run("--years", "2020-2021", "--collisions-per-year", "50", "--era", "accident",
                   "--seed", "1", "--out", str(tmp_path / "accident"))  # fmt: skip
    assert accident.returncode == 0, accident.stderr
    names = sorted(path.name for path in (tmp_path / "accident").iterdir())
    expected = [f"dft-road-casualty-statistics-{table}-{year}.csv"
                for table in ("accident", "casualty", "vehicle") for year in (2020, 2021)]  # fmt: skip
    assert names == [MARKER_FILE, *expected]
    assert f"STATS19_BASE_URL={(tmp_path / 'accident').as_uri()}/" in accident.stdout
    combined = run("--years", "2016-2025", "--collisions-per-year", "20", "--combined", "--out", str(tmp_path / "all"))
    assert combined.returncode == 0, combined.stderr
    collisions = read_table(tmp_path / "all" / "dft-road-casualty-statistics-collision-1979-latest-published-year.csv",
                            "collision")  # fmt: skip
    assert sorted(collisions["collision_year"].unique()) == list(range(2016, 2026))
    bad = run("--years", "20x", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "--years" in bad.stderr


def test_national_size_generation_is_vectorised():
    """130,000 collisions (a national year) in seconds, not minutes; measured at about 1 s."""
    started = pd.Timestamp.now()
    tables = generate([2024], 130_000, seed=0)
    seconds = (pd.Timestamp.now() - started).total_seconds()
    assert len(tables.collisions) == 130_000
    assert seconds < 15, seconds
    assert re.fullmatch(r"2024SY0130000", tables.collisions["collision_index"].iloc[-1])
    assert np.isclose(len(tables.vehicles) / 130_000, 1.86, atol=0.05)  # DfT 2024: about 1.8 vehicles each
