"""Phone numbers and Graph ids: one normalisation, used by every part that compares,
stores or sends to a number (the interface's whitelist, the Sender's recipient, the
simulator and the phone widget), and ids checked when an interface is built."""

from __future__ import annotations

import pytest

from wa_agent import ConfigurationError, WhatsAppInterface
from wa_agent.numbers import mask_number, normalize_id, normalize_number
from wa_agent.sender import Sender
from wa_agent.testing.emulator import CloudAPIEmulator

TOKEN = "token-numbers"
PNID = "100000000000001"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+49 151-234 567", "49151234567"),
        ("0049 151 234567", "49151234567"),
        ("(1) 555.0100", "15550100"),
        (4915123, "4915123"),
        ("  US.13491208655302741918 ", "US.13491208655302741918"),
        ("", ""),
    ],
)
def test_normalize_number(raw: str | int, expected: str) -> None:
    """International digits only: separators, a leading ``+`` and the ``00`` dialling
    prefix go; a business-scoped user id is kept as it is (stripped)."""
    assert normalize_number(raw) == expected


def test_normalize_id_accepts_digits_and_ints_and_refuses_display_numbers() -> None:
    """A phone number id may be given as an int or a digit string; a display number is the
    common mistake and is refused naming the field, as is anything not digits."""
    assert normalize_id(100000000000001, "phone_number_id") == PNID
    assert normalize_id(f" {PNID} ", "phone_number_id") == PNID
    assert normalize_id(None, "phone_number_id") is None
    with pytest.raises(ValueError, match="phone_number_id.*looks like a phone number"):
        normalize_id("+1 555 0100", "phone_number_id")
    with pytest.raises(ValueError, match="phone_number_id"):
        normalize_id("abc", "phone_number_id")
    with pytest.raises(TypeError, match="phone_number_id"):
        normalize_id(1.5, "phone_number_id")  # type: ignore[arg-type]


def test_mask_number_hides_the_middle() -> None:
    """Logged numbers keep only a prefix and the last two digits."""
    assert mask_number("4915123456789") == "491…89"
    assert mask_number("123") == "…" and mask_number(None) == "…"


async def test_sender_strips_the_00_prefix_like_the_whitelist() -> None:
    """The Sender's recipient and the interface's whitelist normalise a number the same
    way: ``0049…`` reaches the Cloud API as ``49…`` (the Sender used to send ``0049…``,
    which the whitelist would have compared as ``49…``)."""
    emulator = CloudAPIEmulator(access_token=TOKEN, phone_number_ids=[PNID])
    async with emulator.serve() as url, Sender(TOKEN, PNID, base_url=url) as sender:
        await sender.send_text("0049 151 234567", "hi")
    assert [m.body["to"] for m in emulator.messages] == ["49151234567"]
    interface = WhatsAppInterface(
        lambda r: "x", allowed_numbers=["0049 151 234567"], access_token="t", phone_number_id=PNID
    )
    assert interface.is_user_allowed("+49151234567")


def test_interface_normalises_the_phone_number_id() -> None:
    """``phone_number_id`` given as an int is the same id as the digits Meta's webhooks
    carry; a display number is refused when the interface is built, naming the field."""
    interface = WhatsAppInterface(lambda r: "x", access_token="t", phone_number_id=100000000000001)
    assert interface.phone_number_id == PNID
    with pytest.raises(ConfigurationError, match="phone_number_id"):
        WhatsAppInterface(lambda r: "x", access_token="t", phone_number_id="+1 555 0100")


def test_phone_number_id_from_the_environment_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad ``WHATSAPP_PHONE_NUMBER_ID`` is reported at construction, naming the
    variable."""
    monkeypatch.setenv("WHATSAPP_PHONE_NUMBER_ID", "+1 (555) 0100")
    with pytest.raises(ConfigurationError, match="WHATSAPP_PHONE_NUMBER_ID"):
        WhatsAppInterface(lambda r: "x", access_token="t")
