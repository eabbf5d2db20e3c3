"""The operator console in headless Chromium: clicks and typing in a real browser reach the
interface (human handoff), end to end against the Cloud API emulator.

A static embed (``ipywidgets.embed`` + the npm ``@jupyter-widgets/html-manager``, as in
tests/test_widget_browser.py) has no kernel, so the page carries a stand-in for the kernel's
comm: every model gets a ``comm`` whose ``send`` records the message the front end sends (a
Button's ``{"method": "custom", "content": {"event": "click"}}``, a Text's
``{"method": "update", "state": {"value": ...}}``) and acknowledges it like a kernel going
idle, and says it is live (else a Text keeps its value changes to itself). The probe clicks and types through the DOM (the widgets' own view code turns that into
those messages); the test then hands exactly those messages to the Python widgets'
``_handle_msg``, the method a kernel's comm calls, while the widgets run against a real
:class:`~wa_agent.WhatsAppInterface` on the :class:`~wa_agent.testing.Simulator`.

``WA_AGENT_UPDATE_SCREENSHOTS=1`` also saves the console's screenshot (a handed-off
conversation with the operator's message) to ``docs/img/handoff-console.png``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from tests import test_widget_browser as browser
from wa_agent import AgentRequest, WhatsAppInterface
from wa_agent.testing import Simulator
from wa_agent.widget import ConversationLog, ConversationsWidget

SCREENSHOT = browser.ROOT / "docs" / "img" / "handoff-console.png"
ANN, BOB = "15551230001", "15551230002"

# Runs before the html-manager creates the models (it renders on window "load").
COMM_RECORDER = """
<script>
window.__sent = [];
Object.defineProperty(Object.prototype, 'comm', {
  configurable: true,
  get() {
    if (typeof this.model_id !== 'string' || typeof this.get !== 'function') return undefined;
    const model = this;
    const comm = {
      comm_id: model.model_id,
      send(data, callbacks) {
        window.__sent.push({model_id: model.model_id, data: JSON.parse(JSON.stringify(data))});
        const status = callbacks && callbacks.iopub && callbacks.iopub.status;
        if (status) setTimeout(() => status({content: {execution_state: 'idle'}}), 0);
        return 'probe-' + window.__sent.length;
      },
      on_msg() {}, on_close() {}, close() {},
    };
    Object.defineProperty(model, 'comm', {value: comm, writable: true, configurable: true});
    return comm;
  },
  set(value) {
    Object.defineProperty(this, 'comm', {value, writable: true, configurable: true});
  },
});
// A model without a kernel says its comm is not live and keeps value changes to itself.
Object.defineProperty(Object.prototype, '_comm_live', {
  configurable: true,
  get() { return typeof this.model_id === 'string' && typeof this.get === 'function'; },
  set(value) {},
});
</script>
"""

# Waits for the contact's row, reads it, then does %(actions)s through the DOM and reports
# the row and the recorded comm messages in <pre id="wa-probe">.
PROBE = (
    COMM_RECORDER
    + """
<script>
(function probe(tries) {
  const row = document.querySelector('.wa-row[data-contact="%(contact)s"]');
  if ((!row || window.__control !== 1) && tries < 400) {
    setTimeout(() => probe(tries + 1), 25);
    return;
  }
  const item = row ? row.closest('.wa-console-row') : null;
  const toggle = item ? item.querySelector('button.wa-takeover') : null;
  const input = item ? item.querySelector('.wa-reply input') : null;
  const send = item ? item.querySelector('button.wa-send') : null;
  const seen = {
    label: toggle ? toggle.textContent.trim() : null,
    rowClass: row ? row.className : null,
    badge: row ? (row.querySelector('.wa-handoff') || {}).textContent || null : null,
    operator: row ? [...row.querySelectorAll('.wa-bubble.wa-operator')].map(b => ({
      label: (b.querySelector('.wa-label') || {}).textContent,
      text: (b.querySelector('.wa-text') || {}).textContent,
    })) : null,
    imgs: item ? item.querySelectorAll('img').length : -1,
  };
  const actions = %(actions)s;
  for (const action of actions) {
    if (action[0] === 'click') (action[1] === 'toggle' ? toggle : send).click();
    if (action[0] === 'type') {
      input.focus();
      input.value = action[1];
      input.dispatchEvent(new Event('input', {bubbles: true}));
      input.dispatchEvent(new Event('change', {bubbles: true}));
    }
  }
  setTimeout(() => {
    const pre = document.createElement('pre');
    pre.id = 'wa-probe';
    pre.style.display = 'none';
    pre.textContent = JSON.stringify({seen: seen, sent: window.__sent, tries: tries,
      control: window.__control === undefined ? null : window.__control});
    document.body.appendChild(pre);
  }, 200);
})(0);
</script>
"""
)

TAKE_OVER_AND_SEND = [["click", "toggle"], ["type", "A person here: <b>Sam</b>"], ["click", "send"]]
HAND_BACK = [["click", "toggle"]]


async def echo(request: AgentRequest) -> str:
    return f"echo: {request.text}"


async def _browse(
    view: ConversationsWidget, contact: str, actions: list[list[str]], shot: Path, tmp_path: Path
) -> dict[str, Any]:
    script = PROBE % {"contact": contact, "actions": json.dumps(actions)}
    work = tmp_path / shot.stem
    work.mkdir()
    return await browser.render_and_probe(view.box, script, shot, work)


async def _replay(view: ConversationsWidget, sent: list[dict[str, Any]]) -> list[str]:
    """Deliver the browser's comm messages to the Python widgets, the way the kernel's comm
    does, one at a time (each action finishes before the next arrives). Returns what they
    were: "click" or "value=..."."""
    from ipywidgets.widgets.widget import _instances

    done = []
    for message in sent:
        data = message["data"]
        _instances[message["model_id"]]._handle_msg({"content": {"data": data}, "buffers": []})
        if data["method"] == "custom":
            done.append(str(data["content"].get("event")))
        else:
            done.append(f"value={data['state'].get('value')}")
        await view.wait()
    return done


async def test_take_over_type_send_and_hand_back_from_chromium(tmp_path: Path) -> None:
    """In Chromium: clicking "Take over", typing and clicking "Send" produce the front end's
    comm messages; replayed into the widget they hand Ann's conversation off (her next
    message is not answered) and the emulator receives the operator's text as a Graph
    messages call. The re-rendered page shows the badge, the operator's bubble (escaped) and
    "Hand back"; clicking it there resumes the bot, which answers Ann's next message."""
    browser._require(browser.CHROMIUM, "chromium")
    browser._require(browser.EMBED_JS.is_file(), f"html-manager ({browser.EMBED_JS})")
    interface = WhatsAppInterface(echo)
    clog = ConversationLog()
    interface.listeners.append(clog)
    async with Simulator(interface) as sim:
        ann = sim.user(ANN, "Ann")
        assert (await ann.ask("hello")).text == "echo: hello"
        assert (await sim.user(BOB, "Bob").ask("hi")).text == "echo: hi"
        view = ConversationsWidget(clog, title="Operator console", operator=interface)

        first = await _browse(view, ANN, TAKE_OVER_AND_SEND, tmp_path / "before.png", tmp_path)
        assert first["seen"]["label"] == "Take over" and first["seen"]["badge"] is None
        done = await _replay(view, first["sent"])
        assert done == ["click", "value=A person here: <b>Sam</b>", "click"]
        assert await interface.is_handed_off(ANN)
        assert view.controls[ANN].toggle.description == "Hand back"
        assert view.controls[ANN].text.value == ""  # cleared after the send
        operator_calls = [
            c
            for c in sim.emulator.calls
            if c.endpoint == "messages"
            and c.body.get("text", {}).get("body") == "A person here: <b>Sam</b>"
        ]
        assert len(operator_calls) == 1 and operator_calls[0].status == 200
        assert operator_calls[0].body["to"] == ANN

        await ann.send_text("are you a bot?")
        await sim.settle()
        assert sim.emulator.texts_to(ANN) == ["echo: hello", "A person here: <b>Sam</b>"]

        shot = tmp_path / "handoff-console.png"
        second = await _browse(view, ANN, HAND_BACK, shot, tmp_path)
        seen = second["seen"]
        assert seen["label"] == "Hand back" and seen["badge"] == "handed off — operator"
        assert "wa-handed-off" in seen["rowClass"] and seen["imgs"] == 0
        assert seen["operator"] == [{"label": "operator", "text": "A person here: <b>Sam</b>"}]
        assert await _replay(view, second["sent"]) == ["click"]
        assert not await interface.is_handed_off(ANN)
        assert view.controls[ANN].toggle.description == "Take over"
        assert (await ann.ask("still there?")).text == "echo: still there?"
        view.close()
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000
    if os.environ.get("WA_AGENT_UPDATE_SCREENSHOTS"):
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)
