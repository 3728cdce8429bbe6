"""Batch inference: score a window of curated collisions and store one prediction per collision.

A window is a range of collision dates, both ends included. `lib.data.curated.read_window` reads only the curated
year partitions the window touches and drops the target columns, so the truth never reaches the
model. `resolve_model` turns a registry URI (`models:/name@alias` or `models:/name/3`) into the
version it points at now, with the KSI alert threshold that version was trained with; scoring then
uses that pinned version, so a promotion during a run cannot mix two models in one window.

Two scorers give the same predictions:
* `InProcessScorer` loads the model once, in this process (the fast path: no serialisation);
* `HttpScorer` posts batches to a model server (`scripts/serve.py`). It retries what a restarting
  server looks like (connection refused, HTTP 502/503/504) with bounded exponential backoff and
  fails at once, with the server's message, on any other error. The server is trusted to serve the
  version `resolve_model` names: one started on the alias follows it within MODEL_CHECK_SECONDS of a
  promotion (its GET /version says which version it serves).

`write_predictions` replaces the window's rows for that model version in one transaction (delete,
then insert with ON CONFLICT ... DO UPDATE), so a rerun never duplicates rows and a reader never
sees the window half-written.
"""

from __future__ import annotations

import logging
import re
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import numpy as np
import pandas as pd
import requests
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from tqdm import tqdm

from lib.data.curated import Window
from lib.errors import NeedsAction
from lib.modeling.evaluation import PROBABILITY_COLUMNS
from lib.modeling.mlflow_model import ALERT_THRESHOLD_PARAM, load_pyfunc
from lib.modeling.model import OUTPUT_COLUMNS
from lib.store import predictions as stored_predictions
from lib.store.db import session

log = logging.getLogger(__name__)

MODEL_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))/?")
TRANSIENT_STATUS = (502, 503, 504)



class InferenceError(RuntimeError):
    """Inference cannot go on; the message names the model, window, server or rows concerned."""


class ModelNotFound(InferenceError, NeedsAction):
    """The registry has no such model, version or alias: train and promote one, or fix the MODEL_* settings."""


class ScoringError(InferenceError):
    """The model server refused a batch or stayed unreachable; the message carries its answer."""


# -- the model --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelRef:
    """One registered model version, as the registry describes it now."""

    name: str
    version: str
    run_id: str
    alert_threshold: float
    input_columns: tuple[str, ...]
    requested_uri: str

    @property
    def uri(self) -> str:
        """The pinned URI of this version (an alias may move; a version does not)."""
        return f"models:/{self.name}/{self.version}"

    def describe(self) -> str:
        via = "" if self.requested_uri == self.uri else f" ({self.requested_uri})"
        return f"{self.name} version {self.version}{via}, KSI alert threshold {self.alert_threshold:.4f}"


def resolve_model(model_uri: str, tracking_uri: str | None = None) -> ModelRef:
    """The version `model_uri` names now, its alert threshold and its input columns (from the signature)."""
    match = MODEL_URI.fullmatch(model_uri)
    if not match:
        raise InferenceError(f"model_uri {model_uri!r} must name a registered model: models:/<name>@<alias> "
                             "or models:/<name>/<version>; predictions are stored per registry version")
    name = match["name"]
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        if match["alias"]:
            version = client.get_model_version_by_alias(name, match["alias"])
        else:
            version = client.get_model_version(name, match["version"])
        params = client.get_run(version.run_id).data.params
        # From the version's artifact location: a `models:/` URI would be resolved against MLflow's global
        # registry URI, whatever this client was given.
        location = client.get_model_version_download_uri(name, version.version)
        mlmodel = mlflow.artifacts.download_artifacts(artifact_uri=f"{location}/MLmodel", tracking_uri=tracking_uri)
    except MlflowException as error:
        registry = tracking_uri or mlflow.get_registry_uri()
        looked_up = f"looked up {model_uri} in the MLflow registry at {registry}: {error.message}"
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise ModelNotFound(f"{looked_up}. Check MODEL_NAME, MODEL_ALIAS, MODEL_VERSION and MLFLOW_TRACKING_URI "
                                f"in .env; `make training-workflow` trains, registers and promotes a model") from error
        raise InferenceError(looked_up) from error
    if ALERT_THRESHOLD_PARAM not in params:
        raise InferenceError(f"{name} version {version.version}: its run {version.run_id} has no "
                             f"{ALERT_THRESHOLD_PARAM!r} parameter (02_train logs it), so alerts cannot be recorded")
    signature = Model.load(mlmodel).signature
    if signature is None:
        raise InferenceError(f"{name} version {version.version} was logged without a signature")
    return ModelRef(name, str(version.version), version.run_id, float(params[ALERT_THRESHOLD_PARAM]),
                    tuple(signature.inputs.input_names()), model_uri)


# -- scoring ---------------------------------------------------------------------------------------------


def _as_predictions(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[OUTPUT_COLUMNS].astype({**dict.fromkeys([*PROBABILITY_COLUMNS, "p_ksi"], "float64"),
                                         "predicted_severity": "int64", "ksi_alert": "bool"})


def no_predictions() -> pd.DataFrame:
    """The predictions of an empty window: `OUTPUT_COLUMNS` and no rows."""
    return _as_predictions(pd.DataFrame({c: [] for c in OUTPUT_COLUMNS}))


def warn_if_environment_differs(model_dir: Path, model: ModelRef) -> None:
    """Log each package whose installed version differs from the version the model was trained with.

    MLflow's own check (skipped when loading) maps every installed distribution to its modules, which
    costs over a second per load; the model pins its few packages, so looking those up is enough.
    """
    requirements = model_dir / "requirements.txt"
    lines = requirements.read_text().splitlines() if requirements.exists() else []
    for line in lines:
        package, pinned, wanted = line.partition("==")
        if not pinned:
            continue
        try:
            installed = metadata.version(package.strip())
        except metadata.PackageNotFoundError:
            installed = "not installed"
        if installed != wanted.strip():
            log.warning("%s version %s was trained with %s==%s; this environment has %s.",
                        model.name, model.version, package.strip(), wanted.strip(), installed)


class InProcessScorer:
    """The model loaded once into this process."""

    def __init__(self, model: ModelRef, tracking_uri: str | None = None):
        began = time.perf_counter()
        # The model's files (and the code it imports) stay on disk as long as the scorer lives.
        self._folder = tempfile.TemporaryDirectory(prefix="asf-model-")
        local = mlflow.artifacts.download_artifacts(artifact_uri=model.uri, dst_path=self._folder.name,
                                                    tracking_uri=tracking_uri, registry_uri=tracking_uri)
        warn_if_environment_differs(Path(local), model)
        self.pyfunc = load_pyfunc(local)
        self.model = model
        log.info("Loaded %s in-process in %.1f s.", model.describe(), time.perf_counter() - began)

    def score(self, rows: pd.DataFrame) -> pd.DataFrame:
        if rows.empty:
            return no_predictions()
        output = self.pyfunc.predict(rows[list(self.model.input_columns)])
        return _as_predictions(output).reset_index(drop=True)


def invocations_url(url: str) -> str:
    """`http://host:port` or `.../invocations` -> the scoring endpoint."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise InferenceError(f"predict_url {url!r} must be an http(s) URL such as http://127.0.0.1:5001")
    return url if parsed.path.rstrip("/").endswith("/invocations") else url.rstrip("/") + "/invocations"


def server_message(response: requests.Response, limit: int = 600) -> str:
    """The error text of a server answer, shortened in the middle (MLflow repeats the input in it)."""
    try:
        body = response.json()
        text = body.get("message", response.text) if isinstance(body, dict) else response.text
    except ValueError:
        text = response.text
    text = " ".join(str(text).split())
    return text if len(text) <= limit else f"{text[: limit // 3]} … {text[-(limit - limit // 3):]}"


class HttpScorer:
    """Posts rows in batches to the model server (scripts/serve.py) and returns its predictions.

    Transient failures (connection refused or reset, HTTP 502/503/504) are retried up to `attempts`
    times per batch, waiting `backoff`, 2 x `backoff`, ... seconds, at most `max_backoff` each. Any
    other error answer raises ScoringError at once with the server's message.
    """

    def __init__(self, url: str, input_columns: list[str] | tuple[str, ...], batch_size: int = 5000,
                 attempts: int = 6, backoff: float = 0.5, max_backoff: float = 8.0, timeout: float = 120.0,
                 progress: bool = True):
        if batch_size < 1 or attempts < 1:
            raise ValueError(f"batch_size ({batch_size}) and attempts ({attempts}) must be at least 1")
        self.url = invocations_url(url)
        self.input_columns = list(input_columns)
        self.batch_size, self.attempts, self.timeout = batch_size, attempts, timeout
        self.backoff, self.max_backoff, self.progress = backoff, max_backoff, progress
        self.http = requests.Session()

    def score(self, rows: pd.DataFrame) -> pd.DataFrame:
        missing = [c for c in self.input_columns if c not in rows.columns]
        if missing:
            raise InferenceError(f"the rows lack the model's input column(s) {', '.join(missing)}")
        starts = range(0, len(rows), self.batch_size)
        parts = [self._score_batch(rows.iloc[first:first + self.batch_size], first)
                 for first in tqdm(starts, desc="scoring batches", unit="batch",
                                   disable=not self.progress or len(starts) < 2)]
        if not parts:
            return no_predictions()
        return pd.concat(parts, ignore_index=True)

    def _score_batch(self, batch: pd.DataFrame, first: int) -> pd.DataFrame:
        # 15 decimals: every feature value (codes, counts, coordinates) reaches the server unchanged.
        split = batch[self.input_columns].astype("float64").to_json(orient="split", index=False, double_precision=15)
        body = f'{{"dataframe_split": {split}}}'.encode()
        where = f"rows {first:,}-{first + len(batch) - 1:,}"
        response = self._post(body, where)
        try:
            records = response.json()["predictions"]
        except (ValueError, KeyError, TypeError):
            raise ScoringError(f"{self.url} answered {where} without a 'predictions' list: "
                               f"{response.text[:300]!r}") from None
        if len(records) != len(batch):
            raise ScoringError(f"{self.url} returned {len(records)} predictions for {len(batch)} rows ({where})")
        return _as_predictions(pd.DataFrame.from_records(records))

    def _post(self, body: bytes, where: str) -> requests.Response:
        began = time.monotonic()
        for attempt in range(1, self.attempts + 1):
            try:
                response = self.http.post(self.url, data=body, headers={"Content-Type": "application/json"},
                                          timeout=self.timeout)
            except requests.ConnectionError as error:
                problem = f"cannot connect ({type(error).__name__})"
            except requests.Timeout:
                raise ScoringError(f"{self.url} did not answer {where} within {self.timeout:g} s; "
                                   "use a smaller batch_size or a longer timeout") from None
            else:
                if response.ok:
                    return response
                if response.status_code not in TRANSIENT_STATUS:
                    raise ScoringError(f"{self.url} refused {where} with HTTP {response.status_code}: "
                                       f"{server_message(response)}")
                problem = f"HTTP {response.status_code}"
            if attempt == self.attempts:
                raise ScoringError(f"{self.url} is unavailable: {problem} on each of {attempt} attempts over "
                                   f"{time.monotonic() - began:.1f} s for {where}; is the model server running "
                                   "(scripts/serve.py)?")
            delay = min(self.backoff * 2 ** (attempt - 1), self.max_backoff)
            log.warning("The model server at %s: %s (attempt %d of %d); retrying in %.1f s.",
                        self.url, problem, attempt, self.attempts, delay)
            time.sleep(delay)
        raise AssertionError("unreachable")


# -- storage --------------------------------------------------------------------------------------------------


def write_predictions(database_url: str, window: Window, model: ModelRef, collisions: pd.DataFrame,
                      predictions: pd.DataFrame) -> int:
    """Replace `model`'s predictions for the collisions dated in `window`; return the rows written.

    `predictions` holds `OUTPUT_COLUMNS` for `collisions`, row for row. Rows of this version for
    collisions dated in the window but no longer in `collisions` are removed too.
    """
    if len(collisions) != len(predictions):
        raise InferenceError(f"{len(predictions)} predictions for {len(collisions)} collisions of window {window}")
    rows = []
    if len(collisions):
        indexes = collisions["collision_index"].astype(str)
        duplicated = indexes[indexes.duplicated()]
        if not duplicated.empty:
            raise InferenceError(f"window {window}: collision_index {duplicated.iloc[0]!r} appears more than once")
        dates = pd.to_datetime(collisions["date"])
        outside = (dates.dt.date < window.start) | (dates.dt.date > window.end)
        if outside.any():
            raise InferenceError(f"collision {indexes[outside].iloc[0]} is dated {dates[outside].iloc[0]:%Y-%m-%d}, "
                                 f"outside window {window}")
        out = predictions.reset_index(drop=True)
        rows = list(zip(
            indexes.tolist(), [model.version] * len(out), dates.dt.date.tolist(), [window.start] * len(out),
            [window.end] * len(out), *(out[c].astype("float64").tolist() for c in [*PROBABILITY_COLUMNS, "p_ksi"]),
            out["predicted_severity"].astype("int64").tolist(), out["ksi_alert"].astype(bool).tolist(),
            [model.alert_threshold] * len(out), *(_or_none(collisions[c]) for c in ("latitude", "longitude")),
            strict=True,
        ))  # fmt: skip
    with session(database_url) as conn:
        replaced = stored_predictions.replace_window(conn, model.version, window.start, window.end, rows)
    log.info("Stored %s predictions of %s version %s for window %s (%s earlier rows replaced).",
             f"{len(rows):,}", model.name, model.version, window, f"{replaced:,}")
    return len(rows)


def _or_none(values: pd.Series) -> list[float | None]:
    """Floats, with None (SQL NULL) where a value is missing, not NaN."""
    return [None if pd.isna(value) else float(value) for value in values]


def summary(predictions: pd.DataFrame) -> dict[str, float]:
    """Collisions scored, alerts raised and the spread of P(KSI), for the run's report."""
    p_ksi = predictions["p_ksi"].to_numpy(dtype=float)
    quantiles = np.quantile(p_ksi, [0.1, 0.5, 0.9]) if len(p_ksi) else [np.nan] * 3
    return {
        "collisions": len(predictions),
        "alerts": int(predictions["ksi_alert"].sum()),
        "alert_share": float(predictions["ksi_alert"].mean()) if len(predictions) else np.nan,
        "mean_p_ksi": float(p_ksi.mean()) if len(p_ksi) else np.nan,
        **{f"p_ksi_p{q}": float(v) for q, v in zip((10, 50, 90), quantiles, strict=True)},
    }
