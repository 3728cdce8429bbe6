"""Serve the registered severity model over HTTP (`make serve`).

    python scripts/serve.py [--host 127.0.0.1] [--port SERVE_PORT] [--model-uri URI] [--workers 1]

The model is MODEL_NAME at MODEL_VERSION when that is set, otherwise at alias MODEL_ALIAS
(`models:/accident_severity@champion`). Served on an alias, the server follows it: each worker starts on
the version the alias names at start and, every MODEL_CHECK_SECONDS, asks the registry again; after a
promotion it loads the new version beside the old one, swaps it in without dropping a request and logs
`... moved from version 3 to 4; now serving version 4` (`lib.modeling.alias_follower`). A pinned version
(MODEL_VERSION, or `--model-uri models:/<name>/<version>`) never moves. The server is uvicorn running
`lib.modeling.serving` (the model loaded once per worker with MLflow, in this environment): it
checks every request (415, 413 above 10 MiB, 400 naming the column, row and value) before the
model sees it. When it answers, the URL and a ready-to-paste request for one collision are
printed. Ctrl-C or SIGTERM stops it.

Request: POST /invocations, Content-Type: application/json, body
`{"dataframe_records": [{"police_force": 1, "speed_limit": 30, ...}, ...]}` (or `dataframe_split`),
one object per collision with every feature of the model's signature (codes as numbers, null for
missing). Response: `{"predictions": [{"p_fatal": ..., "p_serious": ..., "p_slight": ...,
"p_ksi": ..., "predicted_severity": 3, "ksi_alert": false}, ...]}`. GET /ping answers 200 when ready,
GET /version names the model version served now and the alias it follows (null when pinned).

Exit codes: 0 stopped by Ctrl-C or SIGTERM, 1 the server stopped or never became ready,
2 bad configuration or no such model in the registry.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from lib.config import ROOT, ConfigError, Settings, configure
from lib.data.lake import LakeError, open_lake
from lib.modeling.inference import MODEL_URI, InferenceError, ModelRef, resolve_model
from lib.modeling.serving import FOLLOWED_ALIAS_VARIABLE, MODEL_URI_VARIABLE

EXIT_STOPPED, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def example_collision(model: ModelRef, settings: Settings) -> dict:
    """One collision's features: the first row of the model's input example, else of the newest curated year."""
    import mlflow
    import pandas as pd

    try:
        path = mlflow.artifacts.download_artifacts(artifact_uri=f"{model.uri}/input_example.json")
        example = json.loads(Path(path).read_text())
        row = dict(zip(example["columns"], example["data"][0], strict=True))
    except (mlflow.exceptions.MlflowException, OSError, KeyError, IndexError, ValueError):
        from lib.data.curated import CURATED

        lake = open_lake(settings)
        years = [p.year for p in lake.partitions(CURATED)]
        rows = lake.read_partition(CURATED, max(years), list(model.input_columns)).head(1) if years else None
        row = rows.iloc[0].to_dict() if rows is not None and len(rows) else {}
    values = {}
    for column in model.input_columns:
        value = row.get(column)
        if value is None or pd.isna(value):
            values[column] = None
        else:
            values[column] = int(value) if float(value).is_integer() else float(value)
    return values


def curl_command(url: str, collision: dict) -> str:
    body = json.dumps({"dataframe_records": [collision]})
    return f"curl -s {url}/invocations -H 'Content-Type: application/json' -d {shlex.quote(body)}"


def _die_with_parent() -> None:
    """In the server's process: receive SIGTERM when this script dies, even by SIGKILL (Linux only)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG; MLflow does the same for uvicorn


def wait_until_ready(server: subprocess.Popen, url: str, timeout: float) -> bool:
    """True once GET /ping answers 200; False if the server exits or `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.3)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (docker: 0.0.0.0); default 127.0.0.1")
    parser.add_argument("--port", type=int, default=None, help="port to listen on; default SERVE_PORT")
    parser.add_argument("--model-uri", default=None,
                        help="models:/<name>@<alias> or models:/<name>/<version>; default from MODEL_* settings")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (default 1)")
    parser.add_argument("--start-timeout", type=float, default=180.0, help="seconds to wait for the server")
    args = parser.parse_args(argv)

    try:
        settings = configure()
        model = resolve_model(args.model_uri or settings.model_uri, settings.mlflow_tracking_uri)
        collision = example_collision(model, settings)
    except (ConfigError, InferenceError, LakeError) as error:
        print(f"serve: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    port = args.port or settings.serve_port
    url = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{port}"
    alias = MODEL_URI.fullmatch(model.requested_uri)["alias"]
    following = (f"it follows {model.requested_uri}, checking the registry every {settings.model_check_seconds:g} s"
                 if alias else f"version {model.version} is pinned: it never moves")
    print(f"Starting the model server for {model.describe()} on {args.host}:{port} ...", flush=True)

    command = [sys.executable, "-m", "uvicorn", "lib.modeling.serving:app_from_environment", "--factory",
               "--host", args.host, "--port", str(port), "--workers", str(args.workers)]
    stopping, children = [], []

    def stop(signum, frame):
        stopping.append(signum)
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    environment = {**os.environ, MODEL_URI_VARIABLE: model.uri}
    environment.pop(FOLLOWED_ALIAS_VARIABLE, None)
    if alias:
        environment[FOLLOWED_ALIAS_VARIABLE] = alias
    server = subprocess.Popen(command, env=environment, cwd=ROOT, preexec_fn=_die_with_parent)
    children.append(server)
    if stopping:  # a signal arrived while the server was being started
        stop(None, None)

    if wait_until_ready(server, url, args.start_timeout):
        print(f"\nServing {model.describe()} at {url}/invocations; {following}.\n"
              f"Try one collision (answers P(fatal), P(serious), P(slight), P(KSI), the predicted severity "
              f"and the KSI alert):\n\n  {curl_command(url, collision)}\n", flush=True)
    elif not stopping:
        print(f"serve: the model server did not answer {url}/ping within {args.start_timeout:g} s "
              f"(exit code {server.poll()}); see its output above", file=sys.stderr)
        stop(None, None)
        server.wait()
        return EXIT_FAILED
    code = server.wait()
    if stopping:
        return EXIT_STOPPED
    print(f"serve: the model server stopped with exit code {code}", file=sys.stderr)
    return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
