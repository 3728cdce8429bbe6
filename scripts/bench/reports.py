"""Benchmark what a simulated stretch of production writes under REPORTS_DIR, and project a year.

On a private stack (free ports, temporary folder) it writes synthetic STATS19 for four years at
`--collisions-per-year` (128,000 is the national rate), ingests them, trains the champion on the
first two, validates on the third, tests on the fourth, and simulates `--days` days of the last year
at the defaults' cadence: one 03_infer run per simulated day (`--max-chunk-days 1`, as a runner that
keeps up scores each day when it ends), a weekly window, labels after 30 days, retraining on. It then
sizes everything under REPORTS_DIR by kind and projects a simulated year: 365 runs of 03_infer, two
04_monitor runs per weekly window (drift, then quality), the archive of each notebook capped by
RUNS_KEEP_PER_NOTEBOOK (default 100), one drift and one quality report per window, and the files
written once (shared scripts and styles, the dashboard, the run index). Target: at most 50 MB a year.

Usage: python scripts/bench/reports.py [--days 60] [--collisions-per-year 128000]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil

from lib.config import ROOT, load_settings
from lib.runner import clock, scenario
from lib.services.stack import private_stack
from lib.store.db import session

YEARS = (2021, 2022, 2023, 2024)
SIMULATE = ROOT / "scripts" / "simulate.py"
WEEKS_PER_YEAR = 52


def sizes(reports: Path) -> dict[str, list[int]]:
    """Bytes of each file under `reports`, grouped by what it is."""
    kinds: dict[str, list[int]] = defaultdict(list)
    for path in reports.rglob("*"):
        if not path.is_file():
            continue
        parts = path.relative_to(reports).parts
        if parts[0] == "runs" and path.suffix in (".ipynb", ".html"):
            kind = f"archive {parts[1]}"
        elif parts[0] == "monitoring" and path.name.startswith(("drift_", "quality_")):
            kind = f"report {path.name.split('_', 1)[0]}"
        else:
            kind = "written once"
        kinds[kind].append(path.stat().st_size)
    return kinds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--collisions-per-year", type=int, default=128_000)
    parser.add_argument("--keep-per-notebook", type=int, default=100)
    args = parser.parse_args()

    plan = scenario.plan_years(YEARS)
    overrides = {"MODEL_NAME": "bench_reports", "MODEL_VERSION": "", "MONITOR_WINDOW_DAYS": "7",
                 "LABEL_DELAY_DAYS": "30", "RUNS_KEEP_PER_NOTEBOOK": str(args.keep_per_notebook)}
    with private_stack("bench-reports", **overrides), tempfile.TemporaryDirectory() as folder:
        settings = load_settings()
        began = time.monotonic()
        base_url = scenario.write_synthetic_mirror(Path(folder) / "synthetic", YEARS, args.collisions_per_year)
        scenario.ingest(settings, YEARS, base_url, progress=False)
        scenario.ensure_baseline_champion(settings, plan, progress=False, bootstrap_resamples=200)
        print(f"Prepared {len(YEARS)} synthetic years of {args.collisions_per_year:,} collisions in "
              f"{time.monotonic() - began:.0f} s ({plan.describe()}).")
        with session(settings.database_url) as conn:  # every simulated day is due at once
            clock.start_or_resume(conn, plan.simulation_start, 1, now=datetime.now(UTC) - timedelta(days=3))
        began = time.monotonic()
        done = subprocess.run([sys.executable, str(SIMULATE), "--days", str(args.days), "--max-chunk-days", "1"],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"the simulation exited {done.returncode}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
        print(f"Simulated {args.days} days, one 03_infer run a day, in {time.monotonic() - began:.0f} s.")
        kinds = sizes(settings.reports_dir)

    print(f"\nUnder REPORTS_DIR after {args.days} simulated days:")
    for kind, files in sorted(kinds.items()):
        each = sum(files) / len(files) / 1e3
        print(f"  {kind:<26} {len(files):>4} files, {sum(files) / 1e6:7.2f} MB, {each:7.1f} KB each")
    total = sum(sum(files) for files in kinds.values())
    print(f"  {'total':<26} {total / 1e6:7.2f} MB")

    def mean(kind: str) -> float:
        files = kinds.get(kind, [])
        return sum(files) / len(files) if files else 0.0

    def archived(notebook: str, runs_a_year: int) -> float:  # an .ipynb and an .html per run kept
        return 2 * min(runs_a_year, args.keep_per_notebook) * (mean(f"archive {notebook}"))

    year = {
        "03_infer archive": archived("03_infer", 365),
        "04_monitor archive": archived("04_monitor", 2 * WEEKS_PER_YEAR),
        "02_train archive": sum(kinds.get("archive 02_train", [])) * 365 / args.days,
        "Evidently reports": WEEKS_PER_YEAR * (mean("report drift") + mean("report quality")),
        "written once": sum(kinds.get("written once", [])),
    }
    unbounded = year | {"03_infer archive": 2 * 365 * mean("archive 03_infer"),
                        "04_monitor archive": 2 * 2 * WEEKS_PER_YEAR * mean("archive 04_monitor")}
    print(f"\nA simulated year, projected (archive capped at {args.keep_per_notebook} runs a notebook):")
    for part, size in year.items():
        print(f"  {part:<20} {size / 1e6:6.1f} MB")
    uncapped = sum(unbounded.values()) / 1e6
    print(f"  {'total':<20} {sum(year.values()) / 1e6:6.1f} MB (without the cap: {uncapped:.1f} MB)")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
          f"Python {platform.python_version()}, load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
