"""What the bot stores and asks: plain functions on a `Session`.

None of them commits; the caller owns the unit of work (`with db.begin() as session:`).

Inserts that may race with another writer (a redelivered update, a user's first two
messages arriving together) use INSERT ... ON CONFLICT DO NOTHING on SQLite and
PostgreSQL, so the database itself decides, even for a writer that does not hold the
write lock; on other databases they check, then insert, which is safe inside
`Database.begin()` on SQLite and PostgreSQL (one writer at a time) and may raise
IntegrityError elsewhere under a true race.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from storage.models import (
    LANGUAGE_CODE_CHARS,
    MAX_TEMPERATURE,
    MIN_TEMPERATURE,
    NAME_CHARS,
    Chat,
    Message,
    PendingReply,
    User,
    utcnow,
)

Transcript = list[tuple[str, bool]]  # one chat's turns, oldest first: (text, from a human)


_UPSERT_INSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}
# PostgreSQL's text types cannot hold U+0000 (SQLite's can): there it is stored as the
# replacement character, so a reply the model wrote with a zero byte is still stored.
NUL, NUL_STORED_AS = "\x00", "\ufffd"
M = TypeVar("M", User, Chat, Message, PendingReply)


def stored_text(session: Session, text: str) -> str:
    """`text` as this database can store it: unchanged, except for NUL on PostgreSQL."""
    if NUL in text and session.get_bind().dialect.name == "postgresql":
        return text.replace(NUL, NUL_STORED_AS)
    return text


def insert_unless_taken(
    session: Session, model: type[M], values: dict[str, Any], *key: str
) -> M | None:
    """Insert one row unless the unique column(s) `key` already hold its values.

    Returns the new object, or None when the row existed (or a racing writer won).
    """
    make_insert = _UPSERT_INSERTS.get(session.get_bind().dialect.name)
    if make_insert is None:  # other databases: check, then insert
        taken = select(model).where(*(getattr(model, k) == values[k] for k in key))
        if session.scalars(taken).first() is not None:
            return None
        obj = model(**values)
        session.add(obj)
        session.flush()
        return obj
    stmt = make_insert(model).values(values).on_conflict_do_nothing(index_elements=list(key))
    return session.scalars(stmt.returning(model)).first()


# -- users ------------------------------------------------------------------


def get_user(session: Session, user_id: int) -> User | None:
    """The user with this Telegram id, if the bot has met them."""
    return session.get(User, user_id)


def get_or_create_user(
    session: Session, user_id: int, name: str | None = None, app_language: str | None = None
) -> User:
    """The user with this id, created with default settings on first sight.

    A given `name` or `app_language` (their Telegram app's language_code), each cut to
    its column's width (PostgreSQL refuses longer ones), replaces the stored one (people
    rename themselves and change their phone's language).
    """
    if app_language is not None:
        app_language = stored_text(session, app_language[:LANGUAGE_CODE_CHARS])
    if name is not None:
        name = stored_text(session, name[:NAME_CHARS])
    user = session.get(User, user_id)
    if user is None:
        user = insert_unless_taken(session, User, {"id": user_id, "name": name}, "id")
        user = user or session.get_one(User, user_id)  # created meanwhile by another writer
    if name is not None and user.name != name:
        user.name = name
    if app_language is not None and user.app_language != app_language:
        user.app_language = app_language
    return user


def set_temperature(session: Session, user_id: int, value: float) -> None:
    """Set the user's reply temperature (creating the user if needed)."""
    if not (math.isfinite(value) and MIN_TEMPERATURE <= value <= MAX_TEMPERATURE):
        raise ValueError(
            f"temperature must be between {MIN_TEMPERATURE} and {MAX_TEMPERATURE}, got {value}"
        )
    get_or_create_user(session, user_id).temperature = float(value)


def set_learning(session: Session, user_id: int, on: bool) -> None:
    """Allow or forbid learning from the user's messages (creating the user if needed).

    A change is stamped (User.consent_at): a training run that read their text while it
    was allowed withdraws it, even if they turned learning back on before it ended.
    """
    user = get_or_create_user(session, user_id)
    if user.learning != bool(on):
        user.learning = bool(on)
        user.consent_at = utcnow()


# -- chats and messages -------------------------------------------------------


def get_chat(session: Session, chat_id: int) -> Chat | None:
    return session.get(Chat, chat_id)


def get_or_create_chat(session: Session, chat_id: int, type: str, title: str | None = None) -> Chat:
    """The chat with this id, created on first sight; type and a given title (cut to its
    column's width) are updated."""
    title = None if title is None else stored_text(session, title[:NAME_CHARS])
    chat = session.get(Chat, chat_id)
    if chat is None:
        values = {"id": chat_id, "type": type, "title": title}
        chat = insert_unless_taken(session, Chat, values, "id")
        chat = chat or session.get_one(Chat, chat_id)  # created meanwhile by another writer
    if chat.type != type:
        chat.type = type
    if title is not None and chat.title != title:
        chat.title = title
    return chat


def add_message(
    session: Session,
    *,
    chat_id: int,
    text: str,
    user_id: int | None = None,
    telegram_message_id: int | None = None,
    update_id: int | None = None,
) -> Message | None:
    """Store one turn: a human's (`user_id`) or the bot's (`user_id=None`).

    The text is stored as `stored_text` gives it. The chat and the user must exist
    already (`get_or_create_*`). Returns None and
    stores nothing when the chat holds a message with this `telegram_message_id`
    already: Telegram redelivered the update.
    """
    values = {
        "chat_id": chat_id,
        "user_id": user_id,
        "from_bot": user_id is None,
        "text": stored_text(session, text),
        "telegram_message_id": telegram_message_id,
        "update_id": update_id,
    }
    if telegram_message_id is None:
        message = Message(**values)
        session.add(message)
        session.flush()
    else:
        message = insert_unless_taken(session, Message, values, "chat_id", "telegram_message_id")
    if message is not None:
        tally_turns(session, chat_id=chat_id, user_id=user_id, n=1)
    return message


def tally_turns(session: Session, *, chat_id: int, user_id: int | None, n: int) -> None:
    """Keep the counts `count_messages` reads in step with `n` turns stored (negative:
    deleted) in `chat_id`, by `user_id` (None: the bot).

    One UPDATE ... SET x = x + n, so concurrent writers (PostgreSQL) add up right.
    """
    if user_id is None:
        stmt = update(Chat).where(Chat.id == chat_id)
        stmt = stmt.values(bot_message_count=Chat.bot_message_count + n)
    else:
        stmt = update(User).where(User.id == user_id)
        stmt = stmt.values(message_count=User.message_count + n)
    session.execute(stmt)


def recent_turns(
    session: Session,
    chat_id: int,
    max_turns: int = 8,
    max_bytes: int = 1024,
    until_id: int | None = None,
) -> Transcript:
    """The chat's last turns, oldest first, as (text, from_human) pairs: the bot's, and the
    humans' up to message id `until_id` (those after it came later than the message being
    answered).

    At most `max_turns` turns whose texts total at most `max_bytes` UTF-8 bytes,
    except that the newest turn is always included, however long.
    """
    if max_turns <= 0:
        return []
    stmt = (
        select(Message.text, Message.from_bot)
        .outerjoin(User, Message.user_id == User.id)
        .where(Message.chat_id == chat_id)
        # A /forget in progress: what its sender wrote up to the mark is no one's context.
        .where(or_(User.forget_until_id.is_(None), Message.id > User.forget_until_id))
    )
    if until_id is not None:
        stmt = stmt.where((Message.id <= until_id) | Message.from_bot.is_(True))
    rows = session.execute(stmt.order_by(Message.id.desc()).limit(max_turns)).all()
    turns: Transcript = []
    size = 0
    for text, from_bot in rows:
        size += len(text.encode("utf-8"))
        if turns and size > max_bytes:
            break
        turns.append((text, not from_bot))
    turns.reverse()
    return turns


def training_transcripts(session: Session, since_message_id: int = 0) -> list[Transcript]:
    """Every chat's turns after `since_message_id`, oldest first: all of that history at
    once, for tests and tools (a retraining run reads storage.training_data's bounded
    sample instead).

    Messages of users who turned learning off, who are being forgotten, or who are gone,
    are left out entirely (not even as context). The bot's turns are kept as (text, False).
    Chats left with no human turn are omitted. Chats come in order of their first
    message.
    """
    stmt = learnable(select(Message.chat_id, Message.text, Message.from_bot))
    rows = session.execute(stmt.where(Message.id > since_message_id).order_by(Message.id)).all()
    chats: defaultdict[int, Transcript] = defaultdict(list)
    for chat_id, text, from_bot in rows:
        chats[chat_id].append((text, not from_bot))
    return [turns for turns in chats.values() if any(human for _, human in turns)]


def learnable(stmt: Select) -> Select:
    """`stmt` over messages narrowed to the bot's turns and the turns of users who let
    the bot learn from them."""
    return stmt.outerjoin(User, Message.user_id == User.id).where(
        or_(Message.from_bot.is_(True), learning_allowed())
    )


def trainable(stmt: Select) -> Select:
    """`stmt` over messages narrowed to human messages whose authors allow learning."""
    return stmt.join(User, Message.user_id == User.id).where(
        Message.from_bot.is_(False), learning_allowed()
    )


def learning_allowed() -> ColumnElement[bool]:
    """The users whose stored text the bot may learn from: learning on, and no /forget
    in progress (their old text is still being deleted)."""
    return User.learning.is_(True) & User.forget_until_id.is_(None)


def last_message_id(session: Session, chat_id: int | None = None) -> int:
    """The newest message's id (in `chat_id`, if given), 0 when there are none."""
    stmt = select(func.max(Message.id))
    if chat_id is not None:
        stmt = stmt.where(Message.chat_id == chat_id)
    return session.scalar(stmt) or 0
