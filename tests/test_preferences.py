"""The database work behind /chance, /lang, /temp's buttons and /mydata: bad input gets
one clear answer and changes nothing."""

from __future__ import annotations

import json

import pytest

from bot import texts
from bot.conversation import MAX_UNASKED_OWED, Forget, Incoming, record_incoming
from bot.i18n import LANGUAGES
from bot.i18n import say as tr
from bot.preferences import (
    TEMP_BUTTON,
    chance_command,
    chance_of,
    forget_rest,
    lang_command,
    my_data,
    shown,
    temperature_button,
    temperature_of,
    user_language,
)
from storage import (
    count_trainable_messages,
    get_or_create_chat,
    get_or_create_user,
    get_user,
    pending_replies,
    set_language,
    set_reply_chance,
)

GROUP, ANN = -100777, 11


@pytest.fixture
def db(db):
    """The shared database (each backend), holding a group whose reply chance is 0.25."""
    with db.begin() as session:
        get_or_create_chat(session, GROUP, "supergroup", "G")
        set_reply_chance(session, GROUP, 0.25)
    return db


BAD_CHANCES = [
    ["nan"],
    ["inf"],
    ["-0.1"],
    ["1.01"],
    ["2"],
    ["0.5", "0.6"],
    ["０.５"],  # full-width digits
    ["½"],
    ["1e-1"],
    ["🎲"],
    ["x" * 4096],
    ["0x1"],
]


@pytest.mark.parametrize("args", BAD_CHANCES)
def test_a_bad_chance_is_refused_and_changes_nothing(db, args):
    answer = chance_command(db, GROUP, "supergroup", "G", args, "en")
    assert answer.startswith("“") and "It stays 0.25." in answer
    assert len(answer) < 400  # a long value is echoed cut short
    assert chance_of(db, GROUP) == 0.25


@pytest.mark.parametrize(("written", "value"), [("0", 0.0), ("1", 1.0), (".5", 0.5), ("0,2", 0.2)])
def test_a_chance_from_0_to_1_is_set(db, written, value):
    assert chance_command(db, GROUP, "supergroup", "G", [written], "en") == tr(
        "en", texts.CHANCE_SET, value=f"{value:g}"
    )
    assert chance_of(db, GROUP) == value


def test_a_group_the_bot_has_not_stored_yet_gets_its_chance(db):
    chance_command(db, -100999, "group", "New", ["0.5"], "en")
    assert chance_of(db, -100999) == 0.5
    assert chance_of(db, -100998) == 0.0  # never set: only when addressed


@pytest.mark.parametrize("args", [["xx"], ["de", "fr"], ["🇩🇪"], ["y" * 4096], ["en-"]])
def test_a_language_the_bot_lacks_is_refused_and_changes_nothing(db, args):
    answer = lang_command(db, ANN, args, "es")
    assert answer == tr("es", texts.LANG_BAD, shown=shown(args), codes=", ".join(LANGUAGES))
    assert len(answer) < 400
    with db.read() as session:
        assert get_user(session, ANN) is None  # not even created
    assert user_language(db, ANN, "es") == "es"


@pytest.mark.parametrize(
    "data", [None, "", "temp:", "temp:9", "temp:-1", "temp:nan", "temp:0.6;DROP", "other:1"]
)
def test_a_forged_temperature_button_changes_nothing(db, data):
    with db.begin() as session:
        get_or_create_user(session, ANN).temperature = 0.9
    answer = temperature_button(db, ANN, data, "en")
    assert answer == tr("en", texts.TEMP_BUTTON_STALE, value="0.9")
    assert temperature_of(db, ANN) == 0.9


def test_a_temperature_button_sets_it(db):
    assert temperature_button(db, ANN, TEMP_BUTTON + "0.3", "en") == "Temperature set to 0.3."
    assert temperature_of(db, ANN) == 0.3


def test_my_data_of_someone_never_met_is_empty(db):
    count, content = my_data(db, ANN)
    assert count == 0
    assert json.loads(content) == {"user": None, "messages": []}


def group_message(n: int, draw: float | None) -> Incoming:
    return Incoming(GROUP, "supergroup", ANN, f"message {n}", message_id=n, draw=draw)


def test_the_reply_chance_picks_by_the_draw_until_the_unasked_backlog_is_full(db):
    # chance 0.25: a draw of 0.3 is not picked, those below are, while fewer than
    # MAX_UNASKED_OWED unasked replies wait
    draws = [0.3, *[0.1] * (MAX_UNASKED_OWED + 2)]
    recorded = record_incoming(db, [(group_message(n, d), False) for n, d in enumerate(draws)])
    assert recorded.owed == [(GROUP, n) for n in range(1, MAX_UNASKED_OWED + 1)]
    mention = record_incoming(db, [(group_message(99, None), True)])  # asked: always owed
    assert mention.owed == [(GROUP, 99)]
    with db.read() as session:
        asked = {p.telegram_message_id: p.asked for p in pending_replies(session)}
    assert asked == {**dict.fromkeys(range(1, MAX_UNASKED_OWED + 1), False), 99: True}


def private_message(n: int, text: str) -> tuple[Incoming, bool]:
    return Incoming(ANN, "private", ANN, text, message_id=n), True


def test_a_forget_in_a_batch_marks_what_came_before_and_its_handler_deletes_it(db):
    with db.begin() as session:
        set_language(session, ANN, "de")
    items = [
        private_message(1, "before"),
        (group_message(2, None), True),
        Forget(ANN, update_id=7, app_language="fr"),
        private_message(3, "after"),
    ]
    recorded = record_incoming(db, items)
    assert recorded.forgotten == {7: ("de", 2)}  # the language chosen before it went
    assert recorded.owed == [(ANN, 1), (GROUP, 2), (ANN, 3)]
    with db.read() as session:
        ann = get_user(session, ANN)
        assert ann.forget_until_id is not None and ann.language is None  # at once, in the batch
        assert count_trainable_messages(session) == 0  # marked: out of training
        # the replies owed to what came before are dropped; "after" is still owed one
        assert [p.telegram_message_id for p in pending_replies(session)] == [3]
    assert forget_rest(db, ANN) == 2  # the handler finishes it
    _, content = my_data(db, ANN)
    assert [m["text"] for m in json.loads(content)["messages"]] == ["after"]
    with db.read() as session:
        assert get_user(session, ANN).learning is True  # wrote again: afresh, learning on
    assert forget_rest(db, ANN) == 0  # nothing more to do
