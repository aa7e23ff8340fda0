"""The command table, and what each command means, for both front ends.

`COMMANDS` is the one list of commands: name, who may run it, its menu entry and /help
line, and the function that answers it. The Telegram handlers, the command menus, /help
and the terminal are all built from it, so a command exists everywhere or nowhere.

Each command is `async def (request) -> Answer | str` (a plain text answer): it runs
its database work in a worker thread (bot.preferences; SQL blocks) and returns what to
answer with, in the request's language (bot.i18n).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from bot import preferences, texts
from bot.i18n import DEFAULT_LANGUAGE, gettext, say
from bot.reports import status_lines, status_text
from bot.services import Services
from model.store import StoreError
from storage import GROUP_CHAT_TYPES


@dataclass(frozen=True)
class Request:
    """A command as a front end received it."""

    services: Services
    user_id: int
    args: Sequence[str] = ()
    admin: bool = False  # the sender is one of the bot's admins
    # A /forget the inbox started as it arrived (to be finished): their messages it deletes.
    forgotten: int | None = None
    language: str = DEFAULT_LANGUAGE  # what to answer in (bot.i18n.choose)
    app_language: str | None = None  # the sender's Telegram app's language_code
    chat_id: int | None = None
    chat_type: str = "private"
    chat_title: str | None = None
    # Is the sender an admin of this group? (asked of Telegram; None: not a Telegram group)
    group_admin: Callable[[], Awaitable[bool]] | None = None


@dataclass(frozen=True)
class Answer:
    text: str
    buttons: tuple[tuple[str, str], ...] = ()  # (label, callback data), one row
    document: tuple[str, bytes] | None = None  # (file name, content), sent with `text`


@dataclass(frozen=True)
class Command:
    name: str
    menu: str  # its entry in Telegram's command menu (a bot.texts message id)
    line: str  # its line in /help (a bot.texts message id)
    run: Callable[[Request], Awaitable[Answer | str]]
    admin: bool = False  # only the bot's admins may run it
    personal: bool = False  # about its sender: refused to anonymous senders (one shared id)
    private: bool = False  # asked in a group, answered in the sender's private chat
    aliases: tuple[str, ...] = ()


async def answer(command: Command, request: Request) -> Answer:
    """What `command` answers to `request` (the admin check included)."""
    if command.admin and not request.admin:
        return Answer(say(request.language, texts.STATUS_REFUSED))
    result = await command.run(request)
    return result if isinstance(result, Answer) else Answer(result)


def find(name: str) -> Command | None:
    """The command called `name` (or an alias of it), None if there is none."""
    return next((c for c in COMMANDS if name == c.name or name in c.aliases), None)


def help_text(*, admin: bool, language: str = DEFAULT_LANGUAGE) -> str:
    """What the bot is and every command the user may run."""
    lines = [gettext(texts.INTRO, language), ""]
    lines += [gettext(c.line, language) for c in COMMANDS if not c.admin]
    lines += ["", gettext(texts.GROUPS, language)]
    if admin:
        lines += ["", gettext(texts.ADMIN_HEADER, language)]
        lines += [gettext(c.line, language) for c in COMMANDS if c.admin]
    return "\n".join(lines)


# -- the commands ---------------------------------------------------------------------


async def show_help(request: Request) -> str:
    return help_text(admin=request.admin, language=request.language)


async def temperature(request: Request) -> Answer:
    db, user, lang = request.services.db, request.user_id, request.language
    text = await asyncio.to_thread(preferences.temperature_command, db, user, request.args, lang)
    if request.args:
        return Answer(text)
    presets = preferences.TEMPERATURE_PRESETS
    return Answer(text, tuple((p, preferences.TEMP_BUTTON + p) for p in presets))


async def learn(request: Request) -> str:
    db, user, lang = request.services.db, request.user_id, request.language
    text, went_off = await asyncio.to_thread(preferences.learn_change, db, user, request.args, lang)
    if went_off:
        request.services.text_withdrawn()  # out of the chat memory at once
    return text


async def lang(request: Request) -> str:
    db, user = request.services.db, request.user_id
    return await asyncio.to_thread(
        preferences.lang_command, db, user, request.args, request.app_language
    )


async def chance(request: Request) -> str:
    language = request.language
    if request.chat_type not in GROUP_CHAT_TYPES or request.chat_id is None:
        return say(language, texts.CHANCE_PRIVATE)
    if request.args and not request.admin:
        try:
            allowed = request.group_admin is not None and await request.group_admin()
        except Exception:  # Telegram could not say: refuse, changing nothing
            return say(language, texts.CHANCE_CHECK_FAILED)
        if not allowed:
            return say(language, texts.CHANCE_REFUSED)
    return await asyncio.to_thread(
        preferences.chance_command,
        request.services.db,
        request.chat_id,
        request.chat_type,
        request.chat_title,
        request.args,
        language,
    )


async def privacy(request: Request) -> str:
    users = request.services.settings.memory_min_users  # who must share a phrase it keeps
    return say(request.language, texts.PRIVACY, users=users)


async def my_data(request: Request) -> Answer:
    count, content = await asyncio.to_thread(
        preferences.my_data, request.services.db, request.user_id
    )
    caption = say(request.language, texts.MYDATA_CAPTION, count=count)
    return Answer(caption, document=(f"charbot-data-{request.user_id}.json", content))


async def forget(request: Request) -> str:
    db, user, written = request.services.db, request.user_id, request.forgotten
    if written is None:  # the inbox marks a /forget as it arrives; this one it did not
        written = await asyncio.to_thread(preferences.start_forget, db, user)
    if written:
        request.services.text_withdrawn()  # out of the chat memory at once, not when deleted
    # The deleting may be shared with the job that finishes forgets cut short; what goes
    # of theirs is all they wrote up to the mark, however it was shared.
    await asyncio.to_thread(preferences.forget_rest, db, user)
    return preferences.forget_done(written, request.language)


async def status(request: Request) -> str:
    services = request.services
    retrainer = services.retrainer
    extra = [texts.PRIVACY_MODE] if services.privacy_mode else []
    if services.memory is not None:
        extra.append(services.memory.status_line())
    if retrainer is not None:
        # With PostgreSQL, asking the run lock is a round trip to the server: one, off the
        # event loop. A holder (None: no run) is a run going, here or elsewhere.
        holder = await asyncio.to_thread(retrainer.lock.holder)
        running = retrainer.running_here() or holder is not None
        extra += await asyncio.to_thread(
            status_lines,
            services.settings,
            services.db,
            services.live.store,
            running=running,
            next_check=services.next_check(),
            holder=holder,
        )
    return await asyncio.to_thread(
        status_text, services.db, services.live.info, services.uptime(), extra
    )


async def retrain(request: Request) -> str:
    retrainer = request.services.retrainer
    if retrainer is None:
        return say(request.language, texts.RETRAIN_UNAVAILABLE)
    started = await retrainer.start("admin", requested_by=request.user_id)
    return say(request.language, texts.RETRAIN_STARTED if started else texts.RETRAIN_RUNNING)


async def rollback(request: Request) -> str:
    live, language = request.services.live, request.language
    try:
        swap = await live.rollback()
    except StoreError as exc:
        return say(language, texts.ROLLBACK_IMPOSSIBLE, reason=exc)
    except Exception:  # the store rolled back, but the version did not load (logged)
        now_live = await asyncio.to_thread(live.store.live_version)
        return say(language, texts.ROLLBACK_NOT_LOADED, live=now_live, served=live.version)
    old = swap.old if swap else live.version
    return say(language, texts.ROLLED_BACK, new=live.version, old=old)


# The order is the order of /help and of the menus.
COMMANDS = (
    Command("help", texts.HELP_MENU, texts.HELP_LINE, show_help, aliases=("start",)),
    Command("temp", texts.TEMP_MENU, texts.TEMP_LINE, temperature, personal=True),
    Command("learn", texts.LEARN_MENU, texts.LEARN_LINE, learn, personal=True),
    Command("lang", texts.LANG_MENU, texts.LANG_LINE, lang, personal=True),
    Command("chance", texts.CHANCE_MENU, texts.CHANCE_LINE, chance),
    Command("privacy", texts.PRIVACY_MENU, texts.PRIVACY_LINE, privacy),
    Command("mydata", texts.MYDATA_MENU, texts.MYDATA_LINE, my_data, personal=True, private=True),
    Command("forget", texts.FORGET_MENU, texts.FORGET_LINE, forget, personal=True),
    Command("status", texts.STATUS_MENU, texts.STATUS_LINE, status, admin=True, private=True),
    Command("retrain", texts.RETRAIN_MENU, texts.RETRAIN_LINE, retrain, admin=True, private=True),
    Command(
        "rollback", texts.ROLLBACK_MENU, texts.ROLLBACK_LINE, rollback, admin=True, private=True
    ),
)
