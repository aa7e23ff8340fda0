"""The batching reply service: right replies to the right askers, failures contained."""

import asyncio
import threading

import pytest
from toy_model import TOY_DIALOGS, toy_model

from bot.datadir import open_store
from bot.live_model import START_BUCKETS, LiveModel
from bot.replies import Busy, GenerationFailed, ReplyService
from bot.settings import Settings
from model.generator import Generator


@pytest.fixture(scope="module")
def toy():
    return Generator(toy_model(), batch_buckets=(1, 2, 4, 8, 16), max_reply_bytes=32)


class Echo:
    """A fake generator: replies name the version and echo the context; records batches."""

    def __init__(self, version="v1", max_batch=8, fail_first=0, gate=None):
        self.version = version
        self.max_batch = max_batch
        self.fail_first = fail_first
        self.gate = gate
        self.batches = []

    def reply(self, contexts, temperatures):
        if self.gate is not None:
            self.gate.wait(10)
        self.batches.append(len(contexts))
        if self.fail_first > 0:
            self.fail_first -= 1
            raise RuntimeError("the model exploded")
        return [f"{self.version}:{c[-1]}@{t}" for c, t in zip(contexts, temperatures, strict=True)]


def test_concurrent_requests_get_their_own_greedy_replies_in_shared_batches(toy):
    async def main():
        service = ReplyService(toy)
        await service.start()
        prompts = list(TOY_DIALOGS) * 10
        replies = await asyncio.gather(*(service.reply([p], 0.0) for p in prompts))
        await service.stop()
        return prompts, replies, service.stats

    prompts, replies, stats = asyncio.run(main())
    assert [r.text for r in replies] == [TOY_DIALOGS[p] for p in prompts]  # no crossed wires
    assert stats.requests == 40 and stats.batches < 40 and stats.largest_batch > 1


def test_each_request_keeps_its_temperature_inside_a_batch(toy):
    async def main():
        service = ReplyService(toy)
        await service.start()
        asks = [("hello", 0.0), ("hello", 2.0)] * 8
        replies = await asyncio.gather(*(service.reply([p], t) for p, t in asks))
        await service.stop()
        return replies

    replies = asyncio.run(main())
    greedy = {r.text for r in replies[0::2]}
    hot = {r.text for r in replies[1::2]}
    assert greedy == {"hi there"}
    assert hot - {"hi there"}  # at temperature 2 the same prompt wanders


def test_a_failed_batch_answers_its_requests_and_does_not_poison_the_next():
    async def main():
        gen = Echo(fail_first=1)
        service = ReplyService(gen, max_wait=0.05)
        await service.start()
        first = await asyncio.gather(
            *(service.reply(["a"], 0.5) for _ in range(3)), return_exceptions=True
        )
        second = await service.reply(["b"], 0.7)
        await service.stop()
        return first, second, service.stats

    first, second, stats = asyncio.run(main())
    assert all(isinstance(r, GenerationFailed) for r in first)
    assert second == "v1:b@0.7"
    assert stats.failed_batches == 1


def test_a_full_queue_answers_busy_at_once():
    async def main():
        gate = threading.Event()
        service = ReplyService(Echo(gate=gate, max_batch=1), max_queue=2)
        await service.start()
        running = asyncio.ensure_future(service.reply(["first"], 0.1))
        await asyncio.sleep(0.05)  # the worker holds "first" inside the (blocked) generator
        queued = [asyncio.ensure_future(service.reply([f"q{i}"], 0.1)) for i in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(Busy):
            await service.reply(["one too many"], 0.1)
        gate.set()
        done = await asyncio.gather(running, *queued)
        await service.stop()
        return done, service.stats

    done, stats = asyncio.run(main())
    assert done == ["v1:first@0.1", "v1:q0@0.1", "v1:q1@0.1"]
    assert stats.busy == 1


def test_stop_answers_every_request_in_flight_then_refuses_new_ones():
    async def main():
        gate = threading.Event()
        service = ReplyService(Echo(gate=gate, max_batch=2))
        await service.start()
        asks = [asyncio.ensure_future(service.reply([f"m{i}"], 1.0)) for i in range(7)]
        await asyncio.sleep(0.02)
        stopping = asyncio.ensure_future(service.stop())
        await asyncio.sleep(0.02)
        with pytest.raises(Busy):
            await service.reply(["late"], 1.0)
        gate.set()
        await stopping
        return [a.result() for a in asks]

    assert asyncio.run(main()) == [f"v1:m{i}@1.0" for i in range(7)]


def test_a_batch_runs_on_one_version_and_the_swap_takes_the_next():
    async def main():
        gate = threading.Event()
        old = Echo("old", gate=gate, max_batch=4)
        new = Echo("new", max_batch=4)
        service = ReplyService(old, max_wait=0.05)
        await service.start()
        in_flight = [asyncio.ensure_future(service.reply([f"a{i}"], 0.0)) for i in range(4)]
        await asyncio.sleep(0.1)  # the batch of four is inside the old generator
        assert service.swap(new) is old
        gate.set()
        after = await service.reply(["b"], 0.0)
        before = await asyncio.gather(*in_flight)
        await service.stop()
        return before, after

    before, after = asyncio.run(main())
    assert before == [f"old:a{i}@0.0" for i in range(4)]
    assert after == "new:b@0.0"


def test_a_started_live_model_warms_the_batch_sizes_its_start_left_cold(tiny_model_path, tmp_path):
    """A start warms the smallest batch only (the bot polls sooner); start() warms the
    rest beside the first replies."""
    settings = Settings(data_dir=tmp_path, model_path=tiny_model_path)
    live = LiveModel.open(open_store(settings))
    buckets = live.generator.batch_buckets
    assert live.generator.tracing_count() == START_BUCKETS < len(buckets)

    async def main():
        await live.start()
        reply = await live.service.reply(["hello"], 0.0)
        await live.stop()  # waits for the warm-up
        return reply

    assert asyncio.run(main())
    assert live.generator.tracing_count() == len(buckets)
