"""The whole product in one command: services, ingestion, training, a stretch of simulated production.

    python scripts/demo.py                     # DfT's data, or the mirror STATS19_BASE_URL names
    python scripts/demo.py --data synthetic    # synthetic files, no network needed (make demo DEMO_DATA=synthetic)
    python scripts/demo.py --days 90 --seconds-per-day 0.5

1. start the embedded PostgreSQL, S3 and MLflow servers (those that `.env` does not point elsewhere);
2. with DEMO_DATA=synthetic, write synthetic raw files for STATS19_YEARS under data/demo/ and use
   them as a file:// mirror;
3. ingest STATS19_YEARS (01_ingest; years already in the lake from the same files are skipped);
4. of those years, the last is simulated, the one before tests the model, the one before that
   validates it and the rest train it (at least four years): train a champion on them (02_train),
   unless one trained that way is already registered;
5. start a fresh simulation on 1 January of the last year at a fast warp and run it for `--days`
   simulated days (scripts/simulate.py --reset --yes --start-date ... --seconds-per-day ...: earlier
   predictions and metrics are replaced);
6. print where to look: the dashboard, the notebook runs, the MLflow UI and JupyterLab.

The services keep running afterwards (`make down` stops them), so the MLflow UI stays up and
`make simulation` can carry on the same simulated timeline.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time

from lib.config import DATA_DIR, ROOT, ConfigError, configure
from lib.modeling.training_run import experiments_url
from lib.runner import scenario
from lib.runner.run_result import NotebookFailed
from lib.services.service import ServiceError
from lib.services.stack import Stack

log = logging.getLogger("demo")
SYNTHETIC_DIR = DATA_DIR / "demo" / "synthetic" / "road-accidents-safety-data"
DATA_CHOICES = ("dft", "synthetic")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=60, help="simulated days to run (default %(default)s)")
    parser.add_argument("--seconds-per-day", type=float, default=1.0,
                        help="real seconds per simulated day during the demo (default %(default)s)")
    parser.add_argument("--data", choices=DATA_CHOICES, default="dft",
                        help="dft: STATS19_BASE_URL (DfT or a mirror); synthetic: generated files (default dft)")
    parser.add_argument("--synthetic-collisions-per-year", type=int, default=30_000)
    args = parser.parse_args(argv)
    if args.days < 1 or args.seconds_per_day <= 0:
        parser.error("--days must be at least 1 and --seconds-per-day more than 0")
    return args


def step(text: str) -> None:
    log.info("\n== %s", text)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("traitlets").setLevel(logging.ERROR)
    began = time.monotonic()
    try:
        settings = configure()
        plan = scenario.plan_years(settings.stats19_years)
        if args.data == "synthetic":
            step(f"Writing synthetic STATS19 files for {settings.stats19_years[0]}-{settings.stats19_years[-1]} "
                 f"({args.synthetic_collisions_per_year:,} collisions a year) to {SYNTHETIC_DIR}")
            base_url = scenario.write_synthetic_mirror(SYNTHETIC_DIR, settings.stats19_years,
                                                       args.synthetic_collisions_per_year)
        else:
            base_url = settings.stats19_base_url
        step("Starting the services")
        for line in Stack(settings).up():
            log.info("%s", line)

        step(f"Ingesting {', '.join(map(str, plan.all_years))} from {base_url}")
        result = scenario.ingest(settings, plan.all_years, base_url)
        log.info("01_ingest took %.0f s: %s", result.duration_s, result.output_html)

        step(f"The champion: {plan.describe()}")
        version = scenario.ensure_baseline_champion(settings, plan)
        log.info("The simulation starts with %s version %s.", settings.model_name, version)

        step(f"Simulating {args.days} days from {plan.simulation_start}, one every {args.seconds_per_day:g} s "
             "(a fresh simulation: earlier predictions and metrics are replaced)")
        simulate = [sys.executable, str(ROOT / "scripts" / "simulate.py"), "--reset", "--yes", "--days", str(args.days),
                    "--start-date", plan.simulation_start.isoformat(), "--seconds-per-day", f"{args.seconds_per_day:g}"]
        code = subprocess.run(simulate, check=False).returncode
        if code != 0:
            log.error("The simulation stopped with exit code %d; see its messages above.", code)
            return code
    except (ConfigError, ValueError, ServiceError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except NotebookFailed as failed:
        print(f"error: {failed}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; the services keep running (`make down` stops them)", file=sys.stderr)
        return 130

    reports = settings.reports_dir
    print(f"""
Done in {(time.monotonic() - began) / 60:.1f} min. Where to look:
  Monitoring dashboard:  {(reports / 'dashboard.html').resolve().as_uri()}
  Every notebook run:    {(reports / 'index.html').resolve().as_uri()}
  Evidently reports:     {(reports / 'monitoring').resolve().as_uri()}/
  MLflow UI:             {experiments_url(settings.mlflow_tracking_uri)}
  Why each version was or was not promoted: its description in the MLflow UI's Models page, and
                         promotion/evidence.md among its run's artifacts
  JupyterLab:            `make training-manual`, then http://127.0.0.1:{settings.jupyter_port}/lab (token printed)
Carry on the simulation with `make simulation`; stop the services with `make down`.""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
