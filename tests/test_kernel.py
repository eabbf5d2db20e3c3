"""InterfaceManager in a real Jupyter kernel (ipykernel over ZMQ, driven like a front end).

One kernel per test module (per xdist worker); every test builds its own managers in it on
free loopback ports. The kernel's Graph API base URL is a closed loopback port and pyngrok
runs ``tests/fake_ngrok.py``: nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.jupyter_kernel import Kernel, fake_ngrok_env, process_gone

PRELUDE = """
import asyncio, json, os, socket
import httpx
from wa_agent import InterfaceManager, WhatsAppInterface
from wa_agent.signature import SignatureVerifier
from wa_agent.testing import webhooks

async def echo(request):
    return "echo: " + request.text

def make_manager(**options):
    options.setdefault("verify_token", "vt-kernel")
    options.setdefault("app_secret", "app-secret")
    options.setdefault("access_token", "tok")
    options.setdefault("phone_number_id", "100000000000001")
    options.setdefault("base_url", "http://127.0.0.1:9")  # never the real Graph API
    return InterfaceManager([WhatsAppInterface(echo, **options)])

def port_of(url):
    return int(url.rsplit(":", 1)[1])
"""


@pytest.fixture(scope="module")
def ngrok_state(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], Path]:
    return fake_ngrok_env(tmp_path_factory.mktemp("ngrok"))


@pytest.fixture(scope="module")
def kernel(
    tmp_path_factory: pytest.TempPathFactory, ngrok_state: tuple[dict[str, str], Path]
) -> Iterator[Kernel]:
    """A kernel running this venv's Python, with the fake ngrok agent configured."""
    env, _state = ngrok_state
    k = Kernel(tmp_path_factory.mktemp("kernel"), env=env)
    try:
        k.check(PRELUDE)
        yield k
    finally:
        try:
            if k.is_alive():
                k.run("from pyngrok import ngrok as _n\n_n.kill()", timeout=10)
        finally:
            k.shutdown()


def _get(url: str) -> httpx.Response:
    """A request from outside the kernel (this test process) while no cell runs."""
    return httpx.get(url, timeout=10)


def _refused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _poll(kernel: Kernel, code: str, done: Callable[[str], bool], timeout: float = 15) -> str:
    """Run a tiny cell until ``done(stdout)``; the kernel is idle between the polls."""
    deadline = time.monotonic() + timeout
    while True:
        out = kernel.check(code)
        if done(out) or time.monotonic() > deadline:
            return out
        time.sleep(0.05)


def test_start_returns_once_listening_and_keeps_serving(kernel: Kernel) -> None:
    """`await manager.start()` returns the URL of a listening server; the cell finishes while
    the server keeps serving: a later cell's async POST gets 200, and so does a request from
    outside while the kernel is idle. stop() closes the port."""
    out = kernel.check("""
m1 = make_manager()
url1 = await m1.start(port=0)
print(json.dumps({"url": url1, "running": m1.url == url1}))
""")
    info = json.loads(out)
    assert info["running"] is True
    url = info["url"]
    out = kernel.check("""
body = webhooks.encode(webhooks.envelope(statuses=[
    webhooks.status_item("wamid.kernel-1", "delivered", "15551230001")]))
async with httpx.AsyncClient() as client:
    response = await client.post(url1 + "/whatsapp/webhook", content=body, headers={
        "content-type": "application/json",
        "x-hub-signature-256": SignatureVerifier("app-secret").sign(body)})
print(response.status_code)
""")
    assert out.strip() == "200"
    assert _get(url + "/health").json()["status"] == "ok"
    assert kernel.check("await m1.stop()\nprint(m1.url)").strip() == "None"
    assert _refused(int(url.rsplit(":", 1)[1]))


def test_serve_in_a_cell_returns_at_once_and_serves_in_the_background(kernel: Kernel) -> None:
    """manager.serve() in a (sync) cell returns a pending task instead of blocking; the
    server comes up after the cell ended and answers while the kernel is idle."""
    out = kernel.check("""
m2 = make_manager()
t2 = m2.serve(host="127.0.0.1", port=0)
print(type(t2).__name__, t2.done(), m2.url)
""")
    assert out.split() == ["Task", "False", "None"]
    url = _poll(kernel, "print(m2.url)", lambda s: s.strip() != "None").strip()
    assert url.startswith("http://127.0.0.1:")
    assert _get(url + "/health").status_code == 200
    kernel.check("assert (await t2) == m2.url\nawait m2.stop()")
    assert _refused(int(url.rsplit(":", 1)[1]))


def test_stop_frees_the_port_and_start_works_again_on_it(kernel: Kernel) -> None:
    """start/stop/start on the same port: stop closes the listener at once (connection
    refused) and the second start binds the very same port."""
    out = kernel.check("""
m3 = make_manager()
first = await m3.start(port=0)
await m3.stop()
with socket.socket() as s:
    refused = s.connect_ex(("127.0.0.1", port_of(first))) != 0
second = await m3.start(port=port_of(first))
print(json.dumps({"refused": refused, "same": second == first, "url": second}))
""")
    info = json.loads(out)
    assert info == {"refused": True, "same": True, "url": info["url"]}
    assert _get(info["url"] + "/health").status_code == 200
    kernel.check("await m3.stop()")
    assert _refused(int(info["url"].rsplit(":", 1)[1]))


def test_port_clash_raises_oserror_in_the_cell_and_the_kernel_lives(kernel: Kernel) -> None:
    """A second server on a taken port: OSError (EADDRINUSE) with a hint, in the cell; the
    kernel and the first server keep running; serve() reports the same error on its task."""
    url = kernel.check("m4 = make_manager()\nprint(await m4.start(port=0))").strip()
    result = kernel.run("clash = make_manager()\nawait clash.start(port=port_of(m4.url))")
    assert result.error is not None and result.error["ename"] == "OSError"
    assert "Address already in use" in result.error["evalue"]
    assert "port=0" in result.error["evalue"]
    assert kernel.is_alive()
    out = kernel.check("""
t4 = clash.serve(host="127.0.0.1", port=port_of(m4.url))
await asyncio.wait([t4])
print(type(t4.exception()).__name__, m4.url, clash.url)
""")
    assert out.split() == ["OSError", url, "None"]
    assert _get(url + "/health").status_code == 200
    kernel.check("await m4.stop()")


def test_startup_failure_raises_the_configuration_error_and_frees_the_port(
    kernel: Kernel,
) -> None:
    """No WHATSAPP_ACCESS_TOKEN/PHONE_NUMBER_ID: start() raises ConfigurationError naming
    them (not a bare exit code), the kernel lives and nothing is left listening."""
    result = kernel.run("""
with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    free_port = probe.getsockname()[1]
bad = InterfaceManager([WhatsAppInterface(echo, verify_token="vt")])
await bad.start(port=free_port)
""")
    assert result.error is not None
    assert result.error["ename"] == "ConfigurationError"
    assert "WHATSAPP_ACCESS_TOKEN" in result.error["evalue"]
    assert "WHATSAPP_PHONE_NUMBER_ID" in result.error["evalue"]
    assert kernel.is_alive()
    out = kernel.check("""
with socket.socket() as s:
    s.bind(("127.0.0.1", free_port))  # the failed server let go of the port
print(bad.url)
""")
    assert out.strip() == "None"


def test_interrupting_the_kernel_never_stops_the_server(kernel: Kernel) -> None:
    """Started with serve() from a sync cell (where uvicorn's own signal handling would
    bite): "Interrupt kernel" while idle leaves the server up; an interrupt during a busy
    sync cell raises KeyboardInterrupt there, one during an awaiting cell ends that cell,
    and the server answers after each."""
    kernel.check("m6 = make_manager()\nt6 = m6.serve(host='127.0.0.1', port=0)")
    url = _poll(kernel, "print(m6.url)", lambda s: s.strip() != "None").strip()
    kernel.interrupt()
    assert kernel.check("print(m6.url)").strip() == url  # the SIGINT was handled by now
    assert _get(url + "/health").status_code == 200

    busy = kernel.submit("import time\nfor _ in range(1200):\n    time.sleep(0.05)")
    kernel.wait_busy(busy)
    time.sleep(0.5)  # let the cell start running (an interrupt before that can be lost)
    kernel.interrupt()
    result = kernel.collect(busy, timeout=30)
    assert result.error is not None and result.error["ename"] == "KeyboardInterrupt"
    assert _get(url + "/health").status_code == 200

    waiting = kernel.submit("await asyncio.sleep(60)")
    kernel.wait_busy(waiting)
    time.sleep(0.5)  # let the cell reach its await (an interrupt before that can be lost)
    kernel.interrupt()
    result = kernel.collect(waiting, timeout=30)
    assert result.error is not None
    assert kernel.check("print(m6.url, t6.done())").split() == [url, "True"]
    assert _get(url + "/health").status_code == 200
    kernel.check("await m6.stop()")
    assert kernel.is_alive()


def _ngrok(state_file: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(state_file.read_text())
    return data


def test_tunnel_prints_the_webhook_url_and_verify_token(
    kernel: Kernel, ngrok_state: tuple[dict[str, str], Path]
) -> None:
    """`await manager.atunnel()` (pyngrok driving the fake agent) prints the public callback
    URL and the verify token and returns the URL; Meta's verification GET reaches the
    kernel's server through it; stop() closes the tunnel and the agent."""
    _env, state_file = ngrok_state
    out = kernel.check("""
m7 = make_manager(verify_token="vt-tunnel-7")
await m7.start(port=0)
hook7 = await m7.atunnel()
print("RESULT", hook7)
""")
    hook = out.split("RESULT", 1)[1].strip()
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/whatsapp/webhook", hook)
    assert f"Callback URL:  {hook}" in out
    assert "Verify token:  vt-tunnel-7" in out
    state = _ngrok(state_file)
    assert state["authtoken"] == "tok-good"
    response = _get(
        f"{hook}?hub.mode=subscribe&hub.verify_token=vt-tunnel-7&hub.challenge=1158201444"
    )
    assert (response.status_code, response.text) == (200, "1158201444")
    kernel.check("await m7.stop()")
    state = _ngrok(state_file)
    assert state["endpoints"] == [] and len(state["deleted"]) >= 1
    assert process_gone(state["pid"])


def test_sync_tunnel_schedules_on_the_loop_and_errors_stay_in_the_cell(
    kernel: Kernel, ngrok_state: tuple[dict[str, str], Path]
) -> None:
    """manager.tunnel() in a cell returns a pending task at once (the loop keeps serving);
    the instructions are printed later, under that cell. A rejected ngrok token raises
    TunnelError in the cell and the kernel and server live on."""
    _env, state_file = ngrok_state
    cell = kernel.submit("""
m8 = make_manager(verify_token="vt-sync-8")
await m8.start(port=0)
t8 = m8.tunnel()
print(type(t8).__name__, t8.done())
""")
    result = kernel.collect(cell)
    assert result.ok, result.describe()
    assert result.stdout.split() == ["Task", "False"]
    hook = kernel.check("print(await t8)").strip()
    kernel.drain_background(0.2)
    late = "".join(
        m["content"].get("text", "")
        for m in kernel.background
        if m["msg_type"] == "stream" and m["parent_header"].get("msg_id") == cell
    )
    assert f"Callback URL:  {hook}" in late and "Verify token:  vt-sync-8" in late
    kernel.check("await m8.stop()")
    assert _ngrok(state_file)["endpoints"] == []

    result = kernel.run("""
m9 = make_manager()
await m9.start(port=0)
await m9.atunnel(authtoken="bad-token-9")
""")
    assert result.error is not None and result.error["ename"] == "TunnelError"
    assert "rejected the auth token" in result.error["evalue"]
    assert "bad-token-9" not in result.error["evalue"]
    url = kernel.check("print(m9.url)").strip()
    assert _get(url + "/health").status_code == 200
    kernel.check("await m9.stop()")


def test_widgets_update_while_no_cell_runs(kernel: Kernel) -> None:
    """A message sent with the phone's Send button is answered by background tasks after the
    cell finished: the conversations widget's and the phone's comm updates carrying the reply
    and the read ticks reach the front end while the kernel is idle."""
    cell = kernel.submit("""
from wa_agent.testing import Simulator
m10 = make_manager()
sim10 = Simulator(m10)
await sim10.start()
view10 = m10.widget()
phone10 = sim10.phone("15551239999", "Idle Tester")
display(view10, phone10)
phone10.text.value = "ping <b>while idle</b>"
phone10.send_button.click()
print(phone10.pending)
""")
    result = kernel.collect(cell)
    assert result.ok, result.describe()
    assert result.stdout.strip() == "1"
    assert any("application/vnd.jupyter.widget-view+json" in o["data"] for o in result.outputs)

    def updates() -> list[str]:
        return [
            str(m["content"]["data"]["state"].get("value", ""))
            for m in kernel.background
            if m["msg_type"] == "comm_msg"
            and m["content"]["data"].get("method") == "update"
            and m["parent_header"].get("msg_id") == cell
        ]

    deadline = time.monotonic() + 15
    reply = "echo: ping &lt;b&gt;while idle&lt;/b&gt;"
    while time.monotonic() < deadline:
        kernel.drain_background(0.1)
        seen = updates()
        rows = [v for v in seen if 'class="wa-row' in v and reply in v]
        if any("wa-tick-read" in v for v in rows) and any(
            "wa-phone-msgs" in v and reply in v for v in seen
        ):
            break
    else:
        pytest.fail(f"no live update with the reply while idle; got {updates()[-3:]}")
    assert not any("<b>while idle" in v for v in updates())
    out = kernel.check("""
await sim10.stop()
print(json.dumps(phone10.transcript()))
""")
    transcript = json.loads(out)
    assert [(m["from"], m["text"]) for m in transcript] == [
        ("me", "ping <b>while idle</b>"),
        ("bot", "echo: ping <b>while idle</b>"),
    ]
