"""Shared fixtures: a private stack of real services for the test session, and the shared data.

The stack runs the same embedded servers as `make up`, on free ports in a temporary folder, so
tests never touch a developer's own data and may run while `make up` is running.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import tempfile
import uuid
from pathlib import Path

import psycopg2
import pytest

from lib.config import ROOT, load_settings
from lib.services import Stack

SHARED = ROOT.parent / "shared"
STATS19 = SHARED / "data" / "stats19"
MIRROR = STATS19 / "mirror" / "road-accidents-safety-data"


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_block(size: int = 5, grpc_offset: int = 10000) -> int:
    """A base port whose next `size` ports, and the same shifted by the gRPC offset, are free."""
    for _ in range(200):
        base = random.randrange(20000, 30000)
        ports = [base + i for i in range(size)]
        if all(_free(p) and _free(p + grpc_offset) for p in ports):
            return base
    raise RuntimeError("no free block of ports found on 127.0.0.1")


@pytest.fixture(scope="session")
def stack():
    """Real PostgreSQL, S3 and MLflow servers for this session; their variables are exported.

    Their state lives in a folder of its own, not under pytest's tmp_path: pytest prunes old
    session folders, which would pull the data from under a server still running in another session.
    """
    state = Path(tempfile.mkdtemp(prefix="asf-test-stack-"))
    postgres_port, s3_port, mlflow_port = free_port_block(1, 0), free_port_block(), free_port_block(1, 0)
    overrides = {
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{postgres_port}/asf_test",
        "S3_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}",
        "AWS_ACCESS_KEY_ID": "test-access",
        "AWS_SECRET_ACCESS_KEY": "test-secret-" + os.urandom(6).hex(),
        "LAKE_URI": "s3://asf-test-lake",
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}",
        "REPORTS_DIR": str(state / "reports"),
    }
    saved = {key: os.environ.get(key) for key in overrides}
    os.environ.update(overrides)
    services = Stack(load_settings(), state_dir=state, embedded={"postgres", "s3", "mlflow"})
    try:
        services.up()
        yield services
    finally:
        services.down()
        shutil.rmtree(state, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def settings(stack):
    return load_settings()


@pytest.fixture
def mirror() -> Path:
    """The real Waltham Forest mirror in ../shared; absent in a user's clone."""
    if not MIRROR.is_dir():
        pytest.skip(f"the shared STATS19 mirror is not at {MIRROR} (it ships beside the repository, not in it)")
    return MIRROR


@pytest.fixture
def shared_data() -> Path:
    if not STATS19.is_dir():
        pytest.skip(f"the shared STATS19 data is not at {STATS19} (it ships beside the repository, not in it)")
    return STATS19


@pytest.fixture
def fresh_database(settings):
    """A private empty database on the stack's server for one test, dropped afterwards."""
    server = settings.database_url.rsplit("/", 1)[0]
    name = "test_" + uuid.uuid4().hex[:8]
    admin = psycopg2.connect(server + "/postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    yield f"{server}/{name}"
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    admin.close()
