"""Shared fixtures: a private stack of real services for the test session, and the shared data.

The stack runs the same embedded servers as `make up`, on free ports in a temporary folder, so
tests never touch a developer's own data and may run while `make up` is running.
"""

from __future__ import annotations

import signal
import uuid
from pathlib import Path

import psycopg2
import pytest

from lib.config import ROOT, load_settings
from lib.services.stack import private_stack

SHARED = ROOT.parent / "shared"
STATS19 = SHARED / "data" / "stats19"
MIRROR = STATS19 / "mirror" / "road-accidents-safety-data"

# The tests that press Ctrl-C (SIGINT) expect it to reach the commands they start, as in a terminal. A
# run started as a background job of a non-interactive shell inherits SIGINT ignored, and so would
# every command it starts; catching it here makes each child start with the default disposition again.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def stack():
    """Real PostgreSQL, S3 and MLflow servers for this session; their variables are exported."""
    with private_stack("asf-test") as services:
        yield services


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
