"""Webhook mode: Telegram posts each update to CHARBOT_WEBHOOK_URL instead of being polled.

TLS ends at a reverse proxy on the public URL (Telegram posts only over https, to ports
443, 80, 88 or 8443); the proxy forwards the plain HTTP request to the socket the bot
serves on (CHARBOT_WEBHOOK_LISTEN), which `charbot run` binds before the model loads.
python-telegram-bot's webhook server (tornado) answers a request without the secret
token that setWebhook registered with 403, and stores nothing.

Nothing is lost, as with polling (bot.inbox): there the acknowledgement is the next
getUpdates offset, here it is the 200 answering Telegram's POST. So an update's
conversation is stored (Inbox.store, the same path and rules as a polled batch) before
that 200, and a store that fails answers 503: Telegram keeps the update and posts it
again, and a repeat stores nothing twice. Telegram posts one chat's updates one at a
time, each after the last was answered, so a chat is stored in its order.

Where the store hooks in: PTB's handler (telegram/ext/_utils/webhookhandler.py,
TelegramHandler.post) awaits `update_queue.put(update)` before it returns, and the 200
goes out only after; an exception there becomes the error status. The queue is a public
ApplicationBuilder option, so `StoringQueue.put` stores first. The alternatives, a
handler or an Updater of our own, would replace Updater._start_webhook, a private method.
The one thing relied on, that the handler awaits `put` before answering, is what
tests/test_webhook.py checks (a store that fails answers 503, nothing replied).

The server listens on a socket the bot bound itself, handed to PTB as its `unix`
argument ("the socket itself", any family): bound before the model loads, so a port in
use is one line at once, and the socket PTB closes when it stops, which is what
/healthz watches.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import socket
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from telegram import Bot, Update
from tornado.web import HTTPError

from bot.config_values import WEBHOOK_SECRET_BYTES
from bot.inbox import Inbox

log = logging.getLogger(__name__)


class Webhook:
    """Where Telegram posts (the public URL), the secret token it sends back, and the
    socket the bot serves on. Without a configured secret, each start makes a new one
    (setWebhook registers it again at every start)."""

    def __init__(self, url: str, secret: str | None, listening: socket.socket) -> None:
        self.url = url
        self.secret = secret or secrets.token_urlsafe(WEBHOOK_SECRET_BYTES)
        listening.setblocking(False)  # tornado accepts until the socket would block
        self.socket = listening

    def arguments(self) -> dict[str, Any]:
        """For Updater.start_webhook and Application.run_webhook."""
        return {
            "webhook_url": self.url,
            # The path Telegram posts to is the public URL's; PTB matches it as a regex.
            "url_path": re.escape(urlsplit(self.url).path),
            "secret_token": self.secret,
            "unix": self.socket,
            "allowed_updates": Update.ALL_TYPES,
            "drop_pending_updates": False,
        }

    def listening(self) -> bool:
        """Is the server's socket open? PTB closes it when the webhook server stops."""
        return self.socket.fileno() != -1


class StoringQueue(asyncio.Queue):
    """The application's update queue in webhook mode: an update's conversation is stored
    before it is queued, and before the webhook handler answers Telegram."""

    def __init__(self, inbox: Inbox, bot: Bot) -> None:
        super().__init__()
        self._inbox = inbox
        self._bot = bot
        self._lock = asyncio.Lock()  # stored and queued in one order

    async def put(self, item: object) -> None:
        if not isinstance(item, Update):  # PTB's own items (its stop signal)
            await super().put(item)
            return
        async with self._lock:
            if not self._inbox.accepting():
                # Stopping: not handled now, so not stored either; Telegram posts it again.
                raise HTTPError(HTTPStatus.SERVICE_UNAVAILABLE, reason="Stopping")
            try:
                await self._inbox.store([item], self._bot)
            except Exception as exc:
                self._inbox.failures += 1
                log.warning(
                    "could not store update %d; answered 503, so Telegram posts it again: %s",
                    item.update_id,
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                )
                raise HTTPError(HTTPStatus.SERVICE_UNAVAILABLE, reason="Not stored") from None
            self._inbox.failures = 0
            await super().put(item)
