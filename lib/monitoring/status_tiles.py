"""The status tiles at the top of the dashboard: which model serves, whether it drifts, its labelled quality
against the champion's test figure, when it last retrained and whether the runner keeps up."""

from __future__ import annotations

import html
from dataclasses import dataclass

import pandas as pd

from lib.monitoring.dashboard_data import DashboardData
from lib.monitoring.retraining import RetrainingPolicy
from lib.store.metrics import DRIFT, PR_AUC_METRIC


@dataclass(frozen=True)
class Tile:
    """One status tile: a question, its answer, a line of detail, and a state that colours it."""

    question: str
    answer: str
    detail: str
    state: str  # ok, warn, alert or none

    def html(self) -> str:
        return (
            f'<div class="tile {self.state}"><div class="question">{html.escape(self.question)}</div>'
            f'<div class="answer">{html.escape(self.answer)}</div>'
            f'<div class="detail">{html.escape(self.detail)}</div></div>'
        )


def _value(row: pd.Series, metric: str) -> float | None:
    value = row.get(metric)
    return None if value is None or pd.isna(value) else float(value)


def status_tiles(data: DashboardData, policy: RetrainingPolicy) -> list[Tile]:
    """The answers the first screen gives, from the tables alone."""
    tiles = []
    daily, starts = data.scored_per_day, data.model_version_starts
    today = pd.to_datetime(daily["time"]).max().date() if not daily.empty else None
    champion_pr_auc = data.champion_scores.get("test_ksi_pr_auc")

    if starts.empty:
        tiles.append(Tile("Which model serves?", "no collision scored yet", "run 03_infer or the simulation", "none"))
    else:
        serving = starts.sort_values("time").iloc[-1]
        figure = f"test KSI PR-AUC {champion_pr_auc:.3f}" if champion_pr_auc is not None else "no test figure"
        tiles.append(
            Tile(
                "Which model serves?",
                f"version {serving['model_version']}",
                f"scoring since {serving['time']}; {figure}",
                "ok",
            )
        )

    drift = data.drift_share
    if drift.empty:
        tiles.append(Tile("Is it drifting?", "not monitored yet", "the first window has not ended", "none"))
    else:
        last = drift.iloc[-1]
        rows = None if pd.isna(last["rows"]) else int(last["rows"])
        share = float(last["share_drifted_features"])
        metrics = data.window_metrics
        mine = metrics[(metrics["time"] == last["time"]) & (metrics["model_version"] == last["model_version"])]
        p_ksi_drifted = not mine.empty and _value(mine.iloc[-1], f"{DRIFT}.p_ksi_drifted") == 1
        window = f"window {last['window_start']}..{last['time']}"
        if policy.too_small_for_drift(rows):
            state, answer = "none", f"{share:.0%} of features (too few collisions to count)"
        else:
            drifting = share >= policy.drift_share_threshold
            state = "alert" if drifting else "ok"
            answer = f"{'yes' if drifting else 'no'}: {share:.0%} of features drifted"
        detail = (
            f"{window}, {rows:,} collisions; threshold {policy.drift_share_threshold:.0%}; "
            f"P(KSI) {'drifted' if p_ksi_drifted else 'did not drift'}"
            if rows is not None
            else window
        )
        tiles.append(Tile("Is it drifting?", answer, detail, state))

    metrics = data.window_metrics
    labelled = metrics.dropna(subset=[PR_AUC_METRIC]) if PR_AUC_METRIC in metrics else metrics.iloc[0:0]
    if labelled.empty:
        tiles.append(Tile("Is its labelled quality holding?", "no labels yet", "labels arrive after the delay", "none"))
    else:
        last = labelled.iloc[-1]
        recent = labelled.iloc[-policy.quality_windows :][PR_AUC_METRIC].astype(float)
        pr_auc = float(last[PR_AUC_METRIC])
        if champion_pr_auc is None:
            state, versus = "none", "no champion test figure to compare with"
        else:
            floor = policy.quality_fraction * champion_pr_auc
            below_floor = recent.mean() < floor
            state = "alert" if below_floor else ("warn" if pr_auc < champion_pr_auc else "ok")
            versus = (
                f"champion's test figure {champion_pr_auc:.3f}; mean of the last {len(recent)} "
                f"{recent.mean():.3f} {'below' if below_floor else 'above'} the retraining floor {floor:.3f}"
            )
        tiles.append(
            Tile(
                "Is its labelled quality holding?",
                f"KSI PR-AUC {pr_auc:.3f}",
                f"window {last['window_start']}..{last['time']}; {versus}",
                state,
            )
        )

    events = data.model_events
    retrained = events[events["event"] == "retrained"] if not events.empty else events
    if retrained.empty:
        tiles.append(Tile("When did it last retrain?", "not retrained", "since the simulation started", "none"))
    else:
        last = retrained.iloc[-1]
        details = last["details"] or {}
        after, before = details.get("champion_after"), details.get("champion_before")
        outcome = f"version {after} became champion" if after != before else f"champion {before} stayed"
        ago = f"{(today - last['time']).days} days ago, " if today is not None else ""
        tiles.append(Tile("When did it last retrain?", f"{ago}{last['time']}", outcome, "ok"))

    decision = data.latest_decision
    if decision is not None:
        reasons = (decision["details"] or {}).get("reasons") or []
        recommended = decision["event"] == "retraining_recommended"
        # lib.monitoring.label_drift's verdict on the last labelled windows: "reporting change" is not decay.
        labels = (decision["details"] or {}).get("label_verdict")
        tiles.append(
            Tile(
                "Does monitoring call for retraining?",
                "yes" if recommended else "no",
                f"on {decision['time']}: " + ("; ".join(reasons) if reasons else "quality and drift within bounds")
                + (f"; KSI share: {labels}" if labels else ""),
                "alert" if recommended else "ok",
            )
        )

    runner = data.runner
    if runner is not None and runner["last_inferred_date"] is not None:
        behind = max(int(runner["days_behind"]), 0)
        tiles.append(
            Tile(
                "Is the runner keeping up?",
                "up to date" if behind == 0 else f"{behind} simulated day(s) behind",
                f"scored through {runner['last_inferred_date']}; simulated days ended through {runner['due_through']}",
                "ok" if behind <= 1 else "warn",
            )
        )
    return tiles
