"""What the `charbot` commands print: log records as one line each, or one JSON object
per line (CHARBOT_LOG_FORMAT=json, for log collectors), with the bot token redacted in
every form; and TensorFlow imported without its import-time chatter on stderr.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import re
import sys
import tempfile
import urllib.parse
from collections.abc import Callable, Iterator, Sequence

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Lines benchmarks wait for in a bot's log, here so that they need not import TensorFlow
# (whose pages they would then share with the bot): once a start has warmed every batch
# size (bot/live_model.py).
WARMED_UP = "every batch size warmed up"
MEMORY_REFRESHED = "chat memory refreshed"  # logged at each count swapped in (bot/chat_memory.py)
# What TensorFlow's native code prints at import below TF_CPP_MIN_LOG_LEVEL=1 all the same:
# absl's preamble and INFO lines such as "I0000 00:00:17... port.cc:153] oneDNN ...".
_ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called"
_ABSL_INFO = re.compile(r"I\d{4} \d\d:\d\d:[\d.]+\s+\d+ \S+:\d+\] ")
# What TensorFlow writes while it loads a computation from the XLA cache (quiet_xla_loads).
_XLA_TEXT_PROTO = re.compile(
    r"^E\d{4} \S+\s+\d+ text_format\.cc:\d+\] Error parsing text-format "
    r"tensorflow\.XlaSerializedCacheEntry: "
)
_XLA_TUNING_FLAGS = re.compile(  # XLA's tuning flags only: a missing CPU feature is kept
    r"^E\d{4} \S+\s+\d+ cpu_aot_loader\.cc:\d+\] Loading XLA:CPU AOT result\. "
    r"Target machine feature \+prefer-no-(?:scatter|gather) is not "
)


def configure_logging(level: int, log_format: str, secrets: Sequence[str] = ()) -> None:
    """Log at `level` to stderr, as CHARBOT_LOG_FORMAT says ("text" or "json")."""
    handler = logging.StreamHandler()
    formatter = JsonFormatter if log_format == "json" else RedactingFormatter
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
    """One JSON object per record, on one line (non-ASCII escaped, so no character can
    break it): time (UTC, ISO 8601), level, logger, message and, when there are, the
    exception's traceback and the stack; secrets redacted in every field."""

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
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps({key: redact(value, self.secrets) for key, value in entry.items()})


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


def import_tensorflow() -> None:
    """Import TensorFlow without its import-time INFO chatter on stderr."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    if os.environ["TF_CPP_MIN_LOG_LEVEL"].strip() in ("", "0"):
        import tensorflow  # the user asked for everything

        return
    with filtered_stderr(_is_tensorflow_chatter):
        import tensorflow  # noqa: F401


def quiet_xla_loads() -> contextlib.AbstractContextManager:
    """Leave out what TensorFlow writes to stderr while it loads compiled code from the
    XLA cache (bot.xla_cache), three lines per computation that say nothing is wrong:
    it tries each file as text before binary, and it compares XLA's own tuning flags
    with the CPU's features (the folder is per CPU). Everything else is kept."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "1").strip() in ("", "0"):
        return contextlib.nullcontext()  # the user asked for everything
    return filtered_stderr(is_xla_load_chatter)


def is_xla_load_chatter(line: str) -> bool:
    return bool(_XLA_TEXT_PROTO.search(line) or _XLA_TUNING_FLAGS.search(line))


def _is_tensorflow_chatter(line: str) -> bool:
    return line.startswith(_ABSL_PREAMBLE) or bool(_ABSL_INFO.match(line))


@contextlib.contextmanager
def filtered_stderr(drop: Callable[[str], bool]) -> Iterator[None]:
    """Capture file descriptor 2 (native code writes there too), then replay what `drop` keeps."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not drop(line):
                    sys.stderr.write(line)
            sys.stderr.flush()
