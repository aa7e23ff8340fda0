"""`charbot pretrain` end to end on a tiny network: one short epoch, then the mixture."""

from dataclasses import replace

import pytest

from model.modelfile import MIX_KEY, ModelConfig, load, mix_settings
from model.pretrain import PRETRAIN, pretrain
from model.scoring import WEIGHT_GRID


def test_pretrain_saves_a_model_that_knows_its_mixture(tmp_path):
    lines = []
    model = pretrain(
        tmp_path / "base.npz",
        tmp_path / "runs",
        config=ModelConfig(units=16, embed_dim=8),
        train_config=replace(PRETRAIN, epochs=1, window=64, batch_size=256),
        verbose=0,
        report=lines.append,
    )
    saved = load(tmp_path / "base.npz")
    assert saved.meta == model.meta and saved.meta["kind"] == "base"
    order, weight = mix_settings(saved.meta)
    assert order == 9 and weight in WEIGHT_GRID
    # A network this small after one epoch is weaker than the n-gram: the mixture leans
    # on the n-gram, and beats the network alone.
    assert weight < 0.5
    assert saved.meta["heldout_mixture_bits_per_byte"] < saved.meta["heldout_bits_per_byte"]
    assert saved.meta[MIX_KEY] == {"ngram_order": 9, "network_weight": weight}
    assert any(line.startswith("epoch 1: held-out") for line in lines)
    assert any(f"network weight {weight}" in line for line in lines)
    assert saved.meta["heldout_mixture_bits_per_byte"] == pytest.approx(
        float(
            next(line for line in lines if "mixed with" in line).split("held-out ")[1].split()[0]
        ),
        abs=5e-4,
    )
