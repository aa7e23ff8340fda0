"""Who the bot is in Telegram's apps: its command menus and its description, in every
language it speaks (bot.i18n), registered at start."""

from __future__ import annotations

import logging

from telegram import Bot, BotCommand, BotCommandScopeChat
from telegram.error import TelegramError

from bot import commands, texts
from bot.i18n import DEFAULT_LANGUAGE, LANGUAGES, gettext

log = logging.getLogger(__name__)


def command_menu(*, admin: bool, language: str = DEFAULT_LANGUAGE) -> list[BotCommand]:
    return [
        BotCommand(c.name, gettext(c.menu, language))
        for c in commands.COMMANDS
        if admin or not c.admin
    ]


async def register_profile(bot: Bot, admin_ids: frozenset[int]) -> None:
    """The command menus (the admin commands in each admin's chat) and the bot's
    description and short description, in every language the bot speaks: English as the
    default, each other language for users whose app is set to it.

    A description already right is not sent again (Telegram limits how often it may
    change). A failure is logged and the rest still registered; an admin the bot cannot
    reach (one who never wrote to it: "chat not found") is logged once and skipped.
    """
    admins = sorted(admin_ids)
    for language in LANGUAGES:
        code = "" if language == DEFAULT_LANGUAGE else language
        await _register(bot.set_my_commands, command_menu(admin=False, language=language), code)
        for admin_id in list(admins):
            scope = BotCommandScopeChat(admin_id)
            menu = command_menu(admin=True, language=language)
            if not await _register(bot.set_my_commands, menu, code, scope=scope):
                log.warning("not showing the admin commands to admin %s", admin_id)
                admins.remove(admin_id)
        description = gettext(texts.DESCRIPTION, language)
        short = gettext(texts.SHORT_DESCRIPTION, language)
        try:
            current = await bot.get_my_description(language_code=code)
            current_short = await bot.get_my_short_description(language_code=code)
        except TelegramError as exc:
            log.warning("could not read the bot's description (%s): %s", language, exc)
            continue
        if current.description != description:
            await _register(bot.set_my_description, description, code)
        if current_short.short_description != short:
            await _register(bot.set_my_short_description, short, code)


async def _register(method, value, language_code: str, **kwargs) -> bool:
    try:
        await method(value, language_code=language_code or None, **kwargs)
    except TelegramError as exc:
        log.warning("%s (%s) failed: %s", method.__name__, language_code or "default", exc)
        return False
    return True
