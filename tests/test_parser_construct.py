"""The parser's fast model constructor builds exactly what pydantic's ``model_construct``
builds, so the speed-up changes no event."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from wa_agent import parser as parser_module
from wa_agent.events import Message, SharedContact, UnknownEvent
from wa_agent.exceptions import InvalidPayload
from wa_agent.parser import MessageParser


def _parsable(path: Path) -> bool:
    try:
        MessageParser().parse(path.read_bytes())
    except InvalidPayload:
        return False
    return True


PAYLOADS = [p for p in sorted((Path(__file__).parent / "payloads").glob("*.json")) if _parsable(p)]


def _reconstructed(model: BaseModel) -> BaseModel:
    """The same model rebuilt by pydantic's own model_construct (nested models too)."""
    values = {name: _reconstruct_value(getattr(model, name)) for name in model.model_fields_set}
    return type(model).model_construct(**values)


def _reconstruct_value(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return _reconstructed(value)
    if isinstance(value, tuple):
        return tuple(_reconstruct_value(v) for v in value)
    return value


def _assert_same(model: BaseModel, reference: BaseModel) -> None:
    assert type(model) is type(reference)
    assert [k for k, _ in model.__dict__.items()] == [k for k, _ in reference.__dict__.items()]
    assert model.model_fields_set == reference.model_fields_set
    assert model.__pydantic_extra__ == reference.__pydantic_extra__
    assert model.__pydantic_private__ == reference.__pydantic_private__
    for name, value in model.__dict__.items():
        other = reference.__dict__[name]
        if isinstance(value, BaseModel):
            _assert_same(value, other)
        elif isinstance(value, tuple) and value and isinstance(value[0], BaseModel):
            for a, b in zip(value, other, strict=True):
                _assert_same(a, b)
        else:
            assert value == other
            assert type(value) is type(other)
    assert model == reference
    assert model.model_dump() == reference.model_dump()
    assert repr(model) == repr(reference)


@pytest.mark.parametrize("path", PAYLOADS, ids=lambda p: p.stem)
def test_events_equal_model_construct(path: Path) -> None:
    """For every sample payload, each event (and each nested model) has the same fields,
    field order, fields-set, extra and private state, dump and repr as the same values
    passed to pydantic's model_construct."""
    events = MessageParser().parse(path.read_bytes())
    assert events
    for event in events:
        _assert_same(event, _reconstructed(event))


def test_mutable_defaults_are_not_shared() -> None:
    """A default ``{}`` is a fresh dict per instance, as model_construct gives."""
    first = parser_module._new_message(id="a", sender="1", timestamp=0, type="text")
    second = parser_module._new_message(id="b", sender="1", timestamp=0, type="text")
    assert first.raw == {} and second.raw == {}
    assert first.raw is not second.raw
    assert first.raw is not Message.model_fields["raw"].default
    card = parser_module._new_shared_contact()
    assert card.raw == {} and card.raw is not SharedContact.model_fields["raw"].default


def test_missing_required_or_unknown_names_fall_back_to_model_construct() -> None:
    """Without a required field, or with a name that is not a field, the result is still
    exactly model_construct's (the field left out, the unknown name ignored)."""
    partial = parser_module._new_unknown_event(raw=1)
    _assert_same(partial, UnknownEvent.model_construct(raw=1))
    assert "reason" not in partial.__dict__
    extra = parser_module._new_unknown_event(reason="r", bogus=2)
    _assert_same(extra, UnknownEvent.model_construct(reason="r", bogus=2))
