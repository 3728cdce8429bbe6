"""Batch inference (lib/modeling/inference.py, notebooks/03_infer.py) against real services.

The end-to-end tests score January 2018 of the real Waltham Forest mirror with a champion that
02_train registered from 2014-2017 (tests/serving.py), in-process and through scripts/serve.py, into
a private database. The HTTP client's retries run against tiny local HTTP servers that fail on cue.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import replace
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import mlflow
import numpy as np
import pandas as pd
import pytest

from lib.data.curated import CURATED, Window, build_curated, read_window
from lib.data.features import LABEL_COLUMNS
from lib.data.lake import Lake, LakeError
from lib.data.synth import generate
from lib.modeling.inference import (
    HttpScorer,
    InferenceError,
    InProcessScorer,
    ModelNotFound,
    ModelRef,
    ScoringError,
    resolve_model,
    write_predictions,
)
from lib.modeling.model import OUTPUT_COLUMNS
from lib.runner.executor import execute
from lib.store import db
from tests.serving import free_port, mirror_champion, model_server

JANUARY = ("2018-01-01", "2018-01-31")
PREDICTIONS_SQL = (
    "SELECT collision_index, model_version, collision_date, window_start, window_end, p_fatal, p_serious,"
    " p_slight, p_ksi, predicted_severity, ksi_alert, alert_threshold, latitude, longitude, scored_at"
    " FROM predictions ORDER BY collision_index, model_version"
)


@pytest.fixture(scope="module")
def champion(settings, tmp_path_factory):
    return mirror_champion(settings, tmp_path_factory.mktemp("mirror"))


def stored(database_url: str) -> pd.DataFrame:
    with db.session(database_url) as conn:
        return pd.DataFrame(db.fetch_dicts(conn, PREDICTIONS_SQL))


# -- the window ------------------------------------------------------------------------------------------


def test_window_parameters_are_checked():
    assert Window.parse("2017-12-30", "2018-01-02").years == range(2017, 2019)
    with pytest.raises(ValueError, match="end_date 2018-01-01 is before start_date 2018-01-07"):
        Window.parse("2018-01-07", "2018-01-01")
    with pytest.raises(ValueError, match="start_date='2018-13-01'"):
        Window.parse("2018-13-01", "2018-12-31")


def test_a_window_reads_only_the_years_it_touches_and_never_the_targets(settings):
    lake = Lake(f"{settings.lake_uri}/window-{uuid.uuid4().hex[:6]}", settings)
    tables = generate(range(2016, 2019), 400, seed=4)
    curated = build_curated(tables.collisions, tables.vehicles, tables.casualties)
    for year, rows in curated.groupby("collision_year"):
        lake.write_partition(CURATED, int(year), rows.reset_index(drop=True))
    # 2016's data file is replaced by garbage: a window that read it would fail.
    manifest = lake.manifest(CURATED, 2016)
    lake.put_bytes(lake.partition_prefix(CURATED, 2016) + manifest["data_file"], b"not parquet")

    rows = read_window(lake, Window.parse("2017-12-25", "2018-01-06"))
    day = curated["date"].dt.normalize()
    expected = curated.loc[(day >= "2017-12-25") & (day <= "2018-01-06"), "collision_index"]
    assert sorted(rows["collision_index"]) == sorted(expected) and len(expected) > 0
    assert set(rows["collision_year"]) == {2017, 2018}
    assert not set(LABEL_COLUMNS) & set(rows.columns)
    assert list(rows["date"]) == sorted(rows["date"])
    with pytest.raises(LakeError, match=r"year=2016/part-\w+\.parquet: the committed data file is not readable"):
        read_window(lake, Window.parse("2016-06-01", "2016-06-07"))
    assert read_window(lake, Window.parse("2013-01-01", "2013-01-31")).empty


# -- the model ---------------------------------------------------------------------------------------------


def test_the_alias_resolves_to_the_registered_version_and_its_threshold(champion, settings):
    model = resolve_model(champion.model_uri, settings.mlflow_tracking_uri)
    client = mlflow.MlflowClient(settings.mlflow_tracking_uri)
    assert model.version == client.get_model_version_by_alias(champion.model_name, "champion").version
    fitted = mlflow.pyfunc.load_model(model.uri).unwrap_python_model().model
    assert model.alert_threshold == fitted.alert_threshold
    assert model.input_columns == tuple(fitted.feature_columns)
    with pytest.raises(ModelNotFound, match=r"looked up models:/no_such_model@champion .*MODEL_NAME"):
        resolve_model("models:/no_such_model@champion", settings.mlflow_tracking_uri)
    with pytest.raises(InferenceError, match="must name a registered model"):
        resolve_model("runs:/abc/model", settings.mlflow_tracking_uri)


# -- end to end: the notebook, in-process and through the server ---------------------------------------------------


def test_january_2018_scores_the_same_in_process_and_through_the_server(champion, settings, fresh_database):
    parameters = {"start_date": JANUARY[0], "end_date": JANUARY[1], "model_uri": champion.model_uri}
    own = replace(settings, lake_uri=champion.lake_uri, database_url=fresh_database)
    first = execute("03_infer", parameters, settings=own, progress=False)
    assert first.ok, first.describe()
    in_process = stored(fresh_database)

    lake = Lake(champion.lake_uri, settings)
    january = lake.read_partition(CURATED, 2018, ["collision_index", "date", "latitude", "longitude"])
    january = january[january["date"].between("2018-01-01", "2018-01-31 23:59")]
    assert sorted(in_process["collision_index"]) == sorted(january["collision_index"]) and len(january) > 20
    located = in_process.merge(january, on="collision_index", suffixes=("", "_curated"))  # where, for the maps
    assert np.allclose(located["latitude"], located["latitude_curated"], equal_nan=True)
    assert np.allclose(located["longitude"], located["longitude_curated"], equal_nan=True)
    client = mlflow.MlflowClient(settings.mlflow_tracking_uri)
    champion_version = client.get_model_version_by_alias(champion.model_name, "champion").version
    assert set(in_process["model_version"]) == {champion_version}
    threshold = mlflow.pyfunc.load_model(f"models:/{champion.model_name}/{champion_version}") \
        .unwrap_python_model().model.alert_threshold
    assert np.allclose(in_process["alert_threshold"], threshold)
    assert (in_process["ksi_alert"] == (in_process["p_ksi"] >= threshold)).all()
    assert np.allclose(in_process[["p_fatal", "p_serious", "p_slight"]].sum(axis=1), 1.0)
    windows = set(in_process[["window_start", "window_end"]].itertuples(index=False, name=None))
    assert windows == {(date(2018, 1, 1), date(2018, 1, 31))}

    again = execute("03_infer", parameters, settings=own, progress=False)
    assert again.ok, again.describe()
    rerun = stored(fresh_database)
    assert len(rerun) == len(in_process)
    assert (rerun["scored_at"] > in_process["scored_at"]).all()  # replaced, not kept

    with model_server(champion.model_uri) as server:
        served = execute("03_infer", {**parameters, "predict_url": server.url}, settings=own, progress=False)
    assert served.ok, served.describe()
    through_server = stored(fresh_database)
    assert len(through_server) == len(in_process)
    pd.testing.assert_frame_equal(through_server.drop(columns="scored_at"), in_process.drop(columns="scored_at"),
                                  check_exact=False, rtol=0, atol=1e-12)


def test_an_empty_window_is_a_normal_outcome(champion, settings, fresh_database):
    own = replace(settings, lake_uri=champion.lake_uri, database_url=fresh_database)
    result = execute("03_infer", {"start_date": "2013-06-01", "end_date": "2013-06-07",
                                  "model_uri": champion.model_uri}, settings=own, progress=False)
    assert result.ok, result.describe()
    assert stored(fresh_database).empty
    assert "No collisions scored" in result.output_ipynb.read_text()


def test_rerunning_a_window_replaces_exactly_that_window_for_that_version(champion, settings, fresh_database):
    model = resolve_model(champion.model_uri, settings.mlflow_tracking_uri)
    other_version = ModelRef(model.name, str(int(model.version) + 1), model.run_id, 0.5, model.input_columns,
                             model.uri)
    lake = Lake(champion.lake_uri, settings)
    scorer = InProcessScorer(model, settings.mlflow_tracking_uri)
    window, week_before = Window.parse("2018-02-01", "2018-02-07"), Window.parse("2018-01-25", "2018-01-31")
    collisions, earlier = read_window(lake, window), read_window(lake, week_before)
    predictions = scorer.score(collisions)
    assert list(predictions.columns) == OUTPUT_COLUMNS and len(predictions) == len(collisions) > 0

    write_predictions(fresh_database, week_before, model, earlier, scorer.score(earlier))
    write_predictions(fresh_database, window, other_version, collisions, predictions)
    write_predictions(fresh_database, window, model, collisions, predictions)
    # A collision of this version dated in the window that is no longer in the lake.
    with db.session(fresh_database) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO predictions (collision_index, model_version, collision_date, window_start, window_end,"
                    " p_fatal, p_serious, p_slight, p_ksi, predicted_severity, ksi_alert, alert_threshold)"
                    " VALUES ('gone', %s, '2018-02-03', '2018-02-01', '2018-02-07', 0, 0, 1, 0, 3, false, 0.5)",
                    (model.version,))
    assert write_predictions(fresh_database, window, model, collisions, predictions) == len(collisions)

    rows = stored(fresh_database)
    counts = rows.groupby("model_version")["collision_index"].count().to_dict()
    assert counts == {model.version: len(collisions) + len(earlier), other_version.version: len(collisions)}
    assert "gone" not in set(rows["collision_index"])


# -- the HTTP client's retries -----------------------------------------------------------------------------------


class PlannedHandler(BaseHTTPRequestHandler):
    """Answers each POST with the next planned status; 200 echoes column `a` of each row as p_ksi."""

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append(body)
        status = self.server.plan.pop(0) if self.server.plan else 200
        if status == 200:
            split = json.loads(body)["dataframe_split"]
            column = split["columns"].index("a")
            payload = {"predictions": [
                {"p_fatal": 0.0, "p_serious": row[column], "p_slight": 1 - row[column], "p_ksi": row[column],
                 "predicted_severity": 3, "ksi_alert": False} for row in split["data"]]}
        else:
            payload = {"error_code": "BAD_REQUEST", "message": f"planned failure {status}: Model is missing "
                                                               "inputs ['speed_limit']."}
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@contextmanager
def planned_server(plan: list[int], start_after: float = 0.0):
    """A local HTTP server answering with `plan` (then 200s), listening after `start_after` seconds."""
    port, servers, cancelled = free_port(), [], threading.Event()

    def run():
        if cancelled.wait(start_after):
            return
        server = ThreadingHTTPServer(("127.0.0.1", port), PlannedHandler)
        server.plan, server.requests = list(plan), []
        servers.append(server)
        server.serve_forever(poll_interval=0.05)

    threading.Thread(target=run, daemon=True).start()
    if not start_after:
        while not servers:
            time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", servers
    finally:
        cancelled.set()
        for server in servers:
            server.shutdown()
            server.server_close()


ROWS = pd.DataFrame({"a": np.arange(2500) / 10000, "unused": "x"})


def test_the_client_waits_for_a_server_that_is_still_starting():
    with planned_server([], start_after=1.0) as (url, servers):
        began = time.monotonic()
        output = HttpScorer(url, ["a"], batch_size=1000, backoff=0.2).score(ROWS)
        waited = time.monotonic() - began
        assert waited >= 1.0
        assert len(servers[0].requests) == 3  # refused until it listened; then one request per batch
    assert np.array_equal(output["p_ksi"].to_numpy(), ROWS["a"].to_numpy())  # rows stay in order across batches
    assert list(output.columns) == OUTPUT_COLUMNS


def test_the_client_retries_503_and_gives_up_after_its_attempts():
    with planned_server([503, 503]) as (url, servers):
        output = HttpScorer(url, ["a"], backoff=0.05).score(ROWS.head(10))
        assert len(servers[0].requests) == 3
    assert np.array_equal(output["p_ksi"].to_numpy(), ROWS["a"].head(10).to_numpy())

    with planned_server([502, 504, 503]) as (url, servers):
        with pytest.raises(ScoringError, match=r"HTTP 503 on each of 3 attempts"):
            HttpScorer(url, ["a"], attempts=3, backoff=0.05).score(ROWS.head(10))
        assert len(servers[0].requests) == 3


@pytest.mark.parametrize("status", [400, 422, 500])
def test_the_client_fails_at_once_with_the_servers_message(status):
    with planned_server([status]) as (url, servers):
        with pytest.raises(ScoringError, match=rf"HTTP {status}: planned failure {status}: Model is missing inputs"):
            HttpScorer(url, ["a"], backoff=0.05).score(ROWS.head(10))
        assert len(servers[0].requests) == 1


def test_nothing_listening_fails_clearly_after_bounded_retries():
    began = time.monotonic()
    with pytest.raises(ScoringError, match=r"cannot connect .* on each of 4 attempts.*scripts/serve.py"):
        HttpScorer(f"http://127.0.0.1:{free_port()}", ["a"], attempts=4, backoff=0.05, max_backoff=0.1).score(ROWS)
    assert time.monotonic() - began < 5
