"""At home in Telegram, end to end through the Bot API stand-in: the bot's own texts in
its users' languages, when it speaks in groups, /temp's buttons, captions, "typing…"
while the flood limiter holds a reply, and what it keeps (/privacy, /mydata, /forget).

The harness (stand-in, data dir, settings, a running bot) is tests/test_bot_e2e.py's.
"""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from test_bot_e2e import (
    ADMIN,
    BOT_NAME,
    GROUP,
    OTHER,
    PUBLIC,
    USER,
    HookedGenerator,
    data_dir,
    env,
    run,
    say,
    settings,
    sql,
    stub,
    temperature_in_db,
    until,
)

from bot import texts
from bot.app import PROFILE_TASK
from bot.i18n import LANGUAGE_NAMES, LANGUAGES, gettext
from bot.i18n import say as tr
from bot.preferences import TEMP_BUTTON, TEMPERATURE_PRESETS
from bot.settings import load_settings

__all__ = ["data_dir", "env", "settings", "stub"]  # fixtures used here, defined there

pytestmark = pytest.mark.e2e

GROUP_CHAT = {"chat": GROUP, "chat_type": "supergroup", "chat_title": "Friends"}
IN_GROUP = {"chat_id": GROUP, "chat_type": "supergroup", "chat_title": "Friends"}
GROUP_ADMIN = 4004


class BrokenGenerator(HookedGenerator):
    """A model that fails every reply."""

    def before(self):
        raise RuntimeError("the model is broken")


def stored_count(data_dir, chat_id: int) -> int:
    if not (data_dir / "charbot.sqlite3").exists():
        return 0
    return sql(data_dir, "SELECT count(*) FROM messages WHERE chat_id = ?", chat_id)[0][0]


# -- the bot's own texts in the user's language -------------------------------------------


def test_a_german_user_gets_german_help_menus_and_errors(stub, settings, generator):
    async def body(app):
        help_ = await say(stub, "/help", language_code="de")
        bad = await say(stub, "/temp warm", language_code="de")
        learn = await say(stub, "/learn vielleicht", language_code="de-AT")
        unknown = await say(stub, "/quatsch", language_code="de")
        english = await say(stub, "/help", user=OTHER)  # no app language: English
        await app.bot_data[PROFILE_TASK]
        return help_, bad, learn, unknown, english

    help_, bad, learn, unknown, english = run(settings, generator, body)
    assert help_.startswith(gettext(texts.INTRO, "de")) and help_ != english
    assert gettext(texts.TEMP_LINE, "de") in help_
    assert bad == tr("de", texts.TEMP_BAD, shown="“warm”", value="0.6")
    assert learn == gettext(texts.LEARN_BAD, "de")
    assert unknown == gettext(texts.UNKNOWN_COMMAND, "de")
    assert english.startswith(texts.INTRO)

    # The command menus and the bot's descriptions, per language; English is the default.
    assert [c["command"] for c in stub.my_commands()] == PUBLIC
    for language in LANGUAGES[1:]:
        menu = stub.my_commands(language_code=language)
        assert [c["command"] for c in menu] == PUBLIC
        assert menu[0]["description"] == gettext(texts.HELP_MENU, language)
        admin_menu = stub.my_commands({"type": "chat", "chat_id": ADMIN}, language_code=language)
        assert admin_menu[-1]["description"] == gettext(texts.ROLLBACK_MENU, language)
        assert stub.description(language) == gettext(texts.DESCRIPTION, language)
        assert stub.short_description(language) == gettext(texts.SHORT_DESCRIPTION, language)
    assert stub.description() == texts.DESCRIPTION
    assert stub.my_commands(language_code="de")[1]["description"] != texts.TEMP_MENU


def test_lang_overrides_the_app_language_and_is_kept(stub, settings, data_dir, generator):
    async def body(app):
        shown = await say(stub, "/lang", language_code="de")
        chosen = await say(stub, "/lang fr", language_code="de")
        help_ = await say(stub, "/help", language_code="de")
        bad = await say(stub, "/lang klingon", language_code="de")
        emoji = await say(stub, "/lang 🇩🇪", language_code="de")
        return shown, chosen, help_, bad, emoji

    shown, chosen, help_, bad, emoji = run(settings, generator, body)
    codes = ", ".join(LANGUAGES)
    assert shown == tr("de", texts.LANG_SHOW_AUTO, language="Deutsch", codes=codes)
    assert chosen == tr("fr", texts.LANG_SET, language=LANGUAGE_NAMES["fr"])
    assert help_.startswith(gettext(texts.INTRO, "fr"))
    assert bad == tr("fr", texts.LANG_BAD, shown="“klingon”", codes=codes)
    assert emoji == tr("fr", texts.LANG_BAD, shown="“🇩🇪”", codes=codes)
    assert sql(data_dir, "SELECT language, app_language FROM users WHERE id = ?", USER) == [
        ("fr", None)  # commands are not conversation: the app language is noted with text
    ]

    async def after_restart(app):
        kept = await say(stub, "/temp", language_code="de")
        auto = await say(stub, "/lang auto", language_code="de")
        return kept, auto

    kept, auto = run(settings, generator, after_restart)
    assert kept == tr("fr", texts.TEMP_SHOW, value="0.6")
    assert auto == tr("de", texts.LANG_AUTO, language="Deutsch")
    assert sql(data_dir, "SELECT language FROM users WHERE id = ?", USER) == [(None,)]


def test_an_apology_is_in_the_askers_language(stub, settings, data_dir, generator):
    async def body(app):
        return await say(stub, "hola", language_code="es")

    sorry = run(settings, generator, body, wrap=BrokenGenerator)
    assert sorry == gettext(texts.REPLY_FAILED, "es")
    assert sql(data_dir, "SELECT app_language FROM users WHERE id = ?", USER) == [("es",)]


# -- when to speak in groups --------------------------------------------------------------


def test_group_reply_chance_set_by_group_admins_and_kept(stub, settings, data_dir, generator):
    stub.set_chat_admins(GROUP, [GROUP_ADMIN])

    async def chatting(n: int, prefix: str) -> None:
        before = stored_count(data_dir, GROUP)
        for i in range(n):
            stub.push_message(f"{prefix} {i}", user_id=OTHER, **IN_GROUP)
        await until(lambda: stored_count(data_dir, GROUP) >= before + n, what="stored")

    async def body(app):
        await chatting(6, "chance zero")
        await asyncio.sleep(0.5)
        quiet = len(stub.sent_messages(GROUP))  # chance 0: nothing unasked
        mentioned = await say(stub, f"@{BOT_NAME} hi", user=OTHER, **GROUP_CHAT)
        shown = await say(stub, "/chance", user=OTHER, **GROUP_CHAT)
        refused = await say(stub, "/chance 1", user=OTHER, **GROUP_CHAT)
        bad = await say(stub, "/chance 1.5", user=GROUP_ADMIN, **GROUP_CHAT)
        words = await say(stub, "/chance " + "x" * 4000, user=GROUP_ADMIN, **GROUP_CHAT)
        done = await say(stub, f"/chance@{BOT_NAME} 1", user=GROUP_ADMIN, **GROUP_CHAT)
        private = await say(stub, "/chance 1", user=GROUP_ADMIN)
        before = len(stub.sent_messages(GROUP))
        await chatting(5, "chance one")
        await stub.await_messages(GROUP, before + 5)
        return quiet, mentioned, shown, refused, bad, words, done, private

    quiet, mentioned, shown, refused, bad, words, done, private = run(settings, generator, body)
    assert quiet == 0 and mentioned.strip()
    assert shown == tr("en", texts.CHANCE_SHOW, value="0")
    assert refused == texts.CHANCE_REFUSED
    assert bad == tr("en", texts.CHANCE_BAD, shown="“1.5”", value="0")
    assert words.startswith("“xxxx") and len(words) < 400
    assert done == tr("en", texts.CHANCE_SET, value="1")
    assert private == texts.CHANCE_PRIVATE
    assert [c["user_id"] for c in stub.calls("getChatMember")] == [OTHER, GROUP_ADMIN]  # cached
    assert sql(data_dir, "SELECT reply_chance FROM chats WHERE id = ?", GROUP) == [(1.0,)]

    async def after_restart(app):  # the chance is kept; a bot admin may change it too
        before = len(stub.sent_messages(GROUP))
        stub.push_message("still there?", user_id=OTHER, **IN_GROUP)
        await stub.await_messages(GROUP, before + 1)
        return await say(stub, "/chance 0", user=ADMIN, **GROUP_CHAT)

    assert run(settings, generator, after_restart) == tr("en", texts.CHANCE_SET, value="0")
    human = "SELECT count(*) FROM messages WHERE chat_id = ? AND from_bot = 0"
    assert sql(data_dir, human, GROUP) == [(13,)]  # every group message stored, whatever the chance


# -- /temp's buttons ------------------------------------------------------------------------


def test_temperature_buttons_set_it_and_a_forged_one_changes_nothing(
    stub, settings, data_dir, generator
):
    async def body(app):
        await say(stub, "/temp", language_code="it")
        [shown] = stub.sent_messages(USER)
        row = shown["reply_markup"]["inline_keyboard"][0]
        tap = {"message_id": shown["message_id"], "language_code": "it"}
        stub.push_callback(USER, data=TEMP_BUTTON + "1.5", **tap)
        await stub.await_until(lambda: len(stub.callback_answers) == 1)
        for data in ("temp:2.5", "temp:nan", "temp:", "rollback", "temp:1.5 ", "temp:0.60"):
            stub.push_callback(USER, data=data, forged=True, **tap)
        await stub.await_until(lambda: len(stub.callback_answers) == 7)
        return shown, row

    shown, row = run(settings, generator, body)
    assert shown["text"] == tr("it", texts.TEMP_SHOW, value="0.6")
    assert [b["text"] for b in row] == list(TEMPERATURE_PRESETS)
    tapped, *forged = stub.callback_answers
    assert tapped["text"] == tr("it", texts.TEMP_SET, value="1.5")
    assert [f["text"] for f in forged] == [tr("it", texts.TEMP_BUTTON_STALE, value="1.5")] * 6
    assert temperature_in_db(data_dir, USER) == 1.5


# -- captions and "typing…" ------------------------------------------------------------------


def test_captions_are_read_as_text(stub, settings, data_dir, generator):
    async def body(app):
        stub.push_photo(USER, caption="look at my cat")
        stub.push_document(USER, caption="my notes")
        stub.push_photo(USER)  # no caption: nothing to read
        await stub.await_messages(USER, 3)
        stub.push_photo(OTHER, caption="a cat among friends", **IN_GROUP)  # not addressed
        stub.push_photo(OTHER, caption=f"@{BOT_NAME} what is this?", **IN_GROUP)
        await stub.await_messages(GROUP, 1)
        await until(lambda: stored_count(data_dir, GROUP) == 3, what="group stored")
        return stub.sent_texts(USER), stub.sent_messages(GROUP)

    private, group = run(settings, generator, body)
    assert texts.TEXT_ONLY in private and sum(t == texts.TEXT_ONLY for t in private) == 1
    human = sql(data_dir, "SELECT text FROM messages WHERE from_bot = 0 ORDER BY id")
    assert [text for (text,) in human] == [
        "look at my cat",
        "my notes",
        "a cat among friends",
        "what is this?",
    ]
    assert len(group) == 1 and group[0]["reply_to_message_id"] is not None


def test_typing_is_shown_while_the_flood_limiter_holds_a_reply(stub, settings, generator):
    # Telegram allows 20 messages a minute in a group: the 21st mention's reply waits ~3 s.
    mentions = 22

    async def body(app):
        for i in range(mentions):
            stub.push_message(f"@{BOT_NAME} question {i}", user_id=OTHER, **IN_GROUP)
        return await stub.await_messages(GROUP, mentions, timeout=60)

    sent = run(settings, generator, body)
    held = sent[-1]
    released = sent[19]["received_at"]  # the last reply the limiter let through at once
    assert held["received_at"] - released > 1.0  # it was held by the limiter
    # The tiny model answers in milliseconds: only the limiter's wait can show "typing…",
    # and it shows while the held replies wait, never after the last one went out.
    typing = [a["received_at"] for a in stub.chat_actions(GROUP) if a["action"] == "typing"]
    assert any(released < t < held["received_at"] for t in typing), typing
    assert all(t < held["received_at"] for t in typing)


# -- what it keeps --------------------------------------------------------------------------


def test_mydata_returns_exactly_what_is_stored(stub, settings, data_dir, generator):
    async def body(app):
        await say(stub, "first words", language_code="ko")
        await say(stub, "/temp 1.2", language_code="ko")
        await say(stub, "/learn off", language_code="ko")
        await say(stub, f"@{BOT_NAME} in the group 你好 👋", **GROUP_CHAT)
        stub.push_message("/mydata", user_id=USER, language_code="ko")
        await stub.await_until(lambda: len(stub.sent_documents) == 1)
        hint = await say(stub, "/mydata", **GROUP_CHAT)  # a file about one person: privately
        await stub.await_until(lambda: len(stub.sent_documents) == 2)
        privacy = await say(stub, "/privacy", language_code="ko")
        return hint, privacy

    hint, privacy = run(settings, generator, body)
    first, second = stub.sent_documents
    assert first["chat_id"] == second["chat_id"] == USER
    assert first["caption"] == tr("ko", texts.MYDATA_CAPTION, count=2)
    # The group message carried no app language: the one stored with the first is used.
    assert hint == gettext(texts.SENT_PRIVATELY, "ko")
    # The chat memory's minimum of people is the setting's, by default 3.
    assert privacy == tr("ko", texts.PRIVACY, users=3) and "3명 이상" in privacy
    data = json.loads(first["data"])
    # What /forget would delete: their messages, and the bot's turns in their private chat.
    stored = sql(
        data_dir,
        "SELECT chat_id, from_bot, text FROM messages WHERE user_id = ? OR chat_id = ? ORDER BY id",
        USER,
        USER,
    )
    listed = [(m["chat_id"], m["from"] == "bot", m["text"]) for m in data["messages"]]
    assert listed == [(chat, bool(bot), text) for chat, bot, text in stored]
    mine = [m["text"] for m in data["messages"] if m["from"] == "you"]
    assert mine == ["first words", "in the group 你好 👋"]
    assert not any(m["chat_id"] == GROUP and m["from"] == "bot" for m in data["messages"])
    user = data["user"]
    assert (user["telegram_id"], user["temperature"], user["learning"]) == (USER, 1.2, False)
    assert (user["language"], user["app_language"]) == (None, "ko")
    assert json.loads(second["data"]) == data  # nothing changed between the two


def test_privacy_names_the_chat_memorys_configured_minimum_of_people(stub, env, generator):
    settings = load_settings({**env, "CHARBOT_MEMORY_MIN_USERS": "5"}, env_file=None)

    async def body(app):
        english = await say(stub, "/privacy")
        german = await say(stub, "/privacy", language_code="de")
        return english, german

    english, german = run(settings, generator, body)
    assert english == texts.PRIVACY.format(users=5)
    assert "at least 5 different people" in english and "{users}" not in english
    assert german == tr("de", texts.PRIVACY, users=5) and "mindestens 5 verschiedene" in german


def test_forget_says_what_trained_versions_keep(stub, settings, generator):
    async def body(app):
        await say(stub, "remember me", language_code="ru")
        return await say(stub, "/forget", language_code="ru")

    done = run(settings, generator, body)
    assert done == tr("ru", texts.FORGET_DONE, count=1)


def test_privacy_mode_is_reported_in_the_log_and_status(stub, settings, generator, caplog):
    stub.privacy_mode = True

    async def body(app):
        return await say(stub, "/status", user=ADMIN)

    with caplog.at_level(logging.WARNING, logger="bot.app"):
        status = run(settings, generator, body)
    assert texts.PRIVACY_MODE in status
    assert "/setprivacy" in caplog.text


def test_an_anonymous_group_admin_may_set_the_chance_and_a_channel_may_not(
    stub, settings, data_dir, generator
):
    as_group = {"sender_chat": {"id": GROUP, "type": "supergroup", "title": "Friends"}}
    as_channel = {"sender_chat": {"id": -1001234, "type": "channel", "title": "News"}}

    async def body(app):
        channel = await say(stub, "/chance 1", user=OTHER, extra=as_channel, **GROUP_CHAT)
        anonymous = await say(stub, "/chance 0.5", user=OTHER, extra=as_group, **GROUP_CHAT)
        return channel, anonymous

    channel, anonymous = run(settings, generator, body)
    assert channel == texts.CHANCE_REFUSED
    assert anonymous == tr("en", texts.CHANCE_SET, value="0.5")
    assert stub.calls("getChatMember") == []  # the sender chat says it all
    assert sql(data_dir, "SELECT reply_chance FROM chats WHERE id = ?", GROUP) == [(0.5,)]


def test_a_reply_nobody_asked_for_gets_no_apology(stub, settings, data_dir, generator):
    async def body(app):
        await say(stub, "/chance 1", user=ADMIN, **GROUP_CHAT)
        stub.push_message("chatting, not asking", user_id=OTHER, **IN_GROUP)
        await until(lambda: stored_count(data_dir, GROUP) == 1, what="stored")
        await until(lambda: not sql(data_dir, "SELECT * FROM pending_replies"), what="given up")
        command = await say(stub, "/temp", user=OTHER, **GROUP_CHAT)  # one answer, no reply
        asked = await say(stub, f"@{BOT_NAME} and you?", user=OTHER, **GROUP_CHAT)
        await asyncio.sleep(0.5)
        return command, asked

    command, asked = run(settings, generator, body, wrap=BrokenGenerator)
    assert command == tr("en", texts.TEMP_SHOW, value="0.6")
    assert asked == texts.REPLY_FAILED  # asked: an apology
    assert len(stub.sent_messages(GROUP)) == 3  # /chance's answer, /temp's, the apology


def test_forget_answers_in_the_language_chosen_before_it(stub, settings, generator):
    async def body(app):
        await say(stub, "/lang fr", language_code="de")
        await say(stub, "bonjour", language_code="de")
        return await say(stub, "/forget", language_code="de")

    assert run(settings, generator, body) == tr("fr", texts.FORGET_DONE, count=1)
