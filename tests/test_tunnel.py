"""wa_agent.tunnel against a fake ngrok agent: pyngrok's real code path, offline, on loopback."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fake_ngrok import write_launcher
from wa_agent.exceptions import WAAgentError
from wa_agent.secret import Secret
from wa_agent.server import BackgroundServer
from wa_agent.tunnel import (
    Tunnel,
    TunnelError,
    aopen_tunnel,
    open_tunnel,
    print_dashboard_instructions,
)


@dataclass
class FakeNgrok:
    path: Path
    config: Path
    state_file: Path

    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.state_file.read_text())
        return data

    def kwargs(self) -> dict[str, Any]:
        return {"ngrok_path": self.path, "config_path": self.config}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0): look at its state
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _monitor_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if "_monitor_process" in t.name]


def _wait_until(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


def _make(tmp_path: Path, mode: str = "ok") -> FakeNgrok:
    state = tmp_path / "state.json"
    return FakeNgrok(
        write_launcher(tmp_path, mode=mode, state_file=state), tmp_path / "ngrok.yml", state
    )


@pytest.fixture
def fake_ngrok(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeNgrok]:
    """A fake agent in tmp_path; never lets pyngrok reach the download path, and makes sure no
    agent process outlives the test."""
    monkeypatch.delenv("NGROK_AUTHTOKEN", raising=False)
    monkeypatch.setenv("PYNGROK_NGROK_PATH", str(tmp_path / "ngrok"))
    fake = _make(tmp_path)
    yield fake
    from pyngrok import conf, ngrok

    ngrok.kill(conf.PyngrokConfig(ngrok_path=str(fake.path), config_path=str(fake.config)))
    assert _wait_until(lambda: not _monitor_threads(), 5), "pyngrok monitor thread left behind"


async def _echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            await send({"type": msg["type"] + ".complete"})
            if msg["type"] == "lifespan.shutdown":
                return
    body = f"{scope['method']} {scope['path']}".encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def test_tunnel_forwards_to_local_server_and_closes(fake_ngrok: FakeNgrok) -> None:
    """aopen_tunnel starts the agent with the token and region, the public URL reaches the
    local server, and aclose removes the endpoint and stops the agent process."""
    async with BackgroundServer(_echo_app) as server:
        tunnel = await aopen_tunnel(
            server.port, authtoken=Secret("tok-good"), region="eu", **fake_ngrok.kwargs()
        )
        try:
            state = fake_ngrok.state()
            assert state["authtoken"] == "tok-good" and state["region"] == "eu"
            assert tunnel.local_url == f"http://127.0.0.1:{server.port}"
            assert [e["upstream"]["url"] for e in state["endpoints"]] == [tunnel.local_url]
            assert tunnel.public_url.startswith("http://127.0.0.1:")
            assert "tok-good" not in repr(tunnel)
            async with httpx.AsyncClient() as client:
                resp = await client.post(tunnel.webhook_url("/whatsapp"), content=b"{}")
            assert resp.text == "POST /whatsapp/webhook"
        finally:
            await tunnel.aclose()
        assert tunnel.closed
        state = fake_ngrok.state()
        assert state["endpoints"] == [] and len(state["deleted"]) == 1
        assert _wait_until(lambda: not _alive(state["pid"]))
        await tunnel.aclose()  # idempotent


def test_two_tunnels_share_one_agent_until_the_last_closes(fake_ngrok: FakeNgrok) -> None:
    """Two tunnels on one agent: closing the first keeps the agent (and the second tunnel)
    alive; closing the second stops it."""
    first = open_tunnel(8001, authtoken="t", **fake_ngrok.kwargs())
    second = open_tunnel(8002, authtoken="t", **fake_ngrok.kwargs())
    pid = fake_ngrok.state()["pid"]
    assert first.public_url != second.public_url
    first.close()
    assert _alive(pid)
    assert [e["public_url"] for e in fake_ngrok.state()["endpoints"]] == [second.public_url]
    with second:
        pass
    assert second.closed
    assert _wait_until(lambda: not _alive(pid))


def test_webhook_url_shapes(fake_ngrok: FakeNgrok) -> None:
    """webhook_url joins the public URL, the interface prefix and /webhook with single slashes."""
    with open_tunnel(9000, authtoken="t", **fake_ngrok.kwargs()) as tunnel:
        base = tunnel.public_url
        assert tunnel.webhook_url() == f"{base}/whatsapp/webhook"
        assert tunnel.webhook_url("/bot/") == f"{base}/bot/webhook"
        assert tunnel.webhook_url("shop/wa") == f"{base}/shop/wa/webhook"
        assert tunnel.webhook_url("") == f"{base}/webhook"
        assert tunnel.webhook_url("/") == f"{base}/webhook"


def test_token_comes_from_environment(
    fake_ngrok: FakeNgrok, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without authtoken=, NGROK_AUTHTOKEN is passed to the agent."""
    monkeypatch.setenv("NGROK_AUTHTOKEN", "from-env")
    with open_tunnel(9000, **fake_ngrok.kwargs()):
        assert fake_ngrok.state()["authtoken"] == "from-env"


def test_missing_token_is_a_clear_error(fake_ngrok: FakeNgrok) -> None:
    """No token anywhere: TunnelError naming NGROK_AUTHTOKEN, and the agent is never started."""
    with pytest.raises(TunnelError, match="NGROK_AUTHTOKEN") as info:
        open_tunnel(9000, **fake_ngrok.kwargs())
    assert isinstance(info.value, WAAgentError)
    assert not fake_ngrok.state_file.exists()


def test_rejected_token_is_a_clear_error_without_the_token(
    fake_ngrok: FakeNgrok, caplog: pytest.LogCaptureFixture
) -> None:
    """ngrok rejecting the token (it echoes it) gives TunnelError with ngrok's code; the token
    appears neither in the exception nor in any log record, and no agent is left running."""
    token = "bad-token-5ecret"
    with (
        caplog.at_level("DEBUG"),
        pytest.raises(TunnelError, match="rejected the auth token") as info,
    ):
        open_tunnel(9000, authtoken=token, **fake_ngrok.kwargs())
    assert info.value.ngrok_error_code == "ERR_NGROK_105"
    assert token not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    messages = [r.getMessage() for r in caplog.records]
    assert any("ERR_NGROK_105" in m for m in messages)  # pyngrok did log ngrok's line...
    assert not any(token in m for m in messages)  # ...with the token masked
    pid = fake_ngrok.state()["pid"]
    assert _wait_until(lambda: not _alive(pid))


def test_agent_that_fails_to_start_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent that exits at once gives TunnelError saying it could not start."""
    monkeypatch.delenv("NGROK_AUTHTOKEN", raising=False)
    fake = _make(tmp_path, mode="crash")
    with pytest.raises(TunnelError, match="could not start"):
        open_tunnel(9000, authtoken="t", **fake.kwargs())


def test_missing_agent_binary_is_an_error_not_a_download(tmp_path: Path) -> None:
    """An explicit ngrok_path that does not exist is refused before pyngrok could download."""
    with pytest.raises(TunnelError, match="no ngrok agent"):
        open_tunnel(
            9000, authtoken="t", ngrok_path=tmp_path / "nope", config_path=tmp_path / "c.yml"
        )
    assert not (tmp_path / "c.yml").exists()


def test_missing_pyngrok_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without pyngrok, open_tunnel raises a TunnelError that is also an ImportError and says
    which extra to install."""
    monkeypatch.setitem(sys.modules, "pyngrok", None)
    with pytest.raises(TunnelError, match=r"pip install 'wa-agent-host\[tunnel\]'") as info:
        open_tunnel(9000, authtoken="t")
    assert isinstance(info.value, ImportError)


async def test_cancelled_open_leaves_nothing_behind(fake_ngrok: FakeNgrok) -> None:
    """Cancelling aopen_tunnel while the agent starts: once the tunnel is up it is closed and
    the agent process stopped."""
    task = asyncio.create_task(aopen_tunnel(9000, authtoken="t", **fake_ngrok.kwargs()))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    def agent_gone() -> bool:
        if not fake_ngrok.state_file.exists():
            return False
        state = fake_ngrok.state()
        return bool(state["deleted"]) and not _alive(state["pid"])

    deadline = asyncio.get_running_loop().time() + 10
    while not agent_gone() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
    assert agent_gone()


def test_dashboard_instructions_show_url_and_token() -> None:
    """The instructions contain the full Callback URL and the verify token in clear (the user
    must paste both), are printed and returned."""
    out = io.StringIO()
    url = "https://abc-123.ngrok-free.app/whatsapp/webhook"
    text = print_dashboard_instructions(url, Secret("my-verify-token"), file=out)
    assert out.getvalue() == text + "\n"
    assert f"Callback URL:  {url}" in text
    assert "Verify token:  my-verify-token" in text
    assert "Note:" not in text  # an https URL needs no warning
    plain = print_dashboard_instructions("http://127.0.0.1:5/webhook", "v", file=io.StringIO())
    assert plain.splitlines()[-1].startswith("Note:") and "https://" in plain.splitlines()[-1]
    missing = print_dashboard_instructions(url, None, file=io.StringIO())
    assert "WHATSAPP_VERIFY_TOKEN" in missing


def test_tunnel_repr_hides_nothing_secret(fake_ngrok: FakeNgrok) -> None:
    """A Tunnel's repr shows its URLs and state, never the token."""
    tunnel = open_tunnel(9000, authtoken="sekrit-tok", **fake_ngrok.kwargs())
    assert isinstance(tunnel, Tunnel)
    assert "sekrit-tok" not in repr(tunnel) and "(open)" in repr(tunnel)
    tunnel.close()
    assert "(closed)" in repr(tunnel)
