"""Logging for the `charbot` commands: one line per record, or one JSON object per line
(CHARBOT_LOG_FORMAT=json, for log collectors), with the bot token redacted in every form.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import urllib.parse
from collections.abc import Sequence

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: int, secrets: Sequence[str] = (), *, json_lines: bool = False) -> None:
    handler = logging.StreamHandler()
    formatter = JsonFormatter if json_lines else RedactingFormatter
    handler.setFormatter(formatter(LOG_FORMAT, secrets=secrets))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # httpx logs every request URL at INFO, and Bot API URLs contain the token.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # a line per plugin


class RedactingFormatter(logging.Formatter):
    """A formatter that replaces secrets (the bot token) wherever they appear (redact)."""

    def __init__(self, fmt: str, secrets: Sequence[str] = ()):
        super().__init__(fmt)
        self.secrets = [s for s in secrets if s]

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record), self.secrets)


class JsonFormatter(RedactingFormatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message and, for
    an exception, its traceback; secrets redacted in every field."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, ensure_ascii=False), self.secrets)


def redact(text: str, secrets: Sequence[str]) -> str:
    """`text` with every form of each secret replaced by "<token>": in any letter case
    (python-telegram-bot capitalises some error texts, which lower-cases the rest),
    URL-encoded, and the part after "123456:" alone."""
    forms = set()
    for secret in filter(None, secrets):
        forms |= {secret, urllib.parse.quote(secret, safe="")}
        _, colon, key = secret.partition(":")
        if colon and key:
            forms.add(key)
    if not forms:
        return text
    pattern = "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True))
    return re.sub(pattern, "<token>", text, flags=re.IGNORECASE)
