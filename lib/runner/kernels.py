"""The kernels notebooks run on: an ipykernel of this interpreter over private IPC sockets, started per
run (`CallerKernelManager`) or kept warm across runs (`WarmKernel`)."""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
from pathlib import Path
from queue import Empty

from ipykernel.kernelspec import RESOURCES, get_kernel_dict
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import ensure_async, run_sync

from lib.runner import leftovers

logger = logging.getLogger(__name__)


KERNEL_NAME = "python3"


# Added to the kernel's command line. Once pandas, MLflow and Evidently are loaded, the garbage
# collections the interpreter runs while exiting take about 2 s; freezing the heap in the last exit
# handler (atexit runs the first registered last) skips them, after the libraries' handlers have run.
FAST_EXIT = "--IPKernelApp.exec_lines=import atexit, gc; atexit.register(gc.freeze)"
# No output cache (Out, _): nothing reads it, and with it each reset of a warm kernel runs a full garbage
# collection, 0.2-0.3 s once those libraries are loaded. No input history: it writes every cell to
# ~/.ipython, which a headless run never reads back.
LEAN_SHELL = ("--InteractiveShell.cache_size=0", "--HistoryManager.enabled=False")


class PromptClient(AsyncKernelClient):
    """A kernel client that is ready as soon as the kernel's answer to `kernel_info` has come back on both
    channels. jupyter_client's client then waits for 0.2 s of silence on the broadcast (IOPub) channel,
    a fifth of a second of every notebook run; the "idle" status of that same request says the same."""

    async def wait_for_ready(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (math.inf if timeout is None else timeout)
        while True:
            request = self.kernel_info()
            reply = await self._reply_to(request, within=1)
            if reply is not None:
                self._handle_kernel_info_reply(reply)
                # A broadcast channel that connected too late to see this request's statuses asks again.
                if await self._idle_after(request, within=0.5):
                    return
            if not await self._async_is_alive():
                raise RuntimeError("Kernel died before replying to kernel_info")
            if time.monotonic() > deadline:
                raise RuntimeError(f"Kernel didn't respond in {timeout:g} seconds")

    async def _reply_to(self, request: str, within: float) -> dict | None:
        """The shell reply to `request`, passing over late replies to earlier requests; None if not in time."""
        return await self._first(self.shell_channel, within, lambda message: _parent(message) == request)

    async def _idle_after(self, request: str, within: float) -> bool:
        """Read the broadcast channel up to `request`'s "idle" status (its last message); False if not seen."""
        idle = await self._first(self.iopub_channel, within, lambda message: (
            message["msg_type"] == "status" and message["content"]["execution_state"] == "idle"
            and _parent(message) == request))
        return idle is not None

    @staticmethod
    async def _first(channel, within: float, wanted) -> dict | None:
        """The first message on `channel` for which `wanted` holds, reading for at most `within` seconds."""
        end = time.monotonic() + within
        while (left := end - time.monotonic()) > 0:
            try:
                message = await ensure_async(channel.get_msg(timeout=left))
            except Empty:
                return None
            if wanted(message):
                return message
        return None


def _parent(message: dict) -> str | None:
    return message["parent_header"].get("msg_id")


class CallerKernelManager(AsyncKernelManager):
    """An ipykernel of the interpreter that runs the executor, over IPC sockets in a private folder.

    The kernelspec comes from ipykernel itself, so a `python3` kernelspec installed elsewhere
    (for another interpreter) cannot take over. IPC keeps the kernel off TCP ports; the
    folder is unique per kernel, so concurrent runs never share socket files. `environment` holds
    variables set in the kernel on top of this process's (a run's own settings).
    """

    def __init__(self, environment: dict[str, str] | None = None, **kwargs):
        self.environment = dict(environment or {})
        self.socket_dir = Path(tempfile.mkdtemp(prefix=leftovers.KERNEL_FOLDER_PREFIX))
        leftovers.claim_kernel_folder(self.socket_dir)
        self.clients = []
        kwargs.setdefault("transport", "ipc")
        kwargs.setdefault("ip", str(self.socket_dir / "kernel"))
        kwargs.setdefault("connection_file", str(self.socket_dir / "kernel.json"))
        kwargs.setdefault("client_class", f"{PromptClient.__module__}.{PromptClient.__name__}")
        super().__init__(kernel_name=KERNEL_NAME, **kwargs)

    @property
    def kernel_spec(self) -> KernelSpec:
        if self._kernel_spec is None:
            spec = get_kernel_dict()
            self._kernel_spec = KernelSpec(
                resource_dir=RESOURCES,
                **{**spec, "argv": [*spec["argv"], FAST_EXIT, *LEAN_SHELL], "env": self.environment},
            )
        return self._kernel_spec

    def client(self, **kwargs):
        # Kept so `stop` can close them: nbclient leaves the clients of a manager it was given open.
        client = super().client(**kwargs)
        self.clients.append(client)
        return client

    def stop(self, now: bool) -> None:
        """Shut the kernel down (`now`: kill it without a shutdown request) and remove its sockets."""
        try:
            for client in self.clients:
                client.stop_channels()
            if run_sync(self.is_alive)():
                run_sync(self.shutdown_kernel)(now=now)
            else:
                run_sync(self.cleanup_resources)()
        finally:
            shutil.rmtree(self.socket_dir, ignore_errors=True)


class WarmKernel:
    """One kernel that consecutive runs share, for callers that run many short notebooks (the simulation).

    Each run starts from an empty namespace: IPython's reset clears every variable and restarts
    the execution count, so the executed notebook reads as if from a fresh kernel. The modules that
    earlier runs imported stay loaded, so a run skips the kernel start-up and most of its imports
    (seconds for pandas, MLflow and Evidently). A run that does not leave the kernel idle (timed
    out, interrupted, kernel died) discards it, and the next run starts a new one. `close()` shuts
    the kernel down; the caller owns it, e.g. `with WarmKernel() as kernel: execute(..., kernel=kernel)`.
    """

    RESET = "get_ipython().reset(new_session=True, aggressive=False)"

    def __init__(self, reset_timeout: float = 60):
        self.reset_timeout = reset_timeout
        self._km: CallerKernelManager | None = None

    def __enter__(self) -> WarmKernel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def manager(self) -> CallerKernelManager:
        """The kernel manager for the next run: the live kernel with a clean namespace, or a new one."""
        if self._km is not None and self._km.has_kernel:
            try:
                self._reset()
                return self._km
            except Exception:  # a kernel that cannot even reset is not worth keeping
                logger.warning("The warm kernel did not answer its reset; starting a new one.", exc_info=True)
                self.discard()
        self._km = CallerKernelManager()  # papermill starts it on first use
        return self._km

    def _reset(self) -> None:
        # Over the shell channel alone: its reply is all a reset needs, and waiting for the broadcast
        # (IOPub) channel to settle, as `wait_for_ready` does, costs 0.2 s a run.
        client = self._km.client()
        try:
            client.start_channels(iopub=False, stdin=False, hb=False)
            request = client.execute(self.RESET, silent=True, store_history=False)
            deadline = time.monotonic() + self.reset_timeout
            while True:
                reply = run_sync(client.get_shell_msg)(timeout=max(deadline - time.monotonic(), 0.01))
                if reply["parent_header"].get("msg_id") == request:
                    break
            if reply["content"]["status"] != "ok":
                raise RuntimeError(f"the namespace reset failed: {reply['content']}")
        finally:
            client.stop_channels()
            self._km.clients.remove(client)

    def release(self, idle: bool) -> None:
        """After a run: keep an idle kernel (closing the run's client channels), discard a busy one."""
        if self._km is None:
            return
        if not idle:
            self.discard()
            return
        for client in self._km.clients:
            client.stop_channels()
        self._km.clients.clear()

    def discard(self) -> None:
        if self._km is not None:
            km, self._km = self._km, None
            km.stop(now=True)

    def close(self) -> None:
        """Shut the kernel down, asking it to exit so its libraries' exit handlers run."""
        if self._km is not None:
            km, self._km = self._km, None
            km.stop(now=False)
