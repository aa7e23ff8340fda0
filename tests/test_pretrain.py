"""`charbot pretrain` end to end on a tiny network: one short epoch, then the mixture."""

from dataclasses import replace

import numpy as np
import pytest
from toy_model import untrained_model

from model.languages import MIX_ORDER
from model.modelfile import MIX_KEY, ModelConfig, load, mix_settings, save
from model.pretrain import PRETRAIN, pretrain, refit_mix
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
    assert order == MIX_ORDER and weight in WEIGHT_GRID
    # A network this small after one epoch is weaker than the n-gram: the mixture leans
    # on the n-gram, and beats the network alone.
    assert weight < 0.5
    assert saved.meta["heldout_mixture_bits_per_byte"] < saved.meta["heldout_bits_per_byte"]
    assert saved.meta[MIX_KEY] == {"ngram_order": MIX_ORDER, "network_weight": weight}
    assert any(line.startswith("epoch 1: held-out") for line in lines)
    assert any(f"network weight {weight}" in line for line in lines)
    assert saved.meta["heldout_mixture_bits_per_byte"] == pytest.approx(
        float(
            next(line for line in lines if "mixed with" in line).split("held-out ")[1].split()[0]
        ),
        abs=5e-4,
    )


def test_mix_only_keeps_the_network_and_fits_its_mixture_again(tmp_path):
    old = untrained_model(units=16)
    old.meta.update({"kind": "base", MIX_KEY: {"ngram_order": 9, "network_weight": 0.9}})
    save(old, tmp_path / "old.npz")
    before = (tmp_path / "old.npz").read_bytes()
    lines = []
    refit_mix(tmp_path / "old.npz", tmp_path / "new.npz", report=lines.append)
    new = load(tmp_path / "new.npz")
    assert all(np.array_equal(a, b) for a, b in zip(old.weights, new.weights, strict=True))
    # an untrained network is noise: the mixture fitted again leans on the n-gram
    order, weight = mix_settings(new.meta)
    assert order == MIX_ORDER and weight in WEIGHT_GRID and weight <= 0.1
    assert new.meta["kind"] == "base"
    assert new.meta["heldout_mixture_bits_per_byte"] < new.meta["heldout_bits_per_byte"]
    assert any(f"network weight {weight}" in line for line in lines)
    assert (tmp_path / "old.npz").read_bytes() == before  # written to --out only
