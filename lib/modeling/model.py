"""The collision severity model: what a fitted model is made of, and how it scores.

Every model predicts from `lib.data.features.FEATURE_COLUMNS` (the one documented feature list; personal
attributes and leakage columns are not in it). The model families (`lib.modeling.candidates`) also see
`darkness` (derived from `light_conditions`) and the history features of `lib.modeling.risk_history` (KSI
shares of earlier training collisions in the same place, on the same road class there, at the same speed
limit), which the fitted model carries, so a request needs only the features (`family_matrix`):
* P(KSI) is the mean of the members' calibrated log-odds (`KsiFamily`: one family alone, or the three of
  the blend), calibrated again (`KsiModel`). Each calibration is Platt scaling on the validation period
  (`Platt`, two numbers: a scale and the base rate of the latest labelled period).
* P(fatal | KSI) comes from a separate regularised logistic regression on the KSI training rows; the
  three class probabilities are P(KSI) split by it, and P(slight) = 1 - P(KSI).
* The KSI alert fires when p_ksi >= the threshold that maximises F1 for KSI on the validation period
  (`lib.modeling.evaluation.max_f1_threshold`).
* predicted_severity follows the alert, so the two never disagree: 3 (slight) without an alert,
  otherwise the more probable of fatal (1) and serious (2) (`decide`).

The baselines' fitted forms are here too: `_ConstantFeatures` (majority), `TemperatureScaled` (logistic)
and `SeverityScoreRegression` (the original regression). Every class a fitted model is made of lives in
this module: the MLflow model (`lib.modeling.mlflow_model`) pickles them by module path. How they are
fitted, compared and chosen is `lib.modeling.candidates`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.optimize import minimize_scalar
from scipy.special import expit, log_softmax, softmax
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from threadpoolctl import ThreadpoolController

from lib.data.features import CATEGORICAL_FEATURES, FEATURE_COLUMNS
from lib.modeling.evaluation import PROBABILITY_COLUMNS, SEVERITIES, ModelScores
from lib.modeling.risk_history import HISTORY_FEATURES, RiskHistory

SEVERITY_TARGET = "collision_severity"
OUTPUT_COLUMNS = [*PROBABILITY_COLUMNS, "p_ksi", "predicted_severity", "ksi_alert"]


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
        return self.matrix_probabilities(feature_matrix(frame, self.feature_columns))

    def matrix_probabilities(self, X: np.ndarray) -> np.ndarray:
        """Probabilities for `feature_matrix` rows of `feature_columns` (the server builds them itself)."""
        if not len(X):  # scikit-learn refuses zero rows; no rows simply have no probabilities
            return np.empty((0, len(SEVERITIES)))
        with single_threaded():
            return self.classifier.predict_proba(X)

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """`OUTPUT_COLUMNS` for each row of `frame`, on the same index."""
        return self.predict_matrix(feature_matrix(frame, self.feature_columns), frame.index)

    def predict_matrix(self, X: np.ndarray, index: pd.Index | None = None) -> pd.DataFrame:
        """`OUTPUT_COLUMNS` for each row of a `feature_matrix` of `feature_columns`."""
        probabilities = self.matrix_probabilities(X)
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
            index=index,
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


# -- what the families' models are made of -------------------------------------------------------


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
    numeric: np.ndarray  # columns imputed by their median, with a missing indicator where training had gaps
    medians: np.ndarray  # per numeric column; NaN: a column empty in training, which the imputer dropped
    indicated: np.ndarray  # positions among `numeric` that get a missing indicator
    mean: np.ndarray  # the scaler's, over the imputed columns then the indicators
    scale: np.ndarray

    @classmethod
    def of(cls, fitted: ColumnTransformer) -> FastEncoding:
        (_, onehot, categorical), (_, numbers, numeric) = fitted.transformers_[:2]
        return cls(np.asarray(categorical), list(onehot.categories_), np.asarray(numeric),
                   **_imputed_and_scaled(numbers))

    def __setstate__(self, state: dict) -> None:
        if "numbers" in state:  # pickled before the imputer and scaler were unpacked: models registered earlier
            state = {**state, **_imputed_and_scaled(state.pop("numbers"))}
        self.__dict__.update(state)

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
        numbers = A[:, self.numeric]
        kept = ~np.isnan(self.medians)
        imputed = np.where(np.isnan(numbers), self.medians, numbers)[:, kept]
        indicators = np.isnan(numbers[:, self.indicated])
        scaled = (np.hstack([imputed, indicators]) - self.mean) / self.scale
        rows.append(np.repeat(np.arange(len(A)), scaled.shape[1]))
        columns.append(np.tile(np.arange(offset, offset + scaled.shape[1]), len(A)))
        values = np.concatenate([np.ones(sum(len(r) for r in rows[:-1])), scaled.ravel()])
        shape = (len(A), offset + scaled.shape[1])
        return sparse.csr_matrix((values, (np.concatenate(rows), np.concatenate(columns))), shape=shape)


def _imputed_and_scaled(numbers) -> dict[str, np.ndarray]:
    """The numbers a fitted median imputer (with missing indicators) and standard scaler apply."""
    imputer, scaler = numbers[0], numbers[-1]
    indicated = imputer.indicator_.features_ if imputer.indicator_ is not None else []
    return {"medians": imputer.statistics_, "indicated": np.asarray(indicated, dtype=int),
            "mean": scaler.mean_, "scale": scaler.scale_}


@dataclass
class FastCategoryCodes:
    """A fitted HistGradientBoosting model's own input preparation (its categorical columns through an
    OrdinalEncoder, unknown or missing codes as NaN, then the numeric columns) without scikit-learn's
    ColumnTransformer, which spends 3.6 ms of a served request's 4 ms in the model on per-call checks.
    `install` puts it where the estimator looks for its preprocessor; the numbers are the same."""

    categorical: np.ndarray  # input columns, in the order the encoder outputs them, and their categories
    categories: list[np.ndarray]
    numeric: np.ndarray

    @classmethod
    def install(cls, estimator) -> None:
        if estimator._preprocessor is None:  # no categorical column: scikit-learn only validates
            return
        (_, encoder, categorical), (_, _, numeric) = estimator._preprocessor.transformers_[:2]
        known = [categories[~np.isnan(categories)] for categories in encoder.categories_]
        estimator._preprocessor = cls(np.flatnonzero(categorical), known, np.flatnonzero(numeric))

    def transform(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        codes = np.empty((len(X), len(self.categorical) + len(self.numeric)))
        for position, (column, categories) in enumerate(zip(self.categorical, self.categories, strict=True)):
            values = X[:, column]
            at = np.searchsorted(categories, values).clip(0, max(len(categories) - 1, 0))
            hit = categories[at] == values if len(categories) else np.zeros(len(values), dtype=bool)
            codes[:, position] = np.where(hit, at, np.nan)
        codes[:, len(self.categorical):] = X[:, self.numeric]
        return codes


def darkness(X: np.ndarray) -> np.ndarray:
    """0 daylight, 1 dark with lights lit, 2 dark without lighting or lights unlit, NaN unknown (from the
    2024-specification `light_conditions` codes), so that a model can be told that darker is riskier."""
    light = X[:, FEATURE_COLUMNS.index("light_conditions")]
    return np.select([light == 1, light == 4, np.isin(light, (5, 6))], [0.0, 1.0, 2.0], default=np.nan)


FAMILY_COLUMNS = (*FEATURE_COLUMNS, "darkness", *HISTORY_FEATURES)


def family_matrix(X: np.ndarray, history: np.ndarray) -> np.ndarray:
    """The families' input: the features, `darkness`, then the history features (`FAMILY_COLUMNS`)."""
    return np.column_stack([X, darkness(X), history])


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
class _ConstantFeatures:
    """Lets the prior-only baseline take the usual feature matrix."""

    estimator: Any

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.estimator.predict_proba(np.zeros((len(X), 1)))
