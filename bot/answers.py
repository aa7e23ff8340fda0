"""Answering the messages the bot owes a reply: as they arrive (the conversation
handler) and, at start, what a crash left owed (answer_at_start).

Each answer reads the chat up to the message, asks the live model, sends the reply
(quoting the message in groups) and then, in one transaction, stores it and clears the
debt. A crash after sending and before that transaction sends the reply once more at
the next start: a reply twice rather than none.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Set

from telegram import Bot, ReplyParameters
from telegram.constants import ChatAction
from telegram.error import BadRequest, Forbidden, TelegramError

from bot import texts
from bot.conversation import drop_owed, owed_replies, read_owed, settle_owed, telegram_text
from bot.i18n import gettext
from bot.replies import Busy
from bot.services import Services
from storage import GROUP_CHAT_TYPES, PendingReply

log = logging.getLogger(__name__)

# Replies owed for longer than this at start are not sent (the conversation has moved
# on; an answer hours late reads as noise): each is dropped with a log line.
REPLAY_MAX_AGE = dt.timedelta(minutes=10)
# A reply owed this long with nothing writing it is tried again (answer_overdue).
OVERDUE = dt.timedelta(seconds=30)
TYPING_DELAY = 0.5  # seconds; a reply ready sooner is sent without "typing…" first
TYPING_RENEWAL = 4.0  # seconds; Telegram shows "typing…" for about 5 s per action
TYPING_GRACE = 2.0  # seconds the reply waits for a typing action still on its way


async def answer_owed(bot: Bot, services: Services, chat_id: int, message_id: int) -> None:
    """Answer the message if a reply is owed to it and not being written already (else do
    nothing). A reply that could not be sent (Telegram unreachable) stays owed; one that
    was sent is never sent again by this process, even if recording it failed."""
    key = (chat_id, message_id)
    if key in services.answering or key in services.sent:
        return
    services.answering.add(key)
    try:
        await _answer(bot, services, chat_id, message_id)
    finally:
        services.answering.discard(key)


async def _answer(bot: Bot, services: Services, chat_id: int, message_id: int) -> None:
    db = services.db
    owed = await asyncio.to_thread(
        read_owed, db, chat_id, message_id, services.live.max_prompt_bytes
    )
    if owed is None:
        return
    # "typing…" covers both waits: for the model, and for Telegram's flood limits.
    async with typing(bot, chat_id) as sending:
        failure = texts.REPLY_FAILED
        try:
            reply = await services.live.reply(owed.turns, owed.temperature)
        except Busy:
            log.warning("too many replies waiting: message %s gets 'busy'", message_id)
            reply, failure = None, texts.BUSY
        except Exception:
            log.exception("generating a reply to message %s in chat %s failed", message_id, chat_id)
            reply = None
        if reply is None and not owed.asked:  # nobody asked: no apology either
            services.metrics.replies.labels("dropped").inc()
            await asyncio.to_thread(settle_owed, db, chat_id, message_id, None, None)
            return
        text = gettext(failure, owed.language) if reply is None else telegram_text(reply.text)
        quote = None
        if owed.chat_type in GROUP_CHAT_TYPES:
            quote = ReplyParameters(message_id, allow_sending_without_reply=True)
        if getattr(bot, "rate_limiter", None) is None:
            await sending()  # nothing holds the message: it goes now
            limiter = {}
        else:
            limiter = {"rate_limit_args": sending}  # bot.dispatch.RateLimiter calls it
        try:
            sent = await bot.send_message(
                chat_id, text, reply_parameters=quote, message_thread_id=owed.thread_id, **limiter
            )
        except (BadRequest, Forbidden) as exc:  # the chat is gone, or the bot is blocked there
            log.warning("could not answer message %s in chat %s: %s", message_id, chat_id, exc)
            services.metrics.replies.labels("undeliverable").inc()
            await asyncio.to_thread(settle_owed, db, chat_id, message_id, None, None)
            return
    services.metrics.replies.labels("apology" if reply is None else "sent").inc()
    waited = dt.datetime.now(dt.UTC) - owed.created_at
    services.metrics.latency.observe(max(waited.total_seconds(), 0.0))
    services.sent.add((chat_id, message_id))
    stored = None if reply is None else text  # an apology is not a turn
    await asyncio.to_thread(settle_owed, db, chat_id, message_id, stored, sent.message_id)
    services.sent.discard((chat_id, message_id))


async def answer_overdue(bot: Bot, services: Services, skip: Set[tuple[int, int]]) -> None:
    """Answer replies owed for over OVERDUE that nothing is writing or waiting to write
    (`skip`: stored messages whose handler has not run yet): a send that failed, a handler
    that died. Drop those older than REPLAY_MAX_AGE."""
    owed = await asyncio.to_thread(owed_replies, services.db)
    now = dt.datetime.now(dt.UTC)
    await _drop_stale(services, [o for o in owed if now - o.created_at > REPLAY_MAX_AGE])
    due = [
        o
        for o in owed
        if OVERDUE < now - o.created_at <= REPLAY_MAX_AGE
        and (o.chat_id, o.telegram_message_id) not in skip
    ]
    await _answer_in_order(bot, services, due)


async def answer_at_start(bot: Bot, services: Services) -> None:
    """Answer what was stored and not answered before the last stop (or crash); drop,
    with a log line, what has waited longer than REPLAY_MAX_AGE. Runs beside polling."""
    owed = await asyncio.to_thread(owed_replies, services.db)
    now = dt.datetime.now(dt.UTC)
    stale = [o for o in owed if now - o.created_at > REPLAY_MAX_AGE]
    await _drop_stale(services, stale)
    fresh = [o for o in owed if now - o.created_at <= REPLAY_MAX_AGE]
    if fresh:
        log.info("answering %d message(s) stored before the restart", len(fresh))
    await _answer_in_order(bot, services, fresh)


async def _drop_stale(services: Services, stale: list[PendingReply]) -> None:
    if not stale:
        return
    keys = [(o.chat_id, o.telegram_message_id) for o in stale]
    await asyncio.to_thread(drop_owed, services.db, keys)
    log.warning(
        "not answering %d stored message(s) older than %d min (the oldest from %s)",
        len(stale),
        REPLAY_MAX_AGE // dt.timedelta(minutes=1),
        stale[0].created_at.isoformat(timespec="seconds"),
    )


async def _answer_in_order(bot: Bot, services: Services, owed: list[PendingReply]) -> None:
    """Answer each chat's debts one after another, oldest first; chats side by side."""
    by_chat: dict[int, list[PendingReply]] = {}
    for o in owed:  # oldest first already
        by_chat.setdefault(o.chat_id, []).append(o)

    async def one_chat(debts: list[PendingReply]) -> None:
        for o in debts:
            try:
                await answer_owed(bot, services, o.chat_id, o.telegram_message_id)
            except Exception as exc:
                log.warning("answering message %s failed: %s", o.telegram_message_id, exc)

    await asyncio.gather(*(one_chat(debts) for debts in by_chat.values()))


class SendingNow:
    """Called (awaited) right before a message goes out: stops its "typing…" first."""

    def __init__(self, stop) -> None:
        self._stop = stop

    async def __call__(self) -> None:
        await self._stop()


@contextlib.asynccontextmanager
async def typing(bot: Bot, chat_id: int):
    """Show "typing…" in the chat if the block takes longer than TYPING_DELAY, and renew it
    until the block ends or the SendingNow it yields is called (the reply goes out).

    Most replies are ready in tens of milliseconds: announcing them would cost a request
    per reply and hold the reply until the action lands, for nothing anyone could see.
    """
    done = asyncio.Event()

    async def keep_typing() -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), TYPING_DELAY)
        while not done.is_set():
            try:
                await bot.send_chat_action(chat_id, ChatAction.TYPING)
            except TelegramError as exc:  # cosmetic: never fails the reply
                log.debug("typing action for chat %s failed: %s", chat_id, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), TYPING_RENEWAL)

    task = asyncio.create_task(keep_typing())

    async def stop() -> None:
        done.set()
        # Let an action on its way land before the reply (so "typing…" never follows it),
        # but never hold the reply for a cosmetic request.
        if not task.done():
            await asyncio.wait({task}, timeout=TYPING_GRACE)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    try:
        yield SendingNow(stop)
    finally:
        await stop()
