"""The chat memory's model side: counting only what several users wrote, the memory file,
the context-dependent weights, and the generator serving all three components."""

import keras
import numpy as np
import pytest
from toy_model import greedy_by, untrained_model

from model import SEP, encode_turns
from model.generator import Generator
from model.languages import MIX_ORDER
from model.loop import loop
from model.memory import ChatMemory, MemoryFileError, MemoryInfo, Messages, count_memory
from model.memory_fit import MemoryBuilder, split
from model.ngram import ByteNGram
from model.ngram_counts import count
from model.weighting import COMPONENTS, MixWeights, bits, fit, fixed, stack

CANARY = "call me on +1 555 0199 2834"
SEED = 5


def pieces(text: str, n: int = 10) -> set[bytes]:
    raw = text.encode()
    return {raw[i : i + n] for i in range(len(raw) - n + 1)}


def chat_rows(n_users: int, text: str, chat: int = 1) -> list[tuple[int, int, str]]:
    return [(chat, user, text) for user in range(n_users)]


# -- counting what several users wrote ---------------------------------------------


def test_an_ngram_one_user_wrote_fifty_times_is_not_counted():
    shared = "ahoy matey"
    rows = [(7, 7, CANARY)] * 50 + chat_rows(3, shared) + chat_rows(2, "only two say so")
    memory = count_memory(Messages.of(rows), order=6, min_users=3)
    for phrase in (CANARY, "only two say so", shared):
        raw = phrase.encode()
        for n in range(2, 6):  # every piece of 2..5 bytes, as a context the memory reads
            for i in range(len(raw) - n + 1):
                piece = raw[i : i + n]
                known = memory.context_ids(list(piece))[n] >= 0
                users = {user for _, user, text in rows if piece in text.encode()}
                assert known is (len(users) >= 3), (phrase, piece)


def test_with_one_owner_in_need_the_counts_are_the_plain_counts():
    sequences = [encode_turns([t]) for t in ("abcabc", "abd", "zz top", "abc")]
    plain = count(sequences, 5)
    owned = count(sequences, 5, owners=[1, 2, 1, 3], min_owners=1)
    for k in range(2, 6):
        np.testing.assert_array_equal(plain.keys[k], owned.keys[k])
        np.testing.assert_array_equal(plain.raw[k], owned.raw[k])


def test_a_pruned_model_still_sums_to_one_everywhere():
    rows = [*chat_rows(3, "hello there"), (1, 9, "hello world"), *chat_rows(4, "help me")]
    memory = count_memory(Messages.of(rows), order=5, min_users=3)
    for context in ([SEP], [SEP, *b"hel"], [SEP, *b"hello wo"], [SEP, *b"xyz"]):
        assert memory.distribution(context).sum() == pytest.approx(1.0)


def test_messages_are_counted_once_per_user_and_blank_ones_dropped():
    rows = [(1, 1, "same"), (1, 1, "same"), (2, 1, "same"), (1, 2, "same"), (1, 3, "  ")]
    messages = Messages.of(rows)
    assert messages.texts == ["same", "same"]
    assert messages.users == [1, 2]


def test_the_message_before_is_the_one_before_in_the_same_chat():
    messages = Messages.of([(1, 1, "a"), (2, 2, "b"), (1, 3, "c"), (2, 4, "d")])
    assert [messages.previous(i) for i in range(4)] == [None, None, "a", "b"]


def test_the_held_out_share_is_seeded_and_bounded():
    held, rest = split(1000)
    assert len(held) == 100 and sorted(held + rest) == list(range(1000))
    assert split(1000) == (held, rest)
    assert len(split(40)[0]) == 10  # a small window holds out a quarter
    assert len(split(100_000)[0]) == 500


# -- the memory file ------------------------------------------------------------------


def small_memory(order: int = 4) -> ChatMemory:
    rows = chat_rows(3, "arr matey") + chat_rows(3, "yo ho ho")
    ngram = count_memory(Messages.of(rows), order=order, min_users=3)
    info = MemoryInfo(6, 3, 51, 42, "2026-12-02T10:00:00+00:00", 3, 1.0, 2.0)
    return ChatMemory(ngram, fixed(0.5, (MIX_ORDER, order)), info)


def test_a_saved_memory_loads_back_the_same(tmp_path):
    memory = small_memory()
    memory.save(tmp_path / "memory.npz")
    loaded = ChatMemory.load(tmp_path / "memory.npz")
    assert loaded.info == memory.info
    np.testing.assert_array_equal(loaded.weights.table, memory.weights.table)
    for context in ([SEP], [SEP, *b"arr m"], [SEP, *b"yo h"]):
        np.testing.assert_array_equal(
            loaded.ngram.distribution(context), memory.ngram.distribution(context)
        )


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "weights"])
def test_a_damaged_memory_file_is_one_clear_error(tmp_path, damage):
    path = tmp_path / "memory.npz"
    memory = small_memory()
    memory.save(path)
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00" * 300)
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        bad = ChatMemory(memory.ngram, MixWeights(np.ones((9, 4, 3), np.float32)), memory.info)
        bad.save(path)
    with pytest.raises(MemoryFileError, match="chat memory file"):
        ChatMemory.load(path)


# -- the weights ----------------------------------------------------------------------


def test_fitted_weights_trust_each_part_where_it_knows():
    rng = np.random.default_rng(0)
    n = 4000
    e_base = rng.integers(0, 3, n)
    e_mem = rng.integers(0, 3, n)
    p = rng.uniform(0.01, 0.05, (n, COMPONENTS))
    p[e_mem == 2, 2] = 0.9  # deep in the memory: it knows the byte
    p[(e_mem < 2) & (e_base == 2), 1] = 0.8  # the base knows it where the memory does not
    weights = fit(p, e_base, e_mem, (3, 3))
    assert np.allclose(weights.table.sum(axis=2), 1.0, atol=1e-5)
    assert weights.table[:, 2, 2].min() > 0.9
    assert weights.table[2, :2, 1].min() > 0.9
    assert bits(weights, p, e_base, e_mem) < bits(fixed(0.5, (3, 3)), p, e_base, e_mem)


def test_a_cell_with_few_bytes_keeps_the_pooled_weights():
    p = np.tile([0.5, 0.1, 0.1], (1000, 1))
    e_base, e_mem = np.zeros(1000, int), np.zeros(1000, int)
    e_mem[:2] = 1  # two bytes where the memory is perfect
    p[:2] = [0.01, 0.01, 1.0]
    weights = fit(p, e_base, e_mem, (1, 2))
    assert weights.table[0, 1, 0] > 0.5  # not thrown to the memory by two bytes


def test_fixed_weights_are_the_model_files_mixture():
    p = stack([np.full(5, 0.2), np.full(5, 0.6), np.full(5, 0.9)])
    zeros = np.zeros(5, int)
    assert bits(fixed(0.25, (2, 2)), p, zeros, zeros) == pytest.approx(-np.log2(0.5))


# -- serving -----------------------------------------------------------------------


def reference_reply(model, base: ByteNGram, memory: ChatMemory, prompt, n: int) -> list[int]:
    """The three-part mixture's greedy reply, by hand: Keras network, each n-gram's
    distribution and evidence."""

    def mixed(ids, p_net, first):
        p_base = np.append(base.distribution(ids), 0.0)
        p_mem = np.append(memory.ngram.distribution(ids), 0.0)
        if first:
            p_net[SEP] = p_base[SEP] = p_mem[SEP] = 0.0
        e_base = base.target_evidence([[*ids, 0]])[1][-1]
        e_mem = memory.ngram.target_evidence([[*ids, 0]])[1][-1]
        w = memory.weights.table[e_base, e_mem]
        return (
            w[0] * p_net / p_net.sum() + w[1] * p_base / p_base.sum() + w[2] * p_mem / p_mem.sum()
        )

    return greedy_by(model, prompt, n, mixed)


def test_the_generator_serves_the_three_part_mixture():
    base = ByteNGram(3).fit([encode_turns(["hello", "hi there"]), encode_turns(["bye"])] * 2)
    memory = small_memory(order=4)
    rng = np.random.default_rng(3)
    table = rng.dirichlet([1.0, 1.0, 1.0], size=(3, 4)).astype(np.float32)
    memory = ChatMemory(memory.ngram, MixWeights.checked(table), memory.info)
    model = untrained_model(units=24)
    model.weights[-2] = model.weights[-2] * 40
    model.meta["mix"] = {"ngram_order": 3, "network_weight": 0.5}
    gen = Generator(model, batch_buckets=(1, 4), max_reply_bytes=12, ngram=base, memory=memory)
    prompts = [encode_turns(["hello"]), encode_turns(["arr"]), encode_turns(["你好"])]
    got = gen.generate_ids(prompts, [0.0] * 3, max_new=12)
    assert got == [reference_reply(model, base, memory, p, 12) for p in prompts]


def test_a_memory_counted_again_reuses_the_compiled_loop():
    """Memories of similar size (padded to the same capacities) and new weights of the
    same network shape trace nothing new: a refresh compiles nothing, and leaves no
    compiled code behind (TensorFlow keeps every compile for the life of the process)."""
    base = ByteNGram(3).fit([encode_turns(["hello", "hi there"]), encode_turns(["bye"])] * 2)
    model = untrained_model(units=24)
    model.meta["mix"] = {"ngram_order": 3, "network_weight": 0.5}
    first = ChatMemory(small_memory().ngram, fixed(0.3, (3, 4)), small_memory().info)
    Generator(model, batch_buckets=(1, 2), max_reply_bytes=12, ngram=base, memory=first)
    rows = chat_rows(3, "arr matey!") + chat_rows(3, "yo ho hoo")
    again = count_memory(Messages.of(rows), order=4, min_users=3)
    memory = ChatMemory(again, fixed(0.6, (3, 4)), small_memory().info)
    newer = untrained_model(units=24)  # a new version: other weights, the same shapes
    newer.meta["mix"] = model.meta["mix"]
    newer.weights[-2] = newer.weights[-2] * 40
    traces = loop(True, 12).experimental_get_tracing_count()
    assert traces >= 2  # the first generator's two batch sizes, traced in this loop
    gen = Generator(newer, batch_buckets=(1, 2), max_reply_bytes=12, ngram=base, memory=memory)
    assert loop(True, 12).experimental_get_tracing_count() == traces
    prompts = [encode_turns(["arr"]), encode_turns(["hello"])]
    got = gen.generate_ids(prompts, [0.0] * 2, max_new=12)
    assert got == [reference_reply(newer, base, memory, p, 12) for p in prompts]


def test_a_memory_that_owns_every_step_answers_in_the_users_words():
    table = np.zeros((MIX_ORDER, 4, 3), np.float32)
    table[..., 2] = 1.0
    ngram = count_memory(Messages.of(chat_rows(3, "arr matey")), order=4, min_users=3)
    memory = ChatMemory(ngram, MixWeights(table), small_memory().info)
    gen = Generator(untrained_model(units=16), batch_buckets=(1,), memory=memory)
    assert gen.reply([["anything at all"]], [0.0])[0].text == "arr matey"
    traces = loop(True, gen.max_reply_bytes).experimental_get_tracing_count()
    gen.silence_memory()  # a text was withdrawn: at once, no recompile
    assert "arr matey" not in gen.reply([["anything at all"]], [0.0])[0].text
    assert loop(True, gen.max_reply_bytes).experimental_get_tracing_count() == traces


def test_memory_weights_for_another_table_shape_are_refused():
    memory = small_memory(order=4)
    bad = ChatMemory(memory.ngram, fixed(0.5, (5, 4)), memory.info)
    with pytest.raises(ValueError, match="weights"):
        Generator(untrained_model(units=16), batch_buckets=(1,), memory=bad, warm_up=False)


# -- building --------------------------------------------------------------------------


def test_too_little_text_builds_no_memory():
    builder = MemoryBuilder(base_conversations=10)
    model = untrained_model(units=16)
    assert builder.build(model, Messages.of(chat_rows(3, "hi"))) is None
    assert builder.build(model, Messages.of([])) is None


def style_share(gen, prompts, words, temperatures=(0.0, 1.0)) -> tuple[float, list[str]]:
    replies = [
        r.text for t in temperatures for r in gen.reply([[p] for p in prompts], [t] * len(prompts))
    ]
    return sum(any(w in r for w in words) for r in replies) / len(replies), replies


def test_a_built_memory_learns_a_style_and_holds_no_private_phrase():
    rng = np.random.default_rng(1)
    words = ["arr", "matey", "yo ho", "me parrot", "the rum", "ahoy"]
    rows = [(u % 7, u % 12, " ".join(rng.choice(words, 3)) + "!") for u in range(600)]
    rows += [(99, 99, CANARY)] * 50
    builder = MemoryBuilder(base_conversations=20)
    keras.utils.set_random_seed(SEED)
    model = untrained_model(units=16)
    memory = builder.build(model, Messages.of(rows, newest_message_id=650), version=4)
    assert memory is not None
    info = memory.info
    assert (info.users, info.newest_message_id, info.model_version) == (13, 650, 4)
    assert info.heldout_bits < info.heldout_bits_without / 2  # it learnt the style
    prompts = ["hello", "how are you?", "ahoy matey!", "the rum arr!"] * 8
    before, _ = style_share(Generator(model, batch_buckets=(32,), seed=0), prompts, words)
    gen = Generator(model, batch_buckets=(32,), memory=memory, seed=0)
    after, replies = style_share(gen, prompts, words)
    assert after > before + 0.25, (before, after)
    assert not any(pieces(CANARY) & pieces(r) for r in replies)
