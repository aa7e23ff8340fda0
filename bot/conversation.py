"""Conversation turns in and out of storage, for both front ends.

A human's message is stored before the bot answers (nothing is lost if the reply
fails); the reply is stored afterwards as a bot turn, in its own short transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from model import FALLBACK_REPLY
from storage import Database, add_message, get_or_create_chat, get_or_create_user, recent_turns

MAX_MESSAGE_UTF16 = 4096  # Telegram's limit on a message's text, in UTF-16 code units
CONTEXT_TURNS = 8  # the chat's last turns the model reads before answering


@dataclass(frozen=True)
class Incoming:
    """A human's text message, as both front ends describe it."""

    chat_id: int
    chat_type: str  # one of storage.CHAT_TYPES
    user_id: int
    text: str
    user_name: str | None = None
    chat_title: str | None = None
    message_id: int | None = None  # Telegram's message id in the chat
    update_id: int | None = None  # Telegram's update id: a redelivery is stored once


def record_human_turn(db: Database, incoming: Incoming) -> float | None:
    """Store the message; return the author's reply temperature.

    None means the update was stored already (Telegram redelivered it): do not answer again.
    """
    with db.begin() as session:
        return _store_human_turn(session, incoming)


def record_and_read(
    db: Database, incoming: Incoming, max_bytes: int
) -> tuple[float, list[str]] | None:
    """Store the message and read the chat's context for the reply, in one transaction.

    Returns (the author's reply temperature, the chat's last turns up to `max_bytes`,
    the new message included); None for a redelivered update, as record_human_turn.
    """
    with db.begin() as session:
        temperature = _store_human_turn(session, incoming)
        if temperature is None:
            return None
        return temperature, _context(session, incoming.chat_id, max_bytes)


def read_context(db: Database, chat_id: int, max_bytes: int) -> list[str]:
    """The chat's last turns, oldest first, up to `max_bytes` of text."""
    with db.read() as session:
        return _context(session, chat_id, max_bytes)


def _context(session: Session, chat_id: int, max_bytes: int) -> list[str]:
    turns = recent_turns(session, chat_id, max_turns=CONTEXT_TURNS, max_bytes=max_bytes)
    return [text for text, _ in turns]


def _store_human_turn(session: Session, incoming: Incoming) -> float | None:
    get_or_create_chat(session, incoming.chat_id, incoming.chat_type, incoming.chat_title)
    user = get_or_create_user(session, incoming.user_id, incoming.user_name)
    stored = add_message(
        session,
        chat_id=incoming.chat_id,
        user_id=incoming.user_id,
        text=incoming.text,
        telegram_message_id=incoming.message_id,
        update_id=incoming.update_id,
    )
    return None if stored is None else user.temperature


def user_temperature(
    db: Database,
    user_id: int,
    name: str | None = None,
    chat: tuple[int, str, str | None] | None = None,
) -> float:
    """The user's reply temperature (the user, and `chat` as (id, type, title), are created
    with defaults if new, so the reply can be stored in that chat)."""
    with db.begin() as session:
        if chat is not None:
            get_or_create_chat(session, *chat)
        return get_or_create_user(session, user_id, name).temperature


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
