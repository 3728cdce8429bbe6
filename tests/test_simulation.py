"""The simulation runner end to end on small synthetic data, undisturbed and under faults.

Every run simulates the same ten days (two monitoring windows of five days, labels arriving three
days late) from a timeline that started long ago, so all ten days are due at once. A run that is
killed, interrupted or cut off from PostgreSQL or S3 is restarted (or waits), and must end with
exactly the rows of an undisturbed run: the same predictions, the same metric values, the same
simulation state. The undisturbed run uses a fresh kernel per notebook and the others one warm
kernel, so the comparison also shows that warm kernels change no result.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import psycopg2
import pytest

from lib.config import ROOT, Settings, load_settings
from lib.data import synth
from lib.data.curated import CURATED, Window
from lib.data.lake import Lake
from lib.runner import clock, planning, scenario, simulation
from lib.services.stack import Stack, private_variables
from lib.store import simulation_state
from lib.store.db import fetch_dicts, session

pytestmark = pytest.mark.slow

YEARS = (2020, 2021, 2022, 2023)
START = date(2023, 1, 1)
DAYS = 10
WINDOW_DAYS, LABEL_DELAY_DAYS = 5, 3
# The second window is flooded with rural 60 mph collisions at night: monitoring recommends retraining.
# 30,000 collisions a year put about 400 in each window, above the size below which drift does not count.
SHIFT = synth.Shift(date(2023, 1, 6), date(2023, 1, 10), fraction=0.8)
SIMULATE = ROOT / "scripts" / "simulate.py"
# Runs simulate.py, but kills its own process right after the named notebook succeeded, before the
# runner records its progress: the moment where a lost or doubled day would show.
KILL_AFTER_DRIVER = """
import os, runpy, signal, sys
from lib.runner import executor
execute = executor.execute
def execute_then_die(notebook, *args, **kwargs):
    result = execute(notebook, *args, **kwargs)
    if notebook == os.environ["KILL_AFTER"]:
        os.kill(os.getpid(), signal.SIGKILL)
    return result
executor.execute = execute_then_die
sys.argv = [{simulate!r}, *sys.argv[1:]]
runpy.run_path({simulate!r}, run_name="__main__")
"""


@dataclass(frozen=True)
class World:
    lake_uri: str
    model_name: str
    version: str
    collisions: pd.DataFrame  # collision_index and date of the simulated year's curated collisions

    def scored(self, days: int = DAYS) -> list[str]:
        """The indexes of the collisions dated in the first `days` simulated days, sorted."""
        dated = pd.to_datetime(self.collisions["date"]).dt.date
        inside = (dated >= START) & (dated < START + timedelta(days=days))
        return sorted(self.collisions.loc[inside, "collision_index"])


@pytest.fixture(scope="module")
def world(settings, tmp_path_factory) -> World:
    """Synthetic 2020-2023 in a private lake prefix and a champion trained on 2020-2022."""
    folder = tmp_path_factory.mktemp("simulation-synthetic")
    base_url = scenario.write_synthetic_mirror(folder, YEARS, 30_000, seed=3, shift=SHIFT)
    suffix = uuid.uuid4().hex[:6]
    own = load_settings(
        {
            **os.environ,
            "LAKE_URI": f"{settings.lake_uri}/simulation-{suffix}",
            "MODEL_NAME": f"simulation_test_{suffix}",
        }
    )
    scenario.ingest(own, YEARS, base_url, progress=False)
    version = scenario.ensure_baseline_champion(
        own, scenario.plan_years(YEARS), progress=False, bootstrap_resamples=100, importance_rows=300
    )
    curated = Lake(own.lake_uri, own).read_partition(CURATED, START.year, ["collision_index", "date"])
    return World(own.lake_uri, own.model_name, version, curated)


# ------------------------------------------------------------------------------------------- planning


def test_monitoring_days_are_window_ends_and_label_arrivals_in_date_order():
    def point(last_end, through, windows, delay=3):
        return planning.next_monitoring_point(last_end, through, 5, delay, windows)

    nothing = date(2022, 12, 31)
    assert point(nothing, nothing, []) == planning.MonitoringPoint(
        date(2023, 1, 5), Window(date(2023, 1, 1), date(2023, 1, 5)), True
    )
    first = Window(date(2023, 1, 1), date(2023, 1, 5))
    # The first window's labels arrive on the 8th, before the second window ends on the 10th.
    assert point(first.end, first.end, [first]) == planning.MonitoringPoint(date(2023, 1, 8), first, False)
    assert point(first.end, date(2023, 1, 8), [first]).as_of == date(2023, 1, 10)
    # When the labels arrive on a window's last day, that window's own run computes the quality.
    assert point(first.end, first.end, [first], delay=5) == planning.MonitoringPoint(
        date(2023, 1, 10), Window(date(2023, 1, 6), date(2023, 1, 10)), True
    )
    # Without a label delay, quality is computed in the window's own run.
    assert point(first.end, first.end, [first], delay=0).as_of == date(2023, 1, 10)


def test_catching_up_goes_in_bounded_chunks_and_failures_back_off():
    assert planning.next_chunk(date(2022, 12, 31), date(2023, 12, 31)) == Window(date(2023, 1, 1), date(2023, 1, 31))
    assert planning.next_chunk(date(2023, 12, 20), date(2023, 12, 31)) == Window(date(2023, 12, 21), date(2023, 12, 31))
    assert planning.next_chunk(date(2023, 12, 31), date(2023, 12, 31)) is None
    assert planning.stop_date(START, days=10) == date(2023, 1, 10)
    assert planning.stop_date(START, days=10, until=date(2023, 1, 4)) == date(2023, 1, 4)
    assert planning.stop_date(START) is None

    backoff = planning.Backoff(max_skip=4)
    skipped = []
    for _ in range(4):
        skipped.append(backoff.failed())
        while backoff.should_skip():
            pass
    assert skipped == [1, 2, 4, 4]
    backoff.succeeded()
    assert not backoff.should_skip() and backoff.failed() == 1


def test_a_model_missing_from_the_registry_stops_the_runner_at_start(settings, fresh_database, tmp_path):
    env = {**os.environ, "DATABASE_URL": fresh_database, "MODEL_NAME": "no_such_model", "REPORTS_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, str(SIMULATE), "--days", "3"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    assert f"looked up models:/no_such_model@champion in the MLflow registry at {settings.mlflow_tracking_uri}" \
        in done.stderr
    assert "MODEL_NAME" in done.stderr and "make training-workflow" in done.stderr


def test_a_notebook_error_that_retrying_cannot_fix_stops_the_runner(settings, tmp_path):
    """Only the error's class name crosses the kernel: the runner must still tell it from an outage."""
    runner = simulation.Runner(replace(settings, model_name="no_such_model", reports_dir=tmp_path), warm_kernel=False)
    try:
        with pytest.raises(simulation.SimulationError,
                           match=r"03_infer failed: ModelNotFound: looked up models:/no_such_model@champion .*"
                                 r"Retrying cannot fix this, so the runner stops"):
            runner._infer(Window(date(2023, 1, 1), date(2023, 1, 2)), simulation.TickReport())
    finally:
        runner.close()


def test_a_database_schema_the_runner_does_not_know_stops_it(settings, fresh_database):
    with session(fresh_database) as conn, conn.cursor() as cur:
        cur.execute("DROP TABLE simulation_state")
    runner = simulation.Runner(replace(settings, database_url=fresh_database), warm_kernel=False)
    try:
        with pytest.raises(simulation.SimulationError, match=r'relation "simulation_state" does not exist.*stops'):
            runner.tick()
    finally:
        runner.close()


def _administer(server: str, statement: str) -> None:
    admin = psycopg2.connect(server + "/postgres")
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(statement)
    finally:
        admin.close()


def simulation_env(world: World, database_url: str, reports: Path, **overrides: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "LAKE_URI": world.lake_uri,
        "MODEL_NAME": world.model_name,
        "MODEL_VERSION": world.version,  # no retraining: the fault runs compare like for like
        "SIMULATION_START_DATE": START.isoformat(),
        "SECONDS_PER_DAY": "1",
        "EVAL_SCHEDULER_INCREMENT": "0.5",
        "MONITOR_WINDOW_DAYS": str(WINDOW_DAYS),
        "LABEL_DELAY_DAYS": str(LABEL_DELAY_DAYS),
        "REPORTS_DIR": str(reports),
        **overrides,
    }


def start_timeline_long_ago(database_url: str) -> None:
    """Persist a timeline that started an hour ago, so every one of the simulated days is due."""
    with session(database_url) as conn:
        clock.start_or_resume(conn, START, 1, now=datetime.now(UTC) - timedelta(hours=1))


class Runner:
    """scripts/simulate.py as a subprocess, its output in a log file."""

    def __init__(self, env: dict[str, str], log: Path, *args: str, driver: Path | None = None):
        self.log = log
        command = [sys.executable, str(driver or SIMULATE), "--days", str(DAYS), *args]
        with open(log, "a") as out:
            self.process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)

    def wait(self, timeout: float = 180) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            pytest.fail(f"the runner did not finish within {timeout} s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text()[-6000:]


def wait_until(condition, what: str, runner: Runner, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if runner.process.poll() is not None:
            pytest.fail(f"the runner exited ({runner.process.returncode}) before {what}:\n{runner.output()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}:\n{runner.output()}")
        time.sleep(0.1)


def runs(database_url: str, notebook: str, status: str | None = None) -> list[dict]:
    with session(database_url) as conn:
        rows = fetch_dicts(conn, "SELECT * FROM notebook_runs WHERE notebook = %s ORDER BY started_at", (notebook,))
    return [row for row in rows if status is None or row["status"] == status]


def snapshot(database_url: str) -> dict[str, list[dict]]:
    """Everything a simulation leaves behind that must not depend on faults and restarts."""
    queries = {
        "predictions": "SELECT collision_index, model_version, collision_date, p_fatal, p_serious, p_slight, p_ksi,"
        " predicted_severity, ksi_alert FROM predictions ORDER BY collision_index, model_version",
        "metrics": "SELECT window_start, window_end, model_version, metric, value, known_at FROM monitoring_metrics"
        " ORDER BY window_start, window_end, model_version, metric",
        "state": "SELECT name, start_date, seconds_per_day, last_inferred_date, last_monitored_end,"
        " monitored_through FROM simulation_state",
    }
    with session(database_url) as conn:
        return {name: fetch_dicts(conn, query) for name, query in queries.items()}


@pytest.fixture(scope="module")
def undisturbed(world, settings, tmp_path_factory) -> dict[str, list[dict]]:
    """An undisturbed run with a fresh kernel per notebook: what every other run must end with."""
    server = settings.database_url.rsplit("/", 1)[0]
    name = "simulation_undisturbed_" + uuid.uuid4().hex[:6]
    _administer(server, f'CREATE DATABASE "{name}"')
    database_url = f"{server}/{name}"
    reports = tmp_path_factory.mktemp("undisturbed-reports")
    start_timeline_long_ago(database_url)
    runner = Runner(simulation_env(world, database_url, reports), reports / "runner.log", "--fresh-kernels")
    assert runner.wait() == 0, runner.output()
    result = snapshot(database_url)
    result["runs"] = {nb: len(runs(database_url, nb)) for nb in ("03_infer", "04_monitor", "02_train")}
    with session(database_url) as conn:
        result["events"] = fetch_dicts(conn, "SELECT event, simulated_date FROM model_events ORDER BY id")
    result["index"] = (reports / "index.html").read_text()
    result["reports"] = sorted(p.name for p in (reports / "monitoring").glob("*.html"))
    result["dashboard"] = (reports / "dashboard.html").is_file()
    result["log"] = runner.output()
    _administer(server, f'DROP DATABASE "{name}" WITH (FORCE)')
    return result


def test_an_undisturbed_run_scores_every_day_once_and_monitors_every_window(world, undisturbed):
    predictions = pd.DataFrame(undisturbed["predictions"])
    assert sorted(predictions["collision_index"]) == world.scored()
    assert set(predictions["model_version"]) == {world.version}

    metrics = pd.DataFrame(undisturbed["metrics"])
    windows = {(row.window_start, row.window_end) for row in metrics.itertuples()}
    assert windows == {(date(2023, 1, 1), date(2023, 1, 5)), (date(2023, 1, 6), date(2023, 1, 10))}
    quality = metrics[metrics["metric"].str.startswith("quality.")]
    # The first window's labels all arrived on 8 January, and its quality was computed that day; the
    # second window's arrive on the 13th, after the simulated stretch.
    assert set(quality["window_end"]) == {date(2023, 1, 5)} and set(quality["known_at"]) == {date(2023, 1, 8)}
    drift = metrics[metrics["metric"] == "drift.share_drifted_features"].set_index("window_end")["value"]
    assert drift[date(2023, 1, 10)] >= 0.2  # the shifted window

    [state] = undisturbed["state"]
    assert state["last_inferred_date"] == state["last_monitored_end"] == state["monitored_through"] == date(2023, 1, 10)
    # All ten days were due at once: one scoring run; monitoring at the end of each window and on the
    # day the first window's labels arrived; no retraining, since MODEL_VERSION pins the model,
    # although monitoring recommended it.
    assert undisturbed["runs"] == {"03_infer": 1, "04_monitor": 3, "02_train": 0}
    decisions = {e["simulated_date"]: e["event"] for e in undisturbed["events"]}
    assert sorted(decisions) == [date(2023, 1, 5), date(2023, 1, 8), date(2023, 1, 10)]
    assert decisions[date(2023, 1, 10)] == "retraining_recommended"
    assert "MODEL_VERSION pins the model" in undisturbed["log"]
    # Caught up in one tick: only its last monitoring day drew Evidently reports (the drift of its window,
    # and the quality of the first, whose labels completed during it) and the dashboard; the first
    # window's own day drew nothing.
    assert undisturbed["reports"] == [
        f"drift_2023-01-06_2023-01-10_model-{world.version}.html",
        f"quality_2023-01-01_2023-01-05_model-{world.version}.html",
    ]
    assert undisturbed["dashboard"]
    index = undisturbed["index"]
    listed = re.findall(r'<tr data-notebook="(\w+)"', index)
    assert len(listed) == 4 and listed[0] == "04_monitor" and listed[-1] == "03_infer"  # newest first


def test_a_runner_catching_up_over_several_ticks_draws_only_on_the_tick_that_catches_up(
    world, undisturbed, fresh_database, tmp_path, monkeypatch
):
    """The reports of a tick that the next one replaces at once are not drawn; the rows are the same."""
    reports = tmp_path / "reports"
    for key, value in simulation_env(world, fresh_database, reports).items():
        monkeypatch.setenv(key, value)  # the notebooks' kernel reads them, as under scripts/simulate.py
    start_timeline_long_ago(fresh_database)
    runner = simulation.Runner(load_settings(), stop=START + timedelta(days=DAYS - 1), max_chunk_days=5,
                               redraw_seconds=3600)
    try:
        ticks = [runner.tick() for _ in range(2)]
    finally:
        runner.close()

    assert [(tick.failure, tick.scored_days) for tick in ticks] == [
        (None, Window(START, date(2023, 1, 5))), (None, Window(date(2023, 1, 6), date(2023, 1, 10)))
    ]
    assert ticks[-1].done
    # The first tick (still behind) drew nothing; the second drew what the undisturbed single tick drew.
    assert sorted(p.name for p in (reports / "monitoring").glob("*.html")) == undisturbed["reports"]
    assert [run["output_html"] is not None for run in runs(fresh_database, "03_infer")] == [False, True]
    assert [run["output_html"] is not None for run in runs(fresh_database, "04_monitor")] == [False, False, True]
    assert snapshot(fresh_database) == {name: undisturbed[name] for name in ("predictions", "metrics", "state")}


def _wait_inside(runner: Runner, database_url: str, notebook: str, nth: int) -> None:
    """Return once the runner is half a second into its `nth` run of `notebook`."""
    wait_until(
        lambda: len(runs(database_url, notebook)) >= nth and runs(database_url, notebook)[-1]["status"] == "running",
        f"{notebook} run {nth} is running",
        runner,
    )
    time.sleep(0.5)


def _kill_during(notebook: str, nth: int):
    def fault(runner: Runner, database_url: str) -> None:
        _wait_inside(runner, database_url, notebook, nth)
        runner.process.send_signal(signal.SIGKILL)
        runner.process.wait(timeout=10)

    return fault


def _terminate_during(notebook: str, nth: int):
    def fault(runner: Runner, database_url: str) -> None:
        _wait_inside(runner, database_url, notebook, nth)
        runner.process.send_signal(signal.SIGTERM)
        assert runner.process.wait(timeout=60) == 130, runner.output()
        assert runs(database_url, notebook)[-1]["status"] == "interrupted"

    return fault


@pytest.mark.parametrize(
    ("fault", "kill_after"),
    [
        pytest.param(_kill_during("03_infer", 1), None, id="kill -9 during 03_infer"),
        pytest.param(None, "03_infer", id="kill -9 after 03_infer succeeded, before its progress is saved"),
        pytest.param(_kill_during("04_monitor", 2), None, id="kill -9 during 04_monitor for arrived labels"),
        pytest.param(_terminate_during("04_monitor", 1), None, id="SIGTERM during 04_monitor"),
    ],
)
def test_a_runner_stopped_at_any_moment_and_restarted_loses_and_duplicates_nothing(
    world, undisturbed, fresh_database, tmp_path, fault, kill_after
):
    env = simulation_env(world, fresh_database, tmp_path / "reports")
    start_timeline_long_ago(fresh_database)
    log = tmp_path / "runner.log"
    if kill_after:
        driver = tmp_path / "simulate_then_die.py"
        driver.write_text(KILL_AFTER_DRIVER.format(simulate=str(SIMULATE)))
        first = Runner({**env, "KILL_AFTER": kill_after}, log, driver=driver)
        assert first.wait() == -signal.SIGKILL, first.output()
        with session(fresh_database) as conn:  # the fault struck where intended: rows written, progress not
            assert fetch_dicts(conn, "SELECT last_inferred_date FROM simulation_state")[0]["last_inferred_date"] is None
            assert fetch_dicts(conn, "SELECT count(*) AS n FROM predictions")[0]["n"] == len(world.scored())
    else:
        fault(Runner(env, log), fresh_database)

    restarted = Runner(env, log)
    assert restarted.wait() == 0, restarted.output()
    assert snapshot(fresh_database) == {key: undisturbed[key] for key in ("predictions", "metrics", "state")}


def test_a_reset_while_a_runner_works_is_refused_and_deletes_nothing(world, undisturbed, fresh_database, tmp_path):
    env = simulation_env(world, fresh_database, tmp_path / "reports", RUNS_KEEP_PER_NOTEBOOK="2")
    start_timeline_long_ago(fresh_database)
    runner = Runner(env, tmp_path / "runner.log")

    def counts() -> dict[str, int]:
        with session(fresh_database) as conn:
            return simulation_state.count_simulation_rows(conn)

    wait_until(lambda: counts()["predictions"] > 0, "the runner has scored its first days", runner)
    before = counts()
    reset = subprocess.run([sys.executable, str(SIMULATE), "--reset", "--yes"], env=env, capture_output=True,
                           text=True, timeout=120)
    after = counts()
    assert reset.returncode == 2, reset.stderr
    assert "another simulation runner is working on this database" in reset.stderr and "Nothing was changed" in \
        reset.stderr
    assert all(after[table] >= before[table] for table in before), (before, after)  # the runner writes on
    assert runner.wait() == 0, runner.output()
    assert snapshot(fresh_database) == {key: undisturbed[key] for key in ("predictions", "metrics", "state")}
    # The runner kept the archived copies of the two newest successful runs of each notebook only.
    monitored = [row for row in runs(fresh_database, "04_monitor") if row["status"] == "succeeded"]
    kept = [row["run_id"] for row in monitored if Path(row["output_ipynb"]).exists()]
    assert len(monitored) > 2 and kept == [row["run_id"] for row in monitored[-2:]]


@pytest.fixture
def private_services(tmp_path):
    """Start a private PostgreSQL or S3 server that a test may stop and start again."""
    stacks = []

    def start(name: str, **variables: str) -> tuple[Stack, Settings]:
        own = load_settings({**os.environ, **variables})
        stack = Stack(own, state_dir=tmp_path / f"services-{name}", embedded={name})
        stack.up()
        stacks.append(stack)
        return stack, own

    yield start
    for stack in stacks:
        stack.down()


def test_postgresql_stopped_for_two_ticks_is_waited_out(world, undisturbed, private_services, tmp_path):
    database_url = private_variables("simulation")["DATABASE_URL"]
    postgres, _ = private_services("postgres", DATABASE_URL=database_url)
    env = simulation_env(world, database_url, tmp_path / "reports", EVAL_SCHEDULER_INCREMENT="1")
    start_timeline_long_ago(database_url)
    runner = Runner(env, tmp_path / "runner.log")
    wait_until(lambda: runs(database_url, "03_infer"), "03_infer has started", runner)
    postgres.down()
    wait_until(lambda: "Retrying after" in runner.output(), "a tick has failed", runner)
    time.sleep(2.5)  # two more ticks of one second, both failing or skipped
    assert runner.process.poll() is None, f"the runner gave up while PostgreSQL was down:\n{runner.output()}"
    postgres.up()

    assert runner.wait() == 0, runner.output()
    assert snapshot(database_url) == {key: undisturbed[key] for key in ("predictions", "metrics", "state")}


def test_s3_unreachable_for_a_tick_fails_the_notebook_which_is_retried(
    world, undisturbed, fresh_database, private_services, settings, tmp_path
):
    variables = private_variables("simulation-fault")
    s3, own = private_services(
        "s3",
        **{
            key: variables[key] for key in ("S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "LAKE_URI")
        },
    )
    year = Lake(world.lake_uri, settings).read_partition(CURATED, START.year)
    Lake(own.lake_uri, own).write_partition(CURATED, START.year, year)
    env = simulation_env(
        world,
        fresh_database,
        tmp_path / "reports",
        S3_ENDPOINT_URL=own.s3_endpoint_url,
        AWS_ACCESS_KEY_ID=own.aws_access_key_id,
        AWS_SECRET_ACCESS_KEY=own.aws_secret_access_key,
        LAKE_URI=own.lake_uri,
        EVAL_SCHEDULER_INCREMENT="1",
    )
    start_timeline_long_ago(fresh_database)
    runner = Runner(env, tmp_path / "runner.log")
    wait_until(lambda: runs(fresh_database, "03_infer"), "03_infer has started", runner)
    s3.down()
    wait_until(lambda: runs(fresh_database, "03_infer", "failed"), "03_infer has failed", runner)
    s3.up()

    assert runner.wait() == 0, runner.output()
    failed = runs(fresh_database, "03_infer", "failed")[0]
    assert failed["output_html"] and Path(failed["output_html"]).exists()
    assert runs(fresh_database, "03_infer", "succeeded"), "the failed 03_infer was not retried"
    assert snapshot(fresh_database) == {key: undisturbed[key] for key in ("predictions", "metrics", "state")}


# ------------------------------------------------------------------------------------------- retraining


def test_recommended_retraining_trains_on_known_labels_and_rescores_the_later_days(
    world, fresh_database, tmp_path, monkeypatch
):
    days = 15
    env = simulation_env(world, fresh_database, tmp_path / "reports", MODEL_VERSION="")
    for name, value in env.items():
        monkeypatch.setenv(name, value)  # the notebooks' kernels read the same settings
    start_timeline_long_ago(fresh_database)
    quick_training = {"bootstrap_resamples": 100, "importance_rows": 300}
    runner = simulation.Runner(load_settings(), stop=START + timedelta(days=days - 1), train_parameters=quick_training)
    try:
        reports = [runner.tick() for _ in range(4)]
    finally:
        runner.close()
    assert [r.failure for r in reports] == [None] * 4
    assert reports[-1].done

    with session(fresh_database) as conn:
        events = fetch_dicts(conn, "SELECT event, simulated_date, details FROM model_events ORDER BY id")
        predictions = pd.DataFrame(
            fetch_dicts(conn, "SELECT collision_index, collision_date, model_version FROM predictions")
        )
        [state] = fetch_dicts(
            conn, "SELECT last_inferred_date, last_monitored_end, monitored_through FROM simulation_state"
        )
    recommended = [e["simulated_date"] for e in events if e["event"] == "retraining_recommended"]
    [retrained] = [e for e in events if e["event"] == "retrained"]  # once: the cool-down holds later ones
    assert recommended and retrained["simulated_date"] == recommended[0] <= date(2023, 1, 10)
    as_of = retrained["simulated_date"]
    assert retrained["details"]["labels_known_by"] == as_of.isoformat()
    assert retrained["details"]["champion_before"] == world.version
    [train_run] = runs(fresh_database, "02_train", "succeeded")
    assert train_run["parameters"]["labels_known_by"] == as_of.isoformat()

    # Every collision of the fifteen days is scored once: up to the retraining by the first champion,
    # after it by the champion that the retraining left in place.
    assert sorted(predictions["collision_index"]) == world.scored(days)
    before = predictions["collision_date"] <= as_of
    assert set(predictions.loc[before, "model_version"]) == {world.version}
    assert set(predictions.loc[~before, "model_version"]) == {retrained["details"]["champion_after"]}
    last_day = START + timedelta(days=days - 1)
    assert state == {"last_inferred_date": last_day, "last_monitored_end": last_day, "monitored_through": last_day}
    assert any("retrained on the labels known by" in part for r in reports for part in r.retraining)
