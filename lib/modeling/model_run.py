"""The run behind a registered model version, read over MLflow's REST API without importing MLflow.

Monitoring needs three things from the tracking server: the run that produced a model version, that
run's test metrics and the reference sample logged with it. Importing MLflow (and `lib.modeling.mlflow_model`, which
needs it) costs a fresh 04_monitor kernel about 0.8 s of its 8 s budget, so these are plain GET
requests: `model-versions/get` and `runs/get` of the REST API, and the artifact proxy for the
reference. Only a server that does not proxy artifacts (`mlflow server --no-serve-artifacts`; the
embedded server and docker-compose both proxy) makes us fall back to MLflow's client to fetch it.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from urllib.parse import quote, urlencode, urlparse

import pandas as pd
import urllib3

from lib.errors import NeedsAction

log = logging.getLogger(__name__)

# Where 02_train logs the reference sample in the model's run (lib.modeling.mlflow_model.log_reference).
REFERENCE_ARTIFACT = "reference/reference.parquet"
# Run parameters "first..last" with the periods 02_train validated and tested on (lib.modeling.split.Split).
VALIDATION_RANGE_PARAM = "validation_range"
TEST_RANGE_PARAM = "test_range"
PROXIED_SCHEME = "mlflow-artifacts:"
PROXY_ROUTE = "/api/2.0/mlflow-artifacts/artifacts/"

_http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=5, read=60), retries=urllib3.Retry(3, backoff_factor=0.5))


class ModelRunError(RuntimeError):
    """The tracking server cannot give what monitoring needs about a model version."""


class ModelRunNotFound(ModelRunError, NeedsAction):
    """The tracking server has no such model version or run: MODEL_NAME or MLFLOW_TRACKING_URI must change."""


@dataclass(frozen=True)
class ModelRun:
    run_id: str
    metrics: dict[str, float]  # the latest value of each metric of the run
    reference: pd.DataFrame


def load_model_run(tracking_uri: str, model_name: str, version: str | int) -> ModelRun:
    """Version `version` of the registered model `model_name`: its run's id, metrics and reference sample."""
    server = tracking_uri.rstrip("/")
    query = {"name": model_name, "version": str(version)}
    run_id = _get(server, "/api/2.0/mlflow/model-versions/get", query)["model_version"].get("run_id")
    if not run_id:
        raise ModelRunError(f"version {version} of model {model_name!r} on {server} was not registered from a run")
    run = _get(server, "/api/2.0/mlflow/runs/get", {"run_id": run_id})["run"]
    metrics = {metric["key"]: float(metric["value"]) for metric in run["data"].get("metrics", [])}
    artifact_uri = run["info"]["artifact_uri"]
    if artifact_uri.startswith(PROXIED_SCHEME):
        reference_bytes = _get(proxied_url(server, artifact_uri, REFERENCE_ARTIFACT), json_body=False)
    else:
        log.info("The tracking server does not proxy %s; fetching the reference with MLflow's client.", artifact_uri)
        reference_bytes = _reference_bytes_with_mlflow(server, artifact_uri)
    return ModelRun(run_id, metrics, pd.read_parquet(io.BytesIO(reference_bytes)))


def range_end(params: Mapping[str, str], name: str) -> date | None:
    """The last day of the "first..last" run parameter `name`; None when it is absent or malformed."""
    _, separator, last = params.get(name, "").partition("..")
    try:
        return date.fromisoformat(last) if separator else None
    except ValueError:
        return None


def proxied_url(server: str, artifact_uri: str, path: str) -> str:
    """The HTTP address of `path` under an `mlflow-artifacts:` URI, as MLflow's client resolves it: the
    URI's host if it names one, else the tracking server; the URI's path below the proxy route."""
    parsed = urlparse(artifact_uri)
    base = f"{urlparse(server).scheme}://{parsed.netloc}" if parsed.netloc else server
    return f"{base}{PROXY_ROUTE}{quote(parsed.path.strip('/'))}/{path}"


def _get(server_or_url: str, route: str = "", query: dict[str, str] | None = None, json_body: bool = True):
    """GET a REST route (its JSON) or an artifact (its bytes); any failure is a ModelRunError naming the URL."""
    url = f"{server_or_url}{route}" + (f"?{urlencode(query)}" if query else "")
    try:
        response = _http.request("GET", url)
    except urllib3.exceptions.HTTPError as error:
        raise ModelRunError(f"GET {url} failed: {error}") from error
    if response.status == 404:
        raise ModelRunNotFound(f"GET {url} answered 404: {_error_message(response.data)}; check MODEL_NAME and "
                               "MLFLOW_TRACKING_URI in .env")
    if response.status != 200:
        raise ModelRunError(f"GET {url} answered {response.status}: {_error_message(response.data)}")
    if not json_body:
        return response.data
    try:
        return json.loads(response.data)
    except ValueError as error:
        raise ModelRunError(f"GET {url} answered with something other than JSON: {response.data[:200]!r}") from error


def _error_message(body: bytes) -> str:
    try:
        return json.loads(body).get("message", "")
    except ValueError:
        return body[:200].decode(errors="replace")


def _reference_bytes_with_mlflow(server: str, artifact_uri: str) -> bytes:
    from mlflow.artifacts import download_artifacts  # 0.8 s to import: only for unproxied artifact stores

    with tempfile.TemporaryDirectory() as tmp:
        path = download_artifacts(f"{artifact_uri}/{REFERENCE_ARTIFACT}", dst_path=tmp, tracking_uri=server)
        return Path(path).read_bytes()
