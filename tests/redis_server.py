"""A real ``redis-server`` for the tests, started once per test session (per xdist worker).

Use it from a test module or conftest with::

    from tests.redis_server import redis_url  # noqa: F401

The fixture yields ``redis://127.0.0.1:<port>/0``. The server listens on loopback only, keeps
nothing on disk (``--save "" --appendonly no``) and is killed when the session ends. Tests
share it, so each test isolates itself with a fresh key prefix (or ``FLUSHDB``).

A test that needs its own server (other settings, or a crash and restart under a store)
uses the ``redis_servers`` fixture: ``redis_servers("--appendonly", "yes")`` starts a
:class:`RedisServer` with those arguments, which :meth:`RedisServer.kill` (SIGKILL) and
:meth:`RedisServer.restart` bring down and up again on the same port and data directory.

Without a ``redis-server`` binary the tests that need it are skipped, or fail when the ``CI``
environment variable is set (CI must run them).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

__all__ = [
    "RedisServer",
    "free_port",
    "redis_servers",
    "redis_url",
    "start_redis_server",
    "stop_redis_server",
]

INSTALL_HINT = (
    "redis-server is not installed: `apt-get install redis-server` (Debian/Ubuntu) or "
    "`brew install redis` (macOS)"
)
_START_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _launch(
    binary: str, port: int, workdir: Path, extra_args: tuple[str, ...]
) -> subprocess.Popen[bytes] | None:
    """Run redis-server on ``port``; the process once it answers PING, else ``None``."""
    log = workdir / f"redis-{port}.log"
    cmd = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
        "--logfile",
        str(log),
        "--daemonize",
        "no",
        *extra_args,
    ]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        if _answers_ping(port):
            return proc
        time.sleep(0.02)
    stop_redis_server(proc)
    return None


def _log_tail(workdir: Path, port: int) -> str:
    log = workdir / f"redis-{port}.log"
    return log.read_text(errors="replace")[-2000:] if log.exists() else ""


def _binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError(INSTALL_HINT)
    return binary


def start_redis_server(workdir: Path, *extra_args: str) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``redis-server`` on a free loopback port in ``workdir``; answer (process, URL).

    Extra arguments are appended to the command line (e.g. ``"--appendonly", "yes"``). The
    caller must terminate the process. Raises ``RuntimeError`` if it does not come up.
    """
    binary = _binary()
    last_error = ""
    for _ in range(3):  # a port picked as free may be taken by someone else meanwhile
        port = free_port()
        proc = _launch(binary, port, workdir, extra_args)
        if proc is not None:
            return proc, f"redis://127.0.0.1:{port}/0"
        last_error = _log_tail(workdir, port)
    raise RuntimeError(f"redis-server did not start; its log ends with:\n{last_error}")


class RedisServer:
    """A redis-server of one test, with its own arguments, port and data directory, that
    can be killed and restarted in place (same port, same files) under a running store."""

    def __init__(self, workdir: Path, *extra_args: str) -> None:
        self.workdir = workdir
        self.extra_args = extra_args
        proc, self.url = start_redis_server(workdir, *extra_args)
        self.port = int(self.url.rsplit(":", 1)[1].split("/", 1)[0])
        self.proc: subprocess.Popen[bytes] | None = proc

    def kill(self) -> None:
        """SIGKILL: the server gets no chance to write anything more to disk."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.proc = None

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL)."""
        if self.proc is not None:
            stop_redis_server(self.proc)
        self.proc = None

    def restart(self, *, kill: bool = True) -> None:
        """Bring the server down (SIGKILL unless ``kill=False``) and up again on the same
        port and data directory, with the same arguments."""
        if kill:
            self.kill()
        else:
            self.stop()
        deadline = time.monotonic() + _START_TIMEOUT
        while True:  # the kernel may hold the port for a moment after the kill
            proc = _launch(_binary(), self.port, self.workdir, self.extra_args)
            if proc is not None:
                self.proc = proc
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    "redis-server did not restart; its log ends with:\n"
                    + _log_tail(self.workdir, self.port)
                )
            time.sleep(0.1)


def stop_redis_server(proc: subprocess.Popen[bytes]) -> None:
    """Terminate (then kill) a server started by :func:`start_redis_server`."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a real redis-server on 127.0.0.1 for this test session (see module docstring)."""
    if shutil.which("redis-server") is None:
        if os.environ.get("CI"):
            pytest.fail(INSTALL_HINT)
        pytest.skip(INSTALL_HINT)
    proc, url = start_redis_server(tmp_path_factory.mktemp("redis"))
    try:
        yield url
    finally:
        stop_redis_server(proc)


@pytest.fixture
def redis_servers(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Start private redis-servers for one test: ``redis_servers(*args)`` answers a running
    :class:`RedisServer` with those command-line arguments; all are stopped afterwards."""
    if shutil.which("redis-server") is None:
        if os.environ.get("CI"):
            pytest.fail(INSTALL_HINT)
        pytest.skip(INSTALL_HINT)
    started: list[RedisServer] = []

    def start(*extra_args: str) -> RedisServer:
        workdir = tmp_path / f"redis-{len(started)}"
        workdir.mkdir()
        server = RedisServer(workdir, *extra_args)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()
