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

Inside the generator's compiled loop each n-gram is a CompiledNGram
(model.compiled_ngram), whose tables reach the loop as arguments (MixParams), never as
constants inside it: one compiled loop serves every generator of the same shapes
(model.loop).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import tensorflow as tf

from model.compiled_ngram import CompiledNGram, compiled, initial_contexts
from model.languages import BaseNGrams, base_ngrams, served_mix
from model.memory import ChatMemory
from model.modelfile import ModelFile
from model.ngram import ByteNGram
from model.weighting import COMPONENTS


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
        # A variable: silence_memory() changes it in place, and each call reads it.
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
