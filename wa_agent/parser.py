"""Turn a WhatsApp Cloud API webhook body into a flat list of events.

The parser walks every entry, change, message, status and error of the body (Meta batches
up to 1000 items per POST; never only the first). It raises
:class:`~wa_agent.InvalidPayload` only when the body as a whole is not JSON or not a
WhatsApp Business Account envelope. Inside a valid envelope, an item it cannot read
becomes an :class:`~wa_agent.UnknownEvent` with a ``reason``, and its siblings still parse.

Values are checked by hand and the frozen models are built without a second validation
pass, which keeps parsing at well over 50 000 text messages per second on one core.
"""

from __future__ import annotations

import copy
import json
import math
import operator
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from itertools import accumulate, count
from typing import Any, TypeVar, final

from pydantic import BaseModel

from .events import (
    MEDIA_TYPES,
    ButtonReply,
    Context,
    ErrorDetail,
    ErrorEvent,
    Event,
    GroupEvent,
    GroupLifecycleEvent,
    GroupParticipant,
    GroupParticipantsEvent,
    GroupSetting,
    GroupSettingsEvent,
    GroupStatusEvent,
    InteractiveReply,
    Location,
    MediaRef,
    Message,
    Order,
    OrderItem,
    Pricing,
    Reaction,
    Referral,
    SharedContact,
    StatusUpdate,
    SystemInfo,
    UnknownEvent,
)
from .exceptions import InvalidPayload

__all__ = ["MAX_DEPTH", "MAX_ITEMS", "MessageParser", "parse_timestamp"]

_M = TypeVar("_M", bound=BaseModel)
_REQUIRED: Any = object()


def _constructor(cls: type[_M]) -> Callable[..., _M]:
    """A faster ``cls.model_construct`` for the plain frozen event models.

    It builds exactly what ``model_construct`` builds (``__dict__`` in field order with the
    defaults filled in, mutable defaults copied, ``model_fields_set`` = the names passed),
    without walking every field's alias/default machinery on each call: about half of the
    parser's time was spent there. Models with aliases, default factories, private
    attributes, ``extra="allow"`` or a post-init hook, and calls with a missing required
    field or an unknown name, go through ``model_construct`` itself.
    """
    fields = cls.__pydantic_fields__
    if (
        cls.__pydantic_post_init__
        or cls.__private_attributes__
        or cls.model_config.get("extra") == "allow"
        or cls.__pydantic_root_model__
        or any(
            f.alias is not None or f.validation_alias is not None or f.default_factory is not None
            for f in fields.values()
        )
    ):
        return cls.model_construct
    template: dict[str, Any] = {}
    copied: list[tuple[str, Any]] = []
    for name, field in fields.items():
        if field.is_required():
            template[name] = _REQUIRED
        else:
            template[name] = field.default
            if isinstance(field.default, (dict, list, set, bytearray)):
                copied.append((name, field.default))
    required = tuple(name for name, value in template.items() if value is _REQUIRED)
    size = len(template)
    new = cls.__new__
    setattr_ = object.__setattr__

    def construct(**values: Any) -> _M:
        data = template.copy()
        data.update(values)  # keeps the template's (field) order
        if len(data) != size or any(data[name] is _REQUIRED for name in required):
            return cls.model_construct(**values)
        for name, default in copied:
            if name not in values:
                data[name] = copy.deepcopy(default)
        obj = new(cls)
        setattr_(obj, "__dict__", data)
        setattr_(obj, "__pydantic_fields_set__", set(values))
        setattr_(obj, "__pydantic_extra__", None)
        setattr_(obj, "__pydantic_private__", None)
        return obj

    construct.__name__ = f"new_{cls.__name__}"
    return construct


_new_button_reply = _constructor(ButtonReply)
_new_context = _constructor(Context)
_new_error_detail = _constructor(ErrorDetail)
_new_error_event = _constructor(ErrorEvent)
_new_interactive_reply = _constructor(InteractiveReply)
_new_location = _constructor(Location)
_new_media_ref = _constructor(MediaRef)
_new_message = _constructor(Message)
_new_order = _constructor(Order)
_new_order_item = _constructor(OrderItem)
_new_pricing = _constructor(Pricing)
_new_reaction = _constructor(Reaction)
_new_referral = _constructor(Referral)
_new_shared_contact = _constructor(SharedContact)
_new_status_update = _constructor(StatusUpdate)
_new_system_info = _constructor(SystemInfo)
_new_unknown_event = _constructor(UnknownEvent)


#: Meta aggregates at most 1000 updates per POST.
MAX_ITEMS = 1000
#: Deepest JSON nesting accepted. Meta's envelopes nest about 10 levels; ``json.loads``
#: recurses in C once per level, so an absurdly deep body (``[[[[...``) is refused before it
#: is parsed: with a raised ``sys.setrecursionlimit`` it would overflow the C stack and
#: kill the process instead of raising ``RecursionError``.
MAX_DEPTH = 64
_EPOCH_LIMIT = 253402300799  # 9999-12-31T23:59:59Z


# json.loads turns a \uD800-\uDFFF escape without its pair (an emoji cut in half) into a
# lone surrogate, which no UTF-8 encoder (sqlite, redis, model_dump_json) accepts; the parser
# replaces those with U+FFFD. The pattern matches a valid pair, or a lone escape in group 1.
_SURROGATE_ESCAPE = (
    r"\\u[dD](?:[89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}"  # a valid pair
    r"|([89a-fA-F])[0-9a-fA-F]{2})"  # a lone high or low surrogate
)
_SURROGATE_ESCAPE_BYTES = re.compile(_SURROGATE_ESCAPE.encode())
_SURROGATE_ESCAPE_STR = re.compile(_SURROGATE_ESCAPE)
_SURROGATE = re.compile("[\ud800-\udfff]")


def _has_lone_surrogate(text: bytes | str) -> bool:
    """Cheap pre-check: might ``json.loads(text)`` hold a lone surrogate? (Microseconds;
    false positives only cost a scrub.)"""
    if isinstance(text, (bytes, bytearray)):
        if b"\\ud" not in text and b"\\uD" not in text:
            return False
        return any(m.group(1) is not None for m in _SURROGATE_ESCAPE_BYTES.finditer(text))
    if not text.isascii() and _SURROGATE.search(text) is not None:
        return True
    if "\\ud" not in text and "\\uD" not in text:
        return False
    return any(m.group(1) is not None for m in _SURROGATE_ESCAPE_STR.finditer(text))


def _scrub(value: Any) -> Any:
    """``value`` with every lone surrogate in its strings replaced by U+FFFD (rare path)."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    return value


# _too_deep(): keep only brackets and quotes, fold {} into [], map "[" to 2 and "]" to 0.
_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b'[]{}"')
_SQUARE = bytes.maketrans(b"{}", b"[]")
_STEP = bytes.maketrans(b"[]", b"\x02\x00")
_STRING = re.compile(rb'"[^"]*"')


def _too_deep(body: bytes | str, limit: int) -> bool:
    """Whether the JSON text ``body`` nests arrays/objects more than ``limit`` levels deep,
    counting brackets outside strings only. C-speed work on the raw text, no parsing; a
    body with at most ``limit`` opening brackets in all is answered at once. For invalid
    JSON it measures the deepest point ``json.loads`` could reach before failing.
    """
    if isinstance(body, str):
        body = body.encode("utf-8", "surrogatepass")
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    # Escaped backslashes first, then escaped quotes: what remains of each string is its two
    # quotes around whatever brackets it held.
    text = body.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_STRUCTURE)
    # Two adjacent quotes are an empty string or the seam between two strings: dropping them
    # keeps every bracket inside a string inside one (cheap, and most strings hold none).
    text = _STRING.sub(b"", text.replace(b'""', b"")).translate(_SQUARE)
    if b"[" * (limit + 1) in text:
        return True  # the common attack: a long run of openers
    # Each pass removes every innermost "[]", which lowers the depth of a balanced text by
    # exactly one; bushy texts (batches, flat arrays) vanish in a few cheap passes.
    passes = 0
    while text:
        if passes > limit:
            return True
        shorter = text.replace(b"[]", b"")
        if len(shorter) * 8 > len(text) * 7:
            break  # shrinking slowly (long runs, or unbalanced): measure the rest directly
        text, passes = shorter, passes + 1
    if not text:
        return passes > limit
    # An upper bound for what is left: the passes, plus the deepest prefix of the rest
    # (openers - closers; "[" counts 2 and "]" 0 against 1 per character, all in C).
    steps = accumulate(text.translate(_STEP))
    deepest = int(max(map(operator.sub, steps, count(1)), default=0))
    return passes + max(deepest, 0) > limit


class _Malformed(Exception):
    """An item inside a valid envelope that cannot be read; becomes an UnknownEvent."""


class _Overflow(Exception):
    """More items than ``max_items``."""


def _s(value: Any) -> str | None:
    """A string, or None for anything else (numbers Meta sends as str are kept as str)."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return str(value)
        except ValueError:  # more digits than sys.get_int_max_str_digits() (Mapping input)
            return None
    return None


def _brief(value: Any) -> str:
    """A short description of a value for an error reason: a reason is logged, so it must
    stay small whatever the body holds (a 3 MB string, a 5000-digit number, deep lists)."""
    if isinstance(value, str):
        return repr(value[:40] + "...") if len(value) > 40 else repr(value)
    if value is None or isinstance(value, (bool, float)):
        return repr(value)
    if isinstance(value, int):
        return "a number"
    return "an array" if isinstance(value, list) else "an object"


def _d(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _bool(value: Any) -> bool:
    return value is True or value == "true"


def _float(value: Any, what: str) -> float:
    if isinstance(value, bool) or value is None:
        raise _Malformed(f"{what} is not a number")
    try:
        result = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond float range
        raise _Malformed(f"{what} is not a number") from None
    if not math.isfinite(result):
        raise _Malformed(f"{what} is not finite")
    return result


def parse_timestamp(value: Any) -> datetime:
    """A unix-seconds value (Meta sends a string) as an aware UTC datetime.

    Raises ``ValueError`` for anything that is not a plausible timestamp.
    """
    if isinstance(value, str):
        if not value.isdigit():
            raise ValueError("timestamp is not numeric")
        seconds = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    elif isinstance(value, float) and math.isfinite(value):
        seconds = int(value)
    else:
        raise ValueError("timestamp missing or not numeric")
    if not 0 <= seconds <= _EPOCH_LIMIT:
        raise ValueError("timestamp out of range")
    return datetime.fromtimestamp(seconds, tz=UTC)


def _ts(value: Any) -> datetime:
    try:
        return parse_timestamp(value)
    except ValueError as exc:
        raise _Malformed(str(exc)) from None


def _error_detail(item: Any) -> ErrorDetail | None:
    if not isinstance(item, dict):
        return None
    code = item.get("code")
    if isinstance(code, str) and code.strip().isdigit():
        code = int(code)  # the Groups API docs show codes as strings
    data = _d(item.get("error_data"))
    return _new_error_detail(
        code=code if isinstance(code, int) and not isinstance(code, bool) else None,
        title=_s(item.get("title")),
        message=_s(item.get("message")),
        details=_s(data.get("details")) if data else _s(item.get("details")),
    )


def _errors(value: Any) -> tuple[ErrorDetail, ...]:
    if not isinstance(value, list):
        return ()
    out = []
    for item in value:
        detail = _error_detail(item)
        if detail is not None:
            out.append(detail)
    return tuple(out)


def _media(obj: dict[str, Any], mtype: str) -> MediaRef:
    media_id = _s(obj.get("id"))
    if not media_id:
        raise _Malformed(f"{mtype} object has no id")
    return _new_media_ref(
        id=media_id,
        mime_type=_s(obj.get("mime_type")),
        sha256=_s(obj.get("sha256")),
        filename=_s(obj.get("filename")),
        url=_s(obj.get("url")),
        voice=_bool(obj.get("voice")),
        animated=_bool(obj.get("animated")),
    )


def _context(obj: Any) -> Context | None:
    if not isinstance(obj, dict):
        return None
    return _new_context(
        id=_s(obj.get("id")),
        from_=_s(obj.get("from")),
        forwarded=_bool(obj.get("forwarded")),
        frequently_forwarded=_bool(obj.get("frequently_forwarded")),
        referred_product=_d(obj.get("referred_product")),
    )


def _referral(obj: Any) -> Referral | None:
    if not isinstance(obj, dict):
        return None
    return _new_referral(
        source_url=_s(obj.get("source_url")),
        source_id=_s(obj.get("source_id")),
        source_type=_s(obj.get("source_type")),
        headline=_s(obj.get("headline")),
        body=_s(obj.get("body")),
        media_type=_s(obj.get("media_type")),
        image_url=_s(obj.get("image_url")),
        video_url=_s(obj.get("video_url")),
        thumbnail_url=_s(obj.get("thumbnail_url")),
        ctwa_clid=_s(obj.get("ctwa_clid")),
    )


def _shared_contacts(value: Any) -> tuple[SharedContact, ...]:
    if not isinstance(value, list):
        raise _Malformed("contacts is not a list")
    out = []
    for card in value:
        if not isinstance(card, dict):
            continue
        name = _d(card.get("name")) or {}
        phones = tuple(
            p
            for p in (
                _s(ph.get("phone")) or _s(ph.get("wa_id"))
                for ph in _list(card.get("phones"))
                if isinstance(ph, dict)
            )
            if p
        )
        emails = tuple(
            e
            for e in (
                _s(em.get("email")) for em in _list(card.get("emails")) if isinstance(em, dict)
            )
            if e
        )
        out.append(
            _new_shared_contact(
                formatted_name=_s(name.get("formatted_name")),
                phones=phones,
                emails=emails,
                raw=card,
            )
        )
    return tuple(out)


def _interactive(obj: dict[str, Any]) -> tuple[InteractiveReply, str | None]:
    itype = _s(obj.get("type")) or "unknown"
    reply = _d(obj.get(itype)) or {}
    response_json = _s(reply.get("response_json"))
    response: dict[str, Any] | None = None
    if response_json is not None:
        try:
            if _too_deep(response_json, MAX_DEPTH):
                raise RecursionError
            loaded = json.loads(response_json)
            if _has_lone_surrogate(response_json):
                loaded = _scrub(loaded)
        except (ValueError, RecursionError):
            loaded = None
        response = loaded if isinstance(loaded, dict) else None
    title = _s(reply.get("title"))
    body = _s(reply.get("body"))
    result = _new_interactive_reply(
        type=itype,
        id=_s(reply.get("id")),
        title=title,
        description=_s(reply.get("description")),
        name=_s(reply.get("name")),
        body=body,
        response_json=response_json,
        response=response,
    )
    return result, title if title is not None else body


def _opt_float(value: Any) -> float | None:
    """A finite number as float, else None (never raises: NaN, 1e999, 10**400 give None)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        result = float(value)
    except OverflowError:
        return None
    return result if math.isfinite(result) else None


def _opt_int(value: Any) -> int | None:
    """An integral number as int, else None (never raises)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    number = _opt_float(value)
    return int(number) if number is not None else None


def _order(obj: dict[str, Any]) -> Order:
    items = []
    for it in _list(obj.get("product_items")):
        if not isinstance(it, dict):
            continue
        items.append(
            _new_order_item(
                product_retailer_id=_s(it.get("product_retailer_id")),
                quantity=_opt_int(it.get("quantity")),
                item_price=_opt_float(it.get("item_price")),
                currency=_s(it.get("currency")),
            )
        )
    return _new_order(
        catalog_id=_s(obj.get("catalog_id")), text=_s(obj.get("text")), product_items=tuple(items)
    )


# --------------------------------------------------------------------------- message content
#
# One reader per message type: it checks the type's content object (``item[type]``), puts
# the typed fields it yields into ``fields`` (keyword arguments of Message) and returns the
# message's text, if the type has one.

ContentReader = Callable[[str, Any, dict[str, Any]], str | None]


def _content_object(obj: Any, mtype: str) -> dict[str, Any]:
    found = _d(obj)
    if found is None:
        raise _Malformed(f"{mtype} is not an object")
    return found


def _text_content(mtype: str, obj: Any, fields: dict[str, Any]) -> str | None:
    body = _d(obj)
    if body is None or not isinstance(body.get("body"), str):
        raise _Malformed("text message without a text body")
    text: str = body["body"]
    return text


def _media_content(mtype: str, obj: Any, fields: dict[str, Any]) -> str | None:
    media = _content_object(obj, mtype)
    fields["media"] = _media(media, mtype)
    fields["caption"] = _s(media.get("caption"))
    return None


def _location_content(mtype: str, obj: Any, fields: dict[str, Any]) -> str | None:
    loc = _content_object(obj, mtype)
    fields["location"] = _new_location(
        latitude=_float(loc.get("latitude"), "latitude"),
        longitude=_float(loc.get("longitude"), "longitude"),
        name=_s(loc.get("name")),
        address=_s(loc.get("address")),
        url=_s(loc.get("url")),
    )
    return None


def _contacts_content(mtype: str, obj: Any, fields: dict[str, Any]) -> str | None:
    fields["contacts"] = _shared_contacts(obj)
    return None


def _interactive_content(mtype: str, obj: Any, fields: dict[str, Any]) -> str | None:
    fields["interactive"], text = _interactive(_content_object(obj, mtype))
    return text


def _button_content(mtype: str, obj: Any, fields: dict[str, Any]) -> str | None:
    btn = _content_object(obj, mtype)
    text = _s(btn.get("text"))
    fields["button"] = _new_button_reply(payload=_s(btn.get("payload")), text=text)
    return text


def _reaction_content(mtype: str, obj: Any, fields: dict[str, Any]) -> str | None:
    rea = _content_object(obj, mtype)
    fields["reaction"] = _new_reaction(
        message_id=_s(rea.get("message_id")), emoji=_s(rea.get("emoji")) or None
    )
    return None


def _order_content(mtype: str, obj: Any, fields: dict[str, Any]) -> str | None:
    order = _order(_content_object(obj, mtype))
    fields["order"] = order
    return order.text


def _system_content(mtype: str, obj: Any, fields: dict[str, Any]) -> str | None:
    system = _content_object(obj, mtype)
    text = _s(system.get("body"))
    fields["system"] = _new_system_info(
        body=text,
        type=_s(system.get("type")),
        wa_id=_s(system.get("wa_id")),
        user_id=_s(system.get("user_id")),
    )
    return text


def _edit_content(mtype: str, obj: Any, fields: dict[str, Any]) -> str | None:
    edit = _content_object(obj, mtype)
    fields["edited_message_id"] = _s(edit.get("original_message_id"))
    inner = _d(edit.get("message")) or {}
    inner_text = _d(inner.get("text"))
    return _s(inner_text.get("body")) if inner_text else None


def _revoke_content(mtype: str, obj: Any, fields: dict[str, Any]) -> str | None:
    fields["revoked_message_id"] = _s(_content_object(obj, mtype).get("original_message_id"))
    return None


#: The reader of each message type that has a content object (other types have none).
_CONTENT_READERS: dict[str, ContentReader] = {
    "text": _text_content,
    **dict.fromkeys(MEDIA_TYPES, _media_content),
    "location": _location_content,
    "contacts": _contacts_content,
    "interactive": _interactive_content,
    "button": _button_content,
    "reaction": _reaction_content,
    "order": _order_content,
    "system": _system_content,
    "edit": _edit_content,
    "revoke": _revoke_content,
}


def _profile_name(profiles: dict[str, str | None], from_: str, user_id: str | None) -> str | None:
    """The sender's profile name from the value's ``contacts``: by number, by user id, or
    the only contact there is."""
    profile = profiles.get(from_) if from_ else None
    if profile is None and user_id:
        profile = profiles.get(user_id)
    if profile is None and len(profiles) == 1:
        profile = next(iter(profiles.values()))
    return profile


def _message(
    item: Any,
    phone_number_id: str | None,
    display: str | None,
    profiles: dict[str, str | None],
    value_errors: tuple[ErrorDetail, ...],
) -> Message:
    if not isinstance(item, dict):
        raise _Malformed("message is not an object")
    wamid = item.get("id")
    if not isinstance(wamid, str) or not wamid:
        raise _Malformed("message has no id")
    mtype = item.get("type")
    if not isinstance(mtype, str) or not mtype:
        raise _Malformed("message has no type")
    from_ = _s(item.get("from")) or ""
    user_id = _s(item.get("from_user_id"))
    sender = from_ or user_id
    if not sender:
        raise _Malformed("message has neither 'from' nor 'from_user_id'")
    timestamp = _ts(item.get("timestamp"))
    fields: dict[str, Any] = {}
    text: str | None = None
    obj = item.get(mtype)
    if obj is None:
        # A failed delivery (errors on the message or the value) may come without one.
        if mtype in _REQUIRES_OBJECT and not (item.get("errors") or value_errors):
            raise _Malformed(f"{mtype} message has no {mtype!r} object")
    else:
        reader = _CONTENT_READERS.get(mtype)
        if reader is not None:
            text = reader(mtype, obj, fields)
    errors = _errors(item.get("errors"))
    if not errors and value_errors and obj is None:
        errors = value_errors
    return _new_message(
        id=wamid,
        sender=sender,
        sender_user_id=user_id,
        profile_name=_profile_name(profiles, from_, user_id),
        phone_number_id=phone_number_id,
        display_phone_number=display,
        timestamp=timestamp,
        type=mtype,
        text=text,
        context=_context(item.get("context")),
        referral=_referral(item.get("referral")),
        group_id=_s(item.get("group_id")),
        errors=errors,
        raw=item,
        **fields,
    )


#: Types whose message must carry their content object (unless it reports errors).
_REQUIRES_OBJECT = frozenset(_CONTENT_READERS)


def _status(item: Any, phone_number_id: str | None) -> StatusUpdate:
    if not isinstance(item, dict):
        raise _Malformed("status is not an object")
    sid = item.get("id")
    if not isinstance(sid, str) or not sid:
        raise _Malformed("status has no id")
    status = item.get("status")
    if not isinstance(status, str) or not status:
        raise _Malformed("status has no status value")
    pricing = _d(item.get("pricing"))
    billable = pricing.get("billable") if pricing else None
    return _new_status_update(
        id=sid,
        status=status,
        recipient=_s(item.get("recipient_id")) or _s(item.get("recipient_user_id")) or "",
        recipient_user_id=_s(item.get("recipient_user_id")),
        phone_number_id=phone_number_id,
        timestamp=_ts(item.get("timestamp")),
        errors=_errors(item.get("errors")),
        pricing=_new_pricing(
            billable=billable if isinstance(billable, bool) else None,
            pricing_model=_s(pricing.get("pricing_model")),
            type=_s(pricing.get("type")),
            category=_s(pricing.get("category")),
        )
        if pricing
        else None,
        biz_opaque_callback_data=_s(item.get("biz_opaque_callback_data")),
        recipient_type=_s(item.get("recipient_type")),
        raw=item,
    )


#: Groups API webhook fields and the event each ``value.groups[]`` item becomes.
_GROUP_FIELDS: dict[str, type[GroupEvent]] = {
    "group_lifecycle_update": GroupLifecycleEvent,
    "group_participants_update": GroupParticipantsEvent,
    "group_settings_update": GroupSettingsEvent,
    "group_status_update": GroupStatusEvent,
}
_GROUP_SETTINGS = ("group_subject", "group_description", "profile_picture")


def _participants(value: Any) -> tuple[GroupParticipant, ...]:
    out = []
    for item in _list(value):
        if isinstance(item, str):
            item = {"input": item}
        if not isinstance(item, dict):
            continue
        out.append(
            GroupParticipant(
                wa_id=_s(item.get("wa_id")),
                user_id=_s(item.get("user_id")),
                parent_user_id=_s(item.get("parent_user_id")),
                username=_s(item.get("username")),
                input=_s(item.get("input")),
                errors=_errors(item.get("errors")),
            )
        )
    return tuple(out)


def _group(field: str, item: Any, phone_number_id: str | None) -> GroupEvent:
    """One ``value.groups[]`` item of a Groups API webhook (reference: Meta's "Webhooks for
    Groups API" page; payloads in tests/payloads/group_*.json)."""
    if not isinstance(item, dict):
        raise _Malformed("group item is not an object")
    try:
        timestamp: datetime | None = parse_timestamp(item.get("timestamp"))
    except ValueError:
        timestamp = None
    common: dict[str, Any] = {
        "field": field,
        "type": _s(item.get("type")) or None,
        "group_id": _s(item.get("group_id")) or None,
        "request_id": _s(item.get("request_id")),
        "timestamp": timestamp,
        "phone_number_id": phone_number_id,
        "errors": _errors(item.get("errors")),
        "raw": item,
    }
    cls = _GROUP_FIELDS[field]
    if cls is GroupLifecycleEvent:
        return GroupLifecycleEvent(
            **common,
            subject=_s(item.get("subject")),
            description=_s(item.get("description")),
            invite_link=_s(item.get("invite_link")),
            join_approval_mode=_s(item.get("join_approval_mode")),
        )
    if cls is GroupParticipantsEvent:
        return GroupParticipantsEvent(
            **common,
            reason=_s(item.get("reason")),
            initiated_by=_s(item.get("initiated_by")),
            added=_participants(item.get("added_participants")),
            removed=_participants(item.get("removed_participants")),
            failed=_participants(item.get("failed_participants")),
            join_request_id=_s(item.get("join_request_id")),
            wa_id=_s(item.get("wa_id")),
            user_id=_s(item.get("user_id")),
            username=_s(item.get("username")),
        )
    if cls is GroupSettingsEvent:
        settings = []
        for name in _GROUP_SETTINGS:
            setting = _d(item.get(name))
            if setting is None:
                continue
            success = setting.get("update_successful")
            settings.append(
                GroupSetting(
                    name=name,
                    text=_s(setting.get("text")),
                    mime_type=_s(setting.get("mime_type")),
                    sha256=_s(setting.get("sha256")),
                    update_successful=success if isinstance(success, bool) else None,
                    errors=_errors(setting.get("errors")),
                )
            )
        return GroupSettingsEvent(**common, settings=tuple(settings))
    return GroupStatusEvent(**common, reason=_s(item.get("reason")))


def _profiles(value: Any) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for contact in _list(value):
        if not isinstance(contact, dict):
            continue
        profile = _d(contact.get("profile"))
        name = _s(profile.get("name")) if profile else None
        for key in (_s(contact.get("wa_id")), _s(contact.get("user_id"))):
            if key:
                out[key] = name
    return out


class _Events(list[Event]):
    """A list that refuses to grow past the item limit."""

    __slots__ = ("limit",)

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def add(self, event: Event) -> None:
        if len(self) >= self.limit:
            raise _Overflow
        self.append(event)


@final
class MessageParser:
    """Parses webhook bodies into :data:`~wa_agent.Event` lists. Stateless and reusable.

    ``max_items`` bounds the number of events produced from one body (Meta sends at most
    1000); anything past it becomes a single ``UnknownEvent`` with reason ``"too many
    items"``. ``max_depth`` bounds the JSON nesting: a deeper body is refused with
    :class:`InvalidPayload` before ``json.loads`` sees it.
    """

    __slots__ = ("max_depth", "max_items")

    def __init__(self, *, max_items: int = MAX_ITEMS, max_depth: int = MAX_DEPTH) -> None:
        self.max_items = max_items
        self.max_depth = max_depth

    def loads(self, body: bytes | str) -> Any:
        """``json.loads`` with the failures turned into :class:`InvalidPayload`.

        Lone UTF-16 surrogates (``"\\ud83d"`` without its pair, e.g. an emoji cut in half)
        become U+FFFD, so every string of every event can be encoded as UTF-8. A body nested
        deeper than ``max_depth`` is refused unparsed.
        """
        if _too_deep(body, self.max_depth):
            raise InvalidPayload(f"body nests too deeply (over {self.max_depth} levels)")
        try:
            data = json.loads(body)
            if _has_lone_surrogate(body):
                data = _scrub(data)
            return data
        except UnicodeDecodeError:
            raise InvalidPayload("body is not valid UTF-8") from None
        except RecursionError:
            raise InvalidPayload("body nests too deeply") from None
        except ValueError as exc:
            raise InvalidPayload(f"body is not JSON ({exc})") from None

    def parse(self, body: bytes | str | Mapping[str, Any]) -> list[Event]:
        """Parse one webhook body. See the module docstring for the error rules."""
        data = body if isinstance(body, Mapping) else self.loads(body)
        if not isinstance(data, Mapping):
            raise InvalidPayload("body is not a JSON object")
        obj = data.get("object")
        if obj != "whatsapp_business_account":
            raise InvalidPayload(
                f"'object' is {_brief(obj)}, not 'whatsapp_business_account'"
                if obj is not None
                else "no 'object' key: not a WhatsApp webhook"
            )
        entries = data.get("entry")
        if not isinstance(entries, list):
            raise InvalidPayload("'entry' is missing or not a list")
        events: _Events = _Events(self.max_items)
        try:
            for entry in entries:
                if not isinstance(entry, dict):
                    events.add(UnknownEvent(reason="entry is not an object", raw=entry))
                    continue
                changes = entry.get("changes")
                if not isinstance(changes, list):
                    events.add(UnknownEvent(reason="entry has no 'changes' list", raw=entry))
                    continue
                for change in changes:
                    self._change(change, entry, events)
        except _Overflow:
            events.append(UnknownEvent(reason="too many items", raw=None))
        return list(events)

    @staticmethod
    def _groups(field: str, value: dict[str, Any], change: dict[str, Any], events: _Events) -> None:
        metadata = _d(value.get("metadata")) or {}
        pnid = _s(metadata.get("phone_number_id"))
        groups = value.get("groups")
        if not isinstance(groups, list):
            events.add(
                _new_unknown_event(
                    field=field,
                    reason="group change without a 'groups' list",
                    phone_number_id=pnid,
                    raw=change,
                )
            )
            return
        for item in groups:
            try:
                events.add(_group(field, item, pnid))
            except (_Malformed, ValueError) as exc:  # pydantic's ValidationError is a ValueError
                events.add(
                    _new_unknown_event(field=field, reason=str(exc), phone_number_id=pnid, raw=item)
                )

    def _change(self, change: Any, entry: dict[str, Any], events: _Events) -> None:
        if not isinstance(change, dict):
            events.add(UnknownEvent(reason="change is not an object", raw=change))
            return
        field = _s(change.get("field"))
        value = change.get("value")
        if field in _GROUP_FIELDS and isinstance(value, dict):
            self._groups(field, value, change, events)
            return
        if field != "messages":
            events.add(
                _new_unknown_event(
                    field=field,
                    reason=f"webhook field {field!r}",
                    phone_number_id=None,
                    raw={"entry_id": entry.get("id"), "time": entry.get("time"), **change},
                )
            )
            return
        if not isinstance(value, dict):
            events.add(UnknownEvent(field=field, reason="'value' is not an object", raw=change))
            return
        metadata = _d(value.get("metadata")) or {}
        pnid = _s(metadata.get("phone_number_id"))
        display = _s(metadata.get("display_phone_number"))
        value_errors = _errors(value.get("errors"))
        messages = value.get("messages")
        if messages is not None:
            if not isinstance(messages, list):
                events.add(
                    _new_unknown_event(
                        field=field,
                        reason="'messages' is not a list",
                        phone_number_id=pnid,
                        raw=messages,
                    )
                )
            else:
                profiles = _profiles(value.get("contacts"))
                for item in messages:
                    try:
                        events.add(_message(item, pnid, display, profiles, value_errors))
                    except _Malformed as exc:
                        events.add(
                            _new_unknown_event(
                                field=field, reason=str(exc), phone_number_id=pnid, raw=item
                            )
                        )
        statuses = value.get("statuses")
        if statuses is not None:
            for item in statuses if isinstance(statuses, list) else [statuses]:
                try:
                    events.add(_status(item, pnid))
                except _Malformed as exc:
                    events.add(
                        _new_unknown_event(
                            field=field, reason=str(exc), phone_number_id=pnid, raw=item
                        )
                    )
        errors = value.get("errors")
        if isinstance(errors, list):
            for item in errors:
                detail = _error_detail(item)
                if detail is None:
                    events.add(
                        _new_unknown_event(
                            field=field,
                            reason="error is not an object",
                            phone_number_id=pnid,
                            raw=item,
                        )
                    )
                    continue
                events.add(
                    _new_error_event(
                        code=detail.code,
                        title=detail.title,
                        message=detail.message,
                        details=detail.details,
                        phone_number_id=pnid,
                        raw=item,
                    )
                )
        if messages is None and statuses is None and not isinstance(errors, list):
            events.add(
                _new_unknown_event(
                    field=field,
                    reason="messages change without messages, statuses or errors",
                    phone_number_id=pnid,
                    raw=value,
                )
            )
