"""The ceiling: a raw-ASGI webhook receiver that only checks the HMAC and answers 200.

It reads the body, verifies ``X-Hub-Signature-256`` (HMAC-SHA256 over the raw bytes,
constant-time compare) and returns ``200 {"status":"ok"}`` (``403`` on a bad signature).
No parsing, no storage, no agent: nothing a real bot could do less. Every ack benchmark
reports wa_agent as a ratio to this app served the same way.

Run it alone: ``python benchmarks/bare_receiver.py --port 8001``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]

_OK = b'{"status":"ok"}'
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(_OK)).encode())]
_FORBIDDEN = [(b"content-type", b"application/json"), (b"content-length", b"2")]


def make_app(app_secret: str) -> Callable[..., Awaitable[None]]:
    """The bare receiver for ``app_secret``."""
    # Keyed once, copied per body: the same HMAC shortcut wa_agent's SignatureVerifier
    # takes, so the ceiling does not lose to wa_agent on the one step they share.
    keyed = hmac.new(app_secret.encode(), digestmod=hashlib.sha256)

    async def app(
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        signature = b""
        for name, value in scope["headers"]:
            if name == b"x-hub-signature-256":
                signature = value
                break
        mac = keyed.copy()
        mac.update(body)
        expected = b"sha256=" + mac.hexdigest().encode()
        if hmac.compare_digest(expected, signature):
            await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
            await send({"type": "http.response.body", "body": _OK})
        else:
            await send({"type": "http.response.start", "status": 403, "headers": _FORBIDDEN})
            await send({"type": "http.response.body", "body": b"{}"})

    return app


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _serve import main

    main(["bare", *sys.argv[1:]])
