"""The generator: matches the network, greedy is deterministic, rows are independent."""

import math
from collections import Counter

import numpy as np
import pytest
from toy_model import TOY_DIALOGS, greedy_reference, toy_model, untrained_model

from model import FALLBACK_REPLY, SEP, ModelFile, encode_turns
from model.generator import Generator
from model.loop import loop


@pytest.fixture(scope="module")
def toy():
    return Generator(toy_model(), batch_buckets=(1, 2, 4, 8), max_reply_bytes=48)


@pytest.mark.parametrize("layers", [1, 2])
def test_compiled_loop_matches_the_keras_network(layers):
    model = untrained_model(units=24, layers=layers)
    # Untrained logits are nearly flat; scale the output layer so argmax is well separated.
    model.weights[-2] = model.weights[-2] * 40
    gen = Generator(model, batch_buckets=(1, 4), max_reply_bytes=12)
    prompts = [encode_turns(["hello"]), encode_turns(["你好", "a much longer second turn"])]
    got = gen.generate_ids(prompts, [0.0, 0.0], max_new=12)
    for prompt, row in zip(prompts, got, strict=True):
        assert row == greedy_reference(model, prompt, 12)


def test_toy_model_answers_its_dialogs_greedily(toy):
    prompts = [[q] for q in TOY_DIALOGS]
    replies = toy.reply(prompts, [0.0] * len(prompts))
    assert [r.text for r in replies] == list(TOY_DIALOGS.values())
    assert not any(r.fallback for r in replies)


def test_greedy_is_the_same_alone_and_in_any_batch(toy):
    prompt = ["how are you?"]
    alone = toy.reply([prompt], [0.0])[0].text
    for size in (2, 3, 8, 11):  # 11 spans two calls (max batch 8)
        others = [["hello"], ["bye"], ["你好"]] * 4
        contexts = [*others[: size - 1], prompt]
        temps = [1.5] * (size - 1) + [0.0]
        assert toy.reply(contexts, temps)[-1].text == alone
    assert {r.text for r in toy.reply([prompt] * 5, [0.0] * 5)} == {alone}


def _fixed_distribution_model(seed: int) -> tuple[ModelFile, np.ndarray]:
    """A model whose next-byte logits are the same known vector whatever it has read."""
    model = untrained_model(units=16)
    logits = np.random.default_rng(seed).normal(0.0, 2.0, 258).astype(np.float32)
    model.weights[-2] = np.zeros_like(model.weights[-2])
    model.weights[-1] = logits
    return model, logits


def _first_bytes(gen: Generator, temperatures: list[float], calls: int) -> list[list[int]]:
    prompt = encode_turns(["hello"])
    rows = [[] for _ in temperatures]
    for _ in range(calls):
        for i, row in enumerate(gen.generate_ids([prompt] * 8, temperatures, max_new=1)):
            rows[i].append(row[0])
    return rows


def _entropy(samples: list[int]) -> float:
    counts = Counter(samples)
    n = len(samples)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def test_temperature_changes_the_sampled_distribution():
    model, logits = _fixed_distribution_model(seed=3)
    gen = Generator(model, batch_buckets=(8,), max_reply_bytes=4, seed=1)
    temps = [0.0, 0.3, 1.0, 2.0]
    rows = _first_bytes(gen, [t for t in temps for _ in range(2)], calls=150)  # 300 draws each
    samples = {t: rows[2 * i] + rows[2 * i + 1] for i, t in enumerate(temps)}
    entropy = {t: _entropy(s) for t, s in samples.items()}
    assert entropy[0.0] == 0.0 and set(samples[0.0]) == {int(np.argmax(logits[:256]))}
    assert entropy[0.3] + 0.5 < entropy[1.0] < entropy[2.0] - 0.5
    # At T = 1 the sampled frequencies follow softmax(logits) (PAD excluded).
    p = np.exp(logits[:257] - logits[:257].max())
    p /= p.sum()
    top = int(np.argmax(p))
    freq = samples[1.0].count(top) / len(samples[1.0])
    sd = math.sqrt(p[top] * (1 - p[top]) / len(samples[1.0]))
    assert abs(freq - p[top]) < 5 * sd


def test_each_row_has_its_own_temperature_in_one_call():
    model, _ = _fixed_distribution_model(seed=4)
    gen = Generator(model, batch_buckets=(8,), max_reply_bytes=4, seed=2)
    rows = _first_bytes(gen, [0.0] * 4 + [2.0] * 4, calls=20)
    assert all(len(set(r)) == 1 for r in rows[:4])  # greedy rows never vary
    assert len({b for r in rows[4:] for b in r}) > 10  # hot rows in the same call do


def test_rows_stop_at_their_own_separator_or_cap(toy):
    prompts = [encode_turns(["hello"]), encode_turns(["how are you?"]), encode_turns(["bye"])]
    rows = toy.generate_ids(prompts, [0.0] * 3, max_new=[48, 48, 3])
    assert bytes(rows[0]) == b"hi there"  # stopped at its separator
    assert bytes(rows[1]) == b"fine, thanks"
    assert bytes(rows[2]) == b"see"  # cut at its own cap
    assert all(SEP not in r for r in rows)
    forced = toy.generate_ids(prompts[:1], [0.0], max_new=20, min_new=20)[0]
    assert len(forced) == 20 and forced[:8] == list(b"hi there")


def test_no_retrace_after_warm_up_across_lengths_and_batch_sizes(toy):
    assert toy.tracing_count() == len(toy.batch_buckets)
    traces = loop(True, toy.max_reply_bytes).experimental_get_tracing_count()
    assert traces >= len(toy.batch_buckets)  # the loop the generator runs
    rng = np.random.default_rng(0)
    for n in (1, 3, 8, 2, 13, 5):
        contexts = [["x" * int(rng.integers(0, 900))] for _ in range(n)]
        toy.reply(contexts, list(rng.uniform(0, 2, n)))
    assert loop(True, toy.max_reply_bytes).experimental_get_tracing_count() == traces


def test_a_cold_generator_traces_each_bucket_at_its_first_use():
    gen = Generator(toy_model(), batch_buckets=(1, 2, 4), max_reply_bytes=8, warm_up=False)
    assert gen.tracing_count() == 0
    gen.warm_up([1])
    assert gen.tracing_count() == 1
    gen.generate_ids([[SEP]] * 3, [0.0] * 3, max_new=2)  # padded up to bucket 4
    assert gen.tracing_count() == 2
    gen.warm_up()
    assert gen.tracing_count() == 3


def test_a_blank_sample_is_retried_then_falls_back_and_the_caller_can_tell():
    model = untrained_model(units=16)
    bias = np.zeros(258, np.float32)
    bias[ord(" ")] = 60.0  # first byte: a space...
    bias[SEP] = 80.0  # ...then the end of the turn: "" after stripping
    model.weights[-1] = bias
    gen = Generator(model, batch_buckets=(2,), max_reply_bytes=8)
    reply = gen.reply([["hello"]], [1.0])[0]
    assert reply.fallback and reply.text == FALLBACK_REPLY and reply.retries == 2


def test_control_characters_never_reach_a_reply():
    model = untrained_model(units=16)
    bias = np.zeros(258, np.float32)
    bias[8] = 60.0  # backspace, then the letter 'a', then the end
    model.weights[-1] = bias
    gen = Generator(model, batch_buckets=(1,), max_reply_bytes=3)
    reply = gen.reply([["hello"]], [0.0])[0]
    assert reply.fallback and "\x08" not in reply.text


def test_bad_temperatures_are_refused(toy):
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            toy.reply([["hello"]], [bad])
