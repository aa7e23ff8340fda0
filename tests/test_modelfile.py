"""Model files: one self-describing file; a file of another shape fails clearly."""

import numpy as np
import pytest

from model import ModelConfig, ModelFile, ModelFileError, load, save
from model.modelfile import FORMAT
from model.network import build_network, network_of


def _tiny(units=16, layers=1):
    config = ModelConfig(units=units, embed_dim=8, layers=layers)
    return ModelFile.from_network(build_network(config), config, {"kind": "test", "n": 1})


def test_round_trip_keeps_config_weights_and_meta(tmp_path):
    model = _tiny(layers=2)
    path = save(model, tmp_path / "m.npz")
    loaded = load(path)
    assert loaded.config == model.config
    assert loaded.meta == {"kind": "test", "n": 1}
    assert len(loaded.weights) == len(model.weights)
    for a, b in zip(loaded.weights, model.weights, strict=True):
        np.testing.assert_array_equal(a, b)
    net = network_of(loaded)
    x = np.array([[256, 104, 105, 256]])
    np.testing.assert_allclose(net(x), network_of(model)(x), rtol=1e-6)
    assert not list(tmp_path.glob("*.tmp"))  # written atomically, nothing left behind


def _write(path, config_json, **arrays):
    with open(path, "wb") as f:
        np.savez(f, format=np.array(FORMAT), config=np.array(config_json), **arrays)


def test_file_of_another_shape_fails_with_a_clear_message(tmp_path):
    model = _tiny(units=16)
    names = [
        "embedding/embeddings",
        "gru_0/kernel",
        "gru_0/recurrent_kernel",
        "gru_0/bias",
        "logits/kernel",
        "logits/bias",
    ]
    arrays = dict(zip(names, model.weights, strict=True))
    wrong = ModelConfig(units=32, embed_dim=8)  # says 32 units, holds 16-unit weights
    path = tmp_path / "wrong.npz"
    _write(path, wrong.to_json(), **arrays)
    with pytest.raises(ModelFileError) as err:
        load(path)
    message = str(err.value)
    assert "gru_0/kernel" in message and "(8, 48)" in message and "(8, 96)" in message
    assert "units=32" in message
    assert "Traceback" not in message and len(message.splitlines()) == 1


def test_missing_weights_unknown_fields_and_foreign_files_fail_clearly(tmp_path):
    config = ModelConfig(units=16, embed_dim=8)
    path = tmp_path / "partial.npz"
    _write(path, config.to_json(), **{"embedding/embeddings": np.zeros((258, 8))})
    with pytest.raises(ModelFileError, match="weights missing for gru_0/bias"):
        load(path)

    _write(path, '{"units": 16, "colour": "red"}')
    with pytest.raises(ModelFileError, match="unreadable model config"):
        load(path)

    other_vocab = ModelConfig(vocab_size=300, units=16, embed_dim=8)
    _write(path, other_vocab.to_json())
    with pytest.raises(ModelFileError, match="vocabulary of 300"):
        load(path)

    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"\x00not a zip archive at all" * 10)
    with pytest.raises(ModelFileError, match="not a charbot model file"):
        load(junk)

    with pytest.raises(ModelFileError, match="no such model file"):
        load(tmp_path / "absent.npz")


def test_a_broken_mixture_entry_fails_at_load(tmp_path):
    model = _tiny()
    model.meta["mix"] = {"ngram_order": 9, "network_weight": 1.5}
    save(model, tmp_path / "m.npz")
    with pytest.raises(
        ModelFileError, match=r"m\.npz: bad mixture settings.*network_weight 0\.\.1"
    ):
        load(tmp_path / "m.npz")


def test_shipped_base_model_loads():
    from model import BASE_MODEL_PATH
    from model.languages import MIX_ORDER

    model = load(BASE_MODEL_PATH)
    assert model.config.units >= 256
    assert model.meta["kind"] == "base"
    assert model.meta["heldout_bits_per_byte"] > 0
    # mixed as `charbot pretrain` mixes it: the base n-gram's order, a weight between
    assert model.mix[0] == MIX_ORDER and 0.0 < model.mix[1] < 1.0
