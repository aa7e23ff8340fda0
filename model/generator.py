"""Batched reply generation: a whole batch of replies in one compiled call.

The GRU step is written out in TensorFlow ops over the network's weights, and both
loops (reading the prompt, sampling the reply) run inside one XLA-compiled graph,
so a 200-byte reply costs one call instead of 200. Each row has its own
temperature and stops at its own separator or cap. Batch sizes are bucketed and the
prompt has one fixed width (left-padded; the loop starts at the earliest real
byte), so after warm-up serving never traces or compiles again. The loop itself
(model.loop) takes the network's weights and the mixer's tables as arguments, so every
generator of the same shapes in a process shares its compiled code.

A model file can ask to be mixed with the base corpus' byte n-gram (model.mixture):
then each step samples from weight * network + (1 - weight) * n-gram, the n-gram
read inside the same compiled loop from each row's context ids. With a chat memory
(model.memory) a third component joins, and the three weights at each step are read
from the memory's table by both n-grams' evidence for the row's context
(model.weighting).
"""

from __future__ import annotations

import threading
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from model.codec import FALLBACK_REPLY, MAX_PROMPT_BYTES, PAD, SEP, decode, encode_prompt
from model.languages import BaseNGrams
from model.loop import Params, loop, spec
from model.memory import ChatMemory
from model.mixture import Mixer
from model.modelfile import ModelFile, weight_names
from model.ngram import ByteNGram

# Compiled batch sizes; a request is padded up. None of one row: XLA's CPU code for a
# one-row product with a GRU-512's recurrent kernel is slower than for two, so a lone
# reply is faster in a two-row call, spare row and all (its output stops after one byte;
# benchmarks/README.md, bench_generate).
BATCH_BUCKETS = (2, 4, 8, 16, 32)
MAX_REPLY_BYTES = 300  # cap on one reply: 99% of corpus turns are shorter (259 bytes);
# a batch runs as long as its longest row, so a runaway loop must not run for long


@dataclass(frozen=True)
class Reply:
    text: str  # never empty
    fallback: bool = False  # True when the model gave nothing usable and FALLBACK_REPLY was used
    retries: int = 0  # extra samples drawn because a sample decoded to blank text


class Generator:
    """Replies from one model version. Thread-safe; calls are serialised."""

    def __init__(
        self,
        model: ModelFile,
        *,
        max_prompt_bytes: int = MAX_PROMPT_BYTES,
        max_reply_bytes: int = MAX_REPLY_BYTES,
        batch_buckets: Sequence[int] = BATCH_BUCKETS,
        jit_compile: bool = True,
        warm_up: bool = True,
        seed: int | None = None,
        ngram: ByteNGram | BaseNGrams | None = None,
        memory: ChatMemory | None = None,
    ):
        """`ngram` stands in for the base corpus n-grams of a model that mixes them in
        (model.mixture, model.languages); of the order the model file names. `memory` mixes
        the chat memory in with its weights (a model without a mixture entry then gets
        the base n-gram too: the weights were fitted with it)."""
        self.model = model
        self.config = model.config
        self.max_prompt_bytes = max_prompt_bytes
        self.max_reply_bytes = max_reply_bytes
        self.batch_buckets = tuple(sorted(batch_buckets))
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._load_weights(model)
        self._mixer = Mixer(model, ngram, memory)
        self.network_weight = self._mixer.network_weight
        self._fn = loop(jit_compile, max_reply_bytes)
        self._concrete = {}  # bucket -> its function (traced at the process' first use)
        if warm_up:
            self.warm_up()

    @property
    def max_batch(self) -> int:
        return self.batch_buckets[-1]

    def tracing_count(self) -> int:
        """How many batch buckets are ready (each traced once per process and shapes, at
        the first use by any generator)."""
        return len(self._concrete)

    def warm_up(self, buckets: Sequence[int] | None = None) -> None:
        """Run each of `buckets` (default: all) once, so that it is traced and XLA compiles
        it before the first real request."""
        for b in self.batch_buckets if buckets is None else buckets:
            self.generate_ids([[SEP]] * b, [1.0] * b, max_new=2)

    def _traced(self, b: int):
        """The function for batch bucket `b`, traced at its first use (call holding the lock)."""
        if b not in self._concrete:
            self._concrete[b] = self._fn.get_concrete_function(
                tf.TensorSpec([b, self.max_prompt_bytes], tf.int32),
                tf.TensorSpec([b], tf.float32),
                tf.TensorSpec([b], tf.int32),
                tf.TensorSpec([2], tf.int32),
                tf.TensorSpec([], tf.int32),
                tf.TensorSpec([b, self._mixer.context_width], tf.int32),
                tf.TensorSpec([b], tf.int32),
                tf.nest.map_structure(spec, self._params()),
            )
        return self._concrete[b]

    def _params(self) -> Params:
        return Params(tuple(self._layers), self._out_kernel, self._out_bias, self._mixer.params())

    # -- public API ---------------------------------------------------------------

    def reply(
        self,
        contexts: Sequence[Sequence[str]],
        temperatures: Sequence[float],
        *,
        max_bytes: int | None = None,
        seed: int | None = None,
    ) -> list[Reply]:
        """One reply per context (the chat's last turns, oldest first), row by row temperature."""
        if len(contexts) != len(temperatures):
            raise ValueError("one temperature per context")
        prompts = [encode_prompt(turns, self.max_prompt_bytes) for turns in contexts]
        cap = self.max_reply_bytes if max_bytes is None else min(max_bytes, self.max_reply_bytes)
        temps = [checked_temperature(t) for t in temperatures]
        rows = self.generate_ids(prompts, temps, max_new=cap, seed=seed)
        texts = [printable(decode(r)) for r in rows]
        replies = [Reply(t) if t else None for t in texts]
        # Blank samples (only spaces, a broken multi-byte tail...): draw again, a bit hotter.
        for attempt in (1, 2):
            blank = [i for i, r in enumerate(replies) if r is None]
            if not blank:
                break
            hotter = [max(temps[i], 0.5) * (1 + 0.5 * attempt) for i in blank]
            again = self.generate_ids([prompts[i] for i in blank], hotter, max_new=cap)
            for i, ids in zip(blank, again, strict=True):
                text = printable(decode(ids))
                if text:
                    replies[i] = Reply(text, retries=attempt)
        return [r or Reply(FALLBACK_REPLY, fallback=True, retries=2) for r in replies]

    def generate_ids(
        self,
        prompts: Sequence[Sequence[int]],
        temperatures: Sequence[float],
        *,
        max_new: int | Sequence[int] | None = None,
        min_new: int = 1,
        seed: int | None = None,
    ) -> list[list[int]]:
        """Sampled continuations (ids, without the closing SEP) of codec-encoded prompts."""
        n = len(prompts)
        caps = [self.max_reply_bytes if max_new is None else max_new] * n
        if max_new is not None and not isinstance(max_new, int):
            caps = list(max_new)
        out: list[list[int]] = []
        for start in range(0, n, self.max_batch):
            chunk = slice(start, start + self.max_batch)
            out += self._run(prompts[chunk], temperatures[chunk], caps[chunk], min_new, seed)
        return out

    # -- internals ----------------------------------------------------------------

    def _run(self, prompts, temperatures, caps, min_new, seed) -> list[list[int]]:
        n = len(prompts)
        b = next(size for size in self.batch_buckets if size >= n)
        width = self.max_prompt_bytes
        ids = np.full((b, width), PAD, dtype=np.int32)
        for row, prompt in enumerate(prompts):
            prompt = list(prompt)[-width:] or [SEP]
            ids[row, width - len(prompt) :] = prompt
        ids[n:, -1] = SEP  # padding rows: a one-byte prompt, capped at one step
        temps = np.zeros(b, dtype=np.float32)
        temps[:n] = temperatures
        limit = np.ones(b, dtype=np.int32)
        limit[:n] = np.clip(caps, 1, self.max_reply_bytes)
        contexts, tables = self._mixer.initial(ids, n)
        if seed is None:
            seed_pair = self._rng.integers(0, 2**31 - 1, size=2, dtype=np.int32)
        else:
            seed_pair = np.array([seed, 0], dtype=np.int32)
        with self._lock:
            tokens = self._traced(b)(
                tf.constant(ids),
                tf.constant(temps),
                tf.constant(limit),
                tf.constant(seed_pair),
                tf.constant(max(1, min_new), tf.int32),
                tf.constant(contexts),
                tf.constant(tables),
                self._params(),
            ).numpy()
        rows = []
        for row in tokens[:n]:
            stop = np.flatnonzero((row == SEP) | (row == PAD))
            rows.append(row[: stop[0] if len(stop) else len(row)].tolist())
        return rows

    def _load_weights(self, model: ModelFile) -> None:
        w = dict(zip(weight_names(model.config), model.weights, strict=True))
        c = self.config
        emb = w["embedding/embeddings"]
        self._layers = []
        for i in range(c.layers):
            kernel, recurrent, bias = (
                w[f"gru_{i}/{k}"] for k in ("kernel", "recurrent_kernel", "bias")
            )
            if i == 0:
                # Fold the embedding into the first input projection: one gather per byte.
                kernel = emb @ kernel  # (vocab, 3u)
            self._layers.append(
                (
                    tf.constant(kernel, tf.float32),
                    tf.constant(recurrent, tf.float32),
                    tf.constant(bias[0], tf.float32),
                    tf.constant(bias[1], tf.float32),
                )
            )
        self._out_kernel = tf.constant(w["logits/kernel"], tf.float32)  # (u, vocab)
        self._out_bias = tf.constant(w["logits/bias"], tf.float32)

    @property
    def mixture_weights(self) -> np.ndarray | None:
        """The weight table the chat memory is mixed in by (None: no memory)."""
        return self._mixer.weights

    def silence_memory(self) -> None:
        """Stop the chat memory from having any say, at once (model.mixture.Mixer)."""
        self._mixer.silence_memory()


def printable(text: str) -> str:
    """`text` without control characters (newlines and tabs stay), stripped."""
    return "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch) != "Cc").strip()


def checked_temperature(t: float) -> float:
    """`t` if it is a temperature (finite, >= 0); the caller chooses the upper bound."""
    if not np.isfinite(t) or t < 0:
        raise ValueError(f"temperature must be a finite number >= 0, got {t}")
    return float(t)
