"""The bot's configuration: read once from the environment (and a `.env` file), then passed down.

Nothing here runs at import time; `load_settings()` reads, validates and returns a frozen
`Settings`. Each bad value raises `SettingsError` with one line naming the variable and
what it accepts (bot.config_values). The bot token and the webhook secret never appear in
`repr(settings)` or in any message.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dotenv import dotenv_values
from sqlalchemy.engine import make_url

from bot.config_values import (
    DEFAULT_BASE_URL,
    DEFAULT_DATA_DIR,
    DEFAULT_MEMORY_MIN_USERS,
    DEFAULT_MEMORY_REFRESH_INTERVAL,
    DEFAULT_MEMORY_REFRESH_MESSAGES,
    DEFAULT_MEMORY_WINDOW_BYTES,
    DEFAULT_RETRAIN_INTERVAL,
    DEFAULT_RETRAIN_MIN_MESSAGES,
    DEFAULT_WEBHOOK_LISTEN,
    LEAST_MEMORY_MIN_USERS,
    LOG_FORMATS,
    MAX_MEMORY_WINDOW_BYTES,
    MAX_RETRAIN_INTERVAL,
    SettingsError,
    file_url_for,
    parse_admin_ids,
    parse_base_url,
    parse_data_dir,
    parse_database_url,
    parse_epochs,
    parse_interval,
    parse_log_format,
    parse_metrics_address,
    parse_min_messages,
    parse_model_path,
    parse_sample_bytes,
    parse_token,
    parse_train_seconds,
    parse_webhook_listen,
    parse_webhook_secret,
    parse_webhook_url,
    parse_whole,
)
from storage import sqlite_url

__all__ = ["Settings", "SettingsError", "load_settings"]


@dataclass(frozen=True, repr=False)
class Settings:
    telegram_token: str | None = field(default=None, repr=False)  # secret: never shown
    telegram_base_url: str = DEFAULT_BASE_URL  # Bot API endpoint; token appended
    admin_ids: frozenset[int] = frozenset()  # Telegram users who see /status (and more later)
    data_dir: Path = DEFAULT_DATA_DIR  # database, model versions, logs
    database_url: str = ""  # any SQLAlchemy URL; "" = SQLite file in data_dir
    retrain_interval: int = DEFAULT_RETRAIN_INTERVAL  # seconds
    retrain_min_messages: int = DEFAULT_RETRAIN_MIN_MESSAGES  # new human messages per run
    retrain_epochs: int | None = None  # cap on a run's epochs (None: model.retrain's default)
    retrain_sample_bytes: int | None = None  # chat text a run reads (None: the default)
    retrain_max_seconds: int | None = None  # a run's training time (None: the default)
    model_path: Path | None = None  # the model a new data dir starts from (default: shipped base)
    log_format: str = LOG_FORMATS[0]  # one of LOG_FORMATS
    metrics_address: tuple[str, int] | None = None  # (host, port) of /metrics; None: off
    memory_refresh_messages: int = DEFAULT_MEMORY_REFRESH_MESSAGES
    memory_refresh_interval: int = DEFAULT_MEMORY_REFRESH_INTERVAL  # seconds
    memory_window_bytes: int = DEFAULT_MEMORY_WINDOW_BYTES
    memory_min_users: int = DEFAULT_MEMORY_MIN_USERS
    webhook_url: str | None = None  # public https URL Telegram posts to; None: long polling
    webhook_listen: tuple[str, int] = DEFAULT_WEBHOOK_LISTEN  # (host, port) the bot serves on
    webhook_secret: str | None = field(default=None, repr=False)  # None: random at each start

    def __post_init__(self) -> None:
        if not self.database_url:
            object.__setattr__(self, "database_url", sqlite_url(Path(self.data_dir)))

    def __repr__(self) -> str:
        """Every field but the token and the webhook secret, with any database password
        hidden."""
        secret = "<set>" if self.webhook_secret else None  # None: random at each start
        webhook = (self.webhook_url, self.webhook_listen, secret)
        shown = {
            "telegram_token": "<set>" if self.telegram_token else None,
            "telegram_base_url": self.telegram_base_url,
            "admin_ids": sorted(self.admin_ids),
            "data_dir": str(self.data_dir),
            "database_url": make_url(self.database_url).render_as_string(hide_password=True),
            "retrain_interval": self.retrain_interval,
            "retrain_min_messages": self.retrain_min_messages,
            "retrain_epochs": self.retrain_epochs,
            "retrain_sample_bytes": self.retrain_sample_bytes,
            "retrain_max_seconds": self.retrain_max_seconds,
            "model_path": None if self.model_path is None else str(self.model_path),
            "log_format": self.log_format,
            "metrics_address": self.metrics_address,
            "memory": (
                self.memory_refresh_messages,
                self.memory_refresh_interval,
                self.memory_window_bytes,
                self.memory_min_users,
            ),
            "webhook": None if self.webhook_url is None else webhook,
        }
        return f"Settings({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    @property
    def telegram_base_file_url(self) -> str:
        """The file download URL that goes with `telegram_base_url` (…/bot -> …/file/bot)."""
        return file_url_for(self.telegram_base_url)

    def is_admin(self, user_id: int | None) -> bool:
        return user_id is not None and user_id in self.admin_ids

    def require_token(self) -> str:
        """The bot token, or a SettingsError that says how to get one."""
        if not self.telegram_token:
            raise SettingsError(
                "TELEGRAM_BOT_TOKEN is not set (get one from @BotFather), or try `charbot chat`"
            )
        return self.telegram_token


def load_settings(
    environ: Mapping[str, str] | None = None, env_file: str | os.PathLike | None = ".env"
) -> Settings:
    """Settings from `environ` (default: the process environment) over the `env_file` values.

    A variable set in the environment wins over the same one in the file. Empty values
    count as unset.
    """
    values: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    values.update(os.environ if environ is None else environ)

    def get(name: str) -> str | None:
        value = values.get(name, "").strip()
        return value or None

    return Settings(
        telegram_token=parse_token(get("TELEGRAM_BOT_TOKEN")),
        telegram_base_url=parse_base_url(get("CHARBOT_TELEGRAM_BASE_URL") or DEFAULT_BASE_URL),
        admin_ids=parse_admin_ids(get("CHARBOT_ADMIN_IDS") or ""),
        data_dir=parse_data_dir(get("CHARBOT_DATA_DIR")),
        database_url=parse_database_url(get("CHARBOT_DATABASE_URL")),
        retrain_interval=parse_interval(get("CHARBOT_RETRAIN_INTERVAL")),
        retrain_min_messages=parse_min_messages(get("CHARBOT_RETRAIN_MIN_MESSAGES")),
        retrain_epochs=parse_epochs(get("CHARBOT_RETRAIN_EPOCHS")),
        retrain_sample_bytes=parse_sample_bytes(get("CHARBOT_RETRAIN_SAMPLE_BYTES")),
        retrain_max_seconds=parse_train_seconds(get("CHARBOT_RETRAIN_MAX_SECONDS")),
        model_path=parse_model_path(get("CHARBOT_MODEL_PATH")),
        log_format=parse_log_format(get("CHARBOT_LOG_FORMAT")),
        metrics_address=parse_metrics_address(get("CHARBOT_METRICS_ADDRESS")),
        memory_refresh_messages=parse_whole(
            "CHARBOT_MEMORY_REFRESH_MESSAGES",
            get("CHARBOT_MEMORY_REFRESH_MESSAGES"),
            DEFAULT_MEMORY_REFRESH_MESSAGES,
            10**9,
            "new human messages between refreshes",
        ),
        memory_refresh_interval=parse_whole(
            "CHARBOT_MEMORY_REFRESH_INTERVAL",
            get("CHARBOT_MEMORY_REFRESH_INTERVAL"),
            DEFAULT_MEMORY_REFRESH_INTERVAL,
            MAX_RETRAIN_INTERVAL,
            "seconds between refreshes",
        ),
        memory_window_bytes=parse_whole(
            "CHARBOT_MEMORY_WINDOW_BYTES",
            get("CHARBOT_MEMORY_WINDOW_BYTES"),
            DEFAULT_MEMORY_WINDOW_BYTES,
            MAX_MEMORY_WINDOW_BYTES,
            "bytes of recent human text counted",
        ),
        memory_min_users=parse_whole(
            "CHARBOT_MEMORY_MIN_USERS",
            get("CHARBOT_MEMORY_MIN_USERS"),
            DEFAULT_MEMORY_MIN_USERS,
            10**6,
            "distinct users an n-gram needs",
            low=LEAST_MEMORY_MIN_USERS,
        ),
        webhook_url=parse_webhook_url(get("CHARBOT_WEBHOOK_URL")),
        webhook_listen=parse_webhook_listen(get("CHARBOT_WEBHOOK_LISTEN")),
        webhook_secret=parse_webhook_secret(get("CHARBOT_WEBHOOK_SECRET")),
    )
