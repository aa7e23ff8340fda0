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

The stub is one class, :class:`BotApiStub`, assembled from one module per job: ``stub_wire``
(error answers, request decoding, the HTTP server), ``stub_content`` (UTF-16 lengths, entities,
inline keyboards), ``stub_updates`` (getUpdates, the webhook and the update queue),
``stub_bot_methods`` and ``stub_messages`` (the other Bot API methods), ``stub_driver`` (what a
test pushes) and ``stub_observe`` (what a test reads back and waits for). This module keeps the
state they share, the method table, and the dispatch of a request to its method.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any

from stub_bot_methods import BotMethods
from stub_content import auto_entities, utf16_len
from stub_driver import StubDriver
from stub_messages import MessageMethods
from stub_observe import StubObserver
from stub_updates import FIRST_UPDATE_ID, Queued, UpdateFeed
from stub_wire import ApiError, Params, StubHandler, StubServer, parse_request

__all__ = ["BotApiStub", "auto_entities", "utf16_len"]

DEFAULT_BOT_ID = 7_000_000_001
DEFAULT_BOT_USERNAME = "charbot_test_bot"
DEFAULT_TOKEN = f"{DEFAULT_BOT_ID}:AAStubTokenForCharbotEndToEndTests"
FIRST_CALLBACK_QUERY_ID = 4_380_000_000_000_000_001


class BotApiStub(UpdateFeed, BotMethods, MessageMethods, StubDriver, StubObserver):
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
        self._queue: list[Queued] = []  # delivered or not, until an offset confirms them
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

        self._server = StubServer(("127.0.0.1", 0), StubHandler)
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

    def _serve(self, handler: StubHandler) -> None:
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
            err = ApiError(404, "Not Found") if m is None else ApiError(401, "Unauthorized")
            self._respond(handler, err.code, err.payload())
        else:
            content_type = handler.headers.get("Content-Type", "")
            self._respond(handler, *self._dispatch(m[2], content_type, body))

    @staticmethod
    def _respond(handler: StubHandler, status: int, payload: Params) -> None:
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
            params = parse_request(content_type, body)  # a request it can't read is its bug
            with self._cond:
                self._calls.append((method.lower(), copy.deepcopy(params)))
                self._cond.notify_all()
            if func is None:
                raise ApiError(404, "Not Found: method not found")
            with self._lock:
                failures = self._failures.get(method.lower())
                failure = failures.pop(0) if failures else None
            if failure is not None:
                raise ApiError(*failure)
            if method.lower() == "sendmessage":
                self._check_flood()
            return 200, {"ok": True, "result": func(params)}
        except ApiError as err:
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
                raise ApiError(429, description, {"retry_after": self.retry_after})
            times.append(now)
