"""No class in ``wa_agent`` over 600 lines and no function over 100 lines, so each piece
can be read and changed alone.

Sizes are read from the source with :mod:`ast`: a definition counts from its ``def`` or
``class`` line to its last line (decorators not included). Methods and nested functions
count on their own, and also inside the class or function that holds them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "wa_agent"

MAX_CLASS_LINES = 600
MAX_FUNCTION_LINES = 100

#: Definitions still over the limit, as ``path::name`` (path relative to the repository).
#: Add one only with an issue to split it; remove it as soon as it fits.
ALLOWED: frozenset[str] = frozenset()


def oversized(path: Path, root: Path = ROOT) -> Iterator[tuple[str, str, int, int]]:
    """``(path::name, kind, first line, lines)`` of each class or function in the file at
    ``path`` that is over its limit."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    where = path.relative_to(root).as_posix()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            kind, limit = "class", MAX_CLASS_LINES
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            kind, limit = "function", MAX_FUNCTION_LINES
        else:
            continue
        assert node.end_lineno is not None
        lines = node.end_lineno - node.lineno + 1
        if lines > limit:
            yield f"{where}::{node.name}", kind, node.lineno, lines


def test_no_class_or_function_over_the_limits() -> None:
    """Every class of wa_agent has at most 600 lines and every function or method at most
    100, apart from the allow-listed definitions; the offenders are printed."""
    found = [hit for path in sorted(PACKAGE.rglob("*.py")) for hit in oversized(path)]
    offenders = [
        f"{name.split('::')[0]}:{line} {name.split('::')[1]} ({kind}, {lines} lines)"
        for name, kind, line, lines in found
        if name not in ALLOWED
    ]
    for offender in offenders:
        print(offender)
    assert offenders == [], (
        f"over {MAX_CLASS_LINES} lines per class or {MAX_FUNCTION_LINES} per function:\n"
        + "\n".join(offenders)
    )
    stale = ALLOWED - {name for name, *_ in found}
    assert stale == set(), f"within the limits now, remove from ALLOWED: {sorted(stale)}"


def test_the_checker_sees_long_definitions(tmp_path: Path) -> None:
    """The checker reports a 101-line function and a 601-line class (and the method in it
    that is too long too), and nothing for definitions exactly at the limits (made-up
    module)."""
    body = "    x = 1\n"
    method_body = "        x = 1\n"
    source = (
        "def at_limit():\n"
        + body * 99
        + "def too_long():\n"
        + body * 100
        + "class AtLimit:\n"
        + body * 599
        + "class TooLong:\n    def method(self):\n"
        + method_body * 100
        + body * 499
    )
    path = tmp_path / "wa_agent" / "made_up.py"
    path.parent.mkdir()
    path.write_text(source, encoding="utf-8")
    found = {name: (kind, lines) for name, kind, _line, lines in oversized(path, tmp_path)}
    assert found == {
        "wa_agent/made_up.py::too_long": ("function", 101),
        "wa_agent/made_up.py::TooLong": ("class", 601),
        "wa_agent/made_up.py::method": ("function", 101),
    }
