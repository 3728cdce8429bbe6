"""Estimated quality of a window before its labels arrive (confidence-based performance estimation).

A collision's severity is known only `LABEL_DELAY_DAYS` after it happened, but the model's calibrated
P(KSI) already says how often it expects to be right: if the probabilities are calibrated, collision
i is KSI with probability p_i, independently of the others. The expected KSI ROC-AUC, PR-AUC (average
precision) and precision and recall at the alert threshold follow from the p_i alone, in O(n log n):

* precision at the threshold: the alerts are known, so E[precision] = the mean p_i over the alerts (exact);
* recall: E[true alerts] / E[KSI collisions] = sum of p_i over the alerts / sum of p_i;
* ROC-AUC: E[pairs a KSI collision wins] / E[KSI x non-KSI pairs], where a pair (i, j), i != j, is a
  KSI-against-other pair with probability p_i (1 - p_j) and i wins it when its score is higher (half when tied);
* PR-AUC, as scikit-learn's `average_precision_score`: each KSI collision adds the precision at its score
  (ties count as one threshold), so E[sum] = sum_i p_i (1 + P_i - p_i) / C_i over E[KSI collisions], where
  C_i collisions score at least as high as i and the p_j of those add up to P_i.

ROC-AUC, PR-AUC and recall are ratios of expectations, not expectations of the ratios: the difference
shrinks as 1/n and is well below the label sampling noise for a window of more than a few hundred
collisions (tests/test_estimated_quality.py draws labels from the probabilities and compares). What
no estimate from the probabilities can see is a change in how severity depends on the features
(label or concept shift, such as a police force moving to injury-based reporting): it assumes the
model is still calibrated on the window. scripts/bench/estimate.py measures how far it lands from the
realised figures with no shift, a covariate shift and a label shift.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lib.store.metrics import ESTIMATED


class EstimationError(ValueError):
    """The probabilities cannot give an estimate; the message names the value that is wrong."""


@dataclass(frozen=True)
class EstimatedQuality:
    """The quality a window is expected to show once its labels arrive, if the model is still calibrated."""

    rows: int
    expected_ksi: float  # the expected number of KSI collisions: the sum of P(KSI)
    alerts: int
    ksi_roc_auc: float | None  # None where no estimate is defined (every P(KSI) 0 or 1, no alert)
    ksi_pr_auc: float | None
    ksi_precision: float | None
    ksi_recall: float | None

    def metrics(self) -> dict[str, float | None]:
        """The `estimated.*` scalars stored in `monitoring_metrics`, named like their `quality.*` twins."""
        return {
            f"{ESTIMATED}.rows": self.rows,
            f"{ESTIMATED}.expected_ksi": self.expected_ksi,
            f"{ESTIMATED}.alerts": self.alerts,
            f"{ESTIMATED}.ksi_roc_auc": self.ksi_roc_auc,
            f"{ESTIMATED}.ksi_pr_auc": self.ksi_pr_auc,
            f"{ESTIMATED}.ksi_precision": self.ksi_precision,
            f"{ESTIMATED}.ksi_recall": self.ksi_recall,
        }


def _ratio(numerator: float, denominator: float) -> float | None:
    return float(numerator / denominator) if denominator > 0 else None


def estimate_quality(p_ksi, alert_threshold: float) -> EstimatedQuality:
    """The expected KSI quality of the collisions scored `p_ksi`, alerting at `alert_threshold` (score >= it).

    `p_ksi` is each collision's calibrated P(KSI), used both as its ranking score and as the chance that
    it is KSI (see the module docstring for the formulas).
    """
    p = np.asarray(p_ksi, dtype=float)
    if p.ndim != 1:
        raise EstimationError(f"P(KSI) must be one value per collision; got an array of shape {p.shape}")
    if not len(p):
        raise EstimationError("no P(KSI) to estimate the quality of: the window has no scored collision")
    outside = p[~((p >= 0) & (p <= 1))]
    if len(outside):
        raise EstimationError(
            f"{len(outside)} P(KSI) value(s) are not probabilities in [0, 1], e.g. {float(outside[0])}; "
            "the estimate needs the model's calibrated probabilities"
        )
    alert = p >= alert_threshold
    expected_ksi = float(p.sum())
    expected_true_alerts = float(p[alert].sum())

    # Rows by descending score; a tie group shares one threshold.
    order = np.argsort(-p, kind="mergesort")
    ranked = p[order]
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
    sizes = np.diff(np.r_[starts, len(ranked)])
    group_end = np.repeat(starts + sizes - 1, sizes)  # each row's last row of its group
    at_or_above = group_end + 1.0  # C_i
    ksi_at_or_above = np.cumsum(ranked)[group_end]  # P_i
    average_precision = _ratio(float(np.sum(ranked * (1 + ksi_at_or_above - ranked) / at_or_above)), expected_ksi)

    # ROC-AUC: the expected non-KSI weight strictly below each row, and in its group besides itself.
    other = 1 - ranked
    other_at_or_above = np.cumsum(other)[group_end]
    other_in_group = np.repeat(np.add.reduceat(other, starts), sizes)
    below = other.sum() - other_at_or_above
    tied = other_in_group - other
    pairs = expected_ksi * (len(p) - expected_ksi) - float(np.sum(p * (1 - p)))
    roc_auc = _ratio(float(np.sum(ranked * (below + 0.5 * tied))), pairs)

    return EstimatedQuality(
        rows=len(p),
        expected_ksi=expected_ksi,
        alerts=int(alert.sum()),
        ksi_roc_auc=roc_auc,
        ksi_pr_auc=average_precision,
        ksi_precision=_ratio(expected_true_alerts, float(alert.sum())),
        ksi_recall=_ratio(expected_true_alerts, expected_ksi),
    )
