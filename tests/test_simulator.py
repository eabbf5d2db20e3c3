"""The Simulator: a bot on the emulator, users sending Meta-shaped webhooks, Meta's quirks."""

from __future__ import annotations

import asyncio
import json

import pytest

from wa_agent import AgentReply, AgentRequest, InterfaceManager, WhatsAppInterface
from wa_agent.testing import Simulator, webhooks


async def echo(request: AgentRequest) -> str:
    return f"echo:{request.text}"


async def test_user_round_trip_and_statuses_reach_the_bot() -> None:
    """A user's text reaches the agent; the reply comes back to that user; the bot gets
    sent/delivered/read statuses for its reply (visible in its health counters)."""
    async with Simulator(echo) as sim:
        reply = await sim.user("15551230001").ask("ping")
        assert reply.text == "echo:ping"
        await sim.settle()
        assert sim.interface.health()["statuses"] == 3


async def test_signed_like_meta_with_escaped_unicode() -> None:
    """Bodies are signed over their exact bytes, non-ASCII sent as \\uXXXX escapes."""
    async with Simulator(echo) as sim:
        reply = await sim.user("15551230002", "Jörg").ask("grüß dich 👋")
        assert reply.text == "echo:grüß dich 👋"
        body = webhooks.encode(webhooks.envelope(messages=[webhooks.text_message("1", "ä")]))
        assert b"\\u00e4" in body and "ä".encode() not in body


async def test_duplicate_delivery_gives_one_reply() -> None:
    """Meta's at-least-once delivery (3 concurrent copies) produces exactly one reply."""
    async with Simulator(echo) as sim:
        item = webhooks.text_message("15551230003", "once")
        responses = await sim.deliver(webhooks.envelope(messages=[item]), times=3)
        assert [r.status_code for r in responses] == [200, 200, 200]
        await sim.settle()
        assert sim.emulator.texts_to("15551230003") == ["echo:once"]
        assert sim.interface.health()["duplicates"] == 2


async def test_batch_of_several_users_in_one_body() -> None:
    """One webhook body carrying messages of three users answers all three (never [0])."""
    async with Simulator(echo) as sim:
        items = [webhooks.text_message(f"1555123001{i}", f"m{i}") for i in range(3)]
        await sim.deliver(webhooks.envelope(messages=items))
        await sim.settle()
        for i in range(3):
            assert sim.emulator.texts_to(f"1555123001{i}") == [f"echo:m{i}"]


async def test_shuffled_statuses_only_move_forward() -> None:
    """With statuses delivered out of order, the delivery state still ends at 'read'."""
    async with Simulator(echo, statuses="shuffle", seed=7) as sim:
        user = sim.user("15551230020")
        reply = await user.ask("order?")
        await sim.settle()
        assert await sim.interface.store.get_status(sim.interface.name, reply.wamid) == "read"


async def test_throttled_send_is_retried_transparently() -> None:
    """A 130429 from the Cloud API is retried by the Sender; the user gets one reply."""
    async with Simulator(echo) as sim:
        sim.emulator.fail_next(2, code=130429, http_status=429)
        reply = await sim.user("15551230030").ask("slow down")
        assert reply.text == "echo:slow down"
        await sim.settle()
        assert sim.emulator.texts_to("15551230030") == ["echo:slow down"]


async def test_media_from_user_and_back() -> None:
    """Images and documents sent by a user arrive as bytes; an image reply arrives as bytes."""
    got: list[tuple[str, bytes, str | None]] = []

    async def agent(request: AgentRequest) -> AgentReply:
        for a in request.attachments:
            got.append((a.kind, a.data, a.filename))
        return AgentReply(text="thanks", images=[b"\x89PNG\r\n\x1a\n" + b"0" * 64])

    async with Simulator(agent) as sim:
        user = sim.user("15551230040")
        await user.send_document(b"%PDF-1.4 test", "report.pdf", caption="read this")
        first = await user.next_reply()
        image = await user.next_reply()
        assert first.text == "thanks"
        assert image.type == "image" and image.data is not None
        assert image.data.startswith(b"\x89PNG")
        assert got == [("document", b"%PDF-1.4 test", "report.pdf")]


async def test_interface_keeps_its_own_sender_and_secrets() -> None:
    """An interface passed in keeps its configuration; the simulator only fills gaps."""
    interface = WhatsAppInterface(echo, app_secret="mine", verify_token="vt", name="own")
    async with Simulator(interface) as sim:
        assert sim.interface is interface
        assert interface.app_secret is not None and interface.app_secret.reveal() == "mine"
        assert (await sim.user("15551230050").ask("x")).text == "echo:x"
        # An unsigned body is refused because the interface has a secret.
        body = webhooks.envelope(messages=[webhooks.text_message("15551230050", "y")])
        (response,) = await sim.deliver(body, signed=False)
        assert response.status_code == 403


async def test_interface_with_its_number_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With WHATSAPP_PHONE_NUMBER_ID exported (as after going live), an interface tested
    on the simulator is written to on its own number and answers at once (the webhooks used
    to carry the simulator's default number, which the interface ignored as foreign)."""
    monkeypatch.setenv("WHATSAPP_PHONE_NUMBER_ID", "123456789012345")
    interface = WhatsAppInterface(echo, mode="chat")
    assert interface.phone_number_id == "123456789012345"
    async with Simulator(interface) as sim:
        assert sim.number_id_of(interface) == "123456789012345"
        reply = await sim.user("15551230070").ask("hi", timeout=5)
        assert reply.text == "echo:hi"
        await sim.settle()
        assert {m.phone_number_id for m in sim.emulator.messages} == {"123456789012345"}
        assert sim.interface.health()["statuses"] == 3


async def test_manager_interfaces_each_get_their_own_number() -> None:
    """In a manager, the simulator's Sender for each interface uses that interface's own
    number, and users reach the first interface on its number."""
    first = WhatsAppInterface(echo, phone_number_id="111111111111111", prefix="/a")
    second = WhatsAppInterface(echo, phone_number_id="222222222222222", prefix="/b")
    async with Simulator(InterfaceManager([first, second])) as sim:
        assert (await sim.user("15551230071").ask("x", timeout=5)).text == "echo:x"
        assert first.sender is not None and second.sender is not None
        assert (first.sender.phone_number_id, second.sender.phone_number_id) == (
            "111111111111111",
            "222222222222222",
        )
        assert sim.number_id_of(second) == "222222222222222"


async def test_not_running_is_a_clear_error() -> None:
    """Using a simulator outside `async with` says how to start it."""
    sim = Simulator(echo)
    with pytest.raises(RuntimeError, match="not running"):
        await sim.deliver(webhooks.envelope(messages=[webhooks.text_message("1", "x")]))


async def test_next_reply_times_out_with_a_message() -> None:
    """Waiting for a reply that never comes raises TimeoutError naming the user."""

    async def silent(request: AgentRequest) -> None:
        return None

    async with Simulator(silent) as sim:
        user = sim.user("15551230060")
        await user.send_text("hello?")
        with pytest.raises(TimeoutError, match="15551230060"):
            await user.next_reply(timeout=0.3)


async def test_concurrent_users_get_their_own_replies() -> None:
    """Twenty users asking at once each get exactly their own echo."""

    async def slow_echo(request: AgentRequest) -> str:
        await asyncio.sleep(0.05)
        return f"{request.sender}:{request.text}"

    async with Simulator(slow_echo) as sim:
        users = [sim.user(f"155512310{i:02d}") for i in range(20)]
        replies = await asyncio.gather(*(u.ask(f"q{i}") for i, u in enumerate(users)))
        assert [r.text for r in replies] == [f"{u.number}:q{i}" for i, u in enumerate(users)]
        wamids = {r.wamid for r in replies}
        assert len(wamids) == 20 and all(w.startswith("wamid.") for w in wamids)
        assert all(json.dumps(r.raw).count(r.text or "") == 1 for r in replies)
