"""The command table, and what each command means, for both front ends.

`COMMANDS` is the one list of commands: name, who may run it, its menu entry and /help
line, and the function that answers it. The Telegram handlers, the command menus, /help
and the terminal are all built from it, so a command exists everywhere or nowhere.

Each command is `async def (request) -> str`: it runs its database work in a worker
thread (SQL blocks) and returns the text to answer with.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from bot import texts
from bot.reports import status_lines, status_text
from bot.services import Services
from model.store import StoreError
from storage import (
    DEFAULT_TEMPERATURE,
    MAX_TEMPERATURE,
    MIN_TEMPERATURE,
    Database,
    forget_user,
    get_user,
    set_learning,
    set_temperature,
)

# One number written with ASCII digits: "0", ".5", "1.", "0.6"; a decimal comma ("0,6") is
# read as a point. No sign, exponent, "nan"/"inf" or other scripts' digits ("０.５").
_TEMPERATURE = re.compile(r"(?:[0-9]+(?:[.,][0-9]*)?|[.,][0-9]+)", re.ASCII)
_SHOWN_MAX = 40  # characters of a rejected value echoed back


@dataclass(frozen=True)
class Request:
    """A command as a front end received it."""

    services: Services
    user_id: int
    args: Sequence[str] = ()
    admin: bool = False  # the sender is one of the bot's admins
    forgotten: int | None = None  # a /forget the inbox did as it arrived: messages deleted


@dataclass(frozen=True)
class Command:
    name: str
    menu: str  # its entry in Telegram's command menu
    line: str  # its line in /help
    run: Callable[[Request], Awaitable[str]]
    admin: bool = False  # only the bot's admins may run it
    personal: bool = False  # about its sender: refused to anonymous senders (one shared id)
    aliases: tuple[str, ...] = ()


async def answer(command: Command, request: Request) -> str:
    """What `command` answers to `request` (the admin check included)."""
    if command.admin and not request.admin:
        return texts.STATUS_REFUSED
    return await command.run(request)


def find(name: str) -> Command | None:
    """The command called `name` (or an alias of it), None if there is none."""
    return next((c for c in COMMANDS if name == c.name or name in c.aliases), None)


def help_text(*, admin: bool) -> str:
    """What the bot is and every command the user may run."""
    lines = [texts.INTRO, ""]
    lines += [c.line for c in COMMANDS if not c.admin]
    lines += ["", texts.GROUPS]
    if admin:
        lines += ["", texts.ADMIN_HEADER]
        lines += [c.line for c in COMMANDS if c.admin]
    return "\n".join(lines)


# -- the commands ---------------------------------------------------------------------


async def show_help(request: Request) -> str:
    return help_text(admin=request.admin)


async def temperature(request: Request) -> str:
    return await asyncio.to_thread(
        temperature_command, request.services.db, request.user_id, request.args
    )


async def learn(request: Request) -> str:
    return await asyncio.to_thread(
        learn_command, request.services.db, request.user_id, request.args
    )


async def forget(request: Request) -> str:
    if request.forgotten is not None:
        return texts.FORGET_DONE.format(messages=texts.plural(request.forgotten, "message"))
    return await asyncio.to_thread(forget_command, request.services.db, request.user_id)


async def status(request: Request) -> str:
    services = request.services
    retrainer = services.retrainer
    extra = []
    if retrainer is not None:
        extra = await asyncio.to_thread(
            status_lines,
            services.settings,
            services.db,
            services.live.store,
            running=retrainer.running(),
            next_check=services.next_check(),
        )
    return await asyncio.to_thread(
        status_text, services.db, services.live.info, services.uptime(), extra
    )


async def retrain(request: Request) -> str:
    retrainer = request.services.retrainer
    if retrainer is None:
        return texts.RETRAIN_UNAVAILABLE
    started = await retrainer.start("admin", requested_by=request.user_id)
    return texts.RETRAIN_STARTED if started else texts.RETRAIN_RUNNING


async def rollback(request: Request) -> str:
    live = request.services.live
    try:
        swap = await live.rollback()
    except StoreError as exc:
        return texts.ROLLBACK_IMPOSSIBLE.format(reason=exc)
    except Exception:  # the store rolled back, but the version did not load (logged)
        now_live = await asyncio.to_thread(live.store.live_version)
        return texts.ROLLBACK_NOT_LOADED.format(live=now_live, served=live.version)
    old = swap.old if swap else live.version
    return texts.ROLLED_BACK.format(new=live.version, old=old)


# The order is the order of /help and of the menus.
COMMANDS = (
    Command("help", texts.HELP_MENU, texts.HELP_LINE, show_help, aliases=("start",)),
    Command("temp", texts.TEMP_MENU, texts.TEMP_LINE, temperature, personal=True),
    Command("learn", texts.LEARN_MENU, texts.LEARN_LINE, learn, personal=True),
    Command("forget", texts.FORGET_MENU, texts.FORGET_LINE, forget, personal=True),
    Command("status", texts.STATUS_MENU, texts.STATUS_LINE, status, admin=True),
    Command("retrain", texts.RETRAIN_MENU, texts.RETRAIN_LINE, retrain, admin=True),
    Command("rollback", texts.ROLLBACK_MENU, texts.ROLLBACK_LINE, rollback, admin=True),
)


# -- the database work behind them ------------------------------------------------------


def format_temperature(value: float) -> str:
    return f"{value:g}"


def parse_temperature(args: Sequence[str]) -> float:
    """The temperature in a /temp command's arguments; ValueError if it is not one."""
    if len(args) != 1 or not _TEMPERATURE.fullmatch(args[0]):
        raise ValueError("not a temperature")
    value = float(args[0].replace(",", "."))
    if not (math.isfinite(value) and MIN_TEMPERATURE <= value <= MAX_TEMPERATURE):
        raise ValueError("out of range")
    return value


def temperature_command(db: Database, user_id: int, args: Sequence[str]) -> str:
    """/temp shows the user's temperature; /temp <t> sets it, 0 <= t <= 2."""
    with db.begin() as session:
        user = get_user(session, user_id)
        current = DEFAULT_TEMPERATURE if user is None else user.temperature
        if not args:
            return texts.TEMP_SHOW.format(value=format_temperature(current))
        try:
            value = parse_temperature(args)
        except ValueError:
            shown = " ".join(args)
            if len(shown) > _SHOWN_MAX:
                shown = shown[: _SHOWN_MAX - 1] + "…"
            return texts.TEMP_BAD.format(
                shown=f"“{shown}”",
                example=texts.TEMP_EXAMPLE,
                value=format_temperature(current),
            )
        set_temperature(session, user_id, value)
        return texts.TEMP_SET.format(value=format_temperature(value))


def learn_command(db: Database, user_id: int, args: Sequence[str]) -> str:
    """/learn shows whether the bot may learn from the user; /learn on|off changes it."""
    choice = args[0].lower() if len(args) == 1 else None
    if args and choice not in ("on", "off"):
        return texts.LEARN_BAD
    with db.begin() as session:
        if choice is None:
            user = get_user(session, user_id)
            learning = True if user is None else user.learning
            return texts.LEARN_ON_NOW if learning else texts.LEARN_OFF_NOW
        set_learning(session, user_id, choice == "on")
    return texts.LEARN_SET_ON if choice == "on" else texts.LEARN_SET_OFF


def forget_command(db: Database, user_id: int) -> str:
    """/forget deletes the user's messages and settings."""
    with db.begin() as session:
        deleted = forget_user(session, user_id)
    return texts.FORGET_DONE.format(messages=texts.plural(deleted, "message"))
