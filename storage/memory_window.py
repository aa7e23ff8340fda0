"""What the chat memory is counted from: the newest human messages the bot may learn from.

Bounded by bytes of text, newest first, so the read costs the same however long the
history grows: the query walks the primary key backwards and stops at the budget.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import Message, User

FETCH_ROWS = 1000  # rows per round trip while walking back


def memory_window(session: Session, max_bytes: int) -> tuple[list[tuple[int, int, str]], int]:
    """((chat id, user id, text) oldest first, the newest message id seen) for the newest
    human messages holding at most `max_bytes` bytes of UTF-8 text, of users with learning
    on (opted-out and forgotten users' text is never in it)."""
    stmt = (
        select(Message.id, Message.chat_id, Message.user_id, Message.text)
        .join(User, Message.user_id == User.id)
        .where(Message.from_bot.is_(False), User.learning.is_(True))
        .order_by(Message.id.desc())
        .execution_options(yield_per=FETCH_ROWS)
    )
    rows, total, newest = [], 0, 0
    result = session.execute(stmt)
    try:
        for message_id, chat_id, user_id, text in result:
            size = len(text.encode("utf-8"))
            if total + size > max_bytes:
                break
            newest = max(newest, message_id)
            total += size
            rows.append((chat_id, user_id, text))
    finally:
        result.close()
    rows.reverse()
    return rows, newest
