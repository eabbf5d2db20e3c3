"""The operator side of the conversations widget (human handoff).

* :class:`OperatorConsole` — what :class:`~wa_agent.widget.ConversationsWidget` adds under
  each contact's row when it is given an ``operator`` (a :class:`~wa_agent.WhatsAppInterface`):
  a "Take over" / "Hand back" button whose label follows the conversation's state, a reply box
  and a "Send" button. Clicks schedule the interface's coroutines on the kernel's event loop
  and return at once; a failure (e.g. :class:`~wa_agent.OutsideServiceWindow`) becomes an
  error entry in that contact's row.
* :class:`OperatorRouter` — what :meth:`InterfaceManager.widget` passes as the operator when
  it has several interfaces: each contact's actions go to the interface whose webhooks that
  contact's messages came in on.

Importing this module never imports ipywidgets (the widget passes the module in).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Coroutine, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from ._loops import on_loop
from .hosting.observers import QuietListener

if TYPE_CHECKING:
    from .events import Message
    from .interface import WhatsAppInterface
    from .widget import ConversationLog

__all__ = ["Operator", "OperatorConsole", "OperatorRouter", "RowControls"]

logger = logging.getLogger("wa_agent.widget")


class Operator(Protocol):
    """What the console calls: the operator methods of a :class:`~wa_agent.WhatsAppInterface`."""

    async def handoff(self, contact: str, note: str | None = None) -> object: ...
    async def resume(self, contact: str) -> object: ...
    async def send(self, contact: str, text: str | None = None) -> object: ...


class RowControls:
    """Take over / Hand back, the reply box and Send for one contact."""

    def __init__(self, widgets: Any, contact: str, console: OperatorConsole) -> None:
        self.contact = contact
        self._console = console
        self.handed_off = False
        self.toggle = widgets.Button(
            description="Take over",
            icon="user",
            tooltip="Stop the bot and answer this contact yourself",
            layout=widgets.Layout(width="120px"),
        )
        self.toggle.add_class("wa-takeover")
        self.text = widgets.Text(
            placeholder="Reply as the operator", layout=widgets.Layout(width="320px")
        )
        self.text.add_class("wa-reply")
        self.send_button = widgets.Button(
            description="Send",
            icon="paper-plane",
            button_style="warning",
            layout=widgets.Layout(width="90px"),
        )
        self.send_button.add_class("wa-send")
        self.box = widgets.HBox(children=(self.toggle, self.text, self.send_button))
        self.box.add_class("wa-console")
        self.toggle.on_click(self._on_toggle)
        self.send_button.on_click(self._on_send)

    def sync(self, handed_off: bool) -> None:
        """Make the button's label follow the conversation's state."""
        self.handed_off = handed_off
        label = "Hand back" if handed_off else "Take over"
        if self.toggle.description != label:
            self.toggle.description = label
            self.toggle.icon = "robot" if handed_off else "user"
            self.toggle.button_style = "warning" if handed_off else ""
            self.toggle.tooltip = (
                "Let the bot answer this contact again"
                if handed_off
                else "Stop the bot and answer this contact yourself"
            )

    def _on_toggle(self, _button: Any = None) -> None:
        operator = self._console.operator
        if self.handed_off:
            self._console.spawn(
                self.contact, "hand back", operator.resume(self.contact), self.toggle
            )
        else:
            self._console.spawn(
                self.contact, "take over", operator.handoff(self.contact), self.toggle
            )

    def _on_send(self, _button: Any = None) -> None:
        text = str(self.text.value).strip()
        if not text:
            return
        self._console.spawn(self.contact, "send", self._send(text), self.send_button)

    async def _send(self, text: str) -> None:
        await self._console.operator.send(self.contact, text)
        if str(self.text.value).strip() == text:  # not retyped meanwhile
            self.text.value = ""

    def close(self) -> None:
        for widget in (self.toggle, self.text, self.send_button, self.box):
            widget.close()


class OperatorConsole:
    """The controls of every row, and the tasks their clicks started."""

    def __init__(
        self,
        widgets: Any,
        log: ConversationLog,
        operator: Operator,
        loop: asyncio.AbstractEventLoop | None,
    ) -> None:
        self._widgets = widgets
        self.log = log
        self.operator = operator
        self.controls: dict[str, RowControls] = {}
        self._loop = loop
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def pending(self) -> int:
        """Actions started from the buttons that have not finished."""
        return sum(1 for t in self._tasks if not t.done())

    def wrap(self, contact: str, row: Any) -> Any:
        """The row with its controls under it (what the widget shows for ``contact``)."""
        controls = self.controls[contact] = RowControls(self._widgets, contact, self)
        item = self._widgets.VBox(children=(row, controls.box))
        item.add_class("wa-console-row")
        return item

    def sync(self, contact: str, handed_off: bool) -> None:
        controls = self.controls.get(contact)
        if controls is not None:
            controls.sync(handed_off)

    def drop(self, contact: str) -> None:
        controls = self.controls.pop(contact, None)
        if controls is not None:
            controls.close()

    def spawn(self, contact: str, what: str, coro: Coroutine[Any, Any, Any], button: Any) -> None:
        """Run ``coro`` as a task on the widget's loop; never blocks the caller."""

        def start(loop: asyncio.AbstractEventLoop) -> None:
            button.disabled = True
            task = loop.create_task(coro, name=f"wa_agent-operator-{what}")
            self._tasks.add(task)
            task.add_done_callback(
                functools.partial(self._finished, contact=contact, what=what, button=button)
            )

        if not on_loop(self._loop, start):  # a click off the loop's thread, loop gone
            coro.close()
            self.log.error(contact, f"could not {what}: no running event loop")

    def _finished(self, task: asyncio.Task[Any], contact: str, what: str, button: Any) -> None:
        self._tasks.discard(task)
        button.disabled = False
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            logger.warning("operator: could not %s for a conversation: %s", what, exc)
            self.log.error(contact, f"could not {what}: {exc}")

    async def wait(self, timeout: float = 30.0) -> None:
        """Wait for the actions started from the buttons (errors are in the rows)."""
        if self._tasks:
            await asyncio.wait_for(
                asyncio.gather(*list(self._tasks), return_exceptions=True), timeout
            )

    def close(self) -> None:
        for contact in list(self.controls):
            self.drop(contact)


class OperatorRouter:
    """An :class:`Operator` over several interfaces: a contact's actions go to the interface
    that last received a message from (or sent one to) that contact. Attaches a listener to
    each interface when created."""

    def __init__(self, interfaces: Iterable[WhatsAppInterface]) -> None:
        self.interfaces = list(interfaces)
        self._where: dict[str, WhatsAppInterface] = {}
        for interface in self.interfaces:
            interface.listeners.append(_Seen(self._where, interface))

    def interface_for(self, contact: str) -> WhatsAppInterface:
        """The interface that handles ``contact`` (``LookupError`` before any message)."""
        found = self._where.get(contact)
        if found is not None:
            return found
        if len(self.interfaces) == 1:
            return self.interfaces[0]
        raise LookupError(
            f"no message from or to {contact} yet: which interface is theirs is not known"
        )

    async def handoff(self, contact: str, note: str | None = None) -> object:
        return await self.interface_for(contact).handoff(contact, note)

    async def resume(self, contact: str) -> object:
        return await self.interface_for(contact).resume(contact)

    async def send(self, contact: str, text: str | None = None) -> object:
        return await self.interface_for(contact).send(contact, text)


class _Seen(QuietListener):
    """A conversation listener that remembers which interface each contact uses."""

    def __init__(self, where: dict[str, WhatsAppInterface], interface: WhatsAppInterface) -> None:
        self._where = where
        self._interface = interface

    def inbound(self, message: Message) -> None:
        self._where[message.sender] = self._interface

    def outbound(
        self,
        to: str,
        text: str,
        *,
        wamid: str | None = None,
        kind: str = "text",
        media_info: dict[str, Any] | None = None,
    ) -> None:
        self._where[to] = self._interface
