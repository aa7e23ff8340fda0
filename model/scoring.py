"""Bits per byte of a model as it is served: the one score that `charbot eval`,
pretraining, the per-epoch check of a fine-tune and the retraining gate all read.

A model is served as a mixture (model.mixture):

    P(w | history) = a * P_network(w | history) + (1 - a) * P_ngram(w | last n-1 bytes)

and a model without a mixture entry is that mixture at a = 1. The network reads each
conversation from its start, in consecutive pieces of at most MAX_PROMPT_BYTES (what
the generator reads), with PAD never a candidate, exactly as the generator samples.
Only target bytes count (codec.encode_transcript's mask: human turns).

    scores = target_scores(net, encoded, ngram_order)   # P(target) of both parts, per byte
    scores.bits(weight)                                 # bits/byte at network weight `weight`
    served_bits(net, encoded, model.mix)                # at the model file's own weight

Scoring once and reading many weights is what lets pretraining and the gate try a grid of
weights for the price of one pass over the data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from model.codec import MAX_PROMPT_BYTES, PAD, VOCAB_SIZE, Encoded
from model.languages import BaseNGrams, base_ngrams
from model.ngram import ByteNGram

WEIGHT_GRID = tuple(round(0.05 * i, 2) for i in range(21))  # network weights tried
# Bits/byte a held-out slice of the base corpus may lose to learning the users' talk
# (a retrain's candidate, the chat memory): other chats' languages must not break.
BASE_MARGIN = 0.05
SCORE_BATCH = 32  # pieces per forward pass


@dataclass(frozen=True)
class TargetScores:
    """P(target) for every target byte of some conversations, in order, from each part."""

    network: np.ndarray
    ngram: np.ndarray | None = None  # None: no n-gram was scored (weight 1 only)
    evidence: np.ndarray | None = None  # the n-gram's, per target (model.weighting)

    def probs(self, weight: float = 1.0) -> np.ndarray:
        if weight == 1.0:
            return self.network
        if self.ngram is None:
            raise ValueError("these scores have no n-gram part to mix in")
        return mixture_probs(self.network, self.ngram, weight)

    def bits(self, weight: float = 1.0) -> float:
        """Bits per target byte of the mixture at network weight `weight` (1: network alone);
        infinite when a target's probability underflowed to 0 (a diverged network)."""
        with np.errstate(divide="ignore"):
            return float(-np.log2(self.probs(weight)).mean())

    def bits_by_weight(self, weights: Sequence[float]) -> dict[float, float]:
        return {w: self.bits(w) for w in weights}

    def subset(self, keep: np.ndarray) -> TargetScores:
        def part(a):
            return None if a is None else a[keep]

        return TargetScores(self.network[keep], part(self.ngram), part(self.evidence))


def target_scores(
    net,
    encoded: Sequence[Encoded],
    ngram_order: int | None = None,
    ngrams: Callable[[int], BaseNGrams] = base_ngrams,
) -> TargetScores:
    """Score `net` (and the base n-gram of `ngram_order`, if given) on `encoded`;
    `ngrams`: the base n-grams of an order (default: counted once per process; the bot
    and its runs read the store's kept copy, model.ngram_cache)."""
    network = network_probs(net, encoded)
    if ngram_order is None:
        return TargetScores(network)
    ngram, evidence = ngrams(ngram_order).served(encoded)
    if ngram.shape != network.shape:
        raise AssertionError("network and n-gram scored different targets")
    return TargetScores(network, ngram, evidence)


def served_bits(net, encoded: Sequence[Encoded], mix: tuple[int, float] | None) -> float:
    """Bits per target byte of `net` as served with `mix` ((order, weight), or None)."""
    if mix is None:
        return target_scores(net, encoded).bits()
    order, weight = mix
    return target_scores(net, encoded, order).bits(weight)


def mixture_probs(network: np.ndarray, ngram: np.ndarray, weight: float) -> np.ndarray:
    return weight * network + (1.0 - weight) * ngram


def choose_weight(
    bits: dict[float, float], base: dict[float, float] | None = None, base_limit: float = np.inf
) -> float:
    """The network weight with the lowest `bits` (ties: the higher weight), among those
    whose `base` loss is within `base_limit` when given; among all if none is."""
    admissible = [w for w in bits if base is None or base[w] <= base_limit] or list(bits)
    return min(admissible, key=lambda w: (bits[w], -w))


# -- the network's part ---------------------------------------------------------------


def network_probs(
    net, encoded: Sequence[Encoded], *, max_len: int = MAX_PROMPT_BYTES
) -> np.ndarray:
    """P(target) under the network for every target byte, conversation by conversation.

    PAD is never a candidate, so its share is spread over the other symbols.
    """
    rows = read_pieces(encoded, max_len)
    pieces: list[np.ndarray] = [np.zeros(0)] * len(rows)
    for j, log_probs, targets in network_log_probs(net, rows):
        pieces[j] = log_probs[np.arange(len(targets)), targets]
    return np.exp(np.concatenate(pieces).astype(np.float64))


def network_log_probs(net, rows: list[tuple[np.ndarray, np.ndarray]]):
    """(row index, log P of every symbol at its targets (targets, VOCAB_SIZE), the
    targets) for each of `rows` (read_pieces), in no particular order; PAD is never a
    candidate, as network_probs reads them."""
    spec = tf.TensorSpec([None, None], tf.int32)
    no_pad = tf.one_hot(PAD, VOCAB_SIZE, on_value=-1e9, off_value=0.0)
    # One traced graph for every batch shape: several times faster than eager calls on CPU.
    # Log space: a confident miss is tiny, never zero.
    forward = tf.function(
        lambda x: tf.nn.log_softmax(net(x, training=False) + no_pad), input_signature=[spec]
    )
    for chunk, x, y in padded_batches(rows, SCORE_BATCH):
        log_probs = forward(tf.constant(x)).numpy()
        for k, j in enumerate(chunk):
            where = np.flatnonzero(y[k] != PAD)
            yield j, log_probs[k, where], y[k, where]


def read_pieces(encoded: Sequence[Encoded], max_len: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(x, y) per piece: each conversation read from its start in consecutive pieces of
    max_len bytes, y the next byte where it is a target and PAD elsewhere. Pieces without
    a target are left out; conversations stay in order, and so do their pieces."""
    rows = []
    for ids, mask in encoded:
        targets = np.where(mask, ids, PAD)
        for start in range(0, len(ids) - 1, max_len):
            y = targets[start + 1 : start + max_len + 1]
            x = ids[start : start + max_len][: len(y)]
            if (y != PAD).any():
                rows.append((x, y))
    if not rows:
        raise ValueError("no target bytes to evaluate")
    return rows


def padded_batches(rows: list[tuple[np.ndarray, np.ndarray]], batch_size: int):
    """(row indices, x, y) batches of `rows`, shortest first, padded with PAD."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
    for i in range(0, len(order), batch_size):
        chunk = order[i : i + batch_size]
        width = max(len(rows[j][0]) for j in chunk)
        x = np.full((len(chunk), width), PAD, np.int32)
        y = np.full((len(chunk), width), PAD, np.int32)
        for k, j in enumerate(chunk):
            xr, yr = rows[j]
            x[k, : len(xr)] = xr
            y[k, : len(yr)] = yr
        yield chunk, x, y


# -- the n-gram's part ----------------------------------------------------------------


def ngram_scores(ngram: ByteNGram, encoded: Sequence[Encoded]) -> tuple[np.ndarray, np.ndarray]:
    """(P(target), evidence) under `ngram` for each target byte (mask[1:]) of each
    conversation, in order (ByteNGram.target_evidence)."""
    p, evidence = ngram.target_evidence([ids for ids, _ in encoded])
    keep = np.concatenate([np.asarray(mask[1:], dtype=bool) for _, mask in encoded])
    return p[keep], evidence[keep]


# -- choosing the weight --------------------------------------------------------------


@dataclass(frozen=True)
class MixFit:
    """How a network and the base n-gram mix on held-out conversations."""

    ngram_order: int
    network_weight: float  # the weight with the lowest held-out bits/byte
    mixture_bits: float
    network_bits: float  # the network alone, read as the generator reads it
    ngram_bits: float
    crossfit_bits: float  # each half of the conversations scored with the other half's weight
    scores: TargetScores

    def at(self, weight: float) -> float:
        """Held-out bits/byte of the mixture at network weight `weight`."""
        return self.scores.bits(weight)

    def meta(self) -> dict:
        return {"ngram_order": self.ngram_order, "network_weight": self.network_weight}


def best_weight(scores: TargetScores, grid: Sequence[float] = WEIGHT_GRID) -> tuple[float, float]:
    """(network weight, bits/byte) that minimise the mixture's bits/byte over `grid`."""
    bits = scores.bits_by_weight(grid)
    weight = choose_weight(bits)
    return weight, bits[weight]


def conversation_halves(encoded: Sequence[Encoded]) -> np.ndarray:
    """0 or 1 for each target byte: its conversation's position, even or odd (the halves
    cross-fitting fits on one of and scores the other)."""
    return np.concatenate(
        [np.full(int(np.count_nonzero(mask[1:])), n % 2) for n, (_, mask) in enumerate(encoded)]
        or [np.zeros(0, dtype=np.int64)]
    )


def fit_mix(net, encoded: Sequence[Encoded], order: int) -> MixFit:
    """Score `net`, the base n-gram of `order` and their mixture on held-out conversations."""
    scores = target_scores(net, encoded, order)
    weight, bits = best_weight(scores)
    # Cross-fit: even-numbered conversations pick the weight for odd ones and back.
    half = conversation_halves(encoded)
    crossed = np.empty_like(scores.network)
    for part in (0, 1):
        mine, other = half == part, half != part
        w, _ = best_weight(scores.subset(other))
        crossed[mine] = scores.subset(mine).probs(w)
    return MixFit(
        ngram_order=order,
        network_weight=weight,
        mixture_bits=bits,
        network_bits=scores.bits(1.0),
        ngram_bits=scores.bits(0.0),
        crossfit_bits=float(-np.log2(crossed).mean()),
        scores=scores,
    )
