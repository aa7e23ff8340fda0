"""Retraining in the running bot: /retrain, /rollback, /status, the schedule, the swap.

Runs are real `charbot train` child processes on a tiny model; the bot is the real
Application against the Bot API stand-in.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json

import numpy as np
import pytest
from sqlalchemy import event
from test_bot_e2e import ADMIN, USER, data_dir, running_bot, say, sql, stub

from bot import texts
from bot.datadir import (
    SHIPPED_BASE_CHECKED,
    adopt_shipped_base,
    open_database_for,
    open_store,
)
from bot.preferences import forget_command, learn_command
from bot.reports import STALE_RUN, describe_run, new_messages
from bot.retrainer import Retrainer
from bot.services import open_services
from bot.settings import load_settings
from bot.train_job import decide, train_once
from model import MIX_KEY, ModelConfig, ModelFile, load, save
from model.network import build_network
from model.retrain import RetrainConfig
from model.run_result import Examples, Losses, RunResult
from storage import (
    add_message,
    finish_run,
    get_or_create_chat,
    get_or_create_user,
    last_message_id,
    read_training_sample,
    recent_runs,
    start_run,
)

__all__ = ["data_dir", "stub"]  # fixtures used here, defined there


@pytest.fixture
def env(stub, data_dir, tiny_model_path) -> dict[str, str]:
    return {
        "TELEGRAM_BOT_TOKEN": stub.token,
        "CHARBOT_TELEGRAM_BASE_URL": stub.base_url,
        "CHARBOT_ADMIN_IDS": str(ADMIN),
        "CHARBOT_DATA_DIR": str(data_dir),
        "CHARBOT_MODEL_PATH": str(tiny_model_path),
        "CHARBOT_RETRAIN_EPOCHS": "3",  # child runs stay short on two cores
    }


@pytest.fixture
def settings(env):
    return load_settings(env, env_file=None)


@pytest.fixture
def any_settings(settings, db_url):
    """`settings` with the database on each backend in turn (SQLite, PostgreSQL)."""
    return dataclasses.replace(settings, database_url=db_url)


PNG = b"\x89PNG\r\n\x1a\n"
STYLE = [
    "the cat sat on the mat",
    "a cat is a fine cat",
    "mats are for cats",
    "the mat is flat",
    "cats nap on mats",
]


def write_chats(settings, chats: int, turns: int, first_user: int = 5000) -> None:
    """Conversations in a distinctive style: people write about cats, the bot says ok."""
    db = open_database_for(settings)
    with db.begin() as session:
        for c in range(chats):
            user = first_user + c
            get_or_create_chat(session, user, "private")
            get_or_create_user(session, user, f"user {c}")
            for t in range(turns):
                add_message(session, chat_id=user, user_id=user, text=STYLE[(c + t) % len(STYLE)])
                add_message(session, chat_id=user, text="ok")
    db.dispose()


def test_non_admins_cannot_retrain_or_roll_back(stub, settings, data_dir, generator):
    async def main():
        async with running_bot(settings, generator):
            return [await say(stub, cmd, user=USER) for cmd in ("/retrain", "/rollback")]

    assert asyncio.run(main()) == [texts.STATUS_REFUSED] * 2
    assert sql(data_dir, "SELECT count(*) FROM training_runs") == [(0,)]
    assert not (data_dir / "runs").exists()
    assert sorted(p.name for p in (data_dir / "models").glob("v*")) == ["v0001"]


def test_admin_retrain_publishes_reports_and_swaps_then_rolls_back(
    stub, settings, data_dir, generator
):
    write_chats(settings, chats=12, turns=6)

    async def main():
        async with running_bot(settings, generator):
            ack = await say(stub, "/retrain", user=ADMIN)
            again = await say(stub, "/retrain", user=ADMIN)  # the child is still importing
            sent = await stub.await_messages(ADMIN, 3, timeout=240)
            await stub.await_until(lambda: stub.sent_files(ADMIN), timeout=60, what="plot")
            status = await say(stub, "/status", user=ADMIN)
            # Answered once the old version is built and warmed: slower than a reply.
            rolled = await say(stub, "/rollback", user=ADMIN, timeout=120)
            status_after = await say(stub, "/status", user=ADMIN)
            return ack, again, sent[2]["text"], status, rolled, status_after

    ack, again, report, status, rolled, status_after = asyncio.run(main())
    assert ack == texts.RETRAIN_STARTED
    assert again == texts.RETRAIN_RUNNING
    assert report.startswith(f"Retraining run 1 (asked by {ADMIN}): published, now version 2.")
    assert "Held-out chat: " in report and "epochs (best" in report
    [plot] = stub.sent_files(ADMIN)
    assert plot["data"].startswith(PNG)
    assert status.startswith("Model: version 2 (retrain")
    assert "Live version: 2 of 2 kept" in status and "Last run: 1, published" in status
    assert rolled == texts.ROLLED_BACK.format(new=1, old=2)
    assert status_after.startswith("Model: version 1 (tiny-test")
    [(trigger, by, status_, chat_before, chat_after)] = sql(
        data_dir,
        "SELECT trigger, requested_by, status, live_chat_bits, candidate_chat_bits "
        "FROM training_runs",
    )
    assert (trigger, by, status_) == ("admin", ADMIN, "published")
    assert chat_after < chat_before  # the gate's reason to publish


def test_the_swap_under_a_stream_of_replies_fails_none(settings, generator, tiny_model_path):
    write_chats(settings, chats=4, turns=2)
    services = open_services(settings, generator=generator)
    notes = []

    async def notify(admin, text, plot):
        notes.append(text)

    live = services.live

    async def main():
        await live.start()
        other = load(tiny_model_path)
        other.weights[-1] = other.weights[-1] + np.float32(0.5)  # a different version
        done = asyncio.Event()
        replies = []

        async def user(chat_id):
            turns = [STYLE[chat_id % len(STYLE)], "ok"]
            while not done.is_set():
                replies.append(await live.reply(turns, 0.7))

        streams = [asyncio.create_task(user(5000 + i % 4)) for i in range(12)]
        await asyncio.sleep(0.3)
        before = len(replies)
        await asyncio.to_thread(live.store.publish, other, {"note": "test"})
        swap = await live.swap_to_live()  # loads and warms while the streams go on
        during = len(replies) - before
        await asyncio.sleep(0.3)
        done.set()
        await asyncio.gather(*streams)  # any failed reply would raise here
        await live.stop()
        return swap, before, during, replies

    try:
        swap, before, during, replies = asyncio.run(main())
    finally:
        services.close()
    assert (swap.old, swap.new) == (1, 2)
    assert live.version == 2 and live.generator is not generator
    assert before > 0 and during > 0  # replies kept coming while the new model loaded
    assert all(r.text for r in replies)
    assert notes == []


def test_scheduled_checks_wait_for_new_messages_and_remember_the_last_run(any_settings, generator):
    settings = dataclasses.replace(any_settings, retrain_min_messages=5)
    write_chats(settings, chats=1, turns=3)  # 3 human messages in one chat
    services = open_services(settings, generator=generator)
    notes = []

    async def notify(admin, text, plot):
        notes.append((admin, text))

    async def check():
        return await Retrainer(settings, services.db, services.live, notify).scheduled_check()

    try:
        assert asyncio.run(check()) is False  # 3 < 5
        with services.db.begin() as session:  # a run that saw everything so far
            run = start_run(session, trigger="schedule", last_message_id=last_message_id(session))
            finish_run(session, run.id, status="rejected")
        write_chats(settings, chats=1, turns=4, first_user=6000)
        restarted = open_database_for(settings)  # a restart: nothing kept in memory
        assert new_messages(restarted) == 4
        assert asyncio.run(check()) is False
        write_chats(settings, chats=1, turns=1, first_user=7000)
        assert new_messages(restarted) == 5

        async def run_due():
            retrainer = Retrainer(settings, services.db, services.live, notify)
            assert await retrainer.scheduled_check() is True
            await retrainer.wait()  # the child run ends and reports
            return retrainer

        asyncio.run(run_due())
        with restarted.read() as session:
            reported = [(run.id, run.reported) for run in reversed(recent_runs(session))]
        restarted.dispose()
    finally:
        services.close()
    # The run that reported itself is marked so; the one written by hand above is not.
    assert reported == [(1, False), (2, True)]
    [(admin, text)] = notes
    assert admin is None  # a scheduled run reports to every admin
    assert text.startswith(
        ("Retraining run 2 (schedule): published", "Retraining run 2 (schedule): rejected")
    )
    assert new_messages(services.db) == 0  # the run used up what it saw


def test_a_user_who_withdraws_during_the_run_stops_the_publish(any_settings, data_dir):
    """/forget or /learn off landing while a run trains: its candidate is deleted, unpublished."""
    settings = any_settings
    write_chats(settings, chats=12, turns=6)
    db = open_database_for(settings)
    withdrawn = []

    def report(line: str) -> None:  # called as each epoch ends, in the middle of the run
        if line.startswith("epoch 1:"):
            withdrawn.append(forget_command(db, 5000, "en"))
            withdrawn.append(learn_command(db, 5001, ["off"], "en"))

    config = RetrainConfig(learning_rate=1e-2, epochs=2, base_eval_conversations=20, threads=None)
    run = train_once(settings, db, config=config, report=report)
    assert len(withdrawn) == 2  # both landed during training
    assert run.status == "rejected" and run.new_version is None
    assert "2 users whose messages it was trained on" in run.error
    folder = data_dir / "runs" / f"run-{run.id:05d}"
    assert folder.is_dir() and not (folder / "candidate.npz").exists()
    assert not (folder / "best.weights.h5").exists()
    assert open_store(settings).live_version() == 1
    db.dispose()


def test_the_publish_checks_look_up_users_and_read_no_message(settings, data_dir):
    """The withdrawal check inside the write transaction costs the run's authors' keys,
    never a pass over the messages (at 3M messages that pass held the lock 5.7 s)."""
    write_chats(settings, chats=4, turns=3)
    db = open_database_for(settings)
    with db.read() as session:
        sample = read_training_sample(
            session, since_message_id=0, new_bytes=10**6, sample_bytes=10**6, seed=1
        )
    assert sample.user_ids == {5000, 5001, 5002, 5003}
    result = RunResult(
        accepted=False,
        reason="rejected: no better",
        examples=Examples(*[0] * 8),
        losses=Losses(3.0, 3.0, 2.0, 2.0),
        gate_margin=0.05,
        epochs=1,
        best_epoch=1,
        seconds=1.0,
        fit_seconds=1.0,
    )
    statements = []

    def seen(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        after, version = decide(db, open_store(settings), result, sample, 1, 1, "cli", data_dir)
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)
        db.dispose()
    assert after == result and version is None
    assert any("FROM users" in s for s in statements)
    assert not any("messages" in s for s in statements)


def test_a_candidate_from_a_version_no_longer_live_is_not_published(settings, data_dir):
    """A /rollback (or any publish) while a run trains: publishing would undo it."""
    write_chats(settings, chats=12, turns=6)
    db = open_database_for(settings)
    store = open_store(settings)
    assert store.live_version() == 1

    def report(line: str) -> None:
        if line.startswith("epoch 1:"):
            store.publish(store.load(1), {"note": "published by someone else meanwhile"})

    config = RetrainConfig(learning_rate=1e-2, epochs=2, base_eval_conversations=20, threads=None)
    run = train_once(settings, db, config=config, report=report)
    db.dispose()
    assert run.status == "rejected" and run.new_version is None
    assert "the live version changed from 1 to 2 during the run" in run.error
    assert open_store(settings).live_version() == 2


@pytest.mark.parametrize("memory", [False, True])
def test_a_run_is_judged_with_the_memory_only_when_the_bot_serves_one(settings, memory: bool):
    """The bot serves a chat memory once its window holds enough text to fit one on, and
    the run decides so from the database (a trainer on another host has no memory file)."""
    write_chats(settings, chats=40, turns=6)  # 8 held out: enough to fit the memory's weights
    if not memory:  # a window too small to fit a memory on: the bot serves none
        settings = dataclasses.replace(settings, memory_window_bytes=500)
    db = open_database_for(settings)
    config = RetrainConfig(learning_rate=1e-2, epochs=1, base_eval_conversations=20, threads=None)
    run = train_once(settings, db, config=config, report=lambda line: None)
    db.dispose()
    result = RunResult.from_dict(json.loads(run.result_json))
    assert result.losses.memory is memory
    assert bool(np.isfinite(result.losses.live_chat_without_memory)) is memory
    assert ("as served with the chat memory" in result.reason) is memory
    report = describe_run(run)  # what the admins read
    assert ("as served with the chat memory" in report) is memory
    assert ("Without the chat memory: held-out chat " in report) is memory


def test_a_version_that_fails_to_load_keeps_the_old_one_serving(settings, generator):
    services = open_services(settings, generator=generator)

    async def notify(admin, text, plot):
        pass

    live = services.live

    async def main():
        await live.start()
        live.store.publish(live.store.load(1), {"note": "fails to load"})
        loads = []

        def broken(version):
            loads.append(version)
            raise OSError("disk read error")

        live.store.load = broken
        with pytest.raises(OSError, match="disk read error"):
            await live.swap_to_live()
        assert await live.swap_to_live(retry=False) is None  # the watch does not retry
        reply = await live.reply(["hello"], 0.0)
        await live.stop()
        return loads, reply

    try:
        loads, reply = asyncio.run(main())
    finally:
        services.close()
    assert loads == [2]
    assert live.version == 1 and live.generator is generator
    assert reply.text


def test_a_hung_run_is_stopped_and_reported_even_if_reporting_fails(
    settings, generator, monkeypatch
):
    import bot.retrainer

    monkeypatch.setattr(bot.retrainer, "CHILD_TIMEOUT", 1)  # the child is still importing
    services = open_services(settings, generator=generator)
    notes = []

    async def notify(admin, text, plot):
        notes.append(text)
        raise RuntimeError("the HTTP client is closed")  # as during shutdown

    async def main():
        retrainer = Retrainer(settings, services.db, services.live, notify)
        assert await retrainer.start("admin", requested_by=ADMIN)
        await retrainer.wait()
        return retrainer.running()

    try:
        still_running = asyncio.run(main())
    finally:
        services.close()
    assert notes and notes[0].startswith("Retraining took over 0 minutes and was stopped")
    assert still_running is False  # the lock is free: the next run may start


def test_runs_that_ended_while_no_bot_watched_are_reported_once(settings, generator):
    from storage import close_stale_runs

    services = open_services(settings, generator=generator)
    notes = []

    async def notify(admin, text, plot):
        notes.append((admin, text))

    with services.db.begin() as session:
        # An admin's run whose bot was killed mid-run; the next bot's start closes it.
        start_run(session, trigger="admin", requested_by=ADMIN, last_message_id=0)
        close_stale_runs(session, STALE_RUN)
        cli = start_run(session, trigger="cli", last_message_id=0)  # an operator's run
        finish_run(session, cli.id, status="rejected", error="rejected: no better")

    async def main():
        retrainer = Retrainer(settings, services.db, services.live, notify)
        return await retrainer.report_pending(), await retrainer.report_pending()

    try:
        first, second = asyncio.run(main())
    finally:
        services.close()
    assert (first, second) == (2, 0)
    assert [admin for admin, _ in notes] == [ADMIN, None]  # the asker; every admin
    assert notes[0][1].startswith(f"Retraining run 1 (asked by {ADMIN}): failed")
    assert STALE_RUN in notes[0][1]
    assert notes[1][1].startswith("Retraining run 2 (cli): rejected")


def test_an_install_adopts_each_new_mixture_of_the_shipped_network_once(settings, tmp_path):
    config = ModelConfig(units=16, embed_dim=8)
    old = ModelFile.from_network(build_network(config), config, {"kind": "base"})
    save(old, tmp_path / "old.npz")
    before = dataclasses.replace(settings, model_path=tmp_path / "old.npz")
    assert open_store(before).live_version() == 1  # an install bootstrapped from the old file

    shipped = ModelFile(
        config, old.weights, {"kind": "base", MIX_KEY: {"ngram_order": 3, "network_weight": 0.4}}
    )
    save(shipped, tmp_path / "new.npz")
    after = dataclasses.replace(settings, model_path=tmp_path / "new.npz")
    store = open_store(after)
    assert adopt_shipped_base(after, store) == 2
    assert store.live_version() == 2 and store.load(2).meta[MIX_KEY]["network_weight"] == 0.4
    assert store.info(2)["replaces"] == 1
    assert (store.root / SHIPPED_BASE_CHECKED).exists()
    load_live = store.load_live
    store.load_live = None  # the next starts do not look at the model files again
    assert adopt_shipped_base(after, store) is None
    store.load_live = load_live

    # A later charbot ships the same network mixed another way (a base n-gram of another
    # order): the install adopts that too, once, and /rollback returns to the one before.
    later = ModelFile(
        config, old.weights, {"kind": "base", MIX_KEY: {"ngram_order": 5, "network_weight": 0.3}}
    )
    save(later, tmp_path / "new.npz")
    assert adopt_shipped_base(after, store) == 3
    assert store.load(3).meta[MIX_KEY] == {"ngram_order": 5, "network_weight": 0.3}
    assert store.info(3)["replaces"] == 2
    assert adopt_shipped_base(after, store) is None and store.versions() == [1, 2, 3]

    # An admin preferred the one before (after an earlier charbot, which left no marker,
    # adopted the new one): the check respects that.
    store = open_store(after)
    store.rollback()
    (store.root / SHIPPED_BASE_CHECKED).unlink()
    assert adopt_shipped_base(after, store) is None and store.live_version() == 2

    # another network, or a fine-tune, is never replaced
    other = ModelFile(config, [w + 1 for w in old.weights], shipped.meta)
    save(other, tmp_path / "other.npz")
    fresh = dataclasses.replace(settings, data_dir=tmp_path / "d2", model_path=tmp_path / "old.npz")
    store = open_store(fresh)
    other_base = dataclasses.replace(fresh, model_path=tmp_path / "other.npz")
    assert adopt_shipped_base(other_base, store) is None and store.versions() == [1]
    tuned = dataclasses.replace(settings, data_dir=tmp_path / "d3", model_path=tmp_path / "old.npz")
    store = open_store(tuned)
    store.publish(ModelFile(config, old.weights, {"kind": "retrain"}), {"kind": "retrain"})
    new_base = dataclasses.replace(tuned, model_path=tmp_path / "new.npz")
    assert adopt_shipped_base(new_base, store) is None
    assert store.live_version() == 2 and MIX_KEY not in store.load(2).meta

    # A shipped file that does not load: the live version serves, and the next start
    # checks again.
    broken = dataclasses.replace(tuned, data_dir=tmp_path / "d4")
    store = open_store(broken)
    (tmp_path / "bad.npz").write_bytes(b"not a model")
    bad = dataclasses.replace(broken, model_path=tmp_path / "bad.npz")
    assert adopt_shipped_base(bad, store) is None and store.versions() == [1]
    assert not (store.root / SHIPPED_BASE_CHECKED).exists()
    (tmp_path / "bad.npz").write_bytes((tmp_path / "new.npz").read_bytes())
    assert adopt_shipped_base(bad, store) == 2

    # An install that serves the shipped file as it is (a new one) adopts nothing.
    current = dataclasses.replace(bad, data_dir=tmp_path / "d5")
    store = open_store(current)
    assert adopt_shipped_base(current, store) is None and store.versions() == [1]
    assert (store.root / SHIPPED_BASE_CHECKED).exists()


def test_a_run_killed_after_publishing_is_recorded_as_published(settings, generator, capsys):
    """kill -9 between the version's rename into place and the run's record: the record
    must say what the store says, and `charbot status` must not call the run "running"."""
    from bot.cli import main as charbot_main
    from bot.datadir import reconcile_stale_runs

    store = open_store(settings)
    db = open_database_for(settings)
    with db.begin() as session:
        dead = start_run(session, trigger="admin", requested_by=ADMIN, last_message_id=0).id
        other = start_run(session, trigger="schedule", last_message_id=0).id
    losses = {"live_chat": 3.0, "candidate_chat": 2.0, "live_base": 1.9, "candidate_base": 1.92}
    store.publish(store.load(1), {"run": dead, "trigger": "admin", "losses": losses})
    env = {"CHARBOT_DATA_DIR": str(settings.data_dir), "CHARBOT_MODEL_PATH": "", "HOME": "/"}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        assert charbot_main(["status"]) == 0
    assert "Last run: 2, interrupted (its process stopped" in capsys.readouterr().out

    assert reconcile_stale_runs(db, store, STALE_RUN) == 2
    rows = sql(
        settings.data_dir,
        "SELECT id, status, new_version, candidate_chat_bits FROM training_runs ORDER BY id",
    )
    db.dispose()
    assert rows == [(dead, "published", 2, 2.0), (other, "failed", None, None)]
    assert store.live_version() == 2
