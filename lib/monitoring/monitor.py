"""Monitoring of one window of scored collisions: drift, labelled quality and the retraining decision.

Drift compares the window's features and predictions with the reference sample logged with the
model (Evidently); it is known as soon as the window ends. Quality needs the true severities,
which "arrive" `label_delay_days` after each collision: a window's quality is computed only once
every label in it has arrived, with the test metrics of `lib.modeling.evaluation`. Every scalar goes to
`monitoring_metrics` in long format, in two families that are replaced independently:
`drift.*` (known at the window end) and `quality.*` (known at window end + label delay).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import pandas as pd

from lib.modeling.evaluation import PROBABILITY_COLUMNS, SEVERITY_NAMES, ModelScores, test_metrics
from lib.store import metrics as metric_store
from lib.store import predictions as prediction_store
from lib.store.metrics import (
    ACTUAL_SHARE_PREFIX,
    DRIFT_ROWS_METRIC,
    DRIFT_SHARE_METRIC,
    FEATURE_SCORE_PREFIX,
    LABELLED_ROWS_METRIC,
    PREDICTED_SHARE_PREFIX,
)

log = logging.getLogger(__name__)

# The share of drifted features that calls for retraining. Lower than Evidently's dataset-drift
# default (0.5): a change in where and when collisions happen moves a handful of correlated features
# (on synthetic data, rural 60 mph night collisions drift 7-9 of 28), while `month` drifts in every
# window shorter than the reference period.
DEFAULT_DRIFT_SHARE = 0.2
# The fewest collisions a window needs before its drift can call for retraining. Evidently's distance
# tests do not allow for sample size, so small windows drift by chance alone: unshifted synthetic
# windows drift 79% of the features at 14 rows (a week of the Waltham Forest mirror), 30% at 100,
# 7.5% at 300 (at most 11% over 10 samples): scripts/bench/drift_noise.py; tests/test_monitor.py pins it.
DEFAULT_MIN_DRIFT_ROWS = 300


class MonitoringError(ValueError):
    """The inputs of a monitoring step are unusable; the message names the frame, column or value."""


# ---------------------------------------------------------------------------------------------- drift


@dataclass(frozen=True)
class DriftResult:
    """Feature and prediction drift of one window against the reference sample."""

    rows: int
    reference_rows: int
    share_drifted_features: float
    drifted_features: int
    features: int
    feature_scores: dict[str, float]  # Evidently's drift score: a distance or a p-value, per feature_methods
    feature_drifted: dict[str, bool]
    feature_methods: dict[str, str]
    p_ksi_score: float
    p_ksi_drifted: bool
    p_ksi_method: str
    predicted_class_score: float
    predicted_class_drifted: bool
    predicted_shares: dict[str, float]
    reference_predicted_shares: dict[str, float]
    skipped_features: tuple[str, ...] = ()

    def metrics(self) -> dict[str, float]:
        """The `drift.*` scalars stored in `monitoring_metrics`."""
        values = {
            DRIFT_ROWS_METRIC: self.rows,
            DRIFT_SHARE_METRIC: self.share_drifted_features,
            "drift.drifted_features": self.drifted_features,
            "drift.features": self.features,
            "drift.p_ksi_score": self.p_ksi_score,
            "drift.p_ksi_drifted": float(self.p_ksi_drifted),
            "drift.predicted_class_score": self.predicted_class_score,
            "drift.predicted_class_drifted": float(self.predicted_class_drifted),
        }
        values.update({f"{PREDICTED_SHARE_PREFIX}{name}": share for name, share in self.predicted_shares.items()})
        values.update({f"{FEATURE_SCORE_PREFIX}{name}": score for name, score in self.feature_scores.items()})
        values.update({f"drift.feature_drifted.{name}": float(flag) for name, flag in self.feature_drifted.items()})
        return values


def severity_shares(severity: pd.Series) -> dict[str, float]:
    """Share of each severity (fatal, serious, slight), predicted or true; 0 for a class absent."""
    counts = severity.astype(int).value_counts()
    total = max(len(severity), 1)
    return {name: float(counts.get(code, 0)) / total for code, name in SEVERITY_NAMES.items()}


def _check_columns(frame: pd.DataFrame, columns: Sequence[str], frame_name: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise MonitoringError(f"the {frame_name} frame lacks column(s) {', '.join(missing)}")
    if frame.empty:
        raise MonitoringError(f"the {frame_name} frame has no rows")


def _plain_dtypes(frame: pd.DataFrame) -> pd.DataFrame:
    """Evidently's statistics need NumPy dtypes: nullable integer codes become float64, <NA> NaN."""
    return frame.astype("float64")


def compute_drift(
    current: pd.DataFrame,
    reference: pd.DataFrame,
    categorical: Sequence[str],
    numeric: Sequence[str],
    drift_share: float = DEFAULT_DRIFT_SHARE,
    draw: bool = True,
):
    """Drift of the window `current` against `reference`, and the Evidently snapshot for its report.

    Both frames hold the feature columns plus `p_ksi` and `predicted_severity` (the reference's
    own predictions by the same model). Evidently picks each column's test from the column type
    and sample size: above 1,000 reference rows a distance (normed Wasserstein for numbers,
    Jensen-Shannon for codes; drift when >= 0.1), below it a test's p-value (drift when < 0.05).
    `drift_share` only sets the dataset-drift verdict shown in the report. A feature empty in either
    frame cannot be tested; it is left out and named in `skipped_features`. Returns
    `(DriftResult, snapshot)`; with `draw=False` the same tests run without drawing the report's
    figures (four fifths of the time) and the snapshot is None.
    """
    predictions = ["p_ksi", "predicted_severity"]
    wanted = [*categorical, *numeric]
    _check_columns(current, [*wanted, *predictions], "current window")
    _check_columns(reference, [*wanted, *predictions], "reference")
    skipped = tuple(c for c in wanted if current[c].isna().all() or reference[c].isna().all())
    if skipped:
        log.warning(
            "These features are empty in the window or the reference and are not tested for drift: %s.",
            ", ".join(skipped),
        )
    features = [c for c in wanted if c not in skipped]
    if not features:
        raise MonitoringError("no feature column has values in both the window and the reference")
    categorical_columns = [c for c in categorical if c in features] + ["predicted_severity"]
    columns = features + predictions
    frames = _plain_dtypes(current[columns]), _plain_dtypes(reference[columns])
    if draw:
        scores, methods, drifted, snapshot = _drift_report(*frames, categorical_columns, features, drift_share)
    else:
        (scores, methods, drifted), snapshot = _column_drift(*frames, categorical_columns), None
    drift = DriftResult(
        rows=len(current),
        reference_rows=len(reference),
        share_drifted_features=sum(drifted[c] for c in features) / len(features),
        drifted_features=sum(drifted[c] for c in features),
        features=len(features),
        feature_scores={c: scores[c] for c in features},
        feature_drifted={c: drifted[c] for c in features},
        feature_methods={c: methods[c] for c in features},
        p_ksi_score=scores["p_ksi"],
        p_ksi_drifted=drifted["p_ksi"],
        p_ksi_method=methods["p_ksi"],
        predicted_class_score=scores["predicted_severity"],
        predicted_class_drifted=drifted["predicted_severity"],
        predicted_shares=severity_shares(current["predicted_severity"]),
        reference_predicted_shares=severity_shares(reference["predicted_severity"]),
        skipped_features=skipped,
    )
    return drift, snapshot


def _drift_report(current: pd.DataFrame, reference: pd.DataFrame, categorical: list[str], features: list[str],
                  drift_share: float):
    """(scores, methods, drifted, snapshot) per column from an Evidently report of the columns' drift."""
    # Evidently takes seconds to import; only drift and quality need it.
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import DriftedColumnsCount, ValueDrift

    definition = DataDefinition(
        categorical_columns=categorical, numerical_columns=[c for c in current.columns if c not in categorical]
    )
    # The lean equivalent of DataDriftPreset: the same per-column tests, without the preset's
    # second summary table, which computes and draws every column again (twice the time).
    report = Report(
        [DriftedColumnsCount(columns=features, drift_share=drift_share)]
        + [ValueDrift(column=column) for column in current.columns],
        include_tests=True,
    )
    snapshot = report.run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    result = snapshot.dict()
    scores, methods, column_of = {}, {}, {}
    for metric in result["metrics"]:
        config = metric["config"]
        if config["type"].endswith(":ValueDrift"):
            scores[config["column"]] = float(metric["value"])
            methods[config["column"]] = config["method"]
            column_of[metric["id"]] = config["column"]
    drifted = {
        column_of[test["metric_config"]["metric_id"]]: test["status"] == "FAIL"
        for test in result["tests"]
        if test["metric_config"]["metric_id"] in column_of
    }
    return scores, methods, drifted, snapshot


def _column_drift(current: pd.DataFrame, reference: pd.DataFrame, categorical: list[str]):
    """(scores, methods, drifted) per column from the test Evidently's ValueDrift runs, chosen and called as
    its `get_one_column_drift` does, without the histograms, correlations and scatter data it then computes
    for the column's figures (nine tenths of its time)."""
    from evidently.legacy.calculations.stattests import get_stattest
    from evidently.legacy.core import ColumnType
    from evidently.legacy.options.data_drift import DataDriftOptions

    options = DataDriftOptions()
    scores, methods, drifted = {}, {}, {}
    for column in current.columns:
        kind = ColumnType.Categorical if column in categorical else ColumnType.Numerical
        window, sample = (frame[column].replace([-np.inf, np.inf], np.nan).dropna() for frame in (current, reference))
        test = get_stattest(sample, window, kind, options.get_feature_stattest_func(column, kind.value))
        result = test(sample, window, kind, options.get_threshold(column, kind.value))
        scores[column], methods[column], drifted[column] = (
            float(result.drift_score), test.display_name, bool(result.drifted)
        )
    return scores, methods, drifted


def classification_snapshot(scored: pd.DataFrame, alert_threshold: float):
    """Evidently's classification report of a labelled window: KSI (`ksi`) against P(KSI) at the alert threshold;
    None when the window's labels are all of one class (a small window with no KSI collision).

    The window is shown on its own: the model's reference sample is its training data, whose
    in-sample quality would flatter the comparison (its test figure is on the dashboard instead).
    Evidently 0.7's per-class table fails with a KeyError on a class absent from the labels, and a
    report of ROC and precision-recall curves means nothing there; the stored metrics say which are undefined.
    """
    _check_columns(scored, ["ksi", "p_ksi"], "scored")
    if scored["ksi"].nunique() < 2:
        return None
    from evidently import BinaryClassification, DataDefinition, Dataset, Report
    from evidently.presets import ClassificationPreset

    frame = pd.DataFrame({"ksi": scored["ksi"].astype(int), "p_ksi": scored["p_ksi"].astype(float)})
    definition = DataDefinition(
        classification=[
            BinaryClassification(target="ksi", prediction_probas="p_ksi", pos_label=1)
        ],
        numerical_columns=["p_ksi"],
        categorical_columns=["ksi"],
    )
    report = Report([ClassificationPreset(probas_threshold=float(alert_threshold))], include_tests=False)
    return report.run(Dataset.from_pandas(frame, data_definition=definition), None)


# -------------------------------------------------------------------------------------------- quality


@dataclass(frozen=True)
class QualityResult:
    """Model quality of one window, from labels that had all arrived by `known_at`."""

    known_at: date
    labelled_rows: int
    values: dict[str, float | None]  # lib.modeling.evaluation.test_metrics names; None where undefined
    actual_shares: dict[str, float] = field(default_factory=dict)  # of each true severity (label drift)

    def metrics(self) -> dict[str, float | None]:
        """The `quality.*` scalars stored in `monitoring_metrics`."""
        return {
            LABELLED_ROWS_METRIC: self.labelled_rows,
            **{f"quality.{name}": value for name, value in self.values.items()},
            **{f"{ACTUAL_SHARE_PREFIX}{name}": share for name, share in self.actual_shares.items()},
        }


def labels_known_at(window_end: date, label_delay_days: int) -> date:
    """The simulated date from which every label of a window ending on `window_end` is known."""
    return window_end + timedelta(days=label_delay_days)


def _defined(value) -> float | None:
    """A float, or None for a value that is missing or undefined (NaN)."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def compute_quality(
    scored: pd.DataFrame, window_start: date, window_end: date, as_of: date, label_delay_days: int
) -> QualityResult | None:
    """KSI and severity quality of the window, or None while some of its labels are still due.

    `scored` holds prediction rows joined with the truth: `collision_date`, the class probabilities,
    `p_ksi`, `ksi_alert`, `predicted_severity`, `collision_severity`. Only the window's rows are read,
    and only once all their labels have arrived (`as_of` >= window end + delay), so no label due later
    is used. The metrics are those of the test set (`lib.modeling.evaluation.test_metrics`, so monitored and
    test scores compare like for like). A metric that a window cannot define (ROC-AUC with one class,
    precision with no alert) is None.
    """
    known_at = labels_known_at(window_end, label_delay_days)
    if as_of < known_at:
        log.info(
            "Quality of %s..%s waits for labels until %s (simulated today: %s).",
            window_start,
            window_end,
            known_at,
            as_of,
        )
        return None
    required = ["collision_date", *PROBABILITY_COLUMNS, "p_ksi", "ksi_alert", "predicted_severity"]
    _check_columns(scored, [*required, "collision_severity"], "scored")
    dates = pd.to_datetime(scored["collision_date"])
    rows = scored[(dates >= pd.Timestamp(window_start)) & (dates <= pd.Timestamp(window_end))]
    if rows.empty:
        return QualityResult(known_at, 0, {})

    scores = ModelScores(
        name="monitored",
        ksi_score=rows["p_ksi"].astype(float).to_numpy(),
        predicted=rows["predicted_severity"].astype(int).to_numpy(),
        alert=rows["ksi_alert"].astype(bool).to_numpy(),
        probabilities=rows[PROBABILITY_COLUMNS].astype(float).to_numpy(),
    )
    values = test_metrics(rows["collision_severity"].astype(int).to_numpy(), scores)
    return QualityResult(
        known_at,
        len(rows),
        {name: _defined(value) for name, value in values.items()},
        severity_shares(rows["collision_severity"]),
    )


# ------------------------------------------------------------------------------------------- storage


def load_predictions(conn, window_start: date, window_end: date, model_version: str) -> pd.DataFrame:
    """The prediction rows of one model version for collisions dated in the window."""
    rows = prediction_store.scored_in_window(conn, window_start, window_end, model_version)
    return pd.DataFrame.from_records(rows, columns=prediction_store.SCORED_COLUMNS)


def window_model_versions(conn, window_start: date, window_end: date) -> list[str]:
    """Model versions that scored collisions of the window, the one with most rows first."""
    return prediction_store.versions_in_window(conn, window_start, window_end)


def windows_awaiting_quality(
    conn, as_of: date, label_delay_days: int, completed_since: date
) -> list[tuple[date, date, str]]:
    """(start, end, model version) of the monitored windows whose labels have all arrived by `as_of`
    and whose quality is not stored yet or became known on or after `completed_since`, oldest first.

    A monitoring run on its window's last day passes the window's first day as `completed_since`: it
    evaluates the windows completed during its window, plus any backlog. A run on a later day (the day a
    window's labels have all arrived) passes that day, and evaluates the windows completed on it. A rerun
    evaluates the same ones again.
    """
    return metric_store.windows_awaiting_quality(conn, as_of, label_delay_days, completed_since)


def join_truth(predictions: pd.DataFrame, curated: pd.DataFrame) -> pd.DataFrame:
    """Prediction rows with their curated features and labels; every prediction must find its row."""
    _check_columns(curated, ["collision_index"], "curated")
    merged = predictions.merge(
        curated.drop(columns=["date"], errors="ignore"),
        on="collision_index",
        how="left",
        indicator=True,
        validate="one_to_one",
    )
    orphans = merged.loc[merged["_merge"] == "left_only", "collision_index"]
    if len(orphans):
        raise MonitoringError(
            f"{len(orphans)} scored collision(s) have no curated row, e.g. collision_index {orphans.iloc[0]!r}"
        )
    return merged.drop(columns="_merge")


def store_metrics(
    conn,
    window_start: date,
    window_end: date,
    model_version: str,
    family: str,
    metrics: Mapping[str, float | None],
    known_at: date,
) -> int:
    """Replace the window's `family.*` rows (drift or quality) with `metrics`; return the row count.

    The delete and the insert share the caller's transaction, so a reader sees the old rows or
    the new ones. The other family's rows of the window are left as they are.
    """
    outside = [name for name in metrics if not name.startswith(f"{family}.")]
    if outside:
        raise MonitoringError(f"metric name(s) {', '.join(outside)} do not belong to the {family!r} family")
    written = metric_store.replace_family(conn, window_start, window_end, model_version, family,
                                          {name: _defined(value) for name, value in metrics.items()}, known_at)
    log.info("Stored %d %s metrics of %s..%s for model %s.", written, family, window_start, window_end, model_version)
    return written


# ----------------------------------------------------------------------------------------- retraining


