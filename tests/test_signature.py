"""SignatureVerifier: HMAC-SHA256 of the exact raw bytes, constant-time, clear failures."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import load_payload, sign
from wa_agent import InvalidSignature, Secret, SignatureVerifier

SECRET = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def verifier() -> SignatureVerifier:
    return SignatureVerifier(SECRET)


def test_valid_signature_verifies(verifier: SignatureVerifier) -> None:
    """A body signed with the app secret passes verify() and is_valid()."""
    body = load_payload("text")
    header = sign(body, SECRET)
    verifier.verify(body, header)
    assert verifier.is_valid(body, header)


def test_sign_matches_an_independent_hmac(verifier: SignatureVerifier) -> None:
    """sign() gives 'sha256=' + lowercase hex, identical to a separately computed HMAC."""
    body = load_payload("image")
    header = verifier.sign(body)
    assert header == sign(body, SECRET)
    assert header.startswith("sha256=")
    assert header[7:] == header[7:].lower()
    assert len(header) == 7 + 64


def test_secret_object_is_accepted() -> None:
    """A Secret works the same as the plain string."""
    body = b'{"object":"whatsapp_business_account"}'
    SignatureVerifier(Secret(SECRET)).verify(body, sign(body, SECRET))


def test_non_ascii_body_verifies_over_raw_escaped_bytes(verifier: SignatureVerifier) -> None:
    """Meta signs the \\uXXXX-escaped wire form: the raw bytes verify as received, while a
    parse-and-re-serialise round trip (ensure_ascii=False) changes the bytes and fails."""
    raw = load_payload("non_ascii")
    assert rb"\u00e4" in raw and rb"\ud83d\ude00" in raw
    assert raw.isascii()
    header = sign(raw, SECRET)
    verifier.verify(raw, header)

    reserialised = json.dumps(json.loads(raw), separators=(",", ":"), ensure_ascii=False).encode()
    assert "äöå".encode() in reserialised
    assert json.loads(reserialised) == json.loads(raw)  # same JSON value ...
    with pytest.raises(InvalidSignature, match="does not match"):
        verifier.verify(reserialised, header)  # ... different bytes


@pytest.mark.parametrize("header", [None, ""])
def test_missing_header(verifier: SignatureVerifier, header: str | None) -> None:
    """No header (or an empty one) raises InvalidSignature saying it is missing."""
    with pytest.raises(InvalidSignature, match="missing"):
        verifier.verify(b"{}", header)
    assert not verifier.is_valid(b"{}", header)


def test_wrong_prefix_sha1(verifier: SignatureVerifier) -> None:
    """The legacy 'sha1=' header format is refused as malformed, even with a right digest."""
    body = b'{"a":1}'
    digest = sign(body, SECRET)[7:]
    with pytest.raises(InvalidSignature, match="malformed"):
        verifier.verify(body, "sha1=" + digest)
    with pytest.raises(InvalidSignature, match="malformed"):
        verifier.verify(body, digest)  # no prefix at all
    assert not verifier.is_valid(body, "sha1=" + digest)


def test_uppercase_hex_is_accepted(verifier: SignatureVerifier) -> None:
    """Hex digits are case-insensitive: an uppercase digest verifies."""
    body = load_payload("text")
    header = "sha256=" + sign(body, SECRET)[7:].upper()
    verifier.verify(body, header)
    assert verifier.is_valid(body, header)


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda h: h[:-1], id="truncated"),
        pytest.param(lambda h: h[:39], id="half"),
        pytest.param(lambda h: "sha256=", id="empty-digest"),
        pytest.param(lambda h: h + "0", id="too-long"),
        pytest.param(lambda h: "sha256=" + "zz" * 32, id="non-hex"),
        pytest.param(lambda h: "sha256=" + "é" * 64, id="non-ascii"),
    ],
)
def test_malformed_digest(verifier: SignatureVerifier, mangle: Callable[[str], str]) -> None:
    """A truncated, over-long or non-hex digest is refused as malformed, never crashes."""
    body = b'{"a":1}'
    header = mangle(sign(body, SECRET))
    with pytest.raises(InvalidSignature, match="malformed"):
        verifier.verify(body, header)
    assert not verifier.is_valid(body, header)


def test_flipped_digit_is_a_mismatch(verifier: SignatureVerifier) -> None:
    """A well-formed digest that differs in one hex digit is a mismatch."""
    body = b'{"a":1}'
    header = sign(body, SECRET)
    flipped = header[:-1] + ("0" if header[-1] != "0" else "1")
    with pytest.raises(InvalidSignature, match="does not match"):
        verifier.verify(body, flipped)


def test_empty_body(verifier: SignatureVerifier) -> None:
    """An empty body has a signature of its own; it does not verify another body."""
    header = sign(b"", SECRET)
    verifier.verify(b"", header)
    assert verifier.sign(b"") == header
    with pytest.raises(InvalidSignature):
        verifier.verify(b"{}", header)
    with pytest.raises(InvalidSignature):
        verifier.verify(b"", sign(b"{}", SECRET))


def test_wrong_secret(verifier: SignatureVerifier) -> None:
    """A body signed with another app's secret does not verify."""
    body = load_payload("text")
    with pytest.raises(InvalidSignature, match="does not match"):
        verifier.verify(body, sign(body, SECRET + "x"))


def test_tampered_body(verifier: SignatureVerifier) -> None:
    """Changing one byte of the body after signing breaks the signature."""
    body = load_payload("text")
    header = sign(body, SECRET)
    with pytest.raises(InvalidSignature):
        verifier.verify(body.replace(b"Hello", b"Jello"), header)


def test_repr_masks_the_secret(verifier: SignatureVerifier) -> None:
    """Neither repr() nor str() shows the app secret."""
    assert SECRET not in repr(verifier)
    assert SECRET not in str(verifier)
    assert "*" in repr(verifier)


@pytest.mark.parametrize("secret", ["", Secret("")])
def test_empty_secret_is_refused(secret: str | Secret) -> None:
    """An empty app secret is a configuration mistake: ValueError at construction."""
    with pytest.raises(ValueError, match="non-empty"):
        SignatureVerifier(secret)


@settings(max_examples=300, deadline=None)
@given(
    secret=st.text(min_size=1, max_size=150),
    body=st.binary(max_size=2000),
    upper=st.booleans(),
    as_bytes=st.booleans(),
    pad=st.sampled_from(["", " ", "\t "]),
)
def test_keyed_once_state_agrees_with_a_fresh_hmac_per_body(
    secret: str, body: bytes, upper: bool, as_bytes: bool, pad: str
) -> None:
    """The verifier keys its HMAC once and copies that state per body: for any secret
    (longer than SHA-256's 64-byte block too) and body, the result is the standard HMAC;
    the header may be text or the raw header bytes, in either case, with blanks around."""
    v = SignatureVerifier(secret)
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert v.sign(body) == "sha256=" + expected
    text = pad + ("SHA256=" + expected.upper() if upper else "sha256=" + expected)
    header: str | bytes = text.encode() if as_bytes else text
    assert v.is_valid(body, header)
    assert v.is_valid(body, v.sign(body))  # the state is not consumed by earlier checks
    assert not v.is_valid(body + b"x", header)


@pytest.mark.parametrize(
    "header",
    [
        b"sha256=" + b"g" * 64,  # not hex
        "sha256=" + "é" * 64,  # not ASCII
        b"sha256=" + b"0" * 62 + b"  ",  # blanks inside the digest
        b"sha1=" + b"0" * 66,  # right length, wrong algorithm
        b"\xffsha256=" + b"0" * 63,  # undecodable prefix
    ],
)
def test_malformed_headers_are_refused_without_an_exception(
    verifier: SignatureVerifier, header: str | bytes
) -> None:
    """Text or bytes headers that are not 'sha256=' + 64 hex digits are simply invalid."""
    assert verifier.is_valid(b"{}", header) is False
