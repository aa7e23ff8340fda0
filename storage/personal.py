"""Settings people choose beyond temperature and learning, and what is stored about one
person (/mydata): plain functions on a `Session`, like storage.repository."""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import (
    LANGUAGE_CODE_CHARS,
    MAX_REPLY_CHANCE,
    MIN_REPLY_CHANCE,
    Chat,
    Message,
    User,
)
from storage.repository import get_or_create_user


def set_language(session: Session, user_id: int, language: str | None) -> None:
    """The language the bot writes its own messages to the user in; None: their app's."""
    if language is not None and not 0 < len(language) <= LANGUAGE_CODE_CHARS:
        raise ValueError(f"not a language code: {language!r}")
    get_or_create_user(session, user_id).language = language


def reply_chance(session: Session, chat_id: int) -> float:
    """The chat's chance of answering a message not meant for the bot (groups)."""
    chance = session.scalar(select(Chat.reply_chance).where(Chat.id == chat_id))
    return MIN_REPLY_CHANCE if chance is None else chance


def set_reply_chance(session: Session, chat_id: int, value: float) -> None:
    """Set a stored chat's reply chance (MIN_REPLY_CHANCE..MAX_REPLY_CHANCE)."""
    if not (math.isfinite(value) and MIN_REPLY_CHANCE <= value <= MAX_REPLY_CHANCE):
        raise ValueError(
            f"reply chance must be between {MIN_REPLY_CHANCE} and {MAX_REPLY_CHANCE}, got {value}"
        )
    chat = session.get(Chat, chat_id)
    if chat is None:
        raise LookupError(f"no chat {chat_id}")
    chat.reply_chance = float(value)


def personal_data(session: Session, user_id: int) -> dict[str, Any]:
    """Everything stored about one person, as `forget_user` would delete it: their
    settings, every message they wrote (with the chat it is in) and the bot's turns in
    their private chat, oldest first. Settings None if the bot never met them."""
    user = session.get(User, user_id)
    settings = None
    if user is not None:
        settings = {
            "telegram_id": user.id,
            "name": user.name,
            "temperature": user.temperature,
            "learning": user.learning,
            "language": user.language,
            "app_language": user.app_language,
            "first_seen": user.created_at.isoformat(timespec="seconds"),
        }
    rows = session.execute(
        select(
            Message.chat_id,
            Chat.type,
            Chat.title,
            Message.from_bot,
            Message.text,
            Message.created_at,
        )
        .join(Chat, Message.chat_id == Chat.id)
        .where((Message.user_id == user_id) | (Message.chat_id == user_id))
        .order_by(Message.id)
    ).all()
    messages = [
        {
            "chat_id": chat_id,
            "chat_type": chat_type,
            "chat_title": title,
            "from": "bot" if from_bot else "you",
            "text": text,
            "sent_at": created_at.isoformat(timespec="seconds"),
        }
        for chat_id, chat_type, title, from_bot, text, created_at in rows
    ]
    return {"user": settings, "messages": messages}
