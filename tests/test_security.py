"""Hardening (issue 10): resource limits, secrets in logs and reprs, the verification
handshake, bearer-token containment and output escaping. Each test names the protection it
checks and fails if that protection is removed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wa_agent import InvalidPayload, Message, MessageParser
from wa_agent.parser import MAX_DEPTH, _too_deep
from wa_agent.testing import webhooks

# --------------------------------------------------------------------------------------
# JSON nesting depth
# --------------------------------------------------------------------------------------


def _depth(value: object) -> int:
    best, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            best = max(best, level)
            stack.extend((child, level + 1)
                         for child in (item.values() if isinstance(item, dict) else item))
    return best


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab,:\u00e4'),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(alphabet='[]{}"\\a', max_size=4), inner, max_size=4),
    max_leaves=60,
)


@settings(max_examples=300, deadline=None)
@given(_json, st.integers(0, 12), st.booleans())
def test_depth_check_agrees_with_the_parsed_depth(value: object, limit: int,
                                                  ascii_only: bool) -> None:
    """The raw-text depth check gives the depth of the parsed value, whatever brackets,
    quotes and backslashes the strings hold (so a user typing ``[[[[`` is never refused)."""
    import json

    text = json.dumps(value, ensure_ascii=ascii_only)
    expected = _depth(value) > limit
    assert _too_deep(text, limit) is expected
    assert _too_deep(text.encode(), limit) is expected


def test_deep_bodies_are_refused_before_json_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """A body nested deeper than ``max_depth`` is InvalidPayload without ``json.loads``
    running on it; a real batch of 1000 messages and text full of brackets still parse."""
    import wa_agent.parser as parser_module

    calls: list[object] = []
    real_loads = parser_module.json.loads

    def spy(text: object, *args: object, **kwargs: object) -> object:
        calls.append(text)
        return real_loads(text, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(parser_module.json, "loads", spy)
    parser = MessageParser()
    for body in (b"[" * 100_000 + b"]" * 100_000,
                 b'{"a":' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1),
                 b"[" * 40 + b"[]" * 10 + b"[" * 30 + b"]" * 70):  # no run of 65 openers
        with pytest.raises(InvalidPayload, match="nests too deeply"):
            parser.parse(body)
    assert calls == []
    items = [webhooks.text_message(f"1555123{i:04d}", "[[[[ {{{{ " * 20 + '\\" \\\\')
             for i in range(1000)]
    batch = webhooks.encode(webhooks.envelope(messages=items))
    assert len(parser.parse(batch)) == 1000
    assert MessageParser(max_depth=5).loads(b"[[[[[1]]]]]") == [[[[[1]]]]]
    with pytest.raises(InvalidPayload):
        MessageParser(max_depth=4).loads(b"[[[[[1]]]]]")


def test_deep_form_response_is_dropped_not_parsed() -> None:
    """An interactive ``nfm_reply`` whose ``response_json`` nests absurdly deep keeps the
    message (response ``None``) instead of handing a 500-level structure on."""
    deep = '{"a":' * 500 + "1" + "}" * 500
    item = webhooks.text_message("15551230001", "x")
    item.pop("text")
    item["type"] = "interactive"
    item["interactive"] = {"type": "nfm_reply", "nfm_reply": {
        "name": "flow", "body": "Sent", "response_json": deep}}
    events = MessageParser().parse(webhooks.encode(webhooks.envelope(messages=[item])))
    assert len(events) == 1
    message = events[0]
    assert isinstance(message, Message) and message.interactive is not None
    assert message.interactive.response is None


def test_deep_body_cannot_crash_the_process_with_a_raised_recursion_limit() -> None:
    """With ``sys.setrecursionlimit`` raised (notebooks do this), ``json.loads`` of a
    300 KB ``[[[[...`` overflows the C stack and kills the process (SIGSEGV). The parser
    refuses it first, so the process lives and gets an InvalidPayload."""
    code = textwrap.dedent("""
        import sys
        from wa_agent import InvalidPayload, Message, MessageParser
        sys.setrecursionlimit(10**6)
        try:
            MessageParser().parse(b"[" * 150_000 + b"]" * 150_000)
        except InvalidPayload as exc:
            print("refused:", exc.reason)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, (result.returncode, result.stderr[-500:])
    assert "refused: body nests too deeply" in result.stdout
