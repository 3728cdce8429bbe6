"""Benchmark: how soon a model server on an alias serves a promoted version, and what the swap costs requests.

A private stack (PostgreSQL, S3, MLflow on free ports in a temporary folder, like the tests) runs for the
benchmark. A model is fitted with lib.modeling.candidates.fit_gbm on one synthetic national-size year and
registered twice: version 1 as it is, version 2 with its KSI alert threshold at 0, so each answer says which
version scored it. scripts/serve.py serves `models:/bench_follow@champion` (one uvicorn worker, checking every
`--check-seconds`) while one client sends single-collision requests back to back. After a steady stretch
the alias moves `--promotions` times between the two versions, `--gap` check intervals plus a random
part of one apart (seeded), so the moves fall at every point between two checks. Reported:
the seconds from each move to the first answer of GET /version naming the new version (at most one check
interval plus the load), the load time the server logged, failed requests, answers from the wrong version,
and request latency (p50, p99, max) in the steady stretch and from each move until two seconds after the swap.

Usage, from the repository root as `make bench` runs it:
    python -m scripts.bench.serve_follow [--collisions-per-year 130000] [--check-seconds 10]
       [--promotions 6] [--gap 3] [--steady 20]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import threading
import time

import numpy as np
import requests

from lib.services.stack import private_stack

YEARS = (2023, 2024)
MODEL_NAME = "bench_follow"


def prepare(collisions_per_year: int) -> dict:
    """Versions 1 and 2 of MODEL_NAME (2 alerts on everything), `champion` on 1; one collision to send."""
    import mlflow

    from lib.data.curated import build_curated
    from lib.data.synth import generate
    from lib.modeling.candidates import fit_gbm
    from lib.modeling.mlflow_model import ALERT_THRESHOLD_PARAM, log_model

    years = {}
    for year in YEARS:
        tables = generate([year], collisions_per_year, seed=year)
        years[year] = build_curated(tables.collisions, tables.vehicles, tables.casualties)
    model = fit_gbm(years[YEARS[0]], years[YEARS[1]], seed=0)
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    mlflow.set_experiment("bench_follow")
    for fitted in (model, dataclasses.replace(model, alert_threshold=0.0)):
        with mlflow.start_run():
            mlflow.log_param(ALERT_THRESHOLD_PARAM, fitted.alert_threshold)
            log_model(fitted, years[YEARS[0]], registered_model_name=MODEL_NAME)
    mlflow.MlflowClient().set_registered_model_alias(MODEL_NAME, "champion", "1")
    # A collision that version 1 does not alert on, so the two versions answer it differently.
    last = years[YEARS[1]]
    quiet = last[model.predict(last)["ksi_alert"].to_numpy() == False].head(1)  # noqa: E712
    row = json.loads(quiet[list(model.feature_columns)].astype("float64").to_json(orient="records",
                                                                                  double_precision=15))[0]
    return {"dataframe_records": [row]}


class Client(threading.Thread):
    """Single-collision requests back to back until stopped: (sent, answered, status, ksi_alert)."""

    def __init__(self, url: str, body: dict, limit_s: float):
        super().__init__(daemon=True)
        self.url, self.body, self.limit_s = url, body, limit_s
        self.answers: list[tuple[float, float, object, bool | None]] = []
        self.stopping = threading.Event()

    def run(self):
        deadline = time.monotonic() + self.limit_s
        with requests.Session() as http:
            while not self.stopping.is_set() and time.monotonic() < deadline:
                sent = time.monotonic()
                try:
                    response = http.post(f"{self.url}/invocations", json=self.body, timeout=60)
                    status = response.status_code
                    alert = response.json()["predictions"][0]["ksi_alert"] if status == 200 else None
                except (requests.RequestException, ValueError, KeyError) as error:
                    status, alert = type(error).__name__, None
                self.answers.append((sent, time.monotonic(), status, alert))


def latency_ms(answers) -> str:
    seconds = np.array([done - sent for sent, done, _, _ in answers]) * 1000
    if not len(seconds):
        return "no requests"
    return (f"p50 {np.percentile(seconds, 50):.1f} ms, p99 {np.percentile(seconds, 99):.1f} ms, "
            f"max {seconds.max():.0f} ms over {len(seconds):,} requests")


def run(args) -> None:
    import mlflow

    from tests.serving import model_server

    began = time.perf_counter()
    body = prepare(args.collisions_per_year)
    print(f"fitted and registered two versions on {args.collisions_per_year:,} synthetic collisions in "
          f"{time.perf_counter() - began:.0f} s", flush=True)
    client = mlflow.MlflowClient()
    with model_server(f"models:/{MODEL_NAME}@champion", MODEL_CHECK_SECONDS=f"{args.check_seconds:g}") as server:
        limit = args.steady + args.promotions * (args.gap + 2) * args.check_seconds + 600
        requests_client = Client(server.url, body, limit)
        requests_client.start()
        time.sleep(args.steady)
        steady_end = time.monotonic()
        moves = []  # (moved, served, version)
        phases = np.random.default_rng(0).uniform(0, args.check_seconds, args.promotions)
        for number in range(args.promotions):
            version = "2" if number % 2 == 0 else "1"
            moved = time.monotonic()
            client.set_registered_model_alias(MODEL_NAME, "champion", version)
            while requests.get(f"{server.url}/version", timeout=10).json()["model_version"] != version:
                if time.monotonic() - moved > args.check_seconds + 300:
                    raise SystemExit(f"the server still did not serve version {version} after 300 s:\n"
                                     f"{server.text()[-3000:]}")
                time.sleep(0.05)
            moves.append((moved, time.monotonic(), version))
            time.sleep(args.gap * args.check_seconds + phases[number])
        requests_client.stopping.set()
        requests_client.join(timeout=120)
        log = server.text()

    answers = requests_client.answers
    failed = [a for a in answers if a[2] != 200]
    alerts = {"1": False, "2": True}
    # Answered after the server reported the new version, yet from the old one: must never happen.
    wrong = sum(1 for sent, _, status, alert in answers if status == 200 and any(
        served < sent < (moves[i + 1][0] if i + 1 < len(moves) else float("inf")) and alert != alerts[version]
        for i, (_, served, version) in enumerate(moves)))
    steady = [a for a in answers if a[0] < steady_end]
    swapping = [a for a in answers if any(moved <= a[0] <= served + 2 for moved, served, _ in moves)]
    loads = [float(s) for s in re.findall(r"loaded in ([\d.]+) s", log)]
    waits = [served - moved for moved, served, _ in moves]

    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"load average at the end {os.getloadavg()[0]:.1f}")
    print(f"server: scripts/serve.py on models:/{MODEL_NAME}@champion, 1 uvicorn worker, "
          f"MODEL_CHECK_SECONDS={args.check_seconds:g}; {args.promotions} promotions")
    print(f"alias moved -> /version names the new version: {', '.join(f'{w:.1f}' for w in waits)} s "
          f"(max {max(waits):.1f} s; bound: {args.check_seconds:g} s check interval + load)")
    print(f"load of the new version, as the server logged it: {', '.join(f'{s:.1f}' for s in loads)} s")
    print(f"requests: {len(answers):,} sent, {len(failed)} failed, {wrong} answered by the old version after "
          "/version named the new one")
    print(f"latency, steady ({args.steady:g} s before the first move): {latency_ms(steady)}")
    print(f"latency, from each move to 2 s after its swap: {latency_ms(swapping)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--collisions-per-year", type=int, default=130_000)
    parser.add_argument("--check-seconds", type=float, default=10.0, help="MODEL_CHECK_SECONDS of the server")
    parser.add_argument("--promotions", type=int, default=6)
    parser.add_argument("--gap", type=float, default=3.0, help="check intervals between promotions")
    parser.add_argument("--steady", type=float, default=20.0, help="seconds of requests before the first move")
    args = parser.parse_args()
    with private_stack("bench", MODEL_NAME=MODEL_NAME, MODEL_ALIAS="champion",
                       MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false"):
        run(args)


if __name__ == "__main__":
    main()
