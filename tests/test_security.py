"""Hardening (issue 10): resource limits, secrets in logs and reprs, the verification
handshake, bearer-token containment and output escaping. Each test names the protection it
checks and fails if that protection is removed."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import io
import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.asgi_driver import call_asgi
from wa_agent import (
    AgentReply,
    AgentRequest,
    ConfigurationError,
    InvalidPayload,
    LLMAgent,
    Media,
    MediaError,
    Message,
    MessageParser,
    Secret,
    WhatsAppAPIError,
    WhatsAppInterface,
)
from wa_agent.asgi import CallbackConsumer, WebhookApp
from wa_agent.cli import strip_control
from wa_agent.parser import MAX_DEPTH, _too_deep
from wa_agent.sender import RetryPolicy, Sender
from wa_agent.server import BackgroundServer
from wa_agent.signature import SignatureVerifier
from wa_agent.terminal import run_demo
from wa_agent.testing import Simulator, webhooks
from wa_agent.testing.emulator import CloudAPIEmulator

PNID = "100000000000001"

# --------------------------------------------------------------------------------------
# JSON nesting depth
# --------------------------------------------------------------------------------------


def _depth(value: object) -> int:
    best, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            best = max(best, level)
            stack.extend(
                (child, level + 1) for child in (item.values() if isinstance(item, dict) else item)
            )
    return best


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab,:\u00e4'),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(alphabet='[]{}"\\a', max_size=4), inner, max_size=4)
    ),
    max_leaves=60,
)


@settings(max_examples=300, deadline=None)
@given(_json, st.integers(0, 12), st.booleans())
def test_depth_check_agrees_with_the_parsed_depth(
    value: object, limit: int, ascii_only: bool
) -> None:
    """The raw-text depth check gives the depth of the parsed value, whatever brackets,
    quotes and backslashes the strings hold (so a user typing ``[[[[`` is never refused)."""
    text = json.dumps(value, ensure_ascii=ascii_only)
    expected = _depth(value) > limit
    assert _too_deep(text, limit) is expected
    assert _too_deep(text.encode(), limit) is expected


def test_deep_bodies_are_refused_before_json_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """A body nested deeper than ``max_depth`` is InvalidPayload without ``json.loads``
    running on it; a real batch of 1000 messages and text full of brackets still parse."""
    calls: list[object] = []
    real_loads = json.loads

    def spy(text: str | bytes, *args: Any, **kwargs: Any) -> Any:
        calls.append(text)
        return real_loads(text, *args, **kwargs)

    monkeypatch.setattr(json, "loads", spy)  # the parser's json module is this one
    parser = MessageParser()
    for body in (
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1),
        b"[" * 40 + b"[]" * 10 + b"[" * 30 + b"]" * 70,
    ):  # no run of 65 openers
        with pytest.raises(InvalidPayload, match="nests too deeply"):
            parser.parse(body)
    assert calls == []
    items = [
        webhooks.text_message(f"1555123{i:04d}", "[[[[ {{{{ " * 20 + '\\" \\\\')
        for i in range(1000)
    ]
    batch = webhooks.encode(webhooks.envelope(messages=items))
    assert len(parser.parse(batch)) == 1000
    assert MessageParser(max_depth=5).loads(b"[[[[[1]]]]]") == [[[[[1]]]]]
    with pytest.raises(InvalidPayload):
        MessageParser(max_depth=4).loads(b"[[[[[1]]]]]")


def test_deep_form_response_is_dropped_not_parsed() -> None:
    """An interactive ``nfm_reply`` whose ``response_json`` nests absurdly deep keeps the
    message (response ``None``) instead of handing a 500-level structure on."""
    deep = '{"a":' * 500 + "1" + "}" * 500
    item = webhooks.text_message("15551230001", "x")
    item.pop("text")
    item["type"] = "interactive"
    item["interactive"] = {
        "type": "nfm_reply",
        "nfm_reply": {"name": "flow", "body": "Sent", "response_json": deep},
    }
    events = MessageParser().parse(webhooks.encode(webhooks.envelope(messages=[item])))
    assert len(events) == 1
    message = events[0]
    assert isinstance(message, Message) and message.interactive is not None
    assert message.interactive.response is None


def test_deep_body_cannot_crash_the_process_with_a_raised_recursion_limit() -> None:
    """With ``sys.setrecursionlimit`` raised (notebooks do this), ``json.loads`` of a
    300 KB ``[[[[...`` overflows the C stack and kills the process (SIGSEGV). The parser
    refuses it first, so the process lives and gets an InvalidPayload."""
    code = textwrap.dedent("""
        import sys
        from wa_agent import InvalidPayload, Message, MessageParser
        sys.setrecursionlimit(10**6)
        try:
            MessageParser().parse(b"[" * 150_000 + b"]" * 150_000)
        except InvalidPayload as exc:
            print("refused:", exc.reason)
    """)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, (result.returncode, result.stderr[-500:])
    assert "refused: body nests too deeply" in result.stdout


# --------------------------------------------------------------------------------------
# Verification handshake and signature settings
# --------------------------------------------------------------------------------------

VERIFY = "vt-9f8e7d6c5b4a"


def _query(**params: str) -> bytes:
    return urlencode(params).encode()


async def test_handshake_requires_mode_subscribe() -> None:
    """The right token with any ``hub.mode`` other than ``subscribe`` is refused (403);
    with ``subscribe`` the challenge is echoed as nosniff text/plain, so a reflected
    challenge can never render as HTML."""
    app = WebhookApp(CallbackConsumer(_noop), verify_token=VERIFY, app_secret="s")
    for mode in ("unsubscribe", "Subscribe", "subscribe ", "", "hub_mode"):
        ex = await call_asgi(
            app,
            method="GET",
            query=_query(**{"hub.mode": mode, "hub.verify_token": VERIFY, "hub.challenge": "1"}),
        )
        assert ex.status == 403, mode
    ex = await call_asgi(
        app,
        method="GET",
        query=_query(
            **{"hub.mode": "subscribe", "hub.verify_token": VERIFY, "hub.challenge": "<b>x</b>"}
        ),
    )
    assert ex.status == 200 and ex.body == b"<b>x</b>"
    assert ex.header(
        b"content-type",
    ).startswith(b"text/plain")  # type: ignore[union-attr]
    assert ex.header(b"x-content-type-options") == b"nosniff"


async def test_verify_token_is_compared_in_constant_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The handshake compares the token with ``hmac.compare_digest`` (checked by structure:
    the comparison goes through it, for a right and a wrong token alike)."""
    seen: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # the module wa_agent.asgi uses
    app = WebhookApp(CallbackConsumer(_noop), verify_token=VERIFY)
    for token, status in ((VERIFY, 200), (VERIFY[:-1] + "X", 403), ("", 403)):
        seen.clear()
        ex = await call_asgi(
            app,
            method="GET",
            query=_query(
                **{"hub.mode": "subscribe", "hub.verify_token": token, "hub.challenge": "7"}
            ),
        )
        assert ex.status == status
        assert (VERIFY.encode(), token.encode()) in seen


async def _noop(message: Message) -> None:
    return None


async def test_unsigned_app_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    """A WebhookApp without an app secret logs one loud warning, not one per request; with
    a secret it logs none."""
    caplog.set_level(logging.WARNING, logger="wa_agent")
    body = webhooks.encode(
        webhooks.envelope(statuses=[webhooks.status_item("wamid.1", "read", "1555")])
    )
    for secret in (None, "s"):
        caplog.clear()
        app = WebhookApp(CallbackConsumer(_noop), app_secret=secret)
        for _ in range(3):
            await call_asgi(app, chunks=[body])
        warnings = [r for r in caplog.records if "NO app secret" in r.getMessage()]
        assert len(warnings) == (1 if secret is None else 0)


async def test_interface_without_secret_warns_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A WhatsAppInterface with no app secret warns exactly once over start, stop, restart
    and several webhooks (its own warning; the app it builds stays quiet)."""
    monkeypatch.delenv("WHATSAPP_APP_SECRET", raising=False)
    caplog.set_level(logging.WARNING, logger="wa_agent")
    interface = WhatsAppInterface(
        lambda r: "ok", verify_token=VERIFY, sender=_stub_sender(), phone_number_id=PNID
    )
    app = interface.attach_routes()
    body = webhooks.encode(
        webhooks.envelope(statuses=[webhooks.status_item("wamid.1", "read", "1555")])
    )
    await interface.start()
    for _ in range(3):
        ex = await call_asgi(app, chunks=[body])
        assert ex.status == 200
    await interface.aclose()
    await interface.start()
    await interface.aclose()
    warnings = [r for r in caplog.records if "NO app secret" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING


def test_require_signature_refuses_to_start_without_a_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``require_signature=True`` with no app secret (argument or environment) raises
    ConfigurationError at construction; with one it is accepted."""
    monkeypatch.delenv("WHATSAPP_APP_SECRET", raising=False)
    with pytest.raises(ConfigurationError, match="require_signature"):
        WhatsAppInterface(lambda r: "ok", require_signature=True, sender=_stub_sender())
    with pytest.raises(ConfigurationError):
        WhatsAppInterface(
            lambda r: "ok", require_signature=True, app_secret="", sender=_stub_sender()
        )
    WhatsAppInterface(lambda r: "ok", require_signature=True, app_secret="s", sender=_stub_sender())
    monkeypatch.setenv("WHATSAPP_APP_SECRET", "from-env")
    interface = WhatsAppInterface(lambda r: "ok", require_signature=True, sender=_stub_sender())
    assert interface.attach_routes().signature_required


def _stub_sender() -> Any:
    return _StubSender()


class _StubSender:
    """Stands in for a Sender where no reply is ever sent."""

    phone_number_id = PNID

    async def aclose(self) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        async def refuse(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError(f"unexpected Sender.{name} call")

        return refuse


def test_access_log_never_shows_the_verify_token() -> None:
    """Served the production way (``InterfaceManager.serve()`` → ``uvicorn.run`` with its
    own logging config and the access log on), the handshake's access-log line shows
    ``hub.verify_token=**********``, never the token."""
    code = textwrap.dedent(f"""
        import asyncio, threading, time, urllib.request
        from wa_agent import InterfaceManager, WhatsAppInterface
        iface = WhatsAppInterface(lambda r: "ok", verify_token={VERIFY!r}, app_secret="s",
                                  access_token="t", phone_number_id="1")
        manager = InterfaceManager([iface])
        import socket
        s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
        def hit():
            url = (f"http://127.0.0.1:{{port}}/whatsapp/webhook?hub.mode=subscribe"
                   f"&hub.verify_token={VERIFY}&hub.challenge=4242")
            for _ in range(200):
                try:
                    print("BODY", urllib.request.urlopen(url).read().decode(), flush=True)
                    break
                except OSError:
                    time.sleep(0.05)
            import os, signal
            os.kill(os.getpid(), signal.SIGINT)
        threading.Thread(target=hit, daemon=True).start()
        manager.serve(host="127.0.0.1", port=port)
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHATSAPP_")}
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    output = result.stdout + result.stderr
    assert "BODY 4242" in output, output[-2000:]
    assert "hub.verify_token=**********" in output, output[-2000:]
    assert VERIFY not in output


# --------------------------------------------------------------------------------------
# Bearer-token containment
# --------------------------------------------------------------------------------------

ACCESS = "at-5e6f7a8b9c0d"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(100)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://graph.facebook.com@evil.test/", False),  # userinfo: the host is evil.test
        ("https://graph.facebook.com:443@evil.test/x", False),
        ("https://graph.facebook.com.evil.test/", False),  # lookalike suffix
        ("https://graph.facebook.com\uff0eevil.test/", False),  # fullwidth dot (IDNA)
        ("https://graph.faceb\u043eok.com/", False),  # Cyrillic o (punycode)
        ("https://evil.test/graph.facebook.com", False),
        ("https://evil.test?h=.facebook.com", False),
        ("https://evil.test#@graph.facebook.com", False),
        ("https://evil-fbcdn.net/x", False),
        ("https://lookaside.fbsbx.com%2e.evil.test/", False),
        ("https://lookaside.fbsbx.com\x00.evil.test/", False),  # unparseable: refused
        ("http://127.0.0.1:9@evil.test/", False),  # userinfo made of the base origin
        ("http://localhost:9/", False),  # same machine, other name: not the base origin
        ("wss://graph.facebook.com/", False),
        ("https://GRAPH.FACEBOOK.COM/v25.0/1", True),
        ("https://graph.facebook.com./v25.0/1", True),
        ("https://a.b.fbcdn.net/x.jpg", True),
        ("HTTP://127.0.0.1:9/x", True),
    ],
)
def test_token_allowed_resists_url_tricks(url: str, allowed: bool) -> None:
    """The token is for the host httpx actually connects to, only if that is a Meta host
    over HTTPS or the base_url origin: userinfo, lookalike, IDNA and port tricks fail."""
    assert Sender(ACCESS, PNID, base_url="http://127.0.0.1:9").token_allowed(url) is allowed


class _Elsewhere:
    """An httpx transport: requests to the emulator's host go to the emulator (in process);
    every other request is recorded and answered 200 with image bytes — nothing leaves the
    process even if a check is missing."""

    def __init__(self, emulator: CloudAPIEmulator) -> None:
        self.emulator = emulator
        self.inner = httpx.ASGITransport(app=emulator)
        self.seen: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "emulator.test" and request.url.port is None:
            return await self.inner.handle_async_request(request)
        self.seen.append(request)
        stored = self.emulator.media.get(request.url.params.get("mid", ""))
        return httpx.Response(
            200, content=stored.data if stored else PNG, headers={"content-type": "image/png"}
        )


ELSEWHERE = [
    "https://graph.facebook.com.evil.test",
    "https://graph.facebook.com@evil.test",
    "https://evil.test",
    "http://emulator.test@evil.test",
    "http://emulator.test:8080",
    "https://emulator.test",
    "http://lookaside.fbsbx.com",  # a Meta host, but in clear text
]


@pytest.mark.parametrize("how", ["media_url", "redirect"])
async def test_media_download_never_sends_the_token_elsewhere(how: str) -> None:
    """A media URL, or a redirect from it, pointing anywhere but Meta/the base URL raises
    MediaError before any request goes there; an allowed Meta host does get the request
    (with the token), which shows the check is what stops the others."""
    emulator = CloudAPIEmulator(access_token=ACCESS)
    router = _Elsewhere(emulator)
    async with httpx.AsyncClient(transport=httpx.MockTransport(router)) as client:
        sender = Sender(
            ACCESS,
            PNID,
            base_url="http://emulator.test",
            client=client,
            retry=RetryPolicy.never(),
            rate_limit=None,
        )
        media_id = emulator.add_media(PNG, "image/png")
        for target in ELSEWHERE:
            emulator.reset_faults()
            if how == "media_url":
                emulator.media_url_base = target
            else:
                emulator.download_redirect = target
            with pytest.raises(MediaError, match="refusing to send the access token"):
                await sender.download_media(media_id)
        assert router.seen == []
        emulator.reset_faults()
        if how == "media_url":
            emulator.media_url_base = "https://lookaside.fbsbx.com"
        else:
            emulator.download_redirect = "https://lookaside.fbsbx.com"
        assert await sender.download_media(media_id) == (PNG, "image/png")
        assert [r.url.host for r in router.seen] == ["lookaside.fbsbx.com"]
        assert router.seen[0].headers["authorization"] == f"Bearer {ACCESS}"
    await emulator.aclose()


async def test_interface_downloads_inbound_media_only_from_allowed_hosts() -> None:
    """End to end on the Simulator: an inbound image whose media URL (or its redirect)
    points to another server on this machine is not fetched; the agent still answers, told
    the image could not be downloaded, and the other server never sees a request."""
    seen: list[dict[str, str]] = []

    async def other_server(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        seen.append({k.decode(): v.decode("latin-1") for k, v in scope["headers"]})
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"image/png")],
            }
        )
        await send({"type": "http.response.body", "body": PNG})

    def agent(request: AgentRequest) -> str:
        return f"{len(request.attachments)} attachment(s); {request.text}; {request.notes}"

    async with (
        BackgroundServer(other_server, lifespan="off") as other,
        Simulator(agent, access_token=ACCESS) as sim,
    ):
        emulator_port = sim.interface.sender.base_url.rsplit(":", 1)[1]  # type: ignore[union-attr]
        user = sim.user("15551230001")
        await user.send_image(PNG, "image/png", caption="cat")
        reply = await user.next_reply()
        assert reply.text is not None and reply.text.startswith("1 attachment(s)")
        for setting, value in (
            ("media_url_base", other.url),
            ("media_url_base", f"http://127.0.0.1:{emulator_port}@127.0.0.1:{other.port}"),
            ("media_url_base", f"http://localhost:{emulator_port}"),
            ("download_redirect", other.url),
        ):
            sim.emulator.reset_faults()
            setattr(sim.emulator, setting, value)
            await user.send_image(PNG, "image/png", caption="cat")
            reply = await user.next_reply()
            assert reply.text is not None and reply.text.startswith("0 attachment(s)"), value
            assert "could not be downloaded" in reply.text
        await sim.settle()
    assert seen == []


# --------------------------------------------------------------------------------------
# Secrets and message bodies in logs, reprs and exceptions (end to end)
# --------------------------------------------------------------------------------------

APP_SECRET = "as-SECRET-3c4d2e1f"
LLM_KEY = "sk-SECRET-7a8b9c0d1e2f"
SECRETS = (VERIFY, APP_SECRET, ACCESS, LLM_KEY)


class _FakeLLM:
    """An OpenAI-compatible chat completions server: echoes the last user text; answers
    500 to "please fail" and, to "rotate", a 401 that quotes the key in full (the worst a
    provider could do)."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.calls += 1
        headers = dict(scope["headers"])
        body: dict[str, Any]
        content = json.loads(raw)["messages"][-1]["content"]
        text = (
            content
            if isinstance(content, str)
            else " ".join(p.get("text", "[image]") for p in content)
        )
        if headers.get(b"authorization") != f"Bearer {LLM_KEY}".encode() or "rotate" in text:
            status, body = (
                401,
                {
                    "error": {
                        "message": f"Incorrect API key provided: {LLM_KEY}.",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": "invalid_api_key",
                    }
                },
            )
        elif "please fail" in text:
            status, body = (
                500,
                {"error": {"message": "upstream exploded", "type": "server_error", "code": None}},
            )
        else:
            status, body = (
                200,
                {
                    "id": "c1",
                    "object": "chat.completion",
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": f"Echo: {text}"},
                        }
                    ],
                },
            )
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": json.dumps(body).encode()})


class _Everything(logging.Handler):
    """Keeps every record, formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        self.lines: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.levelno, self.format(record)))


@contextlib.contextmanager
def _all_loggers_at_debug(handler: logging.Handler) -> Iterator[Callable[[], None]]:
    """Route every logger (root, wa_agent, httpx, httpcore, uvicorn — including those that
    do not propagate) to ``handler`` at DEBUG. Yields a function that re-applies this after
    uvicorn has reconfigured its own loggers."""
    saved: dict[str, tuple[int, bool]] = {}

    def apply() -> None:
        names = [
            "",
            "wa_agent",
            "httpx",
            "httpcore",
            "uvicorn",
            "uvicorn.error",
            "uvicorn.access",
            "uvicorn.asgi",
            "asyncio",
            "hpack",
            *logging.root.manager.loggerDict,
        ]
        for name in names:
            logger = logging.getLogger(name)
            saved.setdefault(name, (logger.level, logger.propagate))
            logger.setLevel(logging.DEBUG)
            if handler not in logger.handlers and (name == "" or not logger.propagate):
                logger.addHandler(handler)

    apply()
    try:
        yield apply
    finally:
        for name, (level, _) in saved.items():
            logger = logging.getLogger(name)
            logger.setLevel(level)
            if handler in logger.handlers:
                logger.removeHandler(handler)


async def _raw_get(url: str, target: str) -> bytes:
    """A GET on a raw socket (no client library that would log the URL itself)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    return data


async def test_no_secret_in_any_log_and_no_message_body_at_info() -> None:
    """A full conversation on the Simulator with an LLMAgent (text, image, an agent failing
    with 500 and with a 401 that quotes the key, an expired WhatsApp token answered 401 by
    the emulator, an unsigned post, the verify handshake over real HTTP with uvicorn's
    access log on), every logger captured at DEBUG: no secret appears at any level, and no
    user text or reply text at INFO or above. Reprs and exception texts are masked too."""
    llm = _FakeLLM()
    handler = _Everything()
    user_texts = [
        "my diary: the cat is called Biscuit",
        "holiday caption Zanzibar",
        "please fail quietly Quokka",
        "rotate the key Pangolin",
        "after the outage Narwhal",
    ]
    raised: list[BaseException] = []
    with _all_loggers_at_debug(handler) as reapply:
        async with BackgroundServer(llm, lifespan="off") as llm_server:
            agent = LLMAgent(
                "openai-compatible/fake",
                api_key=LLM_KEY,
                base_url=llm_server.url + "/v1",
                max_retries=0,
            )
            async with Simulator(
                agent,
                mode="chat",
                app_secret=APP_SECRET,
                verify_token=VERIFY,
                access_token=ACCESS,
                sweep_interval=0.05,
            ) as sim:
                reapply()  # uvicorn reset its loggers when the servers started
                assert sim.bot_url is not None
                handshake = await _raw_get(
                    sim.bot_url,
                    (
                        "/whatsapp/webhook?hub.mode=subscribe"
                        f"&hub.verify_token={VERIFY}&hub.challenge=31337"
                    ),
                )
                assert handshake.startswith(b"HTTP/1.1 200") and handshake.endswith(b"31337")
                user = sim.user("15551230001", "Alice")
                assert (await user.ask(user_texts[0])).text == f"Echo: {user_texts[0]}"
                await user.send_image(PNG, "image/png", caption=user_texts[1])
                assert user_texts[1] in ((await user.next_reply()).text or "")
                apology = await user.ask(user_texts[2])
                assert apology.text == sim.interface.apology
                assert (await user.ask(user_texts[3])).text == sim.interface.apology
                sim.emulator.expire_token()
                await user.send_text(user_texts[4])
                while not any(c.status == 401 for c in sim.emulator.calls):
                    await asyncio.sleep(0.01)
                sim.emulator.set_token(ACCESS)
                assert user_texts[4] in ((await user.next_reply()).text or "")
                unsigned = await sim.deliver(
                    webhooks.envelope(
                        messages=[webhooks.text_message("15551230001", user_texts[0])]
                    ),
                    signed=False,
                )
                assert unsigned[0].status_code == 403
                await sim.settle()
                reprs = [
                    repr(x)
                    for x in (
                        sim.interface,
                        sim.manager,
                        sim.interface.sender,
                        agent,
                        sim.emulator,
                        sim.interface.app_secret,
                        sim.interface.verify_token,
                    )
                ]
                reprs += [str(x) for x in (sim.interface.app_secret, agent)]
                assert sim.interface.sender is not None
                async with Sender(
                    "wrong-" + ACCESS,
                    PNID,
                    retry=RetryPolicy.never(),
                    base_url=sim.interface.sender.base_url,
                ) as wrong:
                    try:
                        await wrong.send_text("15551230001", "x")
                    except WhatsAppAPIError as exc:
                        raised.append(exc)
                sim.emulator.expire_token()
                try:
                    await sim.interface.sender.send_text("15551230001", "x")
                except WhatsAppAPIError as exc:
                    raised.append(exc)
                sim.emulator.set_token(ACCESS)
                try:
                    await agent.answer(AgentRequest(text="rotate", sender="1"))
                except Exception as exc:  # noqa: BLE001 - inspected below
                    raised.append(exc)
            await agent.aclose()
    assert llm.calls >= 5 and len(raised) == 3
    everything = "\n".join(line for _, line in handler.lines)
    assert "hub.verify_token=**********" in everything  # the access log line was captured
    assert any("httpcore" in line for _, line in handler.lines)  # DEBUG really on
    for secret in SECRETS:
        assert secret not in everything, secret
        for text in reprs + [str(e) for e in raised] + [repr(e) for e in raised]:
            assert secret not in text, (secret, text)
    info = "\n".join(line for level, line in handler.lines if level >= logging.INFO)
    for text in user_texts:
        assert text not in info, text
        assert text.split()[-1] not in info, text


# --------------------------------------------------------------------------------------
# Backlog bounds
# --------------------------------------------------------------------------------------


async def test_backlog_bounds_answer_503_and_lose_nothing() -> None:
    """With the agent stuck, a sender's 4th unanswered message (bound 3) is refused with
    503 — the other sender's message in the same body is recorded — and a new sender past
    the overall bound (5) too. Once the agent is free, Meta's redeliveries are accepted and
    every message is answered exactly once."""
    release = asyncio.Event()
    asked: list[str] = []

    async def agent(request: AgentRequest) -> str:
        asked.append(request.text)
        await release.wait()
        return "ok"

    def body(*items: tuple[str, str]) -> bytes:
        return webhooks.encode(
            webhooks.envelope(
                messages=[webhooks.text_message(number, text) for number, text in items]
            )
        )

    async def post(data: bytes) -> tuple[int | None, bytes]:
        ex = await call_asgi(
            app,
            headers=[(b"x-hub-signature-256", SignatureVerifier(APP_SECRET).sign(data).encode())],
            chunks=[data],
        )
        return ex.status, ex.body

    emulator = CloudAPIEmulator(access_token=ACCESS)
    a, b, c, d = "15550000001", "15550000002", "15550000003", "15550000004"
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=emulator), base_url="http://emulator.test"
    ) as client:
        sender = Sender(
            ACCESS, PNID, base_url="http://emulator.test", client=client, rate_limit=None
        )
        interface = WhatsAppInterface(
            agent,
            app_secret=APP_SECRET,
            sender=sender,
            phone_number_id=PNID,
            max_pending_per_sender=3,
            max_pending=5,
        )
        app = interface.attach_routes()
        try:
            for i in range(1, 4):
                assert await post(body((a, f"a{i}"))) == (200, b'{"status":"processing"}')
            mixed = body((a, "a4"), (b, "b1"))
            assert await post(mixed) == (503, b'{"status":"overloaded"}')
            assert await post(body((c, "c1"))) == (200, b'{"status":"processing"}')
            late = body((d, "d1"))
            assert (await post(late))[0] == 503
            assert interface.health()["overloaded"] == 2
            release.set()
            await interface.drain(10)
            assert await post(mixed) == (200, b'{"status":"processing"}')  # b1: duplicate
            assert await post(late) == (200, b'{"status":"processing"}')
            await interface.drain(10)
        finally:
            release.set()
            await interface.aclose()
            await emulator.aclose()
    assert sorted(asked) == ["a1", "a2", "a3", "a4", "b1", "c1", "d1"]
    assert len(emulator.messages) == 7
    assert interface.health()["pending"] == 0


# --------------------------------------------------------------------------------------
# Terminal output: no control sequences
# --------------------------------------------------------------------------------------

_CONTROLS = {chr(c) for c in (*range(0x20), *range(0x7F, 0xA0))} - {"\n", "\t"}


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("\x1b[2J\x1b[H wiped", " wiped"),  # CSI: clear screen, cursor home
        ("\x1b[38;5;196mred\x1b[0m", "red"),
        ("\x1b]0;pwned title\x07after", "after"),  # OSC window title, BEL-terminated
        ("\x1b]8;;https://evil.test\x1b\\link\x1b]8;;\x1b\\", "link"),  # OSC 8 hyperlink
        ("\x1b]52;c;ZXZpbA==\x07x", "x"),  # OSC 52: write the clipboard
        ("\x9b31mC1 CSI", "31mC1 CSI"),  # 8-bit CSI loses its introducer
        ("\x9d0;t\x9c", "0;t"),  # 8-bit OSC ... ST
        ("ring\x07\x07", "ring"),
        ("over\rwrite", "overwrite"),
        ("back\x08\x08space", "backspace"),
        ("\x1bPq#0;2;0;0;0\x1b\\", "q#0;2;0;0;0"),  # DCS (sixel) becomes inert text
        ("\x1b\x1b[31mdouble", "double"),
        ("keep\ttabs\nand lines, ünïcödé ✓", "keep\ttabs\nand lines, ünïcödé ✓"),
    ],
)
def test_strip_control_removes_terminal_sequences(raw: str, clean: str) -> None:
    """ANSI CSI/OSC/DCS sequences, 7- and 8-bit, bell, carriage return and backspace are
    removed; tabs, newlines and any other text stay."""
    assert strip_control(raw) == clean


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.text(max_size=5)
        | st.sampled_from([*sorted(_CONTROLS), "\x1b[", "\x1b]", "\x1b\\", "[31m", "0;t", ";"])
    ).map("".join)
)
def test_strip_control_leaves_no_control_character(text: str) -> None:
    """Whatever the input, the output holds no C0/C1 control character or ESC (only tab
    and newline), so nothing can be interpreted by the terminal; stripping is idempotent."""
    out = strip_control(text)
    assert not _CONTROLS & set(out)
    assert strip_control(out) == out


async def escaping_agent(request: AgentRequest) -> AgentReply:
    """A bot whose replies try every trick on the terminal (used by the demo test)."""
    evil = "\x1b]0;owned\x07\x1b[2J\x9b6n\r\x07"
    return AgentReply(
        text=f"{evil}you said {request.text}{evil}",
        files=[
            Media(
                data=b"%PDF-1.4\n%evil\n",
                filename=f"r{evil}.pdf",
                mime_type="application/pdf",
                caption=f"cap{evil}",
            )
        ],
    )


def test_demo_prints_no_control_sequences() -> None:
    """`wa-agent demo` with a bot replying escape sequences (text, file name, caption) and
    a user typing them: what it prints holds no control character but newlines."""
    stdin = io.StringIO("hi \x1b[31mthere\x1b]0;x\x07\n")
    out = io.StringIO()
    assert run_demo(escaping_agent, stdin=stdin, out=out, timeout=20) == 0
    printed = out.getvalue()
    assert "you said hi there" in printed and "[document: application/pdf" in printed
    assert not _CONTROLS & set(printed), repr(printed)


def test_demo_reply_line_strips_every_field() -> None:
    """The demo's one-line description of a media reply strips type, MIME type, file name
    and caption alike."""
    from wa_agent.terminal import _describe
    from wa_agent.testing.simulator import Reply

    evil = "\x1b]0;t\x07\x1b[2J\x9b"
    reply = Reply(
        type=f"document{evil}",
        text=f"cap{evil}",
        wamid="w",
        reply_to=None,
        media_id=None,
        mime_type=f"application/pdf{evil}",
        filename=f"f{evil}.pdf",
        data=b"x",
        raw={},
    )
    line = _describe(reply)
    assert line == "[document: application/pdf, 1 bytes, f.pdf] cap"
    assert not _CONTROLS & set(line)


# --------------------------------------------------------------------------------------
# Widget: user text never becomes HTML (property; tests/test_widget.py has the examples)
# --------------------------------------------------------------------------------------


class _Markup(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.attrs: set[str] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attrs.update(name for name, _ in attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


_markupish = st.lists(
    st.text(max_size=6)
    | st.sampled_from(
        [
            "<",
            ">",
            "&",
            '"',
            "'",
            "<script>",
            "</div>",
            "<img src=x onerror=alert(1)>",
            "&lt;",
            "&#x3C;",
            "-->",
            "<!--",
            "javascript:",
            "\u2028",
        ]
    )
).map("".join)


@settings(max_examples=150, deadline=None)
@given(text=_markupish, name=_markupish, contact=_markupish)
def test_widget_rows_hold_no_markup_from_users(text: str, name: str, contact: str) -> None:
    """Whatever a user's text, profile name, number, caption or file name (and an error
    text, a handoff's note and who asked, an operator's message) hold, the rendered row has
    only the widget's own tags and attributes, and shows the user's text verbatim."""
    from wa_agent import Handoff
    from wa_agent.events import MediaRef
    from wa_agent.widget import ConversationLog, render_conversation

    log = ConversationLog()
    stamp = datetime(2026, 1, 1, tzinfo=UTC)
    log.inbound(
        Message(
            id="wamid.1",
            sender=contact or "1",
            timestamp=stamp,
            type="text",
            text=text,
            profile_name=name,
        )
    )
    log.inbound(
        Message(
            id="wamid.2",
            sender=contact or "1",
            timestamp=stamp,
            type="image",
            caption=text,
            media=MediaRef(id="m", filename=text, mime_type=text),
        )
    )
    log.outbound(contact or "1", text, wamid="wamid.3")
    log.error(contact or "1", text)
    log.handoff(contact or "1", Handoff(contact or "1", stamp, by=name, note=text))
    log.operator(contact or "1", text, "wamid.4")
    conv = log.get(contact or "1")
    assert conv is not None
    markup = _Markup()
    markup.feed(render_conversation(conv))
    markup.close()
    assert markup.tags <= {"div", "span", "br"}
    assert markup.attrs <= {"class", "title", "data-kind", "data-contact"}
    if text.strip():
        assert text in "".join(markup.text)


def test_credentials_are_held_as_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Verify token, app secret, access token (from arguments or the WHATSAPP_* variables)
    and LLM keys are kept as Secret: no object's attributes show a raw value, nor do
    reprs, and configuration errors do not quote them."""
    monkeypatch.setenv("WHATSAPP_VERIFY_TOKEN", VERIFY)
    monkeypatch.setenv("WHATSAPP_APP_SECRET", APP_SECRET)
    monkeypatch.setenv("WHATSAPP_ACCESS_TOKEN", ACCESS)
    monkeypatch.setenv("WHATSAPP_PHONE_NUMBER_ID", PNID)
    monkeypatch.setenv("OPENAI_API_KEY", LLM_KEY)
    agent = LLMAgent("openai/gpt-4o-mini")
    interface = WhatsAppInterface(agent)
    app = interface.attach_routes()
    sender = Sender(Secret(ACCESS), PNID)
    assert isinstance(interface.verify_token, Secret)
    assert isinstance(interface.app_secret, Secret)
    assert interface.missing_configuration() == []
    for obj in (interface, app, sender, agent, interface.store):
        shown = repr(obj) + str(obj) + repr(vars(obj) if hasattr(obj, "__dict__") else "")
        shown += repr([getattr(obj, n, None) for n in getattr(type(obj), "__slots__", ())])
        for secret in SECRETS:
            assert secret not in shown, (type(obj).__name__, secret)
    assert app.signature_required
    with pytest.raises(ConfigurationError) as info:
        LLMAgent("openai/gpt-4o-mini", api_key="", max_tokens=1)
    assert LLM_KEY not in str(info.value)


# -- local files named by an agent's reply ---------------------------------------------------
async def test_reply_strings_never_read_arbitrary_local_files(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A string in ``AgentReply.images/files`` that is not a link or a media id is not
    read from disk unless it lies inside the operator's ``media_dir``: a prompt-injected
    ``../../secret.txt`` or ``/proc/self/environ`` is never uploaded or sent (the user gets
    the apology instead), while a ``Path`` built by code and a file inside ``media_dir`` are
    sent."""

    from wa_agent import AgentReply

    allowed = tmp_path / "media"
    allowed.mkdir()
    (allowed / "ok.txt").write_bytes(b"public notes")
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"TOP SECRET")
    (allowed / "link.txt").symlink_to(secret)
    wanted: dict[str, list[Any]] = {
        "traversal": ["../secret.txt"],
        "absolute": [str(secret)],
        "proc": ["/proc/self/environ"],
        "symlink": ["link.txt"],
        "inside": ["ok.txt"],
        "path object": [secret],
    }

    async def agent(request: AgentRequest) -> AgentReply:
        return AgentReply(files=wanted[request.text])

    with caplog.at_level(logging.ERROR, logger="wa_agent.interface"):
        async with Simulator(agent, media_dir=allowed) as sim:
            user = sim.user("15551230001")
            replies = {name: await user.ask(name) for name in wanted}
    uploaded = [m.data for m in sim.emulator.media.values()]
    assert b"TOP SECRET" in uploaded  # only through the Path object
    assert replies["path object"].data == b"TOP SECRET"
    assert replies["inside"].data == b"public notes"
    for name in ("traversal", "absolute", "proc", "symlink"):
        assert replies[name].type == "text" and replies[name].text == sim.interface.apology
    assert not any(b"PATH=" in data for data in uploaded)
    assert (
        sum(
            "outside media_dir" in r.getMessage()
            or "outside media_dir" in str(r.exc_info[1] if r.exc_info else "")
            for r in caplog.records
        )
        == 4
    )


async def test_reply_strings_without_media_dir_are_links_or_ids_only() -> None:
    """Without ``media_dir`` any string path is refused (the reply's text still goes
    out); the failure names the fix."""
    from wa_agent import AgentReply
    from wa_agent.hosting.delivery import UnsafeMediaPath

    async def agent(request: AgentRequest) -> AgentReply:
        return AgentReply(text="here", files=["/etc/hostname"])

    async with Simulator(agent) as sim:
        user = sim.user("15551230001")
        reply = await user.ask("file please")
        await sim.settle()
        assert reply.text == "here" and user.take_replies() == []
        assert not sim.emulator.media
    with pytest.raises(UnsafeMediaPath, match="media_dir"):
        sim.interface._delivery.local_path("/etc/hostname")
