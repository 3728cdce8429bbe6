"""What every embedded server has in common: a process started in its own folder, its log, its pid file and
port, a health check, and the errors that say what went wrong.

A pid file records the process's start time as well as its pid, so a stale file left by `kill -9` (or a
pid reused by another program) is recognised and ignored.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import psutil

from lib.config import Settings
from lib.errors import NeedsAction

log = logging.getLogger(__name__)


START_TIMEOUT_S = 60.0


class ServiceError(RuntimeError):
    """A service cannot be started, stopped or reached; the message says which and why."""


class CredentialsRefused(ServiceError, NeedsAction):
    """A running service refused the configured keys: waiting longer cannot help."""


def shown_url(url: str) -> str:
    """The URL to print: its password, if any, replaced by ***."""
    parts = urlparse(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


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

# Where free ports are looked for. Parallel test workers each take a share of it (tests/conftest.py):
# a worker restarting a server on its port must not find another worker's new server there.
port_range = range(20000, 30000)


def free_port_block(size: int = 1, offset: int = 0) -> int:
    """A loopback port P with P..P+size-1 free, and (with `offset`) the same ports shifted by it."""
    for _ in range(200):
        base = random.choice(port_range)
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
            time.sleep(0.05)
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
