"""storage/: real SQLite files in tmp_path and real PostgreSQL databases, migrations,
repository functions, concurrency."""

from __future__ import annotations

import itertools
import json
import math
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from conftest import LATEST_REVISION
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from stored import say

import storage
from storage import (
    DEFAULT_TEMPERATURE,
    Base,
    Database,
    DatabaseFileError,
    Message,
    User,
    add_message,
    count_human_messages_since,
    count_messages,
    count_trainable_messages,
    get_chat,
    get_or_create_chat,
    get_or_create_user,
    get_user,
    last_message_id,
    normalize_url,
    open_database,
    recent_turns,
    reply_chance,
    set_learning,
    set_temperature,
    sqlite_url,
    stored_text,
    training_transcripts,
)
from storage.database import BUSY_TIMEOUT_MS
from storage.forgetting import forget_user
from storage.run_lock import AdvisoryRunLock

REPO_ROOT = Path(__file__).resolve().parent.parent
GROUP = -100123  # group chat ids are negative
ANN, BOB, CEM = 11, 22, 33


def scalar(db: Database, sql: str):
    with db.read() as session:
        return session.execute(text(sql)).scalar()


# -- database ---------------------------------------------------------------


def test_sqlite_url_points_into_the_data_dir(tmp_path: Path):
    data_dir = tmp_path / "a" / "b"
    url = sqlite_url(data_dir)
    assert url == f"sqlite:///{data_dir.resolve() / 'charbot.sqlite3'}"
    data_dir.mkdir(parents=True)
    open_database(url).dispose()
    assert (data_dir / "charbot.sqlite3").is_file()


SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
POSTGRESQL_ONLY = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


def texts(db: Database) -> list[str]:
    """Every stored message's text, oldest first."""
    with db.read() as session:
        return list(session.scalars(select(Message.text).order_by(Message.id)))


@SQLITE_ONLY
@pytest.mark.parametrize("session_kind", ["read", "begin"])
def test_pragmas_are_set_on_every_connection(db: Database, session_kind: str):
    with getattr(db, session_kind)() as session, db.engine.connect() as other:
        for conn in (session, other):  # two pooled connections at the same time
            pragma = {
                name: conn.execute(text(f"PRAGMA {name}")).scalar()
                for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
            }
            assert pragma == {
                "journal_mode": "wal",
                "synchronous": 1,  # NORMAL
                "busy_timeout": 360000,
                "foreign_keys": 1,
            }


@POSTGRESQL_ONLY
@pytest.mark.parametrize("session_kind", ["read", "begin"])
def test_postgresql_connections_fail_fast_and_wait_for_locks_like_sqlite(
    db: Database, session_kind: str
):
    with getattr(db, session_kind)() as session:
        settings = {
            name: session.execute(text(f"SHOW {name}")).scalar()
            for name in ("lock_timeout", "application_name", "transaction_isolation")
        }
        read_only = session.execute(text("SHOW transaction_read_only")).scalar()
    assert settings["lock_timeout"] == f"{BUSY_TIMEOUT_MS // 60_000}min"
    assert settings["application_name"] == "charbot"
    isolation = {"read": "repeatable read", "begin": "read committed"}[session_kind]
    assert (settings["transaction_isolation"], read_only) == (
        isolation,
        "on" if session_kind == "read" else "off",
    )


def test_settings_in_a_postgresql_url_are_kept_beside_the_bots(pg_url: str):
    """An operator's settings in CHARBOT_DATABASE_URL (a schema, a name, a lock timeout)
    win over the bot's own, and the run lock's label still names the run."""
    with open_database(pg_url).engine.begin() as conn:
        conn.exec_driver_sql("CREATE SCHEMA mine")
    extra = {"application_name": "ops", "options": "-csearch_path=mine -clock_timeout=5s"}
    url = make_url(pg_url).update_query_dict(extra).render_as_string(hide_password=False)
    db = open_database(url)
    try:
        with db.read() as session:
            shown = [session.execute(text(f"SHOW {n}")).scalar() for n in SHOWN]
        tables = inspect(db.engine).get_table_names(schema="mine")
    finally:
        db.dispose()
    assert shown == ["ops", "mine", "5s"]
    assert "messages" in tables  # migrated into the operator's schema
    lock = AdvisoryRunLock(url)
    assert lock.acquire()
    try:
        assert lock.holder()["pid"] == os.getpid()
    finally:
        lock.release()


SHOWN = ("application_name", "search_path", "lock_timeout")


def test_postgresql_urls_use_psycopg_3():
    for written in ("postgresql://u:pw@h/db", "postgres://u:pw@h/db"):
        url = normalize_url(written)
        assert (url.drivername, url.password, url.database) == ("postgresql+psycopg", "pw", "db")
    assert normalize_url("postgresql+psycopg2://h/db").drivername == "postgresql+psycopg2"
    assert normalize_url("sqlite:////x/charbot.sqlite3").drivername == "sqlite"


@SQLITE_ONLY
def test_sqlite_begin_takes_the_write_lock_at_once_and_read_does_not(db: Database):
    outsider = sqlite3.connect(db.url.database, timeout=0, isolation_level=None)
    try:
        with db.begin() as session:
            session.execute(text("SELECT 1"))  # only a read so far
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                outsider.execute("BEGIN IMMEDIATE")
        with db.read() as session:
            session.execute(text("SELECT count(*) FROM users")).scalar()
            outsider.execute("BEGIN IMMEDIATE")  # a reader never blocks a writer
            outsider.execute("ROLLBACK")
    finally:
        outsider.close()


def test_one_writer_at_a_time_from_its_first_query_and_readers_never_wait(db: Database):
    other = Database(db.url)  # another process's connections
    done: list[str] = []

    def second_writer() -> None:
        with other.begin() as session:
            get_or_create_user(session, BOB, "Bob")
        done.append("second writer")

    try:
        with db.begin() as session:
            session.execute(text("SELECT 1"))  # only a read so far: the lock is taken
            writer = threading.Thread(target=second_writer)
            writer.start()
            with other.read() as reading:
                reading.execute(text("SELECT count(*) FROM users")).scalar()
            done.append("reader")
            writer.join(0.5)
            assert writer.is_alive()  # waiting for the lock
            get_or_create_user(session, ANN, "Ann")
            done.append("first writer")
        writer.join(30)
        assert done == ["reader", "first writer", "second writer"]
    finally:
        other.dispose()


def test_begin_commits_on_success_and_rolls_back_on_error(db: Database):
    with db.begin() as session:
        get_or_create_user(session, ANN, "Ann")
    with pytest.raises(RuntimeError), db.begin() as session:
        get_or_create_user(session, BOB, "Bob")
        session.flush()
        raise RuntimeError("handler failed")
    with db.read() as session:
        assert list(session.scalars(select(User.name))) == ["Ann"]


def test_foreign_keys_are_enforced(db: Database):
    with pytest.raises(IntegrityError, match=r"(?i)foreign key"), db.begin() as session:
        add_message(session, chat_id=404, text="no such chat")


def test_objects_stay_readable_after_the_unit_of_work(db: Database):
    with db.begin() as session:
        user = get_or_create_user(session, ANN, "Ann")
    assert (user.name, user.temperature, user.learning) == ("Ann", DEFAULT_TEMPERATURE, True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def refusal(url: str) -> str:
    """What open_database says about `url`: one line, the password hidden."""
    with pytest.raises(DatabaseFileError) as caught:
        open_database(url)
    line = str(caught.value)
    assert "\n" not in line and "s3cret" not in line
    assert line.startswith("CHARBOT_DATABASE_URL postgres")
    return line


def test_a_postgresql_driver_that_is_not_installed_is_named_with_the_fix(monkeypatch):
    line = refusal("postgresql+pg8000://bot:s3cret@127.0.0.1/charbot")
    assert "pg8000 is not installed" in line and "postgresql://" in line
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if the extra were not installed
    line = refusal("postgresql://bot:s3cret@127.0.0.1/charbot")
    assert "psycopg is not installed" in line and "pip install 'charbot[postgres]'" in line


def test_a_postgresql_server_that_is_down_is_reported_at_once():
    started = time.monotonic()
    line = refusal(f"postgres://bot:s3cret@127.0.0.1:{free_port()}/charbot")
    assert time.monotonic() - started < 5
    assert "refused" in line and "start PostgreSQL, or correct the host and port" in line


def test_wrong_postgresql_credentials_or_database_are_reported(pg_url: str):
    unknown_role = make_url(pg_url).set(username="nobody", password="s3cret")
    line = refusal(unknown_role.render_as_string(hide_password=False))
    assert 'role "nobody" does not exist' in line and "correct the user and password" in line
    no_database = make_url(pg_url).set(database="charbot_missing", password="s3cret")
    line = refusal(no_database.render_as_string(hide_password=False))
    assert 'database "charbot_missing" does not exist' in line and "create it" in line


# -- migrations -------------------------------------------------------------


def test_migrations_are_idempotent_and_data_survives_reopening(empty_db_url: str):
    url = empty_db_url
    older = Database(url)
    assert older.revision() is None
    older.upgrade("0001")  # a database made by the first release, written as it wrote
    with older.engine.begin() as conn:
        now = "2026-01-01 00:00:00.000000"
        conn.exec_driver_sql(f"INSERT INTO chats VALUES ({GROUP}, 'group', 'G')")
        conn.exec_driver_sql(f"INSERT INTO users VALUES ({ANN}, 'Ann', 0.3, FALSE, '{now}')")
        conn.exec_driver_sql(
            "INSERT INTO messages (chat_id, user_id, from_bot, text, update_id, created_at) "
            f"VALUES ({GROUP}, {ANN}, FALSE, '你好 👋', 1, '{now}')"
        )
    older.dispose()

    for _ in range(2):
        db = open_database(url)
        assert db.revision() == LATEST_REVISION
        assert scalar(db, "SELECT count(*) FROM alembic_version") == 1
        with db.read() as session:
            assert recent_turns(session, GROUP) == [("你好 👋", True)]
            user = get_user(session, ANN)
            assert (user.name, user.temperature, user.learning) == ("Ann", 0.3, False)
            assert (user.language, user.app_language) == (None, None)  # no choice made
            assert reply_chance(session, GROUP) == 0.0  # answers only when addressed
            assert user.message_count == 1  # the kept counts are filled in
            assert count_messages(session) == dict(total=1, human=1, bot=0, users=1, chats=1)
        db.dispose()


def test_schema_made_by_migrations_matches_the_models(db: Database):
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_migrations_downgrade_and_upgrade_again(db: Database):
    db.downgrade("base")
    assert db.revision() is None
    assert not inspect(db.engine).has_table("messages")
    db.upgrade()
    assert db.revision() == LATEST_REVISION
    with db.begin() as session:
        assert say(session, GROUP, ANN, "back") is not None


# -- users and chats --------------------------------------------------------


def test_users_get_defaults_and_their_name_follows_telegram(db: Database):
    with db.begin() as session:
        assert get_user(session, ANN) is None
        user = get_or_create_user(session, ANN, "Ann")
        assert (user.temperature, user.learning) == (DEFAULT_TEMPERATURE, True)
        assert user.created_at.tzinfo is not None
    with db.begin() as session:
        get_or_create_user(session, ANN, "Annie")
        get_or_create_user(session, ANN)  # no name given: keep the stored one
    with db.read() as session:
        user = get_user(session, ANN)
        assert user is not None and user.name == "Annie"
        assert user.created_at.utcoffset() == UTC.utcoffset(None)
    assert scalar(db, "SELECT count(*) FROM users") == 1


def test_settings_are_stored_and_create_the_user(db: Database):
    with db.begin() as session:
        set_temperature(session, ANN, 1.25)
        set_learning(session, BOB, False)
    with db.read() as session:
        assert get_user(session, ANN).temperature == 1.25
        assert get_user(session, ANN).learning is True
        assert get_user(session, BOB).learning is False
        assert get_user(session, BOB).temperature == DEFAULT_TEMPERATURE


@pytest.mark.parametrize("bad", [-0.1, 2.01, math.nan, math.inf])
def test_temperature_outside_zero_to_two_is_refused(db: Database, bad: float):
    with pytest.raises(ValueError), db.begin() as session:
        set_temperature(session, ANN, bad)


def test_chats_keep_negative_ids_and_follow_title_and_type(db: Database):
    with db.begin() as session:
        get_or_create_chat(session, GROUP, "group", "Old")
    with db.begin() as session:
        chat = get_or_create_chat(session, GROUP, "supergroup", "New")
    assert (chat.id, chat.type, chat.title) == (GROUP, "supergroup", "New")
    assert scalar(db, "SELECT count(*) FROM chats WHERE id = -100123") == 1


# -- messages ---------------------------------------------------------------


@pytest.mark.parametrize("upsert", [True, False], ids=["on-conflict", "check-then-insert"])
def test_a_redelivered_message_is_stored_once(db: Database, monkeypatch, upsert: bool):
    if not upsert:  # the path other databases take
        monkeypatch.setattr(storage.repository, "_UPSERT_INSERTS", {})
    with db.begin() as session:
        first = say(session, GROUP, ANN, "hello", update_id=7, telegram_message_id=70)
        assert first is not None and first.id is not None and first.from_bot is False
        again = say(session, GROUP, ANN, "hello", update_id=7, telegram_message_id=70)
        assert again is None  # same transaction
    with db.begin() as session:
        assert say(session, GROUP, ANN, "hello", update_id=9, telegram_message_id=70) is None
        assert say(session, GROUP, ANN, "other", update_id=8, telegram_message_id=71) is not None
        assert say(session, GROUP, None, "reply") is not None  # no message id: always stored
        assert say(session, GROUP, None, "reply") is not None
    assert scalar(db, "SELECT count(*) FROM messages WHERE telegram_message_id = 70") == 1
    assert scalar(db, "SELECT count(*) FROM messages") == 4


def test_update_ids_that_start_over_lose_no_message(db: Database):
    """A new token on the same data dir, or a week without updates: ids begin again."""
    with db.begin() as session:
        assert say(session, GROUP, ANN, "before", update_id=5, telegram_message_id=10)
        assert say(session, ANN, ANN, "private", update_id=6, telegram_message_id=10)
        assert say(session, GROUP, ANN, "after", update_id=5, telegram_message_id=11)
    assert scalar(db, "SELECT count(*) FROM messages WHERE update_id = 5") == 2


def test_the_message_identity_migration_keeps_every_row(db_url: str):
    old = open_database(db_url)
    old.downgrade("0003")
    with old.engine.begin() as conn:  # written as revision 0003 allowed
        conn.exec_driver_sql("INSERT INTO chats (id, type) VALUES (1, 'private')")
        conn.exec_driver_sql(
            "INSERT INTO users (id, temperature, learning, created_at) "
            "VALUES (1, 0.6, TRUE, '2026-01-01')"
        )
        for text_, message_id, update_id in (("a", 5, 1), ("b", 5, 2), ("c", 6, 3)):
            conn.exec_driver_sql(
                "INSERT INTO messages (chat_id, user_id, from_bot, text, telegram_message_id, "
                f"update_id, created_at) VALUES (1, 1, FALSE, '{text_}', {message_id}, "
                f"{update_id}, '2026-01-01')"
            )
        # The newest: its id stays used.
        conn.exec_driver_sql("DELETE FROM messages WHERE text = 'c'")
    old.dispose()
    db = open_database(db_url)  # upgrades
    assert db.revision() == LATEST_REVISION
    with db.begin() as session:
        assert say(session, 1, 1, "d", telegram_message_id=5) is None  # (chat, 5) is taken
        assert say(session, 1, 1, "d", telegram_message_id=7).id > 3  # never id 3 again
    with db.read() as session:
        stmt = select(Message.text, Message.telegram_message_id).order_by(Message.id)
        got = [tuple(row) for row in session.execute(stmt)]
    db.dispose()
    assert got == [("a", 5), ("b", None), ("d", 7)]  # the duplicate keeps its text


TEXTS = [
    "你好，世界！今天天气怎么样？",
    "👩‍👩‍👧‍👦🏳️‍🌈 e\u0301 مرحبا שלום",
    "ж" * 2048 + "😀" * 2048,  # 4096 characters (Telegram's limit), 12288 bytes
    "line one\nline two\ttab  ",
]


def test_any_text_round_trips_exactly(db_url: str):
    url = db_url
    db = open_database(url)
    with db.begin() as session:
        for i, t in enumerate(TEXTS):
            say(session, GROUP, ANN if i % 2 == 0 else None, t)
    db.dispose()
    db = open_database(url)  # read back through a fresh engine
    with db.read() as session:
        turns = recent_turns(session, GROUP, max_turns=10, max_bytes=10**6)
        transcripts = training_transcripts(session)
    db.dispose()
    assert len(TEXTS[2]) == 4096
    assert turns == [(t, i % 2 == 0) for i, t in enumerate(TEXTS)]
    assert transcripts == [turns]


def test_names_and_titles_longer_than_their_columns_are_cut(db: Database):
    with db.begin() as session:
        get_or_create_user(session, ANN, "Ann" + "n" * 300, app_language="x" * 40)
        get_or_create_chat(session, GROUP, "group", "G" * 300)
    with db.read() as session:
        user, chat = get_user(session, ANN), get_chat(session, GROUP)
        assert (user.name, user.app_language) == (("Ann" + "n" * 300)[:255], "x" * 16)
        assert chat.title == "G" * 255


def test_a_zero_byte_is_kept_or_stored_as_the_replacement_character(db: Database):
    with db.begin() as session:
        say(session, GROUP, None, "a\x00b", telegram_message_id=1)  # the model wrote byte 0
        get_or_create_user(session, ANN, "A\x00nn")
    with db.read() as session:
        name = get_user(session, ANN).name
    kept = "\x00" if db.url.get_backend_name() == "sqlite" else "\ufffd"
    assert (texts(db), name) == ([f"a{kept}b"], f"A{kept}nn")


def test_recent_turns_are_the_newest_in_order_and_of_this_chat(db: Database):
    with db.begin() as session:
        for i in range(12):
            say(session, GROUP, ANN if i % 2 == 0 else None, f"t{i}")
            say(session, ANN, ANN, f"private {i}")
    with db.read() as session:
        assert recent_turns(session, GROUP, max_turns=3) == [
            ("t9", False),
            ("t10", True),
            ("t11", False),
        ]
        assert len(recent_turns(session, GROUP)) == 8
        assert recent_turns(session, GROUP, max_turns=0) == []
        assert recent_turns(session, 999) == []


def test_recent_turns_keep_within_max_bytes_but_always_the_newest(db: Database):
    with db.begin() as session:
        for t in ["aaaa", "bb", "你好", "x" * 50]:
            say(session, GROUP, ANN, t)
    with db.read() as session:
        assert recent_turns(session, GROUP, max_bytes=10) == [("x" * 50, True)]  # alone too big
    with db.begin() as session:
        say(session, GROUP, None, "ok")
    with db.read() as session:
        # "ok" 2 + x*50 = 52 bytes; "你好" is 6 more = 58
        assert [t for t, _ in recent_turns(session, GROUP, max_bytes=57)] == ["x" * 50, "ok"]
        assert [t for t, _ in recent_turns(session, GROUP, max_bytes=58)] == [
            "你好",
            "x" * 50,
            "ok",
        ]


counter = itertools.count(1)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    texts=st.lists(st.text(min_size=0, max_size=30), min_size=1, max_size=12),
    max_turns=st.integers(1, 10),
    max_bytes=st.integers(0, 120),
)
def test_recent_turns_is_the_longest_suffix_within_bounds(
    db: Database, texts: list[str], max_turns: int, max_bytes: int
):
    chat_id = next(counter)  # a fresh chat per example
    with db.begin() as session:
        for t in texts:
            say(session, chat_id, None, t)
    with db.read() as session:
        got = [t for t, _ in recent_turns(session, chat_id, max_turns, max_bytes)]
        texts = [stored_text(session, t) for t in texts]  # NUL differs on PostgreSQL

    def size(ts: list[str]) -> int:
        return sum(len(t.encode()) for t in ts)

    assert got and got == texts[-len(got) :]
    assert len(got) <= max_turns
    assert len(got) == 1 or size(got) <= max_bytes
    if len(got) < min(max_turns, len(texts)):  # one more turn would break the byte bound
        assert size(texts[-len(got) - 1 :]) > max_bytes


# -- forgetting and training ------------------------------------------------


def test_forget_user_deletes_their_messages_and_settings_only(db: Database):
    with db.begin() as session:
        say(session, GROUP, ANN, "ann 1")
        say(session, GROUP, None, "bot to ann")
        say(session, GROUP, BOB, "bob 1")
        say(session, ANN, ANN, "ann private")
        say(session, ANN, None, "bot in ann's private chat")
        say(session, BOB, BOB, "bob private")
        set_temperature(session, ANN, 1.5)
    assert forget_user(db, ANN) == 2
    assert forget_user(db, 999) == 0
    assert scalar(db, f"SELECT count(*) FROM messages WHERE user_id = {ANN}") == 0
    assert scalar(db, "SELECT count(*) FROM messages WHERE text LIKE 'ann%'") == 0
    assert scalar(db, f"SELECT count(*) FROM users WHERE id = {ANN}") == 0
    assert scalar(db, f"SELECT count(*) FROM chats WHERE id = {ANN}") == 0  # the private chat
    assert scalar(db, f"SELECT count(*) FROM chats WHERE id IN ({GROUP}, {BOB})") == 2
    assert texts(db) == ["bot to ann", "bob 1", "bob private"]
    with db.read() as session:
        assert get_user(session, ANN) is None
    with db.begin() as session:  # coming back starts from the defaults
        assert get_or_create_user(session, ANN).temperature == DEFAULT_TEMPERATURE


def test_message_ids_are_not_reused_after_forgetting_the_newest(db: Database):
    with db.begin() as session:
        say(session, GROUP, BOB, "bob")
        newest = say(session, GROUP, ANN, "ann")
    forget_user(db, ANN)
    with db.begin() as session:
        again = say(session, GROUP, BOB, "bob again")
    assert again.id > newest.id  # a training run that saw `newest` must still see this one
    with db.read() as session:
        assert count_human_messages_since(session, newest.id) == 1


def test_training_transcripts_leave_out_opted_out_and_forgotten_users(db: Database):
    with db.begin() as session:
        say(session, GROUP, ANN, "ann says hi")
        say(session, GROUP, BOB, "bob secret")
        say(session, GROUP, None, "bot reply")
        say(session, GROUP, CEM, "cem forgotten")
        say(session, GROUP, ANN, "ann again")
        say(session, BOB, BOB, "bob private secret")
        say(session, BOB, None, "bot to bob")
        say(session, CEM, None, "bot alone")
        set_learning(session, BOB, False)
    forget_user(db, CEM)
    with db.read() as session:
        transcripts = training_transcripts(session)
    everything = json.dumps(transcripts, ensure_ascii=False)
    assert "secret" not in everything and "cem" not in everything
    # Bob's private chat has only the bot's turn left, Cem's chat none: both omitted.
    assert transcripts == [[("ann says hi", True), ("bot reply", False), ("ann again", True)]]


def test_training_transcripts_since_a_message_and_after_opting_back_in(db: Database):
    with db.begin() as session:
        first = say(session, GROUP, ANN, "old")
        set_learning(session, BOB, False)
        say(session, GROUP, BOB, "bob")
        say(session, GROUP, ANN, "new")
    with db.read() as session:
        assert training_transcripts(session, since_message_id=first.id) == [[("new", True)]]
    with db.begin() as session:
        set_learning(session, BOB, True)
    with db.read() as session:
        assert training_transcripts(session) == [[("old", True), ("bob", True), ("new", True)]]


def test_counts(db: Database):
    with db.read() as session:
        assert last_message_id(session) == 0
        assert count_messages(session) == dict(total=0, human=0, bot=0, users=0, chats=0)
    with db.begin() as session:
        first = say(session, GROUP, ANN, "a")
        say(session, GROUP, None, "b")
        say(session, BOB, BOB, "c")
        last = say(session, BOB, None, "d")
    with db.read() as session:
        counts = count_messages(session)
        assert counts == dict(total=4, human=2, bot=2, users=2, chats=2)
        # Plain ints on both backends (PostgreSQL sums bigints as numeric): they go into
        # JSON and metrics as they are.
        assert {type(n) for n in counts.values()} == {int}
        assert type(count_human_messages_since(session, 0)) is int
        assert type(count_trainable_messages(session)) is int
        assert count_human_messages_since(session, 0) == 2
        assert count_human_messages_since(session, first.id) == 1
        assert count_human_messages_since(session, last.id) == 0
        assert last_message_id(session) == last.id


# -- another OS process at the same time ------------------------------------

WORKER = """
import sys, time
from storage import *

role, url, n = sys.argv[1], sys.argv[2], float(sys.argv[3])
db = open_database(url)
print("ready", flush=True)
sys.stdin.readline()
if role == "reader":  # hold one read transaction while others write
    with db.read() as session:
        before = count_messages(session)["total"]
        print("holding", flush=True)
        time.sleep(float(n))
        after = count_messages(session)["total"]
    print("snapshot", before, after, flush=True)
else:  # read-then-write transactions, as the bot's handlers do
    for i in range(int(n)):
        with db.begin() as session:
            get_or_create_chat(session, 2, "private")
            get_or_create_user(session, 2)
            recent_turns(session, 2)
            add_message(session, chat_id=2, user_id=2, text=f"child {i}")
    print("done", flush=True)
db.dispose()
"""


def start_worker(role: str, url: str, n: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, role, url, str(n)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        env=env,
    )


def expect_line(proc: subprocess.Popen, word: str) -> str:
    line = proc.stdout.readline()
    if not line.startswith(word):
        proc.kill()
        raise AssertionError(f"expected {word!r}, got {line!r}; stderr: {proc.stderr.read()}")
    return line


def test_writes_never_fail_while_other_processes_read_and_write(empty_db_url: str):
    url = empty_db_url  # the children migrate a new database at the same time
    n = 150
    reader = start_worker("reader", url, 1.5)
    writer = start_worker("writer", url, n)
    try:
        expect_line(reader, "ready")
        expect_line(writer, "ready")
        db = open_database(url)
        reader.stdin.write("go\n")
        reader.stdin.flush()
        expect_line(reader, "holding")
        writer.stdin.write("go\n")
        writer.stdin.flush()
        for i in range(n):  # the same read-then-write pattern, in the main process
            with db.begin() as session:
                get_or_create_chat(session, 1, "private")
                get_or_create_user(session, 1)
                recent_turns(session, 1)
                add_message(session, chat_id=1, user_id=1, text=f"main {i}")
        expect_line(writer, "done")
        snapshot = expect_line(reader, "snapshot").split()
        for proc in (reader, writer):
            _, err = proc.communicate(timeout=30)
            assert proc.returncode == 0, err
            assert "locked" not in err
        assert snapshot[1] == snapshot[2]  # the reader saw one consistent snapshot
        with db.read() as session:
            assert count_messages(session)["total"] == 2 * n
        db.dispose()
    finally:
        for proc in (reader, writer):
            if proc.poll() is None:
                proc.kill()


def test_opening_waits_while_another_process_converts_a_new_file(tmp_path: Path):
    # A writer that holds the lock of a file still in rollback mode makes
    # `PRAGMA journal_mode = WAL` fail at once, without the busy timeout: what a second
    # process sees while the first converts a new file. Opening waits it out instead.
    path = tmp_path / "charbot.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE first_process (x)")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO first_process VALUES (1)")
    releaser = threading.Timer(0.5, lambda: holder.execute("COMMIT"))
    releaser.start()
    try:
        db = open_database(sqlite_url(tmp_path))
        with db.read() as session:
            assert session.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert session.execute(text("SELECT x FROM first_process")).scalar() == 1
        db.dispose()
    finally:
        releaser.join()
        holder.close()
