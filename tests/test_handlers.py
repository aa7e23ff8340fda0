"""The pieces under the handlers: who a message is for, safe reply text, /temp parsing, logs."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import sys
import urllib.parse
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from telegram import Chat, Message, MessageEntity, Update, User
from telegram.error import BadRequest, NetworkError

from bot.commands import help_text
from bot.conversation import telegram_text, utf16_len
from bot.handlers import SERVICES, log_error
from bot.i18n import LANGUAGES
from bot.inbox import addressed_text
from bot.logs import RedactingFormatter, filtered_stderr
from bot.logs import _is_tensorflow_chatter as is_tensorflow_chatter
from bot.metrics import Metrics
from bot.preferences import parse_temperature
from bot.profile import command_menu, register_profile

BOT = SimpleNamespace(id=777, username="charbot_test_bot")
ALICE = User(1, "Alice", is_bot=False)
PRIVATE = Chat(1, Chat.PRIVATE)
GROUP = Chat(-5, Chat.SUPERGROUP, title="Friends")
NOW = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def message(text, chat=GROUP, entities=(), reply_to=None) -> Message:
    return Message(
        1, NOW, chat, from_user=ALICE, text=text, entities=entities, reply_to_message=reply_to
    )


def mention(text: str, word: str) -> MessageEntity:
    start = utf16_len(text[: text.index(word)])
    return MessageEntity(MessageEntity.MENTION, start, utf16_len(word))


# -- who is the message for ---------------------------------------------------------------


def test_private_messages_are_always_for_the_bot():
    assert addressed_text(message("hello", PRIVATE), BOT) == (True, "hello")


def test_group_messages_need_a_mention_or_a_reply():
    assert addressed_text(message("hello all"), BOT) == (False, "hello all")
    text = "@someone_else hi"
    assert addressed_text(message(text, entities=[mention(text, "@someone_else")]), BOT) == (
        False,
        text,
    )


@pytest.mark.parametrize(
    ("text", "stored"),
    [
        ("@charbot_test_bot how are you?", "how are you?"),
        ("@Charbot_Test_Bot, hi", "hi"),
        ("so @charbot_test_bot what now", "so what now"),
        ("😀👍🏽 @charbot_test_bot 你好", "😀👍🏽 你好"),
        ("@charbot_test_bot", ""),
    ],
)
def test_the_mention_is_cut_out_of_the_text(text, stored):
    word = text[text.index("@") :].split()[0].rstrip(",")
    assert addressed_text(message(text, entities=[mention(text, word)]), BOT) == (True, stored)


def test_a_mention_without_entities_still_counts():
    assert addressed_text(message("hey @charbot_test_bot!"), BOT) == (True, "hey !")


@pytest.mark.parametrize(
    "text", ["mail me at x@charbot_test_bot.org", "ask a@charbot_test_bot", "@@charbot_test_bot"]
)
def test_the_username_inside_an_address_is_no_mention(text):
    assert addressed_text(message(text), BOT) == (False, text)


def test_a_text_mention_of_the_bot_counts():
    bot_user = User(BOT.id, "Charbot", is_bot=True)
    entity = MessageEntity(MessageEntity.TEXT_MENTION, 0, 7, user=bot_user)
    assert addressed_text(message("Charbot tell me", entities=[entity]), BOT) == (True, "tell me")


def test_a_reply_to_the_bot_counts_but_a_reply_to_someone_else_does_not():
    from_bot = Message(9, NOW, GROUP, from_user=User(BOT.id, "Charbot", is_bot=True), text="hi")
    from_alice = Message(8, NOW, GROUP, from_user=ALICE, text="hi")
    assert addressed_text(message("yes", reply_to=from_bot), BOT) == (True, "yes")
    assert addressed_text(message("yes", reply_to=from_alice), BOT) == (False, "yes")


# -- reply text ---------------------------------------------------------------------------


def test_telegram_text_is_trimmed_capped_and_never_empty():
    assert telegram_text("  hi \n") == "hi"
    assert telegram_text(" \n\t ") == "…"
    assert telegram_text("a" * 5000) == "a" * 4096
    # An emoji is two UTF-16 units: one that would straddle the limit goes whole.
    assert telegram_text("a" * 4095 + "😀") == "a" * 4095
    assert telegram_text("a" * 4094 + "😀") == "a" * 4094 + "😀"


@given(st.text())
def test_telegram_text_always_fits(text):
    out = telegram_text(text)
    assert out and out == out.strip() and utf16_len(out) <= 4096
    out.encode("utf-8")  # no lone surrogates from a cut pair


# -- /temp --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [("0", 0.0), ("2", 2.0), (".5", 0.5), ("1.", 1.0), ("0,6", 0.6), ("0.60", 0.6), ("002", 2.0)],
)
def test_accepted_temperatures(text, value):
    assert parse_temperature([text]) == value


@pytest.mark.parametrize(
    "args",
    [
        ["abc"],
        ["-1"],
        ["nan"],
        ["inf"],
        ["1e400"],
        ["3"],
        ["0.5", "0.7"],
        ["０.５"],
        ["2.0001"],
        ["1e0"],
        ["+1"],
        ["."],
        [","],
        ["1_0"],
        ["٣"],
        ["0.5x"],
        [],
    ],
)
def test_refused_temperatures(args):
    with pytest.raises(ValueError):
        parse_temperature(args)


@given(st.text())
def test_any_accepted_temperature_is_ascii_and_in_range(text):
    try:
        value = parse_temperature([text])
    except ValueError:
        return
    assert text.isascii() and 0.0 <= value <= 2.0


@given(st.floats(min_value=0, max_value=2))
def test_every_temperature_in_range_written_plainly_is_accepted(value):
    written = f"{value:.4f}"
    assert parse_temperature([written]) == pytest.approx(float(written))


def test_help_lists_every_command_and_admin_ones_only_for_admins():
    public, admin = help_text(admin=False), help_text(admin=True)
    for name in ("/help", "/start", "/temp", "/learn", "/lang", "/chance", "/privacy", "/forget"):
        assert name in public and name in admin
    assert "/status" not in public and "/status" in admin
    assert [c.command for c in command_menu(admin=True)] == [
        "help",
        "temp",
        "learn",
        "lang",
        "chance",
        "privacy",
        "mydata",
        "forget",
        "status",
        "retrain",
        "rollback",
    ]


# -- start-up and errors ------------------------------------------------------------------


class FussyBot:
    """set_my_commands fails for a chat the bot has never seen, like Telegram does."""

    def __init__(self):
        self.registered = []
        self.descriptions = []

    async def set_my_commands(self, commands, scope=None, language_code=None):
        if scope is not None and scope.chat_id == 404:
            raise BadRequest("Chat not found")
        self.registered.append((scope, language_code, [c.command for c in commands]))
        return True

    async def get_my_description(self, language_code=None):
        return SimpleNamespace(description="")

    async def get_my_short_description(self, language_code=None):
        return SimpleNamespace(short_description="")

    async def set_my_description(self, description, language_code=None):
        self.descriptions.append(language_code)

    async def set_my_short_description(self, short_description, language_code=None):
        pass


def test_an_admin_the_bot_cannot_reach_is_logged_not_fatal(caplog):
    bot = FussyBot()
    with caplog.at_level(logging.WARNING, logger="bot.profile"):
        asyncio.run(register_profile(bot, frozenset({404, 7})))
    registered = [(s.chat_id if s else None, lang) for s, lang, _ in bot.registered]
    assert registered[:2] == [(None, None), (7, None)]  # English: the default
    assert (None, "de") in registered and (7, "de") in registered
    assert len(registered) == 2 * len(LANGUAGES)  # the unreachable admin only cost a line
    assert bot.descriptions == [None, *LANGUAGES[1:]]  # every language's description too
    assert caplog.text.count("Chat not found") == 1  # tried once, then skipped
    assert "admin 404" in caplog.text


def test_errors_are_logged_with_the_update_id_and_counted(caplog):
    update = Update(4321)
    services = SimpleNamespace(metrics=Metrics())
    context = SimpleNamespace(error=RuntimeError("boom"), bot_data={SERVICES: services})
    polling = SimpleNamespace(error=NetworkError("timed out"), bot_data={SERVICES: services})
    with caplog.at_level(logging.INFO, logger="bot.handlers"):
        asyncio.run(log_error(update, context))
        asyncio.run(log_error(None, polling))
    [failed, network] = caplog.records
    assert failed.levelno == logging.ERROR and "update 4321" in failed.getMessage()
    assert failed.exc_info[1] is context.error
    assert network.levelno == logging.WARNING and "timed out" in network.getMessage()
    # a handler's failure is an error; polling's network trouble (retried) is not
    assert services.metrics.registry.get_sample_value("charbot_errors_total") == 1.0


@pytest.mark.parametrize(
    "leak",
    [
        "POST https://api.telegram.org/bot{token}/getMe failed",
        # PTB capitalises "Bad Request: ..." descriptions, lower-casing the rest
        "talking to Telegram failed: Invalid url /bot{lower}/getupdates",
        "GET /bot{upper}/X",
        "quoted: https%3A%2F%2Fx%2Fbot{quoted}",
        "the secret part alone: {secret}",
    ],
)
def test_the_token_is_redacted_from_logs_in_every_form(leak):
    token = "123456:Test-Token_abcdefGHIJ"
    formatter = RedactingFormatter("%(message)s", secrets=[token])
    text = leak.format(
        token=token,
        lower=token.lower(),
        upper=token.upper(),
        quoted=urllib.parse.quote(token, safe=""),
        secret=token.split(":")[1],
    )
    try:
        raise RuntimeError(text)
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, "f", 1, "%s", (text,), sys.exc_info())
    shown = formatter.format(record)
    assert "<token>" in shown
    assert "test-token_abcdefghij" not in shown.lower()


def test_tensorflow_import_chatter_is_dropped_but_warnings_stay(capfd):
    with filtered_stderr(is_tensorflow_chatter):
        os.write(
            2, b"WARNING: All log messages before absl::InitializeLog() is called are written\n"
        )
        os.write(2, b"I0000 00:00:1795463540.644774    9160 port.cc:153] oneDNN custom ops\n")
        os.write(2, b"W0000 00:00:1795463540.644774    9160 thing.cc:1] a real warning\n")
    err = capfd.readouterr().err
    assert err == "W0000 00:00:1795463540.644774    9160 thing.cc:1] a real warning\n"


def test_one_chats_updates_run_in_order_other_chats_meanwhile():
    from bot.dispatch import ChatOrderedUpdates

    done = []

    async def handle(name, delay):
        await asyncio.sleep(delay)
        done.append(name)

    def update(chat):
        return SimpleNamespace(effective_chat=None if chat is None else SimpleNamespace(id=chat))

    async def main():
        processor = ChatOrderedUpdates()
        # as PTB does: one task per update, created in arrival order
        tasks = [
            asyncio.create_task(processor.process_update(update(chat), handle(name, delay)))
            for name, chat, delay in [
                ("group: slow message", 1, 0.2),
                ("group: mention right behind it", 1, 0.0),
                ("other chat", 2, 0.05),
                ("no chat (e.g. a poll)", None, 0.0),
            ]
        ]
        await asyncio.gather(*tasks)
        return processor

    processor = asyncio.run(main())
    assert done == [
        "no chat (e.g. a poll)",
        "other chat",
        "group: slow message",
        "group: mention right behind it",
    ]
    assert processor._locks == {} and processor._users == {}  # nothing kept per chat


def test_a_flooded_chat_cannot_hold_every_update_slot():
    from bot.dispatch import ChatOrderedUpdates

    done = []

    async def handle(name, delay):
        await asyncio.sleep(delay)
        done.append(name)

    async def main():
        processor = ChatOrderedUpdates(max_waiting_per_chat=1)  # one running + one waiting
        chat = SimpleNamespace(effective_chat=SimpleNamespace(id=1))
        await asyncio.gather(
            *(
                asyncio.create_task(processor.process_update(chat, handle(name, delay)))
                for name, delay in [("first", 0.2), ("second", 0.0), ("third", 0.0)]
            )
        )

    asyncio.run(main())
    assert done == ["third", "first", "second"]  # the third did not queue behind the others
