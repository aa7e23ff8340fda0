"""Building the generator a model version is served by: its base n-grams, read from the
store's n-gram cache (model.ngram_cache: counted at the first start, then read in a
fraction of a second, once per process), the chat memory if its weights fit the model,
the warm-up of its batch sizes; then the memory that building used once is handed back
to the system (bot/resident.py). bot/live_model.py serves what is built here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from bot import resident, xla_cache
from bot.logs import quiet_xla_loads
from bot.replies import ReplyModel
from model import ModelFile
from model.generator import Generator
from model.languages import BaseNGrams, served_mix
from model.memory import ChatMemory
from model.ngram_cache import FOLDER, load_base_ngrams
from model.store import ModelStore

log = logging.getLogger(__name__)


def build(
    store: ModelStore,
    shape: dict,
    model: ModelFile,
    memory: ChatMemory | None,
    *,
    warm: int | None = None,
) -> tuple[Generator, ChatMemory | None]:
    """A generator for `model` with `memory` (left out if its weights do not fit the
    model: the next refresh fits new ones), shaped by `shape`, warmed up for its `warm`
    smallest batch sizes (None: all)."""
    try:
        generator = None
        if memory is not None:
            try:
                ngram = base_ngrams(store, model, memory)
                generator = Generator(model, memory=memory, ngram=ngram, warm_up=False, **shape)
            except ValueError as e:  # fitted for another mixture (an upgrade, a rollback)
                log.warning("the chat memory does not fit the model (%s); served without it", e)
                memory = None
        if generator is None:
            ngram = base_ngrams(store, model, None)
            generator = Generator(model, ngram=ngram, warm_up=False, **shape)
        warm_quietly(generator, generator.batch_buckets[:warm])
        return generator, memory
    finally:
        after_build()


def warm_quietly(generator: Generator, buckets: Sequence[int]) -> None:
    """Warm `buckets` without TensorFlow's lines about loading their code (at a start, a
    swap or a rollback alike), one at a time: the bot's own stderr lines meanwhile are
    held for one batch size's build at most."""
    for bucket in buckets:
        with quiet_xla_loads():
            generator.warm_up([bucket])


def after_build() -> None:
    """Hand back what building read or freed (bot/resident.py), and keep the files of
    compiled code within their limit (call under the swap lock: no other build loads a
    file meanwhile)."""
    resident.hand_back()
    xla_cache.trim()  # this build's code is kept; the oldest goes past the limit


def base_ngrams(store: ModelStore, model: ModelFile, memory: ChatMemory | None):
    """The base n-grams `model` is served with (None: the network alone), from the
    store's n-gram cache."""
    if model.mix is None and memory is None:
        return None
    return kept_base_ngrams(store.root)(served_mix(model)[0])


def kept_base_ngrams(store_root: str | Path) -> Callable[[int], BaseNGrams]:
    """The base n-grams of an order, from the n-gram cache of the model store at
    `store_root`: one copy per process, for the generators and the chat memory's fitting
    (model.memory_fit) alike."""
    folder = Path(store_root) / FOLDER
    return lambda order: load_base_ngrams(order, folder)


def shape_of(generator: ReplyModel) -> dict:
    """The shape arguments of `generator`, for another Generator like it."""
    return {
        "batch_buckets": generator.batch_buckets,
        "max_prompt_bytes": generator.max_prompt_bytes,
        "max_reply_bytes": generator.max_reply_bytes,
    }
