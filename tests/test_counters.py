"""The kept counts (users.message_count, chats.bot_message_count): always what COUNT(*)
over the messages says, whatever is stored, redelivered, opted out or forgotten, and
filled in by the migration that adds them."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import inspect, text
from stored import say

from storage import (
    Database,
    count_messages,
    count_trainable_messages,
    get_or_create_user,
    open_database,
    set_learning,
)
from storage.forgetting import forget_user

GROUP = -100123
ANN, BOB, CEM = 11, 22, 33


def rows(db: Database, sql: str) -> list[tuple]:
    with db.read() as session:
        return [tuple(r) for r in session.execute(text(sql))]


def assert_counts_are_true(db: Database) -> None:
    """Every kept count equals the COUNT(*) it stands for, and count_messages agrees."""
    assert rows(db, "SELECT id, message_count FROM users ORDER BY id") == rows(
        db,
        "SELECT u.id, (SELECT count(*) FROM messages m WHERE m.user_id = u.id) "
        "FROM users u ORDER BY u.id",
    )
    assert rows(db, "SELECT id, bot_message_count FROM chats ORDER BY id") == rows(
        db,
        "SELECT c.id, (SELECT count(*) FROM messages m WHERE m.chat_id = c.id AND m.from_bot) "
        "FROM chats c ORDER BY c.id",
    )
    [(human, bot, users, chats)] = rows(
        db,
        "SELECT (SELECT count(*) FROM messages WHERE NOT from_bot), "
        "(SELECT count(*) FROM messages WHERE from_bot), "
        "(SELECT count(*) FROM users), (SELECT count(*) FROM chats)",
    )
    with db.read() as session:
        assert count_messages(session) == dict(
            total=human + bot, human=human, bot=bot, users=users, chats=chats
        )


def trainable_by_scan(db: Database, since: int = 0) -> int:
    [(n,)] = rows(
        db,
        "SELECT count(*) FROM messages m JOIN users u ON m.user_id = u.id "
        f"WHERE NOT m.from_bot AND u.learning AND m.id > {since}",
    )
    return n


def test_adds_and_redeliveries_keep_the_counts_true(db: Database):
    with db.begin() as session:
        say(session, GROUP, ANN, "a", telegram_message_id=1)
        say(session, GROUP, None, "bot", telegram_message_id=2)
        say(session, ANN, ANN, "private", telegram_message_id=1)
        say(session, ANN, None, "bot private")  # no Telegram id: always stored
        user = get_or_create_user(session, ANN)
        assert user.message_count == 2  # the object in hand follows the counter
    for _ in range(2):  # Telegram sends the updates again: nothing is stored, nothing counted
        with db.begin() as session:
            assert say(session, GROUP, ANN, "a", telegram_message_id=1) is None
            assert say(session, GROUP, None, "bot", telegram_message_id=2) is None
            assert say(session, ANN, ANN, "private", telegram_message_id=1) is None
    assert_counts_are_true(db)
    with db.read() as session:
        assert count_messages(session) == dict(total=4, human=2, bot=2, users=1, chats=2)


def test_a_failed_unit_of_work_counts_nothing(db: Database):
    with pytest.raises(RuntimeError), db.begin() as session:
        say(session, GROUP, ANN, "lost")
        raise RuntimeError("handler failed")
    with db.begin() as session:
        say(session, GROUP, BOB, "kept")
    assert_counts_are_true(db)
    assert rows(db, "SELECT message_count FROM users") == [(1,)]


def test_learning_off_takes_the_users_messages_out_of_the_trainable_count(db: Database):
    with db.begin() as session:
        for i in range(3):
            say(session, GROUP, ANN, f"ann {i}")
        first_bob = say(session, GROUP, BOB, "bob 0")
        say(session, GROUP, BOB, "bob 1")
        say(session, GROUP, None, "bot")
    with db.read() as session:
        assert count_trainable_messages(session) == 5
    with db.begin() as session:
        set_learning(session, ANN, False)
    with db.read() as session:
        assert count_trainable_messages(session) == 2 == trainable_by_scan(db)
        # From a message id on: the range count, the same rule
        assert count_trainable_messages(session, first_bob.id) == 1
        assert trainable_by_scan(db, first_bob.id) == 1
    with db.begin() as session:
        set_learning(session, ANN, True)
    with db.read() as session:
        assert count_trainable_messages(session) == 5


def test_forgetting_keeps_the_counts_true(db: Database):
    with db.begin() as session:
        say(session, GROUP, ANN, "ann in group")
        say(session, GROUP, None, "bot to ann")  # stays: the group's turn
        say(session, GROUP, BOB, "bob in group")
        say(session, ANN, ANN, "ann private")
        say(session, ANN, None, "bot in ann's chat")
        say(session, BOB, BOB, "bob private")
        say(session, BOB, None, "bot in bob's chat")
    assert forget_user(db, ANN, pause_s=0) == 2
    assert_counts_are_true(db)
    with db.read() as session:
        assert count_messages(session) == dict(total=4, human=2, bot=2, users=1, chats=2)
        assert count_trainable_messages(session) == 2


# One shared database: whatever state earlier examples left, the counts must stay true.
OPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("say"),
            st.sampled_from([GROUP, ANN, BOB]),  # a group, or a private chat
            st.sampled_from([None, ANN, BOB, CEM]),  # None: the bot
            st.one_of(st.none(), st.integers(0, 4)),  # Telegram's message id
        ),
        st.tuples(st.just("learn"), st.sampled_from([ANN, BOB, CEM]), st.booleans()),
        st.tuples(st.just("forget"), st.sampled_from([ANN, BOB, CEM])),
    ),
    max_size=12,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=OPS)
def test_the_counts_stay_true_under_any_sequence(db: Database, ops):
    for op in ops:
        if op[0] == "forget":
            forget_user(db, op[1], batch_rows=2, pause_s=0)
            continue
        with db.begin() as session:
            if op[0] == "learn":
                set_learning(session, op[1], op[2])
            else:
                say(session, op[1], op[2], "x", telegram_message_id=op[3])
    assert_counts_are_true(db)
    with db.read() as session:
        assert count_trainable_messages(session) == trainable_by_scan(db)


# -- the migration that adds them ---------------------------------------------------------


def write_old_rows(db: Database) -> None:
    """Users, chats and messages as revision 0005 stored them (no counts)."""
    with db.engine.begin() as conn:
        conn.execute(
            text("INSERT INTO chats (id, type) VALUES (:id, :type)"),
            [{"id": c, "type": "group" if c < 0 else "private"} for c in (GROUP, ANN, BOB)],
        )
        conn.execute(
            text(
                "INSERT INTO users (id, temperature, learning, created_at) "
                "VALUES (:id, 0.6, :learning, '2026-01-01')"
            ),
            # Cem never wrote.
            [{"id": user, "learning": user != BOB} for user in (ANN, BOB, CEM)],
        )
        turns = [(GROUP, ANN, False)] * 3 + [(GROUP, BOB, False), (GROUP, None, True)]
        turns += [(ANN, ANN, False)] + [(ANN, None, True)] * 2
        conn.execute(
            text(
                "INSERT INTO messages (chat_id, user_id, from_bot, text, created_at) "
                "VALUES (:chat, :user, :bot, 'x', '2026-01-01')"
            ),
            [{"chat": chat, "user": user, "bot": bot} for chat, user, bot in turns],
        )


def test_the_migration_fills_the_counts_from_the_stored_messages(db_url: str):
    old = open_database(db_url)
    old.downgrade("0005")
    write_old_rows(old)
    old.dispose()
    db = open_database(db_url)  # upgrades
    try:
        assert rows(db, "SELECT id, message_count FROM users ORDER BY id") == [
            (ANN, 4),
            (BOB, 1),
            (CEM, 0),
        ]
        assert rows(db, "SELECT id, bot_message_count FROM chats ORDER BY id") == [
            (GROUP, 1),
            (ANN, 2),
            (BOB, 0),
        ]
        assert rows(db, "SELECT count(*) FROM users WHERE forget_until_id IS NOT NULL") == [(0,)]
        assert_counts_are_true(db)
        with db.read() as session:
            assert count_trainable_messages(session) == 4  # Bob has learning off
    finally:
        db.dispose()


def test_the_counts_survive_a_downgrade_and_upgrade(db: Database):
    with db.begin() as session:
        say(session, GROUP, ANN, "a")
        say(session, GROUP, None, "b")
        say(session, ANN, ANN, "c")
    db.downgrade("0005")
    columns = {c["name"] for t in ("users", "chats") for c in inspect(db.engine).get_columns(t)}
    assert not columns & {"message_count", "bot_message_count"}
    with db.begin() as session:  # written meanwhile by an older release: no counts kept
        session.execute(
            text(
                "INSERT INTO messages (chat_id, user_id, from_bot, text, created_at) "
                f"VALUES ({ANN}, NULL, TRUE, 'old bot', '2026-01-01')"
            )
        )
    db.upgrade()
    assert_counts_are_true(db)
    with db.read() as session:
        assert count_messages(session) == dict(total=4, human=2, bot=2, users=1, chats=2)
