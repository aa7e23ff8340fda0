"""How much is stored, for /status, the metrics and the retraining schedule: read from
the kept counts (User.message_count, Chat.bot_message_count, which
storage.repository.tally_turns keeps in step) or from indexed ranges of message ids,
never by scanning every message. Plain functions on a `Session`.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, ColumnElement, cast, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from storage.models import Chat, Message, User
from storage.repository import learning_allowed, trainable


def total(column: InstrumentedAttribute[int]) -> ColumnElement[int]:
    """SUM(column), 0 over no rows, as an integer (PostgreSQL sums bigints as numeric,
    which would come back as Decimal)."""
    return cast(func.coalesce(func.sum(column), 0), BigInteger)


def count_messages(session: Session) -> dict[str, int]:
    """How much is stored: messages (`total`, `human`, `bot`), `users` and `chats`.

    Read from the kept counts (User.message_count, Chat.bot_message_count): the cost
    grows with the users and chats, not with the messages.
    """
    users, human = session.execute(select(func.count(), total(User.message_count))).one()
    chats, bot = session.execute(select(func.count(), total(Chat.bot_message_count))).one()
    return {"total": human + bot, "human": human, "bot": bot, "users": users, "chats": chats}


def count_human_messages_since(session: Session, message_id: int) -> int:
    """How many human messages have an id above `message_id`.

    From the start (0, before any run) the kept counts answer; otherwise an indexed range
    over the messages since then.
    """
    if message_id <= 0:
        return session.scalar(select(total(User.message_count))) or 0
    stmt = select(func.count()).where(Message.id > message_id, Message.from_bot.is_(False))
    return session.scalar(stmt) or 0


def count_trainable_messages(session: Session, since_message_id: int = 0) -> int:
    """Human messages the bot may learn from (`learning_allowed` for their authors), with
    an id above `since_message_id`.

    From 0: the sum of those authors' kept counts; otherwise an indexed range count,
    cheap while `since_message_id` is recent.
    """
    if since_message_id <= 0:
        stmt = select(total(User.message_count)).where(learning_allowed())
        return session.scalar(stmt)
    stmt = trainable(select(func.count()).select_from(Message))
    return session.scalar(stmt.where(Message.id > since_message_id)) or 0
