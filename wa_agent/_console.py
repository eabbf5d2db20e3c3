"""Text shown in a terminal: what the ``wa-agent`` command and its demo chat both need.

Kept apart from :mod:`wa_agent.cli` and :mod:`wa_agent.terminal` so that neither imports
the other for it (the package has no import cycles; ``tests/test_import_graph.py``).
"""

from __future__ import annotations

import re

__all__ = ["strip_control"]

# CSI/OSC/other escape sequences and C0/C1 control characters except newline and tab.
_CONTROL = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[ -~]?|[\x00-\x08\x0b-\x1f\x7f-\x9f]"
)


def strip_control(text: str) -> str:
    """Remove ANSI escape sequences and control characters (user text shown in a terminal)."""
    return _CONTROL.sub("", text)
