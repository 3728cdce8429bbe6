"""The warped clock: pure arithmetic with an injected "now", and its timeline persisted in PostgreSQL."""

from __future__ import annotations

import importlib.util
import io
import logging
from datetime import UTC, date, datetime, timedelta

import pytest

from lib.config import ROOT
from lib.runner import clock, simulation
from lib.store import simulation_state
from lib.store.db import fetch_dicts, session

STARTED = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
TIMELINE = clock.Timeline(STARTED, date(2018, 1, 1), seconds_per_day=10)


def test_no_day_has_ended_when_the_clock_starts():
    assert TIMELINE.today(STARTED) == date(2018, 1, 1)
    assert TIMELINE.completed_through(STARTED) == date(2017, 12, 31)
    assert TIMELINE.simulated_now(STARTED) == datetime(2018, 1, 1)


def test_each_day_lasts_seconds_per_day():
    now = STARTED + timedelta(seconds=25)  # two and a half simulated days
    assert TIMELINE.simulated_now(now) == datetime(2018, 1, 3, 12, 0)
    assert TIMELINE.today(now) == date(2018, 1, 3)
    assert TIMELINE.completed_through(now) == date(2018, 1, 2)
    a_year_later = STARTED + timedelta(seconds=365 * 10)
    assert TIMELINE.completed_through(a_year_later) == date(2018, 12, 31)


def test_a_day_is_complete_exactly_at_its_end():
    day = date(2018, 2, 14)
    end = TIMELINE.end_of(day)
    assert end == STARTED + timedelta(seconds=(31 + 14) * 10)
    assert TIMELINE.completed_through(end) == day
    assert TIMELINE.completed_through(end - timedelta(microseconds=1)) == day - timedelta(days=1)


def test_fractional_seconds_per_day_and_a_clock_set_before_the_start():
    fast = clock.Timeline(STARTED, date(2018, 1, 1), seconds_per_day=0.25)
    assert fast.completed_through(STARTED + timedelta(seconds=1)) == date(2018, 1, 4)
    assert fast.completed_through(STARTED - timedelta(hours=1)) == date(2017, 12, 31)


def test_bad_timelines_are_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        clock.Timeline(datetime(2025, 3, 1), date(2018, 1, 1), 10)
    with pytest.raises(ValueError, match="seconds_per_day must be positive"):
        clock.Timeline(STARTED, date(2018, 1, 1), 0)


def test_differences_from_the_settings_are_named():
    assert TIMELINE.differs_from(date(2018, 1, 1), 10.0) == []
    changes = TIMELINE.differs_from(date(2019, 1, 1), 2)
    assert len(changes) == 2
    assert "2019-01-01" in changes[0] and "2018-01-01" in changes[0]
    assert "SECONDS_PER_DAY is 2" in changes[1]


# ------------------------------------------------------------------------------------------ PostgreSQL


def test_a_restart_continues_the_persisted_timeline(fresh_database):
    with session(fresh_database) as conn:
        first, started = clock.start_or_resume(conn, date(2018, 1, 1), 10, now=STARTED)
    assert started and first == TIMELINE
    later = STARTED + timedelta(minutes=5)
    with session(fresh_database) as conn:  # a new process would read the same row
        again, started = clock.start_or_resume(conn, date(2018, 1, 1), 10, now=later)
    assert not started and again == first
    assert again.completed_through(later) == date(2018, 1, 30)


def test_changed_settings_keep_the_timeline_and_say_so(fresh_database, caplog):
    with session(fresh_database) as conn:
        clock.start_or_resume(conn, date(2018, 1, 1), 10, now=STARTED)
    with caplog.at_level(logging.WARNING, logger="lib.runner.clock"), session(fresh_database) as conn:
        kept, started = clock.start_or_resume(conn, date(2019, 6, 1), 2, now=STARTED + timedelta(hours=1))
    assert not started and kept == TIMELINE
    warning = " ".join(record.getMessage() for record in caplog.records)
    assert "2019-06-01" in warning and "SECONDS_PER_DAY is 2" in warning and "--reset" in warning


def _seed_simulation_rows(conn) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO predictions (collision_index, model_version, collision_date, window_start, window_end,"
            " p_fatal, p_serious, p_slight, p_ksi, predicted_severity, ksi_alert, alert_threshold)"
            " VALUES ('2018SY0000001', '1', '2018-01-01', '2018-01-01', '2018-01-01', 0.01, 0.2, 0.79, 0.21, 3,"
            " false, 0.3)"
        )
        cur.execute(
            "INSERT INTO monitoring_metrics (window_start, window_end, model_version, metric, value, known_at)"
            " VALUES ('2018-01-01', '2018-01-07', '1', 'drift.rows', 1, '2018-01-07')"
        )
        cur.execute(
            "INSERT INTO place_risk (known_at, period_start, period_end, windows, model_versions, grid_degrees,"
            " min_expected, level, place, name, collisions, observed, expected, excess, excess_low, excess_high,"
            " shrunk_ratio, shrunk_ratio_low, shrunk_ratio_high, shrunk_excess, prior_strength)"
            " VALUES ('2018-02-06', '2018-01-01', '2018-01-07', 1, '1', 0.25, 5, 'local_authority', 'E09000031',"
            " 'Waltham Forest', 14, 2, 2.5, -0.5, -3.1, 2.1, 0.98, 0.63, 1.41, -0.05, 25)"
        )
        for event in ("retraining_recommended", "retraining_not_needed", "retrained", "promoted"):
            cur.execute(
                "INSERT INTO model_events (event, model_name, model_version, simulated_date)"
                " VALUES (%s, 'm', '1', '2018-01-07')",
                (event,),
            )


def test_reset_forgets_the_simulation_but_not_the_promotions(fresh_database):
    with session(fresh_database) as conn:
        clock.start_or_resume(conn, date(2018, 1, 1), 10, now=STARTED)
        _seed_simulation_rows(conn)
    with session(fresh_database) as conn:
        before = simulation_state.count_simulation_rows(conn)
        removed = simulation.reset(conn)
    assert before == removed == {"predictions": 1, "monitoring_metrics": 1, "place_risk": 1, "model_events": 3,
                                 "simulation_state": 1}
    with session(fresh_database) as conn:
        assert simulation_state.count_simulation_rows(conn) == dict.fromkeys(before, 0)
        assert [row["event"] for row in fetch_dicts(conn, "SELECT event FROM model_events")] == ["promoted"]
        assert clock.load_timeline(conn) is None
        restarted, started = clock.start_or_resume(conn, date(2019, 6, 1), 2, now=STARTED + timedelta(days=1))
    assert started and restarted.start_date == date(2019, 6, 1) and restarted.seconds_per_day == 2


@pytest.fixture
def simulate_script():
    spec = importlib.util.spec_from_file_location("simulate", ROOT / "scripts" / "simulate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reset_without_a_terminal_needs_yes_and_deletes_nothing(fresh_database, simulate_script, monkeypatch, capsys):
    with session(fresh_database) as conn:
        clock.start_or_resume(conn, date(2018, 1, 1), 10, now=STARTED)
        _seed_simulation_rows(conn)
    monkeypatch.setenv("DATABASE_URL", fresh_database)
    monkeypatch.setattr(simulate_script.sys, "stdin", io.StringIO())
    monkeypatch.setattr(simulate_script, "handle_sigterm_as_interrupt", lambda: None)
    assert simulate_script.main(["--reset"]) == simulate_script.EXIT_BAD_INPUT
    assert "--yes" in capsys.readouterr().err
    with session(fresh_database) as conn:
        assert simulation_state.count_simulation_rows(conn)["predictions"] == 1
        assert clock.load_timeline(conn) == TIMELINE
