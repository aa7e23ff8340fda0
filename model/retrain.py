"""One retraining run, as a function over data: chats in, a gated candidate model out.

The live model is fine-tuned on the users' conversations (the bot's own turns are
context, never targets), with a slice of the base corpus mixed in against
forgetting. The candidate is kept only if it beats the live model on held-out chat
data and loses at most a margin on a held-out slice of the base corpus. No SQL,
no Telegram: the caller reads the transcripts, publishes an accepted candidate to
the ModelStore and records the run.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf

from model.codec import Encoded, Turn
from model.corpus import BASE_SEED
from model.gate import judge, score
from model.languages import BaseNGrams, base_ngrams, served_mix
from model.memory_fit import MEMORY_MARGIN_KEY
from model.memory_gate import BotMemory, candidate_memory_margin, rejudge
from model.modelfile import MIX_KEY, ModelFile, save
from model.network import network_of
from model.plot import plot_losses
from model.retrain_data import BaseCorpus, prepare
from model.run_result import RunResult, json_safe
from model.scoring import BASE_MARGIN, served_bits
from model.training import LN2, TrainConfig, fit

log = logging.getLogger(__name__)

CANDIDATE_FILE = "candidate.npz"
PLOT_FILE = "loss.png"
KEPT = "admissible_val_loss"  # the log entry whose lowest value picks the kept epoch
# Added to the val_loss of an epoch over the base margin: any admissible epoch is kept
# before it, and among inadmissible ones (then the gate rejects) the best on the chats.
INADMISSIBLE = 1e6


@dataclass(frozen=True)
class RetrainConfig:
    # Fine-tuning moves the network off the base optimum at once, and the base corpus'
    # held-out loss rises with every step: a higher rate forgets more than the margin
    # allows before it learns the chats (bench_retrain, benchmarks/README.md).
    learning_rate: float = 5e-5  # 1/60 of pretraining's 3e-3: adapt, do not overwrite
    epochs: int = 8  # upper bound; EarlyStopping usually ends sooner
    patience: int = 2  # epochs without a better held-out loss before stopping
    reduce_lr_patience: int = 1  # halve the rate after this many flat epochs
    frozen_layers: int = 0  # >0 freezes the embedding and that many lower GRUs
    window: int = 128  # bytes per training row, as in pretraining
    batch_size: int = 32
    chunk_turns: int = 16  # a chat is cut into conversations of at most this many turns
    holdout: float = 0.2  # share of conversation chunks held out for validation and the gate
    # ...and at most this much text of them: every epoch and the gate score it, so a big
    # sample must not make the scoring outgrow the training budget.
    heldout_bytes: int = 128 * 1024
    base_mix: float = 3.0  # base-corpus bytes mixed in per chat byte, against forgetting
    base_eval_conversations: int = 200  # ~23 KB of the base held-out split: ~2 s per model
    gate_margin: float = BASE_MARGIN  # bits/byte the base slice may get worse by
    inadmissible_patience: int = 2  # stop after this many epochs in a row over the margin
    # The chats a run reads (UTF-8 text, the bot's turns included): the newest turns
    # since the last published run take up to 1 - replay_share of it, a replay sample of
    # older chats the rest. With the base mix that is ~2 MB a pass, ~7 minutes on one
    # core at GRU-512: a run costs the same at 10k and 3M stored messages.
    sample_bytes: int = 512 * 1024
    replay_share: float = 0.25  # at least this share of the sample is older chats, if any
    max_seconds: float | None = 10 * 60  # training budget, checked after every batch
    threads: int | None = 1  # TensorFlow intra-op threads (the bot shares two cores)
    seed: int = BASE_SEED

    @property
    def new_bytes(self) -> int:
        """The most of the sample that the newest chats may take."""
        return int(self.sample_bytes * (1.0 - self.replay_share))

    def train_config(self) -> TrainConfig:
        return TrainConfig(
            window=self.window,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            epochs=self.epochs,
            patience=self.patience,
            reduce_lr_patience=self.reduce_lr_patience,
            frozen_layers=self.frozen_layers,
            max_seconds=self.max_seconds,
            seed=self.seed,
        )


# -- the run ----------------------------------------------------------------------------


def retrain(
    live: ModelFile,
    transcripts: Sequence[Sequence[Turn]],
    config: RetrainConfig,
    run_dir: str | Path,
    *,
    on_epoch: Callable[[int, dict], None] | None = None,
    base: BaseCorpus | None = None,
    replay: Sequence[Sequence[Turn]] = (),
    memory: BotMemory | None = None,
    chats: tuple[Sequence[int], Sequence[int]] | None = None,
    ngrams: Callable[[int], BaseNGrams] = base_ngrams,
) -> RunResult:
    """Fine-tune `live` on `transcripts` (the newest chats) and `replay` (pieces of older
    ones) and judge the candidate against it.

    Writes into run_dir: best.weights.h5 (checkpoint), history.csv, tensorboard/,
    candidate.npz (kept even when rejected) and loss.png. `on_epoch(epoch, logs)` gets
    Keras' logs (nats) plus `loss_bits` and `val_loss_bits`. `base` replaces the base
    corpus split (tests, benchmarks). `memory`: what the bot's chat memory is counted
    from, when it serves one: the gate then judges both models as served with it
    (model.memory_gate), which needs `chats`, the chat id of each transcript and of each
    replay piece. `ngrams`: the base n-grams of an order (the bot's runs read the model
    store's kept copy, model.ngram_cache). Raises NotEnoughData before training
    anything when the chats are too few to hold some out.
    """
    start = time.monotonic()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if memory is not None and chats is None:
        raise ValueError("judging with the chat memory needs each chat's id")
    data = prepare(transcripts, config, base, replay, chats)
    if config.threads:
        limit_threads(config.threads)
    log.info("retraining on %s", data.examples)

    def report(epoch: int, logs: dict) -> None:
        bits = {f"{k}_bits": v / LN2 for k, v in logs.items() if k.endswith("loss")}
        on_epoch(epoch, {**logs, **bits})

    order = served_mix(live)[0] if live.mix is not None or memory is not None else None
    live_scores = score(network_of(live), data.heldout, data.base_eval, order, ngrams)
    keeper = KeepAdmissible(
        data.base_eval,
        live_scores.base.bits() + config.gate_margin,  # the live network alone, plus margin
        config.inadmissible_patience,
    )
    candidate_net = network_of(live)
    fitted = fit(
        candidate_net,
        data.train,
        data.heldout,
        config.train_config(),
        run_dir,
        on_epoch=report if on_epoch else None,
        extra_callbacks=[keeper],
        keep=KEPT,
    )
    candidate_scores = score(candidate_net, data.heldout, data.base_eval, order, ngrams)
    verdict = judge(live_scores, candidate_scores, live.mix, config.gate_margin)
    if memory is not None:
        verdict = rejudge(
            verdict, live, live_scores, candidate_scores, memory, data, config.gate_margin
        )
    log.info("%s", verdict.reason)

    history = {
        key: [v / LN2 if key.endswith("loss") else v for v in values]
        for key, values in fitted.history.items()
    }
    meta = {
        "kind": "retrain",
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "parent": {k: live.meta[k] for k in ("kind", "created") if k in live.meta},
        "losses": dataclasses.asdict(verdict.losses),
        "examples": dataclasses.asdict(data.examples),
        "epochs": fitted.epochs,
        "best_epoch": fitted.best_epoch,
        "retrain_config": dataclasses.asdict(config),
    }
    # How far a chat memory served with it may take the base slice (model.memory_fit).
    meta[MEMORY_MARGIN_KEY] = candidate_memory_margin(verdict.losses, config.gate_margin)
    if verdict.mix is not None:  # served mixed with the base n-gram, like its parent
        meta[MIX_KEY] = verdict.mix
        # ... of the live model's chat loss without a memory
        meta["live_weight_credited"] = verdict.live_weight_credited
    candidate = ModelFile.from_network(candidate_net, live.config, json_safe(meta))
    candidate_path = save(candidate, run_dir / CANDIDATE_FILE)
    plot_path = plot_losses(history, verdict.losses, run_dir / PLOT_FILE, accepted=verdict.accepted)
    return RunResult(
        accepted=verdict.accepted,
        reason=verdict.reason,
        examples=data.examples,
        losses=verdict.losses,
        gate_margin=config.gate_margin,
        epochs=fitted.epochs,
        best_epoch=fitted.best_epoch,
        seconds=time.monotonic() - start,
        fit_seconds=fitted.seconds,
        out_of_time=fitted.out_of_time,
        history=history,
        candidate_path=str(candidate_path),
        plot_path=str(plot_path),
    )


class KeepAdmissible(keras.callbacks.Callback):
    """Marks the epochs the gate would pass, for fit's one kept-epoch rule.

    After each epoch it scores the base slice by the network alone, as served at weight 1
    (about 2 s at GRU-512), and adds it to the logs as `base_bits`, and KEPT: the epoch's
    val_loss if the base slice stays within `base_limit`, that plus INADMISSIBLE if not,
    so an epoch that forgets more than the gate allows is kept only when every epoch did
    (and the gate then rejects it). Forgetting grows with training, so after `patience`
    such epochs in a row it stops the run: later epochs would only be thrown away.
    """

    def __init__(self, base_eval: Sequence[Encoded], base_limit: float, patience: int = 2):
        super().__init__()
        self.base_eval = base_eval
        self.base_limit = base_limit  # bits/byte on the base slice: live network's + margin
        self.patience = patience
        self.over = 0  # epochs in a row over the limit

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        base = served_bits(self.model, self.base_eval, None)
        admissible = base <= self.base_limit
        logs["base_bits"] = base
        logs[KEPT] = logs.get("val_loss", math.inf) + (0.0 if admissible else INADMISSIBLE)
        self.over = 0 if admissible else self.over + 1
        if self.patience and self.over >= self.patience:
            log.info("stopping: %d epochs in a row forget more than the gate allows", self.over)
            self.model.stop_training = True


def limit_threads(threads: int) -> None:
    """Cap TensorFlow's thread pools; only possible before TensorFlow runs its first op."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # already initialised (the caller ran TensorFlow before)
        log.debug("TensorFlow is initialised already; thread limits left as they are")
