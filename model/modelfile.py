"""One self-describing file per model: the config that built it, its weights, metadata.

The file is a NumPy `.npz` archive (no pickle): `config` (JSON of ModelConfig), `meta`
(free JSON: losses, provenance) and one array per weight named as in
`network.weight_names`. Loading checks every shape against the config and says in
one sentence what does not fit, instead of surfacing Keras internals.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model.codec import VOCAB_SIZE
from model.mixture import mix_settings
from model.network import ModelConfig, build_network, weight_names

FORMAT = "charbot-model/1"


class ModelFileError(ValueError):
    """A model file that cannot be used: unreadable, foreign, or of another shape."""


@dataclass
class ModelFile:
    config: ModelConfig
    weights: list[np.ndarray]  # in network.weight_names(config) order
    meta: dict = field(default_factory=dict)

    def build(self):
        """A Keras model with these weights."""
        net = build_network(self.config)
        net.set_weights(self.weights)
        return net

    @classmethod
    def from_network(cls, net, config: ModelConfig, meta: dict | None = None) -> ModelFile:
        return cls(config, [np.asarray(w) for w in net.get_weights()], dict(meta or {}))


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    e, u, v = config.embed_dim, config.units, config.vocab_size
    shapes = {"embedding/embeddings": (v, e)}
    inputs = e
    for i in range(config.layers):
        shapes[f"gru_{i}/kernel"] = (inputs, 3 * u)
        shapes[f"gru_{i}/recurrent_kernel"] = (u, 3 * u)
        shapes[f"gru_{i}/bias"] = (2, 3 * u)
        inputs = u
    shapes["logits/kernel"] = (u, v)
    shapes["logits/bias"] = (v,)
    return shapes


def save(model: ModelFile, path: str | os.PathLike) -> Path:
    """Write `model` to `path` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    names = weight_names(model.config)
    arrays = {
        name: np.asarray(w, dtype=np.float32) for name, w in zip(names, model.weights, strict=True)
    }
    check_shapes(model.config, arrays, str(path))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(
            f,
            format=np.array(FORMAT),
            config=np.array(model.config.to_json()),
            meta=np.array(json.dumps(model.meta, sort_keys=True)),
            **arrays,
        )
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load(path: str | os.PathLike) -> ModelFile:
    """Read a model file; raise ModelFileError with a clear message if it is unusable."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such model file") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ModelFileError(f"{path}: not a charbot model file ({exc})") from None
    if str(arrays.pop("format", "")) != FORMAT:
        raise ModelFileError(f"{path}: not a charbot model file (expected format {FORMAT})")
    try:
        config = ModelConfig.from_json(str(arrays.pop("config")))
        meta = json.loads(str(arrays.pop("meta", "{}")))
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelFileError(f"{path}: unreadable model config ({exc})") from None
    if config.vocab_size != VOCAB_SIZE:
        raise ModelFileError(
            f"{path}: built for a vocabulary of {config.vocab_size} symbols, "
            f"this charbot uses {VOCAB_SIZE}"
        )
    check_shapes(config, arrays, str(path))
    try:
        mix_settings(meta if isinstance(meta, dict) else {})
    except ValueError as exc:
        raise ModelFileError(f"{path}: {exc}") from None
    weights = [arrays[name].astype(np.float32) for name in weight_names(config)]
    return ModelFile(config, weights, meta)


def check_shapes(config: ModelConfig, arrays: dict[str, np.ndarray], where: str) -> None:
    expected = expected_shapes(config)
    missing = sorted(set(expected) - set(arrays))
    if missing:
        raise ModelFileError(f"{where}: weights missing for {', '.join(missing)}")
    extra = sorted(set(arrays) - set(expected))
    if extra:
        raise ModelFileError(f"{where}: unexpected weights {', '.join(extra)} for {config}")
    for name, shape in expected.items():
        got = tuple(arrays[name].shape)
        if got != shape:
            raise ModelFileError(
                f"{where}: weight {name} has shape {got}, but the model config "
                f"(units={config.units}, embed_dim={config.embed_dim}, layers={config.layers}) "
                f"needs {shape}"
            )
