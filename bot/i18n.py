"""The bot's own texts in its users' languages: the gettext catalogue in bot/locales/.

The message ids are the English texts of bot/texts.py (marked N_ there); each language
has a catalogue `bot/locales/<code>/LC_MESSAGES/charbot.po`, read with Babel once per
process. Updating them is the usual gettext round (README, "Translations"):

    pybabel extract -k N_ --no-default-keywords --no-location -w 100 \
        -o bot/locales/charbot.pot bot/texts.py
    pybabel update -w 100 -i bot/locales/charbot.pot -d bot/locales -D charbot

Which language a user gets: the one they chose with /lang, else their Telegram app's
(`language_code`, e.g. "pt-br" -> "pt"), else English; a language without a catalogue,
or a text missing from one, falls back to English.
"""

from __future__ import annotations

import functools
from pathlib import Path

from babel.messages.pofile import read_po

LOCALES = Path(__file__).with_name("locales")
DOMAIN = "charbot"
DEFAULT_LANGUAGE = "en"  # the language of the message ids
# Each language's own name, for /lang; the keys are the languages the bot speaks.
LANGUAGE_NAMES = {
    "en": "English",
    "es": "Español",
    "it": "Italiano",
    "pt": "Português",
    "nl": "Nederlands",
    "de": "Deutsch",
    "fr": "Français",
    "ru": "Русский",
    "uk": "Українська",
    "fa": "فارسی",
    "zh": "中文",
    "ja": "日本語",
    "ko": "한국어",
}
LANGUAGES = tuple(LANGUAGE_NAMES)


def catalogue_path(language: str) -> Path:
    return LOCALES / language / "LC_MESSAGES" / f"{DOMAIN}.po"


@functools.cache
def _catalogue(language: str) -> dict[str, str]:
    """msgid -> translation of one language (fuzzy and empty entries left out)."""
    path = catalogue_path(language)
    if language == DEFAULT_LANGUAGE or not path.is_file():
        return {}
    with path.open("rb") as f:
        catalog = read_po(f, locale=language, domain=DOMAIN)
    return {m.id: m.string for m in catalog if m.id and m.string and not m.fuzzy}


def gettext(text: str, language: str) -> str:
    """`text` (an N_-marked text of bot.texts) in `language`, English where missing."""
    return _catalogue(language).get(text, text) if language in LANGUAGE_NAMES else text


def say(language: str, text: str, /, **fields: object) -> str:
    """`text` in `language`, its placeholders filled."""
    return gettext(text, language).format(**fields)


def supported(code: str | None) -> str | None:
    """The language the bot speaks for a Telegram or /lang code ("de", "pt-BR", "zh_hans"),
    None if it speaks none of it."""
    if not code:
        return None
    base = code.strip().lower().replace("_", "-").split("-")[0]
    return base if base in LANGUAGE_NAMES else None


def choose(chosen: str | None, telegram_code: str | None) -> str:
    """The language to answer in: the user's /lang choice, else their app's, else English."""
    return supported(chosen) or supported(telegram_code) or DEFAULT_LANGUAGE
