"""A model server started on an alias follows the champion; one started on a version never moves.

The servers run as `make serve` runs them (scripts/serve.py, a subprocess on a free port), checking the
session's real MLflow registry every CHECK_SECONDS. The model is the champion trained on the mirror, copied
to a model name of this module's own as version 1; version 2 is the same fitted model with its KSI alert
threshold at 0, so every answer says which of the two scored it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shlex
import threading
import time
import uuid

import mlflow
import pytest
import requests

from lib.modeling.alias_follower import AliasFollower, ServedModel
from lib.modeling.mlflow_model import ALERT_THRESHOLD_PARAM, load_pyfunc, log_model
from tests.serving import free_port, mirror_champion, model_server

CHECK_SECONDS = 2
# What loading a version may add to the check interval on this 2-core machine shared with other work.
LOAD_ALLOWANCE_SECONDS = 90


@pytest.fixture(scope="module")
def versions(settings, tmp_path_factory) -> str:
    """A fresh model name: version 1 the mirror's champion (alias `champion`), version 2 alerting on everything."""
    champion = mirror_champion(settings, tmp_path_factory.mktemp("mirror"))
    client = mlflow.MlflowClient(settings.mlflow_tracking_uri)
    source = client.get_model_version_by_alias(champion.model_name, "champion")
    name = f"follow_{uuid.uuid4().hex[:6]}"
    client.copy_model_version(f"models:/{champion.model_name}/{source.version}", name)
    client.set_registered_model_alias(name, "champion", "1")

    first = load_pyfunc(f"models:/{name}/1")
    always = dataclasses.replace(first.unwrap_python_model().model, alert_threshold=0.0)
    example = first.input_example
    mlflow.set_experiment("test_serve_follow")
    with mlflow.start_run():
        mlflow.log_param(ALERT_THRESHOLD_PARAM, always.alert_threshold)
        info = log_model(always, example, registered_model_name=name)
    assert str(info.registered_model_version) == "2"
    return name


def printed_request(server) -> dict:
    command = shlex.split(next(line for line in server.output if "curl -s" in line))
    return json.loads(command[command.index("-d") + 1])


def served_version(server) -> dict:
    return requests.get(f"{server.url}/version", timeout=10).json()


class Client(threading.Thread):
    """Posts the same collision to each server, one request after another, until stopped (at most 10 minutes).

    Records (server url, when sent, when answered, HTTP status or the exception's name, ksi_alert)."""

    def __init__(self, servers, body: dict):
        super().__init__(daemon=True)
        self.servers, self.body = servers, body
        self.answers: list[tuple[str, float, float, object, bool | None]] = []
        self.stopping = threading.Event()

    def run(self):
        deadline = time.monotonic() + 600
        with requests.Session() as http:
            while not self.stopping.is_set() and time.monotonic() < deadline:
                for server in self.servers:
                    sent = time.monotonic()
                    try:
                        response = http.post(f"{server.url}/invocations", json=self.body, timeout=60)
                        status = response.status_code
                        alert = response.json()["predictions"][0]["ksi_alert"] if status == 200 else None
                    except (requests.RequestException, ValueError, KeyError) as error:
                        status, alert = type(error).__name__, None
                    self.answers.append((server.url, sent, time.monotonic(), status, alert))


def test_the_server_on_the_alias_follows_a_promotion_without_failing_a_request_and_a_pinned_one_stays(
        versions, settings):
    with model_server(f"models:/{versions}@champion", MODEL_CHECK_SECONDS=str(CHECK_SECONDS)) as following, \
            model_server(f"models:/{versions}/1", MODEL_CHECK_SECONDS=str(CHECK_SECONDS)) as pinned:
        assert served_version(following) == {"model_version": "1", "follows": f"models:/{versions}@champion"}
        assert served_version(pinned) == {"model_version": "1", "follows": None}
        assert f"it follows models:/{versions}@champion, checking the registry every {CHECK_SECONDS} s" \
            in following.text()
        assert "version 1 is pinned: it never moves" in pinned.text()
        body = printed_request(following)
        client = Client([following, pinned], body)
        client.start()
        time.sleep(2 * CHECK_SECONDS)  # answers from version 1 first, through a few checks that find nothing new

        promoted = time.monotonic()
        mlflow.MlflowClient(settings.mlflow_tracking_uri).set_registered_model_alias(versions, "champion", "2")
        while served_version(following)["model_version"] != "2":
            waited = time.monotonic() - promoted
            assert waited < CHECK_SECONDS + LOAD_ALLOWANCE_SECONDS, f"still version 1 after {waited:.0f} s:\n" \
                                                                      f"{following.text()[-3000:]}"
            time.sleep(0.2)
        switched = time.monotonic()
        time.sleep(2 * CHECK_SECONDS)  # the pinned server has had its chances to move
        client.stopping.set()
        client.join(timeout=120)
        assert served_version(pinned)["model_version"] == "1"

    failed = [answer for answer in client.answers if answer[3] != 200]
    assert not failed, f"{len(failed)} of {len(client.answers)} requests failed, e.g. {failed[:3]}"
    by_server = {url: [a for a in client.answers if a[0] == url] for url in (following.url, pinned.url)}
    before = [a for a in by_server[following.url] if a[2] < promoted]
    after = [a for a in by_server[following.url] if a[1] > switched]
    assert before and after and len(by_server[following.url]) > 20
    old_alert = before[0][4]
    assert old_alert is False, "the printed collision should not alert under the mirror champion's threshold"
    assert {a[4] for a in before} == {False} and {a[4] for a in after} == {True}
    assert {a[4] for a in by_server[pinned.url]} == {False}  # every answer of the pinned server from version 1

    log = following.text()
    assert f"models:/{versions}@champion moved from version 1 to 2; now serving version 2" in log
    assert log.count("moved from version") == 1 and "Could not look up" not in log
    assert "moved from version" not in pinned.text() and "Following" not in pinned.text()


def test_a_check_that_cannot_reach_the_registry_keeps_the_model_and_the_next_one_moves(
        versions, settings, caplog, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # one refused connection is enough to fail
    mlflow.MlflowClient(settings.mlflow_tracking_uri).set_registered_model_alias(versions, "champion", "2")
    served = ServedModel(load_pyfunc(f"models:/{versions}/1"), "1")
    before = served.current
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there: the registry is down
    caplog.set_level(logging.INFO, logger="lib.modeling.alias_follower")

    assert AliasFollower(served, versions, "champion", 30, nowhere).check() is False
    assert served.current is before
    assert f"Could not look up models:/{versions}@champion in the MLflow registry at {nowhere}" in caplog.text
    assert "still serving version 1, checking again in 30 s" in caplog.text

    follower = AliasFollower(served, versions, "champion", 30, settings.mlflow_tracking_uri)
    assert follower.check() is True
    assert served.current.version == "2" and before.version == "1"  # a request holding `before` keeps version 1
    assert served.current.model.predict(before.model.input_example)["ksi_alert"].all()
    assert follower.check() is False  # nothing new: no second load
    assert caplog.text.count("moved from version 1 to 2; now serving version 2") == 1
