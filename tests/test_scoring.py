"""Scoring a model as it is served: the network's part, the n-gram's, their mixture."""

import math
from pathlib import Path

import numpy as np
import pytest
from toy_model import untrained_model

from bot.model_info import ModelInfo
from model import MIX_KEY, PAD, encode_turns
from model.codec import encode_transcript
from model.corpus import base_split
from model.evaluate import NGRAM_ORDERS, evaluate
from model.languages import base_ngrams
from model.network import network_of
from model.ngram import ByteNGram
from model.scoring import (
    TargetScores,
    best_weight,
    network_probs,
    served_bits,
    target_scores,
)
from model.training import conversation_ids


def test_network_probs_are_the_networks_without_pad_in_order():
    model = untrained_model(units=16)
    net = network_of(model)
    encoded = [
        conversation_ids(["hello", "hi"]),
        encode_transcript([("bot turn", False), ("你好 human", True)]),
    ]
    got = network_probs(net, encoded, max_len=5)  # pieces of 5: the state restarts each piece
    expected = []
    for ids, mask in encoded:
        for start in range(0, len(ids) - 1, 5):
            x = ids[start : start + 5][: len(ids) - 1 - start]
            logits = net(x[None])[0].numpy().astype(np.float64)
            logits[:, PAD] = -np.inf
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            for i in range(len(x)):
                if mask[start + 1 + i]:
                    expected.append(p[i, ids[start + 1 + i]])
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    assert len(got) == sum(int(mask[1:].sum()) for _, mask in encoded)


def test_best_weight_and_mixture_bits():
    scores = TargetScores(np.array([0.9, 0.9, 0.1, 0.1]), np.array([0.1, 0.1, 0.9, 0.9]))
    assert scores.bits(1.0) == pytest.approx(-math.log2(0.9 * 0.1) / 2)
    assert scores.bits(0.5) == pytest.approx(1.0)  # every p is 0.5
    assert best_weight(scores) == (0.5, pytest.approx(1.0))  # symmetric: the middle
    weight, bits = best_weight(TargetScores(np.array([0.8, 0.8, 0.8, 0.1]), scores.ngram))
    assert weight > 0.5 and bits < 1.0


def test_an_unmixed_model_is_the_mixture_at_weight_one():
    net = network_of(untrained_model(units=16))
    encoded = [conversation_ids(["hello", "hi"]), conversation_ids(["你好", "再见"])]
    alone = target_scores(net, encoded)
    mixed = target_scores(net, encoded, ngram_order=3)
    assert served_bits(net, encoded, None) == pytest.approx(alone.bits())
    assert mixed.bits(1.0) == pytest.approx(alone.bits())
    assert served_bits(net, encoded, (3, 0.4)) == pytest.approx(mixed.bits(0.4))
    assert mixed.bits(0.0) == pytest.approx(-np.log2(mixed.ngram).mean())
    with pytest.raises(ValueError, match="no n-gram"):
        alone.bits(0.5)


def test_eval_scores_the_model_as_the_generator_samples_it():
    model = untrained_model(units=16)
    model.meta[MIX_KEY] = {"ngram_order": 9, "network_weight": 0.3}
    report = evaluate(model, samples=False)
    heldout = _heldout()
    # By hand: the network's probability of each held-out byte and the 9-gram's, mixed.
    p_net = network_probs(network_of(model), [conversation_ids(c) for c in heldout])
    # served: each turn read by the base n-gram of the language told from the turns before
    p_served, _ = base_ngrams(9).served([conversation_ids(c) for c in heldout])
    expected = float(-np.log2(0.3 * p_net + 0.7 * p_served).mean())
    assert report.model_bits == pytest.approx(expected)
    assert report.network_bits == pytest.approx(float(-np.log2(p_net).mean()))
    # the baseline: the best n-gram over every language, of an order the range reaches
    # past (a range that stopped at the best order could be hiding a better one)
    assert report.ngram_bits == min(report.ngram_all.values())
    assert report.ngram_all[report.ngram_order] == report.ngram_bits
    assert set(report.ngram_all) == set(NGRAM_ORDERS)
    assert report.ngram_order < max(NGRAM_ORDERS)
    best = ByteNGram(report.ngram_order).fit(encode_turns(c) for c in base_split()[0])
    p_ngram = best.target_probs([encode_turns(c) for c in heldout])
    assert report.ngram_bits == pytest.approx(float(-np.log2(p_ngram).mean()))
    # an untrained network is noise: the mixture leans on the n-gram and beats the network
    assert report.best_weight <= 0.1
    assert report.ngram_bits < report.model_bits < report.network_bits
    assert report.ratio == pytest.approx(report.model_bits / report.ngram_bits)


def _heldout():
    return base_split()[1]


def test_status_names_the_mixture():
    meta = {"kind": "base", MIX_KEY: {"ngram_order": 9, "network_weight": 0.35}}
    assert ModelInfo(Path("m.npz"), meta, 512, 1, 3).describe() == (
        "version 3 (base, GRU 512 units, 1 layer, "
        "mixed with the base corpus' 9-gram at network weight 0.35)"
    )
    assert ModelInfo(Path("m.npz"), {"kind": "toy"}, 48, 1).describe() == (
        "m.npz (toy, GRU 48 units, 1 layer)"
    )
