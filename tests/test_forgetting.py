"""storage.forgetting: /forget in short transactions. Everything of the user goes, nothing
of anyone else; other writers get in between the batches; a forget cut short is finished
at the next start; what the user writes meanwhile stays."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import insert, text
from stored import say

import storage.forgetting
from storage import (
    DEFAULT_TEMPERATURE,
    Database,
    Message,
    add_message,
    add_pending_reply,
    count_messages,
    count_trainable_messages,
    get_or_create_user,
    get_user,
    pending_replies,
    recent_turns,
    set_learning,
    set_temperature,
    training_transcripts,
)
from storage.forgetting import (
    finish_forget,
    finish_pending_forgets,
    forget_user,
    request_forget,
)
from storage.models import utcnow
from storage.repository import tally_turns

GROUP = -100123
ANN, BOB = 11, 22
ANN_MESSAGES = 5_000  # of which ANN_PRIVATE in her private chat, the rest in the group
ANN_PRIVATE = 2_000
BATCH = 500


def rows(db: Database, sql: str) -> list[tuple]:
    with db.read() as session:
        return [tuple(r) for r in session.execute(text(sql))]


def fill(db: Database) -> None:
    """Ann: ANN_MESSAGES messages, the bot's answers in her chat and the group, and replies
    owed to her; Bob: a few messages of his own in the group and his chat."""
    with db.begin() as session:
        for chat in (ANN, GROUP):
            say(session, chat, ANN, f"ann's first in {chat}")
        ann, bot = [], {ANN: 0, GROUP: 0}
        for i in range(ANN_MESSAGES - 2):  # many rows at once, counted as add_message would
            chat = ANN if i < ANN_PRIVATE - 1 else GROUP
            ann.append(turn(chat, ANN, f"ann {i}", i))
            if i % 100 == 0:
                ann.append(turn(chat, None, f"bot to ann {i}"))
                bot[chat] += 1
        session.execute(insert(Message), ann)
        tally_turns(session, chat_id=ANN, user_id=ANN, n=ANN_MESSAGES - 2)
        for chat, n in bot.items():
            tally_turns(session, chat_id=chat, user_id=None, n=n)
        say(session, GROUP, BOB, "bob in group")
        say(session, BOB, BOB, "bob private")
        say(session, BOB, None, "bot to bob")
        add_pending_reply(session, ANN, 1, ANN, 1)
        add_pending_reply(session, GROUP, 2_500, ANN, 1)
        add_pending_reply(session, BOB, 1, BOB, 1)
        set_temperature(session, ANN, 1.5)


def turn(chat_id: int, user_id: int | None, text: str, telegram_id: int | None = None) -> dict:
    return dict(
        chat_id=chat_id,
        user_id=user_id,
        from_bot=user_id is None,
        text=text,
        telegram_message_id=telegram_id,
        created_at=utcnow(),
    )


def assert_only_bob_and_the_group_remain(db: Database) -> None:
    assert rows(db, f"SELECT count(*) FROM messages WHERE user_id = {ANN}") == [(0,)]
    assert rows(db, f"SELECT count(*) FROM messages WHERE chat_id = {ANN}") == [(0,)]
    assert rows(db, "SELECT id FROM users") == [(BOB,)]
    assert rows(db, "SELECT id FROM chats ORDER BY id") == [(GROUP,), (BOB,)]
    # Bob's three turns, and the bot's answers to Ann in the group
    bot_in_group = (ANN_MESSAGES - ANN_PRIVATE) // 100
    assert rows(db, f"SELECT count(*) FROM messages WHERE chat_id = {GROUP} AND from_bot") == [
        (bot_in_group,)
    ]
    assert rows(db, "SELECT count(*) FROM messages") == [(3 + bot_in_group,)]
    with db.read() as session:
        assert [p.chat_id for p in pending_replies(session)] == [BOB]
        assert count_messages(session) == dict(
            total=3 + bot_in_group, human=2, bot=1 + bot_in_group, users=1, chats=2
        )


def test_forgetting_a_heavy_user_deletes_all_of_theirs_and_nothing_else(db: Database):
    fill(db)
    assert forget_user(db, ANN, batch_rows=BATCH, pause_s=0) == ANN_MESSAGES
    assert_only_bob_and_the_group_remain(db)
    assert forget_user(db, ANN, batch_rows=BATCH, pause_s=0) == 0  # nothing left
    with db.begin() as session:  # coming back: a new user with the defaults
        assert get_or_create_user(session, ANN).temperature == DEFAULT_TEMPERATURE


def test_other_writers_get_in_between_the_batches(db: Database):
    fill(db)
    waits: list[float] = []
    started, stop = threading.Event(), threading.Event()

    def bob_keeps_writing() -> None:
        n = 0
        while not stop.is_set():
            begun = time.monotonic()
            with db.begin() as session:
                add_message(session, chat_id=GROUP, user_id=BOB, text=f"bob {n}")
            waits.append(time.monotonic() - begun)
            started.set()
            n += 1
            time.sleep(0.002)

    writer = threading.Thread(target=bob_keeps_writing)
    writer.start()
    try:
        assert started.wait(10)
        during = len(waits)
        begun = time.monotonic()
        assert forget_user(db, ANN, batch_rows=BATCH) == ANN_MESSAGES
        took = time.monotonic() - begun
        during = waits[during:]
    finally:
        stop.set()
        writer.join()
    # Bob wrote all along, each write waiting at most about one batch, never the whole forget
    assert len(during) >= 5
    assert max(during) < took / 4
    bob = rows(db, f"SELECT count(*) FROM messages WHERE user_id = {BOB}")[0][0]
    assert bob == 2 + len(waits)
    with db.read() as session:
        assert count_messages(session)["human"] == bob


def test_a_forget_cut_short_is_finished_at_the_next_start(db: Database, monkeypatch):
    fill(db)
    delete = storage.forgetting._delete
    batches = []

    def crash_in_the_third_batch(*args):
        batches.append(1)
        if len(batches) == 3:
            raise KeyboardInterrupt("the process stops")
        return delete(*args)

    monkeypatch.setattr(storage.forgetting, "_delete", crash_in_the_third_batch)
    with pytest.raises(KeyboardInterrupt):
        forget_user(db, ANN, batch_rows=BATCH, pause_s=0)
    monkeypatch.undo()

    # Half done: two batches went, the third was rolled back; her text is already out of
    # training and nothing is owed to her.
    assert rows(db, f"SELECT count(*) FROM messages WHERE user_id = {ANN}") == [
        (ANN_MESSAGES - 2 * BATCH,)
    ]
    with db.read() as session:
        assert get_user(session, ANN).forget_until_id is not None  # marked
        assert count_trainable_messages(session) == 2  # Bob's
        humans = [t for chat in training_transcripts(session) for t, human in chat if human]
        assert humans == ["bob in group", "bob private"]
        assert [p.chat_id for p in pending_replies(session)] == [BOB]
        assert count_messages(session)["human"] == ANN_MESSAGES - 2 * BATCH + 2

    assert finish_pending_forgets(db, batch_rows=BATCH, pause_s=0) == 1
    assert_only_bob_and_the_group_remain(db)
    assert finish_pending_forgets(db, batch_rows=BATCH, pause_s=0) == 0


def test_what_the_user_writes_while_being_forgotten_stays(db: Database):
    with db.begin() as session:
        say(session, ANN, ANN, "old private", telegram_message_id=1)
        say(session, ANN, None, "old bot answer")
        say(session, GROUP, ANN, "old in group", telegram_message_id=1)
        set_temperature(session, ANN, 1.5)
    with db.begin() as session:
        request_forget(session, ANN)
    with db.begin() as session:  # she writes again before the deleting is done
        say(session, ANN, ANN, "new private", telegram_message_id=2)
        say(session, ANN, None, "new bot answer")
        say(session, GROUP, ANN, "new in group", telegram_message_id=2)
        add_pending_reply(session, ANN, 2, ANN, 1)
        set_learning(session, ANN, True)  # /learn on: no training on what is being deleted
    with db.read() as session:
        assert count_trainable_messages(session) == 0
        assert training_transcripts(session) == []
    assert finish_forget(db, ANN, batch_rows=1, pause_s=0) == 2
    assert rows(db, "SELECT text FROM messages ORDER BY id") == [
        ("new private",),
        ("new bot answer",),
        ("new in group",),
    ]
    with db.read() as session:
        ann = get_user(session, ANN)
        assert ann.forget_until_id is None
        fresh = (DEFAULT_TEMPERATURE, True, 2)  # as a new user, with what she wrote since
        assert (ann.temperature, ann.learning, ann.message_count) == fresh
        assert [p.telegram_message_id for p in pending_replies(session)] == [2]
        assert count_messages(session) == dict(total=3, human=2, bot=1, users=1, chats=2)
        assert count_trainable_messages(session) == 2


def test_a_learn_off_during_the_deleting_stays_and_her_text_is_no_context(db: Database):
    with db.begin() as session:
        for i in range(6):
            say(session, GROUP, ANN, f"ann secret {i}")
            say(session, GROUP, BOB, f"bob {i}")
        request_forget(session, ANN)
    with db.read() as session:  # marked: her turns are no reply's context any more
        context = [t for t, _ in recent_turns(session, GROUP, max_turns=20, max_bytes=10_000)]
    assert context and all(t.startswith("bob") for t in context)
    with db.begin() as session:
        set_learning(session, ANN, False)  # from a group, while her forget still deletes
    forget_user_rest = finish_forget(db, ANN, batch_rows=4, pause_s=0)
    assert forget_user_rest == 6
    with db.read() as session:
        ann = get_user(session, ANN)
        assert ann is not None and ann.learning is False  # her later choice is kept
        assert ann.forget_until_id is None
    with db.begin() as session:
        say(session, GROUP, ANN, "ann after")
    with db.read() as session:
        context = [t for t, _ in recent_turns(session, GROUP, max_turns=20, max_bytes=10_000)]
    assert context[-1] == "ann after"  # what she writes after the forget is context again
