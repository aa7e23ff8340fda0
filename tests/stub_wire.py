"""The Bot API stand-in's wire: error answers, request decoding and the HTTP server.

Requests are read the way python-telegram-bot sends them: ``application/x-www-form-urlencoded``
(non-string values JSON-encoded) or, with an upload, ``multipart/form-data``. The server uses only
the standard library (``ThreadingHTTPServer`` in a daemon thread), so it is independent of the
client stack under test; it hands every POST to the :class:`~telegram_stub.BotApiStub` it serves.
"""

from __future__ import annotations

import json
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

if TYPE_CHECKING:
    from telegram_stub import BotApiStub

Params = dict[str, Any]  # a request's parameters, an answer's JSON object

# Form fields that are plain strings and must not be JSON-decoded ("123", "true" stay text).
_STRING_FIELDS = frozenset(
    ["text", "caption", "description", "short_description", "language_code", "callback_query_id"]
)


class ApiError(Exception):
    """An error answer: its HTTP status ``code``, ``description`` and optional ``parameters``."""

    def __init__(self, code: int, description: str, parameters: Params | None = None):
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters

    def payload(self) -> Params:
        body: Params = {"ok": False, "error_code": self.code, "description": self.description}
        if self.parameters:
            body["parameters"] = self.parameters
        return body


def bad(description: str) -> ApiError:
    """A 400 Bad Request answer, worded as Telegram words it."""
    return ApiError(400, f"Bad Request: {description}")


# -- Request decoding ------------------------------------------------------------------------------


def _decode(name: str, value: str) -> Any:
    if name in _STRING_FIELDS:
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


class _Upload(bytes):
    """An uploaded file's bytes, with the multipart part's ``filename`` and ``content_type``."""

    filename: str = ""
    content_type: str = ""


def _unquote_filename(value: str) -> str:
    """Undo the HTML5 form encoding clients (httpx, browsers) use in ``filename="..."``."""
    return re.sub(r"\\(.)|%(22|[01][0-9A-Fa-f])", lambda m: m[1] or chr(int(m[2], 16)), value)


def _parse_multipart(body: bytes, boundary: bytes) -> Params:
    params: Params = {}
    for part in (b"\r\n" + body).split(b"\r\n--" + boundary)[1:]:
        if part.startswith(b"--"):  # the closing delimiter
            break
        head, sep, content = part.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("malformed multipart body")
        header = re.search(rb"(?im)^content-disposition:(.*)$", head)
        disposition = header[1].decode("utf-8", "replace") if header else ""
        name = re.search(r'\bname="([^"]*)"', disposition)
        if name is None:
            continue
        if "filename=" in disposition:  # an upload: keep its bytes, file name and type
            filename = re.search(r'\bfilename="((?:[^"\\]|\\.)*)"', disposition)
            upload = _Upload(content)
            upload.filename = _unquote_filename(filename[1]) if filename else ""
            content_type = re.search(rb"(?im)^content-type:\s*([^\s;]+)", head)
            upload.content_type = content_type[1].decode("latin-1") if content_type else ""
            params[name[1]] = upload
        else:
            params[name[1]] = _decode(name[1], content.decode("utf-8"))
    return params


def parse_request(content_type: str, body: bytes) -> Params:
    """The request's parameters; an uploaded file's value is its bytes."""
    if content_type.lower().startswith("multipart/form-data"):
        boundary = re.search(r'boundary="?([^";]+)"?', content_type)
        if boundary is None:
            raise ValueError("multipart body without a boundary")
        return _parse_multipart(body, boundary[1].encode("latin-1"))
    pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    return {key: _decode(key, value) for key, value in pairs}


# -- HTTP plumbing ---------------------------------------------------------------------------------


class StubServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    stub: BotApiStub


class StubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as PTB's connection pool expects
    disable_nagle_algorithm = True
    server_version = "BotApiStub/1.0"
    sys_version = ""
    server: StubServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.server.stub._serve(self)
