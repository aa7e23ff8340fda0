"""Telegram handlers: thin, no SQL and no TensorFlow here.

Each one reads the update, calls the shared command and conversation functions (in a
worker thread: they block on the database) or the reply engine, and answers.
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
    record_and_read,
    record_bot_turn,
    record_human_turn,
    telegram_text,
    user_temperature,
)
from bot.replies import Busy
from bot.service import Services

log = logging.getLogger(__name__)

SERVICES = "services"  # bot_data key of the Services
RETRAINER = "retrainer"  # bot_data key of the Retrainer (runs, schedule, swaps)
RETRAIN_JOB = "retrain-check"  # JobQueue name of the scheduled retrain check
TYPING_DELAY = 0.5  # seconds; a reply ready sooner is sent without "typing…" first
TYPING_RENEWAL = 4.0  # seconds; Telegram shows "typing…" for about 5 s per action
TYPING_GRACE = 2.0  # seconds the reply waits for a typing action still on its way
GROUP_TYPES = (ChatType.GROUP, ChatType.SUPERGROUP)


def services_of(context: ContextTypes.DEFAULT_TYPE) -> Services:
    return context.bot_data[SERVICES]


# -- commands -------------------------------------------------------------------------


async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Say what the bot is and list every command, when /start or /help is issued."""
    services = services_of(context)
    admin = services.settings.is_admin(update.effective_user.id)
    await update.effective_message.reply_text(commands.help_text(admin=admin))


async def refused_anonymous(update: Update) -> bool:
    """Refuse a per-user command sent on behalf of a channel or group (anonymous admins).

    Telegram puts one placeholder account in `from` for all such senders, so a setting
    changed or a /forget done there would hit everybody who posts that way.
    """
    if update.effective_message.sender_chat is None:
        return False
    await update.effective_message.reply_text(texts.ANONYMOUS)
    return True


async def temperature(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Show the user's temperature, or set it, when /temp [t] is issued."""
    if await refused_anonymous(update):
        return
    db = services_of(context).db
    answer = await asyncio.to_thread(
        commands.temperature_command, db, update.effective_user.id, context.args or []
    )
    await update.effective_message.reply_text(answer)


async def learn(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Show or change whether the bot may learn from the user, when /learn [on|off] is issued."""
    if await refused_anonymous(update):
        return
    db = services_of(context).db
    answer = await asyncio.to_thread(
        commands.learn_command, db, update.effective_user.id, context.args or []
    )
    await update.effective_message.reply_text(answer)


async def forget(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Delete everything stored about the user when /forget is issued."""
    if await refused_anonymous(update):
        return
    db = services_of(context).db
    answer = await asyncio.to_thread(commands.forget_command, db, update.effective_user.id)
    await update.effective_message.reply_text(answer)


async def status(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Show the model, message counts and uptime to an admin when /status is issued."""
    services = services_of(context)
    if not services.settings.is_admin(update.effective_user.id):
        await update.effective_message.reply_text(texts.STATUS_REFUSED)
        return
    retrainer = context.bot_data.get(RETRAINER)
    extra = []
    if retrainer is not None:
        from bot.retraining import status_lines

        jobs = context.job_queue.get_jobs_by_name(RETRAIN_JOB) if context.job_queue else ()
        extra = await asyncio.to_thread(
            status_lines,
            services.settings,
            services.db,
            retrainer.store,
            running=retrainer.running(),
            next_check=jobs[0].next_t if jobs else None,
        )
    answer = await asyncio.to_thread(
        commands.status_text, services.db, services.model, services.uptime(), extra
    )
    await update.effective_message.reply_text(answer)


async def retrain(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Start a retraining run when an admin issues /retrain; report when it ends."""
    services = services_of(context)
    user = update.effective_user
    if not services.settings.is_admin(user.id):
        await update.effective_message.reply_text(texts.STATUS_REFUSED)
        return
    started = await context.bot_data[RETRAINER].start("admin", requested_by=user.id)
    await update.effective_message.reply_text(
        texts.RETRAIN_STARTED if started else texts.RETRAIN_RUNNING
    )


async def rollback(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Make the previous model version live when an admin issues /rollback."""
    from model.store import StoreError

    services = services_of(context)
    if not services.settings.is_admin(update.effective_user.id):
        await update.effective_message.reply_text(texts.STATUS_REFUSED)
        return
    retrainer = context.bot_data[RETRAINER]
    try:
        swap = await retrainer.rollback()
    except StoreError as exc:
        await update.effective_message.reply_text(texts.ROLLBACK_IMPOSSIBLE.format(reason=exc))
        return
    except Exception:  # the store rolled back, but the version did not load (logged)
        live = await asyncio.to_thread(retrainer.store.live_version)
        await update.effective_message.reply_text(
            texts.ROLLBACK_NOT_LOADED.format(live=live, served=services.model.version)
        )
        return
    version = services.model.version
    old = swap.old if swap else version
    await update.effective_message.reply_text(texts.ROLLED_BACK.format(new=version, old=old))


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
    turns = None  # the chat's context, when read along with storing the message
    if not text:  # only a mention: nothing to store, answer from the chat so far
        if not addressed:
            return
        temperature = await asyncio.to_thread(
            user_temperature, services.db, user.id, user.full_name, (chat.id, chat.type, chat.title)
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
                record_and_read, services.db, incoming, services.replies.read_context
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
            reply = await services.replies.reply(chat.id, temperature, turns)
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
