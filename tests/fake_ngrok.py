"""A stand-in for the ngrok agent, so pyngrok's real code path runs offline on loopback.

pyngrok starts ``<ngrok_path> start --none --log stdout [--config P] [--authtoken T]
[--region R]`` and reads logfmt lines from stdout until it has seen the local API address,
"client session established" and "tunnel session started"; an ``lvl=eror`` line is a startup
error. It then drives the agent through its local HTTP API (``/api/endpoints``; the older
``/api/tunnels`` is served too). Here every endpoint is a real TCP forwarder on 127.0.0.1, so
its ``public_url`` reaches the upstream server like a tunnel would.

Behaviour switches:

* an auth token starting with ``bad`` -> the authentication error real ngrok prints (it
  echoes the token, so callers must redact it), then exit 1;
* no auth token -> ERR_NGROK_4018, exit 1;
* ``FAKE_NGROK_MODE=crash`` -> exit 2 before printing anything.

``FAKE_NGROK_STATE=<file>``: the agent writes its state there as JSON (pid, argv, token,
region, open endpoints, deleted names) after each change, for tests to inspect.

Use :func:`write_launcher` to make an executable that runs this file with a given Python.
Only the standard library is used. Nothing listens anywhere but 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

VERSION = "3.99.0-fake"


def write_launcher(
    directory: Path, *, mode: str = "ok", state_file: Path | None = None, python: str | None = None
) -> Path:
    """Write ``directory/ngrok``: a shell script that execs this fake with ``python``."""
    path = directory / "ngrok"
    lines = ["#!/bin/sh", f"export FAKE_NGROK_MODE={mode}"]
    if state_file is not None:
        lines.append(f"export FAKE_NGROK_STATE='{state_file}'")
    lines.append(f"exec '{python or sys.executable}' '{Path(__file__).resolve()}' \"$@\"")
    path.write_text("\n".join(lines) + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def _log(level: str, msg: str, **fields: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    extra = "".join(f" {k}={json.dumps(v) if ' ' in v or not v else v}" for k, v in fields.items())
    sys.stdout.write(f"t={stamp} lvl={level} msg={json.dumps(msg)}{extra}\n")
    sys.stdout.flush()


class _Forwarder:
    """Accept on 127.0.0.1:<free port>, pump bytes both ways to the upstream address."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


class _Agent:
    def __init__(self, argv: list[str], token: str | None, region: str | None) -> None:
        self.argv = argv
        self.token = token
        self.region = region
        self.endpoints: dict[str, tuple[dict[str, Any], _Forwarder]] = {}
        self.deleted: list[str] = []
        self.lock = threading.Lock()
        self.state_file = os.environ.get("FAKE_NGROK_STATE")

    def save(self) -> None:
        if not self.state_file:
            return
        state = {
            "pid": os.getpid(),
            "argv": self.argv,
            "authtoken": self.token,
            "region": self.region,
            "endpoints": [data for data, _ in self.endpoints.values()],
            "deleted": self.deleted,
        }
        tmp = self.state_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f)
        os.replace(tmp, self.state_file)

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("name") or f"endpoint-{uuid.uuid4()}"
        upstream = (body.get("upstream") or {}).get("url") or body.get("addr") or "80"
        target = urlsplit(upstream if "://" in str(upstream) else f"http://localhost:{upstream}")
        host = target.hostname or "127.0.0.1"
        host = "127.0.0.1" if host in ("localhost", "::1") else host
        if host != "127.0.0.1":
            raise ValueError("the fake only forwards to 127.0.0.1")
        fwd = _Forwarder((host, target.port or 80))
        public = f"http://127.0.0.1:{fwd.port}"
        data = {
            "id": f"ep_{uuid.uuid4().hex[:12]}",
            "name": name,
            "uri": f"/api/endpoints/{name}",
            "public_url": public,
            "url": public,
            "proto": "http",
            "upstream": {"url": upstream, "protocol": "http1"},
        }
        with self.lock:
            self.endpoints[name] = (data, fwd)
            self.save()
        return data

    def delete(self, name: str) -> bool:
        with self.lock:
            found = self.endpoints.pop(name, None)
            if found is None:
                return False
            found[1].close()
            self.deleted.append(name)
            self.save()
        return True


def _handler(agent: _Agent) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: Any = None) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _collection(self) -> str | None:
            path = self.path.split("?")[0].rstrip("/")
            for key in ("endpoints", "tunnels"):
                if path == f"/api/{key}":
                    return key
            return None

        def do_GET(self) -> None:
            key = self._collection()
            if key is None:
                self._send(404, {"error_code": 100, "msg": "not found"})
                return
            with agent.lock:
                items = [data for data, _ in agent.endpoints.values()]
            self._send(200, {key: items, "uri": f"/api/{key}"})

        def do_POST(self) -> None:
            if self._collection() is None:
                self._send(404, {"error_code": 100, "msg": "not found"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
                self._send(201, agent.create(body))
            except (ValueError, OSError) as exc:
                self._send(400, {"error_code": 102, "msg": str(exc)})

        def do_DELETE(self) -> None:
            path = unquote(self.path.split("?")[0])
            for prefix in ("/api/endpoints/", "/api/tunnels/"):
                if path.startswith(prefix) and agent.delete(path[len(prefix) :]):
                    self._send(204)
                    return
            self._send(404, {"error_code": 100, "msg": "tunnel not found"})

    return Handler


def _option(args: list[str], name: str) -> str | None:
    if name in args:
        i = args.index(name)
        if i + 1 < len(args):
            return args[i + 1]
    return None


def main(argv: list[str]) -> int:
    if "--version" in argv or argv[:1] == ["version"]:
        print(f"ngrok version {VERSION}")
        return 0
    if argv[:2] == ["config", "add-authtoken"]:
        print("Authtoken saved to configuration file: fake")
        return 0
    if argv[:1] != ["start"]:
        print(f"fake ngrok: unsupported command {argv!r}", file=sys.stderr)
        return 2
    if os.environ.get("FAKE_NGROK_MODE") == "crash":
        print("fake ngrok: crashed on purpose", file=sys.stderr)
        return 2
    token = _option(argv, "--authtoken")
    agent = _Agent(argv, token, _option(argv, "--region"))
    agent.save()
    _log("info", "no configuration paths supplied")
    if not token:
        _log(
            "eror",
            "failed to reconnect session",
            obj="tunnels.session",
            err="authentication failed: Usage of ngrok requires a verified account and "
            "authtoken.\\r\\n\\r\\nERR_NGROK_4018\\r\\n",
        )
        return 1
    if token.startswith("bad"):
        _log(
            "eror",
            "failed to reconnect session",
            obj="tunnels.session",
            err="authentication failed: The authtoken you specified does not look like a "
            f"proper ngrok tunnel authtoken.\\nYour authtoken: {token}\\nInstructions to "
            "install your authtoken are on your ngrok dashboard.\\r\\n\\r\\nERR_NGROK_105\\r\\n",
        )
        return 1
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(agent))
    server.daemon_threads = True
    addr = f"127.0.0.1:{server.server_address[1]}"
    _log("info", "starting web service", obj="web", addr=addr, allow_hosts="[]")
    _log("info", "client session established", obj="tunnels.session")
    _log("info", "tunnel session started", obj="tunnels.session")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
