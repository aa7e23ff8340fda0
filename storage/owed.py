"""The replies the bot owes: written with the message, deleted once the answer is sent
or given up (bot.conversation). Plain functions on a `Session`, like storage.repository."""

from __future__ import annotations

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from storage.models import PendingReply
from storage.repository import insert_unless_taken


def add_pending_reply(
    session: Session,
    chat_id: int,
    telegram_message_id: int,
    user_id: int,
    context_until: int,
    thread_id: int | None = None,
    asked: bool = True,
) -> None:
    """Note that the bot owes an answer to this message (once: a redelivery adds nothing);
    `asked` False: nobody asked, the group's reply chance picked it."""
    values = {
        "chat_id": chat_id,
        "telegram_message_id": telegram_message_id,
        "user_id": user_id,
        "context_until": context_until,
        "thread_id": thread_id,
        "asked": asked,
    }
    insert_unless_taken(session, PendingReply, values, "chat_id", "telegram_message_id")


def get_pending_reply(
    session: Session, chat_id: int, telegram_message_id: int
) -> PendingReply | None:
    return session.get(PendingReply, (chat_id, telegram_message_id))


def unasked_owed(session: Session, chat_id: int) -> int:
    """How many replies the chat is owed that nobody asked for (reply-chance picks)."""
    stmt = select(func.count()).where(
        PendingReply.chat_id == chat_id, PendingReply.asked.is_(False)
    )
    return session.scalar(stmt) or 0


def pending_replies(session: Session) -> list[PendingReply]:
    """Every answer still owed, oldest first (ties in message order: the same on every
    backend)."""
    order = (PendingReply.created_at, PendingReply.chat_id, PendingReply.telegram_message_id)
    stmt = select(PendingReply).order_by(*order)
    return list(session.scalars(stmt))


def delete_pending_reply(session: Session, chat_id: int, telegram_message_id: int) -> bool:
    """The answer is no longer owed (sent, or given up); False if it was not owed."""
    stmt = delete(PendingReply).where(
        PendingReply.chat_id == chat_id, PendingReply.telegram_message_id == telegram_message_id
    )
    return session.execute(stmt).rowcount > 0
