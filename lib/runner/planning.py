"""Which simulated days come next: the next chunk to score, the next monitoring day, when to stop, and
the back-off after a failed tick. Pure functions of dates, so tests pin them without services."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from lib.data.curated import Window

MAX_CHUNK_DAYS = 31  # days per 03_infer run while catching up


def day_before(day: date) -> date:
    return day - timedelta(days=1)


def next_chunk(last_inferred: date, target: date, max_days: int = MAX_CHUNK_DAYS) -> Window | None:
    """The next days to score, or None when everything through `target` is scored."""
    if last_inferred >= target:
        return None
    first = last_inferred + timedelta(days=1)
    return Window(first, min(target, first + timedelta(days=max_days - 1)))


def next_window(last_monitored_end: date, window_days: int) -> Window:
    """The window after the last monitored one; windows follow each other from the start date."""
    first = last_monitored_end + timedelta(days=1)
    return Window(first, first + timedelta(days=window_days - 1))


@dataclass(frozen=True)
class MonitoringPoint:
    """A simulated day on which 04_monitor runs for `window` with `as_of` = that day.

    Either the last day of a window not monitored yet (`new_window`: its drift, the quality of
    every window whose labels have all arrived, the decision), or the day on which the labels of
    an already monitored window have all arrived (its quality, and the decision again).
    """

    as_of: date
    window: Window
    new_window: bool


def next_monitoring_point(
    last_monitored_end: date,
    monitored_through: date,
    window_days: int,
    label_delay_days: int,
    monitored_windows: list[Window],
) -> MonitoringPoint:
    """The first monitoring day after `monitored_through`: a window end or a label arrival."""
    window = next_window(last_monitored_end, window_days)
    point = MonitoringPoint(window.end, window, True)
    arrivals = [
        (monitored.end + timedelta(days=label_delay_days), monitored)
        for monitored in monitored_windows
        if monitored.end + timedelta(days=label_delay_days) > monitored_through
    ]
    if arrivals:
        as_of, returning = min(arrivals, key=lambda arrival: (arrival[0], arrival[1].start))
        if as_of < point.as_of:  # on a window's last day, its own run computes the arrived quality too
            point = MonitoringPoint(as_of, returning, False)
    return point


def stop_date(start_date: date, days: int | None = None, until: date | None = None) -> date | None:
    """The last simulated day to process: the earlier of `start_date + days - 1` and `until`."""
    candidates = [until] if until else []
    if days is not None:
        candidates.append(start_date + timedelta(days=days - 1))
    return min(candidates) if candidates else None


@dataclass
class Backoff:
    """After the n-th failure in a row, skip 2**(n-1) ticks (at most `max_skip`)."""

    max_skip: int = 64
    failures: int = 0
    skip_left: int = 0

    def should_skip(self) -> bool:
        if self.skip_left:
            self.skip_left -= 1
            return True
        return False

    def failed(self) -> int:
        """Record a failure; return how many ticks will be skipped."""
        self.failures += 1
        self.skip_left = min(2 ** (self.failures - 1), self.max_skip)
        return self.skip_left

    def succeeded(self) -> None:
        self.failures = self.skip_left = 0
