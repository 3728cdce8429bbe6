"""lib.modeling.model_run: what 04_monitor reads about a model version, over REST, agrees with MLflow's own client."""

from __future__ import annotations

import logging
import uuid
from datetime import date

import mlflow
import pandas as pd
import pytest

from lib.data import stats19, synth
from lib.data.curated import build_curated
from lib.modeling.candidates import fit_majority
from lib.modeling.mlflow_model import log_model, log_reference, reference_sample
from lib.modeling.model_run import TEST_RANGE_PARAM, ModelRunError, load_model_run, proxied_url, range_end


@pytest.fixture(scope="module")
def curated(tmp_path_factory) -> pd.DataFrame:
    folder = tmp_path_factory.mktemp("synthetic")
    synth.write_files(synth.generate([2024], 2_000, seed=3), folder)
    year = stats19.load_year(folder.as_uri() + "/", 2024, folder / "cache", progress=False)
    return build_curated(year.collisions, year.vehicles, year.casualties)


def register(settings, curated: pd.DataFrame, artifact_location: str | None = None) -> tuple[str, str, pd.DataFrame]:
    """Log a run as 02_train does (test metrics, the reference sample, the model) and register its model;
    returns the model name, the version and the reference that was logged."""
    model = fit_majority(curated)
    reference = reference_sample(model, curated, rows=300)
    name = "model_run_" + uuid.uuid4().hex[:6]
    client = mlflow.MlflowClient(settings.mlflow_tracking_uri)
    experiment = client.create_experiment(name, artifact_location=artifact_location)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    with mlflow.start_run(experiment_id=experiment):
        mlflow.log_metrics({"test_ksi_pr_auc": 0.31, "test_ksi_roc_auc": 0.5})
        mlflow.log_metric("test_ksi_pr_auc", 0.29)  # logged twice: the latest value counts
        log_reference(reference)
        version = log_model(model, curated, registered_model_name=name).registered_model_version
    return name, str(version), reference


def test_a_version_s_run_metrics_and_reference_match_mlflow_s_client(settings, curated, caplog):
    name, version, logged = register(settings, curated)

    with caplog.at_level(logging.INFO, logger="lib.modeling.model_run"):
        run = load_model_run(settings.mlflow_tracking_uri, name, version)

    assert "does not proxy" not in caplog.text  # read over REST, not with MLflow's client

    client = mlflow.MlflowClient(settings.mlflow_tracking_uri)
    assert run.run_id == mlflow.models.get_model_info(f"models:/{name}/{version}").run_id
    assert run.metrics == client.get_run(run.run_id).data.metrics
    assert run.metrics["test_ksi_pr_auc"] == pytest.approx(0.29)
    pd.testing.assert_frame_equal(run.reference, logged)


def test_artifacts_the_server_does_not_proxy_are_fetched_with_mlflow_s_client(settings, curated, monkeypatch, caplog):
    # An experiment whose artifacts go straight to the bucket, as with `mlflow server --no-serve-artifacts`.
    bucket = settings.lake_uri.removeprefix("s3://").split("/")[0]
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", settings.s3_endpoint_url)
    name, version, logged = register(settings, curated, f"s3://{bucket}/unproxied-{uuid.uuid4().hex[:6]}")

    with caplog.at_level(logging.INFO, logger="lib.modeling.model_run"):
        run = load_model_run(settings.mlflow_tracking_uri, name, version)

    assert "does not proxy" in caplog.text
    pd.testing.assert_frame_equal(run.reference, logged)


def test_an_unknown_version_is_named_in_the_error(settings, curated):
    name, _, _ = register(settings, curated)
    with pytest.raises(ModelRunError, match=rf"name={name}&version=7.*404"):
        load_model_run(settings.mlflow_tracking_uri, name, 7)


@pytest.mark.parametrize(
    ("artifact_uri", "expected"),
    [
        (
            "mlflow-artifacts:/3/abc/artifacts",
            "http://tracker:5000/api/2.0/mlflow-artifacts/artifacts/3/abc/artifacts/x.parquet",
        ),
        (
            "mlflow-artifacts:///3/abc/artifacts",
            "http://tracker:5000/api/2.0/mlflow-artifacts/artifacts/3/abc/artifacts/x.parquet",
        ),
        (
            "mlflow-artifacts://other:8080/3/abc/artifacts",
            "http://other:8080/api/2.0/mlflow-artifacts/artifacts/3/abc/artifacts/x.parquet",
        ),
    ],
)
def test_proxied_artifacts_resolve_like_mlflow_s_client(artifact_uri, expected):
    """MLflow uses the URI's host when it names one, else the tracking server."""
    assert proxied_url("http://tracker:5000", artifact_uri, "x.parquet") == expected


def test_an_unreachable_server_is_named_in_the_error():
    with pytest.raises(ModelRunError, match=r"GET http://127\.0\.0\.1:9/api/2\.0/mlflow/model-versions/get.*failed"):
        load_model_run("http://127.0.0.1:9", "any", 1)


@pytest.mark.parametrize(
    ("logged", "end"),
    [("2017-01-01..2017-12-31", date(2017, 12, 31)), (None, None), ("2017", None), ("2017-01-01..soon", None)],
)
def test_the_end_of_a_logged_period_is_read_or_none(logged, end):
    params = {} if logged is None else {TEST_RANGE_PARAM: logged}
    assert range_end(params, TEST_RANGE_PARAM) == end
