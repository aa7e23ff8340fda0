"""The base model: pretrained on the chatterbot-corpus conversations, shipped in model/base/."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Sequence
from pathlib import Path

from model.codec import Encoded
from model.corpus import BASE_SEED, base_split
from model.languages import MIX_ORDER
from model.modelfile import BASE_MODEL_PATH, MIX_KEY, ModelConfig, ModelFile, load, save
from model.network import build_network, network_of
from model.scoring import fit_mix
from model.training import LN2, TrainConfig, conversation_ids, fit

BASE_CONFIG = ModelConfig(
    embed_dim=64,
    units=512,  # within the generator's speed bars on two cores (benchmarks/README.md)
    layers=1,
    dropout=0.25,  # the corpus is small (~0.9 MB): without it the GRU overfits in 3 epochs
)

PRETRAIN = TrainConfig(
    window=128,  # most conversations are shorter; longer windows cost speed, not quality
    batch_size=64,
    learning_rate=3e-3,
    epochs=60,
    patience=4,
    reduce_lr_patience=1,
    max_seconds=45 * 60,  # keeps `charbot pretrain` within about an hour on two cores
    seed=BASE_SEED,
)


def pretrain(
    out_path: Path = BASE_MODEL_PATH,
    log_dir: Path = Path("data/runs/pretrain"),
    *,
    config: ModelConfig = BASE_CONFIG,
    train_config: TrainConfig = PRETRAIN,
    verbose: int = 1,
    report: Callable[[str], None] = print,
) -> ModelFile:
    """Train the base model from scratch on the corpus' training split and save it."""
    train, heldout = base_split()
    train_ids = [conversation_ids(c) for c in train]
    heldout_ids = [conversation_ids(c) for c in heldout]
    report(
        f"base corpus: {len(train)} training and {len(heldout)} held-out conversations; "
        f"GRU-{config.units}, window {train_config.window}, "
        f"budget {train_config.max_seconds or 0:.0f} s"
    )

    def on_epoch(epoch: int, logs: dict) -> None:
        bits = logs.get("val_loss", float("nan")) / LN2
        report(f"epoch {epoch}: held-out {bits:.3f} bits/byte (windows)")

    net = build_network(config)
    result = fit(
        net, train_ids, heldout_ids, train_config, log_dir, verbose=verbose, on_epoch=on_epoch
    )
    meta = {
        "kind": "base",
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "epochs": result.epochs,
        "best_epoch": result.best_epoch,
        "seconds": round(result.seconds, 1),
        "train_config": dataclasses.asdict(train_config),
    }
    report(
        f"done: {result.epochs} epochs in {result.seconds:.0f} s, best epoch {result.best_epoch}"
    )
    model = with_base_mix(ModelFile.from_network(net, config, meta), heldout_ids, report)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save(model, out_path)
    report(f"saved {out_path}")
    return model


def refit_mix(
    path: Path = BASE_MODEL_PATH,
    out_path: Path | None = None,
    report: Callable[[str], None] = print,
) -> ModelFile:
    """The base model at `path` with its network kept and its mixture fitted again as
    `pretrain` fits it (the network's weight against the base n-gram of MIX_ORDER), saved to
    `out_path` (default: `path`): seconds, where `pretrain` trains the network for an hour."""
    _, heldout = base_split()
    model = with_base_mix(load(path), [conversation_ids(c) for c in heldout], report)
    target = out_path or path
    save(model, target)
    report(f"saved {target}")
    return model


def with_base_mix(
    model: ModelFile, heldout_ids: Sequence[Encoded], report: Callable[[str], None]
) -> ModelFile:
    """`model` with the mixture entry that scores best on the held-out conversations: the
    base n-gram of MIX_ORDER at the best network weight."""
    mix = fit_mix(network_of(model), heldout_ids, MIX_ORDER)
    report(f"network alone: held-out {mix.network_bits:.3f} bits/byte")
    report(
        f"mixed with the base {mix.ngram_order}-gram at network weight {mix.network_weight}: "
        f"held-out {mix.mixture_bits:.3f} bits/byte (n-gram alone {mix.ngram_bits:.3f})"
    )
    meta = {
        **model.meta,
        "heldout_bits_per_byte": mix.network_bits,
        "heldout_mixture_bits_per_byte": mix.mixture_bits,
        MIX_KEY: mix.meta(),
    }
    return dataclasses.replace(model, meta=meta)
