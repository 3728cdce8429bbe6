"""lib.monitoring.label_drift: a KSI share that rose because forces moved to injury-based reporting is a
reporting change; one that rose within reporting regimes is label drift. Built on synthetic years whose
truth is known: severity as injury-based reporting records it never changes, only who reports that way
(lib.data.synth_risk), unless a `Shift` sends collisions to rural 60 mph roads at night."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import pytest

from lib.data import stats19, synth
from lib.data.curated import build_curated
from lib.data.features import REPORTING_COLUMNS
from lib.data.synth_risk import injury_based
from lib.monitoring import label_drift, monitor, retraining
from lib.store import db
from lib.store.metrics import LABELS

TRAINING_YEARS, MONITORED_YEAR = (2019, 2020, 2021), 2024
# Whole years, so that the season (darker months have more KSI collisions) weighs the same on both sides.
SHIFT = synth.Shift(date(2024, 1, 1), date(2024, 12, 31), fraction=0.3)
QUARTERS = [(date(2024, 1, 1), date(2024, 3, 31)), (date(2024, 4, 1), date(2024, 6, 30)),
            (date(2024, 7, 1), date(2024, 9, 30)), (date(2024, 10, 1), date(2024, 12, 31))]  # fmt: skip


def _curated(tables: synth.SyntheticTables) -> pd.DataFrame:
    return build_curated(tables.collisions, tables.vehicles, tables.casualties)


def _between(frame: pd.DataFrame, first: date, last: date) -> pd.DataFrame:
    day = frame["date"].dt.normalize()
    return frame[(day >= pd.Timestamp(first)) & (day <= pd.Timestamp(last))]


@pytest.fixture(scope="module")
def years() -> pd.DataFrame:
    """The training years and the monitored year, 30,000 collisions each, curated."""
    return _curated(synth.generate([*TRAINING_YEARS, MONITORED_YEAR], 30_000, seed=5))


@pytest.fixture(scope="module")
def reference(years) -> pd.DataFrame:
    """As 02_train logs it: 5,000 collisions of the training years."""
    return years[years["collision_year"].isin(TRAINING_YEARS)].sample(5_000, random_state=0)


@pytest.fixture(scope="module")
def window(years) -> pd.DataFrame:
    return years[years["collision_year"] == MONITORED_YEAR]


@pytest.fixture(scope="module")
def shifted_window() -> pd.DataFrame:
    """The monitored year drawn with 30% of the collisions moved to rural 60 mph roads at night."""
    return _curated(synth.generate([MONITORED_YEAR], 30_000, seed=5, shift=SHIFT))


def test_a_move_to_injury_based_reporting_alone_is_a_reporting_change(window, reference):
    drift = label_drift.compare_window(window, reference)
    assert not drift.by_force
    assert drift.window.share_of("injury_based") > drift.reference.share_of("injury_based") + 0.25
    # The raw share rose beyond chance, and the regime mix accounts for it: nothing moved within regimes,
    # nor in DfT's adjusted share.
    assert drift.change > label_drift.MIN_CHANGE and drift.change_z > label_drift.Z_THRESHOLD
    assert drift.mix_change > label_drift.MIN_CHANGE and drift.mix_z > label_drift.Z_THRESHOLD
    assert abs(drift.within_change) < 0.01 and abs(drift.within_z) < 2
    assert abs(drift.adjusted_change) < 0.01
    assert drift.verdict == "reporting change"
    assert "A reporting change, not decay" in drift.sentence()


def test_a_real_severity_rise_is_label_drift_despite_the_reporting_change(shifted_window, reference):
    drift = label_drift.compare_window(shifted_window, reference)
    assert drift.within_change > 0.04 and drift.within_z > label_drift.Z_THRESHOLD
    assert drift.adjusted_change > 0.04 and drift.adjusted_z > label_drift.Z_THRESHOLD
    assert drift.verdict == "label drift"


def test_collisions_of_the_training_years_have_no_change(years, reference):
    training = years[years["collision_year"].isin(TRAINING_YEARS)].drop(index=reference.index)
    same = label_drift.compare_window(training.sample(5_000, random_state=1), reference)
    assert same.verdict == "no change"
    assert abs(same.change) < 0.01 and abs(same.within_change) < 0.01


def test_files_that_do_not_say_the_regime_are_split_by_police_force(years, reference, tmp_path):
    """Older-era files carry no regime: the comparison falls back to each police force, which can tell a
    change in which forces report from a change within them, though not a force's move to injury-based
    reporting from a real rise."""
    tables = synth.generate([2021], 30_000, seed=5)
    synth.write_files(tables, tmp_path, era="accident")
    read = stats19.load_year(tmp_path.as_uri(), 2021, tmp_path / "cache", progress=False)
    accident_era = build_curated(read.collisions, read.vehicles, read.casualties)
    assert accident_era[REPORTING_COLUMNS].isna().all().all()
    old_reference = reference.drop(columns=REPORTING_COLUMNS)

    # The forces injury-based in 2021 record more serious collisions: a window of only those forces
    # has a higher KSI share, which is their mix, not a change within any force.
    reported_by_injury = injury_based(accident_era["police_force"].astype(int).to_numpy(), 2021)
    only_those = label_drift.compare_window(accident_era[reported_by_injury], old_reference)
    assert only_those.by_force and only_those.change > label_drift.MIN_CHANGE
    assert only_those.verdict == "police-force mix"
    assert abs(only_those.within_change) < label_drift.MIN_CHANGE

    # Forces that moved to injury-based reporting since training raise their own share: without the
    # regime column that is a change within forces, and it is reported as label drift.
    monitored_year = years[years["collision_year"] == MONITORED_YEAR].drop(columns=REPORTING_COLUMNS)
    moved = label_drift.compare_window(monitored_year, old_reference)
    assert moved.by_force and moved.verdict == "label drift"
    assert "The files do not say how severity was reported" in moved.sentence()
    assert "a force's move to injury-based reporting, which these files do not record" in moved.sentence()


def test_stored_windows_read_back_and_pool_as_one(window, reference):
    stored = [label_drift.compare_window(_between(window, *span), reference).metrics() for span in reversed(QUARTERS)]
    pooled = label_drift.pooled(stored)
    whole = label_drift.compare_window(window, reference)
    assert pooled.windows == 4 and pooled.reference == whole.reference
    assert (pooled.window.regimes, pooled.window.forces) == (whole.window.regimes, whole.window.forces)
    assert pooled.window.adjusted_ksi == pytest.approx(whole.window.adjusted_ksi)
    assert pooled.verdict == whole.verdict
    assert (pooled.change, pooled.within_change) == pytest.approx((whole.change, whole.within_change))
    assert label_drift.pooled([]) is None


def _with_predictions(frame: pd.DataFrame, p_ksi: pd.Series | float) -> pd.DataFrame:
    return frame.assign(p_ksi=p_ksi)


def test_only_label_drift_the_model_did_not_foresee_calls_for_retraining(window, shifted_window, reference):
    def decide(shift: label_drift.LabelDrift) -> retraining.RetrainingDecision:
        return retraining.decide_retraining(
            "7", date(2024, 6, 1), [0.5], 0.05, drift_rows=2_000, champion_pr_auc=0.5, label_drift=shift
        )

    expected_before = reference["ksi"].mean()
    # A model that expects the training share: the reporting change is no reason, the real rise is.
    reporting = decide(label_drift.compare_window(_with_predictions(window, expected_before), reference))
    assert not reporting.recommended and reporting.label_verdict == "reporting change"
    assert "A reporting change, not decay: by itself no reason to retrain" in reporting.summary()
    unforeseen = decide(label_drift.compare_window(_with_predictions(shifted_window, expected_before), reference))
    assert unforeseen.recommended and unforeseen.label_verdict == "label drift"
    assert "beyond what the model expected" in unforeseen.reasons[0]
    # A model whose P(KSI) rose with the shifted roads (here: each collision's own kind of road) foresaw it.
    rural_60 = (shifted_window["urban_or_rural_area"] == 2) & (shifted_window["speed_limit"] == 60)
    followed = shifted_window.groupby(rural_60)["ksi"].transform("mean")
    foreseen = decide(label_drift.compare_window(_with_predictions(shifted_window, followed), reference))
    assert not foreseen.recommended and foreseen.label_verdict == "label drift"
    assert "the model's P(KSI) followed" in foreseen.summary()


def test_the_decision_pools_the_stored_labelled_windows_of_its_model(fresh_database, window, reference):
    quarters = [_between(window, *span) for span in QUARTERS]
    with db.session(fresh_database) as conn:
        for rows, (first, last) in zip(quarters, QUARTERS, strict=True):
            shift = label_drift.compare_window(rows, reference)
            monitor.store_metrics(conn, first, last, "3", LABELS, shift.metrics(), last + timedelta(days=30))
        # Another version's window stays out, and so does the last quarter: its labels arrive on 30 January.
        monitor.store_metrics(conn, *QUARTERS[0], "4", LABELS, label_drift.compare_window(quarters[0], reference)
                              .metrics(), QUARTERS[0][1] + timedelta(days=30))  # fmt: skip
        decision = retraining.decide_from_metrics(conn, "3", date(2025, 1, 29), 0.5, retraining.RetrainingPolicy())
    first_three = label_drift.compare_window(pd.concat(quarters[:3]), reference)
    assert decision.label_verdict == first_three.verdict == "reporting change"
    assert decision.label_drift == label_drift.compare(first_three.window, first_three.reference, windows=3).sentence()
    assert f"over {first_three.window.rows:,} collisions of 3 labelled windows" in decision.summary()
    assert not decision.recommended
