"""The stack: the embedded PostgreSQL, S3 (SeaweedFS) and MLflow servers started, checked and stopped together.

A service is embedded when its variable points at this machine's loopback (127.0.0.1,
localhost), whatever the port, so `.env` alone moves it; one that points elsewhere (a team
server, MinIO from docker-compose, AWS) is external: it is never started or stopped here, only
health-checked. State, logs and pid files live under `data/services/<name>/` (lib/services/service.py).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

from lib.config import SERVICES_DIR, Settings, load_settings
from lib.services.mlflow_server import Mlflow
from lib.services.object_store import ObjectStore
from lib.services.postgres import Postgres
from lib.services.service import START_TIMEOUT_S, ServiceStatus, free_port_block, shown_url

LAUNCH_ORDER = ("mlflow", "s3", "postgres")


class Stack:
    """The three services in start order, each embedded or external."""

    def __init__(self, settings: Settings, state_dir: Path = SERVICES_DIR, embedded: set[str] | None = None):
        if embedded is None:
            embedded = embedded_services(settings)
        self.services = [
            cls(name, settings, state_dir, name in embedded)
            for name, cls in (("postgres", Postgres), ("s3", ObjectStore), ("mlflow", Mlflow))
        ]

    def up(self) -> list[str]:
        """Start every embedded service that is not running and wait until all are healthy."""
        messages, started, running = [], [], []
        try:
            # The slowest to become healthy is launched first; none needs another to start.
            for service in sorted(self.services, key=lambda service: LAUNCH_ORDER.index(service.name)):
                if not service.embedded:
                    messages.append(f"{service.name}: external at {shown_url(service.url)}, not started here")
                elif (proc := service.process()) is not None:
                    messages.append(f"{service.name}: already running (pid {proc.pid}) at {shown_url(service.url)}")
                    running.append((service, proc))
                else:
                    started.append((service, service.start()))
            deadline = time.monotonic() + START_TIMEOUT_S
            with ThreadPoolExecutor(max_workers=3) as pool:
                for future in [pool.submit(s.wait_until_healthy, p, deadline) for s, p in started + running]:
                    future.result()
        except BaseException:
            for service, _ in started:
                service.stop()
            raise
        messages += [f"{s.name}: started (pid {p.pid}) at {shown_url(s.url)}"
                     for s, p in sorted(started, key=lambda pair: self.services.index(pair[0]))]
        return messages

    def down(self) -> list[str]:
        messages = []
        for service in reversed(self.services):
            if not service.embedded:
                messages.append(f"{service.name}: external, left alone")
            elif service.stop():
                messages.append(f"{service.name}: stopped")
            else:
                messages.append(f"{service.name}: was not running")
        return messages

    def status(self) -> list[ServiceStatus]:
        with ThreadPoolExecutor(max_workers=3) as pool:
            return list(pool.map(lambda s: s.status(), self.services))


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def embedded_services(settings: Settings) -> set[str]:
    """Services whose variable points at this machine's loopback are ours to run, on whatever port."""
    urls = {"postgres": settings.database_url, "s3": settings.s3_endpoint_url, "mlflow": settings.mlflow_tracking_uri}
    return {name for name, url in urls.items() if urlparse(url).hostname in LOOPBACK_HOSTS}


def private_variables(name: str = "private") -> dict[str, str]:
    """Variables for a throw-away stack on free loopback ports, with fresh keys (tests, benchmarks)."""
    role = re.sub(r"\W", "_", name)
    return {
        "DATABASE_URL": f"postgresql://{role}:{secrets.token_urlsafe(12)}@127.0.0.1:{free_port_block()}/{name}",
        "S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port_block(ObjectStore.PORTS, ObjectStore.GRPC_OFFSET)}",
        "AWS_ACCESS_KEY_ID": f"{name}-access",
        "AWS_SECRET_ACCESS_KEY": f"{name}-secret-{os.urandom(6).hex()}",
        "LAKE_URI": f"s3://{name}-lake",
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port_block()}",
    }


@contextmanager
def private_stack(name: str = "private", **overrides: str) -> Iterator[Stack]:
    """Run all three services on free ports in a folder of their own, their variables exported.

    The folder is not under pytest's tmp_path on purpose: pytest prunes old session folders, which
    would pull the data from under a server still running in another session. On exit the services
    stop, the folder goes, and the environment is restored.
    """
    state = Path(tempfile.mkdtemp(prefix=f"asf-{name}-stack-"))
    variables = {**private_variables(name), "REPORTS_DIR": str(state / "reports"), **overrides}
    saved = {key: os.environ.get(key) for key in variables}
    os.environ.update(variables)
    stack = Stack(load_settings(), state_dir=state, embedded={"postgres", "s3", "mlflow"})
    try:
        stack.up()
        yield stack
    finally:
        stack.down()
        shutil.rmtree(state, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
