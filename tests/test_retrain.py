"""model/retrain.py: one run end to end on a tiny model, the gate, the data it trains on.

The live model is an untrained GRU-32 and the chats are a few dozen short lines of
pirate talk, so a few epochs teach the candidate a lot; a small stand-in base corpus
keeps the forgetting check fast.
"""

from __future__ import annotations

import csv
import json
import math
import random
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pytest
from toy_model import untrained_model

from model import MIX_KEY
from model.codec import PAD, SEP
from model.gate import gate, judge, score
from model.modelfile import ModelFile, load
from model.network import network_of
from model.retrain import (
    CANDIDATE_FILE,
    KEPT,
    PLOT_FILE,
    KeepAdmissible,
    RetrainConfig,
    retrain,
)
from model.retrain_data import NotEnoughData, base_eval_slice, chunks_of, prepare
from model.run_result import Losses, RunResult
from model.scoring import choose_weight, target_scores
from model.training import conversation_ids, pack_windows, training_dataset

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PIRATE = ["arr", "matey", "ahoy", "yo ho", "avast", "grog", "the plank", "me hearty"]
BOT_LINE = "QQ I am the bot QQ"  # 'Q' is in no human turn and not in the base corpus
BASE = (
    [["hi", "hello there"], ["how are you", "fine, and you"], ["good night", "sleep well"]] * 40,
    [["good day", "to you too"], ["thanks", "you are welcome"]] * 5,
)
FAST = RetrainConfig(  # tiny data: short windows, a high rate, a few epochs
    learning_rate=1e-2,
    epochs=4,
    window=64,
    batch_size=16,
    base_eval_conversations=8,
    base_mix=0.5,  # the toy base corpus below is small
    threads=None,
)


def pirate_chats(n: int, turns: int = 6, seed: int = 0) -> list[list[tuple[str, bool]]]:
    rng = random.Random(seed)
    return [
        [
            (" ".join(rng.choice(PIRATE) for _ in range(4)) + "!", True)
            if j % 2 == 0
            else (BOT_LINE, False)
            for j in range(turns)
        ]
        for _ in range(n)
    ]


@pytest.fixture(scope="module")
def live():
    keras.utils.set_random_seed(5)
    return untrained_model(units=32)


def test_a_run_learns_the_new_style_and_is_accepted(live, tmp_path: Path):
    epochs_seen = []
    result = retrain(
        live,
        pirate_chats(40),
        FAST,
        tmp_path,
        on_epoch=lambda epoch, logs: epochs_seen.append((epoch, logs["val_loss_bits"])),
        base=BASE,
    )
    assert result.accepted, result.reason
    assert result.reason.startswith("accepted: held-out chats")
    losses = result.losses
    assert losses.candidate_chat < losses.live_chat - 2  # from ~8 bits/byte (uniform)
    assert losses.candidate_base <= losses.live_base + FAST.gate_margin
    assert 1 <= result.best_epoch <= result.epochs == len(epochs_seen) <= FAST.epochs
    assert len(result.history["loss"]) == len(result.history["val_loss"]) == result.epochs
    assert result.history["val_loss"][-1] < 6  # bits/byte, not nats
    assert [bits for _, bits in epochs_seen] == pytest.approx(result.history["val_loss"])

    ex = result.examples
    assert (ex.train_chunks, ex.heldout_chunks) == (32, 8)
    assert ex.train_bytes > 0 and ex.heldout_bytes > 0
    assert FAST.base_mix * ex.train_bytes <= ex.base_bytes < FAST.base_mix * ex.train_bytes + 30
    assert ex.base_eval_conversations == 8

    # Files: the candidate (loads, same shape, weights changed), the plot, the logs.
    candidate = load(tmp_path / CANDIDATE_FILE)
    assert result.candidate_path == str(tmp_path / CANDIDATE_FILE)
    assert candidate.config == live.config
    assert not np.allclose(candidate.weights[-2], live.weights[-2])
    assert candidate.meta["kind"] == "retrain"
    assert MIX_KEY not in candidate.meta  # its parent is the network alone, and so is it
    assert candidate.meta["losses"]["candidate_chat"] == pytest.approx(losses.candidate_chat)
    assert Path(result.plot_path).read_bytes()[:8] == PNG_SIGNATURE
    assert (tmp_path / "best.weights.h5").exists()
    assert (tmp_path / "tensorboard").is_dir()
    with open(tmp_path / "history.csv") as f:
        assert len(list(csv.DictReader(f))) == result.epochs

    # The report is plain JSON and comes back whole.
    text = json.dumps(result.to_dict(), allow_nan=False)
    assert RunResult.from_dict(json.loads(text)) == result


def test_a_mixed_model_stays_mixed_and_its_weight_suits_the_chats(live, tmp_path: Path):
    parent = ModelFile(
        live.config,
        live.weights,
        {"kind": "base", MIX_KEY: {"ngram_order": 3, "network_weight": 0.05}},
    )
    result = retrain(parent, pirate_chats(40), FAST, tmp_path, base=BASE)
    candidate = load(tmp_path / CANDIDATE_FILE)
    mix = candidate.meta[MIX_KEY]
    assert mix["ngram_order"] == 3
    # The base corpus' n-gram has never seen pirate talk; the fine-tuned network has, and
    # gets many times the parent's say.
    assert mix["network_weight"] >= 0.4
    # The losses are those of the models as served: the live one is 95% n-gram, far
    # better than its untrained network alone (~8 bits/byte).
    losses = result.losses
    assert losses.live_chat < 6 and losses.live_base < 6
    assert result.accepted, result.reason
    assert losses.candidate_chat < losses.live_chat
    assert losses.candidate_base <= losses.live_base + FAST.gate_margin
    assert candidate.meta["losses"]["candidate_chat"] == pytest.approx(losses.candidate_chat)


def test_the_gate_rejects_a_worse_candidate_and_keeps_it(live, tmp_path: Path):
    wild = RetrainConfig(**{**FAST.__dict__, "learning_rate": 50.0, "epochs": 1})
    result = retrain(live, pirate_chats(12), wild, tmp_path, base=BASE)
    assert result.accepted is False
    assert "no better on the held-out chats" in result.reason
    assert result.losses.candidate_chat > result.losses.live_chat
    assert load(tmp_path / CANDIDATE_FILE).config == live.config  # kept for inspection
    assert (tmp_path / PLOT_FILE).read_bytes()[:8] == PNG_SIGNATURE
    json.dumps(result.to_dict(), allow_nan=False)


def test_frozen_layers_keep_the_lower_weights(live, tmp_path: Path):
    frozen = RetrainConfig(**{**FAST.__dict__, "frozen_layers": 1, "epochs": 1})
    retrain(live, pirate_chats(8), frozen, tmp_path, base=BASE)
    candidate = load(tmp_path / CANDIDATE_FILE)
    for before, after in zip(live.weights[:4], candidate.weights[:4], strict=True):
        np.testing.assert_array_equal(before, after)  # embedding and gru_0
    assert not np.allclose(live.weights[-1], candidate.weights[-1])  # the output layer learned


@pytest.mark.parametrize(
    ("losses", "accepted", "words"),
    [
        (Losses(3.0, 2.0, 2.5, 2.54), True, "accepted"),
        (Losses(3.0, 2.0, 2.5, 2.55), True, "accepted"),  # exactly at the margin
        (Losses(3.0, 3.0, 2.5, 2.0), False, "no better on the held-out chats"),
        (Losses(3.0, 2.0, 2.5, 2.6), False, "forgets the base corpus"),
        (Losses(3.0, math.nan, 2.5, math.nan), False, "no better on the held-out chats"),
    ],
)
def test_gate(losses: Losses, accepted: bool, words: str):
    ok, reason = gate(losses, margin=0.05 + 1e-12)
    assert ok is accepted
    assert words in reason
    if not ok and not math.isnan(losses.candidate_base) and losses.candidate_chat == 3.0:
        assert "forgets" not in reason  # names only the condition that failed


def test_a_mixed_network_that_forgets_cannot_hide_behind_the_ngram():
    # As served the candidate is better on chats and within the margin on the base...
    losses = Losses(
        3.0, 2.0, 2.0, 2.04, live_base_network=2.3, candidate_base_network=2.5, mixed=True
    )
    ok, reason = gate(losses, margin=0.05)
    assert not ok
    assert "its network forgets the base corpus (2.300 -> 2.500 bits/byte alone" in reason
    ok, _ = gate(replace(losses, candidate_base_network=2.34), margin=0.05)
    assert ok
    # a network-alone score that underflowed (a diverged network) fails the check too
    assert not gate(replace(losses, candidate_base_network=math.inf), margin=0.05)[0]


def test_re_weighting_alone_never_passes_the_gate(live):
    data = prepare(pirate_chats(40), FAST, BASE)
    scored = score(network_of(live), data.heldout, data.base_eval, 3)
    verdict = judge(scored, scored, (3, 0.2), FAST.gate_margin)
    credited = verdict.live_weight_credited
    # The same network does better on these chats at another weight than at 0.2 ...
    served = judge(scored, scored, (3, credited), 0.0).losses
    assert credited != 0.2 and verdict.mix == {"ngram_order": 3, "network_weight": credited}
    # ... but the live model is credited with its best admissible weight too.
    losses = verdict.losses
    assert losses.candidate_chat == pytest.approx(losses.live_chat)
    assert not verdict.accepted and not gate(losses, FAST.gate_margin)[0]
    network_base = target_scores(network_of(live), data.base_eval).bits()
    assert losses.live_base_network == pytest.approx(network_base)
    assert losses.candidate_base_network == pytest.approx(network_base)
    assert served.live_chat == pytest.approx(losses.live_chat)


def test_an_unmixed_model_is_judged_on_the_same_path_at_weight_one(live):
    data = prepare(pirate_chats(10), FAST, BASE)
    scored = score(network_of(live), data.heldout, data.base_eval, None)
    verdict = judge(scored, scored, None, FAST.gate_margin)
    assert verdict.mix is None and verdict.live_weight_credited is None
    assert verdict.losses.live_chat == pytest.approx(scored.chat.bits())
    assert verdict.losses.candidate_base == pytest.approx(scored.base.bits())
    assert not verdict.losses.mixed  # the network-alone check is the served one
    assert not verdict.accepted and "no better on the held-out chats" in verdict.reason


def test_the_weight_is_the_best_on_chats_within_the_base_limit():
    chat = {0.0: 3.0, 0.5: 2.0, 1.0: 1.0}
    base = {0.0: 1.9, 0.5: 2.0, 1.0: 2.4}
    assert choose_weight(chat, base, base_limit=2.5) == 1.0
    assert choose_weight(chat, base, base_limit=2.05) == 0.5  # 1.0 forgets too much
    assert choose_weight(chat, base, base_limit=1.0) == 1.0  # none within: the chats decide
    assert choose_weight({0.0: 2.0, 1.0: 2.0}, {0.0: 1.0, 1.0: 1.0}, 9) == 1.0  # ties: network


def test_a_diverged_run_is_described_without_crashing():
    from types import SimpleNamespace

    from bot.reports import describe_run

    run = SimpleNamespace(
        id=3,
        requested_by=None,
        trigger="schedule",
        status="rejected",
        new_version=None,
        live_chat_bits=2.0,
        candidate_chat_bits=None,  # NaN losses are stored as NULL
        live_base_bits=1.9,
        candidate_base_bits=None,
        result_json=None,
        error=None,
    )
    text = describe_run(run)
    assert "Held-out chat: 2.000 → n/a bits/byte; base corpus: 1.900 → n/a." in text


def test_both_failed_conditions_are_named():
    ok, reason = gate(Losses(3.0, 3.5, 2.0, 2.5), margin=0.05)
    assert not ok
    assert "no better on the held-out chats" in reason and "forgets the base corpus" in reason


def test_the_bots_turns_are_context_never_targets():
    data = prepare(pirate_chats(20), FAST, BASE)
    q = ord("Q")
    x, y = pack_windows(data.train, FAST.window)
    assert (x == q).any()  # the bot's lines are read as context...
    assert not (y == q).any()  # ...but never learned
    assert (y == ord("a")).any() and (y == SEP).any()  # human bytes and turn ends are
    # The same holds for the shuffled windows fit really reads, and the held-out data.
    for _, yb in training_dataset(data.train, FAST.train_config()):
        assert not (yb.numpy() == q).any()
    for ids, mask in data.heldout:
        assert not (ids[mask] == q).any()
    assert PAD not in np.concatenate([ids for ids, _ in data.train])


def test_chats_are_cut_into_chunks_with_a_human_turn():
    long_chat = [(f"line {i}", i % 2 == 0) for i in range(40)]
    only_bot = [("just me", False)] * 5
    cut = chunks_of([long_chat, only_bot, []], [7, 8, 9], max_turns=16)
    chunks = [chunk for chunk, _ in cut]
    assert [len(c) for c in chunks] == [16, 16, 8]
    assert chunks[0][0] == ("line 0", True) and chunks[2][-1] == ("line 39", False)
    assert [chat for _, chat in cut] == [7, 7, 7]  # each with its chat


@pytest.mark.parametrize(
    "chats",
    [[], [[("hello", True), ("hi", False)]], [[("a", False)], [("b", False)]]],
)
def test_too_little_data_is_refused_before_training(live, tmp_path: Path, chats):
    with pytest.raises(NotEnoughData, match="not enough conversations to hold any out"):
        retrain(live, chats, FAST, tmp_path, base=BASE)
    assert not (tmp_path / CANDIDATE_FILE).exists()


def test_the_split_and_base_slices_are_fixed():
    first = prepare(pirate_chats(30, seed=1), FAST, BASE)
    again = prepare(pirate_chats(30, seed=1), FAST, BASE)
    assert [ids.tolist() for ids, _ in first.heldout] == [ids.tolist() for ids, _ in again.heldout]
    assert first.examples == again.examples
    heldout = [[f"conversation {i}", "reply"] for i in range(50)]
    picked = base_eval_slice(heldout, 10, seed=3)
    assert picked == base_eval_slice(heldout, 10, seed=3) and len(picked) == 10
    assert picked == sorted(picked, key=heldout.index)  # in corpus order
    assert base_eval_slice(heldout, 100, seed=3) == heldout


def test_the_held_out_chats_are_new_ones_and_replayed_chats_are_trained_on():
    old = [[(f"old times {i}", True), ("QQ", False)] for i in range(30)]
    data = prepare(pirate_chats(10), FAST, BASE, replay=old)
    ex = data.examples
    assert (ex.train_chunks, ex.heldout_chunks, ex.replay_chunks) == (8 + 30, 2, 30)
    heldout = b"".join(bytes(int(i) for i in ids if i < 256) for ids, _ in data.heldout)
    assert b"arr" in heldout or b"ahoy" in heldout or b"grog" in heldout
    assert b"old times" not in heldout
    trained = b"".join(bytes(int(i) for i in ids if i < 256) for ids, _ in data.train)
    assert trained.count(b"old times") == 30
    # Too few new chats to hold one out: the replayed ones are split with them.
    data = prepare(pirate_chats(1), FAST, BASE, replay=old)
    assert data.examples.train_chunks + data.examples.heldout_chunks == 31
    assert data.examples.heldout_chunks >= 2


def test_a_run_out_of_time_is_judged_and_says_so(live, tmp_path: Path):
    from types import SimpleNamespace

    from bot.reports import describe_run

    result = retrain(live, pirate_chats(20), replace(FAST, max_seconds=0.0), tmp_path, base=BASE)
    assert result.out_of_time and result.epochs == 1 and result.best_epoch == 1
    assert math.isfinite(result.losses.candidate_chat)  # its part-epoch was judged
    stored = json.loads(json.dumps(result.to_dict()))
    assert RunResult.from_dict(stored).out_of_time
    run = SimpleNamespace(
        id=4,
        requested_by=None,
        trigger="schedule",
        status="published" if result.accepted else "rejected",
        new_version=2,
        live_chat_bits=None,
        result_json=json.dumps(stored),
        error=None,
    )
    assert "(best 1, stopped at its time budget)" in describe_run(run)


def test_the_held_out_chats_are_capped_and_the_rest_trained_on():
    capped = replace(FAST, heldout_bytes=200)
    full, small = prepare(pirate_chats(40), FAST, BASE), prepare(pirate_chats(40), capped, BASE)
    assert full.examples.heldout_chunks == 8
    assert 1 <= small.examples.heldout_chunks < 8 and small.examples.heldout_bytes <= 200
    assert small.examples.train_chunks + small.examples.heldout_chunks == 40


def test_the_base_mix_keeps_its_share_when_the_base_corpus_is_small():
    config = replace(FAST, base_mix=20.0)
    corpus_bytes = sum(len(t) + 1 for c in BASE[0] for t in c)
    data = prepare(pirate_chats(40), config, BASE)
    ex = data.examples
    assert 20.0 * ex.train_bytes > 2 * corpus_bytes  # more than the corpus holds, twice
    assert ex.base_bytes >= 20.0 * ex.train_bytes  # gone through again, not run out


def test_the_real_base_corpus_is_used_by_default():
    config = RetrainConfig(base_eval_conversations=50)
    data = prepare(pirate_chats(10), config)
    assert data.examples.base_eval_conversations == 50
    assert data.examples.base_bytes >= config.base_mix * data.examples.train_bytes


def test_an_epoch_that_forgets_the_base_is_never_kept_however_good_on_chats():
    net = network_of(untrained_model(units=16))
    base = [conversation_ids(["hello there", "hi, how are you?"])]
    now = target_scores(net, base).bits()
    keeper = KeepAdmissible(base, base_limit=now + 0.05, patience=2)
    keeper.set_model(net)
    net.stop_training = False
    logs = {"val_loss": 3.0}
    keeper.on_epoch_end(0, logs)
    assert logs[KEPT] == 3.0 and logs["base_bits"] == pytest.approx(now)
    weights = net.get_weights()
    weights[-1] = weights[-1] + np.random.default_rng(0).normal(0, 5, weights[-1].shape)
    net.set_weights(weights)  # now far worse on the base slice...
    logs = {"val_loss": 1.0}  # ...though better on the chats
    keeper.on_epoch_end(1, logs)
    assert logs["base_bits"] > now + 0.05
    assert logs[KEPT] >= 1.0 + 1e6  # kept only if every epoch forgot as much
    assert not net.stop_training  # one epoch over the margin: training goes on
    keeper.on_epoch_end(2, {"val_loss": 0.5})
    assert net.stop_training  # two in a row: the run stops
