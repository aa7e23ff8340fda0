"""How else the network and the base n-grams could be mixed: held-out bits/byte of the
shipped model's parts combined other ways than the linear mixture it is served with.

On the held-out 10% of the base corpus (what `charbot eval` scores), every target byte's
full distribution from the network (PAD's share spread over the rest, as served), the
base n-gram of the language told from the turns before it (as served; of the model
file's order) and the one over all languages; then, each fitted on one half of the
conversations and scored on the other half and back (cross-fitted):

- linear, the network and the language's n-gram at the model file's weight (as served);
- linear, those two and the all-language n-gram, weights by EM;
- geometric (a product of experts), p ∝ p_net^a · p_lang^b [· p_all^c], the exponents
  fitted by Newton's method, one set or one per evidence level of the language's n-gram.

Figures are against the best byte n-gram `charbot eval` prints (model.evaluate's orders).
Usage: python benchmarks/study_mixing.py  (about 2 minutes on two cores)
"""

from __future__ import annotations

import itertools
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np

from model import scoring
from model.codec import MAX_PROMPT_BYTES, PAD, encode_turns
from model.corpus import base_split
from model.evaluate import NGRAM_ORDERS
from model.languages import base_ngrams
from model.modelfile import BASE_MODEL_PATH, load
from model.network import network_of
from model.ngram import best_ngram
from model.training import conversation_ids
from model.weighting import mean_bits

NEWTON_STEPS = 12


def network_log_probs(net, encoded) -> np.ndarray:
    """(targets, 257) log P under the network, PAD never a candidate, targets in order."""
    rows = scoring.read_pieces(encoded, MAX_PROMPT_BYTES)
    pieces = [np.zeros((0, PAD))] * len(rows)
    for j, log_probs, _ in scoring.network_log_probs(net, rows):
        pieces[j] = log_probs[:, :PAD]
    return np.concatenate(pieces).astype(np.float64)


def ngram_log_probs(encoded, order: int):
    """(log P of the language's n-gram, of the all-language one, language evidence) per
    target, each turn read by its language's table as served."""
    base = base_ngrams(order)
    sequences = [np.asarray(ids) for ids, _ in encoded]
    lang, every = [], []
    for ids, (_, mask), tables in zip(sequences, encoded, base.turn_tables(sequences), strict=True):
        for i in np.flatnonzero(np.asarray(mask[1:], dtype=bool)):
            lang.append(base.ngrams[tables[i]].distribution(ids[: i + 1]))
            every.append(base.ngrams[0].distribution(ids[: i + 1]))
    _, evidence = base.served(encoded)
    logs = (np.log(np.maximum(np.stack(x), 1e-12)) for x in (lang, every))
    return (*logs, evidence)


def geometric_fit(parts, targets, buckets, n_buckets):
    """Exponents (buckets, parts) maximising the likelihood of p ∝ prod p_k^w_k."""
    k = len(parts)
    weights = np.full((n_buckets, k), 1.0 / k)
    rows = np.arange(len(targets))
    for _ in range(NEWTON_STEPS):
        q = _geometric(parts, weights[buckets])
        mean = np.stack([(q * p).sum(1) for p in parts], 1)
        grad = mean - np.stack([p[rows, targets] for p in parts], 1)
        hess = np.empty((len(targets), k, k))
        for i, j in itertools.product(range(k), repeat=2):
            hess[:, i, j] = (q * parts[i] * parts[j]).sum(1) - mean[:, i] * mean[:, j]
        for b in range(n_buckets):
            mine = buckets == b
            if mine.any():
                h = hess[mine].sum(0) + 1e-3 * mine.sum() * np.eye(k)
                weights[b] -= np.linalg.solve(h, grad[mine].sum(0))
    return weights


def _geometric(parts, w):
    z = sum(w[:, i : i + 1] * p for i, p in enumerate(parts))
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def linear_fit(p_targets):
    w = np.full(p_targets.shape[1], 1.0 / p_targets.shape[1])
    for _ in range(200):
        r = w * p_targets
        w = (r / r.sum(1, keepdims=True)).mean(0)
    return w


def main() -> None:
    train, heldout = base_split()
    encoded = [conversation_ids(c) for c in heldout]
    model = load(BASE_MODEL_PATH)
    _, ngram_bits, _ = best_ngram(
        [encode_turns(c) for c in train], [encode_turns(c) for c in heldout], NGRAM_ORDERS
    )
    net = network_log_probs(network_of(model), encoded)
    net -= np.log(np.exp(net).sum(1, keepdims=True))
    lang, every, evidence = ngram_log_probs(encoded, model.mix[0])
    targets = np.concatenate([np.asarray(ids[1:])[np.asarray(m[1:], bool)] for ids, m in encoded])
    rows = np.arange(len(targets))
    at = [np.exp(x[rows, targets]) for x in (net, lang, every)]
    half = scoring.conversation_halves(encoded)
    order, weight = model.mix

    def crossed(fit, score):
        p = np.empty(len(targets))
        for h in (0, 1):
            p[half == h] = score(fit(half != h), half == h)
        return mean_bits(p)

    def geometric(parts, buckets, n):
        return crossed(
            lambda m: geometric_fit([x[m] for x in parts], targets[m], buckets[m], n),
            lambda w, m: _geometric([x[m] for x in parts], w[buckets[m]])[
                np.arange(m.sum()), targets[m]
            ],
        )

    three = np.stack(at, 1)
    one = np.zeros(len(targets), dtype=np.int64)
    results = [
        ("network alone", mean_bits(at[0])),
        (
            f"linear, network {weight} + language {order}-gram (as served)",
            mean_bits(weight * at[0] + (1 - weight) * at[1]),
        ),
        (
            f"linear, network + language + all-language {order}-grams (EM)",
            crossed(lambda m: linear_fit(three[m]), lambda w, m: (three[m] * w).sum(1)),
        ),
        (f"geometric, network x language {order}-gram", geometric((net, lang), one, 1)),
        ("geometric, network x language x all-language", geometric((net, lang, every), one, 1)),
        ("the same, exponents per evidence level", geometric((net, lang, every), evidence, order)),
    ]
    print(f"{len(targets):,} held-out target bytes; best byte n-gram {ngram_bits:.3f} bits/byte")
    for name, value in results:
        print(f"{name:<58}{value:7.3f}  {value / ngram_bits:.3f}x")


if __name__ == "__main__":
    main()
