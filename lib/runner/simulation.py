"""The simulated production loop: score each simulated day, monitor each window, retrain when told to.

One tick of the runner brings the simulation as far as the warped clock allows, in this order:

1. process the monitoring days up to the last scored day that are not processed yet, in date
   order (04_monitor with `as_of` = that day). A monitoring day is either the last day of a
   window of MONITOR_WINDOW_DAYS (the window's drift, the retraining decision) or the day on
   which every label of a monitored window has arrived, LABEL_DELAY_DAYS after its end (the
   window's quality, and the decision again, now with that quality);
2. score the days that have ended and are not scored yet (03_infer), at most `max_chunk_days`
   per run, so a runner that was down catches up in bounded steps;
3. process the monitoring days that step 2 made possible, as in 1.

The tick's last monitoring day draws its Evidently reports and the dashboard (the others store the
same metrics and decisions) once the tick has caught up with the clock, and while it catches up at
most once per REDRAW_SECONDS of real time, as do the HTML copies of the executed notebooks.

Decisions are taken on simulated dates that do not depend on when the runner happened to run, so
a runner that was down, or killed, ends with the same rows as one that never stopped.

Exactly once: the notebooks replace what they wrote for their window, and progress
(`simulation_state.last_inferred_date`, `last_monitored_end`, `monitored_through`) is recorded
only after a notebook has succeeded, so a restart after `kill -9` redoes the unfinished step and
nothing else. When monitoring recommends retraining (and no MODEL_VERSION is pinned, and the last
retraining is `retrain_cooldown_days` or more in the past), 02_train runs with `labels_known_by`
= that monitoring day and promotes only through its gate. The days after it that were already
scored are then scored again by the champion of that time: one transaction records the
`retrained` event, removes those predictions and moves `last_inferred_date` back.

A failed step stops the tick (later steps depend on it); the runner retries on a later tick. A
retraining that fails `MAX_RETRAIN_ATTEMPTS` times is given up: the current champion stays.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import psycopg2
from mlflow.exceptions import MlflowException

from lib.config import Settings
from lib.data.curated import CURATED, Window
from lib.data.lake import LakeError, open_lake
from lib.errors import NeedsAction, needs_action_names
from lib.runner import executor, kernels, run_result
from lib.runner.clock import Timeline, load_timeline
from lib.runner.planning import MAX_CHUNK_DAYS, MonitoringPoint, day_before, next_chunk, next_monitoring_point
from lib.runner.retention import prune_run_archive
from lib.runner.served_model import champion_version
from lib.store import events, metrics, predictions, simulation_state
from lib.store.db import DatabaseError, connect, session
from lib.store.metrics import PR_AUC_METRIC

log = logging.getLogger(__name__)

# At most one retraining per this many simulated days: a rejected candidate would otherwise be
# retrained at every window until the labels that could change it have arrived.
RETRAIN_COOLDOWN_DAYS = 28
# A retraining that keeps failing (e.g. too few labelled collisions) must not stall the simulation.
MAX_RETRAIN_ATTEMPTS = 3
# While catching up, a tick's reports are drawn at most once per this many real seconds: drawing a
# monitoring day's Evidently reports and the dashboard takes seconds, and the next tick replaces them
# moments later.
REDRAW_SECONDS = 60


class StepFailed(RuntimeError):
    """A notebook of the tick did not succeed; the tick stops and the step is retried later."""

    def __init__(self, message: str, result: run_result.RunResult | None = None):
        super().__init__(message)
        self.result = result


class SimulationError(RuntimeError, NeedsAction):
    """The simulation cannot go on as configured (e.g. it starts outside the ingested data)."""


# ------------------------------------------------------------------------------------------- state


@dataclass(frozen=True)
class Progress:
    """How far the simulation has come; days before `start_date` stand for "nothing yet"."""

    timeline: Timeline
    last_inferred: date
    last_monitored_end: date  # the last day of the last window monitored
    monitored_through: date  # the last monitoring day processed (window end or label arrival)


def load_progress(conn) -> Progress:
    timeline = load_timeline(conn)
    if timeline is None:
        raise SimulationError("the simulation has not started (simulation_state has no row)")
    row = simulation_state.progress(conn)
    nothing = day_before(timeline.start_date)
    last_monitored_end = row["last_monitored_end"] or nothing
    return Progress(
        timeline,
        row["last_inferred_date"] or nothing,
        last_monitored_end,
        row["monitored_through"] or last_monitored_end,
    )


def reset(conn) -> dict[str, int]:
    """Forget the simulation: its timeline, predictions, metrics and retraining events; return the rows removed."""
    removed = simulation_state.delete_simulation_rows(conn)
    log.info(
        "Reset the simulation: removed %s.", ", ".join(f"{count:,} {table} rows" for table, count in removed.items())
    )
    return removed


# ---------------------------------------------------------------------------------------- the tick


@dataclass
class TickReport:
    """What one tick did, for the console line and the tests."""

    simulated_now: datetime | None = None
    scored_days: Window | None = None
    collisions: int = 0
    alerts: int = 0
    windows: list[Window] = field(default_factory=list)
    drift_share: float | None = None
    drift_too_small: bool = False  # too few collisions in the window for its drift to count
    quality: list[tuple[date, float | None]] = field(default_factory=list)  # (window end, KSI PR-AUC)
    retraining: list[str] = field(default_factory=list)
    days_behind: int | None = None
    duration_s: float = 0.0
    failure: str | None = None
    done: bool = False

    def sentence(self) -> str:
        when = f"Simulated {self.simulated_now:%Y-%m-%d %H:%M}" if self.simulated_now else "Tick"
        parts = []
        if self.scored_days:
            first, last = self.scored_days.start, self.scored_days.end
            span = str(first) if first == last else f"{first}..{last}"
            parts.append(f"scored {span}: {self.collisions:,} collisions, {self.alerts:,} KSI alerts")
        if self.windows:
            first, last = self.windows[0].start, self.windows[-1].end
            drift = ""
            if self.drift_share is not None:
                drift = f", {self.drift_share:.0%} of features drifted in the last"
                drift += " (too few collisions for that to count)" if self.drift_too_small else ""
            parts.append(f"monitored {len(self.windows)} window(s) {first}..{last}{drift}")
        if self.quality:
            window_end, pr_auc = self.quality[-1]
            score = f"KSI PR-AUC {pr_auc:.3f}" if pr_auc is not None else "KSI PR-AUC undefined"
            parts.append(
                f"labels arrived for {len(self.quality)} window(s), up to the one ending {window_end}: {score}"
            )
        parts.extend(self.retraining)
        if self.failure:
            parts.append(self.failure)
        if not parts:
            parts.append("nothing to do")
        if self.days_behind is not None:
            plural = "s" if self.days_behind != 1 else ""
            parts.append("up to date" if self.days_behind <= 0 else f"{self.days_behind} day{plural} behind")
        return f"{when}: {'; '.join(parts)}; the tick took {self.duration_s:.1f} s."


class Runner:
    """Runs ticks of the simulation against the configured services.

    `stop` is the last simulated day to process (None: run for ever). `train_parameters` are
    passed to 02_train on retraining (tests use fewer bootstrap resamples). With `warm_kernel`
    the notebooks share one kernel (see `lib.runner.executor.WarmKernel`); `close()` shuts it down.
    `lock` is the one-runner lock when the caller took it already (scripts/simulate.py does, before
    a reset); `close()` releases it. `redraw_seconds`: see REDRAW_SECONDS.
    """

    def __init__(
        self,
        settings: Settings,
        stop: date | None = None,
        max_chunk_days: int = MAX_CHUNK_DAYS,
        retrain_cooldown_days: int = RETRAIN_COOLDOWN_DAYS,
        train_parameters: dict | None = None,
        warm_kernel: bool = True,
        lock: RunnerLock | None = None,
        redraw_seconds: float = REDRAW_SECONDS,
    ):
        self.settings = settings
        self.stop = stop
        self.max_chunk_days = max_chunk_days
        self.retrain_cooldown_days = retrain_cooldown_days
        self.train_parameters = dict(train_parameters or {})
        self._data_years: tuple[int, int] | None = None
        self._retrain_failures: dict[date, int] = {}
        self.lock = lock or RunnerLock(settings.database_url)
        self.redraw_seconds = redraw_seconds
        self._drawn_at = time.monotonic()
        # Notebook start-up (kernel, imports) costs more than a day's work: one kernel serves every run.
        self.kernel = kernels.WarmKernel() if warm_kernel else None

    # -- helpers -----------------------------------------------------------------------------

    def _session(self):
        return session(self.settings.database_url)

    def data_end(self, timeline: Timeline) -> date:
        """The last day of the ingested data; checks once that the simulation starts inside it."""
        if self._data_years is None:
            years = [p.year for p in open_lake(self.settings).partitions(CURATED)]
            if not years:
                raise SimulationError(
                    f"the lake {self.settings.lake_uri} has no curated collisions: run 01_ingest first"
                )
            self._data_years = (min(years), max(years))
        first, last = self._data_years
        if not first <= timeline.start_date.year <= last:
            raise SimulationError(
                f"the simulation starts on {timeline.start_date} but the lake holds {first}-{last}: set "
                f"SIMULATION_START_DATE inside those years and start over with --reset"
            )
        return date(last, 12, 31)

    def _draws(self, caught_up: bool) -> bool:
        """Whether the last run of this tick draws: always once the tick has caught up with the clock,
        and while catching up when the last drawing is `redraw_seconds` old."""
        return caught_up or time.monotonic() - self._drawn_at >= self.redraw_seconds

    def _run(self, notebook: str, parameters: dict, html_copy: bool = True) -> run_result.RunResult:
        result = executor.execute(
            notebook,
            parameters,
            reports_dir=self.settings.reports_dir,
            database_url=self.settings.database_url,
            timeout=self.settings.notebook_timeout,
            progress=False,
            kernel=self.kernel,
            html_copy=html_copy,
        )
        if not result.ok:
            where = f" (see {result.output_html or result.output_ipynb})" if result.output_ipynb else ""
            message = (f"{notebook} {result.status.replace('_', ' ')}: {result.error_name}: "
                       f"{(result.error_value or '').strip()}{where}")
            if result.error_name in needs_action_names():
                raise SimulationError(f"{message}. Retrying cannot fix this, so the runner stops.")
            raise StepFailed(message, result)
        return result

    @property
    def pinned(self) -> bool:
        return self.settings.model_version is not None

    # -- steps -------------------------------------------------------------------------------

    def _infer(self, days: Window, report: TickReport, html_copy: bool = True) -> None:
        first, last = days.start, days.end
        self._run(
            "03_infer",
            {
                "start_date": first.isoformat(),
                "end_date": last.isoformat(),
                "model_uri": self.settings.model_uri,
            },
            html_copy=html_copy,
        )
        with self._session() as conn:
            simulation_state.set_progress(conn, last_inferred_date=last)
            scored = predictions.count_scored(conn, first, last)
        report.scored_days = Window(report.scored_days.start if report.scored_days else first, last)
        report.collisions += scored["collisions"]
        report.alerts += scored["alerts"]

    def _next_point(self, progress: Progress) -> MonitoringPoint:
        return self._point_after(progress.last_monitored_end, progress.monitored_through)

    def _point_after(self, last_monitored_end: date, monitored_through: date, new: Window | None = None):
        """The monitoring day after `monitored_through`; `new`: a window about to be monitored too."""
        delay = self.settings.label_delay_days
        with self._session() as conn:
            windows = metrics.drift_windows_ending_after(conn, monitored_through - timedelta(days=delay))
        return next_monitoring_point(
            last_monitored_end,
            monitored_through,
            self.settings.monitor_window_days,
            delay,
            [Window(start, end) for start, end in windows] + ([new] if new else []),
        )

    def _monitor_due(self, report: TickReport, caught_up: bool) -> None:
        """Process every monitoring day up to the last scored day, in order; stop after a retraining.

        Only the last of them draws its Evidently reports and the dashboard, and gets the HTML copy of its
        executed notebook, and only when `caught_up` (nothing is left to score until the clock moves on) or
        the last drawing is `redraw_seconds` old. The others, which a runner catching up passes through
        in seconds, store the same metrics and decisions, and their executed notebooks (and 04_monitor
        draws any window's reports when run for it by hand).
        """
        while True:
            with self._session() as conn:
                progress = load_progress(conn)
            point = self._next_point(progress)
            if point.as_of > progress.last_inferred:
                return
            following = self._point_after(
                point.window.end if point.new_window else progress.last_monitored_end,
                point.as_of,
                point.window if point.new_window else None,
            )
            last = following.as_of > progress.last_inferred
            if self._monitor(point, progress, report, draw=last and self._draws(caught_up)):
                return

    def _monitor(self, point: MonitoringPoint, progress: Progress, report: TickReport, draw: bool = True) -> bool:
        """Run 04_monitor for one monitoring day (and retrain if told to); True when the simulation was rewound."""
        start, end, as_of = point.window.start, point.window.end, point.as_of
        done = {"monitored_through": as_of, **({"last_monitored_end": end} if point.new_window else {})}
        with self._session() as conn:
            scored = predictions.count_scored(conn, start, end)["collisions"]
        if not scored:
            log.info("No collision was scored in %s..%s: there is nothing to monitor in that window.", start, end)
            with self._session() as conn:
                simulation_state.set_progress(conn, **done)
            return False
        self._run(
            "04_monitor",
            {
                "window_start": start.isoformat(),
                "window_end": end.isoformat(),
                "as_of": as_of.isoformat(),
                "draw_reports": draw,
            },
            html_copy=draw,
        )
        if draw:
            self._drawn_at = time.monotonic()
        with self._session() as conn:
            drift = metrics.drift_share(conn, start, end)
            arrived = metrics.became_known(conn, PR_AUC_METRIC, progress.monitored_through, as_of)
            decision = events.decision_on(conn, self.settings.model_name, as_of)
        if point.new_window:
            report.windows.append(point.window)
            report.drift_share = drift
            report.drift_too_small = bool(decision) and decision["details"].get("drift_too_small", False)
        report.quality.extend(arrived)
        recommended = bool(decision) and decision["event"] == events.RETRAINING_RECOMMENDED
        if recommended and self._retrain(as_of, decision, done, report):
            return True
        with self._session() as conn:
            simulation_state.set_progress(conn, **done)
        return False

    def _why_not_retrain(self, as_of: date) -> str | None:
        if self.pinned:
            return "MODEL_VERSION pins the model"
        if self._retrain_failures.get(as_of, 0) >= MAX_RETRAIN_ATTEMPTS:
            return f"02_train failed {MAX_RETRAIN_ATTEMPTS} times for it, so the current champion stays"
        with self._session() as conn:
            last = events.last_retrained(conn, self.settings.model_name)
        if last is not None and (as_of - last).days < self.retrain_cooldown_days:
            return f"the model was retrained on {last} (at most once per {self.retrain_cooldown_days} days)"
        return None

    def _retrain(self, as_of: date, decision: dict, done: dict, report: TickReport) -> bool:
        """Run 02_train on the labels known on `as_of`; True when it ran (and the simulation was rewound)."""
        reasons = "; ".join(decision["details"].get("reasons", [])) or "no reason given"
        why_not = self._why_not_retrain(as_of)
        if why_not:
            report.retraining.append(f"retraining recommended on {as_of} ({reasons}) but {why_not}")
            return False

        log.info("Retraining recommended on %s (%s): running 02_train on the labels known by then.", as_of, reasons)
        before = champion_version(self.settings)
        try:
            result = self._run(
                "02_train",
                {
                    **self.train_parameters,
                    "labels_known_by": as_of.isoformat(),
                    "promote": True,
                },
            )
        except StepFailed:
            self._retrain_failures[as_of] = self._retrain_failures.get(as_of, 0) + 1
            raise
        after = champion_version(self.settings)
        details = {
            "labels_known_by": as_of.isoformat(),
            "reasons": decision["details"].get("reasons", []),
            "notebook_run_id": result.run_id,
            "champion_before": before,
            "champion_after": after,
        }
        with self._session() as conn:
            events.record(conn, events.RETRAINED, self.settings.model_name, after, details, as_of)
            # The days after `as_of` are scored again by the champion of that time.
            rescored = predictions.delete_after(conn, as_of)
            simulation_state.set_progress(conn, **done, last_inferred_date=as_of)
        outcome = f"version {after} is the new champion" if after != before else f"champion version {before} stays"
        report.retraining.append(
            f"retrained on the labels known by {as_of}: {outcome}"
            + (f"; {rescored:,} predictions after {as_of} are scored again" if rescored else "")
        )
        return True

    # -- the tick ----------------------------------------------------------------------------

    def final_day(self, timeline: Timeline) -> date:
        """The last simulated day this runner processes: the stop day or the end of the data."""
        return min(filter(None, [self.stop, self.data_end(timeline)]))

    def tick(self, now: datetime | None = None) -> TickReport:
        """Bring the simulation as far as the clock allows (one scoring chunk at most).

        A failure is reported in `TickReport.failure`, not raised, so the caller carries on; only
        a SimulationError (a configuration the simulation cannot run with) and interruptions raise.
        """
        began = time.monotonic()
        report = TickReport()
        try:
            self.lock.hold()
            with self._session() as conn:
                timeline = load_progress(conn).timeline
            now = now or datetime.now(UTC)
            report.simulated_now = timeline.simulated_now(now)
            target = min(timeline.completed_through(now), self.final_day(timeline))
            with self._session() as conn:
                progress = load_progress(conn)
            self._monitor_due(report, caught_up=progress.last_inferred >= target)
            with self._session() as conn:
                progress = load_progress(conn)
            chunk = next_chunk(progress.last_inferred, target, self.max_chunk_days)
            if chunk:
                self._infer(chunk, report, html_copy=self._draws(chunk.end >= target))
                self._monitor_due(report, caught_up=chunk.end >= target)
            with self._session() as conn:
                progress = load_progress(conn)
            final = self.final_day(timeline)
            due = min(timeline.completed_through(datetime.now(UTC)), final)
            report.days_behind = (due - progress.last_inferred).days
            report.done = progress.last_inferred >= final and self._next_point(progress).as_of > final
            with self._session() as conn:
                prune_run_archive(conn, self.settings.runs_keep_per_notebook)
        except NeedsAction:
            raise
        except psycopg2.ProgrammingError as error:  # a table or column the statement expects is not there
            raise SimulationError(
                f"PostgreSQL at {self.settings.database_url.rsplit('@', 1)[-1]} refused a statement of the runner: "
                f"{str(error).strip().splitlines()[0]}. The database's schema is not the one the migrations in "
                "lib/migrations build; retrying cannot fix this, so the runner stops"
            ) from error
        except (StepFailed, DatabaseError, LakeError, psycopg2.Error, MlflowException) as error:
            report.failure = str(error)
        except Exception as error:  # an outage shows up as many exception types; the runner must survive it
            log.exception("The tick failed unexpectedly.")
            report.failure = f"{type(error).__name__}: {error}"
        finally:
            report.duration_s = time.monotonic() - began
        return report

    def caught_up(self, report: TickReport) -> bool:
        return report.failure is None and (report.days_behind or 0) <= 0

    def close(self) -> None:
        if self.kernel is not None:
            self.kernel.close()
        self.lock.release()


class RunnerLock:
    """One runner per database: a session-level advisory lock on a connection of its own.

    PostgreSQL releases it when the runner's process dies, so `kill -9` leaves no stale lock. When
    the connection breaks (a database restart), `hold` takes the lock again.
    """

    def __init__(self, database_url: str):
        self.database_url = database_url
        self.conn = None

    def hold(self) -> None:
        if self.conn is not None and not self.conn.closed:
            if simulation_state.still_connected(self.conn):
                return
            self.conn.close()
        self.conn = connect(self.database_url)
        self.conn.autocommit = True
        if not simulation_state.try_runner_lock(self.conn):
            self.release()
            raise SimulationError(
                "another simulation runner is working on this database (it holds the runner lock); stop it first. "
                "Nothing was changed"
            )

    def release(self) -> None:
        if self.conn is not None and not self.conn.closed:
            self.conn.close()
        self.conn = None


