"""scripts/serve.py: the hardened model server (lib/modeling/serving.py) for the champion trained on the real mirror.

The server runs as `make serve` runs it (a subprocess on a free port). Good requests must match the
model loaded in-process; bad requests must get a 4xx with a message that says what is wrong, or a
correct answer, and never a 5xx or a dead server.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

import mlflow
import pandas as pd
import pytest
import requests

from lib.data.curated import CURATED, build_curated
from lib.data.feature_values import DOMAINS
from lib.data.lake import Lake
from lib.data.synth import generate
from lib.modeling.model import OUTPUT_COLUMNS
from lib.modeling.serving import feature_matrix
from tests.serving import SERVE_SCRIPT, free_port, mirror_champion, model_server


@pytest.fixture(scope="module")
def champion(settings, tmp_path_factory):
    return mirror_champion(settings, tmp_path_factory.mktemp("mirror"))


@pytest.fixture(scope="module")
def server(champion):
    with model_server(champion.model_uri) as running:
        yield running


@pytest.fixture(scope="module")
def pyfunc(champion):
    return mlflow.pyfunc.load_model(champion.model_uri)


@pytest.fixture(scope="module")
def example(server) -> dict:
    """The collision of the request serve.py printed."""
    command = shlex.split(next(line for line in server.output if "curl -s" in line))
    return json.loads(command[command.index("-d") + 1])["dataframe_records"][0]


def post(server, body, content_type="application/json") -> requests.Response:
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return requests.post(f"{server.url}/invocations", data=data, headers={"Content-Type": content_type}, timeout=120)


def test_serve_prints_the_url_and_a_request_that_works(server, champion, pyfunc, example, settings):
    version = mlflow.MlflowClient(settings.mlflow_tracking_uri).get_model_version_by_alias(
        champion.model_name, "champion").version
    assert f"{champion.model_name} version {version}" in server.text()
    assert f"Serving {champion.model_name}" in server.text() and f"{server.url}/invocations" in server.text()
    assert set(example) == set(pyfunc.metadata.get_input_schema().input_names())

    command = next(line for line in server.output if "curl -s" in line).strip()
    done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    predictions = pd.DataFrame(json.loads(done.stdout)["predictions"])
    assert list(predictions.columns) == OUTPUT_COLUMNS
    expected = pyfunc.predict(pd.DataFrame([example]).astype("float64"))
    pd.testing.assert_frame_equal(predictions, expected, check_dtype=False, rtol=0, atol=1e-12)


def test_bad_requests_get_a_readable_4xx_or_a_correct_answer(server, pyfunc, example):
    without_speed_limit = {k: v for k, v in example.items() if k != "speed_limit"}
    refused = {
        "a missing column": ({"dataframe_records": [without_speed_limit]}, "missing inputs ['speed_limit']"),
        "text in a numeric column": ({"dataframe_records": [{**example, "speed_limit": "fast"}]},
                                     "speed_limit"),
        "an infinite value": (json.dumps({"dataframe_records": [{**example, "hour": 1}]}).replace(
            '"hour": 1', '"hour": Infinity'), "hour holds inf"),
        "an empty body": ("", "valid JSON"),
        "a body that is not JSON": ("speed_limit=30", "valid JSON"),
        "JSON without the rows": ({"collisions": [example]}, "dataframe_records"),
    }
    for case, (body, message) in refused.items():
        response = post(server, body)
        assert 400 <= response.status_code < 500, f"{case}: HTTP {response.status_code} {response.text[:300]}"
        assert message in response.json()["message"], f"{case}: {response.json()['message'][-400:]}"

    single = pyfunc.predict(pd.DataFrame([example]).astype("float64"))
    extra = post(server, {"dataframe_records": [{**example, "colour_of_car": "red", "collision_severity": 1}]})
    assert extra.status_code == 200, extra.text[:300]
    pd.testing.assert_frame_equal(pd.DataFrame(extra.json()["predictions"]), single, check_dtype=False, atol=1e-12)

    no_rows = post(server, {"dataframe_split": {"columns": list(example), "data": []}})
    assert no_rows.status_code == 200 and no_rows.json() == {"predictions": []}, no_rows.text[:300]

    tables = generate([2018], 10_000, seed=8)
    many = build_curated(tables.collisions, tables.vehicles, tables.casualties)[list(example)].astype("float64")
    answer = post(server, {"dataframe_split": json.loads(many.to_json(orient="split", index=False,
                                                                      double_precision=15))})
    assert answer.status_code == 200, answer.text[:300]
    pd.testing.assert_frame_equal(pd.DataFrame(answer.json()["predictions"]), pyfunc.predict(many),
                                  check_dtype=False, atol=1e-12)

    assert requests.get(f"{server.url}/ping", timeout=10).status_code == 200
    assert server.process.poll() is None


def test_what_the_server_refuses_it_refuses_with_the_right_status_and_never_an_error_page(server, example):
    refused = {
        "no content type": (json.dumps({"dataframe_records": [example]}), None, 415, "Content-Type"),
        "CSV": ("speed_limit\n30\n", "text/csv", 415, "application/json"),
        "a body over 10 MiB": ("[" + " " * (11 * 1024 * 1024) + "]", "application/json", 413, "larger than"),
        "JSON nested 50,000 deep": ("[" * 50_000 + "]" * 50_000, "application/json", 400, "deeper"),
        "true as a code": ({"dataframe_records": [{**example, "urban_or_rural_area": True}]}, None, 400,
                           "urban_or_rural_area is true in row 0"),
        "a number as text": ({"dataframe_records": [{**example, "speed_limit": "30"}]}, None, 400,
                             "speed_limit is '30' in row 0"),
        "a fraction of a code": ({"dataframe_records": [example, {**example, "police_force": 1.5}]}, None, 400,
                                 "police_force is 1.5 in row 1; it must be one of the codes 1, 3, 4"),
        "a speed limit that is no DfT code": ({"dataframe_records": [{**example, "speed_limit": 999}]}, None, 400,
                                              "speed_limit is 999 in row 0; it must be one of the codes 20, 30"),
        "a huge number": ({"dataframe_records": [{**example, "speed_limit": 1e30}]}, None, 400, "speed_limit is 1e+30"),
        "the missing code instead of null": ({"dataframe_records": [{**example, "light_conditions": -1}]}, None, 400,
                                             "light_conditions is -1 in row 0"),
        "a place outside Great Britain": ({"dataframe_records": [{**example, "latitude": 40.4}]}, None, 400,
                                          "latitude is 40.4 in row 0; it must be a number from 49 to 61.5"),
    }
    for case, (body, content_type, status, message) in refused.items():
        data = body if isinstance(body, str) else json.dumps(body)
        headers = {"Content-Type": content_type or "application/json"} if content_type or isinstance(body, dict) \
            else {}
        response = requests.post(f"{server.url}/invocations", data=data.encode(), headers=headers, timeout=120)
        assert response.status_code == status, f"{case}: HTTP {response.status_code} {response.text[:300]}"
        answer = response.json()
        assert message in answer["message"], f"{case}: {answer['message']}"
        assert len(response.content) < 1000, f"{case}: the answer echoes the request ({len(response.content)} bytes)"
    assert requests.get(f"{server.url}/ping", timeout=10).status_code == 200


def test_every_curated_collision_of_the_mirror_is_within_what_the_server_accepts(champion, settings):
    rows = Lake(champion.lake_uri, settings).read_dataset(CURATED)
    features = list(DOMAINS)
    matrix = feature_matrix(features, rows[features].astype("float64").to_numpy().tolist(), tuple(features))
    assert len(matrix) == len(rows) > 3000  # feature_matrix refuses, naming the column, row and value, otherwise


def test_an_unknown_model_stops_serve_with_a_clear_message():
    done = subprocess.run([sys.executable, str(SERVE_SCRIPT), "--port", str(free_port()), "--model-uri",
                           "models:/no_such_model@champion"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    # What was looked up, where, the registry's own answer and the settings to check: only a registry that
    # answers can say the model does not exist (with MLflow down the message would be a connection error).
    assert "looked up models:/no_such_model@champion in the MLflow registry at http://127.0.0.1:" in done.stderr
    assert "not found" in done.stderr and "MODEL_NAME" in done.stderr and "make training-workflow" in done.stderr
