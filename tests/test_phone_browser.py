"""The phone widget rendered by headless Chromium (static embed with the html-manager from
npm, as in test_widget_browser.py): bubbles, inline images, controls, and user text shown as
text. Skipped when chromium or the html-manager is missing (a failure under ``CI``)."""

from __future__ import annotations

from pathlib import Path

from tests.test_widget_browser import (
    CHROMIUM,
    EMBED_JS,
    IMG_ATTACK,
    SCRIPT_ATTACK,
    _require,
    render_and_probe,
)
from wa_agent.demo import DemoAgent, make_png
from wa_agent.testing import Simulator

PROBE = """
<script>
(function probe(tries) {
  const bubbles = [...document.querySelectorAll('.wa-phone-bubble')];
  if ((bubbles.length < %(bubbles)d || window.__control !== 1) && tries < 400) {
    setTimeout(() => probe(tries + 1), 25);
    return;
  }
  const phone = document.querySelector('.wa-phone-widget');
  const out = {
    head: (document.querySelector('.wa-phone-name') || {}).textContent || null,
    bubbles: bubbles.map(b => ({
      cls: b.className,
      text: (b.querySelector('.wa-phone-text') || {}).textContent || null,
      caption: (b.querySelector('.wa-phone-caption') || {}).textContent || null,
      img: (b.querySelector('img') || {}).naturalWidth || null,
      ticks: (b.querySelector('.wa-phone-ticks') || {}).className || null,
    })),
    buttons: phone ? [...phone.querySelectorAll('button')].map(b => b.textContent.trim()) : [],
    inputs: phone ? phone.querySelectorAll('input[type=text]').length : -1,
    imgs: phone ? phone.querySelectorAll('img').length : -1,
    scripts: phone ? phone.querySelectorAll('script').length : -1,
    pwned: window.__pwned === undefined ? null : window.__pwned,
    control: window.__control === undefined ? null : window.__control,
  };
  const pre = document.createElement('pre');
  pre.id = 'wa-probe';
  pre.style.display = 'none';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})(0);
</script>
"""


async def test_phone_renders_in_chromium(tmp_path: Path) -> None:
    """Chromium shows the phone's controls and one bubble per message, on the right side
    for the user and the left for the bot, with read ticks and both pictures decoded
    inline; injected <img onerror>/<script> text stays text and never runs, while an
    unescaped control widget on the same page does run. Saves a screenshot."""
    _require(CHROMIUM, "chromium")
    _require(EMBED_JS.is_file(), f"@jupyter-widgets/html-manager ({EMBED_JS})")
    async with Simulator(DemoAgent(), mode="chat") as sim:
        phone = sim.phone("15551230001", f"Mallory {SCRIPT_ATTACK}")
        await phone.send(IMG_ATTACK)
        await phone.send_image(make_png(16, 16, (200, 30, 30)), "image/png", caption="red")
        await phone.send("send me a picture")
    bubbles = [m["from"] for m in phone.transcript()]
    assert bubbles == ["me", "bot", "me", "bot", "me", "bot", "bot"]

    shot = tmp_path / "phone.png"
    probe = await render_and_probe(phone.box, PROBE % {"bubbles": len(bubbles)}, shot, tmp_path)
    phone.close()
    assert probe["pwned"] is None and probe["scripts"] == 0
    assert probe["head"] == f"Mallory {SCRIPT_ATTACK}"
    assert any("Attach image" in b for b in probe["buttons"]), probe["buttons"]
    assert {"Send", "Add user"} <= set(probe["buttons"]) and probe["inputs"] == 3
    shown = probe["bubbles"]
    assert [b["cls"].split()[-1] for b in shown] == [f"wa-phone-{who}" for who in bubbles]
    assert shown[0]["text"] == IMG_ATTACK and shown[0]["ticks"] == "wa-phone-ticks wa-phone-read"
    assert shown[2]["img"] == 16 and shown[2]["caption"] == "red"  # decoded: 16 px wide
    assert shown[6]["img"] == 64 and shown[6]["caption"] == "A green square"
    assert probe["imgs"] == 2  # the two pictures, nothing injected
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000


async def test_choices_render_as_buttons_in_chromium(tmp_path: Path) -> None:
    """The choices of the bot's last message are real buttons in the page (with a list's
    label), next to the phone's own controls, and the bot's reaction shows on the user's
    bubble. Saves a screenshot."""
    _require(CHROMIUM, "chromium")
    _require(EMBED_JS.is_file(), f"@jupyter-widgets/html-manager ({EMBED_JS})")
    from tests.test_simulator_rich import menu, start

    sim, _ = await start(menu)
    try:
        phone = sim.phone("15551230001", "Ada")
        await phone.send("more")
        shot = tmp_path / "choices.png"
        probe = await render_and_probe(phone.box, PROBE % {"bubbles": 2}, shot, tmp_path)
        phone.close()
    finally:
        await sim.stop()
    assert probe["pwned"] is None
    assert {"9:00", "10:00", "11:00", "12:00", "13:00", "Send", "Voice note"} <= set(
        probe["buttons"]
    ), probe["buttons"]
    assert [b["text"] for b in probe["bubbles"]] == ["more", "Pick a time"]
    assert shot.read_bytes().startswith(b"\x89PNG")
