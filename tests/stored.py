"""Storing turns in tests the way the bot's handlers do, and a store that fails once."""

from __future__ import annotations

import sqlite3

from bot import conversation
from storage import Message, add_message, get_or_create_chat, get_or_create_user


def say(session, chat_id: int, user_id: int | None, text: str, **kw) -> Message | None:
    """Store a turn, creating its chat (a group if the id is negative) and user first."""
    get_or_create_chat(session, chat_id, "group" if chat_id < 0 else "private")
    if user_id is not None:
        get_or_create_user(session, user_id)
    return add_message(session, chat_id=chat_id, user_id=user_id, text=text, **kw)


def fail_first_store(monkeypatch) -> list[int]:
    """Make the inbox's first store of incoming updates fail (a disk error), and later ones
    work; returns the sizes of the batches it was asked to store, in order."""
    real = conversation.record_incoming
    calls: list[int] = []

    def broken_once(db, items):
        calls.append(len(items))
        if len(calls) == 1:
            raise sqlite3.OperationalError("disk I/O error")
        return real(db, items)

    monkeypatch.setattr("bot.inbox.record_incoming", broken_once)
    return calls
