"""One self-describing file per model: the config that built it, its weights, metadata.

The file is a NumPy `.npz` archive (no pickle): `config` (JSON of ModelConfig), `meta`
(free JSON: losses, provenance, the mixture entry) and one array per weight named as in
`weight_names`. Loading checks every shape against the config and says in one sentence
what does not fit, instead of surfacing Keras internals.

Only NumPy here, no TensorFlow: the model store, `charbot status` and the bot's reports
read model files without loading the network (model.network builds it).
"""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model.codec import VOCAB_SIZE

FORMAT = "charbot-model/1"
BASE_MODEL_PATH = Path(__file__).with_name("base") / "base.npz"  # shipped; `charbot pretrain`
# The meta entry that mixes the network with the base corpus' byte n-gram (model.mixture):
# {"ngram_order": n, "network_weight": a}. Without it a model is the network alone.
MIX_KEY = "mix"
MAX_MIX_ORDER = 12


class ModelFileError(ValueError):
    """A model file that cannot be used: unreadable, foreign, or of another shape."""


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


def weight_names(config: ModelConfig) -> list[str]:
    """Stable names of the network's weights, in Keras' `model.get_weights()` order."""
    names = ["embedding/embeddings"]
    for i in range(config.layers):
        names += [f"gru_{i}/kernel", f"gru_{i}/recurrent_kernel", f"gru_{i}/bias"]
    return [*names, "logits/kernel", "logits/bias"]


@dataclass
class ModelFile:
    config: ModelConfig
    weights: list[np.ndarray]  # in weight_names(config) order
    meta: dict = field(default_factory=dict)

    @classmethod
    def from_network(cls, net, config: ModelConfig, meta: dict | None = None) -> ModelFile:
        """The weights of a Keras network (anything with `get_weights()`)."""
        return cls(config, [np.asarray(w) for w in net.get_weights()], dict(meta or {}))

    @property
    def mix(self) -> tuple[int, float] | None:
        """(n-gram order, network weight) of the mixture it is served as; None: network alone."""
        return mix_settings(self.meta)


def mix_settings(meta: dict) -> tuple[int, float] | None:
    """(n-gram order, network weight) from a model file's meta, None if it does not mix."""
    mix = meta.get(MIX_KEY)
    if not mix:
        return None
    try:
        order, weight = int(mix["ngram_order"]), float(mix["network_weight"])
    except (KeyError, TypeError, ValueError):
        order, weight = 0, -1.0
    if not 1 <= order <= MAX_MIX_ORDER or not 0.0 <= weight <= 1.0:
        raise ValueError(
            f"bad mixture settings in the model file: {mix!r} (needs ngram_order "
            f"1..{MAX_MIX_ORDER} and network_weight 0..1)"
        )
    return order, weight


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
