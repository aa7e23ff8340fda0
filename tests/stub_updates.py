"""The update feed, both ends: getUpdates, setWebhook and deleteWebhook on the bot's side; the
queue that pushed updates wait in, their redelivery and their posting to a webhook on the test's.

An update stays queued until it is confirmed: by a getUpdates ``offset`` past it, or by a 2xx
answer to :meth:`UpdateFeed.post_update`. The rules are listed in :mod:`telegram_stub`'s docstring.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from stub_wire import ApiError, Params, bad

FIRST_UPDATE_ID = 1000
_CONFLICT = (
    "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running"
)
_WEBHOOK_ACTIVE = (
    "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first"
)
WEBHOOK_PORTS = (443, 80, 88, 8443)
_SECRET_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{1,256}")
_REGISTERED = object()  # post_update's default secret: the one setWebhook registered


@dataclass
class Queued:
    update_id: int
    update: Params
    force: bool  # a redelivery: delivered once even though the client's offset is past it
    delivered: bool = False


class UpdateFeed:
    """Where updates wait until they are confirmed, for :class:`BotApiStub`.

    It keeps no state of its own: the attributes it uses (``_lock``, ``_cond``, ...) are set
    up in ``BotApiStub.__init__``.
    """

    # ---------------------------------------------------------------- Bot API methods

    def _set_webhook(self, params: Params) -> bool:
        url = str(params.get("url") or "")
        if not url:
            return self._delete_webhook(params)
        try:
            parts = urlsplit(url)
            port = parts.port or 443
        except ValueError:
            raise bad("bad webhook: Failed to resolve host: Name or service not known") from None
        if parts.scheme != "https" or not parts.hostname:
            raise bad("bad webhook: An HTTPS URL must be provided for webhook")
        if port not in WEBHOOK_PORTS:
            raise bad("bad webhook: Webhook can be set up only on ports 80, 88, 443 or 8443")
        secret = params.get("secret_token")
        if secret is not None and not _SECRET_TOKEN_RE.fullmatch(str(secret)):
            raise bad("secret token contains unallowed characters")
        with self._lock:
            if params.get("drop_pending_updates"):
                self._queue = []  # dropped, not confirmed
            self._webhook = {
                "url": url,
                "secret_token": None if secret is None else str(secret),
                "allowed_updates": params.get("allowed_updates"),
                "drop_pending_updates": bool(params.get("drop_pending_updates")),
                "max_connections": params.get("max_connections"),
            }
        return True

    def _delete_webhook(self, params: Params) -> bool:
        with self._lock:
            if params.get("drop_pending_updates"):
                self._queue = []  # dropped, not confirmed
            self._webhook = None
        return True

    def _get_updates(self, params: Params) -> list[Params]:
        offset = params.get("offset")
        limit = min(max(int(params.get("limit") or 100), 1), 100)
        timeout = max(0.0, float(params.get("timeout") or 0))
        with self._cond:
            if self._webhook is not None:
                raise ApiError(409, _WEBHOOK_ACTIVE)
            self._poll_generation += 1
            generation = self._poll_generation
            self._cond.notify_all()  # ends an older getUpdates still waiting (409 Conflict)
            if offset is not None:
                self._confirm(int(offset))
            deadline = time.monotonic() + timeout
            while True:
                if generation != self._poll_generation and not self._closing:
                    raise ApiError(409, _CONFLICT)
                # After _confirm, everything left is due: newer updates and redeliveries.
                batch = sorted(self._queue, key=lambda q: q.update_id)[:limit]
                remaining = deadline - time.monotonic()
                if batch or self._closing or remaining <= 0:
                    break
                self._cond.wait(remaining)
            for queued in batch:
                queued.delivered = True
            return [copy.deepcopy(q.update) for q in batch]

    def _confirm(self, offset: int) -> None:
        """Forget the updates below ``offset``, except a redelivery not yet delivered."""
        kept: list[Queued] = []
        for queued in self._queue:
            if queued.update_id < offset and (queued.delivered or not queued.force):
                self._confirmed.append(queued.update_id)
            else:
                kept.append(queued)
        self._queue = kept

    # ---------------------------------------------------------------- queueing updates

    def _push_update(self, kind: str, payload: Params) -> int:
        update = {"update_id": self._next_update_id, kind: payload}
        self._next_update_id += 1
        self._history[update["update_id"]] = copy.deepcopy(update)
        return self._queue_update(update, force=False)

    def _queue_update(self, update: Params, *, force: bool) -> int:
        self._queue.append(Queued(update["update_id"], copy.deepcopy(update), force))
        self._cond.notify_all()  # wakes a waiting getUpdates
        return int(update["update_id"])

    def reset_update_ids(self) -> None:
        """Number the next updates from the start again, as Telegram does for a new token
        (or after a week without updates)."""
        with self._cond:
            self._next_update_id = FIRST_UPDATE_ID

    def redeliver(self, update_id: int) -> int:
        """Queue a previously pushed update again, with the same ``update_id``.

        It is delivered once even though the client's offset has moved past it (as Telegram does
        when it did not see the confirmation), then confirmed by the next offset like any other.
        """
        with self._cond:
            if update_id not in self._history:
                raise KeyError(f"update {update_id} was never pushed")
            return self._queue_update(self._history[update_id], force=True)

    def post_update(
        self,
        update_id: int,
        port: int,
        *,
        host: str = "127.0.0.1",
        secret: Any = _REGISTERED,
        timeout: float = 30,
    ) -> int:
        """POST a pushed update to the bot's webhook server at ``host:port``, on the path of the
        registered webhook URL, the way Telegram does through a reverse proxy; return the HTTP
        status. ``secret`` goes in ``X-Telegram-Bot-Api-Secret-Token`` (default: the registered
        one; None: no header). A 2xx answer confirms the update (Telegram forgets it); any other
        leaves it pending (Telegram posts it again). Blocks: inside an event loop use
        :meth:`await_post`."""
        self._refuse_in_loop("post_update")
        with self._lock:
            if self._webhook is None:
                raise RuntimeError("no webhook is set (setWebhook was not called)")
            if update_id not in self._history:
                raise KeyError(f"update {update_id} was never pushed")
            path = urlsplit(self._webhook["url"]).path or "/"
            if secret is _REGISTERED:
                secret = self._webhook["secret_token"]
            body = json.dumps(self._history[update_id], ensure_ascii=False).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            headers["X-Telegram-Bot-Api-Secret-Token"] = secret
        request = urllib.request.Request(f"http://{host}:{port}{path}", body, headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status = response.status
        except urllib.error.HTTPError as error:
            status = error.code
        if 200 <= status < 300:
            with self._cond:
                kept = [q for q in self._queue if q.update_id != update_id]
                if len(kept) < len(self._queue):
                    self._confirmed.append(update_id)
                self._queue = kept
                self._cond.notify_all()
        return status

    async def await_post(self, update_id: int, port: int, **kwargs: Any) -> int:
        """Asyncio-friendly :meth:`post_update` (posts from a worker thread)."""
        return await asyncio.to_thread(self.post_update, update_id, port, **kwargs)
