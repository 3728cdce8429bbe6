"""The embedded services' life cycle, on a private stack with real servers."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
from dataclasses import replace
from urllib.parse import urlparse

import psutil
import psycopg2
import pytest

from lib.config import load_settings
from lib.services import SUPERUSER, ServiceError, Stack, private_variables


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory):
    state = tmp_path_factory.mktemp("lifecycle")
    settings = load_settings(private_variables("lifecycle"))
    stack = Stack(settings, state_dir=state, embedded={"postgres", "s3", "mlflow"})
    yield stack
    stack.down()


def test_up_status_idempotence_recovery_and_down(own_stack):
    first = own_stack.up()
    assert all("started" in line for line in first), first
    assert all(s.healthy and s.pid for s in own_stack.status())

    second = own_stack.up()
    assert all("already running" in line for line in second), second

    mlflow = next(s for s in own_stack.services if s.name == "mlflow")
    killed = json.loads(mlflow.pid_file.read_text())["pid"]
    os.kill(killed, signal.SIGKILL)
    psutil.Process(killed).wait(timeout=10) if psutil.pid_exists(killed) else None
    status = {s.name: s for s in own_stack.status()}
    assert status["mlflow"].pid is None and not status["mlflow"].healthy
    assert status["postgres"].healthy and status["s3"].healthy

    third = own_stack.up()
    assert any(line.startswith("mlflow: started") for line in third), third
    assert all(s.healthy for s in own_stack.status())

    recorded = [s._record() for s in own_stack.services]
    groups = [p for s, r in zip(own_stack.services, recorded, strict=True) for p in s._group(r)]
    assert groups, "the running stack should own processes"
    own_stack.down()
    alive = [p for p in groups if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert alive == [], f"processes left after down: {[p.cmdline() for p in alive]}"
    assert all(s.pid is None and not s.healthy for s in own_stack.status())
    assert all("was not running" in line for line in own_stack.down())


def test_a_taken_port_gives_a_clear_error(tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        settings = load_settings({"DATABASE_URL": f"postgresql://postgres@127.0.0.1:{port}/x"})
        stack = Stack(settings, state_dir=tmp_path, embedded={"postgres"})
        with pytest.raises(ServiceError, match=f"port {port} .* taken"):
            stack.up()
    assert not (tmp_path / "postgres" / "pid.json").exists()


def test_external_services_are_neither_started_nor_stopped(tmp_path):
    settings = load_settings({"DATABASE_URL": "postgresql://someone@127.0.0.1:1/elsewhere"})
    stack = Stack(settings, state_dir=tmp_path, embedded=set())
    assert all("external" in line for line in stack.up())
    statuses = stack.status()
    assert [s.state for s in statuses] == ["external"] * 3
    assert not statuses[0].healthy  # nothing answers on port 1
    assert all("external" in line for line in stack.down())
    assert not any(tmp_path.iterdir())


def test_embedded_means_on_this_machine_whatever_the_port():
    from lib.services import embedded_services

    assert embedded_services(load_settings({}, dotenv=None)) == {"postgres", "s3", "mlflow"}
    moved = load_settings({"DATABASE_URL": "postgresql://postgres@127.0.0.1:25432/x",
                           "S3_ENDPOINT_URL": "http://localhost:28333", "MLFLOW_TRACKING_URI": "http://127.0.0.1:25000"})
    assert embedded_services(moved) == {"postgres", "s3", "mlflow"}
    remote = load_settings({"DATABASE_URL": "postgresql://u@db.example:5432/x",
                            "MLFLOW_TRACKING_URI": "http://mlflow:5000"})
    assert embedded_services(remote) == {"s3"}


def test_keys_the_running_s3_refuses_fail_at_once_and_name_the_variables(stack, settings):
    s3 = next(service for service in stack.services if service.name == "s3")
    wrong = replace(settings, aws_secret_access_key="not-the-secret")
    with pytest.raises(ServiceError, match=r"refused the keys in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        Stack(wrong, state_dir=s3.state_dir, embedded={"s3"}).up()  # before: 60 s of polling, then a log tail
    assert s3.status().healthy  # the running server was left alone


def test_the_embedded_postgresql_wants_a_password_and_gives_the_application_no_superuser(stack, settings):
    postgres = next(service for service in stack.services if service.name == "postgres")
    url = urlparse(settings.database_url)
    server = f"127.0.0.1:{url.port}"
    for login in (f"{url.username}@{server}", f"{SUPERUSER}@{server}", f"{SUPERUSER}:wrong@{server}"):
        with pytest.raises(psycopg2.OperationalError, match="password"):
            psycopg2.connect(f"postgresql://{login}/postgres", connect_timeout=5).close()
    with psycopg2.connect(settings.database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user")
        assert cur.fetchone() == (False, False)
        cur.execute("CREATE TEMP TABLE shell (line text)")
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute("COPY shell FROM PROGRAM 'id'")
    conn.close()
    assert stat.S_IMODE(postgres.superuser_password_file.stat().st_mode) == 0o600
