"""The real Application (from build_application) against the Bot API stand-in.

Settings come from environment variables (CHARBOT_TELEGRAM_BASE_URL points at the stub),
the data dir is a temporary directory with a real SQLite file, and the model is a tiny
untrained one (its replies are noise, but never empty).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import ClassVar

import pytest

from bot import texts
from bot.app import PROFILE_TASK, build_application
from bot.services import open_services
from bot.settings import load_settings

try:
    from tests.telegram_stub import BotApiStub, utf16_len
except ImportError:  # tests/ is not a package: pytest puts tests/ itself on sys.path
    from telegram_stub import BotApiStub, utf16_len

pytestmark = pytest.mark.e2e

ADMIN = 1001
USER = 2002
OTHER = 3003
GROUP = -100500
BOT_NAME = "charbot_test_bot"
PUBLIC = ["help", "temp", "learn", "lang", "chance", "privacy", "mydata", "forget"]


# -- harness -----------------------------------------------------------------------------


@pytest.fixture
def stub():
    with BotApiStub(username=BOT_NAME) as server:
        yield server
        assert server.errors == []
        bad_sends = [
            r
            for r in server.rejected
            if r["method"].lower() == "sendmessage" and r["error_code"] == 400
        ]
        assert bad_sends == []


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def env(stub, data_dir, tiny_model_path) -> dict[str, str]:
    return {
        "TELEGRAM_BOT_TOKEN": stub.token,
        "CHARBOT_TELEGRAM_BASE_URL": stub.base_url,
        "CHARBOT_ADMIN_IDS": str(ADMIN),
        "CHARBOT_DATA_DIR": str(data_dir),
        "CHARBOT_MODEL_PATH": str(tiny_model_path),
    }


@pytest.fixture
def settings(env):
    return load_settings(env, env_file=None)


@contextlib.asynccontextmanager
async def running_bot(settings, generator, *, wrap=None, **options):
    """Start the bot the way `charbot run` does, but inside this event loop; `wrap` puts a
    hook (a HookedGenerator class below) around the generator; `options` go to
    build_application."""
    services = open_services(settings, generator=generator if wrap is None else wrap(generator))
    app = build_application(settings, services, **options)
    try:
        async with app:
            await app.post_init(app)
            await app.start()
            await app.updater.start_polling(poll_interval=0, timeout=1)
            try:
                yield app
            finally:
                await app.updater.stop()
                await app.stop()
                await app.post_shutdown(app)
    finally:
        services.close()


def run(settings, generator, body, **kwargs):
    """Run `body(stub-side helpers)` against a running bot, in a fresh event loop."""

    async def main():
        async with running_bot(settings, generator, **kwargs) as app:
            return await body(app)

    return asyncio.run(main())


async def say(stub, text, *, user=USER, chat=None, count=None, timeout=20, **kwargs):
    """Send `text` and wait for the bot's next message in the chat; return its text."""
    chat_id = user if chat is None else chat
    before = len(stub.sent_messages(chat_id))
    stub.push_message(text, user_id=user, chat_id=chat, **kwargs)
    sent = await stub.await_messages(chat_id, before + 1, timeout=timeout)
    return sent[before]["text"]


def sql(data_dir: Path, query: str, *args):
    with contextlib.closing(sqlite3.connect(data_dir / "charbot.sqlite3")) as conn:
        return conn.execute(query, args).fetchall()


async def until(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def temperature_in_db(data_dir: Path, user_id: int):
    rows = sql(data_dir, "SELECT temperature FROM users WHERE id = ?", user_id)
    return rows[0][0] if rows else None


# -- commands ------------------------------------------------------------------------------


def test_start_and_help_list_every_command_and_the_menu_is_registered(stub, settings, generator):
    async def body(app):
        start = await say(stub, "/start")
        help_ = await say(stub, "/help")
        admin_help = await say(stub, "/help", user=ADMIN)
        await app.bot_data[PROFILE_TASK]  # menus are registered beside polling
        return start, help_, admin_help

    start, help_, admin_help = run(settings, generator, body)
    assert start == help_
    assert "recurrent" in start  # says what the bot is
    for name in PUBLIC:
        assert f"/{name}" in start and f"/{name}" in admin_help
    assert "/status" not in start and "/status" in admin_help

    assert [c["command"] for c in stub.my_commands()] == PUBLIC
    admin_scope = {"type": "chat", "chat_id": ADMIN}
    assert [c["command"] for c in stub.my_commands(admin_scope)] == [
        *PUBLIC,
        "status",
        "retrain",
        "rollback",
    ]
    assert stub.my_commands({"type": "chat", "chat_id": USER}) == []


BAD_TEMPERATURES = [
    "abc",
    "-1",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "1e400",
    "1e-1",
    "3",
    "2.01",
    "0.5 0.7",
    "０.５",
    "٠.٥",
    "+1",
    "0x1",
    "1_0",
    "@charbot_test_bot",
    "0.6.1",
    ".",
]


def test_bad_temperatures_are_refused_and_the_stored_value_stays(
    stub, settings, data_dir, generator
):
    async def body(app):
        assert await say(stub, "/temp 1.5") == "Temperature set to 1.5."
        answers = {value: await say(stub, f"/temp {value}") for value in BAD_TEMPERATURES}
        return answers, await say(stub, "/temp")

    answers, shown = run(settings, generator, body)
    for value, answer in answers.items():
        assert "from 0 to 2" in answer and "/temp 0.6" in answer, value
        assert "Yours stays 1.5" in answer, value
    assert shown.startswith("Your temperature is 1.5 ")
    assert temperature_in_db(data_dir, USER) == 1.5


def test_good_temperatures_are_stored_and_survive_a_restart(stub, settings, data_dir, generator):
    accepted = {"0": 0.0, ".5": 0.5, "1.": 1.0, "2": 2.0, "0,6": 0.6, "1.25": 1.25}

    async def first_run(app):
        assert (await say(stub, "/temp")).startswith("Your temperature is 0.6 ")  # the default
        for value, expected in accepted.items():
            answer = await say(stub, f"/temp {value}")
            assert answer == f"Temperature set to {expected:g}.", value
            assert temperature_in_db(data_dir, USER) == pytest.approx(expected)
        assert await say(stub, "/temp 0.6") == "Temperature set to 0.6."
        assert (await say(stub, "/temp")).startswith("Your temperature is 0.6 ")
        assert await say(stub, "/temp 1.3") == "Temperature set to 1.3."

    run(settings, generator, first_run)

    async def second_run(app):  # a new Application and database connection, same data dir
        private = await say(stub, "/temp")
        # Kept per user, not per chat: the same user sees it in a group too.
        in_group = await say(stub, f"/temp@{BOT_NAME}", chat=GROUP, chat_type="group")
        return private, in_group

    private, in_group = run(settings, generator, second_run)
    assert private.startswith("Your temperature is 1.3 ")
    assert in_group == private
    assert temperature_in_db(data_dir, USER) == 1.3


def test_learn_on_and_off(stub, settings, data_dir, generator):
    async def body(app):
        assert await say(stub, "/learn") == texts.LEARN_ON_NOW
        assert await say(stub, "/learn off") == texts.LEARN_SET_OFF
        assert await say(stub, "/learn") == texts.LEARN_OFF_NOW
        assert sql(data_dir, "SELECT learning FROM users WHERE id = ?", USER) == [(0,)]
        reply = await say(stub, "still talking")  # still answered and stored
        assert await say(stub, "/learn maybe") == texts.LEARN_BAD
        assert await say(stub, "/learn ON") == texts.LEARN_SET_ON
        return reply

    assert run(settings, generator, body)
    assert sql(data_dir, "SELECT learning FROM users WHERE id = ?", USER) == [(1,)]
    assert sql(data_dir, "SELECT text FROM messages WHERE user_id = ?", USER) == [
        ("still talking",)
    ]


def test_forget_deletes_the_users_rows(stub, settings, data_dir, generator):
    async def body(app):
        await say(stub, "/temp 1.7")
        for text in ("one", "two", "three"):
            await say(stub, text)
        await say(stub, "someone else", user=OTHER)
        assert sql(data_dir, "SELECT count(*) FROM messages WHERE user_id = ?", USER) == [(3,)]
        done = await say(stub, "/forget")
        shown = await say(stub, "/temp")
        return done, shown

    done, shown = run(settings, generator, body)
    assert done == texts.FORGET_DONE.format(count=3)
    assert sql(data_dir, "SELECT count(*) FROM messages WHERE user_id = ?", USER) == [(0,)]
    assert sql(data_dir, "SELECT count(*) FROM users WHERE id = ?", USER) == [(0,)]
    assert shown.startswith("Your temperature is 0.6 ")  # the default again
    # The other user's message stays; commands were never stored as turns.
    assert sql(data_dir, "SELECT text FROM messages WHERE user_id = ?", OTHER) == [
        ("someone else",)
    ]
    # (Only human turns: a reply sampled at 1.7 may itself start with "/".)
    assert sql(data_dir, "SELECT count(*) FROM messages WHERE NOT from_bot AND text LIKE '/%'") == [
        (0,)
    ]


def test_status_is_for_admins_only(stub, settings, data_dir, generator):
    async def body(app):
        await say(stub, "hello")
        # The reply is stored just after it is sent.
        await until(lambda: sql(data_dir, "SELECT count(*) FROM messages") == [(2,)])
        refused = await say(stub, "/status")
        shown = await say(stub, "/status", user=ADMIN)
        return refused, shown

    refused, shown = run(settings, generator, body)
    assert refused == texts.STATUS_REFUSED == "This command is for the bot's admins."
    assert shown.splitlines()[0].startswith("Model: version 1 (tiny-test, created 2025-01-01")
    assert "Messages: 2 (1 from people, 1 from the bot)" in shown
    assert "Users: 1, chats: 1" in shown
    assert "Uptime: " in shown
    # Retraining: the store's live version, no run yet, the schedule, what it could learn from.
    assert "Live version: 1 of 1 kept" in shown
    assert "Last run: none yet" in shown
    assert "Next scheduled check: 20" in shown and "1 so far" in shown
    assert "Messages available for training: 1" in shown


def test_unknown_commands_are_not_conversation(stub, settings, data_dir, generator):
    async def body(app):
        return await say(stub, "/frobnicate now")

    assert run(settings, generator, body) == texts.UNKNOWN_COMMAND
    assert sql(data_dir, "SELECT count(*) FROM messages") == [(0,)]


# -- conversation --------------------------------------------------------------------------


def test_a_message_is_stored_then_answered(stub, settings, data_dir, generator):
    async def body(app):
        return await say(stub, "hello there")

    reply = run(settings, generator, body)
    assert reply.strip()
    rows = sql(data_dir, "SELECT user_id, from_bot, text FROM messages ORDER BY id")
    assert rows == [(USER, 0, "hello there"), (None, 1, reply)]
    [sent] = stub.sent_messages(USER)
    assert sql(data_dir, "SELECT telegram_message_id FROM messages WHERE from_bot = 1") == [
        (sent["message_id"],)
    ]
    assert stub.chat_actions(USER) == []  # ready at once: no "typing…" request first


def test_a_slow_reply_shows_typing_first(stub, settings, generator):
    async def body(app):
        return await say(stub, "take your time")

    assert run(settings, generator, body, wrap=SlowGenerator).strip()
    [sent] = stub.sent_messages(USER)
    actions = stub.chat_actions(USER)
    assert actions and {a["action"] for a in actions} == {"typing"}
    assert actions[0]["time"] <= sent["date"] + 1  # whole seconds


def test_the_model_reads_the_chat_so_far_with_the_new_message(stub, settings, generator):
    RecordingGenerator.contexts = []
    group = {"chat": GROUP, "chat_type": "group", "chat_title": "Friends"}

    async def body(app):
        first = await say(stub, "first of all")
        second = await say(stub, "and then")
        stub.push_message("among ourselves", user_id=OTHER, **_push(group))
        in_group = await say(stub, f"@{BOT_NAME} what now?", user=OTHER, **group)
        return first, second, in_group

    first, _, _ = run(settings, generator, body, wrap=RecordingGenerator)
    assert RecordingGenerator.contexts == [
        ["first of all"],
        ["first of all", first, "and then"],
        ["among ourselves", "what now?"],
    ]


def test_a_redelivered_update_is_stored_and_answered_once(stub, settings, data_dir, generator):
    async def body(app):
        update_id = stub.push_message("only once", user_id=USER)
        await stub.await_messages(USER, 1)
        stub.redeliver(update_id)
        await say(stub, "later")  # queued after the redelivery
        await stub.await_until(
            lambda: stub.confirmed_update_ids.count(update_id) == 2, what="the redelivery"
        )
        await asyncio.sleep(0.3)
        return update_id

    update_id = run(settings, generator, body)
    assert sql(data_dir, "SELECT update_id FROM messages WHERE text = 'only once'") == [
        (update_id,)
    ]
    assert len(stub.sent_messages(USER)) == 2  # "only once" and "later", one reply each


def test_chinese_and_emoji(stub, settings, data_dir, generator):
    text = "你好，世界！😀👍🏽 café"

    async def body(app):
        return await say(stub, text)

    reply = run(settings, generator, body)
    assert reply.strip()
    assert sql(data_dir, "SELECT text FROM messages WHERE user_id = ?", USER) == [(text,)]


def test_a_4096_character_message(stub, settings, data_dir, generator):
    text = ("长话短说 " * 1000)[:4094] + "😀"  # the emoji is two UTF-16 units
    assert utf16_len(text) == 4096 and len(text) == 4095

    async def body(app):
        return await say(stub, text)

    reply = run(settings, generator, body)
    assert 0 < utf16_len(reply) <= 4096
    assert sql(data_dir, "SELECT text FROM messages WHERE user_id = ?", USER) == [(text,)]


def test_stickers_and_photos(stub, settings, data_dir, generator):
    async def body(app):
        stub.push_sticker(USER)
        await stub.await_messages(USER, 1)
        stub.push_photo(USER)  # a caption would be read (tests/test_telegram_home.py)
        await stub.await_messages(USER, 2)
        stub.push_sticker(OTHER, GROUP, chat_type="group")  # ignored in groups
        return await say(stub, "and text still works")

    assert run(settings, generator, body)
    assert stub.sent_texts(USER)[:2] == [texts.TEXT_ONLY, texts.TEXT_ONLY]
    assert stub.sent_messages(GROUP) == []
    assert sql(data_dir, "SELECT text FROM messages WHERE user_id = ?", USER) == [
        ("and text still works",)
    ]


def test_group_mention_rules(stub, settings, data_dir, generator):
    group = {"chat": GROUP, "chat_type": "supergroup", "chat_title": "Friends"}

    async def body(app):
        stub.push_message("just chatting among us", user_id=USER, **_push(group))
        await until(lambda: _count(data_dir, "just chatting among us") == 1, what="store")
        stub.push_message("@other_person_bot hi", user_id=OTHER, **_push(group))
        await until(lambda: _count(data_dir, "@other_person_bot hi") == 1, what="store")
        await asyncio.sleep(0.3)
        assert stub.sent_messages(GROUP) == []  # no mention, no reply

        mentioned = await say(stub, f"@{BOT_NAME} how are you?", **group)
        [first] = stub.sent_messages(GROUP)
        assert first["reply_to_message_id"] is not None  # quotes the asker in a group

        replied = await say(
            stub, "and what about you", reply_to_bot_message_id=first["message_id"], **group
        )
        setting = await say(stub, f"/temp@{BOT_NAME} 1", **group)
        stub.push_message("/temp@other_bot 2", user_id=USER, **_push(group))
        await asyncio.sleep(0.3)
        return mentioned, replied, setting

    mentioned, replied, setting = run(settings, generator, body)
    assert mentioned.strip() and replied.strip()
    assert setting == "Temperature set to 1."
    assert temperature_in_db(data_dir, USER) == 1.0  # /temp@other_bot was not for us
    assert len(stub.sent_messages(GROUP)) == 3
    human = sql(
        data_dir, "SELECT text FROM messages WHERE chat_id = ? AND from_bot = 0 ORDER BY id", GROUP
    )
    assert human == [
        ("just chatting among us",),
        ("@other_person_bot hi",),
        ("how are you?",),  # the mention is not part of the conversation
        ("and what about you",),
    ]
    assert sql(data_dir, "SELECT type, title FROM chats WHERE id = ?", GROUP) == [
        ("supergroup", "Friends")
    ]


def test_a_bare_mention_opens_a_new_group_chat_and_its_reply_is_stored(
    stub, settings, data_dir, generator
):
    group = {"chat": GROUP, "chat_type": "group", "chat_title": "New"}

    async def body(app):
        return await say(stub, f"@{BOT_NAME}", **group)  # the chat's very first message

    reply = run(settings, generator, body)
    assert sql(data_dir, "SELECT type, title FROM chats WHERE id = ?", GROUP) == [("group", "New")]
    assert sql(data_dir, "SELECT text, from_bot FROM messages WHERE chat_id = ?", GROUP) == [
        (reply, 1)
    ]


ANONYMOUS_ADMIN = 1087968824  # the placeholder Telegram puts in `from` for them


def test_per_user_commands_sent_as_a_group_or_channel_are_refused(
    stub, settings, data_dir, generator
):
    group = {"chat": GROUP, "chat_type": "supergroup", "chat_title": "Friends"}
    as_group = {"sender_chat": {"id": GROUP, "type": "supergroup", "title": "Friends"}}

    async def body(app):
        await say(stub, "/temp 1.5", user=USER, **group)  # a real user in the same group
        return [
            await say(stub, f"{cmd}@{BOT_NAME}", user=ANONYMOUS_ADMIN, extra=as_group, **group)
            for cmd in ("/temp 0.1", "/learn off", "/forget")
        ]

    assert run(settings, generator, body) == [texts.ANONYMOUS] * 3
    assert sql(data_dir, "SELECT id, temperature, learning FROM users") == [(USER, 1.5, 1)]


def test_anonymous_admins_and_channels_are_stored_as_who_they_post_as(
    stub, settings, data_dir, generator
):
    group = {"chat": GROUP, "chat_type": "supergroup", "chat_title": "Friends"}
    channel = {"id": -100777, "type": "channel", "title": "News"}

    async def body(app):
        anonymous = {"sender_chat": {"id": GROUP, "type": "supergroup", "title": "Friends"}}
        push = {"user_id": ANONYMOUS_ADMIN, **_push(group)}
        stub.push_message("from the group", extra=anonymous, **push)
        stub.push_message("from a channel", extra={"sender_chat": channel}, **push)
        await until(lambda: _count(data_dir, "from a channel") == 1, what="stored")

    run(settings, generator, body)
    rows = sql(data_dir, "SELECT user_id, text FROM messages ORDER BY id")
    assert rows == [(GROUP, "from the group"), (channel["id"], "from a channel")]
    assert ANONYMOUS_ADMIN not in [u for (u,) in sql(data_dir, "SELECT id FROM users")]


def test_admin_answers_asked_in_a_group_go_to_the_admin_privately(stub, settings, generator):
    group = {"chat": GROUP, "chat_type": "supergroup", "chat_title": "Friends"}

    async def body(app):
        never_wrote = await say(stub, f"/status@{BOT_NAME}", user=ADMIN, **group)
        stub.push_message("hi", user_id=ADMIN)  # now the admin has a private chat
        await stub.await_messages(ADMIN, 1, timeout=20)
        hint = await say(stub, f"/status@{BOT_NAME}", user=ADMIN, **group)
        [_, private] = await stub.await_messages(ADMIN, 2, timeout=20)
        refused = await say(stub, f"/status@{BOT_NAME}", user=USER, **group)
        return never_wrote, hint, private["text"], refused

    never_wrote, hint, private, refused = run(settings, generator, body)
    assert never_wrote == texts.PRIVATE_FAILED.format(name="status")
    assert hint == texts.SENT_PRIVATELY
    assert private.startswith("Model: version 1")
    assert refused == texts.STATUS_REFUSED
    assert not any(t.startswith("Model:") for t in stub.sent_texts(GROUP))


def _push(group: dict) -> dict:
    return {
        "chat_id": group["chat"],
        "chat_type": group["chat_type"],
        "chat_title": group["chat_title"],
    }


def _count(data_dir: Path, text: str) -> int:
    if not (data_dir / "charbot.sqlite3").exists():
        return 0
    return sql(data_dir, "SELECT count(*) FROM messages WHERE text = ?", text)[0][0]


def test_twenty_users_at_once_are_all_answered(stub, settings, data_dir, generator):
    users = [10_000 + i for i in range(20)]

    async def body(app):
        for user in users:
            stub.push_message(f"hi from {user}", user_id=user)
        for user in users:
            await stub.await_messages(user, 1, timeout=30)
        await asyncio.sleep(0.3)

    run(settings, generator, body)
    for user in users:
        assert len(stub.sent_messages(user)) == 1, user
    assert sql(data_dir, "SELECT count(*) FROM messages WHERE from_bot = 0") == [(20,)]
    assert sql(data_dir, "SELECT count(*) FROM messages WHERE from_bot = 1") == [(20,)]


# PTB itself reads RetryAfter.retry_after, which warns about its future type.
@pytest.mark.filterwarnings("ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning")
def test_flood_control_is_waited_out(data_dir, tiny_model_path, generator):
    users = [30_000 + i for i in range(8)]
    with BotApiStub(username=BOT_NAME, flood_limit=(4, 1.0), retry_after=1) as stub:
        env = {
            "TELEGRAM_BOT_TOKEN": stub.token,
            "CHARBOT_TELEGRAM_BASE_URL": stub.base_url,
            "CHARBOT_DATA_DIR": str(data_dir),
            "CHARBOT_MODEL_PATH": str(tiny_model_path),
        }

        async def body(app):
            for user in users:
                stub.push_message("hello", user_id=user)
            for user in users:
                await stub.await_messages(user, 1, timeout=30)

        run(load_settings(env, env_file=None), generator, body)
        assert stub.flood_rejections > 0  # Telegram said "retry after 1"...
        assert all(len(stub.sent_messages(user)) == 1 for user in users)  # ...and we did
        assert stub.errors == []


class HookedGenerator:
    """The real generator behind a hook that runs before every batch (in the model's thread)."""

    def __init__(self, generator):
        self._generator = generator

    def __getattr__(self, name):
        return getattr(self._generator, name)

    def before(self):
        pass

    def reply(self, contexts, temperatures):
        self.before()
        return self._generator.reply(contexts, temperatures)


class SlowGenerator(HookedGenerator):
    """Takes a while to think, like a big model on a busy machine."""

    delay = 2.5

    def before(self):
        time.sleep(self.delay)


class RecordingGenerator(HookedGenerator):
    """Notes every context it is asked to answer."""

    contexts: ClassVar[list[list[str]]] = []

    def reply(self, contexts, temperatures):
        RecordingGenerator.contexts += [list(c) for c in contexts]
        return self._generator.reply(contexts, temperatures)


class BrokenOnceGenerator(HookedGenerator):
    failures = 1

    def before(self):
        if BrokenOnceGenerator.failures:
            BrokenOnceGenerator.failures -= 1
            raise RuntimeError("the model exploded")


class GatedGenerator(HookedGenerator):
    """Every batch waits until the test opens the gate."""

    gate = threading.Event()

    def before(self):
        assert self.gate.wait(30)


def test_a_slow_reply_holds_up_nobody_else(stub, settings, generator):
    async def body(app):
        stub.push_message("a slow one", user_id=USER)
        await stub.await_until(lambda: stub.chat_actions(USER), what="typing")
        started = time.monotonic()
        await say(stub, "/temp", user=OTHER)  # a command while the reply is generating
        return time.monotonic() - started

    assert run(settings, generator, body, wrap=SlowGenerator) < SlowGenerator.delay


def test_replies_waiting_for_the_model_do_not_starve_commands(stub, settings, generator):
    users = [20_000 + i for i in range(10)]  # more than the default thread pool has threads
    GatedGenerator.gate.clear()

    async def body(app):
        try:
            for user in users:
                stub.push_message("wait for it", user_id=user)
            await stub.await_until(lambda: len(stub.chat_actions) == len(users), what="typing")
            answer = await asyncio.wait_for(say(stub, "/temp", user=OTHER), 5)
        finally:
            GatedGenerator.gate.set()
        for user in users:
            await stub.await_messages(user, 1)
        return answer

    assert run(settings, generator, body, wrap=GatedGenerator).startswith("Your temperature is")


def test_stopping_finishes_replies_in_flight(stub, settings, data_dir, generator):
    async def main():
        async with running_bot(settings, generator, wrap=SlowGenerator) as app:
            stub.push_message("answer me before you go", user_id=USER)
            await stub.await_until(lambda: stub.chat_actions(USER), what="typing")
            # What run_polling does on SIGTERM: stop fetching, then wait for handlers.
            await app.updater.stop()
            await app.stop()
            assert len(stub.sent_messages(USER)) == 1
            await app.start()  # so that running_bot can stop it again
            await app.updater.start_polling(poll_interval=0, timeout=1)

    asyncio.run(main())
    assert sql(data_dir, "SELECT count(*) FROM messages WHERE from_bot = 1") == [(1,)]


def test_a_failed_generation_gets_an_apology_and_the_bot_carries_on(stub, settings, generator):
    BrokenOnceGenerator.failures = 1

    async def body(app):
        sorry = await say(stub, "first")
        fine = await say(stub, "second")
        return sorry, fine

    sorry, fine = run(settings, generator, body, wrap=BrokenOnceGenerator)
    assert sorry == texts.REPLY_FAILED
    assert fine.strip() and fine != texts.REPLY_FAILED


# -- the real `charbot run` ----------------------------------------------------------------


def test_charbot_run_stops_cleanly_on_sigterm(stub, env, tmp_path, clean_env, charbot):
    process = subprocess.Popen(
        [*charbot, "run"],
        env={**clean_env, **env},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stub.wait_for_calls("getUpdates", 1, timeout=60)
        stub.push_message("/start", user_id=USER)
        [reply] = stub.wait_for_messages(USER, 1, timeout=30)
        assert "/temp" in reply["text"]
        stub.push_message("hello", user_id=USER)
        stub.wait_for_messages(USER, 2, timeout=30)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
        elapsed = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert elapsed < 10
    assert "Traceback" not in err
    assert stub.token not in err and stub.token not in out
    assert stub.token.split(":")[1] not in err
    assert "Application started" in err  # INFO logging is on for `run`
    assert [c["command"] for c in stub.my_commands()] == PUBLIC
