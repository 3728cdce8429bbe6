"""Retraining on the estimated quality before the labels: a provisional recommendation that the labels
later confirm or withdraw, stored in PostgreSQL like every other decision."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest

from lib.monitoring import monitor, retraining
from lib.store import db
from lib.store.metrics import DRIFT_ROWS_METRIC, DRIFT_SHARE_METRIC, ESTIMATED_PR_AUC_METRIC, PR_AUC_METRIC

DELAY = 30
VERSION = "7"
MODEL = "accident_severity"
# Six weekly windows from Monday 1 January 2024; the last ends on Sunday 11 February.
WINDOWS = [(date(2024, 1, 1) + timedelta(days=7 * k), date(2024, 1, 7) + timedelta(days=7 * k)) for k in range(6)]
ESTIMATES = [0.50, 0.48, 0.30, 0.31, 0.29, 0.30]  # the last four fall below 0.8 x 0.50


def estimated(*values: float) -> list[tuple[date, date, float]]:
    return [(*window, value) for window, value in zip(WINDOWS, values, strict=False)]


def test_low_estimates_recommend_retraining_provisionally():
    decision = retraining.decide_retraining(
        VERSION,
        date(2024, 2, 11),
        [0.5],
        0.05,
        drift_rows=2_500,
        champion_pr_auc=0.5,
        estimated=estimated(0.30, 0.31, 0.29),
        reference_estimated_pr_auc=0.5,
    )
    assert decision.recommended and decision.provisional
    assert decision.mean_estimated_pr_auc == pytest.approx(0.30) and decision.estimate_floor == pytest.approx(0.4)
    (reason,) = decision.reasons
    assert "estimated KSI PR-AUC 0.300 of the 3 window(s) awaiting labels" in reason and "provisional" in reason
    details = json.loads(json.dumps(decision.details(), default=str))
    assert details["provisional"] and details["estimated_windows"][0] == ["2024-01-01", "2024-01-07"]


@pytest.mark.parametrize(
    ("estimates", "reference", "act_on_estimate", "said"),
    [
        ((0.45, 0.42), 0.5, True, "estimated KSI PR-AUC 0.435 of the 2 window(s) awaiting labels is above its floor"),
        ((0.30, 0.30), 0.5, False, "below its floor 0.400 (the policy does not act on estimates)"),
        ((0.30, 0.30), None, True, "no estimate for the windows awaiting labels"),
        ((), 0.5, True, "no estimate for the windows awaiting labels"),
    ],
)
def test_estimates_above_the_floor_or_not_acted_on_leave_the_decision_alone(
    estimates, reference, act_on_estimate, said
):
    policy = retraining.RetrainingPolicy(act_on_estimate=act_on_estimate)
    decision = retraining.decide_retraining(
        VERSION,
        date(2024, 2, 11),
        [],
        0.05,
        drift_rows=2_500,
        champion_pr_auc=0.5,
        policy=policy,
        estimated=estimated(*estimates),
        reference_estimated_pr_auc=reference,
    )
    assert not decision.recommended and not decision.provisional
    assert said in decision.summary()


@pytest.fixture
def database_url(fresh_database):
    """Six monitored windows of version 7, each estimated at its end; the first one's labels are in."""
    with db.session(fresh_database) as conn:
        for (start, end), value in zip(WINDOWS, ESTIMATES, strict=True):
            monitor.store_metrics(
                conn, start, end, VERSION, "drift", {DRIFT_SHARE_METRIC: 0.05, DRIFT_ROWS_METRIC: 2_500}, end
            )
            monitor.store_metrics(conn, start, end, VERSION, "estimated", {ESTIMATED_PR_AUC_METRIC: value}, end)
        label(conn, [WINDOWS[0]], [0.49])
    return fresh_database


def label(conn, windows: list[tuple[date, date]], pr_aucs: list[float | None]) -> None:
    """Store the realised quality of `windows`, known once their labels have all arrived."""
    for (start, end), value in zip(windows, pr_aucs, strict=True):
        metrics = {PR_AUC_METRIC: value, "quality.labelled_rows": 2_500}
        monitor.store_metrics(conn, start, end, VERSION, "quality", metrics, monitor.labels_known_at(end, DELAY))


def events(conn) -> list[dict]:
    return db.fetch_dicts(conn, "SELECT event, simulated_date, details FROM model_events ORDER BY id")


def test_the_decision_averages_the_estimates_of_the_newest_windows_still_awaiting_labels(database_url):
    with db.session(database_url) as conn:
        def decide(day: date, reference: float | None) -> retraining.RetrainingDecision:
            return retraining.decide_from_metrics(conn, VERSION, day, 0.5, reference_estimated_pr_auc=reference)

        on_the_day, day_before = decide(date(2024, 2, 11), 0.5), decide(date(2024, 2, 10), 0.5)
        unused = decide(date(2024, 2, 11), None)
        label(conn, WINDOWS[1:4], [0.45, 0.46, 0.47])  # known on 13, 20 and 27 February
        later = decide(date(2024, 2, 20), 0.5)
    # The first window is labelled and the second is older than the last four awaiting labels.
    assert on_the_day.estimated_windows == tuple(reversed(WINDOWS[2:]))
    assert on_the_day.estimated_pr_aucs == tuple(reversed(ESTIMATES[2:]))
    assert on_the_day.recent_pr_aucs == (0.49,) and on_the_day.provisional
    # The last window's estimate is known only from its last day.
    assert day_before.estimated_windows == tuple(reversed(WINDOWS[1:5]))
    assert unused.estimated_pr_aucs and not unused.recommended  # no reference estimate: the estimates only inform
    # Once a window's labels are in, its realised quality counts instead of its estimate.
    assert later.estimated_windows == tuple(reversed(WINDOWS[3:])) and later.recent_pr_aucs == (0.46, 0.45, 0.49)


@pytest.mark.parametrize(
    ("realised", "event", "said"),
    [
        ([0.30, 0.28, 0.33, 0.27], "retraining_confirmed", "is confirmed: the labels of its 4 window(s) show a mean"),
        ([0.47, 0.45, None, 0.50], "retraining_withdrawn", "is withdrawn: the labels of its 4 window(s) show a mean"),
    ],
)
def test_the_labels_confirm_or_withdraw_a_provisional_recommendation(database_url, realised, event, said):
    decided_on = date(2024, 2, 11)
    with db.session(database_url) as conn:
        decision = retraining.decide_from_metrics(conn, VERSION, decided_on, 0.5, reference_estimated_pr_auc=0.5)
        retraining.record_decision(conn, decision, MODEL)
        assert retraining.review_provisional(conn, MODEL, decided_on) == []
        label(conn, WINDOWS[2:], realised)
        # On 5 March the labels of the window ending 4 February are in, those of the last window not yet.
        assert retraining.review_provisional(conn, MODEL, date(2024, 3, 5)) == []
        reviewed_on = monitor.labels_known_at(WINDOWS[-1][1], DELAY)
        (review,) = retraining.review_provisional(conn, MODEL, reviewed_on)
        assert retraining.review_provisional(conn, MODEL, reviewed_on + timedelta(days=7)) == []  # reviewed once
        stored = events(conn)
    assert review.event == event and review.mean_estimated_pr_auc == pytest.approx(0.30)
    assert said in review.summary() and "the floor 0.400" in review.summary()
    assert [(e["event"], e["simulated_date"]) for e in stored] == [
        ("retraining_recommended", decided_on),
        (event, reviewed_on),
    ]
    details = stored[1]["details"]
    assert details["decided_on"] == "2024-02-11" and details["realised_pr_aucs"] == list(reversed(realised))
    defined = [value for value in realised if value is not None]
    assert details["mean_realised_pr_auc"] == pytest.approx(sum(defined) / len(defined))


def test_only_provisional_recommendations_are_reviewed(database_url):
    with db.session(database_url) as conn:
        # Drift recommends retraining here; the estimates are fine.
        monitor.store_metrics(conn, *WINDOWS[-1], VERSION, "drift", {DRIFT_SHARE_METRIC: 0.6}, WINDOWS[-1][1])
        decision = retraining.decide_from_metrics(conn, VERSION, date(2024, 2, 11), 0.5, reference_estimated_pr_auc=0.3)
        retraining.record_decision(conn, decision, MODEL)
        label(conn, WINDOWS[1:], [0.2] * 5)
        assert retraining.review_provisional(conn, MODEL, date(2024, 6, 1)) == []
    assert decision.recommended and not decision.provisional
