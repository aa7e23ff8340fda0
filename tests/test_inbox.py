"""Nothing acknowledged is lost: a real `charbot run` killed with SIGKILL mid-burst, a
database locked by another process, a flood in one chat, update ids that start over.

The Bot API stand-in models getUpdates offsets: an update not confirmed by a later
offset is delivered again, as Telegram does.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import subprocess
import threading
import time

import pytest
from stored import fail_first_store
from test_bot_e2e import USER, data_dir, env, running_bot, settings, sql, stub

from bot import texts
from bot.answers import REPLAY_MAX_AGE

__all__ = ["data_dir", "env", "settings", "stub"]  # fixtures used here, defined there

pytestmark = pytest.mark.e2e

USERS = 50
EACH = 4


def start_bot(charbot, clean_env, env, cwd, log):
    return subprocess.Popen(
        [*charbot, "run"], env={**clean_env, **env}, cwd=cwd, stdout=log, stderr=log
    )


def stop(process, sig=signal.SIGTERM):
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def poll_until(predicate, timeout: float, what: str) -> None:
    """Wait for a condition the stub does not see (the database), checking every 0.1 s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def human_texts(data_dir):
    rows = sql(data_dir, "SELECT text FROM messages WHERE from_bot = 0 ORDER BY id")
    return [text for (text,) in rows]


def test_kill_9_mid_burst_loses_no_acknowledged_message(
    stub, env, data_dir, tmp_path, clean_env, charbot
):
    log = open(tmp_path / "bot.log", "w")  # noqa: SIM115
    first = start_bot(charbot, clean_env, env, tmp_path, log)
    try:
        stub.wait_for_calls("getUpdates", 1, timeout=120)
        sent = [f"user {u} message {i}" for i in range(EACH) for u in range(USERS)]
        pushed = {}  # update id -> text

        def push(rounds):
            for i in rounds:
                for u in range(USERS):
                    text = f"user {u} message {i}"
                    pushed[stub.push_message(text, user_id=10_000 + u)] = text

        # Half the burst: some of it acknowledged, some answered. Then the rest arrives and
        # the process dies at once, with that rest unacknowledged (however fast it stores).
        push(range(EACH // 2))
        stub.wait_until(lambda: len(stub.confirmed_update_ids) >= 40, timeout=60, what="acks")
        stub.wait_until(lambda: len(stub.sent_messages()) >= 5, timeout=60, what="replies")
        push(range(EACH // 2, EACH))
        first.kill()
        first.wait()
        acknowledged = {pushed[i] for i in stub.confirmed_update_ids if i in pushed}
        stored_at_kill = set(human_texts(data_dir))
        second = start_bot(charbot, clean_env, env, tmp_path, log)
        try:
            # every message is stored (unacknowledged ones come again) and answered
            poll_until(
                lambda: len(set(human_texts(data_dir))) == len(sent), timeout=120, what="stored"
            )
            stub.wait_until(
                lambda: all(len(stub.sent_messages(10_000 + u)) >= EACH for u in range(USERS)),
                timeout=120,
                what="every message answered",
            )
        finally:
            stop(second)
    finally:
        stop(first, signal.SIGKILL)
        log.close()
    assert 0 < len(acknowledged) < len(sent)  # the kill came mid-burst
    assert acknowledged <= stored_at_kill  # each acknowledged message was stored
    assert sorted(human_texts(data_dir)) == sorted(sent)  # each once
    assert sql(data_dir, "SELECT count(*) FROM pending_replies") == [(0,)]
    text = (tmp_path / "bot.log").read_text()
    assert "answering" in text and "stored before the restart" in text


def test_a_database_locked_for_45_s_delays_messages_and_loses_none(
    stub, env, data_dir, tmp_path, clean_env, charbot
):
    log = open(tmp_path / "bot.log", "w")  # noqa: SIM115
    process = start_bot(charbot, clean_env, env, tmp_path, log)
    locked = threading.Event()
    try:
        stub.wait_for_calls("getUpdates", 1, timeout=120)
        stub.push_message("before the lock", user_id=USER)
        stub.wait_for_messages(USER, 1, timeout=30)

        def hold_lock():
            conn = sqlite3.connect(data_dir / "charbot.sqlite3", isolation_level=None)
            conn.execute("BEGIN EXCLUSIVE")
            locked.set()
            time.sleep(45)
            conn.execute("ROLLBACK")
            conn.close()

        holder = threading.Thread(target=hold_lock)
        holder.start()
        assert locked.wait(10)
        for i in range(20):
            stub.push_message(f"during the lock {i}", user_id=20_000 + i)
        holder.join()
        stub.wait_until(
            lambda: all(stub.sent_messages(20_000 + i) for i in range(20)),
            timeout=120,
            what="every message answered after the lock",
        )
    finally:
        stop(process)
        log.close()
    assert sorted(t for t in human_texts(data_dir) if t.startswith("during")) == sorted(
        f"during the lock {i}" for i in range(20)
    )


def test_a_flood_in_one_chat_is_stored_in_telegrams_order(stub, settings, generator, data_dir):
    texts = [f"flood {i:03d}" for i in range(200)]

    async def main():
        async with running_bot(settings, generator):
            for text in texts:
                stub.push_message(text, user_id=USER)
            await stub.await_until(
                lambda: len(human_texts(data_dir)) == len(texts), timeout=60, what="stored"
            )

    asyncio.run(main())
    assert human_texts(data_dir) == texts


def test_update_ids_that_start_over_lose_no_message(stub, settings, generator, data_dir):
    """A new token on the same data dir: Telegram's update ids begin again."""

    async def main():
        async with running_bot(settings, generator):
            stub.push_message("first life", user_id=USER)
            await stub.await_messages(USER, 1, timeout=20)
        stub.reset_update_ids()
        async with running_bot(settings, generator):
            stub.push_message("second life", user_id=USER)
            await stub.await_messages(USER, 2, timeout=20)

    asyncio.run(main())
    assert human_texts(data_dir) == ["first life", "second life"]
    ids = sql(data_dir, "SELECT update_id FROM messages WHERE from_bot = 0 ORDER BY id")
    assert ids[0] == ids[1]  # the same update id, two messages


def test_replies_owed_from_long_ago_are_dropped_at_start_not_sent(
    stub, settings, generator, data_dir, caplog
):
    async def main():
        async with running_bot(settings, generator):
            stub.push_message("answered", user_id=USER)
            await stub.await_messages(USER, 1, timeout=20)
        # what a crash leaves: one owed reply from an hour ago, one from just now
        old = (REPLAY_MAX_AGE * 6).total_seconds()
        with contextlib.closing(sqlite3.connect(data_dir / "charbot.sqlite3")) as conn, conn:
            for mid, age in ((900, old), (901, 1)):
                conn.execute(
                    "INSERT INTO pending_replies (chat_id, telegram_message_id, user_id, "
                    "context_until, created_at) VALUES (?, ?, ?, 1, datetime('now', ?))",
                    (USER, mid, USER, f"-{int(age)} seconds"),
                )
        async with running_bot(settings, generator):
            await stub.await_messages(USER, 2, timeout=20)

    with caplog.at_level("INFO", logger="bot.answers"):
        asyncio.run(main())
    assert len(stub.sent_messages(USER)) == 2  # the fresh one was answered, the old one not
    assert sql(data_dir, "SELECT count(*) FROM pending_replies") == [(0,)]
    assert "not answering 1 stored message(s) older than 10 min" in caplog.text


def test_a_forget_takes_effect_where_it_arrived_among_the_messages(
    stub, settings, generator, data_dir
):
    """A, /forget, B in one batch: A is forgotten (its reply too: nothing of it is left to
    answer), B, written after, is kept and answered."""

    async def main():
        async with running_bot(settings, generator) as app:
            inbox = app.bot_data["inbox"]
            before = list(stub.confirmed_update_ids)
            for text in ("before", "/forget", "after"):
                stub.push_message(text, user_id=USER)
            await stub.await_messages(USER, 2, timeout=30)
            await asyncio.sleep(1)  # no third message comes
            return before, inbox.forgotten

    _, pending = asyncio.run(main())
    assert human_texts(data_dir) == ["after"]
    texts_sent = [m["text"] for m in stub.sent_messages(USER)]
    assert len(texts_sent) == 2
    assert texts_sent[0] == texts.FORGET_DONE.format(count=1)
    assert pending == {}  # the handler took the count the inbox recorded


def test_a_batch_that_cannot_be_stored_is_not_acknowledged_and_comes_again(
    stub, settings, generator, data_dir, monkeypatch
):
    calls = fail_first_store(monkeypatch)

    async def main():
        async with running_bot(settings, generator):
            stub.push_message("hello", user_id=USER)
            await stub.await_messages(USER, 1, timeout=30)

    asyncio.run(main())
    assert calls[:2] == [1, 1]  # the same message, offered twice
    assert human_texts(data_dir) == ["hello"]
    assert stub.confirmed_update_ids.count(stub.confirmed_update_ids[0]) == 1


def test_overdue_replies_are_answered_once_and_queued_ones_left_alone(
    stub, settings, generator, data_dir
):
    from bot.answers import OVERDUE, answer_overdue

    async def main():
        async with running_bot(settings, generator) as app:
            services = app.bot_data["services"]
            stub.push_message("first", user_id=USER)
            await stub.await_messages(USER, 1, timeout=20)
            old = int(OVERDUE.total_seconds()) + 5
            with contextlib.closing(sqlite3.connect(data_dir / "charbot.sqlite3")) as conn, conn:
                for mid in (700, 701):  # a send that failed; one still waiting its turn
                    conn.execute(
                        "INSERT INTO pending_replies (chat_id, telegram_message_id, user_id, "
                        "context_until, created_at) VALUES (?, ?, ?, 1, datetime('now', ?))",
                        (USER, mid, USER, f"-{old} seconds"),
                    )
            queued = {(USER, 701)}
            await answer_overdue(app.bot, services, queued)
            await answer_overdue(app.bot, services, queued)  # nothing twice
            return len(stub.sent_messages(USER))

    assert asyncio.run(main()) == 2  # the first reply and the overdue one
    left = sql(data_dir, "SELECT telegram_message_id FROM pending_replies")
    assert left == [(701,)]
