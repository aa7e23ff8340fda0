"""The network: Embedding -> GRU (-> GRU ...) -> Dense over the byte vocabulary."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import keras

from model.codec import VOCAB_SIZE


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = VOCAB_SIZE  # bytes + SEP + PAD; fixed, so fine-tunes never change shapes
    embed_dim: int = 64  # bytes carry little meaning alone; the GRU does the work
    units: int = 512  # GRU width: the main quality/speed lever
    layers: int = 1  # stacked GRUs
    dropout: float = 0.0  # on GRU outputs while training only

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        data = json.loads(text)
        unknown = set(data) - fields
        if unknown:
            raise ValueError(f"unknown model config fields: {sorted(unknown)}")
        return cls(**data)


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


def weight_names(config: ModelConfig) -> list[str]:
    """Stable names of the network's weights, in `model.get_weights()` order."""
    names = ["embedding/embeddings"]
    for i in range(config.layers):
        names += [f"gru_{i}/kernel", f"gru_{i}/recurrent_kernel", f"gru_{i}/bias"]
    return [*names, "logits/kernel", "logits/bias"]
