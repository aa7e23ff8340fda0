"""Which model answers, as /status and `charbot status` describe it (no TensorFlow)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model import MIX_KEY, ModelFile
from model.store import ModelStore


@dataclass(frozen=True)
class ModelInfo:
    """Which model answers: shown by /status and `charbot status`."""

    path: Path
    meta: dict[str, Any] = field(default_factory=dict)
    units: int = 0
    layers: int = 0
    version: int | None = None  # the model store's version number

    @classmethod
    def of(cls, model: ModelFile, path: Path, version: int | None = None) -> ModelInfo:
        config = model.config
        return cls(Path(path), dict(model.meta), config.units, config.layers, version)

    @classmethod
    def of_version(cls, store: ModelStore, version: int, model: ModelFile) -> ModelInfo:
        return cls.of(model, store.model_path(version), version)

    def describe(self) -> str:
        details = [str(self.meta.get("kind", "unknown kind"))]
        if self.meta.get("created"):
            details.append(f"created {self.meta['created']}")
        layers = "1 layer" if self.layers == 1 else f"{self.layers} layers"
        details.append(f"GRU {self.units} units, {layers}")
        mix = self.meta.get(MIX_KEY)
        if isinstance(mix, dict) and {"ngram_order", "network_weight"} <= set(mix):
            details.append(
                f"mixed with the base corpus' {mix['ngram_order']}-gram "
                f"at network weight {mix['network_weight']}"
            )
        name = self.path.name if self.version is None else f"version {self.version}"
        return f"{name} ({', '.join(details)})"
