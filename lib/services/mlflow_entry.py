"""`mlflow server` in one interpreter: `python -m lib.services.mlflow_entry <mlflow server options>`.

`mlflow server` imports MLflow, prepares its stores, then starts `python -m uvicorn` in a new
interpreter that imports all of MLflow again before it answers: 2.6-3.7 s of a cold `make up` on
two cores (BENCHMARKS.md). Here the CLI runs unchanged, with every option and check, except that the
uvicorn command it builds is run in this process with the environment it was given. With one worker
uvicorn serves in-process and handles SIGTERM and Ctrl-C itself.
"""

from __future__ import annotations

import os
import sys

import mlflow.server
import uvicorn
from mlflow.cli import cli

_UVICORN_MODULE = ["-m", "uvicorn"]


def _run_uvicorn_here(command: list[str], *, extra_env: dict | None = None, **_ignored) -> None:
    """Stands in for the subprocess `mlflow.server._run_server` would start; never returns."""
    if command[1:3] != _UVICORN_MODULE:
        raise SystemExit(f"mlflow_entry runs uvicorn in-process, but MLflow asked to start {command[:3]}; "
                         "run `mlflow server` directly for gunicorn or waitress")
    os.environ.update(extra_env or {})
    uvicorn.main(command[3:])  # a click command: exits the process when the server stops


if __name__ == "__main__":
    mlflow.server._exec_cmd = _run_uvicorn_here
    cli(["server", *sys.argv[1:]], prog_name="mlflow")
