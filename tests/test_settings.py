"""Settings: every variable, its default, and one clear line for each bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config_values import DEFAULT_BASE_URL, DEFAULT_RETRAIN_INTERVAL, file_url_for
from bot.settings import Settings, SettingsError, load_settings

TOKEN = "123456789:AAHsecretSecretSecret_secret-SECRET"


def load(env: dict[str, str], **kwargs) -> Settings:
    return load_settings(env, env_file=None, **kwargs)


def error_for(env: dict[str, str]) -> str:
    with pytest.raises(SettingsError) as info:
        load(env)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load({})
    assert settings.telegram_token is None
    assert settings.telegram_base_url == DEFAULT_BASE_URL == "https://api.telegram.org/bot"
    assert settings.telegram_base_file_url == "https://api.telegram.org/file/bot"
    assert settings.admin_ids == frozenset()
    assert settings.data_dir == tmp_path / "data"
    assert settings.database_url == f"sqlite:///{tmp_path / 'data' / 'charbot.sqlite3'}"
    assert settings.retrain_interval == DEFAULT_RETRAIN_INTERVAL == 21600
    assert settings.model_path is None
    assert not (tmp_path / "data").exists()  # loading settings creates nothing


def test_every_variable_is_read(tmp_path):
    model = tmp_path / "m.npz"
    model.write_bytes(b"x")
    settings = load(
        {
            "TELEGRAM_BOT_TOKEN": TOKEN,
            "CHARBOT_TELEGRAM_BASE_URL": "http://localhost:8081/bot",
            "CHARBOT_ADMIN_IDS": " 12, 34 ,56,",
            "CHARBOT_DATA_DIR": str(tmp_path / "d"),
            "CHARBOT_DATABASE_URL": "postgresql://bot:pw@db.example/charbot",
            "CHARBOT_RETRAIN_INTERVAL": "600",
            "CHARBOT_MODEL_PATH": str(model),
        }
    )
    assert settings.telegram_token == TOKEN
    assert settings.require_token() == TOKEN
    assert settings.telegram_base_url == "http://localhost:8081/bot"
    assert settings.telegram_base_file_url == "http://localhost:8081/file/bot"
    assert settings.admin_ids == {12, 34, 56}
    assert settings.is_admin(34) and not settings.is_admin(35) and not settings.is_admin(None)
    assert settings.data_dir == tmp_path / "d"
    assert settings.database_url == "postgresql://bot:pw@db.example/charbot"
    assert settings.retrain_interval == 600
    assert settings.model_path == model


def test_database_url_defaults_to_sqlite_in_the_data_dir(tmp_path):
    settings = load({"CHARBOT_DATA_DIR": str(tmp_path / "here")})
    assert settings.database_url == f"sqlite:///{tmp_path / 'here' / 'charbot.sqlite3'}"


def test_empty_values_count_as_unset():
    settings = load({"TELEGRAM_BOT_TOKEN": " ", "CHARBOT_ADMIN_IDS": "", "CHARBOT_DATA_DIR": ""})
    assert settings.telegram_token is None and settings.admin_ids == frozenset()


def test_the_token_never_shows(tmp_path):
    settings = load({"TELEGRAM_BOT_TOKEN": TOKEN})
    assert TOKEN not in repr(settings) and "secret" not in repr(settings).lower()
    assert "telegram_token='<set>'" in repr(settings)
    assert TOKEN not in str(settings)
    bad = "123:has spaces in it"
    assert bad not in error_for({"TELEGRAM_BOT_TOKEN": bad})


def test_missing_token_is_only_an_error_when_it_is_needed():
    settings = load({})
    with pytest.raises(SettingsError, match=r"^TELEGRAM_BOT_TOKEN is not set .*@BotFather.*chat"):
        settings.require_token()


@pytest.mark.parametrize("value", ["abc", "12,abc", "1.5", "-7", "0", "１２", "12;34", "0x10"])
def test_bad_admin_ids(value):
    message = error_for({"CHARBOT_ADMIN_IDS": value})
    assert message.startswith("CHARBOT_ADMIN_IDS: '")
    assert "is not a Telegram user id (expected comma-separated integers)" in message


def test_bad_admin_id_message_is_exactly_one_line():
    assert error_for({"CHARBOT_ADMIN_IDS": "abc"}) == (
        "CHARBOT_ADMIN_IDS: 'abc' is not a Telegram user id (expected comma-separated integers)"
    )


@pytest.mark.parametrize(
    "value",
    [
        "api.telegram.org/bot",
        "ftp://example.org/bot",
        "http://",
        "https:///bot",
        "not a url",
        "http://host:notaport/bot",
        "http://[::1/bot",
        "http://localhost:8081",  # the token would run into the port
        "https://proxy.example/tg/",
    ],
)
def test_bad_base_urls(value):
    message = error_for({"CHARBOT_TELEGRAM_BASE_URL": value})
    assert message.startswith("CHARBOT_TELEGRAM_BASE_URL: ")
    assert "http" in message


@pytest.mark.parametrize(
    "value", ["-5", "0", "1.5", "abc", "6h", "１０", "1e3", "300000000000", "9" * 5000]
)
def test_bad_retrain_intervals(value):
    message = error_for({"CHARBOT_RETRAIN_INTERVAL": value})
    assert message == (
        f"CHARBOT_RETRAIN_INTERVAL: {value!r} is not a whole number of seconds from 1 to "
        "31622400 (e.g. 21600 = every 6 hours)"
    )


def test_base_urls_with_the_token_placeholder_or_a_bot_path_are_accepted():
    for url in ("http://127.0.0.1:8081/bot", "https://api.telegram.org/bot{token}/test"):
        assert load({"CHARBOT_TELEGRAM_BASE_URL": url}).telegram_base_url == url


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CHARBOT_RETRAIN_MIN_MESSAGES", "9" * 5000),
        ("CHARBOT_RETRAIN_MIN_MESSAGES", "99999999999999999999"),
        ("CHARBOT_RETRAIN_EPOCHS", "9" * 5000),
        ("CHARBOT_RETRAIN_SAMPLE_BYTES", "1000"),
        ("CHARBOT_RETRAIN_SAMPLE_BYTES", "1e6"),
        ("CHARBOT_RETRAIN_MAX_SECONDS", "10"),
        ("CHARBOT_RETRAIN_MAX_SECONDS", "7200"),
        ("CHARBOT_DATA_DIR", "~no_such_user_here/data"),
        ("CHARBOT_MODEL_PATH", "~no_such_user_here/m.npz"),
    ],
)
def test_absurd_values_get_one_line_naming_the_variable(name, value):
    message = error_for({name: value})
    assert message.startswith(f"{name}: ") and "\n" not in message


def test_a_runs_sample_and_time_reach_its_config_and_its_child():
    from bot.retrainer import child_env
    from bot.train_job import retrain_config
    from model.retrain import RetrainConfig

    chosen = load({"CHARBOT_RETRAIN_SAMPLE_BYTES": "65536", "CHARBOT_RETRAIN_MAX_SECONDS": "120"})
    config = retrain_config(chosen)
    assert (config.sample_bytes, config.max_seconds) == (65536, 120)
    assert config.new_bytes == 65536 * 3 // 4
    env = child_env(chosen)
    assert env["CHARBOT_RETRAIN_SAMPLE_BYTES"] == "65536"
    assert env["CHARBOT_RETRAIN_MAX_SECONDS"] == "120"
    default = RetrainConfig()
    assert retrain_config(load({})) == default  # unset: the model's defaults
    assert "CHARBOT_RETRAIN_SAMPLE_BYTES" not in child_env(load({}))


@pytest.mark.parametrize("value", ["not a url", "nosuchdb://x/y", "://", "postgresql://u@h:abc/db"])
def test_bad_database_urls(value):
    message = error_for({"CHARBOT_DATABASE_URL": value})
    assert message.startswith("CHARBOT_DATABASE_URL: ")
    assert "sqlite:///" in message  # says what is accepted


def test_database_password_is_not_in_repr():
    settings = load({"CHARBOT_DATABASE_URL": "postgresql://bot:hunter2@db.example/charbot"})
    assert "hunter2" not in repr(settings)
    assert "postgresql://bot:***@db.example/charbot" in repr(settings)


def test_database_url_password_is_not_echoed():
    message = error_for({"CHARBOT_DATABASE_URL": "nosuchdb://user:hunter2@host/db"})
    assert "hunter2" not in message


def test_data_dir_that_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    message = error_for({"CHARBOT_DATA_DIR": str(tmp_path / "file")})
    assert message.startswith("CHARBOT_DATA_DIR: ") and "not a directory" in message


def test_data_dir_under_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    message = error_for({"CHARBOT_DATA_DIR": str(tmp_path / "file" / "data")})
    assert message.startswith("CHARBOT_DATA_DIR: ") and "not a directory" in message


def test_missing_model_path(tmp_path):
    message = error_for({"CHARBOT_MODEL_PATH": str(tmp_path / "nope.npz")})
    assert message.startswith("CHARBOT_MODEL_PATH: ") and "not a file" in message


def test_dotenv_file_is_read_and_the_environment_wins(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text(
        f"TELEGRAM_BOT_TOKEN={TOKEN}\n"
        "CHARBOT_ADMIN_IDS=1,2\n"
        "# a comment\n"
        "CHARBOT_RETRAIN_INTERVAL=60\n"
    )
    settings = load_settings({"CHARBOT_RETRAIN_INTERVAL": "120"}, env_file=env_file)
    assert settings.telegram_token == TOKEN
    assert settings.admin_ids == {1, 2}
    assert settings.retrain_interval == 120


def test_dotenv_in_the_working_directory_by_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path(".env").write_text("CHARBOT_ADMIN_IDS=77\n")
    for name in ("CHARBOT_ADMIN_IDS", "TELEGRAM_BOT_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    assert load_settings().admin_ids == {77}
    monkeypatch.setenv("CHARBOT_ADMIN_IDS", "78")
    assert load_settings().admin_ids == {78}


def test_bad_value_in_dotenv_names_the_variable(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("CHARBOT_RETRAIN_INTERVAL=-1\n")
    with pytest.raises(SettingsError, match=r"^CHARBOT_RETRAIN_INTERVAL: '-1'"):
        load_settings({}, env_file=env_file)


@pytest.mark.parametrize(
    ("base", "files"),
    [
        ("https://api.telegram.org/bot", "https://api.telegram.org/file/bot"),
        ("http://127.0.0.1:8081/bot", "http://127.0.0.1:8081/file/bot"),
        (
            "https://api.telegram.org/bot{token}/test",
            "https://api.telegram.org/file/bot{token}/test",
        ),
        ("https://proxy.example/tg/", "https://proxy.example/tg/file/bot"),
    ],
)
def test_file_url_follows_the_base_url(base, files):
    assert file_url_for(base) == files


def test_settings_are_frozen():
    settings = load({})
    with pytest.raises(AttributeError):
        settings.admin_ids = frozenset({1})  # type: ignore[misc]


def test_chat_memory_settings_and_their_defaults():
    settings = load({})
    assert (settings.memory_refresh_messages, settings.memory_refresh_interval) == (100, 300)
    assert (settings.memory_window_bytes, settings.memory_min_users) == (2_000_000, 3)
    settings = load(
        {
            "CHARBOT_MEMORY_REFRESH_MESSAGES": "20",
            "CHARBOT_MEMORY_REFRESH_INTERVAL": "60",
            "CHARBOT_MEMORY_WINDOW_BYTES": "500000",
            "CHARBOT_MEMORY_MIN_USERS": "5",
        }
    )
    assert settings.memory_refresh_messages == 20 and settings.memory_refresh_interval == 60
    assert settings.memory_window_bytes == 500_000 and settings.memory_min_users == 5


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CHARBOT_MEMORY_REFRESH_MESSAGES", "0"),
        ("CHARBOT_MEMORY_REFRESH_INTERVAL", "5m"),
        ("CHARBOT_MEMORY_WINDOW_BYTES", "99999999999"),
        ("CHARBOT_MEMORY_MIN_USERS", "1"),  # one user: one person's words would be shared
        ("CHARBOT_MEMORY_MIN_USERS", "-3"),
    ],
)
def test_bad_chat_memory_settings_get_one_line(name, value):
    message = error_for({name: value})
    assert message.startswith(f"{name}: {value!r} is not a whole number from ")
    assert "\n" not in message


# -- webhook mode ---------------------------------------------------------------------------


def test_webhook_settings_and_their_defaults():
    polling = load({})
    assert polling.webhook_url is None and polling.webhook_secret is None
    assert polling.webhook_listen == ("127.0.0.1", 8080)  # behind a proxy on the same host
    secret = "S3cret_-" * 32  # 256 characters, Telegram's most
    settings = load(
        {
            "CHARBOT_WEBHOOK_URL": "https://bot.example.org:8443/tg/hook",
            "CHARBOT_WEBHOOK_LISTEN": "0.0.0.0:9000",
            "CHARBOT_WEBHOOK_SECRET": secret,
        }
    )
    assert settings.webhook_url == "https://bot.example.org:8443/tg/hook"
    assert settings.webhook_listen == ("0.0.0.0", 9000)
    assert settings.webhook_secret == secret
    assert secret not in repr(settings) and "'<set>')" in repr(settings)
    assert load({"CHARBOT_WEBHOOK_LISTEN": "9001"}).webhook_listen == ("127.0.0.1", 9001)
    assert load({"CHARBOT_WEBHOOK_LISTEN": "[::]:80"}).webhook_listen == ("::", 80)


@pytest.mark.parametrize(
    "value",
    [
        "http://bot.example.org/tg",  # Telegram posts only over https
        "https:///tg",  # no host
        "https://bot.example.org:8080/tg",  # not a port Telegram posts to
        "https://bot.example.org:99999/tg",
        "https://bot.example.org/tg?key=1",
        "https://user:pw@bot.example.org/tg",
        "https://bot.example.org/t(g)",  # PTB would read the path as a regex
        "https://[bot.example.org/tg",
        "bot.example.org/tg",
    ],
)
def test_bad_webhook_urls(value):
    message = error_for({"CHARBOT_WEBHOOK_URL": value})
    assert message.startswith("CHARBOT_WEBHOOK_URL: ") and "pw" not in message


@pytest.mark.parametrize("value", ["0", "65536", "host:", "a b:80", "http://x:80"])
def test_bad_webhook_listen_addresses(value):
    assert error_for({"CHARBOT_WEBHOOK_LISTEN": value}).startswith("CHARBOT_WEBHOOK_LISTEN: ")


@pytest.mark.parametrize(
    "value", ["a" * 257, "with space" * 2, "dot.ted" * 3, "ünïcode" * 3, "short_secret-15"]
)
def test_bad_webhook_secrets_are_refused_without_being_shown(value):
    message = error_for({"CHARBOT_WEBHOOK_SECRET": value})
    assert message.startswith("CHARBOT_WEBHOOK_SECRET: ") and value not in message
