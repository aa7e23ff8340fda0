"""What the chat memory is counted from: the newest human messages the bot may learn from.

Bounded by bytes of text, newest first, so the read costs the same however long the
history grows: the query walks the primary key backwards and stops at the budget. A
user's identical messages are read once, and no user fills more than MAX_USER_SHARE of
the window, so one person's flood cannot push everyone else out of it; the walk reads
at most MAX_READ windows' worth of text either way.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.models import Message
from storage.repository import trainable

FETCH_ROWS = 1000  # rows per round trip while walking back
MAX_USER_SHARE = 0.1  # of the window's bytes, for any one user
MAX_READ = 5  # the walk stops after reading this many windows' worth of text


def memory_window(session: Session, max_bytes: int) -> tuple[list[tuple[int, int, str]], int]:
    """((chat id, user id, text) oldest first, the newest message id when it was read)
    for the newest human messages holding at most `max_bytes` bytes of UTF-8 text, of
    users with learning on (opted-out and forgotten users' text is never in it)."""
    newest = session.scalar(select(func.max(Message.id))) or 0
    stmt = trainable(select(Message.chat_id, Message.user_id, Message.text))
    stmt = stmt.order_by(Message.id.desc()).execution_options(yield_per=FETCH_ROWS)
    per_user_cap = max(int(max_bytes * MAX_USER_SHARE), 1)
    rows, total, read, per_user, seen = [], 0, 0, {}, set()
    result = session.execute(stmt)
    try:
        for chat_id, user_id, text in result:
            size = len(text.encode("utf-8"))
            read += size
            if read > MAX_READ * max_bytes:  # a flood or a few users: bounded all the same
                break
            if (user_id, text) in seen or per_user.get(user_id, 0) + size > per_user_cap:
                continue
            if total + size > max_bytes:
                break
            seen.add((user_id, text))
            per_user[user_id] = per_user.get(user_id, 0) + size
            total += size
            rows.append((chat_id, user_id, text))
    finally:
        result.close()
    rows.reverse()
    return rows, newest
