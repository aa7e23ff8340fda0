"""Keeping the chat memory fresh while the bot runs (model.memory, model.memory_fit).

Every CHECK_SECONDS the keeper asks whether a refresh is due: after
`memory_refresh_messages` new human messages or `memory_refresh_interval` seconds with
any new one, whichever comes first; at once after a /forget or /learn off (the text
must leave the memory at the next refresh) and when the live model changed (a retrain
or /rollback: the weights belong to a network). A refresh reads the window in a short
read transaction, counts and fits in a worker thread, saves the file atomically and
has the LiveModel swap it in beside the serving generator: no reply waits.

A text withdrawn while a refresh was counting is not served: the build is thrown away
and counted again. A memory file that does not load is moved aside (kept for a look)
and reported to the admins; the bot serves without a memory until the next refresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from bot.datadir import memory_path
from bot.live_model import LiveModel
from bot.reports import describe_memory, memory_line
from bot.settings import Settings
from model.memory import ChatMemory, MemoryFileError, Messages
from model.memory_fit import MemoryBuilder
from storage import Database, count_human_messages_since, memory_window

log = logging.getLogger(__name__)

CHECK_SECONDS = 10.0  # how often the keeper asks whether a refresh is due


class ChatMemoryKeeper:
    def __init__(self, settings: Settings, db: Database, live: LiveModel | None = None):
        self.settings = settings
        self.db = db
        self.live = live  # set before start(): the memory is loaded before the model
        self.path = memory_path(settings)
        self.builder = MemoryBuilder(min_users=settings.memory_min_users)
        self.notices: list[str] = []  # for the admins: a memory file that did not load
        self.refreshes = 0
        self.last_seconds: float | None = None  # how long the last refresh took
        self._lock = asyncio.Lock()
        self._withdrawals = 0  # /forget and /learn off so far
        self._counted_withdrawals = 0  # ... when the served memory was read
        self._newest = 0  # the newest message id the served memory's window reached
        self._refreshed = time.monotonic()
        self._task: asyncio.Task | None = None

    # -- start and stop -----------------------------------------------------------

    def load(self) -> ChatMemory | None:
        """The saved memory, or None (none yet, or unreadable: moved aside, reported).
        Blocking: call before serving or in a worker thread."""
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
        return memory

    def start(self) -> None:
        """Check for due refreshes in the background, on the running event loop."""
        if self._task is None:
            self._task = asyncio.create_task(self._checks(), name="chat-memory")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # -- refreshing ---------------------------------------------------------------

    def withdrawn(self) -> None:
        """Someone's text may no longer be served (/forget, /learn off): refresh soon."""
        self._withdrawals += 1

    async def due(self) -> str | None:
        """Why a refresh is due now, or None."""
        memory = self.live.memory
        if self._withdrawals != self._counted_withdrawals:
            return "text withdrawn"
        if memory is not None and memory.info.model_version != self.live.version:
            return "new model version"
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
        """Count the memory again and serve it (None: too little text, served without)."""
        async with self._lock:
            while True:
                start = time.monotonic()
                withdrawals, version = self._withdrawals, self.live.version
                memory = await asyncio.to_thread(self._build, version)
                if withdrawals == self._withdrawals and version == self.live.version:
                    break
                log.info("chat memory: text withdrawn or model changed while counting; again")
            if memory is None:
                await asyncio.to_thread(self.path.unlink, True)
            else:
                await asyncio.to_thread(memory.save, self.path)
            await self.live.use_memory(memory)
            self._counted_withdrawals = withdrawals
            self._refreshed = time.monotonic()
            self.last_seconds = self._refreshed - start
            self.refreshes += 1
            log.info(
                "chat memory refreshed (%s) in %.1f s: %s",
                reason,
                self.last_seconds,
                describe_memory(memory),
            )
            return memory

    def _new_messages(self) -> int:
        with self.db.read() as session:
            return count_human_messages_since(session, self._newest)

    def _build(self, version: int | None) -> ChatMemory | None:
        with self.db.read() as session:
            rows, newest = memory_window(session, self.settings.memory_window_bytes)
        self._newest = max(self._newest, newest)
        model = self.live.generator.model
        return self.builder.build(model, Messages.of(rows, newest), version)

    async def _checks(self) -> None:
        while True:
            await asyncio.sleep(CHECK_SECONDS)
            try:
                await self.check()
            except Exception:
                log.exception("refreshing the chat memory failed; the served one stays")
                await asyncio.sleep(self.settings.memory_refresh_interval)  # not every check

    def status_line(self) -> str:
        """What /status says of the memory."""
        return memory_line(self.live.memory, self.settings)
