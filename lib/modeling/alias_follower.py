"""The model a server worker scores with, and how it follows a registry alias without a restart.

`ServedModel` holds the loaded pyfunc with its version, input features and fitted model as one immutable `Loaded`. A
request takes `served.current` once and scores with it to the end, so a swap never changes the model
under a request in flight; the old model is freed when the last request holding it finishes.

`AliasFollower` runs in each uvicorn worker of a server started on an alias (`make serve` without
MODEL_VERSION). Every `MODEL_CHECK_SECONDS` it asks the registry which version the alias names. When that
changed, it downloads and loads the new version in a thread, off the request path, then swaps it in and
logs one sentence. A check that fails (the registry unreachable, the alias removed, a version that will
not load) is logged and tried again at the next interval, while the old model keeps serving. A server
started on a pinned version has no follower: it never moves.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass

import mlflow
from mlflow.pyfunc import PyFuncModel

from lib.modeling.mlflow_model import load_pyfunc
from lib.modeling.model import SeverityModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Loaded:
    """One loaded model version and the input features its signature names."""

    model: PyFuncModel
    version: str
    features: tuple[str, ...]
    scorer: SeverityModel  # the fitted model inside the pyfunc, which the server calls directly

    @classmethod
    def of(cls, model: PyFuncModel, version: str) -> Loaded:
        features = tuple(model.metadata.get_input_schema().input_names())
        return cls(model, str(version), features, model.unwrap_python_model().model)


class ServedModel:
    """The version a worker serves now; replaced whole (one attribute assignment), never changed in place."""

    def __init__(self, model: PyFuncModel, version: str):
        self.current = Loaded.of(model, version)

    def swap(self, model: PyFuncModel, version: str) -> Loaded:
        """Serve `model` from now on; returns what was served before."""
        previous, self.current = self.current, Loaded.of(model, version)
        return previous


class AliasFollower:
    """Keeps `served` on the version that `models:/<model_name>@<alias>` names in the registry at `registry_uri`."""

    def __init__(self, served: ServedModel, model_name: str, alias: str, interval: float, registry_uri: str,
                 logger: logging.Logger = log):
        self.served, self.model_name, self.alias = served, model_name, alias
        self.interval, self.registry_uri, self.log = interval, registry_uri, logger
        self._folder: str | None = None  # the files of the version this follower loaded last

    @property
    def alias_uri(self) -> str:
        return f"models:/{self.model_name}@{self.alias}"

    def check(self) -> bool:
        """One check, blocking (the server runs it in a thread). True when a new version now serves."""
        serving = self.served.current.version
        client = mlflow.MlflowClient(tracking_uri=self.registry_uri, registry_uri=self.registry_uri)
        try:
            version = str(client.get_model_version_by_alias(self.model_name, self.alias).version)
        except Exception as error:  # whatever the registry answers, or not: the old model keeps serving
            self.log.warning("Could not look up %s in the MLflow registry at %s (%s); still serving version %s, "
                             "checking again in %g s.", self.alias_uri, self.registry_uri, _short(error), serving,
                             self.interval)
            return False
        if version == serving:
            return False
        began = time.perf_counter()
        folder = tempfile.mkdtemp(prefix="asf-served-")
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{self.model_name}/{version}",
                                                        dst_path=folder, tracking_uri=self.registry_uri,
                                                        registry_uri=self.registry_uri)
            model = load_pyfunc(local)
        except Exception as error:  # a version that does not load must not stop the one that serves
            shutil.rmtree(folder, ignore_errors=True)
            self.log.warning("%s now names version %s, which did not load (%s); still serving version %s, trying "
                             "again in %g s.", self.alias_uri, version, _short(error), serving, self.interval)
            return False
        previous = self.served.swap(model, version)
        # Requests still holding the previous model have it in memory; its files are no longer read.
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
        self._folder = folder
        self.log.info("%s moved from version %s to %s; now serving version %s (loaded in %.1f s by worker "
                      "process %d).", self.alias_uri, previous.version, version, version,
                      time.perf_counter() - began, os.getpid())
        return True

    async def follow(self) -> None:
        """Check every `interval` seconds until cancelled, off the event loop."""
        self.log.info("Following %s: checking the registry every %g s.", self.alias_uri, self.interval)
        while True:
            await asyncio.sleep(self.interval)
            await asyncio.to_thread(self.check)


def _short(error: Exception, limit: int = 300) -> str:
    text = " ".join(f"{type(error).__name__}: {error}".split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
