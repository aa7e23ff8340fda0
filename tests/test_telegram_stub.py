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
from telegram import Bot, BotCommand, BotCommandScopeChat, ReplyParameters, Update
from telegram.constants import ChatAction, MessageEntityType, ParseMode
from telegram.error import BadRequest, Conflict, EndPointNotFound, Forbidden, RetryAfter
from telegram.ext import Application, ApplicationBuilder, CommandHandler, ContextTypes

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
