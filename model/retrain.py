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
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from model.codec import Turn, encode_transcript
from model.corpus import BASE_SEED, base_split, split_conversations
from model.generator import MAX_PROMPT_BYTES
from model.mixture import (
    MIX_KEY,
    WEIGHT_GRID,
    base_ngram,
    choose_weight,
    masked_probs,
    mix_settings,
    mixture_bits,
)
from model.modelfile import ModelFile, save
from model.training import (
    LN2,
    TrainConfig,
    bits_per_byte,
    conversation_ids,
    fit,
    target_bytes,
    target_probs,
)

log = logging.getLogger(__name__)

Encoded = tuple[np.ndarray, np.ndarray]  # (ids, target mask) of one conversation
BaseCorpus = tuple[list[list[str]], list[list[str]]]  # (train, heldout) conversations

CANDIDATE_FILE = "candidate.npz"
PLOT_FILE = "loss.png"


@dataclass(frozen=True)
class RetrainConfig:
    # Fine-tuning moves the network off the base optimum at once, and the base corpus's
    # held-out loss rises with every step (see benchmarks/README.md, bench_retrain).
    # Measured on a pirate-style corpus (2026-11-25): 5e-5 with base_mix 3 reached the
    # new style's 0.73 bits/byte within the 0.05 margin; 1e-4 reached 1.09, 2e-4 and
    # 5e-4 forgot more than the margin allows at every epoch.
    learning_rate: float = 5e-5  # 1/60 of pretraining's 3e-3: adapt, do not overwrite
    epochs: int = 8  # upper bound; EarlyStopping usually ends sooner
    patience: int = 2  # epochs without a better held-out loss before stopping
    reduce_lr_patience: int = 1  # halve the rate after this many flat epochs
    frozen_layers: int = 0  # >0 freezes the embedding and that many lower GRUs
    window: int = 128  # bytes per training row, as in pretraining
    batch_size: int = 32
    chunk_turns: int = 16  # a chat is cut into conversations of at most this many turns
    holdout: float = 0.2  # share of conversation chunks held out for validation and the gate
    base_mix: float = 3.0  # base-corpus bytes mixed in per chat byte, against forgetting
    # (at the same rate, 1.0 and 2.0 forgot more of the base slice per bit gained)
    base_eval_conversations: int = 200  # ~23 KB of the base held-out split: ~2 s per model
    gate_margin: float = 0.05  # bits/byte the base slice may get worse by
    inadmissible_patience: int = 2  # stop after this many epochs in a row over the margin
    max_seconds: float | None = 20 * 60  # training budget; stops after the epoch that passes it
    threads: int | None = 1  # TensorFlow intra-op threads (the bot shares two cores)
    seed: int = BASE_SEED

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


class NotEnoughData(ValueError):
    """Too little chat data for a run that could be judged; nothing was trained."""


@dataclass
class Examples:
    train_chunks: int  # chat conversation chunks trained on
    heldout_chunks: int  # chat chunks held out (validation and gate)
    train_bytes: int  # target bytes (human turns) in train_chunks
    heldout_bytes: int
    base_conversations: int  # base-corpus conversations mixed into training
    base_bytes: int
    base_eval_conversations: int  # base held-out slice the gate reads
    base_eval_bytes: int


@dataclass
class Losses:
    """Held-out bits per target byte, read as the generator reads (each chunk from its start),
    of the models as they are served: mixed with the base n-gram if the live model is."""

    live_chat: float
    candidate_chat: float
    live_base: float
    candidate_base: float
    # Mixed models only: the base slice scored by the networks alone, which must also stay
    # within the margin (a network that forgot the base must not hide behind the n-gram).
    live_base_network: float = math.nan
    candidate_base_network: float = math.nan


@dataclass
class RunResult:
    accepted: bool  # the candidate passed the gate and may be published
    reason: str  # one sentence: why it was accepted or rejected
    examples: Examples
    losses: Losses
    gate_margin: float
    epochs: int
    best_epoch: int  # 1-based epoch whose weights the candidate has
    seconds: float  # the whole run
    fit_seconds: float  # training alone
    history: dict[str, list[float]] = field(default_factory=dict)  # per epoch, losses in bits
    candidate_path: str = ""
    plot_path: str = ""

    def to_dict(self) -> dict:
        """Plain JSON data; non-finite losses become None."""
        return _json_safe(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict) -> RunResult:
        data = dict(data)
        data["examples"] = Examples(**data["examples"])
        data["losses"] = Losses(
            **{k: math.nan if v is None else float(v) for k, v in data["losses"].items()}
        )
        data["history"] = {
            k: [math.nan if v is None else v for v in vs] for k, vs in data["history"].items()
        }
        return cls(**data)


@dataclass
class RetrainData:
    """What a run trains and judges on, all encoded as (ids, target mask)."""

    train: list[Encoded]  # chat chunks + base slice, in that order
    heldout: list[Encoded]  # chat chunks
    base_eval: list[Encoded]  # base held-out slice
    examples: Examples


# -- data -------------------------------------------------------------------------------


def chunk_transcripts(transcripts: Sequence[Sequence[Turn]], max_turns: int) -> list[list[Turn]]:
    """Each chat cut into consecutive conversations of at most `max_turns` turns.

    Chunks without a human turn (nothing to learn or judge) are dropped.
    """
    chunks = []
    for turns in transcripts:
        for start in range(0, len(turns), max_turns):
            chunk = list(turns[start : start + max_turns])
            if any(human for _, human in chunk):
                chunks.append(chunk)
    return chunks


def base_sample(conversations: Sequence[list[str]], n_bytes: int, seed: int) -> list[list[str]]:
    """A seeded random choice of conversations holding at least `n_bytes` text bytes."""
    chosen, total = [], 0
    for i in np.random.RandomState(seed).permutation(len(conversations)):
        if total >= n_bytes:
            break
        chosen.append(conversations[i])
        total += sum(len(t.encode("utf-8")) + 1 for t in conversations[i])
    return chosen


def base_eval_slice(heldout: Sequence[list[str]], n: int, seed: int) -> list[list[str]]:
    """A fixed seeded sample of `n` base held-out conversations (all languages), in order."""
    if n >= len(heldout):
        return list(heldout)
    picked = np.sort(np.random.RandomState(seed).permutation(len(heldout))[:n])
    return [heldout[i] for i in picked]


def prepare(
    transcripts: Sequence[Sequence[Turn]],
    config: RetrainConfig,
    base: BaseCorpus | None = None,
) -> RetrainData:
    """Chunk, split and encode the chats; add the base-corpus mix and evaluation slice.

    Raises NotEnoughData when fewer than two chunks hold a human turn.
    """
    chunks = chunk_transcripts(transcripts, config.chunk_turns)
    if len(chunks) < 2:
        raise NotEnoughData(
            f"not enough conversations to hold any out: {len(chunks)} conversation "
            f"chunk(s) with human turns, at least 2 are needed"
        )
    train_chunks, heldout_chunks = split_conversations(chunks, config.holdout, config.seed)
    train = [encode_transcript(c) for c in train_chunks]
    heldout = [encode_transcript(c) for c in heldout_chunks]
    base_train, base_heldout = base if base is not None else base_split()
    train_bytes = target_bytes(train)
    mix = base_sample(base_train, int(config.base_mix * train_bytes), config.seed)
    mix_encoded = [conversation_ids(c) for c in mix]
    base_eval = [
        conversation_ids(c)
        for c in base_eval_slice(base_heldout, config.base_eval_conversations, config.seed)
    ]
    if not base_eval:
        raise NotEnoughData("the base corpus has no held-out conversations to guard against")
    examples = Examples(
        train_chunks=len(train),
        heldout_chunks=len(heldout),
        train_bytes=train_bytes,
        heldout_bytes=target_bytes(heldout),
        base_conversations=len(mix_encoded),
        base_bytes=target_bytes(mix_encoded),
        base_eval_conversations=len(base_eval),
        base_eval_bytes=target_bytes(base_eval),
    )
    return RetrainData(train + mix_encoded, heldout, base_eval, examples)


# -- the gate ---------------------------------------------------------------------------


def judge_mixed(
    live_net,
    candidate_net,
    settings: tuple[int, float],
    data: RetrainData,
    margin: float,
    live_base_network: float,
) -> tuple[dict, Losses, float]:
    """The candidate's mixture entry, the losses the gate compares, the live weight credited.

    The candidate gets the network weight that scores best on the held-out chats among
    those that keep the base slice within `margin` of the live model as served (the
    n-gram knows nothing of the chats, so it usually gets less say than before). Since
    that weight is chosen on the chats the gate then judges, the live model is credited
    the same way: its chat loss is that of its own best such weight (returned third),
    so re-weighting alone never passes the gate.
    """
    order, live_weight = settings
    ngram = base_ngram(order)
    chat_ngram = masked_probs(ngram, data.heldout)
    base_ngram_p = masked_probs(ngram, data.base_eval)

    def by_weight(net, weights) -> tuple[dict[float, float], dict[float, float]]:
        chat_p = target_probs(net, data.heldout, max_len=MAX_PROMPT_BYTES)
        base_p = target_probs(net, data.base_eval, max_len=MAX_PROMPT_BYTES)
        chat = {w: mixture_bits(chat_p, chat_ngram, w) for w in weights}
        return chat, {w: mixture_bits(base_p, base_ngram_p, w) for w in weights}

    # the live model's own weight need not be on the grid
    live_chat, live_base = by_weight(live_net, sorted({*WEIGHT_GRID, live_weight}))
    cand_chat, cand_base = by_weight(candidate_net, WEIGHT_GRID)
    limit = live_base[live_weight] + margin
    credited = choose_weight(live_chat, live_base, limit)
    weight = choose_weight(cand_chat, cand_base, limit)
    losses = Losses(
        live_chat=live_chat[credited],
        candidate_chat=cand_chat[weight],
        live_base=live_base[live_weight],
        candidate_base=cand_base[weight],
        live_base_network=live_base_network,
        candidate_base_network=bits_per_byte(candidate_net, data.base_eval),
    )
    return {"ngram_order": order, "network_weight": weight}, losses, credited


def gate(losses: Losses, margin: float) -> tuple[bool, str]:
    """(accepted, reason): better on held-out chats, and at most `margin` worse on the base."""
    failures = []
    if not math.isfinite(losses.candidate_chat) or not losses.candidate_chat < losses.live_chat:
        failures.append(
            f"no better on the held-out chats ({losses.live_chat:.3f} -> "
            f"{losses.candidate_chat:.3f} bits/byte)"
        )
    if not losses.candidate_base <= losses.live_base + margin:
        failures.append(
            f"forgets the base corpus ({losses.live_base:.3f} -> {losses.candidate_base:.3f} "
            f"bits/byte on its held-out slice, more than the {margin:.3f} margin)"
        )
    if math.isfinite(losses.live_base_network) and not (
        losses.candidate_base_network <= losses.live_base_network + margin
    ):
        failures.append(
            f"its network forgets the base corpus ({losses.live_base_network:.3f} -> "
            f"{losses.candidate_base_network:.3f} bits/byte alone, more than the "
            f"{margin:.3f} margin)"
        )
    if failures:
        return False, "rejected: " + "; ".join(failures)
    return True, (
        f"accepted: held-out chats {losses.live_chat:.3f} -> {losses.candidate_chat:.3f} "
        f"bits/byte, base slice {losses.live_base:.3f} -> {losses.candidate_base:.3f} "
        f"(margin {margin:.3f})"
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
) -> RunResult:
    """Fine-tune `live` on `transcripts` and judge the candidate against it.

    Writes into run_dir: best.weights.h5 (checkpoint), history.csv, tensorboard/,
    candidate.npz (kept even when rejected) and loss.png. `on_epoch(epoch, logs)` gets
    Keras' logs (nats) plus `loss_bits` and `val_loss_bits`. `base` replaces the base
    corpus split (tests, benchmarks). Raises NotEnoughData before training anything
    when the chats are too few to hold some out.
    """
    start = time.monotonic()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    data = prepare(transcripts, config, base)
    if config.threads:
        limit_threads(config.threads)
    log.info("retraining on %s", data.examples)

    def report(epoch: int, logs: dict) -> None:
        bits = {f"{k}_bits": v / LN2 for k, v in logs.items() if k.endswith("loss")}
        on_epoch(epoch, {**logs, **bits})

    live_net = inference(live.build())
    live_base = bits_per_byte(live_net, data.base_eval)
    keeper = KeepAdmissible(
        data.base_eval, live_base + config.gate_margin, config.inadmissible_patience
    )
    candidate_net = live.build()
    fitted = fit(
        candidate_net,
        data.train,
        data.heldout,
        config.train_config(),
        run_dir,
        on_epoch=report if on_epoch else None,
        extra_callbacks=[keeper],
    )
    if keeper.weights is not None:  # else the chat-best weights stay, and the gate rejects them
        candidate_net.set_weights(keeper.weights)
        fitted.best_epoch = keeper.epoch
    fast_candidate = inference(candidate_net)
    settings = mix_settings(live.meta)
    if settings is None:
        mix = credited = None
        losses = Losses(
            live_chat=bits_per_byte(live_net, data.heldout),
            candidate_chat=bits_per_byte(fast_candidate, data.heldout),
            live_base=live_base,
            candidate_base=bits_per_byte(fast_candidate, data.base_eval),
        )
    else:
        mix, losses, credited = judge_mixed(
            live_net, fast_candidate, settings, data, config.gate_margin, live_base
        )
    accepted, reason = gate(losses, config.gate_margin)
    log.info("%s", reason)

    history = {
        key: [v / LN2 if key.endswith("loss") else v for v in values]
        for key, values in fitted.history.items()
    }
    meta = {
        "kind": "retrain",
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "parent": {k: live.meta[k] for k in ("kind", "created") if k in live.meta},
        "losses": dataclasses.asdict(losses),
        "examples": dataclasses.asdict(data.examples),
        "epochs": fitted.epochs,
        "best_epoch": fitted.best_epoch,
        "retrain_config": dataclasses.asdict(config),
    }
    if mix is not None:  # served mixed with the base n-gram, like its parent
        meta[MIX_KEY] = mix
        meta["live_weight_credited"] = credited  # the live chat loss above is at this weight
    candidate = ModelFile.from_network(candidate_net, live.config, _json_safe(meta))
    candidate_path = save(candidate, run_dir / CANDIDATE_FILE)
    plot_path = plot_losses(history, losses, run_dir / PLOT_FILE, accepted=accepted)
    return RunResult(
        accepted=accepted,
        reason=reason,
        examples=data.examples,
        losses=losses,
        gate_margin=config.gate_margin,
        epochs=fitted.epochs,
        best_epoch=fitted.best_epoch,
        seconds=time.monotonic() - start,
        fit_seconds=fitted.seconds,
        history=history,
        candidate_path=str(candidate_path),
        plot_path=str(plot_path),
    )


class KeepAdmissible(keras.callbacks.Callback):
    """The weights of the epoch best on the held-out chats among those the gate would pass.

    After each epoch it scores the base slice (about 2 s at GRU-512) and adds it to the
    logs as `base_bits`; an epoch that forgets more than the gate allows is never kept.
    Forgetting grows with training, so after `patience` such epochs in a row it stops
    the run: later epochs would only be thrown away.
    """

    def __init__(self, base_eval: Sequence[Encoded], base_limit: float, patience: int = 2):
        super().__init__()
        self.base_eval = base_eval
        self.base_limit = base_limit  # bits/byte on the base slice: live model's + margin
        self.patience = patience
        self.best = math.inf
        self.weights = None
        self.epoch = 0  # 1-based epoch of self.weights
        self.over = 0  # epochs in a row over the limit

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        base = bits_per_byte(self.model, self.base_eval)
        logs["base_bits"] = base
        val = logs.get("val_loss", math.inf)
        self.over = 0 if base <= self.base_limit else self.over + 1
        if base <= self.base_limit and val < self.best:
            self.best, self.weights, self.epoch = val, self.model.get_weights(), epoch + 1
        if self.patience and self.over >= self.patience:
            log.info("stopping: %d epochs in a row forget more than the gate allows", self.over)
            self.model.stop_training = True


def inference(net) -> Callable:
    """`net` called as one traced graph: several times faster than eager calls on CPU.

    Takes the place of the network in `bits_per_byte`, which only calls
    `net(x, training=False)`; one trace serves every batch shape.
    """
    import tensorflow as tf

    spec = tf.TensorSpec([None, None], tf.int32)
    fn = tf.function(lambda x: net(x, training=False), input_signature=[spec])
    return lambda x, training=False: fn(x)


def limit_threads(threads: int) -> None:
    """Cap TensorFlow's thread pools; only possible before TensorFlow runs its first op."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # already initialised (the caller ran TensorFlow before)
        log.debug("TensorFlow is initialised already; thread limits left as they are")


def plot_losses(
    history: dict[str, list[float]], losses: Losses, path: str | Path, *, accepted: bool
) -> Path:
    """A PNG of training and validation loss per epoch (bits/byte), the live model's as a line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)  # render off-screen, without pyplot's global state
    ax = fig.add_subplot()
    for key, label in (("loss", "training"), ("val_loss", "validation (held-out chats)")):
        values = history.get(key, [])
        ax.plot(range(1, len(values) + 1), values, marker="o", label=label)
    mixed = math.isfinite(losses.live_base_network)
    live = (
        "live model at its best weight, held-out chats" if mixed else "live model, held-out chats"
    )
    ax.axhline(losses.live_chat, color="gray", linestyle="--", label=live)
    if mixed:
        ax.axhline(losses.candidate_chat, color="green", linestyle=":", label="candidate as served")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (bits/byte)")
    ax.set_title(f"retraining: candidate {'accepted' if accepted else 'rejected'}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png")
    return path


def _json_safe(value):
    """`value` with non-finite floats as None and tuples as lists (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value
