"""How good a severity model is: the KSI alert threshold, test metrics and paired bootstrap intervals.

KSI ("killed or seriously injured") means severity 1 (fatal) or 2 (serious). Every candidate model
describes a data set as `ModelScores`: a KSI ranking score (P(KSI) for probabilistic models), the
predicted severity, the KSI alert, and the three class probabilities when it has them.

* The alert threshold rule (`max_f1_threshold`): on the validation rows, the threshold on the KSI
  score that maximises F1 for KSI (ties: the highest such threshold, i.e. the fewest alerts).
* Test metrics (`test_metrics`): KSI ROC-AUC and PR-AUC (average precision), macro-F1 and balanced
  accuracy over the three classes, recall per class, KSI Brier score, 3-class log loss, and KSI
  precision, recall and F1 at the chosen threshold. A metric that the data cannot define (no KSI
  collision, a score-only model's Brier score) is NaN, never a made-up number.
* Uncertainty (`bootstrap_auc`): the test set is resampled with replacement (seeded); every model is
  scored on the same resamples, so differences between models are paired. Intervals are percentile
  intervals. The resampling works on weights over one sort of the scores, which keeps 1,000
  resamples of a national-size test year within seconds. With `with_brier`, the KSI Brier score of
  P(KSI) gets its interval from the same resamples.
* Calibration (`reliability_table`, `expected_calibration_error`): P(KSI) in ten bins of equal count
  (the rule of scikit-learn's `calibration_curve(strategy="quantile")`), each bin's mean prediction
  against its observed KSI share, and their gap weighted by the bins' rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_curve,
    roc_auc_score,
)

SEVERITIES = (1, 2, 3)
SEVERITY_NAMES = {1: "fatal", 2: "serious", 3: "slight"}
# A model's class probabilities, in SEVERITIES order, as models output and `predictions` stores them.
PROBABILITY_COLUMNS = ["p_fatal", "p_serious", "p_slight"]
KSI_SEVERITIES = (1, 2)
# Bootstrap work is done in chunks of at most this many (resample x row) cells, to bound memory.
BOOTSTRAP_CELLS_PER_CHUNK = 4_000_000


class EvaluationError(ValueError):
    """The rows cannot support the requested evaluation; the message says what is missing."""


@dataclass(frozen=True)
class ModelScores:
    """What one model says about each row of a data set."""

    name: str
    ksi_score: np.ndarray  # higher means more likely KSI; P(KSI) for probabilistic models
    predicted: np.ndarray  # predicted severity, 1/2/3
    alert: np.ndarray  # KSI alert (bool)
    probabilities: np.ndarray | None = None  # n x 3: fatal, serious, slight; None for a score-only model

    @classmethod
    def from_outputs(cls, name: str, outputs: pd.DataFrame) -> ModelScores:
        """The scores in a model's outputs (`lib.modeling.model.OUTPUT_COLUMNS`, as its pyfunc returns them)."""
        return cls(
            name,
            outputs["p_ksi"].to_numpy(dtype=float),
            outputs["predicted_severity"].to_numpy(),
            outputs["ksi_alert"].to_numpy(dtype=bool),
            outputs[PROBABILITY_COLUMNS].to_numpy(dtype=float),
        )


def is_ksi(severity) -> np.ndarray:
    return np.isin(np.asarray(severity), KSI_SEVERITIES)


def max_f1_threshold(ksi: np.ndarray, score: np.ndarray) -> float:
    """The threshold t (alert when score >= t) that maximises F1 for KSI on these rows."""
    ksi = np.asarray(ksi, dtype=bool)
    if not ksi.any():
        raise EvaluationError(
            f"the {len(ksi):,} validation rows hold no KSI collision, so no alert threshold "
            "can be chosen; widen the validation period"
        )
    precision, recall, thresholds = precision_recall_curve(ksi, score)
    # The last precision/recall pair has no threshold (recall 0 by convention).
    precision, recall = precision[:-1], recall[:-1]
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0)
    best = np.flatnonzero(f1 == f1.max())
    return float(thresholds[best].max())


def _recall(severity: np.ndarray, predicted: np.ndarray, cls: int) -> float:
    actual = severity == cls
    return float((predicted[actual] == cls).mean()) if actual.any() else float("nan")


def test_metrics(severity, scores: ModelScores) -> dict[str, float]:
    """Every scalar metric of one model on one labelled data set (see the module docstring)."""
    severity = np.asarray(severity)
    ksi = is_ksi(severity)
    predicted = np.asarray(scores.predicted)
    alert = np.asarray(scores.alert, dtype=bool)
    both = 0 < ksi.sum() < len(ksi)
    recalls = {f"recall_{SEVERITY_NAMES[c]}": _recall(severity, predicted, c) for c in SEVERITIES}
    present = [value for c, value in zip(SEVERITIES, recalls.values(), strict=True) if (severity == c).any()]
    true_alerts = int((alert & ksi).sum())
    metrics = {
        "ksi_roc_auc": float(roc_auc_score(ksi, scores.ksi_score)) if both else float("nan"),
        "ksi_pr_auc": float(average_precision_score(ksi, scores.ksi_score)) if ksi.any() else float("nan"),
        "macro_f1": float(f1_score(severity, predicted, labels=list(SEVERITIES), average="macro", zero_division=0)),
        # The mean recall over the classes present, as sklearn's balanced accuracy defines it.
        "balanced_accuracy": float(np.mean(present)),
        **recalls,
        "ksi_brier": float("nan"),
        "log_loss": float("nan"),
        "ksi_precision": true_alerts / alert.sum() if alert.any() else float("nan"),
        "ksi_recall": true_alerts / ksi.sum() if ksi.any() else float("nan"),
        "alert_rate": float(alert.mean()),
        "rows": float(len(severity)),
        "ksi_rows": float(ksi.sum()),
    }
    precision, recall = metrics["ksi_precision"], metrics["ksi_recall"]
    metrics["ksi_f1"] = (2 * precision * recall / (precision + recall)) if precision + recall > 0 else 0.0
    if scores.probabilities is not None:
        probabilities = np.asarray(scores.probabilities)
        metrics["ksi_brier"] = float(brier_score_loss(ksi, probabilities[:, 0] + probabilities[:, 1]))
        metrics["log_loss"] = float(log_loss(severity, probabilities, labels=list(SEVERITIES)))
    return {name: float(value) for name, value in metrics.items()}


def confusion(severity, predicted) -> pd.DataFrame:
    """Counts of actual (rows) by predicted (columns) severity, labelled by name."""
    names = [SEVERITY_NAMES[c] for c in SEVERITIES]
    matrix = confusion_matrix(np.asarray(severity), np.asarray(predicted), labels=list(SEVERITIES))
    return pd.DataFrame(matrix, index=pd.Index(names, name="actual"), columns=pd.Index(names, name="predicted"))


# -- paired bootstrap ---------------------------------------------------------------------------


class _SortedScore:
    """One model's scores sorted once, with tie groups, for weighted ROC-AUC and average precision.

    Every sum runs over the positive rows only (a KSI share of them), using cumulative weights read at
    the edges of each positive row's tie group: a few times faster than summing over every row."""

    def __init__(self, score: np.ndarray, ksi: np.ndarray):
        order = np.argsort(-np.asarray(score, dtype=float), kind="mergesort")  # descending
        ordered = np.asarray(score, dtype=float)[order]
        self.order = order
        starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])  # first row of each tie group
        group = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(ordered)]))
        self.positive_at = np.flatnonzero(ksi[order])
        positive_group = group[self.positive_at]
        ends = np.r_[starts[1:], len(ordered)] - 1
        self.group_end = ends[positive_group]  # each positive row's group: its last row
        self.above_end = starts[positive_group] - 1  # and the last row above it (-1: none)
        # Among the positive rows: the last one in the same group, and the last one above the group.
        self.positive_group_end = np.searchsorted(positive_group, positive_group, side="right") - 1
        self.positive_above_end = np.searchsorted(positive_group, positive_group, side="left") - 1

    def metrics(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ROC-AUC, average precision) for each row of `weights` (resample x row)."""
        if not len(self.positive_at):
            return np.full(len(weights), np.nan), np.full(len(weights), np.nan)
        w = weights[:, self.order]
        cumulative = np.cumsum(w, axis=1)
        pos = w[:, self.positive_at]
        cumulative_pos = np.cumsum(pos, axis=1)
        total_pos = cumulative_pos[:, -1]
        total_neg = cumulative[:, -1] - total_pos

        def before(cumsums: np.ndarray, last: np.ndarray) -> np.ndarray:
            return np.where(last >= 0, cumsums[:, np.maximum(last, 0)], 0.0)

        at_or_above = cumulative[:, self.group_end]  # weight scored at or above each positive row
        tp = cumulative_pos[:, self.positive_group_end]  # positives among them
        fp = at_or_above - tp
        in_group = at_or_above - before(cumulative, self.above_end)
        neg_in_group = in_group - (tp - before(cumulative_pos, self.positive_above_end))
        with np.errstate(invalid="ignore", divide="ignore"):
            # ROC-AUC: every positive beats the negatives scored below it and half of those tied with it.
            auc_num = (pos * (total_neg[:, None] - fp + 0.5 * neg_in_group)).sum(axis=1)
            roc_auc = np.where((total_pos > 0) & (total_neg > 0), auc_num / (total_pos * total_neg), np.nan)
            precision = np.divide(tp, at_or_above, out=np.zeros_like(tp), where=at_or_above > 0)
            ap = np.where(total_pos > 0, (pos * precision).sum(axis=1) / total_pos, np.nan)
        return roc_auc, ap


def _resample_weights(rng: np.random.Generator, rows: int, resamples: int) -> np.ndarray:
    """How often each row is drawn in each resample (resample x row), from uniform draws with replacement."""
    draws = rng.integers(0, rows, size=(resamples, rows))
    flat = (draws + np.arange(resamples)[:, None] * rows).ravel()
    return np.bincount(flat, minlength=resamples * rows).reshape(resamples, rows).astype(float)


def bootstrap_auc(
    severity,
    ksi_scores: Mapping[str, np.ndarray],
    reference: str,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    with_brier: bool = False,
) -> pd.DataFrame:
    """Percentile intervals of KSI ROC-AUC and PR-AUC per model, and of `reference` minus each other model.

    Returns one row per (comparison, metric): `comparison` is a model name or `"<reference> - <model>"`,
    with the estimate on the full test set, `low`/`high` bounds and, for differences, `share_above_zero`
    (the share of resamples in which the reference model scores higher). `with_brier` (the scores are
    probabilities) adds the KSI Brier score (`ksi_brier`, lower is better) on the same resamples.
    """
    ksi = is_ksi(severity)
    if reference not in ksi_scores:
        raise EvaluationError(f"reference model {reference!r} is not among the scored models {list(ksi_scores)}")
    if not 0 < ksi.sum() < len(ksi):
        raise EvaluationError(f"the {len(ksi):,} test rows need both KSI and non-KSI collisions for a bootstrap")
    sorted_scores = {name: _SortedScore(score, ksi) for name, score in ksi_scores.items()}
    squared_errors = {name: (np.asarray(score, dtype=float) - ksi) ** 2 for name, score in ksi_scores.items()}
    names = ("ksi_roc_auc", "ksi_pr_auc", *(("ksi_brier",) if with_brier else ()))

    def measure(name: str, weights: np.ndarray) -> np.ndarray:
        """resample x metric, in the order of `names`."""
        measured = sorted_scores[name].metrics(weights)
        if with_brier:
            measured = (*measured, weights @ squared_errors[name] / weights.sum(axis=1))
        return np.stack(measured, axis=1)

    rng = np.random.default_rng(seed)
    chunk = max(1, min(resamples, BOOTSTRAP_CELLS_PER_CHUNK // len(ksi)))
    draws: dict[str, list[np.ndarray]] = {name: [] for name in ksi_scores}
    done = 0
    while done < resamples:
        weights = _resample_weights(rng, len(ksi), min(chunk, resamples - done))
        for name in ksi_scores:
            draws[name].append(measure(name, weights))
        done += len(weights)
    samples = {name: np.concatenate(parts) for name, parts in draws.items()}  # resample x metric
    full = {name: measure(name, np.ones((1, len(ksi))))[0] for name in ksi_scores}

    tail = (1 - confidence) / 2 * 100
    rows = []
    for m, metric in enumerate(names):
        for name in ksi_scores:
            low, high = np.nanpercentile(samples[name][:, m], [tail, 100 - tail])
            rows.append(
                {
                    "comparison": name,
                    "metric": metric,
                    "estimate": float(full[name][m]),
                    "low": low,
                    "high": high,
                    "share_above_zero": np.nan,
                }
            )
        for name in ksi_scores:
            if name == reference:
                continue
            difference = samples[reference][:, m] - samples[name][:, m]
            low, high = np.nanpercentile(difference, [tail, 100 - tail])
            rows.append(
                {
                    "comparison": f"{reference} - {name}",
                    "metric": metric,
                    "estimate": float(full[reference][m] - full[name][m]),
                    "low": low,
                    "high": high,
                    "share_above_zero": float(np.nanmean(difference > 0)),
                }
            )
    return pd.DataFrame(rows)


# -- calibration --------------------------------------------------------------------------------


def reliability_table(severity, p_ksi, bins: int = 10) -> pd.DataFrame:
    """P(KSI) against the observed KSI share in `bins` bins of equal count (empty bins dropped).

    The bin edges are the quantiles of `p_ksi` and a value on an edge falls in the lower bin, as in
    scikit-learn's `calibration_curve(strategy="quantile")`. One row per bin: its P(KSI) range
    (`p_low`, `p_high`), `rows`, `mean_predicted` and `observed_ksi_share`.
    """
    p_ksi = np.asarray(p_ksi, dtype=float)
    ksi = is_ksi(severity)
    if not len(p_ksi):
        raise EvaluationError("a reliability table needs at least one scored row")
    edges = np.percentile(p_ksi, np.linspace(0, 100, bins + 1))
    frame = pd.DataFrame({"bin": np.searchsorted(edges[1:-1], p_ksi), "p": p_ksi, "ksi": ksi})
    table = frame.groupby("bin").agg(
        p_low=("p", "min"), p_high=("p", "max"), rows=("p", "size"), mean_predicted=("p", "mean"),
        observed_ksi_share=("ksi", "mean"),
    )
    return table.reset_index(drop=True)


def expected_calibration_error(table: pd.DataFrame) -> float:
    """The gap between mean prediction and observed KSI share, averaged over a reliability table's rows."""
    gap = (table["mean_predicted"] - table["observed_ksi_share"]).abs()
    return float((gap * table["rows"]).sum() / table["rows"].sum())
