"""Training primitives: masked windows, callbacks, best weights, frozen layers."""

import csv
import math

import keras
import numpy as np
import pytest
from toy_model import untrained_model

from model import PAD, SEP
from model.codec import encode_transcript
from model.network import network_of
from model.scoring import target_scores
from model.training import (
    CHECKPOINT_FILE,
    TrainConfig,
    compile_network,
    encode_transcripts,
    fit,
    fixed_dataset,
    pack_windows,
    training_dataset,
)


def test_windows_shift_targets_and_hide_bot_turns():
    encoded = encode_transcripts([[("ab", True), ("CD", False), ("e", True)]])
    x, y = pack_windows(encoded, window=4)
    stream = [SEP, *b"ab", SEP, *b"CD", SEP, *b"e", SEP]
    assert x.shape == y.shape == (2, 4)
    assert x.ravel().tolist() == [*stream[:8]]
    # y[t] is x's next byte where it is a human byte, PAD where it belongs to the bot.
    assert y.ravel().tolist() == [ord("a"), ord("b"), SEP, PAD, PAD, PAD, ord("e"), SEP]


def test_windows_without_targets_are_dropped_unless_asked():
    encoded = encode_transcripts([[("only the bot speaks here", False)]])
    assert pack_windows(encoded, window=8)[0].shape == (0, 8)
    assert pack_windows(encoded, window=8, drop_empty=False)[0].shape[0] == 4


HUMAN = ["how are you", "what is new", "tell me more", "good morning"]
BOT_STYLE = "zqzqzqzqzqzqzqzq"  # what the bot says: a pattern no human ever writes


def _train(transcripts, tmp_path, name):
    model = untrained_model(units=32)
    net = network_of(model)
    encoded = encode_transcripts(transcripts)
    config = TrainConfig(window=48, batch_size=8, learning_rate=2e-2, epochs=12, patience=12)
    fit(net, encoded, encoded[:4], config, tmp_path / name)
    return net


def test_bot_turns_are_context_never_targets(tmp_path):
    dialogs = [[(h, True), (BOT_STYLE, False), (h, True)] for h in HUMAN] * 8
    masked = _train(dialogs, tmp_path, "masked")
    as_human = [[(t, True) for t, _ in d] for d in dialogs]
    control = _train(as_human, tmp_path, "control")
    # Score the bot's text as if it were a target, after a human turn.
    probe = [encode_transcript([(HUMAN[0], False), (BOT_STYLE, True)])]
    learned = target_scores(control, probe).bits()
    not_learned = target_scores(masked, probe).bits()
    assert learned < 1.5  # the control model did learn the bot's style...
    assert not_learned > 4.0  # ...the masked one, trained on the same bytes, did not
    human_probe = [encode_transcript([(HUMAN[1], True)])]
    assert target_scores(masked, human_probe).bits() < 3.0  # while it learned the human text


def test_fit_keeps_the_best_weights_and_writes_its_logs(tmp_path):
    encoded = encode_transcripts([[(h, True), (h[::-1], True)] for h in HUMAN] * 4)
    net = network_of(untrained_model(units=32))
    config = TrainConfig(window=32, batch_size=4, learning_rate=3e-2, epochs=6, patience=2)
    result = fit(net, encoded, encoded[:3], config, tmp_path)
    assert (tmp_path / "best.weights.h5").stat().st_size > 0
    assert (tmp_path / "tensorboard").is_dir()
    with open(tmp_path / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == result.epochs
    val = [float(r["val_loss"]) for r in rows]
    assert result.best_val_loss == pytest.approx(min(val), rel=1e-6)
    assert result.best_epoch == int(np.argmin(val)) + 1
    # The network holds the best epoch's weights, not the last epoch's.
    compile_network(net, config)
    now = net.evaluate(fixed_dataset(encoded[:3], config), verbose=0)
    assert now == pytest.approx(result.best_val_loss, rel=1e-4)


def test_time_budget_and_frozen_layers(tmp_path):
    encoded = encode_transcripts([[(h, True)] for h in HUMAN] * 4)
    model = untrained_model(units=16)
    net = network_of(model)
    before = [w.copy() for w in net.get_weights()]
    config = TrainConfig(window=16, batch_size=4, epochs=5, frozen_layers=1, max_seconds=0.0)
    result = fit(net, encoded, encoded[:2], config, tmp_path)
    assert result.epochs == 1 and result.out_of_time  # the budget was spent at once
    after = net.get_weights()
    for i in range(4):  # embedding and gru_0 (kernel, recurrent kernel, bias) are frozen
        np.testing.assert_array_equal(before[i], after[i])
    assert not np.array_equal(before[4], after[4])  # the output layer learned


def test_the_time_budget_stops_mid_epoch_and_keeps_the_judged_part_epoch(tmp_path):
    encoded = encode_transcripts([[(h, True)] for h in HUMAN] * 40)
    config = TrainConfig(window=16, batch_size=2, epochs=3, max_seconds=0.0)
    batches = len(training_dataset(encoded, config))
    assert batches > 20  # one epoch is many batches
    seen = []

    class CountBatches(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(batch)

    net = network_of(untrained_model(units=16))
    result = fit(net, encoded, encoded[:2], config, tmp_path, extra_callbacks=[CountBatches()])
    assert result.out_of_time and result.epochs == 1
    assert len(seen) == 1  # stopped after its first batch, not at the epoch's end
    # The part-epoch was validated and kept, so the run has weights it can judge.
    assert result.best_epoch == 1 and math.isfinite(result.best_val_loss)
    assert (tmp_path / CHECKPOINT_FILE).exists()


def test_untrained_network_scores_about_eight_bits_per_byte():
    net = network_of(untrained_model(units=16))
    bits = target_scores(net, encode_transcripts([[("hello there", True), ("你好", True)]])).bits()
    assert abs(bits - math.log2(257)) < 0.3  # PAD is never a candidate


class OnlyFirstEpochs(keras.callbacks.Callback):
    """Marks the first `n` epochs keepable (their val_loss) and the rest not (infinity)."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        logs["kept"] = logs["val_loss"] if epoch < self.n else math.inf
        self.weights.append([w.copy() for w in self.model.get_weights()])


@pytest.mark.parametrize("keepable", [1, 0])
def test_fit_keeps_only_an_epoch_its_rule_allows(tmp_path, keepable):
    encoded = encode_transcripts([[(h, True), (h[::-1], True)] for h in HUMAN] * 4)
    net = network_of(untrained_model(units=32))
    marker = OnlyFirstEpochs(keepable)
    config = TrainConfig(window=32, batch_size=4, learning_rate=3e-2, epochs=4, patience=4)
    result = fit(net, encoded, encoded[:3], config, tmp_path, extra_callbacks=[marker], keep="kept")
    val = result.history["val_loss"]
    assert result.epochs == 4 and min(val[1:]) < val[0]  # later epochs were better on val_loss
    kept = marker.weights[0] if keepable else marker.weights[-1]  # none kept: the last ones
    assert result.best_epoch == keepable
    for now, then in zip(net.get_weights(), kept, strict=True):
        np.testing.assert_allclose(now, then, rtol=1e-6)
