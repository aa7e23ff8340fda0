"""Telegram handlers: thin, no SQL and no TensorFlow here.

Each one reads the update, calls the command table's functions (bot/commands.py) or the
conversation functions (in a worker thread: they block on the database) and the live
model, and answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re

from telegram import Bot, Message, Update
from telegram.constants import ChatAction, ChatType, MessageEntityType
from telegram.error import Conflict, NetworkError, TelegramError
from telegram.ext import ContextTypes

from bot import commands, texts
from bot.conversation import (
    Incoming,
    read_context,
    record_and_read,
    record_bot_turn,
    record_human_turn,
    telegram_text,
    user_temperature,
)
from bot.replies import Busy
from bot.services import Services

log = logging.getLogger(__name__)

SERVICES = "services"  # bot_data key of the Services
TYPING_DELAY = 0.5  # seconds; a reply ready sooner is sent without "typing…" first
TYPING_RENEWAL = 4.0  # seconds; Telegram shows "typing…" for about 5 s per action
TYPING_GRACE = 2.0  # seconds the reply waits for a typing action still on its way
GROUP_TYPES = (ChatType.GROUP, ChatType.SUPERGROUP)


def services_of(context: ContextTypes.DEFAULT_TYPE) -> Services:
    return context.bot_data[SERVICES]


# -- commands -------------------------------------------------------------------------


def command_handler(command: commands.Command):
    """The handler that answers `command` (an entry of commands.COMMANDS)."""

    async def handle(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        # Telegram puts one placeholder account in `from` for everyone who posts as a
        # channel or an anonymous admin: a setting changed or a /forget done there would
        # hit all of them.
        if command.personal and message.sender_chat is not None:
            await message.reply_text(texts.ANONYMOUS)
            return
        services = services_of(context)
        user_id = update.effective_user.id
        request = commands.Request(
            services, user_id, context.args or [], admin=services.settings.is_admin(user_id)
        )
        await message.reply_text(await commands.answer(command, request))

    handle.__doc__ = f"Answer /{command.name}."
    return handle


async def unknown_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Point to /help when a private chat sends a command the bot does not know."""
    await update.effective_message.reply_text(texts.UNKNOWN_COMMAND)


# -- conversation -----------------------------------------------------------------------


async def converse(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Store a text message and answer it if it is meant for the bot."""
    services = services_of(context)
    message = update.effective_message
    chat, user = update.effective_chat, update.effective_user
    addressed, text = addressed_text(message, context.bot)
    if not text:  # only a mention: nothing to store, answer from the chat so far
        if not addressed:
            return
        temperature = await asyncio.to_thread(
            user_temperature, services.db, user.id, user.full_name, (chat.id, chat.type, chat.title)
        )
        turns = await asyncio.to_thread(
            read_context, services.db, chat.id, services.live.max_prompt_bytes
        )
    else:
        incoming = Incoming(
            chat_id=chat.id,
            chat_type=chat.type,
            chat_title=chat.title,
            user_id=user.id,
            user_name=user.full_name,
            text=text,
            message_id=message.message_id,
            update_id=update.update_id,
        )
        if addressed:  # one transaction stores the message and reads the reply's context
            stored = await asyncio.to_thread(
                record_and_read, services.db, incoming, services.live.max_prompt_bytes
            )
            temperature, turns = stored if stored is not None else (None, None)
        else:
            temperature = await asyncio.to_thread(record_human_turn, services.db, incoming)
        if temperature is None:
            log.info("update %s was delivered again; stored and answered before", update.update_id)
            return
    if not addressed:
        return

    async with typing(context.bot, chat.id):
        failure = texts.REPLY_FAILED
        try:
            reply = await services.live.reply(turns, temperature)
        except Busy:
            log.warning("too many replies waiting: update %s gets 'busy'", update.update_id)
            reply, failure = None, texts.BUSY
        except Exception:
            log.exception("generating a reply for update %s failed", update.update_id)
            reply = None
    if reply is None:
        await message.reply_text(failure, do_quote=chat.type in GROUP_TYPES)
        return
    answer = telegram_text(reply.text)
    sent = await message.reply_text(
        answer, do_quote=chat.type in GROUP_TYPES, allow_sending_without_reply=True
    )
    await asyncio.to_thread(record_bot_turn, services.db, chat.id, answer, sent.message_id)


async def non_text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Tell a private chat that the bot only reads text (stickers, photos, voice...)."""
    await update.effective_message.reply_text(texts.TEXT_ONLY)


def addressed_text(message: Message, bot: Bot) -> tuple[bool, str]:
    """(is the message meant for the bot?, its text without the bot's @mention).

    Private chats always talk to the bot; in groups a message must mention the bot or
    reply to one of its messages.
    """
    text = message.text or ""
    username = (bot.username or "").lower()
    spans = []  # (start, end) in UTF-16 code units
    for entity in message.entities:
        if entity.type == MessageEntityType.MENTION:
            mention = _utf16_slice(text, entity.offset, entity.offset + entity.length)
            if username and mention[1:].lower() == username:
                spans.append((entity.offset, entity.offset + entity.length))
        elif entity.type == MessageEntityType.TEXT_MENTION and entity.user.id == bot.id:
            spans.append((entity.offset, entity.offset + entity.length))
    mentioned = bool(spans)
    if spans:
        text = _tidy(_utf16_remove(text, spans))
    elif username and _bare_mention(username).search(text):
        mentioned = True  # a client that sent no entities
        text = _tidy(_bare_mention(username).sub("", text))

    if message.chat.type not in GROUP_TYPES:
        return True, text
    replied = message.reply_to_message
    author = replied.from_user if replied is not None else None
    to_bot = author is not None and author.id == bot.id
    return mentioned or to_bot, text


def _bare_mention(username: str) -> re.Pattern:
    """@username as a word of its own: not inside an address such as "x@charbot.org"."""
    return re.compile(rf"(?<![\w@.])@{re.escape(username)}\b(?![.@]\w)", re.IGNORECASE)


def _tidy(text: str) -> str:
    """Text whose mention was cut out: no doubled spaces, no leading "," or ":"."""
    return re.sub(r"^[\s,:;]+", "", re.sub(r"[ \t]{2,}", " ", text)).strip()


def _utf16_slice(text: str, start: int, end: int) -> str:
    return text.encode("utf-16-le")[2 * start : 2 * end].decode("utf-16-le", errors="ignore")


def _utf16_remove(text: str, spans: list[tuple[int, int]]) -> str:
    units = text.encode("utf-16-le")
    for start, end in sorted(spans, reverse=True):
        units = units[: 2 * start] + units[2 * end :]
    return units.decode("utf-16-le", errors="ignore")


@contextlib.asynccontextmanager
async def typing(bot: Bot, chat_id: int):
    """Show "typing…" in the chat if the block takes longer than TYPING_DELAY, and renew it
    until the block ends.

    Most replies are ready in tens of milliseconds: announcing them would cost a request
    per reply and hold the reply until the action lands, for nothing anyone could see.
    """
    done = asyncio.Event()

    async def keep_typing() -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), TYPING_DELAY)
        while not done.is_set():
            try:
                await bot.send_chat_action(chat_id, ChatAction.TYPING)
            except TelegramError as exc:  # cosmetic: never fails the reply
                log.debug("typing action for chat %s failed: %s", chat_id, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), TYPING_RENEWAL)

    task = asyncio.create_task(keep_typing())
    try:
        yield
    finally:
        done.set()
        # Let an action on its way land before the reply (so "typing…" never follows it),
        # but never hold the reply for a cosmetic request.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(task, TYPING_GRACE)


# -- errors -------------------------------------------------------------------------------


async def log_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Log an exception raised while handling an update; the bot carries on."""
    error = context.error
    if update is None and isinstance(error, NetworkError | Conflict):
        log.warning("talking to Telegram failed: %s", error)  # polling retries by itself
        return
    update_id = update.update_id if isinstance(update, Update) else None
    log.error("update %s failed", update_id, exc_info=error)
