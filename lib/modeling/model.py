"""The collision severity model and its baselines.

The model. Every family predicts P(KSI) from `lib.data.features.FEATURE_COLUMNS` (the one documented feature
list; personal attributes and leakage columns are not in it), plus `darkness` (derived from
`light_conditions`) and the history features of `lib.modeling.risk_history` (KSI shares of earlier training
collisions in the same place, on the same road class there, at the same speed limit), which the
fitted model carries, so a request needs only the features:
* `boosted`: a HistGradientBoostingClassifier with native categorical codes, monotone constraints on the
  risks the road-safety literature agrees on (`MONOTONE_INCREASING`), regularisation scaled to the
  number of training rows (`boosted_params`), early-stopped on the validation log loss;
* `linear`: an L2-regularised logistic regression on one-hot codes and scaled numbers;
* `textbook`: the same on the agreed risks alone (`FAMILY_INPUTS`), which generalises from few rows;
* `blend`: the mean of the three families' calibrated log-odds, calibrated again.
Each is calibrated by Platt scaling on the validation period (two numbers: a scale and the base rate of
the latest labelled period). The blend is selected unless a single family beats it on validation KSI
PR-AUC with a paired bootstrap interval above zero (`fit_families`).
* P(fatal | KSI) comes from a separate regularised logistic regression on the KSI training rows; the
  three class probabilities are P(KSI) split by it, and P(slight) = 1 - P(KSI).
* The KSI alert fires when p_ksi >= the threshold that maximises F1 for KSI on the validation period
  (`lib.modeling.evaluation.max_f1_threshold`).
* predicted_severity follows the alert, so the two never disagree: 3 (slight) without an alert,
  otherwise the more probable of fatal (1) and serious (2).

Baselines, evaluated on exactly the same split and rows:
* `majority`: the training class shares as probabilities; it never alerts and always predicts slight.
* `logistic`: multinomial logistic regression on one-hot categoricals and scaled numerics (missing
  values imputed, with indicators), calibrated by a temperature (one number, `softmax(logits / T)`,
  fitted on validation) and thresholded like the model.
* `original_regression`: the original project's approach, a gradient-boosted regression of
  `casualty_severity_score` (per casualty fatal 3, serious 2, slight 1, summed per collision). Its
  predicted score ranks KSI; classes come from two score thresholds fitted on validation: KSI when the
  score >= the max-F1 KSI threshold, fatal when it is also >= the max-F1 threshold for fatal.

Candidates and baselines are evaluated on the time split of `lib.modeling.split`.

The MLflow model that serves a fitted `SeverityModel` is `lib.modeling.mlflow_model`.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.optimize import minimize_scalar
from scipy.special import expit, log_softmax, softmax
from sklearn.compose import ColumnTransformer
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from threadpoolctl import ThreadpoolController

from lib.data.features import CATEGORICAL_FEATURES, FEATURE_COLUMNS
from lib.modeling.evaluation import (
    PROBABILITY_COLUMNS,
    SEVERITIES,
    EvaluationError,
    ModelScores,
    bootstrap_auc,
    is_ksi,
    max_f1_threshold,
    test_metrics,
)
from lib.modeling.risk_history import HISTORY_FEATURES, RiskHistory, out_of_fold

log = logging.getLogger(__name__)

SEVERITY_TARGET = "collision_severity"
SCORE_TARGET = "casualty_severity_score"
OUTPUT_COLUMNS = [*PROBABILITY_COLUMNS, "p_ksi", "predicted_severity", "ksi_alert"]
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


class ModelInputError(ValueError):
    """The rows given to the model cannot be used; the message names the columns or values."""


# -- features -----------------------------------------------------------------------------------


def feature_matrix(frame: pd.DataFrame, columns: tuple[str, ...] | list[str] = tuple(FEATURE_COLUMNS)) -> np.ndarray:
    """The model's input: `columns` of `frame`, in that order, as float64 with NaN for missing.

    Every other column (identity, targets, leakage, anything else) is ignored by construction.
    """
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ModelInputError(f"the rows lack {len(missing)} feature column(s) the model needs: {', '.join(missing)}")
    selected = frame[list(columns)]
    try:
        matrix = selected.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        bad = [
            c
            for c in columns
            if not pd.api.types.is_numeric_dtype(selected[c].dtype)
            and not pd.api.types.is_bool_dtype(selected[c].dtype)
        ]
        examples = {c: selected[c].dropna().iloc[0] for c in bad if selected[c].notna().any()}
        raise ModelInputError(
            f"feature column(s) {', '.join(bad)} must hold numbers (codes); found for example {examples}"
        ) from None
    infinite = np.isinf(matrix)
    if infinite.any():  # NaN means missing; an infinite value is a bad input (JSON requests can carry one)
        row, column = np.argwhere(infinite)[0]
        raise ModelInputError(
            f"feature column {columns[column]} holds {matrix[row, column]} in row "
            f"{frame.index[row]}; features are finite numbers, or missing"
        )
    return matrix


@functools.cache
def _threadpools() -> ThreadpoolController:
    return ThreadpoolController()


def single_threaded():
    """Fitting and scoring use one thread (OpenMP and BLAS). On the 2-core machine this project shares
    with its services, a second thread spin-waits against other processes: measured under load, one
    row took 9 ms instead of 22 ms, 100k rows ran at 98k instead of 29k rows/s, and a fit on 60k rows
    took 3.6 s instead of 35 s; on an idle machine two threads gain at most about 20%."""
    return _threadpools().limit(limits=1)


def on_one_thread(function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with single_threaded():
            return function(*args, **kwargs)

    return wrapper


def categorical_mask(columns: tuple[str, ...] | list[str] = tuple(FEATURE_COLUMNS)) -> np.ndarray:
    return np.array([c in CATEGORICAL_FEATURES for c in columns])


def severity_of(frame: pd.DataFrame, part: str) -> np.ndarray:
    """The target of a labelled frame, checked to be 1/2/3."""
    if SEVERITY_TARGET not in frame.columns:
        raise ModelInputError(f"the {part} rows have no {SEVERITY_TARGET} column")
    severity = frame[SEVERITY_TARGET].to_numpy()
    bad = ~np.isin(severity, SEVERITIES)
    if bad.any():
        raise ModelInputError(
            f"the {part} rows hold {SEVERITY_TARGET} values outside 1/2/3, e.g. {severity[bad][:3].tolist()}"
        )
    return severity.astype(np.int64)


# -- the decision rule shared by every probabilistic model ----------------------------------------


def ksi_probability(probabilities: np.ndarray) -> np.ndarray:
    return probabilities[:, 0] + probabilities[:, 1]


def decide(probabilities: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(p_ksi, ksi_alert, predicted_severity) from fatal/serious/slight probabilities and the threshold."""
    p_ksi = ksi_probability(probabilities)
    alert = p_ksi >= threshold
    predicted = np.where(alert, np.where(probabilities[:, 0] > probabilities[:, 1], 1, 2), 3)
    return p_ksi, alert, predicted


@dataclass
class TemperatureScaled:
    """`softmax(decision_function(X) / temperature)` of a fitted multiclass estimator."""

    estimator: Any
    temperature: float

    @classmethod
    def fit(cls, estimator, X: np.ndarray, severity: np.ndarray) -> TemperatureScaled:
        """Choose the temperature minimising the 3-class log loss on (X, severity), e.g. validation rows."""
        logits = estimator.decision_function(X)
        rows = np.searchsorted(estimator.classes_, severity)

        def loss(log_temperature: float) -> float:
            return -log_softmax(logits / math.exp(log_temperature), axis=1)[np.arange(len(rows)), rows].mean()

        best = minimize_scalar(loss, bounds=(-3.0, 3.0), method="bounded", options={"xatol": 1e-4})
        return cls(estimator, float(math.exp(best.x)))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return softmax(self.estimator.decision_function(X) / self.temperature, axis=1)


@dataclass
class SeverityModel:
    """A fitted 3-class probability model over `feature_columns` with its KSI alert threshold."""

    classifier: Any  # predict_proba(X) -> n x 3 in the order of SEVERITIES
    alert_threshold: float
    feature_columns: tuple[str, ...] = tuple(FEATURE_COLUMNS)
    details: dict = field(default_factory=dict)

    def probabilities(self, frame: pd.DataFrame) -> np.ndarray:
        X = feature_matrix(frame, self.feature_columns)
        if not len(X):  # scikit-learn refuses zero rows; no rows simply have no probabilities
            return np.empty((0, len(SEVERITIES)))
        with single_threaded():
            return self.classifier.predict_proba(X)

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """`OUTPUT_COLUMNS` for each row of `frame`, on the same index."""
        probabilities = self.probabilities(frame)
        p_ksi, alert, predicted = decide(probabilities, self.alert_threshold)
        return pd.DataFrame(
            {
                "p_fatal": probabilities[:, 0],
                "p_serious": probabilities[:, 1],
                "p_slight": probabilities[:, 2],
                "p_ksi": p_ksi,
                "predicted_severity": predicted.astype(np.int64),
                "ksi_alert": alert,
            },
            index=frame.index,
        )

    def scores(self, frame: pd.DataFrame, name: str) -> ModelScores:
        probabilities = self.probabilities(frame)
        p_ksi, alert, predicted = decide(probabilities, self.alert_threshold)
        return ModelScores(name, p_ksi, predicted, alert, probabilities)


@dataclass
class SeverityScoreRegression:
    """The original project's approach: a regression of the casualty severity score, cut into classes."""

    regressor: Any
    ksi_threshold: float
    fatal_threshold: float
    feature_columns: tuple[str, ...] = tuple(FEATURE_COLUMNS)

    @on_one_thread
    def scores(self, frame: pd.DataFrame, name: str) -> ModelScores:
        score = self.regressor.predict(feature_matrix(frame, self.feature_columns))
        alert = score >= self.ksi_threshold
        predicted = np.where(score >= self.fatal_threshold, 1, np.where(alert, 2, 3))
        return ModelScores(name, score, predicted, alert, None)


# -- fitting --------------------------------------------------------------------------------------


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


def _one_hot_encoder(mask: np.ndarray) -> ColumnTransformer:
    """One-hot codes for the categorical columns of `mask`, median-imputed (with indicators) and scaled numbers."""
    return ColumnTransformer(
        [
            ("categories", OneHotEncoder(handle_unknown="ignore"), np.flatnonzero(mask)),
            (
                "numbers",
                make_pipeline(SimpleImputer(strategy="median", add_indicator=True), StandardScaler()),
                np.flatnonzero(~mask),
            ),
        ]
    )


@dataclass
class FastEncoding:
    """A fitted `_one_hot_encoder`'s transform without scikit-learn's per-call checks, which cost 4 ms
    for a single row (a served request); the same numbers, always as a sparse matrix."""

    categorical: np.ndarray  # columns one-hot encoded, and each one's categories (a NaN category last)
    categories: list[np.ndarray]
    numeric: np.ndarray
    numbers: Any  # the fitted imputer and scaler of the numeric columns

    @classmethod
    def of(cls, fitted: ColumnTransformer) -> FastEncoding:
        (_, onehot, categorical), (_, numbers, numeric) = fitted.transformers_[:2]
        return cls(np.asarray(categorical), list(onehot.categories_), np.asarray(numeric), numbers)

    def transform(self, A: np.ndarray) -> sparse.csr_matrix:
        rows, columns, offset = [], [], 0
        for values, categories in zip(A[:, self.categorical].T, self.categories, strict=True):
            known = categories[~np.isnan(categories)]
            at = np.searchsorted(known, values).clip(0, max(len(known) - 1, 0))
            hit = known[at] == values if len(known) else np.zeros(len(values), dtype=bool)
            column = offset + at
            if len(known) < len(categories):  # missing is a category of its own
                missing = np.isnan(values)
                hit |= missing
                column = np.where(missing, offset + len(known), column)
            rows.append(np.flatnonzero(hit))
            columns.append(column[hit])
            offset += len(categories)
        rows, columns = np.concatenate(rows), np.concatenate(columns)
        onehot = sparse.csr_matrix((np.ones(len(rows)), (rows, columns)), shape=(len(A), offset))
        return sparse.hstack([onehot, self.numbers.transform(A[:, self.numeric])], format="csr")


def darkness(X: np.ndarray) -> np.ndarray:
    """0 daylight, 1 dark with lights lit, 2 dark without lighting or lights unlit, NaN unknown (from the
    2024-specification `light_conditions` codes), so that a model can be told that darker is riskier."""
    light = X[:, FEATURE_COLUMNS.index("light_conditions")]
    return np.select([light == 1, light == 4, np.isin(light, (5, 6))], [0.0, 1.0, 2.0], default=np.nan)


FAMILY_COLUMNS = (*FEATURE_COLUMNS, "darkness", *HISTORY_FEATURES)
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


def family_matrix(X: np.ndarray, history: np.ndarray) -> np.ndarray:
    """The families' input: the features, `darkness`, then the history features (`FAMILY_COLUMNS`)."""
    return np.column_stack([X, darkness(X), history])


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
class Platt:
    """P(KSI) = sigmoid(slope * score + intercept), fitted on validation rows: it rescales a score and also
    moves its base rate to the latest labelled period, which keeps the alert's precision stable."""

    slope: float
    intercept: float

    @classmethod
    def fit(cls, score: np.ndarray, ksi: np.ndarray) -> Platt:
        fitted = LogisticRegression(C=1e4).fit(score.reshape(-1, 1), ksi)
        return cls(float(fitted.coef_[0, 0]), float(fitted.intercept_[0]))

    def logit(self, score: np.ndarray) -> np.ndarray:
        return self.slope * score + self.intercept


@dataclass
class KsiFamily:
    """A fitted binary KSI estimator, calibrated on validation. It reads some columns of `family_matrix`,
    or, with `encoded`, some columns of its one-hot encoding, which `KsiModel` computes once per call."""

    estimator: Any
    columns: list[int]
    calibration: Platt
    encoded: bool = False

    def logit(self, A: np.ndarray, encoded: np.ndarray) -> np.ndarray:
        inputs = encoded[:, self.columns] if self.encoded else A[:, self.columns]
        return self.calibration.logit(self.estimator.decision_function(inputs))


@dataclass
class KsiModel:
    """3-class probabilities from KSI families: P(KSI) is the calibrated mean of the families' calibrated
    log-odds (one family: its own); P(fatal | KSI) from a separate model splits it into fatal and serious."""

    history: RiskHistory
    encoder: FastEncoding  # one-hot codes and scaled numbers of `family_matrix`
    families: list[KsiFamily]
    calibration: Platt
    fatal_given_ksi: Any  # predict_proba over the encoding -> [P(serious), P(fatal)] for a KSI collision

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        A = family_matrix(X, self.history.transform(X))
        encoded = self.encoder.transform(A)
        logit = np.mean([family.logit(A, encoded) for family in self.families], axis=0)
        p_ksi = expit(self.calibration.logit(logit))
        p_fatal = self.fatal_given_ksi.predict_proba(encoded)[:, 1]
        return np.column_stack([p_ksi * p_fatal, p_ksi * (1 - p_fatal), 1 - p_ksi])


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


@dataclass
class _ConstantFeatures:
    """Lets the prior-only baseline take the usual feature matrix."""

    estimator: Any

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.estimator.predict_proba(np.zeros((len(X), 1)))


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
    validation: pd.DataFrame  # lib.modeling.model.Families.validation: how the selection was made

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
