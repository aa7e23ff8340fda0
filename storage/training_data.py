"""What a retraining run reads: a bounded sample of the stored chats, never all history.

A run reads the chats' newest turns after the last published run (newest first, until a
byte budget is spent) and a replay sample of older chats: pieces of consecutive turns
that start at seeded random message ids, each found by two indexed lookups. Both stream,
so reading costs the same at 10k and at 3M stored messages, and memory holds only the
budget.

Turns of users who turned learning off, or who are gone, are left out entirely (not even
as context); the bot's turns are kept as context. Pieces without a human turn are
dropped. Plain functions on a `Session`; nothing is written.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from sqlalchemy import Row, Select, select
from sqlalchemy.orm import Session

from storage.models import Message, User
from storage.repository import Transcript, learnable, learning_allowed

STREAM_ROWS = 2_000  # rows fetched at a time while reading the newest turns
USER_BATCH = 500  # user ids per IN (...) list (SQLite allows 999 bound parameters)
ATTEMPTS_PER_PIECE = 4  # replay anchors tried per piece wanted, before giving up
MISSES_IN_A_ROW = 256  # anchors in a row that start no piece: the old history is used up


Consent = tuple[dt.datetime, dt.datetime | None]
NOT_FOUND: Consent = (dt.datetime.min.replace(tzinfo=dt.UTC), None)  # matches no user row


@dataclass
class TrainingSample:
    """The chats one run trains and judges on."""

    new: list[Transcript]  # each chat's turns after the last published run, oldest first
    replay: list[Transcript]  # pieces of older chats, oldest first within each
    # The authors of the human turns read (the run's contributors), each with what
    # identifies their consent as read: (User.created_at, User.consent_at).
    authors: dict[int, Consent]
    new_bytes: int  # UTF-8 bytes of text read (each turn + 1 for its end)
    replay_bytes: int
    new_chats: list[int]  # the chat of each of `new`
    replay_chats: list[int]  # ... and of each of `replay`

    @property
    def user_ids(self) -> set[int]:
        return set(self.authors)


def _turns() -> Select:
    return learnable(
        select(Message.id, Message.chat_id, Message.user_id, Message.text, Message.from_bot)
    )


def turn_bytes(text: str) -> int:
    return len(text.encode("utf-8")) + 1


def read_training_sample(
    session: Session,
    *,
    since_message_id: int,
    new_bytes: int,
    sample_bytes: int,
    seed: int,
    piece_turns: int = 16,
) -> TrainingSample:
    """The newest turns after `since_message_id` (up to `new_bytes`), and a replay sample
    of older turns filling the sample up to `sample_bytes`.

    Replay pieces come from messages older than every new turn read, so nothing is read
    twice. The same database and `seed` give the same sample. Call it in one read
    transaction (`db.read()`): the authors' consent is read in the same snapshot.
    """
    new, new_chats, oldest, used, authors = newest_transcripts(session, since_message_id, new_bytes)
    replay, replay_chats, replay_used, replay_authors = replay_pieces(
        session, oldest, sample_bytes - used, seed, piece_turns
    )
    read = authors | replay_authors
    found = consent_of(session, read)
    # An author whose consent was not found as their text was read (a database without
    # one snapshot per read) never matches: their text counts as withdrawn.
    consent = {user: found.get(user, NOT_FOUND) for user in read}
    return TrainingSample(new, replay, consent, used, replay_used, new_chats, replay_chats)


def newest_transcripts(
    session: Session, since_message_id: int, max_bytes: int
) -> tuple[list[Transcript], list[int], int, int, set[int]]:
    """(chats' newest turns after `since_message_id`, each one's chat id, the oldest
    message id read (or the first id after `since_message_id` when all of them fit),
    bytes read, their authors).

    Reads newest first until `max_bytes` are spent; a turn that crosses the budget is the
    last one read. Chats come in order of their oldest turn read.
    """
    stmt = _turns().where(Message.id > since_message_id).order_by(Message.id.desc())
    rows: list[Row] = []
    used, full = 0, False
    result = session.execute(stmt, execution_options={"yield_per": STREAM_ROWS})
    try:
        for row in result:
            rows.append(row)
            used += turn_bytes(row.text)
            if used >= max_bytes:
                full = True
                break
    finally:
        result.close()
    oldest = rows[-1].id if full else since_message_id + 1
    rows.reverse()
    transcripts, chats, authors = _group(rows)
    return transcripts, chats, oldest, used, authors


def replay_pieces(
    session: Session, below_id: int, max_bytes: int, seed: int, piece_turns: int = 16
) -> tuple[list[Transcript], list[int], int, set[int]]:
    """(pieces of up to `piece_turns` consecutive turns of one chat, older than message
    `below_id`, until `max_bytes` are spent; each one's chat id; bytes read; their
    authors).

    Each piece starts at a message drawn uniformly (seeded) among those stored; a piece
    stops short of a message another piece took. Gives up after a bounded number of
    anchors, or MISSES_IN_A_ROW in a row that start none (a history smaller than the
    budget, or whose authors mostly opted out, yields less).
    """
    if below_id <= 1 or max_bytes <= 0:
        return [], [], 0, set()
    rng = random.Random(seed)
    wanted = max(1, max_bytes // 256)  # pieces, if each held ~256 bytes
    taken: set[int] = set()
    pieces: list[list[Row]] = []
    used = misses = 0
    for _ in range(ATTEMPTS_PER_PIECE * wanted + MISSES_IN_A_ROW):
        if used >= max_bytes or misses >= MISSES_IN_A_ROW:
            break
        # An anchor on a deleted id, or on a turn that may not be learnt from, is a miss,
        # not the next message: every learnable stored message is equally likely to start
        # a piece, however the ids around it were thinned.
        anchor = rng.randrange(1, below_id)
        chat_id = session.scalar(learnable(select(Message.chat_id).where(Message.id == anchor)))
        if chat_id is None or anchor in taken:
            misses += 1
            continue
        stmt = (
            _turns()
            .where(Message.chat_id == chat_id)
            .where(Message.id >= anchor, Message.id < below_id)
            .order_by(Message.id)
            .limit(piece_turns)
        )
        piece = []
        for row in session.execute(stmt):
            if row.id in taken:
                break
            piece.append(row)
        if not any(not row.from_bot for row in piece):
            misses += 1
            continue
        misses = 0
        taken.update(row.id for row in piece)
        pieces.append(piece)
        used += sum(turn_bytes(row.text) for row in piece)
    transcripts, chats, authors = [], [], set()
    for piece in pieces:
        grouped, where, who = _group(piece)
        transcripts += grouped
        chats += where
        authors |= who
    return transcripts, chats, used, authors


def _group(rows: Iterable[Row]) -> tuple[list[Transcript], list[int], set[int]]:
    """Rows (oldest first) as one transcript per chat, each one's chat id, and the human
    authors."""
    chats: dict[int, Transcript] = {}
    authors: set[int] = set()
    for row in rows:
        chats.setdefault(row.chat_id, []).append((row.text, not row.from_bot))
        if not row.from_bot:
            authors.add(row.user_id)
    kept = [(turns, chat) for chat, turns in chats.items() if any(h for _, h in turns)]
    return [turns for turns, _ in kept], [chat for _, chat in kept], authors


def consent_of(session: Session, user_ids: Collection[int]) -> dict[int, Consent]:
    """Each of `user_ids` who may be learnt from, with (created_at, consent_at)."""
    ids = sorted(user_ids)
    found: dict[int, Consent] = {}
    for start in range(0, len(ids), USER_BATCH):
        stmt = select(User.id, User.created_at, User.consent_at).where(
            User.id.in_(ids[start : start + USER_BATCH]), learning_allowed()
        )
        found.update({row.id: (row.created_at, row.consent_at) for row in session.execute(stmt)})
    return found


def withdrawn_users(session: Session, authors: dict[int, Consent]) -> set[int]:
    """Those of `authors` (TrainingSample.authors) who withdrew their text since it was
    read: gone or being forgotten (/forget), learning off, learning turned off and on
    again, or back as a new user (forgotten, then wrote again).

    Primary-key lookups in batches: its cost grows with the run's contributors, never
    with the stored messages, so it may run inside the publish's write transaction.
    """
    now = consent_of(session, authors)
    return {user for user, read in authors.items() if now.get(user) != read}
