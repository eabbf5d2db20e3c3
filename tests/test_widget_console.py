"""The conversations widget as an operator console (human handoff), without a kernel: the log's
handoff/resume/operator events, their rendering, the per-row controls driven by a fake
operator, and InterfaceManager.widget() on real interfaces and the Simulator (a real kernel
and Chromium drive it in tests/test_widget_console_kernel.py and
tests/test_widget_console_browser.py)."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from typing import Any

import pytest

from wa_agent import AgentRequest, Handoff, InterfaceManager, WhatsAppInterface
from wa_agent.events import Message, StatusUpdate
from wa_agent.testing import Simulator, webhooks
from wa_agent.widget import ConversationLog, ConversationsWidget, render_conversation

T0 = datetime(2026, 1, 2, 10, 30, 0, tzinfo=UTC)
ATTACK = '<img src=x onerror="alert(1)">'


def handed(contact: str, by: str = "operator", note: str | None = None) -> Handoff:
    return Handoff(contact=contact, since=T0, by=by, note=note)


def msg(sender: str = "15550001", text: str = "hi", wamid: str = "wamid.in1") -> Message:
    return Message(id=wamid, sender=sender, timestamp=T0, type="text", text=text)


class FakeOperator:
    """Records the calls and tells the log what the interface's listeners would hear."""

    def __init__(self, log: ConversationLog, *, fail_send: Exception | None = None) -> None:
        self.log = log
        self.calls: list[tuple[str, ...]] = []
        self.fail_send = fail_send
        self.gate: asyncio.Event | None = None  # when set, calls wait for it

    async def _wait(self) -> None:
        if self.gate is not None:
            await self.gate.wait()

    async def handoff(self, contact: str, note: str | None = None) -> Handoff:
        await self._wait()
        self.calls.append(("handoff", contact))
        record = handed(contact, note=note)
        self.log.handoff(contact, record)
        return record

    async def resume(self, contact: str) -> bool:
        await self._wait()
        self.calls.append(("resume", contact))
        self.log.resume(contact, "operator")
        return True

    async def send(self, contact: str, text: str | None = None) -> list[str]:
        await self._wait()
        if self.fail_send is not None:
            raise self.fail_send
        self.calls.append(("send", contact, text or ""))
        self.log.operator(contact, text or "", "wamid.op1")
        return ["wamid.op1"]


# -- the log and its rendering ---------------------------------------------------------------


def test_handoff_marks_the_row_until_resume() -> None:
    """handoff() sets handed_off/by/note, adds a note entry and marks the row (class
    wa-handed-off, badge 'handed off — operator'); resume() clears all of it and says so."""
    clog = ConversationLog()
    clog.inbound(msg())
    clog.handoff("15550001", handed("15550001", note="asked for a human"))
    conv = clog["15550001"]
    assert (conv.handed_off, conv.handoff_by, conv.handoff_note) == (
        True,
        "operator",
        "asked for a human",
    )
    markup = render_conversation(conv)
    assert 'class="wa-row wa-handed-off"' in markup
    assert '<span class="wa-handoff">handed off — operator</span>' in markup
    assert '<span class="wa-handoff-note">asked for a human</span>' in markup
    assert "wa-bubble wa-note" in markup

    clog.resume("15550001", "operator")
    conv = clog["15550001"]
    assert (conv.handed_off, conv.handoff_by, conv.handoff_note) == (False, None, None)
    markup = render_conversation(conv)
    assert "wa-handed-off" not in markup and 'class="wa-handoff"' not in markup
    assert [e.direction for e in conv.messages] == ["in", "note", "note"]
    assert conv.messages[-1].text == "handed back to the agent (operator)"


def test_operator_messages_are_shown_as_the_operators_with_ticks() -> None:
    """An operator message is its own bubble (wa-operator, labelled 'operator'), distinct from
    the bot's; its delivery status moves its ticks like the bot's messages."""
    clog = ConversationLog()
    clog.inbound(msg())
    clog.outbound("15550001", "bot says", wamid="wamid.out1")
    clog.operator("15550001", "a person says", "wamid.op1")
    clog.status(StatusUpdate(id="wamid.op1", status="read", recipient="15550001", timestamp=T0))
    markup = render_conversation(clog["15550001"])
    assert markup.count("wa-bubble wa-operator") == 1
    assert markup.count("wa-bubble wa-out") == 1
    op = markup[markup.index("wa-bubble wa-operator") :]
    assert op.index('<span class="wa-label">operator</span>') < op.index("a person says")
    assert "wa-tick-read" in op


def test_handoff_note_by_and_operator_text_are_escaped() -> None:
    """A note, a 'by' and an operator message carrying HTML appear escaped, never as
    markup."""
    clog = ConversationLog()
    clog.handoff("15550001", handed("15550001", by="<b>agent</b>", note=ATTACK))
    clog.operator("15550001", ATTACK, None)
    markup = render_conversation(clog["15550001"])
    assert "<img" not in markup and "<b>agent" not in markup
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in markup
    assert "handed off — &lt;b&gt;agent&lt;/b&gt;" in markup


def test_status_before_the_operator_message_is_logged_is_applied() -> None:
    """A status that overtakes the operator's message (race with the send) is kept and
    applied when the message is logged."""
    clog = ConversationLog()
    clog.status(
        StatusUpdate(id="wamid.op9", status="delivered", recipient="15550001", timestamp=T0)
    )
    entry = clog.operator("15550001", "hello", "wamid.op9")
    assert entry.status == "delivered" and entry.ticks == "✓✓"


# -- the console -------------------------------------------------------------------------------


def test_without_an_operator_there_are_no_controls() -> None:
    """A plain widget has no controls: the rows are the box's children directly."""
    clog = ConversationLog()
    clog.inbound(msg())
    view = ConversationsWidget(clog)
    assert view.controls == {} and view.console is None
    assert view._rows_box.children == (view.rows["15550001"],)
    view.close()


async def test_take_over_send_and_hand_back_from_the_buttons() -> None:
    """Take over calls handoff and the label turns to 'Hand back'; Send sends the box's text
    and clears it; Hand back calls resume and the label returns to 'Take over'. The row
    shows the badge and the operator's bubble in between."""
    clog = ConversationLog()
    clog.inbound(msg())
    op = FakeOperator(clog)
    view = ConversationsWidget(clog, operator=op)
    controls = view.controls["15550001"]
    assert view._rows_box.children[0].children == (view.rows["15550001"], controls.box)
    assert controls.toggle.description == "Take over"

    controls.toggle.click()
    await view.wait()
    assert op.calls == [("handoff", "15550001")]
    assert controls.toggle.description == "Hand back"
    assert "wa-handed-off" in view.rows["15550001"].value

    controls.text.value = "  I am a person  "
    controls.send_button.click()
    await view.wait()
    assert op.calls[-1] == ("send", "15550001", "I am a person")
    assert controls.text.value == ""
    assert "wa-bubble wa-operator" in view.rows["15550001"].value

    controls.toggle.click()
    await view.wait()
    assert op.calls[-1] == ("resume", "15550001")
    assert controls.toggle.description == "Take over"
    assert "wa-handed-off" not in view.rows["15550001"].value
    view.close()


async def test_clicks_never_block_and_disable_the_button_meanwhile() -> None:
    """A click returns before the operator call finishes; the button is disabled until it
    has, so a double click does not hand off twice."""
    clog = ConversationLog()
    clog.inbound(msg())
    op = FakeOperator(clog)
    op.gate = asyncio.Event()
    view = ConversationsWidget(clog, operator=op)
    controls = view.controls["15550001"]
    controls.toggle.click()
    await asyncio.sleep(0)
    assert op.calls == [] and view.console is not None and view.console.pending == 1
    assert controls.toggle.disabled
    op.gate.set()
    await view.wait()
    assert op.calls == [("handoff", "15550001")]
    assert not controls.toggle.disabled
    view.close()


async def test_a_failed_send_is_an_error_in_the_row_and_keeps_the_text() -> None:
    """An error from send (e.g. outside the 24-hour window) is shown in that contact's row
    (escaped) and the typed text stays in the box; nothing is raised."""
    clog = ConversationLog()
    clog.inbound(msg())
    op = FakeOperator(clog, fail_send=RuntimeError("outside the 24-hour window <b>"))
    view = ConversationsWidget(clog, operator=op)
    controls = view.controls["15550001"]
    controls.text.value = "hello?"
    controls.send_button.click()
    await view.wait()
    assert controls.text.value == "hello?"
    row = view.rows["15550001"].value
    assert "wa-bubble wa-error" in row
    assert "could not send: outside the 24-hour window &lt;b&gt;" in row
    assert not controls.send_button.disabled
    view.close()


async def test_empty_text_sends_nothing() -> None:
    """Send with an empty (or blank) box makes no call."""
    clog = ConversationLog()
    clog.inbound(msg())
    op = FakeOperator(clog)
    view = ConversationsWidget(clog, operator=op)
    view.controls["15550001"].text.value = "   "
    view.controls["15550001"].send_button.click()
    await view.wait()
    assert op.calls == []
    view.close()


async def test_click_on_another_thread_runs_on_the_widgets_loop() -> None:
    """A click handled off the loop's thread is scheduled on the widget's loop (where the
    interface runs), not run on that thread."""
    clog = ConversationLog()
    clog.inbound(msg())
    op = FakeOperator(clog)
    view = ConversationsWidget(clog, operator=op)
    ran_on: list[int] = []
    original = op.handoff

    async def handoff(contact: str, note: str | None = None) -> Handoff:
        ran_on.append(threading.get_ident())
        return await original(contact, note)

    op.handoff = handoff  # type: ignore[method-assign]
    thread = threading.Thread(target=view.controls["15550001"].toggle.click)
    thread.start()
    thread.join()
    for _ in range(50):
        await asyncio.sleep(0.01)
        if op.calls:
            break
    await view.wait()
    assert op.calls == [("handoff", "15550001")]
    assert ran_on == [threading.get_ident()]
    view.close()


def test_click_without_a_running_loop_is_an_error_in_the_row() -> None:
    """With no event loop to run on, a click records an error in the row instead of
    blocking or raising."""
    clog = ConversationLog()
    clog.inbound(msg())
    view = ConversationsWidget(clog, operator=FakeOperator(clog))
    view.controls["15550001"].toggle.click()
    assert "could not take over: no running event loop" in view.rows["15550001"].value
    view.close()


async def test_new_and_evicted_contacts_get_and_lose_controls() -> None:
    """A contact that appears gets controls; one evicted by max_contacts loses its row and
    its controls (closed)."""
    clog = ConversationLog(max_contacts=1)
    view = ConversationsWidget(clog, operator=FakeOperator(clog))
    clog.inbound(msg("15550001"))
    first = view.controls["15550001"]
    clog.inbound(msg("15550002", wamid="wamid.in2"))
    assert list(view.controls) == ["15550002"]
    assert first.toggle.comm is None  # closed
    assert len(view._rows_box.children) == 1
    view.close()


# -- routing for several interfaces ----------------------------------------------------------


class FakeInterface(FakeOperator):
    def __init__(self, name: str, log: ConversationLog) -> None:
        super().__init__(log)
        self.name = name
        self.listeners: list[Any] = []


async def test_router_sends_each_contact_to_the_interface_it_wrote_to() -> None:
    """With two interfaces, a contact's actions go to the interface whose listener saw their
    message; an unknown contact is a LookupError naming it."""
    from wa_agent._operator_console import OperatorRouter

    clog = ConversationLog()
    one, two = FakeInterface("one", clog), FakeInterface("two", clog)
    router = OperatorRouter([one, two])  # type: ignore[list-item]
    one.listeners[0].inbound(msg("15550001"))
    two.listeners[0].outbound("15550002", "hello")
    await router.handoff("15550001")
    await router.send("15550002", "hi")
    await router.resume("15550001")
    assert one.calls == [("handoff", "15550001"), ("resume", "15550001")]
    assert two.calls == [("send", "15550002", "hi")]
    with pytest.raises(LookupError, match="15550003"):
        await router.handoff("15550003")


async def echo(request: AgentRequest) -> str:
    return f"echo: {request.text}"


def test_manager_widget_is_a_console_on_its_interface_unless_told_not() -> None:
    """With one interface, manager.widget() acts on that interface; operator=False gives the
    read-only view without controls."""
    interface = WhatsAppInterface(echo, phone_number_id="100000000000001")
    manager = InterfaceManager([interface])
    view = manager.widget()
    assert view.console is not None and view.console.operator is interface
    plain = manager.widget(operator=False)
    assert plain.console is None
    view.close()
    plain.close()


async def test_manager_widget_routes_each_contact_to_its_interface() -> None:
    """With two interfaces (two numbers), the console started from manager.widget() hands
    off and answers a contact on the interface their message came in on: the handoff is
    stored there only and the operator's message goes out from that number."""
    one = WhatsAppInterface(echo, phone_number_id="100000000000001", prefix="/one")
    two = WhatsAppInterface(echo, phone_number_id="100000000000002", prefix="/two")
    async with Simulator(InterfaceManager([one, two])) as sim:
        view = sim.manager.widget()
        body = webhooks.envelope(
            messages=[webhooks.text_message("15551230009", "hi two")],
            phone_number_id="100000000000002",
        )
        await sim.deliver(body, interface=two)
        await sim.settle()
        controls = view.controls["15551230009"]
        controls.toggle.click()
        await view.wait()
        assert await two.is_handed_off("15551230009")
        assert not await one.is_handed_off("15551230009")
        controls.text.value = "a person on number two"
        controls.send_button.click()
        await view.wait()
        sent = sim.emulator.sent_to("15551230009")
        assert [(m.text, m.phone_number_id) for m in sent] == [
            ("echo: hi two", "100000000000002"),
            ("a person on number two", "100000000000002"),
        ]
        assert "could not" not in view.rows["15551230009"].value
        view.close()
