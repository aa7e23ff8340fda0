"""Mixture weights that depend on the context: how far to trust the network, the base
corpus' n-gram and the chat memory at each step.

One fixed network weight cannot be right both for "continue this Korean sentence"
(the base n-gram knows a few bytes of it, the network knows the language) and for "finish
this phrase the users keep writing" (only the chat memory knows it). Each n-gram says
how much it knows of the context at hand: its *evidence*, the number of levels above
the first whose context it has counts for (0..order-1, ByteNGram.target_evidence; the
generator computes the same inside its loop). The weights are a table indexed by the
two n-grams' evidence:

    P(w | history) = t[eb, em, 0] * P_network + t[eb, em, 1] * P_base + t[eb, em, 2] * P_memory

fitted by EM on held-out text (maximum likelihood of the mixture, which is concave in
the weights of each cell, so EM finds the optimum). Cells with few held-out bytes are
pulled toward the weights fitted over all cells by PRIOR_BYTES pseudo-bytes, so a rare
context never gets a weight from a handful of bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

COMPONENTS = 3  # network, base n-gram, chat memory
PRIOR_BYTES = 50.0  # pseudo-bytes of the pooled weights in every cell
EM_ITERATIONS = 60  # relative change of the likelihood < 1e-5 by then on bench data
MIN_WEIGHT = 1e-4  # no component ever falls silent: the data it was fitted on may change


@dataclass(frozen=True)
class MixWeights:
    """table (base evidence levels, memory evidence levels, COMPONENTS); rows sum to one."""

    table: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.table.shape[0], self.table.shape[1]

    def weights(self, base_evidence: np.ndarray, memory_evidence: np.ndarray) -> np.ndarray:
        """(N, COMPONENTS): the weights at each target."""
        eb = np.minimum(base_evidence, self.table.shape[0] - 1)
        em = np.minimum(memory_evidence, self.table.shape[1] - 1)
        return self.table[eb, em]

    def probs(self, p: np.ndarray, base_evidence: np.ndarray, memory_evidence: np.ndarray):
        """P(target) of the mixture from each component's P(target), p (N, COMPONENTS)."""
        return (self.weights(base_evidence, memory_evidence) * p).sum(axis=1)

    @classmethod
    def checked(cls, table) -> MixWeights:
        """ValueError unless `table` is a (levels, levels, COMPONENTS) table of weights."""
        table = np.asarray(table, dtype=np.float32)
        if table.ndim != 3 or table.shape[2] != COMPONENTS or min(table.shape) < 1:
            raise ValueError(f"mixture weights must be (levels, levels, 3), got {table.shape}")
        if not np.all(np.isfinite(table)) or table.min() < 0:
            raise ValueError("mixture weights must be finite and >= 0")
        if not np.allclose(table.sum(axis=2), 1.0, atol=1e-3):
            raise ValueError("each cell's mixture weights must sum to one")
        return cls(table)


def fixed(network_weight: float, shape: tuple[int, int]) -> MixWeights:
    """The model file's one weight everywhere, the memory silent: served as before."""
    table = np.zeros((*shape, COMPONENTS), dtype=np.float32)
    table[..., 0] = network_weight
    table[..., 1] = 1.0 - network_weight
    return MixWeights(table)


def fit(
    p: np.ndarray,
    base_evidence: np.ndarray,
    memory_evidence: np.ndarray,
    shape: tuple[int, int],
    sample_weight: np.ndarray | None = None,
) -> MixWeights:
    """The table that maximises the held-out likelihood of the mixture (module docstring).

    p (N, COMPONENTS): each component's P(target); the evidence arrays (N,) in
    0..shape[0]-1 and 0..shape[1]-1; `sample_weight` (N,) how much each target counts
    (e.g. so that two held-out sets count equally whatever their sizes).
    """
    p = np.maximum(np.asarray(p, dtype=np.float64), 1e-30)
    n = p.shape[0]
    if n == 0:
        raise ValueError("no held-out targets to fit the mixture weights on")
    sw = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    sw = sw * (n / sw.sum())  # in bytes: PRIOR_BYTES keeps its meaning
    cell = np.minimum(base_evidence, shape[0] - 1) * shape[1] + np.minimum(
        memory_evidence, shape[1] - 1
    )
    cells = shape[0] * shape[1]
    pooled = np.full(COMPONENTS, 1.0 / COMPONENTS)
    for _ in range(EM_ITERATIONS):
        r = pooled * p
        r *= (sw / r.sum(axis=1))[:, None]
        pooled = _floored(r.sum(axis=0) / sw.sum())
    table = np.tile(pooled, (cells, 1))
    mass = np.bincount(cell, weights=sw, minlength=cells)[:, None]
    prior = PRIOR_BYTES * pooled[None, :]
    for _ in range(EM_ITERATIONS):
        r = table[cell] * p
        r *= (sw / r.sum(axis=1))[:, None]
        sums = np.stack(
            [np.bincount(cell, weights=r[:, j], minlength=cells) for j in range(COMPONENTS)], 1
        )
        table = _floored((sums + prior) / (mass + PRIOR_BYTES))
    return MixWeights(table.reshape(*shape, COMPONENTS).astype(np.float32))


def bits(weights: MixWeights, p: np.ndarray, base_evidence, memory_evidence) -> float:
    """Bits per target byte of the mixture."""
    return mean_bits(weights.probs(p, base_evidence, memory_evidence))


def mean_bits(probs: np.ndarray) -> float:
    """Bits per target byte of targets' probabilities (an underflow counts as 1e-30)."""
    return float(-np.log2(np.maximum(probs, 1e-30)).mean())


def stack(parts: Sequence[np.ndarray]) -> np.ndarray:
    """(N, COMPONENTS) from the components' P(target) arrays, in COMPONENTS order."""
    return np.stack([np.asarray(x, dtype=np.float64) for x in parts], axis=1)


def _floored(w: np.ndarray) -> np.ndarray:
    w = np.maximum(w, MIN_WEIGHT)
    return w / w.sum(axis=-1, keepdims=True)
