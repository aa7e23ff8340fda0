"""The bot's configuration: read once from the environment (and a `.env` file), then passed down.

Nothing here runs at import time; `load_settings()` reads, validates and returns a frozen
`Settings`. Each bad value raises `SettingsError` with one line naming the variable and
what it accepts. The bot token never appears in `repr(settings)` or in any message.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from dotenv import dotenv_values
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from storage import sqlite_url

DEFAULT_BASE_URL = "https://api.telegram.org/bot"  # the token is appended to it
DEFAULT_DATA_DIR = Path("data")
DEFAULT_RETRAIN_INTERVAL = 6 * 60 * 60  # seconds between scheduled retrain checks
DEFAULT_RETRAIN_MIN_MESSAGES = 200  # new human messages a scheduled run waits for
MAX_RETRAIN_INTERVAL = 366 * 24 * 60 * 60  # a year: more overflows the scheduler's timers

_TOKEN = re.compile(r"[0-9]+:[A-Za-z0-9_-]+", re.ASCII)  # what @BotFather hands out
_USER_ID = re.compile(r"[0-9]+", re.ASCII)
_SECONDS = re.compile(r"\+?[0-9]+", re.ASCII)
_HOST = re.compile(r"[A-Za-z0-9.:-]+", re.ASCII)  # a host name, IPv4 or IPv6 address


METRICS_HOST = "127.0.0.1"  # where /metrics listens when CHARBOT_METRICS_ADDRESS is a port
LOG_FORMATS = ("text", "json")  # CHARBOT_LOG_FORMAT: lines for people, or one JSON object each


class SettingsError(ValueError):
    """A configuration value the bot cannot start with; the message is one line."""


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
    model_path: Path | None = None  # the model a new data dir starts from (default: shipped base)
    log_format: str = LOG_FORMATS[0]  # one of LOG_FORMATS
    metrics_address: tuple[str, int] | None = None  # (host, port) of /metrics; None: off

    def __post_init__(self) -> None:
        if not self.database_url:
            object.__setattr__(self, "database_url", sqlite_url(Path(self.data_dir)))

    def __repr__(self) -> str:
        """Every field but the token, with any database password hidden."""
        shown = {
            "telegram_token": "<set>" if self.telegram_token else None,
            "telegram_base_url": self.telegram_base_url,
            "admin_ids": sorted(self.admin_ids),
            "data_dir": str(self.data_dir),
            "database_url": make_url(self.database_url).render_as_string(hide_password=True),
            "retrain_interval": self.retrain_interval,
            "retrain_min_messages": self.retrain_min_messages,
            "retrain_epochs": self.retrain_epochs,
            "model_path": None if self.model_path is None else str(self.model_path),
            "log_format": self.log_format,
            "metrics_address": self.metrics_address,
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
        model_path=parse_model_path(get("CHARBOT_MODEL_PATH")),
        log_format=parse_log_format(get("CHARBOT_LOG_FORMAT")),
        metrics_address=parse_metrics_address(get("CHARBOT_METRICS_ADDRESS")),
    )


# -- one parser per variable -------------------------------------------------------


def parse_metrics_address(value: str | None) -> tuple[str, int] | None:
    """ "9100" (on 127.0.0.1) or "0.0.0.0:9100" -> (host, port)."""
    if value is None:
        return None
    host, colon, port = value.rpartition(":")
    host = host.strip("[]") if colon else METRICS_HOST
    digits = port.isascii() and port.isdigit()
    if not (digits and 0 < int(port) < 65536 and _HOST.fullmatch(host)):
        raise SettingsError(
            f"CHARBOT_METRICS_ADDRESS: {value[:60]!r} is not a port or host:port "
            "(e.g. 9100 or 0.0.0.0:9100)"
        )
    return host, int(port)


def parse_log_format(value: str | None) -> str:
    if value is None:
        return LOG_FORMATS[0]
    if value.lower() not in LOG_FORMATS:
        raise SettingsError(
            f"CHARBOT_LOG_FORMAT: {value[:40]!r} is not one of {', '.join(LOG_FORMATS)}"
        )
    return value.lower()


def parse_token(value: str | None) -> str | None:
    if value is not None and not _TOKEN.fullmatch(value):
        # Never echo the value: a mistyped token is still mostly a secret.
        raise SettingsError(
            "TELEGRAM_BOT_TOKEN: does not look like a bot token "
            "(expected digits, a colon and letters, as @BotFather gives it)"
        )
    return value


def parse_base_url(value: str) -> str:
    try:
        parts = urlsplit(value)
    except ValueError:  # e.g. an unclosed "[" of an IPv6 host
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(
            f"CHARBOT_TELEGRAM_BASE_URL: {value!r} is not an http(s) URL with a host "
            f"(expected e.g. {DEFAULT_BASE_URL})"
        )
    try:
        parts.port  # noqa: B018 - raises ValueError for a port like :abc or :99999
    except ValueError:
        raise SettingsError(
            f"CHARBOT_TELEGRAM_BASE_URL: {value!r} has a bad port (expected e.g. "
            "http://localhost:8081/bot)"
        ) from None
    if not parts.path.endswith("/bot") and "{token}" not in value:
        # The token is appended to the URL: without "/bot" it would run into the host
        # or port, and show up in connection errors.
        raise SettingsError(
            f"CHARBOT_TELEGRAM_BASE_URL: {value!r} must end with /bot, which the token "
            f"follows (expected e.g. {DEFAULT_BASE_URL} or http://localhost:8081/bot)"
        )
    return value


def file_url_for(base_url: str) -> str:
    """The Bot API file URL for `base_url`: `/file` goes before the last `/bot` segment."""
    parts = urlsplit(base_url)
    path = parts.path
    i = path.rfind("/bot")
    path = path[:i] + "/file" + path[i:] if i >= 0 else path.rstrip("/") + "/file/bot"
    return urlunsplit(parts._replace(path=path))


def parse_admin_ids(value: str) -> frozenset[int]:
    ids = set()
    for piece in value.split(","):
        piece = piece.strip()
        if not piece:
            continue
        if not _USER_ID.fullmatch(piece) or int(piece) == 0:
            raise SettingsError(
                f"CHARBOT_ADMIN_IDS: {piece!r} is not a Telegram user id "
                "(expected comma-separated integers)"
            )
        ids.add(int(piece))
    return frozenset(ids)


def parse_data_dir(value: str | None) -> Path:
    path = _path("CHARBOT_DATA_DIR", value) if value else DEFAULT_DATA_DIR.resolve()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        where = "exists" if existing == path else f"is under {str(existing)!r}, which exists"
        raise SettingsError(f"CHARBOT_DATA_DIR: {str(path)!r} {where} and is not a directory")
    return path


def _path(name: str, value: str) -> Path:
    """`value` as an absolute path; "~user" of an unknown user is a clear error."""
    try:
        return Path(value).expanduser().resolve()
    except (RuntimeError, OSError) as exc:
        raise SettingsError(f"{name}: {value!r} is not a usable path ({exc})") from None


def parse_database_url(value: str | None) -> str:
    if value is None:
        return ""  # Settings fills in the SQLite file in the data dir
    expected = "(expected e.g. sqlite:////srv/charbot/charbot.sqlite3 or postgresql://user@host/db)"
    try:
        url = make_url(value)
        url.port  # noqa: B018 - make_url accepts a port like :abc
    except (ArgumentError, ValueError):
        # Not echoed: it may hold a password.
        raise SettingsError(f"CHARBOT_DATABASE_URL: not a database URL {expected}") from None
    try:
        url.get_dialect()
    except NoSuchModuleError:
        shown = url.render_as_string(hide_password=True)
        raise SettingsError(
            f"CHARBOT_DATABASE_URL: {shown!r} names a database SQLAlchemy does not know {expected}"
        ) from None
    return value


def parse_min_messages(value: str | None) -> int:
    if value is None:
        return DEFAULT_RETRAIN_MIN_MESSAGES
    if not 1 <= _whole(value) <= 10**9:
        raise SettingsError(
            f"CHARBOT_RETRAIN_MIN_MESSAGES: {value!r} is not a positive whole number "
            "(new human messages a scheduled retrain waits for, e.g. 200)"
        )
    return int(value)


def parse_epochs(value: str | None) -> int | None:
    if value is None:
        return None
    if not 1 <= _whole(value) <= 1000:
        raise SettingsError(
            f"CHARBOT_RETRAIN_EPOCHS: {value!r} is not a whole number of epochs from 1 to 1000"
        )
    return int(value)


def parse_interval(value: str | None) -> int:
    if value is None:
        return DEFAULT_RETRAIN_INTERVAL
    if not 1 <= _whole(value) <= MAX_RETRAIN_INTERVAL:
        raise SettingsError(
            f"CHARBOT_RETRAIN_INTERVAL: {value!r} is not a whole number of seconds from 1 to "
            f"{MAX_RETRAIN_INTERVAL} (e.g. {DEFAULT_RETRAIN_INTERVAL} = every 6 hours)"
        )
    return int(value)


def _whole(value: str) -> int:
    """`value` as a whole number, or -1 when it is not one (or too long to be sensible)."""
    if len(value) > 19 or not _SECONDS.fullmatch(value):
        return -1
    return int(value)


def parse_model_path(value: str | None) -> Path | None:
    if value is None:
        return None
    path = _path("CHARBOT_MODEL_PATH", value)
    if not path.is_file():
        raise SettingsError(f"CHARBOT_MODEL_PATH: {value!r} is not a file (expected a model .npz)")
    return path
