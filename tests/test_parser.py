"""MessageParser: every payload shape of the reference, batches, malformed input, properties."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import PAYLOADS, load_payload, text_webhook
from wa_agent import (
    ErrorEvent,
    Event,
    GroupEvent,
    InvalidPayload,
    MediaRef,
    Message,
    MessageParser,
    StatusUpdate,
    UnknownEvent,
)
from wa_agent.parser import MAX_ITEMS, parse_timestamp

PNID = "100000000000001"
DISPLAY = "15550001234"
USER = "15551230001"
TS = datetime(2026, 1, 1, tzinfo=UTC)
WAMID_PREFIX = "wamid.HBgLMTU1NTEyMzAwMDEVAgASGBQzQUE0RTk0RDFFQTk2MEY4QkI5"


def wamid(n: int) -> str:
    """The wamid the sample payloads use for message number ``n``."""
    return f"{WAMID_PREFIX}{n:03d}QA=="


@pytest.fixture(scope="module")
def parser() -> MessageParser:
    return MessageParser()


def parse(name: str) -> list[Event]:
    return MessageParser().parse(load_payload(name))


def only_message(name: str) -> Message:
    """Parse a sample that holds exactly one message and nothing else."""
    events = parse(name)
    assert len(events) == 1, events
    assert isinstance(events[0], Message), events[0]
    return events[0]


def raw_messages(name: str) -> list[dict[str, Any]]:
    """The ``messages`` items of a sample's first change, as plain JSON."""
    data = json.loads(load_payload(name))
    messages: list[dict[str, Any]] = data["entry"][0]["changes"][0]["value"]["messages"]
    return messages


# --------------------------------------------------------------------------------------
# One sample per inbound message type
# --------------------------------------------------------------------------------------


def test_text_message_has_every_common_field() -> None:
    """A text message carries wamid, sender, profile, number id, aware UTC time, text, raw."""
    msg = only_message("text")
    assert msg.kind == "message"
    assert msg.id == wamid(1)
    assert msg.sender == USER
    assert msg.sender_user_id is None
    assert msg.profile_name == "Alice Example"
    assert msg.phone_number_id == PNID
    assert msg.display_phone_number == DISPLAY
    assert msg.timestamp == TS
    assert msg.timestamp.utcoffset() is not None
    assert msg.timestamp.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert msg.type == "text"
    assert msg.text == "Hello, bot!"
    assert msg.caption is None and msg.media is None and msg.context is None
    assert msg.referral is None and msg.errors == ()
    assert msg.raw == raw_messages("text")[0]


@pytest.mark.parametrize(
    ("name", "mtype", "expected"),
    [
        (
            "image",
            "image",
            {
                "id": "1479537139650973",
                "mime_type": "image/jpeg",
                "sha256": "Xk0mE8X1nJ0lZbXq6E1t2oHzCpHn5wU0q3l8fUmD8Ns=",
                "filename": None,
                "voice": False,
                "animated": False,
            },
        ),
        ("video", "video", {"id": "2058104914650321", "mime_type": "video/mp4", "voice": False}),
        (
            "audio_voice",
            "audio",
            {"id": "1003383421387256", "mime_type": "audio/ogg; codecs=opus", "voice": True},
        ),
        (
            "document",
            "document",
            {
                "id": "889934052311407",
                "mime_type": "application/pdf",
                "filename": "invoice-2025-Q3.pdf",
            },
        ),
        (
            "sticker",
            "sticker",
            {"id": "1289001232103217", "mime_type": "image/webp", "animated": True, "voice": False},
        ),
    ],
)
def test_media_messages(name: str, mtype: str, expected: dict[str, Any]) -> None:
    """Image/video/audio/document/sticker give a MediaRef with the fields Meta sent."""
    msg = only_message(name)
    assert msg.type == mtype
    assert isinstance(msg.media, MediaRef)
    for key, value in expected.items():
        assert getattr(msg.media, key) == value, key
    assert msg.media.sha256 == raw_messages(name)[0][mtype]["sha256"]


def test_media_caption_and_url() -> None:
    """Captions land in ``caption`` (not ``text``); a webhook media url is kept."""
    image = only_message("image")
    assert image.caption == "Our new office"
    assert image.text is None
    assert image.media is not None and image.media.url is not None
    assert image.media.url.startswith("https://lookaside.fbsbx.com/")
    assert only_message("document").caption == "Q3 invoice"
    assert only_message("sticker").caption is None
    assert only_message("audio_voice").caption is None


def test_location() -> None:
    """A location gives floats plus the chosen place's name, address and url."""
    loc = only_message("location").location
    assert loc is not None
    assert (loc.latitude, loc.longitude) == (60.1699, 24.9384)
    assert loc.name == "Helsinki Central Station"
    assert loc.address == "Kaivokatu 1, 00100 Helsinki"
    assert loc.url == "https://maps.example.com/?q=60.1699,24.9384"


def test_shared_contacts() -> None:
    """Each vCard gives its formatted name, phones (phone, else wa_id), emails and raw."""
    msg = only_message("contacts")
    assert msg.type == "contacts"
    bob, carol = msg.contacts
    assert bob.formatted_name == "Bob Builder"
    assert bob.phones == ("+1 555 123 0099", "+1 555 123 0100")
    assert bob.emails == ("bob@example.com",)
    assert bob.raw["org"] == {"company": "Builders Inc."}
    assert carol.formatted_name == "Carol"
    assert carol.phones == ("15551230101",)
    assert carol.emails == ()


def test_interactive_button_reply() -> None:
    """A reply-button tap gives id and title; ``text`` is the title; context quotes ours."""
    msg = only_message("interactive_button_reply")
    assert msg.interactive is not None
    assert msg.interactive.type == "button_reply"
    assert msg.interactive.id == "confirm-yes"
    assert msg.interactive.title == "Yes, confirm"
    assert msg.text == "Yes, confirm"
    assert msg.context is not None
    assert (msg.context.id, msg.context.from_) == (wamid(900), DISPLAY)


def test_interactive_list_reply() -> None:
    """A list selection gives id, title and description."""
    reply = only_message("interactive_list_reply").interactive
    assert reply is not None
    assert (reply.type, reply.id, reply.title, reply.description) == (
        "list_reply",
        "slot-14",
        "14:00",
        "Afternoon slot",
    )


def test_interactive_nfm_reply_parses_response_json() -> None:
    """A Flow completion keeps response_json as sent and parses it a second time."""
    msg = only_message("interactive_nfm_reply")
    reply = msg.interactive
    assert reply is not None
    assert reply.type == "nfm_reply"
    assert reply.name == "flow" and reply.body == "Sent"
    assert isinstance(reply.response_json, str)
    assert reply.response == {"flow_token": "ft-42", "size": "M", "quantity": 2}
    assert msg.text == "Sent"


@pytest.mark.parametrize("response_json", ["not json {", "[1, 2]", "5", "null"])
def test_nfm_reply_with_bad_response_json(response_json: str) -> None:
    """response_json that is not a JSON object gives ``response=None``, not an error."""
    data = json.loads(load_payload("interactive_nfm_reply"))
    item = data["entry"][0]["changes"][0]["value"]["messages"][0]
    item["interactive"]["nfm_reply"]["response_json"] = response_json
    (msg,) = MessageParser().parse(data)
    assert isinstance(msg, Message)
    assert msg.interactive is not None
    assert msg.interactive.response is None
    assert msg.interactive.response_json == response_json


def test_template_quick_reply_button() -> None:
    """A template quick-reply gives payload and text; context.id is the template's wamid."""
    msg = only_message("button")
    assert msg.type == "button"
    assert msg.button is not None
    assert (msg.button.payload, msg.button.text) == ("STOP_PROMOTIONS", "Stop promotions")
    assert msg.text == "Stop promotions"
    assert msg.context is not None and msg.context.id == wamid(903)


def test_reaction() -> None:
    """A reaction names the message reacted to and the emoji."""
    msg = only_message("reaction")
    assert msg.reaction is not None
    assert msg.reaction.message_id == wamid(904)
    assert msg.reaction.emoji == "\N{THUMBS UP SIGN}"
    assert not msg.reaction.removed


def test_reaction_removed_with_empty_or_missing_emoji() -> None:
    """``"emoji": ""`` and a missing emoji both mean removed: ``emoji is None``."""
    events = parse("reaction_removed")
    assert len(events) == 2
    for event in events:
        assert isinstance(event, Message) and event.reaction is not None
        assert event.reaction.emoji is None
        assert event.reaction.removed
        assert event.reaction.message_id is not None


def test_order() -> None:
    """An order gives catalog, note and every item with int quantity and float price."""
    msg = only_message("order")
    assert msg.order is not None
    assert msg.order.catalog_id == "1537201146799212"
    assert msg.order.text == "Please deliver after 5pm"
    tea, mug = msg.order.product_items
    assert (tea.product_retailer_id, tea.quantity, tea.item_price, tea.currency) == (
        "sku-tea-01",
        2,
        4.5,
        "EUR",
    )
    assert mug.quantity == 1
    assert mug.item_price == 12.0 and isinstance(mug.item_price, float)


def test_system_user_changed_number_without_contacts() -> None:
    """A system message parses though the value has no contacts; the new number is kept."""
    msg = only_message("system_user_changed_number")
    assert msg.system is not None
    assert msg.system.type == "user_changed_number"
    assert msg.system.wa_id == "15551230077"
    assert msg.text is not None and "changed" in msg.text
    assert msg.profile_name is None
    assert msg.sender == USER


def test_unsupported_message_keeps_its_errors() -> None:
    """An unsupported message is a Message with type 'unsupported' and error 131051."""
    msg = only_message("unsupported")
    assert msg.type == "unsupported"
    (error,) = msg.errors
    assert error.code == 131051
    assert error.title == "Message type unknown"
    assert error.details == "Message type is currently not supported."
    assert msg.raw["unsupported"] == {"type": "poll_creation"}


def test_legacy_unknown_message() -> None:
    """The legacy 'unknown' type (errors with a top-level ``details``) parses the same way."""
    msg = only_message("unknown_legacy")
    assert msg.type == "unknown"
    (error,) = msg.errors
    assert error.code == 131051
    assert error.details == "Message type is not currently supported"


def test_edit_and_revoke() -> None:
    """An edit names the original wamid and carries the new text; a revoke names the original."""
    edit = only_message("edit")
    assert edit.type == "edit"
    assert edit.edited_message_id == wamid(1)
    assert edit.text == "Hello, bot! (edited)"
    revoke = only_message("revoke")
    assert revoke.type == "revoke"
    assert revoke.revoked_message_id == wamid(1)
    assert revoke.text is None


def test_future_message_type_is_kept() -> None:
    """A type the parser does not know ('request_welcome') is a well-formed Message."""
    msg = only_message("request_welcome")
    assert msg.type == "request_welcome"
    assert msg.id == wamid(22)
    assert msg.text is None and msg.media is None
    assert msg.raw == raw_messages("request_welcome")[0]


def test_brand_new_type_with_its_own_object() -> None:
    """A new type with an object named after it parses and keeps that object in raw."""
    data = json.loads(load_payload("text"))
    item = data["entry"][0]["changes"][0]["value"]["messages"][0]
    item["type"] = "poll_vote"
    item["poll_vote"] = {"poll_id": "p1", "options": [1, 2]}
    del item["text"]
    (msg,) = MessageParser().parse(data)
    assert isinstance(msg, Message)
    assert msg.type == "poll_vote"
    assert msg.raw["poll_vote"] == {"poll_id": "p1", "options": [1, 2]}


def test_interactive_decode_error() -> None:
    """An interactive message without its object but with value.errors is a Message that
    carries those errors, and the value-level error is reported too."""
    events = parse("interactive_decode_error")
    msg, error = events
    assert isinstance(msg, Message) and isinstance(error, ErrorEvent)
    assert msg.type == "interactive" and msg.interactive is None
    assert [e.code for e in msg.errors] == [131000]
    assert error.code == 131000


# --------------------------------------------------------------------------------------
# Replies, forwards, referrals, BSUIDs, non-ASCII
# --------------------------------------------------------------------------------------


def test_reply_context() -> None:
    """A reply carries the quoted wamid and who sent it."""
    ctx = only_message("reply_context").context
    assert ctx is not None
    assert (ctx.id, ctx.from_, ctx.forwarded, ctx.frequently_forwarded) == (
        wamid(906),
        DISPLAY,
        False,
        False,
    )
    assert ctx.referred_product is None


def test_forwarded_and_frequently_forwarded() -> None:
    """Forwards set the flags and carry no quoted id."""
    once, often = parse("forwarded")
    assert isinstance(once, Message) and isinstance(often, Message)
    assert once.context is not None and often.context is not None
    assert once.context.forwarded and not once.context.frequently_forwarded
    assert often.context.frequently_forwarded and not often.context.forwarded
    assert once.context.id is None and often.context.id is None
    assert often.caption == "Seen this?"


def test_referred_product() -> None:
    """A product enquiry keeps the referred product next to the quoted id."""
    ctx = only_message("referred_product").context
    assert ctx is not None and ctx.id == wamid(907)
    assert ctx.referred_product == {
        "catalog_id": "1537201146799212",
        "product_retailer_id": "sku-tea-01",
    }


def test_ctwa_referral() -> None:
    """A Click-to-WhatsApp ad referral keeps ctwa_clid and the ad's details."""
    msg = only_message("referral_ctwa")
    ref = msg.referral
    assert ref is not None
    assert ref.ctwa_clid is not None and ref.ctwa_clid.startswith("ARAkLkA8")
    assert (ref.source_type, ref.source_id, ref.media_type) == ("ad", "120213456789012345", "image")
    assert ref.headline == "Summer sale" and ref.body == "Tea for everyone"
    assert ref.source_url == "https://fb.me/3cr4Wqqkv"
    assert ref.image_url == "https://scontent.example.com/ad.jpg"
    assert msg.raw["referral"]["welcome_message"] == {"text": "Hi! How can we help?"}
    assert msg.text == "Hi! I saw your ad"


def test_bsuid_sender_when_from_is_empty() -> None:
    """With ``from`` empty, the sender is the business-scoped user id, and the profile is
    matched through contacts[].user_id."""
    msg = only_message("bsuid")
    assert msg.sender == "US.13491208655302741918"
    assert msg.sender_user_id == "US.13491208655302741918"
    assert msg.profile_name == "Dana"
    assert msg.raw["from"] == ""


def test_non_ascii_body() -> None:
    """\\uXXXX escapes (incl. a surrogate pair) decode to the real characters."""
    msg = only_message("non_ascii")
    assert msg.profile_name == "Jörg Åström"
    assert msg.text == "Hyvää päivää! äöå \N{GRINNING FACE}"


def test_text_webhook_helper_roundtrip() -> None:
    """tests.helpers.text_webhook builds a body the parser reads back exactly."""
    body = text_webhook("15550009999", "hej då 👋", wamid="wamid.X1", name="Åsa")
    assert body.isascii()
    (msg,) = MessageParser().parse(body)
    assert isinstance(msg, Message)
    assert (msg.id, msg.sender, msg.text, msg.profile_name, msg.phone_number_id) == (
        "wamid.X1",
        "15550009999",
        "hej då 👋",
        "Åsa",
        PNID,
    )
    first, second = (MessageParser().parse(text_webhook("1", "x"))[0] for _ in range(2))
    assert isinstance(first, Message) and isinstance(second, Message)
    assert first.id != second.id


# --------------------------------------------------------------------------------------
# Statuses, errors, other fields
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "status", "recipient", "seconds"),
    [
        ("status_sent", "sent", USER, 1767225600),
        ("status_delivered", "delivered", USER, 1767225605),
        ("status_read", "read", USER, 1767225660),
        ("status_played", "played", USER, 1767225700),
        ("status_failed", "failed", "15551230002", 1767225800),
    ],
)
def test_status_updates(name: str, status: str, recipient: str, seconds: int) -> None:
    """Every status value parses with id, recipient, aware UTC time and the raw item."""
    (update,) = parse(name)
    assert isinstance(update, StatusUpdate)
    assert update.kind == "status"
    assert update.status == status
    assert update.recipient == recipient
    assert update.phone_number_id == PNID
    assert update.timestamp == datetime.fromtimestamp(seconds, tz=UTC)
    assert update.raw["id"] == update.id


def test_sent_status_pricing() -> None:
    """A sent status carries pricing, the BSUID and the echoed callback data."""
    (update,) = parse("status_sent")
    assert isinstance(update, StatusUpdate)
    assert update.pricing is not None
    assert (
        update.pricing.billable,
        update.pricing.pricing_model,
        update.pricing.type,
        update.pricing.category,
    ) == (True, "PMP", "regular", "utility")
    assert update.recipient_user_id == "US.11112222333344445555"
    assert update.biz_opaque_callback_data == "order-7781"
    assert update.errors == ()
    (read,) = parse("status_read")
    assert isinstance(read, StatusUpdate) and read.pricing is not None
    assert read.pricing.type == "free_customer_service"
    (delivered,) = parse("status_delivered")
    assert isinstance(delivered, StatusUpdate) and delivered.pricing is None


def test_failed_status_errors_without_contacts() -> None:
    """A failed status (no value.contacts) carries its error code and details."""
    (update,) = parse("status_failed")
    assert isinstance(update, StatusUpdate)
    (error,) = update.errors
    assert error.code == 131047
    assert error.title == "Re-engagement message"
    assert error.details is not None and "24 hours" in error.details


def test_status_with_only_bsuid_recipient() -> None:
    """``recipient_id: ""`` falls back to recipient_user_id."""
    data = json.loads(load_payload("status_sent"))
    data["entry"][0]["changes"][0]["value"]["statuses"][0]["recipient_id"] = ""
    (update,) = MessageParser().parse(data)
    assert isinstance(update, StatusUpdate)
    assert update.recipient == "US.11112222333344445555"


def test_value_level_errors() -> None:
    """Each value.errors item is an ErrorEvent with code, title, message, details, raw."""
    events = parse("value_errors")
    assert [type(e) for e in events] == [ErrorEvent, ErrorEvent]
    first, second = events
    assert isinstance(first, ErrorEvent) and isinstance(second, ErrorEvent)
    assert first.kind == "error"
    assert (first.code, first.title, first.message, first.details) == (
        131000,
        "Something went wrong",
        "Something went wrong",
        "An unknown error occurred",
    )
    assert first.phone_number_id == PNID
    assert first.raw["href"].startswith("https://developers.facebook.com/")
    assert second.code == 130429


@pytest.mark.parametrize(
    ("name", "field"),
    [
        ("template_status_update", "message_template_status_update"),
        ("account_update", "account_update"),
    ],
)
def test_other_fields_are_unknown_events(name: str, field: str) -> None:
    """Non-'messages' fields become an UnknownEvent naming the field and keeping the value."""
    (event,) = parse(name)
    assert isinstance(event, UnknownEvent)
    assert event.kind == "unknown"
    assert event.field == field
    assert field in event.reason
    assert isinstance(event.raw, dict)
    assert event.raw["value"]["event"] in ("APPROVED", "VERIFIED_ACCOUNT")
    assert event.raw["time"] == 1767225600  # the entry's time, for template dedupe keys


# --------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------


def test_batch_iterates_every_entry_change_and_item() -> None:
    """Several entries, changes, messages and statuses in one body all come out, in order,
    each with the phone_number_id and profile of its own change."""
    events = parse("batch_mixed")
    kinds = [e.kind for e in events]
    assert kinds == [
        "message",
        "message",
        "message",
        "status",
        "status",
        "status",
        "message",
        "unknown",
    ]
    messages = [e for e in events if isinstance(e, Message)]
    assert [m.text for m in messages] == ["first", "second", None, "third, other number"]
    assert [m.profile_name for m in messages] == ["Alice Example", "Bob", "Alice Example", "Eve"]
    assert [m.phone_number_id for m in messages] == [PNID, PNID, PNID, "100000000000002"]
    assert messages[1].timestamp == datetime.fromtimestamp(1767225601, tz=UTC)
    statuses = [e for e in events if isinstance(e, StatusUpdate)]
    assert [s.status for s in statuses] == ["delivered", "sent", "read"]
    assert isinstance(events[-1], UnknownEvent)
    assert events[-1].field == "message_template_status_update"


def test_batch_of_many_messages_is_never_cut_to_the_first() -> None:
    """A change with 250 messages gives 250 Messages."""
    data = json.loads(load_payload("text"))
    value = data["entry"][0]["changes"][0]["value"]
    template = value["messages"][0]
    value["messages"] = [{**template, "id": f"wamid.{i}"} for i in range(250)]
    events = MessageParser().parse(data)
    assert [e.id for e in events if isinstance(e, Message)] == [f"wamid.{i}" for i in range(250)]


def test_item_cap() -> None:
    """At most max_items events come out of one body; the overflow is one UnknownEvent."""
    assert MAX_ITEMS == 1000
    data = json.loads(load_payload("text"))
    value = data["entry"][0]["changes"][0]["value"]
    template = value["messages"][0]
    value["messages"] = [{**template, "id": f"wamid.{i}"} for i in range(1000)]
    events = MessageParser().parse(data)
    assert len(events) == 1000 and all(isinstance(e, Message) for e in events)

    value["messages"].append({**template, "id": "wamid.1000"})
    value["statuses"] = [{"id": "s", "status": "sent", "timestamp": "1", "recipient_id": "1"}]
    events = MessageParser().parse(data)
    assert len(events) == 1001
    assert sum(isinstance(e, Message) for e in events) == 1000
    assert isinstance(events[-1], UnknownEvent) and events[-1].reason == "too many items"

    small = MessageParser(max_items=3).parse(data)
    assert len(small) == 4 and isinstance(small[-1], UnknownEvent)


# --------------------------------------------------------------------------------------
# Malformed input
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "n_bad", "reason"),
    [
        ("malformed_missing_id", 1, "no id"),
        ("malformed_text_not_object", 1, "text"),
        ("malformed_timestamp", 1, "timestamp"),
        ("malformed_null_value", 1, "'value' is not an object"),
        ("malformed_message_not_object", 3, "not an object"),
    ],
)
def test_malformed_item_becomes_unknown_and_siblings_parse(
    name: str, n_bad: int, reason: str
) -> None:
    """A malformed item inside a valid envelope is an UnknownEvent with a reason; the valid
    sibling after it still parses."""
    events = parse(name)
    assert len(events) == n_bad + 1
    for bad in events[:n_bad]:
        assert isinstance(bad, UnknownEvent)
        assert reason in bad.reason
        assert bad.field == "messages"
    good = events[-1]
    assert isinstance(good, Message)
    assert good.text == "valid sibling"


def _message_with(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(load_payload("text"))
    item = data["entry"][0]["changes"][0]["value"]["messages"][0]
    for key, value in changes.items():
        if value is ...:
            item.pop(key, None)
        else:
            item[key] = value
    valid = json.loads(load_payload("text"))["entry"][0]["changes"][0]["value"]["messages"][0]
    data["entry"][0]["changes"][0]["value"]["messages"].append({**valid, "id": "wamid.ok"})
    return data


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"id": ""}, "no id"),
        ({"id": 123}, "no id"),
        ({"type": ...}, "no type"),
        ({"type": ["text"]}, "no type"),
        (dict(**{"from": ""}), "neither"),
        ({"timestamp": ...}, "timestamp"),
        ({"timestamp": "-5"}, "timestamp"),
        ({"timestamp": "1.5e9"}, "timestamp"),
        ({"timestamp": 10**20}, "timestamp"),
        ({"timestamp": True}, "timestamp"),
        ({"text": ...}, "text"),
        ({"text": {"body": 5}}, "text"),
        ({"type": "image", "image": {"mime_type": "image/png"}}, "no id"),
        ({"type": "image", "image": "abc"}, "not an object"),
        ({"type": "location", "location": {"latitude": "north", "longitude": 1}}, "latitude"),
        ({"type": "location", "location": {"latitude": 10**400, "longitude": 1}}, "latitude"),
        ({"type": "location", "location": {"latitude": 1, "longitude": float("inf")}}, "longitude"),
        ({"type": "location", "location": {"latitude": float("nan"), "longitude": 1}}, "latitude"),
        ({"type": "contacts", "contacts": {"name": "x"}}, "contacts"),
        ({"type": "reaction", "reaction": []}, "reaction"),
        ({"type": "interactive", "interactive": "x"}, "interactive"),
    ],
)
def test_malformed_message_variants(changes: dict[str, Any], reason: str) -> None:
    """Each kind of broken message is an UnknownEvent whose reason says what is wrong,
    also for numbers beyond float range, NaN and infinity."""
    data = _message_with(**changes)
    for body in (data, json.dumps(data).encode()):
        bad, good = MessageParser().parse(body)
        assert isinstance(bad, UnknownEvent), bad
        assert reason in bad.reason
        assert isinstance(good, Message) and good.id == "wamid.ok"


@pytest.mark.parametrize(
    "items",
    [
        [{"quantity": 1e999, "item_price": 10**400}],
        [{"quantity": float("nan"), "item_price": float("-inf")}],
        [{"quantity": "2", "item_price": "4.5"}],
        [{"quantity": True, "item_price": None}],
    ],
)
def test_order_with_unusable_numbers(items: list[dict[str, Any]]) -> None:
    """Out-of-range, NaN, string or boolean quantities and prices become None, never a crash."""
    data = _message_with(type="order", order={"catalog_id": "c", "product_items": items})
    for body in (data, json.dumps(data).encode()):
        msg = MessageParser().parse(body)[0]
        assert isinstance(msg, Message) and msg.order is not None
        (item,) = msg.order.product_items
        assert item.quantity is None and item.item_price is None


def test_statuses_and_errors_with_bad_items() -> None:
    """Broken status/error items are UnknownEvents and do not hide valid siblings."""
    data = json.loads(load_payload("status_sent"))
    value = data["entry"][0]["changes"][0]["value"]
    good = value["statuses"][0]
    value["statuses"] = [
        "x",
        {**good, "id": None},
        {**good, "status": 7},
        {**good, "timestamp": "soon"},
        good,
    ]
    value["errors"] = [5, {"code": 131000}]
    events = MessageParser().parse(data)
    assert [e.kind for e in events] == ["unknown"] * 4 + ["status", "unknown", "error"]
    assert [e.reason for e in events if isinstance(e, UnknownEvent)] == [
        "status is not an object",
        "status has no id",
        "status has no status value",
        "timestamp is not numeric",
        "error is not an object",
    ]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"field": "messages", "value": {"metadata": {}}}, "without messages"),
        ({"field": "messages", "value": {"messages": {"id": "x"}}}, "not a list"),
        ({"field": "messages", "value": []}, "not an object"),
        ({"field": "messages"}, "not an object"),
        ("a string", "change is not an object"),
    ],
)
def test_odd_changes(change: Any, reason: str) -> None:
    """Changes of the wrong shape are UnknownEvents; a valid change after them still parses."""
    data = json.loads(load_payload("text"))
    data["entry"][0]["changes"].insert(0, change)
    bad, good = MessageParser().parse(data)
    assert isinstance(bad, UnknownEvent) and reason in bad.reason
    assert isinstance(good, Message)


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        (None, "entry is not an object"),
        ([], "entry is not an object"),
        ({"id": "1"}, "no 'changes' list"),
        ({"changes": {}}, "no 'changes' list"),
    ],
)
def test_odd_entries(entry: Any, reason: str) -> None:
    """Entries of the wrong shape are UnknownEvents; a valid entry after them still parses."""
    data = json.loads(load_payload("text"))
    data["entry"].insert(0, entry)
    bad, good = MessageParser().parse(data)
    assert isinstance(bad, UnknownEvent) and reason in bad.reason
    assert isinstance(good, Message)


def test_empty_entry_list_gives_no_events() -> None:
    """A valid envelope with nothing in it parses to an empty list."""
    assert MessageParser().parse(b'{"object":"whatsapp_business_account","entry":[]}') == []


def test_extra_unknown_keys_are_tolerated() -> None:
    """Unknown keys at every level are ignored by the typed fields and kept in raw."""
    data = json.loads(load_payload("image"))
    data["future"] = 1
    data["entry"][0]["future"] = {"a": [1]}
    change = data["entry"][0]["changes"][0]
    change["future"] = None
    change["value"]["future"] = "x"
    item = change["value"]["messages"][0]
    item["future"] = {"b": 2}
    item["image"]["future"] = True
    (msg,) = MessageParser().parse(data)
    assert isinstance(msg, Message) and msg.media is not None
    assert msg.raw["future"] == {"b": 2}


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("malformed_truncated", "not JSON"),
        ("malformed_invalid_utf8", "UTF-8"),
        ("malformed_entry_not_list", "'entry'"),
        ("malformed_wrong_object", "'instagram'"),
        ("messenger_page", "'page'"),
    ],
)
def test_invalid_payload_samples(name: str, reason: str) -> None:
    """Bodies that are not a WhatsApp envelope raise InvalidPayload with a reason."""
    with pytest.raises(InvalidPayload) as info:
        parse(name)
    assert reason in info.value.reason
    assert info.value.reason in str(info.value)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "not JSON"),
        (b"   ", "not JSON"),
        (b"hello", "not JSON"),
        (b"<html>502</html>", "not JSON"),
        (b"\xff\xfe\x00", "UTF-8"),
        (b"[]", "not a JSON object"),
        (b"null", "not a JSON object"),
        (b'"whatsapp_business_account"', "not a JSON object"),
        (b"42", "not a JSON object"),
        (b"{}", "no 'object' key"),
        (b'{"entry":[]}', "no 'object' key"),
        (b'{"object":"whatsapp_business_account"}', "'entry'"),
        (b'{"object":"whatsapp_business_account","entry":null}', "'entry'"),
        (b'{"object":"whatsapp_business_account","entry":"x"}', "'entry'"),
        (b'{"object":["whatsapp_business_account"],"entry":[]}', "an array"),
        (b'{"object":' + b"9" * 4000 + b',"entry":[]}', "a number"),
        (b"[" * 100_000 + b"]" * 100_000, "nests too deeply"),
        (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "nests too deeply"),
    ],
)
def test_invalid_payload_reasons(body: bytes, reason: str) -> None:
    """Non-JSON, invalid UTF-8, non-objects, non-envelopes and deep nesting raise
    InvalidPayload with a short reason saying which."""
    with pytest.raises(InvalidPayload) as info:
        MessageParser().parse(body)
    assert reason in info.value.reason
    assert len(info.value.reason) < 200


def test_reason_stays_short_for_a_huge_object_value() -> None:
    """The reason is logged, so a multi-megabyte 'object' value is not copied into it."""
    body = json.dumps({"object": "x" * 1_000_000, "entry": []}).encode()
    with pytest.raises(InvalidPayload) as info:
        MessageParser().parse(body)
    assert len(info.value.reason) < 200


def test_lone_surrogates_become_replacement_characters() -> None:
    """Half an emoji (a lone \\ud83d or \\ude00 escape) becomes U+FFFD, valid pairs stay,
    so every event can be encoded as UTF-8 (stores, logs, model_dump_json)."""
    body = (
        text_webhook("15551230001", "x", name="y")
        .replace(b'"body":"x"', b'"body":"a\\ud83d b \\ude00 c \\ud83d\\ude00 d \\uD83D"')
        .replace(b'"name":"y"', b'"name":"\\ude00Z\\u00e4"')
    )
    for raw in (body, body.decode()):
        (msg,) = MessageParser().parse(raw)
        assert isinstance(msg, Message)
        assert msg.text == "a\ufffd b \ufffd c \N{GRINNING FACE} d \ufffd"
        assert msg.profile_name == "\ufffdZä"
        assert msg.raw["text"]["body"] == msg.text
        msg.model_dump_json()  # would raise on a lone surrogate

    (msg,) = MessageParser().parse(body.decode().replace("\\ud83d b", "\ud83d b"))
    assert isinstance(msg, Message) and msg.text is not None and msg.text.startswith("a\ufffd b")


def test_lone_surrogate_in_nfm_response_json() -> None:
    """The second JSON document inside nfm_reply is cleaned the same way."""
    data = json.loads(load_payload("interactive_nfm_reply"))
    reply = data["entry"][0]["changes"][0]["value"]["messages"][0]["interactive"]["nfm_reply"]
    reply["response_json"] = '{"flow_token": "t", "note": "half \\ud83d"}'
    (msg,) = MessageParser().parse(json.dumps(data).encode())
    assert isinstance(msg, Message) and msg.interactive is not None
    assert msg.interactive.response == {"flow_token": "t", "note": "half \ufffd"}
    msg.model_dump_json()


def test_events_survive_a_json_round_trip() -> None:
    """Every event of every sample dumps to JSON and validates back equal (the durable
    inbox stores messages this way)."""
    count = 0
    for path in sorted(PAYLOADS.glob("*.json")):
        try:
            events = MessageParser().parse(path.read_bytes())
        except InvalidPayload:
            continue
        for event in events:
            again = type(event).model_validate_json(event.model_dump_json())
            assert again == event, path.name
            count += 1
    assert count >= 50


def test_str_bytes_and_mapping_inputs_agree() -> None:
    """parse() accepts bytes, str and an already-parsed mapping with the same result."""
    raw = load_payload("batch_mixed")
    parser = MessageParser()
    from_bytes = parser.parse(raw)
    assert parser.parse(raw.decode()) == from_bytes
    assert parser.parse(json.loads(raw)) == from_bytes


# --------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------


def test_events_are_frozen() -> None:
    """Events and their sub-objects cannot be modified after parsing."""
    msg = only_message("image")
    (status,) = parse("status_failed")
    error = parse("value_errors")[0]
    unknown = parse("account_update")[0]
    assert msg.media is not None
    targets: list[tuple[pydantic.BaseModel, str, object]] = [
        (msg, "text", "changed"),
        (msg, "sender", "x"),
        (msg.media, "id", "x"),
        (status, "status", "read"),
        (error, "code", 1),
        (unknown, "reason", "x"),
    ]
    for model, attr, value in targets:
        with pytest.raises(pydantic.ValidationError):
            setattr(model, attr, value)


def test_parse_timestamp() -> None:
    """Unix seconds as str, int or float become aware UTC datetimes; junk is a ValueError."""
    assert parse_timestamp("1767225600") == TS
    assert parse_timestamp(1767225600) == TS
    assert parse_timestamp(1767225600.9) == TS
    assert parse_timestamp("0") == datetime(1970, 1, 1, tzinfo=UTC)
    assert parse_timestamp("1767225600").tzinfo is UTC
    for junk in [
        "",
        "abc",
        "-1",
        "1e9",
        "²",
        "9" * 5000,
        None,
        True,
        float("nan"),
        [1],
        -1,
        10**13,
    ]:
        with pytest.raises(ValueError):
            parse_timestamp(junk)


# --------------------------------------------------------------------------------------
# Properties: parse never raises anything but InvalidPayload
# --------------------------------------------------------------------------------------


def _valid_samples() -> list[dict[str, Any]]:
    out = []
    for path in sorted(PAYLOADS.glob("*.json")):
        try:
            data = json.loads(path.read_bytes())
        except ValueError:
            continue
        if (
            isinstance(data, dict)
            and data.get("object") == "whatsapp_business_account"
            and isinstance(data.get("entry"), list)
        ):
            out.append(data)
    return out


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


SAMPLES = _valid_samples()
#: (sample index, path) for every node below the top level of every valid sample.
SLOTS = [(i, p) for i, sample in enumerate(SAMPLES) for p in _paths(sample) if p]
KEYS = sorted({k for _, p in SLOTS for k in p if isinstance(k, str)})

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.integers(min_value=10**309, max_value=10**400)  # beyond float range
    | st.text(max_size=8)
    | st.text(
        st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF) | st.characters(), max_size=4
    )
    | st.sampled_from(
        [
            "text",
            "image",
            "audio",
            "location",
            "order",
            "interactive",
            "nfm_reply",
            "reaction",
            "system",
            "edit",
            "contacts",
            "messages",
            "1767225600",
            "",
            "{}",
            "[]",
            "true",
            "NaN",
            "-1",
        ]
    )
)
#: JSON-like values whose object keys are mostly names the parser looks for.
json_values = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), children, max_size=5)
    ),
    max_leaves=25,
)

PROPERTY = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _parse_or_invalid(body: Any) -> list[Event] | None:
    try:
        events = MessageParser().parse(body)
    except InvalidPayload as exc:
        assert exc.reason
        return None
    assert isinstance(events, list)
    assert all(
        isinstance(e, Message | StatusUpdate | ErrorEvent | GroupEvent | UnknownEvent)
        for e in events
    )
    if not isinstance(body, dict):
        for event in events:
            event.model_dump_json()  # every string is valid UTF-8 text
    return events


@PROPERTY
@given(json_values)
def test_property_arbitrary_json(value: Any) -> None:
    """Any JSON value, as bytes, parses or raises InvalidPayload; nothing else escapes."""
    _parse_or_invalid(json.dumps(value).encode())


@PROPERTY
@given(st.binary(max_size=200))
def test_property_arbitrary_bytes(body: bytes) -> None:
    """Any bytes at all parse or raise InvalidPayload."""
    _parse_or_invalid(body)


@PROPERTY
@given(st.sampled_from(SLOTS), json_values, st.booleans())
def test_property_value_plugged_into_a_valid_sample(
    slot: tuple[int, tuple[Any, ...]], value: Any, as_bytes: bool
) -> None:
    """Replacing any node of any valid sample (an entry, a change, a value, a message, a
    field of one) with an arbitrary value never makes parse raise anything but
    InvalidPayload; the top-level envelope keeps it from being InvalidPayload at all unless
    the replaced node is 'object' or 'entry'."""
    index, path = slot
    data = copy.deepcopy(SAMPLES[index])
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    events = _parse_or_invalid(json.dumps(data).encode() if as_bytes else data)
    if len(path) > 1:
        assert events is not None


@PROPERTY
@given(
    st.sampled_from(["entry", "changes", "value", "messages", "statuses", "errors", "contacts"]),
    json_values,
)
def test_property_envelope_slots(slot: str, value: Any) -> None:
    """Arbitrary values as the entry list, a change list, a value, or its item lists."""
    envelope: dict[str, Any] = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "1",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "metadata": {"phone_number_id": PNID},
                            "messages": [],
                            "statuses": [],
                        },
                    }
                ],
            }
        ],
    }
    if slot == "entry":
        envelope["entry"] = value
    elif slot == "changes":
        envelope["entry"][0]["changes"] = value
    elif slot == "value":
        envelope["entry"][0]["changes"][0]["value"] = value
    else:
        envelope["entry"][0]["changes"][0]["value"][slot] = value
    events = _parse_or_invalid(json.dumps(envelope).encode())
    if slot != "entry":
        assert events is not None
