"""The WhatsApp tools :class:`~wa_agent.LLMAgent` offers a model, and what calling them does.

A model answering on WhatsApp can do more than write: it can offer tappable choices, react
to the user's message with an emoji, and send a location pin. Each is a *tool* in the
provider's tool calling (Anthropic ``tools``/``tool_use``, OpenAI ``tools``/``tool_calls``).
Calling one records its effect in :class:`ToolEffects`; the agent answers the call with a
short tool result (``Done: ...`` or ``Error: ...`` with what to fix) and the model then writes
its final text. The effects become the :class:`~wa_agent.AgentReply` fields ``buttons``,
``reaction`` and ``location``.

A call with bad arguments (invalid JSON, a missing field, 11 choices, a title over Meta's
limit) changes nothing and gets an error result, so the model can correct itself; it never
raises.

Adding a tool (``handoff`` is the next one: it will set ``AgentReply.handoff`` once the
hosting layer can hand a conversation to a person) means adding a :class:`Tool` to
:data:`TOOLS` and a branch in :meth:`ToolEffects.call`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from .agents import BUTTON_TITLE_MAX, MAX_LIST_ROWS, ROW_TITLE_MAX, AgentReply, _location

__all__ = ["TOOLS", "Tool", "ToolEffects", "anthropic_tools", "openai_tools", "tool_names"]


@dataclass(frozen=True, slots=True)
class Tool:
    """One tool: its name, what the model is told about it, and its JSON schema."""

    name: str
    description: str
    schema: dict[str, Any]
    needs_message: bool = False  # only offered when answering a user's message


TOOLS: Final[dict[str, Tool]] = {
    "offer_choices": Tool(
        "offer_choices",
        "Show the user tappable choices under your message, so they can answer with one tap "
        f"instead of typing. 1 to {MAX_LIST_ROWS} short choices: up to 3 appear as buttons "
        f"(each at most {BUTTON_TITLE_MAX} characters), 4 to {MAX_LIST_ROWS} as a list (each "
        f"at most {ROW_TITLE_MAX} characters). When the user taps one, you receive its text. "
        "Call it at most once per answer, then write your message: it is shown above the "
        "choices.",
        {
            "type": "object",
            "properties": {
                "choices": {
                    "type": "array",
                    "items": {"type": "string"},
                    "minItems": 1,
                    "maxItems": MAX_LIST_ROWS,
                    "description": "The choices, in order, each a short distinct label.",
                },
                "text": {
                    "type": "string",
                    "description": "Optional question shown with the choices, if your "
                    "message does not ask it.",
                },
            },
            "required": ["choices"],
        },
    ),
    "react": Tool(
        "react",
        "React to the user's last message with one emoji (like a thumbs up), as people do "
        "on WhatsApp. Use it sparingly; it does not replace your answer.",
        {
            "type": "object",
            "properties": {"emoji": {"type": "string", "description": "Exactly one emoji."}},
            "required": ["emoji"],
        },
        needs_message=True,
    ),
    "send_location": Tool(
        "send_location",
        "Send the user a map pin they can open in their maps app, e.g. the address of a "
        "place they asked about. Only for coordinates you are sure of.",
        {
            "type": "object",
            "properties": {
                "latitude": {"type": "number", "minimum": -90, "maximum": 90},
                "longitude": {"type": "number", "minimum": -180, "maximum": 180},
                "name": {"type": "string", "description": "Name of the place."},
                "address": {"type": "string", "description": "Street address."},
            },
            "required": ["latitude", "longitude"],
        },
    ),
}


def tool_names(tools: bool | Sequence[str] | None, *, default: bool) -> tuple[str, ...]:
    """The tool names an LLMAgent's ``tools=`` argument turns on (``None``: ``default``)."""
    if tools is None:
        tools = default
    if tools is True:
        return tuple(TOOLS)
    if tools is False:
        return ()
    if isinstance(tools, str):
        tools = [tools]
    names = tuple(dict.fromkeys(tools))
    unknown = [n for n in names if n not in TOOLS]
    if unknown:
        raise ValueError(f"unknown LLMAgent tool(s) {unknown}; the tools are {sorted(TOOLS)}")
    return names


def anthropic_tools(names: Sequence[str]) -> list[dict[str, Any]]:
    """The tools in the Anthropic Messages API's shape."""
    return [
        {"name": t.name, "description": t.description, "input_schema": t.schema}
        for t in (TOOLS[n] for n in names)
    ]


def openai_tools(names: Sequence[str]) -> list[dict[str, Any]]:
    """The tools in the OpenAI Chat Completions shape (``type: function``)."""
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.schema},
        }
        for t in (TOOLS[n] for n in names)
    ]


@dataclass
class ToolEffects:
    """What the model's tool calls asked for during one answer."""

    names: tuple[str, ...]
    choices: tuple[str, ...] = ()
    choices_text: str | None = None
    reaction: str | None = None
    location: Any = None
    calls: list[tuple[str, bool]] = field(default_factory=list)  # (name, ok), in order

    def call(self, name: str, arguments: Any) -> tuple[str, bool]:
        """Run one tool call; returns ``(result text, is_error)`` for the model.

        ``arguments`` is the decoded input (Anthropic) or the JSON string (OpenAI).
        """
        result, ok = self._call(name, arguments)
        self.calls.append((name, ok))
        return result, not ok

    def _call(self, name: str, arguments: Any) -> tuple[str, bool]:
        if name not in self.names:
            known = ", ".join(self.names) or "none"
            return f"Error: there is no tool named {name!r}; the tools are {known}.", False
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except ValueError as exc:
                return f"Error: the arguments are not valid JSON ({exc}). Call it again.", False
        if not isinstance(arguments, dict):
            return "Error: the arguments must be a JSON object.", False
        missing = [k for k in TOOLS[name].schema.get("required", ()) if k not in arguments]
        if missing:
            return f"Error: missing required argument(s) {missing}. Call it again.", False
        if name == "offer_choices":
            return self._offer(arguments)
        if name == "react":
            return self._react(arguments)
        return self._locate(arguments)

    def _offer(self, args: dict[str, Any]) -> tuple[str, bool]:
        choices = args["choices"]
        text = args.get("text")
        if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
            return "Error: 'choices' must be a list of strings.", False
        if text is not None and not isinstance(text, str):
            return "Error: 'text' must be a string.", False
        cleaned = tuple(c.strip() for c in choices)
        try:
            AgentReply(buttons=cleaned)
        except (ValueError, TypeError) as exc:
            return f"Error: {exc}. Nothing was shown; call offer_choices again.", False
        replaced = " (replacing the earlier choices)" if self.choices else ""
        self.choices = cleaned
        self.choices_text = text.strip() if text and text.strip() else None
        shape = "buttons" if AgentReply(buttons=cleaned).choice_style == "buttons" else "a list"
        shown = " | ".join(cleaned)
        done = f"Done{replaced}: the user will see {shape} under your message: {shown}."
        return f"{done} Now write your message.", True

    def _react(self, args: dict[str, Any]) -> tuple[str, bool]:
        emoji = args["emoji"]
        try:
            reaction = AgentReply(reaction=emoji).reaction
        except (ValueError, TypeError) as exc:
            return f"Error: {exc}.", False
        self.reaction = reaction
        return f"Done: you reacted {reaction} to the user's message.", True

    def _locate(self, args: dict[str, Any]) -> tuple[str, bool]:
        fields = {
            k: args[k]
            for k in ("latitude", "longitude", "name", "address")
            if args.get(k) is not None
        }
        for key in ("latitude", "longitude"):
            if isinstance(fields[key], bool) or not isinstance(fields[key], int | float):
                return f"Error: '{key}' must be a number.", False
        for key in ("name", "address"):
            if key in fields and not isinstance(fields[key], str):
                return f"Error: '{key}' must be a string.", False
        try:
            location = _location(fields)
        except (ValueError, TypeError) as exc:
            return f"Error: {exc}.", False
        self.location = location
        where = location.name or f"{location.latitude}, {location.longitude}"
        return f"Done: the user will get a map pin for {where}.", True

    @property
    def any(self) -> bool:
        """Whether any tool call had an effect."""
        return bool(self.choices or self.reaction or self.location is not None)

    def reply(self, text: str | None) -> AgentReply:
        """The agent's reply: the model's final text with the recorded effects."""
        if not (text and text.strip()):
            text = self.choices_text
        elif self.choices_text and self.choices_text not in text:
            text = f"{text.strip()}\n\n{self.choices_text}"
        return AgentReply(
            text=text, buttons=self.choices, reaction=self.reaction, location=self.location
        )
