"""The candidates: the model families and the baselines, fitted on the same rows, and how they are chosen and compared.

Every family predicts P(KSI) (what a fitted family is made of, and how it scores: `lib.modeling.model`):
* `boosted`: a HistGradientBoostingClassifier with native categorical codes, monotone constraints on the
  risks the road-safety literature agrees on (`MONOTONE_INCREASING`), regularisation scaled to the
  number of training rows (`boosted_params`), early-stopped on the validation log loss;
* `linear`: an L2-regularised logistic regression on one-hot codes and scaled numbers;
* `textbook`: the same on the agreed risks alone (`FAMILY_INPUTS`), which generalises from few rows;
* `blend`: the mean of the three families' calibrated log-odds, calibrated again.
Each is calibrated by Platt scaling on the validation period (two numbers: a scale and the base rate of
the latest labelled period). The blend is selected unless a single family beats it on validation KSI
PR-AUC with a paired bootstrap interval above zero (`fit_families`).

Baselines, evaluated on exactly the same split and rows:
* `majority`: the training class shares as probabilities; it never alerts and always predicts slight.
* `logistic`: multinomial logistic regression on one-hot categoricals and scaled numerics (missing
  values imputed, with indicators), calibrated by a temperature (one number, `softmax(logits / T)`,
  fitted on validation) and thresholded like the model.
* `original_regression`: the original project's approach, a gradient-boosted regression of
  `casualty_severity_score` (per casualty fatal 3, serious 2, slight 1, summed per collision). Its
  predicted score ranks KSI; classes come from two score thresholds fitted on validation: KSI when the
  score >= the max-F1 KSI threshold, fatal when it is also >= the max-F1 threshold for fatal.

`fit_candidates` fits them all on the training and validation rows of a `lib.modeling.split.Split`;
`evaluate` scores them on its test rows, and `run_metrics` names the results for the MLflow run.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sklearn.pipeline import make_pipeline

from lib.modeling.evaluation import (
    SEVERITIES,
    EvaluationError,
    ModelScores,
    bootstrap_auc,
    is_ksi,
    max_f1_threshold,
    test_metrics,
)
from lib.modeling.model import (
    FAMILY_COLUMNS,
    FastCategoryCodes,
    FastEncoding,
    KsiFamily,
    KsiModel,
    ModelInputError,
    Platt,
    SeverityModel,
    SeverityScoreRegression,
    TemperatureScaled,
    _ConstantFeatures,
    _one_hot_encoder,
    categorical_mask,
    family_matrix,
    feature_matrix,
    ksi_probability,
    on_one_thread,
    severity_of,
)
from lib.modeling.risk_history import HISTORY_FEATURES, RiskHistory, out_of_fold

log = logging.getLogger(__name__)

SCORE_TARGET = "casualty_severity_score"
MODEL = "model"
BASELINES = ("majority", "logistic", "original_regression")
# The original project's regression keeps the settings it was compared with before model families existed.
ORIGINAL_REGRESSION_PARAMS = {
    "learning_rate": 0.1,
    "max_iter": 200,
    "max_leaf_nodes": 31,
    "min_samples_leaf": 40,
    "l2_regularization": 1.0,
    "early_stopping": True,
    "n_iter_no_change": 15,
}
# The risks the road-safety literature agrees on (02_train names the sources): P(KSI) rises with speed,
# darkness and the presence of motorcycles, pedal cycles and pedestrians. The boosted family takes them as
# monotone constraints; the history features are KSI shares, so they only rise with risk too.
TEXTBOOK_RISKS = (
    "speed_limit",
    "darkness",
    "vehicles_motorcycle",
    "vehicles_pedal_cycle",
    "pedestrian_involved",
)
MONOTONE_INCREASING = (*TEXTBOOK_RISKS, *HISTORY_FEATURES)
# Each family's inputs. `textbook` is what the domain already knows and nothing else: the risks above,
# rural roads and single-vehicle collisions.
FAMILY_INPUTS = {
    "boosted": FAMILY_COLUMNS,
    "linear": FAMILY_COLUMNS,
    "textbook": (*TEXTBOOK_RISKS, "urban_or_rural_area", "number_of_vehicles"),
}
FAMILIES = (*FAMILY_INPUTS, "blend")
LINEAR_C = 0.1  # inverse L2 strength on one-hot codes: strong enough for a few thousand rows
SELECTION_RESAMPLES = 200


def _require_classes(severity: np.ndarray, part: str) -> None:
    absent = [c for c in SEVERITIES if not (severity == c).any()]
    if absent:
        raise ModelInputError(
            f"the {part} rows ({len(severity):,}) have no collision of severity "
            f"{absent}; a 3-class model needs all three (widen the training period)"
        )


def _calibrated(estimator, X_val: np.ndarray, y_val: np.ndarray, details: dict) -> SeverityModel:
    calibrated = TemperatureScaled.fit(estimator, X_val, y_val)
    threshold = max_f1_threshold(is_ksi(y_val), ksi_probability(calibrated.predict_proba(X_val)))
    return SeverityModel(calibrated, threshold, details={**details, "temperature": calibrated.temperature})


def boosted_params(rows: int) -> dict:
    """Regularisation that scales with the training rows: a few thousand collisions get stumps-like trees,
    slowly learnt, with large leaves; a national year gets the capacity it can use within the time budget."""
    small = rows < 20_000
    return {
        "learning_rate": 0.05 if small else 0.1,
        "max_iter": 300,
        "max_leaf_nodes": 4 if small else 31,
        "min_samples_leaf": max(40, rows // 200),
        "l2_regularization": 10.0 if small else 1.0,
        "early_stopping": True,
        "n_iter_no_change": 20,
    }


@dataclass
class Families:
    """Every candidate family fitted on the training rows, and the one chosen on the validation rows."""

    selected: str
    models: dict[str, SeverityModel]  # `FAMILIES`, each calibrated and thresholded on validation
    validation: pd.DataFrame  # one row per family: validation KSI ROC-AUC, PR-AUC, Brier, and vs the blend


def _linear() -> LogisticRegression:
    return LogisticRegression(C=LINEAR_C, max_iter=2000)


@on_one_thread
def fit_families(train: pd.DataFrame, validation: pd.DataFrame, seed: int) -> Families:
    """Fit every family on the training rows and calibrate it on validation; `blend` is their calibrated
    mean. The blend is selected unless one family alone beats it on validation KSI PR-AUC with the paired
    bootstrap interval of the difference above zero: with a few thousand rows, a single family's lead is
    mostly chance, and a mean of differently wrong models is the safer bet."""
    X, y = feature_matrix(train), severity_of(train, "training")
    X_val, y_val = feature_matrix(validation), severity_of(validation, "validation")
    _require_classes(y, "training")
    ksi, ksi_val = is_ksi(y), is_ksi(y_val)
    history = RiskHistory.fit(X, ksi)
    A, A_val = family_matrix(X, out_of_fold(X, ksi, seed)), family_matrix(X_val, history.transform(X_val))
    fitted_encoder = _one_hot_encoder(categorical_mask(FAMILY_COLUMNS)).fit(A)
    encoder = FastEncoding.of(fitted_encoder)
    E, E_val = encoder.transform(A), encoder.transform(A_val)
    encodes = [FAMILY_COLUMNS[int(re.search(r"x(\d+)", name)[1])] for name in fitted_encoder.get_feature_names_out()]
    fatal_given_ksi = _linear().fit(E[ksi], y[ksi] == 1)

    params = boosted_params(len(X))
    boosted_columns = [FAMILY_COLUMNS.index(c) for c in FAMILY_INPUTS["boosted"]]
    boosted = HistGradientBoostingClassifier(
        categorical_features=categorical_mask(FAMILY_INPUTS["boosted"]),
        monotonic_cst=[1 if c in MONOTONE_INCREASING else 0 for c in FAMILY_INPUTS["boosted"]],
        random_state=seed,
        **params,
    ).fit(A[:, boosted_columns], ksi, X_val=A_val[:, boosted_columns], y_val=ksi_val)
    log.info("The boosted family stopped after %d iterations.", boosted.n_iter_)
    FastCategoryCodes.install(boosted)
    uncalibrated = {"boosted": KsiFamily(boosted, boosted_columns, Platt(1.0, 0.0))}
    for name in ("linear", "textbook"):  # on the encoding's columns that come from the family's inputs
        columns = [i for i, column in enumerate(encodes) if column in FAMILY_INPUTS[name]]
        uncalibrated[name] = KsiFamily(_linear().fit(E[:, columns], ksi), columns, Platt(1.0, 0.0), encoded=True)
    fitted, logit_val = {}, {}
    for name, family in uncalibrated.items():
        calibration = Platt.fit(family.logit(A_val, E_val), ksi_val)
        fitted[name] = KsiFamily(family.estimator, family.columns, calibration, family.encoded)
        logit_val[name] = calibration.logit(family.logit(A_val, E_val))
    groups = {name: [name] for name in fitted} | {"blend": list(fitted)}

    models, p_val = {}, {}
    for name, members in groups.items():
        logit = np.mean([logit_val[member] for member in members], axis=0)
        calibration = Platt.fit(logit, ksi_val)
        model = KsiModel(history, encoder, [fitted[m] for m in members], calibration, fatal_given_ksi)
        p_val[name] = expit(calibration.logit(logit))
        details = {"family": name, "n_iter": int(boosted.n_iter_), **params}
        models[name] = SeverityModel(model, max_f1_threshold(ksi_val, p_val[name]), details=details)
    table = pd.DataFrame(
        {
            name: {
                "ksi_roc_auc": roc_auc_score(ksi_val, p),
                "ksi_pr_auc": average_precision_score(ksi_val, p),
                "ksi_brier": brier_score_loss(ksi_val, p),
            }
            for name, p in p_val.items()
        }
    ).T
    # Only a family ahead of the blend can be clearly ahead; the bootstrap costs seconds on a national year.
    ahead_of_blend = table["ksi_pr_auc"] >= table.loc["blend", "ksi_pr_auc"]
    contenders = {name: p_val[name] for name in table.index[ahead_of_blend]}
    table[["pr_auc_minus_blend", "low", "high"]] = np.nan
    versus = bootstrap_auc(y_val, contenders, reference="blend", resamples=SELECTION_RESAMPLES, seed=seed)
    versus = versus[versus["metric"].eq("ksi_pr_auc") & versus["comparison"].str.startswith("blend - ")]
    for row in versus.itertuples():
        family = row.comparison.removeprefix("blend - ")
        table.loc[family, ["pr_auc_minus_blend", "low", "high"]] = [-row.estimate, -row.high, -row.low]
    ahead = table[table["low"] > 0]
    selected = str(ahead["ksi_pr_auc"].idxmax()) if len(ahead) else "blend"
    log.info("Validation KSI PR-AUC: %s; selected %s.", table["ksi_pr_auc"].round(3).to_dict(), selected)
    return Families(selected, models, table)


def fit_gbm(train: pd.DataFrame, validation: pd.DataFrame, seed: int) -> SeverityModel:
    """The boosted family alone (see `fit_families`)."""
    return fit_families(train, validation, seed).models["boosted"]


@on_one_thread
def fit_logistic(train: pd.DataFrame, validation: pd.DataFrame) -> SeverityModel:
    X, y = feature_matrix(train), severity_of(train, "training")
    _require_classes(y, "training")
    encode = _one_hot_encoder(categorical_mask())
    pipeline = make_pipeline(encode, LogisticRegression(max_iter=2000)).fit(X, y)
    return _calibrated(pipeline, feature_matrix(validation), severity_of(validation, "validation"), {})


def fit_majority(train: pd.DataFrame) -> SeverityModel:
    y = severity_of(train, "training")
    _require_classes(y, "training")
    prior = DummyClassifier(strategy="prior").fit(np.zeros((len(y), 1)), y)
    return SeverityModel(_ConstantFeatures(prior), alert_threshold=math.inf)


@on_one_thread
def fit_original_regression(train: pd.DataFrame, validation: pd.DataFrame, seed: int) -> SeverityScoreRegression:
    for part, frame in (("training", train), ("validation", validation)):
        if SCORE_TARGET not in frame.columns:
            raise ModelInputError(f"the {part} rows have no {SCORE_TARGET} column (curated target, lib.data.features)")
    X_val, y_val = feature_matrix(validation), severity_of(validation, "validation")
    regressor = HistGradientBoostingRegressor(
        categorical_features=categorical_mask(), random_state=seed, **ORIGINAL_REGRESSION_PARAMS
    )
    regressor.fit(
        feature_matrix(train),
        train[SCORE_TARGET].to_numpy(dtype=float),
        X_val=X_val,
        y_val=validation[SCORE_TARGET].to_numpy(dtype=float),
    )
    score = regressor.predict(X_val)
    ksi_threshold = max_f1_threshold(is_ksi(y_val), score)
    fatal = y_val == 1
    fatal_threshold = max(max_f1_threshold(fatal, score), ksi_threshold) if fatal.any() else math.inf
    return SeverityScoreRegression(regressor, ksi_threshold, fatal_threshold)


@dataclass
class Candidates:
    """The selected model, each family alone and the baselines, fitted on the same training and validation rows."""

    model: SeverityModel
    selected: str  # the family the model is
    families: dict[str, SeverityModel]
    baselines: dict[str, SeverityModel | SeverityScoreRegression]
    validation: pd.DataFrame  # Families.validation: how the selection was made

    def scores(self, frame: pd.DataFrame) -> dict[str, ModelScores]:
        """Every candidate's scores on `frame`: the model (the selected family), the other families, the baselines."""
        return {
            MODEL: self.model.scores(frame, MODEL),
            **{name: family.scores(frame, name) for name, family in self.families.items() if name != self.selected},
            **{name: baseline.scores(frame, name) for name, baseline in self.baselines.items()},
        }


def fit_candidates(train: pd.DataFrame, validation: pd.DataFrame, seed: int) -> Candidates:
    log.info(
        "Fitting %d model families and %d baselines on %s training and %s validation rows.",
        len(FAMILIES),
        len(BASELINES),
        f"{len(train):,}",
        f"{len(validation):,}",
    )
    try:
        families = fit_families(train, validation, seed)
        return Candidates(
            model=families.models[families.selected],
            selected=families.selected,
            families=families.models,
            baselines={
                "majority": fit_majority(train),
                "logistic": fit_logistic(train, validation),
                "original_regression": fit_original_regression(train, validation, seed),
            },
            validation=families.validation,
        )
    except EvaluationError as error:
        raise ModelInputError(str(error)) from None


@dataclass
class Evaluation:
    """Every candidate scored on the same labelled rows (the test period)."""

    severity: np.ndarray
    scores: dict[str, ModelScores]
    metrics: pd.DataFrame  # one row per candidate, one column per metric
    bootstrap: pd.DataFrame  # lib.modeling.evaluation.bootstrap_auc, the model as reference


def evaluate(candidates: Candidates, frame: pd.DataFrame, resamples: int = 1000, seed: int = 0) -> Evaluation:
    severity = severity_of(frame, "test")
    scores = candidates.scores(frame)
    metrics = pd.DataFrame({name: test_metrics(severity, s) for name, s in scores.items()}).T
    try:
        bootstrap = bootstrap_auc(
            severity, {name: s.ksi_score for name, s in scores.items()}, reference=MODEL, resamples=resamples, seed=seed
        )
    except EvaluationError as error:
        raise ModelInputError(str(error)) from None
    return Evaluation(severity, scores, metrics, bootstrap)


def run_metrics(evaluation: Evaluation) -> dict[str, float]:
    """Flat MLflow metric names: `test_<metric>` for the model, `<baseline>_test_<metric>` for each
    baseline, `..._ci_low/_ci_high` for bootstrap bounds, `diff_vs_<baseline>_<metric>` for paired
    differences (model minus baseline). Undefined (NaN) values are left out."""

    def prefix(name: str) -> str:
        return "test_" if name == MODEL else f"{name}_test_"

    flat = {prefix(name) + key: value for name, row in evaluation.metrics.iterrows() for key, value in row.items()}
    for row in evaluation.bootstrap.itertuples():
        if " - " in row.comparison:
            key = f"diff_vs_{row.comparison.split(' - ')[1]}_{row.metric}"
            flat[key] = row.estimate
        else:
            key = prefix(row.comparison) + row.metric
        flat[f"{key}_ci_low"], flat[f"{key}_ci_high"] = row.low, row.high
    return {key: float(value) for key, value in flat.items() if np.isfinite(value)}
