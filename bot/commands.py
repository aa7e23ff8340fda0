"""What each command means, for both front ends (Telegram handlers and the terminal).

Each function is one unit of work on the database and returns the text to answer with.
They block (SQL), so the Telegram handlers run them in a worker thread.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from bot import texts
from bot.service import ModelInfo
from storage import (
    DEFAULT_TEMPERATURE,
    MAX_TEMPERATURE,
    MIN_TEMPERATURE,
    Database,
    count_messages,
    forget_user,
    get_user,
    set_learning,
    set_temperature,
)

# One number written with ASCII digits: "0", ".5", "1.", "0.6"; a decimal comma ("0,6") is
# read as a point. No sign, exponent, "nan"/"inf" or other scripts' digits ("０.５").
_TEMPERATURE = re.compile(r"(?:[0-9]+(?:[.,][0-9]*)?|[.,][0-9]+)", re.ASCII)
_SHOWN_MAX = 40  # characters of a rejected value echoed back


def help_text(*, admin: bool) -> str:
    """What the bot is and every command the user may run."""
    lines = [texts.INTRO, ""]
    lines += [texts.COMMAND_HELP[name] for name, _ in texts.PUBLIC_COMMANDS]
    lines += ["", texts.GROUPS]
    if admin:
        lines += ["", texts.ADMIN_HEADER]
        lines += [texts.COMMAND_HELP[name] for name, _ in texts.ADMIN_COMMANDS]
    return "\n".join(lines)


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


def status_text(
    db: Database, model: ModelInfo, uptime: float | None, extra: Sequence[str] = ()
) -> str:
    """What /status shows: model version, message counts, uptime (None: not the running bot).

    `extra` lines (retraining: live version, last run, schedule) are added at the end.
    """
    with db.read() as session:
        counts = count_messages(session)
    running = "not running here (this is `charbot status`)" if uptime is None else _span(uptime)
    return "\n".join(
        [
            f"Model: {model.describe()}",
            f"Messages: {counts['total']} ({counts['human']} from people, "
            f"{counts['bot']} from the bot)",
            f"Users: {counts['users']}, chats: {counts['chats']}",
            f"Uptime: {running}",
            *extra,
        ]
    )


def _span(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} d {hours} h {minutes} min"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"
