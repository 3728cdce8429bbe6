"""Run the simulated production loop: score, monitor and retrain on a warped clock.

    python scripts/simulate.py                  # run until stopped (Ctrl-C or SIGTERM)
    python scripts/simulate.py --days 60        # stop once the first 60 simulated days are processed
    python scripts/simulate.py --until 2018-03-31
    python scripts/simulate.py --reset [--yes]  # start over: new timeline, no predictions or metrics

Every EVAL_SCHEDULER_INCREMENT seconds a tick scores the simulated days that have ended (03_infer),
monitors every complete window of MONITOR_WINDOW_DAYS (04_monitor) and retrains when monitoring
recommends it (02_train, unless MODEL_VERSION pins the model). A runner that is behind, after a
pause or at start-up, runs ticks back to back until it has caught up. The timeline lives in
PostgreSQL: a restart continues it, and `kill -9` at any moment loses and duplicates nothing.
A notebook that failed on a fault that may heal (a server down, a timeout) is retried after 1, 2,
4, ... ticks while the runner carries on; an error that retrying cannot fix (no such model or
alias, keys the lake refuses, a malformed setting) stops the runner with exit code 2 and a message
naming the setting to check. Ctrl-C or SIGTERM stops the running notebook cleanly (recorded as
interrupted, redone on restart) and exits.

Exit codes: 0 done (--days/--until reached, or the end of the ingested data), 1 unexpected error,
2 bad configuration or input, or an error retrying cannot fix, 3 PostgreSQL unreachable at start-up,
130 stopped by a signal.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from datetime import date

import schedule

from lib.config import Settings, configure
from lib.errors import NeedsAction
from lib.runner import clock, planning, served_model, simulation
from lib.runner.executor import handle_sigterm_as_interrupt
from lib.store import simulation_state
from lib.store.db import DatabaseError, session

log = logging.getLogger("simulate")
EXIT_DONE, EXIT_ERROR, EXIT_BAD_INPUT, EXIT_DATABASE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of days") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1 day")
    return value


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2018-03-31") from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=_positive_int, help="stop once the first N simulated days are processed")
    parser.add_argument("--until", type=_date, help="stop once the simulated days through DATE are processed")
    parser.add_argument(
        "--reset",
        action="store_true",
        help="start over: delete the simulation's timeline, predictions, metrics and retraining events",
    )
    parser.add_argument("--yes", action="store_true", help="do not ask before --reset deletes")
    parser.add_argument("--start-date", type=_date,
                        help="first simulated day of a new timeline, for this run (default SIMULATION_START_DATE)")
    parser.add_argument("--seconds-per-day", type=float,
                        help="real seconds per simulated day and between ticks, for this run (default "
                             "SECONDS_PER_DAY and EVAL_SCHEDULER_INCREMENT)")
    parser.add_argument(
        "--max-chunk-days",
        type=_positive_int,
        default=planning.MAX_CHUNK_DAYS,
        help="most days one 03_infer run scores while catching up (default %(default)s)",
    )
    parser.add_argument(
        "--retrain-cooldown-days",
        type=int,
        default=simulation.RETRAIN_COOLDOWN_DAYS,
        help="simulated days between two retrainings at least (default %(default)s)",
    )
    parser.add_argument(
        "--fresh-kernels",
        action="store_true",
        help="a new kernel for every notebook run (slower; by default one warm kernel serves all)",
    )
    parser.add_argument("--verbose", action="store_true", help="also log each notebook run and the services' chatter")
    return parser.parse_args(argv)


def run_overrides(args: argparse.Namespace) -> dict[str, str]:
    """The environment with this run's --start-date and --seconds-per-day in place of their settings."""
    overrides = dict(os.environ)
    if args.start_date:
        overrides["SIMULATION_START_DATE"] = args.start_date.isoformat()
    if args.seconds_per_day:
        overrides["SECONDS_PER_DAY"] = overrides["EVAL_SCHEDULER_INCREMENT"] = f"{args.seconds_per_day:g}"
    return overrides


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", force=True)
    if not verbose:
        # One line per tick: the executor's per-run lines and the clients' chatter only when asked for.
        for name in ("lib.runner.executor", "papermill", "mlflow", "urllib3", "alembic", "lib.data.lake"):
            logging.getLogger(name).setLevel(logging.WARNING)
        logging.getLogger("traitlets").setLevel(logging.ERROR)  # nbconvert's notes on images without alt text


def confirm_reset(settings: Settings, assume_yes: bool) -> bool:
    with session(settings.database_url) as conn:
        rows = simulation_state.count_simulation_rows(conn)
        timeline = clock.load_timeline(conn)
    what = (
        f"the simulation's timeline{f' (started on {timeline.start_date})' if timeline else ''}, "
        f"{rows['predictions']:,} predictions, {rows['monitoring_metrics']:,} monitoring metrics, "
        f"{rows['place_risk']:,} observed-against-expected place rows and "
        f"{rows['model_events']:,} retraining events in {settings.database_url.rsplit('@', 1)[-1]}"
    )
    if assume_yes:
        return True
    if not sys.stdin.isatty():
        print(f"error: --reset deletes {what}; add --yes to confirm when not at a terminal", file=sys.stderr)
        return False
    answer = input(f"--reset deletes {what}. Type 'yes' to go on: ")
    return answer.strip().lower() == "yes"


def announce_model(settings: Settings, start_date: date) -> None:
    if settings.model_version:
        log.info(
            "MODEL_VERSION=%s pins the model: the simulation scores with %s and never retrains "
            "(monitoring still records its recommendations).",
            settings.model_version,
            settings.model_uri,
        )
    summary, leaks = served_model.describe_model(settings, start_date)
    (log.warning if leaks else log.info)(summary)


def run(settings: Settings, runner: simulation.Runner, timeline: clock.Timeline) -> int:
    """Tick on the schedule until done; back to back while behind; back off after failures."""
    backoff = planning.Backoff()
    last: list[simulation.TickReport] = []

    def tick() -> None:
        if backoff.should_skip():
            wait = backoff.skip_left + 1
            log.info(
                "Skipping this tick after the last failure; the next attempt is in %d tick%s.",
                wait,
                "s" if wait > 1 else "",
            )
            return
        report = runner.tick()
        if report.failure:
            skipped = backoff.failed()
            log.warning("%s Retrying after %d tick%s.", report.sentence(), skipped, "s" if skipped > 1 else "")
        else:
            backoff.succeeded()
            log.info(report.sentence())
        last[:] = [report]

    scheduler = schedule.Scheduler()
    scheduler.every(settings.eval_scheduler_increment).seconds.do(tick)
    scheduler.run_all()
    while not (last and last[0].done):
        if last and last[0].failure is None and not runner.caught_up(last[0]):
            scheduler.run_all()  # behind: the next tick now
            continue
        time.sleep(max(scheduler.idle_seconds or 0, 0))
        scheduler.run_pending()
    final = runner.final_day(timeline)
    why = "as asked (--days/--until)" if final == runner.stop else "the last day of the ingested data"
    log.info("The simulation has processed every simulated day through %s, %s; stopping.", final, why)
    return EXIT_DONE


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.verbose)
    handle_sigterm_as_interrupt()
    runner = lock = None
    try:
        settings = configure(run_overrides(args))
        # The one-runner lock comes first: a reset must never delete under a runner that is working.
        lock = simulation.RunnerLock(settings.database_url)
        lock.hold()
        if args.reset:
            if not confirm_reset(settings, args.yes):
                return EXIT_BAD_INPUT
            with session(settings.database_url) as conn:
                simulation.reset(conn)
        with session(settings.database_url) as conn:
            timeline, _ = clock.start_or_resume(conn, settings.simulation_start_date, settings.seconds_per_day)
        announce_model(settings, timeline.start_date)
        runner = simulation.Runner(
            settings,
            stop=planning.stop_date(timeline.start_date, args.days, args.until),
            max_chunk_days=args.max_chunk_days,
            retrain_cooldown_days=args.retrain_cooldown_days,
            warm_kernel=not args.fresh_kernels,
            lock=lock,
        )
        return run(settings, runner, timeline)
    except NeedsAction as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except DatabaseError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_DATABASE
    except KeyboardInterrupt:
        log.info("Stopped by a signal. Progress is saved; an interrupted notebook is redone on the next start.")
        return EXIT_INTERRUPTED
    finally:
        if runner is not None:
            runner.close()  # releases the lock too
        elif lock is not None:
            lock.release()


if __name__ == "__main__":
    sys.exit(main())
