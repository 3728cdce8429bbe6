"""Time from `up` to all three embedded services healthy: cold (first start) and warm (restart).

Runs private stacks on free ports in temporary folders, like the tests, so it never touches the
developer's own `data/services`. Cold starts are measured in three kinds, interleaved so that the
machine's load falls on all alike:
* `cold`: initdb, a new bucket, a new MLflow database copied from the cached empty one (every cold
  start after the first in an environment);
* `first`: the same without that cache, so MLflow migrates a new database (the first cold start);
* `stock`: `first`, with MLflow started by the stock `mlflow server` command (two interpreters),
  as before lib.services.mlflow_entry.

Usage: python scripts/bench/services.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from lib.config import load_settings
from lib.services import mlflow_server
from lib.services.stack import Stack, private_variables


def timed_up(stack: Stack) -> float:
    began = time.perf_counter()
    stack.up()
    elapsed = time.perf_counter() - began
    stack.down()
    return elapsed


def _stock_command(service: mlflow_server.Mlflow) -> list[str]:
    command = mlflow_server.Mlflow.command(service)
    return [sys.executable, "-m", "mlflow", "server", *command[3:]]


def cold_up(kind: str) -> float:
    template = mlflow_server.empty_database_template()
    if kind != "cold":
        template.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as state:
        settings = load_settings({**os.environ, **private_variables("bench")})
        stack = Stack(settings, state_dir=Path(state), embedded={"postgres", "s3", "mlflow"})
        if kind == "stock":
            mlflow = stack.services[-1]
            mlflow.command = lambda: _stock_command(mlflow)
        return timed_up(stack)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    template = mlflow_server.empty_database_template()
    kept = template.with_suffix(".kept")
    if template.exists():
        shutil.copy(template, kept)
    times: dict[str, list[float]] = {"cold": [], "first": [], "stock": []}
    try:
        cold_up("first")  # builds the cache, and warms the disk cache for every kind
        for _ in range(args.repeats):
            for kind in times:
                times[kind].append(cold_up(kind))
        with tempfile.TemporaryDirectory() as state:
            settings = load_settings({**os.environ, **private_variables("bench")})
            stack = Stack(settings, state_dir=Path(state), embedded={"postgres", "s3", "mlflow"})
            timed_up(stack)
            warm = [timed_up(stack) for _ in range(args.repeats)]
    finally:
        if kept.exists():
            os.replace(kept, template)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load {os.getloadavg()[0]:.1f}")
    labels = {"cold": "cold (initdb, new bucket, MLflow database from the cache)",
              "first": "first cold start (MLflow migrates a new database)",
              "stock": "first cold start, stock `mlflow server` (two interpreters)"}
    for kind, label in labels.items():
        print(f"up -> all healthy, {label}: median {statistics.median(times[kind]):.1f} s, "
              f"max {max(times[kind]):.1f} s over {args.repeats} runs")
    print(f"up -> all healthy, warm restart: median {statistics.median(warm):.1f} s, "
          f"max {max(warm):.1f} s over {args.repeats} runs (target: under 15 s)")


if __name__ == "__main__":
    main()
