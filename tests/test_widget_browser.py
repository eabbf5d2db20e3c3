"""The conversations widget rendered by a real browser: headless Chromium on loopback.

The widget is fed by a background asyncio task, then its state is embedded in a static page
(``ipywidgets.embed``) rendered by the official ``@jupyter-widgets/html-manager`` bundle,
taken from the npm registry at bootstrap (the jsdelivr CDN is not reachable in CI). A probe
script in the page reports the rendered DOM. Needs ``chromium`` and the html-manager
(``WA_AGENT_HTML_MANAGER``, default ``.venv/share/html-manager/package``): skipped when they
are missing, except under ``CI`` where that is a failure.
"""

from __future__ import annotations

import asyncio
import html
import json
import os
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from wa_agent.events import MediaRef, Message, StatusUpdate
from wa_agent.server import BackgroundServer
from wa_agent.widget import ConversationLog, ConversationsWidget

ROOT = Path(__file__).resolve().parent.parent
HTML_MANAGER = Path(
    os.environ.get("WA_AGENT_HTML_MANAGER", ROOT / ".venv" / "share" / "html-manager" / "package")
)
EMBED_JS = HTML_MANAGER / "dist" / "embed.js"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

IMG_ATTACK = '<img src=x onerror="window.__pwned=1">'
SCRIPT_ATTACK = "<script>window.__pwned=2</script>"

# Waits (in the page's virtual time) until the rows and the control widget are rendered, then
# writes what it sees into a hidden <pre> that --dump-dom returns.
PROBE = """
<script>
(function probe(tries) {
  const rows = [...document.querySelectorAll('.wa-row')];
  if ((rows.length < %(rows)d || window.__control !== 1) && tries < 400) {
    setTimeout(() => probe(tries + 1), 25);
    return;
  }
  const widget = document.querySelector('.wa-conversations');
  const out = {
    rows: rows.map(r => ({
      contact: r.dataset.contact,
      name: (r.querySelector('.wa-name') || {}).textContent,
      bubbles: [...r.querySelectorAll('.wa-bubble')].map(b => ({
        cls: b.className,
        text: (b.querySelector('.wa-text') || {}).textContent || null,
        media: (b.querySelector('.wa-media') || {}).textContent || null,
        ticks: (b.querySelector('.wa-ticks') || {}).className || null,
      })),
    })),
    title: widget ? (widget.querySelector('.wa-title') || {}).textContent : null,
    imgsInWidget: widget ? widget.querySelectorAll('img').length : -1,
    scriptsInWidget: widget ? widget.querySelectorAll('script').length : -1,
    pwned: window.__pwned === undefined ? null : window.__pwned,
    control: window.__control === undefined ? null : window.__control,
    tries: tries,
  };
  const pre = document.createElement('pre');
  pre.id = 'wa-probe';
  pre.style.display = 'none';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})(0);
</script>
"""


_FONT_TYPES = {
    ".woff2": "font/woff2",
    ".woff": "font/woff",
    ".ttf": "font/ttf",
    ".eot": "application/vnd.ms-fontobject",
    ".svg": "image/svg+xml",
}


def _require(found: object, what: str) -> None:
    if found:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing under CI: run scripts/bootstrap")
    pytest.skip(f"{what} is missing (installed by scripts/bootstrap)")


def _static_app(files: dict[str, tuple[bytes, str]]) -> Any:
    """A tiny ASGI app serving fixed files; anything else is a 404 (which the control image
    needs to fire its onerror)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        body, ctype = files.get(scope["path"], (b"not found", "text/plain"))
        status = 200 if scope["path"] in files else 404
        headers = [(b"content-type", ctype.encode()), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


async def _feed(clog: ConversationLog) -> None:
    """What the hosting layer does while no cell runs: messages, replies, statuses."""
    now = datetime.now(UTC)
    clog.inbound(
        Message(
            id="w.i1",
            sender="15550001",
            profile_name="Ann",
            timestamp=now,
            type="text",
            text=IMG_ATTACK,
        )
    )
    await asyncio.sleep(0)
    clog.thinking("15550001", True)
    await asyncio.sleep(0)
    clog.outbound("15550001", "hello Ann", wamid="w.o1")
    clog.thinking("15550001", False)
    clog.status(StatusUpdate(id="w.o1", status="read", recipient="15550001", timestamp=now))
    await asyncio.sleep(0)
    media = MediaRef(id="m1", mime_type="image/jpeg", filename="cat.jpg")
    clog.inbound(
        Message(
            id="w.i2",
            sender="15550002",
            profile_name="Bob <b>",
            timestamp=now,
            type="image",
            caption="my cat",
            media=media,
        ),
        media_size=2048,
    )
    await asyncio.sleep(0)
    clog.inbound(
        Message(id="w.i3", sender="15550002", timestamp=now, type="text", text=SCRIPT_ATTACK)
    )
    clog.error("15550002", "agent failed")


async def test_live_widget_renders_in_chromium(tmp_path: Path) -> None:
    """Chromium renders one row per contact with the bubbles, ticks and media placeholder the
    background task produced; injected <img onerror>/<script> text is shown as text and never
    becomes an element or runs (while an unescaped control widget on the same page does run,
    so the check can fail). A screenshot is saved under tmp_path."""
    _require(CHROMIUM, "chromium")
    _require(EMBED_JS.is_file(), f"@jupyter-widgets/html-manager ({EMBED_JS})")

    clog = ConversationLog()
    view = ConversationsWidget(clog, title="Live <i>bot</i>")
    task = asyncio.create_task(_feed(clog))
    await asyncio.wait_for(task, 5)
    assert list(view.rows) == ["15550001", "15550002"]

    shot = tmp_path / "conversations.png"
    probe = await render_and_probe(view.box, PROBE % {"rows": 2}, shot, tmp_path)
    view.close()
    assert probe["pwned"] is None
    assert probe["imgsInWidget"] == 0 and probe["scriptsInWidget"] == 0
    assert probe["title"].startswith("Live <i>bot</i>")

    ann, bob = probe["rows"]
    assert (ann["contact"], ann["name"]) == ("15550001", "Ann")
    assert (bob["contact"], bob["name"]) == ("15550002", "Bob <b>")
    assert [(b["cls"], b["text"]) for b in ann["bubbles"]] == [
        ("wa-bubble wa-in", IMG_ATTACK),
        ("wa-bubble wa-out", "hello Ann"),
    ]
    assert ann["bubbles"][1]["ticks"] == "wa-ticks wa-tick-read"
    assert bob["bubbles"][0]["media"] == "[image · 2.0 KB · cat.jpg · image/jpeg]"
    assert [(b["cls"], b["text"]) for b in bob["bubbles"][1:]] == [
        ("wa-bubble wa-in", SCRIPT_ATTACK),
        ("wa-bubble wa-error", "agent failed"),
    ]
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000


async def _chromium(url: str, screenshot: Path, profile: Path) -> tuple[str, str]:
    """Load ``url`` in headless Chromium, loopback only; return (DOM, stderr)."""
    assert CHROMIUM is not None
    args = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        "--virtual-time-budget=15000",
        "--window-size=900,700",
        "--hide-scrollbars",
        f"--screenshot={screenshot}",
        "--dump-dom",
        url,
    ]
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 90)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return out.decode(errors="replace"), err.decode(errors="replace")


async def render_and_probe(
    box: Any, probe_script: str, shot: Path, tmp_path: Path
) -> dict[str, Any]:
    """Embed ``box`` (plus an unescaped control widget) in a static page served on loopback,
    load it in headless Chromium with ``probe_script`` appended, save a screenshot to
    ``shot`` and return the JSON the probe wrote into ``<pre id="wa-probe">``.

    Fails if the page did not render, or if the control's ``onerror`` did not run (then the
    page could not detect injected HTML at all and any "nothing injected" check is blind).
    """
    import ipywidgets
    from ipywidgets.embed import embed_minimal_html

    control = ipywidgets.HTML(
        '<img src="missing.png" style="display:none" onerror="window.__control=1">'
    )
    page = tmp_path / "page.html"
    embed_minimal_html(
        page,
        views=[box, control],
        title="wa_agent widget",
        requirejs=False,
        embed_url="/embed.js",
        cors=False,
    )
    markup = page.read_text().replace("</body>", probe_script + "</body>")
    files = {
        "/page.html": (markup.encode(), "text/html; charset=utf-8"),
        "/embed.js": (EMBED_JS.read_bytes(), "application/javascript"),
    }
    for font in EMBED_JS.parent.iterdir():  # Font Awesome (button icons), next to embed.js
        if font.suffix in _FONT_TYPES:
            files[f"/{font.name}"] = (font.read_bytes(), _FONT_TYPES[font.suffix])
    async with BackgroundServer(_static_app(files)) as server:
        dom, errors = await _chromium(f"{server.url}/page.html", shot, tmp_path / "profile")
    control.close()
    found = re.search(r'<pre id="wa-probe"[^>]*>(.*?)</pre>', dom, re.DOTALL)
    assert found, f"page did not render; chromium said:\n{errors[-3000:]}"
    probe: dict[str, Any] = json.loads(html.unescape(found.group(1)))
    assert probe["control"] == 1, "the unescaped control widget did not run: the check is blind"
    return probe
