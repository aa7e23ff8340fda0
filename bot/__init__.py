"""The bot: settings, Telegram handlers, the terminal front end and the `charbot` command.

    settings = load_settings()                    # environment + .env, validated once
    bot.app.run(settings)                         # python-telegram-bot, long polling

`import bot` stays light (no TensorFlow), so `charbot --help` and configuration errors
answer at once; bot.app, bot.services and bot.terminal load the model.
"""

from bot.settings import Settings, SettingsError, load_settings

__all__ = ["Settings", "SettingsError", "load_settings"]
