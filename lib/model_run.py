"""The run behind a registered model version, read over MLflow's REST API without importing MLflow.

Monitoring needs three things from the tracking server: the run that produced a model version, that
run's test metrics and the reference sample logged with it. Importing MLflow (and `lib.model`, which
needs it) costs a fresh 04_monitor kernel about 0.8 s of its 8 s budget, so these are plain GET
requests: `model-versions/get` and `runs/get` of the REST API, and the artifact proxy for the
reference. Only a server that does not proxy artifacts (`mlflow server --no-serve-artifacts`; the
embedded server and docker-compose both proxy) makes us fall back to MLflow's client to fetch it.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from urllib.parse import quote, urlencode

import pandas as pd
import urllib3

log = logging.getLogger(__name__)

# Where 02_train logs the reference sample in the model's run (lib.model.log_reference).
REFERENCE_ARTIFACT = "reference/reference.parquet"
PROXIED_SCHEME = "mlflow-artifacts:"
PROXY_ROUTE = "/api/2.0/mlflow-artifacts/artifacts/"

_http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=5, read=60), retries=urllib3.Retry(3, backoff_factor=0.5))


class ModelRunError(RuntimeError):
    """The tracking server cannot give what monitoring needs about a model version."""


@dataclass(frozen=True)
class ModelRun:
    model_name: str
    version: str
    run_id: str
    metrics: dict[str, float]  # the latest value of each metric of the run
    reference: pd.DataFrame


def load_model_run(tracking_uri: str, model_name: str, version: str | int) -> ModelRun:
    """Version `version` of the registered model `model_name`: its run's id, metrics and reference sample."""
    server = tracking_uri.rstrip("/")
    version = str(version)
    query = {"name": model_name, "version": version}
    run_id = _get_json(server, "/api/2.0/mlflow/model-versions/get", query)["model_version"].get("run_id")
    if not run_id:
        raise ModelRunError(f"version {version} of model {model_name!r} on {server} was not registered from a run")
    run = _get_json(server, "/api/2.0/mlflow/runs/get", {"run_id": run_id})["run"]
    metrics = {metric["key"]: float(metric["value"]) for metric in run["data"].get("metrics", [])}
    reference = pd.read_parquet(io.BytesIO(_reference_bytes(server, run["info"]["artifact_uri"])))
    return ModelRun(model_name, version, run_id, metrics, reference)


def _get_json(server: str, route: str, query: dict[str, str]) -> dict:
    url = f"{server}{route}?{urlencode(query)}"
    response = _http.request("GET", url)
    if response.status != 200:
        raise ModelRunError(f"GET {url} answered {response.status}: {_error_message(response.data)}")
    return json.loads(response.data)


def _error_message(body: bytes) -> str:
    try:
        return json.loads(body).get("message", "")
    except ValueError:
        return body[:200].decode(errors="replace")


def _reference_bytes(server: str, artifact_uri: str) -> bytes:
    """The reference parquet of the run whose artifacts live at `artifact_uri`."""
    if not artifact_uri.startswith(PROXIED_SCHEME):
        log.info("The tracking server does not proxy %s; fetching the reference with MLflow's client.", artifact_uri)
        return _reference_bytes_with_mlflow(server, artifact_uri)
    # mlflow-artifacts:/<experiment>/<run>/artifacts or mlflow-artifacts://<host>/<experiment>/...:
    # the server keeps the part after the authority under its artifacts destination.
    path = artifact_uri.removeprefix(PROXIED_SCHEME).lstrip("/")
    if artifact_uri.startswith(PROXIED_SCHEME + "//"):
        path = path.split("/", 1)[1]
    url = f"{server}{PROXY_ROUTE}{quote(path)}/{REFERENCE_ARTIFACT}"
    response = _http.request("GET", url)
    if response.status != 200:
        raise ModelRunError(
            f"the run's reference sample {REFERENCE_ARTIFACT} could not be read from {url} "
            f"({response.status}: {_error_message(response.data)}); was the model logged by 02_train?"
        )
    return response.data


def _reference_bytes_with_mlflow(server: str, artifact_uri: str) -> bytes:
    from mlflow.artifacts import download_artifacts  # 0.8 s to import: only for unproxied artifact stores

    path = download_artifacts(artifact_uri=f"{artifact_uri}/{REFERENCE_ARTIFACT}", tracking_uri=server)
    with open(path, "rb") as file:
        return file.read()
