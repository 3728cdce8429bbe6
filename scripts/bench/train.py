"""Benchmark: notebooks/02_train.py on three synthetic national-size years, then the model's scoring speed.

A private stack (PostgreSQL, S3, MLflow on free ports in a temporary folder, like the tests) runs
for the benchmark. Each step runs in its own child process, so that each peak RSS is its own:
1. generate: lib.data.synth draws the years (130,000 collisions each by default, about 390,000 in all) and
   writes them to the lake as curated partitions (not timed: that is ingestion's job);
2. train: lib.runner.executor.execute runs 02_train headless (train on the first year, validate on the
   second, test on the third; fit, evaluate with 1,000 bootstrap resamples, plots, permutation
   importance, MLflow logging, registration and promotion). Its wall time and the peak RSS of the
   executing process and of the notebook kernel are the training figures (target: at most 3 minutes
   and 4 GB);
3. score: the model 02_train registered, loaded with mlflow.pyfunc.load_model: predict() on 100,000
   rows and the median of single-row predict() calls, in process. Serving over HTTP and batch
   inference have their own benchmark, scripts/bench/serve.py.

Usage: python scripts/bench/train.py [--collisions-per-year 130000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

YEARS = (2021, 2022, 2023)
MODEL_NAME = "bench_severity"
SCORING_ROWS = 100_000
SINGLE_ROW_CALLS = 200


def peak_rss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def generate(collisions_per_year: int) -> dict:
    from lib.config import load_settings
    from lib.data.curated import CURATED, build_curated
    from lib.data.lake import open_lake
    from lib.data.synth import generate as draw

    lake = open_lake(load_settings())
    for year in YEARS:
        tables = draw([year], collisions_per_year, seed=year)
        lake.write_partition(CURATED, year, build_curated(tables.collisions, tables.vehicles, tables.casualties))
    return {"rows": collisions_per_year * len(YEARS)}


def train() -> dict:
    from lib.runner.executor import execute

    parameters = {
        "train_years": str(YEARS[0]),
        "validation_year": YEARS[1],
        "test_year": YEARS[2],
        "experiment_name": "bench",
    }
    started = time.perf_counter()
    result = execute("02_train", parameters, progress=False)
    seconds = time.perf_counter() - started
    if not result.ok:
        raise SystemExit(result.describe())
    return {
        "seconds": seconds,
        "notebook_seconds": result.duration_s,
        "executor_peak_rss_mb": peak_rss_mb(resource.RUSAGE_SELF),
        "kernel_peak_rss_mb": peak_rss_mb(resource.RUSAGE_CHILDREN),
        "report": str(result.output_html),
    }


def score() -> dict:
    import mlflow
    import numpy as np
    import pandas as pd

    from lib.config import load_settings
    from lib.data.curated import CURATED
    from lib.data.features import FEATURE_COLUMNS
    from lib.data.lake import open_lake

    settings = load_settings()
    rows = open_lake(settings).read_partition(CURATED, YEARS[-1], columns=FEATURE_COLUMNS)
    rows = pd.concat([rows] * (SCORING_ROWS // len(rows) + 1), ignore_index=True).head(SCORING_ROWS)
    uri = f"models:/{MODEL_NAME}@champion"
    model = mlflow.pyfunc.load_model(uri)
    model.predict(rows.head(1000))  # warm-up
    started = time.perf_counter()
    model.predict(rows)
    bulk = time.perf_counter() - started
    single = []
    for i in range(SINGLE_ROW_CALLS):
        row = rows.iloc[[i]]
        started = time.perf_counter()
        model.predict(row)
        single.append(time.perf_counter() - started)
    return {
        "rows_per_second": SCORING_ROWS / bulk,
        "single_row_p50_ms": statistics.median(single) * 1000,
        "single_row_p95_ms": float(np.percentile(single, 95)) * 1000,
    }


def run_child(step: str, *extra: str) -> dict:
    command = [sys.executable, __file__, "--child", step, *extra]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"step {step} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--collisions-per-year", type=int, default=130_000)
    parser.add_argument("--child", choices=["generate", "train", "score"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "generate":
        print(json.dumps(generate(args.collisions_per_year)))
        return
    if args.child == "train":
        print(json.dumps(train()))
        return
    if args.child == "score":
        print(json.dumps(score()))
        return

    from lib.services.stack import private_stack

    with private_stack("bench", MODEL_NAME=MODEL_NAME):
        generated = run_child("generate", "--collisions-per-year", str(args.collisions_per_year))
        trained = run_child("train")
        scored = run_child("score")

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"load average at the end {os.getloadavg()[0]:.1f}"
    )
    print(
        f"data: {generated['rows']:,} synthetic collisions, years {YEARS[0]}-{YEARS[-1]} "
        f"(train {YEARS[0]}, validate {YEARS[1]}, test {YEARS[2]})"
    )
    print(
        f"02_train: {trained['seconds']:.0f} s wall ({trained['notebook_seconds']:.0f} s in the notebook); "
        f"peak RSS {trained['kernel_peak_rss_mb']:,.0f} MB kernel + {trained['executor_peak_rss_mb']:,.0f} MB "
        "executor (target: at most 180 s and 4 GB)"
    )
    print(
        f"predict(): {scored['rows_per_second']:,.0f} rows/s on {SCORING_ROWS:,} rows (target: at least 20,000); "
        f"single row in process p50 {scored['single_row_p50_ms']:.1f} ms, p95 {scored['single_row_p95_ms']:.1f} ms"
    )


if __name__ == "__main__":
    main()
