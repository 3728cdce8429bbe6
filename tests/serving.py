"""Shared by test_inference.py and test_serve.py: a champion trained on the real mirror, and a model server.

`mirror_champion` ingests the Waltham Forest mirror (2014-2018) into its own lake prefix and runs
02_train on it (train 2014-2016, validate 2017, test 2018) once per test session; the first version
of a fresh model name becomes `champion`. `model_server` runs scripts/serve.py as a subprocess on a
free port, as a user would, and stops it with SIGTERM.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from lib.config import ROOT, Settings
from lib.data.ingest import ingest_year
from lib.data.lake import Lake
from lib.runner.executor import execute
from tests.conftest import MIRROR

MIRROR_YEARS = range(2014, 2019)
SERVE_SCRIPT = ROOT / "scripts" / "serve.py"


@dataclass(frozen=True)
class MirrorChampion:
    lake_uri: str
    model_name: str

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model_name}@champion"


_champions: dict[str, MirrorChampion] = {}


def mirror_champion(settings: Settings, workdir: Path) -> MirrorChampion:
    """The session's champion trained on the mirror (trained on first use)."""
    if not MIRROR.is_dir():
        pytest.skip(f"the shared STATS19 mirror is not at {MIRROR} (it ships beside the repository, not in it)")
    if settings.mlflow_tracking_uri not in _champions:
        suffix = uuid.uuid4().hex[:6]
        lake_uri = f"{settings.lake_uri}/mirror-{suffix}"
        lake = Lake(lake_uri, settings)
        for year in MIRROR_YEARS:
            ingest_year(lake, f"file://{MIRROR}", year, workdir / "downloads", progress=False)
        champion = MirrorChampion(lake_uri, f"mirror_severity_{suffix}")
        own = replace(settings, lake_uri=lake_uri, model_name=champion.model_name)
        result = execute("02_train", {
            "experiment_name": "test_mirror",
            "train_years": "2014-2016", "validation_year": 2017, "test_year": 2018,
            "bootstrap_resamples": 100, "importance_rows": 300,
        }, settings=own, progress=False)
        assert result.ok, result.describe()
        _champions[settings.mlflow_tracking_uri] = champion
    return _champions[settings.mlflow_tracking_uri]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class RunningServer:
    process: subprocess.Popen
    url: str
    output: list[str] = field(default_factory=list)

    def text(self) -> str:
        return "".join(self.output)


@contextmanager
def model_server(model_uri: str, timeout: float = 180, **variables: str) -> Iterator[RunningServer]:
    """scripts/serve.py on a free port, ready (it printed its example request) until the block ends.

    `variables` are settings for the server, e.g. MODEL_CHECK_SECONDS="2"."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(SERVE_SCRIPT), "--port", str(port), "--model-uri", model_uri],
        cwd=ROOT, env={**os.environ, **variables}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    server = RunningServer(process, f"http://127.0.0.1:{port}")
    reader = threading.Thread(target=lambda: server.output.extend(iter(process.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + timeout
        while "curl -s" not in server.text():
            assert process.poll() is None, f"serve.py exited with {process.returncode}:\n{server.text()}"
            assert time.monotonic() < deadline, f"serve.py was not ready after {timeout} s:\n{server.text()}"
            time.sleep(0.2)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reader.join(timeout=5)
