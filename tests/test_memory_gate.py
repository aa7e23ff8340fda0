"""model/memory_gate.py: the retraining gate judging both models as served with the
chat memory (a tiny GRU, a few dozen lines of pirate talk, the base n-grams of order 3
in the synthetic cases)."""

from __future__ import annotations

import json
import math

import keras
import numpy as np
import pytest
from test_retrain import BASE, FAST, pirate_chats
from toy_model import untrained_model

from model.gate import Scored, gate, judge
from model.memory_fit import MIN_HELDOUT_BYTES
from model.memory_gate import chat_memory, judge_memory, judged_with_memory
from model.network import network_of
from model.retrain import retrain
from model.retrain_data import prepare
from model.run_result import Losses, RunResult
from model.scoring import TargetScores, ngram_scores, target_scores

ORDER = 3


@pytest.fixture(scope="module")
def live():
    keras.utils.set_random_seed(5)
    return untrained_model(units=32)


def scored_as(probs_chat, probs_base, like: Scored) -> Scored:
    """`like` (real base n-gram scores and evidence) with the network's part replaced."""
    return Scored(
        TargetScores(probs_chat, like.chat.ngram, like.chat.evidence),
        TargetScores(probs_base, like.base.ngram, like.base.evidence),
    )


def real_scores(net, data) -> Scored:
    return Scored(
        target_scores(net, data.heldout, ORDER), target_scores(net, data.base_eval, ORDER)
    )


def test_what_the_memory_already_knows_is_credited_less(live):
    """A candidate whose network knows exactly what the memory knows beats a know-nothing
    live network by far without the memory, and by much less with it: the memory serves
    that already."""
    data = prepare(pirate_chats(60), FAST, BASE)
    memory = chat_memory(data.train_chats)
    real = real_scores(network_of(live), data)
    n_chat, n_base = len(real.chat.network), len(real.base.network)
    uniform = scored_as(np.full(n_chat, 1 / 257), np.full(n_base, 1 / 257), real)
    knows = scored_as(ngram_scores(memory, data.heldout)[0], np.full(n_base, 1 / 257), real)
    verdict = judge(uniform, knows, None, FAST.gate_margin)
    with_memory = judge_memory(
        uniform, knows, memory, data.heldout, data.base_eval, ORDER, (1.0, 1.0), FAST.gate_margin
    )
    gain_without = verdict.losses.live_chat - verdict.losses.candidate_chat
    gain_with = with_memory.live_chat - with_memory.candidate_chat
    assert gain_without > 4  # bits/byte: from uniform (8) to the memory's grasp of the chats
    assert with_memory.live_chat < verdict.losses.live_chat - 4  # the memory serves it
    assert 0 <= gain_with < gain_without / 4


@pytest.mark.parametrize("knowing", [False, True])
def test_the_same_network_never_passes(live, knowing: bool):
    """Weights fitted for each network the same way: the live network judged against
    itself gains nothing, with a memory that knows the chats or one that knows nothing."""
    data = prepare(pirate_chats(60), FAST, BASE)
    memory = chat_memory(data.train_chats if knowing else [])
    real = real_scores(network_of(live), data)
    verdict = judge(real, real, None, FAST.gate_margin)
    losses = judge_memory(
        real, real, memory, data.heldout, data.base_eval, ORDER, (1.0, 1.0), FAST.gate_margin
    )
    assert losses.live_chat == losses.candidate_chat
    assert not judged_with_memory(verdict, losses, FAST.gate_margin).accepted


def test_too_few_heldout_bytes_judge_without_the_memory(live):
    data = prepare(pirate_chats(6, turns=2), FAST, BASE)
    targets = sum(int(mask[1:].sum()) for _, mask in data.heldout)
    assert targets < 2 * MIN_HELDOUT_BYTES
    real = real_scores(network_of(live), data)
    memory = chat_memory(data.train_chats)
    args = (data.heldout, data.base_eval, ORDER, (1.0, 1.0), FAST.gate_margin)
    assert judge_memory(real, real, memory, *args) is None


def test_served_without_the_memory_the_base_slice_must_hold_too():
    losses = Losses(
        3.0,
        2.0,
        2.5,
        2.54,
        memory=True,
        candidate_base_without_memory=2.6,
        live_chat_without_memory=3.5,
        candidate_chat_without_memory=2.9,
    )
    ok, reason = gate(losses, margin=0.05)
    assert not ok
    assert reason.startswith("rejected as served with the chat memory: forgets the base corpus")
    assert "without the chat memory (2.500 -> 2.600" in reason
    ok, reason = gate(Losses(**{**losses.__dict__, "candidate_base_without_memory": 2.52}), 0.05)
    assert ok and reason.startswith("accepted as served with the chat memory: held-out chats")


def test_a_candidate_that_knows_more_than_the_memory_is_credited(live):
    data = prepare(pirate_chats(60), FAST, BASE)
    memory = chat_memory(data.train_chats)
    real = real_scores(network_of(live), data)
    n_chat = len(real.chat.network)
    sure = scored_as(np.full(n_chat, 0.99), real.base.network, real)  # every chat byte
    losses = judge_memory(
        real, sure, memory, data.heldout, data.base_eval, ORDER, (1.0, 1.0), FAST.gate_margin
    )
    assert losses.candidate_chat < losses.live_chat / 1.5
    live_base = judge(real, real, None, FAST.gate_margin).losses.live_base
    assert losses.candidate_base <= live_base + FAST.gate_margin


def test_a_run_is_judged_with_the_memory_the_bot_serves(live, tmp_path):
    """Lines of four pirate words out of eight: the memory of the training chats serves
    the held-out ones about as well as a network can, so what the run learnt, worth
    bits without the memory, is worth next to nothing as served."""
    result = retrain(live, pirate_chats(60), FAST, tmp_path, base=BASE, with_memory=True)
    losses = result.losses
    assert losses.memory
    assert result.reason.startswith(
        ("accepted as served with the chat memory", "rejected as served with the chat memory")
    )
    assert result.accepted == gate(losses, FAST.gate_margin)[0]
    assert losses.candidate_chat_without_memory < losses.live_chat_without_memory - 2
    assert losses.live_chat < losses.live_chat_without_memory - 2
    assert abs(losses.candidate_chat - losses.live_chat) < 0.3
    assert math.isfinite(losses.candidate_base_without_memory)
    text = json.dumps(result.to_dict(), allow_nan=False)
    assert RunResult.from_dict(json.loads(text)) == result
