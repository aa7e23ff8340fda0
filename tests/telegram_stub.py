"""A Telegram Bot API stand-in served over real HTTP on 127.0.0.1, for end-to-end tests.

Point the real python-telegram-bot stack at it::

    with BotApiStub() as stub:
        app = ApplicationBuilder().token(stub.token).base_url(stub.base_url).build()
        ...
        update_id = stub.push_message("/start", user_id=42)
        [reply] = await stub.await_messages(42, 1)

It models what charbot and python-telegram-bot's polling and webhook use, and nothing more: the
methods getMe, setWebhook, deleteWebhook, getUpdates, setMyCommands, setMyDescription,
setMyShortDescription, getMyDescription, getMyShortDescription, getChatMember, sendMessage,
sendChatAction, sendPhoto, sendDocument, editMessageReplyMarkup and answerCallbackQuery; users'
text messages, stickers, photos and documents arriving in private chats and groups, and users
pressing inline keyboard buttons (callback queries). Any other method is answered 404 and
recorded in :attr:`BotApiStub.rejected`, so a bot that starts using one notices.

The server side uses only the standard library (``ThreadingHTTPServer`` in a daemon thread), so it
is independent of the client stack under test. Requests are read the way PTB sends them:
``application/x-www-form-urlencoded`` (non-string values JSON-encoded) or, with an upload,
``multipart/form-data``. Method names are case-insensitive, as on the real service.

Behaviour copied from the real service because the bot must cope with it:

* ``getMe``: ``can_join_groups`` true, ``supports_inline_queries`` false and
  ``can_read_all_group_messages`` false only with ``privacy_mode=True`` (which changes nothing
  else: the test decides which group messages it pushes).
* ``sendMessage``: the text is trimmed, then rejected when empty (``message text is empty``) or
  longer than 4096 UTF-16 code units (``message is too long``). Texts are plain: formatting
  (``parse_mode``) is not modelled and is refused. A reply (``reply_parameters``) to an unknown
  message fails with ``message to be replied not found`` unless ``allow_sending_without_reply``.
* ``reply_markup`` (sendMessage, sendPhoto, sendDocument, editMessageReplyMarkup): only an
  ``inline_keyboard`` is modelled (other keyboards are refused). Every button needs a non-empty
  ``text`` and exactly one action, ``callback_data`` (1-64 bytes, else ``BUTTON_DATA_INVALID``)
  or ``url``; the markup is kept on the message (an empty keyboard is no markup).
* ``sendPhoto``: the upload must look like an image (``IMAGE_PROCESS_FAILED``); the caption is
  limited to 1024 UTF-16 code units. ``sendDocument``: any non-empty upload (``file must be
  non-empty``), keeping the upload's file name; the same caption limit.
* ``editMessageReplyMarkup``: only the bot's own messages (``message can't be edited``), known ones
  (``message to edit not found``), and not to the markup they have (``message is not modified``).
* ``setMyCommands`` / ``setMyDescription`` / ``setMyShortDescription``: ``language_code`` is ""
  or two lowercase letters (``invalid language code specified``); the lists are kept per scope and
  language, the texts per language (0-512 and 0-120 characters; "" removes that language's text).
  ``getMyDescription`` / ``getMyShortDescription`` fall back to the text for no language.
* ``getChatMember``: only in groups the stub knows (a user wrote there, or
  :meth:`BotApiStub.set_chat_admins`); a private or unknown chat is ``chat not found``. Anyone
  not configured as admin or creator is a plain member.
* Callback queries: each can be answered once, text at most 200 UTF-16 code units
  (``MESSAGE_TOO_LONG``); an unknown or answered id is ``query is too old and response timeout
  expired or query ID is invalid``. A user can only press a button the message has.
* ``getUpdates``: ``offset`` confirms (forgets) the updates with a smaller ``update_id``; every
  update not confirmed so is delivered again by the next call. ``limit`` caps the batch,
  ``timeout`` long-polls, and a newer ``getUpdates`` ends a still waiting older one with 409
  Conflict.
* Optional flood control on ``sendMessage`` answers 429 with ``parameters.retry_after``.
* ``setWebhook``: an https ``url`` on port 443, 80, 88 or 8443 (``bad webhook: ...``), a
  ``secret_token`` of 1-256 characters ``A-Z a-z 0-9 _ -``; the webhook is kept
  (:attr:`BotApiStub.webhook`) until ``deleteWebhook`` (or ``setWebhook`` with an empty url).
  While it is set, ``getUpdates`` answers 409 Conflict. Updates are not posted by themselves:
  a test posts one with :meth:`BotApiStub.post_update` to the bot's listen address (the
  reverse proxy's upstream), and a 2xx answer confirms it, as the offset does for getUpdates.

Everything the bot does is recorded; the inspection helpers are thread-safe and may be called from
plain or asyncio test code (use the ``await_*`` variants inside a running event loop).
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import mimetypes
import re
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

__all__ = ["BotApiStub", "auto_entities", "utf16_len"]

DEFAULT_BOT_ID = 7_000_000_001
DEFAULT_BOT_USERNAME = "charbot_test_bot"
DEFAULT_TOKEN = f"{DEFAULT_BOT_ID}:AAStubTokenForCharbotEndToEndTests"
MAX_MESSAGE_LENGTH = 4096  # UTF-16 code units, after trimming
MAX_CAPTION_LENGTH = 1024
MAX_DESCRIPTION_LENGTH = 512
MAX_SHORT_DESCRIPTION_LENGTH = 120
MAX_CALLBACK_ANSWER_LENGTH = 200  # UTF-16 code units
MAX_CALLBACK_DATA_BYTES = 64
FIRST_UPDATE_ID = 1000
FIRST_CALLBACK_QUERY_ID = 4_380_000_000_000_000_001

_CHAT_ACTION_RE = re.compile(
    r"typing|upload_photo|record_video|upload_video|record_voice|upload_voice|upload_document"
    r"|choose_sticker|find_location|record_video_note|upload_video_note"
)
# Form fields that are plain strings and must not be JSON-decoded ("123", "true" stay text).
_STRING_FIELDS = frozenset(
    ["text", "caption", "description", "short_description", "language_code", "callback_query_id"]
)
_BUTTON_ACTIONS = ("callback_data", "url")  # the inline keyboard button actions modelled
_OTHER_BUTTON_ACTIONS = (
    "web_app",
    "login_url",
    "switch_inline_query",
    "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat",
    "copy_text",
    "callback_game",
    "pay",
)
_QUERY_INVALID = "query is too old and response timeout expired or query ID is invalid"
_NOT_MODIFIED = (
    "message is not modified: specified new message content and reply markup are exactly the "
    "same as a current content and reply markup of the message"
)
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")
_CONFLICT = (
    "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running"
)
_WEBHOOK_ACTIVE = (
    "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first"
)
WEBHOOK_PORTS = (443, 80, 88, 8443)
_SECRET_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{1,256}")
_REGISTERED = object()  # post_update's default secret: the one setWebhook registered

Params = dict[str, Any]


def utf16_len(text: str) -> int:
    """Length of ``text`` in UTF-16 code units, the unit Telegram counts limits and offsets in."""
    return len(text.encode("utf-16-le")) // 2


class _ApiError(Exception):
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


def _bad(description: str) -> _ApiError:
    return _ApiError(400, f"Bad Request: {description}")


_COMMAND_RE = re.compile(r"(?<![^\s])/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{3,32})?(?![A-Za-z0-9_@])")
_MENTION_RE = re.compile(r"(?<![A-Za-z0-9_/@])@[A-Za-z][A-Za-z0-9_]{4,31}(?![A-Za-z0-9_])")


def auto_entities(text: str) -> list[Params]:
    """The entities Telegram's clients would attach: ``bot_command`` and ``mention``."""
    found = [(m.start(), m.end(), "bot_command") for m in _COMMAND_RE.finditer(text)]
    for m in _MENTION_RE.finditer(text):
        if not any(s <= m.start() < e for s, e, _ in found):
            found.append((m.start(), m.end(), "mention"))
    return [
        {"offset": utf16_len(text[:s]), "length": utf16_len(text[s:e]), "type": kind}
        for s, e, kind in sorted(found)
    ]


def _inline_button(button: Any) -> Params:
    """A validated inline keyboard button, as Telegram returns it: ``text`` and its action."""
    if not isinstance(button, dict):
        raise _bad("can't parse inline keyboard button: InlineKeyboardButton must be an Object")
    text = button.get("text")
    if not isinstance(text, str):
        raise _bad('can\'t parse inline keyboard button: Field "text" must be of type String')
    if not text.strip():
        raise _bad("BUTTON_TEXT_INVALID")
    if other := [key for key in _OTHER_BUTTON_ACTIONS if key in button]:
        raise _bad(f"BotApiStub does not model inline keyboard buttons with {other[0]}")
    actions = [key for key in _BUTTON_ACTIONS if key in button]
    if not actions:
        raise _bad(
            "can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard"
        )
    if len(actions) > 1:  # the Bot API docs demand exactly one; the stub holds bots to it
        raise _bad(f"can't parse inline keyboard button: more than one action: {actions}")
    value = button[actions[0]]
    if actions[0] == "callback_data":
        if not isinstance(value, str) or not 1 <= len(value.encode()) <= MAX_CALLBACK_DATA_BYTES:
            raise _bad("BUTTON_DATA_INVALID")
    elif not isinstance(value, str) or not re.match(r"(?i)(https?|tg)://\S", value):
        raise _bad("BUTTON_URL_INVALID")
    return {"text": text, actions[0]: value}


def _inline_keyboard(markup: Any) -> Params | None:
    """The validated ``reply_markup``: an inline keyboard, or None for none (or an empty one)."""
    if markup is None or markup == "":
        return None
    if not isinstance(markup, dict):
        raise _bad("can't parse reply keyboard markup JSON object")
    if "inline_keyboard" not in markup:
        raise _bad("BotApiStub does not model reply keyboards; only inline_keyboard is supported")
    rows = markup["inline_keyboard"]
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise _bad('field "inline_keyboard" of the InlineKeyboardMarkup must be an Array of Arrays')
    keyboard = [[_inline_button(button) for button in row] for row in rows]
    keyboard = [row for row in keyboard if row]
    return {"inline_keyboard": keyboard} if keyboard else None


def _language_code(params: Params) -> str:
    """The ``language_code`` parameter: "" or two lowercase letters (ISO 639-1)."""
    code = params.get("language_code")
    code = "" if code is None else str(code)
    if code and not re.fullmatch(r"[a-z]{2}", code):
        raise _bad("invalid language code specified")
    return code


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


def _parse_request(content_type: str, body: bytes) -> Params:
    """The request's parameters; an uploaded file's value is its bytes."""
    if content_type.lower().startswith("multipart/form-data"):
        boundary = re.search(r'boundary="?([^";]+)"?', content_type)
        if boundary is None:
            raise ValueError("multipart body without a boundary")
        return _parse_multipart(body, boundary[1].encode("latin-1"))
    pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    return {key: _decode(key, value) for key, value in pairs}


# -- HTTP plumbing ---------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    stub: BotApiStub


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as PTB's connection pool expects
    disable_nagle_algorithm = True
    server_version = "BotApiStub/1.0"
    sys_version = ""
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.server.stub._serve(self)


@dataclass
class _Queued:
    update_id: int
    update: Params
    force: bool  # a redelivery: delivered once even though the client's offset is past it
    delivered: bool = False


class _RecordList(list):
    """A list snapshot that can also be called to filter by chat: ``stub.chat_actions(42)``."""

    def __call__(self, chat_id: int | None = None) -> list[Params]:
        return [r for r in self if chat_id is None or r.get("chat_id") == chat_id]


# -- The stub --------------------------------------------------------------------------------------


class BotApiStub:
    """A Bot API stand-in on ``127.0.0.1:<ephemeral port>``; starts serving on construction.

    ``flood_limit=(n, seconds)`` lets at most ``n`` sendMessage calls through in any ``seconds``
    and answers the others 429 "retry after ``retry_after``". ``privacy_mode=True`` makes getMe
    report ``can_read_all_group_messages`` false (as @BotFather's /setprivacy does).
    """

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        username: str = DEFAULT_BOT_USERNAME,
        flood_limit: tuple[int, float] | None = None,
        retry_after: int = 1,
        privacy_mode: bool = False,
    ) -> None:
        prefix = token.split(":", 1)[0]
        self.token = token
        bot_id = int(prefix) if prefix.isdigit() else DEFAULT_BOT_ID
        self.bot_user: Params = {"id": bot_id, "is_bot": True, "first_name": "Charbot Test"}
        self.bot_user["username"] = username
        self.flood_limit = flood_limit
        self.retry_after = retry_after
        self.privacy_mode = privacy_mode

        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)  # notified whenever anything is recorded
        self._closing = False
        self._queue: list[_Queued] = []  # delivered or not, until an offset confirms them
        self._history: dict[int, Params] = {}  # every update as first pushed, for redeliver
        self._next_update_id = FIRST_UPDATE_ID
        self._poll_generation = 0
        self._confirmed: list[int] = []
        self._chats: dict[int, Params] = {}
        self._last_message_id: dict[int, int] = {}
        self._messages: dict[tuple[int, int], Params] = {}  # (chat_id, message_id) -> message
        self._calls: list[tuple[str, Params]] = []  # (method in lower case, params)
        self._sent: list[Params] = []
        self._photos: list[Params] = []
        self._actions: list[Params] = []
        self._documents: list[Params] = []
        self._commands: dict[tuple[str, str], list[Params]] = {}  # (scope, language) -> list
        self._descriptions: dict[tuple[str, str], str] = {}  # (field, language) -> text
        self._admins: dict[int, tuple[set[int], int | None]] = {}  # chat -> (admins, creator)
        self._callback_queries: dict[str, Params] = {}  # id -> the query, "answered" added
        self._callback_answers: list[Params] = []
        self._callback_ids = itertools.count(FIRST_CALLBACK_QUERY_ID)
        self._rejected: list[Params] = []
        self._errors: list[str] = []
        self._flood_times: deque[float] = deque()
        self._flood_rejections = 0
        self._revoked = False  # every request answered 401, as for a revoked token
        self._failures: dict[str, list[tuple[int, str]]] = {}  # method -> errors to answer
        self._file_counter = itertools.count(1)
        self._webhook: Params | None = None  # what setWebhook registered
        methods: dict[str, Callable[[Params], Any]] = {
            "getMe": self._get_me,
            "setWebhook": self._set_webhook,
            "deleteWebhook": self._delete_webhook,
            "getUpdates": self._get_updates,
            "setMyCommands": self._set_my_commands,
            "setMyDescription": self._set_my_description,
            "setMyShortDescription": self._set_my_short_description,
            "getMyDescription": self._get_my_description,
            "getMyShortDescription": self._get_my_short_description,
            "getChatMember": self._get_chat_member,
            "sendChatAction": self._send_chat_action,
            "sendMessage": self._send_message,
            "sendPhoto": self._send_photo,
            "sendDocument": self._send_document,
            "editMessageReplyMarkup": self._edit_message_reply_markup,
            "answerCallbackQuery": self._answer_callback_query,
        }
        self._methods = {name.lower(): func for name, func in methods.items()}

        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.stub = self
        self.port: int = self._server.server_address[1]
        serve = self._server.serve_forever
        self._thread = threading.Thread(target=serve, args=(0.05,), daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- lifecycle

    @property
    def base_url(self) -> str:
        """What to pass to ``ApplicationBuilder().base_url()`` / ``Bot(base_url=...)``."""
        return f"http://127.0.0.1:{self.port}/bot"

    def __enter__(self) -> BotApiStub:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving (a waiting long poll returns at once). Idempotent."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._cond.notify_all()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # ---------------------------------------------------------------- HTTP entry point

    def _serve(self, handler: _Handler) -> None:
        try:
            length = int(handler.headers.get("Content-Length") or 0)
            body = handler.rfile.read(length)
        except (OSError, ValueError):
            handler.close_connection = True
            return
        if len(body) < length:  # the client went away mid-request (a killed bot)
            handler.close_connection = True
            return
        m = re.fullmatch(r"/bot([^/]+)/(\w+)", handler.path)
        if m is None or m[1] != self.token or self._revoked:
            err = _ApiError(404, "Not Found") if m is None else _ApiError(401, "Unauthorized")
            self._respond(handler, err.code, err.payload())
        else:
            content_type = handler.headers.get("Content-Type", "")
            self._respond(handler, *self._dispatch(m[2], content_type, body))

    @staticmethod
    def _respond(handler: _Handler, status: int, payload: Params) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        except OSError:  # the client gave up (e.g. a cancelled long poll)
            handler.close_connection = True

    def _dispatch(self, method: str, content_type: str, body: bytes) -> tuple[int, Params]:
        func = self._methods.get(method.lower())
        params: Params = {}
        try:
            params = _parse_request(content_type, body)  # a request it can't read is its bug
            with self._cond:
                self._calls.append((method.lower(), copy.deepcopy(params)))
                self._cond.notify_all()
            if func is None:
                raise _ApiError(404, "Not Found: method not found")
            with self._lock:
                failures = self._failures.get(method.lower())
                failure = failures.pop(0) if failures else None
            if failure is not None:
                raise _ApiError(*failure)
            if method.lower() == "sendmessage":
                self._check_flood()
            return 200, {"ok": True, "result": func(params)}
        except _ApiError as err:
            if err.code != 409:
                rejection = {"method": method, "error_code": err.code, "params": params}
                with self._lock:
                    self._rejected.append({**rejection, "description": err.description})
            return err.code, err.payload()
        except Exception as exc:  # a bug in the stub: make it loud
            with self._lock:
                self._errors.append(f"{method}: {traceback.format_exc()}")
            description = f"Internal Server Error: BotApiStub bug: {exc!r}"
            return 500, {"ok": False, "error_code": 500, "description": description}
        finally:
            with self._cond:
                self._cond.notify_all()

    def _check_flood(self) -> None:
        if self.flood_limit is None:
            return
        max_calls, per_seconds = self.flood_limit
        now = time.monotonic()
        with self._lock:
            times = self._flood_times
            while times and now - times[0] >= per_seconds:
                times.popleft()
            if len(times) >= max_calls:
                self._flood_rejections += 1
                description = f"Too Many Requests: retry after {self.retry_after}"
                raise _ApiError(429, description, {"retry_after": self.retry_after})
            times.append(now)

    # ---------------------------------------------------------------- messages

    def _next_message_id(self, chat_id: int) -> int:
        """Incoming and outgoing messages share one sequence per chat, as in a private chat."""
        self._last_message_id[chat_id] = self._last_message_id.get(chat_id, 0) + 1
        return self._last_message_id[chat_id]

    def _quoted(self, chat_id: int, message_id: Any) -> Params | None:
        """A known message as it appears in ``reply_to_message`` (without its own reply)."""
        found = self._messages.get((chat_id, message_id))
        if found is None:
            return None
        quoted = copy.deepcopy(found)
        quoted.pop("reply_to_message", None)
        return quoted

    def _remember(self, message: Params) -> None:
        self._messages[(message["chat"]["id"], message["message_id"])] = copy.deepcopy(message)

    def _chat_id(self, params: Params) -> int:
        chat_id = params.get("chat_id")
        if chat_id is None or chat_id == "":
            raise _bad("chat_id is empty")
        if not isinstance(chat_id, int) or isinstance(chat_id, bool):
            raise _bad("chat not found")  # @channel usernames are not modelled
        with self._lock:
            if chat_id > 0 and chat_id not in self._chats:  # a user who never wrote to the bot
                raise _ApiError(403, "Forbidden: bot can't initiate conversation with a user")
        return chat_id

    def _chat(self, chat_id: int) -> Params:
        """The chat as users' messages showed it; a chat nobody wrote in is private or a group."""
        unknown = {"id": chat_id, "type": "private" if chat_id > 0 else "group"}
        return copy.deepcopy(self._chats.get(chat_id, unknown))

    def _reply_to(self, chat_id: int, params: Params) -> Params | None:
        options = params.get("reply_parameters")
        if not isinstance(options, dict) or options.get("message_id") is None:
            return None
        quoted = self._quoted(chat_id, options["message_id"])
        if quoted is None and not options.get("allow_sending_without_reply"):
            raise _bad("message to be replied not found")
        return quoted

    def _plain_text(self, params: Params, field: str) -> str:
        if params.get("parse_mode") not in (None, ""):
            raise _bad("BotApiStub does not model parse_mode; only plain text is supported")
        return str(params.get(field) or "").strip()

    def _bot_message(
        self, chat_id: int, content: Params, reply: Params | None, markup: Params | None = None
    ) -> Params:
        message: Params = {
            "message_id": self._next_message_id(chat_id),
            "from": copy.deepcopy(self.bot_user),
            "chat": self._chat(chat_id),
            "date": int(time.time()),
            **content,
        }
        if reply is not None:
            message["reply_to_message"] = reply
        if markup is not None:
            message["reply_markup"] = markup
        self._remember(message)
        return message

    # ---------------------------------------------------------------- Bot API methods

    def _get_me(self, params: Params) -> Params:
        return {
            **copy.deepcopy(self.bot_user),
            "can_join_groups": True,
            "can_read_all_group_messages": not self.privacy_mode,
            "supports_inline_queries": False,
        }

    def _set_webhook(self, params: Params) -> bool:
        url = str(params.get("url") or "")
        if not url:
            return self._delete_webhook(params)
        try:
            parts = urlsplit(url)
            port = parts.port or 443
        except ValueError:
            raise _bad("bad webhook: Failed to resolve host: Name or service not known") from None
        if parts.scheme != "https" or not parts.hostname:
            raise _bad("bad webhook: An HTTPS URL must be provided for webhook")
        if port not in WEBHOOK_PORTS:
            raise _bad("bad webhook: Webhook can be set up only on ports 80, 88, 443 or 8443")
        secret = params.get("secret_token")
        if secret is not None and not _SECRET_TOKEN_RE.fullmatch(str(secret)):
            raise _bad("secret token contains unallowed characters")
        with self._lock:
            if params.get("drop_pending_updates"):
                self._queue = []  # dropped, not confirmed
            self._webhook = {
                "url": url,
                "secret_token": None if secret is None else str(secret),
                "allowed_updates": params.get("allowed_updates"),
                "drop_pending_updates": bool(params.get("drop_pending_updates")),
                "max_connections": params.get("max_connections"),
            }
        return True

    def _delete_webhook(self, params: Params) -> bool:
        with self._lock:
            if params.get("drop_pending_updates"):
                self._queue = []  # dropped, not confirmed
            self._webhook = None
        return True

    def _set_my_commands(self, params: Params) -> bool:
        commands = params.get("commands")
        if not isinstance(commands, list):
            raise _bad("commands must be a list")
        if len(commands) > 100:
            raise _bad("too many commands specified")
        for command in commands:
            if not isinstance(command, dict):
                raise _bad("BOT_COMMAND_INVALID")
            if not re.fullmatch(r"[a-z0-9_]{1,32}", str(command.get("command", "")).lstrip("/")):
                raise _bad("BOT_COMMAND_INVALID")
            if not 1 <= len(str(command.get("description", "")).strip()) <= 256:
                raise _bad("BOT_COMMAND_DESCRIPTION_INVALID")
        key = (self._scope_key(params.get("scope")), _language_code(params))
        with self._lock:
            self._commands[key] = [
                {"command": str(c["command"]).lstrip("/"), "description": str(c["description"])}
                for c in commands
            ]
        return True

    @staticmethod
    def _scope_key(scope: Params | None) -> str:
        return json.dumps(scope or {"type": "default"}, sort_keys=True)

    def _set_text(self, params: Params, field: str, limit: int) -> bool:
        text = params.get(field)
        text = "" if text is None else str(text)
        language = _language_code(params)
        if len(text) > limit:
            raise _bad(f"{field.replace('_', ' ')} is too long")
        with self._lock:
            self._descriptions[(field, language)] = text
        return True

    def _get_text(self, params: Params, field: str) -> Params:
        language = _language_code(params)
        with self._lock:
            text = self._descriptions.get((field, language)) or ""
            if not text:  # nothing dedicated to this language: the text for all the others
                text = self._descriptions.get((field, ""), "")
        return {field: text}

    def _set_my_description(self, params: Params) -> bool:
        return self._set_text(params, "description", MAX_DESCRIPTION_LENGTH)

    def _set_my_short_description(self, params: Params) -> bool:
        return self._set_text(params, "short_description", MAX_SHORT_DESCRIPTION_LENGTH)

    def _get_my_description(self, params: Params) -> Params:
        return self._get_text(params, "description")

    def _get_my_short_description(self, params: Params) -> Params:
        return self._get_text(params, "short_description")

    def _user(self, user_id: int, language_code: str | None = None) -> Params:
        """A user object as Telegram shows it in ``from`` (the bot itself for its own id)."""
        if user_id == self.bot_user["id"]:
            return copy.deepcopy(self.bot_user)
        user: Params = {"id": user_id, "is_bot": False, "first_name": "User"}
        if language_code is not None:
            user["language_code"] = language_code
        return user

    def _get_chat_member(self, params: Params) -> Params:
        chat_id, user_id = params.get("chat_id"), params.get("user_id")
        if not isinstance(user_id, int) or isinstance(user_id, bool) or user_id <= 0:
            raise _bad("invalid user_id specified")
        with self._lock:
            chat = self._chats.get(chat_id) if isinstance(chat_id, int) else None
            if chat is None or chat.get("type") == "private":
                raise _bad("chat not found")
            admins, creator = self._admins.get(chat_id, (set(), None))
        user = self._user(user_id)
        if user_id == creator:
            return {"status": "creator", "user": user, "is_anonymous": False}
        if user_id not in admins:
            return {"status": "member", "user": user}
        rights = dict.fromkeys(
            [
                "can_manage_chat",
                "can_delete_messages",
                "can_manage_video_chats",
                "can_restrict_members",
                "can_change_info",
                "can_invite_users",
                "can_pin_messages",
            ],
            True,
        )
        rights |= dict.fromkeys(
            ["can_promote_members", "can_post_stories", "can_edit_stories", "can_delete_stories"],
            False,
        )
        if chat.get("type") == "supergroup":
            rights["can_manage_topics"] = False
        return {
            "status": "administrator",
            "user": user,
            "can_be_edited": False,  # only who promoted an admin can edit them
            "is_anonymous": False,
            **rights,
        }

    def _send_chat_action(self, params: Params) -> bool:
        chat_id = self._chat_id(params)
        if not _CHAT_ACTION_RE.fullmatch(str(params.get("action"))):
            raise _bad("wrong parameter action in request")
        with self._lock:
            record = {"chat_id": chat_id, "time": time.time(), "received_at": time.monotonic()}
            self._actions.append({**copy.deepcopy(params), **record})
        return True

    def _send_message(self, params: Params) -> Params:
        chat_id = self._chat_id(params)
        text = self._plain_text(params, "text")
        if not text:
            raise _bad("message text is empty")
        if utf16_len(text) > MAX_MESSAGE_LENGTH:
            raise _bad("message is too long")
        markup = _inline_keyboard(params.get("reply_markup"))
        with self._lock:
            reply = self._reply_to(chat_id, params)
            message = self._bot_message(chat_id, {"text": text}, reply, markup)
            self._sent.append(
                {
                    **copy.deepcopy(params),
                    "chat_id": chat_id,
                    "message_id": message["message_id"],
                    "reply_to_message_id": reply["message_id"] if reply else None,
                    "date": message["date"],
                    "received_at": time.monotonic(),  # for latency measurements
                }
            )
            return message

    def _send_photo(self, params: Params) -> Params:
        chat_id = self._chat_id(params)
        data = params.get("photo")
        if not isinstance(data, bytes):  # a file_id or URL instead of an upload is not modelled
            raise _bad("there is no photo in the request")
        if not (data.startswith(_IMAGE_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")):
            raise _bad("IMAGE_PROCESS_FAILED")
        caption = self._plain_text(params, "caption")
        if utf16_len(caption) > MAX_CAPTION_LENGTH:
            raise _bad("message caption is too long")
        markup = _inline_keyboard(params.get("reply_markup"))
        with self._lock:
            reply = self._reply_to(chat_id, params)
            n = next(self._file_counter)
            size = {"width": 800, "height": 600, "file_size": len(data)}
            content: Params = {
                "photo": [{"file_id": f"stub-photo-{n}", "file_unique_id": f"stub-u{n}", **size}]
            }
            if caption:
                content["caption"] = caption
            message = self._bot_message(chat_id, content, reply, markup)
            record = {"chat_id": chat_id, "caption": params.get("caption"), "data": bytes(data)}
            self._photos.append({**record, "message_id": message["message_id"]})
            return message

    def _send_document(self, params: Params) -> Params:
        chat_id = self._chat_id(params)
        data = params.get("document")
        if not isinstance(data, bytes):  # a file_id or URL instead of an upload is not modelled
            raise _bad("there is no document in the request")
        if not data:
            raise _bad("file must be non-empty")
        caption = self._plain_text(params, "caption")
        if utf16_len(caption) > MAX_CAPTION_LENGTH:
            raise _bad("message caption is too long")
        markup = _inline_keyboard(params.get("reply_markup"))
        file_name = getattr(data, "filename", "") or "document"
        mime_type = getattr(data, "content_type", "")
        if not mime_type or mime_type == "application/octet-stream":
            mime_type = mimetypes.guess_type(file_name)[0] or "application/octet-stream"
        thread_id = params.get("message_thread_id")
        with self._lock:
            reply = self._reply_to(chat_id, params)
            n = next(self._file_counter)
            document = {"file_id": f"stub-document-{n}", "file_unique_id": f"stub-u{n}"}
            document |= {"file_name": file_name, "mime_type": mime_type, "file_size": len(data)}
            content: Params = {"document": document}
            if thread_id is not None:
                content["message_thread_id"] = thread_id
            if caption:
                content["caption"] = caption
            message = self._bot_message(chat_id, content, reply, markup)
            self._documents.append(
                {
                    "chat_id": chat_id,
                    "file_name": file_name,
                    "mime_type": mime_type,
                    "data": bytes(data),
                    "caption": params.get("caption"),
                    "message_thread_id": thread_id,
                    "reply_to_message_id": reply["message_id"] if reply else None,
                    "message_id": message["message_id"],
                }
            )
            return message

    def _edit_message_reply_markup(self, params: Params) -> Params:
        if params.get("inline_message_id") not in (None, ""):
            raise _bad("BotApiStub does not model inline messages")
        chat_id = self._chat_id(params)
        markup = _inline_keyboard(params.get("reply_markup"))
        with self._lock:
            message = self._messages.get((chat_id, params.get("message_id")))
            if message is None:
                raise _bad("message to edit not found")
            if message["from"]["id"] != self.bot_user["id"]:
                raise _bad("message can't be edited")
            if message.get("reply_markup") == markup:
                raise _bad(_NOT_MODIFIED)
            message = copy.deepcopy(message)
            message.pop("reply_markup", None)
            if markup is not None:
                message["reply_markup"] = markup
            message["edit_date"] = int(time.time())
            self._remember(message)
            return message

    def _answer_callback_query(self, params: Params) -> bool:
        query_id = str(params.get("callback_query_id") or "")
        text = params.get("text")
        if params.get("url") not in (None, ""):
            raise _bad("BotApiStub does not model answerCallbackQuery url (games)")
        with self._lock:
            query = self._callback_queries.get(query_id)
            if query is None or query["answered"]:
                raise _bad(_QUERY_INVALID)
            if text is not None and utf16_len(str(text)) > MAX_CALLBACK_ANSWER_LENGTH:
                raise _bad("MESSAGE_TOO_LONG")
            query["answered"] = True
            self._callback_answers.append(
                {
                    "callback_query_id": query_id,
                    "text": None if text is None else str(text),
                    "show_alert": bool(params.get("show_alert")),
                    "data": query["data"],
                    "user_id": query["user_id"],
                    "chat_id": query["chat_id"],
                    "message_id": query["message_id"],
                    "time": time.time(),
                }
            )
        return True

    def _get_updates(self, params: Params) -> list[Params]:
        offset = params.get("offset")
        limit = min(max(int(params.get("limit") or 100), 1), 100)
        timeout = max(0.0, float(params.get("timeout") or 0))
        with self._cond:
            if self._webhook is not None:
                raise _ApiError(409, _WEBHOOK_ACTIVE)
            self._poll_generation += 1
            generation = self._poll_generation
            self._cond.notify_all()  # ends an older getUpdates still waiting (409 Conflict)
            if offset is not None:
                self._confirm(int(offset))
            deadline = time.monotonic() + timeout
            while True:
                if generation != self._poll_generation and not self._closing:
                    raise _ApiError(409, _CONFLICT)
                # After _confirm, everything left is due: newer updates and redeliveries.
                batch = sorted(self._queue, key=lambda q: q.update_id)[:limit]
                remaining = deadline - time.monotonic()
                if batch or self._closing or remaining <= 0:
                    break
                self._cond.wait(remaining)
            for queued in batch:
                queued.delivered = True
            return [copy.deepcopy(q.update) for q in batch]

    def _confirm(self, offset: int) -> None:
        """Forget the updates below ``offset``, except a redelivery not yet delivered."""
        kept: list[_Queued] = []
        for queued in self._queue:
            if queued.update_id < offset and (queued.delivered or not queued.force):
                self._confirmed.append(queued.update_id)
            else:
                kept.append(queued)
        self._queue = kept

    # ---------------------------------------------------------------- pushing updates

    def push_message(
        self,
        text: str | None,
        *,
        user_id: int,
        chat_id: int | None = None,
        chat_type: str = "private",
        chat_title: str | None = None,
        reply_to_bot_message_id: int | None = None,
        extra: Params | None = None,
        language_code: str | None = None,
    ) -> int:
        """Queue a message from a user; returns the update_id.

        ``bot_command`` and ``mention`` entities are attached to ``text`` (UTF-16 offsets) the way
        Telegram's clients attach them; ``text=None`` makes a message without text. A private
        chat's id is the user's; other chats need ``chat_id``. ``extra`` is merged into the
        message (e.g. ``sender_chat``, or the ``sticker`` of :meth:`push_sticker`).
        ``language_code`` (an IETF tag such as "de" or "pt-br", as the user's app sets it) goes
        into the ``from`` user; without it the user has none, as when Telegram doesn't know it.
        """
        if chat_type == "private":
            if chat_id not in (None, user_id):
                raise ValueError("a private chat's id is the user's id")
            chat: Params = {"id": user_id, "type": "private", "first_name": "User"}
        elif chat_id is None:
            raise ValueError(f"chat_id is required for a {chat_type} chat")
        else:
            chat = {"id": chat_id, "type": chat_type, "title": chat_title or "Test chat"}
        with self._cond:
            self._chats[chat["id"]] = copy.deepcopy(chat)
            message: Params = {
                "message_id": self._next_message_id(chat["id"]),
                "from": self._user(user_id, language_code),
                "chat": chat,
                "date": int(time.time()),
            }
            if text is not None:
                message["text"] = text
                if entities := auto_entities(text):
                    message["entities"] = entities
            if reply_to_bot_message_id is not None:
                quoted = self._quoted(chat["id"], reply_to_bot_message_id)
                if quoted is None:
                    raise ValueError(f"no message {reply_to_bot_message_id} in chat {chat['id']}")
                message["reply_to_message"] = quoted
            message.update(copy.deepcopy(extra or {}))
            self._remember(message)
            return self._push_update("message", message)

    def push_callback(
        self,
        user_id: int,
        *,
        chat_id: int | None = None,
        message_id: int,
        data: str,
        language_code: str | None = None,
        forged: bool = False,
    ) -> int:
        """Queue a user's press of the inline keyboard button with callback ``data`` on the bot's
        message ``message_id`` in ``chat_id`` (the user's private chat when None); returns the
        update_id. ValueError if the bot sent no such message or it has no such button, since a
        user can only press a button the message shows, unless ``forged`` (a modified client, or
        a keyboard the bot sent before it changed its buttons). The query's ``id`` is a fresh
        string; answer it once with answerCallbackQuery."""
        chat_id = user_id if chat_id is None else chat_id
        with self._cond:
            message = self._messages.get((chat_id, message_id))
            if message is None or message["from"]["id"] != self.bot_user["id"]:
                raise ValueError(f"the bot sent no message {message_id} in chat {chat_id}")
            markup = message.get("reply_markup") or {}
            buttons = [b for row in markup.get("inline_keyboard", []) for b in row]
            if not forged and not any(b.get("callback_data") == data for b in buttons):
                raise ValueError(f"message {message_id} has no button with callback_data {data!r}")
            query_id = str(next(self._callback_ids))
            query: Params = {
                "id": query_id,
                "from": self._user(user_id, language_code),
                "message": copy.deepcopy(message),
                "chat_instance": str(abs(chat_id) * 7919 + 104_729),  # stable per chat
                "data": data,
            }
            self._callback_queries[query_id] = {
                "data": data,
                "user_id": user_id,
                "chat_id": chat_id,
                "message_id": message_id,
                "answered": False,
            }
            return self._push_update("callback_query", query)

    def set_chat_admins(
        self, chat_id: int, admin_ids: Iterable[int], *, creator: int | None = None
    ) -> None:
        """Make ``admin_ids`` the administrators of group ``chat_id`` and ``creator`` its owner, for
        getChatMember (everyone else is a member). Makes the chat known: a supergroup when its id
        starts with -100, else a group, unless a user's message showed it already."""
        if chat_id > 0:
            raise ValueError("a private chat has no admins; group chat ids are negative")
        kind = "supergroup" if str(chat_id).startswith("-100") else "group"
        with self._cond:
            self._chats.setdefault(chat_id, {"id": chat_id, "type": kind, "title": "Test chat"})
            self._admins[chat_id] = (set(admin_ids), creator)

    def _push_update(self, kind: str, payload: Params) -> int:
        update = {"update_id": self._next_update_id, kind: payload}
        self._next_update_id += 1
        self._history[update["update_id"]] = copy.deepcopy(update)
        return self._queue_update(update, force=False)

    def meet(self, user_id: int) -> None:
        """Make `user_id` a user who has a private chat with the bot (the bot may write to
        them first; to a user who never wrote, sendMessage answers 403 as Telegram does)."""
        with self._cond:
            self._chats.setdefault(user_id, {"id": user_id, "type": "private"})

    def revoke_token(self) -> None:
        """Answer every request from now on 401 Unauthorized (@BotFather revoked the token)."""
        with self._cond:
            self._revoked = True
            self._cond.notify_all()

    def fail_next(self, method: str, code: int, description: str) -> None:
        """Answer the next call of ``method`` with this error instead of serving it."""
        with self._lock:
            self._failures.setdefault(method.lower(), []).append((code, description))

    def reset_update_ids(self) -> None:
        """Number the next updates from the start again, as Telegram does for a new token
        (or after a week without updates)."""
        with self._cond:
            self._next_update_id = FIRST_UPDATE_ID

    def push_sticker(self, user_id: int, chat_id: int | None = None, **chat: Any) -> int:
        """Queue a sticker (a message without text); ``chat`` as for :meth:`push_message`."""
        n = next(self._file_counter)
        sticker = {"file_id": f"stub-sticker-{n}", "file_unique_id": f"stub-u{n}", "emoji": "👍"}
        sticker |= {"type": "regular", "width": 512, "height": 512}
        sticker |= {"is_animated": False, "is_video": False}
        extra = {"sticker": sticker}
        return self.push_message(None, user_id=user_id, chat_id=chat_id, extra=extra, **chat)

    def push_photo(
        self, user_id: int, chat_id: int | None = None, *, caption: str | None = None, **chat: Any
    ) -> int:
        """Queue a photo, optionally captioned; ``chat`` as for :meth:`push_message`."""
        n = next(self._file_counter)
        size = {"width": 800, "height": 600, "file_size": 32_000}
        extra: Params = {
            "photo": [{"file_id": f"stub-in-{n}", "file_unique_id": f"stub-u{n}", **size}]
        }
        if caption:
            extra["caption"] = caption
            if entities := auto_entities(caption):
                extra["caption_entities"] = entities
        return self.push_message(None, user_id=user_id, chat_id=chat_id, extra=extra, **chat)

    def push_document(
        self,
        user_id: int,
        chat_id: int | None = None,
        *,
        caption: str | None = None,
        file_name: str = "notes.txt",
        **chat: Any,
    ) -> int:
        """Queue a document (a file sent as such), optionally captioned; ``chat`` as for
        :meth:`push_message`. Its ``mime_type`` follows from ``file_name``."""
        n = next(self._file_counter)
        mime_type = mimetypes.guess_type(file_name)[0] or "application/octet-stream"
        document = {"file_id": f"stub-in-{n}", "file_unique_id": f"stub-u{n}"}
        document |= {"file_name": file_name, "mime_type": mime_type, "file_size": 2_048}
        extra: Params = {"document": document}
        if caption:
            extra["caption"] = caption
            if entities := auto_entities(caption):
                extra["caption_entities"] = entities
        return self.push_message(None, user_id=user_id, chat_id=chat_id, extra=extra, **chat)

    def post_update(
        self,
        update_id: int,
        port: int,
        *,
        host: str = "127.0.0.1",
        secret: Any = _REGISTERED,
        timeout: float = 30,
    ) -> int:
        """POST a pushed update to the bot's webhook server at ``host:port``, on the path of the
        registered webhook URL, the way Telegram does through a reverse proxy; return the HTTP
        status. ``secret`` goes in ``X-Telegram-Bot-Api-Secret-Token`` (default: the registered
        one; None: no header). A 2xx answer confirms the update (Telegram forgets it); any other
        leaves it pending (Telegram posts it again). Blocks: inside an event loop use
        :meth:`await_post`."""
        self._refuse_in_loop("post_update")
        with self._lock:
            if self._webhook is None:
                raise RuntimeError("no webhook is set (setWebhook was not called)")
            if update_id not in self._history:
                raise KeyError(f"update {update_id} was never pushed")
            path = urlsplit(self._webhook["url"]).path or "/"
            if secret is _REGISTERED:
                secret = self._webhook["secret_token"]
            body = json.dumps(self._history[update_id], ensure_ascii=False).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            headers["X-Telegram-Bot-Api-Secret-Token"] = secret
        request = urllib.request.Request(f"http://{host}:{port}{path}", body, headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status = response.status
        except urllib.error.HTTPError as error:
            status = error.code
        if 200 <= status < 300:
            with self._cond:
                kept = [q for q in self._queue if q.update_id != update_id]
                if len(kept) < len(self._queue):
                    self._confirmed.append(update_id)
                self._queue = kept
                self._cond.notify_all()
        return status

    async def await_post(self, update_id: int, port: int, **kwargs: Any) -> int:
        """Asyncio-friendly :meth:`post_update` (posts from a worker thread)."""
        return await asyncio.to_thread(self.post_update, update_id, port, **kwargs)

    def redeliver(self, update_id: int) -> int:
        """Queue a previously pushed update again, with the same ``update_id``.

        It is delivered once even though the client's offset has moved past it (as Telegram does
        when it did not see the confirmation), then confirmed by the next offset like any other.
        """
        with self._cond:
            if update_id not in self._history:
                raise KeyError(f"update {update_id} was never pushed")
            return self._queue_update(self._history[update_id], force=True)

    def _queue_update(self, update: Params, *, force: bool) -> int:
        self._queue.append(_Queued(update["update_id"], copy.deepcopy(update), force))
        self._cond.notify_all()  # wakes a waiting getUpdates
        return int(update["update_id"])

    # ---------------------------------------------------------------- inspection

    def sent_messages(self, chat_id: int | None = None) -> list[Params]:
        """Every accepted sendMessage: its params (text, chat_id, reply_parameters, ...) plus
        ``message_id``, ``reply_to_message_id`` (resolved), ``date`` and ``received_at``
        (``time.monotonic()`` on arrival)."""
        with self._lock:
            return [
                copy.deepcopy(r) for r in self._sent if chat_id is None or r["chat_id"] == chat_id
            ]

    def sent_texts(self, chat_id: int | None = None) -> list[str]:
        return [r["text"] for r in self.sent_messages(chat_id)]

    @property
    def chat_actions(self) -> _RecordList:
        """Every accepted sendChatAction (``chat_id``, ``action``, ``time``, and
        ``received_at``: ``time.monotonic()`` on arrival, comparable with
        :meth:`sent_messages`); call it with a chat_id to filter: ``stub.chat_actions(42)``."""
        with self._lock:
            return _RecordList(copy.deepcopy(self._actions))

    @property
    def sent_documents(self) -> _RecordList:
        """Every accepted sendDocument: ``chat_id``, ``file_name`` (as uploaded), ``mime_type``,
        ``data`` (the uploaded bytes), ``caption``, ``message_thread_id``,
        ``reply_to_message_id`` (resolved) and ``message_id``; callable like
        :attr:`chat_actions` to filter by chat."""
        with self._lock:
            return _RecordList(copy.deepcopy(self._documents))

    @property
    def callback_answers(self) -> _RecordList:
        """Every accepted answerCallbackQuery: ``callback_query_id``, ``text`` (None when not
        given), ``show_alert`` (bool), the query's ``data``, ``user_id``, ``chat_id`` and
        ``message_id``, and ``time``; callable like :attr:`chat_actions` to filter by chat."""
        with self._lock:
            return _RecordList(copy.deepcopy(self._callback_answers))

    @property
    def sent_files(self) -> _RecordList:
        """Every accepted sendPhoto: ``chat_id``, ``caption``, ``data`` (the uploaded bytes) and
        ``message_id``; callable like :attr:`chat_actions` to filter by chat."""
        with self._lock:
            return _RecordList(copy.deepcopy(self._photos))

    def calls(self, method: str) -> list[Params]:
        """Params of every request to ``method`` (case-insensitive), accepted or not."""
        with self._lock:
            return [copy.deepcopy(p) for name, p in self._calls if name == method.lower()]

    @property
    def rejected(self) -> list[Params]:
        """Every error answer except 409: ``method``, ``error_code`` (400/404/429),
        ``description`` (e.g. "Bad Request: message is too long") and ``params``."""
        with self._lock:
            return copy.deepcopy(self._rejected)

    @property
    def flood_rejections(self) -> int:
        """How many 429 Too Many Requests answers were sent."""
        with self._lock:
            return self._flood_rejections

    @property
    def errors(self) -> list[str]:
        """Tracebacks of exceptions inside the stub itself (answered 500); should stay empty."""
        with self._lock:
            return list(self._errors)

    def my_commands(
        self, scope: Params | None = None, language_code: str | None = None
    ) -> list[Params]:
        """Commands registered via setMyCommands for exactly ``scope`` (default scope when None)
        and ``language_code`` (None or "" for no language); no fallback between them."""
        key = (self._scope_key(scope), language_code or "")
        with self._lock:
            return copy.deepcopy(self._commands.get(key, []))

    def description(self, language_code: str | None = None) -> str | None:
        """The text setMyDescription last set for exactly ``language_code`` (None or "" for no
        language): "" once removed, None when never set."""
        with self._lock:
            return self._descriptions.get(("description", language_code or ""))

    def short_description(self, language_code: str | None = None) -> str | None:
        """As :meth:`description`, for setMyShortDescription."""
        with self._lock:
            return self._descriptions.get(("short_description", language_code or ""))

    @property
    def webhook(self) -> Params | None:
        """What setWebhook registered (``url``, ``secret_token``, ``allowed_updates``,
        ``drop_pending_updates``, ``max_connections``), or None when no webhook is set."""
        with self._lock:
            return copy.deepcopy(self._webhook)

    @property
    def pending_update_ids(self) -> list[int]:
        """The update_ids pushed and not confirmed yet, in order."""
        with self._lock:
            return sorted(q.update_id for q in self._queue)

    @property
    def confirmed_update_ids(self) -> list[int]:
        """The update_ids confirmed by a getUpdates offset or a 2xx answer to a webhook post, in
        order (a redelivery twice)."""
        with self._lock:
            return list(self._confirmed)

    # ---------------------------------------------------------------- waiting

    def _summary(self) -> str:
        sent = [(r["chat_id"], r["text"]) for r in self._sent]
        rejected = [(r["method"], r["description"]) for r in self._rejected]
        return (
            f"sent (chat_id, text): {sent!r}; rejected: {rejected!r}; "
            f"pending updates: {len(self._queue)}; stub errors: {self._errors!r}"
        )

    def wait_until(
        self, predicate: Callable[[], bool], timeout: float = 30, what: str = "condition"
    ) -> None:
        """Block until ``predicate()`` is true (re-checked whenever the stub records something).

        Refuses to run inside a running event loop, where blocking would freeze a bot running on
        that loop: use :meth:`await_until` there.
        """
        self._refuse_in_loop("wait_*")
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

    @staticmethod
    def _refuse_in_loop(name: str) -> None:
        """A blocking helper called inside a running event loop would freeze a bot on it."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        raise RuntimeError(
            f"BotApiStub.{name} blocks; inside an event loop use the await_* variants"
        )

    def _count_sent(self, chat_id: int) -> int:
        return sum(1 for r in self._sent if r["chat_id"] == chat_id)

    def wait_for_messages(self, chat_id: int, count: int, timeout: float = 30) -> list[Params]:
        """Block until at least ``count`` messages were sent to ``chat_id`` in total; returns
        all of them (as :meth:`sent_messages`). AssertionError listing what was sent on timeout."""
        self.wait_until(
            lambda: self._count_sent(chat_id) >= count,
            timeout,
            f"{count} message(s) to chat {chat_id}",
        )
        return self.sent_messages(chat_id)

    async def await_messages(self, chat_id: int, count: int, timeout: float = 30) -> list[Params]:
        """Asyncio-friendly :meth:`wait_for_messages`."""
        await self.await_until(
            lambda: self._count_sent(chat_id) >= count,
            timeout,
            f"{count} message(s) to chat {chat_id}",
        )
        return self.sent_messages(chat_id)

    def wait_for_calls(self, method: str, count: int = 1, timeout: float = 30) -> list[Params]:
        """Block until ``method`` was requested at least ``count`` times; returns their params."""

        def called() -> bool:
            return sum(1 for name, _ in self._calls if name == method.lower()) >= count

        self.wait_until(called, timeout, f"{count} call(s) to {method}")
        return self.calls(method)
