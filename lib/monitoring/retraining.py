"""The retraining decision: when a model's monitored numbers call for a new model, and its record in model_events."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import date

import numpy as np

from lib.monitoring.monitor import DEFAULT_DRIFT_SHARE, DEFAULT_MIN_DRIFT_ROWS
from lib.store import events as event_store
from lib.store import metrics as metric_store
from lib.store.metrics import PR_AUC_METRIC

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrainingPolicy:
    """When monitored numbers call for a new model."""

    quality_windows: int = 4  # labelled windows averaged
    quality_fraction: float = 0.8  # of the champion's test KSI PR-AUC
    drift_share_threshold: float = DEFAULT_DRIFT_SHARE  # share of drifted features in the latest window
    min_drift_rows: int = DEFAULT_MIN_DRIFT_ROWS  # smaller windows: drift is reported, not acted on

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

    @property
    def drift_too_small(self) -> bool:
        """The latest window had too few collisions for its drift to count."""
        return self.policy.too_small_for_drift(self.drift_rows)

    def summary(self) -> str:
        """The decision and the numbers that made it, in a sentence."""
        if self.recommended:
            return "Retraining recommended: " + "; ".join(self.reasons) + "."
        if self.mean_pr_auc is None:
            quality = "no labelled window to judge quality by yet"
        elif self.quality_floor is None:
            quality = f"the model's run has no test KSI PR-AUC to compare the mean {self.mean_pr_auc:.3f} with"
        else:
            quality = (
                f"mean KSI PR-AUC {self.mean_pr_auc:.3f} over the last {len(self.recent_pr_aucs)} labelled "
                f"window(s) is above the floor {self.quality_floor:.3f}"
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
        return f"No retraining needed: {quality}, and {drift}."

    @property
    def event(self) -> str:
        return "retraining_recommended" if self.recommended else "retraining_not_needed"

    def details(self) -> dict:
        details = asdict(self)
        details["as_of"] = self.as_of.isoformat()
        details["reasons"] = list(self.reasons)
        details["recent_pr_aucs"] = list(self.recent_pr_aucs)
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
) -> RetrainingDecision:
    """Recommend retraining when recent labelled quality falls below the floor or drift is wide.

    Quality counts only when there is at least one labelled window and a champion score to compare
    with; drift only when a window has been monitored, and not when it held fewer than
    `policy.min_drift_rows` collisions.
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
    counts = drift_share is not None and not policy.too_small_for_drift(drift_rows)
    if counts and drift_share >= policy.drift_share_threshold:
        reasons.append(
            f"{drift_share:.0%} of the features drifted in the latest window "
            f"(threshold {policy.drift_share_threshold:.0%})"
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
    )


def decide_from_metrics(
    conn,
    model_version: str,
    as_of: date,
    champion_pr_auc: float | None,
    policy: RetrainingPolicy = RetrainingPolicy(),
) -> RetrainingDecision:
    """The retraining decision from the metrics stored for the model, as known on `as_of`."""
    quality = metric_store.recent_values(conn, model_version, PR_AUC_METRIC, as_of, policy.quality_windows)
    latest = metric_store.latest_drift(conn, model_version, as_of) or {"share_drifted_features": None, "rows": None}
    rows = int(latest["rows"]) if latest["rows"] is not None else None
    return decide_retraining(
        model_version,
        as_of,
        quality,
        latest["share_drifted_features"],
        drift_rows=rows,
        champion_pr_auc=champion_pr_auc,
        policy=policy,
    )


def record_decision(conn, decision: RetrainingDecision, model_name: str) -> int:
    """Write the decision to `model_events`, replacing an earlier decision for the same day; return its id."""
    event_id = event_store.replace_decision(
        conn, decision.event, model_name, decision.model_version, decision.details(), decision.as_of
    )
    log.info("Model %s version %s on %s: %s", model_name, decision.model_version, decision.as_of, decision.summary())
    return event_id
