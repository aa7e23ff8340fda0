"""What a test makes happen on Telegram's side: users' messages, stickers, photos, documents
and button presses, group admins, users the bot may write to first, and failures to answer."""

from __future__ import annotations

import copy
import mimetypes
import time
from collections.abc import Iterable
from typing import Any

from stub_content import auto_entities
from stub_wire import Params


class StubDriver:
    """The test-facing ``push_*`` and set-up methods of :class:`BotApiStub`.

    It keeps no state of its own: the attributes it uses (``_lock``, ``_cond``, ...) are set
    up in ``BotApiStub.__init__``.
    """

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
        return self._push_file(user_id, chat_id, extra, caption, chat)

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
        return self._push_file(user_id, chat_id, {"document": document}, caption, chat)

    def _push_file(
        self, user_id: int, chat_id: int | None, extra: Params, caption: str | None, chat: Params
    ) -> int:
        """Queue a message carrying the file in `extra`, with `caption` and its entities."""
        if caption:
            extra["caption"] = caption
            if entities := auto_entities(caption):
                extra["caption_entities"] = entities
        return self.push_message(None, user_id=user_id, chat_id=chat_id, extra=extra, **chat)

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

    # ---------------------------------------------------------------- the world around the bot

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
