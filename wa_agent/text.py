"""Text helpers for outbound WhatsApp messages: splitting and Markdown conversion.

:func:`split_text` cuts a long reply into message-sized chunks (a WhatsApp text message holds
at most 4096 characters) at the most natural boundary it can find, and
:func:`markdown_to_whatsapp` rewrites the Markdown that language models write into
WhatsApp's own formatting marks. Both are pure functions with no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

__all__ = ["MAX_TEXT_LENGTH", "markdown_to_whatsapp", "split_text"]

#: The Cloud API limit for ``text.body`` (reference/cloud_api.md §8).
MAX_TEXT_LENGTH = 4096

# A fenced code block: an opening line of three or more backticks (info string without
# backticks), then everything up to a closing fence at least as long, or the end of the text.
_FENCE_RE = re.compile(
    r"^[ \t]{0,3}(?P<fence>`{3,})(?P<info>[^`\n]*)\n(?P<body>.*?)"
    r"(?:^[ \t]{0,3}(?P=fence)`*[ \t]*$|\Z)",
    re.MULTILINE | re.DOTALL,
)
# One unbreakable token of prose: non-space characters, where an inline code span on one line
# (```x y``` or `x y`) counts as part of the token even if it contains spaces.
_TOKEN_RE = re.compile(r"(?:```[^\n]*?```|`[^`\n]+`|\S)+")
_WORD_RE = re.compile(r"\S+")
_SENTENCE_END_RE = re.compile(r"[.!?…][\"')\]»”’*_~]*$")

# Break strengths between two atoms, strongest first.
_PARAGRAPH, _LINE, _SENTENCE, _WORD, _HARD = range(5)
# A break of a stronger kind is only preferred when the chunk before it is at least this full;
# otherwise a paragraph break near the start would leave a tiny first message.
_MIN_FILL = 0.3


class _Atom(NamedTuple):
    gap: str  # whitespace between the previous atom and this one ("" for hard cuts)
    text: str
    level: int  # strength of the break before this atom


def split_text(text: str, limit: int = MAX_TEXT_LENGTH) -> list[str]:
    """Split ``text`` into chunks of at most ``limit`` characters, in order.

    Breaks are made at paragraph boundaries, else line boundaries, else after a sentence,
    else between words; never inside a word, a URL or a fenced code block. A fenced code
    block longer than ``limit`` is split at line boundaries into parts that are each fenced
    again (same fence and info string), so every chunk renders as code. Only a single token
    longer than ``limit`` (or a code line longer than a fenced part can hold) is cut hard.

    The whitespace at each break (and at both ends of ``text``) is dropped; apart from that
    and the re-added fences, joining the chunks gives back the text. Blank text gives ``[]``.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    if not text.strip():
        return []
    if len(text) <= limit and text == text.strip():
        return [text]
    atoms = _atoms(text, limit)
    return _pack(atoms, limit)


def _atoms(text: str, limit: int) -> list[_Atom]:
    atoms: list[_Atom] = []
    prev_end = 0

    def add(start: int, piece: str) -> None:
        nonlocal prev_end
        gap = text[prev_end:start]
        atoms.append(_Atom(gap, piece, _level(gap, atoms[-1].text if atoms else "")))
        prev_end = start + len(piece)

    def add_prose(start: int, end: int) -> None:
        for m in _TOKEN_RE.finditer(text, start, end):
            if len(m.group()) > limit and any(c.isspace() for c in m.group()):
                # An inline code span too long to keep whole: fall back to its words.
                for w in _WORD_RE.finditer(text, m.start(), m.end()):
                    add_token(w.start(), w.group())
            else:
                add_token(m.start(), m.group())

    def add_token(start: int, token: str) -> None:
        if len(token) <= limit:
            add(start, token)
            return
        add(start, token[:limit])
        for i in range(limit, len(token), limit):
            atoms.append(_Atom("", token[i : i + limit], _HARD))
        nonlocal prev_end
        prev_end = start + len(token)

    pos = 0
    for m in _FENCE_RE.finditer(text):
        add_prose(pos, m.start())
        block = m.group()
        if len(block) <= limit:
            add(m.start(), block)
        else:
            parts = _split_code_block(block, m.group("fence"), limit)
            if parts is None:  # limit too small for any fenced part: treat it as prose
                add_prose(m.start(), m.end())
            else:
                add(m.start(), parts[0])
                atoms.extend(_Atom("\n", p, _LINE) for p in parts[1:])
                prev_end = m.end()
        pos = m.end()
    add_prose(pos, len(text))
    return atoms


def _level(gap: str, previous: str) -> int:
    newlines = gap.count("\n")
    if newlines >= 2:
        return _PARAGRAPH
    if newlines == 1:
        return _LINE
    if _SENTENCE_END_RE.search(previous):
        return _SENTENCE
    return _WORD


def _split_code_block(block: str, fence: str, limit: int) -> list[str] | None:
    lines = block.split("\n")
    opening = lines[0]
    last = lines[-1].strip()
    closed = len(lines) >= 2 and last.startswith(fence) and set(last) == {"`"}
    inner = lines[1:-1] if closed else lines[1:]
    capacity = limit - len(opening) - len(fence) - 2
    if capacity < 1:
        return None
    parts: list[str] = []
    current: list[str] = []
    size = -1  # length of "\n".join(current)

    def flush() -> None:
        nonlocal current, size
        if current:
            parts.append(f"{opening}\n" + "\n".join(current) + f"\n{fence}")
        current, size = [], -1

    for line in inner:
        if len(line) > capacity:
            flush()
            for i in range(0, len(line), capacity):
                current = [line[i : i + capacity]]
                flush()
            continue
        if size + 1 + len(line) > capacity:
            flush()
        current.append(line)
        size += 1 + len(line)
    flush()
    return parts or None


def _pack(atoms: list[_Atom], limit: int) -> list[str]:
    # Offsets of each atom in the virtual text "atom0 gap1 atom1 gap2 atom2 ...".
    starts: list[int] = []
    ends: list[int] = []
    pos = 0
    for n, atom in enumerate(atoms):
        if n:
            pos += len(atom.gap)
        starts.append(pos)
        pos += len(atom.text)
        ends.append(pos)

    chunks: list[str] = []
    i, count = 0, len(atoms)
    while i < count:
        j = i + 1
        while j < count and ends[j] - starts[i] <= limit:
            j += 1
        k = count if j == count else _best_break(atoms, starts, ends, i, j, limit)
        parts = [atoms[i].text]
        for atom in atoms[i + 1 : k]:
            parts.append(atom.gap)
            parts.append(atom.text)
        chunks.append("".join(parts))
        i = k
    return chunks


def _best_break(
    atoms: list[_Atom], starts: list[int], ends: list[int], i: int, j: int, limit: int
) -> int:
    """Pick the break before atom k (i < k <= j) for a chunk starting at atom i."""
    last_at: list[int | None] = [None] * 5  # last k whose break is at least this strong
    for k in range(j, i, -1):
        level = atoms[k].level
        for strength in range(level, 5):
            if last_at[strength] is None:
                last_at[strength] = k
        if last_at[0] is not None:
            break
    wanted = limit * _MIN_FILL
    for strength in range(_HARD):
        best = last_at[strength]
        if best is not None and ends[best - 1] - starts[i] >= wanted:
            return best
    for best in last_at:
        if best is not None:
            return best
    return j  # unreachable: the break before j always exists


# --------------------------------------------------------------------------- Markdown


_INLINE_CODE_RE = re.compile(r"```[^\n]*?```|`[^`\n]+`")
_URL_RE = re.compile(r"https?://[^\s<>()\[\]]+")
_HEADING_RE = re.compile(r"^[ \t]{0,3}#{1,6}[ \t]+(?P<text>.+?)(?:[ \t]+#+)?[ \t]*$", re.MULTILINE)
_BULLET_RE = re.compile(r"^(?P<indent>[ \t]*)[*+][ \t]+(?=\S)", re.MULTILINE)
_IMAGE_RE = re.compile(r"!\[(?P<text>[^\]\n]*)\]\((?P<url>[^)\s]+)(?:[ \t]+\"[^\"\n]*\")?\)")
_LINK_RE = re.compile(r"\[(?P<text>[^\]\n]+)\]\((?P<url>[^)\s]+)(?:[ \t]+\"[^\"\n]*\")?\)")
_AUTOLINK_RE = re.compile(r"<(?P<url>https?://[^>\s]+)>")
_BOLD_ITALIC_RE = re.compile(r"\*\*\*(?=\S)(?P<t>[^\n]+?)(?<=\S)\*\*\*")
_BOLD_STAR_RE = re.compile(r"\*\*(?=\S)(?P<t>[^\n]+?)(?<=\S)\*\*")
_BOLD_UNDERSCORE_RE = re.compile(r"(?<!\w)__(?=\S)(?P<t>[^\n]+?)(?<=\S)__(?!\w)")
_STRIKE_RE = re.compile(r"~~(?=\S)(?P<t>[^\n]+?)(?<=\S)~~")
_ITALIC_STAR_RE = re.compile(r"(?<![\w*])\*(?=[^\s*])(?P<t>[^\n*]+?)(?<=[^\s*])\*(?![\w*])")


def markdown_to_whatsapp(text: str) -> str:
    """Rewrite common Markdown into WhatsApp formatting.

    ``**b**``/``__b__`` → ``*b*`` (bold), ``*i*``/``_i_`` → ``_i_`` (italic), ``~~s~~`` →
    ``~s~``, ``# Heading`` → a ``*Heading*`` line, ``[text](url)`` → ``text (url)`` (just the
    URL when the text is the URL), ``![alt](url)`` → ``alt (url)``, ``<url>`` → ``url`` and
    ``*``/``+`` bullets → ``-``. Fenced code blocks, inline code and URLs are left exactly as
    they are. Emphasis never spans lines.
    """
    free = _free_chars(text, 3)
    hold, bold_mark, end_mark = free
    saved: list[str] = []

    def protect(value: str) -> str:
        saved.append(value)
        return f"{hold}{len(saved) - 1}{end_mark}"

    def protect_match(m: re.Match[str]) -> str:
        return protect(m.group())

    out = _FENCE_RE.sub(protect_match, text)
    out = _INLINE_CODE_RE.sub(protect_match, out)

    def link(m: re.Match[str]) -> str:
        label, url = m.group("text").strip(), m.group("url")
        bare = re.sub(r"^https?://", "", url).rstrip("/")
        if not label or label in (url, bare) or label.rstrip("/") == bare:
            return protect(url)
        return f"{label} ({protect(url)})"

    out = _IMAGE_RE.sub(link, out)
    out = _LINK_RE.sub(link, out)
    out = _AUTOLINK_RE.sub(lambda m: protect(m.group("url")), out)
    out = _URL_RE.sub(protect_match, out)

    def inline(s: str) -> str:
        s = _BOLD_ITALIC_RE.sub(lambda m: f"{bold_mark}_{m.group('t')}_{bold_mark}", s)
        s = _BOLD_STAR_RE.sub(lambda m: f"{bold_mark}{m.group('t')}{bold_mark}", s)
        s = _BOLD_UNDERSCORE_RE.sub(lambda m: f"{bold_mark}{m.group('t')}{bold_mark}", s)
        s = _STRIKE_RE.sub(lambda m: f"~{m.group('t')}~", s)
        return _ITALIC_STAR_RE.sub(lambda m: f"_{m.group('t')}_", s)

    def heading(m: re.Match[str]) -> str:
        title = m.group("text").replace("**", "").replace("__", "")
        title = inline(title).replace(bold_mark, "").strip()
        return f"{bold_mark}{title}{bold_mark}" if title else m.group()

    out = _HEADING_RE.sub(heading, out)
    out = _BULLET_RE.sub(lambda m: f"{m.group('indent')}- ", out)
    out = inline(out).replace(bold_mark, "*")

    restore = re.compile(re.escape(hold) + r"(\d+)" + re.escape(end_mark))
    # Protected values may contain other placeholders (a URL inside a link label); loop.
    while True:
        new = restore.sub(lambda m: saved[int(m.group(1))], out)
        if new == out:
            return new
        out = new


def _free_chars(text: str, count: int) -> list[str]:
    """``count`` private-use characters that do not occur in ``text`` (used as markers)."""
    present: Callable[[str], bool] = text.__contains__
    found: list[str] = []
    code = 0xE000
    while len(found) < count:
        ch = chr(code)
        if not present(ch):
            found.append(ch)
        code += 1
    return found
