"""The operator console in a real Jupyter kernel (ipykernel over ZMQ, driven like a front end):
the widget's buttons act on a real WhatsAppInterface on the Simulator, the resulting Graph
calls reach the Cloud API emulator, and the widget state reaches the front end while no cell
runs."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.jupyter_kernel import Kernel

ANN = "15551230001"

SETUP = f"""
import asyncio, json
from wa_agent import WhatsAppInterface
from wa_agent.testing import Simulator
from wa_agent.widget import ConversationLog, ConversationsWidget

async def echo(request):
    return "echo: " + request.text

iface = WhatsAppInterface(echo)
clog = ConversationLog()
iface.listeners.append(clog)
sim = Simulator(iface)
await sim.start()
ann = sim.user("{ANN}", "Ann")
print((await ann.ask("hello")).text)
view = ConversationsWidget(clog, operator=iface)
ctl = view.controls["{ANN}"]
"""

TAKE_OVER = """
display(view)
ctl.toggle.click()
print(view.console.pending)
"""


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    """A kernel with an echo bot on the Simulator, Ann's conversation in the log and the
    console widget (not yet displayed)."""
    k = Kernel(tmp_path_factory.mktemp("kernel"))
    try:
        assert k.check(SETUP, timeout=60).strip() == "echo: hello"
        yield k
    finally:
        try:
            if k.is_alive():
                k.run("await sim.stop()", timeout=15)
        finally:
            k.shutdown()


def _updates(kernel: Kernel, cell: str) -> list[dict[str, Any]]:
    """Widget state updates sent to the front end on behalf of ``cell``, while it ran or
    after it finished (background tasks keep the parent of the cell that started them)."""
    return [
        m["content"]["data"]["state"]
        for m in kernel.cell_comms + kernel.background
        if m["msg_type"] == "comm_msg"
        and m["content"]["data"].get("method") == "update"
        and m["parent_header"].get("msg_id") == cell
    ]


def _wait_for_update(kernel: Kernel, cell: str, wanted: dict[str, Any]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        kernel.drain_background(0.1)
        if any(
            all(state.get(k) == v for k, v in wanted.items()) for state in _updates(kernel, cell)
        ):
            return
    pytest.fail(f"no update {wanted} reached the front end; got {_updates(kernel, cell)[-5:]}")


def test_take_over_send_and_hand_back_in_a_kernel(kernel: Kernel) -> None:
    """Clicking "Take over" returns at once (the handoff runs as a task started by the
    click) and the button's new label reaches the front end; Ann's next message is not answered;
    the typed text goes out as a Graph messages call to the emulator and the box is cleared;
    "Hand back" makes the agent answer her next message."""
    cell = kernel.submit(TAKE_OVER)
    result = kernel.collect(cell)
    assert result.ok, result.describe()
    assert result.stdout.strip() == "1"  # the click did not wait for the handoff
    assert any("application/vnd.jupyter.widget-view+json" in o["data"] for o in result.outputs)
    _wait_for_update(kernel, cell, {"description": "Hand back"})
    out = kernel.check(f"""
print(await iface.is_handed_off("{ANN}"))
await ann.send_text("are you a bot?")
await sim.settle()
print(json.dumps(sim.emulator.texts_to("{ANN}")))
print("wa-handed-off" in view.rows["{ANN}"].value)
""")
    handed_off, texts, marked = out.splitlines()
    assert handed_off == "True" and marked == "True"
    assert json.loads(texts) == ["echo: hello"]

    send = kernel.submit("""
ctl.text.value = "Sam here, how can I help?"
ctl.send_button.click()
""")
    assert kernel.collect(send).ok
    _wait_for_update(kernel, send, {"value": ""})  # the box is cleared after the send
    out = kernel.check(f"""
await view.wait()
calls = [c for c in sim.emulator.calls if c.endpoint == "messages"]
print(json.dumps({{"status": calls[-1].status, "body": calls[-1].body}}))
print(json.dumps([e.direction for e in clog["{ANN}"].messages]))
""")
    call, directions = out.splitlines()
    sent = json.loads(call)
    assert sent["status"] == 200
    assert sent["body"]["to"] == ANN and sent["body"]["type"] == "text"
    assert sent["body"]["text"]["body"] == "Sam here, how can I help?"
    assert json.loads(directions) == ["in", "out", "note", "in", "operator"]

    out = kernel.check(f"""
ctl.toggle.click()
await view.wait()
print(ctl.toggle.description, await iface.is_handed_off("{ANN}"))
print((await ann.ask("back?")).text)
""")
    assert out.splitlines() == ["Take over False", "echo: back?"]


def test_send_outside_the_window_is_an_error_in_the_row(kernel: Kernel) -> None:
    """Sending to a contact who never wrote to the interface (outside the 24-hour window)
    shows the OutsideServiceWindow error in that contact's row; nothing reaches the emulator
    and the typed text stays."""
    out = kernel.check("""
from wa_agent.events import Message
from datetime import datetime, UTC
clog.inbound(Message(id="wamid.x", sender="15559990000", timestamp=datetime.now(UTC),
                     type="text", text="seen elsewhere"))
before = len(sim.emulator.messages)
other = view.controls["15559990000"]
other.text.value = "hello?"
other.send_button.click()
await view.wait()
print(len(sim.emulator.messages) - before, other.text.value)
print(clog["15559990000"].error)
""")
    count, error = out.splitlines()
    assert count == "0 hello?"
    assert error.startswith("could not send: ") and "24 hours" in error
