"""The network mixed with the byte n-gram: what the generator samples from.

On the small base corpus a smoothed byte n-gram beats the GRU on text unlike any it
was trained on, while the GRU wins on turns it has seen and on longer context
(benchmarks/README.md). Their mixture beats both:

    P(w | history) = a * P_network(w | history) + (1 - a) * P_ngram(w | last n-1 bytes)

A model file opts in with its mixture entry (modelfile.MIX_KEY: the order n and the
weight a); the n-gram is fitted on the base corpus' training split (deterministic, so it
is the same on every install and needs no file of its own). Models without that entry
(test models, fine-tunes of unmixed models) are the network alone. model.scoring scores
the mixture; this module is the generator's side of it.

Inside the generator's compiled loop the n-gram is a set of gathers over
`NGramTables`: each row carries the id of its context at every level, reads the
successors of those contexts, and moves each level's context to the successor it
wrote, so a step costs no search. The tables reach the loop as arguments, never as
constants inside it, so one compiled loop serves every generator of the same shapes
(model.generator); a chat memory's tables are padded up to capacities (powers of two),
so that memories counted again from a similar window have the same shapes.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from model.codec import PAD, VOCAB_SIZE
from model.languages import BaseNGrams, base_ngrams, served_mix
from model.memory import ChatMemory
from model.modelfile import ModelFile
from model.ngram import ByteNGram, NGramTables
from model.weighting import COMPONENTS


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
        """`padded`: each table and each level's slots rounded up to a power of two (rows
        and slots past the real ones are never read), so tables of similar size have the
        same shapes."""
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
        # in any table (113 at level 2 of the base 9-gram, 27 at level 9), levels side by side.
        widths = [0] * (self.order - 1)
        for t in tables:
            bounds = [*t.ctx_offset[1:], t.unseen]
            for k, (lo, hi) in enumerate(itertools.pairwise(bounds)):
                widths[k] = max(widths[k], int(t.n_succ[lo:hi].max(initial=0)))
        if padded:
            widths = [_capacity(w) for w in widths]
        self.slot_level = tf.constant(np.repeat(np.arange(len(widths)), widths), tf.int32)
        offsets = np.concatenate([np.arange(w) for w in widths] or [np.zeros(0, np.int32)])
        self.slot_offset = tf.constant(offsets, tf.int32)
        position = np.zeros((offsets.size, len(widths)), dtype=np.float32)  # (slots, levels)
        position[np.arange(offsets.size), np.repeat(np.arange(len(widths)), widths)] = offsets + 1
        self.slot_position = tf.constant(position)
        first = np.concatenate([t.first + s for t, s in zip(tables, succ_base, strict=True)])
        n_succ, backoff, has, sym, share = (
            np.concatenate([getattr(t, name) for t in tables])
            for name in ("n_succ", "backoff", "has", "sym", "share")
        )
        if padded:
            first, n_succ, backoff, has = (
                _pad(a, _capacity(first.size)) for a in (first, n_succ, backoff, has)
            )
            sym, share = (_pad(a, _capacity(sym.size)) for a in (sym, share))
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
        # small matmul: XLA's scatters are slow on CPU. Positions < 258 are exact in float.
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


class MixParams(NamedTuple):
    """What the compiled loop mixes the network with, passed in as arguments."""

    base: tuple | None  # CompiledNGram.tensors() of the base n-grams (None: no mixing)
    network_weight: tf.Tensor | None  # () the model file's weight (used without a memory)
    memory: tuple | None  # CompiledNGram.tensors() of the chat memory (None: none)
    table: tf.Tensor | None  # (cells, COMPONENTS) the memory's weights, as at this call


class Mixer:
    """What the generator's loop mixes with the network at each step: the base n-grams
    (one per language, model.languages) at the model file's weight, or, with a chat
    memory, the base n-grams and the memory at weights read from the memory's table by
    both n-grams' evidence (model.weighting). A model served as the network alone, with
    no memory, mixes nothing (`base` is None)."""

    def __init__(
        self,
        model: ModelFile,
        ngram: ByteNGram | BaseNGrams | None = None,
        memory: ChatMemory | None = None,
    ):
        self.base: BaseNGrams | None = None
        self.network_weight = 1.0
        self.context_width = 1
        self._base = self._memory = self._table = self._network_weight = None
        self._memory_ngram: ByteNGram | None = None
        if model.mix is None and memory is None:
            return
        order, self.network_weight = served_mix(model)
        base = base_ngrams(order) if ngram is None else ngram
        self.base = BaseNGrams.single(base) if isinstance(base, ByteNGram) else base
        if self.base.order != order:
            raise ValueError(f"the model mixes order-{order} n-grams, got {self.base.order}")
        self._base = compiled(self.base)
        self._network_weight = tf.constant(self.network_weight, tf.float32)
        self.context_width = order
        if memory is None:
            return
        if memory.weights.shape != (order, memory.ngram.order):
            raise ValueError(
                f"the chat memory's weights are for a {memory.weights.shape} table, "
                f"not ({order}, {memory.ngram.order})"
            )
        self._memory_ngram = memory.ngram
        self._memory = compiled(memory.ngram, padded=True)
        # A variable, not a constant: silence_memory() changes it without a recompile.
        table = memory.weights.table.reshape(-1, COMPONENTS)
        self._table = tf.Variable(table, trainable=False, name="mixture_weights")
        self.context_width = order + memory.ngram.order

    def initial(self, ids: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(contexts (B, context_width), tables (B,)) for prompts `ids` (B, P), left-padded,
        of which the first n are real: each row reads the base n-gram of its prompt's
        language, and the memory from the same prompt."""
        batch = ids.shape[0]
        tables = np.zeros(batch, dtype=np.int32)
        if self.base is None:
            return np.zeros((batch, self.context_width), dtype=np.int32), tables
        tables[:n] = self.base.detect(ids[:n])
        rows = zip(tables, ids, strict=True)
        contexts = [initial_contexts(self.base.ngrams[t], [row], 1) for t, row in rows]
        if self._memory_ngram is not None:
            memory = initial_contexts(self._memory_ngram, ids, batch)
            return np.concatenate([np.concatenate(contexts), memory], axis=1), tables
        return np.concatenate(contexts), tables

    def params(self) -> MixParams:
        """This mixer's tensors for one call of the compiled loop (the memory's weights as
        they are now: silence_memory() takes effect at the next call)."""
        return MixParams(
            base=None if self._base is None else self._base.tensors(),
            network_weight=self._network_weight,
            memory=None if self._memory is None else self._memory.tensors(),
            table=None if self._table is None else tf.convert_to_tensor(self._table),
        )

    @property
    def weights(self) -> np.ndarray | None:
        """The (cells, COMPONENTS) table the memory is mixed in by; None without one."""
        return None if self._table is None else self._table.numpy()

    def silence_memory(self) -> None:
        """Stop the chat memory from having any say, at once (its weight becomes 0, the
        network and the base n-gram keep their shares between them): what was withdrawn
        from it must not wait for a new generator to compile."""
        if self._table is None:
            return
        table = self._table.numpy()
        table[:, 2] = 0.0
        empty = table.sum(axis=1) == 0  # the memory had it all: the model file's mixture
        table[empty] = [self.network_weight, 1.0 - self.network_weight, 0.0]
        self._table.assign(table / table.sum(axis=1, keepdims=True))


def mix(params: MixParams, logits, bans, contexts, tables):
    """(The mixture's logits, what `advance` needs) for the network's `logits` with
    `bans` (-1e9 where a symbol may not be written) added (inside the loop)."""
    if params.base is None:
        return logits, None
    base = CompiledNGram.of(params.base)
    allowed = tf.cast(bans > -1e8, tf.float32)

    def banned_probs(ngram, contexts, table=None):
        p, read, evidence = ngram.probs(contexts, table)
        p *= allowed  # the network's bans
        return p / tf.reduce_sum(p, axis=-1, keepdims=True), read, evidence

    if params.memory is None:
        weight = params.network_weight
        p_ngram, read, _ = banned_probs(base, contexts, tables)
        p = weight * tf.nn.softmax(logits) + (1 - weight) * p_ngram
        return tf.math.log(tf.maximum(p, 1e-30)) + bans, (read,)
    memory = CompiledNGram.of(params.memory)
    p_base, read, e_base = banned_probs(base, contexts[:, : base.order], tables)
    p_mem, read_mem, e_mem = banned_probs(memory, contexts[:, base.order :])
    w = tf.gather(params.table, e_base * memory.order + e_mem)  # (B, COMPONENTS)
    p = w[:, :1] * tf.nn.softmax(logits) + w[:, 1:2] * p_base + w[:, 2:] * p_mem
    return tf.math.log(tf.maximum(p, 1e-30)) + bans, (read, read_mem)


def advance(params: MixParams, read, tokens, contexts):
    """The contexts after each row wrote tokens[row] (inside the loop)."""
    if read is None:
        return contexts
    moved = CompiledNGram.of(params.base).advance(read[0], tokens)
    if len(read) == 1:
        return moved
    return tf.concat([moved, CompiledNGram.of(params.memory).advance(read[1], tokens)], axis=1)


@functools.lru_cache(maxsize=3)
def compiled(ngrams: ByteNGram | BaseNGrams, *, padded: bool = False) -> CompiledNGram:
    # One copy of the tables (~60 MB for the base 9-grams) per process, not per model
    # version; room for the base n-grams and two chat memories (serving, being swapped in).
    if isinstance(ngrams, BaseNGrams):
        return CompiledNGram([n.tables() for n in ngrams.ngrams], padded=padded)
    return CompiledNGram(ngrams.tables(), padded=padded)


def _capacity(n: int) -> int:
    """`n` rounded up to a power of two (at least 4)."""
    return max(4, 1 << max(0, int(n) - 1).bit_length())


def _pad(a: np.ndarray, size: int) -> np.ndarray:
    """`a` with zeros (False) after it, up to `size`."""
    return np.concatenate([a, np.zeros(size - a.size, a.dtype)])
