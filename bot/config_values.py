"""Reading one configuration value each: a value or one line naming the variable and
what it accepts (SettingsError). bot.settings gathers them into `Settings`."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from model.memory import MIN_USERS

DEFAULT_BASE_URL = "https://api.telegram.org/bot"  # the token is appended to it
DEFAULT_DATA_DIR = Path("data")
DEFAULT_RETRAIN_INTERVAL = 6 * 60 * 60  # seconds between scheduled retrain checks
DEFAULT_RETRAIN_MIN_MESSAGES = 200  # new human messages a scheduled run waits for
MAX_RETRAIN_INTERVAL = 366 * 24 * 60 * 60  # a year: more overflows the scheduler's timers
# A run's chat sample and training time (unset: model.retrain's defaults). The time stays
# well inside the 2 h the bot gives a run's process, which also reads, scores and judges.
RETRAIN_SAMPLE_BYTES = (16 * 1024, 64 * 1024 * 1024)
RETRAIN_SECONDS = (60, 60 * 60)
# The chat memory (bot/chat_memory.py) is counted again after this many new human
# messages or this many seconds, whichever comes first, from the last this many bytes
# of human text; an n-gram enters it once this many distinct users wrote it.
DEFAULT_MEMORY_REFRESH_MESSAGES = 100
DEFAULT_MEMORY_REFRESH_INTERVAL = 300
DEFAULT_MEMORY_WINDOW_BYTES = 2_000_000
DEFAULT_MEMORY_MIN_USERS = MIN_USERS
# Fewer than two users would let the shared memory hold one person's words.
LEAST_MEMORY_MIN_USERS = 2
MAX_MEMORY_WINDOW_BYTES = 50_000_000  # counting takes about 1 GB per 10 MB at this size

_TOKEN = re.compile(r"[0-9]+:[A-Za-z0-9_-]+", re.ASCII)  # what @BotFather hands out
_USER_ID = re.compile(r"[0-9]+", re.ASCII)
_SECONDS = re.compile(r"\+?[0-9]+", re.ASCII)
_HOST = re.compile(r"[A-Za-z0-9.:-]+", re.ASCII)  # a host name, IPv4 or IPv6 address


METRICS_HOST = "127.0.0.1"  # where /metrics listens when CHARBOT_METRICS_ADDRESS is a port
# Webhook mode speaks plain HTTP: TLS ends at a reverse proxy, which Telegram reaches. The
# bot listens on loopback by default, so that only a proxy on the same host reaches it;
# in a container, where the proxy is another host, set CHARBOT_WEBHOOK_LISTEN=0.0.0.0:8080.
DEFAULT_WEBHOOK_LISTEN = ("127.0.0.1", 8080)
# The only ports Telegram posts webhook updates to (PTB: telegram.constants.
# SUPPORTED_WEBHOOK_PORTS; not imported, to keep configuration errors free of Telegram).
WEBHOOK_PORTS = (443, 80, 88, 8443)
# Telegram's characters for it; at least 16 of them (Telegram takes 1): a short secret is
# guessed, and the log redacts it wherever it appears, in any letter case.
_SECRET_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,256}", re.ASCII)
WEBHOOK_SECRET_BYTES = 32  # a generated secret token: 43 characters of A-Z a-z 0-9 _ -
# A webhook path: PTB matches it as a regular expression, so only plain characters.
_WEBHOOK_PATH = re.compile(r"[A-Za-z0-9/_.~-]*", re.ASCII)
LOG_FORMATS = ("text", "json")  # CHARBOT_LOG_FORMAT: lines for people, or one JSON object each


class SettingsError(ValueError):
    """A configuration value the bot cannot start with; the message is one line."""


# -- one parser per variable -------------------------------------------------------


def parse_metrics_address(value: str | None) -> tuple[str, int] | None:
    """ "9100" (on 127.0.0.1) or "0.0.0.0:9100" -> (host, port)."""
    if value is None:
        return None
    return _address("CHARBOT_METRICS_ADDRESS", value, METRICS_HOST, 9100)


def parse_webhook_listen(value: str | None) -> tuple[str, int]:
    """ "8080" (on 127.0.0.1) or "0.0.0.0:8080" -> (host, port) the webhook server binds."""
    if value is None:
        return DEFAULT_WEBHOOK_LISTEN
    host, port = DEFAULT_WEBHOOK_LISTEN
    return _address("CHARBOT_WEBHOOK_LISTEN", value, host, port)


def _address(name: str, value: str, default_host: str, example: int) -> tuple[str, int]:
    """ "port" (on `default_host`) or "host:port" ("[::1]:port" for IPv6) -> (host, port)."""
    host, colon, port = value.rpartition(":")
    host = host.strip("[]") if colon else default_host
    digits = port.isascii() and port.isdigit()
    if not (digits and 0 < int(port) < 65536 and _HOST.fullmatch(host)):
        raise SettingsError(
            f"{name}: {value[:60]!r} is not a port or host:port "
            f"(e.g. {example} or 0.0.0.0:{example})"
        )
    return host, int(port)


def parse_webhook_url(value: str | None) -> str | None:
    """The public https URL Telegram posts updates to; None: long polling."""
    if value is None:
        return None
    example = "(e.g. https://bot.example.org/telegram, served by your reverse proxy)"
    try:
        parts = urlsplit(value)
        port = 443 if parts.port is None else parts.port
    except ValueError:  # an unclosed "[" of an IPv6 host, a port like :abc or :99999
        raise SettingsError(f"CHARBOT_WEBHOOK_URL: not a URL {example}") from None
    if parts.username is not None or parts.password is not None:
        # Not echoed: it may hold a password.
        raise SettingsError(f"CHARBOT_WEBHOOK_URL: may not hold a user or password {example}")
    if parts.scheme != "https" or not parts.hostname:
        raise SettingsError(
            f"CHARBOT_WEBHOOK_URL: {value[:80]!r} is not an https URL with a host "
            f"(Telegram posts only over TLS) {example}"
        )
    if port not in WEBHOOK_PORTS:
        ports = ", ".join(map(str, WEBHOOK_PORTS))
        raise SettingsError(
            f"CHARBOT_WEBHOOK_URL: port {port} is not one Telegram posts to ({ports}); "
            "let the reverse proxy listen on one of them"
        )
    if parts.query or parts.fragment:
        raise SettingsError(
            f"CHARBOT_WEBHOOK_URL: {value[:80]!r} may not hold a query or a fragment {example}"
        )
    if not _WEBHOOK_PATH.fullmatch(parts.path):
        raise SettingsError(
            f"CHARBOT_WEBHOOK_URL: the path {parts.path[:60]!r} may hold only letters, digits "
            "and / _ . ~ -"
        )
    return value


def parse_webhook_secret(value: str | None) -> str | None:
    """The X-Telegram-Bot-Api-Secret-Token to ask for; None: a new random one each start."""
    if value is not None and not _SECRET_TOKEN.fullmatch(value):
        # Never echo the value: it is a secret.
        raise SettingsError(
            "CHARBOT_WEBHOOK_SECRET: must be 16 to 256 characters of A-Z, a-z, 0-9, _ and - "
            "(Telegram's characters), or unset for a random one at each start"
        )
    return value


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
    return parse_whole(
        "CHARBOT_RETRAIN_MIN_MESSAGES",
        value,
        DEFAULT_RETRAIN_MIN_MESSAGES,
        10**9,
        "new human messages a scheduled retrain waits for",
    )


def parse_epochs(value: str | None) -> int | None:
    if value is None:
        return None
    return parse_whole("CHARBOT_RETRAIN_EPOCHS", value, 8, 1000, "the most epochs a run takes")


def parse_sample_bytes(value: str | None) -> int | None:
    if value is None:
        return None
    low, high = RETRAIN_SAMPLE_BYTES
    what = "bytes of chat text a run reads"
    return parse_whole("CHARBOT_RETRAIN_SAMPLE_BYTES", value, low, high, what, low)


def parse_train_seconds(value: str | None) -> int | None:
    if value is None:
        return None
    low, high = RETRAIN_SECONDS
    what = "seconds a run may train"
    return parse_whole("CHARBOT_RETRAIN_MAX_SECONDS", value, low, high, what, low)


def parse_interval(value: str | None) -> int:
    if value is None:
        return DEFAULT_RETRAIN_INTERVAL
    if not 1 <= _whole(value) <= MAX_RETRAIN_INTERVAL:
        raise SettingsError(
            f"CHARBOT_RETRAIN_INTERVAL: {value!r} is not a whole number of seconds from 1 to "
            f"{MAX_RETRAIN_INTERVAL} (e.g. {DEFAULT_RETRAIN_INTERVAL} = every 6 hours)"
        )
    return int(value)


def parse_whole(
    name: str, value: str | None, default: int, high: int, what: str, low: int = 1
) -> int:
    """`value` as a whole number from `low` to `high`; `default` when unset."""
    if value is None:
        return default
    if not low <= _whole(value) <= high:
        raise SettingsError(
            f"{name}: {value[:40]!r} is not a whole number from {low} to {high} "
            f"({what}, e.g. {default})"
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
