"""A tiny model trained in seconds on a toy corpus, so tests know its greedy replies."""

from __future__ import annotations

import functools

import keras
import numpy as np

from model import PAD, SEP, ModelConfig, ModelFile
from model.network import build_network, network_of
from model.training import TrainConfig, conversation_ids, fit

# Each prompt has one obvious answer; a trained toy model answers greedily with it.
TOY_DIALOGS = {
    "hello": "hi there",
    "how are you?": "fine, thanks",
    "你好": "你好😀",
    "bye": "see you",
}
TOY_CONFIG = ModelConfig(units=48, embed_dim=16)


@functools.cache
def toy_model(tmp_root: str = "/tmp/charbot-toy") -> ModelFile:
    """The toy model (trained once per test process)."""
    keras.utils.set_random_seed(7)
    conversations = [[q, a] for q, a in TOY_DIALOGS.items()] * 24
    encoded = [conversation_ids(c) for c in conversations]
    net = build_network(TOY_CONFIG)
    config = TrainConfig(
        window=64, batch_size=8, learning_rate=2e-2, epochs=30, patience=30, seed=7
    )
    fit(net, encoded, encoded[:4], config, tmp_root)
    return ModelFile.from_network(net, TOY_CONFIG, {"kind": "toy"})


def untrained_model(units: int = 32, layers: int = 1) -> ModelFile:
    config = ModelConfig(units=units, embed_dim=16, layers=layers)
    return ModelFile.from_network(build_network(config), config, {"kind": "untrained"})


def greedy_reference(model: ModelFile, prompt, n: int, ngram=None, weight: float = 1.0):
    """What the generator should write greedily: the Keras network re-run on the growing
    sequence (mixed by hand with `ngram` at network weight `weight`, if given), argmax
    step by step; never PAD, and no SEP first (a reply is never empty)."""

    def mixed(ids, p, first):
        p_ngram = np.zeros_like(p) if ngram is None else np.append(ngram.distribution(ids), 0.0)
        if first:
            p[SEP] = p_ngram[SEP] = 0.0
        p = weight * p / p.sum()
        if ngram is not None:
            p += (1 - weight) * p_ngram / p_ngram.sum()
        return p

    return greedy_by(model, prompt, n, mixed)


def greedy_by(model: ModelFile, prompt, n: int, mixed) -> list[int]:
    """Argmax step by step of `mixed(ids so far, the network's P(next) without PAD, whether
    it is the reply's first byte)`, up to n bytes or a SEP."""
    net = network_of(model)
    ids = list(prompt)
    out = []
    for step in range(n):
        logits = net(np.array([ids]))[0, -1].numpy().astype(np.float64)
        logits[PAD] = -np.inf
        token = int(np.argmax(mixed(ids, np.exp(logits - logits.max()), step == 0)))
        if token == SEP:
            break
        out.append(token)
        ids.append(token)
    return out
