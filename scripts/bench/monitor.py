"""Benchmark: 04_monitor on one week at national rate, kernel start included (target: at most 8 s).

A private stack (PostgreSQL, S3, MLflow on free ports in a temporary folder, like the tests) runs
for the benchmark.

1. prepare (not timed): synthetic raw files for 2022-2024 at `--collisions-per-year` (130,000 is
   about 2,500 collisions a week, the national rate), ingested into the lake by
   lib.data.ingest.ingest_year; 02_train (train 2022, validate 2023, test 2024) registers the champion
   with its `--reference-rows` reference sample; 03_infer scores the week WEEK.
2. fresh kernel: lib.runner.executor.execute("04_monitor") for that week, `--repeats` times, each with a
   kernel of its own. `as_of` is the day the week's last label arrives, so each run does all of
   a monitoring day's work: drift and its Evidently report, the quality of one labelled window,
   the decision, the dashboard. Wall time of execute() (kernel start, the notebook, the HTML copy,
   the notebook_runs rows), and the mean seconds of the slowest cells.
3. CLI: scripts/run_notebook.py in a new process, as `make`/a user runs it (interpreter start too).
4. warm kernel: the same runs sharing one lib.runner.executor.WarmKernel (the simulation's way), after
   one run that starts it.
5. library steps, in a new process: the imports and calls of the notebook's drift cell, one by one.

Usage: python scripts/bench/monitor.py [--collisions-per-year 130000] [--reference-rows 5000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from lib.config import ROOT

YEARS = (2022, 2023, 2024)
WEEK = (date(2024, 3, 4), date(2024, 3, 10))
MODEL_NAME = "bench_monitor"
LABEL_DELAY_DAYS = 30


def monitor_parameters() -> dict:
    return {
        "window_start": WEEK[0].isoformat(),
        "window_end": WEEK[1].isoformat(),
        "as_of": (WEEK[1] + timedelta(days=LABEL_DELAY_DAYS)).isoformat(),
    }


def prepare(collisions_per_year: int, reference_rows: int, folder: Path) -> int:
    """Raw files, the lake, the champion and the week's predictions; returns the week's scored rows."""
    from lib.config import load_settings
    from lib.data import synth
    from lib.data.ingest import ingest_year
    from lib.data.lake import open_lake
    from lib.runner import executor
    from lib.store import predictions
    from lib.store.db import session

    settings = load_settings()
    began = time.perf_counter()
    synth.write_files(synth.generate(YEARS, collisions_per_year, seed=0), folder / "raw")
    lake = open_lake(settings)
    for year in YEARS:
        ingest_year(lake, (folder / "raw").as_uri() + "/", year, folder / "cache", progress=False)
    seconds = time.perf_counter() - began
    print(f"prepare: {len(YEARS)} synthetic years written and ingested in {seconds:.0f} s", flush=True)

    began = time.perf_counter()
    training = {
        "train_years": str(YEARS[0]),
        "validation_year": YEARS[1],
        "test_year": YEARS[2],
        "experiment_name": "bench_monitor",
        "reference_rows": reference_rows,
        "bootstrap_resamples": 200,  # monitoring reads the test score, not its intervals
    }
    executor.execute("02_train", training, progress=False).raise_for_status()
    week = {"start_date": WEEK[0].isoformat(), "end_date": WEEK[1].isoformat()}
    executor.execute("03_infer", week, progress=False).raise_for_status()
    with session(settings.database_url) as conn:
        rows = predictions.count_scored(conn, *WEEK)["collisions"]
    print(f"prepare: 02_train and 03_infer ran in {time.perf_counter() - began:.0f} s", flush=True)
    return rows


@dataclass(frozen=True)
class Timing:
    """One execute() of 04_monitor: wall seconds, the seconds before its first cell started (kernel
    start, notebook_runs row) and after its last cell ended (kernel shutdown, HTML copy, outcome row),
    and the seconds of each code cell by position and first code line."""

    wall: float
    before: float
    after: float
    cells: dict[str, float]


def _utc(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def timed_runs(repeats: int, kernel=None) -> list[Timing]:
    import nbformat

    from lib.runner import executor

    timings = []
    for _ in range(repeats):
        called, began = datetime.now(UTC), time.perf_counter()
        result = executor.execute("04_monitor", monitor_parameters(), progress=False, kernel=kernel)
        wall, returned = time.perf_counter() - began, datetime.now(UTC)
        result.raise_for_status()
        cells, starts, ends = {}, [], []
        for number, cell in enumerate(nbformat.read(result.output_ipynb, as_version=4).cells):
            meta = cell.metadata.get("papermill", {})
            if cell.cell_type != "code" or not meta.get("start_time") or not meta.get("end_time"):
                continue
            starts.append(_utc(meta["start_time"]))
            ends.append(_utc(meta["end_time"]))
            first = next((line for line in cell.source.splitlines() if line.strip() and not line.startswith("#")), "")
            cells[f"cell {number}: {first.strip()[:60]}"] = meta["duration"]
        before = (min(starts) - called).total_seconds()
        timings.append(Timing(wall, before, (returned - max(ends)).total_seconds(), cells))
    return timings


def cli_runs(repeats: int) -> list[float]:
    command = [sys.executable, str(ROOT / "scripts" / "run_notebook.py"), "04_monitor"]
    for name, value in monitor_parameters().items():
        command += ["-p", name, value]
    walls = []
    for _ in range(repeats):
        began = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        walls.append(time.perf_counter() - began)
        if done.returncode != 0:
            raise SystemExit(f"run_notebook.py exited {done.returncode}:\n{done.stderr[-3000:]}")
    return walls


def library_steps() -> dict[str, float]:
    """The drift cell's work step by step, each import paid here for the first time."""
    seconds = {}
    began = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal began
        now = time.perf_counter()
        seconds[name] = now - began
        began = now

    import pandas as pd

    from lib.config import load_settings
    from lib.data.curated import CURATED
    from lib.data.features import CATEGORICAL_FEATURES, NUMERIC_FEATURES
    from lib.data.lake import open_lake
    from lib.monitoring import evidently_report, monitor
    from lib.store.db import session

    lap("import pandas, lib.monitoring.monitor, lib.data.lake")
    from lib.modeling.model_run import load_model_run

    lap("import lib.modeling.model_run")
    import evidently  # noqa: F401

    lap("import evidently")
    settings = load_settings()
    start, end = WEEK
    with session(settings.database_url) as conn:
        version = monitor.window_model_versions(conn, start, end)[0]
        predictions = monitor.load_predictions(conn, start, end, version)
    lap("predictions from PostgreSQL")
    curated = open_lake(settings).read_dataset(CURATED, [start.year])
    dates = pd.to_datetime(curated["date"])
    window = monitor.join_truth(predictions, curated[(dates >= pd.Timestamp(start)) & (dates <= pd.Timestamp(end))])
    lap("curated year from the lake, joined")
    reference = load_model_run(settings.mlflow_tracking_uri, MODEL_NAME, version).reference
    lap(f"champion run and {len(reference):,}-row reference from MLflow")
    drift, snapshot = monitor.compute_drift(window, reference, CATEGORICAL_FEATURES, NUMERIC_FEATURES)
    lap(f"compute_drift ({len(window):,} rows, {drift.features} features)")
    with tempfile.TemporaryDirectory() as reports:
        heading = evidently_report.ReportHeading(
            evidently_report.DRIFT, start, end, MODEL_NAME, version, f"{len(window):,} rows against {len(reference):,}"
        )
        evidently_report.save_report(snapshot, Path(reports), heading)
    lap("save_report (Evidently HTML, shared bundle)")
    monitor.compute_quality(window, start, end, end + timedelta(days=LABEL_DELAY_DAYS), LABEL_DELAY_DAYS)
    lap("compute_quality")
    return seconds


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min)"


def summary(label: str, walls: list[float]) -> str:
    return (
        f"{label}: median {statistics.median(walls):.1f} s, max {max(walls):.1f} s over {len(walls)} runs "
        f"({', '.join(f'{w:.1f}' for w in walls)})"
    )


def breakdown(timings: list[Timing], top: int = 5) -> str:
    """Where a run's time goes: medians before and after the cells, mean seconds of the slowest cells."""
    by_cell = defaultdict(list)
    for timing in timings:
        for line, seconds in timing.cells.items():
            by_cell[line].append(seconds)
    means = sorted(((statistics.mean(s), line) for line, s in by_cell.items()), reverse=True)
    lines = [f"    {mean:5.2f} s  {line}" for mean, line in means[:top]]
    return "\n".join(
        [
            f"  before the first cell (kernel start, notebook_runs row): median "
            f"{statistics.median(t.before for t in timings):.1f} s",
            f"  after the last cell (kernel shutdown, HTML copy, outcome row): median "
            f"{statistics.median(t.after for t in timings):.1f} s",
            f"  in the cells: median {statistics.median(sum(t.cells.values()) for t in timings):.1f} s; "
            "the slowest, mean of the runs:",
            *lines,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--collisions-per-year", type=int, default=130_000)
    parser.add_argument("--reference-rows", type=int, default=5_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", choices=["library"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "library":
        print(json.dumps(library_steps()))
        return

    from lib.runner.kernels import WarmKernel
    from lib.services.stack import private_stack

    overrides = {"MODEL_NAME": MODEL_NAME, "MODEL_VERSION": "", "LABEL_DELAY_DAYS": str(LABEL_DELAY_DAYS)}
    with private_stack("bench", **overrides), tempfile.TemporaryDirectory(prefix="bench-monitor-") as folder:
        scored = prepare(args.collisions_per_year, args.reference_rows, Path(folder))
        load_before = load()
        fresh = timed_runs(args.repeats)
        cli = cli_runs(args.repeats)
        with WarmKernel() as kernel:
            first_warm = timed_runs(1, kernel)[0]
            warm = timed_runs(args.repeats, kernel)
        done = subprocess.run([sys.executable, __file__, "--child", "library"], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"the library steps failed:\n{done.stderr[-3000:]}")
        steps = json.loads(done.stdout.strip().splitlines()[-1])
        load_after = load()

    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"{load_before} before the timed runs, {load_after} after"
    )
    print(
        f"window {WEEK[0]}..{WEEK[1]}: {scored:,} collisions scored by 03_infer, against a "
        f"{args.reference_rows:,}-row reference; as_of {monitor_parameters()['as_of']} (drift and quality)"
    )
    print(
        summary("04_monitor, lib.runner.executor.execute with a fresh kernel", [t.wall for t in fresh])
        + " (target: at most 8 s)"
    )
    print(breakdown(fresh))
    print(summary("04_monitor, scripts/run_notebook.py in a new process", cli))
    print(
        f"04_monitor, WarmKernel: first run (starts the kernel) {first_warm.wall:.1f} s; "
        + summary("then", [t.wall for t in warm])
    )
    print(breakdown(warm))
    print("library steps of the drift cell, in a new process:")
    for step, seconds in steps.items():
        print(f"    {seconds:5.2f} s  {step}")


if __name__ == "__main__":
    main()
