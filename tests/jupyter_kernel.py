"""A real IPython kernel for tests: the .venv's Python running ipykernel, driven over ZMQ.

The kernelspec is written to a temporary directory and names ``sys.executable`` explicitly,
so the tests never pick up some other ``python3`` kernel registered for the user, and they
work from a clean clone after ``scripts/bootstrap`` (ipykernel is a dev dependency).

:class:`Kernel` runs cells like a front end would and keeps every IOPub message, so a test
can look at what arrived while no cell was running (widget ``comm_msg`` updates from
background tasks).
"""

from __future__ import annotations

import json
import queue
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

ROOT = Path(__file__).resolve().parent.parent
KERNEL_NAME = "wa-agent-test"

__all__ = [
    "KERNEL_NAME",
    "ROOT",
    "CellResult",
    "Kernel",
    "fake_ngrok_env",
    "kernel_spec_manager",
    "process_gone",
]


def kernel_spec_manager(directory: Path) -> KernelSpecManager:
    """A KernelSpecManager that knows one kernel, ``wa-agent-test``: this interpreter."""
    spec_dir = directory / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    (spec_dir / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "wa_agent tests",
                "language": "python",
            }
        )
    )
    return KernelSpecManager(kernel_dirs=[str(directory)])


@dataclass
class CellResult:
    """What one execute request produced (only messages whose parent is this request)."""

    stdout: str = ""
    stderr: str = ""
    error: dict[str, Any] | None = None
    outputs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None

    def describe(self) -> str:
        err = "" if self.error is None else f"{self.error['ename']}: {self.error['evalue']}"
        return f"stdout={self.stdout!r} stderr={self.stderr[-2000:]!r} error={err!r}"


class Kernel:
    """One running kernel. ``run(code)`` executes a cell and waits until the kernel is idle."""

    def __init__(self, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.km = KernelManager(
            kernel_name=KERNEL_NAME, kernel_spec_manager=kernel_spec_manager(workdir / "kernels")
        )
        self.km.start_kernel(cwd=str(ROOT), env=_kernel_env(env))
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        #: IOPub messages that belonged to no cell we were waiting for (background output).
        self.background: list[dict[str, Any]] = []
        #: Widget ``comm_msg`` messages that arrived while their cell was still running.
        self.cell_comms: list[dict[str, Any]] = []
        self._pending: list[dict[str, Any]] = []

    def run(self, code: str, timeout: float = 30.0) -> CellResult:
        """Execute ``code`` as a cell; return its output once the kernel is idle again."""
        return self.collect(self.submit(code), timeout, code)

    def submit(self, code: str) -> str:
        """Start executing ``code`` without waiting; returns the request's msg_id."""
        return str(self.kc.execute(code, store_history=False, allow_stdin=False))

    def wait_busy(self, msg_id: str, timeout: float = 30.0) -> None:
        """Wait until the kernel reports it is busy with ``msg_id`` (the cell started)."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                msg = self.kc.get_iopub_msg(timeout=remaining)
            except queue.Empty:
                continue
            self._pending.append(msg)
            if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "execute_input":
                return
        raise TimeoutError("the cell did not start")

    def collect(self, msg_id: str, timeout: float = 30.0, code: str = "") -> CellResult:
        """Wait for the cell ``msg_id`` to finish and return what it produced."""
        result = CellResult()
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"cell did not finish within {timeout} s: {code[:200]!r}; "
                    f"so far {result.describe()}"
                )
            if self._pending:
                msg = self._pending.pop(0)
            else:
                try:
                    msg = self.kc.get_iopub_msg(timeout=remaining)
                except queue.Empty:
                    continue
            if msg["parent_header"].get("msg_id") != msg_id:
                self.background.append(msg)
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                if content["name"] == "stdout":
                    result.stdout += content["text"]
                else:
                    result.stderr += content["text"]
            elif kind == "error":
                result.error = content
            elif kind in ("execute_result", "display_data"):
                result.outputs.append(content)
            elif kind == "comm_msg":
                self.cell_comms.append(msg)
            elif kind == "status" and content["execution_state"] == "idle":
                break
        while True:
            # The reply follows the idle status; allow for a loaded machine (CI).
            reply = self.kc.get_shell_msg(timeout=max(10.0, deadline - time.monotonic()))
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        if reply["content"]["status"] == "error" and result.error is None:
            result.error = reply["content"]
        return result

    def check(self, code: str, timeout: float = 30.0) -> str:
        """Run ``code``; raise ``AssertionError`` if the cell failed; return its stdout."""
        result = self.run(code, timeout)
        assert result.ok, result.describe()
        return result.stdout

    def drain_background(self, timeout: float = 0.2) -> list[dict[str, Any]]:
        """Collect IOPub messages that arrive within ``timeout`` s while no cell runs."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                self.background.append(self.kc.get_iopub_msg(timeout=remaining))
            except queue.Empty:
                break
        return self.background

    def is_alive(self) -> bool:
        return bool(self.km.is_alive())

    def interrupt(self) -> None:
        """What the front end's "Interrupt kernel" button does (SIGINT to the kernel)."""
        self.km.interrupt_kernel()

    def shutdown(self) -> None:
        try:
            self.kc.stop_channels()
        finally:
            self.km.shutdown_kernel(now=False)


def _kernel_env(extra: dict[str, str] | None) -> dict[str, str]:
    import os

    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("WHATSAPP_", "NGROK_", "PYNGROK_", "PYTEST_"))
    }
    env["JUPYTER_PLATFORM_DIRS"] = "1"
    env.update(extra or {})
    return env


def process_gone(pid: int, timeout: float = 10.0) -> bool:
    """Wait (bounded) until process ``pid`` has exited (a zombie counts as exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return True
        if stat.split()[2] == "Z":
            return True
        time.sleep(0.05)
    return False


def fake_ngrok_env(directory: Path) -> tuple[dict[str, str], Path]:
    """Environment that makes pyngrok in a kernel run ``tests/fake_ngrok.py`` (never a
    download, never the user's ngrok config); returns it and the fake's state file."""
    from tests.fake_ngrok import write_launcher

    directory.mkdir(parents=True, exist_ok=True)
    state = directory / "ngrok-state.json"
    launcher = write_launcher(directory, state_file=state)
    return {
        "PYNGROK_NGROK_PATH": str(launcher),
        "XDG_CONFIG_HOME": str(directory / "xdg"),
        "NGROK_AUTHTOKEN": "tok-good",
    }, state
