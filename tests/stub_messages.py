"""The Bot API methods that send or change messages: sendChatAction, sendMessage, sendPhoto,
sendDocument, editMessageReplyMarkup and answerCallbackQuery, and the message bookkeeping they
share with the test-facing pushes. The rules they follow are listed in :mod:`telegram_stub`'s
docstring."""

from __future__ import annotations

import copy
import mimetypes
import re
import time
from typing import Any

from stub_content import inline_keyboard, utf16_len
from stub_wire import ApiError, Params, bad

MAX_MESSAGE_LENGTH = 4096  # UTF-16 code units, after trimming
MAX_CAPTION_LENGTH = 1024
MAX_CALLBACK_ANSWER_LENGTH = 200  # UTF-16 code units

_CHAT_ACTION_RE = re.compile(
    r"typing|upload_photo|record_video|upload_video|record_voice|upload_voice|upload_document"
    r"|choose_sticker|find_location|record_video_note|upload_video_note"
)
_QUERY_INVALID = "query is too old and response timeout expired or query ID is invalid"
_NOT_MODIFIED = (
    "message is not modified: specified new message content and reply markup are exactly the "
    "same as a current content and reply markup of the message"
)
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")


class MessageMethods:
    """Chats, users and messages as the stub keeps them, and the methods that send, for
    :class:`BotApiStub`.

    It keeps no state of its own: the attributes it uses (``_lock``, ``_cond``, ...) are set
    up in ``BotApiStub.__init__``.
    """

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
            raise bad("chat_id is empty")
        if not isinstance(chat_id, int) or isinstance(chat_id, bool):
            raise bad("chat not found")  # @channel usernames are not modelled
        with self._lock:
            if chat_id > 0 and chat_id not in self._chats:  # a user who never wrote to the bot
                raise ApiError(403, "Forbidden: bot can't initiate conversation with a user")
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
            raise bad("message to be replied not found")
        return quoted

    def _plain_text(self, params: Params, field: str) -> str:
        if params.get("parse_mode") not in (None, ""):
            raise bad("BotApiStub does not model parse_mode; only plain text is supported")
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

    def _user(self, user_id: int, language_code: str | None = None) -> Params:
        """A user object as Telegram shows it in ``from`` (the bot itself for its own id)."""
        if user_id == self.bot_user["id"]:
            return copy.deepcopy(self.bot_user)
        user: Params = {"id": user_id, "is_bot": False, "first_name": "User"}
        if language_code is not None:
            user["language_code"] = language_code
        return user

    # ---------------------------------------------------------------- Bot API methods

    def _send_chat_action(self, params: Params) -> bool:
        chat_id = self._chat_id(params)
        if not _CHAT_ACTION_RE.fullmatch(str(params.get("action"))):
            raise bad("wrong parameter action in request")
        with self._lock:
            record = {"chat_id": chat_id, "time": time.time(), "received_at": time.monotonic()}
            self._actions.append({**copy.deepcopy(params), **record})
        return True

    def _send_message(self, params: Params) -> Params:
        chat_id = self._chat_id(params)
        text = self._plain_text(params, "text")
        if not text:
            raise bad("message text is empty")
        if utf16_len(text) > MAX_MESSAGE_LENGTH:
            raise bad("message is too long")
        markup = inline_keyboard(params.get("reply_markup"))
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

    def _upload(self, params: Params, field: str) -> bytes:
        """The file uploaded as `field` (a file_id or URL instead of an upload is not modelled)."""
        data = params.get(field)
        if not isinstance(data, bytes):
            raise bad(f"there is no {field} in the request")
        return data

    def _caption(self, params: Params) -> str:
        """A file's caption: plain text of at most MAX_CAPTION_LENGTH UTF-16 code units."""
        caption = self._plain_text(params, "caption")
        if utf16_len(caption) > MAX_CAPTION_LENGTH:
            raise bad("message caption is too long")
        return caption

    def _send_photo(self, params: Params) -> Params:
        chat_id = self._chat_id(params)
        data = self._upload(params, "photo")
        if not (data.startswith(_IMAGE_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")):
            raise bad("IMAGE_PROCESS_FAILED")
        caption = self._caption(params)
        markup = inline_keyboard(params.get("reply_markup"))
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
        data = self._upload(params, "document")
        if not data:
            raise bad("file must be non-empty")
        caption = self._caption(params)
        markup = inline_keyboard(params.get("reply_markup"))
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
            raise bad("BotApiStub does not model inline messages")
        chat_id = self._chat_id(params)
        markup = inline_keyboard(params.get("reply_markup"))
        with self._lock:
            message = self._messages.get((chat_id, params.get("message_id")))
            if message is None:
                raise bad("message to edit not found")
            if message["from"]["id"] != self.bot_user["id"]:
                raise bad("message can't be edited")
            if message.get("reply_markup") == markup:
                raise bad(_NOT_MODIFIED)
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
            raise bad("BotApiStub does not model answerCallbackQuery url (games)")
        with self._lock:
            query = self._callback_queries.get(query_id)
            if query is None or query["answered"]:
                raise bad(_QUERY_INVALID)
            if text is not None and utf16_len(str(text)) > MAX_CALLBACK_ANSWER_LENGTH:
                raise bad("MESSAGE_TOO_LONG")
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
