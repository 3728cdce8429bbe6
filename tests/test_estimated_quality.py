"""Estimated quality before labels: the expectation it claims to be, checked against labels drawn from P(KSI),
and its line on the dashboard."""

from __future__ import annotations

import itertools
import json
import re
from datetime import date, timedelta

import numpy as np
import pytest

from lib.modeling import evaluation
from lib.monitoring import monitor
from lib.monitoring.dashboard import write_dashboard
from lib.monitoring.estimated_quality import EstimationError, estimate_quality
from lib.store import db
from lib.store.metrics import DRIFT, DRIFT_SHARE_METRIC, ESTIMATED, PR_AUC_METRIC, QUALITY, ROC_AUC_METRIC

METRICS = ("ksi_roc_auc", "ksi_pr_auc", "ksi_precision", "ksi_recall")


def realised(p: np.ndarray, ksi: np.ndarray, threshold: float) -> dict[str, float]:
    """The test-set metrics of `lib.modeling.evaluation` for labels `ksi` (severity 2 for KSI, 3 otherwise)."""
    alert = p >= threshold
    scores = evaluation.ModelScores("model", p, np.where(alert, 2, 3), alert)
    return evaluation.test_metrics(np.where(ksi, 2, 3), scores)


def drawn_metrics(p: np.ndarray, chance: np.ndarray, threshold: float, draws: int, seed: int) -> dict[str, np.ndarray]:
    """Each metric realised on `draws` label sets, collision i KSI with probability chance[i]."""
    rng = np.random.default_rng(seed)
    found = {name: [] for name in METRICS}
    for _ in range(draws):
        values = realised(p, rng.random(len(p)) < chance, threshold)
        for name in METRICS:
            found[name].append(values[name])
    return {name: np.array(values) for name, values in found.items()}


@pytest.fixture(scope="module")
def window() -> np.ndarray:
    """P(KSI) of 2,000 collisions, rounded to two decimals so that many tie."""
    return np.round(np.random.default_rng(7).beta(2, 6, 2_000), 2)


def test_a_calibrated_model_lands_on_its_estimate_within_sampling_error(window):
    threshold = 0.35
    estimate = estimate_quality(window, threshold)
    drawn = drawn_metrics(window, window, threshold, draws=400, seed=1)
    for name in METRICS:
        values = drawn[name]
        standard_error = values.std() / np.sqrt(len(values))
        assert abs(getattr(estimate, name) - values.mean()) < 4 * standard_error, (
            f"{name}: estimated {getattr(estimate, name):.4f}, realised {values.mean():.4f} on average "
            f"(standard error {standard_error:.4f})"
        )
    assert estimate.rows == 2_000 and estimate.alerts == int((window >= threshold).sum())
    assert estimate.expected_ksi == pytest.approx(window.sum())


def test_the_estimate_cannot_see_a_change_in_how_often_collisions_are_ksi(window):
    # Injury-based reporting doubles the odds that each collision is recorded KSI; its features are the same.
    threshold = 0.35
    odds = 2 * window / (1 - window)
    estimate = estimate_quality(window, threshold)
    drawn = drawn_metrics(window, odds / (1 + odds), threshold, draws=200, seed=2)
    for name in ("ksi_pr_auc", "ksi_precision"):
        values = drawn[name]
        assert values.mean() - getattr(estimate, name) > 10 * values.std() / np.sqrt(len(values)), name


def test_the_formulas_are_the_ratios_of_the_exact_expectations():
    # Every one of the 2^10 label sets, weighted by its probability: no sampling error at all.
    p = np.array([0.9, 0.7, 0.7, 0.5, 0.4, 0.4, 0.4, 0.2, 0.1, 0.05])
    threshold = 0.4
    expected = dict.fromkeys(("wins", "pairs", "precision_sum", "ksi", "true_alerts", "precision"), 0.0)
    for labels in itertools.product([False, True], repeat=len(p)):
        ksi = np.array(labels)
        weight = np.prod(np.where(ksi, p, 1 - p))
        positives, negatives = ksi.sum(), (~ksi).sum()
        values = realised(p, ksi, threshold)
        if positives and negatives:
            expected["wins"] += weight * values["ksi_roc_auc"] * positives * negatives
        expected["pairs"] += weight * positives * negatives
        if positives:
            expected["precision_sum"] += weight * values["ksi_pr_auc"] * positives
        expected["ksi"] += weight * positives
        expected["true_alerts"] += weight * (ksi & (p >= threshold)).sum()
        expected["precision"] += weight * values["ksi_precision"]
    estimate = estimate_quality(p, threshold)
    assert estimate.ksi_roc_auc == pytest.approx(expected["wins"] / expected["pairs"])
    assert estimate.ksi_pr_auc == pytest.approx(expected["precision_sum"] / expected["ksi"])
    assert estimate.ksi_recall == pytest.approx(expected["true_alerts"] / expected["ksi"])
    assert estimate.ksi_precision == pytest.approx(expected["precision"])  # exact: the alerts are known


def test_what_cannot_be_estimated_is_none_and_bad_input_is_named():
    certain = estimate_quality([0.0, 0.0, 1.0], alert_threshold=1.5)
    assert certain.ksi_precision is None and certain.ksi_recall == 0.0
    assert certain.ksi_roc_auc == 1.0 and certain.ksi_pr_auc == 1.0
    nothing = estimate_quality([0.0, 0.0], alert_threshold=0.5)
    assert nothing.ksi_roc_auc is None and nothing.ksi_pr_auc is None and nothing.ksi_recall is None
    assert set(nothing.metrics()) == {f"estimated.{name}" for name in (*METRICS, "rows", "expected_ksi", "alerts")}
    with pytest.raises(EstimationError, match=r"1 P\(KSI\) value\(s\) are not probabilities .* e.g. 1.2"):
        estimate_quality([0.1, 1.2], 0.5)
    with pytest.raises(EstimationError, match="no scored collision"):
        estimate_quality([], 0.5)


# ---------------------------------------------------------------------------------------- dashboard


def test_the_dashboard_draws_one_line_per_metric_that_turns_solid_where_labels_landed(fresh_database, tmp_path):
    weeks = [(date(2024, 1, 1) + timedelta(days=7 * k), date(2024, 1, 7) + timedelta(days=7 * k)) for k in range(3)]
    estimates = [estimate_quality(np.linspace(0, 2 * share, 101), 0.3) for share in (0.2, 0.25, 0.3)]
    with db.session(fresh_database) as conn:
        for (start, end), estimate in zip(weeks, estimates, strict=True):
            monitor.store_metrics(conn, start, end, "1", DRIFT, {DRIFT_SHARE_METRIC: 0.1}, end)
            monitor.store_metrics(conn, start, end, "1", ESTIMATED, estimate.metrics(), end)
        # The first week's labels landed: its PR-AUC came out below the estimate.
        realised = {PR_AUC_METRIC: 0.15, ROC_AUC_METRIC: 0.5, "quality.ksi_precision": None}
        monitor.store_metrics(conn, *weeks[0], "1", QUALITY, realised, weeks[0][1] + timedelta(days=30))
        page = write_dashboard(conn, tmp_path).read_text()
    match = re.search(r"<script type='application/json' data-plotly-figure='monitoring-dashboard'>(.*?)</script>", page)
    traces = {trace["name"]: trace for trace in json.loads(match.group(1))["data"]}
    days = [end.isoformat() for _, end in weeks]

    solid, dashed = traces["KSI PR-AUC"], traces["KSI PR-AUC: estimated until the labels arrive"]
    assert solid["x"] == days[:1] and solid["y"] == [0.15] and "dash" not in solid["line"]
    # The dashed line starts where the solid one ends and runs through the estimates of the windows still due.
    assert dashed["x"] == days and dashed["y"] == [0.15, estimates[1].ksi_pr_auc, estimates[2].ksi_pr_auc]
    assert dashed["line"] == {"color": solid["line"]["color"], "dash": "dash"}
    kept = traces["KSI PR-AUC: its estimate before the labels"]
    assert kept["x"] == days[:1] and kept["y"] == [pytest.approx(estimates[0].ksi_pr_auc)]
    # A realised figure the labels cannot define leaves a gap rather than the estimate in its place.
    precision = traces["KSI precision at the alert threshold: estimated until the labels arrive"]
    assert precision["x"] == days[1:] and precision["y"] == [estimates[1].ksi_precision, estimates[2].ksi_precision]
    roc_auc = traces["KSI ROC-AUC: estimated until the labels arrive"]
    assert roc_auc["line"]["color"] == traces["KSI ROC-AUC"]["line"]["color"] != solid["line"]["color"]
