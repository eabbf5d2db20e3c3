"""Webhook events: frozen pydantic models built by :class:`~wa_agent.MessageParser`.

Every model keeps the item it came from in ``raw`` so nothing Meta sends is lost, and every
model tolerates keys it does not know.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict

__all__ = [
    "MEDIA_TYPES",
    "STATUS_RANK",
    "ButtonReply",
    "Context",
    "ErrorDetail",
    "ErrorEvent",
    "Event",
    "GroupEvent",
    "GroupLifecycleEvent",
    "GroupParticipant",
    "GroupParticipantsEvent",
    "GroupSetting",
    "GroupSettingsEvent",
    "GroupStatusEvent",
    "InteractiveReply",
    "Location",
    "MediaRef",
    "Message",
    "Order",
    "OrderItem",
    "Pricing",
    "Reaction",
    "Referral",
    "SharedContact",
    "StatusUpdate",
    "SystemInfo",
    "UnknownEvent",
]

MEDIA_TYPES = frozenset({"image", "video", "audio", "document", "sticker"})

#: Delivery states in the order they can only move forward; ``failed`` is final.
STATUS_RANK: dict[str, int] = {"sent": 1, "delivered": 2, "read": 3, "played": 4, "failed": 5}


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class MediaRef(_Model):
    """A media object of an inbound message: fetch its bytes with ``Sender.download_media``."""

    id: str
    mime_type: str | None = None
    sha256: str | None = None
    filename: str | None = None
    url: str | None = None
    voice: bool = False
    animated: bool = False


class Context(_Model):
    """What an inbound message replies to, or that it was forwarded."""

    id: str | None = None
    from_: str | None = None
    forwarded: bool = False
    frequently_forwarded: bool = False
    referred_product: dict[str, Any] | None = None


class Location(_Model):
    """A shared location (``name``/``address`` only when the user chose a place)."""

    latitude: float
    longitude: float
    name: str | None = None
    address: str | None = None
    url: str | None = None


class SharedContact(_Model):
    """One vCard of a ``contacts`` message."""

    formatted_name: str | None = None
    phones: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    raw: dict[str, Any] = {}


class InteractiveReply(_Model):
    """A reply-button tap, list selection or Flow completion (``nfm_reply``).

    For a Flow, ``response`` is ``response_json`` parsed (``None`` if it was not JSON).
    """

    type: str
    id: str | None = None
    title: str | None = None
    description: str | None = None
    name: str | None = None
    body: str | None = None
    response_json: str | None = None
    response: dict[str, Any] | None = None


class ButtonReply(_Model):
    """A quick-reply button tapped on a template message."""

    payload: str | None = None
    text: str | None = None


class Reaction(_Model):
    """A reaction; ``emoji`` is ``None`` when the user removed their reaction."""

    message_id: str | None = None
    emoji: str | None = None

    @property
    def removed(self) -> bool:
        """``True`` when the user removed their reaction (no emoji)."""
        return not self.emoji


class OrderItem(_Model):
    """One product line of an :class:`Order`."""

    product_retailer_id: str | None = None
    quantity: int | None = None
    item_price: float | None = None
    currency: str | None = None


class Order(_Model):
    """A cart the user sent from a catalog (``type == "order"``)."""

    catalog_id: str | None = None
    text: str | None = None
    product_items: tuple[OrderItem, ...] = ()


class Referral(_Model):
    """Click-to-WhatsApp ad or post that started the conversation (first message only)."""

    source_url: str | None = None
    source_id: str | None = None
    source_type: str | None = None
    headline: str | None = None
    body: str | None = None
    media_type: str | None = None
    image_url: str | None = None
    video_url: str | None = None
    thumbnail_url: str | None = None
    ctwa_clid: str | None = None


class SystemInfo(_Model):
    """A system message (``type == "system"``), e.g. the user changed their number."""

    body: str | None = None
    type: str | None = None
    wa_id: str | None = None
    user_id: str | None = None


class ErrorDetail(_Model):
    """An error as Meta puts it in webhooks: build logic on ``code``."""

    code: int | None = None
    title: str | None = None
    message: str | None = None
    details: str | None = None


class Message(_Model):
    """One inbound user message.

    ``sender`` is the ``from`` number, or the business-scoped user id when ``from`` is empty.
    ``text`` is the text body, or the title/text of a button or list reply.
    """

    kind: Literal["message"] = "message"
    id: str
    sender: str
    sender_user_id: str | None = None
    profile_name: str | None = None
    phone_number_id: str | None = None
    display_phone_number: str | None = None
    timestamp: datetime
    type: str
    text: str | None = None
    caption: str | None = None
    media: MediaRef | None = None
    context: Context | None = None
    location: Location | None = None
    contacts: tuple[SharedContact, ...] = ()
    interactive: InteractiveReply | None = None
    button: ButtonReply | None = None
    reaction: Reaction | None = None
    order: Order | None = None
    referral: Referral | None = None
    system: SystemInfo | None = None
    edited_message_id: str | None = None
    revoked_message_id: str | None = None
    group_id: str | None = None
    errors: tuple[ErrorDetail, ...] = ()
    raw: dict[str, Any] = {}

    @property
    def choice(self) -> str | None:
        """The id of what the user tapped: a reply button or list row you sent
        (``interactive.id``), or a template's quick-reply button (its ``payload``, else its
        text); ``None`` for any other message."""
        if (
            self.type == "interactive"
            and self.interactive is not None
            and self.interactive.type in ("button_reply", "list_reply")
        ):
            return self.interactive.id or self.interactive.title
        if self.type == "button" and self.button is not None:
            return self.button.payload or self.button.text
        return None

    @property
    def choice_title(self) -> str | None:
        """The title the user saw on what they tapped (``None`` when :attr:`choice` is)."""
        if self.choice is None:
            return None
        if self.interactive is not None:
            return self.interactive.title
        return self.button.text if self.button is not None else None


class Pricing(_Model):
    """How Meta prices a delivered message (on ``sent`` and one later status)."""

    billable: bool | None = None
    pricing_model: str | None = None
    type: str | None = None
    category: str | None = None


class StatusUpdate(_Model):
    """Delivery state of a message the business sent."""

    kind: Literal["status"] = "status"
    id: str
    status: str
    recipient: str
    recipient_user_id: str | None = None
    phone_number_id: str | None = None
    timestamp: datetime
    errors: tuple[ErrorDetail, ...] = ()
    pricing: Pricing | None = None
    biz_opaque_callback_data: str | None = None
    recipient_type: str | None = None
    raw: dict[str, Any] = {}


class ErrorEvent(_Model):
    """A value-level error (``value.errors[]``) reported by Meta."""

    kind: Literal["error"] = "error"
    code: int | None = None
    title: str | None = None
    message: str | None = None
    details: str | None = None
    phone_number_id: str | None = None
    raw: dict[str, Any] = {}


class GroupParticipant(_Model):
    """A user in a group webhook: ``wa_id`` (their number, omitted for some username users),
    ``user_id`` (their business-scoped id), or ``input`` (what the business passed when it
    removed them); ``errors`` when the change failed for them."""

    wa_id: str | None = None
    user_id: str | None = None
    parent_user_id: str | None = None
    username: str | None = None
    input: str | None = None
    errors: tuple[ErrorDetail, ...] = ()

    @property
    def id(self) -> str | None:
        """The best identifier there is: the number, else the BSUID, else the input."""
        return self.wa_id or self.user_id or self.input


class GroupSetting(_Model):
    """One setting of a ``group_settings_update``: ``group_subject``/``group_description``
    carry ``text``, ``profile_picture`` a ``mime_type`` and ``sha256``."""

    name: str
    text: str | None = None
    mime_type: str | None = None
    sha256: str | None = None
    update_successful: bool | None = None
    errors: tuple[ErrorDetail, ...] = ()


class GroupEvent(_Model):
    """A Groups API webhook (fields ``group_*``): what happened to one group.

    ``type`` is Meta's event type (``group_create``, ``group_delete``,
    ``group_participants_add``, ``group_participants_remove``, ``group_join_request_created``,
    ``group_join_request_revoked``, ``group_settings_update``, ``group_suspend``, ...);
    ``errors`` is non-empty when the request behind it failed. Subclasses add the fields of
    each webhook field.
    """

    kind: Literal["group"] = "group"
    field: str
    type: str | None = None
    group_id: str | None = None
    request_id: str | None = None
    timestamp: datetime | None = None
    phone_number_id: str | None = None
    errors: tuple[ErrorDetail, ...] = ()
    raw: dict[str, Any] = {}

    @property
    def ok(self) -> bool:
        """``True`` unless Meta reported errors for this change."""
        return not self.errors


class GroupLifecycleEvent(GroupEvent):
    """``group_lifecycle_update``: a group was created (with its invite link) or deleted."""

    subject: str | None = None
    description: str | None = None
    invite_link: str | None = None
    join_approval_mode: str | None = None


class GroupParticipantsEvent(GroupEvent):
    """``group_participants_update``: users joined (``added``), left or were removed
    (``removed``; ``initiated_by`` is ``"participant"`` or ``"business"``), requested to
    join or withdrew a request (``join_request_id`` with ``wa_id``/``user_id``)."""

    reason: str | None = None
    initiated_by: str | None = None
    added: tuple[GroupParticipant, ...] = ()
    removed: tuple[GroupParticipant, ...] = ()
    failed: tuple[GroupParticipant, ...] = ()
    join_request_id: str | None = None
    wa_id: str | None = None
    user_id: str | None = None
    username: str | None = None


class GroupSettingsEvent(GroupEvent):
    """``group_settings_update``: the subject, description or picture changed (or failed
    to); each setting says whether its update succeeded."""

    settings: tuple[GroupSetting, ...] = ()

    def setting(self, name: str) -> GroupSetting | None:
        """The setting called ``name`` (``group_subject``, ``group_description``,
        ``profile_picture``), if this update carries it."""
        return next((s for s in self.settings if s.name == name), None)


class GroupStatusEvent(GroupEvent):
    """``group_status_update``: WhatsApp suspended a group or lifted a suspension."""

    reason: str | None = None


class UnknownEvent(_Model):
    """Anything else: other webhook fields (template status, account updates) or an item
    that could not be read. ``reason`` says why it is unknown."""

    kind: Literal["unknown"] = "unknown"
    field: str | None = None
    reason: str
    phone_number_id: str | None = None
    raw: Any = None


Event: TypeAlias = Message | StatusUpdate | ErrorEvent | GroupEvent | UnknownEvent
