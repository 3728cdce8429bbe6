"""The simulation's warped clock: which simulated day it is, from the real time since it started.

A simulated day lasts `seconds_per_day` real seconds. The clock starts at midnight of
`start_date` at the real instant `started_at`, so day `start_date` is complete (and can be
scored) `seconds_per_day` seconds later. The timeline is persisted in the `simulation_state` row
`default`, so a runner that restarts continues the same timeline and catches up on the days that
passed while it was down. Changed settings (another SIMULATION_START_DATE or SECONDS_PER_DAY) do
not move a running timeline: the runner keeps the persisted one and says so, until it is reset.

`Timeline` is pure arithmetic with the real time passed in, so it is tested without waiting.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from lib.store import simulation_state

log = logging.getLogger(__name__)

SIMULATION_NAME = "default"


@dataclass(frozen=True)
class Timeline:
    """A warped clock: simulated midnight of `start_date` at the real instant `started_at`."""

    started_at: datetime  # timezone-aware
    start_date: date
    seconds_per_day: float

    def __post_init__(self):
        if self.started_at.tzinfo is None:
            raise ValueError(f"started_at {self.started_at} must be timezone-aware")
        if not self.seconds_per_day > 0:
            raise ValueError(f"seconds_per_day must be positive, got {self.seconds_per_day!r}")

    def elapsed_days(self, now: datetime) -> float:
        """Simulated days since the start (0 before the start)."""
        return max((now - self.started_at).total_seconds(), 0.0) / self.seconds_per_day

    def simulated_now(self, now: datetime) -> datetime:
        """The simulated date and time (naive) at the real instant `now`."""
        midnight = datetime.combine(self.start_date, datetime.min.time())
        return midnight + timedelta(days=self.elapsed_days(now))

    def today(self, now: datetime) -> date:
        """The simulated day in progress at `now`."""
        return self.start_date + timedelta(days=math.floor(self.elapsed_days(now)))

    def completed_through(self, now: datetime) -> date:
        """The last simulated day that has ended by `now`; the day before `start_date` if none has."""
        return self.today(now) - timedelta(days=1)

    def end_of(self, day: date) -> datetime:
        """The real instant at which the simulated `day` ends."""
        return self.started_at + timedelta(seconds=((day - self.start_date).days + 1) * self.seconds_per_day)

    def differs_from(self, start_date: date, seconds_per_day: float) -> list[str]:
        """What differs between this timeline and the given settings, as readable phrases."""
        changes = []
        if start_date != self.start_date:
            changes.append(f"SIMULATION_START_DATE is {start_date} but the timeline started on {self.start_date}")
        if not math.isclose(seconds_per_day, self.seconds_per_day):
            changes.append(f"SECONDS_PER_DAY is {seconds_per_day:g} but the timeline runs at {self.seconds_per_day:g}")
        return changes


def load_timeline(conn) -> Timeline | None:
    """The persisted timeline, or None when the simulation has not started (or was reset)."""
    row = simulation_state.timeline(conn)
    return Timeline(**row) if row else None


def start_or_resume(
    conn, start_date: date, seconds_per_day: float, now: datetime | None = None
) -> tuple[Timeline, bool]:
    """The persisted timeline, or a new one starting at `now`; returns (timeline, started_now).

    When the settings differ from a persisted timeline, the persisted one is kept and a warning
    names each difference: moving a running timeline would skip or repeat simulated days.
    """
    now = now or datetime.now(UTC)
    started_now = simulation_state.create_timeline(conn, now, start_date, seconds_per_day)
    timeline = load_timeline(conn)
    if started_now:
        log.info(
            "Started a new simulated timeline: %s begins now, one simulated day every %g s.",
            start_date,
            seconds_per_day,
        )
        return timeline, True
    changes = timeline.differs_from(start_date, seconds_per_day)
    if changes:
        log.warning(
            "The settings differ from the simulation already under way: %s. The simulation continues on its "
            "persisted timeline (started %s at %s, %g s per day); run with --reset to start over with the new "
            "settings.",
            "; ".join(changes),
            timeline.start_date,
            f"{timeline.started_at:%Y-%m-%d %H:%M:%S %Z}",
            timeline.seconds_per_day,
        )
    else:
        log.info(
            "Resuming the simulated timeline that started on %s (real start %s, %g s per day).",
            timeline.start_date,
            f"{timeline.started_at:%Y-%m-%d %H:%M:%S %Z}",
            timeline.seconds_per_day,
        )
    return timeline, False
