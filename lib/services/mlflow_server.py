"""The embedded MLflow tracking server and model registry, its artifacts in the lake."""

from __future__ import annotations

import os
import sys
from urllib.parse import urlparse

import requests

from lib.config import environment
from lib.services.service import Service


class Mlflow(Service):
    @property
    def url(self) -> str:
        return self.settings.mlflow_tracking_uri

    def artifacts_destination(self) -> str:
        lake = urlparse(self.settings.lake_uri)
        if lake.scheme == "s3":
            return f"s3://{lake.netloc}/mlflow-artifacts"
        return str(self.dir / "artifacts")

    def environment(self) -> dict[str, str]:
        # The background job runner (GenAI features) costs seven extra processes; we never use it.
        return {**os.environ, **environment(self.settings), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}

    def command(self) -> list[str]:
        return [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
                "--workers", "1", "--backend-store-uri", f"sqlite:///{self.dir / 'mlflow.db'}",
                "--artifacts-destination", self.artifacts_destination(), "--serve-artifacts"]

    def healthy(self) -> tuple[bool, str]:
        try:
            response = requests.get(self.url.rstrip("/") + "/health", timeout=2)
            return response.ok, f"HTTP {response.status_code}"
        except requests.RequestException as error:
            return False, type(error).__name__
