"""What the handlers work with: the database, the reply engine, the model's description, uptime.

`ReplyEngine` reads a chat's context from storage and asks the batching reply
service (bot/replies.py) for the reply, so concurrent chats share generator calls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from bot.replies import ReplyService
from bot.settings import Settings
from storage import Database, open_database, recent_turns

if TYPE_CHECKING:  # importing `model` imports TensorFlow: only where it is needed
    from model import Generator, ModelFile, Reply

log = logging.getLogger(__name__)

CONTEXT_TURNS = 8  # the chat's last turns the model reads before answering
REPLY_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32)  # compiled batch sizes: see model.generator


@dataclass(frozen=True)
class ModelInfo:
    """Which model answers: shown by /status and `charbot status`."""

    path: Path
    meta: dict[str, Any] = field(default_factory=dict)
    units: int = 0
    layers: int = 0
    version: int | None = None  # the model store's version number

    @classmethod
    def of(cls, model: ModelFile, path: Path, version: int | None = None) -> ModelInfo:
        config = model.config
        return cls(Path(path), dict(model.meta), config.units, config.layers, version)

    def describe(self) -> str:
        details = [str(self.meta.get("kind", "unknown kind"))]
        if self.meta.get("created"):
            details.append(f"created {self.meta['created']}")
        layers = "1 layer" if self.layers == 1 else f"{self.layers} layers"
        details.append(f"GRU {self.units} units, {layers}")
        mix = self.meta.get("mix")  # model.mixture.MIX_KEY (importing it would load TensorFlow)
        if isinstance(mix, dict) and {"ngram_order", "network_weight"} <= set(mix):
            details.append(
                f"mixed with the base corpus' {mix['ngram_order']}-gram "
                f"at network weight {mix['network_weight']}"
            )
        name = self.path.name if self.version is None else f"version {self.version}"
        return f"{name} ({', '.join(details)})"


class ReplyEngine:
    """Turns a chat's stored turns into the generator's next reply, batched with other chats'."""

    def __init__(
        self,
        db: Database,
        generator: Generator,
        *,
        context_turns: int = CONTEXT_TURNS,
        max_batch: int | None = None,
    ):
        self.db = db
        self.generator = generator
        self.context_turns = context_turns
        self.max_batch = max_batch  # None: the generator's largest batch; 1 turns batching off
        self._service: ReplyService | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def context(self, chat_id: int) -> list[str]:
        """The chat's last turns, oldest first (the newest message included)."""
        with self.db.read() as session:
            return self.read_context(session, chat_id)

    def read_context(self, session: Session, chat_id: int) -> list[str]:
        """context(), inside a transaction the caller holds."""
        turns = recent_turns(
            session,
            chat_id,
            max_turns=self.context_turns,
            max_bytes=self.generator.max_prompt_bytes,
        )
        return [text for text, _ in turns]

    def reply_sync(self, chat_id: int, temperature: float) -> Reply:
        """One reply, computed here and now (the terminal chat). Blocks: CPU-bound."""
        [reply] = self.generator.reply([self.context(chat_id)], [temperature])
        return reply

    async def reply(
        self, chat_id: int, temperature: float, turns: list[str] | None = None
    ) -> Reply:
        """The reply, generated in a batch with whatever other chats asked at the same time.

        `turns` is the chat's context when the caller read it already (read_context);
        otherwise it is read here. Raises replies.Busy when too many replies are waiting,
        GenerationFailed when the batch failed.
        """
        if turns is None:
            turns = await asyncio.to_thread(self.context, chat_id)
        service = await self._running_service()
        return await service.reply(turns, temperature)

    def swap(self, generator: Generator) -> None:
        """Answer with `generator` from the next batch on (batches running finish as they are)."""
        self.generator = generator
        if self._service is not None:
            self._service.swap(generator)

    async def stop(self) -> None:
        """Answer every reply already asked for, then stop the batching worker."""
        if self._service is not None and self._loop is asyncio.get_running_loop():
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
        self._loop = None

    def close(self) -> None:
        self._service = None

    async def _running_service(self) -> ReplyService:
        # One service per event loop: tests run several bots, one loop each, on one engine.
        loop = asyncio.get_running_loop()
        if self._service is None or self._loop is not loop:
            self._service = ReplyService(self.generator, max_batch=self.max_batch)
            self._loop = loop
            await self._service.start()
        return self._service


@dataclass
class Services:
    settings: Settings
    db: Database
    replies: ReplyEngine
    model: ModelInfo
    started: float = field(default_factory=time.monotonic)  # for uptime

    def uptime(self) -> float:
        return time.monotonic() - self.started

    def close(self) -> None:
        self.replies.close()
        self.db.dispose()


def live_model(settings: Settings) -> tuple[int, Path]:
    """The live version of the data dir's model store and its file (bootstrapped if new)."""
    from bot.retraining import open_store

    store = open_store(settings)
    version = store.live_version()
    return version, store.path(version) / "model.npz"


def load_model_info(settings: Settings) -> ModelInfo:
    """Describe the live model without building a generator (for `charbot status`)."""
    from model import load

    version, path = live_model(settings)
    return ModelInfo.of(load(path), path, version)


def open_database_for(settings: Settings) -> Database:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return open_database(settings.database_url)


def open_services(
    settings: Settings, *, generator: Generator | None = None, max_batch: int | None = None
) -> Services:
    """Open the database (migrating it) and load and warm the generator. Blocks for seconds.

    Pass `generator` to reuse one already loaded (tests share one between bot restarts).
    Raises model.ModelFileError when the model file is missing or unusable.
    """
    from bot.retraining import adopt_shipped_base

    adopt_shipped_base(settings)  # an install from before the base model mixed
    version, path = live_model(settings)
    if generator is None:
        from model import Generator, load

        generator = Generator(load(path), batch_buckets=REPLY_BATCH_BUCKETS)
    db = open_database_for(settings)
    engine = ReplyEngine(db, generator, max_batch=max_batch)
    return Services(settings, db, engine, ModelInfo.of(generator.model, path, version))
