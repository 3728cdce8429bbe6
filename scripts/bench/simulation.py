"""Benchmark the simulation runner at national rate: a year's backlog, then the steady state.

On a private stack (free ports, temporary folder), it writes synthetic STATS19 for five years at
`--collisions-per-year` (128,000 is about 350 collisions a day, the national rate), ingests them,
trains the champion on the first three and tests it on the fourth, then measures on the fifth:

1. where a notebook run's time goes: `--cold-days` simulated days with a fresh kernel per
   notebook (`simulate.py --fresh-kernels`), per notebook and per cell;
2. the backlog: a timeline that started `--backlog-days` days ago, caught up by
   `simulate.py --days N` with one warm kernel, monitoring (and retraining) on: wall time and
   simulated days per real minute (target: 365 days in at most 10 minutes);
3. the steady state: a new timeline at `--seconds-per-day` (default 2) for `--steady-minutes`,
   sampling how many days the runner is behind (target: the backlog does not grow).

Usage: python scripts/bench/simulation.py [--collisions-per-year 128000] [--backlog-days 365]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nbformat
import psutil

from lib.config import ROOT, load_settings
from lib.runner import clock, scenario, simulation
from lib.services.stack import private_stack
from lib.store import runs as notebook_runs
from lib.store.db import session

YEARS = (2020, 2021, 2022, 2023, 2024)
SIMULATE = ROOT / "scripts" / "simulate.py"


def run_simulation(*args: str, log: Path) -> tuple[float, int, int]:
    """Run simulate.py to completion; return (wall seconds, exit code, peak RSS of it and its kernel)."""
    began = time.monotonic()
    with open(log, "a") as out:
        process = subprocess.Popen([sys.executable, str(SIMULATE), *args], stdout=out, stderr=subprocess.STDOUT)
    peak = 0
    while process.poll() is None:
        peak = max(peak, tree_rss(process.pid))
        time.sleep(2)
    return time.monotonic() - began, process.returncode, peak


def tree_rss(pid: int) -> int:
    try:
        parent = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [parent, *parent.children(recursive=True)])
    except psutil.Error:
        return 0


def runs_since(database_url: str, since: datetime) -> list[dict]:
    with session(database_url) as conn:
        recent = [run for run in notebook_runs.all_runs(conn) if run["started_at"] >= since]
    return sorted(recent, key=lambda run: run["started_at"])


def cell_times(runs: list[dict]) -> dict[str, dict[str, float]]:
    """Mean seconds per code cell (by its first line) of each notebook's executed copies."""
    cells: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        if run["status"] != "succeeded" or not run["output_ipynb"]:
            continue
        nb = nbformat.read(run["output_ipynb"], as_version=4)
        for cell in nb.cells:
            duration = cell.metadata.get("papermill", {}).get("duration")
            if cell.cell_type == "code" and duration is not None and cell.source.strip():
                cells[run["notebook"]][cell.source.strip().splitlines()[0][:60]].append(duration)
    return {nb: {line: statistics.mean(times) for line, times in lines.items()} for nb, lines in cells.items()}


def summarise(title: str, runs: list[dict], wall: float) -> None:
    print(f"\n{title}: {len(runs)} notebook runs in {wall:.0f} s")
    by_notebook = defaultdict(list)
    for run in runs:
        by_notebook[run["notebook"]].append(run["duration_s"] or 0)
    inside = 0.0
    for notebook, durations in sorted(by_notebook.items()):
        inside += sum(durations)
        print(
            f"  {notebook:<11} {len(durations):>4} runs, mean {statistics.mean(durations):5.1f} s, "
            f"total {sum(durations):6.0f} s"
        )
    print(f"  outside the notebooks (runner, executor bookkeeping, HTML copies, start-up): {wall - inside:.0f} s")
    failed = [r for r in runs if r["status"] != "succeeded"]
    if failed:
        print(f"  {len(failed)} run(s) did not succeed: {[(r['notebook'], r['status']) for r in failed]}")
    for notebook, lines in sorted(cell_times(runs).items()):
        top = sorted(lines.items(), key=lambda item: -item[1])[:4]
        print(f"  {notebook} slowest cells: " + "; ".join(f"`{line}` {seconds:.2f} s" for line, seconds in top))


def steady_state(settings, start, minutes: float, log: Path) -> list[tuple[float, int]]:
    """Start a fresh timeline now and run simulate.py on it; sample (seconds since start, days behind)."""
    with session(settings.database_url) as conn:
        simulation.reset(conn)
        clock.start_or_resume(conn, start, settings.seconds_per_day)
    with open(log, "a") as out:
        process = subprocess.Popen([sys.executable, str(SIMULATE)], stdout=out, stderr=subprocess.STDOUT)
    began = time.monotonic()
    samples = []
    try:
        while time.monotonic() - began < minutes * 60:
            time.sleep(5)
            if process.poll() is not None:
                raise RuntimeError(f"the runner exited early ({process.returncode}); see {log}")
            with session(settings.database_url) as conn:
                progress = simulation.load_progress(conn)
            due = progress.timeline.completed_through(datetime.now(UTC))
            samples.append((time.monotonic() - began, (due - progress.last_inferred).days))
    finally:
        process.terminate()
        process.wait(timeout=120)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--collisions-per-year", type=int, default=128_000)
    parser.add_argument("--cold-days", type=int, default=31)
    parser.add_argument("--backlog-days", type=int, default=365)
    parser.add_argument("--steady-minutes", type=float, default=3, help="0: skip the steady state")
    parser.add_argument("--seconds-per-day", type=float, default=2)
    args = parser.parse_args()

    plan = scenario.plan_years(YEARS)
    overrides = {
        "MODEL_NAME": "bench_severity",
        "MODEL_VERSION": "",
        "SIMULATION_START_DATE": plan.simulation_start.isoformat(),
        "SECONDS_PER_DAY": str(args.seconds_per_day),
        "EVAL_SCHEDULER_INCREMENT": str(args.seconds_per_day),
        "MONITOR_WINDOW_DAYS": "7",
        "LABEL_DELAY_DAYS": "30",
    }
    with private_stack("bench-simulation", **overrides), tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        settings = load_settings()
        began = time.monotonic()
        base_url = scenario.write_synthetic_mirror(folder / "synthetic", YEARS, args.collisions_per_year)
        scenario.ingest(settings, YEARS, base_url, progress=False)
        scenario.ensure_baseline_champion(settings, plan, progress=False, bootstrap_resamples=200)
        print(
            f"Prepared {len(YEARS)} synthetic years of {args.collisions_per_year:,} collisions "
            f"({plan.describe()}) in {time.monotonic() - began:.0f} s."
        )
        log = folder / "runner.log"
        # A timeline that started long enough ago for every measured day to be due at once.
        started = datetime.now(UTC) - timedelta(seconds=(args.backlog_days + 1) * args.seconds_per_day)

        with session(settings.database_url) as conn:
            clock.start_or_resume(conn, plan.simulation_start, args.seconds_per_day, now=started)
        since = datetime.now(UTC)
        wall, code, _ = run_simulation("--days", str(args.cold_days), "--fresh-kernels", log=log)
        if code != 0:
            raise RuntimeError(f"the cold run exited {code}; see {log}:\n{log.read_text()[-3000:]}")
        summarise(f"{args.cold_days} days, a fresh kernel per notebook", runs_since(settings.database_url, since), wall)

        with session(settings.database_url) as conn:
            simulation.reset(conn)
            clock.start_or_resume(conn, plan.simulation_start, args.seconds_per_day, now=started)
        since = datetime.now(UTC)
        wall, code, peak = run_simulation("--days", str(args.backlog_days), log=log)
        if code != 0:
            raise RuntimeError(f"the backlog run exited {code}; see {log}:\n{log.read_text()[-3000:]}")
        backlog_runs = runs_since(settings.database_url, since)
        summarise(f"Backlog of {args.backlog_days} days, one warm kernel", backlog_runs, wall)
        retraining = sum(r["duration_s"] or 0 for r in backlog_runs if r["notebook"] == "02_train")
        print(
            f"  => {args.backlog_days} simulated days in {wall / 60:.1f} min: "
            f"{args.backlog_days / (wall / 60):.0f} days per real minute "
            f"({args.backlog_days / ((wall - retraining) / 60):.0f} without the retraining runs); "
            f"peak RSS of the runner and its kernel {peak / 2**30:.2f} GiB"
        )

        if args.steady_minutes > 0:
            samples = steady_state(settings, plan.simulation_start, args.steady_minutes, log)
            behind = [days for _, days in samples]
            third = max(len(behind) // 3, 1)
            print(
                f"\nSteady state at SECONDS_PER_DAY={args.seconds_per_day:g} for {args.steady_minutes:g} min: "
                f"days behind sampled every 5 s: max {max(behind)}, mean of the first third "
                f"{statistics.mean(behind[:third]):.1f}, of the last third {statistics.mean(behind[-third:]):.1f}, "
                f"at the end {behind[-1]}"
            )
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
        f"Python {platform.python_version()}, load average at the end {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
