"""Webhook mode against the Bot API stand-in: setWebhook at start, updates posted to the
bot's listen address the way a reverse proxy forwards Telegram's, stored before the 200."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import urllib.error
import urllib.request

import pytest
from stored import fail_first_store
from telegram import Bot, Update
from telegram.constants import SUPPORTED_WEBHOOK_PORTS
from telegram.error import BadRequest, Conflict
from test_bot_e2e import USER, data_dir, env, settings, sql, stub

from bot import cli
from bot.app import build_application
from bot.config_values import WEBHOOK_PORTS
from bot.metrics import HEALTH_PATH, MetricsServer
from bot.services import open_services
from bot.settings import load_settings
from bot.webhook import Webhook

__all__ = ["data_dir", "env", "settings", "stub"]  # fixtures used here, defined there

pytestmark = pytest.mark.e2e

URL = "https://bot.example.org/tg/charbot-hook"


@pytest.fixture
def webhook_settings(env):
    return load_settings({**env, "CHARBOT_WEBHOOK_URL": URL}, env_file=None)


@contextlib.asynccontextmanager
async def webhook_bot(settings, generator, **options):
    """Start the bot the way `charbot run` does with CHARBOT_WEBHOOK_URL, inside this event
    loop, on a loopback socket of its own; yields (app, webhook, the port posts go to)."""
    listening = socket.create_server(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    webhook = Webhook(settings.webhook_url, settings.webhook_secret, listening)
    services = open_services(settings, generator=generator)
    app = build_application(settings, services, webhook=webhook, **options)
    try:
        async with app:
            await app.post_init(app)
            await app.start()
            await app.updater.start_webhook(**webhook.arguments())
            try:
                yield app, webhook, port
            finally:
                if app.updater.running:
                    await app.updater.stop()
                await app.stop()
                await app.post_shutdown(app)
    finally:
        services.close()
        listening.close()


def human_texts(data_dir):
    return [row[0] for row in sql(data_dir, "SELECT text FROM messages WHERE from_bot = 0")]


def test_a_posted_message_is_stored_before_the_200_and_answered(
    stub, webhook_settings, data_dir, generator
):
    async def main():
        async with webhook_bot(webhook_settings, generator) as (_, _, port):
            update_id = stub.push_message("hello over the webhook", user_id=USER)
            status = await stub.await_post(update_id, port)
            stored = human_texts(data_dir)  # read as soon as Telegram has its answer
            [reply] = await stub.await_messages(USER, 1)
            return status, stored, reply

    status, stored, reply = asyncio.run(main())
    assert status == 200
    assert stored == ["hello over the webhook"]
    assert reply["text"].strip()
    assert stub.pending_update_ids == []
    registered = stub.webhook
    assert registered["url"] == URL
    assert len(registered["secret_token"]) >= 32  # none configured: a random one
    assert registered["allowed_updates"] == list(Update.ALL_TYPES)
    assert registered["drop_pending_updates"] is False
    assert stub.calls("getUpdates") == [] and stub.calls("deleteWebhook") == []


def test_a_wrong_or_missing_secret_is_refused_and_nothing_is_stored(stub, env, data_dir, generator):
    settings = load_settings(
        {**env, "CHARBOT_WEBHOOK_URL": URL, "CHARBOT_WEBHOOK_SECRET": "our-secret_1-our-secret"},
        env_file=None,
    )

    async def main():
        async with webhook_bot(settings, generator) as (_, _, port):
            update_id = stub.push_message("let me in", user_id=USER)
            wrong = await stub.await_post(update_id, port, secret="not-our-secret")
            missing = await stub.await_post(update_id, port, secret=None)
            await asyncio.sleep(0.2)  # a reply, if one were coming, would be on its way
            return wrong, missing

    assert asyncio.run(main()) == (403, 403)
    assert stub.webhook["secret_token"] == "our-secret_1-our-secret"
    assert human_texts(data_dir) == [] and stub.sent_messages(USER) == []
    assert len(stub.pending_update_ids) == 1  # Telegram still holds it


def test_an_update_that_cannot_be_stored_is_refused_then_stored_when_posted_again(
    stub, webhook_settings, data_dir, generator, monkeypatch
):
    calls = fail_first_store(monkeypatch)

    async def main():
        async with webhook_bot(webhook_settings, generator) as (_, _, port):
            update_id = stub.push_message("keep me", user_id=USER)
            refused = await stub.await_post(update_id, port)
            replies_after_refusal = len(stub.sent_messages(USER))
            pending = stub.pending_update_ids
            accepted = await stub.await_post(update_id, port)  # Telegram tries again
            await stub.await_messages(USER, 1)
            return refused, replies_after_refusal, pending, update_id, accepted

    refused, replies_after_refusal, pending, update_id, accepted = asyncio.run(main())
    assert refused == 503 and replies_after_refusal == 0 and pending == [update_id]
    assert accepted == 200 and calls == [1, 1]
    assert human_texts(data_dir) == ["keep me"]
    assert len(stub.sent_messages(USER)) == 1


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_health_follows_the_webhook_server_not_arriving_updates(stub, webhook_settings, generator):
    server = MetricsServer("127.0.0.1", 0)
    health = f"http://127.0.0.1:{server.port}{HEALTH_PATH}"

    async def main():
        async with webhook_bot(webhook_settings, generator, metrics_server=server) as started:
            app, webhook, _ = started
            quiet = await asyncio.to_thread(get, health)  # nothing arrived: still healthy
            await app.updater.stop()  # the webhook server is gone from here
            dead = await asyncio.to_thread(get, health)
            return quiet, dead, webhook.listening()

    assert asyncio.run(main()) == (200, 503, False)  # PTB closed the socket it served on


# -- the stand-in's webhook -----------------------------------------------------------------


def test_the_stub_refuses_getupdates_while_a_webhook_is_set_as_telegram_does(stub):
    async def main():
        async with Bot(stub.token, base_url=stub.base_url) as bot:
            with pytest.raises(BadRequest, match=r"(?i)https url must be provided"):
                await bot.set_webhook("http://bot.example.org/hook")
            with pytest.raises(BadRequest, match=r"(?i)only on ports 80, 88, 443 or 8443"):
                await bot.set_webhook("https://bot.example.org:8080/hook")
            await bot.set_webhook(URL, secret_token="s3cret")
            with pytest.raises(Conflict, match=r"(?i)webhook is active"):
                await bot.get_updates()
            await bot.delete_webhook()
            return await bot.get_updates()

    assert asyncio.run(main()) == ()
    assert stub.webhook is None


# -- configuration, before the model loads ------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CHARBOT_WEBHOOK_URL", "http://bot.example.org/tg"),
        ("CHARBOT_WEBHOOK_URL", "https://bot.example.org:8080/tg"),
        ("CHARBOT_WEBHOOK_LISTEN", "127.0.0.1:http"),
        ("CHARBOT_WEBHOOK_SECRET", "has spaces"),
    ],
)
def test_a_bad_webhook_value_is_one_line_before_the_model_loads(
    name, value, env, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "import_tensorflow", lambda: pytest.fail("TensorFlow loaded"))
    for key, setting in {**env, "CHARBOT_WEBHOOK_URL": URL, name: value}.items():
        monkeypatch.setenv(key, setting)
    assert cli.main(["run"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith(f"charbot: {name}: ")
    assert "has spaces" not in error  # a secret is never echoed


def test_a_webhook_port_in_use_is_one_line_before_the_model_loads(
    env, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "import_tensorflow", lambda: pytest.fail("TensorFlow loaded"))
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        webhook = {"CHARBOT_WEBHOOK_URL": URL, "CHARBOT_WEBHOOK_LISTEN": f"127.0.0.1:{port}"}
        for key, value in {**env, **webhook}.items():
            monkeypatch.setenv(key, value)
        assert cli.main(["run"]) == 1
    last = capsys.readouterr().err.splitlines()[-1]  # (the database's INFO lines before it)
    assert last.startswith(f"charbot: CHARBOT_WEBHOOK_LISTEN: cannot listen on 127.0.0.1:{port}")


def test_the_webhook_ports_are_telegrams():
    assert sorted(WEBHOOK_PORTS) == sorted(SUPPORTED_WEBHOOK_PORTS)
