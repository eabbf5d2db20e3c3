"""Groups API webhooks parse into typed events (tests/payloads/group_*.json are shaped like
the examples of Meta's "Webhooks for Groups API" and "Group messaging" pages), and group
messages and statuses carry the group."""

from __future__ import annotations

import json

import pytest

from tests.helpers import load_payload
from wa_agent import (
    Event,
    GroupEvent,
    GroupId,
    GroupLifecycleEvent,
    GroupParticipantsEvent,
    GroupSettingsEvent,
    GroupStatusEvent,
    InvalidRequestError,
    Message,
    MessageParser,
    RetryPolicy,
    Sender,
    StatusUpdate,
    UnknownEvent,
)
from wa_agent.testing import CloudAPIEmulator, webhooks

GROUP = "Y2FwaV9ncm91cDoxNzA1NTU1MDEzOToxMjAzNjM0MDQ2OTQyMzM4MjAZD"
PNID = "100000000000001"


def parse(name: str) -> list[Event]:
    return MessageParser().parse(load_payload(name))


def test_group_created_and_failed_creation() -> None:
    """group_lifecycle_update: a created group has its id, subject and invite link; a failed
    creation keeps Meta's error (a string code is read as a number) and is not ok."""
    created, failed = parse("group_lifecycle_create")
    assert isinstance(created, GroupLifecycleEvent) and isinstance(failed, GroupLifecycleEvent)
    assert created.kind == "group" and created.field == "group_lifecycle_update"
    assert (created.type, created.group_id, created.subject) == (
        "group_create",
        GROUP,
        "New Purchase Inquiry",
    )
    assert created.invite_link == "https://chat.whatsapp.com/LINK_ID"
    assert created.join_approval_mode == "auto_approve" and created.ok
    assert created.phone_number_id == PNID and created.timestamp is not None
    assert not failed.ok and failed.errors[0].code == 131000
    assert failed.errors[0].details == "Group creation failed" and failed.group_id is None


def test_group_deleted() -> None:
    """A deleted group is a lifecycle event of type group_delete."""
    (deleted,) = parse("group_lifecycle_delete")
    assert isinstance(deleted, GroupLifecycleEvent)
    assert (deleted.type, deleted.group_id, deleted.request_id) == (
        "group_delete",
        GROUP,
        "106540352242924",
    )


def test_participants_join_leave_removed_and_request() -> None:
    """group_participants_update: a join by invite link, a removal by the business, a
    participant leaving and a join request each become a GroupParticipantsEvent."""
    joined, removed, left, request = parse("group_participants_update")
    assert all(isinstance(e, GroupParticipantsEvent) for e in (joined, removed, left, request))
    assert isinstance(joined, GroupParticipantsEvent)
    assert joined.reason == "invite_link" and [p.id for p in joined.added] == ["15551230001"]
    assert joined.added[0].user_id == "US.13491208655302741918"
    assert joined.added[0].username == "@ada"
    assert isinstance(removed, GroupParticipantsEvent)
    assert removed.initiated_by == "business" and removed.removed[0].input == "15551230002"
    assert removed.removed[0].id == "15551230002"
    assert isinstance(left, GroupParticipantsEvent)
    assert left.initiated_by == "participant" and left.removed[0].wa_id == "15551230003"
    assert isinstance(request, GroupParticipantsEvent)
    assert request.type == "group_join_request_created"
    assert request.join_request_id and request.wa_id == "15551230004"
    assert request.user_id == "US.44"


def test_settings_update_reports_each_setting() -> None:
    """group_settings_update: each changed setting says whether it succeeded, with its
    errors; the event's own errors stay empty."""
    (event,) = parse("group_settings_update")
    assert isinstance(event, GroupSettingsEvent)
    assert [s.name for s in event.settings] == [
        "group_subject",
        "group_description",
        "profile_picture",
    ]
    subject = event.setting("group_subject")
    assert subject is not None and subject.text == "Updated Purchase Inquiry"
    assert subject.update_successful is True
    description = event.setting("group_description")
    assert description is not None and description.update_successful is False
    assert description.errors[0].code == 131009
    picture = event.setting("profile_picture")
    assert picture is not None and picture.mime_type == "image/jpeg"
    assert event.setting("nope") is None and event.ok


def test_group_suspended_and_cleared() -> None:
    """group_status_update: a suspension and its clearing are GroupStatusEvents."""
    suspended, cleared = parse("group_status_update")
    assert isinstance(suspended, GroupStatusEvent) and isinstance(cleared, GroupStatusEvent)
    assert [suspended.type, cleared.type] == ["group_suspend", "group_suspend_cleared"]
    assert isinstance(suspended, GroupEvent) and suspended.group_id == GROUP


def test_group_message_and_group_status() -> None:
    """A message sent in a group carries the group id (the sender is the participant); a
    status of a message sent to a group names the group and recipient_type "group"."""
    (message,) = parse("group_message")
    assert isinstance(message, Message)
    assert message.group_id == GROUP and message.sender == "15551230001"
    assert message.text == "hello group"
    (status,) = parse("status_group_sent")
    assert isinstance(status, StatusUpdate)
    assert status.recipient == GROUP and status.recipient_type == "group"


def test_odd_group_items_never_raise() -> None:
    """A group change without a groups list, or with an item that is not an object, becomes
    an UnknownEvent while its valid siblings still parse."""
    body = json.loads(load_payload("group_lifecycle_delete"))
    value = body["entry"][0]["changes"][0]["value"]
    value["groups"].insert(0, "not an object")
    events = MessageParser().parse(body)
    assert isinstance(events[0], UnknownEvent) and isinstance(events[1], GroupLifecycleEvent)
    value.pop("groups")
    (unknown,) = MessageParser().parse(body)
    assert isinstance(unknown, UnknownEvent) and "groups" in unknown.reason
    value["groups"] = [{"type": "group_delete", "timestamp": "garbage", "group_id": 42}]
    (odd,) = MessageParser().parse(body)
    assert isinstance(odd, GroupLifecycleEvent)
    assert odd.timestamp is None and odd.group_id == "42"


def test_group_events_survive_a_json_round_trip() -> None:
    """Group events dump to JSON and validate back equal, as other events do."""
    for name in (
        "group_lifecycle_create",
        "group_participants_update",
        "group_settings_update",
        "group_status_update",
    ):
        for event in parse(name):
            assert type(event).model_validate_json(event.model_dump_json()) == event


async def test_replying_in_a_group_through_the_sender() -> None:
    """A send to a GroupId goes out with recipient_type "group" and the group id as "to"
    (Meta's "Group messaging" example); what groups do not take (interactive messages) is
    refused by the emulator with 131051, as Meta's page lists only text, media and
    templates for groups."""
    emulator = CloudAPIEmulator(access_token="t")
    async with (
        emulator.serve() as url,
        Sender("t", PNID, base_url=url, retry=RetryPolicy.never()) as sender,
    ):
        await sender.send_text(GroupId(GROUP), "hello, group")
        with pytest.raises(InvalidRequestError) as caught:
            await sender.send_buttons(GroupId(GROUP), "Pick", ["a"])
        await sender.send_text(" 15551230001 ", "still individual")
    assert caught.value.code == 131051
    group, individual = emulator.messages
    assert group.body["recipient_type"] == "group" and group.body["to"] == GROUP
    assert group.wa_id == GROUP
    assert individual.body["recipient_type"] == "individual"
    assert repr(GroupId("g")) == "GroupId('g')"


def test_webhook_builder_writes_group_messages() -> None:
    """webhooks.text_message(group_id=...) builds the group message Meta sends, which parses
    with its group id."""
    item = webhooks.text_message("15551230001", "hi all", group_id=GROUP)
    [message] = MessageParser().parse(webhooks.envelope(messages=[item]))
    assert isinstance(message, Message) and message.group_id == GROUP
    assert "group_id" not in webhooks.text_message("15551230001", "hi")
