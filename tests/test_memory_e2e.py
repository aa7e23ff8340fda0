"""The chat memory through Telegram: people write in a style in a group, the memory is
counted again while the bot runs, and a new user's replies move toward that style;
/forget takes a user's words out at the next count."""

from __future__ import annotations

import asyncio
import random

import pytest
from test_bot_e2e import GROUP, data_dir, env, running_bot, say, sql, stub, until

import bot.chat_memory
from bot import handlers
from bot.settings import load_settings
from model import load
from model.generator import Generator

__all__ = ["data_dir", "env", "stub"]  # fixtures used here, defined there

pytestmark = pytest.mark.e2e

PIRATE = ["arr", "matey", "ahoy", "yo ho", "avast", "grog", "the plank", "me hearty"]
SHARED = "zebra crossing blue"
NEWCOMER = 4040
PROMPTS = ["ahoy matey!", "arr, the grog!", "yo ho, me hearty!", "avast, the plank!"]


@pytest.fixture
def settings(env):
    fast = {"CHARBOT_MEMORY_REFRESH_MESSAGES": "60", "CHARBOT_MEMORY_REFRESH_INTERVAL": "1"}
    return load_settings({**env, **fast}, env_file=None)


@pytest.fixture(scope="module")
def small_generator(tiny_model_path):
    return Generator(load(tiny_model_path), batch_buckets=(1, 4), max_reply_bytes=40)


def knows(memory, phrase: str = SHARED) -> bool:
    """Whether `memory` (None: none served) holds the end of `phrase` as a context."""
    return memory is not None and memory.ngram.context_ids(list(phrase.encode()[-8:]))[-1] >= 0


def piratey(text: str) -> bool:
    return any(word in text for word in PIRATE)


async def replies_to_newcomer(stub, rounds: int = 4) -> list[str]:
    out = []
    for _ in range(rounds):
        for prompt in PROMPTS:
            out.append(await say(stub, prompt, user=NEWCOMER))
    return out


def test_replies_move_toward_the_groups_style_and_forget_takes_words_out(
    stub, settings, data_dir, small_generator, monkeypatch
):
    monkeypatch.setattr(bot.chat_memory, "CHECK_SECONDS", 0.2)
    monkeypatch.setattr(bot.chat_memory, "MIN_SPACING", 0.5)
    rng = random.Random(3)
    group = {"chat_id": GROUP, "chat_type": "group", "chat_title": "Pirates"}

    async def body(app):
        services = app.bot_data[handlers.SERVICES]
        await say(stub, "/temp 1", user=NEWCOMER)
        before = await replies_to_newcomer(stub)
        assert services.live.memory is None  # nothing to count from yet
        for i in range(120):
            line = " ".join(rng.choice(PIRATE) for _ in range(3)) + "!"
            stub.push_message(line, user_id=7000 + i % 20, **group)
        for user in (7001, 7002, 7003):
            stub.push_message(SHARED, user_id=user, **group)
        stored = "SELECT count(*) FROM messages WHERE chat_id = ?"
        await until(lambda: sql(data_dir, stored, GROUP) == [(123,)], what="123 messages")
        await until(lambda: knows(services.live.memory), timeout=60, what="a memory with them")
        after = await replies_to_newcomer(stub)

        await say(stub, "/forget", user=7002)
        assert services.live.memory is None  # silenced at once

        def counted_again_without():
            memory = services.live.memory
            return memory is not None and not knows(memory)

        await until(counted_again_without, timeout=60, what="a count without the forgotten")
        status = await say(stub, "/status", user=1001)
        return before, after, status

    async def main():
        async with running_bot(settings, small_generator) as app:
            return await body(app)

    before, after, status = asyncio.run(main())
    share_before = sum(map(piratey, before)) / len(before)
    share_after = sum(map(piratey, after)) / len(after)
    assert share_after >= share_before + 0.25, (share_before, share_after, after)
    assert sql(data_dir, "SELECT count(*) FROM messages WHERE user_id = 7002") == [(0,)]
    assert "Chat memory: " in status and "messages from" in status
