"""What the handlers work with: settings, the database, the live model, the retrainer.

services = open_services(settings)   # migrates the database, loads and warms the model
await services.live.start()          # on the event loop that will ask for replies
...
await services.live.stop(); services.close()
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bot import xla_cache
from bot.chat_memory import ChatMemoryKeeper
from bot.datadir import adopt_shipped_base, open_database_for, open_store
from bot.live_model import LiveModel
from bot.metrics import Metrics
from bot.replies import ReplyModel
from bot.retrainer import Retrainer
from bot.settings import Settings
from storage import Database, finish_pending_forgets


@dataclass
class Services:
    settings: Settings
    db: Database
    live: LiveModel
    memory: ChatMemoryKeeper | None = None  # keeps the chat memory fresh
    retrainer: Retrainer | None = None  # set once the bot's retraining is started
    next_check: Callable[[], dt.datetime | None] = lambda: None  # the scheduled retrain check
    started: float = field(default_factory=time.monotonic)  # for uptime
    # Telegram hides group messages not meant for the bot (BotFather's privacy mode)
    privacy_mode: bool = False
    metrics: Metrics = field(default_factory=Metrics)
    # (chat id, message id) of the replies being written now (bot.answers)
    answering: set[tuple[int, int]] = field(default_factory=set)
    # replies sent whose recording failed: never sent again by this process
    sent: set[tuple[int, int]] = field(default_factory=set)

    def uptime(self) -> float:
        return time.monotonic() - self.started

    def text_withdrawn(self) -> None:
        """A user's text may no longer be served (/forget, /learn off)."""
        if self.memory is not None:
            self.memory.withdrawn()

    def close(self) -> None:
        self.db.dispose()


def open_services(
    settings: Settings, *, generator: ReplyModel | None = None, max_batch: int | None = None
) -> Services:
    """Open the database (migrating it, and finishing any /forget a crash interrupted) and
    load and warm the live model (its compiled code kept in the data dir: bot.xla_cache).
    Blocks for seconds.

    Pass `generator` to reuse one already loaded (tests share one between bot restarts).
    Raises bot.datadir.DataDirError or storage.DatabaseFileError for a data dir or database
    it cannot use, model.ModelFileError or model.store.StoreError when no model loads.
    """
    db = open_database_for(settings)  # a bad data dir or database: said before the model loads
    try:
        finish_pending_forgets(db)  # what a crash left of a /forget goes before polling
        store = open_store(settings)
        adopt_shipped_base(settings, store)
        keeper = ChatMemoryKeeper(settings, db)
        memory = keeper.load()
        # The first compile (the start's slow part), or its code loaded from the data dir.
        with xla_cache.kept(settings.data_dir):
            live = LiveModel.open(store, generator=generator, max_batch=max_batch, memory=memory)
        keeper.live = live
    except BaseException:
        db.dispose()
        raise
    services = Services(settings, db, live, memory=keeper)
    services.metrics.watch(services)
    return services
