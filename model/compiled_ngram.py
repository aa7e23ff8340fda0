"""A byte n-gram as tables for a compiled loop (model.loop via model.mixture).

Inside the generator's compiled loop the n-gram is a set of gathers over
`NGramTables`: each row carries the id of its context at every level, reads the
successors of those contexts, and moves each level's context to the successor it
wrote, so a step costs no search. A CompiledNGram's tensors are passed into the loop as
arguments; a chat memory's are padded (see CompiledNGram) so that memories counted
again share the loop already compiled.
"""

from __future__ import annotations

import functools
import itertools
import math
import threading
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from model.codec import PAD, VOCAB_SIZE
from model.languages import BaseNGrams
from model.ngram import ALPHABET, ByteNGram, NGramTables


class CompiledNGram:
    """One or more NGramTables of one order as TensorFlow constants, with the step the
    generator's loop takes; each row reads the table its index names (model.languages:
    one per language)."""

    # Its tensors, in the order tensors() gives them and of() takes them.
    FIELDS = (
        "level1",
        "ctx_offset",
        "succ_offset",
        "unseen",
        "slot_level",
        "slot_offset",
        "slot_position",
        "first",
        "n_succ",
        "backoff",
        "has",
        "sym",
        "share",
    )

    def __init__(self, tables: NGramTables | Sequence[NGramTables], *, padded: bool = False):
        """`padded`: the rows and each level's slots, with HEADROOM and no fewer than
        the minimums, rounded up to a power of two and to no less than any padded tables
        of this order built before in this process (rows and slots past the real ones
        are never read): tables counted again from a similar window then have the shapes
        of the compiled loop that already exists, and the shapes only ever grow, so a
        process compiles a few of them at most."""
        tables = [tables] if isinstance(tables, NGramTables) else list(tables)
        self.order = tables[0].order
        if any(t.order != self.order for t in tables):
            raise ValueError("compiled n-gram tables must share one order")
        # Level 1 has one context (the empty one), so its distribution is a constant.
        uniform = np.full(VOCAB_SIZE, 1.0 / (VOCAB_SIZE - 1), dtype=np.float32)
        uniform[PAD] = 0.0
        level1 = []
        for t in tables:
            p = uniform.copy()
            if t.has[0]:
                p = t.backoff[0] * uniform
                p[: t.n_succ[0]] += t.share[: t.n_succ[0]]
            level1.append(p)
        self.level1 = tf.constant(np.stack(level1))  # (tables, VOCAB_SIZE)
        # The tables side by side: table j's contexts and successors move up by those of
        # the tables before it.
        ctx_base = np.cumsum([0, *(t.first.size for t in tables)], dtype=np.int32)[:-1]
        succ_base = np.cumsum([0, *(t.sym.size for t in tables)], dtype=np.int32)[:-1]
        self.ctx_offset = tf.constant(
            np.stack([t.ctx_offset[1:] + c for t, c in zip(tables, ctx_base, strict=True)])
        )  # (tables, levels)
        self.succ_offset = tf.constant(
            np.stack([t.succ_offset[1:] + s for t, s in zip(tables, succ_base, strict=True)])
        )
        self.unseen = tf.constant(
            np.array([t.unseen + c for t, c in zip(tables, ctx_base, strict=True)], np.int32)
        )
        # Each row reads, for levels 2..order, the successors of its context at that level
        # into "slots": as many per level as the level's busiest context has successors
        # in any table (113 at level 2 of the base 12-grams, 26 at level 12), levels side by side.
        widths = [0] * (self.order - 1)
        for t in tables:
            bounds = [*t.ctx_offset[1:], t.unseen]
            for k, (lo, hi) in enumerate(itertools.pairwise(bounds)):
                widths[k] = max(widths[k], int(t.n_succ[lo:hi].max(initial=0)))
        first = np.concatenate([t.first + s for t, s in zip(tables, succ_base, strict=True)])
        n_succ, backoff, has, sym, share = (
            np.concatenate([getattr(t, name) for t in tables])
            for name in ("n_succ", "backoff", "has", "sym", "share")
        )
        if padded:
            rows, successors, widths = _padded_shapes(
                (self.order, len(tables)), first.size, sym.size, widths
            )
            first, n_succ, backoff, has = (_pad(a, rows) for a in (first, n_succ, backoff, has))
            sym, share = (_pad(a, successors) for a in (sym, share))
        self.slot_level = tf.constant(np.repeat(np.arange(len(widths)), widths), tf.int32)
        offsets = np.concatenate([np.arange(w) for w in widths] or [np.zeros(0, np.int32)])
        self.slot_offset = tf.constant(offsets, tf.int32)
        position = np.zeros((offsets.size, len(widths)), dtype=np.float32)  # (slots, levels)
        position[np.arange(offsets.size), np.repeat(np.arange(len(widths)), widths)] = offsets + 1
        self.slot_position = tf.constant(position)
        self.first = tf.constant(first)
        self.n_succ = tf.constant(n_succ)
        self.backoff = tf.constant(backoff)
        self.has = tf.constant(has)
        self.sym = tf.constant(sym)
        self.share = tf.constant(share)

    def tensors(self) -> tuple:
        """Its tensors (FIELDS), to pass into a compiled loop."""
        return tuple(getattr(self, name) for name in self.FIELDS)

    @classmethod
    def of(cls, tensors: Sequence) -> CompiledNGram:
        """The n-gram over `tensors` (tensors() of one, or their symbolic stand-ins inside
        a traced loop)."""
        self = cls.__new__(cls)
        for name, tensor in zip(cls.FIELDS, tensors, strict=True):
            setattr(self, name, tensor)
        self.order = self.ctx_offset.shape[1] + 1  # levels 2..order have offsets
        return self

    def probs(self, contexts, table=None):
        """contexts (B, order) int32, table (B,) int32 (None: table 0) -> (P(next |
        contexts) (B, VOCAB_SIZE), what `advance` needs to move the contexts on, the
        evidence (B,): how many levels above the first have counts for the context, as
        ByteNGram.target_evidence)."""
        batch = contexts.shape[0]
        if table is None:
            table = tf.zeros([batch], tf.int32)
        p = tf.gather(self.level1, table)
        if self.order == 1:
            return p, (contexts, table), tf.zeros([batch], tf.int32)
        ctx = contexts[:, 1:]
        unseen = tf.gather(self.unseen, table)[:, None]
        rows = tf.where(ctx >= 0, ctx + tf.gather(self.ctx_offset, table), unseen)  # (B, levels)
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
        evidence = tf.reduce_sum(tf.cast(has, tf.int32), axis=1)
        return p, (contexts, table, first, valid, sym), evidence

    def advance(self, read, tokens):
        """The contexts (B, order) after each row writes tokens[row]; `read` is what `probs`
        returned with the distribution."""
        if self.order == 1:
            return read[0]
        contexts, table, first, valid, sym = read
        ctx = contexts[:, 1:]
        batch = ctx.shape[0]
        # A context's successors have distinct symbols: at most one slot per level matches.
        match = valid & tf.equal(sym, tokens[:, None])  # (B, slots)
        # 1 + position among the successors per level (0: none), summed per level by a
        # small matmul: XLA's scatters are slow on CPU. Positions (< 2**24) are exact in float.
        at = tf.matmul(tf.cast(match, tf.float32), self.slot_position)  # (B, levels)
        at = tf.cast(tf.round(at), tf.int32)
        found = (at > 0) & (ctx >= 0)
        child = tf.where(found, first + at - 1 - tf.gather(self.succ_offset, table), -1)
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


@functools.lru_cache(maxsize=3)
def compiled(ngrams: ByteNGram | BaseNGrams, *, padded: bool = False) -> CompiledNGram:
    # One copy of the tables (~116 MB for the base 12-grams) per process, not per model
    # version; room for the base n-grams and two chat memories (serving, being swapped in).
    if isinstance(ngrams, BaseNGrams):
        return CompiledNGram([n.tables() for n in ngrams.ngrams], padded=padded)
    return CompiledNGram(ngrams.tables(), padded=padded)


# Padded tables hold this many times the rows and slots they need, and no fewer than
# the minimums: a memory counted again with more text (up to a window of a few MB)
# still fits the loop already compiled. The rows cost ~1.4 MB at the minimum; the slots
# are read at every step.
HEADROOM = 1.5
MIN_ROWS = 1 << 16
MIN_SLOTS = 32
MIN_SLOTS_LEVEL_2 = 128  # the successors of one byte: most of the alphabet, in a busy window
# Per (order, number of tables): the largest padded shapes built in this process (rows,
# successors, slots per level); what CompiledNGram(padded=True) pads up to.
_padded: dict[tuple[int, int], tuple[int, int, tuple[int, ...]]] = {}
_padded_lock = threading.Lock()


def _padded_shapes(
    key: tuple[int, int], rows: int, successors: int, widths: Sequence[int]
) -> tuple[int, int, list[int]]:
    """The shapes to pad tables of `key` to (CompiledNGram), grown to fit these."""
    with _padded_lock:
        old_rows, old_successors, old_widths = _padded.get(key, (0, 0, (0,) * len(widths)))
        grown = (
            max(old_rows, MIN_ROWS, _capacity(rows * HEADROOM)),
            max(old_successors, MIN_ROWS, _capacity(successors * HEADROOM)),
            tuple(
                max(a, least, min(_capacity(w * HEADROOM), max(w, ALPHABET)))
                for a, w, least in zip(old_widths, widths, _min_slots(len(widths)), strict=True)
            ),  # (no context has more than ALPHABET successors)
        )
        _padded[key] = grown
    return grown[0], grown[1], list(grown[2])


def _min_slots(levels: int) -> list[int]:
    """The fewest slots padded tables give each of `levels` levels (2, 3, ...)."""
    return [MIN_SLOTS_LEVEL_2, *[MIN_SLOTS] * (levels - 1)][:levels]


def _capacity(n: float) -> int:
    """`n` rounded up to a power of two (at least 4)."""
    return max(4, 1 << max(0, math.ceil(n) - 1).bit_length())


def _pad(a: np.ndarray, size: int) -> np.ndarray:
    """`a` with zeros (False) after it, up to `size`."""
    return np.concatenate([a, np.zeros(size - a.size, a.dtype)])
