"""Clean up after executor processes that died without finishing their runs.

A run is inserted into `notebook_runs` as 'running' with the host, pid and start time of the process
executing it, and each kernel's socket folder (`asf-kernel-*` in the temporary directory) holds an
`owner.json` naming that process. When the process is killed outright, or loses its database for
good, neither is finished. Every executor start calls `mark_abandoned_runs` and
`remove_orphan_kernel_folders`, which compare the recorded process with the live ones: a pid that
is gone, or reused by a process started at another time, means the owner died.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import tempfile
import time
from pathlib import Path

import psutil

from lib.store import runs

log = logging.getLogger(__name__)

KERNEL_FOLDER_PREFIX = "asf-kernel-"
OWNER_FILE = "owner.json"
# A kernel folder without an owner file (being created, or left by an older version) is kept this long.
UNOWNED_GRACE_S = 3600


def this_process() -> dict:
    """Host, pid and start time of this process, as recorded for its runs and kernel folders."""
    me = psutil.Process()
    return {"host": socket.gethostname(), "pid": me.pid, "process_started": me.create_time()}


def is_alive(pid: int, started: float) -> bool:
    """Whether process `pid` still runs and is the one that started at `started` (not a reused pid)."""
    try:
        return abs(psutil.Process(pid).create_time() - started) < 1
    except psutil.Error:
        return False


def mark_abandoned_runs(conn) -> int:
    """Mark this host's 'running' rows whose process is gone as 'interrupted'; return how many."""
    dead = [(run_id, pid) for run_id, pid, started in runs.running_on(conn, socket.gethostname())
            if not is_alive(pid, started)]
    for run_id, pid in dead:
        runs.mark_interrupted(conn, run_id, "ProcessGone",
                              f"the process that ran it (pid {pid}) ended without recording an outcome: it was "
                              "killed, or lost its database connection")
    if dead:
        log.info("Marked %d run(s) whose process had died as interrupted: %s.", len(dead),
                 ", ".join(run_id for run_id, _ in dead))
    return len(dead)


def claim_kernel_folder(folder: Path) -> None:
    """Record this process as the owner of a kernel's socket folder."""
    (folder / OWNER_FILE).write_text(json.dumps(this_process()))


def remove_orphan_kernel_folders(temp_dir: Path | None = None) -> int:
    """Remove kernel socket folders whose owner process is gone; return how many."""
    removed = 0
    for folder in Path(temp_dir or tempfile.gettempdir()).glob(KERNEL_FOLDER_PREFIX + "*"):
        try:
            owner = json.loads((folder / OWNER_FILE).read_text())
            orphan = owner["host"] == socket.gethostname() and not is_alive(owner["pid"], owner["process_started"])
        except FileNotFoundError:
            orphan = time.time() - folder.stat().st_mtime > UNOWNED_GRACE_S
        except (OSError, ValueError, KeyError):
            continue
        if orphan:
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed
