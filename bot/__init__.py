"""The bot: settings, Telegram handlers, the terminal front end and the `charbot` command.

    settings = load_settings()                # environment + .env, validated once
    app = build_application(settings)         # python-telegram-bot Application
    app.run_polling()

`build_application`, `open_services` and `Services` are imported on first use, so that
`import bot` (and `charbot --help`) stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bot.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from bot.app import build_application
    from bot.service import Services, open_services

_LAZY = {
    "build_application": "bot.app",
    "open_services": "bot.service",
    "Services": "bot.service",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bot' has no attribute {name!r}")


__all__ = [
    "Services",
    "Settings",
    "SettingsError",
    "build_application",
    "load_settings",
    "open_services",
]
