"""The generation loop that model.generator compiles: the GRU stack reads the prompt,
then writes the reply byte by byte, sampling each byte from the network mixed with the
n-grams (model.mixture), in one graph.

Everything a generator holds reaches the loop as an argument (Params): the network's
weights and the mixer's tables. So there is one compiled loop per process for each
batch size and set of shapes, shared by every generator: a new model version, or a chat
memory with tables of the same capacities, compiles nothing, and no compiled code is
left behind by a generator that is gone (TensorFlow keeps what XLA compiled for as long
as the process lives, one copy per traced function).
"""

from __future__ import annotations

import threading
from typing import NamedTuple

import tensorflow as tf

from model.codec import PAD, SEP
from model.mixture import MixParams, advance, mix


class Params(NamedTuple):
    """A generator's tensors, the compiled loop's arguments besides the batch's."""

    layers: tuple  # per GRU layer: (kernel, recurrent kernel, input bias, recurrent bias)
    out_kernel: tf.Tensor  # (units, vocab)
    out_bias: tf.Tensor  # (vocab,)
    mix: MixParams


_loops: dict[tuple[bool, int], tf.types.experimental.PolymorphicFunction] = {}
_loops_lock = threading.Lock()


def loop(jit_compile: bool, max_reply_bytes: int):
    """The generation loop, one per process for each setting (module docstring); two
    generators built at once in two threads get the same one."""
    with _loops_lock:
        if (jit_compile, max_reply_bytes) not in _loops:
            _loops[jit_compile, max_reply_bytes] = _new_loop(jit_compile, max_reply_bytes)
        return _loops[jit_compile, max_reply_bytes]


def _new_loop(jit_compile: bool, max_reply_bytes: int):
    def generate(prompt, temperature, limit, seed, min_new, contexts, tables, params):
        return _generate(
            prompt, temperature, limit, seed, min_new, contexts, tables, params, max_reply_bytes
        )

    return tf.function(generate, jit_compile=jit_compile, autograph=False)


def spec(tensor):
    """The TensorSpec of `tensor` (None stays None)."""
    return None if tensor is None else tf.TensorSpec(tensor.shape, tensor.dtype)


def _step(layers, tokens, states):
    """One byte through the GRU stack; Keras' GRU cell with reset_after=True."""
    new_states = []
    x = None
    for i, (kernel, recurrent, b_in, b_rec) in enumerate(layers):
        h = states[i]
        xp = tf.gather(kernel, tokens) if i == 0 else tf.matmul(x, kernel)
        xp = xp + b_in
        hp = tf.matmul(h, recurrent) + b_rec
        x_z, x_r, x_h = tf.split(xp, 3, axis=-1)
        h_z, h_r, h_h = tf.split(hp, 3, axis=-1)
        z = tf.sigmoid(x_z + h_z)
        r = tf.sigmoid(x_r + h_r)
        candidate = tf.tanh(x_h + r * h_h)
        h = z * h + (1.0 - z) * candidate
        new_states.append(h)
        x = h
    return new_states


def _generate(prompt, temperature, limit, seed, min_new, contexts, tables, params, max_reply_bytes):
    # prompt (B, P) left-padded ids; temperature (B,); limit (B,) max new bytes per row;
    # min_new: no SEP before this many bytes (>= 1: a reply is never empty);
    # contexts (B, order): each row's n-gram context ids after its prompt (if mixing);
    # tables (B,): the base n-gram table each row reads (its prompt's language);
    # params: the network's weights and the mixer's tables (Params)
    batch = prompt.shape[0]  # static: one trace per batch bucket
    width = prompt.shape[1]
    layers = params.layers
    units = layers[0][1].shape[0]  # the recurrent kernel is (units, 3 units)
    real = tf.not_equal(prompt, PAD)  # (B, P)
    first = tf.reduce_min(tf.argmax(tf.cast(real, tf.int32), axis=1, output_type=tf.int32))
    states = [tf.zeros([batch, units]) for _ in layers]

    def read(t, *states):
        new = _step(layers, prompt[:, t], list(states))
        keep = real[:, t][:, None]
        return (t + 1, *[tf.where(keep, n, s) for n, s in zip(new, states, strict=True)])

    _, *states = tf.while_loop(lambda t, *s: t < width, read, (first, *states))

    vocab = params.out_kernel.shape[1]
    banned = tf.one_hot(PAD, vocab, on_value=-1e9, off_value=0.0)  # never sample PAD
    no_sep = tf.one_hot(SEP, vocab, on_value=-1e9, off_value=0.0)
    steps = tf.reduce_max(limit)
    greedy = tf.equal(temperature, 0.0)[:, None]  # (B, 1)
    inv_temp = 1.0 / tf.where(greedy, 1.0, temperature[:, None])
    # One uniform per row and step, drawn up front: inverse-CDF sampling needs no more.
    uniform = tf.random.stateless_uniform([max_reply_bytes, batch], seed=seed)

    def write(i, out, done, contexts, *states):
        logits = tf.matmul(states[-1], params.out_kernel) + params.out_bias  # (B, vocab)
        bans = banned + tf.cast(i < min_new, tf.float32) * no_sep
        logits += bans
        logits, read = mix(params.mix, logits, bans, contexts, tables)
        best = tf.argmax(logits, axis=-1, output_type=tf.int32)
        scaled = logits * inv_temp
        probs = tf.exp(scaled - tf.reduce_max(scaled, axis=-1, keepdims=True))
        cdf = tf.cumsum(probs, axis=-1)  # (B, vocab), unnormalised
        target = uniform[i][:, None] * cdf[:, -1:]
        sampled = tf.reduce_sum(tf.cast(cdf < target, tf.int32), axis=-1)
        token = tf.where(greedy[:, 0], best, tf.minimum(sampled, vocab - 1))
        token = tf.where(done, PAD, token)
        out = tf.tensor_scatter_nd_update(out, [[i]], token[None])
        done = done | tf.equal(token, SEP) | (i + 1 >= limit)
        contexts = advance(params.mix, read, token, contexts)
        return (i + 1, out, done, contexts, *_step(layers, token, list(states)))

    out = tf.fill([max_reply_bytes, batch], PAD)
    done = tf.zeros([batch], tf.bool)
    _, out, _, _, *_ = tf.while_loop(
        lambda i, out, done, c, *s: (i < steps) & tf.logical_not(tf.reduce_all(done)),
        write,
        (tf.constant(0), out, done, contexts, *states),
    )
    return tf.transpose(out)  # (B, max_reply) ids, PAD after each row's end
