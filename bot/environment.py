"""Every environment variable charbot reads, with a short note: `charbot --help` lists them.

bot.settings parses them (bot.config_values says what each accepts); the README's
configuration table describes each at length. tests/test_environment.py checks that
the three agree.
"""

from __future__ import annotations

VARIABLES: tuple[tuple[str, str], ...] = (
    ("TELEGRAM_BOT_TOKEN", "the bot's token from @BotFather"),
    ("CHARBOT_TELEGRAM_BASE_URL", "Bot API base URL"),
    ("CHARBOT_ADMIN_IDS", "comma-separated user ids of the admins"),
    ("CHARBOT_DATA_DIR", "database, model versions and logs"),
    ("CHARBOT_DATABASE_URL", "SQLite file (default) or postgresql://..."),
    ("CHARBOT_WEBHOOK_URL", "public https URL: webhook mode instead of polling"),
    ("CHARBOT_WEBHOOK_LISTEN", "host:port the webhook server listens on"),
    ("CHARBOT_WEBHOOK_SECRET", "the secret Telegram sends back with each update"),
    ("CHARBOT_RETRAIN_INTERVAL", "seconds between scheduled retrain checks"),
    ("CHARBOT_RETRAIN_MIN_MESSAGES", "new human messages a scheduled run waits for"),
    ("CHARBOT_RETRAIN_EPOCHS", "cap on a run's epochs"),
    ("CHARBOT_RETRAIN_SAMPLE_BYTES", "bytes of chat text one run reads"),
    ("CHARBOT_RETRAIN_MAX_SECONDS", "a run's training time"),
    ("CHARBOT_MEMORY_REFRESH_MESSAGES", "new messages between chat-memory refreshes"),
    ("CHARBOT_MEMORY_REFRESH_INTERVAL", "seconds between chat-memory refreshes"),
    ("CHARBOT_MEMORY_WINDOW_BYTES", "bytes of recent human text the memory counts"),
    ("CHARBOT_MEMORY_MIN_USERS", "distinct users a shared n-gram needs"),
    ("CHARBOT_MODEL_PATH", "the model a new data dir starts from"),
    ("CHARBOT_METRICS_ADDRESS", "port or host:port of /metrics and /healthz"),
    ("CHARBOT_LOG_FORMAT", "text or json"),
)


def help_text() -> str:
    """The variables as `--help` shows them, one per line."""
    width = max(len(name) for name, _ in VARIABLES)
    return "\n".join(f"  {name:<{width}}  {note}" for name, note in VARIABLES)
