"""Shared helpers for the benchmark scripts: servers in child processes, load generators
(Debian's ``wrk`` with a Lua script, or a small pure-Python HTTP/1.1 client), signed webhook
bodies, CPU accounting and result tables.

Everything talks to 127.0.0.1 only and every run is bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Self

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: The wa_agent checkout under test (``WA_BENCH_SRC`` picks another, e.g. a "before" copy).
SRC = os.environ.get("WA_BENCH_SRC", str(ROOT))
if SRC not in sys.path:  # run as `python benchmarks/x.py` from a checkout
    sys.path.insert(0, SRC)

HOST = "127.0.0.1"
APP_SECRET = "bench-app-secret"
VERIFY_TOKEN = "bench-verify-token"
ACCESS_TOKEN = "bench-access-token"
PHONE_NUMBER_ID = "100000000000001"
WEBHOOK_PATH = "/whatsapp/webhook"
HEALTH_PATH = "/whatsapp/health"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- machine -------------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    """CPU count, model, load average and Python version (for the result JSON)."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": sys.version.split()[0],
        "loadavg_1m": round(load[0], 2),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid: int | None = None) -> int:
    """Resident set size in KiB (this process by default)."""
    path = f"/proc/{pid or 'self'}/status"
    for line in Path(path).read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# -- child processes ---------------------------------------------------------------------------
class ServerProcess:
    """A server from ``benchmarks/_serve.py`` in its own process, on a free loopback port.

    ``with ServerProcess("bare") as s: s.url`` starts it, waits until the port accepts
    connections, and kills it on exit (its output goes to a temp log, shown on failure).
    """

    def __init__(
        self, target: str, *args: str, port: int | None = None, ready_timeout: float = 30.0
    ) -> None:
        self.target = target
        self.port = port or free_port()
        # Experiments: WA_BENCH_WA_ARGS="--max-in-flight 8" adds options to every wa_agent
        # server (see _serve.py --help).
        extra = os.environ.get("WA_BENCH_WA_ARGS", "").split() if target == "wa" else []
        self.args = [
            sys.executable,
            str(HERE / "_serve.py"),
            target,
            "--port",
            str(self.port),
            *args,
            *extra,
        ]
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_path = ""

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def launch(self) -> Self:
        """Start the process without waiting for it to listen (see :meth:`wait_ready`)."""
        extra = os.environ.get("PYTHONPATH")
        env = dict(os.environ, PYTHONPATH=SRC + (os.pathsep + extra if extra else ""))
        fd, self._log_path = tempfile.mkstemp(prefix=f"wa-bench-{self.target}-", suffix=".log")
        self._log = os.fdopen(fd, "wb")
        self.proc = subprocess.Popen(
            self.args, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
        return self

    def start(self) -> Self:
        return self.launch().wait_ready()

    def wait_ready(self) -> Self:
        assert self.proc is not None
        deadline = time.monotonic() + self.ready_timeout
        while True:
            if self.proc.poll() is not None:
                tail = self.log_tail()
                self.stop()
                raise RuntimeError(f"{self.target} server exited at start:\n{tail}")
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), 0.2):
                return self
            if time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise RuntimeError(f"{self.target} server did not listen in time:\n{tail}")
            time.sleep(0.02)

    def log_tail(self, lines: int = 30) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        text = Path(self._log_path).read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def stop(self, graceful: bool = False) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT if graceful else signal.SIGKILL)
            try:
                proc.wait(15 if graceful else 5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
            with contextlib.suppress(OSError):
                os.unlink(self._log_path)

    def __enter__(self) -> Self:
        return self if self.proc is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisProcess:
    """A throwaway ``redis-server`` on a free loopback port, durable like a production one
    (append-only file, fsync every second) in a temporary directory; stopped on exit. Started
    by the test suite's launcher (``tests/redis_server.py``)."""

    def __init__(self) -> None:
        self.url = ""
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    def __enter__(self) -> Self:
        if str(ROOT) not in sys.path:
            sys.path.append(str(ROOT))
        from tests.redis_server import start_redis_server

        self._tmp = tempfile.TemporaryDirectory(prefix="wa-bench-redis-")
        try:
            self.proc, self.url = start_redis_server(
                Path(self._tmp.name), "--appendonly", "yes", "--appendfsync", "everysec"
            )
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        from tests.redis_server import stop_redis_server

        if self.proc is not None:
            stop_redis_server(self.proc)
            self.proc = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def post_json(url: str, data: Any = None, timeout: float = 5.0) -> Any:
    req = urllib.request.Request(
        url,
        data=json.dumps(data).encode(),
        method="POST",
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


# -- webhook bodies ----------------------------------------------------------------------------
def wamid_for(tag: str, index: int) -> str:
    """A deterministic, distinct, plain-ASCII message id (so replies can quote it)."""
    return f"wamid.BENCH{tag}{index:09d}"


def sender_for(index: int) -> str:
    return str(491510000000 + index)


def make_bodies(
    n: int,
    *,
    tag: str = "A",
    secret: str = APP_SECRET,
    senders: int | None = None,
    text: str = "Hello, what are your opening hours?",
) -> list[tuple[str, bytes]]:
    """``n`` Meta-shaped text-message webhooks as ``(signature header, body)`` pairs, each with
    a distinct wamid; senders are distinct too unless ``senders`` bounds their number."""
    from wa_agent.signature import SignatureVerifier
    from wa_agent.testing.webhooks import encode, envelope, text_message

    verifier = SignatureVerifier(secret)
    now = int(time.time())
    out = []
    for i in range(n):
        who = sender_for(i % senders if senders else i)
        body = encode(
            envelope(
                messages=[text_message(who, text, wamid=wamid_for(tag, i), timestamp=now)],
                phone_number_id=PHONE_NUMBER_ID,
            )
        )
        out.append((verifier.sign(body), body))
    return out


def write_bodies(bodies: Sequence[tuple[str, bytes]], path: Path) -> Path:
    """One ``signature<TAB>body`` line per request (what the wrk Lua script reads)."""
    with path.open("wb") as f:
        for sig, body in bodies:
            if b"\n" in body or b"\t" in body:
                raise ValueError("bodies must be single-line JSON")
            f.write(sig.encode() + b"\t" + body + b"\n")
    return path


def raw_request(path: str, sig: str, body: bytes, port: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        f"Content-Type: application/json\r\nX-Hub-Signature-256: {sig}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


# -- load generators ---------------------------------------------------------------------------
@dataclass
class LoadResult:
    """What one load run measured. Latencies in milliseconds."""

    client: str
    connections: int
    duration: float
    requests: int
    errors: int
    non_200: int
    wraps: int = 0
    p50: float = 0.0
    p90: float = 0.0
    p99: float = 0.0
    p999: float = 0.0
    max: float = 0.0
    mean: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.duration if self.duration else 0.0


_WRK_LUA = r"""
-- Cycles through pre-signed webhook bodies (one "signature<TAB>body" line each).
-- Thread k of n takes lines k, k+n, k+2n, ... so every request carries a distinct wamid
-- until a thread runs out of lines (counted as "wraps").
local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local file = os.getenv("WA_BENCH_BODIES")
  local path = os.getenv("WA_BENCH_PATH")
  local nthreads = tonumber(os.getenv("WA_BENCH_THREADS"))
  local rate = tonumber(os.getenv("WA_BENCH_DELAY_MS") or "0")
  reqs = {}
  local i = 0
  for line in io.lines(file) do
    if i % nthreads == tid then
      local tab = line:find("\t", 1, true)
      reqs[#reqs + 1] = wrk.format("POST", path, {
        ["Content-Type"] = "application/json",
        ["X-Hub-Signature-256"] = line:sub(1, tab - 1),
      }, line:sub(tab + 1))
    end
    i = i + 1
  end
  idx = 0
  wraps = 0
  if rate > 0 then
    delay = function() return rate end
  end
end

function request()
  idx = idx + 1
  if idx > #reqs then
    idx = 1
    wraps = wraps + 1
  end
  return reqs[idx]
end

function done(summary, latency, requests)
  local wr = 0
  for _, t in ipairs(threads) do wr = wr + t:get("wraps") end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"duration_us":%d,"requests":%d,"errors_connect":%d,"errors_read":%d,' ..
    '"errors_write":%d,"errors_status":%d,"errors_timeout":%d,"wraps":%d,' ..
    '"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d,"mean":%.1f}\n',
    summary.duration, summary.requests, e.connect, e.read, e.write, e.status, e.timeout,
    wr, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
"""


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def ensure_wrk() -> bool:
    """Find ``wrk``; install Debian's package if missing and running as root."""
    if have_wrk():
        return True
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk not found: installing Debian's wrk package ...", file=sys.stderr)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "wrk"],
            env=env,
            check=False,
            stdout=subprocess.DEVNULL,
        )
        if not have_wrk():
            subprocess.run(
                ["apt-get", "update", "-q"], env=env, check=False, stdout=subprocess.DEVNULL
            )
            subprocess.run(
                ["apt-get", "install", "-y", "-q", "wrk"],
                env=env,
                check=False,
                stdout=subprocess.DEVNULL,
            )
    return have_wrk()


def choose_client(requested: str) -> str:
    """``wrk`` (installing it if needed), or ``python`` when asked or when wrk is missing."""
    if requested == "python":
        return "python"
    if ensure_wrk():
        return "wrk"
    if requested == "wrk":
        raise SystemExit("wrk is not installed and could not be installed: use --client python")
    print("wrk unavailable: falling back to the pure-Python client", file=sys.stderr)
    return "python"


class BodyFile:
    """Bodies written once to a temp file for wrk, kept in memory for the Python client."""

    def __init__(self, bodies: Sequence[tuple[str, bytes]], directory: Path) -> None:
        self.bodies = list(bodies)
        self.path = write_bodies(self.bodies, directory / f"bodies-{id(self)}.tsv")


def run_load(
    client: str,
    port: int,
    bodies: BodyFile,
    *,
    connections: int,
    duration: float,
    path: str = WEBHOOK_PATH,
    rate: float | None = None,
    timeout: float = 10.0,
) -> LoadResult:
    """Drive ``connections`` keep-alive connections for ``duration`` seconds, cycling through
    ``bodies``; ``rate`` (requests/s over all connections) spaces requests out."""
    if client == "wrk":
        return _run_wrk(
            port,
            bodies,
            connections=connections,
            duration=duration,
            path=path,
            rate=rate,
            timeout=timeout,
        )
    return asyncio.run(
        _run_python(
            port,
            bodies.bodies,
            connections=connections,
            duration=duration,
            path=path,
            rate=rate,
            timeout=timeout,
        )
    )


def _run_wrk(
    port: int,
    bodies: BodyFile,
    *,
    connections: int,
    duration: float,
    path: str,
    rate: float | None,
    timeout: float,
) -> LoadResult:
    script = bodies.path.with_suffix(".lua")
    script.write_text(_WRK_LUA)
    threads = 1
    delay_ms = 0
    if rate:
        # wrk sleeps delay() ms after each response on each connection.
        delay_ms = max(1, round(connections / rate * 1000))
    env = dict(
        os.environ,
        WA_BENCH_BODIES=str(bodies.path),
        WA_BENCH_PATH=path,
        WA_BENCH_THREADS=str(threads),
        WA_BENCH_DELAY_MS=str(delay_ms),
    )
    dur = f"{max(1, round(duration))}s"  # wrk takes whole seconds
    cmd = [
        "wrk",
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        dur,
        "--timeout",
        f"{int(timeout)}s",
        "-s",
        str(script),
        f"http://{HOST}:{port}{path}",
    ]
    proc = subprocess.run(
        cmd, check=False, env=env, capture_output=True, text=True, timeout=duration + timeout + 60
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    data = json.loads(line[len("WRKJSON ") :])
    errors = sum(
        data[k] for k in ("errors_connect", "errors_read", "errors_write", "errors_timeout")
    )
    return LoadResult(
        client="wrk",
        connections=connections,
        duration=data["duration_us"] / 1e6,
        requests=data["requests"],
        errors=errors,
        non_200=data["errors_status"],
        wraps=data["wraps"],
        p50=data["p50"] / 1000,
        p90=data["p90"] / 1000,
        p99=data["p99"] / 1000,
        p999=data["p999"] / 1000,
        max=data["max"] / 1000,
        mean=data["mean"] / 1000,
    )


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
            break
    if length:
        await reader.readexactly(length)
    return status


async def _run_python(
    port: int,
    bodies: Sequence[tuple[str, bytes]],
    *,
    connections: int,
    duration: float,
    path: str,
    rate: float | None,
    timeout: float,
) -> LoadResult:
    requests = [raw_request(path, sig, body, port) for sig, body in bodies]
    counter = iter(range(10**12))
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    errors = 0
    gap = connections / rate if rate else 0.0
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + duration

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            while loop.time() < deadline:
                request = requests[next(counter) % len(requests)]
                t0 = time.perf_counter()
                writer.write(request)
                try:
                    status = await asyncio.wait_for(_read_response(reader), timeout)
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(HOST, port)
                    continue
                latencies.append((time.perf_counter() - t0) * 1000)
                statuses[status] += 1
                if gap:
                    await asyncio.sleep(gap)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = loop.time() - start
    sent = len(latencies)
    pct = percentiles(latencies)
    return LoadResult(
        client="python",
        connections=connections,
        duration=elapsed,
        requests=sent,
        errors=errors,
        non_200=sent - statuses.get(200, 0),
        wraps=max(0, sent + errors - 1) // len(requests),
        p50=pct["p50"],
        p90=pct["p90"],
        p99=pct["p99"],
        p999=pct["p999"],
        max=pct["max"],
        mean=pct["mean"],
    )


async def post_all(
    port: int,
    bodies: Sequence[tuple[str, bytes]],
    *,
    connections: int,
    path: str = WEBHOOK_PATH,
    deadline: float | None = None,
) -> dict[str, Any]:
    """POST every body once over ``connections`` keep-alive connections, stopping early at
    ``deadline`` (a ``time.monotonic()`` value). Returns status counts, latencies and the
    indices of the bodies answered 200 (``acked``)."""
    queue = list(
        reversed([(i, raw_request(path, sig, body, port)) for i, (sig, body) in enumerate(bodies)])
    )
    acked: list[int] = []
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    failed = 0
    end = deadline if deadline is not None else time.monotonic() + 3600

    async def worker() -> None:
        nonlocal failed
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            while queue and time.monotonic() < end:
                index, request = queue.pop()
                t0 = time.perf_counter()
                writer.write(request)
                try:
                    status = await asyncio.wait_for(
                        _read_response(reader), max(0.1, end - time.monotonic())
                    )
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    failed += 1
                    break
                statuses[status] += 1
                if status == 200:
                    acked.append(index)
                latencies.append((time.perf_counter() - t0) * 1000)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return {
        "statuses": dict(statuses),
        "failed": failed,
        "not_sent": len(queue),
        "acked": acked,
        **percentiles(latencies),
    }


def percentiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "p999": 0.0, "max": 0.0, "mean": 0.0}
    ordered = sorted(values)
    n = len(ordered)

    def pick(q: float) -> float:
        return ordered[min(n - 1, int(q * n))]

    return {
        "p50": pick(0.5),
        "p90": pick(0.9),
        "p99": pick(0.99),
        "p999": pick(0.999),
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
    }


# -- reporting --------------------------------------------------------------------------------
def med_range(values: Sequence[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def fmt_range(values: Sequence[float], digits: int = 0) -> str:
    med, lo, hi = med_range(values)
    if len(values) == 1:
        return f"{med:,.{digits}f}"
    return f"{med:,.{digits}f} ({lo:,.{digits}f}–{hi:,.{digits}f})"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table with right-aligned columns (left-aligned first column)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for k, row in enumerate(cells):
        parts = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(parts))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def emit(result: dict[str, Any]) -> None:
    """The final single JSON line every script prints."""
    print(json.dumps(result, separators=(",", ":"), default=str), flush=True)


@contextlib.contextmanager
def tempdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="wa-bench-") as d:
        yield Path(d)
