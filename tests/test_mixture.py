"""The network mixed with the base n-gram: the compiled n-gram, the generator, the scores."""

import math

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from toy_model import greedy_reference, untrained_model

from model import MIX_KEY, PAD, SEP, encode_turns
from model.compiled_ngram import CompiledNGram, initial_contexts
from model.corpus import base_split
from model.generator import Generator
from model.languages import base_ngram, base_ngrams, fit_base_ngrams
from model.modelfile import mix_settings
from model.ngram import ByteNGram

A, B, C = ord("a"), ord("b"), ord("c")
symbols = st.sampled_from([A, B, C, 0, 255, SEP])
conversations = st.lists(symbols, max_size=14).map(lambda ids: [SEP, *ids])


@settings(max_examples=25, deadline=None)
@given(
    corpus=st.lists(conversations, min_size=1, max_size=6),
    order=st.integers(1, 5),
    prompt=st.lists(symbols, max_size=8),
    written=st.lists(st.sampled_from([A, B, C, ord("z"), SEP]), min_size=1, max_size=8),
    padded=st.booleans(),
)
def test_compiled_ngram_is_the_ngram_step_by_step(corpus, order, prompt, written, padded):
    model = ByteNGram(order).fit(corpus)
    compiled = CompiledNGram(model.tables(), padded=padded)  # padding is never read
    history = [SEP, *prompt]
    contexts = tf.constant(initial_contexts(model, [history], 1))
    for token in written:
        p, read, _ = compiled.probs(contexts)
        p = p.numpy()[0]
        np.testing.assert_allclose(p[:PAD], model.distribution(history), rtol=1e-5, atol=1e-7)
        assert p[PAD] == 0.0
        contexts = compiled.advance(read, tf.constant([token], tf.int32))
        history.append(token)


@pytest.mark.parametrize("weight", [0.0, 0.4, 1.0])
def test_the_generator_samples_the_mixture(weight):
    corpus = [encode_turns(["hello", "hi there"]), encode_turns(["how are you?", "fine"])] * 3
    ngram = ByteNGram(4).fit(corpus)
    model = untrained_model(units=24)
    model.weights[-2] = model.weights[-2] * 40  # separate the network's argmax (see test_generator)
    model.meta[MIX_KEY] = {"ngram_order": 4, "network_weight": weight}
    gen = Generator(model, batch_buckets=(1, 4), max_reply_bytes=12, ngram=ngram)
    assert gen.network_weight == weight
    prompts = [encode_turns(["hello"]), encode_turns(["how are you?"]), encode_turns(["你好"])]
    got = gen.generate_ids(prompts, [0.0] * 3, max_new=12)
    assert got == [greedy_reference(model, p, 12, ngram, weight) for p in prompts]
    if weight == 0.0:  # the n-gram alone answers what it was taught
        assert bytes(got[0]).startswith(b"hi there")


def test_sampling_at_temperature_one_follows_the_mixture():
    corpus = [encode_turns(["hello", "hi there"]), encode_turns(["hello", "hey you"])] * 2
    ngram = ByteNGram(3).fit(corpus)
    model = untrained_model(units=16)
    logits = np.random.default_rng(3).normal(0.0, 2.0, 258).astype(np.float32)
    model.weights[-2] = np.zeros_like(model.weights[-2])  # the network: one fixed distribution
    model.weights[-1] = logits
    model.meta[MIX_KEY] = {"ngram_order": 3, "network_weight": 0.5}
    gen = Generator(model, batch_buckets=(8,), max_reply_bytes=2, seed=1, ngram=ngram)
    prompt = encode_turns(["hello"])
    draws = [
        row[0] for _ in range(150) for row in gen.generate_ids([prompt] * 8, [1.0] * 8, max_new=1)
    ]
    # The first byte of a reply is never SEP (nor PAD): both parts lose it, renormalised.
    p_net = np.exp(logits[:SEP] - logits[:SEP].max())
    p_ngram = ngram.distribution(prompt)[:SEP]
    p = 0.5 * p_net / p_net.sum() + 0.5 * p_ngram / p_ngram.sum()
    assert p_ngram[ord("h")] > 0.5  # the n-gram's share really is there to be seen
    for symbol in np.argsort(p)[-3:]:
        freq = draws.count(int(symbol)) / len(draws)
        sd = math.sqrt(p[symbol] * (1 - p[symbol]) / len(draws))
        assert abs(freq - p[symbol]) < 5 * sd, (chr(symbol), freq, p[symbol])


def test_a_model_without_the_mix_entry_is_the_network_alone():
    model = untrained_model(units=24)
    gen = Generator(model, batch_buckets=(1,), max_reply_bytes=8)
    assert gen.network_weight == 1.0 and mix_settings(model.meta) is None


def test_a_wrong_order_or_bad_settings_are_refused():
    model = untrained_model(units=16)
    model.meta[MIX_KEY] = {"ngram_order": 5, "network_weight": 0.5}
    with pytest.raises(ValueError, match="order-5"):
        Generator(model, batch_buckets=(1,), ngram=ByteNGram(3), warm_up=False)
    for bad in (
        {"ngram_order": 0, "network_weight": 0.5},
        {"ngram_order": 3, "network_weight": 2},
        {"ngram_order": 3},
        "nine",
    ):
        with pytest.raises(ValueError, match="mixture settings"):
            mix_settings({MIX_KEY: bad})


def test_the_base_ngram_is_fitted_on_the_training_split_only():
    train, heldout = base_split()
    ngram = base_ngram(9)
    assert ngram is base_ngram(9)  # once per process
    assert ngram.bits_per_byte([encode_turns(c) for c in train[:50]]) < 1.0
    assert ngram.bits_per_byte([encode_turns(c) for c in heldout]) > 1.5


def test_each_row_reads_the_table_it_names():
    english = ByteNGram(3).fit([encode_turns(["hello there", "hi, how are you"])])
    spanish = ByteNGram(3).fit([encode_turns(["hola amigo", "que tal estas"])])
    compiled = CompiledNGram([english.tables(), spanish.tables()])
    histories = [[SEP, *b"he"], [SEP, *b"ho"], [SEP, *b"ho"], [SEP]]
    tables = tf.constant([0, 1, 0, 1])
    owners = [english, spanish, english, spanish]
    contexts = tf.constant(
        np.concatenate(
            [initial_contexts(m, [h], 1) for m, h in zip(owners, histories, strict=True)]
        )
    )
    for token in [ord("l"), ord("a"), SEP]:
        p, read, evidence = compiled.probs(contexts, tables)
        for row, (model, history) in enumerate(zip(owners, histories, strict=True)):
            np.testing.assert_allclose(p.numpy()[row, :PAD], model.distribution(history), atol=1e-6)
            seen = model.target_evidence([[*history, 0]])[1][-1]
            assert evidence.numpy()[row] == seen
        contexts = compiled.advance(read, tf.constant([token] * 4, tf.int32))
        for history in histories:
            history.append(token)


def test_a_reply_reads_the_base_ngram_of_its_prompts_language():
    chats = {
        "english": [encode_turns(["hello there", "how are you today"])] * 4,
        "spanish": [encode_turns(["hola amigo", "que tal estas hoy"])] * 4,
    }
    every = ByteNGram(4).fit([c for cs in chats.values() for c in cs])
    ngrams = fit_base_ngrams(every, chats)
    assert ngrams.names == ["all", "english", "spanish"]
    prompts = [encode_turns(["how are you"]), encode_turns(["que tal estas"]), [SEP]]
    assert ngrams.detect(prompts).tolist() == [1, 2, 0]
    model = untrained_model(units=16)
    model.meta[MIX_KEY] = {"ngram_order": 4, "network_weight": 0.0}  # the n-grams alone
    gen = Generator(model, batch_buckets=(4,), max_reply_bytes=20, ngram=ngrams)
    got = gen.generate_ids(prompts[:2], [0.0, 0.0], max_new=20)
    for ids, table, prompt in zip(got, (1, 2), prompts, strict=False):
        reference = ngrams.ngrams[table]
        history = list(prompt)
        for token in ids:  # each byte is the argmax of the prompt language's n-gram
            assert token == int(np.argmax(reference.distribution(history)))
            history.append(token)


def test_the_base_ngrams_tell_a_prompts_language():
    ngrams = base_ngrams(9)
    for text, name in [
        ("¿Qué es la inteligencia artificial?", "spanish"),
        ("How are you doing today?", "english"),
        ("Привет, как у тебя дела?", "russian"),
        ("안녕하세요, 잘 지냈어요?", "korean"),
        ("Wat zijn je hobby's?", "dutch"),
        ("आप कैसे हैं? आपका नाम क्या है?", "all"),  # Hindi: too little corpus to tell
    ]:
        assert ngrams.names[ngrams.detect([encode_turns([text])])[0]] == name, text
    # nothing to tell from, or too little: the n-gram over every language
    told = ngrams.detect([[SEP], [PAD, PAD, SEP], encode_turns(["Hello"]), encode_turns(["Ok"])])
    assert told.tolist() == [0, 0, 0, 0]


def test_padded_tables_are_never_smaller_than_those_padded_before():
    """A memory counted again from less text keeps the shapes of the loop already compiled."""
    big = ByteNGram(6).fit([encode_turns(["a longer conversation", "about many things"])] * 2)
    small = ByteNGram(6).fit([encode_turns(["hi"])])
    before = CompiledNGram(big.tables(), padded=True)
    after = CompiledNGram(small.tables(), padded=True)
    assert [t.shape for t in after.tensors()] == [t.shape for t in before.tensors()]
    history = [SEP, *b"hi"]
    contexts = tf.constant(initial_contexts(small, [history], 1))
    p = after.probs(contexts)[0].numpy()[0]
    np.testing.assert_allclose(p[:PAD], small.distribution(history), rtol=1e-5, atol=1e-7)
