"""The retraining decision: when a model's monitored numbers call for a new model, and its record in model_events.

Three rules, any of which recommends retraining: the labelled quality of the last windows fell below a
fraction of the champion's test score; too many features drifted in a window large enough to tell; and,
before the labels, the estimated quality (lib.monitoring.estimated_quality) of the windows still awaiting
them fell below the same fraction of what the model expects on its own reference sample. A recommendation
the estimate made is provisional: once every label of its windows has arrived, `review_provisional`
confirms it (their labelled PR-AUC is below the labelled rule's floor too) or withdraws it, and records which.
A fourth rule reads the labels' KSI share (lib.monitoring.label_drift, pooled over the same labelled windows
as quality): label drift the model did not foresee recommends retraining. A KSI share that moved because
police forces changed how they report severity (a reporting change) is never a reason by itself, and the
summary says so.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import date

import numpy as np

from lib.monitoring import label_drift as labels
from lib.monitoring.monitor import DEFAULT_DRIFT_SHARE, DEFAULT_MIN_DRIFT_ROWS
from lib.store import events as event_store
from lib.store import metrics as metric_store
from lib.store.metrics import LABEL_KSI_SHARE_METRIC, LABELS, PR_AUC_METRIC

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrainingPolicy:
    """When monitored numbers call for a new model."""

    quality_windows: int = 4  # labelled windows averaged
    quality_fraction: float = 0.8  # of the champion's test KSI PR-AUC
    drift_share_threshold: float = DEFAULT_DRIFT_SHARE  # share of drifted features in the latest window
    min_drift_rows: int = DEFAULT_MIN_DRIFT_ROWS  # smaller windows: drift is reported, not acted on
    # The estimated quality of the windows awaiting labels may recommend retraining (provisionally).
    act_on_estimate: bool = True

    def too_small_for_drift(self, rows: int | None) -> bool:
        """A window of `rows` collisions is too small for its drift to count (None: size unknown, it counts)."""
        return rows is not None and rows < self.min_drift_rows


@dataclass(frozen=True)
class RetrainingDecision:
    """The decision and the numbers that made it."""

    recommended: bool
    reasons: tuple[str, ...]
    model_version: str
    as_of: date
    recent_pr_aucs: tuple[float, ...]  # newest window first
    mean_pr_auc: float | None
    champion_pr_auc: float | None
    quality_floor: float | None
    drift_share: float | None
    drift_rows: int | None  # collisions in the window whose drift share this is
    policy: RetrainingPolicy = field(default_factory=RetrainingPolicy)
    estimated_windows: tuple[tuple[date, date], ...] = ()  # awaiting labels, newest first
    estimated_pr_aucs: tuple[float, ...] = ()  # their estimated KSI PR-AUC
    mean_estimated_pr_auc: float | None = None
    reference_estimated_pr_auc: float | None = None  # the estimate on the model's reference sample
    estimate_floor: float | None = None
    provisional: bool = False  # the estimate recommended retraining; the labels will confirm or withdraw it
    label_verdict: str | None = None  # lib.monitoring.label_drift.VERDICTS, over the last labelled windows
    label_drift: str | None = None  # ... and what it rests on, in a sentence

    @property
    def drift_too_small(self) -> bool:
        """The latest window had too few collisions for its drift to count."""
        return self.policy.too_small_for_drift(self.drift_rows)

    def summary(self) -> str:
        """The decision and the numbers that made it, in a sentence."""
        labels_said = f" Labels: {self.label_drift}" if self.label_drift else ""
        if self.recommended:
            return "Retraining recommended: " + "; ".join(self.reasons) + "." + labels_said
        if self.mean_pr_auc is None:
            quality = "no labelled window to judge quality by yet"
        elif self.quality_floor is None:
            quality = f"the model's run has no test KSI PR-AUC to compare the mean {self.mean_pr_auc:.3f} with"
        else:
            quality = (
                f"mean KSI PR-AUC {self.mean_pr_auc:.3f} over the last {len(self.recent_pr_aucs)} labelled "
                f"window(s) is above the floor {self.quality_floor:.3f}"
            )
        if self.mean_estimated_pr_auc is None or self.estimate_floor is None:
            estimate = "no estimate for the windows awaiting labels"
        else:
            side = "below" if self.mean_estimated_pr_auc < self.estimate_floor else "above"
            estimate = (
                f"the estimated KSI PR-AUC {self.mean_estimated_pr_auc:.3f} of the {len(self.estimated_windows)} "
                f"window(s) awaiting labels is {side} its floor {self.estimate_floor:.3f}"
                + ("" if self.policy.act_on_estimate else " (the policy does not act on estimates)")
            )
        if self.drift_share is None:
            drift = "no window monitored for drift yet"
        elif self.drift_too_small:
            drift = (
                f"the drift of the latest window ({self.drift_share:.0%} of the features) does not count: its "
                f"{self.drift_rows} collisions are fewer than the {self.policy.min_drift_rows} below which chance "
                "alone drifts many features (monitor longer windows: MONITOR_WINDOW_DAYS)"
            )
        else:
            drift = (
                f"{self.drift_share:.0%} of the features drifted in the latest window "
                f"(threshold {self.policy.drift_share_threshold:.0%})"
            )
        return f"No retraining needed: {quality}, {estimate}, and {drift}.{labels_said}"

    @property
    def event(self) -> str:
        return "retraining_recommended" if self.recommended else "retraining_not_needed"

    def details(self) -> dict:
        details = asdict(self)
        details["as_of"] = self.as_of.isoformat()
        details["reasons"] = list(self.reasons)
        details["recent_pr_aucs"] = list(self.recent_pr_aucs)
        details["estimated_windows"] = [[start.isoformat(), end.isoformat()] for start, end in self.estimated_windows]
        details["estimated_pr_aucs"] = list(self.estimated_pr_aucs)
        details["drift_too_small"] = self.drift_too_small
        return details


def decide_retraining(
    model_version: str,
    as_of: date,
    recent_pr_aucs: Sequence[float],
    drift_share: float | None,
    *,
    drift_rows: int | None,
    champion_pr_auc: float | None,
    policy: RetrainingPolicy = RetrainingPolicy(),
    estimated: Sequence[tuple[date, date, float]] = (),
    reference_estimated_pr_auc: float | None = None,
    label_drift: labels.LabelDrift | None = None,
) -> RetrainingDecision:
    """Recommend retraining when recent labelled quality falls below the floor or drift is wide, or
    (provisionally) when the estimated quality of the windows awaiting labels falls below its floor.

    Quality counts only when there is at least one labelled window and a champion score to compare
    with; drift only when a window has been monitored, and not when it held fewer than
    `policy.min_drift_rows` collisions. `estimated` holds (start, end, estimated KSI PR-AUC) of the
    windows awaiting labels, newest first; their mean is compared with `policy.quality_fraction` x
    `reference_estimated_pr_auc`, the same estimate on the model's reference sample: an estimate is
    compared with an estimate, so the model's own calibration error does not move the floor.
    `label_drift` (the last labelled windows against the model's reference sample) counts only when it
    is label drift that the model's P(KSI) did not follow, never when it is a reporting change.
    """
    recent = tuple(float(v) for v in recent_pr_aucs[: policy.quality_windows])
    mean_pr_auc = float(np.mean(recent)) if recent else None
    floor = policy.quality_fraction * champion_pr_auc if champion_pr_auc is not None else None
    reasons = []
    if mean_pr_auc is not None and floor is not None and mean_pr_auc < floor:
        reasons.append(
            f"mean KSI PR-AUC {mean_pr_auc:.3f} over the last {len(recent)} labelled window(s) is below "
            f"{policy.quality_fraction:g} x the champion's test score {champion_pr_auc:.3f} = {floor:.3f}"
        )
    estimated = tuple(estimated)[: policy.quality_windows]
    estimated_pr_aucs = tuple(float(value) for _, _, value in estimated)
    mean_estimated = float(np.mean(estimated_pr_aucs)) if estimated_pr_aucs else None
    estimate_floor = (
        policy.quality_fraction * reference_estimated_pr_auc if reference_estimated_pr_auc is not None else None
    )
    provisional = (
        policy.act_on_estimate
        and mean_estimated is not None
        and estimate_floor is not None
        and mean_estimated < estimate_floor
    )
    if provisional:
        reasons.append(
            f"the estimated KSI PR-AUC {mean_estimated:.3f} of the {len(estimated)} window(s) awaiting labels is "
            f"below {policy.quality_fraction:g} x the {reference_estimated_pr_auc:.3f} the model expects on its "
            f"reference sample = {estimate_floor:.3f} (provisional until their labels arrive)"
        )
    counts = drift_share is not None and not policy.too_small_for_drift(drift_rows)
    if counts and drift_share >= policy.drift_share_threshold:
        reasons.append(
            f"{drift_share:.0%} of the features drifted in the latest window "
            f"(threshold {policy.drift_share_threshold:.0%})"
        )
    if label_drift is not None and label_drift.unforeseen:
        reasons.append(
            f"the KSI share drifted beyond what reporting explains and beyond what the model expected over the "
            f"last {label_drift.windows} labelled window(s) ({label_drift.predicted_gap * 100:+.1f} points "
            "actual against expected)"
        )
    return RetrainingDecision(
        recommended=bool(reasons),
        reasons=tuple(reasons),
        model_version=model_version,
        as_of=as_of,
        recent_pr_aucs=recent,
        mean_pr_auc=mean_pr_auc,
        champion_pr_auc=champion_pr_auc,
        quality_floor=floor,
        drift_share=drift_share,
        drift_rows=drift_rows,
        policy=policy,
        estimated_windows=tuple((start, end) for start, end, _ in estimated),
        estimated_pr_aucs=estimated_pr_aucs,
        mean_estimated_pr_auc=mean_estimated,
        reference_estimated_pr_auc=reference_estimated_pr_auc,
        estimate_floor=estimate_floor,
        provisional=provisional,
        label_verdict=label_drift.verdict if label_drift else None,
        label_drift=label_drift.sentence() if label_drift else None,
    )


def decide_from_metrics(
    conn,
    model_version: str,
    as_of: date,
    champion_pr_auc: float | None,
    policy: RetrainingPolicy = RetrainingPolicy(),
    reference_estimated_pr_auc: float | None = None,
) -> RetrainingDecision:
    """The retraining decision from the metrics stored for the model, as known on `as_of`; with
    `reference_estimated_pr_auc`, the estimates of the windows awaiting labels count too."""
    quality = metric_store.recent_values(conn, model_version, PR_AUC_METRIC, as_of, policy.quality_windows)
    estimated = metric_store.estimates_awaiting_labels(conn, model_version, as_of, policy.quality_windows)
    latest = metric_store.latest_drift(conn, model_version, as_of) or {"share_drifted_features": None, "rows": None}
    rows = int(latest["rows"]) if latest["rows"] is not None else None
    labelled = metric_store.recent_family(
        conn, model_version, LABELS, LABEL_KSI_SHARE_METRIC, as_of, policy.quality_windows
    )
    return decide_retraining(
        model_version,
        as_of,
        quality,
        latest["share_drifted_features"],
        drift_rows=rows,
        champion_pr_auc=champion_pr_auc,
        policy=policy,
        estimated=estimated,
        reference_estimated_pr_auc=reference_estimated_pr_auc,
        label_drift=labels.pooled(labelled),
    )


def record_decision(conn, decision: RetrainingDecision, model_name: str) -> int:
    """Write the decision to `model_events`, replacing an earlier decision for the same day; return its id."""
    event_id = event_store.replace_decision(
        conn, decision.event, model_name, decision.model_version, decision.details(), decision.as_of
    )
    log.info("Model %s version %s on %s: %s", model_name, decision.model_version, decision.as_of, decision.summary())
    return event_id


# ------------------------------------------------------------------------- provisional recommendations


@dataclass(frozen=True)
class EstimateReview:
    """What the labels said about a retraining recommendation that the estimated quality made before them."""

    model_version: str
    decided_on: date
    reviewed_on: date
    windows: tuple[tuple[date, date], ...]
    mean_estimated_pr_auc: float
    realised_pr_aucs: tuple[float | None, ...]  # in the order of `windows`; None where the labels cannot define it
    mean_realised_pr_auc: float | None
    floor: float  # the labelled rule's floor, or the estimate's where the champion had no test score

    @property
    def confirmed(self) -> bool:
        return self.mean_realised_pr_auc is not None and self.mean_realised_pr_auc < self.floor

    @property
    def event(self) -> str:
        return event_store.RETRAINING_CONFIRMED if self.confirmed else event_store.RETRAINING_WITHDRAWN

    def summary(self) -> str:
        verdict = "confirmed" if self.confirmed else "withdrawn"
        realised = (
            "no defined KSI PR-AUC" if self.mean_realised_pr_auc is None
            else f"a mean KSI PR-AUC of {self.mean_realised_pr_auc:.3f}"
        )
        return (
            f"The provisional retraining recommendation of {self.decided_on} for model {self.model_version} is "
            f"{verdict}: the labels of its {len(self.windows)} window(s) show {realised} against the estimated "
            f"{self.mean_estimated_pr_auc:.3f}, {'' if self.confirmed else 'not '}below the floor {self.floor:.3f}."
        )

    def details(self) -> dict:
        return {
            "decided_on": self.decided_on.isoformat(),
            "windows": [[start.isoformat(), end.isoformat()] for start, end in self.windows],
            "mean_estimated_pr_auc": self.mean_estimated_pr_auc,
            "realised_pr_aucs": list(self.realised_pr_aucs),
            "mean_realised_pr_auc": self.mean_realised_pr_auc,
            "floor": self.floor,
            "summary": self.summary(),
        }


def _review(conn, decision: dict, as_of: date) -> EstimateReview | None:
    """The review of one stored provisional recommendation, or None while some of its windows lack labels."""
    details = decision["details"]
    windows = [(date.fromisoformat(start), date.fromisoformat(end)) for start, end in details["estimated_windows"]]
    realised = metric_store.window_values(conn, decision["model_version"], PR_AUC_METRIC, windows, as_of)
    if len(realised) < len(windows):
        return None
    values = tuple(realised[window] for window in windows)
    defined = [value for value in values if value is not None]
    floor = details["quality_floor"] if details.get("quality_floor") is not None else details["estimate_floor"]
    return EstimateReview(
        model_version=decision["model_version"],
        decided_on=decision["simulated_date"],
        reviewed_on=as_of,
        windows=tuple(windows),
        mean_estimated_pr_auc=details["mean_estimated_pr_auc"],
        realised_pr_aucs=values,
        mean_realised_pr_auc=float(np.mean(defined)) if defined else None,
        floor=floor,
    )


def review_provisional(conn, model_name: str, as_of: date) -> list[EstimateReview]:
    """Confirm or withdraw each provisional recommendation whose windows' labels have all arrived by `as_of`,
    recording `retraining_confirmed` or `retraining_withdrawn` on `as_of`; return the reviews made."""
    reviews = []
    for decision in event_store.provisional_awaiting_review(conn, model_name, as_of):
        review = _review(conn, decision, as_of)
        if review is None:
            continue
        event_store.record(conn, review.event, model_name, review.model_version, review.details(), as_of)
        log.info("%s", review.summary())
        reviews.append(review)
    return reviews
