"""InterfaceManager and WhatsAppInterface configuration, end to end on 127.0.0.1.

Two numbers in one app (routing by prefix, each replying from its own number), mounting the
manager inside FastAPI (no sub-mount lifespan: start on the first request, close from the
host app), env var fallbacks, missing credentials, and secrets kept out of reprs and logs.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.helpers import sign, text_webhook
from wa_agent.agents import AgentRequest
from wa_agent.exceptions import ConfigurationError
from wa_agent.interface import InterfaceMode, WhatsAppInterface
from wa_agent.manager import InterfaceManager
from wa_agent.server import BackgroundServer
from wa_agent.testing import webhooks
from wa_agent.testing.emulator import CloudAPIEmulator
from wa_agent.testing.simulator import Simulator

ALICE = "15551230001"
ENV = (
    "WHATSAPP_VERIFY_TOKEN",
    "WHATSAPP_APP_SECRET",
    "WHATSAPP_ACCESS_TOKEN",
    "WHATSAPP_PHONE_NUMBER_ID",
)


@pytest.fixture(autouse=True)
def _no_whatsapp_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts without WHATSAPP_* variables (a developer's shell may have them)."""
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def tagged(tag: str) -> Any:
    async def agent(request: AgentRequest) -> str:
        return f"{tag}: {request.text}"

    return agent


# -- several interfaces ----------------------------------------------------------------------
async def test_two_numbers_in_one_app_route_by_prefix() -> None:
    """Two interfaces (two phone numbers, two prefixes) in one app: each webhook reaches its
    own agent, each reply goes out from its own number, the root /health lists both, and
    stopping the server closes both (lifespan)."""
    one = WhatsAppInterface(tagged("one"), name="sales", phone_number_id="111111", prefix="/sales")
    two = WhatsAppInterface(
        tagged("two"), name="support", phone_number_id="222222", prefix="/support/", mode="chat"
    )
    manager = InterfaceManager([one, two])
    async with Simulator(manager) as sim:
        for interface, pnid, text in ((one, "111111", "to sales"), (two, "222222", "to support")):
            body = webhooks.envelope(
                messages=[webhooks.text_message(ALICE, text)], phone_number_id=pnid
            )
            [response] = await sim.deliver(body, interface=interface)
            assert response.json() == {"status": "processing"}
        await sim.settle()
        sent = {(m.phone_number_id, m.text) for m in sim.emulator.messages}
        assert sent == {("111111", "one: to sales"), ("222222", "two: to support")}
        assert sim.manager.webhook_url(two).endswith("/support/webhook")
        async with httpx.AsyncClient() as client:
            health = (await client.get(f"{sim.bot_url}/health")).json()
            own = (await client.get(f"{sim.bot_url}/support/health")).json()
            missing = await client.get(f"{sim.bot_url}/nowhere/webhook")
        assert health["status"] == "ok"
        assert [(i["interface"], i["prefix"], i["mode"]) for i in health["interfaces"]] == [
            ("sales", "/sales", "task"),
            ("support", "/support", "chat"),
        ]
        assert [i["processed"] for i in health["interfaces"]] == [1, 1]
        assert own["interface"] == "support"
        assert missing.status_code == 404
        senders = [one.sender, two.sender]
    # The manager's lifespan closed both interfaces: their Senders and stores.
    assert not one._started and not two._started
    assert all(s is not None and s.is_closed for s in senders)


async def test_message_for_the_other_number_is_ignored() -> None:
    """A webhook whose phone_number_id belongs to the other interface is not answered by the
    interface whose URL it was posted to (a mis-configured callback URL cannot cross bots)."""
    one = WhatsAppInterface(tagged("one"), name="a", phone_number_id="111111", prefix="/a")
    two = WhatsAppInterface(tagged("two"), name="b", phone_number_id="222222", prefix="/b")
    async with Simulator(InterfaceManager([one, two])) as sim:
        body = webhooks.envelope(
            messages=[webhooks.text_message(ALICE, "hi")], phone_number_id="111111"
        )
        [response] = await sim.deliver(body, interface=two)
        assert response.json() == {"status": "ignored"}
        await sim.settle()
        assert sim.emulator.messages == []


def test_manager_rejects_shared_prefixes_and_no_interfaces() -> None:
    """Two interfaces on one prefix, or none at all, is a configuration mistake."""
    with pytest.raises(ValueError, match="share a prefix"):
        InterfaceManager(
            [
                WhatsAppInterface(tagged("a"), prefix="/wa"),
                WhatsAppInterface(tagged("b"), prefix="wa/"),
            ]
        )
    with pytest.raises(ValueError, match="at least one"):
        InterfaceManager([])


# -- mounted inside FastAPI ------------------------------------------------------------------
@contextlib.asynccontextmanager
async def emulator_server() -> AsyncIterator[tuple[CloudAPIEmulator, str]]:
    emulator = CloudAPIEmulator(access_token="mount-token")
    async with emulator.serve() as url:
        yield emulator, url


async def test_mounted_in_fastapi_starts_on_first_request_and_closes() -> None:
    """Mounted in FastAPI (where sub-mount lifespans never run), the interface starts on the
    first request, answers signed webhooks next to the host app's own routes, and closes
    (Sender and store) from the host app's lifespan."""
    from fastapi import FastAPI

    async with emulator_server() as (emulator, api_url):
        interface = WhatsAppInterface(
            tagged("bot"),
            verify_token="vt",
            app_secret="s3cret",
            access_token="mount-token",
            phone_number_id="100000000000001",
            base_url=api_url,
            prefix="/wa",
        )
        manager = InterfaceManager([interface])
        closed: list[bool] = []

        @contextlib.asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            yield
            await manager.close()
            closed.append(True)

        app = FastAPI(lifespan=lifespan)

        @app.get("/ping")
        async def ping() -> dict[str, str]:
            return {"pong": "yes"}

        app.mount("/bots", manager.app)
        async with BackgroundServer(app) as server, httpx.AsyncClient() as client:
            assert not interface._started
            assert (await client.get(f"{server.url}/ping")).json() == {"pong": "yes"}
            assert not interface._started
            verify = await client.get(
                f"{server.url}/bots/wa/webhook",
                params={"hub.mode": "subscribe", "hub.verify_token": "vt", "hub.challenge": "42"},
            )
            assert (verify.status_code, verify.text) == (200, "42")
            body = text_webhook(ALICE, "hello")
            response = await client.post(
                f"{server.url}/bots/wa/webhook",
                content=body,
                headers={"x-hub-signature-256": sign(body, "s3cret")},
            )
            assert response.json() == {"status": "processing"}
            assert interface._started
            forged = await client.post(
                f"{server.url}/bots/wa/webhook",
                content=body,
                headers={"x-hub-signature-256": sign(body, "wrong")},
            )
            assert forged.status_code == 403
            [reply] = await emulator.wait_for_messages(1, to=ALICE)
            assert reply.text == "bot: hello"
            health = (await client.get(f"{server.url}/bots/health")).json()
            assert health["interfaces"][0]["processed"] == 1
            sender = interface.sender
            assert sender is not None
        assert closed == [True]
        assert not interface._started
        assert interface.sender is None and sender.is_closed


# -- configuration ---------------------------------------------------------------------------
def test_env_var_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    """None secrets fall back to the WHATSAPP_* variables; explicit arguments win."""
    monkeypatch.setenv("WHATSAPP_VERIFY_TOKEN", "env-verify")
    monkeypatch.setenv("WHATSAPP_APP_SECRET", "env-secret")
    monkeypatch.setenv("WHATSAPP_ACCESS_TOKEN", "env-token")
    monkeypatch.setenv("WHATSAPP_PHONE_NUMBER_ID", "123456789")
    interface = WhatsAppInterface(tagged("x"))
    assert interface.verify_token is not None and interface.verify_token.reveal() == "env-verify"
    assert interface.app_secret is not None and interface.app_secret.reveal() == "env-secret"
    assert interface.settings.access_token is not None
    assert interface.settings.access_token.reveal() == "env-token"
    assert interface.phone_number_id == "123456789"
    assert interface.missing_configuration() == []
    explicit = WhatsAppInterface(
        tagged("x"), verify_token="v", app_secret="s", access_token="t", phone_number_id="42"
    )
    assert explicit.verify_token is not None and explicit.verify_token.reveal() == "v"
    assert explicit.app_secret is not None and explicit.app_secret.reveal() == "s"
    assert explicit.phone_number_id == "42"


async def test_starting_without_credentials_names_the_missing_variables() -> None:
    """Starting with no token and no phone number id raises ConfigurationError naming the
    variables to set, directly and through manager.start() (no server left running)."""
    interface = WhatsAppInterface(tagged("x"), verify_token="v")
    assert interface.missing_configuration() == [
        "WHATSAPP_ACCESS_TOKEN",
        "WHATSAPP_PHONE_NUMBER_ID",
    ]
    with pytest.raises(ConfigurationError) as info:
        await interface.start()
    assert "WHATSAPP_ACCESS_TOKEN" in str(info.value)
    assert "WHATSAPP_PHONE_NUMBER_ID" in str(info.value)
    partial = WhatsAppInterface(tagged("x"), access_token="t")
    with pytest.raises(ConfigurationError, match="WHATSAPP_PHONE_NUMBER_ID") as info:
        await partial.start()
    assert "WHATSAPP_ACCESS_TOKEN" not in str(info.value)
    manager = InterfaceManager([WhatsAppInterface(tagged("x"))])
    with pytest.raises(ConfigurationError, match="WHATSAPP_ACCESS_TOKEN"):
        await manager.start("127.0.0.1", 0)
    assert manager.url is None


def test_mode_and_prefix_normalisation() -> None:
    """Mode strings map to the enum; prefixes get a leading slash and lose a trailing one."""
    assert WhatsAppInterface(tagged("x"), mode="CHAT").mode is InterfaceMode.CHAT
    assert WhatsAppInterface(tagged("x"), mode=InterfaceMode.TASK).mode is InterfaceMode.TASK
    assert WhatsAppInterface(tagged("x"), prefix="bots/wa/").prefix == "/bots/wa"


async def test_secrets_stay_out_of_reprs_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    """repr of the interface, its Sender and the manager masks every secret, and a whole
    conversation logged at DEBUG never contains a secret, nor a message body at INFO+."""
    secrets = {
        "verify": "vt-0123456789abcdef",
        "secret": "as-0123456789abcdef",
        "token": "simulator-access-token",
    }
    interface = WhatsAppInterface(
        tagged("bot"),
        verify_token=secrets["verify"],
        app_secret=secrets["secret"],
        phone_number_id="100000000000001",
    )
    manager = InterfaceManager([interface])
    with caplog.at_level(logging.DEBUG):
        async with Simulator(manager, access_token=secrets["token"]) as sim:
            reply = await sim.user(ALICE).ask("my pin is 4711")
            assert reply.text == "bot: my pin is 4711"
            texts = [
                repr(interface),
                repr(interface.sender),
                repr(manager),
                repr(interface.verify_token),
                repr(interface.app_secret),
                str(interface.app_secret),
                repr(vars(interface)),
            ]
    for text in texts:
        for value in secrets.values():
            assert value not in text, text
    for record in caplog.records:
        message = record.getMessage()
        for value in secrets.values():
            assert value not in message, message
        if record.levelno >= logging.INFO:
            assert "4711" not in message, message


# -- garbage collector ------------------------------------------------------------------------
async def test_serving_tunes_the_gc_but_a_background_start_does_not() -> None:
    """The lifespan startup of a served app collects once, freezes what is left
    (``gc.get_freeze_count()`` > 0) and makes full collections rarer (third threshold 100,
    the previous one back after close()); ``tune_gc=False`` and a background ``start()``
    (a notebook kernel) leave the collector alone."""
    import gc

    from wa_agent.sender import Sender

    def interface() -> WhatsAppInterface:
        sender = Sender("token", "111111", base_url="http://127.0.0.1:9")
        return WhatsAppInterface(
            tagged("x"), sender=sender, phone_number_id="111111", verify_token="v"
        )

    gc.unfreeze()
    before = gc.get_threshold()
    assert before[2] < 100
    served = InterfaceManager([interface()])
    await served.open()  # what the ASGI lifespan startup runs under uvicorn
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (before[0], before[1], 100)
    await served.close()
    assert gc.get_threshold() == before
    gc.unfreeze()

    never = InterfaceManager([interface()], tune_gc=False)
    await never.open()
    assert gc.get_threshold() == before
    await never.close()
    assert gc.get_freeze_count() == 0

    background = InterfaceManager([interface()])
    await background.start(port=0)
    try:
        assert gc.get_freeze_count() == 0
        assert gc.get_threshold() == before
    finally:
        await background.stop()
