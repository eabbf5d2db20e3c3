"""The notebooks in ``notebooks/`` executed by nbclient in a real kernel (this venv's Python).

* ``quickstart.ipynb`` runs as shipped, offline (it uses the Simulator). Before its last cell
  (tagged ``finish``: settle and stop) the test waits, with the kernel idle, until the
  message sent with the phone's Send button has been answered and marked read by background
  tasks, then reads the widgets' state back with one extra cell.
* ``going_live.ipynb`` needs Meta and ngrok, so CI runs its code cells verbatim with three
  honest substitutions: the ``WHATSAPP_*``/``NGROK_AUTHTOKEN`` variables hold test values,
  pyngrok runs ``tests/fake_ngrok.py`` (a real local forwarder), and one inserted cell points
  the interface at a Cloud API emulator started in the kernel (``interface.base_url``); the
  port is 0 instead of 8000. The test then plays Meta through the tunnel's public URL.
"""

# nbformat has no type hints
# mypy: disable-error-code="no-untyped-call"
from __future__ import annotations

import copy
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import nbformat
import pytest
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

from tests.helpers import sign, text_webhook
from tests.jupyter_kernel import (
    KERNEL_NAME,
    ROOT,
    _kernel_env,
    fake_ngrok_env,
    kernel_spec_manager,
    process_gone,
)

NOTEBOOKS = ROOT / "notebooks"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

SUMMARY = """
import json as _json
def _summary():
    log = manager.conversation_log()
    with log.lock:
        conversations = {
            contact: {"name": log[contact].name, "messages": [
                {"direction": e.direction, "kind": e.kind, "text": e.text, "status": e.status,
                 "media": None if e.media is None else
                 {"type": e.media.type, "size": e.media.size, "caption": e.media.caption}}
                for e in log[contact].messages]}
            for contact in log.contacts}
    return {"conversations": conversations,
            "rows": {contact: row.value for contact, row in view.rows.items()},
            "phone": {n: phone.transcript(n) for n in ("15551230001", "447700900123")},
            "pending": phone.pending, "url": manager.url}
"""


def _client(nb: Any, workdir: Path) -> NotebookClient:
    km = AsyncKernelManager(
        kernel_name=KERNEL_NAME, kernel_spec_manager=kernel_spec_manager(workdir / "kernels")
    )
    return NotebookClient(
        nb, km=km, timeout=60, allow_errors=False, resources={"metadata": {"path": str(workdir)}}
    )


def _stdout(cell: Any) -> str:
    return "".join(
        o.get("text", "") for o in cell.outputs if o.output_type == "stream" and o.name == "stdout"
    )


def _run(client: NotebookClient, nb: Any, source: str) -> str:
    """Execute an extra cell (not part of the notebook on disk); return its stdout."""
    cell = nbformat.v4.new_code_cell(source)
    nb.cells.append(cell)
    client.execute_cell(cell, len(nb.cells) - 1)
    return _stdout(cell)


def _shutdown(client: NotebookClient) -> None:
    if client.km is not None:
        client._cleanup_kernel()


def test_quickstart_runs_offline_and_the_widgets_update_in_the_background(
    tmp_path: Path,
) -> None:
    """quickstart.ipynb runs top to bottom without errors; the phone and conversation
    widgets are displayed; the demo bot's "menu" buttons are tapped from the phone and the
    agent answers with the tapped choice; after the kernel went idle, background tasks answer the message
    sent with the Send button and deliver read receipts; every user string in the widgets
    is escaped; the last cell stops the server."""
    nb = nbformat.read(NOTEBOOKS / "quickstart.ipynb", as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not any(c.outputs for c in code), "commit the notebook without outputs"
    finish = [i for i, c in enumerate(nb.cells) if "finish" in c.metadata.get("tags", [])]
    assert len(finish) == 1
    client = _client(nb, tmp_path)
    try:
        with client.setup_kernel(env=_kernel_env(None)):
            for index, cell in enumerate(nb.cells[: finish[0]]):
                client.execute_cell(cell, index)
            _run(client, nb, SUMMARY)
            deadline = time.monotonic() + 20
            while True:  # the kernel is idle between these polls
                summary = json.loads(_run(client, nb, "print(_json.dumps(_summary()))"))
                alice = summary["conversations"].get("15551230001", {"messages": []})["messages"]
                if (
                    alice
                    and alice[-1]["direction"] == "out"
                    and alice[-2]["text"] == "Sent with the Send button"
                    and alice[-1]["status"] == "read"
                ) or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            for index in range(finish[0], len(nb.cells)):
                client.execute_cell(nb.cells[index], index)
            after = _run(
                client,
                nb,
                """
import socket
with socket.socket() as s:  # nothing listens there any more (a restart could bind it)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", int(sim.bot_url.rsplit(":", 1)[1])))
    s.listen()
print(manager.url, "port-free")
""",
            )
    finally:
        _shutdown(client)
        nbformat.write(nb, tmp_path / "quickstart.executed.ipynb")

    # -- the notebook's own outputs
    by_source = {c.source.splitlines()[0]: c for c in code}
    started = _stdout(by_source["from wa_agent.testing import Simulator"])
    assert "bot listening at http://127.0.0.1:" in started
    for first_line in ("view = manager.widget()", 'phone = sim.phone("15551230001", "Alice")'):
        outputs = by_source[first_line].outputs
        assert any(WIDGET_VIEW in o.get("data", {}) for o in outputs), first_line
    buttons = _stdout(by_source['phone.select("15551230001")  # back to Alice'])
    assert buttons == (
        "What would you like? ['☕ Coffee', '🍵 Tea', '💧 Water']\n"
        "You picked 🍵 Tea (choice id: tea)\n"
    )
    hello = _stdout(by_source['replies = await phone.send("Hello! <b>Is this bold?</b>")'])
    assert hello == "Hi Alice, you said: Hello! <b>Is this bold?</b>\n(message 1 of our chat)\n"
    image = _stdout(by_source["from wa_agent.demo import make_png"])
    assert re.fullmatch(
        r'Nice image! image/png, \d+ bytes with the caption "a green square"\.\n', image
    )
    assert "still serving: False" in _stdout(nb.cells[finish[0]])
    assert after.split() == ["None", "port-free"]

    # -- the conversation log behind manager.widget(), after the background updates
    alice = summary["conversations"]["15551230001"]
    assert alice["name"] == "Alice"
    assert [(m["direction"], m["kind"]) for m in alice["messages"]] == [
        ("in", "text"),
        ("out", "text"),
        ("in", "image"),
        ("out", "text"),
        ("in", "text"),
        ("out", "text"),
        ("in", "interactive"),
        ("out", "text"),
        ("in", "text"),
        ("out", "text"),
    ]
    assert alice["messages"][2]["media"]["caption"] == "a green square"
    assert alice["messages"][2]["media"]["size"] > 0
    assert [m["text"] for m in alice["messages"][4:8]] == [  # the button round trip
        "menu",
        "What would you like?\n[☕ Coffee] [🍵 Tea] [💧 Water]",
        "🍵 Tea",
        "You picked 🍵 Tea (choice id: tea)",
    ]
    assert alice["messages"][9]["text"].startswith("Hi Alice, you said: Sent with the Send button")
    assert alice["messages"][9]["text"].endswith("(message 5 of our chat)")  # chat history
    assert {m["status"] for m in alice["messages"] if m["direction"] == "out"} == {"read"}
    bob = summary["conversations"]["447700900123"]
    assert bob["name"] == "Bob" and [m["direction"] for m in bob["messages"]] == ["in", "out"]

    # -- the widgets: rendered rows (what the browser gets) and the phone
    row = summary["rows"]["15551230001"]
    assert "Hello! &lt;b&gt;Is this bold?&lt;/b&gt;" in row and "<b>Is this bold" not in row
    assert row.count("wa-tick-read") == 5 and "[image · " in row
    assert 'class="wa-name">Bob<' in summary["rows"]["447700900123"]
    transcript = summary["phone"]["15551230001"]
    assert [(m["from"], m.get("status")) for m in transcript] == [("me", "read"), ("bot", None)] * 5
    menu, tap = transcript[5], transcript[6]
    assert menu["choices"] == ["☕ Coffee", "🍵 Tea", "💧 Water"]
    assert (tap["kind"], tap["text"], tap["reply_to"]) == ("interactive", "🍵 Tea", menu["wamid"])
    assert summary["pending"] == 0 and summary["url"] is not None


def _going_live_cells(nb: Any) -> list[Any]:
    """The notebook's cells with the test's substitutions (see the module docstring)."""
    cells = copy.deepcopy(nb.cells)
    starts = [c for c in cells if c.cell_type == "code" and "port=8000" in c.source]
    assert len(starts) == 1
    starts[0].source = starts[0].source.replace("port=8000", "port=0")
    interface = [
        i for i, c in enumerate(cells) if "WhatsAppInterface(" in c.source and c.cell_type == "code"
    ]
    assert len(interface) == 1
    cells.insert(
        interface[0] + 1,
        nbformat.v4.new_code_cell(
            "interface.base_url = _emulator_server.url  # test: the Graph API is the emulator"
        ),
    )
    cells.insert(
        0,
        nbformat.v4.new_code_cell("""
import os
from wa_agent.server import BackgroundServer
from wa_agent.testing import CloudAPIEmulator
_emulator = CloudAPIEmulator(access_token=os.environ["WHATSAPP_ACCESS_TOKEN"],
                             phone_number_ids=[os.environ["WHATSAPP_PHONE_NUMBER_ID"]])
_emulator_server = BackgroundServer(_emulator)
await _emulator_server.start()
"""),
    )
    return list(cells)


def test_going_live_code_serves_real_shaped_traffic_through_the_tunnel(tmp_path: Path) -> None:
    """going_live.ipynb's code, run against the emulator and the fake ngrok agent: it reads
    the WHATSAPP_* variables, serves, prints the tunnel's callback URL and the verify token;
    Meta's verification and a signed message reach the bot through the public URL, the reply
    goes to the (emulated) Cloud API; the last cell closes the tunnel and frees the port."""
    original = nbformat.read(NOTEBOOKS / "going_live.ipynb", as_version=4)
    nbformat.validate(original)
    assert not any(c.outputs for c in original.cells if c.cell_type == "code")
    nb = copy.deepcopy(original)
    nb.cells = _going_live_cells(original)
    tunnel_index = next(
        i
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and "manager.atunnel()" in c.source
    )
    ngrok_env, state_file = fake_ngrok_env(tmp_path / "ngrok")
    env = _kernel_env(
        {
            **ngrok_env,
            "WHATSAPP_ACCESS_TOKEN": "live-access-token",
            "WHATSAPP_PHONE_NUMBER_ID": "109876543210",
            "WHATSAPP_APP_SECRET": "live-app-secret",
            "WHATSAPP_VERIFY_TOKEN": "live-verify-token",
        }
    )
    workdir = tmp_path / "work"
    workdir.mkdir()
    client = _client(nb, workdir)
    try:
        with client.setup_kernel(env=env):
            for index in range(tunnel_index + 1):
                client.execute_cell(nb.cells[index], index)
            printed = _stdout(nb.cells[tunnel_index])
            hook = re.search(r"Callback URL:  (\S+)", printed)
            assert hook is not None, printed
            webhook = hook.group(1)
            assert "Verify token:  live-verify-token" in printed
            assert webhook.endswith("/whatsapp/webhook") and webhook.startswith("http://127.0.0.1:")

            # Meta's side, through the tunnel's public URL, while the kernel is idle
            check = httpx.get(
                webhook,
                params={
                    "hub.mode": "subscribe",
                    "hub.verify_token": "live-verify-token",
                    "hub.challenge": "31337",
                },
                timeout=10,
            )
            assert (check.status_code, check.text) == (200, "31337")
            body = text_webhook(
                "447700900999",
                "hello from a real phone",
                phone_number_id="109876543210",
                name="Real User",
            )
            posted = httpx.post(
                webhook,
                content=body,
                timeout=10,
                headers={
                    "content-type": "application/json",
                    "x-hub-signature-256": sign(body, "live-app-secret"),
                },
            )
            assert posted.status_code == 200
            forged = httpx.post(
                webhook,
                content=body,
                timeout=10,
                headers={
                    "content-type": "application/json",
                    "x-hub-signature-256": sign(body, "wrong-secret"),
                },
            )
            assert forged.status_code in (401, 403)
            sent = json.loads(
                _run(
                    client,
                    nb,
                    """
import json
found = await _emulator.wait_for_messages(1, to="447700900999", timeout=10)
print(json.dumps([[m.phone_number_id, m.text] for m in found]))
""",
                )
            )
            assert sent == [["109876543210", "You said: hello from a real phone"]]

            for index in range(tunnel_index + 1, len(nb.cells)):
                client.execute_cell(nb.cells[index], index)
            view_cell = next(
                c for c in nb.cells if c.cell_type == "code" and c.source.startswith("view = ")
            )
            assert any(WIDGET_VIEW in o.get("data", {}) for o in view_cell.outputs)
            after = _run(
                client,
                nb,
                """
await _emulator_server.stop()
await _emulator.aclose()
print(manager.url)
""",
            )
            assert after.strip() == "None"
    finally:
        _shutdown(client)
    env_check = next(c for c in nb.cells if c.cell_type == "code" and "missing = " in c.source)
    assert _stdout(env_check) == "missing: nothing, good to go\n"
    state = json.loads(state_file.read_text())
    assert state["authtoken"] == "tok-good"
    assert state["endpoints"] == [] and len(state["deleted"]) == 1
    assert process_gone(state["pid"])  # the last tunnel closed: the agent was stopped
    assert (workdir / "whatsapp.sqlite3").exists()  # the durable inbox it was told to use
    with pytest.raises(httpx.ConnectError):
        httpx.get(webhook, timeout=5)


def test_handoff_notebook_takes_over_a_simulated_conversation(tmp_path: Path) -> None:
    """handoff.ipynb runs top to bottom offline: the agent hands the refund question over,
    the customer's next message gets no answer, the operator's message typed into the
    console and sent with its Send button reaches the customer, Hand back gives the
    conversation to the agent, whose next answer quotes the operator; the history holds
    every turn with its role; the console row is marked while handed off and shows the
    operator's message (escaped), and the last cell stops the server."""
    nb = nbformat.read(NOTEBOOKS / "handoff.ipynb", as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not any(c.outputs for c in code), "commit the notebook without outputs"
    sent = "Hi Alice, I am Sam. Your refund for order 1234 is on its way."
    client = _client(nb, tmp_path)
    rows: dict[str, str] = {}
    try:
        with client.setup_kernel(env=_kernel_env(None)):
            for index, cell in enumerate(list(nb.cells)):
                if "finish" in cell.metadata.get("tags", []):
                    rows = json.loads(
                        _run(
                            client,
                            nb,
                            (
                                "import json as _json\n"
                                "print(_json.dumps({c: r.value for c, r in view.rows.items()}))"
                            ),
                        )
                    )
                client.execute_cell(cell, index)
    finally:
        _shutdown(client)
        nbformat.write(nb, tmp_path / "handoff.executed.ipynb")
    by_source = {c.source.splitlines()[0]: c for c in code}
    assert any(
        WIDGET_VIEW in o.get("data", {}) for o in by_source["view = manager.widget()"].outputs
    )
    asked = _stdout(by_source['phone = sim.phone("15551230001", "Alice")'])
    assert asked.startswith("bot: Refunds are done by my colleagues")
    assert "handed off: True\n15551230001: handed off by the agent at " in asked
    assert (
        _stdout(
            by_source[
                'print(await phone.send("Hello? Is anyone there?", '
                "timeout=1.0))  # no answer from the bot"
            ]
        )
        == "[]\n"
    )
    assert _stdout(by_source['controls = view.controls["15551230001"]']) == (
        f"the customer got: [{sent!r}]\n"
    )
    back = _stdout(by_source["controls.toggle.click()"])
    assert back == f"handed off: False\nbot: Welcome back! My colleague told you: {sent!r}\n"
    history = _stdout(
        by_source['for turn in await interface.store.get_history(interface.name, "15551230001"):']
    )
    assert [line.split(":")[0].strip() for line in history.splitlines()] == [
        "user",
        "assistant",
        "user",
        "operator",
        "user",
        "assistant",
    ]
    assert "stopped" in _stdout(code[-1])
    row = rows["15551230001"]
    assert "wa-operator" in row and "Your refund for order 1234" in row
    assert "handed off" in row  # the handoff and resume entries of the conversation
