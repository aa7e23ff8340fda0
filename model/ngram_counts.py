"""Counting byte n-grams: the statistics model.kneser_ney builds the n-gram's levels from.

Sequences are joined into one array, each preceded by a START marker, and every
distinct k-gram gets a dense id (its index in the sorted array of codes
`id(first k-1 symbols) * RADIX + last symbol`), level by level with numpy.

Counts can be restricted to what several people wrote: given the author of each
position, a k-gram (k >= 2) is kept only if at least `min_owners` distinct authors
wrote its last symbol (so a k-gram that reaches into an earlier turn belongs to the
author of the turn it ends in: the generator only ever writes an n-gram's last symbol).
A longer n-gram never has more authors than the shorter one it ends with, so dropping
is consistent across levels; single bytes are always kept (one byte is no one's words).
The chat memory (model.memory) counts this way so that it never holds a phrase only one
person wrote.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from model.codec import SEP

START = SEP + 1  # marks a sequence start in joined text: the "symbol before" a first n-gram
RADIX = START + 1  # k-gram code = id of its first k-1 symbols * RADIX + its last symbol
NOT_TEXT = f"ids must be bytes 0..255 or SEP ({SEP}); PAD and others are not text"


@dataclass(frozen=True)
class Counts:
    """N-gram statistics of one training set, for every order up to `max_order`."""

    max_order: int
    keys: list[np.ndarray]  # keys[k]: sorted codes of the distinct k-grams (k >= 2); id = index
    raw: list[np.ndarray]  # raw[k][id]: how often the k-gram ends at a target position
    cont: list[np.ndarray]  # cont[k][id], k < max_order: distinct symbols (or a start) before it

    def arrays(self) -> dict[str, np.ndarray]:
        """The counts as named arrays (np.savez); `from_arrays` reads them back."""
        out = {"max_order": np.array(self.max_order)}
        for k in range(1, self.max_order + 1):
            out[f"raw_{k}"] = self.raw[k]
            if k >= 2:
                out[f"keys_{k}"] = self.keys[k]
            if k < self.max_order:
                out[f"cont_{k}"] = self.cont[k]
        return out

    @classmethod
    def from_arrays(cls, arrays) -> Counts:
        """Counts from `arrays()`' output; ValueError when an array is missing or malformed."""
        try:
            max_order = int(arrays["max_order"])
            if not 1 <= max_order <= 32:
                raise ValueError(f"order {max_order}")
            empty = np.zeros(0, np.int64)
            keys = [empty, empty] + [
                np.asarray(arrays[f"keys_{k}"], np.int64) for k in range(2, max_order + 1)
            ]
            raw = [np.zeros(0)] + [
                np.asarray(arrays[f"raw_{k}"], np.float64) for k in range(1, max_order + 1)
            ]
            cont = [np.zeros(0)] + [
                np.asarray(arrays[f"cont_{k}"], np.float64) for k in range(1, max_order)
            ]
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not n-gram counts: {e}") from e
        sizes = [RADIX, *(keys[k].size for k in range(2, max_order + 1))]
        contexts = [0, RADIX, *sizes[1:]]  # level k's keys name a context of level k - 1
        fits = all(raw[k].size == sizes[k - 1] for k in range(1, max_order + 1)) and all(
            cont[k].size == sizes[k - 1] for k in range(1, max_order)
        )
        for k in range(2, max_order + 1):
            ks = keys[k]
            fits = fits and bool(np.all(np.diff(ks) > 0)) and bool(np.all(ks >= 0))
            fits = fits and (ks.size == 0 or bool(ks[-1] // RADIX < contexts[k - 1]))
            fits = fits and bool(np.all(ks % RADIX <= SEP))
        counted = [*raw[1:], *cont[1:]]
        if not fits or not all(np.all(np.isfinite(a)) and np.all(a >= 0) for a in counted):
            raise ValueError("not n-gram counts: the arrays do not fit together")
        return cls(max_order, keys, raw, cont)


def checked(ids: Sequence[int]) -> list[int]:
    out = [int(i) for i in ids]
    if any(not 0 <= i <= SEP for i in out):
        raise ValueError(NOT_TEXT)
    return out


def join(
    sequences: Iterable[Sequence[int]], owners: Sequence[int | Sequence[int]] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(symbols, depth, owner): the sequences joined, each preceded by START; depth is
    the position within its sequence (-1 at the START markers); owner a dense number for
    each position's owner (None without owners). owners[i] is the owner of sequence i,
    or one owner per position of it."""
    parts, owned = [], []
    for n, seq in enumerate(sequences):
        ids = np.asarray(seq, dtype=np.int64).reshape(-1)
        if ids.size == 0:
            continue
        if ids.min() < 0 or ids.max() > SEP:
            raise ValueError(NOT_TEXT)
        if ids[0] != SEP:
            raise ValueError("each sequence must start with SEP (see codec.encode_turns)")
        parts.append(ids)
        if owners is not None:
            who = np.broadcast_to(np.asarray(owners[n], dtype=np.int64), ids.shape)
            owned.append(np.concatenate([who[:1], who]))  # START: the first position's
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, (None if owners is None else empty)
    lengths = np.array([len(ids) + 1 for ids in parts])
    symbols = np.concatenate([x for ids in parts for x in (np.array([START]), ids)])
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    owner = None
    if owners is not None:
        owner = np.unique(np.concatenate(owned), return_inverse=True)[1].reshape(-1)
    return symbols, np.arange(symbols.size) - starts - 1, owner


def next_codes(ids: np.ndarray, symbols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes of the k-grams ending at each position from the (k-1)-gram ids, and where they
    exist (a START may only come first, so no n-gram spans two sequences)."""
    ok = np.zeros(symbols.size, dtype=bool)
    ok[1:] = (ids[:-1] >= 0) & (symbols[1:] != START)
    codes = np.zeros(symbols.size, dtype=np.int64)
    codes[1:] = ids[:-1] * RADIX + symbols[1:]
    return codes, ok


def lookup(ids: np.ndarray, symbols: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Ids in `keys` of the k-grams ending at each position, -1 where never seen."""
    codes, ok = next_codes(ids, symbols)
    pos = np.minimum(np.searchsorted(keys, codes), max(len(keys) - 1, 0))
    found = ok & (keys[pos] == codes) if len(keys) else np.zeros_like(ok)
    return np.where(found, pos, -1)


def count(
    sequences: Iterable[Sequence[int]],
    max_order: int,
    owners: Sequence[int | Sequence[int]] | None = None,
    min_owners: int = 1,
) -> Counts:
    """The counts of `sequences` up to `max_order`; with `owners` (as `join` takes them),
    only k-grams whose last symbol `min_owners` distinct owners wrote (module docstring)."""
    symbols, depth, owner = join(sequences, owners)
    shared = owner is not None and min_owners > 1
    n_owners = int(owner.max()) + 1 if shared and owner.size else 1
    keys: list[np.ndarray] = [np.zeros(0, np.int64), np.zeros(0, np.int64)]  # unused at k < 2
    ids = [symbols, symbols]  # ids[k][i]: id of the k-gram ending at position i, or -1
    for _ in range(2, max_order + 1):
        codes, ok = next_codes(ids[-1], symbols)
        unique, inverse = np.unique(codes[ok], return_inverse=True)
        inverse = inverse.reshape(-1)
        if shared:
            pairs = np.unique(inverse * n_owners + owner[ok])
            keep = np.bincount(pairs // n_owners, minlength=unique.size) >= min_owners
            renumber = np.cumsum(keep) - 1
            inverse = np.where(keep[inverse], renumber[inverse], -1)
            unique = unique[keep]
        level_ids = np.full(symbols.size, -1, dtype=np.int64)
        level_ids[ok] = inverse
        keys.append(unique)
        ids.append(level_ids)
    raw: list[np.ndarray] = [np.zeros(0)]
    cont: list[np.ndarray] = [np.zeros(0)]
    for k in range(1, max_order + 1):
        size = RADIX if k == 1 else len(keys[k])
        at = (depth >= max(k - 1, 1)) & (ids[k] >= 0)  # targets with a whole, kept k-gram
        raw.append(np.bincount(ids[k][at], minlength=size).astype(np.float64))
        if k == max_order:  # the top level of any model uses raw counts
            break
        # distinct symbols just before each k-gram (a START counts as one)
        if shared:  # read from the text: a k-gram keeps its continuation count even where
            # the longer n-grams before it were dropped for having too few owners
            where = np.flatnonzero(at)
            where = where[where >= k]
            pairs = np.unique(ids[k][where] * RADIX + symbols[where - k])
            before = pairs // RADIX
        else:  # every (k+1)-gram is kept: one per distinct symbol before its suffix
            suffix = np.full(len(keys[k + 1]), -1, dtype=np.int64)
            suffix[ids[k + 1][at]] = ids[k][at]
            before = suffix[suffix >= 0]
        cont.append(np.bincount(before, minlength=size).astype(np.float64))
    return Counts(max_order, keys, raw, cont)
