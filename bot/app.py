"""The Telegram application: one function builds it and registers every handler."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterable
from pathlib import Path

from telegram import Bot, Update
from telegram.error import TelegramError
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    MessageHandler,
    filters,
)
from telegram.request import HTTPXRequest

from bot import commands, handlers, texts
from bot.answers import answer_at_start, answer_overdue
from bot.dispatch import ChatOrderedUpdates, RateLimiter
from bot.inbox import CONVERSATION, Inbox, PollingBot
from bot.metrics import MetricsServer, recently
from bot.profile import register_profile
from bot.retrainer import POINTER_CHECK, Retrainer
from bot.services import Services, open_services
from bot.settings import Settings
from bot.webhook import StoringQueue, Webhook
from storage import finish_pending_forgets

log = logging.getLogger(__name__)

OWNS_SERVICES = "owns_services"  # bot_data key: close the services at shutdown?
RETRAIN_JOB = "retrain-check"  # JobQueue name of the scheduled retrain check
STARTUP_ANSWERS = "startup-answers"  # bot_data key of the task answering what a crash left
PROFILE_TASK = "profile"  # bot_data key of the task registering menus and descriptions
OVERDUE_CHECK = 30.0  # seconds between looks for owed replies nothing is writing
RATE_LIMIT_RETRIES = 3  # a 429 from Telegram is waited out this many times before giving up
CONNECTION_POOL = 256  # connections for sending (PTB's default); getUpdates has its own
# /healthz fails when Telegram has not answered a getUpdates for this long (a long poll
# returns within its timeout, 10 s with run_polling's default, or at once with updates).
POLL_SILENCE = 60.0


def build_application(
    settings: Settings,
    services: Services | None = None,
    *,
    max_batch: int | None = None,
    rate_limit: bool = True,
    metrics_server: MetricsServer | None = None,
    webhook: Webhook | None = None,
) -> Application:
    """The bot, ready for `run_polling`, or with `webhook` for `run_webhook`.

    Services (database, generator) are opened in post_init and closed in post_shutdown,
    unless given here: then the caller owns them (tests share a generator between runs).
    `metrics_server` (bound already) serves /metrics and /healthz while the bot runs.
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
        opened.privacy_mode = app.bot.can_read_all_group_messages is False
        if opened.privacy_mode:
            log.warning(texts.PRIVACY_MODE)
        # Beside polling: a dozen languages' menus and descriptions take a while to send.
        profile = asyncio.create_task(
            register_profile(app.bot, settings.admin_ids), name="register-profile"
        )
        profile.add_done_callback(_log_failure)
        app.bot_data[PROFILE_TASK] = profile
        for notice in opened.live.store.notices:  # repairs the model store made: never silent
            await notify_admins(app.bot, settings.admin_ids, texts.STORE_NOTICE.format(notice))
        if opened.memory is not None:
            for notice in opened.memory.notices:
                await notify_admins(app.bot, settings.admin_ids, notice)
            opened.memory.start()
        await start_retraining(app, settings, opened)
        if metrics_server is not None:
            metrics_server.serve(opened.metrics, health_check(inbox, webhook))
        # Beside polling, not before it: owed replies may take minutes (a group's limit).
        app.bot_data[STARTUP_ANSWERS] = asyncio.create_task(
            answer_at_start(app.bot, opened), name="answer-at-start"
        )

    async def post_shutdown(app: Application) -> None:
        if metrics_server is not None:
            await asyncio.to_thread(metrics_server.close)
        for key in (STARTUP_ANSWERS, PROFILE_TASK):
            task = app.bot_data.pop(key, None)
            if task is not None and not task.done():
                task.cancel()  # what the answers task did not answer stays owed
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        opened = app.bot_data.pop(handlers.SERVICES, None)
        if opened is None:
            return
        if opened.retrainer is not None:
            await opened.retrainer.stop()
            opened.retrainer = None
        if opened.memory is not None:
            await opened.memory.stop()
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
    builder = (
        ApplicationBuilder()
        .bot(bot)
        .concurrent_updates(ChatOrderedUpdates())  # a slow reply holds up only its own chat
        .post_init(post_init)
        .post_shutdown(post_shutdown)
    )
    if webhook is not None:  # what Telegram posts is stored before it is answered
        builder = builder.update_queue(StoringQueue(inbox, bot))
    app = builder.build()
    app.bot_data[handlers.INBOX] = inbox
    app.bot_data[handlers.GROUP_ADMINS] = handlers.GroupAdmins()
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

    # The buttons under /temp (and any other button data, refused politely).
    app.add_handler(CallbackQueryHandler(handlers.temperature_button))

    # Conversation, stored by the inbox as it arrived: private chats always get an answer;
    # groups when the bot is addressed, or by the group's reply chance.
    app.add_handler(MessageHandler(CONVERSATION, handlers.converse))

    # Stickers, photos without a caption, voice...: a short note in private chats, silence
    # in groups.
    unread = ~filters.TEXT & ~filters.CAPTION & ~filters.StatusUpdate.ALL
    app.add_handler(MessageHandler(new_messages & private & unread, handlers.non_text))

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

    async def unfinished_forgets(_context) -> None:
        # A /forget whose handler stopped (the database was busy) is finished here, not
        # only at the next start; its user is out of training and replies meanwhile.
        if await asyncio.to_thread(finish_pending_forgets, services.db):
            services.text_withdrawn()  # their text leaves the chat memory too

    async def overdue(_context) -> None:
        await answer_overdue(app.bot, services, app.bot_data[handlers.INBOX].queued)

    interval = settings.retrain_interval
    app.job_queue.run_repeating(check, interval=interval, first=interval, name=RETRAIN_JOB)
    app.job_queue.run_repeating(watch, interval=POINTER_CHECK, first=POINTER_CHECK, name="pointer")
    app.job_queue.run_repeating(overdue, interval=OVERDUE_CHECK, first=OVERDUE_CHECK, name="owed")
    app.job_queue.run_repeating(
        unfinished_forgets, interval=OVERDUE_CHECK, first=OVERDUE_CHECK, name="forgets"
    )

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


def health_check(inbox: Inbox, webhook: Webhook | None) -> Callable[[], bool]:
    """/healthz: the updater runs, and Telegram answered a getUpdates lately, or, with a
    webhook, its server listens (a quiet bot is healthy: no update needs to arrive)."""
    if webhook is not None:
        return lambda: inbox.accepting() and webhook.listening()
    polling = recently(lambda: inbox.last_poll, POLL_SILENCE)
    return lambda: inbox.accepting() and polling()


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s failed", task.get_name(), exc_info=task.exception())


def run(
    settings: Settings,
    *,
    max_batch: int | None = None,
    rate_limit: bool = True,
    metrics_server: MetricsServer | None = None,
    webhook_socket: socket.socket | None = None,
) -> None:
    """Long-poll Telegram, or with CHARBOT_WEBHOOK_URL serve its webhook on `webhook_socket`
    (bound already), until SIGINT/SIGTERM; replies in flight finish before exit."""
    webhook = None
    if settings.webhook_url is not None:
        if webhook_socket is None:
            raise ValueError("webhook mode serves on a socket bound beforehand")
        webhook = Webhook(settings.webhook_url, settings.webhook_secret, webhook_socket)
    app = build_application(
        settings,
        max_batch=max_batch,
        rate_limit=rate_limit,
        metrics_server=metrics_server,
        webhook=webhook,
    )
    if webhook is None:
        app.run_polling(allowed_updates=Update.ALL_TYPES, drop_pending_updates=False)
    else:
        host, port = webhook.socket.getsockname()[:2]
        log.info("webhook: Telegram posts to %s, forwarded to %s:%s", webhook.url, host, port)
        # setWebhook at every start; no deleteWebhook at exit (PTB's run_webhook sends
        # none): Telegram keeps what arrives while the bot restarts and posts it after.
        app.run_webhook(**webhook.arguments())
    refusal = app.bot_data[handlers.INBOX].refusal
    if refusal is not None:  # Telegram refused the token while polling: exit, not hang deaf
        raise refusal
