"""The real `charbot run` (and `charbot chat`) against faults an operator can meet: each
ends in one clear line, and no secret leaks.

A revoked token while polling, error texts that quote the request URL, a corrupt or
truncated database file, a read-only data dir, no loadable model.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest
from test_bot_e2e import ADMIN, USER, data_dir, env, running_bot, say, settings, stub

from model.store import ModelStore

__all__ = ["data_dir", "env", "settings", "stub"]  # fixtures used here, defined there

pytestmark = pytest.mark.e2e


def run_bot(charbot, clean_env, env, cwd):
    return subprocess.Popen(
        [*charbot, "run"],
        env={**clean_env, **env},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process, timeout=60):
    try:
        return process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_a_token_revoked_while_polling_ends_the_process_with_one_line(
    stub, env, tmp_path, clean_env, charbot
):
    process = run_bot(charbot, clean_env, env, tmp_path)
    stub.wait_for_calls("getUpdates", 1, timeout=120)
    stub.push_message("hello", user_id=USER)
    stub.wait_for_messages(USER, 1, timeout=30)
    stub.revoke_token()
    started = time.monotonic()
    _, err = finish(process)
    assert process.returncode == 1
    assert time.monotonic() - started < 40  # not left running, deaf
    assert err.splitlines()[-1] == (
        "charbot: Telegram refused TELEGRAM_BOT_TOKEN (check it with @BotFather)"
    )
    assert "Traceback" not in err.splitlines()[-1]


def test_error_texts_that_quote_the_url_never_show_the_token(
    stub, env, tmp_path, clean_env, charbot
):
    token = stub.token
    secret = token.split(":")[1]
    # How such texts arrive: PTB capitalises "Bad Request: ..." (lower-casing the rest).
    urls = [f"/bot{token}/getUpdates", "/bot" + urllib.parse.quote(token, safe="")]
    for url in [*urls, f"/bot{token.upper()}/getUpdates"]:
        stub.fail_next("getUpdates", 400, f"Bad Request: Invalid url {url}")
    process = run_bot(charbot, clean_env, env, tmp_path)
    stub.wait_for_calls("getUpdates", 4, timeout=120)
    stub.push_message("hello", user_id=USER)
    stub.wait_for_messages(USER, 1, timeout=30)  # and polling recovered
    process.terminate()
    out, err = finish(process)
    assert "Invalid url" in err or "invalid url" in err  # the errors were logged...
    assert "<token>" in err
    for text in (out, err):
        assert secret.lower() not in text.lower()  # ...without the token, in any form
        assert urllib.parse.quote(secret, safe="").lower() not in text.lower()


@pytest.mark.parametrize(
    ("damage", "notice", "served"),
    [
        ("pointer", "the live pointer", 2),  # garbage LIVE after a rollback to 1: the newest
        ("gone", "every model version was gone", 3),
        ("broken", "no model version loads (versions 1, 2)", 3),
    ],
)
def test_a_damaged_model_store_keeps_serving_and_tells_the_admins(
    stub, settings, generator, data_dir, damage, notice, served
):
    from bot.datadir import open_store

    store = open_store(settings)
    store.publish(store.load(1), {"note": "a fine-tune"})
    store.rollback()  # an admin's choice
    if damage == "pointer":
        (store.root / "LIVE").write_text("{ not json")
    for version in store.versions():
        if damage == "gone":
            shutil.rmtree(store.path(version))
        elif damage == "broken":
            store.model_path(version).write_bytes(b"truncated")

    stub.meet(ADMIN)  # an admin who has a private chat with the bot (else only the log says)

    async def main():
        async with running_bot(settings, generator) as app:
            told = await stub.await_messages(ADMIN, 1, timeout=20)
            status = await say(stub, "/status", user=ADMIN)
            reply = await say(stub, "hello", user=USER)
            return told[0]["text"], status, reply, app

    told, status, reply, _ = asyncio.run(main())
    assert told.startswith("The model store needed a repair at start: ") and notice in told
    assert f"Model: version {served} " in status
    assert reply.strip()
    repaired = ModelStore(store.root)  # the next start finds nothing left to repair
    assert repaired.live_version() == served and repaired.notices == []


def one_line_failure(charbot, clean_env, env, cwd, command="chat"):
    started = time.monotonic()
    result = subprocess.run(
        [*charbot, command],
        env={**clean_env, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        input="hello\n",
        timeout=120,
    )
    return result, time.monotonic() - started


@pytest.mark.parametrize("command", ["chat", "status", "run"])
@pytest.mark.parametrize(
    ("damage", "words"),
    [
        ("garbage", "file is not a database: the file is damaged: restore it from a backup"),
        ("truncated", "the file is damaged: restore it from a backup"),
    ],
)
def test_a_corrupt_database_is_one_line_before_the_model_loads(
    env, data_dir, tmp_path, clean_env, charbot, command, damage, words
):
    from storage import open_database, sqlite_url

    data_dir.mkdir(parents=True)
    db_file = data_dir / "charbot.sqlite3"
    if damage == "garbage":
        db_file.write_bytes(b"this is no database, just bytes " * 200)
    else:  # a real database, cut short
        open_database(sqlite_url(data_dir)).dispose()
        db_file.write_bytes(db_file.read_bytes()[:1500])
    before = db_file.read_bytes()
    result, seconds = one_line_failure(charbot, clean_env, env, tmp_path, command)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"charbot: {db_file}: ") and words in result.stderr
    assert seconds < 8  # TensorFlow and the model were never loaded
    assert db_file.read_bytes() == before  # nothing changed or disappeared


def test_a_data_dir_the_bot_cannot_write_is_one_line(env, data_dir, tmp_path, clean_env, charbot):
    if os.geteuid() == 0:  # root writes through file modes; a read-only file system it cannot
        read_only = Path("/proc/sys")
    else:
        read_only = data_dir
        read_only.mkdir(parents=True)
        read_only.chmod(0o555)
    assert not os.access(read_only, os.W_OK)
    try:
        result, _ = one_line_failure(
            charbot, clean_env, {**env, "CHARBOT_DATA_DIR": str(read_only)}, tmp_path
        )
    finally:
        if read_only == data_dir:
            data_dir.chmod(0o755)
    assert result.returncode == 1
    assert result.stderr == (
        f"charbot: CHARBOT_DATA_DIR {read_only}: not writable by this user: give it write "
        "access (chown/chmod), or choose another folder\n"
    )
