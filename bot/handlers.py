"""Telegram handlers: thin, no SQL and no TensorFlow here.

Each one reads the update and calls the command table's functions (bot/commands.py) or
the answering of stored messages (bot/answers.py), and answers.
"""

from __future__ import annotations

import logging

from telegram import Update
from telegram.constants import ChatAction, ChatType
from telegram.error import BadRequest, Conflict, Forbidden, NetworkError
from telegram.ext import ContextTypes

from bot import commands, texts
from bot.answers import answer_owed
from bot.services import Services

log = logging.getLogger(__name__)

SERVICES = "services"  # bot_data key of the Services
INBOX = "inbox"  # bot_data key of the Inbox (bot/inbox.py)


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
        admin = services.settings.is_admin(user_id)
        inbox = context.bot_data.get(INBOX)
        forgotten = inbox.forgotten.pop(update.update_id, None) if inbox else None
        request = commands.Request(
            services, user_id, context.args or [], admin=admin, forgotten=forgotten
        )
        private = message.chat.type == ChatType.PRIVATE
        if command.admin and admin and not private:
            # What admins are told is for them, not for everyone in the group: checked
            # before the command runs, so that none runs twice.
            try:
                await context.bot.send_chat_action(user_id, ChatAction.TYPING)
            except (BadRequest, Forbidden):  # they never opened a chat with the bot
                await message.reply_text(texts.ADMIN_PRIVATE_FAILED.format(name=command.name))
                return
            await context.bot.send_message(user_id, await commands.answer(command, request))
            await message.reply_text(texts.ADMIN_SENT_PRIVATELY)
            return
        await message.reply_text(await commands.answer(command, request))

    handle.__doc__ = f"Answer /{command.name}."
    return handle


async def unknown_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Point to /help when a private chat sends a command the bot does not know."""
    await update.effective_message.reply_text(texts.UNKNOWN_COMMAND)


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
    await update.effective_message.reply_text(texts.TEXT_ONLY)


# -- errors -------------------------------------------------------------------------------


async def log_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Log an exception raised while handling an update; the bot carries on."""
    error = context.error
    if update is None and isinstance(error, NetworkError | Conflict):
        log.warning("talking to Telegram failed: %s", error)  # polling retries by itself
        return
    update_id = update.update_id if isinstance(update, Update) else None
    log.error("update %s failed", update_id, exc_info=error)
