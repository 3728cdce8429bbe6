"""Shared fixtures: a private stack of real services for the test session, and the shared data.

The stack runs the same embedded servers as `make up`, on free ports in a temporary folder, so
tests never touch a developer's own data and may run while `make up` is running.
"""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import psycopg2
import pytest

import lib.runner  # noqa: F401 -- before nbformat: the test process skips a slow import (lib/runner/__init__.py)
from lib.config import ROOT, load_settings
from lib.services import service
from lib.services.stack import private_stack

SHARED = ROOT.parent / "shared"
STATS19 = SHARED / "data" / "stats19"
MIRROR = STATS19 / "mirror" / "road-accidents-safety-data"

# The tests that press Ctrl-C (SIGINT) expect it to reach the commands they start, as in a terminal. A
# run started as a background job of a non-interactive shell inherits SIGINT ignored, and so would
# every command it starts; catching it here makes each child start with the default disposition again.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Under pytest-xdist each worker runs its own stack; each also picks its free ports from a share of
# the range of its own, so that no worker takes a port another has released for a moment.
if "PYTEST_XDIST_WORKER" in os.environ:
    _workers = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    _worker = int(os.environ["PYTEST_XDIST_WORKER"].removeprefix("gw"))
    _share = len(service.port_range) // _workers
    service.port_range = service.port_range[_worker * _share : (_worker + 1) * _share]


# Under pytest-xdist the tests of a module run on one worker, so that its module-scoped fixtures are built
# once; the modules that share the mirror's champion (tests/serving.py) run on one worker together.
SHARED_GROUPS = dict.fromkeys(["test_inference.py", "test_serve.py", "test_serve_follow.py"], "mirror_champion")
# The longest modules start first, so the workers finish together instead of one waiting on them at the end.
SLOWEST_FIRST = ("test_simulation.py", "test_walkthrough.py")


def pytest_xdist_make_scheduler(config, log):
    # xdist's own `--dist loadgroup` marks do not reach its scheduler under pytest 9, so the grouping is here.
    from xdist.scheduler import LoadScopeScheduling

    class ByModule(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
            return SHARED_GROUPS.get(module, module)

        def _assign_work_unit(self, node) -> None:
            # xdist queues the modules with the most tests first; the slowest have few.
            for module in reversed(SLOWEST_FIRST):
                if module in self.workqueue:
                    self.workqueue.move_to_end(module, last=False)
            super()._assign_work_unit(node)

    return ByModule(config, log)


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
