"""ConversationLog (pure model) and ConversationsWidget (ipywidgets view) without a browser."""

from __future__ import annotations

import asyncio
import html
import itertools
import subprocess
import sys
import threading
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

import pytest

from wa_agent.events import (
    ErrorDetail,
    Location,
    MediaRef,
    Message,
    Reaction,
    StatusUpdate,
)
from wa_agent.widget import (
    ConversationLog,
    ConversationsWidget,
    MediaInfo,
    render_conversation,
)

T0 = datetime(2026, 1, 2, 10, 30, 0, tzinfo=UTC)
_ids = itertools.count()


def msg(sender: str = "15550001", text: str | None = "hi", **kw: Any) -> Message:
    kw.setdefault("type", "text")
    return Message(id=f"wamid.in{next(_ids)}", sender=sender, timestamp=T0, text=text, **kw)


def status(wamid: str, state: str, *errors: ErrorDetail) -> StatusUpdate:
    return StatusUpdate(id=wamid, status=state, recipient="15550001", timestamp=T0, errors=errors)


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend(name for name, _ in attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(markup: str) -> _Tags:
    p = _Tags()
    p.feed(markup)
    p.close()
    return p


# -- ConversationLog -----------------------------------------------------------------------


def test_log_keeps_only_the_last_n_messages_per_contact() -> None:
    """With max_messages=3, five messages leave the last three; the dropped count is kept and
    the rendered row says how many are not shown."""
    clog = ConversationLog(max_messages=3)
    for i in range(5):
        clog.inbound(msg(text=f"m{i}"))
    clog.inbound(msg(sender="15550002", text="other"))
    conv = clog["15550001"]
    assert [e.text for e in conv.messages] == ["m2", "m3", "m4"]
    assert conv.dropped == 2
    assert len(clog["15550002"].messages) == 1
    assert "2 earlier message(s) not shown" in render_conversation(conv)


def test_evicted_outbound_no_longer_takes_statuses() -> None:
    """A message dropped by the bound is forgotten: a late status for it changes nothing."""
    clog = ConversationLog(max_messages=1)
    clog.outbound("15550001", "first", wamid="wamid.o1")
    clog.outbound("15550001", "second", wamid="wamid.o2")
    assert clog.status(status("wamid.o1", "read")) is None
    assert clog.status(status("wamid.o2", "read")) is not None


def test_max_contacts_evicts_the_least_recently_active() -> None:
    """With max_contacts=2, a third contact evicts the one active longest ago, and listeners
    hear about the evicted contact."""
    clog = ConversationLog(max_contacts=2)
    seen: list[str] = []
    clog.subscribe(seen.append)
    clog.inbound(msg("a"))
    clog.inbound(msg("b"))
    clog.inbound(msg("a"))
    seen.clear()
    clog.inbound(msg("c"))
    assert clog.contacts == ["a", "c"]
    assert "b" not in clog and clog.get("b") is None
    assert set(seen) == {"b", "c"}


def test_delivery_ticks_only_move_forward() -> None:
    """sent < delivered < read < played: an older status never downgrades the ticks; failed is
    final."""
    clog = ConversationLog()
    entry = clog.outbound("15550001", "hello", wamid="wamid.o1")
    assert (entry.status, entry.ticks) == (None, "…")
    assert clog.status(status("wamid.o1", "delivered")) is entry
    assert entry.ticks == "✓✓"
    assert clog.status(status("wamid.o1", "sent")) is None
    assert entry.status == "delivered"
    clog.status(status("wamid.o1", "read"))
    assert (entry.status, entry.ticks) == ("read", "✓✓")
    assert clog.status(status("wamid.o1", "delivered")) is None
    assert entry.status == "read"
    clog.status(status("wamid.o1", "failed", ErrorDetail(code=131026, message="Undeliverable")))
    assert (entry.status, entry.ticks) == ("failed", "✗")
    assert entry.error == "Undeliverable (131026)"
    assert clog.status(status("wamid.o1", "read")) is None
    assert entry.status == "failed"


def test_sent_tick_and_read_tick_render_differently() -> None:
    """One grey tick for sent, blue double ticks for read, a red cross with the reason for
    failed."""
    clog = ConversationLog()
    clog.outbound("c", "a", wamid="w1")
    clog.outbound("c", "b", wamid="w2")
    clog.outbound("c", "x", wamid="w3")
    clog.status(status("w1", "sent"))
    clog.status(status("w2", "read"))
    clog.status(status("w3", "failed", ErrorDetail(code=131047, title="Re-engagement <b>")))
    row = render_conversation(clog["c"])
    assert 'wa-tick-sent" title="sent">✓<' in row
    assert 'wa-tick-read" title="read">✓✓<' in row
    assert "wa-tick-failed" in row and "✗" in row
    assert "Re-engagement &lt;b&gt; (131047)" in row


def test_status_arriving_before_its_message_is_applied_later() -> None:
    """A status for a wamid the clog has not seen yet is kept and applied when the outbound
    message is logged (the webhook can beat the send response)."""
    clog = ConversationLog()
    assert clog.status(status("wamid.early", "delivered")) is None
    entry = clog.outbound("15550001", "hi", wamid="wamid.early")
    assert entry.status == "delivered"
    late = clog.outbound("15550001", "no wamid yet")
    clog.status(status("wamid.late", "read"))
    clog.set_wamid(late, "wamid.late")
    assert late.status == "read" and late.wamid == "wamid.late"


def test_thinking_indicator_on_and_off() -> None:
    """thinking(on) shows the indicator, thinking(off) hides it; switching off a contact the
    clog does not know creates nothing and notifies nobody."""
    clog = ConversationLog()
    seen: list[str] = []
    clog.subscribe(seen.append)
    clog.thinking("ghost", False)
    assert "ghost" not in clog and seen == []
    clog.thinking("15550001", True)
    assert clog["15550001"].thinking
    assert "thinking" in render_conversation(clog["15550001"])
    clog.thinking("15550001", True)  # no change, no notification
    clog.thinking("15550001", False)
    assert not clog["15550001"].thinking
    assert "thinking" not in render_conversation(clog["15550001"])
    assert seen == ["15550001", "15550001"]


def test_error_is_highlighted_until_the_contact_writes_again() -> None:
    """error() adds a red note and a banner; the next inbound message clears the banner but
    keeps the note in the history."""
    clog = ConversationLog()
    clog.inbound(msg(text="question"))
    clog.error("15550001", "agent failed: <timeout>")
    conv = clog["15550001"]
    assert conv.error == "agent failed: <timeout>"
    row = render_conversation(conv)
    assert "wa-has-error" in row and "wa-banner" in row
    assert "agent failed: &lt;timeout&gt;" in row
    clog.inbound(msg(text="again"))
    row = render_conversation(conv)
    assert conv.error is None and "wa-has-error" not in row and "wa-banner" not in row
    assert [e.direction for e in conv.messages] == ["in", "error", "in"]
    assert 'class="wa-bubble wa-error"' in row


def test_media_placeholders_inbound_and_outbound() -> None:
    """Media messages are shown as placeholders with type, size, filename, MIME type and
    caption; media_info accepts a mapping and rejects unknown keys."""
    clog = ConversationLog()
    ref = MediaRef(id="m1", mime_type="image/jpeg", filename="photo.jpg")
    entry = clog.inbound(msg(text=None, type="image", media=ref, caption="look"), media_size=12400)
    assert entry.media == MediaInfo(
        type="image", size=12400, caption="look", filename="photo.jpg", mime_type="image/jpeg"
    )
    assert entry.kind == "image" and entry.text == ""
    out = clog.outbound(
        "15550001", "", kind="document", media_info={"size": 3, "filename": "a.pdf"}
    )
    assert out.media == MediaInfo(type="document", size=3, filename="a.pdf")
    row = render_conversation(clog["15550001"])
    assert "[image · 12.1 KB · photo.jpg · image/jpeg]" in row
    assert '<span class="wa-caption">look</span>' in row
    assert "[document · 3 B · a.pdf]" in row
    with pytest.raises(TypeError, match="unknown media_info keys"):
        clog.outbound("15550001", "x", media_info={"bytes": b""})


def test_non_text_messages_are_described() -> None:
    """Locations, reactions and unknown types get a readable line instead of an empty bubble;
    the profile name is remembered."""
    clog = ConversationLog()
    loc = Location(latitude=1.5, longitude=2.5, name="Cafe")
    clog.inbound(msg(text=None, type="location", location=loc, profile_name="Ann"))
    clog.inbound(msg(text=None, type="reaction", reaction=Reaction(message_id="x", emoji="👍")))
    clog.inbound(msg(text=None, type="brand_new_type"))
    texts = [e.text for e in clog["15550001"].messages]
    assert texts == ["location: Cafe (1.5, 2.5)", "reacted 👍", "[brand_new_type]"]
    assert clog["15550001"].name == "Ann"


def test_listener_errors_are_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    """A failing listener does not break the caller or the other listeners; unsubscribe stops
    notifications."""
    clog = ConversationLog()
    seen: list[str] = []

    def broken(contact: str) -> None:
        raise RuntimeError("boom")

    clog.subscribe(broken)
    unsubscribe = clog.subscribe(seen.append)
    clog.inbound(msg())
    assert seen == ["15550001"]
    assert any("listener" in r.getMessage() for r in caplog.records)
    unsubscribe()
    clog.inbound(msg())
    assert seen == ["15550001"]


def test_bounds_are_validated() -> None:
    """Nonsense bounds are refused with a ValueError."""
    with pytest.raises(ValueError):
        ConversationLog(0)
    with pytest.raises(ValueError):
        ConversationLog(max_contacts=0)


# -- ConversationsWidget -------------------------------------------------------------------

EVIL = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", '"><b x="']


def test_widget_escapes_every_user_controlled_string() -> None:
    """Text, profile name, number, caption, filename, error and title with HTML in them end up
    as text: the synced row value contains only the widget's own div/span/br tags."""
    clog = ConversationLog()
    w = ConversationsWidget(clog, title=EVIL[1])
    for bad in EVIL:
        ref = MediaRef(id="m", mime_type=bad, filename=bad)
        clog.inbound(msg(sender=bad, text=bad, profile_name=bad))
        clog.inbound(msg(sender=bad, text=None, type="image", media=ref, caption=bad))
        clog.outbound(bad, bad, wamid=bad, kind=bad, media_info={"caption": bad, "filename": bad})
        clog.status(status(bad, "failed", ErrorDetail(code=1, message=bad)))
        clog.error(bad, bad)
    assert list(w.rows) == EVIL
    for bad in EVIL:
        state = w.rows[bad].get_state()["value"]  # exactly what the front end receives
        assert html.escape(bad) in state
        assert "<script" not in state and "<img" not in state and "<b " not in state
        parsed = parse(state)
        assert set(parsed.tags) <= {"div", "span", "br"}
        assert set(parsed.attrs) <= {"class", "title", "data-kind", "data-contact"}
        assert "".join(parsed.text).count(bad) >= 6  # name, number, text, caption, file, error
    header = w.header.get_state()["value"]
    assert "<img" not in header and "&lt;img src=x onerror=alert(1)&gt;" in header
    w.close()


def test_widget_has_one_row_per_contact_in_first_seen_order() -> None:
    """Interleaved messages from two contacts make two rows, in the order they first wrote;
    each row shows name and number."""
    clog = ConversationLog()
    w = ConversationsWidget(clog)
    clog.inbound(msg("15550002", "b1", profile_name="Bob"))
    clog.inbound(msg("15550001", "a1", profile_name="Ann"))
    clog.outbound("15550002", "to bob")
    clog.inbound(msg("15550001", "a2"))
    assert list(w.rows) == ["15550002", "15550001"]
    assert w._rows_box.children == (w.rows["15550002"], w.rows["15550001"])
    assert w.box.children[1] is w._rows_box
    bob = w.rows["15550002"].value
    assert "Bob" in bob and "15550002" in bob and "b1" in bob and "to bob" in bob
    assert bob.index("b1") < bob.index("to bob")
    assert 'class="wa-bubble wa-in"' in bob and 'class="wa-bubble wa-out"' in bob
    assert "2 conversations" in w.header.value
    w.close()


def test_widget_resends_only_the_changed_row() -> None:
    """A change for one contact assigns that row's value once; other rows and the row list are
    not touched."""
    clog = ConversationLog()
    w = ConversationsWidget(clog)
    clog.inbound(msg("a", "x"))
    clog.inbound(msg("b", "y"))
    changes: list[str] = []
    w.rows["a"].observe(lambda ch: changes.append("a"), names="value")
    w.rows["b"].observe(lambda ch: changes.append("b"), names="value")
    w._rows_box.observe(lambda ch: changes.append("children"), names="children")
    clog.outbound("a", "reply", wamid="w1")
    clog.status(status("w1", "read"))
    assert changes == ["a", "a"]
    w.close()


def test_widget_renders_existing_log_and_drops_evicted_rows() -> None:
    """A widget made on a clog that already has conversations shows them; a contact evicted by
    max_contacts loses its row."""
    clog = ConversationLog(max_contacts=1)
    clog.inbound(msg("a", "old"))
    w = ConversationsWidget(clog)
    assert list(w.rows) == ["a"] and "old" in w.rows["a"].value
    row_a = w.rows["a"]
    clog.inbound(msg("b", "new"))
    assert list(w.rows) == ["b"]
    assert w._rows_box.children == (w.rows["b"],)
    assert row_a.comm is None  # closed
    w.close()


async def test_widget_follows_updates_from_a_background_task() -> None:
    """Changes made by an asyncio task running while the test awaits something else (as in a
    kernel with no cell running) reach the row's value trait, one observe event each."""
    clog = ConversationLog()
    w = ConversationsWidget(clog)
    clog.inbound(msg("15550001", "start"))
    events: list[str] = []
    w.rows["15550001"].observe(lambda ch: events.append(ch["new"]), names="value")

    async def feed() -> None:
        for i in range(5):
            await asyncio.sleep(0)
            clog.thinking("15550001", True)
            entry = clog.outbound("15550001", f"answer {i}", wamid=f"wamid.bg{i}")
            clog.thinking("15550001", False)
            clog.status(status(entry.wamid or "", "delivered"))

    task = asyncio.create_task(feed())
    await asyncio.wait_for(task, 5)
    assert len(events) == 20  # thinking on, outbound, thinking off, status: per message
    final = w.rows["15550001"].value
    assert final == events[-1]
    assert all(f"answer {i}" in final for i in range(5))
    assert final.count("wa-tick-delivered") == 5 and "thinking" not in final
    w.close()


async def test_changes_from_another_thread_are_applied_on_the_loop() -> None:
    """A change made in a worker thread is handed to the widget's event loop: the trait is set
    on the loop's thread, not the worker's."""
    clog = ConversationLog()
    w = ConversationsWidget(clog)
    loop_thread = threading.get_ident()
    setters: list[int] = []
    w._rows_box.observe(lambda ch: setters.append(threading.get_ident()), names="children")
    await asyncio.to_thread(clog.inbound, msg("15550009", "from a thread"))
    for _ in range(100):
        if setters:
            break
        await asyncio.sleep(0.01)
    assert setters == [loop_thread]
    assert "from a thread" in w.rows["15550009"].value
    w.close()


def test_closed_widget_stops_following_the_log() -> None:
    """After close(), clog changes no longer reach the widget (and do not fail)."""
    clog = ConversationLog()
    w = ConversationsWidget(clog)
    clog.inbound(msg("a"))
    w.close()
    clog.inbound(msg("b"))
    assert w.rows == {}
    w.close()  # idempotent


def test_widget_displays_as_its_box() -> None:
    """Displaying the widget object shows the VBox (a widget-view mime bundle)."""
    w = ConversationsWidget()
    bundle = w._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == w.box.model_id
    assert "waiting for messages" in w.header.value
    w.close()


def test_widget_without_ipywidgets_says_which_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ipywidgets the widget raises ImportError naming the notebook extra; the clog
    itself still works."""
    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    with pytest.raises(ImportError, match=r"pip install 'wa-agent-host\[notebook\]'"):
        ConversationsWidget()
    ConversationLog().inbound(msg())


def test_importing_wa_agent_or_the_widget_module_does_not_import_ipywidgets() -> None:
    """`import wa_agent` and `import wa_agent.widget` leave ipywidgets unimported."""
    code = (
        "import sys, wa_agent, wa_agent.widget, wa_agent.tunnel\n"
        "bad = [m for m in ('ipywidgets', 'pyngrok', 'traitlets') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_media_size_is_filled_in_when_known() -> None:
    """media_size() sets the size of a logged message's media placeholder once the bot has
    downloaded it, re-renders that contact, and ignores unknown wamids and text messages."""
    from wa_agent.events import MediaRef

    log = ConversationLog()
    seen: list[str] = []
    log.subscribe(seen.append)
    image = Message(
        id="wamid.img",
        sender="15550001",
        timestamp=datetime.now(UTC),
        type="image",
        caption="cat",
        media=MediaRef(id="m1", mime_type="image/png"),
    )
    log.inbound(image)
    log.inbound(
        Message(
            id="wamid.txt", sender="15550001", timestamp=datetime.now(UTC), type="text", text="hi"
        )
    )
    seen.clear()
    entry = log.media_size("wamid.img", 2048)
    assert entry is not None and entry.media is not None and entry.media.size == 2048
    assert seen == ["15550001"]
    assert "[image · 2.0 KB · image/png]" in render_conversation(log["15550001"])
    assert log.media_size("wamid.txt", 5) is None and log.media_size("wamid.nope", 5) is None
    assert log.media_size("wamid.img", 2048) is None and seen == ["15550001"]  # unchanged
