"""The embedded MLflow tracking server and model registry, its artifacts in the lake.

A new MLflow database is built by 68 schema migrations (1.1-1.6 s on two cores). The first start
with a new database keeps a copy of it, still empty, in the environment's cache, keyed by the
installed MLflow version; later new databases start as a copy of that.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from importlib.metadata import version
from pathlib import Path
from urllib.parse import urlparse

import requests

from lib.config import environment
from lib.services.service import Service


def empty_database_template() -> Path:
    """Where an empty database of the installed MLflow's schema is kept, once one has been built."""
    return Path(sys.prefix, "var", "cache", "accident-severity-forecast", f"mlflow-{version('mlflow')}-empty.db")


class Mlflow(Service):
    new_database = False  # whether this start creates the database (prepare); not when it is already running

    @property
    def url(self) -> str:
        return self.settings.mlflow_tracking_uri

    @property
    def database(self) -> Path:
        return self.dir / "mlflow.db"

    def prepare(self) -> None:
        self.new_database = not self.database.exists()
        template = empty_database_template()
        if self.new_database and template.exists():
            _copy_database(template, self.database)

    def after_start(self) -> None:
        template = empty_database_template()
        if self.new_database and not template.exists():
            template.parent.mkdir(parents=True, exist_ok=True)
            _copy_database(self.database, template)

    def artifacts_destination(self) -> str:
        lake = urlparse(self.settings.lake_uri)
        if lake.scheme == "s3":
            return f"s3://{lake.netloc}/mlflow-artifacts"
        return str(self.dir / "artifacts")

    def environment(self) -> dict[str, str]:
        # The background job runner (GenAI features) costs seven extra processes; we never use it.
        return {**os.environ, **environment(self.settings), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}

    def command(self) -> list[str]:
        # `mlflow server`'s options, run by lib.services.mlflow_entry in one interpreter instead of two.
        return [sys.executable, "-m", "lib.services.mlflow_entry", "--host", "127.0.0.1", "--port", str(self.port),
                "--workers", "1", "--backend-store-uri", f"sqlite:///{self.database}",
                "--artifacts-destination", self.artifacts_destination(), "--serve-artifacts"]

    def healthy(self) -> tuple[bool, str]:
        try:
            response = requests.get(self.url.rstrip("/") + "/health", timeout=2)
            return response.ok, f"HTTP {response.status_code}"
        except requests.RequestException as error:
            return False, type(error).__name__


def _copy_database(source: Path, target: Path) -> None:
    """Copy an SQLite database consistently (its server may be running), all or nothing."""
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    with sqlite3.connect(source) as reading, sqlite3.connect(partial) as writing:
        reading.backup(writing)
    reading.close()
    writing.close()
    os.replace(partial, target)
