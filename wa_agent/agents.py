"""What an agent receives and answers, and adapters that turn any agent-shaped thing into one.

An agent is anything that answers an :class:`AgentRequest`:

* an ``async def`` or plain function (plain ones run in a worker thread) taking the request
  and returning a ``str`` or an :class:`AgentReply`;
* an object of another agent framework, adapted by duck typing: ``do_async(task)``,
  ``arun(...)``, ``ainvoke(...)`` or ``run(...)`` (no framework is imported);
* an object with an ``async def answer(request)`` method (what :class:`~wa_agent.LLMAgent` has).

A reply can be more than text (see :class:`AgentReply`): choices the user taps, a reaction, a
location, contact cards, a link button, a voice note. Choices are checked against Meta's limits
when the reply is built: a reply Meta would refuse raises :class:`ValueError` naming the limit,
before anything is sent (the hosting layer then apologises to the user, as for any agent error).
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, cast, runtime_checkable

import anyio.to_thread

from .events import Location, SharedContact

if TYPE_CHECKING:
    from .events import Message

__all__ = [
    "BUTTON_ID_MAX",
    "BUTTON_TITLE_MAX",
    "LIST_BUTTON_MAX",
    "MAX_LIST_ROWS",
    "MAX_REPLY_BUTTONS",
    "ROW_DESCRIPTION_MAX",
    "ROW_ID_MAX",
    "ROW_TITLE_MAX",
    "Agent",
    "AgentFunction",
    "AgentReply",
    "AgentRequest",
    "Attachment",
    "Choice",
    "Contact",
    "LinkButton",
    "Media",
    "Turn",
    "as_agent",
]

logger = logging.getLogger(__name__)

# Meta's limits for interactive messages (reference/cloud_api.md §8).
#: Reply buttons in one message; more choices go out as a list message.
MAX_REPLY_BUTTONS: Final = 3
#: Rows in a list message (all sections together).
MAX_LIST_ROWS: Final = 10
#: Characters in a reply button's title, and in its id.
BUTTON_TITLE_MAX: Final = 20
BUTTON_ID_MAX: Final = 256
#: Characters in a list row's title, description and id.
ROW_TITLE_MAX: Final = 24
ROW_DESCRIPTION_MAX: Final = 72
ROW_ID_MAX: Final = 200
#: Characters in the label of the button that opens a list (and of a link button).
LIST_BUTTON_MAX: Final = 20

_URL_RE = re.compile(r"https?://[^\s/?#]+[^\s]*", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Attachment:
    """Media the user sent, already downloaded: ``data`` holds the bytes."""

    kind: str  # image, video, audio, document, sticker
    data: bytes
    mime_type: str
    filename: str | None = None
    caption: str | None = None
    voice: bool = False

    def __repr__(self) -> str:
        return (
            f"Attachment(kind={self.kind!r}, mime_type={self.mime_type!r}, "
            f"size={len(self.data)}, filename={self.filename!r})"
        )


@dataclass(frozen=True, slots=True)
class Turn:
    """One turn of a conversation's history: the user's, the agent's (``assistant``), or a
    person's who answered while the conversation was handed off (``operator``)."""

    role: Literal["user", "assistant", "operator"]
    text: str
    at: datetime | None = None
    message_id: str | None = None


@dataclass(frozen=True, slots=True)
class Media:
    """Media for the agent to send: ``data`` is bytes, a local path, a link or a media id.

    ``kind`` is guessed from ``mime_type`` (or the file name) when not given.
    """

    data: bytes | Path | str
    mime_type: str | None = None
    filename: str | None = None
    caption: str | None = None
    kind: str | None = None


@dataclass(frozen=True, slots=True)
class Choice:
    """One choice of a reply: the user sees ``title`` (and ``description`` in a list) and,
    when they tap it, the agent gets ``id`` as :attr:`AgentRequest.choice`."""

    id: str
    title: str
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Contact:
    """A contact card to send. ``name`` is shown as is; ``phones`` are numbers in any format
    (``"+1 555 123 4567"``), ``emails`` and ``urls`` plain strings."""

    name: str
    phones: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    organization: str | None = None
    urls: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError("a Contact needs a name (Meta requires name.formatted_name)")
        for attr in ("phones", "emails", "urls"):
            value = getattr(self, attr)
            if isinstance(value, str):
                value = (value,)
            value = tuple(value)
            if not all(isinstance(v, str) and v.strip() for v in value):
                raise ValueError(f"Contact.{attr} must be non-empty strings")
            object.__setattr__(self, attr, value)

    def to_card(self) -> dict[str, Any]:
        """The card as the Cloud API takes it in a ``contacts`` message.

        Meta wants ``formatted_name`` plus at least one name part, so ``first_name`` (and
        ``last_name``) are taken from ``name``.
        """
        first, _, last = self.name.strip().partition(" ")
        name: dict[str, str] = {"formatted_name": self.name.strip(), "first_name": first}
        if last.strip():
            name["last_name"] = last.strip()
        card: dict[str, Any] = {"name": name}
        if self.phones:
            card["phones"] = [{"phone": p, "type": "CELL"} for p in self.phones]
        if self.emails:
            card["emails"] = [{"email": e, "type": "WORK"} for e in self.emails]
        if self.organization:
            card["org"] = {"company": self.organization}
        if self.urls:
            card["urls"] = [{"url": u, "type": "WORK"} for u in self.urls]
        return card


@dataclass(frozen=True, slots=True)
class LinkButton:
    """A button that opens ``url`` (Meta's interactive ``cta_url`` message): the user sees
    ``label`` (at most 20 characters), not the raw link."""

    label: str
    url: str

    def __post_init__(self) -> None:
        if not isinstance(self.label, str) or not self.label.strip():
            raise ValueError("a LinkButton needs a label")
        if len(self.label) > LIST_BUTTON_MAX:
            raise ValueError(
                f"link button label {self.label!r} is {len(self.label)} characters; "
                f"WhatsApp allows at most {LIST_BUTTON_MAX}"
            )
        if not isinstance(self.url, str) or not _URL_RE.fullmatch(self.url.strip()):
            raise ValueError(f"a LinkButton url must be an http(s) URL, got {self.url!r}")
        object.__setattr__(self, "url", self.url.strip())


@dataclass(frozen=True, slots=True)
class AgentRequest:
    """Everything an agent is given about one inbound message (or a heartbeat/greeting).

    ``history`` holds the sender's previous turns in CHAT mode (empty in TASK mode), oldest
    first, never another sender's. ``purpose`` is ``"message"`` for a user message,
    ``"heartbeat"`` for a scheduled proactive message and ``"greeting"`` after a reset.

    In CHAT mode one request may answer several messages the user sent in a row (a
    coalesced turn): ``messages`` holds each of them in order, ``text`` joins their texts
    with newlines, ``attachments`` holds the media of all of them and ``message`` is the
    newest. For a single message, ``messages == (message,)``. ``choice`` is the id of the
    reply button or list row the user tapped (its title is the ``text``), else ``None``.
    A voice note's ``text`` is its transcript when the interface has a transcriber.

    ``notes`` say what could not be given to the agent, apart from the user's own words
    (e.g. ``"the image the user sent could not be downloaded (MediaError)"``): they are
    never mixed into ``text``, so they cannot change what the user said.
    """

    text: str
    sender: str
    attachments: tuple[Attachment, ...] = ()
    history: tuple[Turn, ...] = ()
    message: Message | None = None
    profile_name: str | None = None
    interface: str = "WhatsApp"
    purpose: Literal["message", "heartbeat", "greeting"] = "message"
    messages: tuple[Message, ...] = ()
    choice: str | None = None
    notes: tuple[str, ...] = ()


ButtonSpec = str | tuple[str, str] | tuple[str, str, str] | Choice | Mapping[str, Any]
ContactSpec = Contact | SharedContact | str | Mapping[str, Any]
LocationSpec = Location | tuple[float, float] | Mapping[str, Any]


@dataclass(frozen=True)
class AgentReply:
    """An agent's answer; every field is optional and they combine.

    * ``text``: Markdown is converted to WhatsApp formatting and long text is split.
    * ``images``, ``files``: media to send (bytes, a path, a link, a media id or
      :class:`Media`).
    * ``buttons``: choices the user taps, each a string (its own id), an ``(id, title)`` pair,
      an ``(id, title, description)`` triple or a :class:`Choice`. Up to 3 without
      descriptions go out as reply buttons (titles at most 20 characters); 4 to 10, or any
      with a description, as a list message opened by ``list_button`` (row titles at most 24
      characters, descriptions 72). The text becomes the body of that message.
    * ``reaction``: an emoji put on the user's message being answered.
    * ``location``: a pin, as :class:`~wa_agent.Location`, ``(latitude, longitude)`` or a
      mapping with those keys (and ``name``/``address``).
    * ``contacts``: contact cards (:class:`Contact`, a received
      :class:`~wa_agent.SharedContact`, a name, or a mapping of Contact's fields).
    * ``link_button``: a :class:`LinkButton` or ``(label, url)``.
    * ``audio``: audio to send; OGG/Opus goes out as a voice note.
    * ``handoff``: hand the conversation to a person after this reply.

    Choices over Meta's limits (more than 10, a title too long, two with the same id or
    title, an empty one) raise :class:`ValueError` naming the limit, as does an invalid
    location, reaction or link button: the reply is refused before anything is sent.
    """

    text: str | None = None
    images: Sequence[Media | bytes | Path | str] = field(default_factory=tuple)
    files: Sequence[Media | bytes | Path | str] = field(default_factory=tuple)
    buttons: Sequence[ButtonSpec] = field(default_factory=tuple)
    reaction: str | None = None
    location: LocationSpec | None = None
    contacts: Sequence[ContactSpec] = field(default_factory=tuple)
    link_button: LinkButton | tuple[str, str] | None = None
    audio: Media | bytes | Path | str | None = None
    handoff: bool = False
    list_button: str = "Choose"

    def __post_init__(self) -> None:
        set_ = functools.partial(object.__setattr__, self)
        if self.text is not None and not isinstance(self.text, str):
            raise TypeError(f"AgentReply.text must be a str, not {type(self.text).__name__}")
        set_("buttons", _choices(self.buttons, self.list_button))
        if self.reaction is not None:
            set_("reaction", _reaction(self.reaction))
        if self.location is not None:
            set_("location", _location(self.location))
        set_("contacts", tuple(_contact(c) for c in _seq(self.contacts, "contacts")))
        if self.link_button is not None and not isinstance(self.link_button, LinkButton):
            if not isinstance(self.link_button, tuple | list) or len(self.link_button) != 2:
                raise TypeError("AgentReply.link_button is a LinkButton or a (label, url) pair")
            set_("link_button", LinkButton(*self.link_button))
        if not isinstance(self.handoff, bool):
            raise TypeError("AgentReply.handoff must be a bool")

    @property
    def choices(self) -> tuple[Choice, ...]:
        """The buttons as :class:`Choice` objects (``buttons`` holds the same, normalised)."""
        return cast("tuple[Choice, ...]", self.buttons)

    @property
    def choice_style(self) -> Literal["buttons", "list"] | None:
        """How the choices go out: ``"buttons"`` (up to 3 reply buttons), ``"list"`` (a list
        message) or ``None`` when there are none."""
        return _style(self.choices)


def _seq(value: Any, name: str) -> tuple[Any, ...]:
    if value is None:
        return ()
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence):
        raise TypeError(f"AgentReply.{name} must be a list or tuple")
    return tuple(value)


def _choice(spec: Any) -> Choice:
    if isinstance(spec, Choice):
        choice = spec
    elif isinstance(spec, str):
        choice = Choice(spec, spec)
    elif isinstance(spec, Mapping):
        if "title" not in spec:
            raise ValueError(f"a choice mapping needs a 'title': {dict(spec)!r}")
        title = spec["title"]
        choice = Choice(spec.get("id", title), title, spec.get("description"))
    elif isinstance(spec, tuple | list) and len(spec) in (2, 3):
        choice = Choice(*spec)
    else:
        raise TypeError(
            f"a choice is a string, an (id, title) pair, an (id, title, description) triple or "
            f"a Choice, not {spec!r}"
        )
    if not isinstance(choice.id, str) or not isinstance(choice.title, str):
        raise TypeError(f"choice id and title must be strings: {choice!r}")
    if not choice.title.strip():
        raise ValueError("a choice has an empty title")
    if not choice.id.strip():
        raise ValueError(f"choice {choice.title!r} has an empty id")
    if choice.description is not None and not isinstance(choice.description, str):
        raise TypeError(f"choice {choice.title!r}: description must be a string")
    if choice.description is not None and not choice.description.strip():
        choice = Choice(choice.id, choice.title)
    return choice


def _style(choices: Sequence[Choice]) -> Literal["buttons", "list"] | None:
    if not choices:
        return None
    if len(choices) <= MAX_REPLY_BUTTONS and all(c.description is None for c in choices):
        return "buttons"
    return "list"


def _choices(specs: Any, list_button: str) -> tuple[Choice, ...]:
    choices = tuple(_choice(s) for s in _seq(specs, "buttons"))
    if not choices:
        return ()
    if len(choices) > MAX_LIST_ROWS:
        raise ValueError(
            f"{len(choices)} choices: WhatsApp shows at most {MAX_REPLY_BUTTONS} reply buttons "
            f"or {MAX_LIST_ROWS} list rows"
        )
    style = _style(choices)
    if style == "buttons":
        title_max, id_max, what = BUTTON_TITLE_MAX, BUTTON_ID_MAX, "reply button"
    else:
        title_max, id_max, what = ROW_TITLE_MAX, ROW_ID_MAX, "list row"
        if not isinstance(list_button, str) or not list_button.strip():
            raise ValueError("list_button (the label that opens the list) is empty")
        if len(list_button) > LIST_BUTTON_MAX:
            raise ValueError(
                f"list_button {list_button!r} is {len(list_button)} characters; "
                f"WhatsApp allows at most {LIST_BUTTON_MAX}"
            )
    ids: set[str] = set()
    titles: set[str] = set()
    for choice in choices:
        if len(choice.title) > title_max:
            raise ValueError(
                f"{what} title {choice.title!r} is {len(choice.title)} characters; WhatsApp "
                f"allows at most {title_max}"
            )
        if len(choice.id) > id_max:
            raise ValueError(
                f"{what} id of {choice.title!r} is {len(choice.id)} characters; "
                f"WhatsApp allows at most {id_max}"
            )
        if choice.description is not None and len(choice.description) > ROW_DESCRIPTION_MAX:
            raise ValueError(
                f"description of {choice.title!r} is {len(choice.description)} characters; "
                f"WhatsApp allows at most {ROW_DESCRIPTION_MAX}"
            )
        if choice.id in ids:
            raise ValueError(f"two choices have the id {choice.id!r}; ids must be unique")
        if choice.title in titles:
            raise ValueError(f"two choices are titled {choice.title!r}; titles must be unique")
        ids.add(choice.id)
        titles.add(choice.title)
    return choices


def _reaction(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"AgentReply.reaction must be an emoji string, not {type(value).__name__}")
    emoji = value.strip()
    if not emoji or len(emoji) > 16 or any(c.isspace() for c in emoji):
        raise ValueError(f"AgentReply.reaction must be one emoji, got {emoji!r}")
    if any(c.isascii() and c.isalpha() for c in emoji):
        raise ValueError(f"AgentReply.reaction must be an emoji, not text: {emoji!r}")
    return emoji


def _location(value: Any) -> Location:
    if isinstance(value, Location):
        location = value
    elif isinstance(value, Mapping):
        location = Location(**value)
    elif isinstance(value, tuple | list) and len(value) == 2:
        location = Location(latitude=value[0], longitude=value[1])
    else:
        raise TypeError(
            "AgentReply.location is a Location, a (latitude, longitude) pair or a "
            "mapping with latitude and longitude"
        )
    if not -90 <= location.latitude <= 90:
        raise ValueError(f"latitude {location.latitude} is outside -90..90")
    if not -180 <= location.longitude <= 180:
        raise ValueError(f"longitude {location.longitude} is outside -180..180")
    return location


def _contact(value: Any) -> Contact:
    if isinstance(value, Contact):
        return value
    if isinstance(value, str):
        return Contact(value)
    if isinstance(value, SharedContact):
        if not value.formatted_name:
            raise ValueError("a shared contact without a name cannot be sent back")
        return Contact(value.formatted_name, value.phones, value.emails)
    if isinstance(value, Mapping):
        return Contact(**value)
    raise TypeError(
        f"a contact is a Contact, a SharedContact, a name or a mapping, not {type(value).__name__}"
    )


AgentFunction = Callable[[AgentRequest], "Awaitable[str | AgentReply] | str | AgentReply"]


@runtime_checkable
class Agent(Protocol):
    """The normalised agent interface the hosting layer calls."""

    async def answer(self, request: AgentRequest) -> AgentReply:
        """Answer one request (a user message, a heartbeat or a greeting)."""
        ...


def _to_reply(value: Any, agent: Any = None) -> AgentReply:
    if isinstance(value, AgentReply):
        return value
    if value is None:
        _warn_none(agent)
        return AgentReply()
    if isinstance(value, str):
        return AgentReply(text=value)
    # Framework results: RunResponse.content, AIMessage.content, {"output": ...}
    for attr in ("content", "output", "text"):
        inner = getattr(value, attr, None)
        if isinstance(inner, str):
            return AgentReply(text=inner)
    if isinstance(value, dict):
        for key in ("output", "content", "text", "answer"):
            if isinstance(value.get(key), str):
                return AgentReply(text=value[key])
    return AgentReply(text=str(value))


def _prompt(request: AgentRequest) -> str:
    """The request as one string, for frameworks that take a plain task/prompt."""
    parts: list[str] = []
    for turn in request.history:
        parts.append(f"{turn.role}: {turn.text}")
    text = "\n".join([*(f"[note from the host: {n}]" for n in request.notes), request.text])
    if parts:
        parts.append(f"user: {text}")
        return "\n".join(parts)
    return text


_warned_none: weakref.WeakSet[Any] = weakref.WeakSet()


def _warn_none(agent: Any) -> None:
    """An agent answered ``None`` (a forgotten ``return``): say so once per agent, at
    WARNING, since the user then gets no reply at all."""
    try:
        if agent in _warned_none:
            return
        _warned_none.add(agent)
    except TypeError:  # not weakly referenceable: warn each time
        pass
    name = getattr(agent, "__qualname__", None) or type(agent).__name__
    logger.warning(
        "agent %s returned None, so nothing is sent to the user: did it forget a "
        "`return`? (Return a str or an AgentReply; this is logged once.)",
        name,
    )


def _signature_problem(fn: Any, args: int) -> str | None:
    """Why ``fn`` cannot be called with ``args`` positional arguments, or ``None``."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return None  # a builtin or C callable: nothing to check
    try:
        signature.bind(*([None] * args))
    except TypeError as exc:
        return f"it cannot be called with {args} argument{'s' if args != 1 else ''} ({exc})"
    return None


class _FunctionAgent:
    def __init__(self, fn: Callable[..., Any]) -> None:
        self._fn = fn
        self._is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004
        )
        self.wrapped = fn

    async def answer(self, request: AgentRequest) -> AgentReply:
        if self._is_async:
            result = await self._fn(request)
        else:
            result = await anyio.to_thread.run_sync(self._fn, request)
            if inspect.isawaitable(result):
                result = await result
        return _to_reply(result, self._fn)


class _DuckAgent:
    """Adapts an object of another agent framework by the method it has."""

    def __init__(self, obj: Any, method: str) -> None:
        self.wrapped = obj
        self._method = method

    async def answer(self, request: AgentRequest) -> AgentReply:
        fn = getattr(self.wrapped, self._method)
        prompt = _prompt(request)
        if self._method == "ainvoke":
            result = await fn({"input": prompt, "messages": [("user", prompt)]})
        elif self._method in ("do_async", "arun"):
            result = await fn(prompt)
        else:  # run: may be sync or async
            if inspect.iscoroutinefunction(fn):
                result = await fn(prompt)
            else:
                result = await anyio.to_thread.run_sync(functools.partial(fn, prompt))
                if inspect.isawaitable(result):
                    result = await result
        return _to_reply(result, self.wrapped)


def as_agent(obj: Any) -> Agent:
    """Normalise ``obj`` into an :class:`Agent` (see the module docstring for what fits).

    Raises ``TypeError`` naming the object and the accepted shapes when ``obj`` fits none
    of them, or cannot take a request: a class instead of an instance, a function whose
    signature does not take one argument, a ``WhatsAppInterface``/``InterfaceManager``.
    """
    if isinstance(obj, (_FunctionAgent, _DuckAgent)):
        return obj
    _refuse_hosts(obj)
    if inspect.isclass(obj):
        raise TypeError(
            f"{obj.__qualname__} is a class, not an agent: pass an instance "
            f"({obj.__qualname__}(...)) or a function taking an AgentRequest"
        )
    answer = getattr(obj, "answer", None)
    if answer is not None and inspect.iscoroutinefunction(answer):
        _check_call(obj, answer, "answer()", 1)
        return obj  # type: ignore[no-any-return]
    for method in ("do_async", "arun", "ainvoke"):
        found = getattr(obj, method, None)
        if inspect.iscoroutinefunction(found):
            _check_call(obj, found, f"{method}()", 1)
            return _DuckAgent(obj, method)
    if callable(getattr(obj, "run", None)) and not inspect.isfunction(obj):
        _check_call(obj, obj.run, "run()", 1)
        return _DuckAgent(obj, "run")
    if callable(obj):
        _check_call(obj, obj, "the function", 1)
        return _FunctionAgent(obj)
    raise TypeError(
        f"{_describe(obj)} is not an agent: pass an async or plain function taking an "
        "AgentRequest, or an object with answer(), do_async(), arun(), ainvoke() or run()"
    )


def _describe(obj: Any) -> str:
    text = repr(obj)
    return (text[:60] + "…") if len(text) > 60 else text


def _check_call(obj: Any, fn: Any, what: str, args: int) -> None:
    problem = _signature_problem(fn, args)
    if problem is not None:
        raise TypeError(
            f"{_describe(obj)} cannot be used as an agent: {what} must take the "
            f"AgentRequest as its one argument, but {problem}"
        )


def _refuse_hosts(obj: Any) -> None:
    """A hosting object passed where the agent goes: say what to pass instead."""
    kind = type(obj).__name__
    if kind in ("WhatsAppInterface", "InterfaceManager") and type(obj).__module__.startswith(
        "wa_agent."
    ):
        raise TypeError(
            f"a {kind} is not an agent: pass the agent itself (the function or "
            f"object that answers), e.g. WhatsAppInterface(agent)"
        )


def agent_attribute(agent: Agent, name: str, default: Any = None) -> Any:
    """Read a configuration attribute (``heartbeat``, ``greeting``...) from the agent or
    the object it wraps."""
    if hasattr(agent, name):
        return getattr(agent, name)
    wrapped = getattr(agent, "wrapped", None)
    if wrapped is not None and hasattr(wrapped, name):
        return getattr(wrapped, name)
    return default
