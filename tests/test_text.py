"""split_text and markdown_to_whatsapp: examples plus hypothesis properties."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wa_agent.text import MAX_TEXT_LENGTH, markdown_to_whatsapp, split_text

# ---------------------------------------------------------------- helpers


def _locate(text: str, chunks: list[str]) -> list[str]:
    """Find the chunks in order in ``text``; return the gaps around them (must be whitespace)."""
    gaps: list[str] = []
    pos = 0
    for chunk in chunks:
        idx = text.find(chunk, pos)
        assert idx >= 0, f"chunk {chunk[:40]!r} is not in the text after offset {pos}"
        gaps.append(text[pos:idx])
        pos = idx + len(chunk)
    gaps.append(text[pos:])
    return gaps


_WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyzäé0123456789.,!?:/-", min_size=1, max_size=12)
_SEP = st.sampled_from([" ", " ", " ", "  ", "\n", "\n\n", ". ", "! ", "\t", " \n "])


@st.composite
def _prose(draw: st.DrawFn, max_word: int = 12) -> str:
    words = draw(st.lists(_WORD.map(lambda w: w[:max_word]), min_size=1, max_size=120))
    out = [draw(st.sampled_from(["", " ", "\n"]))]
    for word in words:
        out.append(word)
        out.append(draw(_SEP))
    return "".join(out)


# ---------------------------------------------------------------- properties


@settings(max_examples=300, deadline=None)
@given(text=_prose(), limit=st.integers(min_value=12, max_value=200))
def test_chunks_fit_and_rejoin_with_only_whitespace_dropped(text: str, limit: int) -> None:
    """Every chunk is within the limit, non-blank, and the chunks are the text's pieces in
    order: what lies between (and around) them is whitespace only."""
    chunks = split_text(text, limit)
    assert all(0 < len(c) <= limit for c in chunks)
    assert all(c.strip() for c in chunks)
    gaps = _locate(text, chunks)
    assert all(not g.strip() for g in gaps)
    assert re.sub(r"\s+", "", "".join(chunks)) == re.sub(r"\s+", "", text)


@settings(max_examples=300, deadline=None)
@given(text=_prose(), limit=st.integers(min_value=14, max_value=200))  # words <= 12 + "."
def test_no_word_is_cut_when_words_fit(text: str, limit: int) -> None:
    """With every word shorter than the limit, each break falls on whitespace: no word,
    number or URL-like token is split across two chunks."""
    chunks = split_text(text, limit)
    gaps = _locate(text, chunks)
    assert all(g for g in gaps[1:-1]), "two chunks touch: a word was cut"
    tokens = text.split()
    assert [t for c in chunks for t in c.split()] == tokens


@settings(max_examples=200, deadline=None)
@given(
    text=_prose(),
    long_token=st.text(alphabet="xyz", min_size=30, max_size=400),
    limit=st.integers(min_value=10, max_value=29),
)
def test_only_a_token_longer_than_the_limit_is_cut(text: str, long_token: str, limit: int) -> None:
    """A single token longer than the limit is cut hard into limit-sized pieces; the other
    words stay whole."""
    full = f"{text} {long_token} {text}"
    chunks = split_text(full, limit)
    assert all(0 < len(c) <= limit for c in chunks)
    gaps = _locate(full, chunks)
    assert all(not g.strip() for g in gaps)
    short_words = [t for t in full.split() if len(t) <= limit]
    pieces = [t for c in chunks for t in c.split()]
    for word in short_words:
        assert word in pieces


@settings(max_examples=200, deadline=None)
@given(
    before=_prose(),
    code_lines=st.lists(st.text(alphabet="abc xyz=()", max_size=15), min_size=1, max_size=6),
    after=_prose(),
    limit=st.integers(min_value=120, max_value=300),
)
def test_a_code_block_that_fits_is_never_split(
    before: str, code_lines: list[str], after: str, limit: int
) -> None:
    """A fenced code block no longer than the limit ends up whole in one chunk."""
    block = "```python\n" + "\n".join(code_lines) + "\n```"
    text = f"{before}\n{block}\n{after}"
    chunks = split_text(text, limit)
    assert any(block in c for c in chunks)
    assert all(len(c) <= limit for c in chunks)


@settings(max_examples=200, deadline=None)
@given(
    code_lines=st.lists(st.text(alphabet="abc xyz=()", max_size=30), min_size=5, max_size=80),
    limit=st.integers(min_value=50, max_value=200),
)
def test_a_long_code_block_is_split_into_fenced_parts(code_lines: list[str], limit: int) -> None:
    """A code block longer than the limit becomes several chunks, each fenced with the same
    fence and info string, whose contents rejoin to the original code lines."""
    block = "```sql\n" + "\n".join(code_lines) + "\n```"
    chunks = split_text("Intro.\n\n" + block + "\n\nOutro.", limit)
    assert all(len(c) <= limit for c in chunks)
    parts = [p for c in chunks for p in re.findall(r"```sql\n(.*?)\n```", c, re.DOTALL)]
    assert sum(c.count("```") for c in chunks) == 2 * len(parts)  # every fence is closed
    if len(block) > limit:
        assert len(parts) >= 2
    assert [line for p in parts for line in p.split("\n")] == code_lines


# ---------------------------------------------------------------- examples


def test_short_text_is_one_chunk_and_blank_text_none() -> None:
    """Text within the limit comes back as one (trimmed) chunk; blank text gives no chunk."""
    assert split_text("  hello  ") == ["hello"]
    assert split_text(" \n\t ") == []
    assert split_text("x" * MAX_TEXT_LENGTH) == ["x" * MAX_TEXT_LENGTH]


def test_default_limit_is_4096() -> None:
    """The default limit is the Cloud API's 4096 characters for a text body."""
    words = " ".join(["word"] * 2000)  # 9999 characters
    chunks = split_text(words)
    assert len(chunks) == 3
    assert all(len(c) <= 4096 for c in chunks)


def test_paragraph_break_is_preferred_over_line_sentence_and_word() -> None:
    """Given room to choose, the split happens at the paragraph break."""
    text = "First line.\nSecond line of the first paragraph.\n\nSecond paragraph here."
    assert split_text(text, 60) == [
        "First line.\nSecond line of the first paragraph.",
        "Second paragraph here.",
    ]


def test_line_then_sentence_then_word() -> None:
    """Without a paragraph break it splits at a line, then after a sentence, then
    between words."""
    assert split_text("aaa bbb ccc\nddd eee fff", 15) == ["aaa bbb ccc", "ddd eee fff"]
    assert split_text("One two three. Four five six", 20) == ["One two three.", "Four five six"]
    assert split_text("alpha beta gamma delta", 12) == ["alpha beta", "gamma delta"]


def test_tiny_first_chunks_are_avoided() -> None:
    """A paragraph break very early does not leave a near-empty first chunk when a weaker
    break gives a fuller one."""
    text = "Hi.\n\n" + " ".join(["lorem"] * 40)
    chunks = split_text(text, 100)
    assert len(chunks[0]) > 30


def test_url_is_never_split() -> None:
    """A URL is kept whole even when it sits right at the limit boundary."""
    url = "https://example.com/a/very/long/path?with=query&and=more#fragment"
    text = ("word " * 15) + url + (" word" * 15)
    for limit in range(len(url), len(url) + 40):
        chunks = split_text(text, limit)
        assert sum(url in c for c in chunks) == 1


def test_over_long_code_line_is_cut_inside_its_fence() -> None:
    """A single code line longer than a fenced part can hold is cut, and every piece is
    still fenced."""
    block = "```\n" + "x" * 50 + "\n```"
    chunks = split_text(block, 20)
    assert all(c.startswith("```\n") and c.endswith("\n```") for c in chunks)
    assert "".join(c[4:-4] for c in chunks) == "x" * 50


def test_limit_must_be_positive() -> None:
    """A limit below 1 is a usage error."""
    with pytest.raises(ValueError, match="limit"):
        split_text("abc", 0)


# ---------------------------------------------------------------- markdown


@pytest.mark.parametrize(
    ("markdown", "whatsapp"),
    [
        ("**bold**", "*bold*"),
        ("__bold__", "*bold*"),
        ("*italic*", "_italic_"),
        ("_italic_", "_italic_"),
        ("~~gone~~", "~gone~"),
        ("***both***", "*_both_*"),
        ("# Title", "*Title*"),
        ("### Sub **title** ###", "*Sub title*"),
        ("[docs](https://example.com/docs)", "docs (https://example.com/docs)"),
        ("[https://example.com](https://example.com)", "https://example.com"),
        ("![a cat](https://example.com/cat.png)", "a cat (https://example.com/cat.png)"),
        ("<https://example.com>", "https://example.com"),
        ("* one\n+ two\n- three", "- one\n- two\n- three"),
        ("a * b * c", "a * b * c"),
        ("snake_case_name and 2*3*4", "snake_case_name and 2*3*4"),
        ("`**not bold**`", "`**not bold**`"),
        ("see https://x.com/__init__/**a**", "see https://x.com/__init__/**a**"),
        ("**bold with `code`** done", "*bold with `code`* done"),
    ],
)
def test_markdown_examples(markdown: str, whatsapp: str) -> None:
    """Each Markdown construct maps to its WhatsApp form."""
    assert markdown_to_whatsapp(markdown) == whatsapp


def test_fenced_code_is_left_untouched() -> None:
    """Markdown inside a fenced code block is not converted."""
    text = "# Head\n```python\n**kwargs = __init__  # ~~x~~ [a](b)\n```\n**after**"
    assert markdown_to_whatsapp(text) == (
        "*Head*\n```python\n**kwargs = __init__  # ~~x~~ [a](b)\n```\n*after*"
    )


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="*_~#[]()`<>!+-\x00")))
def test_plain_text_passes_through_unchanged(text: str) -> None:
    """Text with no Markdown marks comes back exactly as it was."""
    assert markdown_to_whatsapp(text) == text


@settings(max_examples=300, deadline=None)
@given(
    prefix=st.text(max_size=40),
    code=st.text(alphabet=st.characters(blacklist_characters="`\n\r"), min_size=1, max_size=40),
    suffix=st.text(max_size=40),
)
def test_inline_code_survives_any_surroundings(prefix: str, code: str, suffix: str) -> None:
    """An inline code span comes out byte for byte, whatever Markdown is around it."""
    text = f"{prefix.replace('`', '')} `{code}` {suffix.replace('`', '')}"
    assert f"`{code}`" in markdown_to_whatsapp(text)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="abcdefgh ", min_size=1, max_size=20).filter(lambda s: s.strip() == s))
def test_bold_words_become_whatsapp_bold(words: str) -> None:
    """``**words**`` always becomes ``*words*``."""
    assert markdown_to_whatsapp(f"say **{words}** now") == f"say *{words}* now"
