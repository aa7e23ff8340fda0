"""The Bot API stand-in, exercised through the real python-telegram-bot client stack."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
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
        yield server
        assert server.errors == []


def run_with_bot(stub: BotApiStub, body) -> object:
    async def main():
        async with Bot(stub.token, base_url=stub.base_url) as bot:
            return await body(bot)

    return asyncio.run(main())


def raw_post(stub: BotApiStub, method: str, payload: dict, *, token: str | None = None):
    """POST a JSON body with urllib (no PTB): returns (status, decoded body)."""
    url = f"{stub.base_url}{token or stub.token}/{method}"
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_get_me_returns_the_configured_identity():
    with BotApiStub(username="other_test_bot", first_name="Other", bot_id=123) as stub:

        async def body(bot: Bot):
            return bot.bot

        me = run_with_bot(stub, body)
        assert (me.id, me.username, me.first_name, me.is_bot) == (
            123,
            "other_test_bot",
            "Other",
            True,
        )
        assert stub.base_url == f"http://127.0.0.1:{stub.port}/bot"
        assert stub.calls("getMe") == [{}]


def test_wrong_token_and_unknown_method(stub):
    status, body = raw_post(stub, "getMe", {}, token="1:wrong")
    assert (status, body) == (401, {"ok": False, "error_code": 401, "description": "Unauthorized"})

    async def body_(bot: Bot):
        with pytest.raises(EndPointNotFound):
            await bot.do_api_request("sendTelepathy", api_kwargs={"chat_id": USER})

    run_with_bot(stub, body_)
    assert stub.unknown_methods == ["sendTelepathy"]


def test_send_message_returns_a_full_message(stub):
    async def body(bot: Bot):
        first = await bot.send_message(USER, "hello there")
        second = await bot.send_message(USER, "again", reply_parameters=ReplyParameters(1))
        return first, second

    first, second = run_with_bot(stub, body)
    assert first.text == "hello there"
    assert first.chat.id == USER and first.chat.type == "private"
    assert first.from_user.id == stub.bot_id and first.from_user.is_bot
    assert first.date.timestamp() == pytest.approx(time.time(), abs=5)
    assert second.message_id == first.message_id + 1
    assert second.reply_to_message.message_id == first.message_id
    assert second.reply_to_message.text == "hello there"
    sent = stub.sent_messages(USER)
    assert [m["text"] for m in sent] == ["hello there", "again"]
    assert sent[0]["chat_id"] == USER and sent[0]["reply_to_message_id"] is None
    assert sent[1]["reply_parameters"] == {"message_id": 1}
    assert sent[1]["reply_to_message_id"] == 1


def test_text_that_looks_like_json_stays_text(stub):
    async def body(bot: Bot):
        return [(await bot.send_message(USER, text)).text for text in ("123", "true", "[1]")]

    assert run_with_bot(stub, body) == ["123", "true", "[1]"]


def test_empty_and_too_long_texts_are_rejected(stub):
    async def body(bot: Bot):
        for text in ("", "  \n ", "<b> </b>"):
            with pytest.raises(BadRequest, match=r"(?i)message text is empty"):
                await bot.send_message(USER, text, parse_mode=ParseMode.HTML)
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
        == ["Bad Request: message text is empty"] * 3 + ["Bad Request: message is too long"] * 2
    )


def test_entity_parsing_errors_like_telegram(stub):
    async def body(bot: Bot):
        with pytest.raises(BadRequest, match=r"(?i)character '\.' is reserved"):
            await bot.send_message(USER, "Hello.", parse_mode=ParseMode.MARKDOWN_V2)
        with pytest.raises(BadRequest, match=r"(?i)unsupported start tag"):
            await bot.send_message(USER, "1 <br> 2", parse_mode=ParseMode.HTML)
        with pytest.raises(BadRequest, match=r"(?i)can't find end of the entity"):
            await bot.send_message(USER, "snake_case", parse_mode=ParseMode.MARKDOWN)
        ok = await bot.send_message(USER, "*bold* \\.", parse_mode=ParseMode.MARKDOWN_V2)
        html = await bot.send_message(USER, "<b>a</b> &lt;3", parse_mode=ParseMode.HTML)
        return ok.text, html.text

    assert run_with_bot(stub, body) == ("bold .", "a <3")


@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")  # RetryAfter's own
def test_flood_limit_raises_retry_after():
    with BotApiStub(flood_limit=(2, 60), retry_after=3) as stub:

        async def body(bot: Bot):
            await bot.send_message(USER, "one")
            await bot.send_message(USER, "two")
            with pytest.raises(RetryAfter) as caught:
                await bot.send_message(USER, "three")
            return caught.value

        err = run_with_bot(stub, body)
        assert "Retry in 3 seconds" in err.message  # PTB rewords it
        assert stub.flood_rejections == 1
        assert [m["text"] for m in stub.sent_messages()] == ["one", "two"]
        assert stub.rejected[0]["error_code"] == 429


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
    assert stub.pending_updates() == 0
    assert stub.confirmed_update_ids == [first, second, third]
    assert stub.calls("getUpdates")[0] == {"limit": 2}  # PTB omits None params


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
            await stub.await_calls("getUpdates", 1)
            await asyncio.sleep(0.05)
            await second.get_updates(timeout=0)
            with pytest.raises(Conflict):
                await waiting

    started = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - started < 3
    assert stub.conflicts == 1


def test_allowed_updates_filters_and_persists(stub):
    stub.push_message("text", user_id=USER)
    stub.push_update({"my_chat_member": None, "message_reaction": {"x": 1}})

    async def body(bot: Bot):
        return await bot.get_updates(allowed_updates=[Update.MESSAGE])

    updates = run_with_bot(stub, body)
    assert [u.message.text for u in updates] == ["text"]
    assert len(stub.filtered_updates) == 1


def test_commands_are_recorded_per_scope(stub):
    async def body(bot: Bot):
        await bot.set_my_commands([BotCommand("start", "Start"), BotCommand("help", "Help")])
        await bot.set_my_commands(
            [BotCommand("admin", "Admin things")], scope=BotCommandScopeChat(USER)
        )
        await bot.set_my_commands([BotCommand("hilfe", "Hilfe")], language_code="de")
        with pytest.raises(BadRequest, match=r"(?i)bot_command_invalid"):
            await bot.set_my_commands([BotCommand("Bad-Name", "x")])
        chat_commands = await bot.get_my_commands(scope=BotCommandScopeChat(USER))
        await bot.delete_my_commands(language_code="de")
        return chat_commands

    chat_commands = run_with_bot(stub, body)
    assert [c.command for c in chat_commands] == ["admin"]
    assert [c["command"] for c in stub.my_commands()] == ["start", "help"]
    assert stub.my_commands({"type": "chat", "chat_id": USER}) == [
        {"command": "admin", "description": "Admin things"}
    ]
    assert stub.my_commands(language_code="de") == []
    scopes = [r["scope"] for r in stub.registered_commands]
    assert scopes == [{"type": "default"}, {"type": "chat", "chat_id": USER}]


def test_send_photo_and_document_upload_bytes(stub):
    async def body(bot: Bot):
        await bot.send_chat_action(USER, ChatAction.UPLOAD_PHOTO)
        photo = await bot.send_photo(USER, PNG, caption="a <i>plot</i>", parse_mode="HTML")
        document = await bot.send_document(USER, b"col\n1\n", filename="data.csv")
        with pytest.raises(BadRequest, match=r"(?i)image_process_failed"):
            await bot.send_photo(USER, b"not an image")
        return photo, document

    photo, document = run_with_bot(stub, body)
    assert photo.photo[-1].file_size == len(PNG) and photo.caption == "a plot"
    assert document.document.file_name == "data.csv" and document.document.file_size == 6
    files = stub.sent_files
    assert [f["method"] for f in files] == ["sendPhoto", "sendDocument"]
    assert files[0]["data"] == PNG and files[0]["caption"] == "a <i>plot</i>"
    assert files[0]["chat_id"] == USER and files[1]["data"] == b"col\n1\n"
    assert [a["action"] for a in stub.chat_actions(USER)] == ["upload_photo"]


def test_replies_edits_photos_and_callback_queries(stub):
    async def body(bot: Bot):
        sent = await bot.send_message(USER, "pick one")
        with pytest.raises(BadRequest, match=r"(?i)message to be replied not found"):
            await bot.send_message(USER, "x", reply_parameters=ReplyParameters(999))
        lenient = await bot.send_message(
            USER, "x", reply_parameters=ReplyParameters(999, allow_sending_without_reply=True)
        )
        stub.push_photo(USER, caption="look /here")
        stub.push_message("answer", user_id=USER, reply_to_bot_message_id=sent.message_id)
        stub.push_callback_query(USER, "choice-1", message_id=sent.message_id)
        photo, reply, press = await bot.get_updates()
        await press.callback_query.answer("ok")
        edited = await bot.edit_message_text("picked", chat_id=USER, message_id=sent.message_id)
        with pytest.raises(BadRequest, match=r"(?i)message is not modified"):
            await bot.edit_message_text("picked", chat_id=USER, message_id=sent.message_id)
        return lenient, photo, reply, press, edited

    lenient, photo, reply, press, edited = run_with_bot(stub, body)
    assert lenient.reply_to_message is None
    assert photo.message.photo and photo.message.caption == "look /here"
    assert photo.message.caption_entities[0].type == MessageEntityType.BOT_COMMAND
    assert reply.message.reply_to_message.text == "pick one"
    assert reply.message.reply_to_message.from_user.id == stub.bot_id
    assert press.callback_query.data == "choice-1"
    assert press.callback_query.message.text == "pick one"
    assert edited.text == "picked" and edited.edit_date is not None
    assert stub.callback_answers[0]["text"] == "ok"
    assert [e["parsed_text"] for e in stub.edits] == ["picked"]
    # incoming and outgoing messages share the chat's message_id sequence, like a private chat
    ids = [lenient.message_id, photo.message.message_id, reply.message.message_id]
    assert ids == sorted(ids) and len(set(ids)) == 3


def test_blocked_chat_is_forbidden(stub):
    stub.block_chat(USER)

    async def body(bot: Bot):
        with pytest.raises(Forbidden, match="blocked by the user"):
            await bot.send_message(USER, "hi")

    run_with_bot(stub, body)


def test_json_bodies_are_accepted_too(stub):
    status, body = raw_post(stub, "sendMessage", {"chat_id": str(USER), "text": "json"})
    assert status == 200 and body["ok"] and body["result"]["text"] == "json"
    status, body = raw_post(stub, "sendMessage", {"chat_id": USER, "text": ""})
    assert body == {
        "ok": False,
        "error_code": 400,
        "description": "Bad Request: message text is empty",
    }
    assert stub.sent_messages(USER)[0]["chat_id"] == USER


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
            await stub.await_calls("getUpdates")
            update_id = stub.push_message("/start", user_id=USER, first_name="Ada")
            [reply] = await stub.await_messages(USER, 1, timeout=10)
            await app.updater.stop()
            await app.stop()
        assert reply["text"] == "Hello, Ada!"
        assert reply["reply_to_message_id"] is None
        assert update_id in stub.confirmed_update_ids

    asyncio.run(main())
    assert stub.pending_updates() == 0
    assert [a["action"] for a in stub.chat_actions] == ["typing"]
    assert stub.rejected == [] and stub.unknown_methods == []
    assert stub.calls("deleteWebhook")
