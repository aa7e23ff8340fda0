"""What an operator runs: `charbot --version`, JSON logs, backups restored into a fresh
data dir that the bot then serves from, and one clear line for each bad path."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import sys
import threading
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from test_bot_e2e import ADMIN, USER, data_dir, env, running_bot, say, settings, sql, stub, until

from bot import cli
from bot.backup import BackupError, backup, restore
from bot.logs import JsonFormatter
from bot.metrics import HEALTH_PATH, MetricsServer
from bot.settings import Settings, SettingsError, load_settings
from model.store import ModelStore

__all__ = ["data_dir", "env", "settings", "stub"]  # fixtures used here, defined there

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_version_is_the_installed_package_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"charbot {cli.package_version()}"
    assert cli.package_version()[0].isdigit()


def test_json_logs_are_one_object_per_line_with_the_token_redacted():
    token = "123456:SecretPartOfTheToken"
    formatter = JsonFormatter("%(message)s", secrets=[token])
    try:
        raise RuntimeError(f"failed at /bot{token}/getUpdates")
    except RuntimeError:
        record = logging.LogRecord(
            "bot.app", logging.ERROR, __file__, 1, "talking to %s failed", (token.lower(),), None
        )
        record.exc_info = sys.exc_info()
    line = formatter.format(record)
    entry = json.loads(line)
    assert "\n" not in line and "secretpart" not in line.lower()
    assert entry["level"] == "ERROR" and entry["logger"] == "bot.app"
    assert entry["message"] == "talking to <token> failed"
    assert "RuntimeError" in entry["exception"] and entry["time"].endswith("+00:00")


@pytest.mark.parametrize("value", ["xml", "JSONL", "🙂"])
def test_an_unknown_log_format_is_one_line_naming_the_variable(value):
    with pytest.raises(SettingsError, match=r"^CHARBOT_LOG_FORMAT: ") as error:
        load_settings({"CHARBOT_LOG_FORMAT": value}, env_file=None)
    assert "\n" not in str(error.value)
    assert load_settings({"CHARBOT_LOG_FORMAT": "JSON"}, env_file=None).log_format == "json"


@pytest.mark.parametrize(
    ("machine", "system", "package"),
    [
        ("x86_64", "Linux", "tensorflow-cpu"),
        ("AMD64", "Windows", "tensorflow-cpu"),
        ("aarch64", "Linux", "tensorflow"),
        ("arm64", "Darwin", "tensorflow"),
    ],
)
def test_every_platform_gets_one_tensorflow_with_wheels(machine, system, package):
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    environment = {"platform_machine": machine, "platform_system": system}
    chosen = [
        req.name
        for req in map(Requirement, project["dependencies"])
        if req.name in ("tensorflow", "tensorflow-cpu")
        and (req.marker is None or req.marker.evaluate(environment))
    ]
    assert chosen == [package]


# -- backups --------------------------------------------------------------------------------


def test_a_backup_taken_while_the_bot_runs_restores_into_a_fresh_data_dir(
    stub, env, settings, data_dir, generator, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    dest = tmp_path / "backup"
    failures = []

    async def before(app):
        await say(stub, "/temp 1.3")
        await say(stub, "remember this")
        # The reply is recorded just after it is sent: backed up before that, the restored
        # bot would owe it and answer it again, with other words.
        owed = "SELECT count(*) FROM pending_replies"
        await until(lambda: sql(data_dir, owed) == [(0,)], what="the reply recorded")
        writing = threading.Event()

        def write_meanwhile():  # another writer all through the backup
            try:
                with contextlib.closing(sqlite3.connect(data_dir / "charbot.sqlite3")) as conn:
                    for i in range(200):
                        conn.execute("UPDATE users SET name = ? WHERE id = ?", (f"n{i}", USER))
                        conn.commit()
                        writing.set()
            except Exception as exc:
                failures.append(exc)
                writing.set()

        writer = threading.Thread(target=write_meanwhile)
        writer.start()
        assert await asyncio.to_thread(writing.wait, 10)
        version = await asyncio.to_thread(backup, settings, dest)
        writer.join()
        return version

    async def main(settings_, body):
        async with running_bot(settings_, generator) as app:
            return await body(app)

    version = asyncio.run(main(settings, before))
    assert failures == []
    assert sorted(p.name for p in dest.iterdir()) == ["charbot.sqlite3", "models"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no leftovers
    [(name,)] = sql(dest, "SELECT name FROM users WHERE id = ?", USER)
    assert name.startswith("n")  # a snapshot taken while the writer wrote
    messages = sql(data_dir, "SELECT text, from_bot FROM messages ORDER BY id")

    fresh = tmp_path / "fresh"
    monkeypatch.setenv("CHARBOT_DATA_DIR", str(fresh))
    monkeypatch.delenv("CHARBOT_DATABASE_URL", raising=False)
    assert cli.main(["restore", str(dest)]) == 0
    assert ModelStore(fresh / "models").live_version() == version
    restored = load_settings({**env, "CHARBOT_DATA_DIR": str(fresh)}, env_file=None)

    async def after(app):
        return await say(stub, "/temp"), await say(stub, "/status", user=ADMIN)

    shown, status = asyncio.run(main(restored, after))
    assert shown.startswith("Your temperature is 1.3 ")
    assert f"version {version}" in status
    assert sql(fresh, "SELECT text, from_bot FROM messages ORDER BY id")[: len(messages)] == (
        messages
    )


def test_bad_backup_and_restore_paths_are_one_line_each(settings, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    (tmp_path / "taken").mkdir()
    with pytest.raises(BackupError, match="exists already"):
        backup(settings, tmp_path / "taken")
    with pytest.raises(BackupError, match="is not a folder this user can write in"):
        backup(settings, tmp_path / "no" / "such" / "dir")
    with monkeypatch.context() as read_only:
        read_only.setattr(os, "access", lambda *args, **kwargs: False)
        with pytest.raises(BackupError, match="is not a folder this user can write in"):
            backup(settings, tmp_path / "fine")
    with pytest.raises(BackupError, match="nothing to back up yet"):
        backup(settings, tmp_path / "first")
    with pytest.raises(BackupError, match="is not a charbot backup"):
        restore(settings, tmp_path / "taken")
    assert not (tmp_path / "first").exists()

    (settings.data_dir).mkdir(parents=True)
    (settings.data_dir / "charbot.sqlite3").write_bytes(b"")
    (tmp_path / "taken" / "charbot.sqlite3").write_bytes(b"")
    (tmp_path / "taken" / "models").mkdir()
    with pytest.raises(
        BackupError, match="exist already: restore into a data dir with no database"
    ):
        restore(settings, tmp_path / "taken")
    assert (settings.data_dir / "charbot.sqlite3").read_bytes() == b""  # left as it was

    monkeypatch.setenv("CHARBOT_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("CHARBOT_DATABASE_URL", "postgresql://charbot@db.example/charbot")
    assert cli.main(["backup", str(tmp_path / "pg")]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "pg_dump" in error and "CHARBOT_DATABASE_URL" in error


def test_a_backup_or_restore_that_fails_half_way_leaves_nothing(settings, tmp_path):
    settings.data_dir.mkdir(parents=True)
    sqlite3.connect(settings.data_dir / "charbot.sqlite3").close()
    (settings.data_dir / "models").mkdir()  # no version in it
    with pytest.raises(BackupError, match="no model version"):
        backup(settings, tmp_path / "b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no partial folder

    fake = tmp_path / "fake"
    (fake / "models").mkdir(parents=True)
    sqlite3.connect(fake / "charbot.sqlite3").close()
    fresh = Settings(data_dir=tmp_path / "fresh")
    with pytest.raises(BackupError, match="holds no model version that loads"):
        restore(fresh, fake)
    assert list(fresh.data_dir.iterdir()) == []

    (fresh.data_dir / "charbot.sqlite3-wal").write_bytes(b"old")  # a database's leftover
    with pytest.raises(BackupError, match="sqlite3-wal exist already"):
        restore(fresh, fake)


@pytest.mark.parametrize("case", ["missing folder", "a folder", "unwritable"])
def test_pretrain_out_is_checked_before_tensorflow_loads(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "import_tensorflow", lambda: pytest.fail("TensorFlow loaded"))
    out = tmp_path / "base.npz"
    if case == "missing folder":
        out = tmp_path / "nowhere" / "base.npz"
    elif case == "a folder":
        out = tmp_path
    else:
        monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)
    assert cli.main(["pretrain", "--out", str(out)]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("charbot: ")


def test_pretrain_mix_only_refits_the_mixture_without_training(tmp_path, monkeypatch):
    import model.pretrain

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "import_tensorflow", lambda: None)
    monkeypatch.setattr(model.pretrain, "pretrain", lambda **kw: pytest.fail("trained"))
    calls = []
    monkeypatch.setattr(model.pretrain, "refit_mix", lambda **kw: calls.append(kw))
    out = tmp_path / "base.npz"
    assert cli.main(["pretrain", "--mix-only", "--out", str(out)]) == 0
    assert cli.main(["pretrain", "--mix-only"]) == 0
    assert calls == [{"out_path": out}, {}]


# -- metrics and health ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "address"),
    [("9100", ("127.0.0.1", 9100)), ("0.0.0.0:9100", ("0.0.0.0", 9100)), ("[::1]:80", ("::1", 80))],
)
def test_the_metrics_address_is_a_port_or_host_and_port(value, address):
    settings = load_settings({"CHARBOT_METRICS_ADDRESS": value}, env_file=None)
    assert settings.metrics_address == address


@pytest.mark.parametrize("value", ["0", "65536", "http://x:9100", "x:", ":", "9100 ", "a b:1"])
def test_a_bad_metrics_address_is_one_line_naming_the_variable(value):
    with pytest.raises(SettingsError, match=r"^CHARBOT_METRICS_ADDRESS: "):
        load_settings({"CHARBOT_METRICS_ADDRESS": value + "x" * (value == "9100 ")}, env_file=None)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_metrics_count_replies_and_health_follows_polling(stub, settings, generator):
    server = MetricsServer("127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.port}"

    async def main():
        async with running_bot(settings, generator, metrics_server=server) as app:
            await say(stub, "hello")
            await say(stub, "/temp x")  # a command: not a reply to an owed message
            scraped = await asyncio.to_thread(get, base + "/metrics")
            healthy = await asyncio.to_thread(get, base + HEALTH_PATH)
            await app.updater.stop()  # polling is dead from here
            dead = await asyncio.to_thread(get, base + HEALTH_PATH)
            await app.updater.start_polling(poll_interval=0, timeout=1)  # for running_bot
            return scraped, healthy, dead

    (status, text), healthy, dead = asyncio.run(main())
    assert status == 200
    assert 'charbot_replies_total{outcome="sent"} 1.0' in text
    assert 'charbot_replies_total{outcome="apology"} 0.0' in text
    assert "charbot_reply_latency_seconds_count 1.0" in text
    assert "charbot_model_version 1.0" in text
    assert "charbot_reply_queue_depth 0.0" in text
    assert 'charbot_reply_batch_size_bucket{le="1.0"} 1.0' in text
    assert "charbot_errors_total 0.0" in text
    assert healthy == (200, "ok\n") and dead[0] == 503


def test_a_metrics_port_in_use_is_one_line_before_the_model_loads(
    env, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "import_tensorflow", lambda: pytest.fail("TensorFlow loaded"))
    taken = MetricsServer("127.0.0.1", 0)
    try:
        for name, value in {**env, "CHARBOT_METRICS_ADDRESS": str(taken.port)}.items():
            monkeypatch.setenv(name, value)
        assert cli.main(["run"]) == 1
    finally:
        taken.close()
    last = capsys.readouterr().err.splitlines()[-1]  # (the database's INFO lines before it)
    assert last.startswith("charbot: CHARBOT_METRICS_ADDRESS: cannot listen on 127.0.0.1:")
