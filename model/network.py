"""The network: Embedding -> GRU (-> GRU ...) -> Dense over the byte vocabulary."""

from __future__ import annotations

import keras

from model.modelfile import ModelConfig, ModelFile


def build_network(config: ModelConfig) -> keras.Model:
    """(B, T) ids -> (B, T, vocab) logits. Built (weights created) on return."""
    ids = keras.Input(shape=(None,), dtype="int32", name="ids")
    x = keras.layers.Embedding(config.vocab_size, config.embed_dim, name="embedding")(ids)
    for i in range(config.layers):
        # reset_after=True and sigmoid gates are Keras' defaults; the generator relies on them.
        x = keras.layers.GRU(config.units, return_sequences=True, name=f"gru_{i}")(x)
        if config.dropout > 0:
            x = keras.layers.Dropout(config.dropout, name=f"dropout_{i}")(x)
    logits = keras.layers.Dense(config.vocab_size, name="logits")(x)
    return keras.Model(ids, logits, name="charbot")


def network_of(model: ModelFile) -> keras.Model:
    """The Keras network of a model file, with its weights."""
    net = build_network(model.config)
    net.set_weights(model.weights)
    return net
