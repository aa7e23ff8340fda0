"""Generation speed: the text-generation tutorial's loop vs charbot's Generator, one run.

(a) the TensorFlow tutorial's way: one `tf.function` call per character, the GRU
    state carried from call to call in Python (tensorflow.org/text/tutorials/text_generation);
(b) charbot's Generator: the whole reply in one XLA-compiled call, for one reply (run,
    as the bot runs it, in the smallest compiled batch: model.generator.BATCH_BUCKETS)
    and for 32 replies at once with 32 different temperatures.

Every reply is exactly REPLY_BYTES long (the separator is suppressed) so both do the
same work. Prints chars/s (bytes/s) and the ratios; the bars are (b, 1 reply) >= 6x (a) and
(b32) >= 30x (a). --memory N serves (b) with a chat memory counted from N messages
(bench_retrain's pirate, 20 users): three components mixed per step.
Usage: python benchmarks/bench_generate.py [--model PATH] [--repeats N] [--memory N]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf
from bench_memory import rows_of

from model import BASE_MODEL_PATH, PAD, ModelFile, encode_turns, load
from model.generator import Generator
from model.memory import Messages
from model.memory_fit import MemoryBuilder

REPLY_BYTES = 200
PROMPT = ["Hello! How are you doing today?"]


class TutorialModel(keras.Model):
    """The tutorial's MyModel: Embedding -> GRU(return_state) -> Dense, one call per step."""

    def __init__(self, model: ModelFile):
        super().__init__()
        c = model.config
        self.embedding = keras.layers.Embedding(c.vocab_size, c.embed_dim)
        self.grus = [
            keras.layers.GRU(c.units, return_sequences=True, return_state=True)
            for _ in range(c.layers)
        ]
        self.dense = keras.layers.Dense(c.vocab_size)
        self(tf.zeros([1, 1], tf.int32), [tf.zeros([1, c.units])] * c.layers)
        self.set_weights(model.weights)

    def call(self, inputs, states, training=False):
        x = self.embedding(inputs, training=training)
        new_states = []
        for gru, state in zip(self.grus, states, strict=True):
            x, state = gru(x, initial_state=state, training=training)
            new_states.append(state)
        return self.dense(x, training=training), new_states


class OneStep:
    """The tutorial's OneStep: a tf.function sampling one character per call."""

    def __init__(self, model: TutorialModel, temperature: float = 1.0):
        self.model = model
        self.temperature = temperature
        mask = np.zeros(model.dense.units, np.float32)
        mask[PAD] = -float("inf")  # the tutorial masks its [UNK] id the same way
        self.prediction_mask = tf.constant(mask)

    @tf.function
    def generate_one_step(self, inputs, states):
        logits, states = self.model(inputs, states)
        logits = logits[:, -1, :] / self.temperature + self.prediction_mask
        ids = tf.random.categorical(logits, num_samples=1)
        return tf.cast(ids, tf.int32), states


def tutorial_reply(step: OneStep, prompt: list[int], units: int, layers: int) -> list[int]:
    states = [tf.zeros([1, units])] * layers
    ids = tf.constant([prompt], tf.int32)
    out = []
    for _ in range(REPLY_BYTES):
        ids, states = step.generate_one_step(ids, states)
        out.append(int(ids[0, 0]))
    return out


def timed(fn, repeats: int) -> float:
    """Median seconds of `repeats` calls, after one untimed call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def chat_memory(model: ModelFile, n: int):
    return MemoryBuilder().build(model, Messages.of(rows_of(n)), version=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(BASE_MODEL_PATH))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--memory", type=int, default=0, help="chat memory of N messages")
    args = parser.parse_args()
    model = load(args.model)
    c = model.config
    prompt = encode_turns(PROMPT)
    print(
        f"model: GRU-{c.units} x{c.layers}, embed {c.embed_dim} ({args.model}); "
        f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
        f"TensorFlow {tf.__version__}"
    )

    step = OneStep(TutorialModel(model), temperature=0.8)
    t_a = timed(lambda: tutorial_reply(step, prompt, c.units, c.layers), args.repeats)

    memory = chat_memory(model, args.memory) if args.memory else None
    start = time.perf_counter()
    gen = Generator(model, seed=0, memory=memory)
    warm = time.perf_counter() - start
    if memory is not None:
        print(f"with a chat memory of {memory.info.messages} messages")
    one = lambda: gen.generate_ids(  # noqa: E731
        [prompt], [0.8], max_new=REPLY_BYTES, min_new=REPLY_BYTES
    )
    temps = list(np.linspace(0.05, 2.0, 32))
    many = lambda: gen.generate_ids(  # noqa: E731
        [prompt] * 32, temps, max_new=REPLY_BYTES, min_new=REPLY_BYTES
    )
    assert all(len(r) == REPLY_BYTES for r in many())
    t_b1 = timed(one, args.repeats)
    t_b32 = timed(many, args.repeats)

    a = REPLY_BYTES / t_a
    b1 = REPLY_BYTES / t_b1
    b32 = 32 * REPLY_BYTES / t_b32
    print(f"generator load + warm-up: {warm:.1f} s ({len(gen.batch_buckets)} batch buckets)")
    print(f"{'method':<44}{'ms/call':>10}{'chars/s':>12}{'vs (a)':>9}")
    rows = [
        ("(a) tutorial: tf.function per char, batch 1", t_a, a),
        (f"(b) Generator, 1 reply (batch {gen.batch_buckets[0]})", t_b1, b1),
        ("(b) Generator, batch 32, 32 temperatures", t_b32, b32),
    ]
    for name, t, rate in rows:
        print(f"{name:<44}{t * 1000:>10.1f}{rate:>12.0f}{rate / a:>8.1f}x")
    print(f"bars: 1 reply >= 6x -> {b1 / a:.1f}x; batch 32 >= 30x -> {b32 / a:.1f}x")


if __name__ == "__main__":
    main()
