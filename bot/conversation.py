"""Conversation turns in and out of storage, for both front ends.

A human's message is stored before the bot answers; so is the reply it is owed, if it
is meant for the bot (storage.PendingReply). The reply is stored as a bot turn, and
the debt cleared, in one short transaction once it is sent: a crash in between leaves
the debt, which the next start pays (bot/answers.py).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from bot.preferences import language_for
from model import FALLBACK_REPLY
from storage import (
    DEFAULT_TEMPERATURE,
    Database,
    PendingReply,
    add_message,
    add_pending_reply,
    delete_pending_reply,
    get_chat,
    get_or_create_chat,
    get_or_create_user,
    get_pending_reply,
    get_user,
    last_message_id,
    pending_replies,
    recent_turns,
    reply_chance,
    request_forget,
    unasked_owed,
)

MAX_MESSAGE_UTF16 = 4096  # Telegram's limit on a message's text, in UTF-16 code units
CONTEXT_TURNS = 8  # the chat's last turns the model reads before answering
# A group's reply chance picks no more messages while this many unasked replies wait: a
# group gets 20 messages a minute, and the asked ones must not wait long behind them.
MAX_UNASKED_OWED = 5


@dataclass(frozen=True)
class Incoming:
    """A human's text message, as both front ends describe it."""

    chat_id: int
    chat_type: str  # one of storage.CHAT_TYPES
    user_id: int
    text: str  # "" for a message that only mentions the bot: answered, not stored
    user_name: str | None = None
    chat_title: str | None = None
    message_id: int | None = None  # Telegram's message id in the chat: stored once
    update_id: int | None = None  # Telegram's update id (for the logs)
    thread_id: int | None = None  # the forum topic it was written in, if any
    app_language: str | None = None  # the author's Telegram app's language_code
    # Groups: a uniform draw in [0, 1); a message not meant for the bot is answered when it
    # falls below the group's reply chance (None: never).
    draw: float | None = None


@dataclass(frozen=True)
class Owed:
    """What answering a pending reply needs."""

    chat_type: str
    temperature: float  # the asker's
    turns: list[str]  # the chat's last turns up to the message, oldest first
    thread_id: int | None  # the forum topic to answer in
    language: str  # the asker's (bot.i18n), for an apology
    asked: bool  # False: the group's reply chance picked it (no apology if it fails)
    created_at: dt.datetime  # when it was stored


@dataclass(frozen=True)
class Forget:
    """A /forget, started in its place among the messages that arrived with it."""

    user_id: int
    update_id: int
    app_language: str | None = None  # the sender's Telegram app's language_code


@dataclass(frozen=True)
class Recorded:
    """What storing a batch did."""

    # per /forget's update id: the language to answer it in, read before their settings
    # went, and how many messages of theirs the forget deletes
    forgotten: dict[int, tuple[str, int]]
    owed: list[tuple[int, int]]  # (chat id, message id) of the messages now owed a reply


def record_incoming(db: Database, items: Sequence[tuple[Incoming, bool] | Forget]) -> Recorded:
    """Store (message, meant for the bot) pairs and start /forgets, in their order, in one
    transaction; each message meant for the bot, or picked by its group's reply chance,
    is stored with the reply it is owed. A message stored already (Telegram sent it
    again) adds nothing.

    A /forget only marks its sender here (storage.forgetting.request_forget): what they
    stored before it goes, what follows it stays. The deleting, batch by batch, is left to
    the /forget's handler (bot.commands.forget), so it holds up no other chat.
    """
    recorded = Recorded({}, [])
    with db.begin() as session:
        for item in items:
            if isinstance(item, Forget):
                user = get_user(session, item.user_id)
                language = language_for(user, item.app_language)
                written = request_forget(session, item.user_id)
                recorded.forgotten[item.update_id] = (language, written)
                continue
            incoming, addressed = item
            stored = _store(session, incoming)
            asked = addressed
            if not addressed and stored and incoming.draw is not None:
                addressed = _picked(session, incoming)
            if addressed and stored is not False:
                recorded.owed.append((incoming.chat_id, incoming.message_id))
                until = stored or last_message_id(session, incoming.chat_id)
                add_pending_reply(
                    session,
                    incoming.chat_id,
                    incoming.message_id,
                    incoming.user_id,
                    until,
                    incoming.thread_id,
                    asked=asked,
                )
    return recorded


def _picked(session: Session, incoming: Incoming) -> bool:
    """Does the group's reply chance pick this message? Not while MAX_UNASKED_OWED
    unasked replies wait in the chat (a flood is answered less)."""
    if incoming.draw >= reply_chance(session, incoming.chat_id):
        return False
    return unasked_owed(session, incoming.chat_id) < MAX_UNASKED_OWED


def _store(session: Session, incoming: Incoming) -> int | bool | None:
    """The stored message's id; None when there is no text to store; False for a repeat."""
    get_or_create_chat(session, incoming.chat_id, incoming.chat_type, incoming.chat_title)
    get_or_create_user(session, incoming.user_id, incoming.user_name, incoming.app_language)
    if not incoming.text:
        return None
    stored = add_message(
        session,
        chat_id=incoming.chat_id,
        user_id=incoming.user_id,
        text=incoming.text,
        telegram_message_id=incoming.message_id,
        update_id=incoming.update_id,
    )
    return False if stored is None else stored.id


def read_owed(db: Database, chat_id: int, message_id: int, max_bytes: int) -> Owed | None:
    """What answering this message needs; None if no reply is owed to it (not meant for
    the bot, or answered already)."""
    with db.read() as session:
        owed = get_pending_reply(session, chat_id, message_id)
        if owed is None:
            return None
        chat, user = get_chat(session, chat_id), get_user(session, owed.user_id)
        turns = _context(session, chat_id, max_bytes, until_id=owed.context_until)
        return Owed(
            chat.type if chat else "private",
            user.temperature if user else DEFAULT_TEMPERATURE,
            turns,
            owed.thread_id,
            language_for(user, None),
            owed.asked,
            owed.created_at,
        )


def settle_owed(
    db: Database, chat_id: int, message_id: int, answer: str | None, sent_id: int | None
) -> None:
    """The reply to this message was sent (stored as the bot's turn when it is `answer`),
    or given up (`answer` None): it is owed no more."""
    with db.begin() as session:
        if answer is not None:
            add_message(session, chat_id=chat_id, text=answer, telegram_message_id=sent_id)
        delete_pending_reply(session, chat_id, message_id)


def drop_owed(db: Database, keys: Sequence[tuple[int, int]]) -> None:
    """These (chat id, message id) are owed no reply any more (given up)."""
    with db.begin() as session:
        for chat_id, message_id in keys:
            delete_pending_reply(session, chat_id, message_id)


def owed_replies(db: Database) -> list[PendingReply]:
    """Every reply still owed, oldest first."""
    with db.read() as session:
        return pending_replies(session)


def record_and_read(db: Database, incoming: Incoming, max_bytes: int) -> tuple[float, list[str]]:
    """Store the message and read the chat's context for the reply, in one transaction
    (the terminal, where nothing arrives twice). Returns (the author's reply temperature,
    the chat's last turns up to `max_bytes`, the new message included)."""
    with db.begin() as session:
        _store(session, incoming)
        temperature = get_or_create_user(session, incoming.user_id).temperature
        return temperature, _context(session, incoming.chat_id, max_bytes)


def _context(session: Session, chat_id: int, max_bytes: int, until_id: int | None = None):
    turns = recent_turns(
        session, chat_id, max_turns=CONTEXT_TURNS, max_bytes=max_bytes, until_id=until_id
    )
    return [text for text, _ in turns]


def record_bot_turn(db: Database, chat_id: int, text: str, message_id: int | None = None) -> None:
    """Store the bot's reply in the chat."""
    with db.begin() as session:
        add_message(session, chat_id=chat_id, text=text, telegram_message_id=message_id)


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def telegram_text(text: str, limit: int = MAX_MESSAGE_UTF16) -> str:
    """`text` as Telegram accepts it: trimmed, at most `limit` UTF-16 units, never empty.

    A cut never splits a surrogate pair (an emoji stays whole or goes).
    """
    text = text.strip()
    if utf16_len(text) > limit:
        units = text.encode("utf-16-le")[: 2 * limit]
        text = units.decode("utf-16-le", errors="ignore").rstrip()  # drops a half pair
    return text or FALLBACK_REPLY
