"""Fuzzing the public webhook endpoint (issue 10) with hypothesis, through a raw ASGI driver
(``tests/asgi_driver.py``): random and mutated bodies, odd headers, chunked bodies without a
length, client disconnects, invalid UTF-8, deep nesting, huge numbers, duplicate keys and
1000-item batches.

Properties: the app never lets an exception out, always completes a response (unless the
client left), never answers 500 unless the consumer raised ``StoreError``, never hands a
body to the consumer (or the agent) without a valid signature when a secret is set, stops
reading at the body cap, and stays within a memory bound per request.

The number of examples is bounded for the normal run; ``scripts/fuzz_long.py`` runs the same
properties with many more (``WA_FUZZ_SCALE``), round after round.
"""

from __future__ import annotations

import base64
import collections
import gc
import hashlib
import hmac
import itertools
import json
import os
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_from_bytes

import httpx
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.asgi_driver import Exchange, call_asgi
from wa_agent import Message, StoreError, WhatsAppInterface
from wa_agent.asgi import WebhookApp
from wa_agent.events import Event
from wa_agent.sender import RetryPolicy, Sender
from wa_agent.testing import webhooks
from wa_agent.testing.emulator import CloudAPIEmulator

SECRET = "fuzz-app-secret"
TOKEN = "fuzz-verify-token"
CAP = 64 * 1024
PNID = "100000000000001"

#: Examples tried per property, by test name (reported to scripts/fuzz_long.py).
EXAMPLES: collections.Counter[str] = collections.Counter()
#: ``scripts/fuzz_long.py`` multiplies every example budget by this.
_SCALE = float(os.environ.get("WA_FUZZ_SCALE", "1"))


def budget(n: int) -> settings:
    """``n`` examples in the normal run (``n * WA_FUZZ_SCALE`` in a long one)."""
    return settings(
        max_examples=max(1, round(n * _SCALE)),
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )


@pytest.fixture(scope="module", autouse=True)
def _report_examples() -> Iterator[None]:
    """At the end of the module, write the example counts to ``WA_FUZZ_REPORT`` (if set)."""
    yield
    report = os.environ.get("WA_FUZZ_REPORT")
    if report:
        with open(report, "w", encoding="utf-8") as fh:
            json.dump(dict(EXAMPLES), fh)


def signature(body: bytes, secret: str = SECRET) -> bytes:
    """Written independently of SignatureVerifier (stdlib hmac)."""
    return b"sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest().encode()


def signs(header: bytes, body: bytes) -> bool:
    """Does this header value carry a valid signature of ``body``?"""
    value = header.strip().lower()
    return value.startswith(b"sha256=") and hmac.compare_digest(value, signature(body))


class Spy:
    """A consumer recording what it is handed; ``fail`` makes it raise StoreError."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.calls: list[list[Event]] = []

    async def accept_body(self, body: bytes) -> str | None:
        return None

    async def accept(self, events: list[Event]) -> str:
        self.calls.append(events)
        if self.fail:
            raise StoreError("the store is down")
        return "processing" if any(isinstance(e, Message) for e in events) else "ignored"

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "calls": len(self.calls)}


# --------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------

_numbers = ["1555123" + f"{i:04d}" for i in range(5)]


@st.composite
def valid_payloads(draw: st.DrawFn) -> dict[str, Any]:
    """Meta-shaped envelopes: messages of several types, statuses, small batches."""
    items = []
    for _ in range(draw(st.integers(1, 6))):
        sender = draw(st.sampled_from(_numbers))
        kind = draw(st.sampled_from(["text", "image", "location", "reaction", "button"]))
        text = draw(st.text(max_size=40))
        if kind == "text":
            items.append(webhooks.text_message(sender, text))
        elif kind == "image":
            items.append(
                webhooks.media_message(sender, "image", "media-1", "image/png", caption=text)
            )
        elif kind == "location":
            items.append(
                webhooks.location_message(
                    sender, draw(st.floats(-90, 90)), draw(st.floats(-180, 180))
                )
            )
        elif kind == "reaction":
            items.append(webhooks.reaction_message(sender, "wamid.x", text[:2] or None))
        else:
            items.append(webhooks.button_reply_message(sender, text, "p"))
    statuses = [
        webhooks.status_item(webhooks.new_wamid(), s, _numbers[0])
        for s in draw(st.lists(st.sampled_from(["sent", "read", "failed", "x"]), max_size=3))
    ]
    return webhooks.envelope(messages=items, statuses=statuses)


_json_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.integers(min_value=10**30, max_value=10**60)
)
_json = st.recursive(
    _json_leaves,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=25,
)


@st.composite
def wrong_shapes(draw: st.DrawFn) -> bytes:
    """Valid JSON of the wrong shape, planted at every level of the envelope."""
    junk = draw(_json)
    base: Any = draw(valid_payloads())
    where = draw(
        st.sampled_from(
            [
                "top",
                "object",
                "entry",
                "entry0",
                "changes",
                "value",
                "messages",
                "message",
                "field",
                "metadata",
                "item_key",
            ]
        )
    )
    value = base["entry"][0]["changes"][0]["value"]
    if where == "top":
        base = junk
    elif where == "object":
        base["object"] = junk
    elif where == "entry":
        base["entry"] = junk
    elif where == "entry0":
        base["entry"][0] = junk
    elif where == "changes":
        base["entry"][0]["changes"] = junk
    elif where == "value":
        base["entry"][0]["changes"][0]["value"] = junk
    elif where == "messages":
        value["messages"] = junk
    elif where == "message" and value.get("messages"):
        value["messages"][0] = junk
    elif where == "field":
        base["entry"][0]["changes"][0]["field"] = junk
    elif where == "metadata":
        value["metadata"] = junk
    elif value.get("messages"):
        key = draw(
            st.sampled_from(
                [
                    "from",
                    "id",
                    "timestamp",
                    "type",
                    "text",
                    "image",
                    "location",
                    "context",
                    "reaction",
                    "button",
                ]
            )
        )
        value["messages"][0][key] = junk
    return json.dumps(base, allow_nan=True).encode()


def _batch(n: int) -> bytes:
    return webhooks.encode(
        webhooks.envelope(
            messages=[webhooks.text_message(_numbers[i % 5], f"m{i}") for i in range(n)]
        )
    )


_TRICKS: list[bytes] = [
    b"",
    b" ",
    b"null",
    b"[]",
    b"{}",
    b'""',
    b"0",
    b"-0",
    b"1e999999",
    b"-1e999999",
    b"NaN",
    b"Infinity",
    b"[NaN, -Infinity]",
    b"\xef\xbb\xbf{}",  # BOM
    b'{"object":"whatsapp_business_account","entry":[]}',
    b'{"object":' + b"9" * 5000 + b',"entry":[]}',  # over the int digit limit
    b'{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages",'
    b'"value":{"messages":[{"from":"1","id":"w","timestamp":"' + b"9" * 5000 + b'",'
    b'"type":"text","text":{"body":"x"}}]}}]}]}',
    b'{"object":"x","object":"whatsapp_business_account","entry":[],"entry":[]}',
    (
        b'{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages",'
        b'"field":"messages","value":{"messages":[{"from":"1","from":"2","id":"w","id":"w",'
        b'"timestamp":"1","type":"text","text":{"body":"a"},"text":{"body":"b"}}]}}]}]}'
    ),
    b"[" * 20_000 + b"]" * 20_000,
    b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
    b"[" * 20_000,  # unbalanced
    b'{"object":"whatsapp_business_account","entry":' + b"[" * 990 + b"]" * 990 + b"}",
    b'{"object":"whatsapp_\xff\xfe_account"}',  # invalid UTF-8
    b'{"object":"\xed\xa0\x80"}',  # UTF-8-encoded lone surrogate
    b'{"object":"\xc0\xaf"}',  # overlong encoding
    b'{"object":"\\ud800","entry":[]}',  # escaped lone surrogate
    '{"object":"whatsapp_business_account","entry":[]}'.encode("utf-16"),
    b'{"object":"whatsapp_business_account"\x00,"entry":[]}',
    _batch(1000),
    _batch(1001),
    b'{"object":"whatsapp_business_account","entry":[' + b"{}," * 3000 + b"{}]}",
    b'["' + b"\\\\" * 5000 + b'"]',
    b'["' + b"\\u0000" * 2000 + b'"]',
]


def _mutate(data: bytes, ops: list[tuple[int, int, int, bytes]]) -> bytes:
    out = bytearray(data)
    for op, a, b, extra in ops:
        if not out:
            out.extend(extra)
            continue
        i, j = sorted((a % len(out), b % len(out)))
        if op == 0:
            out[i] ^= 1 << (b % 8)  # bit flip
        elif op == 1:
            del out[i:j]  # delete a slice
        elif op == 2:
            out[i:i] = out[i:j]  # duplicate a slice
        elif op == 3:
            out[i:i] = extra  # insert bytes
        else:
            del out[i:]  # truncate
    return bytes(out)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid body with a few byte-level mutations."""
    body = webhooks.encode(draw(valid_payloads()))
    ops = draw(
        st.lists(
            st.tuples(
                st.integers(0, 4),
                st.integers(0, 10**6),
                st.integers(0, 10**6),
                st.binary(max_size=8),
            ),
            min_size=1,
            max_size=5,
        )
    )
    return _mutate(body, ops)


bodies = st.one_of(
    valid_payloads().map(webhooks.encode),
    valid_payloads().map(lambda p: json.dumps(p, ensure_ascii=False).encode()),
    wrong_shapes(),
    mutated(),
    st.sampled_from(_TRICKS),
    st.binary(max_size=300),
    _json.map(lambda v: json.dumps(v).encode()),
)

SIGNATURE_MODES = [
    "none",
    "valid",
    "upper",
    "padded",
    "wrong",
    "other_body",
    "sha1_only",
    "garbage",
    "empty",
    "non_ascii",
    "valid_then_wrong",
    "wrong_then_valid",
    "other_secret",
]
CONTENT_TYPES: list[bytes | None] = [
    None,
    b"application/json",
    b"application/json; charset=utf-8",
    b"text/plain",
    b"multipart/form-data; boundary=x",
    b"application/x-www-form-urlencoded",
    b"application/json; charset=utf-16",
    b"\xff\xfe garbage",
    b"",
]
LENGTH_MODES = [
    "none",
    "right",
    "smaller",
    "larger",
    "over_cap",
    "garbage",
    "negative",
    "huge",
    "twice",
    "twice_over_cap",
]


def _signature_headers(mode: str, body: bytes) -> list[tuple[bytes, bytes]]:
    good = signature(body)
    name = b"x-hub-signature-256"
    return {
        "none": [],
        "valid": [(name, good)],
        "upper": [(name, b"sha256=" + good[7:].upper())],
        "padded": [(name, b"  " + good + b" ")],
        "wrong": [(name, b"sha256=" + b"0" * 64)],
        "other_body": [(name, signature(body + b" "))],
        "sha1_only": [(b"x-hub-signature", b"sha1=" + hashlib.sha1(body).hexdigest().encode())],
        "garbage": [(name, base64.b64encode(body[:30]))],
        "empty": [(name, b"")],
        "non_ascii": [(name, b"sha256=\xff\xfe" + good[9:])],
        "valid_then_wrong": [(name, good), (name, b"sha256=" + b"1" * 64)],
        "wrong_then_valid": [(name, b"sha256=" + b"1" * 64), (name, good)],
        "other_secret": [(name, signature(body, "another-secret"))],
    }[mode]


def _length_headers(mode: str, size: int) -> list[tuple[bytes, bytes]]:
    name = b"content-length"
    return {
        "none": [],
        "right": [(name, str(size).encode())],
        "smaller": [(name, str(max(0, size - 7)).encode())],
        "larger": [(name, str(size + 7).encode())],
        "over_cap": [(name, str(CAP + 1).encode())],
        "garbage": [(name, b"12abc")],
        "negative": [(name, b"-5")],
        "huge": [(name, b"9" * 40)],
        "twice": [(name, str(size).encode()), (name, b"0")],
        "twice_over_cap": [(name, str(size).encode()), (name, str(CAP + 1).encode())],
    }[mode]


@dataclass
class Request:
    """One generated POST."""

    body: bytes
    signature: str
    content_type: bytes | None
    length: str
    cuts: list[int]
    disconnect: bool
    extra: list[tuple[bytes, bytes]]

    def headers(self) -> list[tuple[bytes, bytes]]:
        headers = _signature_headers(self.signature, self.body)
        if self.content_type is not None:
            headers.append((b"content-type", self.content_type))
        headers += _length_headers(self.length, len(self.body))
        return headers + self.extra

    def chunks(self) -> list[bytes]:
        points = sorted({0, len(self.body), *(c % (len(self.body) + 1) for c in self.cuts)})
        return [self.body[a:b] for a, b in itertools.pairwise(points)] or [b""]

    @property
    def validly_signed(self) -> bool:
        """The one signature header present signs these exact bytes."""
        return self.signature in ("valid", "upper", "padded")


@st.composite
def requests(draw: st.DrawFn, body: st.SearchStrategy[bytes] = bodies) -> Request:
    return Request(
        body=draw(body),
        signature=draw(st.sampled_from(SIGNATURE_MODES)),
        content_type=draw(st.sampled_from(CONTENT_TYPES)),
        length=draw(st.sampled_from(LENGTH_MODES)),
        cuts=draw(st.lists(st.integers(0, 10**6), max_size=12)),
        disconnect=draw(st.integers(0, 9)) == 0,
        extra=draw(
            st.lists(
                st.tuples(
                    st.sampled_from(
                        [
                            b"x-forwarded-for",
                            b"transfer-encoding",
                            b"x-hub-signature",
                            b"host",
                            b"content-encoding",
                            b"expect",
                        ]
                    ),
                    st.binary(max_size=20),
                ),
                max_size=3,
            )
        ),
    )


async def post(app: WebhookApp, req: Request) -> Exchange:
    return await call_asgi(
        app, headers=req.headers(), chunks=req.chunks(), disconnect=req.disconnect
    )


def check_response(ex: Exchange, req: Request, spy: Spy) -> None:
    """The properties every POST must satisfy."""
    assert ex.raised is None, f"exception out of the ASGI app: {ex.raised!r}"
    if req.disconnect:  # nothing processed; at most a 413 decided before the cut
        assert ex.status in (None, 413) and not spy.calls, "a cut-short body was processed"
        return
    assert ex.complete, "no complete response"
    if ex.status == 500:
        assert spy.fail and spy.calls, "500 without a store failure"
    assert ex.status in (200, 403, 413, 500), ex.status
    if spy.calls:
        sent = [v for k, v in req.headers() if k == b"x-hub-signature-256"]
        assert any(signs(v, req.body) for v in sent), "consumer called without a signature"
        assert len(req.body) <= CAP
    if ex.status == 200:
        assert json.loads(ex.body)["status"] in ("processing", "ignored", "invalid_payload")
    assert ex.bytes_consumed <= CAP + max(map(len, req.chunks()))
    if req.length in ("over_cap", "twice_over_cap") and ex.status == 413:
        assert ex.bytes_consumed == 0
    too_big = len(req.body) > CAP or req.length in ("over_cap", "huge", "twice_over_cap")
    if req.validly_signed and not too_big and not spy.fail:
        assert ex.status == 200, (ex.status, ex.body)


# --------------------------------------------------------------------------------------
# WebhookApp with a secret
# --------------------------------------------------------------------------------------


@budget(250)
@given(req=requests(), fail=st.booleans())
async def test_fuzz_signed_app(req: Request, fail: bool) -> None:
    """Random/mutated bodies and headers against a WebhookApp with an app secret: no
    exception, no 500 but for a StoreError, the consumer sees only validly signed bodies,
    reading stops at the cap, a validly signed body of acceptable size is answered 200."""
    EXAMPLES["signed_app"] += 1
    spy = Spy(fail=fail)
    app = WebhookApp(spy, verify_token=TOKEN, app_secret=SECRET, max_body=CAP)
    ex = await post(app, req)
    check_response(ex, req, spy)
    if not req.validly_signed and req.signature != "valid_then_wrong":
        assert ex.status in (403, 413, None), ex.status


@budget(120)
@given(req=requests())
async def test_fuzz_unsigned_app(req: Request) -> None:
    """Without a secret every body is read and parsed (signature headers ignored): still no
    exception and no 500, and anything too big is 413 before the consumer."""
    EXAMPLES["unsigned_app"] += 1
    spy = Spy()
    app = WebhookApp(spy, verify_token=TOKEN, max_body=CAP)
    ex = await post(app, req)
    assert ex.raised is None, repr(ex.raised)
    if req.disconnect:
        assert ex.status in (None, 413) and not spy.calls
        return
    assert ex.complete and ex.status in (200, 413), ex.status
    if spy.calls:
        assert len(req.body) <= CAP


_query_values = st.one_of(
    st.just(TOKEN),
    st.just("subscribe"),
    st.text(max_size=12),
    st.binary(max_size=12).map(lambda b: b.decode("latin-1")),
)


@budget(150)
@given(
    method=st.sampled_from(
        ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "BREW", ""]
    ),
    path=st.sampled_from(
        [
            "/webhook",
            "/webhook/",
            "/health",
            "/",
            "",
            "//webhook",
            "/webhook/../health",
            "/WEBHOOK",
            "/webhook\x00",
            "/wébhook",
            "/health/",
        ]
    ),
    params=st.lists(
        st.tuples(
            st.sampled_from(["hub.mode", "hub.verify_token", "hub.challenge", "hub_mode", "x"]),
            _query_values,
        ),
        max_size=6,
    ),
    raw_query=st.binary(max_size=30),
    use_raw=st.booleans(),
)
async def test_fuzz_other_requests(
    method: str, path: str, params: list[tuple[str, str]], raw_query: bytes, use_raw: bool
) -> None:
    """Any method, path and query string: no exception, never 500 (a verify token is set),
    and the handshake answers 200 only for mode ``subscribe`` with the right token (first
    occurrence of each), echoing the challenge exactly."""
    EXAMPLES["other_requests"] += 1
    app = WebhookApp(Spy(), verify_token=TOKEN, app_secret=SECRET, max_body=CAP)
    query = (
        raw_query
        if use_raw
        else "&".join(
            f"{quote_from_bytes(k.encode())}={quote_from_bytes(v.encode('utf-8', 'surrogatepass'))}"
            for k, v in params
        ).encode()
    )
    ex = await call_asgi(app, method=method, path=path, query=query)
    assert ex.raised is None, repr(ex.raised)
    assert ex.complete and ex.status is not None and ex.status < 500, ex.status
    if method in ("GET", "HEAD") and path.rstrip("/") == "/webhook" and not use_raw:
        first = dict(reversed(params))
        ok = first.get("hub.mode") == "subscribe" and first.get("hub.verify_token") == TOKEN
        assert ex.status == (200 if ok else 403), (ex.status, params)
        if ok:
            challenge = first.get("hub.challenge", "").encode("utf-8", "replace")
            assert ex.body == challenge


# --------------------------------------------------------------------------------------
# Streaming: the cap is enforced while reading
# --------------------------------------------------------------------------------------


def _endless(chunk: bytes, limit: int) -> Iterator[bytes]:
    for _ in range(limit):
        yield chunk


@budget(40)
@given(chunk_size=st.integers(1, 20_000), declared=st.booleans(), signed=st.booleans())
async def test_reading_stops_at_the_cap(chunk_size: int, declared: bool, signed: bool) -> None:
    """A body streamed without a length (or with a lying small one) is read only up to
    the cap plus one chunk, then refused with 413; receive() is not called again."""
    EXAMPLES["streaming"] += 1
    spy = Spy()
    app = WebhookApp(spy, verify_token=TOKEN, app_secret=SECRET if signed else None, max_body=CAP)
    total_chunks = 50 * CAP // chunk_size + 10  # 50x the cap on offer
    headers = [(b"content-length", b"100")] if declared else []
    ex = await call_asgi(app, headers=headers, chunks=_endless(b"x" * chunk_size, total_chunks))
    assert ex.raised is None and ex.status == 413
    assert ex.bytes_consumed <= CAP + chunk_size
    assert ex.receive_calls == CAP // chunk_size + 1
    assert spy.calls == []


async def test_declared_length_over_the_cap_reads_nothing() -> None:
    """A Content-Length over the cap is refused from the headers: not one receive()."""
    app = WebhookApp(Spy(), app_secret=SECRET, max_body=CAP)
    ex = await call_asgi(
        app,
        headers=[(b"content-length", str(CAP + 1).encode())],
        chunks=_endless(b"x" * 1000, 10**6),
    )
    assert ex.status == 413 and ex.receive_calls == 0 and ex.bytes_consumed == 0


@pytest.mark.parametrize(
    "lengths",
    [
        (b"10", str(CAP + 1).encode()),
        (str(CAP + 1).encode(), b"10"),
        (b"garbage", str(CAP + 1).encode()),
    ],
)
async def test_any_repeated_length_over_the_cap_reads_nothing(lengths: tuple[bytes, bytes]) -> None:
    """With Content-Length given twice, the larger value decides, in either order, and an
    unreadable one does not hide the other: over the cap is 413 before any receive()."""
    app = WebhookApp(Spy(), app_secret=SECRET, max_body=CAP)
    ex = await call_asgi(
        app, headers=[(b"content-length", v) for v in lengths], chunks=_endless(b"x" * 1000, 10**6)
    )
    assert ex.status == 413 and ex.receive_calls == 0 and ex.bytes_consumed == 0


async def test_cap_is_configurable_and_inclusive() -> None:
    """``max_body`` sets the cap: a signed body of exactly that size passes, one more byte
    is 413 (checked while streaming in one-byte chunks)."""
    body = webhooks.encode(webhooks.envelope(messages=[webhooks.text_message("1555", "hi")]))
    for cap, expected in ((len(body), 200), (len(body) - 1, 413)):
        spy = Spy()
        app = WebhookApp(spy, app_secret=SECRET, max_body=cap)
        ex = await call_asgi(
            app,
            headers=[(b"x-hub-signature-256", signature(body))],
            chunks=[body[i : i + 1] for i in range(len(body))],
        )
        assert ex.status == expected
        assert ex.bytes_consumed <= cap + 1
        assert len(spy.calls) == (expected == 200)


# --------------------------------------------------------------------------------------
# Memory per request
# --------------------------------------------------------------------------------------

_amplifiers = st.sampled_from(
    [
        b"[" + b"{}," * (CAP // 3 - 1) + b"{}]",
        b"[" + b"[]," * (CAP // 3 - 1) + b"[]]",
        b'["' + b'ab","' * (CAP // 5 - 1) + b'ab"]',
        b"[" + b"1.5," * (CAP // 4 - 1) + b"1.5]",
        _batch(300),
        b"[" * (CAP // 2) + b"]" * (CAP // 2),
        b'{"object":"whatsapp_business_account","entry":[' + b"{}," * (CAP // 3 - 20) + b"{}]}",
        b"x" * CAP,
    ]
)


@budget(24)
@given(body=_amplifiers | bodies, signed=st.booleans(), streamed=st.booleans())
async def test_memory_per_request_is_bounded(body: bytes, signed: bool, streamed: bool) -> None:
    """Peak memory (tracemalloc) while one request is handled stays under a bound: for a
    body refused before parsing (bad signature, over the cap) a few times the cap; for a
    parsed one at most 48x the cap plus 2 MB (json.loads of ``[{},{},...]`` is ~24x)."""
    EXAMPLES["memory"] += 1
    spy = Spy()
    app = WebhookApp(spy, app_secret=SECRET, max_body=CAP)
    headers = [(b"x-hub-signature-256", signature(body) if signed else b"sha256=" + b"0" * 64)]
    chunks = [body[i : i + 4096] for i in range(0, len(body), 4096)] if streamed else [body]
    gc.collect()
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        ex = await call_asgi(app, headers=headers, chunks=chunks)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ex.raised is None and ex.complete
    used = peak - base
    if not signed or len(body) > CAP:
        assert spy.calls == []
        assert used <= 3 * CAP + 256 * 1024, used
    else:
        assert used <= 48 * CAP + 2 * 1024 * 1024, used


# --------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------


async def test_thousand_item_batch_and_one_more() -> None:
    """A signed 1000-message batch reaches the consumer as 1000 messages; 1001 items give
    1000 events plus one 'too many items' marker, never an error."""
    for n, expected in ((1000, 1000), (1001, 1001)):
        spy = Spy()
        app = WebhookApp(spy, app_secret=SECRET, max_body=3 * 1024 * 1024)
        body = _batch(n)
        ex = await call_asgi(
            app, headers=[(b"x-hub-signature-256", signature(body))], chunks=[body]
        )
        assert ex.status == 200 and json.loads(ex.body) == {"status": "processing"}
        (events,) = spy.calls
        assert len(events) == expected
        assert sum(isinstance(e, Message) for e in events) == 1000


# --------------------------------------------------------------------------------------
# Through the whole WhatsAppInterface: the agent never runs for an unsigned body
# --------------------------------------------------------------------------------------


@budget(40)
@given(
    payload=valid_payloads(),
    mode=st.sampled_from(SIGNATURE_MODES),
    cuts=st.lists(st.integers(0, 10**6), max_size=4),
)
async def test_fuzz_interface_agent_runs_only_for_signed_bodies(
    payload: dict[str, Any], mode: str, cuts: list[int]
) -> None:
    """Valid WhatsApp messages posted to a full WhatsAppInterface (memory store, Sender on
    the Cloud API emulator) with every kind of signature header: the agent runs only when
    one header validly signs the exact bytes, and then once per new message."""
    body = webhooks.encode(payload)
    n_messages = sum(
        1
        for m in payload["entry"][0]["changes"][0]["value"].get("messages", [])
        if m["type"] in ("text", "image", "location", "button")
    )
    assume(n_messages > 0 or mode == "valid")
    EXAMPLES["interface"] += 1
    asked: list[str] = []

    async def agent(request: Any) -> str:
        asked.append(request.text)
        return "ok"

    emulator = CloudAPIEmulator(access_token="emulator-token")
    media = emulator.add_media(b"\x89PNG\r\n\x1a\n" + bytes(64), "image/png")
    body = body.replace(b'"media-1"', json.dumps(media).encode())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=emulator), base_url="http://emulator.test"
    ) as client:
        sender = Sender(
            "emulator-token",
            PNID,
            base_url="http://emulator.test",
            client=client,
            retry=RetryPolicy.never(),
            rate_limit=None,
        )
        interface = WhatsAppInterface(
            agent, app_secret=SECRET, verify_token=TOKEN, sender=sender, phone_number_id=PNID
        )
        app = interface.attach_routes()
        req = Request(body, mode, b"application/json", "right", cuts, False, [])
        try:
            ex = await post(app, req)
            await interface.drain(10)
        finally:
            await interface.aclose()
            await emulator.aclose()
    assert ex.raised is None and ex.complete
    valid = any(signs(v, body) for k, v in req.headers() if k == b"x-hub-signature-256")
    if not valid:
        assert ex.status == 403 and asked == []
        assert interface.stats.received == 0
    elif mode in ("valid", "upper", "padded"):
        assert ex.status == 200
        assert len(asked) == n_messages
