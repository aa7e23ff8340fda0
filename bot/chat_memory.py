"""Keeping the chat memory fresh while the bot runs (model.memory, model.memory_fit).

Every CHECK_SECONDS the keeper asks whether a refresh is due: after
`memory_refresh_messages` new messages it may learn from or `memory_refresh_interval`
seconds with any new one, whichever comes first (at most every MIN_SPACING seconds);
at the first check after a start (what changed while the bot was down counts); and
when the live model changed (a retrain or /rollback: the weights belong to a network).
A /forget or /learn off drops the served memory and its file at once, and the next
check counts it again. A refresh reads the window in a short read transaction, counts
and fits in a worker thread, has the LiveModel swap it in beside the serving generator
(no reply waits) and saves the file atomically.

A count during which a text was withdrawn is thrown away. A memory file that does not
load is moved aside (kept for a look) and reported to the admins; the bot serves
without a memory until the next refresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from bot.builds import kept_base_ngrams
from bot.datadir import MODELS_DIR, memory_path
from bot.live_model import LiveModel
from bot.logs import MEMORY_REFRESHED
from bot.reports import describe_memory, memory_line
from bot.settings import Settings
from model.memory import ChatMemory, MemoryFileError, Messages
from model.memory_fit import MemoryBuilder
from storage import Database, count_trainable_messages, memory_window

log = logging.getLogger(__name__)

CHECK_SECONDS = 10.0  # how often the keeper asks whether a refresh is due
# Counting takes tens of seconds of the two cores: a busy bot counts at most this often
# (a withdrawn text or a new model version does not wait).
MIN_SPACING = 60.0


class ChatMemoryKeeper:
    def __init__(self, settings: Settings, db: Database, live: LiveModel | None = None):
        self.settings = settings
        self.db = db
        self.live = live  # set before start(): the memory is loaded before the model
        self.path = memory_path(settings)
        # Fitted with the base n-grams the generators serve: one copy, never counted here.
        base = kept_base_ngrams(settings.data_dir / MODELS_DIR)
        self.builder = MemoryBuilder(min_users=settings.memory_min_users, base=base)
        self.notices: list[str] = []  # for the admins: a memory file that did not load
        self.refreshes = 0
        self.last_seconds: float | None = None  # how long the last refresh took
        self._lock = asyncio.Lock()
        self._withdrawals = 0  # /forget and /learn off so far
        self._counted_withdrawals = 0  # ... when the served memory was read
        self._counted_version: int | None = None  # the live version it was counted for
        self._newest = 0  # the newest message id when the served memory's window was read
        self._refreshed = time.monotonic()
        self._task: asyncio.Task | None = None
        self.min_spacing = MIN_SPACING

    # -- start and stop -----------------------------------------------------------

    def load(self) -> ChatMemory | None:
        """The saved memory, or None (none yet, or unreadable: moved aside, reported).
        Blocking: call before serving or in a worker thread.

        A loaded memory is counted again at the first check: a /forget whose count the
        last process did not finish must not outlive it."""
        try:
            memory = ChatMemory.load(self.path)
        except FileNotFoundError:
            return None
        except (MemoryFileError, OSError) as e:
            aside = self.path.with_name(f"{self.path.name}.unreadable-{int(time.time())}")
            with contextlib.suppress(OSError):
                self.path.replace(aside)
            log.error("%s; serving without it until the next refresh", e)
            self.notices.append(
                f"The chat memory file did not load ({e}); it was moved to {aside.name} and "
                "the bot serves without a memory until it is counted again (minutes)."
            )
            return None
        self._newest = memory.info.newest_message_id
        self._counted_version = memory.info.model_version
        self._withdrawals += 1  # counted again at the first check
        return memory

    def start(self) -> None:
        """Check for due refreshes in the background, on the running event loop."""
        if self._task is None:
            self._task = asyncio.create_task(self._checks(), name="chat-memory")

    async def stop(self) -> None:
        """Stop checking (a count already running in its worker thread runs to its end)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None

    # -- refreshing ---------------------------------------------------------------

    def withdrawn(self) -> None:
        """Someone's text may no longer be served (/forget, /learn off): the served memory
        and its file go at once, and it is counted again at the next check."""
        self._withdrawals += 1
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)
        if self.live is not None:
            self.live.silence_memory()

    async def due(self) -> str | None:
        """Why a refresh is due now, or None."""
        if self._withdrawals != self._counted_withdrawals:
            return "text withdrawn"
        if self.refreshes == 0 and self._counted_version is None:
            return "not counted since the start"
        if self._counted_version != self.live.version:
            return "new model version"
        if time.monotonic() - self._refreshed < self.min_spacing:
            return None
        new = await asyncio.to_thread(self._new_messages)
        if new >= self.settings.memory_refresh_messages:
            return f"{new} new messages"
        if new and time.monotonic() - self._refreshed >= self.settings.memory_refresh_interval:
            return f"{new} new messages in {self.settings.memory_refresh_interval} s"
        return None

    async def check(self) -> bool:
        """Refresh if due; whether it did."""
        reason = await self.due()
        if reason is None:
            return False
        await self.refresh(reason)
        return True

    async def refresh(self, reason: str = "asked") -> ChatMemory | None:
        """Count the memory again and serve it (None: too little text, served without).

        A text withdrawn or a model swapped while it counted throws the count away; the
        next check counts again."""
        async with self._lock:
            start = time.monotonic()
            withdrawals, version = self._withdrawals, self.live.version
            memory, newest = await asyncio.to_thread(self._build, version)
            if withdrawals != self._withdrawals or version != self.live.version:
                log.info("chat memory: text withdrawn or model changed while counting")
                return self.live.memory
            served = await self.live.use_memory(memory, version)
            if not served or withdrawals != self._withdrawals:
                log.info("chat memory: text withdrawn or model changed while it was swapped in")
                return self.live.memory  # the next check counts again; nothing is saved
            try:  # after serving it: a file that cannot be written is no reason not to
                if memory is None:
                    await asyncio.to_thread(self.path.unlink, True)
                else:
                    await asyncio.to_thread(memory.save, self.path)
            except OSError:
                log.exception("the chat memory could not be saved; it is served, not kept")
                with contextlib.suppress(OSError):
                    self.path.unlink(missing_ok=True)  # never a stale one at the next start
            self._newest, self._counted_version = newest, version
            self._counted_withdrawals = withdrawals
            self._refreshed = time.monotonic()
            self.last_seconds = self._refreshed - start
            self.refreshes += 1
            log.info(
                "%s (%s) in %.1f s: %s",
                MEMORY_REFRESHED,
                reason,
                self.last_seconds,
                describe_memory(memory),
            )
            return memory

    def _new_messages(self) -> int:
        with self.db.read() as session:
            return count_trainable_messages(session, self._newest)

    def _build(self, version: int | None) -> tuple[ChatMemory | None, int]:
        with self.db.read() as session:
            rows, newest = memory_window(session, self.settings.memory_window_bytes)
        model = self.live.generator.model
        return self.builder.build(model, Messages.of(rows, newest), version), newest

    async def _checks(self) -> None:
        while True:
            await asyncio.sleep(CHECK_SECONDS)
            try:
                await self.check()
            except Exception:
                log.exception("refreshing the chat memory failed; the served one stays")
                await asyncio.sleep(self.min_spacing)  # not at every check

    def status_line(self) -> str:
        """What /status says of the memory."""
        return memory_line(self.live.memory, self.settings)
