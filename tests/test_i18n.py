"""The catalogue of the bot's own texts: complete in every language, placeholders kept."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_file
from babel.messages.pofile import read_po

from bot import texts
from bot.commands import COMMANDS
from bot.i18n import LANGUAGES, LOCALES, catalogue_path, choose, gettext, say, supported

TEXTS_FILE = Path(texts.__file__)
MENU_LIMIT, DESCRIPTION_LIMIT, SHORT_DESCRIPTION_LIMIT = 256, 512, 120  # Telegram's


def marked_texts() -> set[str]:
    """The N_-marked texts of bot/texts.py, found the way `pybabel extract -k N_` finds them."""
    found = extract_from_file("python", TEXTS_FILE, keywords={"N_": None})
    return {message for _, message, _, _ in found}


def fields(text: str) -> list[str]:
    return sorted({f for _, f, _, _ in string.Formatter().parse(text) if f is not None})


def test_the_template_holds_exactly_the_marked_texts():
    with (LOCALES / "charbot.pot").open("rb") as f:
        template = {m.id for m in read_po(f) if m.id}
    assert template == marked_texts(), "run the pybabel extract line in bot/i18n.py"


@pytest.mark.parametrize("language", [lang for lang in LANGUAGES if lang != "en"])
def test_every_language_has_every_text_with_the_same_placeholders(language):
    with catalogue_path(language).open("rb") as f:
        catalogue = read_po(f)
    entries = {m.id: m for m in catalogue if m.id}
    assert set(entries) == marked_texts()  # none missing, none left over
    for msgid, entry in entries.items():
        assert entry.string and not entry.fuzzy, msgid
        assert fields(entry.string) == fields(msgid), (msgid, entry.string)
        assert gettext(msgid, language) == entry.string
    for command in COMMANDS:
        assert 1 <= len(gettext(command.menu, language)) <= MENU_LIMIT
    assert len(gettext(texts.DESCRIPTION, language)) <= DESCRIPTION_LIMIT
    assert len(gettext(texts.SHORT_DESCRIPTION, language)) <= SHORT_DESCRIPTION_LIMIT


def test_a_language_the_bot_lacks_or_a_text_outside_the_catalogue_reads_english():
    assert gettext(texts.TEMP_SET, "sw") == texts.TEMP_SET
    assert gettext("not in the catalogue", "de") == "not in the catalogue"
    assert say("xx", texts.TEMP_SET, value="0.5") == "Temperature set to 0.5."
    assert say("de", texts.TEMP_SET, value="0.5") != "Temperature set to 0.5."


@pytest.mark.parametrize(
    ("chosen", "app", "expected"),
    [
        (None, "de", "de"),
        (None, "pt-br", "pt"),
        (None, "zh-hans", "zh"),
        (None, "PT_br", "pt"),
        ("fr", "de", "fr"),  # the /lang choice wins
        ("zz", "de", "de"),  # a choice the bot no longer speaks is ignored
        (None, "sw", "en"),
        (None, "", "en"),
        (None, None, "en"),
        (None, "  ", "en"),
    ],
)
def test_the_language_is_the_choice_then_the_app_then_english(chosen, app, expected):
    assert choose(chosen, app) == expected


def test_supported_reads_only_codes_of_languages_with_a_catalogue():
    assert [supported(c) for c in ("ko", "KO", "ja-JP", "english", "🙂", "de-")] == [
        "ko",
        "ko",
        "ja",
        None,
        None,
        "de",
    ]
