"""Kneser-Ney estimation: the interpolation levels of a byte n-gram, from its counts.

A level k holds, per k-gram and per (k-1)-symbol context h, what model.ngram's
interpolation formula reads: c_k(h w), c_k(h .) = sum_w c_k(h w), N1+(h .) =
#{w : c_k(h w) > 0}, and the discount D_k. At the top level (k = order) c_k is the raw
count; below it is the continuation count N1+(. h w), the number of distinct symbols
seen just before `h w`, where the start of a sequence counts as one more such symbol
(as <s> does in KenLM), so n-grams at conversation starts still count
(model.ngram_counts counts both). D_k = n1 / (n1 + 2 n2) from the numbers of k-grams
with count one and two (Ney, Essen & Kneser 1994), kept in [MIN_DISCOUNT, 1]: D <= 1
makes each level sum to exactly one, D > 0 keeps every symbol possible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.ngram_counts import RADIX, Counts

MIN_DISCOUNT = 0.1  # floor for D_k (tiny or perfectly regular data gives n1 = 0)


@dataclass(frozen=True)
class Level:
    """One interpolation level k: counts of k-grams, grouped by their (k-1)-symbol context.

    The counts are whole numbers, held as int32 where they fit (half the memory of
    float64); every formula that reads them promotes to float64, so the results are
    exactly those of float64 counts.
    """

    keys: np.ndarray | None  # k-gram codes (None at k = 1, where the id is the symbol)
    # Each array below ends with one extra 0, so that id -1 (never seen) reads as a zero count.
    counts: np.ndarray  # c_k per k-gram id
    totals: np.ndarray  # c_k(h .) per context id
    types: np.ndarray  # N1+(h .) per context id
    discount: float  # D_k


def kneser_ney_levels(counts: Counts, order: int, discount: float | None) -> list[Level]:
    """The levels k = 1..order of an order-`order` model: raw counts on top, continuation
    below; `discount` fixes D_k for every level, None estimates it per level."""
    if order > counts.max_order:
        raise ValueError(f"counts go up to order {counts.max_order}, not {order}")
    levels = []
    for k in range(1, order + 1):
        c = counts.raw[k] if k == order else counts.cont[k]
        if k == 1:
            keys, context, n_contexts = None, np.zeros(c.size, dtype=np.int64), 1
        else:
            keys = counts.keys[k]
            context = keys // RADIX
            n_contexts = RADIX if k == 2 else len(counts.keys[k - 1])
        levels.append(
            Level(
                keys=keys,
                counts=_whole(np.append(c, 0.0)),
                totals=_whole(
                    np.append(np.bincount(context, weights=c, minlength=n_contexts), 0.0)
                ),
                types=_whole(
                    np.append(np.bincount(context, weights=c > 0, minlength=n_contexts), 0.0)
                ),
                discount=_estimate_discount(c) if discount is None else discount,
            )
        )
    return levels


def _whole(counts: np.ndarray) -> np.ndarray:
    """`counts` (whole numbers) as int32 when they fit, else as they are."""
    if counts.size and counts.max() >= 2**31:
        return counts
    return counts.astype(np.int32)


def _estimate_discount(counts: np.ndarray) -> float:
    """D_k = n1 / (n1 + 2 n2) for one level's counts, kept in [MIN_DISCOUNT, 1]."""
    n1 = int(np.count_nonzero(counts == 1))
    n2 = int(np.count_nonzero(counts == 2))
    if n1 == 0:
        return MIN_DISCOUNT
    return min(max(n1 / (n1 + 2 * n2), MIN_DISCOUNT), 1.0)
