"""The database work behind the personal and group commands (/temp, /learn, /lang,
/chance, /mydata, /forget), for both front ends. Blocking: call in a worker thread.

Each answers in `language` (bot.i18n): the texts are bot.texts' message ids.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence

from bot import texts
from bot.i18n import LANGUAGE_NAMES, LANGUAGES, choose, say, supported
from storage import (
    DEFAULT_TEMPERATURE,
    MAX_REPLY_CHANCE,
    MAX_TEMPERATURE,
    MIN_REPLY_CHANCE,
    MIN_TEMPERATURE,
    Database,
    User,
    finish_forget,
    forget_user,
    get_chat,
    get_or_create_chat,
    get_user,
    personal_data,
    reply_chance,
    request_forget,
    set_language,
    set_learning,
    set_reply_chance,
    set_temperature,
)

# One number written with ASCII digits: "0", ".5", "1.", "0.6"; a decimal comma ("0,6") is
# read as a point. No sign, exponent, "nan"/"inf" or other scripts' digits ("０.５").
_NUMBER = re.compile(r"(?:[0-9]+(?:[.,][0-9]*)?|[.,][0-9]+)", re.ASCII)
_SHOWN_MAX = 40  # characters of a rejected value echoed back
# The buttons under /temp; a button's data is TEMP_BUTTON + the preset as written here.
TEMPERATURE_PRESETS = ("0", "0.3", "0.6", "1", "1.5")
TEMP_BUTTON = "temp:"
AUTO_LANGUAGE = "auto"  # /lang auto: follow the Telegram app's language again


def format_number(value: float) -> str:
    return f"{value:g}"


def parse_number(args: Sequence[str], low: float, high: float) -> float:
    """The one number in a command's arguments, low <= n <= high; ValueError otherwise."""
    if len(args) != 1 or not _NUMBER.fullmatch(args[0]):
        raise ValueError("not a number")
    value = float(args[0].replace(",", "."))
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError("out of range")
    return value


def parse_temperature(args: Sequence[str]) -> float:
    """The temperature in a /temp command's arguments; ValueError if it is not one."""
    return parse_number(args, MIN_TEMPERATURE, MAX_TEMPERATURE)


def shown(args: Sequence[str]) -> str:
    """A rejected value as the answer quotes it (cut short)."""
    text = " ".join(args)
    if len(text) > _SHOWN_MAX:
        text = text[: _SHOWN_MAX - 1] + "…"
    return f"“{text}”"


def language_for(user: User | None, app_language: str | None) -> str:
    """The language to answer `user` in: their /lang choice, else their app's (the one an
    update carries, else the one stored), else English."""
    if user is None:
        return choose(None, app_language)
    return choose(user.language, app_language or user.app_language)


def user_language(db: Database, user_id: int, app_language: str | None) -> str:
    """language_for the stored user."""
    with db.read() as session:
        return language_for(get_user(session, user_id), app_language)


def temperature_of(db: Database, user_id: int) -> float:
    with db.read() as session:
        user = get_user(session, user_id)
        return DEFAULT_TEMPERATURE if user is None else user.temperature


def temperature_command(db: Database, user_id: int, args: Sequence[str], language: str) -> str:
    """/temp shows the user's temperature; /temp <t> sets it, 0 <= t <= 2."""
    with db.begin() as session:
        user = get_user(session, user_id)
        current = DEFAULT_TEMPERATURE if user is None else user.temperature
        if not args:
            return say(language, texts.TEMP_SHOW, value=format_number(current))
        try:
            value = parse_temperature(args)
        except ValueError:
            return say(language, texts.TEMP_BAD, shown=shown(args), value=format_number(current))
        set_temperature(session, user_id, value)
        return say(language, texts.TEMP_SET, value=format_number(value))


def temperature_button(db: Database, user_id: int, data: str | None, language: str) -> str:
    """A tap on a /temp button: sets the tapper's temperature if `data` is one of today's
    buttons; anything else (an old keyboard, forged data) changes nothing."""
    preset = (data or "").removeprefix(TEMP_BUTTON)
    if not (data or "").startswith(TEMP_BUTTON) or preset not in TEMPERATURE_PRESETS:
        value = format_number(temperature_of(db, user_id))
        return say(language, texts.TEMP_BUTTON_STALE, value=value)
    with db.begin() as session:
        set_temperature(session, user_id, float(preset))
    return say(language, texts.TEMP_SET, value=format_number(float(preset)))


def learn_command(db: Database, user_id: int, args: Sequence[str], language: str) -> str:
    """/learn shows whether the bot may learn from the user; /learn on|off changes it."""
    return learn_change(db, user_id, args, language)[0]


def learn_change(
    db: Database, user_id: int, args: Sequence[str], language: str
) -> tuple[str, bool]:
    """(/learn's answer, whether learning went from on to off)."""
    choice = args[0].lower() if len(args) == 1 else None
    if args and choice not in ("on", "off"):
        return say(language, texts.LEARN_BAD), False
    with db.begin() as session:
        user = get_user(session, user_id)
        learning = True if user is None else user.learning
        if choice is None:
            return say(language, texts.LEARN_ON_NOW if learning else texts.LEARN_OFF_NOW), False
        set_learning(session, user_id, choice == "on")
    text = say(language, texts.LEARN_SET_ON if choice == "on" else texts.LEARN_SET_OFF)
    return text, learning and choice == "off"


def lang_command(db: Database, user_id: int, args: Sequence[str], app_language: str | None) -> str:
    """/lang shows the language of the bot's own messages; /lang xx chooses it, /lang auto
    follows the Telegram app's again. Answers in the language that results."""
    codes = ", ".join(LANGUAGES)
    with db.begin() as session:
        user = get_user(session, user_id)
        chosen = user.language if user is not None else None
        current = language_for(user, app_language)
        if not args:
            text = texts.LANG_SHOW_CHOSEN if supported(chosen) else texts.LANG_SHOW_AUTO
            return say(current, text, language=LANGUAGE_NAMES[current], codes=codes)
        wanted = args[0].lower() if len(args) == 1 else ""
        if wanted == AUTO_LANGUAGE:
            set_language(session, user_id, None)
            now = language_for(get_user(session, user_id), app_language)
            return say(now, texts.LANG_AUTO, language=LANGUAGE_NAMES[now])
        if len(args) != 1 or wanted not in LANGUAGE_NAMES:
            return say(current, texts.LANG_BAD, shown=shown(args), codes=codes)
        set_language(session, user_id, wanted)
    return say(wanted, texts.LANG_SET, language=LANGUAGE_NAMES[wanted])


def chance_of(db: Database, chat_id: int) -> float:
    with db.read() as session:
        return reply_chance(session, chat_id)


def chance_command(
    db: Database,
    chat_id: int,
    chat_type: str,
    title: str | None,
    args: Sequence[str],
    language: str,
) -> str:
    """/chance shows the group's reply chance; /chance <p> sets it (the caller checked that
    the sender may)."""
    with db.begin() as session:
        current = reply_chance(session, chat_id)
        if not args:
            return say(language, texts.CHANCE_SHOW, value=format_number(current))
        try:
            value = parse_number(args, MIN_REPLY_CHANCE, MAX_REPLY_CHANCE)
        except ValueError:
            return say(language, texts.CHANCE_BAD, shown=shown(args), value=format_number(current))
        if get_chat(session, chat_id) is None:  # a group the bot has stored nothing of yet
            get_or_create_chat(session, chat_id, chat_type, title)
        set_reply_chance(session, chat_id, value)
    return say(language, texts.CHANCE_SET, value=format_number(value))


def my_data(db: Database, user_id: int) -> tuple[int, bytes]:
    """(how many messages the user wrote, a UTF-8 JSON file of everything stored about
    them: storage.personal_data)."""
    with db.read() as session:
        data = personal_data(session, user_id)
    written = sum(1 for m in data["messages"] if m["from"] == "you")
    return written, json.dumps(data, ensure_ascii=False, indent=2).encode()


def forget_command(db: Database, user_id: int, language: str) -> str:
    """/forget deletes the user's messages and settings."""
    return forget_done(forget_now(db, user_id), language)


def forget_now(db: Database, user_id: int) -> int:
    """Delete the user's messages and settings; how many of their messages went."""
    return forget_user(db, user_id)


def start_forget(db: Database, user_id: int) -> int:
    """Mark the user as being forgotten (storage.forgetting, step 1); how many messages of
    theirs it deletes."""
    with db.begin() as session:
        return request_forget(session, user_id)


def forget_rest(db: Database, user_id: int) -> int:
    """Finish the /forget the inbox started (bot.conversation.record_incoming); how many
    of their messages went."""
    return finish_forget(db, user_id)


def forget_done(deleted: int, language: str) -> str:
    return say(language, texts.FORGET_DONE, count=deleted)
