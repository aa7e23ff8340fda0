"""How updates are handled: each chat's in order, and Telegram's flood limits kept."""

from __future__ import annotations

import asyncio

from telegram.ext import AIORateLimiter, BaseUpdateProcessor

from bot.answers import SendingNow

# PTB holds one of these slots per update from before it waits for its chat's turn
# (PTB's default is 256). The reply service's own queue bounds the work; an update
# waiting costs a few KB.
MAX_CONCURRENT_UPDATES = 4096
# Beyond this many updates of one chat waiting, the chat's next ones are handled at once,
# out of order: a flood in one chat must not take every slot and stall the others.
MAX_WAITING_PER_CHAT = 64


class ChatOrderedUpdates(BaseUpdateProcessor):
    """Updates of different chats are handled concurrently, one chat's in arrival order.

    Without this, a group message and a mention right behind it could be handled at
    once, and the reply to the mention be written without the message before it (or
    the two stored in the wrong order).
    """

    def __init__(
        self,
        max_concurrent_updates: int = MAX_CONCURRENT_UPDATES,
        max_waiting_per_chat: int = MAX_WAITING_PER_CHAT,
    ):
        super().__init__(max_concurrent_updates)
        self.max_waiting_per_chat = max_waiting_per_chat
        self._locks: dict[int, asyncio.Lock] = {}
        self._users: dict[int, int] = {}  # updates holding or waiting for each chat's lock

    async def do_process_update(self, update, coroutine) -> None:
        chat = getattr(getattr(update, "effective_chat", None), "id", None)
        if chat is None or self._users.get(chat, 0) > self.max_waiting_per_chat:
            await coroutine
            return
        # PTB starts one task per update in arrival order, and a free asyncio.Lock is
        # taken without yielding while a held one queues its waiters first come first
        # served: so a chat's updates run in the order they arrived.
        lock = self._locks.setdefault(chat, asyncio.Lock())
        self._users[chat] = self._users.get(chat, 0) + 1
        try:
            async with lock:
                await coroutine
        finally:
            self._users[chat] -= 1
            if not self._users[chat]:
                del self._users[chat], self._locks[chat]

    async def initialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass


class RateLimiter(AIORateLimiter):
    """Telegram's flood limits, except for chat actions.

    "typing…" is cosmetic and must not use up a group's 20 messages a minute. A send
    whose `rate_limit_args` is a bot.answers.SendingNow tells it when the limiter lets
    the message go, so that "typing…" covers the wait and stops before the message.
    """

    async def process_request(self, callback, args, kwargs, endpoint, data, rate_limit_args):
        if endpoint == "sendChatAction":
            return await callback(*args, **kwargs)
        if isinstance(rate_limit_args, SendingNow):
            sending, rate_limit_args = rate_limit_args, None
            inner = callback

            async def callback(*args, **kwargs):
                await sending()
                return await inner(*args, **kwargs)

        return await super().process_request(
            callback, args, kwargs, endpoint, data, rate_limit_args
        )
