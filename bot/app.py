"""The Telegram application: one function builds it and registers every handler."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from pathlib import Path

from telegram import Bot, BotCommand, BotCommandScopeChat, Update
from telegram.error import TelegramError
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    BaseUpdateProcessor,
    CommandHandler,
    MessageHandler,
    filters,
)
from telegram.request import HTTPXRequest

from bot import commands, handlers, texts
from bot.answers import answer_at_start, answer_overdue
from bot.inbox import CONVERSATION, Inbox, PollingBot
from bot.retrainer import POINTER_CHECK, Retrainer
from bot.services import Services, open_services
from bot.settings import Settings

log = logging.getLogger(__name__)

OWNS_SERVICES = "owns_services"  # bot_data key: close the services at shutdown?
RETRAIN_JOB = "retrain-check"  # JobQueue name of the scheduled retrain check
STARTUP_ANSWERS = "startup-answers"  # bot_data key of the task answering what a crash left
OVERDUE_CHECK = 30.0  # seconds between looks for owed replies nothing is writing
RATE_LIMIT_RETRIES = 3  # a 429 from Telegram is waited out this many times before giving up
CONNECTION_POOL = 256  # connections for sending (PTB's default); getUpdates has its own
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

    "typing…" is cosmetic and must not use up a group's 20 messages a minute.
    """

    async def process_request(self, callback, args, kwargs, endpoint, data, rate_limit_args):
        if endpoint == "sendChatAction":
            return await callback(*args, **kwargs)
        return await super().process_request(
            callback, args, kwargs, endpoint, data, rate_limit_args
        )


def build_application(
    settings: Settings,
    services: Services | None = None,
    *,
    max_batch: int | None = None,
    rate_limit: bool = True,
) -> Application:
    """The bot, ready for `run_polling`.

    Services (database, generator) are opened in post_init and closed in post_shutdown,
    unless given here: then the caller owns them (tests share a generator between runs).
    `max_batch=1` (no batching) and `rate_limit=False` exist for benchmarks.
    """

    async def post_init(app: Application) -> None:
        owned = services is None
        app.bot_data[handlers.SERVICES] = (
            await asyncio.to_thread(open_services, settings, max_batch=max_batch)
            if owned
            else services
        )
        app.bot_data[OWNS_SERVICES] = owned
        opened = app.bot_data[handlers.SERVICES]
        inbox.db = opened.db  # polling starts after this: nothing arrived before
        inbox.on_refused = app.stop_running
        inbox.accepting = lambda: app.updater is not None and app.updater.running
        await opened.live.start()
        log.info("serving @%s with model %s", app.bot.username, opened.live.info.describe())
        await register_commands(app.bot, settings.admin_ids)
        for notice in opened.live.store.notices:  # repairs the model store made: never silent
            await notify_admins(app.bot, settings.admin_ids, texts.STORE_NOTICE.format(notice))
        await start_retraining(app, settings, opened)
        # Beside polling, not before it: owed replies may take minutes (a group's limit).
        app.bot_data[STARTUP_ANSWERS] = asyncio.create_task(
            answer_at_start(app.bot, opened), name="answer-at-start"
        )

    async def post_shutdown(app: Application) -> None:
        startup = app.bot_data.pop(STARTUP_ANSWERS, None)
        if startup is not None and not startup.done():
            startup.cancel()  # what it did not answer stays owed for the next start
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await startup
        opened = app.bot_data.pop(handlers.SERVICES, None)
        if opened is None:
            return
        if opened.retrainer is not None:
            await opened.retrainer.stop()
            opened.retrainer = None
        await opened.live.stop()  # replies already asked for are answered first
        if app.bot_data.pop(OWNS_SERVICES, False):
            opened.close()

    inbox = Inbox()
    bot = PollingBot(
        settings.require_token(),
        base_url=settings.telegram_base_url,
        base_file_url=settings.telegram_base_file_url,
        request=HTTPXRequest(connection_pool_size=CONNECTION_POOL),
        get_updates_request=HTTPXRequest(connection_pool_size=1),
        rate_limiter=RateLimiter(max_retries=RATE_LIMIT_RETRIES) if rate_limit else None,
        inbox=inbox,
    )
    app = (
        ApplicationBuilder()
        .bot(bot)
        .concurrent_updates(ChatOrderedUpdates())  # a slow reply holds up only its own chat
        .post_init(post_init)
        .post_shutdown(post_shutdown)
        .build()
    )
    app.bot_data[handlers.INBOX] = inbox
    new_messages = filters.UpdateType.MESSAGE  # edits and channel posts are not conversation
    private = filters.ChatType.PRIVATE

    # Commands (also as /temp@botname in groups); never stored as conversation.
    for command in commands.COMMANDS:
        names = [command.name, *command.aliases]
        app.add_handler(
            CommandHandler(names, handlers.command_handler(command), filters=new_messages)
        )
    unknown = new_messages & private & filters.COMMAND
    app.add_handler(MessageHandler(unknown, handlers.unknown_command))

    # Conversation, stored by the inbox as it arrived: private chats always get an answer;
    # groups when the bot is addressed.
    app.add_handler(MessageHandler(CONVERSATION, handlers.converse))

    # Stickers, photos, voice...: a short note in private chats, silence in groups.
    app.add_handler(
        MessageHandler(
            new_messages & private & ~filters.TEXT & ~filters.StatusUpdate.ALL, handlers.non_text
        )
    )

    # Anything a handler raises is logged; no update stops the bot.
    app.add_error_handler(handlers.log_error)
    return app


async def start_retraining(app: Application, settings: Settings, services: Services) -> None:
    """The Retrainer, the scheduled retrain check and the watch on the live-model pointer."""

    async def notify(admin_id: int | None, text: str, plot: Path | None) -> None:
        admins = {admin_id} if admin_id is not None else settings.admin_ids
        await notify_admins(app.bot, admins, text, plot)

    retrainer = Retrainer(settings, services.db, services.live, notify)
    await asyncio.to_thread(retrainer.close_stale_runs)
    services.retrainer = retrainer

    async def check(_context) -> None:
        await retrainer.scheduled_check()

    async def watch(_context) -> None:
        await retrainer.watch()

    async def overdue(_context) -> None:
        await answer_overdue(app.bot, services, app.bot_data[handlers.INBOX].queued)

    interval = settings.retrain_interval
    app.job_queue.run_repeating(check, interval=interval, first=interval, name=RETRAIN_JOB)
    app.job_queue.run_repeating(watch, interval=POINTER_CHECK, first=POINTER_CHECK, name="pointer")
    app.job_queue.run_repeating(overdue, interval=OVERDUE_CHECK, first=OVERDUE_CHECK, name="owed")

    def next_check():
        jobs = app.job_queue.get_jobs_by_name(RETRAIN_JOB)
        return jobs[0].next_t if jobs else None

    services.next_check = next_check


async def notify_admins(
    bot: Bot, admin_ids: Iterable[int], text: str, plot: Path | None = None
) -> None:
    """Send `text` (and the loss plot) to each admin; one who cannot be reached is logged."""
    for chat_id in sorted(admin_ids):
        try:
            await bot.send_message(chat_id, text)
            if plot is not None:
                await bot.send_photo(chat_id, plot.read_bytes(), caption="Loss per epoch")
        except TelegramError as exc:
            log.warning("could not tell admin %s: %s", chat_id, exc)


def command_menu(*, admin: bool) -> list[BotCommand]:
    return [BotCommand(c.name, c.menu) for c in commands.COMMANDS if admin or not c.admin]


async def register_commands(bot: Bot, admin_ids: frozenset[int]) -> None:
    """Show the public commands to everyone, and the admin commands in each admin's chat.

    A failure (e.g. an admin who never wrote to the bot: "chat not found") is logged.
    """
    try:
        await bot.set_my_commands(command_menu(admin=False))
    except TelegramError as exc:
        log.warning("could not register the command menu: %s", exc)
    for admin_id in sorted(admin_ids):
        try:
            await bot.set_my_commands(command_menu(admin=True), scope=BotCommandScopeChat(admin_id))
        except TelegramError as exc:
            log.warning("could not show the admin commands to admin %s: %s", admin_id, exc)


def run(settings: Settings, *, max_batch: int | None = None, rate_limit: bool = True) -> None:
    """Long-poll Telegram until SIGINT/SIGTERM; replies in flight finish before exit."""
    app = build_application(settings, max_batch=max_batch, rate_limit=rate_limit)
    app.run_polling(allowed_updates=Update.ALL_TYPES, drop_pending_updates=False)
    refusal = app.bot_data[handlers.INBOX].refusal
    if refusal is not None:  # Telegram refused the token while polling: exit, not hang deaf
        raise refusal
