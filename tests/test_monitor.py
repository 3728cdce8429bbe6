"""Monitoring: drift where it is, quality only from arrived labels, idempotent storage, the dashboard."""

from __future__ import annotations

import html
import json
import os
import re
import uuid
from dataclasses import replace
from datetime import date, timedelta

import mlflow
import numpy as np
import pandas as pd
import psycopg2
import psycopg2.extras
import pytest
from plotly.offline import get_plotlyjs
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from lib.data import stats19, synth
from lib.data.curated import CURATED, build_curated
from lib.data.features import CATEGORICAL_FEATURES, FEATURE_COLUMNS, NUMERIC_FEATURES
from lib.data.lake import Lake
from lib.modeling import evaluation
from lib.modeling.candidates import fit_gbm
from lib.modeling.mlflow_model import log_model, log_reference, reference_sample
from lib.modeling.split import Split
from lib.monitoring import evidently_report, html_packing, monitor, retraining
from lib.monitoring.dashboard import mlflow_run_url, write_dashboard
from lib.runner import executor, run_result
from lib.store import db
from lib.store.metrics import DRIFT_ROWS_METRIC, DRIFT_SHARE_METRIC, PR_AUC_METRIC, ROC_AUC_METRIC

WINDOW_START, WINDOW_END = date(2024, 3, 4), date(2024, 3, 10)
DELAY = 30
SHIFT_START, SHIFT_END = date(2024, 3, 4), date(2024, 3, 10)


def scored_collisions(first: date, days: int, per_day: int = 60, seed: int = 0) -> pd.DataFrame:
    """Prediction rows joined with the truth; P(KSI) is informative but imperfect."""
    rng = np.random.default_rng(seed)
    n = days * per_day
    severity = rng.choice([1, 2, 3], size=n, p=[0.03, 0.22, 0.75])
    ksi = (severity <= 2).astype(int)
    p_ksi = np.clip(0.25 + 0.3 * (ksi - 0.25) + rng.normal(0, 0.2, n), 0.001, 0.999)
    predicted = np.where(p_ksi > 0.5, 2, 3)
    predicted[p_ksi > 0.8] = 1
    return pd.DataFrame(
        {
            "collision_index": [f"SYNTH{i:06d}" for i in range(n)],
            "collision_date": [first + timedelta(days=int(i // per_day)) for i in range(n)],
            "p_fatal": 0.1 * p_ksi,
            "p_serious": 0.9 * p_ksi,
            "p_slight": 1 - p_ksi,
            "p_ksi": p_ksi,
            "predicted_severity": predicted,
            "ksi_alert": p_ksi >= 0.4,
            "alert_threshold": 0.4,
            "collision_severity": severity,
            "ksi": ksi,
        }
    )


def flip_labels(frame: pd.DataFrame, rows: pd.Series) -> pd.DataFrame:
    flipped = frame.copy()
    flipped.loc[rows, "ksi"] = 1 - flipped.loc[rows, "ksi"]
    flipped.loc[rows, "collision_severity"] = flipped.loc[rows, "collision_severity"].map({1: 3, 2: 3, 3: 2})
    return flipped


# -------------------------------------------------------------------------------------------- drift


@pytest.fixture(scope="module")
def synthetic_curated(tmp_path_factory) -> pd.DataFrame:
    """Two synthetic years read and curated as ingestion does; one March week is flooded with rural
    60 mph collisions at night."""
    folder = tmp_path_factory.mktemp("synthetic")
    tables = synth.generate([2023, 2024], 20_000, seed=1, shift=synth.Shift(SHIFT_START, SHIFT_END))
    synth.write_files(tables, folder)
    years = [stats19.load_year(folder.as_uri() + "/", year, folder / "cache", progress=False) for year in (2023, 2024)]
    return pd.concat([build_curated(y.collisions, y.vehicles, y.casualties) for y in years], ignore_index=True)


def with_predictions(frame: pd.DataFrame, model) -> pd.DataFrame:
    p_ksi = model.predict_proba(frame[FEATURE_COLUMNS].astype("float64").fillna(-1))[:, 1]
    return frame.assign(p_ksi=p_ksi, predicted_severity=np.where(p_ksi >= 0.3, 2, 3))


def test_drift_is_found_in_the_shifted_window_and_not_in_the_others(synthetic_curated, database_url, tmp_path):
    training = synthetic_curated[synthetic_curated["collision_year"] == 2023]
    model = make_pipeline(StandardScaler(), LogisticRegression())
    model.fit(training[FEATURE_COLUMNS].astype("float64").fillna(-1), training["ksi"])
    reference = with_predictions(training.sample(5_000, random_state=0), model)
    policy = retraining.RetrainingPolicy()
    results = {}
    for start in (SHIFT_START - timedelta(days=7), SHIFT_START, SHIFT_START + timedelta(days=7)):
        end = start + timedelta(days=6)
        dates = synthetic_curated["date"]
        window = with_predictions(
            synthetic_curated[(dates >= pd.Timestamp(start)) & (dates <= pd.Timestamp(end))], model
        )
        drift, snapshot = monitor.compute_drift(
            window, reference, CATEGORICAL_FEATURES, NUMERIC_FEATURES, policy.drift_share_threshold
        )
        with db.session(database_url) as conn:
            monitor.store_metrics(conn, start, end, "1", "drift", drift.metrics(), end)
            decision = retraining.decide_from_metrics(conn, "1", end, champion_pr_auc=None, policy=policy)
        heading = evidently_report.ReportHeading(
            evidently_report.DRIFT, start, end, "accident_severity", "1", f"{len(window):,} collisions"
        )
        results[start] = (drift, decision, evidently_report.save_report(snapshot, tmp_path, heading))

    shifted, decision, report = results.pop(SHIFT_START)
    assert shifted.share_drifted_features > policy.drift_share_threshold and decision.recommended
    assert decision.drift_share == shifted.share_drifted_features and decision.drift_rows == shifted.rows
    assert shifted.rows >= policy.min_drift_rows
    drifted = {name for name, flag in shifted.feature_drifted.items() if flag}
    assert {"speed_limit", "urban_or_rural_area", "light_conditions", "hour"} <= drifted
    assert shifted.p_ksi_drifted
    assert shifted.predicted_shares["serious"] > 2 * shifted.reference_predicted_shares["serious"]
    for drift, decision, _ in results.values():
        assert drift.share_drifted_features < policy.drift_share_threshold and not decision.recommended
        assert not {"speed_limit", "urban_or_rural_area"} & {n for n, flag in drift.feature_drifted.items() if flag}
        assert drift.p_ksi_score < shifted.p_ksi_score / 5
    assert report.name == "drift_2024-03-04_2024-03-10_model-1.html"
    assert_light_report(report, "Drift of the features and predictions: 2024-03-04..2024-03-10, model 1")
    assert "speed_limit" in json.dumps(report_data(report))
    assert sorted(p.name for p in report.parent.glob("*.html")) == [
        f"drift_{start}_{start + timedelta(days=6)}_model-1.html"
        for start in (SHIFT_START - timedelta(days=7), SHIFT_START, SHIFT_START + timedelta(days=7))
    ]


def test_drift_without_drawing_runs_the_report_s_own_tests(synthetic_curated):
    training = synthetic_curated[synthetic_curated["collision_year"] == 2023]
    model = make_pipeline(StandardScaler(), LogisticRegression())
    model.fit(training[FEATURE_COLUMNS].astype("float64").fillna(-1), training["ksi"])
    reference = with_predictions(training.sample(5_000, random_state=0), model)
    dates = synthetic_curated["date"]
    for start, rows in ((SHIFT_START, None), (SHIFT_START + timedelta(days=7), 400)):  # distances; p-values
        days = (dates >= pd.Timestamp(start)) & (dates <= pd.Timestamp(start + timedelta(days=6)))
        window = with_predictions(synthetic_curated[days], model).head(rows)
        base = reference.head(800) if rows else reference
        drawn, snapshot = monitor.compute_drift(window, base, CATEGORICAL_FEATURES, NUMERIC_FEATURES)
        undrawn, none = monitor.compute_drift(window, base, CATEGORICAL_FEATURES, NUMERIC_FEATURES, draw=False)
        assert none is None and undrawn == drawn
        (count,) = [m["value"] for m in snapshot.dict()["metrics"] if m["config"]["type"].endswith("ColumnsCount")]
        assert (count["count"], count["share"]) == (drawn.drifted_features, drawn.share_drifted_features)
    assert drawn.feature_methods["speed_limit"] != "wasserstein"  # the second window ran the small-sample tests


def report_data(report) -> dict:
    """The data a light report hands to Evidently's bundle."""
    packed = re.search(r"<script type='application/octet-stream' id='report-data'>([^<]+)</script>", report.read_text())
    return evidently_report.unpack(packed.group(1))


def assert_light_report(report, title: str) -> None:
    """The report names what it covers and loads Evidently's bundle from the one shared copy."""
    page = report.read_text()
    assert f"<title>{title}</title>" in page and f"<h1>{title}</h1>" in page
    (bundle,) = re.findall(r"<script src='([^']+)'>", page)
    shared = report.parent / bundle
    assert shared.parent.name == "assets" and shared.stat().st_size < 2_000_000
    packed = re.fullmatch(r'window.evidentlyBundle = "([^"]+)";\n', shared.read_text()).group(1)
    assert "drawDashboard" in html_packing.unpack(packed)  # Evidently's 3.5 MB bundle itself
    assert len(page) < 200_000 and "drawDashboard" in page


# ------------------------------------------------------------------------------------------ quality


def test_quality_waits_until_every_label_of_the_window_has_arrived():
    scored = scored_collisions(WINDOW_START, 60)
    known_at = WINDOW_END + timedelta(days=DELAY)
    assert monitor.compute_quality(scored, WINDOW_START, WINDOW_END, known_at - timedelta(days=1), DELAY) is None
    quality = monitor.compute_quality(scored, WINDOW_START, WINDOW_END, known_at, DELAY)
    assert quality.known_at == known_at
    assert quality.labelled_rows == 7 * 60


def test_quality_never_reads_labels_that_have_not_arrived():
    scored = scored_collisions(WINDOW_START, 60)
    as_of = WINDOW_END + timedelta(days=DELAY + 3)
    arrival = pd.to_datetime(scored["collision_date"]) + pd.Timedelta(days=DELAY)
    not_arrived = arrival > pd.Timestamp(as_of)
    assert not_arrived.sum() > 1000

    before = monitor.compute_quality(scored, WINDOW_START, WINDOW_END, as_of, DELAY)
    after = monitor.compute_quality(flip_labels(scored, not_arrived), WINDOW_START, WINDOW_END, as_of, DELAY)
    assert after == before
    # Labels that have arrived but belong to later days are not the window's either.
    assert before.labelled_rows == 7 * 60 < (~not_arrived).sum()
    # The same flip on labels of the window does move the metrics: the comparison above can fail.
    in_window = pd.to_datetime(scored["collision_date"]) <= pd.Timestamp(WINDOW_END)
    assert monitor.compute_quality(flip_labels(scored, in_window), WINDOW_START, WINDOW_END, as_of, DELAY) != before


def test_quality_metrics_match_their_definitions():
    scored = scored_collisions(WINDOW_START, 7, seed=3)
    quality = monitor.compute_quality(scored, WINDOW_START, WINDOW_END, date(2025, 1, 1), DELAY)
    ksi, alert = scored["ksi"], scored["ksi_alert"].astype(int)
    values = quality.values
    assert values["ksi_recall"] == pytest.approx(((ksi == 1) & (alert == 1)).sum() / (ksi == 1).sum())
    assert values["ksi_precision"] == pytest.approx(((ksi == 1) & (alert == 1)).sum() / (alert == 1).sum())
    assert values["ksi_brier"] == pytest.approx(((scored["p_ksi"] - ksi) ** 2).mean())
    assert 0.6 < values["ksi_roc_auc"] < 1.0
    assert ksi.mean() < values["ksi_pr_auc"] < 1.0
    # The true severity shares (label drift), stored beside the predicted ones.
    metrics = quality.metrics()
    assert metrics["quality.actual_share.serious"] == pytest.approx((scored["collision_severity"] == 2).mean())
    assert sum(metrics[f"quality.actual_share.{name}"] for name in ("fatal", "serious", "slight")) == pytest.approx(1)

    perfect = scored.assign(
        p_ksi=scored["ksi"] * 0.9 + 0.05, ksi_alert=scored["ksi"] == 1, predicted_severity=scored["collision_severity"]
    )
    best = monitor.compute_quality(perfect, WINDOW_START, WINDOW_END, date(2025, 1, 1), DELAY)
    perfect_scores = ("ksi_roc_auc", "ksi_pr_auc", "ksi_recall", "ksi_precision", "macro_f1")
    assert {name: best.values[name] for name in perfect_scores} == dict.fromkeys(perfect_scores, 1)


def test_a_labelled_window_gets_a_light_classification_report_naming_what_it_covers(tmp_path):
    scored = scored_collisions(WINDOW_START, 7, seed=3)
    snapshot = monitor.classification_snapshot(scored, alert_threshold=0.4)
    heading = evidently_report.ReportHeading(
        evidently_report.QUALITY, WINDOW_START, WINDOW_END, "accident_severity", "3", f"{len(scored)} collisions"
    )
    report = evidently_report.save_report(snapshot, tmp_path, heading)
    assert report.name == "quality_2024-03-04_2024-03-10_model-3.html"
    assert_light_report(report, f"{evidently_report.KIND_TITLES['quality']}: 2024-03-04..2024-03-10, model 3")
    assert f"{len(scored)} collisions" in report.read_text()
    # Evidently's confusion matrix counts the alerts at the threshold, as the stored recall does.
    alerts = scored["p_ksi"] >= 0.4
    true_positives = int((alerts & (scored["ksi"] == 1)).sum())
    assert f"[{int(((~alerts) & (scored['ksi'] == 1)).sum())},{true_positives}]" in json.dumps(
        report_data(report), separators=(",", ":")
    )


def test_a_window_with_one_class_gets_undefined_metrics_not_a_crash():
    scored = scored_collisions(WINDOW_START, 7).assign(ksi=0, collision_severity=3, ksi_alert=False)
    quality = monitor.compute_quality(scored, WINDOW_START, WINDOW_END, date(2025, 1, 1), DELAY)
    values = quality.values
    assert values["ksi_roc_auc"] is None and values["ksi_pr_auc"] is None
    assert values["ksi_recall"] is None and values["ksi_precision"] is None
    assert values["ksi_brier"] == pytest.approx((scored["p_ksi"] ** 2).mean())
    assert quality.labelled_rows == len(scored)
    # Evidently's classification report cannot be drawn for it (its per-class table raises a KeyError).
    assert monitor.classification_snapshot(scored, alert_threshold=0.4) is None


# ----------------------------------------------------------------------------------------- decision


@pytest.mark.parametrize(
    ("pr_aucs", "drift_share", "drift_rows", "champion", "recommended"),
    [
        ([0.50, 0.52, 0.49], 0.1, 2_000, 0.55, False),  # quality holds, little drift
        ([0.30, 0.35, 0.40, 0.60], 0.1, 2_000, 0.55, True),  # mean 0.41 over 4 windows < 0.8 x 0.55 = 0.44
        ([0.50], 0.6, 2_000, 0.55, True),  # drift alone
        ([0.50], 0.6, 299, 0.55, False),  # the same drift in too small a window
        ([0.30], 0.6, 14, 0.55, True),  # quality still counts when the window is small
        ([0.50], 0.6, None, 0.55, True),  # drift of a window of unknown size counts
        ([], None, None, 0.55, False),  # nothing known yet
        ([0.10], 0.1, 2_000, None, False),  # no champion score to compare with
    ],
)
def test_retraining_is_recommended_on_low_quality_or_wide_drift(
    pr_aucs, drift_share, drift_rows, champion, recommended
):
    policy = retraining.RetrainingPolicy(4, quality_fraction=0.8, drift_share_threshold=0.5, min_drift_rows=300)
    decision = retraining.decide_retraining(
        "7", date(2024, 5, 1), pr_aucs, drift_share, drift_rows=drift_rows, champion_pr_auc=champion, policy=policy
    )
    assert decision.recommended is recommended
    assert len(decision.reasons) == (1 if recommended else 0)
    assert decision.summary().startswith("Retraining recommended" if recommended else "No retraining needed")
    json.dumps(decision.details())


def test_the_decision_says_when_a_window_was_too_small_for_its_drift_to_count():
    decision = retraining.decide_retraining("7", date(2024, 5, 1), [], 0.79, drift_rows=14, champion_pr_auc=0.55)
    assert not decision.recommended and decision.drift_too_small
    assert "14 collisions are fewer than the 300" in decision.summary()


def test_small_windows_drift_by_chance_and_windows_of_the_minimum_size_do_not(synthetic_curated):
    """The default minimum window size is where chance stops looking like drift: unshifted windows
    of 50 collisions drift more than the threshold, windows of `min_drift_rows` stay well below it."""
    training = synthetic_curated[synthetic_curated["collision_year"] == 2023]
    model = make_pipeline(StandardScaler(), LogisticRegression())
    model.fit(training[FEATURE_COLUMNS].astype("float64").fillna(-1), training["ksi"])
    reference = with_predictions(training.sample(5_000, random_state=0), model)
    dates = synthetic_curated["date"]
    unshifted = synthetic_curated[(dates >= "2024-04-01") & (dates <= "2024-12-31")]
    policy = retraining.RetrainingPolicy()

    def drift_shares(rows: int) -> list[float]:
        return [
            monitor.compute_drift(
                with_predictions(unshifted.sample(rows, random_state=seed), model),
                reference,
                CATEGORICAL_FEATURES,
                NUMERIC_FEATURES,
            )[0].share_drifted_features
            for seed in range(4)
        ]

    assert min(drift_shares(50)) > policy.drift_share_threshold
    assert max(drift_shares(policy.min_drift_rows)) < policy.drift_share_threshold / 1.5


def test_the_decision_averages_only_the_last_windows():
    policy = retraining.RetrainingPolicy(quality_windows=2, quality_fraction=0.8)
    decision = retraining.decide_retraining(
        "7", date(2024, 5, 1), [0.6, 0.6, 0.1, 0.1], 0.0, drift_rows=2_000, champion_pr_auc=0.6, policy=policy
    )
    assert decision.mean_pr_auc == pytest.approx(0.6)
    assert not decision.recommended


# --------------------------------------------------------------------------------------- PostgreSQL


@pytest.fixture
def database_url(fresh_database):
    return fresh_database


def _count(conn, query: str, params: tuple) -> int:
    with conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchone()[0]


def test_recomputing_a_window_replaces_its_rows(database_url):
    version = "7"
    quality = monitor.compute_quality(
        scored_collisions(WINDOW_START, 7), WINDOW_START, WINDOW_END, date(2025, 1, 1), DELAY
    )
    drift_metrics = {"drift.share_drifted_features": 0.2, "drift.feature_score.speed_limit": 0.05}
    count = "SELECT count(*) FROM monitoring_metrics WHERE model_version = %s"
    for share in (0.2, 0.4):
        with db.session(database_url) as conn:
            monitor.store_metrics(
                conn, WINDOW_START, WINDOW_END, version, "quality", quality.metrics(), quality.known_at
            )
            monitor.store_metrics(
                conn,
                WINDOW_START,
                WINDOW_END,
                version,
                "drift",
                {**drift_metrics, "drift.share_drifted_features": share},
                WINDOW_END,
            )
    with db.session(database_url) as conn:
        assert _count(conn, count, (version,)) == len(quality.metrics()) + len(drift_metrics)
        rows = db.fetch_dicts(
            conn, "SELECT metric, value, known_at FROM monitoring_metrics WHERE model_version = %s", (version,)
        )
    values = {row["metric"]: row for row in rows}
    assert values["drift.share_drifted_features"]["value"] == 0.4
    assert values["quality.ksi_roc_auc"]["known_at"] == WINDOW_END + timedelta(days=DELAY)
    # Rewriting drift alone leaves the window's quality rows in place.
    with db.session(database_url) as conn:
        monitor.store_metrics(conn, WINDOW_START, WINDOW_END, version, "drift", drift_metrics, WINDOW_END)
        assert _count(conn, count + " AND metric LIKE 'quality.%%'", (version,)) == len(quality.metrics())
        with pytest.raises(monitor.MonitoringError, match="quality.ksi_pr_auc"):
            monitor.store_metrics(
                conn, WINDOW_START, WINDOW_END, version, "drift", {"quality.ksi_pr_auc": 1}, WINDOW_END
            )


def test_only_windows_whose_labels_have_all_arrived_get_quality_rows(database_url):
    version = "7"
    scored = scored_collisions(date(2024, 1, 1), 70)
    windows = [(date(2024, 1, 1) + timedelta(days=7 * k), date(2024, 1, 7) + timedelta(days=7 * k)) for k in range(9)]
    as_of = date(2024, 3, 10)  # the labels of the window ending 4 February arrive on 5 March; the next on 12 March
    with db.session(database_url) as conn:
        for start, end in windows:
            monitor.store_metrics(conn, start, end, version, "drift", {DRIFT_SHARE_METRIC: 0.1}, end)
        this_week = as_of - timedelta(days=6)
        due = monitor.windows_awaiting_quality(conn, as_of, DELAY, completed_since=this_week)
        assert [end for _, end, _ in due] == [end for _, end in windows[:5]]
        for start, end, model_version in due:
            quality = monitor.compute_quality(scored, start, end, as_of, DELAY)
            monitor.store_metrics(conn, start, end, model_version, "quality", quality.metrics(), quality.known_at)
        # Computing every window anyway stores nothing for the later ones: their labels are still due.
        assert [monitor.compute_quality(scored, start, end, as_of, DELAY) for start, end in windows[5:]] == [None] * 4
        # A rerun of the same week evaluates again only the window completed during it (on 5 March).
        assert monitor.windows_awaiting_quality(conn, as_of, DELAY, this_week) == [(*windows[4], version)]
        next_week = monitor.windows_awaiting_quality(conn, as_of + timedelta(days=7), DELAY, as_of + timedelta(days=1))
        assert next_week == [(*windows[5], version)]
        rows = db.fetch_dicts(
            conn,
            "SELECT window_end, max(known_at) AS known_at FROM monitoring_metrics"
            " WHERE metric LIKE 'quality.%%' GROUP BY window_end",
            (),
        )
        assert sorted(row["window_end"] for row in rows) == [end for _, end in windows[:5]]
        assert all(row["known_at"] == row["window_end"] + timedelta(days=DELAY) <= as_of for row in rows)

        earlier = retraining.decide_from_metrics(conn, version, date(2024, 2, 10), champion_pr_auc=0.5)
        later = retraining.decide_from_metrics(conn, version, as_of, champion_pr_auc=0.5)
    assert len(earlier.recent_pr_aucs) == 1  # only the first window's labels were all known on 10 February
    assert len(later.recent_pr_aucs) == 4  # the last 4 of the 5 labelled windows


def test_the_decision_is_recorded_once_per_simulated_day(database_url):
    version = "7"
    day = date(2024, 4, 1)
    low = retraining.decide_retraining(version, day, [0.2, 0.25], 0.1, drift_rows=2_000, champion_pr_auc=0.5)
    fine = retraining.decide_retraining(version, day, [0.5, 0.5], 0.1, drift_rows=2_000, champion_pr_auc=0.5)
    with db.session(database_url) as conn:
        retraining.record_decision(conn, low, "accident_severity")
        retraining.record_decision(conn, fine, "accident_severity")
        events = db.fetch_dicts(
            conn, "SELECT event, details, simulated_date FROM model_events WHERE model_version = %s", (version,)
        )
    assert [e["event"] for e in events] == ["retraining_not_needed"]
    assert events[0]["details"]["mean_pr_auc"] == pytest.approx(0.5)
    assert events[0]["simulated_date"] == date(2024, 4, 1)


# ---------------------------------------------------------------------------------------- dashboard


def _figure(page: str, div_id: str = "monitoring-dashboard") -> tuple[list[dict], dict]:
    """The traces and layout of one figure, from the JSON the page hands to plotly."""
    match = re.search(rf"<script type='application/json' data-plotly-figure='{div_id}'>(.*?)</script>", page)
    assert match, f"no plotly figure {div_id} in the page"
    figure = json.loads(match.group(1))
    return figure["data"], figure["layout"]


def _tiles(page: str) -> dict[str, tuple[str, str, str]]:
    """Status tiles by question: (state, answer, detail)."""
    found = re.findall(
        r'<div class="tile (\w+)"><div class="question">([^<]+)</div><div class="answer">([^<]+)</div>'
        r'<div class="detail">([^<]*)</div></div>',
        page,
    )
    return {
        question: (state, html.unescape(answer), html.unescape(detail))
        for state, question, answer, detail in found
    }


def test_dashboard_shows_the_series_from_the_tables(database_url, tmp_path):
    days = [date(2031, 1, 1) + timedelta(days=d) for d in range(14)]
    rows = []
    for d, day in enumerate(days):
        for i in range(d + 1):  # day d has d + 1 collisions
            rows.append(
                (
                    f"DASH{d:02d}{i:02d}",
                    "1" if d < 7 else "2",
                    day,
                    days[0],
                    days[-1],
                    0.1,
                    0.2,
                    0.7,
                    0.3,
                    3,
                    i == 0,
                    0.25,
                )
            )
    for first, last, version in ((0, 6, "1"), (7, 13, "2")):
        path = evidently_report.report_path(tmp_path, "drift", days[first], days[last], version)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("<html></html>")
    evidently_report.report_path(tmp_path, "quality", days[0], days[6], "1").write_text("<html></html>")
    with db.session(database_url) as conn, conn.cursor() as cur:
        psycopg2.extras.execute_values(
            cur,
            "INSERT INTO predictions (collision_index, model_version, collision_date,"
            " window_start, window_end, p_fatal, p_serious, p_slight, p_ksi,"
            " predicted_severity, ksi_alert, alert_threshold) VALUES %s",
            rows,
        )
        # The first week's 28 collisions are too few for its drift to count; the second week's 400 are not.
        for first, last, version, share, collisions in ((0, 6, "1", 0.75, 28), (7, 13, "2", 0.1, 400)):
            drift = {
                DRIFT_SHARE_METRIC: share,
                DRIFT_ROWS_METRIC: collisions,
                "drift.p_ksi_score": share / 2,
                "drift.p_ksi_drifted": float(share > 0.5),
                "drift.predicted_share.fatal": 0.01,
                "drift.predicted_share.serious": 0.3,
                "drift.predicted_share.slight": 0.69,
                "drift.feature_score.speed_limit": share,
                "drift.feature_score.hour": 0.02,
                "drift.feature_drifted.hour": 0.0,
            }
            monitor.store_metrics(conn, days[first], days[last], version, "drift", drift, days[last])
        monitor.store_metrics(
            conn,
            days[0],
            days[6],
            "1",
            "quality",
            {
                PR_AUC_METRIC: 0.41,
                ROC_AUC_METRIC: 0.77,
                "quality.ksi_brier": 0.16,
                "quality.recall_serious": 0.55,
                "quality.actual_share.fatal": 0.02,
                "quality.actual_share.serious": 0.26,
                "quality.actual_share.slight": 0.72,
            },
            days[6] + timedelta(30),
        )
        labels = {
            "labels.ksi_share": 0.28,
            "labels.adjusted_ksi_share": 0.25,
            "labels.regime.injury_based.ksi_share": 0.3,
            "labels.regime.severity_reporting.ksi_share": 0.2,
            "labels.reference.ksi_share": 0.24,
        }
        monitor.store_metrics(conn, days[0], days[6], "1", "labels", labels, days[6] + timedelta(30))
        cur.execute(
            "INSERT INTO model_events (event, model_name, model_version, details) VALUES"
            " ('promoted', 'accident_severity', '1', %s)",
            (json.dumps({"primary_metric": "ksi_pr_auc", "score": 0.45, "version": "1"}),),
        )
        cur.execute(
            "INSERT INTO model_events (event, model_name, model_version, details, simulated_date) VALUES"
            " ('retrained', 'accident_severity', '2', %s, %s),"
            " ('retraining_recommended', 'accident_severity', '1', %s, %s)",
            (
                json.dumps({"champion_before": "1", "champion_after": "2"}),
                days[6],
                json.dumps({"reasons": ["75% of the features drifted in the latest window (threshold 50%)"],
                            "label_verdict": "reporting change"}),
                days[6],
            ),
        )
        # A timeline that started 100 simulated days ago (at 1 s a day) and has scored 14 of them.
        cur.execute(
            "INSERT INTO simulation_state (name, started_at, start_date, seconds_per_day, last_inferred_date)"
            " VALUES ('default', now() - interval '100 seconds', %s, 1, %s)",
            (days[0], days[-1]),
        )
        latest = pd.DataFrame(
            {
                "collision_index": ["A", "B", "C"],
                "latitude": [51.5, 51.6, None],
                "longitude": [-0.1, -0.05, -0.2],
                "p_ksi": [0.2, 0.7, 0.5],
                "ksi_alert": [False, True, True],
            }
        )
        path = write_dashboard(
            conn,
            tmp_path,
            policy=retraining.RetrainingPolicy(drift_share_threshold=0.5),
            latest_collisions=latest,
            latest_window=(days[7], days[13]),
            champion_run_url=mlflow_run_url("http://127.0.0.1:5000/", "abc123"),
        )

    page = path.read_text()
    data, layout = _figure(page)
    traces = {trace["name"]: trace for trace in data}
    assert {
        "collisions scored",
        "mean P(KSI)",
        "alert rate",
        "share of drifted features",
        "P(KSI) drift score",
        "KSI ROC-AUC",
        "KSI PR-AUC",
        "KSI Brier score",
        "champion test PR-AUC",
        "recall, serious",
    } <= set(traces)
    assert "champion test ROC-AUC" not in traces  # the promotion recorded only its primary metric
    scored = traces["collisions scored"]
    assert scored["x"][:2] == ["2031-01-01", "2031-01-02"] and scored["y"][:3] == [1, 2, 3]
    alert_rate = traces["alert rate"]["y"]
    assert alert_rate[3] == pytest.approx(1 / 4)
    assert traces["KSI PR-AUC"]["y"] == [0.41] and traces["champion test PR-AUC"]["y"] == [0.45, 0.45]
    drift = traces["share of drifted features"]
    assert drift["y"] == [0.75, 0.1] and drift["text"][0] == "2031-01-01..2031-01-07, model 1, 28 collisions"
    too_small = traces["window under 300 collisions: its drift does not count"]
    assert too_small["x"] == ["2031-01-07"] and too_small["y"] == [0.75]
    # Label drift: the actual KSI share where labels arrived, beside the predicted one in every window.
    assert traces["actual KSI share (labels)"]["y"] == [pytest.approx(0.28)]
    assert traces["predicted KSI share"]["y"] == [pytest.approx(0.31), pytest.approx(0.31)]
    assert traces["actual serious share"]["y"] == [0.26]
    # ... and beside it, by reporting regime, DfT's adjusted share and the training sample's.
    assert traces["adjusted KSI share (DfT, as if all injury-based)"]["y"] == [0.25]
    assert traces["actual KSI share, injury-based reporting"]["y"] == [0.3]
    assert traces["actual KSI share, severity reporting"]["y"] == [0.2]
    assert traces["KSI share of the training sample"]["y"] == [0.24]
    heatmap = traces["feature drift score"]
    assert heatmap["y"] == ["hour", "speed_limit"] and heatmap["z"] == [[0.02, 0.02], [0.75, 0.1]]
    # The retraining threshold (drift) and floor (0.8 x the champion's 0.45, quality).
    assert sorted(line["y0"] for line in layout["shapes"] if line["y0"] == line["y1"]) == [pytest.approx(0.36), 0.5]
    # The change of model version and the retraining are marked across all eight panels.
    vertical = sorted(shape["x0"] for shape in layout["shapes"] if shape["x0"] == shape["x1"])
    assert vertical == ["2031-01-07"] * 8 + ["2031-01-08"] * 8
    assert {a["text"] for a in layout["annotations"]} >= {"model 2 scores", "retrained"}
    # Every panel names what its axis measures.
    assert [layout[f"yaxis{n if n > 1 else ''}"]["title"]["text"] for n in (1, 6)] == ["collisions / day", "score"]

    tiles = _tiles(page)
    assert tiles["Which model serves?"][:2] == ("ok", "version 2")
    assert "scoring since 2031-01-08" in tiles["Which model serves?"][2]
    assert tiles["Is it drifting?"][:2] == ("ok", "no: 10% of features drifted")
    state, answer, detail = tiles["Is its labelled quality holding?"]
    assert (state, answer) == ("warn", "KSI PR-AUC 0.410") and "champion's test figure 0.450" in detail
    assert tiles["When did it last retrain?"][1:] == ("7 days ago, 2031-01-07", "version 2 became champion")
    assert tiles["Does monitoring call for retraining?"][:2] == ("alert", "yes")
    assert tiles["Does monitoring call for retraining?"][2].endswith("; KSI share: reporting change")
    assert tiles["Is the runner keeping up?"][0] == "warn" and "behind" in tiles["Is the runner keeping up?"][1]

    map_data, map_layout = _figure(page, "latest-window-map")
    points, alerts = map_data
    assert points["x"] == [-0.1, -0.05] and points["marker"]["color"] == [0.2, 0.7]  # no position, no point
    assert alerts["y"] == [51.6] and "2031-01-08..2031-01-14" in map_layout["title"]["text"]
    assert 'href="monitoring/drift_2031-01-01_2031-01-07_model-1.html"' in page
    assert 'href="monitoring/quality_2031-01-01_2031-01-07_model-1.html"' in page
    assert 'href="index.html"' in page and 'href="http://127.0.0.1:5000/#/runs/abc123"' in page
    # plotly.js is in the page (packed), not fetched: the page opens offline.
    assert not re.search(r"<script[^>]*\bsrc=", page)
    packed = re.search(r"<script type='application/octet-stream' id='plotly-js'>([^<]+)</script>", page).group(1)
    assert html_packing.unpack(packed) == get_plotlyjs() and len(page) < 2_500_000


# ------------------------------------------------------------------------------------------ notebook


@pytest.fixture
def monitored_stack(settings, synthetic_curated, database_url):
    """A lake with the synthetic curated years, a registered model trained on 2023 with its reference
    sample and test score, and its predictions for 4 March to 14 April 2024 in PostgreSQL."""
    lake_uri = f"{os.environ['LAKE_URI']}/monitor-tests-{uuid.uuid4().hex[:6]}"
    lake = Lake(lake_uri, settings)
    for year, rows in synthetic_curated.groupby("collision_year"):
        lake.write_partition(CURATED, int(year), rows.reset_index(drop=True))
    parts = Split(
        None, date(2023, 9, 30), (date(2023, 10, 1), date(2023, 12, 31)), (date(2024, 1, 1), date(2024, 2, 29)), "test"
    ).apply(synthetic_curated)
    fitted = fit_gbm(parts["train"], parts["validation"], seed=0)
    model_name = "monitor_test_" + uuid.uuid4().hex[:6]
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_experiment(model_name)
    with mlflow.start_run():
        scores = evaluation.test_metrics(parts["test"]["collision_severity"], fitted.scores(parts["test"], "gbm"))
        mlflow.log_metrics({f"test_{name}": value for name, value in scores.items() if np.isfinite(value)})
        log_reference(reference_sample(fitted, parts["train"]))
        version = str(log_model(fitted, parts["train"], model_name).registered_model_version)

    dates = synthetic_curated["date"]
    scored = synthetic_curated[(dates >= "2024-03-04") & (dates <= "2024-04-14")].reset_index(drop=True)
    outputs = fitted.predict(scored)
    rows = [
        (
            row.collision_index,
            version,
            row.date.date(),
            date(2024, 3, 4),
            date(2024, 4, 14),
            out.p_fatal,
            out.p_serious,
            out.p_slight,
            out.p_ksi,
            int(out.predicted_severity),
            bool(out.ksi_alert),
            fitted.alert_threshold,
        )
        for row, out in zip(scored.itertuples(), outputs.itertuples(), strict=True)
    ]
    with db.session(database_url) as conn, conn.cursor() as cur:
        psycopg2.extras.execute_values(
            cur,
            "INSERT INTO predictions (collision_index, model_version, collision_date, window_start, window_end,"
            " p_fatal, p_serious, p_slight, p_ksi, predicted_severity, ksi_alert, alert_threshold) VALUES %s",
            rows,
        )
    return {"lake_uri": lake_uri, "model_name": model_name, "database_url": database_url, "version": version}


@pytest.mark.slow
def test_04_monitor_stores_drift_now_quality_later_and_the_decision_once(monitored_stack, settings, tmp_path):
    own = replace(settings, lake_uri=monitored_stack["lake_uri"], model_name=monitored_stack["model_name"],
                  database_url=monitored_stack["database_url"], reports_dir=tmp_path, label_delay_days=30)

    def run(window_start: str, window_end: str) -> run_result.RunResult:
        parameters = {"window_start": window_start, "window_end": window_end}
        return executor.execute("04_monitor", parameters, settings=own, progress=False).raise_for_status()

    def metrics() -> list[dict]:
        with db.session(monitored_stack["database_url"]) as conn:
            return db.fetch_dicts(
                conn, "SELECT window_end, metric, known_at FROM monitoring_metrics ORDER BY window_end, metric"
            )

    run("2024-03-04", "2024-03-10")  # the shifted week; its labels are all known on 9 April
    first = metrics()
    assert {row["window_end"] for row in first} == {date(2024, 3, 10)}
    assert not [row for row in first if row["metric"].startswith("quality.")]

    run("2024-04-08", "2024-04-14")
    second = run("2024-04-08", "2024-04-14")  # a rerun replaces what the first run wrote
    stored = metrics()
    quality = {row["window_end"] for row in stored if row["metric"].startswith("quality.")}
    assert quality == {date(2024, 3, 10)}
    labels = {row["window_end"] for row in stored if row["metric"].startswith("labels.")}
    assert labels == quality
    arrived_with_labels = [row for row in stored if row["metric"].startswith(("quality.", "labels."))]
    assert len(stored) == 2 * len(first) + len(arrived_with_labels)
    with db.session(monitored_stack["database_url"]) as conn:
        events = db.fetch_dicts(conn, "SELECT event, simulated_date, details FROM model_events ORDER BY simulated_date")
    assert [(e["event"], e["simulated_date"]) for e in events] == [
        ("retraining_recommended", date(2024, 3, 10)),  # the shifted week drifted
        # The unshifted week drifted little, and the shifted week's labelled PR-AUC is above the floor.
        ("retraining_not_needed", date(2024, 4, 14)),
    ], events
    decided = events[1]["details"]
    assert decided["drift_share"] < decided["policy"]["drift_share_threshold"]
    assert decided["recent_pr_aucs"] and decided["mean_pr_auc"] >= decided["quality_floor"]
    # The labels that landed were pooled by place, every collision of the labelled week in each level.
    with db.session(monitored_stack["database_url"]) as conn:
        labelled = db.fetch_dicts(conn, "SELECT value FROM monitoring_metrics WHERE metric = 'quality.labelled_rows'")
        by_place = db.fetch_dicts(conn, "SELECT known_at, period_start, period_end, level, collisions, expected, rank"
                                        " FROM place_risk")
    assert {(row["known_at"], row["period_start"], row["period_end"]) for row in by_place} == {
        (date(2024, 4, 14), date(2024, 3, 4), date(2024, 3, 10))
    }
    for level in ("local_authority", "grid"):
        assert sum(row["collisions"] for row in by_place if row["level"] == level) == labelled[0]["value"]
    assert all(row["rank"] is None or row["expected"] >= 5 for row in by_place)
    assert "Observed against expected KSI collisions, by place" in (tmp_path / "dashboard.html").read_text()
    # The shifted week's KSI share rose within reporting regimes, and the model's P(KSI) rose with it.
    assert decided["label_verdict"] == "label drift" and "the model's P(KSI) followed" in decided["label_drift"]
    version = monitored_stack["version"]
    assert sorted(p.name for p in (tmp_path / "monitoring").iterdir()) == [
        "assets",
        f"drift_2024-03-04_2024-03-10_model-{version}.html",
        f"drift_2024-04-08_2024-04-14_model-{version}.html",
        f"quality_2024-03-04_2024-03-10_model-{version}.html",  # its labels arrived on 9 April
    ]
    assert_light_report(
        tmp_path / "monitoring" / f"quality_2024-03-04_2024-03-10_model-{version}.html",
        f"{evidently_report.KIND_TITLES['quality']}: 2024-03-04..2024-03-10, model {version}",
    )
    print(f"04_monitor took {second.duration_s:.1f} s for one window")
