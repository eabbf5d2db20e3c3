"""WebhookApp: the HTTP contract of SPEC §3, in-process (httpx.ASGITransport) and against a
real uvicorn server on 127.0.0.1, plus mounting inside FastAPI and Starlette."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import pytest

from tests.helpers import load_payload, sign, text_webhook
from wa_agent import Event, Message, StoreError
from wa_agent.asgi import DEFAULT_MAX_BODY, CallbackConsumer, Overloaded, WebhookApp
from wa_agent.server import BackgroundServer

SECRET = "test-app-secret"
TOKEN = "test-verify-token"
CHALLENGE = "1158201444"


@dataclass
class Served:
    """A WebhookApp reachable through ``client``; ``url`` is set for a real server."""

    kind: str
    client: httpx.AsyncClient
    url: str | None


ServeFactory = Callable[[WebhookApp], Awaitable[Served]]


class Dispatch:
    """An ASGI app forwarding HTTP requests to whichever app the current test set, so one
    real uvicorn server (started once per module) serves every test's own WebhookApp."""

    def __init__(self) -> None:
        self.app: WebhookApp | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        assert self.app is not None, "no app set for this test"
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """Module scope, so the shared uvicorn server below can live across tests."""
    return "asyncio"


@pytest.fixture(scope="module")
async def shared_server() -> AsyncIterator[tuple[Dispatch, str]]:
    dispatch = Dispatch()
    async with BackgroundServer(dispatch) as server:
        yield dispatch, server.url


@pytest.fixture(params=["asgi", "uvicorn"])
async def serve(
    request: pytest.FixtureRequest, shared_server: tuple[Dispatch, str]
) -> AsyncIterator[ServeFactory]:
    """Serve an app in-process through httpx.ASGITransport, or on a real uvicorn server
    listening on 127.0.0.1."""
    dispatch, url = shared_server
    async with contextlib.AsyncExitStack() as stack:

        async def factory(app: WebhookApp) -> Served:
            if request.param == "asgi":
                client = httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url="http://testserver"
                )
                served = Served("asgi", client, None)
            else:
                dispatch.app = app
                client = httpx.AsyncClient(base_url=url, trust_env=False)
                served = Served("uvicorn", client, url)
            await stack.enter_async_context(client)
            return served

        try:
            yield factory
        finally:
            dispatch.app = None


@dataclass
class Recorder:
    """A callback that records the messages it gets; it can be made to block."""

    messages: list[Message] = field(default_factory=list)
    release: asyncio.Event | None = None
    finished: int = 0

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)
        if self.release is not None:
            await self.release.wait()
        self.finished += 1


class StandIn:
    """A consumer whose accept() raises the given exception."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc
        self.calls = 0

    async def accept_body(self, body: bytes) -> str | None:
        return None

    async def accept(self, events: list[Event]) -> str:
        self.calls += 1
        raise self.exc

    def health(self) -> dict[str, Any]:
        return {"status": "ok"}


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[Recorder, CallbackConsumer]]:
    rec = Recorder()
    consumer = CallbackConsumer(rec, name="test")
    yield rec, consumer
    if rec.release is not None:
        rec.release.set()
    await consumer.drain()


def make_app(
    consumer: Any, *, secret: str | None = SECRET, token: str | None = TOKEN, **kw: Any
) -> WebhookApp:
    return WebhookApp(consumer, verify_token=token, app_secret=secret, **kw)


def signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {"content-type": "application/json", "x-hub-signature-256": sign(body, secret)}


def verify_params(**overrides: str) -> dict[str, str]:
    params = {"hub.mode": "subscribe", "hub.verify_token": TOKEN, "hub.challenge": CHALLENGE}
    params.update(overrides)
    return params


# --------------------------------------------------------------------------------------
# GET /webhook: verification handshake
# --------------------------------------------------------------------------------------


async def test_verification_echoes_the_challenge(
    serve: ServeFactory, recorder: tuple[Recorder, CallbackConsumer]
) -> None:
    """The right mode and token give 200 text/plain whose body is exactly the challenge."""
    served = await serve(make_app(recorder[1]))
    r = await served.client.get("/webhook", params=verify_params())
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert r.content == CHALLENGE.encode()  # no quotes, no newline


@pytest.mark.parametrize(
    "params",
    [
        pytest.param(verify_params(**{"hub.verify_token": "wrong"}), id="wrong-token"),
        pytest.param(verify_params(**{"hub.verify_token": TOKEN + "x"}), id="longer-token"),
        pytest.param(verify_params(**{"hub.verify_token": ""}), id="empty-token"),
        pytest.param(verify_params(**{"hub.mode": "unsubscribe"}), id="wrong-mode"),
        pytest.param({"hub.verify_token": TOKEN, "hub.challenge": CHALLENGE}, id="no-mode"),
        pytest.param({}, id="no-params"),
    ],
)
async def test_verification_refused(
    serve: ServeFactory, recorder: tuple[Recorder, CallbackConsumer], params: dict[str, str]
) -> None:
    """A wrong token or hub.mode is answered 403 and the challenge is not echoed."""
    served = await serve(make_app(recorder[1]))
    r = await served.client.get("/webhook", params=params)
    assert r.status_code == 403
    assert CHALLENGE.encode() not in r.content


@pytest.mark.parametrize("token", [None, ""])
async def test_verification_without_a_token_is_500(
    serve: ServeFactory, recorder: tuple[Recorder, CallbackConsumer], token: str | None
) -> None:
    """No verify token configured (an empty one counts as none, so an empty
    hub.verify_token can never match): 500 with a message saying what to set."""
    served = await serve(make_app(recorder[1], token=token))
    for params in (verify_params(), verify_params(**{"hub.verify_token": ""})):
        r = await served.client.get("/webhook", params=params)
        assert r.status_code == 500
        assert "WHATSAPP_VERIFY_TOKEN" in r.text
        assert CHALLENGE not in r.text


# --------------------------------------------------------------------------------------
# POST /webhook
# --------------------------------------------------------------------------------------


async def test_message_is_processing_and_reaches_the_consumer(
    serve: ServeFactory, recorder: tuple[Recorder, CallbackConsumer]
) -> None:
    """A signed message is answered 200 processing and handed to the callback."""
    rec, consumer = recorder
    served = await serve(make_app(consumer))
    body = text_webhook("15551230001", "hi", wamid="wamid.A1")
    r = await served.client.post("/webhook", content=body, headers=signed(body))
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"status": "processing"}
    await consumer.drain()
    assert [(m.id, m.text) for m in rec.messages] == [("wamid.A1", "hi")]


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="missing"),
        pytest.param({"x-hub-signature-256": "sha256=" + "0" * 64}, id="wrong-digest"),
        pytest.param({"x-hub-signature-256": "sha1=abc"}, id="sha1"),
        pytest.param({"x-hub-signature-256": "garbage"}, id="garbage"),
        pytest.param("other-secret", id="other-secret"),
    ],
)
async def test_bad_signature_is_403(
    serve: ServeFactory,
    recorder: tuple[Recorder, CallbackConsumer],
    headers: dict[str, str] | str,
) -> None:
    """With an app secret set, a missing or invalid signature is 403 and nothing is handed
    to the consumer."""
    rec, consumer = recorder
    served = await serve(make_app(consumer))
    body = text_webhook("15551230001", "hi")
    if isinstance(headers, str):
        headers = signed(body, headers)
    r = await served.client.post("/webhook", content=body, headers=headers)
    assert r.status_code == 403
    await consumer.drain()
    assert rec.messages == [] and consumer.received == 0


async def test_unsigned_post_accepted_without_a_secret(
    serve: ServeFactory, recorder: tuple[Recorder, CallbackConsumer]
) -> None:
    """Without an app secret, an unsigned POST is accepted."""
    rec, consumer = recorder
    served = await serve(make_app(consumer, secret=None))
    body = text_webhook("15551230001", "unsigned")
    r = await served.client.post("/webhook", content=body)
    assert r.json() == {"status": "processing"}
    await consumer.drain()
    assert [m.text for m in rec.messages] == ["unsigned"]


async def test_non_ascii_signed_body_is_accepted(
    serve: ServeFactory, recorder: tuple[Recorder, CallbackConsumer]
) -> None:
    """A body with \\uXXXX escapes, signed over its raw bytes, is accepted and decoded."""
    rec, consumer = recorder
    served = await serve(make_app(consumer))
    body = load_payload("non_ascii")
    r = await served.client.post("/webhook", content=body, headers=signed(body))
    assert r.json() == {"status": "processing"}
    await consumer.drain()
    (msg,) = rec.messages
    assert msg.profile_name == "Jörg Åström"
    assert msg.text is not None and "äöå" in msg.text


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"hello, not json", id="non-json"),
        pytest.param(b"", id="empty"),
        pytest.param(load_payload("malformed_invalid_utf8"), id="invalid-utf8"),
        pytest.param(load_payload("messenger_page"), id="messenger"),
        pytest.param(b"[1,2,3]", id="array"),
    ],
)
async def test_invalid_payload_is_200(
    serve: ServeFactory, recorder: tuple[Recorder, CallbackConsumer], body: bytes
) -> None:
    """A signed body that is not a WhatsApp envelope is 200 invalid_payload (a 4xx would
    make Meta retry for 7 days) and never reaches the consumer."""
    consumer = recorder[1]
    served = await serve(make_app(consumer))
    r = await served.client.post("/webhook", content=body, headers=signed(body))
    assert r.status_code == 200
    assert r.json() == {"status": "invalid_payload"}
    assert consumer.received == 0


@pytest.mark.parametrize(
    "name",
    ["status_sent", "status_failed", "template_status_update", "value_errors", "account_update"],
)
async def test_nothing_for_the_agent_is_ignored(
    serve: ServeFactory, recorder: tuple[Recorder, CallbackConsumer], name: str
) -> None:
    """Statuses, value errors and other fields are 200 ignored."""
    consumer = recorder[1]
    served = await serve(make_app(consumer))
    body = load_payload(name)
    r = await served.client.post("/webhook", content=body, headers=signed(body))
    assert r.status_code == 200
    assert r.json() == {"status": "ignored"}
    assert consumer.received == 0


async def test_duplicate_is_ignored(
    serve: ServeFactory, recorder: tuple[Recorder, CallbackConsumer]
) -> None:
    """Meta's redelivery of the same wamid (even byte-different) is 200 ignored and the
    callback runs once."""
    rec, consumer = recorder
    served = await serve(make_app(consumer))
    first = text_webhook("15551230001", "once", wamid="wamid.DUP")
    again = json.dumps(json.loads(first), indent=1).encode()  # same wamid, other bytes
    r1 = await served.client.post("/webhook", content=first, headers=signed(first))
    r2 = await served.client.post("/webhook", content=again, headers=signed(again))
    assert (r1.json(), r2.json()) == ({"status": "processing"}, {"status": "ignored"})
    await consumer.drain()
    assert len(rec.messages) == 1
    assert consumer.duplicates == 1


async def test_batch_hands_every_message_over(
    serve: ServeFactory, recorder: tuple[Recorder, CallbackConsumer]
) -> None:
    """All messages of a batched body reach the consumer, not just the first."""
    rec, consumer = recorder
    served = await serve(make_app(consumer))
    body = load_payload("batch_mixed")
    r = await served.client.post("/webhook", content=body, headers=signed(body))
    assert r.json() == {"status": "processing"}
    await consumer.drain()
    assert sorted(m.text or "" for m in rec.messages) == [
        "",
        "first",
        "second",
        "third, other number",
    ]


async def test_ack_does_not_wait_for_the_callback(
    serve: ServeFactory, recorder: tuple[Recorder, CallbackConsumer]
) -> None:
    """200 processing comes back while the callback is still blocked; the callback can only
    finish after the response has arrived."""
    rec, consumer = recorder
    rec.release = asyncio.Event()
    served = await serve(make_app(consumer))
    body = text_webhook("15551230001", "slow agent")
    with anyio.fail_after(10):  # if the app awaited the callback, this would time out
        r = await served.client.post("/webhook", content=body, headers=signed(body))
    assert r.json() == {"status": "processing"}
    assert rec.finished == 0
    assert consumer.health()["in_flight"] == 1
    rec.release.set()
    await consumer.drain()
    assert rec.finished == 1
    assert consumer.health()["in_flight"] == 0


async def test_store_error_is_500(serve: ServeFactory) -> None:
    """A consumer that cannot record the message makes the app answer 500 (Meta retries)."""
    consumer = StandIn(StoreError("disk full"))
    served = await serve(make_app(consumer))
    body = text_webhook("15551230001", "hi")
    r = await served.client.post("/webhook", content=body, headers=signed(body))
    assert r.status_code == 500
    assert "disk full" not in r.text
    assert consumer.calls == 1


async def test_overloaded_is_503(serve: ServeFactory) -> None:
    """A consumer that is overloaded makes the app answer 503."""
    consumer = StandIn(Overloaded())
    served = await serve(make_app(consumer))
    body = text_webhook("15551230001", "hi")
    r = await served.client.post("/webhook", content=body, headers=signed(body))
    assert r.status_code == 503


async def test_unexpected_consumer_error_is_500_without_details(serve: ServeFactory) -> None:
    """Any other exception is logged and answered 500 with no stack trace in the body."""
    consumer = StandIn(RuntimeError("secret internals"))
    served = await serve(make_app(consumer))
    body = text_webhook("15551230001", "hi")
    r = await served.client.post("/webhook", content=body, headers=signed(body))
    assert r.status_code == 500
    assert "secret internals" not in r.text and "Traceback" not in r.text


# --------------------------------------------------------------------------------------
# Body size: 413
# --------------------------------------------------------------------------------------


async def test_default_cap_is_3_mb_inclusive(
    serve: ServeFactory, recorder: tuple[Recorder, CallbackConsumer]
) -> None:
    """A signed body of exactly 3 MB is processed; one byte more is 413 and never parsed."""
    consumer = recorder[1]
    assert DEFAULT_MAX_BODY == 3 * 1024 * 1024
    served = await serve(make_app(consumer))
    body = text_webhook("15551230001", "big", wamid="wamid.BIG")
    at_cap = body + b" " * (DEFAULT_MAX_BODY - len(body))
    r = await served.client.post("/webhook", content=at_cap, headers=signed(at_cap))
    assert r.json() == {"status": "processing"}
    over = at_cap + b" "
    r = await served.client.post("/webhook", content=over, headers=signed(over))
    assert r.status_code == 413
    await consumer.drain()
    assert consumer.received == 1


async def _chunks(total: int, size: int, counter: list[int]) -> AsyncIterator[bytes]:
    chunk = b" " * size
    while counter[0] < total:
        counter[0] += size
        yield chunk


async def test_streamed_body_over_the_cap_is_413(
    serve: ServeFactory, recorder: tuple[Recorder, CallbackConsumer]
) -> None:
    """A chunked body with no Content-Length is cut off with 413 once it passes the cap."""
    consumer = recorder[1]
    served = await serve(make_app(consumer, max_body=256 * 1024))
    counter = [0]
    total = 1024 * 1024
    r = await served.client.post("/webhook", content=_chunks(total, 16 * 1024, counter))
    assert "content-length" not in r.request.headers
    assert r.request.headers["transfer-encoding"] == "chunked"
    assert r.status_code == 413
    if served.kind == "asgi":
        assert counter[0] < total  # the app stopped reading early
    assert consumer.received == 0


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


async def _raw_post(url: str, head: bytes, chunks: Iterable[bytes]) -> tuple[bytes, int, bool]:
    """Send ``head`` then ``chunks`` on a raw socket, stopping as soon as a response starts.
    Returns (status line, bytes of chunks sent, whether every chunk was sent)."""
    host, port = _host_port(url)
    reader, writer = await asyncio.open_connection(host, port)
    sent = 0
    finished = True
    try:
        writer.write(head)
        await writer.drain()
        response = asyncio.ensure_future(reader.readuntil(b"\r\n\r\n"))
        try:
            for chunk in chunks:
                await asyncio.sleep(0)
                if response.done():
                    finished = False
                    break
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
        except (ConnectionResetError, BrokenPipeError):
            finished = False
        with anyio.fail_after(10):
            head_bytes = await response
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return head_bytes.split(b"\r\n", 1)[0], sent, finished


async def test_413_from_content_length_before_the_body_is_sent(
    recorder: tuple[Recorder, CallbackConsumer], shared_server: tuple[Dispatch, str]
) -> None:
    """Real server: a Content-Length over 3 MB is refused from the headers alone, without
    waiting for a single body byte."""
    dispatch, url = shared_server
    dispatch.app = make_app(recorder[1])
    head = (
        b"POST /webhook HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: " + str(DEFAULT_MAX_BODY + 1).encode() + b"\r\n\r\n"
    )
    status, sent, _ = await _raw_post(url, head, [])
    assert status.startswith(b"HTTP/1.1 413")
    assert sent == 0


async def test_413_while_streaming_a_chunked_body(
    recorder: tuple[Recorder, CallbackConsumer], shared_server: tuple[Dispatch, str]
) -> None:
    """Real server: a chunked upload with no Content-Length gets 413 once it passes 3 MB,
    before the client has finished sending (the upload is 16 MB)."""
    dispatch, url = shared_server
    dispatch.app = make_app(recorder[1])
    piece = b" " * 65536
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    total_chunks = 16 * 1024 * 1024 // len(piece)
    head = (
        b"POST /webhook HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    status, sent, finished = await _raw_post(url, head, (chunk for _ in range(total_chunks)))
    assert status.startswith(b"HTTP/1.1 413")
    assert not finished
    assert DEFAULT_MAX_BODY < sent < total_chunks * len(chunk)
    assert recorder[1].received == 0


async def test_client_disconnect_mid_body_is_not_processed() -> None:
    """If the client goes away before the body is complete, nothing is parsed or handed
    to the consumer and no response is attempted."""
    consumer = StandIn(AssertionError("must not be called"))
    app = make_app(consumer, secret=None)
    body = text_webhook("15551230001", "hi")
    incoming: list[dict[str, Any]] = [
        {"type": "http.request", "body": body[:20], "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/webhook",
        "root_path": "",
        "query_string": b"",
        "headers": [],
    }
    await app(scope, receive, send)
    assert consumer.calls == 0
    assert sent == []


# --------------------------------------------------------------------------------------
# /health, 404, 405
# --------------------------------------------------------------------------------------


async def test_health_reports_live_counters(
    serve: ServeFactory, recorder: tuple[Recorder, CallbackConsumer]
) -> None:
    """GET /health is JSON with status, interface name and counters that move."""
    consumer = recorder[1]
    served = await serve(make_app(consumer))
    r = await served.client.get("/health")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    before = r.json()
    assert before["status"] == "ok" and before["interface"] == "test"
    for key in ("received", "processed", "in_flight", "duplicates", "send_failures"):
        assert before[key] == 0, key
    body = text_webhook("15551230001", "count me", wamid="wamid.H1")
    for _ in range(2):
        await served.client.post("/webhook", content=body, headers=signed(body))
    await consumer.drain()
    after = (await served.client.get("/health")).json()
    assert (after["received"], after["processed"], after["duplicates"], after["in_flight"]) == (
        1,
        1,
        1,
        0,
    )


async def test_unknown_path_is_404(
    serve: ServeFactory, recorder: tuple[Recorder, CallbackConsumer]
) -> None:
    """Paths other than /webhook and /health are 404."""
    served = await serve(make_app(recorder[1]))
    for path in ("/", "/webhooks", "/whatsapp/webhook", "/health/x"):
        assert (await served.client.get(path)).status_code == 404, path
    assert (await served.client.post("/nope", content=b"{}")).status_code == 404


async def test_wrong_method_is_405(
    serve: ServeFactory, recorder: tuple[Recorder, CallbackConsumer]
) -> None:
    """Other methods on /webhook and /health are 405 with an Allow header."""
    served = await serve(make_app(recorder[1]))
    for method in ("PUT", "DELETE", "PATCH"):
        r = await served.client.request(method, "/webhook")
        assert r.status_code == 405, method
        assert r.headers["allow"] == "GET, POST"
    r = await served.client.post("/health", content=b"{}")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET"


async def test_trailing_slash_is_tolerated(
    serve: ServeFactory, recorder: tuple[Recorder, CallbackConsumer]
) -> None:
    """/webhook/ is the same route as /webhook (Meta's dashboard URL may end with '/')."""
    served = await serve(make_app(recorder[1]))
    r = await served.client.get("/webhook/", params=verify_params())
    assert r.status_code == 200 and r.text == CHALLENGE


# --------------------------------------------------------------------------------------
# Lifespan and first-request hooks
# --------------------------------------------------------------------------------------


async def test_lifespan_hooks_run_under_uvicorn(
    recorder: tuple[Recorder, CallbackConsumer],
) -> None:
    """on_startup runs before the server accepts requests; on_shutdown runs at stop."""
    calls: list[str] = []

    async def startup() -> None:
        calls.append("startup")

    async def shutdown() -> None:
        calls.append("shutdown")

    app = make_app(recorder[1], on_startup=startup, on_shutdown=shutdown)
    async with BackgroundServer(app):
        assert calls == ["startup"]
    assert calls == ["startup", "shutdown"]


async def test_on_first_request_runs_once_under_concurrency(
    recorder: tuple[Recorder, CallbackConsumer],
) -> None:
    """on_first_request runs exactly once, before any message is handed over, even when
    several POSTs arrive at the same time."""
    consumer = recorder[1]
    calls: list[int] = []

    async def first() -> None:
        calls.append(consumer.received)
        await asyncio.sleep(0.01)

    app = make_app(consumer, on_first_request=first)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        bodies = [text_webhook("15551230001", f"m{i}") for i in range(5)]
        responses = await asyncio.gather(
            *(client.post("/webhook", content=b, headers=signed(b)) for b in bodies)
        )
    assert [r.json()["status"] for r in responses] == ["processing"] * 5
    assert calls == [0]


# --------------------------------------------------------------------------------------
# Mounting inside FastAPI and Starlette
# --------------------------------------------------------------------------------------


async def _exercise_mounted(parent: Any, consumer: CallbackConsumer, rec: Recorder) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=parent), base_url="http://testserver"
    ) as client:
        r = await client.get("/whatsapp/webhook", params=verify_params())
        assert (r.status_code, r.text) == (200, CHALLENGE)
        body = text_webhook("15551230001", "mounted", wamid="wamid.M1")
        r = await client.post("/whatsapp/webhook", content=body, headers=signed(body))
        assert r.json() == {"status": "processing"}
        r = await client.post("/whatsapp/webhook", content=body)
        assert r.status_code == 403
        r = await client.get("/whatsapp/health")
        assert r.json()["received"] == 1
        assert (await client.get("/whatsapp/nope")).status_code == 404
        r = await client.get("/ping")
        assert (r.status_code, r.json()) == (200, {"pong": True})
    await consumer.drain()
    assert [m.text for m in rec.messages] == ["mounted"]


async def test_mounts_inside_fastapi(recorder: tuple[Recorder, CallbackConsumer]) -> None:
    """app.mount('/whatsapp', webhook_app) in FastAPI serves the whole contract under the
    prefix, next to the FastAPI app's own routes."""
    from fastapi import FastAPI

    rec, consumer = recorder
    parent = FastAPI()

    @parent.get("/ping")
    async def ping() -> dict[str, bool]:
        return {"pong": True}

    parent.mount("/whatsapp", make_app(consumer))
    await _exercise_mounted(parent, consumer, rec)


async def test_mounts_inside_starlette(recorder: tuple[Recorder, CallbackConsumer]) -> None:
    """A Starlette Mount('/whatsapp', app=webhook_app) works next to other routes."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Mount, Route

    rec, consumer = recorder

    async def ping(request: Request) -> JSONResponse:
        return JSONResponse({"pong": True})

    parent = Starlette(routes=[Route("/ping", ping), Mount("/whatsapp", app=make_app(consumer))])
    await _exercise_mounted(parent, consumer, rec)


async def test_a_consumers_fast_path_answers_or_hands_the_body_on(serve: ServeFactory) -> None:
    """A consumer's optional ``accept_body`` sees the signed raw body first: its status is
    the answer (``accept`` is not called), ``None`` hands the body to the parser and
    ``accept``, and its StoreError is a 500; unsigned bodies never reach it; the
    first-request hook has run before it."""
    started: list[str] = []

    class Fast:
        def __init__(self) -> None:
            self.raw: list[bytes] = []
            self.parsed: list[list[Event]] = []
            self.answer: str | None = "processing"

        async def accept_body(self, body: bytes) -> str | None:
            assert started == ["yes"]
            self.raw.append(body)
            if self.answer == "fail":
                raise StoreError("disk full")
            return self.answer

        async def accept(self, events: list[Event]) -> str:
            self.parsed.append(events)
            return "ignored"

        def health(self) -> dict[str, Any]:
            return {}

    async def first() -> None:
        started.append("yes")

    consumer = Fast()
    app = WebhookApp(consumer, app_secret=SECRET, on_first_request=first)
    served = await serve(app)
    body = text_webhook("15551230001", "hi")
    response = await served.client.post("/webhook", content=body, headers=signed(body))
    assert response.json() == {"status": "processing"} and consumer.parsed == []
    consumer.answer = None
    response = await served.client.post("/webhook", content=body, headers=signed(body))
    assert response.json() == {"status": "ignored"} and len(consumer.parsed) == 1
    consumer.answer = "fail"
    response = await served.client.post("/webhook", content=body, headers=signed(body))
    assert response.status_code == 500
    unsigned = await served.client.post(
        "/webhook", content=body, headers={"x-hub-signature-256": "sha256=" + "0" * 64}
    )
    assert unsigned.status_code == 403
    assert consumer.raw == [body, body, body] and started == ["yes"]


def test_a_consumer_without_the_fast_path_method_is_refused_at_construction() -> None:
    """``accept_body`` is part of the WebhookConsumer protocol: a consumer without it (or
    without ``accept``/``health``) is refused when the app is built, with the fix in the
    message, instead of failing at the first webhook."""

    class OldStyle:
        async def accept(self, events: list[Event]) -> str:
            return "ignored"

        def health(self) -> dict[str, Any]:
            return {}

    with pytest.raises(TypeError, match="accept_body.*return None"):
        WebhookApp(OldStyle())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="accept_body, accept, health"):
        WebhookApp(object())  # type: ignore[arg-type]
