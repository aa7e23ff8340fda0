"""Telegram handlers: thin, no SQL and no TensorFlow here.

Each one reads the update and calls the command table's functions (bot/commands.py) or
the answering of stored messages (bot/answers.py), and answers.
"""

from __future__ import annotations

import asyncio
import logging
import time

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Message, Update, User
from telegram.constants import ChatAction, ChatMemberStatus, ChatType
from telegram.error import BadRequest, Conflict, Forbidden, NetworkError
from telegram.ext import ContextTypes

from bot import commands, preferences, texts
from bot.answers import answer_owed
from bot.i18n import DEFAULT_LANGUAGE, choose, say
from bot.services import Services

log = logging.getLogger(__name__)

SERVICES = "services"  # bot_data key of the Services
INBOX = "inbox"  # bot_data key of the Inbox (bot/inbox.py)
GROUP_ADMINS = "group_admins"  # bot_data key of the GroupAdmins cache
GROUP_ADMIN_TTL = 60.0  # seconds a getChatMember answer is trusted (admins change rarely)
ADMIN_STATUSES = (ChatMemberStatus.OWNER, ChatMemberStatus.ADMINISTRATOR)


def services_of(context: ContextTypes.DEFAULT_TYPE) -> Services:
    return context.bot_data[SERVICES]


class GroupAdmins:
    """Who administers which group, asked of Telegram (getChatMember) and kept briefly, so
    a burst of /chance does not become a burst of requests."""

    def __init__(self, ttl: float = GROUP_ADMIN_TTL) -> None:
        self.ttl = ttl
        self._known: dict[tuple[int, int], tuple[float, bool]] = {}

    async def is_admin(self, bot: Bot, chat_id: int, user_id: int) -> bool:
        now = time.monotonic()
        cached = self._known.get((chat_id, user_id))
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1]
        member = await bot.get_chat_member(chat_id, user_id)
        admin = member.status in ADMIN_STATUSES
        self._known = {k: v for k, v in self._known.items() if now - v[0] < self.ttl}
        self._known[(chat_id, user_id)] = (now, admin)
        return admin


async def language_of(context: ContextTypes.DEFAULT_TYPE, user: User | None) -> str:
    """The language to answer `user` in (their /lang choice, else their app's)."""
    if user is None:
        return DEFAULT_LANGUAGE
    db = services_of(context).db
    try:
        return await asyncio.to_thread(preferences.user_language, db, user.id, user.language_code)
    except Exception:  # a database that cannot be read must not cost the answer
        log.warning("could not read the language of user %s", user.id, exc_info=True)
        return choose(None, user.language_code)


# -- commands -------------------------------------------------------------------------


def command_handler(command: commands.Command):
    """The handler that answers `command` (an entry of commands.COMMANDS)."""

    async def handle(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        sender = update.effective_user
        language = await language_of(context, sender)
        # Telegram puts one placeholder account in `from` for everyone who posts as a
        # channel or an anonymous admin: a setting changed or a /forget done there would
        # hit all of them.
        if command.personal and message.sender_chat is not None:
            await message.reply_text(say(language, texts.ANONYMOUS))
            return
        services = services_of(context)
        user_id = sender.id
        admin = services.settings.is_admin(user_id)
        inbox = context.bot_data.get(INBOX)
        forgotten = inbox.forgotten.pop(update.update_id, None) if inbox else None
        if forgotten is not None:  # their /lang choice went with it: the one read before
            language, _ = forgotten
        chat = message.chat
        request = commands.Request(
            services,
            user_id,
            context.args or [],
            admin=admin,
            forgotten=None if forgotten is None else forgotten[1],
            language=language,
            app_language=sender.language_code,
            chat_id=chat.id,
            chat_type=chat.type,
            chat_title=chat.title,
            group_admin=lambda: _group_admin(context, message),
        )
        private = chat.type == ChatType.PRIVATE
        if command.private and not private and (admin or not command.admin):
            # What is for one person is not for everyone in the group: checked before the
            # command runs, so that none runs twice.
            try:
                await context.bot.send_chat_action(user_id, ChatAction.TYPING)
            except (BadRequest, Forbidden):  # they never opened a chat with the bot
                await message.reply_text(say(language, texts.PRIVATE_FAILED, name=command.name))
                return
            await _send(context.bot, user_id, await commands.answer(command, request))
            await message.reply_text(say(language, texts.SENT_PRIVATELY))
            return
        await _send(context.bot, chat.id, await commands.answer(command, request), message)

    handle.__doc__ = f"Answer /{command.name}."
    return handle


async def _group_admin(context: ContextTypes.DEFAULT_TYPE, message: Message) -> bool:
    """Is the sender of `message` an admin of its group? An anonymous admin (posting as
    the group itself) is one."""
    if message.sender_chat is not None:
        return message.sender_chat.id == message.chat.id
    admins: GroupAdmins = context.bot_data[GROUP_ADMINS]
    return await admins.is_admin(context.bot, message.chat.id, message.from_user.id)


async def _send(
    bot: Bot, chat_id: int, answer: commands.Answer, quote: Message | None = None
) -> None:
    """Send a command's answer: its text (with its buttons), or its file with the text as
    caption; as a reply to `quote` when given."""
    keyboard = None
    if answer.buttons:
        row = [InlineKeyboardButton(label, callback_data=data) for label, data in answer.buttons]
        keyboard = InlineKeyboardMarkup([row])
    if answer.document is not None:
        name, content = answer.document
        if quote is not None:
            await quote.reply_document(content, filename=name, caption=answer.text)
        else:
            await bot.send_document(chat_id, content, filename=name, caption=answer.text)
    elif quote is not None:
        await quote.reply_text(answer.text, reply_markup=keyboard)
    else:
        await bot.send_message(chat_id, answer.text, reply_markup=keyboard)


async def temperature_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A tap on a button under /temp: set the tapper's temperature, or refuse an old or
    forged button politely; either way the tap is answered (the app stops waiting)."""
    query = update.callback_query
    language = await language_of(context, query.from_user)
    try:
        text = await asyncio.to_thread(
            preferences.temperature_button,
            services_of(context).db,
            query.from_user.id,
            query.data,
            language,
        )
    except Exception:
        await query.answer()  # stop the app's spinner; nothing changed
        raise  # logged by log_error
    await query.answer(text)


async def unknown_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Point to /help when a private chat sends a command the bot does not know."""
    language = await language_of(context, update.effective_user)
    await update.effective_message.reply_text(say(language, texts.UNKNOWN_COMMAND))


# -- conversation -----------------------------------------------------------------------


async def converse(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Answer a text message if it is meant for the bot (the inbox stored it on arrival,
    with the reply it is owed)."""
    message = update.effective_message
    key = (message.chat_id, message.message_id)
    try:
        await answer_owed(context.bot, services_of(context), *key)
    finally:
        if inbox := context.bot_data.get(INBOX):
            inbox.queued.discard(key)


async def non_text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Tell a private chat that the bot only reads text (stickers, photos, voice...)."""
    language = await language_of(context, update.effective_user)
    await update.effective_message.reply_text(say(language, texts.TEXT_ONLY))


# -- errors -------------------------------------------------------------------------------


async def log_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Log an exception raised while handling an update; the bot carries on."""
    error = context.error
    if update is None and isinstance(error, NetworkError | Conflict):
        log.warning("talking to Telegram failed: %s", error)  # polling retries by itself
        return
    update_id = update.update_id if isinstance(update, Update) else None
    log.error("update %s failed", update_id, exc_info=error)
    if (services := context.bot_data.get(SERVICES)) is not None:
        services.metrics.errors.inc()
