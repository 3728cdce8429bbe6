"""The MLflow model: the pyfunc that serves a fitted `SeverityModel`, its signature, and how it is logged.

`SeverityPyfunc` wraps a fitted `SeverityModel` as an MLflow pyfunc; `log_model` logs it with an explicit
signature (every feature a double, so curated nullable integers and JSON nulls are accepted), an input
example and `lib/` as its code, so that `mlflow.pyfunc.load_model(uri).predict(df)` works in a fresh
process and returns `OUTPUT_COLUMNS`. Extra input columns are ignored; missing feature columns raise an
error that names them. The fitted estimator is pickled with cloudpickle inside the pyfunc (MLflow's
sklearn flavour would default to skops, which refuses these tree types); classes are pickled by module
path, which is why the model carries the whole `lib` package (`LIB_DIR`).

Beside the model, the run holds its reference sample (`reference_sample`, `log_reference`): the
monitoring compares new windows with it.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types import ColSpec, Schema

from lib.data.features import IDENTITY_COLUMNS, LABEL_COLUMNS
from lib.errors import NeedsAction
from lib.modeling.evaluation import PROBABILITY_COLUMNS
from lib.modeling.model import ModelInputError, SeverityModel
from lib.modeling.model_run import REFERENCE_ARTIFACT

LIB_DIR = Path(__file__).resolve().parents[1]  # the whole `lib` package
ALERT_THRESHOLD_PARAM = "alert_threshold"  # run parameter and MLmodel metadata key: the KSI alert threshold


class StaleModel(RuntimeError, NeedsAction):
    """A registered model that this code cannot load: it pickles classes by their module path, and an
    older version of `lib` kept them elsewhere. Retraining makes a version this code can load."""


def load_pyfunc(uri: str):
    """`mlflow.pyfunc.load_model`, saying so clearly when the model was saved by an older version of this code."""
    try:
        return mlflow.pyfunc.load_model(uri, suppress_warnings=True)
    except (ModuleNotFoundError, AttributeError) as error:
        moved = getattr(error, "name", None) or ""
        if not (moved.startswith("lib.") or "Can't get attribute" in str(error)):
            raise
        raise StaleModel(
            f"the model at {uri} was saved by an older version of this code, whose classes have moved "
            f"({type(error).__name__}: {error}); train a version this code can load with `make training-workflow`"
        ) from error


class SeverityPyfunc(mlflow.pyfunc.PythonModel):
    """The MLflow face of a `SeverityModel`: curated rows in, `OUTPUT_COLUMNS` out."""

    def __init__(self, model: SeverityModel):
        self.model = model

    # The pd.DataFrame hint tells MLflow not to add its own type-hint validation (the signature does that).
    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        try:
            return self.model.predict(model_input)
        except ModelInputError as error:
            # The scoring server answers this error code with HTTP 400 and the message; any other
            # exception becomes a generic "unexpected error" that hides what was wrong with the request.
            raise MlflowException(str(error), error_code=INVALID_PARAMETER_VALUE) from None


def signature(model: SeverityModel) -> ModelSignature:
    """Every feature a required double (codes as numbers, NaN for missing); the six output columns."""
    inputs = Schema([ColSpec("double", column) for column in model.feature_columns])
    outputs = Schema(
        [
            *(ColSpec("double", c) for c in (*PROBABILITY_COLUMNS, "p_ksi")),
            ColSpec("long", "predicted_severity"),
            ColSpec("boolean", "ksi_alert"),
        ]
    )
    return ModelSignature(inputs=inputs, outputs=outputs)


def pip_requirements() -> list[str]:
    """The packages the pyfunc needs at load time, pinned to the versions that trained it."""
    from importlib.metadata import version

    packages = ("mlflow", "scikit-learn", "scipy", "numpy", "pandas", "pyarrow", "cloudpickle")
    return [f"{package}=={version(package)}" for package in packages]


def log_model(
    model: SeverityModel, example: pd.DataFrame, registered_model_name: str | None = None, name: str = "model"
):
    """Log (and optionally register) the pyfunc in the active run; returns MLflow's ModelInfo.

    The model carries a copy of `lib/` (sources only) so that it loads where this repository is absent."""
    with tempfile.TemporaryDirectory() as tmp:
        code = Path(tmp) / LIB_DIR.name
        shutil.copytree(LIB_DIR, code, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=SeverityPyfunc(model),
            code_paths=[str(code)],
            signature=signature(model),
            input_example=example[list(model.feature_columns)].astype("float64").head(5),
            pip_requirements=pip_requirements(),
            metadata={ALERT_THRESHOLD_PARAM: model.alert_threshold},
            registered_model_name=registered_model_name,
        )


def reference_sample(model: SeverityModel, frame: pd.DataFrame, rows: int = 5000, seed: int = 0) -> pd.DataFrame:
    """Up to `rows` collisions of `frame` (identity, labels, features) with the model's outputs, by date.

    Logged with the model as `REFERENCE_ARTIFACT`: the monitoring compares new windows with it.
    """
    sample = frame.sample(n=min(rows, len(frame)), random_state=seed).sort_values(["date", "collision_index"])
    keep = [c for c in (*IDENTITY_COLUMNS, *LABEL_COLUMNS, *model.feature_columns) if c in sample.columns]
    sample = sample[keep].reset_index(drop=True)
    return pd.concat([sample, model.predict(sample)], axis=1)


def log_reference(reference: pd.DataFrame) -> None:
    """Log the reference sample to the active run as `REFERENCE_ARTIFACT`."""
    folder, name = REFERENCE_ARTIFACT.rsplit("/", 1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        reference.to_parquet(path, index=False)
        mlflow.log_artifact(str(path), artifact_path=folder)
