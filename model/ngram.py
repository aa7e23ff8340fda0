"""A smoothed byte n-gram model: the baseline `charbot eval` sets the network against.

Interpolated Kneser-Ney (Chen & Goodman 1998, "An empirical study of smoothing
techniques for language modeling", eq. 13/17) over the 257 symbols a model can
write (bytes 0..255 and SEP; PAD is never predicted):

    P_k(w | h) = max(c_k(h w) - D_k, 0) / c_k(h .)
                 + D_k * N1+(h .) / c_k(h .) * P_{k-1}(w | h')    if c_k(h .) > 0
    P_k(w | h) = P_{k-1}(w | h')                                  otherwise (unseen context)
    P_0(w)     = 1 / 257

where h holds the last k-1 symbols, h' drops the oldest of them, c_k(h .) = sum_w c_k(h w)
and N1+(h .) = #{w : c_k(h w) > 0}. Which counts c_k are (raw on top, continuation
below) and how D_k is estimated is model.kneser_ney's job; this module queries the
levels it builds.

Sequences are conversations as codec ids starting with SEP. Contexts never reach into
another sequence; the leading SEP is context only, never a target.

Implementation: every distinct k-gram has a dense id (model.ngram_counts), so scoring is
array operations over the levels rather than Python loops.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Self

import numpy as np

from model.codec import SEP
from model.kneser_ney import Level, kneser_ney_levels
from model.ngram_counts import RADIX, Counts, checked, count, join, lookup

ALPHABET = SEP + 1  # symbols a model can write: bytes 0..255 and SEP


@dataclass(frozen=True)
class NGramTables:
    """A fitted ByteNGram as flat arrays (see ByteNGram.tables).

    Contexts of every level share one numbering: level k's context id h is row
    ctx_offset[k-1] + h; the last row stands for an unseen context. A context's
    successors (the k-grams that extend it, sorted by symbol) are rows
    first .. first + n_succ - 1 of `sym` and `share`; the local id of the k-gram in
    row r (the context id it gives level k+1) is r - succ_offset[k-1].
    P_k(w | h) = sum of share over h's successors with sym w + backoff[h] * P_{k-1}(w | h')
    where has[h]; P_{k-1}(w | h') otherwise.
    """

    order: int
    ctx_offset: np.ndarray  # (order,) int32
    succ_offset: np.ndarray  # (order,) int32
    first: np.ndarray  # (contexts + 1,) int32: row of the first successor
    n_succ: np.ndarray  # (contexts + 1,) int32
    backoff: np.ndarray  # (contexts + 1,) float32: D_k * N1+(h .) / c_k(h .)
    has: np.ndarray  # (contexts + 1,) bool: c_k(h .) > 0
    sym: np.ndarray  # (successors,) int32: the symbol that extends the context
    share: np.ndarray  # (successors,) float32: max(c_k(h w) - D_k, 0) / c_k(h .)

    @property
    def unseen(self) -> int:
        return self.first.size - 1


class ByteNGram:
    """Interpolated Kneser-Ney model of order n: each symbol given the n-1 before it."""

    def __init__(self, order: int, discount: float | None = None) -> None:
        """`discount` fixes D_k for every level; None estimates it per level from the data."""
        if order < 1:
            raise ValueError(f"order must be at least 1, got {order}")
        if discount is not None and not 0.0 < discount <= 1.0:
            raise ValueError(f"discount must be in (0, 1], got {discount}")
        self.order = order
        self.fixed_discount = discount
        self.counts: Counts | None = None
        self._levels = kneser_ney_levels(count([], order), order, discount)  # no data: uniform

    def fit(
        self,
        sequences: Iterable[Sequence[int]],
        owners: Sequence[int | Sequence[int]] | None = None,
        min_owners: int = 1,
        *,
        keep_counts: bool = False,
    ) -> Self:
        """Count the n-grams of `sequences` (replacing any earlier fit); with `owners` (per
        sequence or per position), only those `min_owners` distinct owners wrote
        (model.ngram_counts)."""
        counts = count(sequences, self.order, owners, min_owners)
        return self.with_counts(counts, keep_counts=keep_counts)

    def with_counts(self, counts: Counts, *, keep_counts: bool = False) -> Self:
        """Fit from counts made earlier (model.ngram_counts.count, of at least this order);
        `keep_counts` keeps them as `.counts` (model.memory saves them; others need not
        hold the copy: 67 MB for the base 12-gram)."""
        self._levels = kneser_ney_levels(counts, self.order, self.fixed_discount)
        self.counts = counts if keep_counts else None
        return self

    @classmethod
    def of_levels(cls, levels: Sequence[Level]) -> ByteNGram:
        """A fitted model from the `levels` of another (model.ngram_cache keeps them)."""
        model = cls(len(levels))
        model._levels = list(levels)
        return model

    @property
    def levels(self) -> tuple[Level, ...]:
        """The fitted interpolation levels, k = 1..order."""
        return tuple(self._levels)

    @property
    def discounts(self) -> tuple[float, ...]:
        """D_k for k = 1..order."""
        return tuple(level.discount for level in self._levels)

    def distribution(self, context: Sequence[int]) -> np.ndarray:
        """P(next symbol | context) over the 257 symbols (bytes, then SEP); sums to one.

        Only the last order-1 symbols matter; a shorter context (a sequence start) is
        scored by the levels it has.
        """
        ctx = checked(context)
        ctx = ctx[max(len(ctx) - (self.order - 1), 0) :] if self.order > 1 else []
        p = np.full(ALPHABET, 1.0 / ALPHABET)
        for k, level in enumerate(self._levels, start=1):
            if k - 1 > len(ctx):
                break
            h = self._context_id(ctx[len(ctx) - (k - 1) :])
            if h < 0:
                break  # an unseen context: every longer one is unseen too
            total = level.totals[h]
            if total == 0:
                continue
            if level.keys is None:  # k = 1: one empty context, ids are the symbols
                symbols, counts = np.arange(ALPHABET), level.counts[:ALPHABET]
            else:
                lo, hi = np.searchsorted(level.keys, [h * RADIX, (h + 1) * RADIX])
                symbols, counts = level.keys[lo:hi] - h * RADIX, level.counts[lo:hi]
            d = level.discount
            p_next = (d * level.types[h] / total) * p
            p_next[symbols] += np.maximum(counts - d, 0.0) / total
            p = p_next
        return p

    def prob(self, context: Sequence[int], symbol: int) -> float:
        """P(symbol | context)."""
        if not 0 <= symbol <= SEP:
            raise ValueError(f"symbol must be a byte or SEP ({SEP}), got {symbol}")
        return float(self.distribution(context)[symbol])

    def bits_per_byte(self, sequences: Iterable[Sequence[int]]) -> float:
        """Mean -log2 P(s[i] | up to order-1 symbols before it) over every i >= 1 of every s."""
        return self._bits(*join(sequences)[:2])

    def target_probs(self, sequences: Iterable[Sequence[int]]) -> np.ndarray:
        """P(s[i] | up to order-1 symbols before it) for every i >= 1 of every s, in order."""
        return self._probs(*join(sequences)[:2])[0]

    def target_evidence(self, sequences: Iterable[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """(P, evidence) for every target as in `target_probs`; evidence is how many levels
        above the first had counts for the target's context (0..order-1): how deep the
        model's knowledge of that context goes. The mixture's weights read it (model.weighting).
        """
        return self._probs(*join(sequences)[:2])

    def context_ids(self, context: Sequence[int]) -> list[int]:
        """For levels k = 1..order: the id of the context the level reads after `context`
        (its last k-1 symbols), -1 where that context was never seen or `context` is shorter."""
        ctx = checked(context)
        return [
            self._context_id(ctx[len(ctx) - (k - 1) :]) if k - 1 <= len(ctx) else -1
            for k in range(1, self.order + 1)
        ]

    def tables(self) -> NGramTables:
        """The model as flat arrays, for evaluating it inside a compiled loop (model.mixture)."""
        ctx_offset, succ_offset = [], []
        first, n_succ, backoff, has = [], [], [], []
        sym, share = [], []
        n_ctx_total = n_succ_total = 0
        for level in self._levels:
            counts = level.counts[:-1]
            totals = level.totals[:-1]
            if level.keys is None:  # k = 1: the empty context; its successors are all symbols
                symbols = np.arange(ALPHABET)
                context = np.zeros(ALPHABET, dtype=np.int64)
                counts = counts[:ALPHABET]
            else:
                symbols = level.keys % RADIX
                context = level.keys // RADIX
            n_contexts = totals.size
            ctx_offset.append(n_ctx_total)
            succ_offset.append(n_succ_total)
            per_context = np.bincount(context, minlength=n_contexts)
            first.append(n_succ_total + np.cumsum(per_context) - per_context)
            n_succ.append(per_context)
            safe = np.maximum(totals, 1.0)
            backoff.append(level.discount * level.types[:-1] / safe)
            has.append(totals > 0)
            sym.append(symbols)
            share.append(np.maximum(counts - level.discount, 0.0) / safe[context])
            n_ctx_total += n_contexts
            n_succ_total += symbols.size
        # one last context that stands for "unseen": no successors, never used
        return NGramTables(
            order=self.order,
            ctx_offset=np.array(ctx_offset, dtype=np.int32),
            succ_offset=np.array(succ_offset, dtype=np.int32),
            first=np.concatenate([*first, [0]]).astype(np.int32),
            n_succ=np.concatenate([*n_succ, [0]]).astype(np.int32),
            backoff=np.concatenate([*backoff, [0.0]]).astype(np.float32),
            has=np.concatenate([*has, [False]]),
            sym=np.concatenate(sym).astype(np.int32),
            share=np.concatenate(share).astype(np.float32),
        )

    def _context_id(self, context: Sequence[int]) -> int:
        """Id of `context` as a len(context)-gram (0 for the empty one), -1 if never seen."""
        if not context:
            return 0
        gid = context[0]
        for k, symbol in enumerate(context[1:], start=2):
            keys = self._levels[k - 1].keys
            code = gid * RADIX + symbol
            pos = int(np.searchsorted(keys, code))
            if pos == len(keys) or keys[pos] != code:
                return -1
            gid = pos
        return gid

    def _bits(self, symbols: np.ndarray, depth: np.ndarray) -> float:
        return float(-np.log2(self._probs(symbols, depth)[0]).mean())

    def _probs(self, symbols: np.ndarray, depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        targets = np.flatnonzero(depth >= 1)
        if targets.size == 0:
            raise ValueError("no symbols to score: every sequence is empty or a lone SEP")
        p = np.full(targets.size, 1.0 / ALPHABET)  # (targets,)
        evidence = np.zeros(targets.size, dtype=np.int32)
        ids = symbols  # ids of the k-grams ending at each position, -1 if unseen
        for k, level in enumerate(self._levels, start=1):
            if k == 1:
                h = np.zeros(targets.size, dtype=np.int64)
            else:
                h = ids[targets - 1]  # the (k-1)-gram just before each target
                ids = lookup(ids, symbols, level.keys)
            h = np.where(depth[targets] >= k - 1, h, -1)  # no context reaching past the start
            total = level.totals[h]
            seen = level.counts[ids[targets]]
            d = level.discount
            blended = (np.maximum(seen - d, 0.0) + d * level.types[h] * p) / np.maximum(total, 1)
            p = np.where(total > 0, blended, p)
            if k >= 2:
                evidence += total > 0
        return p, evidence


def best_ngram(
    train_sequences: Iterable[Sequence[int]],
    heldout_sequences: Iterable[Sequence[int]],
    orders: Iterable[int] = range(3, 10),
) -> tuple[int, float, dict[int, float]]:
    """(best order, its held-out bits/byte, bits/byte of every order); counts once for all."""
    orders = sorted(set(orders))
    if not orders or orders[0] < 1:
        raise ValueError(f"orders must be one or more integers >= 1, got {orders}")
    counts = count(train_sequences, orders[-1])
    heldout = join(heldout_sequences)
    scores = {}
    for order in orders:
        scores[order] = ByteNGram(order).with_counts(counts)._bits(*heldout[:2])
    best = min(orders, key=lambda order: (scores[order], order))
    return best, scores[best], scores
