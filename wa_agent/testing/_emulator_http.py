"""The emulator's HTTP plumbing: an ASGI request read into a :class:`Request`, a
:class:`Response` written back, and the bodies Graph calls carry (a JSON object for a
send, a multipart form for an upload).

Nothing here knows the Cloud API's rules; a body that cannot be read raises
:class:`~wa_agent.testing._graph_errors.Reject` with code 100, as Meta answers.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from .._asgi_types import Receive, Scope, Send
from ._graph_errors import Reject

__all__ = [
    "MAX_BODY",
    "Part",
    "Request",
    "Response",
    "describe_form",
    "json_object",
    "parse_multipart",
    "read_request",
    "send_response",
]

#: The largest request body read (an upload of the largest media, with room for the form).
MAX_BODY = 110 * 1024 * 1024


@dataclass(slots=True)
class Request:
    """One call as the emulator sees it (``path`` without the ASGI ``root_path``)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    base_url: str


@dataclass(slots=True)
class Response:
    """An answer: ``body`` as JSON, or ``raw`` bytes of ``content_type``."""

    status: int
    body: Any
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    raw: bytes | None = None
    content_type: bytes = b"application/json"


async def read_request(scope: Scope, receive: Receive) -> Request | None:
    """Read the whole request; ``None`` when its body is over :data:`MAX_BODY`."""
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
        more = message.get("more_body", False)
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    root = scope.get("root_path", "")
    path = scope["path"]
    if root and path.startswith(root):
        path = path[len(root) :]
    host = headers.get("host")
    if host is None and scope.get("server"):
        server_host, server_port = scope["server"]
        host = f"{server_host}:{server_port}"
    base = f"{scope.get('scheme', 'http')}://{host or 'localhost'}{root}"
    query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
    return Request(scope["method"], path or "/", query, headers, b"".join(chunks), base)


async def send_response(send: Send, response: Response) -> None:
    """Write ``response`` (with its Content-Type and Content-Length)."""
    if response.raw is not None:
        payload = response.raw
    else:
        payload = json.dumps(response.body, ensure_ascii=False).encode()
    headers = [
        (b"content-type", response.content_type),
        (b"content-length", str(len(payload)).encode()),
        *response.headers,
    ]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object (what a send or mark-as-read carries)."""
    try:
        body = json.loads(request.body or b"null")
    except ValueError:
        raise Reject(100, "The request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise Reject(100, "The request body must be a JSON object")
    return body


# ---------------------------------------------------------------------- multipart


@dataclass(slots=True)
class Part:
    """A file field of a multipart form."""

    data: bytes
    filename: str | None
    content_type: str | None


def parse_multipart(request: Request) -> dict[str, Any]:
    """The fields of a ``multipart/form-data`` body: text fields as str, files as
    :class:`Part`."""
    content_type = request.headers.get("content-type", "")
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not content_type.startswith("multipart/form-data") or match is None:
        raise Reject(100, "The request must be multipart/form-data")
    delimiter = b"--" + match.group(1).encode("latin-1")
    form: dict[str, Any] = {}
    for raw in request.body.split(delimiter)[1:]:
        if raw.startswith(b"--"):
            break
        part = raw[2:] if raw.startswith(b"\r\n") else raw
        part = part[:-2] if part.endswith(b"\r\n") else part
        head, _, data = part.partition(b"\r\n\r\n")
        headers: dict[str, str] = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        disposition = headers.get("content-disposition", "")
        name = re.search(r'\bname="([^"]*)"', disposition)
        if name is None:
            continue
        filename = re.search(r'\bfilename="([^"]*)"', disposition)
        if filename is not None or "content-type" in headers:
            form[name.group(1)] = Part(
                data, filename.group(1) if filename else None, headers.get("content-type")
            )
        else:
            form[name.group(1)] = data.decode("utf-8", "replace")
    return form


def describe_form(form: dict[str, Any]) -> dict[str, Any]:
    """A form as recorded: each file as its name, type and size (not its bytes)."""
    return {
        k: (
            {"filename": v.filename, "content_type": v.content_type, "size": len(v.data)}
            if isinstance(v, Part)
            else v
        )
        for k, v in form.items()
    }
