"""The network mixed with the byte n-gram: what the generator samples from.

On the small base corpus a smoothed byte n-gram beats the GRU on text unlike any it
was trained on, while the GRU wins on turns it has seen and on longer context
(benchmarks/README.md, issue 6). Their mixture beats both:

    P(w | history) = a * P_network(w | history) + (1 - a) * P_ngram(w | last n-1 bytes)

A model file opts in with `meta["mix"] = {"ngram_order": n, "network_weight": a}`;
the n-gram is fitted on the base corpus' training split (deterministic, so it is the
same on every install and needs no file of its own). Models without that entry (test
models, fine-tunes of unmixed models) are the network alone.

Inside the generator's compiled loop the n-gram is a set of gathers over
`NGramTables`: each row carries the id of its context at every level, reads the
successors of those contexts, and moves each level's context to the successor it
wrote, so a step costs no search.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from model.codec import PAD, VOCAB_SIZE, encode_turns
from model.ngram import ByteNGram, NGramTables

Encoded = tuple[np.ndarray, np.ndarray]  # (ids, target mask), as codec.encode_transcript gives

MIX_KEY = "mix"  # the model-file meta entry that turns the mixture on
MIX_ORDER = 9  # the best order of the base n-gram alone on the held-out split (3..9 tried)
WEIGHT_GRID = tuple(round(0.05 * i, 2) for i in range(21))  # network weights tried


def mix_settings(meta: dict) -> tuple[int, float] | None:
    """(n-gram order, network weight) from a model file's meta, None if it does not mix."""
    mix = meta.get(MIX_KEY)
    if not mix:
        return None
    try:
        order, weight = int(mix["ngram_order"]), float(mix["network_weight"])
    except (KeyError, TypeError, ValueError):
        order, weight = 0, -1.0
    if not 1 <= order <= 12 or not 0.0 <= weight <= 1.0:
        raise ValueError(
            f"bad mixture settings in the model file: {mix!r} (needs ngram_order 1..12 "
            "and network_weight 0..1)"
        )
    return order, weight


@functools.cache
def base_ngram(order: int) -> ByteNGram:
    """The n-gram of the base corpus' training split (once per process: ~4 s for order 9,
    reading the corpus included)."""
    from model.corpus import base_split

    train, _ = base_split()
    return ByteNGram(order).fit(encode_turns(c) for c in train)


def mixture_probs(network_probs: np.ndarray, ngram_probs: np.ndarray, weight: float):
    return weight * network_probs + (1.0 - weight) * ngram_probs


def best_weight(
    network_probs: np.ndarray, ngram_probs: np.ndarray, grid: Sequence[float] = WEIGHT_GRID
) -> tuple[float, float]:
    """(network weight, bits/byte) that minimise the mixture's bits/byte over `grid`."""
    scores = {w: mixture_bits(network_probs, ngram_probs, w) for w in grid}
    weight = choose_weight(scores)
    return weight, scores[weight]


def choose_weight(
    bits: dict[float, float], base: dict[float, float] | None = None, base_limit: float = np.inf
) -> float:
    """The network weight with the lowest `bits` (ties: the higher weight), among those
    whose `base` loss is within `base_limit` when given; among all if none is."""
    admissible = [w for w in bits if base is None or base[w] <= base_limit] or list(bits)
    return min(admissible, key=lambda w: (bits[w], -w))


def mixture_bits(network_probs: np.ndarray, ngram_probs: np.ndarray, weight: float) -> float:
    return float(-np.log2(mixture_probs(network_probs, ngram_probs, weight)).mean())


class CompiledNGram:
    """NGramTables as TensorFlow constants, with the step the generator's loop takes."""

    def __init__(self, tables: NGramTables):
        self.order = tables.order
        self.unseen = tables.unseen
        # Level 1 has one context (the empty one), so its distribution is a constant.
        uniform = np.full(VOCAB_SIZE, 1.0 / (VOCAB_SIZE - 1), dtype=np.float32)
        uniform[PAD] = 0.0
        level1 = uniform.copy()
        if tables.has[0]:
            level1 = tables.backoff[0] * uniform
            level1[: tables.n_succ[0]] += tables.share[: tables.n_succ[0]]
        self.level1 = tf.constant(level1[None, :])
        # Each row reads, for levels 2..order, the successors of its context at that level
        # into "slots": as many per level as the level's busiest context has successors
        # (113 at level 2 of the base 9-gram, 27 at level 9), all levels side by side.
        bounds = [*tables.ctx_offset[1:], tables.unseen]
        widths = [int(tables.n_succ[a:b].max(initial=0)) for a, b in itertools.pairwise(bounds)]
        self.slot_level = tf.constant(np.repeat(np.arange(len(widths)), widths), tf.int32)
        offsets = np.concatenate([np.arange(w) for w in widths] or [np.zeros(0, np.int32)])
        self.slot_offset = tf.constant(offsets, tf.int32)
        position = np.zeros((offsets.size, len(widths)), dtype=np.float32)  # (slots, levels)
        position[np.arange(offsets.size), np.repeat(np.arange(len(widths)), widths)] = offsets + 1
        self.slot_position = tf.constant(position)
        self.ctx_offset = tf.constant(tables.ctx_offset[1:])
        self.succ_offset = tf.constant(tables.succ_offset[1:])
        self.first = tf.constant(tables.first)
        self.n_succ = tf.constant(tables.n_succ)
        self.backoff = tf.constant(tables.backoff)
        self.has = tf.constant(tables.has)
        self.sym = tf.constant(tables.sym)
        self.share = tf.constant(tables.share)

    def probs(self, contexts):
        """contexts (B, order) int32 -> (P(next | contexts) (B, VOCAB_SIZE), what `advance`
        needs to move the contexts on)."""
        batch = contexts.shape[0]
        p = tf.tile(self.level1, [batch, 1])
        if self.order == 1:
            return p, (contexts,)
        ctx = contexts[:, 1:]
        rows = tf.where(ctx >= 0, ctx + self.ctx_offset, self.unseen)  # (B, levels)
        first = tf.gather(self.first, rows)
        n_succ = tf.gather(self.n_succ, rows)
        valid = self.slot_offset < tf.gather(n_succ, self.slot_level, axis=1)  # (B, slots)
        succ = tf.where(valid, tf.gather(first, self.slot_level, axis=1) + self.slot_offset, 0)
        sym = tf.gather(self.sym, succ)
        share = tf.where(valid, tf.gather(self.share, succ), 0.0)
        # Unrolled recursion: a level without counts passes the one below through
        # (factor 1, no shares), so P = sum_k scale_k * shares_k + scale_1 * P_1 where
        # scale_k is the product of the factors of the levels above k. One scatter of
        # every slot's scaled share then gives P.
        has = tf.gather(self.has, rows)
        factor = tf.where(has, tf.gather(self.backoff, rows), 1.0)  # (B, levels)
        above = tf.math.cumprod(factor, axis=1, exclusive=True, reverse=True)
        scale = tf.gather(tf.where(has, above, 0.0), self.slot_level, axis=1)  # (B, slots)
        segment = tf.range(batch)[:, None] * VOCAB_SIZE + sym
        p_top = tf.math.unsorted_segment_sum(
            tf.reshape(share * scale, [-1]), tf.reshape(segment, [-1]), batch * VOCAB_SIZE
        )
        lowest = tf.reduce_prod(factor, axis=1, keepdims=True)  # scale of level 1
        p = tf.reshape(p_top, [batch, VOCAB_SIZE]) + lowest * p
        return p, (contexts, first, valid, sym)

    def advance(self, read, tokens):
        """The contexts (B, order) after each row writes tokens[row]; `read` is what `probs`
        returned with the distribution."""
        if self.order == 1:
            return read[0]
        contexts, first, valid, sym = read
        ctx = contexts[:, 1:]
        batch = ctx.shape[0]
        # A context's successors have distinct symbols: at most one slot per level matches.
        match = valid & tf.equal(sym, tokens[:, None])  # (B, slots)
        # 1 + position among the successors per level (0: none), summed per level by a
        # small matmul: XLA's scatters are slow on CPU. Positions < 258 are exact in float.
        at = tf.matmul(tf.cast(match, tf.float32), self.slot_position)  # (B, levels)
        at = tf.cast(tf.round(at), tf.int32)
        found = (at > 0) & (ctx >= 0)
        child = tf.where(found, first + at - 1 - self.succ_offset, -1)
        empty = tf.zeros([batch, 1], tf.int32)  # level 1 reads the empty context
        symbol = tf.where(tokens < PAD, tokens, -1)[:, None]  # level 2: the last symbol
        return tf.concat([empty, symbol, child[:, :-1]], axis=1)[:, : self.order]


def initial_contexts(ngram: ByteNGram, prompts: Sequence[Sequence[int]], batch: int) -> np.ndarray:
    """(batch, order) context ids after each prompt; padding rows read as fresh sequences."""
    out = np.full((batch, ngram.order), -1, dtype=np.int32)
    out[:, 0] = 0
    for row, prompt in enumerate(prompts):
        tail = (
            [i for i in list(prompt)[-(ngram.order - 1) :] if i != PAD] if ngram.order > 1 else []
        )
        out[row] = ngram.context_ids(tail)
    return out


@dataclass(frozen=True)
class MixFit:
    """How a network and the base n-gram mix on held-out conversations."""

    ngram_order: int
    network_weight: float  # the weight with the lowest held-out bits/byte
    mixture_bits: float
    network_bits: float  # the network alone, read as the generator reads it
    ngram_bits: float
    crossfit_bits: (
        float  # each half of the conversations scored with the weight the other half chose
    )

    network_probs: np.ndarray = field(repr=False, default=None)
    ngram_probs: np.ndarray = field(repr=False, default=None)

    def at(self, weight: float) -> float:
        """Held-out bits/byte of the mixture at network weight `weight`."""
        return mixture_bits(self.network_probs, self.ngram_probs, weight)

    def meta(self) -> dict:
        return {"ngram_order": self.ngram_order, "network_weight": self.network_weight}


def fit_mix(net, encoded: Sequence[Encoded], order: int = MIX_ORDER) -> MixFit:
    """Score `net`, the base n-gram of `order` and their mixture on held-out conversations
    (codec.encode_transcript pairs: every target byte counts, as in training.bits_per_byte)."""
    from model.generator import MAX_PROMPT_BYTES
    from model.training import target_probs

    net_p = target_probs(net, encoded, max_len=MAX_PROMPT_BYTES)
    ngram_p = masked_probs(base_ngram(order), encoded)
    if net_p.shape != ngram_p.shape:
        raise AssertionError("network and n-gram scored different targets")
    weight, bits = best_weight(net_p, ngram_p)
    # Cross-fit: even-numbered conversations pick the weight for odd ones and back.
    half = np.concatenate(
        [np.full(int(mask[1:].sum()), n % 2) for n, (_, mask) in enumerate(encoded)]
    )
    crossed = np.empty_like(net_p)
    for part in (0, 1):
        mine, other = half == part, half != part
        w, _ = best_weight(net_p[other], ngram_p[other])
        crossed[mine] = mixture_probs(net_p[mine], ngram_p[mine], w)
    return MixFit(
        ngram_order=order,
        network_weight=weight,
        mixture_bits=bits,
        network_bits=float(-np.log2(net_p).mean()),
        ngram_bits=float(-np.log2(ngram_p).mean()),
        crossfit_bits=float(-np.log2(crossed).mean()),
        network_probs=net_p,
        ngram_probs=ngram_p,
    )


def masked_probs(ngram: ByteNGram, encoded: Sequence[Encoded]) -> np.ndarray:
    """P(target) under `ngram` for each target byte (mask[1:]) of each conversation, in order."""
    every = ngram.target_probs([ids for ids, _ in encoded])
    out, at = [], 0
    for ids, mask in encoded:
        out.append(every[at : at + len(ids) - 1][np.asarray(mask[1:], dtype=bool)])
        at += len(ids) - 1
    return np.concatenate(out) if out else np.zeros(0)
