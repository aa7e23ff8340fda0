"""Storing turns in tests the way the bot's handlers do."""

from __future__ import annotations

from storage import Message, add_message, get_or_create_chat, get_or_create_user


def say(session, chat_id: int, user_id: int | None, text: str, **kw) -> Message | None:
    """Store a turn, creating its chat (a group if the id is negative) and user first."""
    get_or_create_chat(session, chat_id, "group" if chat_id < 0 else "private")
    if user_id is not None:
        get_or_create_user(session, user_id)
    return add_message(session, chat_id=chat_id, user_id=user_id, text=text, **kw)
