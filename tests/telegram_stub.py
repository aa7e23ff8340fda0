"""A Telegram Bot API stand-in served over real HTTP on 127.0.0.1, for end-to-end tests.

Point the real python-telegram-bot stack at it::

    with BotApiStub() as stub:
        app = ApplicationBuilder().token(stub.token).base_url(stub.base_url).build()
        ...
        update_id = stub.push_message("/start", user_id=42)
        [reply] = await stub.await_messages(42, 1)

The server side uses only the standard library (``ThreadingHTTPServer`` in a daemon thread), so it
is independent of the client stack under test. Requests are accepted the way the real Bot API
accepts them: ``application/x-www-form-urlencoded`` (what PTB sends when there is no file; nested
values are JSON-encoded strings), ``multipart/form-data`` (uploads), ``application/json`` and GET
query strings. Method names are case-insensitive, as on the real service.

Behaviour copied from the real service because the bot must cope with it:

* ``sendMessage``/``editMessageText``: the text is entity-parsed according to ``parse_mode``
  (HTML, MarkdownV2 and legacy Markdown, including the "can't parse entities" errors), trimmed,
  then rejected when empty (``message text is empty``) or longer than 4096 UTF-16 code units
  (``message is too long``). Replies to unknown messages fail with ``message to be replied not
  found`` unless ``allow_sending_without_reply`` is set.
* ``getUpdates``: ``offset`` confirms (forgets) updates with a smaller ``update_id``, ``limit``
  caps the batch, ``timeout`` long-polls, ``allowed_updates`` persists between calls, and a newer
  ``getUpdates`` terminates a still-waiting older one with 409 Conflict.
* Optional flood control answers 429 with ``parameters.retry_after``.

Everything the bot does is recorded; the inspection helpers are thread-safe and may be called from
plain or asyncio test code (use the ``await_*`` variants inside a running event loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import html
import itertools
import json
import re
import socket
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

__all__ = [
    "DEFAULT_BOT_ID",
    "DEFAULT_BOT_USERNAME",
    "DEFAULT_TOKEN",
    "MAX_CAPTION_LENGTH",
    "MAX_MESSAGE_LENGTH",
    "BotApiStub",
    "auto_entities",
    "utf16_len",
]

DEFAULT_BOT_ID = 7_000_000_001
DEFAULT_BOT_USERNAME = "charbot_test_bot"
DEFAULT_TOKEN = f"{DEFAULT_BOT_ID}:AAStubTokenForCharbotEndToEndTests"
MAX_MESSAGE_LENGTH = 4096  # UTF-16 code units, after entity parsing
MAX_CAPTION_LENGTH = 1024

# Update kinds the real API does not deliver unless they are listed in allowed_updates.
_OPT_IN_UPDATES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
_MESSAGE_UPDATE_KINDS = ("message", "edited_message", "channel_post", "edited_channel_post")
_CHAT_ACTIONS = frozenset(
    [
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    ]
)
_SCOPE_TYPES = frozenset(
    [
        "default",
        "all_private_chats",
        "all_group_chats",
        "all_chat_administrators",
        "chat",
        "chat_administrators",
        "chat_member",
    ]
)
# Form fields that are plain strings and must not be JSON-decoded ("123", "true" stay text).
_STRING_FIELDS = frozenset(
    [
        "text",
        "caption",
        "parse_mode",
        "title",
        "description",
        "short_description",
        "name",
        "emoji",
        "question",
        "explanation",
        "callback_query_id",
        "inline_query_id",
        "url",
        "language_code",
        "custom_title",
        "action",
        "message_effect_id",
        "business_connection_id",
        "inline_message_id",
        "file_id",
        "photo",
        "document",
        "secret_token",
    ]
)
_CONFLICT = (
    "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running"
)
_NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are "
    "exactly the same as a current content and reply markup of the message"
)
_POLL_SLICE = 0.25  # long polls re-check shutdown/conflicts at least this often


def utf16_len(text: str) -> int:
    """Length of ``text`` in UTF-16 code units, the unit Telegram counts limits and offsets in."""
    return len(text.encode("utf-16-le")) // 2


class _ApiError(Exception):
    def __init__(self, code: int, description: str, parameters: dict[str, Any] | None = None):
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {"ok": False, "error_code": self.code}
        body["description"] = self.description
        if self.parameters:
            body["parameters"] = self.parameters
        return body


def _bad(description: str) -> _ApiError:
    return _ApiError(400, f"Bad Request: {description}")


def _entity_error(description: str) -> _ApiError:
    return _bad(f"can't parse entities: {description}")


# --------------------------------------------------------------------------------------------
# Entity parsing (enough of the real parsers to reproduce their text and their errors)
# --------------------------------------------------------------------------------------------

_HTML_TAGS = frozenset(
    [
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "span",
        "tg-spoiler",
        "a",
        "tg-emoji",
        "code",
        "pre",
        "blockquote",
    ]
)
_HTML_TAG_RE = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9-]*)([^<>]*)>")
_HTML_ENTITY_RE = re.compile(r"&(#[0-9]+|#[xX][0-9a-fA-F]+|lt|gt|amp|quot);")
_MDV2_RESERVED = frozenset("_*[]()~`>#+-=|{}.!")


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8"))


def _parse_html(text: str) -> str:
    out: list[str] = []
    stack: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "<":
            m = _HTML_TAG_RE.match(text, i)
            if m is None:
                word = re.match(r"<\s*([^\s<>]*)", text[i:])
                name = word.group(1) if word else ""
                raise _entity_error(
                    f'Unsupported start tag "{name}" at byte offset {_byte_offset(text, i)}'
                )
            closing, name = m.group(1) == "/", m.group(2).lower()
            if name not in _HTML_TAGS:
                kind = "end" if closing else "start"
                raise _entity_error(
                    f'Unsupported {kind} tag "{name}" at byte offset {_byte_offset(text, i)}'
                )
            if closing:
                if not stack:
                    offset = _byte_offset(text, i)
                    raise _entity_error(f"Unexpected end tag at byte offset {offset}")
                if stack[-1] != name:
                    raise _entity_error(
                        f'Can\'t find end tag corresponding to start tag "{stack[-1]}"'
                    )
                stack.pop()
            else:
                stack.append(name)
            i = m.end()
        elif ch == "&":
            m = _HTML_ENTITY_RE.match(text, i)
            if m is None:
                out.append(ch)
                i += 1
            else:
                out.append(html.unescape(m.group(0)))
                i = m.end()
        else:
            out.append(ch)
            i += 1
    if stack:
        raise _entity_error(f'Can\'t find end tag corresponding to start tag "{stack[-1]}"')
    return "".join(out)


def _find_unescaped(text: str, token: str, start: int) -> int:
    i = start
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text.startswith(token, i):
            return i
        i += 1
    return -1


def _unescape_code(body: str) -> str:
    return re.sub(r"\\([\\`])", r"\1", body)


def _parse_markdown_v2(text: str) -> str:
    out: list[str] = []
    stack: list[tuple[str, int]] = []
    i, n = 0, len(text)

    def toggle(token: str) -> None:
        for k in range(len(stack) - 1, -1, -1):
            if stack[k][0] == token:
                del stack[k]
                return
        stack.append((token, _byte_offset(text, i)))

    while i < n:
        ch = text[i]
        at_line_start = i == 0 or text[i - 1] == "\n"
        if ch == "\\" and i + 1 < n and 0 < ord(text[i + 1]) < 127:
            out.append(text[i + 1])
            i += 2
        elif ch == "`":
            fence = "```" if text.startswith("```", i) else "`"
            end = _find_unescaped(text, fence, i + len(fence))
            if end < 0:
                raise _entity_error(
                    f"Can't find end of the entity starting at byte offset {_byte_offset(text, i)}"
                )
            body = text[i + len(fence) : end]
            if fence == "```":
                first, sep, rest = body.partition("\n")
                if sep and first and not re.search(r"\s", first):
                    body = rest
            out.append(_unescape_code(body))
            i = end + len(fence)
        elif ch in "*~":
            toggle(ch)
            i += 1
        elif ch == "_":
            token = "__" if text.startswith("__", i) else "_"
            toggle(token)
            i += len(token)
        elif ch == "|" and text.startswith("||", i):
            toggle("||")
            i += 2
        elif ch == "[" or (ch == "!" and text.startswith("![", i)):
            stack.append(("[", _byte_offset(text, i)))
            i += 1 if ch == "[" else 2
        elif ch == "]" and any(token == "[" for token, _ in stack):
            for k in range(len(stack) - 1, -1, -1):
                if stack[k][0] == "[":
                    del stack[k]
                    break
            if not text.startswith("(", i + 1):
                raise _entity_error(
                    "Character ']' is reserved and must be escaped with the preceding '\\'"
                )
            close = _find_unescaped(text, ")", i + 2)
            if close < 0:
                raise _entity_error(
                    f"Can't find end of the entity starting at byte offset {_byte_offset(text, i)}"
                )
            i = close + 1
        elif ch == ">" and at_line_start:
            i += 1  # blockquote marker
        elif ch in _MDV2_RESERVED:
            raise _entity_error(
                f"Character '{ch}' is reserved and must be escaped with the preceding '\\'"
            )
        else:
            out.append(ch)
            i += 1
    if stack:
        raise _entity_error(f"Can't find end of the entity starting at byte offset {stack[0][1]}")
    return "".join(out)


def _parse_markdown_legacy(text: str) -> str:
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n and text[i + 1] in "_*`[":
            out.append(text[i + 1])
            i += 2
            continue
        if ch in "*_`[":
            token = "```" if text.startswith("```", i) else ("]" if ch == "[" else ch)
            start = i + (3 if token == "```" else 1)
            end = text.find(token, start)
            if end < 0:
                raise _entity_error(
                    f"Can't find end of the entity starting at byte offset {_byte_offset(text, i)}"
                )
            body = text[start:end]
            if token == "```":
                first, sep, rest = body.partition("\n")
                if sep and first and not re.search(r"\s", first):
                    body = rest
                i = end + 3
            elif token == "]":
                if text.startswith("(", end + 1):
                    close = text.find(")", end + 2)
                    if close < 0:
                        raise _entity_error(
                            f"Can't find end of a URL at byte offset {_byte_offset(text, end + 1)}"
                        )
                    i = close + 1
                else:
                    body = f"[{body}]"
                    i = end + 1
            else:
                i = end + 1
            out.append(body)
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _parse_entities(text: str, parse_mode: Any) -> str:
    if parse_mode in (None, ""):
        return text
    mode = str(parse_mode).lower()
    if mode == "html":
        return _parse_html(text)
    if mode == "markdownv2":
        return _parse_markdown_v2(text)
    if mode == "markdown":
        return _parse_markdown_legacy(text)
    raise _bad(f"unsupported parse_mode {parse_mode!s}")


_COMMAND_RE = re.compile(r"(?<![^\s])/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{3,32})?(?![A-Za-z0-9_@])")
_MENTION_RE = re.compile(r"(?<![A-Za-z0-9_/@])@[A-Za-z][A-Za-z0-9_]{4,31}(?![A-Za-z0-9_])")


def auto_entities(text: str) -> list[dict[str, Any]]:
    """The entities Telegram's clients would attach: ``bot_command`` and ``mention``."""
    found: list[tuple[int, int, str]] = []
    for m in _COMMAND_RE.finditer(text):
        found.append((m.start(), m.end(), "bot_command"))
    for m in _MENTION_RE.finditer(text):
        if not any(s <= m.start() < e for s, e, _ in found):
            found.append((m.start(), m.end(), "mention"))
    found.sort()
    return [
        {"offset": utf16_len(text[:s]), "length": utf16_len(text[s:e]), "type": kind}
        for s, e, kind in found
    ]


# --------------------------------------------------------------------------------------------
# Request decoding
# --------------------------------------------------------------------------------------------


def _decode_form_value(name: str, value: str) -> Any:
    if name in _STRING_FIELDS:
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _header_params(value: str) -> tuple[str, dict[str, str]]:
    main, _, rest = value.partition(";")
    params: dict[str, str] = {}
    for m in re.finditer(r'([\w*-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)', rest):
        raw = m.group(2).strip()
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[m.group(1).lower()] = raw
    return main.strip().lower(), params


@dataclass
class UploadedFile:
    field: str
    filename: str | None
    content_type: str | None
    data: bytes


def _parse_multipart(body: bytes, boundary: str) -> tuple[dict[str, str], list[UploadedFile]]:
    fields: dict[str, str] = {}
    files: list[UploadedFile] = []
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    for part in (b"\r\n" + body).split(delimiter)[1:]:
        if part.startswith(b"--"):
            break
        head, sep, content = part.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("malformed multipart body")
        headers: dict[str, str] = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, colon, val = line.partition(":")
            if colon:
                headers[key.strip().lower()] = val.strip()
        _, disposition = _header_params(headers.get("content-disposition", ""))
        name = disposition.get("name")
        if name is None:
            continue
        if "filename" in disposition or "filename*" in disposition:
            files.append(
                UploadedFile(
                    field=name,
                    filename=disposition.get("filename"),
                    content_type=headers.get("content-type"),
                    data=content,
                )
            )
        else:
            fields[name] = content.decode("utf-8")
    return fields, files


def _parse_request(
    content_type: str, body: bytes, query: str
) -> tuple[dict[str, Any], list[UploadedFile]]:
    params: dict[str, Any] = {}
    files: list[UploadedFile] = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        params[key] = _decode_form_value(key, value)
    kind, ct_params = _header_params(content_type or "")
    if not body:
        return params, files
    if kind == "application/json":
        data = json.loads(body.decode("utf-8"))
        if not isinstance(data, dict):
            raise ValueError("JSON body must be an object")
        for key, value in data.items():
            if isinstance(value, str) and key not in _STRING_FIELDS:
                params[key] = _decode_form_value(key, value)
            else:
                params[key] = value
    elif kind == "multipart/form-data":
        fields, files = _parse_multipart(body, ct_params.get("boundary", ""))
        for key, value in fields.items():
            params[key] = _decode_form_value(key, value)
    else:  # application/x-www-form-urlencoded (also the fallback, like the real server)
        for key, value in parse_qsl(body.decode("utf-8"), keep_blank_values=True):
            params[key] = _decode_form_value(key, value)
    return params, files


def _as_chat_id(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    return value


def _as_int(value: Any, name: str, default: int | None = None) -> int | None:
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _bad(f"wrong parameter {name} specified") from None


# --------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    stub: BotApiStub


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "BotApiStub/1.0"
    sys_version = ""
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.stub._track_connection(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.stub._track_connection(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.server.stub._serve(self)

    do_GET = do_POST


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


@dataclass(eq=False)  # identity semantics: a re-delivered duplicate is a distinct entry
class _Queued:
    update: dict[str, Any]
    force: bool  # delivered once even if below the client's offset (re-delivery tests)
    delivered: bool = False

    @property
    def update_id(self) -> int:
        return int(self.update["update_id"])

    @property
    def kind(self) -> str:
        return next((key for key in self.update if key != "update_id"), "")


class _RecordList(list):
    """A list snapshot that can also be called to filter by chat: ``stub.chat_actions(42)``."""

    def __call__(self, chat_id: int | None = None) -> list[dict[str, Any]]:
        return [r for r in self if chat_id is None or r.get("chat_id") == chat_id]


# --------------------------------------------------------------------------------------------
# The stub
# --------------------------------------------------------------------------------------------


class BotApiStub:
    """A Bot API stand-in on ``127.0.0.1:<ephemeral port>``; starts serving on construction."""

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        bot_id: int | None = None,
        username: str = DEFAULT_BOT_USERNAME,
        first_name: str = "Charbot Test",
        can_read_all_group_messages: bool = False,
        flood_limit: tuple[int, float] | None = None,
        retry_after: int = 1,
        flood_methods: Iterable[str] = ("sendMessage",),
        flood_per_chat: bool = False,
        max_poll_wait: float = 5.0,
        first_update_id: int = 1000,
        validate_images: bool = True,
    ) -> None:
        if bot_id is None:
            prefix = token.split(":", 1)[0]
            bot_id = int(prefix) if prefix.isdigit() else DEFAULT_BOT_ID
        self.token = token
        self.bot_user: dict[str, Any] = {
            "id": bot_id,
            "is_bot": True,
            "first_name": first_name,
            "username": username,
            "can_join_groups": True,
            "can_read_all_group_messages": can_read_all_group_messages,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }
        self.flood_limit = flood_limit
        self.retry_after = retry_after
        self.flood_methods = {m.lower() for m in flood_methods}
        self.flood_per_chat = flood_per_chat
        self.max_poll_wait = max_poll_wait
        self.validate_images = validate_images

        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._closing = False
        self._queue: list[_Queued] = []
        self._history: dict[int, dict[str, Any]] = {}
        self._next_update_id = first_update_id
        self._allowed_updates: list[str] | None = None
        self._poll_generation = 0
        self._confirmed: list[int] = []
        self._filtered: list[dict[str, Any]] = []
        self._chats: dict[Any, dict[str, Any]] = {}
        self._last_message_id: dict[Any, int] = {}
        self._messages: dict[tuple[Any, int], dict[str, Any]] = {}
        self._callback_ids: set[str] = set()
        self._calls: list[dict[str, Any]] = []
        self._sent: list[dict[str, Any]] = []
        self._edits: list[dict[str, Any]] = []
        self._files: list[dict[str, Any]] = []
        self._actions: list[dict[str, Any]] = []
        self._callback_answers: list[dict[str, Any]] = []
        self._commands: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._rejected: list[dict[str, Any]] = []
        self._conflicts: list[dict[str, Any]] = []
        self._unknown: list[dict[str, Any]] = []
        self._errors: list[str] = []
        self._flood_times: dict[Any, deque[float]] = {}
        self._flood_rejections = 0
        self._blocked: set[Any] = set()
        self._file_counter = itertools.count(1)
        self._callback_counter = itertools.count(1)
        self._connections: set[socket.socket] = set()

        self._methods: dict[str, tuple[str, Callable[..., Any]]] = {}
        for name, func in (
            ("getMe", self._m_get_me),
            ("logOut", self._m_true),
            ("close", self._m_true),
            ("deleteWebhook", self._m_delete_webhook),
            ("getWebhookInfo", self._m_get_webhook_info),
            ("setMyCommands", self._m_set_my_commands),
            ("getMyCommands", self._m_get_my_commands),
            ("deleteMyCommands", self._m_delete_my_commands),
            ("sendChatAction", self._m_send_chat_action),
            ("sendMessage", self._m_send_message),
            ("editMessageText", self._m_edit_message_text),
            ("getUpdates", self._m_get_updates),
            ("sendPhoto", self._m_send_photo),
            ("sendDocument", self._m_send_document),
            ("answerCallbackQuery", self._m_answer_callback_query),
        ):
            self._methods[name.lower()] = (name, func)

        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.stub = self
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"BotApiStub:{self.port}",
            daemon=True,
        )
        self._thread.start()

    # ---------------------------------------------------------------- lifecycle

    @property
    def base_url(self) -> str:
        """What to pass to ``ApplicationBuilder().base_url()`` / ``Bot(base_url=...)``."""
        return f"http://127.0.0.1:{self.port}/bot"

    @property
    def bot_id(self) -> int:
        return int(self.bot_user["id"])

    @property
    def username(self) -> str:
        return str(self.bot_user["username"])

    def __enter__(self) -> BotApiStub:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving: wakes every long poll, closes every connection. Idempotent."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._cond.notify_all()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)

    def _track_connection(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    # ---------------------------------------------------------------- HTTP entry point

    def _serve(self, handler: _Handler) -> None:
        try:
            body = _read_body(handler)
        except (OSError, ValueError):
            handler.close_connection = True
            return
        split = urlsplit(handler.path)
        m = re.fullmatch(r"/bot([^/]+)/([A-Za-z0-9_]+)", split.path)
        if m is None:
            not_found = {"ok": False, "error_code": 404, "description": "Not Found"}
            self._respond(handler, 404, not_found)
            return
        token, method = m.groups()
        if token != self.token:
            self._respond(
                handler, 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
            )
            return
        try:
            params, files = _parse_request(
                handler.headers.get("Content-Type", ""), body, split.query
            )
        except (ValueError, UnicodeDecodeError) as exc:
            err = _bad(f"can't parse request: {exc}")
            self._record_rejection(method, {}, err)
            self._respond(handler, err.code, err.payload())
            return
        status, payload = self._dispatch(method, params, files)
        self._respond(handler, status, payload)

    @staticmethod
    def _respond(handler: _Handler, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        except OSError:  # the client gave up (e.g. a cancelled long poll)
            handler.close_connection = True

    def _dispatch(
        self, method: str, params: dict[str, Any], files: list[UploadedFile]
    ) -> tuple[int, dict[str, Any]]:
        entry = self._methods.get(method.lower())
        name = entry[0] if entry else method
        with self._cond:
            self._cond.notify_all()
            self._calls.append(
                {
                    "method": name,
                    "params": copy.deepcopy(params),
                    "files": {f.field: f.filename for f in files},
                    "time": time.time(),
                }
            )
        if entry is None:
            with self._lock:
                self._unknown.append({"method": method, "params": copy.deepcopy(params)})
            return 404, {
                "ok": False,
                "error_code": 404,
                "description": "Not Found: method not found",
            }
        try:
            if name.lower() in self.flood_methods:
                self._check_flood(params)
            result = entry[1](params, files)
        except _ApiError as err:
            if err.code == 409:
                with self._lock:
                    self._conflicts.append({"method": name, "params": copy.deepcopy(params)})
            else:
                self._record_rejection(name, params, err)
            return err.code, err.payload()
        except Exception as exc:  # a bug in the stub: make it loud
            with self._lock:
                self._errors.append(f"{name}: {traceback.format_exc()}")
            return 500, {
                "ok": False,
                "error_code": 500,
                "description": f"Internal Server Error: BotApiStub bug: {exc!r}",
            }
        return 200, {"ok": True, "result": result}

    def _record_rejection(self, method: str, params: dict[str, Any], err: _ApiError) -> None:
        with self._lock:
            self._rejected.append(
                {
                    "method": method,
                    "error_code": err.code,
                    "description": err.description,
                    "params": copy.deepcopy(params),
                    "time": time.time(),
                }
            )

    def _check_flood(self, params: dict[str, Any]) -> None:
        if self.flood_limit is None:
            return
        max_calls, per_seconds = self.flood_limit
        key = _as_chat_id(params.get("chat_id")) if self.flood_per_chat else None
        now = time.monotonic()
        with self._lock:
            times = self._flood_times.setdefault(key, deque())
            while times and now - times[0] >= per_seconds:
                times.popleft()
            if len(times) >= max_calls:
                self._flood_rejections += 1
                raise _ApiError(
                    429,
                    f"Too Many Requests: retry after {self.retry_after}",
                    {"retry_after": self.retry_after},
                )
            times.append(now)

    # ---------------------------------------------------------------- shared builders

    def _chat(self, chat_id: Any) -> dict[str, Any]:
        known = self._chats.get(chat_id)
        if known is not None:
            return copy.deepcopy(known)
        if isinstance(chat_id, int) and chat_id > 0:
            return {"id": chat_id, "type": "private", "first_name": "User"}
        kind = "supergroup" if str(chat_id).startswith("-100") else "group"
        return {"id": chat_id, "type": kind, "title": "Chat"}

    def _require_chat(self, params: dict[str, Any]) -> Any:
        raw = params.get("chat_id")
        if raw is None or raw == "":
            raise _bad("chat_id is empty")
        chat_id = _as_chat_id(raw)
        if not isinstance(chat_id, int) and chat_id not in self._chats:
            raise _bad("chat not found")
        if chat_id in self._blocked:
            if isinstance(chat_id, int) and chat_id > 0:
                raise _ApiError(403, "Forbidden: bot was blocked by the user")
            raise _ApiError(403, "Forbidden: bot was kicked from the group chat")
        return chat_id

    def _next_message_id(self, chat_id: Any) -> int:
        mid = self._last_message_id.get(chat_id, 0) + 1
        self._last_message_id[chat_id] = mid
        return mid

    def _remember_message(self, message: dict[str, Any]) -> None:
        chat = message.get("chat") or {}
        chat_id, mid = chat.get("id"), message.get("message_id")
        if chat_id is None or not isinstance(mid, int):
            return
        self._chats.setdefault(chat_id, copy.deepcopy(chat))
        self._messages[(chat_id, mid)] = copy.deepcopy(message)
        self._last_message_id[chat_id] = max(self._last_message_id.get(chat_id, 0), mid)

    def _reply_copy(self, chat_id: Any, message_id: int) -> dict[str, Any] | None:
        found = self._messages.get((chat_id, message_id))
        if found is None:
            return None
        reply = copy.deepcopy(found)
        reply.pop("reply_to_message", None)
        return reply

    def _resolve_reply(self, chat_id: Any, params: dict[str, Any]) -> dict[str, Any] | None:
        rp = params.get("reply_parameters")
        if isinstance(rp, dict) and rp.get("message_id") is not None:
            mid = _as_int(rp.get("message_id"), "reply_parameters")
            reply_chat = _as_chat_id(rp.get("chat_id", chat_id))
            allow = bool(rp.get("allow_sending_without_reply"))
        elif params.get("reply_to_message_id") not in (None, ""):
            mid = _as_int(params.get("reply_to_message_id"), "reply_to_message_id")
            reply_chat = chat_id
            allow = bool(params.get("allow_sending_without_reply"))
        else:
            return None
        assert mid is not None
        reply = self._reply_copy(reply_chat, mid)
        if reply is None and not allow:
            raise _bad("message to be replied not found")
        return reply

    def _bot_message(
        self,
        chat_id: Any,
        content: dict[str, Any],
        params: dict[str, Any],
        reply: dict[str, Any] | None,
    ) -> dict[str, Any]:
        message: dict[str, Any] = {
            "message_id": self._next_message_id(chat_id),
            "from": copy.deepcopy(self.bot_user),
            "chat": self._chat(chat_id),
            "date": int(time.time()),
        }
        if params.get("message_thread_id") not in (None, ""):
            message["message_thread_id"] = params["message_thread_id"]
        if reply is not None:
            message["reply_to_message"] = reply
        message.update(content)
        markup = params.get("reply_markup")
        if isinstance(markup, dict) and "inline_keyboard" in markup:
            message["reply_markup"] = markup
        self._remember_message(message)
        return message

    def _checked_text(self, text: Any, parse_mode: Any, *, caption: bool = False) -> str:
        text = "" if text is None else str(text)
        parsed = _parse_entities(text, parse_mode).strip()
        limit = MAX_CAPTION_LENGTH if caption else MAX_MESSAGE_LENGTH
        if caption:
            if utf16_len(parsed) > limit:
                raise _bad("message caption is too long")
            return parsed
        if not parsed:
            raise _bad("message text is empty")
        if utf16_len(parsed) > limit:
            raise _bad("message is too long")
        return parsed

    # ---------------------------------------------------------------- Bot API methods

    def _m_true(self, params: dict[str, Any], files: list[UploadedFile]) -> bool:
        return True

    def _m_get_me(self, params: dict[str, Any], files: list[UploadedFile]) -> dict[str, Any]:
        return copy.deepcopy(self.bot_user)

    def _m_delete_webhook(self, params: dict[str, Any], files: list[UploadedFile]) -> bool:
        if params.get("drop_pending_updates") is True:
            with self._cond:
                self._confirmed.extend(q.update_id for q in self._queue)
                self._queue.clear()
        return True

    def _m_get_webhook_info(
        self, params: dict[str, Any], files: list[UploadedFile]
    ) -> dict[str, Any]:
        with self._lock:
            pending = len(self._queue)
        return {"url": "", "has_custom_certificate": False, "pending_update_count": pending}

    @staticmethod
    def _scope_key(scope: Any) -> str:
        if scope in (None, ""):
            scope = {"type": "default"}
        if not isinstance(scope, dict) or scope.get("type") not in _SCOPE_TYPES:
            raise _bad("wrong bot command scope type specified")
        scope = dict(scope)
        for key in ("chat_id", "user_id"):
            if key in scope:
                scope[key] = _as_chat_id(scope[key])
        return json.dumps(scope, sort_keys=True)

    def _m_set_my_commands(self, params: dict[str, Any], files: list[UploadedFile]) -> bool:
        commands = params.get("commands")
        if not isinstance(commands, list):
            raise _bad("commands must be a list")
        if len(commands) > 100:
            raise _bad("too many commands specified")
        for command in commands:
            if not isinstance(command, dict):
                raise _bad("BOT_COMMAND_INVALID")
            name = str(command.get("command", "")).lstrip("/")
            if not re.fullmatch(r"[a-z0-9_]{1,32}", name):
                raise _bad("BOT_COMMAND_INVALID")
            description = str(command.get("description", "")).strip()
            if not 1 <= len(description) <= 256:
                raise _bad("BOT_COMMAND_DESCRIPTION_INVALID")
        key = (self._scope_key(params.get("scope")), str(params.get("language_code") or ""))
        with self._lock:
            self._commands[key] = [
                {"command": str(c["command"]).lstrip("/"), "description": str(c["description"])}
                for c in commands
            ]
        return True

    def _m_get_my_commands(
        self, params: dict[str, Any], files: list[UploadedFile]
    ) -> list[dict[str, Any]]:
        key = (self._scope_key(params.get("scope")), str(params.get("language_code") or ""))
        with self._lock:
            return copy.deepcopy(self._commands.get(key, []))

    def _m_delete_my_commands(self, params: dict[str, Any], files: list[UploadedFile]) -> bool:
        key = (self._scope_key(params.get("scope")), str(params.get("language_code") or ""))
        with self._lock:
            self._commands.pop(key, None)
        return True

    def _m_send_chat_action(self, params: dict[str, Any], files: list[UploadedFile]) -> bool:
        with self._cond:
            chat_id = self._require_chat(params)
            action = params.get("action")
            if action not in _CHAT_ACTIONS:
                raise _bad("wrong parameter action in request")
            self._actions.append({**copy.deepcopy(params), "chat_id": chat_id, "time": time.time()})
            self._cond.notify_all()
        return True

    def _m_send_message(self, params: dict[str, Any], files: list[UploadedFile]) -> dict[str, Any]:
        with self._cond:
            chat_id = self._require_chat(params)
            text = self._checked_text(params.get("text"), params.get("parse_mode"))
            reply = self._resolve_reply(chat_id, params)
            content: dict[str, Any] = {"text": text}
            if isinstance(params.get("entities"), list) and params.get("parse_mode") in (None, ""):
                content["entities"] = params["entities"]
            message = self._bot_message(chat_id, content, params, reply)
            self._sent.append(
                {
                    **copy.deepcopy(params),
                    "chat_id": chat_id,
                    "message_id": message["message_id"],
                    "reply_to_message_id": reply["message_id"] if reply else None,
                    "parsed_text": text,
                    "date": message["date"],
                    "received_at": time.monotonic(),  # for latency measurements
                }
            )
            self._cond.notify_all()
            return message

    def _m_edit_message_text(
        self, params: dict[str, Any], files: list[UploadedFile]
    ) -> dict[str, Any] | bool:
        with self._cond:
            text = self._checked_text(params.get("text"), params.get("parse_mode"))
            if params.get("inline_message_id"):
                self._edits.append({**copy.deepcopy(params), "parsed_text": text})
                self._cond.notify_all()
                return True
            chat_id = self._require_chat(params)
            mid = _as_int(params.get("message_id"), "message_id")
            if mid is None:
                raise _bad("message identifier is not specified")
            original = self._messages.get((chat_id, mid))
            if original is None:
                raise _bad("message to edit not found")
            if (original.get("from") or {}).get("id") != self.bot_id:
                raise _bad("message can't be edited")
            markup = params.get("reply_markup")
            if original.get("text") == text and original.get("reply_markup") == markup:
                raise _ApiError(400, _NOT_MODIFIED)
            edited = copy.deepcopy(original)
            edited["text"] = text
            edited["edit_date"] = int(time.time())
            edited.pop("entities", None)
            if isinstance(markup, dict) and "inline_keyboard" in markup:
                edited["reply_markup"] = markup
            else:
                edited.pop("reply_markup", None)
            self._messages[(chat_id, mid)] = edited
            record = {**copy.deepcopy(params), "chat_id": chat_id, "message_id": mid}
            self._edits.append({**record, "parsed_text": text})
            self._cond.notify_all()
            return copy.deepcopy(edited)

    @staticmethod
    def _looks_like_image(data: bytes) -> bool:
        return data.startswith(
            (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM")
        ) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")

    def _send_file(
        self, method: str, field: str, params: dict[str, Any], files: list[UploadedFile]
    ) -> dict[str, Any]:
        with self._cond:
            chat_id = self._require_chat(params)
            upload = next((f for f in files if f.field == field), None)
            reference = params.get(field)
            if upload is None and isinstance(reference, str) and reference.startswith("attach://"):
                upload = next((f for f in files if f.field == reference[len("attach://") :]), None)
                reference = None
            if upload is None and not reference:
                raise _bad(f"there is no {field} in the request")
            if upload is not None and not upload.data:
                raise _bad("file must be non-empty")
            if (
                field == "photo"
                and upload is not None
                and self.validate_images
                and not self._looks_like_image(upload.data)
            ):
                raise _bad("IMAGE_PROCESS_FAILED")
            caption = None
            if params.get("caption") not in (None, ""):
                caption = self._checked_text(
                    params.get("caption"), params.get("parse_mode"), caption=True
                )
            reply = self._resolve_reply(chat_id, params)
            n = next(self._file_counter)
            size = len(upload.data) if upload else 0
            file_id = f"stub-{field}-{n}" if upload else str(reference)
            unique = f"stub-unique-{field}-{n}"
            content: dict[str, Any]
            if field == "photo":
                content = {
                    "photo": [
                        {
                            "file_id": f"{file_id}-s",
                            "file_unique_id": f"{unique}-s",
                            "width": 90,
                            "height": 90,
                            "file_size": max(1, size // 10),
                        },
                        {
                            "file_id": file_id,
                            "file_unique_id": unique,
                            "width": 800,
                            "height": 600,
                            "file_size": size,
                        },
                    ]
                }
            else:
                document: dict[str, Any] = {"file_id": file_id, "file_unique_id": unique}
                if upload is not None:
                    if upload.filename:
                        document["file_name"] = upload.filename
                    if upload.content_type:
                        document["mime_type"] = upload.content_type
                    document["file_size"] = size
                content = {"document": document}
            if caption:
                content["caption"] = caption
            message = self._bot_message(chat_id, content, params, reply)
            self._files.append(
                {
                    "method": method,
                    "chat_id": chat_id,
                    "caption": params.get("caption"),
                    "parse_mode": params.get("parse_mode"),
                    "data": upload.data if upload else None,
                    "filename": upload.filename if upload else None,
                    "content_type": upload.content_type if upload else None,
                    "file_id": file_id,
                    "message_id": message["message_id"],
                    "reply_to_message_id": reply["message_id"] if reply else None,
                    "params": copy.deepcopy(params),
                }
            )
            self._cond.notify_all()
            return message

    def _m_send_photo(self, params: dict[str, Any], files: list[UploadedFile]) -> dict[str, Any]:
        return self._send_file("sendPhoto", "photo", params, files)

    def _m_send_document(self, params: dict[str, Any], files: list[UploadedFile]) -> dict[str, Any]:
        return self._send_file("sendDocument", "document", params, files)

    def _m_answer_callback_query(self, params: dict[str, Any], files: list[UploadedFile]) -> bool:
        with self._cond:
            query_id = str(params.get("callback_query_id") or "")
            if query_id not in self._callback_ids:
                raise _bad("query is too old and response timeout expired or query ID is invalid")
            self._callback_ids.discard(query_id)
            self._callback_answers.append(copy.deepcopy(params))
            self._cond.notify_all()
        return True

    def _m_get_updates(
        self, params: dict[str, Any], files: list[UploadedFile]
    ) -> list[dict[str, Any]]:
        offset = _as_int(params.get("offset"), "offset")
        limit = max(1, min(100, _as_int(params.get("limit"), "limit", 100) or 100))
        try:
            timeout = max(0.0, float(params.get("timeout") or 0))
        except (TypeError, ValueError):
            raise _bad("wrong parameter timeout specified") from None
        allowed = params.get("allowed_updates")
        with self._cond:
            self._poll_generation += 1
            generation = self._poll_generation
            self._cond.notify_all()  # terminates an older, still waiting getUpdates (409)
            if isinstance(allowed, list):
                self._allowed_updates = [str(kind) for kind in allowed] or None
            self._confirm(offset)
            deadline = time.monotonic() + min(timeout, self.max_poll_wait)
            while True:
                if generation != self._poll_generation and not self._closing:
                    raise _ApiError(409, _CONFLICT)
                batch = self._deliverable(offset, limit)
                if batch or self._closing:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(min(remaining, _POLL_SLICE))
            for queued in batch:
                queued.delivered = True
            return [copy.deepcopy(q.update) for q in batch]

    def _confirm(self, offset: int | None) -> None:
        if offset is None:
            return
        if offset < 0:
            ordered = sorted(self._queue, key=lambda q: q.update_id)
            dropped = ordered[: max(0, len(ordered) + offset)]
        else:
            dropped = [
                q for q in self._queue if q.update_id < offset and not (q.force and not q.delivered)
            ]
        gone = {id(q) for q in dropped}
        self._queue = [q for q in self._queue if id(q) not in gone]
        self._confirmed.extend(q.update_id for q in dropped)

    def _deliverable(self, offset: int | None, limit: int) -> list[_Queued]:
        batch: list[_Queued] = []
        for queued in sorted(self._queue, key=lambda q: q.update_id):
            if (
                offset is not None
                and offset >= 0
                and queued.update_id < offset
                and not (queued.force and not queued.delivered)
            ):
                continue
            kind = queued.kind
            if self._allowed_updates is None:
                allowed = kind not in _OPT_IN_UPDATES
            else:
                allowed = kind in self._allowed_updates
            if not allowed:
                self._queue.remove(queued)
                self._filtered.append(copy.deepcopy(queued.update))
                continue
            batch.append(queued)
            if len(batch) >= limit:
                break
        return batch

    # ---------------------------------------------------------------- pushing updates

    def push_update(self, raw: dict[str, Any], *, force: bool | None = None) -> int:
        """Queue a raw update dict as-is (its ``update_id`` is kept; one is assigned if missing).

        An update whose id is below the next fresh id (a duplicate or out-of-order id) is
        delivered once even if the client's offset has moved past it, so re-delivery can be
        tested; ``force`` overrides that decision.
        """
        update = copy.deepcopy(raw)
        with self._cond:
            if update.get("update_id") is None:
                update = {"update_id": self._next_update_id, **update}
            update_id = int(update["update_id"])
            update["update_id"] = update_id
            if force is None:
                force = update_id < self._next_update_id
            self._next_update_id = max(self._next_update_id, update_id + 1)
            self._history.setdefault(update_id, copy.deepcopy(update))
            for kind in _MESSAGE_UPDATE_KINDS:
                if isinstance(update.get(kind), dict):
                    self._remember_message(update[kind])
            self._queue.append(_Queued(update, force))
            self._cond.notify_all()
        return update_id

    def redeliver(self, update_id: int) -> int:
        """Queue a previously pushed update again, with the same ``update_id``."""
        with self._lock:
            if update_id not in self._history:
                raise KeyError(f"update {update_id} was never pushed")
            raw = copy.deepcopy(self._history[update_id])
        return self.push_update(raw, force=True)

    def _incoming(
        self,
        content: dict[str, Any],
        *,
        user_id: int,
        chat_id: int | None,
        chat_type: str,
        chat_title: str | None,
        first_name: str,
        username: str | None,
        reply_to_bot_message_id: int | None,
        extra: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """Build (without queueing) a message from a user; call with the lock held."""
        if chat_type == "private":
            if chat_id is not None and chat_id != user_id:
                raise ValueError("a private chat's id is the user's id")
            chat_id = user_id
        elif chat_id is None:
            raise ValueError(f"chat_id is required for a {chat_type} chat")
        user: dict[str, Any] = {
            "id": user_id,
            "is_bot": False,
            "first_name": first_name,
            "language_code": "en",
        }
        if username:
            user["username"] = username
        if chat_type == "private":
            chat: dict[str, Any] = {"id": chat_id, "type": "private", "first_name": first_name}
            if username:
                chat["username"] = username
        else:
            chat = {"id": chat_id, "type": chat_type, "title": chat_title or "Test chat"}
        self._chats[chat_id] = copy.deepcopy(chat)
        message: dict[str, Any] = {
            "message_id": self._next_message_id(chat_id),
            "from": user,
            "chat": chat,
            "date": int(time.time()),
        }
        if reply_to_bot_message_id is not None:
            reply = self._reply_copy(chat_id, reply_to_bot_message_id)
            if reply is None:
                reply = {
                    "message_id": reply_to_bot_message_id,
                    "from": copy.deepcopy(self.bot_user),
                    "chat": copy.deepcopy(chat),
                    "date": int(time.time()),
                    "text": "...",
                }
            message["reply_to_message"] = reply
        message.update(content)
        if extra:
            message.update(copy.deepcopy(extra))
        return message

    def _push_message_update(self, message: dict[str, Any]) -> int:
        with self._cond:
            return self.push_update({"update_id": self._next_update_id, "message": message})

    def push_message(
        self,
        text: str,
        *,
        user_id: int,
        chat_id: int | None = None,
        chat_type: str = "private",
        chat_title: str | None = None,
        first_name: str = "User",
        username: str | None = None,
        reply_to_bot_message_id: int | None = None,
        entities: list[dict[str, Any]] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> int:
        """Queue a text message from a user; returns the update_id.

        Without ``entities``, ``bot_command`` and ``mention`` entities are computed (UTF-16
        offsets) the way Telegram's clients attach them.
        """
        content: dict[str, Any] = {"text": text}
        computed = auto_entities(text) if entities is None else entities
        if computed:
            content["entities"] = copy.deepcopy(computed)
        with self._cond:
            message = self._incoming(
                content,
                user_id=user_id,
                chat_id=chat_id,
                chat_type=chat_type,
                chat_title=chat_title,
                first_name=first_name,
                username=username,
                reply_to_bot_message_id=reply_to_bot_message_id,
                extra=extra,
            )
            return self._push_message_update(message)

    def push_sticker(
        self,
        user_id: int,
        chat_id: int | None = None,
        *,
        emoji: str = "👍",
        chat_type: str = "private",
        chat_title: str | None = None,
        first_name: str = "User",
        username: str | None = None,
        reply_to_bot_message_id: int | None = None,
    ) -> int:
        """Queue a (non-text) sticker message; returns the update_id."""
        with self._cond:
            n = next(self._file_counter)
            sticker = {
                "file_id": f"stub-sticker-{n}",
                "file_unique_id": f"stub-unique-sticker-{n}",
                "type": "regular",
                "width": 512,
                "height": 512,
                "is_animated": False,
                "is_video": False,
                "emoji": emoji,
                "set_name": "StubStickers",
                "file_size": 12345,
            }
            message = self._incoming(
                {"sticker": sticker},
                user_id=user_id,
                chat_id=chat_id,
                chat_type=chat_type,
                chat_title=chat_title,
                first_name=first_name,
                username=username,
                reply_to_bot_message_id=reply_to_bot_message_id,
                extra=None,
            )
            return self._push_message_update(message)

    def push_photo(
        self,
        user_id: int,
        chat_id: int | None = None,
        *,
        caption: str | None = None,
        chat_type: str = "private",
        chat_title: str | None = None,
        first_name: str = "User",
        username: str | None = None,
        reply_to_bot_message_id: int | None = None,
    ) -> int:
        """Queue a photo message (optionally captioned); returns the update_id."""
        with self._cond:
            n = next(self._file_counter)
            content: dict[str, Any] = {
                "photo": [
                    {
                        "file_id": f"stub-inphoto-{n}-{w}",
                        "file_unique_id": f"stub-unique-inphoto-{n}-{w}",
                        "width": w,
                        "height": w * 3 // 4,
                        "file_size": w * 40,
                    }
                    for w in (90, 320, 800)
                ]
            }
            if caption:
                content["caption"] = caption
                computed = auto_entities(caption)
                if computed:
                    content["caption_entities"] = computed
            message = self._incoming(
                content,
                user_id=user_id,
                chat_id=chat_id,
                chat_type=chat_type,
                chat_title=chat_title,
                first_name=first_name,
                username=username,
                reply_to_bot_message_id=reply_to_bot_message_id,
                extra=None,
            )
            return self._push_message_update(message)

    def push_callback_query(
        self,
        user_id: int,
        data: str,
        *,
        message_id: int,
        chat_id: int | None = None,
        first_name: str = "User",
        username: str | None = None,
    ) -> int:
        """Queue a callback query (inline button press) on a bot message; returns update_id."""
        chat_id = user_id if chat_id is None else chat_id
        with self._cond:
            query_id = f"{user_id}{next(self._callback_counter):06d}"
            self._callback_ids.add(query_id)
            user: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name}
            if username:
                user["username"] = username
            message = self._messages.get((chat_id, message_id)) or {
                "message_id": message_id,
                "from": copy.deepcopy(self.bot_user),
                "chat": self._chat(chat_id),
                "date": int(time.time()),
                "text": "...",
            }
            query = {
                "id": query_id,
                "from": user,
                "message": copy.deepcopy(message),
                "chat_instance": str(abs(hash((chat_id, self.bot_id)))),
                "data": data,
            }
            return self.push_update({"update_id": self._next_update_id, "callback_query": query})

    def block_chat(self, chat_id: int) -> None:
        """From now on, sends to ``chat_id`` fail with 403 (user blocked the bot / bot kicked)."""
        with self._lock:
            self._blocked.add(chat_id)

    def unblock_chat(self, chat_id: int) -> None:
        with self._lock:
            self._blocked.discard(chat_id)

    # ---------------------------------------------------------------- inspection

    def sent_messages(self, chat_id: int | None = None) -> list[dict[str, Any]]:
        """Every accepted sendMessage: its params (text, chat_id, reply_parameters, ...) plus
        ``message_id``, ``reply_to_message_id`` (resolved), ``parsed_text`` and ``date``."""
        with self._lock:
            return [
                copy.deepcopy(r) for r in self._sent if chat_id is None or r["chat_id"] == chat_id
            ]

    def sent_texts(self, chat_id: int | None = None) -> list[str]:
        return [r["text"] for r in self.sent_messages(chat_id)]

    @property
    def chat_actions(self) -> _RecordList:
        """Every accepted sendChatAction (``chat_id``, ``action``, ``time``); call it with a
        chat_id to filter: ``stub.chat_actions(42)``."""
        with self._lock:
            return _RecordList(copy.deepcopy(self._actions))

    @property
    def sent_files(self) -> _RecordList:
        """Every accepted sendPhoto/sendDocument: ``method``, ``chat_id``, ``caption``, ``data``
        (the uploaded bytes), ``filename``, ``content_type``, ``message_id``, ``params``."""
        with self._lock:
            return _RecordList(copy.deepcopy(self._files))

    @property
    def edits(self) -> _RecordList:
        with self._lock:
            return _RecordList(copy.deepcopy(self._edits))

    @property
    def callback_answers(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._callback_answers)

    def calls(self, method: str | None = None) -> list[dict[str, Any]]:
        """Params of every request to ``method`` (case-insensitive), accepted or not; with no
        method, every request as ``{"method", "params", "files", "time"}``."""
        with self._lock:
            if method is None:
                return copy.deepcopy(self._calls)
            return [
                copy.deepcopy(c["params"])
                for c in self._calls
                if c["method"].lower() == method.lower()
            ]

    def call_count(self, method: str) -> int:
        with self._lock:
            return sum(1 for c in self._calls if c["method"].lower() == method.lower())

    @property
    def rejected(self) -> list[dict[str, Any]]:
        """Every error answer except 404/409: ``method``, ``error_code`` (400/403/429),
        ``description`` (e.g. "Bad Request: message is too long") and ``params``."""
        with self._lock:
            return copy.deepcopy(self._rejected)

    @property
    def flood_rejections(self) -> int:
        """How many 429 Too Many Requests answers were sent."""
        with self._lock:
            return self._flood_rejections

    @property
    def unknown_methods(self) -> list[str]:
        """Names of called methods the stub does not implement (each answered 404)."""
        with self._lock:
            return [u["method"] for u in self._unknown]

    @property
    def conflicts(self) -> int:
        """How many waiting getUpdates were terminated by a newer one (409)."""
        with self._lock:
            return len(self._conflicts)

    @property
    def errors(self) -> list[str]:
        """Tracebacks of exceptions inside the stub itself (answered 500); should stay empty."""
        with self._lock:
            return list(self._errors)

    def my_commands(
        self, scope: dict[str, Any] | None = None, language_code: str = ""
    ) -> list[dict[str, Any]]:
        """Commands registered via setMyCommands for ``scope`` (default scope when None)."""
        key = (self._scope_key(scope), language_code)
        with self._lock:
            return copy.deepcopy(self._commands.get(key, []))

    @property
    def registered_commands(self) -> list[dict[str, Any]]:
        """Every current registration as ``{"scope": dict, "language_code": str, "commands"}``."""
        with self._lock:
            return [
                {"scope": json.loads(scope), "language_code": lang, "commands": copy.deepcopy(cmds)}
                for (scope, lang), cmds in self._commands.items()
            ]

    def pending_updates(self) -> int:
        """Queued updates not yet confirmed by a getUpdates offset (delivered or not)."""
        with self._lock:
            return len(self._queue)

    @property
    def confirmed_update_ids(self) -> list[int]:
        with self._lock:
            return list(self._confirmed)

    @property
    def filtered_updates(self) -> list[dict[str, Any]]:
        """Updates dropped because their kind was not in allowed_updates."""
        with self._lock:
            return copy.deepcopy(self._filtered)

    def update(self, update_id: int) -> dict[str, Any]:
        """The update first pushed with ``update_id`` (e.g. to learn its message_id)."""
        with self._lock:
            return copy.deepcopy(self._history[update_id])

    def message(self, chat_id: int, message_id: int) -> dict[str, Any] | None:
        """A message the stub knows (pushed or sent, after edits), as the API would show it."""
        with self._lock:
            found = self._messages.get((chat_id, message_id))
            return copy.deepcopy(found) if found is not None else None

    # ---------------------------------------------------------------- waiting

    def _summary(self) -> str:
        sent = [(r["chat_id"], r["text"]) for r in self._sent]
        return (
            f"sent (chat_id, text): {sent!r}; rejected: "
            f"{[(r['method'], r['description']) for r in self._rejected]!r}; "
            f"unknown methods: {[u['method'] for u in self._unknown]!r}; "
            f"pending updates: {len(self._queue)}; stub errors: {self._errors!r}"
        )

    def wait_until(
        self, predicate: Callable[[], bool], timeout: float = 30, what: str = "condition"
    ) -> None:
        """Block until ``predicate()`` is true (re-checked whenever the stub records something).

        Refuses to run inside a running event loop, where blocking would freeze a bot running on
        that loop: use :meth:`await_until` there.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError(
                "BotApiStub.wait_* blocks; inside an event loop use the await_* variants"
            )
        with self._cond:
            if not self._cond.wait_for(predicate, timeout):
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what}; {self._summary()}"
                )

    async def await_until(
        self, predicate: Callable[[], bool], timeout: float = 30, what: str = "condition"
    ) -> None:
        """Asyncio-friendly :meth:`wait_until` (polls without blocking the loop)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if predicate():
                    return
                if time.monotonic() >= deadline:
                    raise AssertionError(
                        f"timed out after {timeout}s waiting for {what}; {self._summary()}"
                    )
            await asyncio.sleep(0.01)

    def _count_sent(self, chat_id: int) -> int:
        return sum(1 for r in self._sent if r["chat_id"] == chat_id)

    def wait_for_messages(
        self, chat_id: int, count: int, timeout: float = 30
    ) -> list[dict[str, Any]]:
        """Block until at least ``count`` messages were sent to ``chat_id`` in total; returns
        all of them (as :meth:`sent_messages`). AssertionError listing what was sent on timeout."""
        self.wait_until(
            lambda: self._count_sent(chat_id) >= count,
            timeout,
            f"{count} message(s) to chat {chat_id}",
        )
        return self.sent_messages(chat_id)

    async def await_messages(
        self, chat_id: int, count: int, timeout: float = 30
    ) -> list[dict[str, Any]]:
        """Asyncio-friendly :meth:`wait_for_messages`."""
        await self.await_until(
            lambda: self._count_sent(chat_id) >= count,
            timeout,
            f"{count} message(s) to chat {chat_id}",
        )
        return self.sent_messages(chat_id)

    def wait_for_calls(self, method: str, count: int = 1, timeout: float = 30) -> list[dict]:
        """Block until ``method`` was requested at least ``count`` times; returns their params."""
        self.wait_until(
            lambda: self.call_count(method) >= count, timeout, f"{count} call(s) to {method}"
        )
        return self.calls(method)

    async def await_calls(self, method: str, count: int = 1, timeout: float = 30) -> list[dict]:
        await self.await_until(
            lambda: self.call_count(method) >= count, timeout, f"{count} call(s) to {method}"
        )
        return self.calls(method)
