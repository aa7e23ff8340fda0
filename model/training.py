"""Training primitives: transcripts -> masked windows -> fit with checkpoints and early stop.

A transcript is one conversation: a list of (text, human) turns. Human bytes (and
the separator closing a human turn) are targets; the bot's own turns are context
only, so the model never learns to imitate itself. Targets that must not count are
written as PAD in `y`, and the loss ignores them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from model.codec import PAD, Encoded, Turn, encode_transcript

LN2 = math.log(2.0)
CHECKPOINT_FILE = "best.weights.h5"  # ModelCheckpoint's file in the log dir


@dataclass(frozen=True)
class TrainConfig:
    window: int = 256  # bytes of context per training row (truncated backprop length)
    batch_size: int = 32  # windows per step
    learning_rate: float = 2e-3  # Adam; fine-tunes use a lower one
    epochs: int = 40  # upper bound; EarlyStopping usually ends sooner
    patience: int = 3  # epochs without a better val_loss before stopping
    clipnorm: float = 1.0  # gradient clipping keeps the GRU stable
    reduce_lr_patience: int = 1  # ReduceLROnPlateau: halve the rate after this many flat epochs
    frozen_layers: int = 0  # freeze the embedding and this many lower GRUs (fine-tunes)
    max_seconds: float | None = None  # wall-clock budget, checked after every batch
    seed: int = 1234


@dataclass
class FitResult:
    epochs: int  # epochs run
    best_epoch: int  # 1-based epoch whose weights were kept; 0: none was kept
    best_val_loss: float  # nats per target byte
    history: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0
    train_bytes: int = 0  # target bytes per epoch
    out_of_time: bool = False  # the time budget stopped it (perhaps mid-epoch)


# -- data -----------------------------------------------------------------------------


def encode_transcripts(
    transcripts: Sequence[Sequence[Turn]],
) -> list[Encoded]:
    return [encode_transcript(t) for t in transcripts]


def pack_windows(
    encoded: Sequence[Encoded], window: int, *, drop_empty: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate conversations and cut (x, y) windows; y is PAD where nothing is learned.

    Returns x, y of shape (n, window). The stream is padded at its end so no byte is lost.
    With drop_empty, windows without a single target are left out.
    """
    if not encoded:
        return np.zeros((0, window), np.int32), np.zeros((0, window), np.int32)
    ids = np.concatenate([e[0] for e in encoded])
    mask = np.concatenate([e[1] for e in encoded])
    targets = np.where(mask, ids, PAD).astype(np.int32)
    n = max(1, math.ceil((len(ids) - 1) / window))
    total = n * window + 1
    ids = np.pad(ids, (0, total - len(ids)), constant_values=PAD)
    targets = np.pad(targets, (0, total - len(targets)), constant_values=PAD)
    x = ids[:-1].reshape(n, window)
    y = targets[1:].reshape(n, window)
    if not drop_empty:
        return x, y
    keep = (y != PAD).any(axis=1)  # windows with no target teach nothing
    return x[keep], y[keep]


def training_dataset(encoded: Sequence[Encoded], config: TrainConfig) -> tf.data.Dataset:
    """Windows re-packed from a fresh conversation order every epoch (seeded)."""
    rng = np.random.default_rng(config.seed)
    window = config.window

    count = len(pack_windows(encoded, window, drop_empty=False)[0])  # same for every order

    def epoch():
        order = rng.permutation(len(encoded))
        # Empty windows are kept so every epoch has `count` rows; they add nothing to the loss.
        x, y = pack_windows([encoded[i] for i in order], window, drop_empty=False)
        yield from zip(x, y, strict=True)

    spec = tf.TensorSpec([window], tf.int32)
    ds = tf.data.Dataset.from_generator(epoch, output_signature=(spec, spec))
    ds = ds.apply(tf.data.experimental.assert_cardinality(count))
    return ds.shuffle(4096, seed=config.seed).batch(config.batch_size).prefetch(2)


def fixed_dataset(encoded: Sequence[Encoded], config: TrainConfig) -> tf.data.Dataset:
    x, y = pack_windows(encoded, config.window)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(config.batch_size)


def target_bytes(encoded: Sequence[Encoded]) -> int:
    return int(sum(m[1:].sum() for _, m in encoded))


# -- loss -----------------------------------------------------------------------------


def masked_loss(y_true, y_pred):
    """Mean cross-entropy (nats) over the targets that count (y_true != PAD)."""
    y_true = tf.cast(y_true, tf.int32)
    mask = tf.cast(tf.not_equal(y_true, PAD), tf.float32)
    safe = tf.where(tf.equal(y_true, PAD), 0, y_true)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe, logits=y_pred)
    return tf.reduce_sum(ce * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)


def compile_network(net: keras.Model, config: TrainConfig) -> None:
    for layer in net.layers:
        frozen = layer.name == "embedding" and config.frozen_layers > 0
        if layer.name.startswith("gru_"):
            frozen = int(layer.name.split("_")[1]) < config.frozen_layers
        layer.trainable = not frozen
    net.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate, clipnorm=config.clipnorm),
        loss=masked_loss,
    )


# -- fit ------------------------------------------------------------------------------


class TimeBudget(keras.callbacks.Callback):
    """Stop at the first batch that ends past the wall-clock budget.

    Checked per batch, because one epoch on a large sample can outlast the whole budget.
    Keras then ends the epoch early but still validates it and calls the other callbacks'
    on_epoch_end, so the part-epoch is judged and checkpointed like a whole one.
    """

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds
        self.start = time.monotonic()
        self.stopped_at_batch: int | None = None  # the batch it stopped after (-1: an epoch end)

    def on_train_begin(self, logs=None):
        self.start = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        if self.stopped_at_batch is None and time.monotonic() - self.start > self.seconds:
            self.stopped_at_batch = batch
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        # Spent during the validation: no next epoch (it would validate again at once).
        if self.stopped_at_batch is None and time.monotonic() - self.start > self.seconds:
            self.stopped_at_batch = -1
            self.model.stop_training = True


class EpochCallback(keras.callbacks.Callback):
    """Call `fn(epoch, logs)` after each epoch (progress reports)."""

    def __init__(self, fn: Callable[[int, dict], None]):
        super().__init__()
        self.fn = fn

    def on_epoch_end(self, epoch, logs=None):
        self.fn(epoch + 1, dict(logs or {}))


def fit(
    net: keras.Model,
    train: Sequence[Encoded],
    val: Sequence[Encoded],
    config: TrainConfig,
    log_dir: str | Path,
    *,
    verbose: int = 0,
    on_epoch: Callable[[int, dict], None] | None = None,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
    keep: str = "val_loss",
) -> FitResult:
    """Fit `net` in place and leave it with the weights of the kept epoch.

    One rule picks that epoch: ModelCheckpoint saves the epoch with the lowest `keep`
    value in the logs (an extra callback may write that key; an infinite value is never
    kept), and its file is loaded after the fit, however the fit ended. With no epoch
    kept the net keeps its last weights and `best_epoch` is 0. EarlyStopping watches
    val_loss. Writes under log_dir: best.weights.h5, history.csv (CSVLogger) and
    tensorboard/ (TensorBoard).
    """
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = log_dir / CHECKPOINT_FILE
    checkpoint.unlink(missing_ok=True)  # an earlier fit's best epoch is not this one's
    keras.utils.set_random_seed(config.seed)
    compile_network(net, config)
    callbacks = [
        *extra_callbacks,  # first, so what they add to the logs reaches the others
        keras.callbacks.ModelCheckpoint(
            checkpoint,
            monitor=keep,
            mode="min",
            save_best_only=True,
            save_weights_only=True,
            initial_value_threshold=math.inf,  # an infinite or NaN value is never saved
        ),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience),
        keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=0.5, patience=config.reduce_lr_patience, min_lr=1e-5
        ),
        keras.callbacks.CSVLogger(str(log_dir / "history.csv")),
        keras.callbacks.TensorBoard(log_dir=str(log_dir / "tensorboard"), write_graph=False),
    ]
    budget = TimeBudget(config.max_seconds) if config.max_seconds is not None else None
    if budget is not None:
        callbacks.append(budget)
    if on_epoch is not None:
        callbacks.append(EpochCallback(on_epoch))
    start = time.monotonic()
    history = net.fit(
        training_dataset(train, config),
        validation_data=fixed_dataset(val, config),
        epochs=config.epochs,
        callbacks=callbacks,
        shuffle=False,  # the dataset shuffles itself
        verbose=verbose,
    ).history
    kept = np.asarray(history.get(keep, [math.inf]), dtype=np.float64)
    kept = np.where(np.isfinite(kept), kept, math.inf)  # as ModelCheckpoint compares them
    best = int(np.argmin(kept)) if np.isfinite(kept).any() else -1
    if best >= 0:
        net.load_weights(checkpoint)
    val_losses = history.get("val_loss", [math.inf])
    return FitResult(
        epochs=len(val_losses),
        best_epoch=best + 1,
        best_val_loss=float(val_losses[best]) if best >= 0 else math.inf,
        history={k: [float(v) for v in vs] for k, vs in history.items()},
        seconds=time.monotonic() - start,
        train_bytes=target_bytes(train),
        out_of_time=budget is not None and budget.stopped_at_batch is not None,
    )


def conversation_ids(turns: Sequence[str]) -> Encoded:
    """A corpus conversation, every turn a target (the base corpus has no bot turns)."""
    return encode_transcript([(t, True) for t in turns])
