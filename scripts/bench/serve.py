"""Benchmark: serving (scripts/serve.py) and batch inference (lib/modeling/inference.py, notebooks/03_infer.py).

A private stack (PostgreSQL, S3, MLflow on free ports in a temporary folder, like the tests) runs for
the benchmark. Synthetic national-size curated years (lib.data.synth + lib.data.curated) go to its lake; the
model is fitted with lib.modeling.candidates.fit_gbm on the first year, validated on the second, and registered as
champion with its alert threshold (as 02_train does, without 02_train's evaluation). Then:

1. server: scripts/serve.py as `make serve` runs it; after 20 warm-up requests, the latency of
   `--single` POST /invocations of one collision each (p50, p99; target p50 at most 20 ms), and the
   throughput of `--bulk` requests of 1,000 collisions each;
2. HTTP batch client: lib.modeling.inference.HttpScorer on `--rows` collisions (batches of 5,000);
3. in-process: lib.modeling.inference.InProcessScorer on `--rows` collisions (target: at least 20,000 rows/s);
4. 03_infer on one week of the last year, in-process and through the server: wall time of
   lib.runner.executor.execute (kernel start, imports, model lookup and load, scoring, PostgreSQL, HTML).

Usage, from the repository root as `make bench` runs it:
    python -m scripts.bench.serve [--collisions-per-year 130000] [--rows 100000] [--single 300]
       [--bulk 30] [--notebook-runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np
import requests

from lib.config import load_settings
from lib.services.stack import private_stack

YEARS = (2022, 2023, 2024)
WEEK = ("2024-03-04", "2024-03-10")
MODEL_NAME = "bench_serving"


def prepare(collisions_per_year: int) -> None:
    """Curated synthetic years in the lake and a registered champion fitted on them."""
    import mlflow

    from lib.data.curated import CURATED, build_curated
    from lib.data.lake import open_lake
    from lib.data.synth import generate
    from lib.modeling.candidates import fit_gbm
    from lib.modeling.mlflow_model import ALERT_THRESHOLD_PARAM, log_model

    settings = load_settings()
    lake = open_lake(settings)
    years = {}
    for year in YEARS:
        tables = generate([year], collisions_per_year, seed=year)
        years[year] = build_curated(tables.collisions, tables.vehicles, tables.casualties)
        lake.write_partition(CURATED, year, years[year])
    began = time.perf_counter()
    model = fit_gbm(years[YEARS[0]], years[YEARS[1]], seed=0)
    print(f"fitted the model on {len(years[YEARS[0]]):,} collisions in {time.perf_counter() - began:.0f} s "
          f"({model.details['n_iter']} iterations)", flush=True)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_experiment("bench_serving")
    with mlflow.start_run():
        mlflow.log_param(ALERT_THRESHOLD_PARAM, model.alert_threshold)
        info = log_model(model, years[YEARS[0]], registered_model_name=MODEL_NAME)
    mlflow.MlflowClient().set_registered_model_alias(MODEL_NAME, "champion", info.registered_model_version)


def percentile_ms(seconds: list[float], q: float) -> float:
    return float(np.percentile(seconds, q)) * 1000


def bench_server(url: str, rows, single: int, bulk: int) -> dict:
    records = json.loads(rows.head(single + 20).to_json(orient="records", double_precision=15))
    latencies = []
    with requests.Session() as http:
        for i, record in enumerate(records):
            began = time.perf_counter()
            response = http.post(f"{url}/invocations", json={"dataframe_records": [record]}, timeout=30)
            elapsed = time.perf_counter() - began
            response.raise_for_status()
            if i >= 20:  # the first 20 warm the server up
                latencies.append(elapsed)
        batches = [rows.iloc[i * 1000:(i + 1) * 1000] for i in range(bulk)]
        bodies = [f'{{"dataframe_split": {b.to_json(orient="split", index=False, double_precision=15)}}}'
                  for b in batches]
        bulk_latencies = []
        began_all = time.perf_counter()
        for body in bodies:
            began = time.perf_counter()
            http.post(f"{url}/invocations", data=body, headers={"Content-Type": "application/json"},
                      timeout=60).raise_for_status()
            bulk_latencies.append(time.perf_counter() - began)
        bulk_seconds = time.perf_counter() - began_all
    return {
        "single_p50_ms": percentile_ms(latencies, 50), "single_p99_ms": percentile_ms(latencies, 99),
        "single_mean_ms": statistics.mean(latencies) * 1000, "single_requests": len(latencies),
        "bulk_rows_per_s": bulk * 1000 / bulk_seconds, "bulk_p50_ms": percentile_ms(bulk_latencies, 50),
        "bulk_requests": bulk,
    }


def timed_notebook(parameters: dict, runs: int) -> tuple[float, float]:
    """(median wall seconds of lib.runner.executor.execute, median in-notebook seconds)."""
    from lib.runner.executor import execute

    walls, inside = [], []
    for _ in range(runs):
        began = time.perf_counter()
        result = execute("03_infer", parameters, progress=False)
        walls.append(time.perf_counter() - began)
        if not result.ok:
            raise SystemExit(result.describe())
        inside.append(result.duration_s)
    return statistics.median(walls), statistics.median(inside)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--collisions-per-year", type=int, default=130_000)
    parser.add_argument("--rows", type=int, default=100_000, help="rows for the throughput figures")
    parser.add_argument("--single", type=int, default=300, help="single-collision requests")
    parser.add_argument("--bulk", type=int, default=30, help="requests of 1,000 collisions")
    parser.add_argument("--notebook-runs", type=int, default=3, help="03_infer runs per mode")
    args = parser.parse_args()

    with private_stack("bench", MODEL_NAME=MODEL_NAME, MODEL_ALIAS="champion",
                       MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false"):
        figures = run(args)

    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"load average at the end {os.getloadavg()[0]:.1f}")
    print(f"model: fit_gbm on {args.collisions_per_year:,} synthetic collisions ({YEARS[0]}), "
          f"validated on {YEARS[1]}; served by scripts/serve.py (1 uvicorn worker)")
    print(f"server, one collision per request: p50 {figures['single_p50_ms']:.1f} ms, "
          f"p99 {figures['single_p99_ms']:.1f} ms, mean {figures['single_mean_ms']:.1f} ms over "
          f"{figures['single_requests']} requests (target: p50 at most 20 ms)")
    print(f"server, 1,000 collisions per request: {figures['bulk_rows_per_s']:,.0f} rows/s, "
          f"p50 {figures['bulk_p50_ms']:.0f} ms per request over {figures['bulk_requests']} requests")
    print(f"HttpScorer (batches of 5,000): {figures['http_rows_per_s']:,.0f} rows/s on {args.rows:,} rows")
    print(f"InProcessScorer: {figures['in_process_rows_per_s']:,.0f} rows/s on {args.rows:,} rows "
          f"(target: at least 20,000); model lookup {figures['resolve_s']:.2f} s, load {figures['load_s']:.2f} s")
    print(f"03_infer, one week ({WEEK[0]}..{WEEK[1]}, {figures['week_rows']:,} collisions), median of "
          f"{args.notebook_runs}: in-process {figures['nb_in_process'][0]:.1f} s wall "
          f"({figures['nb_in_process'][1]:.1f} s executing), through the server {figures['nb_http'][0]:.1f} s wall "
          f"({figures['nb_http'][1]:.1f} s executing)")


def run(args) -> dict:
    import pandas as pd

    from lib.data.curated import CURATED, Window, read_window
    from lib.data.lake import open_lake
    from lib.modeling.inference import HttpScorer, InProcessScorer, resolve_model
    from tests.serving import model_server

    prepare(args.collisions_per_year)
    settings = load_settings()
    lake = open_lake(settings)
    began = time.perf_counter()
    model = resolve_model(settings.model_uri, settings.mlflow_tracking_uri)
    resolve_s = time.perf_counter() - began
    last = lake.read_partition(CURATED, YEARS[-1], list(model.input_columns)).astype("float64")
    rows = pd.concat([last] * (args.rows // len(last) + 1), ignore_index=True).head(args.rows)
    figures = {"resolve_s": resolve_s, "week_rows": len(read_window(lake, Window.parse(*WEEK)))}

    began = time.perf_counter()
    scorer = InProcessScorer(model, settings.mlflow_tracking_uri)
    figures["load_s"] = time.perf_counter() - began
    scorer.score(rows.head(1000))  # warm-up
    runs = []
    for _ in range(3):
        began = time.perf_counter()
        scorer.score(rows)
        runs.append(time.perf_counter() - began)
    figures["in_process_rows_per_s"] = args.rows / statistics.median(runs)

    week = {"start_date": WEEK[0], "end_date": WEEK[1]}
    figures["nb_in_process"] = timed_notebook(week, args.notebook_runs)
    with model_server(settings.model_uri) as server:
        figures.update(bench_server(server.url, rows, args.single, args.bulk))
        began = time.perf_counter()
        HttpScorer(server.url, model.input_columns, progress=False).score(rows)
        figures["http_rows_per_s"] = args.rows / (time.perf_counter() - began)
        figures["nb_http"] = timed_notebook({**week, "predict_url": server.url}, args.notebook_runs)
    return figures


if __name__ == "__main__":
    main()
