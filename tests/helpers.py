"""Small helpers shared by the test modules: sample payloads, webhook bodies, signatures,
httpx objects left for the garbage collector.

``sign`` is written independently of :class:`wa_agent.SignatureVerifier` so the verifier is
checked against a second implementation, not against itself.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import hmac
import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

__all__ = ["PAYLOADS", "httpx_garbage", "load_payload", "sign", "text_webhook"]

#: Directory of the sample webhook bodies (``tests/payloads/*.json``).
PAYLOADS = Path(__file__).parent / "payloads"

_counter = itertools.count(1)


def load_payload(name: str) -> bytes:
    """The raw bytes of ``tests/payloads/<name>.json`` (the ``.json`` suffix is optional)."""
    if not name.endswith(".json"):
        name += ".json"
    return (PAYLOADS / name).read_bytes()


def text_webhook(
    sender: str,
    text: str,
    *,
    wamid: str | None = None,
    phone_number_id: str = "100000000000001",
    name: str | None = None,
) -> bytes:
    """A Meta-shaped ``messages`` webhook body carrying one text message from ``sender``.

    Serialised the way Meta sends it: compact, non-ASCII as ``\\uXXXX`` escapes. Each call
    gets a fresh wamid unless ``wamid`` is given; ``name`` is the profile name (default:
    ``sender``).
    """
    if wamid is None:
        wamid = f"wamid.TEST{next(_counter):08d}{time.monotonic_ns():x}"
    contact: dict[str, object] = {"profile": {"name": name or sender}, "wa_id": sender}
    body = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290129340398",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": "15550001234",
                                "phone_number_id": phone_number_id,
                            },
                            "contacts": [contact],
                            "messages": [
                                {
                                    "from": sender,
                                    "id": wamid,
                                    "timestamp": str(int(time.time())),
                                    "type": "text",
                                    "text": {"body": text},
                                }
                            ],
                        },
                    }
                ],
            }
        ],
    }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def sign(body: bytes, secret: str) -> str:
    """The ``X-Hub-Signature-256`` value Meta would send for ``body`` signed with ``secret``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@contextlib.contextmanager
def httpx_garbage() -> Iterator[list[object]]:
    """With the automatic collector off, run the block; the list it yields is then filled
    with the httpx requests and responses the block left that only the garbage collector
    could free (reference cycles)."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    left: list[object] = []
    try:
        yield left
        gc.collect()
        left.extend(o for o in gc.garbage if isinstance(o, (httpx.Request, httpx.Response)))
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
