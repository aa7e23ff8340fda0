"""`charbot chat` (the bot in the terminal) and the `charbot` command line."""

from __future__ import annotations

import asyncio
import contextlib
import io
import sqlite3
import subprocess
import time

import pytest

from bot import commands, texts
from bot.datadir import open_database_for
from bot.i18n import gettext, say
from bot.services import open_services
from bot.settings import load_settings
from bot.terminal import LOCAL_CHAT_ID, LOCAL_USER_ID, WAITING, chat, format_answer, respond
from storage import add_message, get_or_create_chat, get_or_create_user
from storage.forgetting import request_forget


def sql(data_dir, query, *args):
    with contextlib.closing(sqlite3.connect(data_dir / "charbot.sqlite3")) as conn:
        return conn.execute(query, args).fetchall()


@pytest.fixture
def services(tmp_path, tiny_model_path, generator):
    settings = load_settings(
        {"CHARBOT_DATA_DIR": str(tmp_path / "data"), "CHARBOT_MODEL_PATH": str(tiny_model_path)},
        env_file=None,
    )
    opened = open_services(settings, generator=generator)
    yield opened
    opened.close()


def test_piped_lines_each_get_one_answer(services, tmp_path):
    stdin = io.StringIO("hello\n\n/temp 0.2\n/temp\n/temp 0.5 0.7\n你好 😀\n/learn off\n")
    stdout = io.StringIO()
    assert chat(services, stdin, stdout) == 0
    lines = stdout.getvalue().splitlines()
    answers = [line for line in lines if line.startswith("bot> ")]
    assert len(answers) == 6  # the blank line gets no answer
    assert answers[1] == "bot> Temperature set to 0.2."
    assert answers[2].startswith("bot> Your temperature is 0.2 ")
    assert "from 0 to 2" in answers[3] and "Yours stays 0.2" in answers[3]
    assert answers[5] == "bot> " + texts.LEARN_SET_OFF
    data = tmp_path / "data"
    assert sql(data, "SELECT id, type FROM chats") == [(LOCAL_CHAT_ID, "terminal")]
    assert sql(data, "SELECT temperature, learning FROM users WHERE id = ?", LOCAL_USER_ID) == [
        (0.2, 0)
    ]
    turns = sql(data, "SELECT from_bot, text FROM messages ORDER BY id")
    assert [t for t in turns if not t[0]] == [(0, "hello"), (0, "你好 😀")]
    assert len(turns) == 4  # two replies; commands are not stored


def test_the_terminal_speaks_the_language_chosen_with_lang(services):
    async def answers():
        return [await respond(services, line) for line in ("/lang de", "/help", "/nope")]

    chosen, help_, unknown = asyncio.run(answers())
    assert chosen == say("de", texts.LANG_SET, language="Deutsch")
    assert help_ == commands.help_text(admin=True, language="de")
    assert unknown == gettext(texts.UNKNOWN_COMMAND, "de")


def test_multi_line_answers_are_indented():
    assert format_answer("one\ntwo") == "bot> one\n     two"


def answers(services, *lines):
    """respond() to each line in turn, with the live model serving."""

    async def main():
        await services.live.start()
        try:
            return [await respond(services, line) for line in lines]
        finally:
            await services.live.stop()

    return asyncio.run(main())


def test_the_local_user_is_an_admin_and_can_forget(services):
    help_, _, status, forgot, temp, nope, blank = answers(
        services, "/help", "something", "/status", "/forget", "/temp", "/nope", "   "
    )
    assert "/status" in help_
    assert status.startswith("Model: version 1") and "Messages: 2 (1 from people" in status
    assert forgot == texts.FORGET_DONE.format(count=1)
    assert temp.startswith("Your temperature is 0.6 ")
    assert nope == texts.UNKNOWN_COMMAND
    assert blank is None


def test_a_forget_a_crash_cut_short_is_finished_when_the_bot_starts(
    tmp_path, tiny_model_path, generator
):
    settings = load_settings(
        {"CHARBOT_DATA_DIR": str(tmp_path / "data"), "CHARBOT_MODEL_PATH": str(tiny_model_path)},
        env_file=None,
    )
    db = open_database_for(settings)
    with db.begin() as session:
        for user in (1, 2):
            get_or_create_chat(session, user, "private")
            get_or_create_user(session, user)
            add_message(session, chat_id=user, user_id=user, text=f"from {user}")
        request_forget(session, 1)  # then the process stopped
    db.dispose()
    opened = open_services(settings, generator=generator)
    opened.close()
    data = tmp_path / "data"
    assert sql(data, "SELECT id, forget_until_id FROM users") == [(2, None)]
    assert sql(data, "SELECT text FROM messages") == [("from 2",)]


def test_the_terminal_runs_every_command_its_help_lists(services):
    listed = [c for c in commands.COMMANDS if f"/{c.name}" in commands.help_text(admin=True)]
    assert [c.name for c in listed] == [c.name for c in commands.COMMANDS]
    safe = [f"/{c.name}" for c in listed if c.name not in ("retrain", "forget")]
    replies = dict(zip(safe, answers(services, *safe), strict=True))
    assert texts.UNKNOWN_COMMAND not in replies.values()
    assert replies["/rollback"].startswith("Cannot roll back: ")  # one version only
    assert replies["/help"] == commands.help_text(admin=True)


def test_retrain_in_the_terminal_runs_and_reports_before_it_exits(services):
    stdout = io.StringIO()
    assert chat(services, io.StringIO("/retrain\n"), stdout) == 0
    lines = stdout.getvalue().splitlines()
    assert lines[:2] == ["bot> " + texts.RETRAIN_STARTED, WAITING]
    # a real `charbot train` child: too little data to hold any out
    assert lines[2].startswith("bot> Retraining run 1 (admin): skipped.")
    assert any("not enough conversations" in line for line in lines[2:])


# -- the real command, in a subprocess ---------------------------------------------------


def test_charbot_chat_answers_a_pipe_and_exits_at_eof(
    tmp_path, tiny_model_path, clean_env, charbot
):
    env = {
        **clean_env,
        "CHARBOT_DATA_DIR": str(tmp_path / "data"),
        "CHARBOT_MODEL_PATH": str(tiny_model_path),
    }
    result = subprocess.run(
        [*charbot, "chat"],
        input="hello\n/temp 0.2\n/temp\n",
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    answers = [line for line in lines if line.startswith("bot> ")]
    assert len(answers) == 3  # (a reply's further lines are indented)
    assert all(line.startswith(("bot> ", "     ")) for line in lines)
    assert answers[1:] == [
        "bot> Temperature set to 0.2.",
        "bot> " + texts.TEMP_SHOW.format(value="0.2"),
    ]
    # No TensorFlow chatter (absl's preamble, INFO lines) and no traceback.
    assert "absl::InitializeLog" not in result.stderr
    assert "I0000" not in result.stderr and "Traceback" not in result.stderr

    # `charbot status` prints what /status shows, from the same data dir.
    status = subprocess.run(
        [*charbot, "status"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith("Model: version 1 (tiny-test, created 2025-01-01")
    assert "Messages: 2 (1 from people, 1 from the bot)" in status.stdout
    assert "Users: 1, chats: 1" in status.stdout


def test_help_is_fast_and_lists_the_commands(charbot, clean_env):
    started = time.monotonic()
    result = subprocess.run(
        [*charbot, "--help"], env=clean_env, capture_output=True, text=True, timeout=30
    )
    assert time.monotonic() - started < 3  # no TensorFlow import
    assert result.returncode == 0
    for name in ("run", "chat", "status", "pretrain", "eval", "train"):
        assert name in result.stdout


@pytest.mark.parametrize(
    ("variable", "value", "line"),
    [
        (
            "CHARBOT_ADMIN_IDS",
            "abc",
            "charbot: CHARBOT_ADMIN_IDS: 'abc' is not a Telegram user id "
            "(expected comma-separated integers)",
        ),
        (
            "CHARBOT_RETRAIN_INTERVAL",
            "-5",
            "charbot: CHARBOT_RETRAIN_INTERVAL: '-5' is not a whole number of seconds from 1 "
            "to 31622400 (e.g. 21600 = every 6 hours)",
        ),
        (
            "CHARBOT_TELEGRAM_BASE_URL",
            "telegram",
            "charbot: CHARBOT_TELEGRAM_BASE_URL: 'telegram' is not an http(s) URL with a host "
            "(expected e.g. https://api.telegram.org/bot)",
        ),
    ],
)
def test_a_bad_setting_stops_with_one_line(charbot, clean_env, tmp_path, variable, value, line):
    result = subprocess.run(
        [*charbot, "chat"],
        env={**clean_env, variable: value},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        input="",
    )
    assert result.returncode == 2
    assert result.stderr == line + "\n"
    assert result.stdout == ""


def test_a_bad_setting_in_dotenv_stops_with_one_line(charbot, clean_env, tmp_path):
    (tmp_path / ".env").write_text("CHARBOT_ADMIN_IDS=12,x\n")
    result = subprocess.run(
        [*charbot, "status"], env=clean_env, cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.startswith("charbot: CHARBOT_ADMIN_IDS: 'x' is not a Telegram user id")


def test_run_without_a_token_says_how_to_get_one(charbot, clean_env, tmp_path):
    result = subprocess.run(
        [*charbot, "run"], env=clean_env, cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr == (
        "charbot: TELEGRAM_BOT_TOKEN is not set (get one from @BotFather), or try `charbot chat`\n"
    )


def test_train_with_too_little_data_records_a_skipped_run(
    charbot, clean_env, tmp_path, tiny_model_path
):
    env = {
        **clean_env,
        "CHARBOT_DATA_DIR": str(tmp_path / "data"),
        "CHARBOT_MODEL_PATH": str(tiny_model_path),
    }

    def train():
        return subprocess.run(
            [*charbot, "train", "--json"], env=env, cwd=tmp_path, capture_output=True, text=True
        )

    first = train()
    assert first.returncode == 0, first.stderr
    assert "skipped: not enough" in first.stdout
    assert first.stdout.splitlines()[-1] == '{"run_id": 1, "status": "skipped"}'
    second = train()  # the first run left no lock behind
    assert second.stdout.splitlines()[-1] == '{"run_id": 2, "status": "skipped"}'
    status = subprocess.run(
        [*charbot, "status"], env=env, cwd=tmp_path, capture_output=True, text=True
    ).stdout
    assert "Last run: 2, skipped" in status and "Live version: 1 of 1 kept" in status


def test_an_unusable_model_file_is_one_line(charbot, clean_env, tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a model")
    env = {**clean_env, "CHARBOT_DATA_DIR": str(tmp_path / "data"), "CHARBOT_MODEL_PATH": str(bad)}
    result = subprocess.run(
        [*charbot, "chat"], env=env, cwd=tmp_path, capture_output=True, text=True, input="hi\n"
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"charbot: {bad}: not a charbot model file")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
