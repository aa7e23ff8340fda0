"""The reply service: requests from many chats answered together, one generator call a batch.

Handlers `await service.reply(context, temperature)`. Requests queue up; one worker
takes whatever is waiting (up to the generator's largest batch) after at most
`max_wait` seconds, runs one batched generation in a thread (off the event loop),
and resolves each request with its own reply. A failed batch answers its requests
with GenerationFailed and the worker goes on; a full queue answers Busy at once.
A new model version is swapped in between batches, so a batch runs on one version.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)

MAX_WAIT = 0.002  # seconds the worker waits for company after the first request of a batch
MAX_QUEUE = 256  # requests waiting at most; more get Busy (bounded memory and latency)


class Busy(Exception):
    """The queue is full (or the service is stopping): ask the user to try again shortly."""


class GenerationFailed(Exception):
    """The batch this request was in failed; the service itself keeps running."""


class ReplyModel(Protocol):
    """What the service needs of a generator (model.Generator has it)."""

    max_batch: int
    max_prompt_bytes: int  # bytes of context it reads

    def reply(self, contexts: Sequence[Sequence[str]], temperatures: Sequence[float]) -> list: ...


@dataclass
class _Request:
    context: list[str]
    temperature: float
    future: asyncio.Future
    queued_at: float = field(default_factory=time.monotonic)


@dataclass
class ServiceStats:
    batches: int = 0
    requests: int = 0
    failed_batches: int = 0
    busy: int = 0
    largest_batch: int = 0
    batch_sizes: dict[int, int] = field(default_factory=dict)  # size -> batches of that size


class ReplyService:
    """Batches concurrent reply requests onto one generator (swappable between batches)."""

    def __init__(
        self,
        generator: ReplyModel,
        *,
        max_batch: int | None = None,
        max_wait: float = MAX_WAIT,
        max_queue: int = MAX_QUEUE,
    ):
        self._generator = generator
        self.max_batch = max(1, min(max_batch or generator.max_batch, generator.max_batch))
        self.max_wait = max_wait
        self.max_queue = max_queue
        self.stats = ServiceStats()
        self._queue: asyncio.Queue[_Request | None] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="generate")
        self._worker: asyncio.Task | None = None
        self._closing = False

    @property
    def generator(self) -> ReplyModel:
        return self._generator

    @property
    def waiting(self) -> int:
        """Requests queued and not yet in a batch."""
        return self._queue.qsize()

    def swap(self, generator: ReplyModel) -> ReplyModel:
        """Serve the next batches with `generator` (batches already running finish as they are)."""
        old, self._generator = self._generator, generator
        return old

    async def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.create_task(self._work(), name="reply-service")

    async def reply(self, context: Sequence[str], temperature: float) -> Any:
        """The model's reply to `context` (the chat's last turns, oldest first)."""
        if self._closing or self._worker is None:
            raise Busy("the reply service is not running")
        if self._queue.qsize() >= self.max_queue:
            self.stats.busy += 1
            raise Busy(f"{self.max_queue} replies are already waiting")
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Request(list(context), float(temperature), future))
        return await future

    async def stop(self) -> None:
        """Stop taking requests, answer every one already queued, then stop the worker."""
        if self._worker is None:
            return
        self._closing = True
        self._queue.put_nowait(None)  # after everything already queued
        await self._worker
        self._worker = None
        self._executor.shutdown(wait=True)

    # -- the worker -----------------------------------------------------------------

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            batch = [first]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(self._queue.get(), remaining)
                    except TimeoutError:
                        break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            await self._run(loop, batch)

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[_Request]) -> None:
        batch = [r for r in batch if not r.future.done()]  # the asker may have given up
        if not batch:
            return
        generator = self._generator  # one version for the whole batch
        contexts = [r.context for r in batch]
        temperatures = [r.temperature for r in batch]
        self.stats.batches += 1
        self.stats.requests += len(batch)
        self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
        sizes = self.stats.batch_sizes
        sizes[len(batch)] = sizes.get(len(batch), 0) + 1
        try:
            replies = await loop.run_in_executor(
                self._executor, generator.reply, contexts, temperatures
            )
        except Exception as exc:
            self.stats.failed_batches += 1
            log.exception("a batch of %d replies failed", len(batch))
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(GenerationFailed(str(exc)))
            return
        for request, reply in zip(batch, replies, strict=True):
            if not request.future.done():
                request.future.set_result(reply)
