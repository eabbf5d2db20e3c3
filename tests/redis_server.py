"""A real ``redis-server`` for the tests, started once per test session (per xdist worker).

Use it from a test module or conftest with::

    from tests.redis_server import redis_url  # noqa: F401

The fixture yields ``redis://127.0.0.1:<port>/0``. The server listens on loopback only, keeps
nothing on disk (``--save "" --appendonly no``) and is killed when the session ends. Tests
share it, so each test isolates itself with a fresh key prefix (or ``FLUSHDB``).

Without a ``redis-server`` binary the tests that need it are skipped, or fail when the ``CI``
environment variable is set (CI must run them).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["free_port", "redis_url", "start_redis_server", "stop_redis_server"]

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


def start_redis_server(
    workdir: Path, *extra_args: str
) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``redis-server`` on a free loopback port in ``workdir``; answer (process, URL).

    Extra arguments are appended to the command line (e.g. ``"--appendonly", "yes"``). The
    caller must terminate the process. Raises ``RuntimeError`` if it does not come up.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError(INSTALL_HINT)
    last_error = ""
    for _ in range(3):  # a port picked as free may be taken by someone else meanwhile
        port = free_port()
        log = workdir / f"redis-{port}.log"
        cmd = [
            binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(workdir), "--logfile", str(log),
            "--daemonize", "no", *extra_args,
        ]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            if _answers_ping(port):
                return proc, f"redis://127.0.0.1:{port}/0"
            time.sleep(0.02)
        stop_redis_server(proc)
        last_error = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise RuntimeError(f"redis-server did not start; its log ends with:\n{last_error}")


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
