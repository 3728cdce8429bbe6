"""The model the simulation scores with, as the MLflow registry names it now, and whether it has seen
the simulated days."""

from __future__ import annotations

from datetime import date

import mlflow
from mlflow.exceptions import MlflowException

from lib.config import Settings
from lib.modeling.inference import ModelNotFound
from lib.modeling.model_run import TEST_RANGE_PARAM, range_end


def _model_version(settings: Settings):
    """The registry's version that `settings.model_uri` names now; MlflowException if it cannot say."""
    client = mlflow.MlflowClient(settings.mlflow_tracking_uri)
    if settings.model_version:
        return client.get_model_version(settings.model_name, settings.model_version)
    return client.get_model_version_by_alias(settings.model_name, settings.model_alias)


def champion_version(settings: Settings) -> str | None:
    """The version that `settings.model_uri` names right now; None when the registry cannot say."""
    try:
        return str(_model_version(settings).version)
    except MlflowException:
        return None


def describe_model(settings: Settings, start_date: date) -> tuple[str, bool]:
    """A sentence about the model the simulation starts with, and whether it deserves a warning.

    A model whose test period (from its MLflow run) reaches the simulation's start was trained or
    evaluated on collisions it is about to score: its monitored quality would be too good. A
    registry without the model raises ModelNotFound: every 03_infer would fail.
    """
    try:
        version = _model_version(settings)
        run = mlflow.MlflowClient(settings.mlflow_tracking_uri).get_run(version.run_id)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise ModelNotFound(
                f"looked up {settings.model_uri} in the MLflow registry at {settings.mlflow_tracking_uri}: "
                f"{error.message}. Check MODEL_NAME, MODEL_ALIAS, MODEL_VERSION and MLFLOW_TRACKING_URI in .env; "
                "`make training-workflow` trains, registers and promotes a model"
            ) from None
        return f"Could not look up {settings.model_uri} in MLflow ({error}); the ticks will retry.", True
    last_tested = range_end(run.data.params, TEST_RANGE_PARAM)
    summary = f"The simulation scores with {settings.model_uri}, now version {version.version}"
    if last_tested is None:
        return summary + " (its MLflow run does not say which days it was tested on).", False
    if last_tested >= start_date:
        return (
            summary + f", whose training run used collisions up to {last_tested}, on or after the simulation "
            f"start {start_date}: it has seen the days it will score. Train on earlier years (02_train with "
            f"test_year before {start_date.year}) or pin an older MODEL_VERSION.",
            True,
        )
    return summary + f", trained and tested on collisions up to {last_tested}.", False
