"""Message content as Telegram shapes it: lengths in UTF-16 code units, the entities clients
attach to text, and inline keyboards (the only ``reply_markup`` the stub models), validated."""

from __future__ import annotations

import re
from typing import Any

from stub_wire import Params, bad

MAX_CALLBACK_DATA_BYTES = 64
_BUTTON_ACTIONS = ("callback_data", "url")  # the inline keyboard button actions modelled
_OTHER_BUTTON_ACTIONS = (
    "web_app",
    "login_url",
    "switch_inline_query",
    "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat",
    "copy_text",
    "callback_game",
    "pay",
)


def utf16_len(text: str) -> int:
    """Length of ``text`` in UTF-16 code units, the unit Telegram counts limits and offsets in."""
    return len(text.encode("utf-16-le")) // 2


_COMMAND_RE = re.compile(r"(?<![^\s])/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{3,32})?(?![A-Za-z0-9_@])")
_MENTION_RE = re.compile(r"(?<![A-Za-z0-9_/@])@[A-Za-z][A-Za-z0-9_]{4,31}(?![A-Za-z0-9_])")


def auto_entities(text: str) -> list[Params]:
    """The entities Telegram's clients would attach: ``bot_command`` and ``mention``."""
    found = [(m.start(), m.end(), "bot_command") for m in _COMMAND_RE.finditer(text)]
    for m in _MENTION_RE.finditer(text):
        if not any(s <= m.start() < e for s, e, _ in found):
            found.append((m.start(), m.end(), "mention"))
    return [
        {"offset": utf16_len(text[:s]), "length": utf16_len(text[s:e]), "type": kind}
        for s, e, kind in sorted(found)
    ]


def _inline_button(button: Any) -> Params:
    """A validated inline keyboard button, as Telegram returns it: ``text`` and its action."""
    if not isinstance(button, dict):
        raise bad("can't parse inline keyboard button: InlineKeyboardButton must be an Object")
    text = button.get("text")
    if not isinstance(text, str):
        raise bad('can\'t parse inline keyboard button: Field "text" must be of type String')
    if not text.strip():
        raise bad("BUTTON_TEXT_INVALID")
    if other := [key for key in _OTHER_BUTTON_ACTIONS if key in button]:
        raise bad(f"BotApiStub does not model inline keyboard buttons with {other[0]}")
    actions = [key for key in _BUTTON_ACTIONS if key in button]
    if not actions:
        raise bad(
            "can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard"
        )
    if len(actions) > 1:  # the Bot API docs demand exactly one; the stub holds bots to it
        raise bad(f"can't parse inline keyboard button: more than one action: {actions}")
    value = button[actions[0]]
    if actions[0] == "callback_data":
        if not isinstance(value, str) or not 1 <= len(value.encode()) <= MAX_CALLBACK_DATA_BYTES:
            raise bad("BUTTON_DATA_INVALID")
    elif not isinstance(value, str) or not re.match(r"(?i)(https?|tg)://\S", value):
        raise bad("BUTTON_URL_INVALID")
    return {"text": text, actions[0]: value}


def inline_keyboard(markup: Any) -> Params | None:
    """The validated ``reply_markup``: an inline keyboard, or None for none (or an empty one)."""
    if markup is None or markup == "":
        return None
    if not isinstance(markup, dict):
        raise bad("can't parse reply keyboard markup JSON object")
    if "inline_keyboard" not in markup:
        raise bad("BotApiStub does not model reply keyboards; only inline_keyboard is supported")
    rows = markup["inline_keyboard"]
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise bad('field "inline_keyboard" of the InlineKeyboardMarkup must be an Array of Arrays')
    keyboard = [[_inline_button(button) for button in row] for row in rows]
    keyboard = [row for row in keyboard if row]
    return {"inline_keyboard": keyboard} if keyboard else None
