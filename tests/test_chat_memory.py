"""The chat memory in the running bot: when it is counted again, what it leaves out,
how it survives a restart or a damaged file, and that no one's private phrase reaches
another user, after a memory refresh and a retrain."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import random
import re
import urllib.request
from types import SimpleNamespace

import numpy as np
import pytest
from test_ngram_cache import ORDER, small_base

from bot import builds
from bot.chat_memory import ChatMemoryKeeper
from bot.datadir import MEMORY_FILE, MODELS_DIR
from bot.metrics import MetricsServer
from bot.services import open_services
from bot.settings import Settings, load_settings
from model import load, ngram_cache
from model.generator import Generator
from model.memory import ChatMemory
from model.memory_fit import MemoryBuilder
from model.retrain import RetrainConfig, retrain
from storage import (
    add_message,
    forget_user,
    get_or_create_chat,
    get_or_create_user,
    memory_window,
    set_learning,
    training_transcripts,
)

PIRATE = ["arr", "matey", "ahoy", "yo ho", "avast", "grog", "the plank", "me hearty"]
CANARY = "ring me at +1 555 0199 2834"
SHARED = "zebra crossing blue"  # written by exactly three users


def pieces(text: str, n: int = 10) -> set[bytes]:
    raw = text.encode()
    return {raw[i : i + n] for i in range(len(raw) - n + 1)}


def knows(memory: ChatMemory, phrase: str | bytes) -> bool:
    """Whether the memory holds the end of `phrase` as its longest context."""
    raw = phrase if isinstance(phrase, bytes) else phrase.encode()
    ids = list(raw)[-(memory.ngram.order - 1) :]
    return memory.ngram.context_ids(ids)[-1] >= 0


@pytest.fixture
def settings(tmp_path, tiny_model_path):
    env = {
        "CHARBOT_DATA_DIR": str(tmp_path / "data"),
        "CHARBOT_MODEL_PATH": str(tiny_model_path),
        "CHARBOT_MEMORY_REFRESH_MESSAGES": "50",
    }
    return load_settings(env, env_file=None)


@pytest.fixture(scope="module")
def generator(tiny_model_path):
    """One bucket and short replies: every refresh compiles a generator with the memory."""
    return Generator(load(tiny_model_path), batch_buckets=(1,), max_reply_bytes=40)


@pytest.fixture(scope="module")
def builder():
    """One builder for the module: it keeps the base slice's scores per model, and a
    smaller slice than the bot's fits in a test's time."""
    return MemoryBuilder(base_conversations=60)


@pytest.fixture
def services(settings, generator, builder):
    opened = open_services(settings, generator=generator)
    opened.memory.builder = builder
    yield opened
    opened.close()


def write(services, rows) -> None:
    """Store (chat id, user id, text) rows as human messages, each chat a group."""
    with services.db.begin() as session:
        for chat, user, text in rows:
            get_or_create_chat(session, chat, "private" if chat == user else "group")
            get_or_create_user(session, user, f"user {user}")
            add_message(session, chat_id=chat, user_id=user, text=text)


def pirate_rows(n: int, users: int = 20, seed: int = 0) -> list[tuple[int, int, str]]:
    rng = random.Random(seed)
    return [
        (-100 - i % 5, 10 + i % users, " ".join(rng.choice(PIRATE) for _ in range(3)) + "!")
        for i in range(n)
    ]


def test_too_little_text_serves_no_memory(services):
    write(services, pirate_rows(6))
    write(services, [(-9, 9, "the same line again and again")] * 300)  # one user's flood
    keeper = services.memory

    assert asyncio.run(keeper.refresh("asked")) is None  # 7 distinct messages: too few
    assert services.live.memory is None
    assert not (services.settings.data_dir / MEMORY_FILE).exists()
    assert "empty" in keeper.status_line()


def test_new_messages_make_a_refresh_due_and_it_is_served_and_saved(services):
    keeper = services.memory
    keeper.min_spacing = 0  # not a minute between counts: this test writes fast
    write(services, pirate_rows(10))

    async def main():
        assert await keeper.due() == "not counted since the start"
        assert await keeper.check()
        assert services.live.memory is None  # 10 messages: too few to fit weights on
        write(services, pirate_rows(49, seed=1))
        assert await keeper.due() is None
        write(services, pirate_rows(1, seed=2))
        assert await keeper.due() == "50 new messages"
        assert await keeper.check()
        assert await keeper.due() is None  # counted: nothing new since
        await services.live.start()
        try:
            return await services.live.reply(["ahoy matey!"], 0.0)
        finally:
            await services.live.stop()

    reply = asyncio.run(main())
    memory = services.live.memory
    assert memory is not None and memory.info.messages == 60
    assert memory.info.model_version == services.live.version
    assert reply.text
    saved = ChatMemory.load(services.settings.data_dir / MEMORY_FILE)
    assert saved.info == memory.info
    assert "60 messages from 20 users" in keeper.status_line()


def test_a_quiet_bot_refreshes_after_the_interval(services):
    keeper = services.memory
    asyncio.run(keeper.check())  # the count at the start
    write(services, pirate_rows(5))
    assert asyncio.run(keeper.due()) is None
    keeper._refreshed -= services.settings.memory_refresh_interval  # 300 s later
    assert asyncio.run(keeper.due()) == "5 new messages in 300 s"


def test_the_memory_survives_a_restart_and_is_counted_again_at_the_first_check(settings, generator):
    first = open_services(settings, generator=generator)
    try:
        write(first, pirate_rows(120))
        asyncio.run(first.memory.refresh())
        info = first.live.memory.info
    finally:
        first.close()
    again = open_services(settings, generator=generator)
    try:
        assert again.live.memory is not None and again.live.memory.info == info
        assert again.memory.notices == []
        # a /forget the last process did not finish counting must not outlive it
        assert asyncio.run(again.memory.due()) == "text withdrawn"
    finally:
        again.close()


def test_a_damaged_memory_file_is_moved_aside_and_reported(settings, generator, builder):
    first = open_services(settings, generator=generator)
    first.memory.builder = builder
    try:
        write(first, pirate_rows(120))
        asyncio.run(first.memory.refresh())
    finally:
        first.close()
    path = settings.data_dir / MEMORY_FILE
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 3])  # a torn copy (model.memory's tests: the rest)
    again = open_services(settings, generator=generator)
    try:
        assert again.live.memory is None  # served without it
        assert len(again.memory.notices) == 1 and "did not load" in again.memory.notices[0]
        again.memory.builder = builder
        assert not path.exists() and list(settings.data_dir.glob(f"{MEMORY_FILE}.unreadable-*"))
        asyncio.run(again.memory.refresh())  # the next count brings it back
        assert again.live.memory is not None and path.exists()
    finally:
        again.close()


def test_forgotten_and_opted_out_text_leaves_at_the_next_refresh(services):
    keeper = services.memory
    write(services, pirate_rows(120))
    write(services, [(-7, user, SHARED) for user in (501, 502, 503)])
    write(services, [(-7, 504, "a line nobody else wrote at all")])
    asyncio.run(keeper.refresh())
    assert knows(services.live.memory, SHARED)

    forget_user(services.db, 501)
    services.text_withdrawn()
    assert asyncio.run(keeper.due()) == "text withdrawn"
    asyncio.run(keeper.check())
    assert not knows(services.live.memory, SHARED)  # two users left: not shared enough

    write(services, [(-7, 505, SHARED)])
    asyncio.run(keeper.refresh())
    assert knows(services.live.memory, SHARED)
    with services.db.begin() as session:
        set_learning(session, 505, False)
    services.text_withdrawn()
    asyncio.run(keeper.check())
    assert not knows(services.live.memory, SHARED)


def test_text_withdrawn_while_counting_is_counted_again(services, monkeypatch):
    keeper = services.memory
    write(services, pirate_rows(120))
    write(services, [(-7, user, SHARED) for user in (501, 502, 503)])
    build = keeper.builder.build
    calls = []

    def build_then_forget(*args, **kwargs):
        memory = build(*args, **kwargs)
        if not calls:  # /forget lands while the first count runs
            forget_user(services.db, 502)
            services.text_withdrawn()
        calls.append(memory)
        return memory

    monkeypatch.setattr(keeper.builder, "build", build_then_forget)
    asyncio.run(keeper.refresh())  # thrown away: /forget landed while it counted
    assert len(calls) == 1 and knows(calls[0], SHARED) and services.live.memory is None
    assert asyncio.run(keeper.check())  # due: counted again without the forgotten text
    assert len(calls) == 2 and not knows(services.live.memory, SHARED)
    assert asyncio.run(keeper.due()) is None


def test_a_new_model_version_makes_a_refresh_due(services, generator):
    keeper = services.memory
    write(services, pirate_rows(120))
    asyncio.run(keeper.refresh())
    assert asyncio.run(keeper.due()) is None
    store = services.live.store
    store.publish(generator.model, {"kind": "test"})  # a retrain's new version goes live

    async def swap():
        await services.live.swap_to_live()
        return await keeper.due()

    assert asyncio.run(swap()) == "new model version"
    assert services.live.memory is not None  # the new version is served with the memory


def test_a_withdrawal_drops_the_memory_and_its_file_at_once(services):
    keeper = services.memory
    write(services, pirate_rows(120))
    path = services.settings.data_dir / MEMORY_FILE

    async def main():
        await keeper.refresh()
        assert services.live.memory is not None and path.exists()
        memory = services.live.memory
        services.text_withdrawn()
        assert not path.exists()  # a restart now would not serve it
        assert services.live.memory is None
        await services.live.start()
        try:  # the next reply already has no word from it: the memory owns no step
            generator = services.live.generator
            table = generator.mixture_weights
            assert table[:, 2].max() == 0.0 and np.allclose(table.sum(axis=1), 1.0)
            assert (await services.live.reply(["ahoy matey!"], 0.0)).text
        finally:
            await services.live.stop()
        assert memory is not None
        return await keeper.due()

    assert asyncio.run(main()) == "text withdrawn"


def test_a_memory_that_cannot_be_saved_is_still_served(services, monkeypatch):
    write(services, pirate_rows(120))

    def full_disk(self, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ChatMemory, "save", full_disk)
    memory = asyncio.run(services.memory.refresh())
    assert memory is not None and services.live.memory is memory
    assert not (services.settings.data_dir / MEMORY_FILE).exists()


def test_a_private_phrase_reaches_no_other_user_after_a_refresh_and_a_retrain(services, tmp_path):
    """The canary: a fake phone number one user wrote 50 times in a private chat."""
    write(services, pirate_rows(400))
    # Others write how the canary starts, so a reply often starts that way too: only the
    # memory's rule stops it going on with the number.
    endings = ["noon", "home", "five", "once"]
    others = [(-200, 300 + i % 15, f"ring me at {endings[i % 4]}") for i in range(60)]
    write(services, others)
    write(services, [(77, 77, CANARY)] * 50)
    # the canary's own pieces: those nobody else wrote
    private = pieces(CANARY) - {p for _, _, text in others for p in pieces(text)}
    asyncio.run(services.memory.refresh())
    memory = services.live.memory
    assert memory is not None
    assert not any(knows(memory, p) for p in private)
    assert knows(memory, "ring me at")
    with services.db.read() as session:
        transcripts = training_transcripts(session)
    config = RetrainConfig(
        learning_rate=1e-2,
        epochs=2,
        window=64,
        batch_size=16,
        base_eval_conversations=8,
        threads=None,
    )
    base = ([["hi", "hello there"], ["how are you", "fine"]] * 20, [["good day", "to you"]] * 4)
    result = retrain(services.live.generator.model, transcripts, config, tmp_path, base=base)
    candidate = load(result.candidate_path)
    gen = Generator(candidate, batch_buckets=(32,), memory=memory, seed=5)
    rng = np.random.default_rng(0)
    prompts = ["hello", "ring me", "what is your number?", "+1 555", "arr matey!", "call"]
    replies = []
    for temperature in (0.0, 1.0):
        for _ in range(8):
            batch = [[str(rng.choice(prompts))] for _ in range(32)]
            replies += [r.text for r in gen.reply(batch, [temperature] * 32)]
    assert len(replies) >= 500
    leaked = [r for r in replies if private & pieces(r)]
    assert leaked == []


def test_one_users_flood_does_not_push_everyone_out_of_the_window(services):
    write(services, pirate_rows(60))
    flood = [(-5, 99, f"buy my coin number {i} now!!!") for i in range(3000)]
    write(services, flood + [(-5, 99, "same again")] * 50)
    with services.db.read() as session:
        rows, newest = memory_window(session, 20_000)
    mine = [text for _, user, text in rows if user == 99]
    assert sum(len(t.encode()) for t in mine) <= 2_000  # a tenth of the window
    assert mine.count("same again") == 1
    assert len([r for r in rows if r[1] != 99]) == 60  # everyone else is still in it
    assert newest == 60 + 3000 + 50


def test_a_withdrawal_while_a_count_is_swapped_in_is_obeyed(services, monkeypatch):
    keeper = services.memory
    write(services, pirate_rows(120))
    live = services.live
    build = live._generator_like_current

    def build_then_withdraw(model, memory):
        built = build(model, memory)
        services.text_withdrawn()  # /forget while the new generator compiled
        return built

    monkeypatch.setattr(live, "_generator_like_current", build_then_withdraw)
    asyncio.run(keeper.refresh())
    assert live.memory is None
    assert live.generator.mixture_weights is None or live.generator.mixture_weights[:, 2].max() == 0
    assert not (services.settings.data_dir / MEMORY_FILE).exists()  # nothing saved
    assert asyncio.run(keeper.due()) == "text withdrawn"


def scrape(server: MetricsServer) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as r:
        return r.read().decode()


def gauge(text: str, name: str) -> float | None:
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return None if found is None else float(found.group(1))


def test_metrics_report_the_served_memorys_age_and_size(services):
    server = MetricsServer("127.0.0.1", 0)
    server.serve(services.metrics, lambda: True)
    try:
        before = scrape(server)
        write(services, pirate_rows(120))
        asyncio.run(services.memory.refresh())
        memory = services.live.memory
        fresh = scrape(server)
        an_hour_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
        services.live.memory = dataclasses.replace(
            memory, info=dataclasses.replace(memory.info, built_at=an_hour_ago.isoformat())
        )
        old = scrape(server)
    finally:
        server.close()
    assert gauge(before, "charbot_chat_memory_bytes") == 0
    assert gauge(before, "charbot_chat_memory_age_seconds") is None  # none served
    assert memory is not None and memory.size_bytes > 0
    assert gauge(fresh, "charbot_chat_memory_bytes") == memory.size_bytes
    assert 0 <= gauge(fresh, "charbot_chat_memory_age_seconds") < 60
    assert 3600 <= gauge(old, "charbot_chat_memory_age_seconds") < 3660


def test_the_memory_is_fitted_with_the_base_ngrams_the_generators_serve(tmp_path, monkeypatch):
    """Once the base n-grams are kept in the store, a start reads them once: the chat
    memory's fitting uses that copy too, never counting the corpus again beside it."""
    monkeypatch.setattr(ngram_cache, "count_base_ngrams", lambda order: small_base())  # the count
    settings = Settings(data_dir=tmp_path)
    store_root = settings.data_dir / MODELS_DIR
    ngram_cache.load_base_ngrams.__wrapped__(ORDER, store_root / ngram_cache.FOLDER)  # kept
    mixed = SimpleNamespace(mix=(ORDER, 0.35))  # a model file mixed with the base 4-grams
    served = builds.base_ngrams(SimpleNamespace(root=store_root), mixed, None)
    keeper = ChatMemoryKeeper(settings, db=None)
    assert keeper.builder.base_ngrams(ORDER) is served
