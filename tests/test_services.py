"""The embedded services' life cycle, on a private stack with real servers."""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlparse

import psutil
import psycopg2
import pytest
from minio.error import S3Error
from mlflow import MlflowClient
from urllib3 import encode_multipart_formdata

from lib.config import load_settings
from lib.data.lake import s3_client
from lib.services.object_store import ObjectStore
from lib.services.postgres import SUPERUSER
from lib.services.service import ServiceError
from lib.services.stack import Stack, private_variables


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
    password = urlparse(own_stack.services[0].url).password
    assert password and password not in "\n".join(first), "up printed the database password"

    second = own_stack.up()
    assert all("already running" in line for line in second), second
    # As the next `make` command finds them: a new process, whose services it did not start.
    again = Stack(own_stack.services[0].settings, state_dir=own_stack.services[0].state_dir,
                  embedded={"postgres", "s3", "mlflow"}).up()
    assert all("already running" in line for line in again), again

    mlflow = next(s for s in own_stack.services if s.name == "mlflow")
    experiment = MlflowClient(mlflow.url).create_experiment("kept across restarts")

    killed = json.loads(mlflow.pid_file.read_text())["pid"]
    os.kill(killed, signal.SIGKILL)
    psutil.Process(killed).wait(timeout=10) if psutil.pid_exists(killed) else None
    status = {s.name: s for s in own_stack.status()}
    assert status["mlflow"].pid is None and not status["mlflow"].healthy
    assert status["postgres"].healthy and status["s3"].healthy

    third = own_stack.up()
    assert any(line.startswith("mlflow: started") for line in third), third
    assert all(s.healthy for s in own_stack.status())
    assert MlflowClient(mlflow.url).get_experiment(experiment).name == "kept across restarts"

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
    from lib.services.stack import embedded_services

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


# -- the lake's object store: only the S3 gateway, with the keys, reaches an object --------------------------

class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: str):
        super().__init__("localhost", timeout=5)
        self.socket_path = socket_path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


def weed_listeners(store: ObjectStore) -> tuple[set[int], set[str]]:
    """The TCP ports and unix sockets the running weed process (and any child of it) listens on, from the OS."""
    proc = store.process()
    processes = [proc, *proc.children(recursive=True)]
    ports = {c.laddr.port for p in processes for c in p.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
    sockets = {c.laddr for p in processes for c in p.net_connections("unix")
               if c.laddr and Path(c.laddr).is_socket()}
    return ports, sockets


def unauthenticated(connection: http.client.HTTPConnection, method: str, path: str,
                    body: bytes | None = None, headers: dict | None = None) -> tuple[int | None, bytes]:
    """Status and body of a request without keys, tokens or certificates; None if the server will not talk HTTP."""
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException):
        return None, b""
    finally:
        connection.close()


def weed_client(*args: str, cwd: Path, config_dir: Path | None = None, stdin: str = "") -> subprocess.CompletedProcess:
    """SeaweedFS's own command-line client; without config_dir it has no certificate, keys or token."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("WEED_")} | {"HOME": str(cwd)}
    options = [f"-config_dir={config_dir}"] if config_dir else []
    return subprocess.run([str(Path(sys.executable).parent / "weed"), *options, *args], input=stdin.encode(),
                          cwd=cwd, env=env, capture_output=True, timeout=60)


def chunk_file_id(store: ObjectStore, path: str, cwd: Path) -> str:
    """The volume-server file id holding the object's bytes, asked as the stack itself (with its certificate)."""
    shell = weed_client("shell", f"-master=127.0.0.1:{store.component_ports['master']}",
                        f"-filer=127.0.0.1:{store.component_ports['filer']}",
                        cwd=cwd, config_dir=store.dir, stdin=f"fs.meta.cat {path}\n")
    found = re.search(r'"fileId":\s*"([^"]+)"', shell.stdout.decode())
    assert found, f"no file id for {path} in weed shell's answer:\n{shell.stdout.decode()}{shell.stderr.decode()}"
    return found.group(1)


def http_endpoints(store: ObjectStore) -> dict[str, Callable[[], http.client.HTTPConnection]]:
    """A connection factory for every TCP port and unix socket weed listens on, except the S3 gateway's port."""
    ports, sockets = weed_listeners(store)
    assert store.port in ports and len(ports) > 1, f"weed listens on {sorted(ports)}"
    endpoints = {f"port {port}": lambda port=port: http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                 for port in sorted(ports - {store.port})}
    return endpoints | {f"socket {path}": lambda path=path: UnixHTTPConnection(path) for path in sorted(sockets)}


def grpc_targets(store: ObjectStore) -> dict[int, str]:
    """For every port but the S3 gateway's, the filer URL that makes weed's client dial it for gRPC (HTTP + 10000)."""
    ports, _ = weed_listeners(store)
    return {port: f"http://127.0.0.1:{port - ObjectStore.GRPC_OFFSET}" for port in sorted(ports - {store.port})}


def probe_without_credentials(store: ObjectStore, filer_path: str, content: bytes, tmp_path: Path) -> list[str]:
    """Read, then write and delete, the object on every port and socket but the S3 gateway's; say what got through."""
    paths = (filer_path, "/" + chunk_file_id(store, filer_path, tmp_path))  # the object, and its bytes' volume id
    endpoints, grpc = http_endpoints(store), grpc_targets(store)
    with_certificate = [weed_client("filer.cat", base + filer_path, cwd=tmp_path, config_dir=store.dir).stdout
                        for base in grpc.values()]
    assert content in with_certificate, "weed filer.cat cannot read the object even with the stack's certificate"

    accepted = []  # reads first, everywhere: a write that got through would hide a read that did too
    for name, connect in endpoints.items():
        for path in paths:
            status, body = unauthenticated(connect(), "GET", path)
            if (status and 200 <= status < 300) or content in body:
                accepted.append(f"{name}: GET {path} -> HTTP {status}")
    for port, base in grpc.items():
        if content in weed_client("filer.cat", base + filer_path, cwd=tmp_path).stdout:
            accepted.append(f"gRPC port {port}: weed filer.cat read the object")

    for name, connect in endpoints.items():
        tampered = f"tampered via {name}".encode()
        form, form_type = encode_multipart_formdata({"file": ("_manifest.json", tampered)})
        for path in paths:
            for method, body, headers in (("PUT", tampered, {}), ("POST", form, {"Content-Type": form_type}),
                                          ("DELETE", None, {})):
                status, _ = unauthenticated(connect(), method, path, body, headers)
                if status and 200 <= status < 300:
                    accepted.append(f"{name}: {method} {path} -> HTTP {status}")
    (tmp_path / "_manifest.json").write_bytes(b"tampered via gRPC")
    for port, base in grpc.items():
        copy = weed_client("filer.copy", str(tmp_path / "_manifest.json"), base + filer_path.rsplit("/", 1)[0] + "/",
                           cwd=tmp_path)
        if copy.returncode == 0:
            accepted.append(f"gRPC port {port}: weed filer.copy wrote the object")
    return accepted


def test_only_the_s3_gateway_with_its_keys_reaches_a_lake_object(stack, settings, tmp_path):
    """Every other port and socket weed opens refuses an unauthenticated read, write or delete of the object."""
    store = next(service for service in stack.services if service.name == "s3")
    client = s3_client(settings)
    key = f"security-probe/{uuid.uuid4().hex}/_manifest.json"
    content = b'{"rows": 1, "probe": "lake object"}'
    client.put_object(store.bucket, key, io.BytesIO(content), len(content))
    try:
        accepted = probe_without_credentials(store, f"/buckets/{store.bucket}/{key}", content, tmp_path)
        assert accepted == [], "unauthenticated requests were accepted:\n" + "\n".join(accepted)
        assert client.get_object(store.bucket, key).read() == content
    finally:
        client.remove_object(store.bucket, key)


def test_the_s3_gateway_refuses_wrong_keys_and_anonymous_requests(stack, settings):
    store = next(service for service in stack.services if service.name == "s3")
    key = f"security-probe/{uuid.uuid4().hex}/_manifest.json"
    content = b'{"rows": 1}'
    s3_client(settings).put_object(store.bucket, key, io.BytesIO(content), len(content))
    wrong = s3_client(replace(settings, aws_secret_access_key="not-the-secret"), retries=0)
    with pytest.raises(S3Error, match="SignatureDoesNotMatch"):
        wrong.get_object(store.bucket, key)
    with pytest.raises(S3Error, match="SignatureDoesNotMatch"):
        wrong.put_object(store.bucket, key, io.BytesIO(b"tampered"), 8)
    for method, body in (("GET", None), ("PUT", b"tampered"), ("DELETE", None)):
        status, _ = unauthenticated(http.client.HTTPConnection("127.0.0.1", store.port, timeout=5),
                                    method, f"/{store.bucket}/{key}", body)
        assert status == 403, f"anonymous {method} of {key}: HTTP {status}"
    assert s3_client(settings).get_object(store.bucket, key).read() == content
    s3_client(settings).remove_object(store.bucket, key)
