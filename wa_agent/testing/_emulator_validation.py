"""The emulator's checks of message bodies against the Cloud API limits
(reference/cloud_api.md §8).

:func:`validate_message` checks one send (recipient, type, context, and the content of each
type: 4096-character text, 1024-character captions, media by an existing id or an http(s)
link, locations in range, named contact cards, one-emoji reactions, reply buttons, lists
and CTA URL buttons within Meta's counts and lengths, template shape) and raises
:class:`~wa_agent.testing._graph_errors.Reject` with Meta's code for a violation: 131009
for a value out of range (with the details Meta gives), 100 for a missing or mistyped
parameter, 131051 for a type a group does not take. :func:`is_read` tells a
mark-as-read call from a send.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

from .._media import kind_for_mime
from ._emulator_media import StoredMedia
from ._graph_errors import Reject

__all__ = ["PHONE_RE", "digits", "is_read", "validate_message"]

#: What a phone number recipient looks like (anything else is a BSUID or group id).
PHONE_RE = re.compile(r"\+?[\d\s\-().]+")


def digits(number: str) -> str:
    """Only the digits of ``number``."""
    return re.sub(r"\D", "", number)


def is_read(body: Any) -> bool:
    """Whether a ``/messages`` body marks a message read (or shows typing) rather than
    sending one."""
    return (
        isinstance(body, dict)
        and ("status" in body or "typing_indicator" in body)
        and ("type" not in body)
    )


def _check_str(
    value: Any,
    name: str,
    max_len: int,
    *,
    min_len: int = 1,
    code: int = 100,
    details: str | None = None,
) -> str:
    """A string of ``min_len``..``max_len`` characters; a missing or non-string value is
    code 100, a length out of range ``code`` (with Meta's own ``details`` where known)."""
    if not isinstance(value, str):
        raise Reject(100, f"The parameter {name} is required and must be a string.")
    if len(value) < min_len:
        raise Reject(code, details or f"Param {name} must be at least {min_len} characters long.")
    if len(value) > max_len:
        raise Reject(code, details or f"Param {name} must be at most {max_len} characters long.")
    return value


def _length_details(what: str, max_len: int) -> str:
    # Meta's wording, as observed in live answers (code 131009):
    # "Button title length invalid. Min length: 1, Max length: 20".
    return f"{what} length invalid. Min length: 1, Max length: {max_len}"


def _check_keys(obj: dict[str, Any], name: str, allowed: set[str]) -> None:
    extra = sorted(set(obj) - allowed)
    if extra:
        raise Reject(100, f"Param {name}['{extra[0]}'] is not a valid parameter.")


def _obj(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Reject(100, f"The parameter {name} is required and must be an object.")
    return value


_MESSAGE_TYPES = {
    "text", "image", "video", "audio", "document", "sticker", "location", "contacts",
    "interactive", "reaction", "template",
}  # fmt: skip
#: Message types a group takes (Meta: text, media and text- or media-based templates).
_GROUP_TYPES = {"text", "image", "video", "audio", "document", "sticker", "template"}
_MEDIA_FIELDS = {
    "image": {"id", "link", "caption"},
    "video": {"id", "link", "caption"},
    "document": {"id", "link", "caption", "filename"},
    "audio": {"id", "link", "voice"},
    "sticker": {"id", "link"},
}


def validate_message(
    body: dict[str, Any], media: Mapping[str, StoredMedia], templates: Collection[tuple[str, str]]
) -> str:
    """Check a send against reference/cloud_api.md §8; return its type. ``media`` is what
    a media id may name; ``templates`` the (name, language) pairs that exist (empty: any)."""
    to = body.get("to", body.get("recipient"))
    if not isinstance(to, str) or not to.strip():
        raise Reject(100, "The parameter to is required.")
    recipient_type = body.get("recipient_type", "individual")
    if recipient_type not in ("individual", "group"):
        raise Reject(100, "Param recipient_type must be one of {individual, group}.")
    if (
        recipient_type == "individual"
        and PHONE_RE.fullmatch(to)
        and not (5 <= len(digits(to)) <= 20)
    ):
        raise Reject(100, f"Param to is not a valid phone number: {to!r}")
    kind = body.get("type", "text")
    if not isinstance(kind, str) or kind not in _MESSAGE_TYPES:
        raise Reject(100, f"Param type must be one of {{{', '.join(sorted(_MESSAGE_TYPES))}}}.")
    if recipient_type == "group" and kind not in _GROUP_TYPES:
        # Meta's "Group messaging" page: groups take text, media and templates only.
        raise Reject(131051, f"Message type {kind} is not supported for group messages.")
    if kind not in body:
        raise Reject(100, f"The parameter {kind} is required.")
    context = body.get("context")
    if context is not None:
        _check_str(_obj(context, "context").get("message_id"), "context['message_id']", 256)
    opaque = body.get("biz_opaque_callback_data")
    if opaque is not None:
        _check_str(opaque, "biz_opaque_callback_data", 512)
    content = body[kind]
    if kind == "text":
        text = _obj(content, "text")
        _check_keys(text, "text", {"body", "preview_url"})
        _check_str(text.get("body"), "text['body']", 4096)
        if "preview_url" in text and not isinstance(text["preview_url"], bool):
            raise Reject(100, "Param text['preview_url'] must be a boolean.")
    elif kind in _MEDIA_FIELDS:
        _validate_media(kind, _obj(content, kind), media)
    elif kind == "location":
        _validate_location(_obj(content, "location"))
    elif kind == "reaction":
        reaction = _obj(content, "reaction")
        _check_keys(reaction, "reaction", {"message_id", "emoji"})
        _check_str(reaction.get("message_id"), "reaction['message_id']", 256)
        emoji = _check_str(
            reaction.get("emoji"),
            "reaction['emoji']",
            16,
            min_len=0,
            code=131009,
            details="Invalid emoji: one emoji at most.",
        )
        if any(c.isspace() or (c.isascii() and c.isalpha()) for c in emoji):
            raise Reject(131009, f"Invalid emoji {emoji!r}: a reaction is one emoji.")
    elif kind == "contacts":
        if not isinstance(content, list) or not content:
            raise Reject(100, "Param contacts must be a non-empty array.")
        for n, contact in enumerate(content):
            name = _obj(_obj(contact, f"contacts[{n}]").get("name"), f"contacts[{n}]['name']")
            _check_str(name.get("formatted_name"), f"contacts[{n}]['name']['formatted_name']", 512)
    elif kind == "interactive":
        _validate_interactive(_obj(content, "interactive"), media)
    elif kind == "template":
        _validate_template(_obj(content, "template"), templates)
    return kind


def _validate_media(kind: str, obj: dict[str, Any], media: Mapping[str, StoredMedia]) -> None:
    _check_keys(obj, kind, _MEDIA_FIELDS[kind])
    has_id, has_link = "id" in obj, "link" in obj
    if has_id == has_link:
        raise Reject(100, f"Param {kind} must have exactly one of 'id' or 'link'.")
    if has_id:
        media_id = _check_str(obj["id"], f"{kind}['id']", 64)
        stored = media.get(media_id)
        if stored is None:
            raise Reject(100, f"Param {kind}['id'] is not a valid media id: {media_id}")
        if kind_for_mime(stored.mime_type) != kind:
            raise Reject(131053, f"Media of type {stored.mime_type} cannot be sent as {kind}.")
    else:
        link = _check_str(obj["link"], f"{kind}['link']", 2048)
        if not re.match(r"https?://[^\s/]+", link):
            raise Reject(100, f"Param {kind}['link'] must be an http(s) URL.")
    if "voice" in obj and not isinstance(obj["voice"], bool):
        raise Reject(100, f"Param {kind}['voice'] must be a boolean.")
    if "caption" in obj:
        _check_str(obj["caption"], f"{kind}['caption']", 1024, min_len=0)
    if "filename" in obj:
        _check_str(obj["filename"], f"{kind}['filename']", 240)


def _validate_location(location: dict[str, Any]) -> None:
    _check_keys(location, "location", {"latitude", "longitude", "name", "address"})
    for name, bound in (("latitude", 90.0), ("longitude", 180.0)):
        value = location.get(name)
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                value = None
        if not isinstance(value, int | float) or isinstance(value, bool) or abs(value) > bound:
            raise Reject(100, f"Param location['{name}'] must be a number in ±{bound:g}.")
    for name in ("name", "address"):
        if name in location:
            _check_str(location[name], f"location['{name}']", 1000)


def _validate_header(header: Any, media: Mapping[str, StoredMedia]) -> None:
    header = _obj(header, "interactive['header']")
    kind = header.get("type")
    if kind == "text":
        _check_str(
            header.get("text"),
            "interactive['header']['text']",
            60,
            code=131009,
            details=_length_details("Header text", 60),
        )
    elif kind in ("image", "video", "document"):
        _validate_media(kind, _obj(header.get(kind), f"interactive['header']['{kind}']"), media)
    else:
        raise Reject(100, "Param interactive['header']['type'] must be text/image/video/document.")


#: Interactive types the Cloud API knows; the emulator checks button, list and cta_url fully.
_INTERACTIVE_TYPES = {
    "button", "list", "cta_url", "flow", "product", "product_list", "catalog_message",
    "location_request_message", "address_message", "call_permission_request", "carousel",
    "order_details", "order_status",
}  # fmt: skip


def _validate_interactive(interactive: dict[str, Any], media: Mapping[str, StoredMedia]) -> None:
    """Reply buttons, list messages and CTA URL buttons against Meta's limits.

    Lengths and counts out of range answer 131009 "Parameter value is not valid" with the
    details Meta gives (observed: "Button title length invalid. Min length: 1, Max length:
    20", "Invalid buttons count. Min allowed buttons: 1, Max allowed buttons: 3", "Row title
    is too long. Max length is 24", "Total row count exceed max allowed count: 10"); a missing
    or mistyped parameter answers 100.
    """
    kind = interactive.get("type")
    if not isinstance(kind, str):
        raise Reject(100, "The parameter interactive['type'] is required.")
    if kind not in _INTERACTIVE_TYPES:
        raise Reject(100, f"Param interactive['type'] {kind!r} is not a valid interactive type.")
    action = _obj(interactive.get("action"), "interactive['action']")
    if "header" in interactive:
        _validate_header(interactive["header"], media)
    if "footer" in interactive:
        footer = _obj(interactive["footer"], "interactive['footer']")
        _check_str(
            footer.get("text"),
            "interactive['footer']['text']",
            60,
            code=131009,
            details=_length_details("Footer text", 60),
        )
    if kind in ("button", "list", "cta_url"):
        body = _obj(interactive.get("body"), "interactive['body']")
        _check_str(
            body.get("text"),
            "interactive['body']['text']",
            1024,
            code=131009,
            details=_length_details("Body text", 1024),
        )
    if kind == "button":
        _validate_reply_buttons(action)
    elif kind == "list":
        _validate_list(action)
    elif kind == "cta_url":
        _validate_cta_url(action)


def _validate_reply_buttons(action: dict[str, Any]) -> None:
    buttons = action.get("buttons")
    if not isinstance(buttons, list):
        raise Reject(100, "The parameter interactive['action']['buttons'] is required.")
    if not 1 <= len(buttons) <= 3:
        raise Reject(
            131009,
            "Invalid buttons count. Min allowed buttons: 1, Max allowed "
            f"buttons: 3 (got {len(buttons)}).",
        )
    ids, titles = set(), set()
    for n, button in enumerate(buttons):
        where = f"interactive['action']['buttons'][{n}]"
        button = _obj(button, where)
        if button.get("type") != "reply":
            raise Reject(100, f"Param {where}['type'] must be 'reply'.")
        reply = _obj(button.get("reply"), f"{where}['reply']")
        button_id = _check_str(
            reply.get("id"),
            f"{where}['reply']['id']",
            256,
            code=131009,
            details=_length_details("Button id", 256),
        )
        title = _check_str(
            reply.get("title"),
            f"{where}['reply']['title']",
            20,
            code=131009,
            details=_length_details("Button title", 20),
        )
        if not title.strip():
            raise Reject(131009, _length_details("Button title", 20))
        if button_id in ids or title in titles:
            raise Reject(131009, "Button ids and titles must be unique.")
        ids.add(button_id)
        titles.add(title)


def _validate_list(action: dict[str, Any]) -> None:
    _check_str(
        action.get("button"),
        "interactive['action']['button']",
        20,
        code=131009,
        details=_length_details("Button text", 20),
    )
    sections = action.get("sections")
    if not isinstance(sections, list) or not sections:
        raise Reject(100, "The parameter interactive['action']['sections'] is required.")
    if len(sections) > 10:
        raise Reject(131009, f"Too many sections: {len(sections)}. Max allowed sections: 10.")
    total = 0
    row_ids: set[str] = set()
    for n, section in enumerate(sections):
        where = f"interactive['action']['sections'][{n}]"
        section = _obj(section, where)
        if len(sections) > 1 or "title" in section:
            _check_str(
                section.get("title"),
                f"{where}['title']",
                24,
                code=131009,
                details="Section title is too long. Max length is 24",
            )
        rows = section.get("rows")
        if not isinstance(rows, list) or not rows:
            raise Reject(100, f"Param {where}['rows'] must be a non-empty array.")
        total += len(rows)
        for r, row in enumerate(rows):
            row_where = f"{where}['rows'][{r}]"
            row = _obj(row, row_where)
            row_id = _check_str(
                row.get("id"),
                f"{row_where}['id']",
                200,
                code=131009,
                details="Row id is too long. Max length is 200",
            )
            _check_str(
                row.get("title"),
                f"{row_where}['title']",
                24,
                code=131009,
                details="Row title is too long. Max length is 24",
            )
            if "description" in row:
                _check_str(
                    row["description"],
                    f"{row_where}['description']",
                    72,
                    min_len=0,
                    code=131009,
                    details="Row description is too long. Max length is 72",
                )
            if row_id in row_ids:
                raise Reject(131009, "Row ids must be unique.")
            row_ids.add(row_id)
    if total > 10:
        raise Reject(131009, f"Total row count exceed max allowed count: 10 (got {total}).")


def _validate_cta_url(action: dict[str, Any]) -> None:
    if action.get("name") != "cta_url":
        raise Reject(100, "Param interactive['action']['name'] must be 'cta_url'.")
    parameters = _obj(action.get("parameters"), "interactive['action']['parameters']")
    _check_keys(parameters, "interactive['action']['parameters']", {"display_text", "url"})
    label = _check_str(
        parameters.get("display_text"),
        "interactive['action']['parameters']['display_text']",
        20,
        code=131009,
        details=_length_details("Display text", 20),
    )
    if not label.strip():
        raise Reject(131009, _length_details("Display text", 20))
    url = _check_str(
        parameters.get("url"),
        "interactive['action']['parameters']['url']",
        2000,
        code=131009,
        details="Parameter url is too long.",
    )
    if not re.fullmatch(r"https?://[^\s/?#]+[^\s]*", url, re.IGNORECASE):
        raise Reject(
            131009,
            f"Param interactive['action']['parameters']['url'] must be an "
            f"http(s) URL, got {url!r}.",
        )


def _validate_template(template: dict[str, Any], templates: Collection[tuple[str, str]]) -> None:
    name = _check_str(template.get("name"), "template['name']", 512)
    language = _obj(template.get("language"), "template['language']")
    code = _check_str(language.get("code"), "template['language']['code']", 16)
    if templates and (name, code) not in templates:
        raise Reject(132001, f"template name ({name}) does not exist in {code}")
    components = template.get("components", [])
    if not isinstance(components, list):
        raise Reject(100, "Param template['components'] must be an array.")
    for n, component in enumerate(components):
        where = f"template['components'][{n}]"
        component = _obj(component, where)
        kind = component.get("type")
        if kind not in ("header", "body", "footer", "button", "carousel", "limited_time_offer"):
            raise Reject(100, f"Param {where}['type'] is not a valid component type.")
        if kind == "button" and ("sub_type" not in component or "index" not in component):
            raise Reject(100, f"Param {where} needs 'sub_type' and 'index'.")
        parameters = component.get("parameters", [])
        if not isinstance(parameters, list):
            raise Reject(100, f"Param {where}['parameters'] must be an array.")
        for p, parameter in enumerate(parameters):
            parameter = _obj(parameter, f"{where}['parameters'][{p}]")
            if not isinstance(parameter.get("type"), str):
                raise Reject(100, f"Param {where}['parameters'][{p}]['type'] is required.")
