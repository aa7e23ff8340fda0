"""/forget: one person's messages deleted in short transactions, so that every other
chat's writes get in between (one transaction for 100k messages holds SQLite's write
lock for a second).

1. `request_forget` (one transaction): the user is marked (User.forget_until_id = the
   newest message id), their settings back to the defaults, the replies owed to them
   dropped. From here nothing trains on their text, counts it into the chat memory or
   reads it as a reply's context (storage.repository.learning_allowed, recent_turns).
2. What they stored up to the mark goes, BATCH_ROWS messages per transaction found
   through the indexes: their own messages in every chat, then everything in their
   private chat (Telegram gives it the user's id), the bot's turns included. The kept
   counts (storage.repository.tally_turns) move in the same transactions.
3. Once nothing is left up to the mark (in the transaction that finds so): the mark is
   cleared, and their private chat and user row go. Someone who wrote again after the
   mark keeps what they wrote, and the chat that holds it; someone who changed a setting
   meanwhile (a /learn off from a group) keeps it: they stay as a fresh user, as if they
   had done so after the forget was done (what /forget's answer promises).

In groups the others' messages and the bot's turns stay. A crash between transactions
loses nothing that should stay: the mark is stored, and `finish_pending_forgets` (at
the bot's start) does steps 2 and 3 for every marked user.
"""

from __future__ import annotations

import time
from collections import Counter

from sqlalchemy import ColumnElement, Row, delete, exists, select
from sqlalchemy.orm import Session

from storage.database import Database
from storage.models import DEFAULT_TEMPERATURE, Chat, Message, PendingReply, User, utcnow
from storage.repository import get_or_create_user, last_message_id, tally_turns

BATCH_ROWS = 2_000  # messages deleted per transaction: some 25 ms of the write lock
# The write lock stays free this long between batches. A writer kept waiting by SQLite's
# busy handler retries at growing intervals (up to 100 ms) and gets in only if one of its
# tries finds the lock free: batches take a small share of the time, so one soon does.
# (PostgreSQL queues the advisory lock's waiters and grants it to them in turn.)
PAUSE_S = 0.05


def forget_user(
    db: Database, user_id: int, *, batch_rows: int = BATCH_ROWS, pause_s: float = PAUSE_S
) -> int:
    """Delete the user's messages, their private chat and their settings; return how many
    of their own messages went.

    Opens its own transactions (steps 1 to 3 above); call it outside any.
    """
    with db.begin() as session:
        request_forget(session, user_id)
    return finish_forget(db, user_id, batch_rows=batch_rows, pause_s=pause_s)


def finish_pending_forgets(
    db: Database, *, batch_rows: int = BATCH_ROWS, pause_s: float = PAUSE_S
) -> int:
    """Finish every /forget a crash interrupted (steps 2 and 3); how many users it took."""
    with db.read() as session:
        marked = list(session.scalars(select(User.id).where(User.forget_until_id.is_not(None))))
    for user_id in marked:
        finish_forget(db, user_id, batch_rows=batch_rows, pause_s=pause_s)
    return len(marked)


def request_forget(session: Session, user_id: int) -> int:
    """Step 1: mark the user as being forgotten up to the newest stored message, reset
    their settings and drop the replies owed to them; returns how many messages of theirs
    are stored (all up to the mark: what the forget deletes of their own)."""
    user = get_or_create_user(session, user_id)
    written = user.message_count
    user.forget_until_id = last_message_id(session)  # the mark keeps them out of training
    # Their settings go back to the defaults now, so what they set during the deleting
    # (a /learn off from a group) is theirs and stays.
    user.learning = True
    user.temperature = DEFAULT_TEMPERATURE
    user.language = None
    user.name = user.app_language = None  # written again with their next message
    user.consent_at = utcnow()  # a training run that read their text withdraws it
    owed = (PendingReply.user_id == user_id) | (PendingReply.chat_id == user_id)
    session.execute(delete(PendingReply).where(owed))
    return written


def finish_forget(
    db: Database, user_id: int, *, batch_rows: int = BATCH_ROWS, pause_s: float = PAUSE_S
) -> int:
    """Steps 2 and 3 for a user `request_forget` marked, one transaction per batch; how
    many of their own messages went (0 for a user not marked)."""
    own = 0
    while True:
        with db.begin() as session:
            deleted = delete_next_batch(session, user_id, batch_rows)
        if deleted is None:
            return own
        own += deleted
        time.sleep(pause_s)


def delete_next_batch(session: Session, user_id: int, batch_rows: int) -> int | None:
    """Delete the next `batch_rows` messages of a marked user (step 2), or, when none is
    left up to the mark, their private chat and user row (step 3).

    Returns how many of their own messages went, or None once the user is done (or was
    never marked).
    """
    mark = session.scalar(select(User.forget_until_id).where(User.id == user_id))
    if mark is None:
        return None
    for theirs in (Message.user_id == user_id, Message.chat_id == user_id):
        stmt = select(Message.id, Message.user_id).where(theirs, Message.id <= mark)
        rows = session.execute(stmt.order_by(Message.id).limit(batch_rows)).all()
        if rows:
            return _delete(session, user_id, theirs, rows)
    _drop_rows(session, user_id)
    return None


def _delete(session: Session, user_id: int, theirs: ColumnElement[bool], rows: list[Row]) -> int:
    """Delete `rows`, the oldest messages matching `theirs`, keeping the counts in step;
    how many of them `user_id` wrote."""
    upto = rows[-1].id
    own = 0
    for author in Counter(row.user_id for row in rows):
        by = Message.user_id.is_(None) if author is None else Message.user_id == author
        # Counted from what this transaction deleted, not from what it selected.
        n = session.execute(delete(Message).where(theirs, by, Message.id <= upto)).rowcount
        tally_turns(session, chat_id=user_id, user_id=author, n=-n)  # bot turns: their chat
        own += n if author == user_id else 0
    return own


def _drop_rows(session: Session, user_id: int) -> None:
    """Step 3: the mark is cleared; the private chat goes unless written in after the mark,
    and the user row unless they wrote after it or changed a setting meanwhile."""
    if not session.scalar(select(exists().where(Message.chat_id == user_id))):
        session.execute(delete(Chat).where(Chat.id == user_id))
    user = session.get_one(User, user_id)
    wrote = session.scalar(select(exists().where(Message.user_id == user_id)))
    default = user.learning and user.temperature == DEFAULT_TEMPERATURE and user.language is None
    if wrote or not default:
        user.forget_until_id = None
    else:
        session.delete(user)
