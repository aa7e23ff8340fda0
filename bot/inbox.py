"""The inbox: conversation messages stored before Telegram is told they arrived.

Long polling acknowledges a batch of updates when it asks for the next one (the
getUpdates offset). `PollingBot.get_updates` therefore stores every conversation
message of a batch, in Telegram's order and in one transaction, before it hands the
batch on: an update is acknowledged only once its message is stored, whatever happens
to the process afterwards, and a chat is stored in order however its updates are
handled later. A message meant for the bot is stored with the reply it is owed
(storage.PendingReply); the handler answers it, and `bot.answers` answers at start what
a crash left owed. A batch that cannot be stored (a locked or broken database) is not
handed on, so it is not acknowledged, and Telegram sends it again.

Who wrote a message: its author, or, for an anonymous group admin or a channel posting
in a group, the chat it was sent as (Telegram puts one placeholder account in `from`
for all of those).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Callable, Sequence

from telegram import Bot, Message, Update
from telegram.constants import MessageEntityType
from telegram.error import InvalidToken
from telegram.ext import ExtBot, filters

from bot.conversation import Forget, Incoming, record_incoming
from storage import GROUP_CHAT_TYPES, Database

log = logging.getLogger(__name__)

RETRY_PAUSE = 1.0  # seconds before polling again after a refused token or a failed store
MAX_RETRY_PAUSE = 30.0  # the longest wait between tries to store a batch
# What the bot treats as conversation: new text messages, and captions of photos and
# files (not commands, edits or channel posts), in private chats and groups. The handlers
# use the same filter.
CONVERSATION = (
    filters.UpdateType.MESSAGE
    & (filters.ChatType.PRIVATE | filters.ChatType.GROUPS)
    & (filters.TEXT | filters.CAPTION)
    & ~filters.COMMAND
)


class PollingBot(ExtBot):
    """The bot, whose getUpdates stores a batch's conversation before returning it."""

    __slots__ = ("_inbox",)

    def __init__(self, *args, inbox: Inbox, **kwargs):
        super().__init__(*args, **kwargs)
        self._inbox = inbox

    async def get_updates(self, *args, **kwargs) -> tuple[Update, ...]:
        try:
            updates = await super().get_updates(*args, **kwargs)
            self._inbox.last_poll = time.monotonic()  # Telegram answered: polling works
        except InvalidToken as exc:
            # PTB would end its polling loop here and leave the process up, deaf. Instead
            # the application stops (bot.app.run then exits with one line).
            self._inbox.refused(exc)
            await asyncio.sleep(RETRY_PAUSE)  # no hammering while the loop winds down
            return ()
        if not updates or not self._inbox.accepting():
            # Stopping: PTB's last call only confirms what came before; what it returns is
            # not handled, so it is not stored either (Telegram sends it again).
            return updates
        try:
            await self._inbox.store(updates, self)
        except Exception as exc:
            # Not returned, so not acknowledged: Telegram sends the batch again.
            self._inbox.failures += 1
            pause = min(RETRY_PAUSE * 2**self._inbox.failures, MAX_RETRY_PAUSE)
            log.warning(
                "could not store %d update(s), they stay unacknowledged; trying again in "
                "%.0f s: %s",
                len(updates),
                pause,
                str(exc).splitlines()[0],
            )
            await asyncio.sleep(pause)
            return ()
        self._inbox.failures = 0
        return updates


class Inbox:
    """Where PollingBot stores what arrives: the database, once the bot has opened it.

    `on_refused` is called (once) when Telegram refuses the token while polling.
    """

    def __init__(self) -> None:
        self.db: Database | None = None
        self.refusal: InvalidToken | None = None
        self.on_refused: Callable[[], None] = lambda: None
        self.accepting: Callable[[], bool] = lambda: True  # False once polling stops
        self.failures = 0  # batches in a row that could not be stored
        self.last_poll: float | None = None  # time.monotonic() of the last getUpdates answer
        # (chat id, message id) of stored messages whose handler has not run yet
        self.queued: set[tuple[int, int]] = set()
        # update id -> (the language to answer in, their messages it deletes) of a /forget
        # started as it arrived; its handler finishes it (bot.commands.forget)
        self.forgotten: dict[int, tuple[str, int]] = {}

    def refused(self, exc: InvalidToken) -> None:
        if self.refusal is None:
            self.refusal = exc
            self.on_refused()

    async def store(self, updates: Sequence[Update], bot: Bot) -> None:
        """Store the batch's conversation in order; a /forget in it takes effect in that
        order too (so what its sender writes after it is kept)."""
        if self.db is None:
            raise RuntimeError("updates arrived before the database was open")
        items: list[tuple[Incoming, bool] | Forget] = []
        for update in updates:
            if CONVERSATION.check_update(update):
                items.append(received(update, bot))
            elif (forget := forget_of(update, bot)) is not None:
                items.append(forget)
        if not items:
            return
        recorded = await asyncio.to_thread(record_incoming, self.db, items)
        self.forgotten.update(recorded.forgotten)
        self.queued.update(recorded.owed)


def forget_of(update: Update, bot: Bot) -> Forget | None:
    """The /forget in `update` from a user's own account (not anonymous), if it is one."""
    message = update.message
    if message is None or not message.text or message.sender_chat is not None:
        return None
    if message.from_user is None:
        return None
    name, _, addressee = message.text.split(maxsplit=1)[0].partition("@")
    if name.lower() != "/forget" or (addressee and addressee.lower() != bot.username.lower()):
        return None
    return Forget(message.from_user.id, update.update_id, message.from_user.language_code)


def received(update: Update, bot: Bot) -> tuple[Incoming, bool]:
    """A conversation update as (the message to store, whether it is meant for the bot)."""
    message = update.effective_message
    chat = message.chat
    sender = message.sender_chat or (chat if message.from_user is None else None)
    if sender is not None:  # an anonymous admin (the group itself) or a channel
        author, name = sender.id, sender.title
    else:
        author, name = message.from_user.id, message.from_user.full_name
    addressed, text = addressed_text(message, bot)
    group = chat.type in GROUP_CHAT_TYPES
    incoming = Incoming(
        chat_id=chat.id,
        chat_type=chat.type,
        chat_title=chat.title,
        user_id=author,
        user_name=name,
        text=text,
        message_id=message.message_id,
        update_id=update.update_id,
        thread_id=message.message_thread_id if message.is_topic_message else None,
        app_language=message.from_user.language_code if sender is None else None,
        draw=random.random() if group and not addressed else None,
    )
    return incoming, addressed


def addressed_text(message: Message, bot: Bot) -> tuple[bool, str]:
    """(is the message meant for the bot?, its text without the bot's @mention).

    Private chats always talk to the bot; in groups a message must mention the bot or
    reply to one of its messages. A photo's or file's caption is read as its text.
    """
    if message.text is not None:
        text, entities = message.text, message.entities
    else:
        text, entities = message.caption or "", message.caption_entities
    username = (bot.username or "").lower()
    spans = []  # (start, end) in UTF-16 code units
    for entity in entities:
        if entity.type == MessageEntityType.MENTION:
            mention = _utf16_slice(text, entity.offset, entity.offset + entity.length)
            if username and mention[1:].lower() == username:
                spans.append((entity.offset, entity.offset + entity.length))
        elif entity.type == MessageEntityType.TEXT_MENTION and entity.user.id == bot.id:
            spans.append((entity.offset, entity.offset + entity.length))
    mentioned = bool(spans)
    if spans:
        text = _tidy(_utf16_remove(text, spans))
    elif username and _bare_mention(username).search(text):
        mentioned = True  # a client that sent no entities
        text = _tidy(_bare_mention(username).sub("", text))

    if message.chat.type not in GROUP_CHAT_TYPES:
        return True, text
    replied = message.reply_to_message
    author = replied.from_user if replied is not None else None
    to_bot = author is not None and author.id == bot.id
    return mentioned or to_bot, text


def _bare_mention(username: str) -> re.Pattern:
    """@username as a word of its own: not inside an address such as "x@charbot.org"."""
    return re.compile(rf"(?<![\w@.])@{re.escape(username)}\b(?![.@]\w)", re.IGNORECASE)


def _tidy(text: str) -> str:
    """Text whose mention was cut out: no doubled spaces, no leading "," or ":"."""
    return re.sub(r"^[\s,:;]+", "", re.sub(r"[ \t]{2,}", " ", text)).strip()


def _utf16_slice(text: str, start: int, end: int) -> str:
    return text.encode("utf-16-le")[2 * start : 2 * end].decode("utf-16-le", errors="ignore")


def _utf16_remove(text: str, spans: list[tuple[int, int]]) -> str:
    units = text.encode("utf-16-le")
    for start, end in sorted(spans, reverse=True):
        units = units[: 2 * start] + units[2 * end :]
    return units.decode("utf-16-le", errors="ignore")
