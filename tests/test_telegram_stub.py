"""The Bot API stand-in, exercised through the real python-telegram-bot client stack."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from telegram import (
    Bot,
    BotCommand,
    BotCommandScopeChat,
    ChatMemberAdministrator,
    ChatMemberMember,
    ChatMemberOwner,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    ReplyParameters,
    Update,
)
from telegram.constants import ChatAction, MessageEntityType, ParseMode
from telegram.error import BadRequest, Conflict, EndPointNotFound, Forbidden, RetryAfter
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
)

try:
    from tests.telegram_stub import BotApiStub, utf16_len
except ImportError:  # tests/ is not a package: pytest puts tests/ itself on sys.path
    from telegram_stub import BotApiStub, utf16_len

USER = 4242
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(64))


@pytest.fixture
def stub():
    with BotApiStub() as server:
        server.meet(USER)
        yield server
        assert server.errors == []


def run_with_bot(stub: BotApiStub, body) -> object:
    async def main():
        async with Bot(stub.token, base_url=stub.base_url) as bot:
            return await body(bot)

    return asyncio.run(main())


def raw_post(stub: BotApiStub, method: str, payload: dict, *, token: str | None = None):
    """POST a form body with urllib (no PTB): returns (status, decoded body)."""
    url = f"{stub.base_url}{token or stub.token}/{method}"
    request = urllib.request.Request(url, data=urllib.parse.urlencode(payload).encode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_get_me_returns_the_configured_identity():
    with BotApiStub(token="123:secret", username="other_test_bot") as stub:

        async def body(bot: Bot):
            return bot.bot

        me = run_with_bot(stub, body)
        assert (me.id, me.username, me.is_bot) == (123, "other_test_bot", True)
        assert stub.base_url == f"http://127.0.0.1:{stub.port}/bot"
        assert stub.calls("getMe") == [{}]
        assert me.can_join_groups is True and me.supports_inline_queries is False
        assert me.can_read_all_group_messages is True


def test_privacy_mode_shows_in_get_me():
    with BotApiStub(privacy_mode=True) as stub:

        async def body(bot: Bot):
            return await bot.get_me()

        me = run_with_bot(stub, body)
        assert me.can_read_all_group_messages is False and me.can_join_groups is True
        assert me.supports_inline_queries is False
        assert "can_join_groups" not in stub.bot_user  # only getMe shows the capabilities


def test_wrong_token_and_unknown_method(stub):
    status, body = raw_post(stub, "getMe", {}, token="1:wrong")
    assert (status, body) == (401, {"ok": False, "error_code": 401, "description": "Unauthorized"})

    async def body_(bot: Bot):
        with pytest.raises(EndPointNotFound):
            await bot.do_api_request("sendTelepathy", api_kwargs={"chat_id": USER})

    run_with_bot(stub, body_)
    [rejected] = stub.rejected
    assert (rejected["method"], rejected["error_code"]) == ("sendTelepathy", 404)


def test_send_message_returns_a_full_message(stub):
    async def body(bot: Bot):
        first = await bot.send_message(USER, "hello there")
        second = await bot.send_message(USER, "again", reply_parameters=ReplyParameters(1))
        return first, second

    first, second = run_with_bot(stub, body)
    assert first.text == "hello there"
    assert first.chat.id == USER and first.chat.type == "private"
    assert first.from_user.id == stub.bot_user["id"] and first.from_user.is_bot
    assert first.date.timestamp() == pytest.approx(time.time(), abs=5)
    assert second.message_id == first.message_id + 1
    assert second.reply_to_message.message_id == first.message_id
    assert second.reply_to_message.text == "hello there"
    sent = stub.sent_messages(USER)
    assert [m["text"] for m in sent] == ["hello there", "again"]
    assert sent[0]["chat_id"] == USER and sent[0]["reply_to_message_id"] is None
    assert sent[1]["reply_parameters"] == {"message_id": 1}
    assert sent[1]["reply_to_message_id"] == 1
    assert stub.sent_texts() == ["hello there", "again"]


def test_text_that_looks_like_json_stays_text(stub):
    async def body(bot: Bot):
        texts = ("123", "true", "null", "[1]")
        return [(await bot.send_message(USER, text)).text for text in texts]

    assert run_with_bot(stub, body) == ["123", "true", "null", "[1]"]


def test_empty_and_too_long_texts_are_rejected(stub):
    async def body(bot: Bot):
        for text in ("", "  \n "):
            with pytest.raises(BadRequest, match=r"(?i)message text is empty"):
                await bot.send_message(USER, text)
        with pytest.raises(BadRequest, match=r"(?i)message is too long"):
            await bot.send_message(USER, "x" * 4097)
        await bot.send_message(USER, "x" * 4096)
        # Telegram counts UTF-16 code units: an emoji outside the BMP counts twice.
        await bot.send_message(USER, "😀" * 2048)
        with pytest.raises(BadRequest, match=r"(?i)message is too long"):
            await bot.send_message(USER, "😀" * 2049)

    run_with_bot(stub, body)
    assert utf16_len("😀" * 2048) == 4096
    assert [len(m["text"]) for m in stub.sent_messages()] == [4096, 2048]
    reasons = [r["description"] for r in stub.rejected]
    assert (
        reasons
        == ["Bad Request: message text is empty"] * 2 + ["Bad Request: message is too long"] * 2
    )


def test_formatted_text_is_refused_as_not_modelled(stub):
    async def body(bot: Bot):
        with pytest.raises(BadRequest, match="does not model parse_mode"):
            await bot.send_message(USER, "<b>hi</b>", parse_mode=ParseMode.HTML)
        with pytest.raises(BadRequest, match="does not model parse_mode"):
            await bot.send_photo(USER, PNG, caption="*plot*", parse_mode=ParseMode.MARKDOWN_V2)

    run_with_bot(stub, body)
    assert stub.sent_messages() == [] and stub.sent_files == []


def test_replies_to_unknown_messages_fail_unless_allowed(stub):
    async def body(bot: Bot):
        with pytest.raises(BadRequest, match=r"(?i)message to be replied not found"):
            await bot.send_message(USER, "x", reply_parameters=ReplyParameters(999))
        return await bot.send_message(
            USER, "x", reply_parameters=ReplyParameters(999, allow_sending_without_reply=True)
        )

    lenient = run_with_bot(stub, body)
    assert lenient.reply_to_message is None
    assert stub.sent_messages()[0]["reply_to_message_id"] is None


@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")  # RetryAfter's own
def test_flood_limit_raises_retry_after():
    with BotApiStub(flood_limit=(2, 60), retry_after=3) as stub:
        stub.meet(USER)

        async def body(bot: Bot):
            await bot.send_message(USER, "one")
            await bot.send_message(USER, "two")
            with pytest.raises(RetryAfter) as caught:
                await bot.send_message(USER, "three")
            await bot.send_chat_action(USER, ChatAction.TYPING)  # only sendMessage is limited
            return caught.value

        err = run_with_bot(stub, body)
        assert "Retry in 3 seconds" in err.message  # PTB rewords it
        assert stub.flood_rejections == 1
        assert [m["text"] for m in stub.sent_messages()] == ["one", "two"]
        assert stub.rejected[0]["error_code"] == 429
        assert len(stub.chat_actions) == 1


def test_get_updates_delivers_parsed_messages_and_honours_offset(stub):
    first = stub.push_message("/start@charbot_test_bot hi @charbot_test_bot", user_id=USER)
    second = stub.push_sticker(USER)
    third = stub.push_message("in a group", user_id=USER, chat_id=-100123, chat_type="supergroup")
    assert second == first + 1 and third == second + 1

    async def body(bot: Bot):
        batch = await bot.get_updates(limit=2)
        again = await bot.get_updates()
        rest = await bot.get_updates(offset=batch[-1].update_id + 1)
        final = await bot.get_updates(offset=rest[-1].update_id + 1, timeout=0)
        return batch, again, rest, final

    batch, again, rest, final = run_with_bot(stub, body)
    assert [u.update_id for u in batch] == [first, second]
    assert [u.update_id for u in again] == [first, second, third]  # nothing confirmed yet
    assert [u.update_id for u in rest] == [third] and final == ()
    message = batch[0].message
    assert message.text == "/start@charbot_test_bot hi @charbot_test_bot"
    assert [(e.type, e.offset, e.length) for e in message.entities] == [
        (MessageEntityType.BOT_COMMAND, 0, 23),
        (MessageEntityType.MENTION, 27, 17),
    ]
    assert message.from_user.id == USER and message.chat.type == "private"
    assert batch[1].message.sticker is not None and batch[1].message.text is None
    assert rest[0].message.chat.id == -100123 and rest[0].message.chat.type == "supergroup"
    assert stub.confirmed_update_ids == [first, second, third]
    assert stub.calls("getUpdates")[0] == {"limit": 2}  # PTB omits None params


def test_unconfirmed_updates_are_delivered_again(stub):
    first = stub.push_message("one", user_id=USER)

    async def body(bot: Bot):
        delivered = await bot.get_updates()
        second = stub.push_message("two", user_id=USER)
        # The client did not confirm `first` (no offset): both come, the first again.
        again = await bot.get_updates()
        confirmed = await bot.get_updates(offset=first + 1)
        return delivered, second, again, confirmed

    delivered, second, again, confirmed = run_with_bot(stub, body)
    assert [u.update_id for u in delivered] == [first]
    assert [u.update_id for u in again] == [first, second]
    assert [u.update_id for u in confirmed] == [second]
    assert stub.confirmed_update_ids == [first]


def test_redeliver_sends_the_same_update_id_again(stub):
    update_id = stub.push_message("hello", user_id=USER)

    async def body(bot: Bot):
        first = await bot.get_updates()
        stub.redeliver(update_id)
        dup = await bot.get_updates(offset=update_id + 1)
        after = await bot.get_updates(offset=update_id + 1)
        return first, dup, after

    first, dup, after = run_with_bot(stub, body)
    assert [u.update_id for u in first] == [update_id]
    assert [u.update_id for u in dup] == [update_id]
    assert dup[0].message.message_id == first[0].message.message_id
    assert after == ()
    assert stub.confirmed_update_ids == [update_id, update_id]
    with pytest.raises(KeyError):
        stub.redeliver(update_id + 100)


def test_long_poll_returns_promptly_when_an_update_arrives(stub):
    async def body(bot: Bot):
        timer = threading.Timer(0.3, stub.push_message, args=("late",), kwargs={"user_id": 1})
        started = time.monotonic()
        timer.start()
        updates = await bot.get_updates(timeout=10)
        elapsed = time.monotonic() - started
        empty_started = time.monotonic()
        empty = await bot.get_updates(offset=updates[-1].update_id + 1, timeout=0.5)
        return updates, elapsed, empty, time.monotonic() - empty_started

    updates, elapsed, empty, empty_elapsed = run_with_bot(stub, body)
    assert [u.message.text for u in updates] == ["late"]
    assert 0.2 < elapsed < 3
    assert empty == () and 0.4 < empty_elapsed < 3


def test_newer_get_updates_terminates_a_waiting_one(stub):
    async def main():
        # Each Bot has a one-connection pool for getUpdates, so the rival needs its own Bot.
        async with (
            Bot(stub.token, base_url=stub.base_url) as first,
            Bot(stub.token, base_url=stub.base_url) as second,
        ):
            waiting = asyncio.create_task(first.get_updates(timeout=5))
            await stub.await_until(lambda: stub.calls("getUpdates"), what="the first poll")
            await asyncio.sleep(0.05)
            await second.get_updates(timeout=0)
            with pytest.raises(Conflict):
                await waiting

    started = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - started < 3
    assert stub.rejected == []  # a conflict is not the bot's mistake


def test_commands_are_recorded_per_scope(stub):
    async def body(bot: Bot):
        await bot.set_my_commands([BotCommand("start", "Start"), BotCommand("help", "Help")])
        await bot.set_my_commands(
            [BotCommand("admin", "Admin things")], scope=BotCommandScopeChat(USER)
        )
        with pytest.raises(BadRequest, match=r"(?i)bot_command_invalid"):
            await bot.set_my_commands([BotCommand("Bad-Name", "x")])
        with pytest.raises(BadRequest, match=r"(?i)bot_command_description_invalid"):
            await bot.set_my_commands([BotCommand("fine", " ")])

    run_with_bot(stub, body)
    assert [c["command"] for c in stub.my_commands()] == ["start", "help"]
    assert stub.my_commands({"type": "chat", "chat_id": USER}) == [
        {"command": "admin", "description": "Admin things"}
    ]
    assert stub.my_commands({"type": "chat", "chat_id": 1}) == []


def test_send_photo_uploads_bytes(stub):
    async def body(bot: Bot):
        await bot.send_chat_action(USER, ChatAction.UPLOAD_PHOTO)
        photo = await bot.send_photo(USER, PNG, caption="a plot")
        with pytest.raises(BadRequest, match=r"(?i)image_process_failed"):
            await bot.send_photo(USER, b"not an image")
        with pytest.raises(BadRequest, match=r"(?i)caption is too long"):
            await bot.send_photo(USER, PNG, caption="x" * 1025)
        with pytest.raises(BadRequest, match=r"(?i)wrong parameter action"):
            await bot.send_chat_action(USER, "dancing")
        return photo

    photo = run_with_bot(stub, body)
    assert photo.photo[-1].file_size == len(PNG) and photo.caption == "a plot"
    [sent] = stub.sent_files
    assert sent["data"] == PNG and sent["caption"] == "a plot"
    assert sent["chat_id"] == USER and sent["message_id"] == photo.message_id
    assert stub.sent_files(USER) == [sent] and stub.sent_files(USER + 1) == []
    assert [a["action"] for a in stub.chat_actions(USER)] == ["upload_photo"]


def test_incoming_photos_and_replies_to_the_bot(stub):
    async def body(bot: Bot):
        sent = await bot.send_message(USER, "pick one")
        stub.push_photo(USER, caption="look /here")
        stub.push_message("answer", user_id=USER, reply_to_bot_message_id=sent.message_id)
        as_group = {"sender_chat": {"id": -100, "type": "supergroup", "title": "G"}}
        stub.push_message("hi", user_id=1, chat_id=-100, chat_type="supergroup", extra=as_group)
        return sent, await bot.get_updates()

    sent, (photo, reply, anonymous) = run_with_bot(stub, body)
    assert photo.message.photo and photo.message.caption == "look /here"
    assert photo.message.caption_entities[0].type == MessageEntityType.BOT_COMMAND
    assert reply.message.reply_to_message.text == "pick one"
    assert reply.message.reply_to_message.from_user.id == stub.bot_user["id"]
    assert anonymous.message.sender_chat.id == -100
    # incoming and outgoing messages share the chat's message_id sequence, like a private chat
    ids = [sent.message_id, photo.message.message_id, reply.message.message_id]
    assert ids == sorted(ids) and len(set(ids)) == 3
    with pytest.raises(ValueError):
        stub.push_message("x", user_id=USER, chat_id=USER + 1)  # a private chat is the user's
    with pytest.raises(ValueError):
        stub.push_message("x", user_id=USER, chat_type="group")  # a group needs its chat_id


def test_wait_for_messages_times_out_with_a_clear_message(stub):
    with pytest.raises(AssertionError, match=r"1 message\(s\) to chat 7.*sent \(chat_id, text\)"):
        stub.wait_for_messages(7, 1, timeout=0.2)


def test_application_replies_to_start_over_long_polling(stub):
    async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await context.bot.send_chat_action(update.effective_chat.id, ChatAction.TYPING)
        await update.message.reply_text(f"Hello, {update.effective_user.first_name}!")

    async def main() -> None:
        app: Application = ApplicationBuilder().token(stub.token).base_url(stub.base_url).build()
        app.add_handler(CommandHandler("start", start))
        async with app:
            await app.start()
            await app.updater.start_polling(poll_interval=0, timeout=1)
            await stub.await_until(lambda: stub.calls("getUpdates"), what="polling")
            update_id = stub.push_message("/start", user_id=USER)
            [reply] = await stub.await_messages(USER, 1, timeout=10)
            await app.updater.stop()
            await app.stop()
        assert reply["text"] == "Hello, User!"
        assert reply["reply_to_message_id"] is None
        assert update_id in stub.confirmed_update_ids

    asyncio.run(main())
    assert [a["action"] for a in stub.chat_actions] == ["typing"]
    assert stub.rejected == []  # every method PTB called is modelled
    assert stub.calls("deleteWebhook")


def test_close_ends_a_waiting_long_poll():
    stub = BotApiStub()
    result = {}

    def poll():
        result["status"] = raw_post(stub, "getUpdates", {"timeout": 10})

    thread = threading.Thread(target=poll)
    started = time.monotonic()
    thread.start()
    stub.wait_for_calls("getUpdates")
    stub.close()
    thread.join(5)
    assert time.monotonic() - started < 3
    assert result["status"] == (200, {"ok": True, "result": []})
    stub.close()  # idempotent


def test_the_bot_cannot_write_first_to_a_user_who_never_wrote(stub):
    async def body(bot: Bot):
        with pytest.raises(Forbidden, match="can't initiate conversation"):
            await bot.send_message(5151, "hello?")
        stub.push_message("hi", user_id=5151)
        return (await bot.send_message(5151, "hello!")).text

    assert run_with_bot(stub, body) == "hello!"


def keyboard(*rows: list[tuple[str, str]]) -> InlineKeyboardMarkup:
    """An inline keyboard of callback buttons: rows of (text, callback_data)."""
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(text, callback_data=data) for text, data in row] for row in rows]
    )


def test_incoming_messages_carry_the_users_language(stub):
    stub.push_message("hallo", user_id=USER, language_code="de")
    stub.push_photo(USER, caption="olá", language_code="pt-br")
    stub.push_sticker(USER)
    stub.push_document(USER, caption="see /this", file_name="report.pdf", language_code="en")
    stub.push_document(USER, chat_id=-100200, chat_type="supergroup")

    async def body(bot: Bot):
        return await bot.get_updates()

    text, photo, sticker, document, in_group = run_with_bot(stub, body)
    assert text.message.from_user.language_code == "de"
    assert photo.message.from_user.language_code == "pt-br" and photo.message.caption == "olá"
    assert sticker.message.from_user.language_code is None
    doc = document.message.document
    assert (doc.file_name, doc.mime_type, doc.file_size) == ("report.pdf", "application/pdf", 2048)
    assert doc.file_id and doc.file_unique_id
    assert document.message.caption == "see /this"
    assert document.message.caption_entities[0].type == MessageEntityType.BOT_COMMAND
    assert document.message.from_user.language_code == "en"
    assert in_group.message.document.file_name == "notes.txt"
    assert in_group.message.document.mime_type == "text/plain"
    assert in_group.message.caption is None and in_group.message.chat.id == -100200


def test_commands_are_kept_per_language(stub):
    async def body(bot: Bot):
        await bot.set_my_commands([BotCommand("start", "Start")])
        await bot.set_my_commands([BotCommand("start", "Starten")], language_code="de")
        scope = BotCommandScopeChat(USER)
        await bot.set_my_commands([BotCommand("hilfe", "Hilfe")], scope=scope, language_code="de")
        await bot.set_my_commands([BotCommand("start", "Start")], language_code="")
        for code in ("deu", "DE", "pt-br", "d"):
            with pytest.raises(BadRequest, match=r"(?i)invalid language code specified"):
                await bot.set_my_commands([BotCommand("x", "y")], language_code=code)

    run_with_bot(stub, body)
    assert stub.my_commands() == [{"command": "start", "description": "Start"}]
    assert stub.my_commands(language_code="") == stub.my_commands()
    assert stub.my_commands(language_code="de") == [{"command": "start", "description": "Starten"}]
    assert stub.my_commands(language_code="fr") == []  # no fallback: exactly that list
    chat = {"type": "chat", "chat_id": USER}
    assert [c["command"] for c in stub.my_commands(chat, "de")] == ["hilfe"]
    assert stub.my_commands(chat) == []
    assert stub.calls("setMyCommands")[1]["language_code"] == "de"


def test_descriptions_per_language_fall_back_to_the_default(stub):
    async def body(bot: Bot):
        await bot.set_my_description("A character-level chat bot.")
        await bot.set_my_description("Ein Chatbot.", language_code="de")
        await bot.set_my_short_description("Chats.")
        await bot.set_my_short_description("x" * 120, language_code="fr")
        got = {
            "default": (await bot.get_my_description()).description,
            "de": (await bot.get_my_description("de")).description,
            "it": (await bot.get_my_description("it")).description,
            "short it": (await bot.get_my_short_description("it")).short_description,
            "short fr": (await bot.get_my_short_description("fr")).short_description,
        }
        await bot.set_my_description("", language_code="de")  # removes the German text
        got["de removed"] = (await bot.get_my_description("de")).description
        await bot.set_my_description("x" * 512)
        with pytest.raises(BadRequest, match=r"(?i)description is too long"):
            await bot.set_my_description("x" * 513)
        with pytest.raises(BadRequest, match=r"(?i)short description is too long"):
            await bot.set_my_short_description("x" * 121)
        with pytest.raises(BadRequest, match=r"(?i)invalid language code specified"):
            await bot.set_my_description("Hi", language_code="en-US")
        with pytest.raises(BadRequest, match=r"(?i)invalid language code specified"):
            await bot.get_my_short_description("ENG")
        return got

    got = run_with_bot(stub, body)
    assert got == {
        "default": "A character-level chat bot.",
        "de": "Ein Chatbot.",
        "it": "A character-level chat bot.",
        "short it": "Chats.",
        "short fr": "x" * 120,
        "de removed": "A character-level chat bot.",
    }
    assert stub.description() == "x" * 512 and stub.description("") == "x" * 512
    assert stub.description("de") == "" and stub.description("it") is None
    assert stub.short_description() == "Chats." and stub.short_description("de") is None


def test_get_chat_member_reports_configured_admins(stub):
    group, plain_group = -1001234, -555
    stub.set_chat_admins(group, [11, 12, stub.bot_user["id"]], creator=10)
    stub.push_message("hi", user_id=13, chat_id=plain_group, chat_type="group")

    async def body(bot: Bot):
        members = [await bot.get_chat_member(group, user) for user in (10, 11, 13)]
        me = await bot.get_chat_member(group, bot.id)
        plain = await bot.get_chat_member(plain_group, 13)
        for chat_id in (USER, -999):  # a private chat, a chat the bot is not in
            with pytest.raises(BadRequest, match=r"(?i)chat not found"):
                await bot.get_chat_member(chat_id, USER)
        return members, me, plain

    (owner, admin, member), me, plain = run_with_bot(stub, body)
    assert isinstance(owner, ChatMemberOwner) and owner.user.id == 10 and not owner.is_anonymous
    assert isinstance(admin, ChatMemberAdministrator) and admin.user.id == 11
    assert admin.can_delete_messages and admin.can_restrict_members and not admin.can_be_edited
    assert admin.can_manage_topics is False  # a supergroup's admin
    assert isinstance(member, ChatMemberMember) and member.user.id == 13
    assert isinstance(me, ChatMemberAdministrator) and me.user.is_bot
    assert me.user.username == stub.bot_user["username"]
    assert isinstance(plain, ChatMemberMember)
    calls = stub.calls("getChatMember")
    assert [c["user_id"] for c in calls] == [10, 11, 13, stub.bot_user["id"], 13, USER, USER]
    assert [r["description"] for r in stub.rejected] == ["Bad Request: chat not found"] * 2
    with pytest.raises(ValueError):
        stub.set_chat_admins(USER, [USER])


def test_inline_keyboards_are_validated_and_kept(stub):
    async def body(bot: Bot):
        markup = InlineKeyboardMarkup(
            [
                [
                    InlineKeyboardButton("Yes", callback_data="y"),
                    InlineKeyboardButton("No", callback_data="n"),
                ],
                [InlineKeyboardButton("Docs", url="https://example.org/help")],
            ]
        )
        sent = await bot.send_message(USER, "Sure?", reply_markup=markup)
        longest = await bot.send_message(USER, "ok", reply_markup=keyboard([("é", "é" * 32)]))
        with pytest.raises(BadRequest, match=r"(?i)button_data_invalid"):  # 65 bytes
            await bot.send_message(USER, "x", reply_markup=keyboard([("é", "é" * 32 + "x")]))
        with pytest.raises(BadRequest, match=r"(?i)button_data_invalid"):
            await bot.send_message(USER, "x", reply_markup=keyboard([("empty", "")]))
        return sent, longest

    sent, longest = run_with_bot(stub, body)
    [[yes, no], [docs]] = sent.reply_markup.inline_keyboard
    assert (yes.text, yes.callback_data, no.callback_data) == ("Yes", "y", "n")
    assert docs.url == "https://example.org/help" and docs.callback_data is None
    assert longest.reply_markup.inline_keyboard[0][0].callback_data == "é" * 32
    record = stub.sent_messages(USER)[0]
    assert record["reply_markup"]["inline_keyboard"][0][0] == {"text": "Yes", "callback_data": "y"}
    assert len(stub.sent_messages()) == 2

    def markup_error(markup) -> str:
        status, body = raw_post(
            stub, "sendMessage", {"chat_id": USER, "text": "x", "reply_markup": json.dumps(markup)}
        )
        assert status == 400
        return body["description"]

    both = {"text": "b", "callback_data": "a", "url": "https://example.org"}
    assert "more than one action" in markup_error({"inline_keyboard": [[both]]})
    assert "Text buttons are unallowed" in markup_error({"inline_keyboard": [[{"text": "t"}]]})
    assert "Array of Arrays" in markup_error({"inline_keyboard": [{"text": "t"}]})
    assert "BUTTON_URL_INVALID" in markup_error({"inline_keyboard": [[{"text": "t", "url": "x"}]]})
    no_text = {"inline_keyboard": [[{"callback_data": "a"}]]}
    assert 'Field "text"' in markup_error(no_text)
    web_app = {"inline_keyboard": [[{"text": "t", "web_app": {"url": "https://x.org"}}]]}
    assert "does not model" in markup_error(web_app)
    assert "does not model" in markup_error({"keyboard": [[{"text": "t"}]]})
    assert len(stub.sent_messages()) == 2


def test_callback_queries_are_delivered_and_answered_once(stub):
    async def body(bot: Bot):
        sent = await bot.send_message(USER, "Sure?", reply_markup=keyboard([("Yes", "y")]))
        first = stub.push_callback(USER, message_id=sent.message_id, data="y", language_code="fr")
        second = stub.push_callback(USER, message_id=sent.message_id, data="y")
        updates = await bot.get_updates()
        one, two = (u.callback_query for u in updates)
        assert await one.answer("Done", show_alert=True) is True
        with pytest.raises(BadRequest, match=r"(?i)query is too old.*query ID is invalid"):
            await one.answer("again")
        with pytest.raises(BadRequest, match=r"(?i)query ID is invalid"):
            await bot.answer_callback_query("123456")
        with pytest.raises(BadRequest, match=r"(?i)message_too_long"):
            await two.answer("x" * 201)
        await two.answer("😀" * 100)  # 200 UTF-16 code units
        return sent, (first, second), updates

    sent, update_ids, updates = run_with_bot(stub, body)
    assert [u.update_id for u in updates] == list(update_ids)
    one, two = (u.callback_query for u in updates)
    assert isinstance(one.id, str) and one.id != two.id
    assert one.data == "y" and one.chat_instance
    assert one.from_user.id == USER and one.from_user.language_code == "fr"
    assert two.from_user.language_code is None
    assert one.message.message_id == sent.message_id and one.message.text == "Sure?"
    assert one.message.from_user.id == stub.bot_user["id"] and one.message.chat.id == USER
    assert one.message.reply_markup.inline_keyboard[0][0].callback_data == "y"
    answers = stub.callback_answers
    assert [(a["callback_query_id"], a["text"], a["show_alert"]) for a in answers] == [
        (one.id, "Done", True),
        (two.id, "😀" * 100, False),
    ]
    assert answers[0]["data"] == "y" and answers[0]["user_id"] == USER
    assert answers[0]["message_id"] == sent.message_id
    assert stub.callback_answers(USER) == answers and stub.callback_answers(USER + 1) == []
    assert len(stub.calls("answerCallbackQuery")) == 5
    with pytest.raises(ValueError, match="no message"):
        stub.push_callback(USER, message_id=999, data="y")
    with pytest.raises(ValueError, match="no button"):
        stub.push_callback(USER, message_id=sent.message_id, data="n")


def test_callback_queries_in_groups(stub):
    group = -100300
    stub.push_message("/menu", user_id=USER, chat_id=group, chat_type="supergroup")

    async def body(bot: Bot):
        sent = await bot.send_message(group, "Menu", reply_markup=keyboard([("A", "a")]))
        stub.push_callback(77, chat_id=group, message_id=sent.message_id, data="a")
        with pytest.raises(ValueError):  # the bot's message is in the group, not in 77's chat
            stub.push_callback(77, message_id=sent.message_id, data="a")
        updates = await bot.get_updates(offset=-1)
        return updates[-1].callback_query

    query = run_with_bot(stub, body)
    assert query.from_user.id == 77 and query.message.chat.id == group
    assert query.message.chat.type == "supergroup"


def test_send_document_uploads_bytes_with_their_file_name(stub):
    async def body(bot: Bot):
        await bot.send_chat_action(USER, ChatAction.UPLOAD_DOCUMENT)
        first = await bot.send_document(
            USER, b"a,b\n1,2\n", filename="data.csv", caption="the data"
        )
        odd_name = 'Bericht über "Q3".txt'
        second = await bot.send_document(
            USER,
            b"hello",
            filename=odd_name,
            reply_parameters=ReplyParameters(first.message_id),
            message_thread_id=7,
            reply_markup=keyboard([("More", "more")]),
        )
        unnamed = await bot.send_document(USER, b"\x00\x01")
        with pytest.raises(BadRequest, match=r"(?i)file must be non-empty"):
            await bot.send_document(USER, b"", filename="empty.txt")
        with pytest.raises(BadRequest, match=r"(?i)caption is too long"):
            await bot.send_document(USER, b"x", filename="x.txt", caption="x" * 1025)
        await bot.send_document(USER, b"x", filename="x.txt", caption="😀" * 512)
        return first, second, unnamed, odd_name

    first, second, unnamed, odd_name = run_with_bot(stub, body)
    doc = first.document
    assert (doc.file_name, doc.mime_type, doc.file_size) == ("data.csv", "text/csv", 8)
    assert first.caption == "the data" and first.from_user.id == stub.bot_user["id"]
    assert second.document.file_name == odd_name and second.caption is None
    assert second.reply_to_message.message_id == first.message_id
    assert second.message_thread_id == 7
    assert second.reply_markup.inline_keyboard[0][0].callback_data == "more"
    assert unnamed.document.mime_type == "application/octet-stream"
    records = stub.sent_documents
    assert len(records) == 4 and stub.sent_documents(USER + 1) == []
    assert records[0] == {
        "chat_id": USER,
        "file_name": "data.csv",
        "mime_type": "text/csv",
        "data": b"a,b\n1,2\n",
        "caption": "the data",
        "message_thread_id": None,
        "reply_to_message_id": None,
        "message_id": first.message_id,
    }
    assert type(records[0]["data"]) is bytes
    assert records[1]["file_name"] == odd_name and records[1]["data"] == b"hello"
    assert records[1]["message_thread_id"] == 7
    assert records[1]["reply_to_message_id"] == first.message_id
    assert stub.sent_files == []  # photos only
    assert [a["action"] for a in stub.chat_actions(USER)] == ["upload_document"]
    reasons = [r["description"] for r in stub.rejected]
    assert reasons == [
        "Bad Request: file must be non-empty",
        "Bad Request: message caption is too long",
    ]


def test_edit_message_reply_markup(stub):
    async def body(bot: Bot):
        sent = await bot.send_message(USER, "Pick", reply_markup=keyboard([("One", "1")]))
        edited = await bot.edit_message_reply_markup(
            USER, sent.message_id, reply_markup=keyboard([("Two", "2")], [("Three", "3")])
        )
        with pytest.raises(BadRequest, match=r"(?i)message is not modified"):
            await bot.edit_message_reply_markup(
                USER, sent.message_id, reply_markup=keyboard([("Two", "2")], [("Three", "3")])
            )
        with pytest.raises(ValueError, match="no button"):  # the old button is gone
            stub.push_callback(USER, message_id=sent.message_id, data="1")
        stub.push_callback(USER, message_id=sent.message_id, data="3")
        removed = await bot.edit_message_reply_markup(USER, sent.message_id)
        with pytest.raises(BadRequest, match=r"(?i)message is not modified"):
            await bot.edit_message_reply_markup(USER, sent.message_id)
        with pytest.raises(BadRequest, match=r"(?i)message to edit not found"):
            await bot.edit_message_reply_markup(USER, 999, reply_markup=keyboard([("A", "a")]))
        stub.push_message("mine", user_id=USER)
        users = (await bot.get_updates())[-1].message
        with pytest.raises(BadRequest, match=r"(?i)message can't be edited"):
            await bot.edit_message_reply_markup(
                USER, users.message_id, reply_markup=keyboard([("A", "a")])
            )
        return sent, edited, removed

    sent, edited, removed = run_with_bot(stub, body)
    assert edited.message_id == sent.message_id and edited.text == "Pick"
    assert [[b.callback_data for b in row] for row in edited.reply_markup.inline_keyboard] == [
        ["2"],
        ["3"],
    ]
    assert edited.edit_date is not None
    assert removed.reply_markup is None and removed.text == "Pick"
    calls = stub.calls("editMessageReplyMarkup")
    assert len(calls) == 6 and calls[0]["message_id"] == sent.message_id
    assert "reply_markup" not in calls[2]
    with pytest.raises(ValueError, match="no button"):  # no keyboard any more
        stub.push_callback(USER, message_id=sent.message_id, data="2")


def test_application_handles_button_presses(stub):
    async def menu(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await update.message.reply_text("Sure?", reply_markup=keyboard([("Yes", "yes")]))

    async def pressed(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        await query.answer(f"You said {query.data}")
        await query.edit_message_reply_markup(None)

    async def main() -> None:
        app: Application = ApplicationBuilder().token(stub.token).base_url(stub.base_url).build()
        app.add_handler(CommandHandler("menu", menu))
        app.add_handler(CallbackQueryHandler(pressed))
        async with app:
            await app.start()
            await app.updater.start_polling(poll_interval=0, timeout=1)
            stub.push_message("/menu", user_id=USER)
            [sent] = await stub.await_messages(USER, 1, timeout=10)
            stub.push_callback(USER, message_id=sent["message_id"], data="yes")
            await stub.await_until(lambda: stub.calls("editMessageReplyMarkup"), timeout=10)
            await app.updater.stop()
            await app.stop()

    asyncio.run(main())
    [answer] = stub.callback_answers
    assert answer["text"] == "You said yes" and answer["data"] == "yes"
    assert stub.rejected == []
