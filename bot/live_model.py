"""The live model: the one owner of the version that answers.

`LiveModel` holds the data dir's model store, the `Generator` of the live version, the
reply service that batches every chat's requests onto it (bot/replies.py) and the
`ModelInfo` that /status shows. Every change of version goes through `swap_to_live`
(after a retraining run, the pointer watch, `/rollback`): the new version is loaded
and warmed up beside the current one, which keeps answering, and then one reference is
flipped between two batches; no reply waits for it. The chat memory
(bot/chat_memory.py) is swapped in the same way (`use_memory`), and a new version is
served with the memory being served.

Each generator is built by bot/builds.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from bot import resident
from bot.builds import after_build, build, shape_of, warm_quietly
from bot.logs import WARMED_UP
from bot.model_info import ModelInfo
from bot.replies import Busy, ReplyModel, ReplyService
from model import ModelFile
from model.generator import Generator, Reply
from model.memory import ChatMemory
from model.store import ModelStore

log = logging.getLogger(__name__)

START_BUCKETS = 1  # batch sizes warmed before a start serves (the rest: beside it)


@dataclass(frozen=True)
class SwapResult:
    old: int | None
    new: int


class LiveModel:
    """The live version's generator and reply service; swaps versions (module docstring)."""

    def __init__(
        self,
        store: ModelStore,
        generator: ReplyModel,
        info: ModelInfo,
        *,
        max_batch: int | None = None,
        memory: ChatMemory | None = None,
        cold: tuple[int, ...] = (),
    ):
        self.store = store
        self.memory = memory  # the chat memory being served (None: none)
        self.info = info
        self.max_batch = max_batch  # None: the generator's largest batch; 1 turns batching off
        self._generator = generator
        self._service: ReplyService | None = None
        self._swap_lock = asyncio.Lock()
        self._unloadable: int | None = None  # a version whose load failed: not retried
        self._silenced = 0  # silence_memory() calls: a generator built meanwhile obeys too
        self._cold = cold  # batch sizes of the generator not warmed yet (start() warms them)
        self._warming: asyncio.Task | None = None

    @classmethod
    def open(
        cls,
        store: ModelStore,
        *,
        generator: ReplyModel | None = None,
        max_batch=None,
        memory: ChatMemory | None = None,
    ) -> LiveModel:
        """Load and warm up the store's live version (seconds), with `memory` mixed in.
        `generator` stands in for both when given (tests share one between bot restarts).
        Raises ModelFileError or StoreError when no version loads."""
        cold: tuple[int, ...] = ()
        if generator is None:
            version, model = store.load_live()
            # Only the smallest batch is warmed before the bot serves (a start waits for
            # it); start() warms the others beside the first replies.
            generator, memory = build(store, {}, model, memory, warm=START_BUCKETS)
            cold = generator.batch_buckets[START_BUCKETS:]
        else:
            version, model = store.live_version(), generator.model
            if memory is not None:  # the stand-in is served with the saved memory
                generator, memory = build(store, shape_of(generator), model, memory)
        info = ModelInfo.of_version(store, version, model)
        return cls(store, generator, info, max_batch=max_batch, memory=memory, cold=cold)

    @property
    def version(self) -> int | None:
        return self.info.version

    @property
    def generator(self) -> ReplyModel:
        return self._generator

    @property
    def max_prompt_bytes(self) -> int:
        return self._generator.max_prompt_bytes

    # -- answering ----------------------------------------------------------------

    @property
    def service(self) -> ReplyService | None:
        """The reply service (its stats and queue, for metrics); None before start()."""
        return self._service

    async def start(self) -> None:
        """Start the batching worker on the running event loop, and warm the batch sizes
        open() left cold in the background (meanwhile a reply may wait for one to load,
        or at a first start to compile: the generator runs one batch at a time)."""
        if self._service is None:
            self._service = ReplyService(self._generator, max_batch=self.max_batch)
            await self._service.start()
        if self._cold and self._warming is None:
            cold, self._cold = self._cold, ()
            self._warming = asyncio.create_task(self._warm_up(cold), name="warm-up")

    async def _warm_up(self, buckets: tuple[int, ...]) -> None:
        """Warm `buckets` one at a time, each under the swap lock: no build overlaps one (two
        compiles on two cores), and one that replaced the generator ends the warm-up."""
        generator, started = self._generator, time.monotonic()
        try:
            for bucket in buckets:
                async with self._swap_lock:
                    if self._generator is not generator:
                        return
                    await asyncio.to_thread(warm_quietly, generator, [bucket])
            async with self._swap_lock:
                await asyncio.to_thread(after_build)
            took = time.monotonic() - started
            log.info("%s (%.1f s); resident %s", WARMED_UP, took, resident.resident())
        except Exception:  # each batch size still compiles at its first reply
            log.exception("warming up the batch sizes %s failed", buckets)

    async def stop(self) -> None:
        """Answer every reply already asked for, then stop the batching worker."""
        if self._warming is not None:  # at most one batch size's build to wait for
            await asyncio.gather(self._warming, return_exceptions=True)
            self._warming = None
        if self._service is None:
            return
        await self._service.stop()
        st = self._service.stats
        log.info(
            "reply service: %d replies in %d batches (largest %d), %d busy, %d failed batches",
            st.requests,
            st.batches,
            st.largest_batch,
            st.busy,
            st.failed_batches,
        )
        self._service = None

    async def reply(self, turns: Sequence[str], temperature: float) -> Reply:
        """The reply to a chat's last turns (oldest first), batched with other chats'.

        Raises replies.Busy when too many replies are waiting (or before start()),
        replies.GenerationFailed when the batch failed.
        """
        if self._service is None:
            raise Busy("the reply service is not running")
        return await self._service.reply(turns, temperature)

    # -- changing version -----------------------------------------------------------

    async def swap_to_live(self, *, retry: bool = True) -> SwapResult | None:
        """Serve the store's live version if it is not the one served; None if it is.

        A version that failed to load raises, and is not tried again with retry=False
        (the pointer watch) until the live version changes.
        """
        async with self._swap_lock:
            version = await asyncio.to_thread(self.store.live_version)
            old = self.version
            if version is None or version == old:
                return None
            if not retry and version == self._unloadable:
                return None
            silenced = self._silenced
            try:
                model = await asyncio.to_thread(self.store.load, version)
                generator, memory = await asyncio.to_thread(
                    self._generator_like_current, model, self.memory
                )
                memory = self._unless_silenced(generator, memory, silenced)
            except Exception:
                self._unloadable = version
                log.exception("loading model version %s failed; still serving %s", version, old)
                raise
            self._serve(generator, memory)
            self.info = ModelInfo.of_version(self.store, version, model)
            log.info("now serving model version %s (was %s)", version, old)
            return SwapResult(old, version)

    async def use_memory(self, memory: ChatMemory | None, version: int | None = None) -> bool:
        """Serve `memory` (None: none) with the live version, swapped in as a version is;
        False (nothing served) when the live version is no longer `version` (given: the
        network the memory's weights were fitted for) or the memory was silenced while
        the generator was built."""
        async with self._swap_lock:
            if memory is None and self.memory is None:
                return True  # nothing to swap: served without a memory already
            if version is not None and version != self.version:
                return False
            silenced = self._silenced
            model = self._generator.model
            generator, memory = await asyncio.to_thread(self._generator_like_current, model, memory)
            memory = self._unless_silenced(generator, memory, silenced)
            self._serve(generator, memory)
            return memory is not None or silenced == self._silenced

    def _serve(self, generator: Generator, memory: ChatMemory | None) -> None:
        """Flip to `generator` (call holding the swap lock); nothing awaits between the
        flip and the bookkeeping after it. What the generator it replaces held is handed
        back at the next build (bot/resident.py), when no batch runs on it any more."""
        self._generator, self.memory = generator, memory
        if self._service is not None:
            self._service.swap(generator)

    def silence_memory(self) -> None:
        """Serve no chat memory from the next batch on (a text was withdrawn from it); the
        next count builds a generator with a new one."""
        self._silenced += 1
        if self.memory is not None:
            self._generator.silence_memory()
            self.memory = None

    def _unless_silenced(
        self, generator: Generator, memory: ChatMemory | None, silenced: int
    ) -> ChatMemory | None:
        """`memory`, or None with `generator` silenced when silence_memory() was called
        since the count `silenced` (while the generator was built in a worker thread)."""
        if silenced != self._silenced and memory is not None:
            generator.silence_memory()
            return None
        return memory

    async def rollback(self) -> SwapResult | None:
        """Make the previous version live (StoreError if there is none) and serve it."""
        async with self._swap_lock:
            await asyncio.to_thread(self.store.rollback)
        return await self.swap_to_live()

    def _generator_like_current(
        self, model: ModelFile, memory: ChatMemory | None
    ) -> tuple[Generator, ChatMemory | None]:
        return build(self.store, shape_of(self._generator), model, memory)
