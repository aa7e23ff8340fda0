"""model/memory_gate.py: the retraining gate judging both models as served with the
chat memory (a tiny GRU, a few dozen lines of pirate talk from five users, the base
n-grams of order 3 in the synthetic cases)."""

from __future__ import annotations

import json
import math
import random
from dataclasses import replace

import keras
import numpy as np
import pytest
from test_retrain import BASE, BOT_LINE, FAST, pirate_chats
from toy_model import untrained_model

from model.codec import encode_turns
from model.gate import Scored, gate, judge, score
from model.memory import Messages
from model.memory_fit import MEMORY_MARGIN_KEY, MIN_HELDOUT_BYTES, memory_margin
from model.memory_gate import (
    BotMemory,
    candidate_memory_margin,
    judge_memory,
    judged_with_memory,
    judging_memory,
    rejudge,
)
from model.modelfile import ModelFile, load
from model.network import network_of
from model.retrain import CANDIDATE_FILE, retrain
from model.retrain_data import prepare
from model.run_result import Losses, RunResult
from model.scoring import BASE_MARGIN, TargetScores, ngram_scores

ORDER = 3
USERS = 5
# Served and fallback weights (unmixed networks), memory margins (the live model's own,
# the candidate's as the gate gives it when its network lost nothing).
SAME = ((1.0, 1.0), (1.0, 1.0), (FAST.gate_margin, FAST.gate_margin))


@pytest.fixture(scope="module")
def live():
    keras.utils.set_random_seed(5)
    return untrained_model(units=32)


def window(chats) -> BotMemory:
    """The bot's memory window over `chats` (chat n written by user n % USERS)."""
    rows = [(n, n % USERS, text) for n, chat in enumerate(chats) for text, human in chat if human]
    return BotMemory(Messages.of(rows), min_users=3)


def ids(chats) -> tuple[list[int], list[int]]:
    return list(range(len(chats))), []


def scored_as(probs_chat, probs_base, like: Scored) -> Scored:
    """`like` (real base n-gram scores and evidence) with the network's part replaced."""
    return Scored(
        TargetScores(probs_chat, like.chat.ngram, like.chat.evidence),
        TargetScores(probs_base, like.base.ngram, like.base.evidence),
    )


def real_scores(net, data) -> Scored:
    return score(net, data.heldout, data.base_eval, ORDER)


def judged(live: Scored, candidate: Scored, memory, data, weights=SAME):
    return judge_memory(live, candidate, memory, data.heldout, data.base_eval, ORDER, *weights)


@pytest.fixture(scope="module")
def setting(live):
    chats = pirate_chats(60)
    data = prepare(chats, FAST, BASE, chats=ids(chats))
    return (
        chats,
        data,
        judging_memory(window(chats), data.heldout_said),
        real_scores(network_of(live), data),
    )


def test_the_held_out_turns_are_never_counted():
    chats = pirate_chats(60)
    data = prepare(chats, FAST, BASE, chats=ids(chats))
    held = {tuple(map(tuple, chunk)) for chunk in (chats[n] for n, _ in data.heldout_said)}
    assert data.heldout_said and len(held) == FAST.holdout * len(chats)
    # A canary said only in a held-out chat: the bot's memory (min users 1 here) knows
    # it, the gate's does not.
    chat, _ = sorted(data.heldout_said)[0]
    canary = "zqxj vwkp zqxj vwkp"
    memory = BotMemory(Messages.of([(chat, 1, canary), (999, 2, "ahoy")]), min_users=1)
    said = data.heldout_said | {(chat, canary)}
    probe = [encode_turns([canary])]
    knows = judging_memory(memory, frozenset()).target_probs(probe).mean()
    blind = judging_memory(memory, said).target_probs(probe).mean()
    assert knows > 0.5 > 0.05 > blind


def test_what_the_memory_already_knows_is_credited_less(setting):
    """A candidate whose network knows exactly what the memory knows beats a know-nothing
    live network by far without the memory, and by much less with it: the memory serves
    that already."""
    _, data, memory, real = setting
    n_chat, n_base = len(real.chat.network), len(real.base.network)
    uniform = scored_as(np.full(n_chat, 1 / 257), np.full(n_base, 1 / 257), real)
    knows = scored_as(ngram_scores(memory, data.heldout)[0], np.full(n_base, 1 / 257), real)
    verdict = judge(uniform, knows, None, FAST.gate_margin)
    with_memory = judged(uniform, knows, memory, data)
    gain_without = verdict.losses.live_chat - verdict.losses.candidate_chat
    gain_with = with_memory.live_chat - with_memory.candidate_chat
    assert gain_without > 4  # bits/byte: from uniform (8) to the memory's grasp of the chats
    assert with_memory.live_chat < verdict.losses.live_chat - 4  # the memory serves it
    assert 0 <= gain_with < gain_without / 4


@pytest.mark.parametrize("knowing", [False, True])
def test_the_same_network_never_passes(setting, knowing: bool):
    """Weights fitted for each network the same way: the live network judged against
    itself gains nothing, with a memory that knows the chats or one that knows nothing."""
    _, data, memory, real = setting
    if not knowing:
        memory = judging_memory(BotMemory(Messages.of([]), 3), frozenset())
    verdict = judge(real, real, None, FAST.gate_margin)
    losses = judged(real, real, memory, data)
    assert losses.live_chat == losses.candidate_chat
    assert not judged_with_memory(verdict, losses, FAST.gate_margin).accepted


def test_a_candidate_that_knows_more_than_the_memory_is_credited(setting):
    _, data, memory, real = setting
    sure = scored_as(np.full(len(real.chat.network), 0.99), real.base.network, real)
    losses = judged(real, sure, memory, data)
    assert losses.candidate_chat < losses.live_chat / 1.5


def test_a_candidate_that_forgot_the_base_is_rejected_with_the_memory_too(setting):
    """Better on the chats with the memory, but served without it a bit over a bit worse
    on the base slice than the live model: rejected, and its memory margin is nothing."""
    _, data, memory, real = setting
    n_chat = len(real.chat.network)
    good_base = real.base.ngram  # a live network as good as the base n-gram on the base
    live = scored_as(real.chat.network, good_base, real)
    worse = scored_as(np.full(n_chat, 0.99), good_base * 0.5, real)  # a bit over 1 bit worse
    verdict = judge(live, worse, None, FAST.gate_margin)
    left = candidate_memory_margin(verdict.losses, FAST.gate_margin)
    assert left == 0.0
    losses = judged(live, worse, memory, data, (*SAME[:2], (FAST.gate_margin, left)))
    candidate_without = verdict.losses.candidate_base
    assert candidate_without > verdict.losses.live_base + 0.9
    assert losses.candidate_base != pytest.approx(candidate_without)  # weights were fitted
    after = judged_with_memory(verdict, losses, FAST.gate_margin)
    assert losses.candidate_chat < losses.live_chat  # better on the chats...
    assert not after.accepted  # ...but the base slice is not the live model's
    assert "forgets the base corpus" in after.reason


def test_weights_are_never_judged_on_the_half_they_were_fitted_on(setting):
    """A candidate sure and right on the even held-out chunks and sure and wrong on the odd
    ones: weights fitted on each half and scored on the same half would credit it on
    both (the network where it is right, the memory where it is wrong); fitted on one
    half and scored on the other, it pays for being wrong."""
    _, data, memory, real = setting
    even = np.concatenate(
        [np.full(int(m[1:].sum()), n % 2 == 0) for n, (_, m) in enumerate(data.heldout)]
    )
    erratic = scored_as(np.where(even, 0.99, 1e-6), real.base.network, real)
    losses = judged(real, erratic, memory, data)
    assert losses.candidate_chat > losses.live_chat + 0.25  # in-sample: below live_chat


def test_too_few_heldout_bytes_judge_without_the_memory(live):
    chats = pirate_chats(12, turns=6)
    data = prepare(chats, FAST, BASE, chats=ids(chats))
    halves = [sum(int(m[1:].sum()) for _, m in data.heldout[h::2]) for h in (0, 1)]
    assert len(data.heldout) >= 2 and 0 < min(halves) < MIN_HELDOUT_BYTES
    real = real_scores(network_of(live), data)
    memory = judging_memory(window(chats), data.heldout_said)
    assert judged(real, real, memory, data) is None


def test_with_the_memory_the_gate_checks_the_candidate_served_without_it():
    """Served with the memory, the base slice is held by the weights' own fit (the
    candidate's memory margin); the gate checks the network's own loss without it."""
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
    assert "(2.500 -> 2.600 bits/byte on its held-out slice without the chat memory" in reason
    ok, reason = gate(replace(losses, candidate_base_without_memory=2.52), 0.05)
    assert ok and reason.startswith("accepted as served with the chat memory: held-out chats")
    # ... which leaves the memory 0.03 of the margin (model.memory_fit.memory_margin)
    assert candidate_memory_margin(replace(losses, candidate_base_without_memory=2.52), 0.05) == (
        pytest.approx(0.03)
    )
    assert candidate_memory_margin(losses, 0.05) == 0.0  # never below nothing
    without = replace(losses, memory=False, candidate_base=2.49)  # better than the live one
    assert candidate_memory_margin(without, 0.05) == pytest.approx(0.06)


def echo_chats(n: int, turns: int = 6, seed: int = 0) -> list[list[tuple[str, bool]]]:
    """Chats whose lines begin as the base slice's (BASE) do and end otherwise."""
    lines = ["to you too, arr matey!", "you are welcomed aboard, ye dog!", "thanks ye bilge rat!"]
    rng = random.Random(seed)
    return [
        [(rng.choice(lines), True) if j % 2 == 0 else (BOT_LINE, False) for j in range(turns)]
        for _ in range(n)
    ]


def test_the_candidates_memory_margin_holds_its_memory_weights(live):
    """A network that knows the base slice and nothing of the chats, and a memory of chats
    that begin the base slice's phrases and end them otherwise: the less of the margin a
    network has left, the less the memory may take from the base slice, so the less it
    helps on the chats. The gate gives the candidate what its network left of the margin,
    not the live model's."""
    chats = echo_chats(60)
    data = prepare(chats, FAST, BASE, chats=ids(chats))
    bot_memory = window(chats)
    memory = judging_memory(bot_memory, data.heldout_said)
    real = real_scores(network_of(live), data)
    blind = np.full(len(real.chat.network), 1 / 257)
    knows = scored_as(blind, np.full(len(real.base.network), 0.75), real)
    full, little, none = (
        judged(knows, knows, memory, data, (*SAME[:2], (FAST.gate_margin, allowed)))
        for allowed in (FAST.gate_margin, 0.01, 0.0)
    )
    assert full.candidate_chat == full.live_chat
    assert full.candidate_chat + 0.1 < little.candidate_chat < none.candidate_chat
    assert full.candidate_base > max(little.candidate_base, none.candidate_base)
    # A candidate whose network lost 0.04 of the 0.05 on the base slice has 0.01 left.
    lost = scored_as(blind, np.full(len(real.base.network), 0.75 * 2**-0.04), real)
    verdict = judge(knows, lost, None, FAST.gate_margin)
    left = candidate_memory_margin(verdict.losses, FAST.gate_margin)
    assert left == pytest.approx(0.01)
    losses = rejudge(verdict, live, knows, lost, bot_memory, data, FAST.gate_margin).losses
    own = judged(knows, lost, memory, data, (*SAME[:2], (FAST.gate_margin, left)))
    assert losses.candidate_chat == pytest.approx(own.candidate_chat)
    assert losses.candidate_chat > judged(knows, lost, memory, data).candidate_chat + 0.1


def test_the_bot_fits_a_version_with_its_memory_margin(live):
    assert memory_margin(live) == BASE_MARGIN  # the base model, and any version before them
    own = ModelFile(live.config, live.weights, {**live.meta, MEMORY_MARGIN_KEY: 0.01})
    assert memory_margin(own) == 0.01


def test_a_run_is_judged_with_the_memory_the_bot_serves(live, tmp_path):
    """Lines of four pirate words out of eight: the bot's memory of the other chats
    serves the held-out ones about as well as a network can, so what the run learnt,
    worth bits without the memory, is worth next to nothing as served."""
    chats = pirate_chats(60)
    result = retrain(live, chats, FAST, tmp_path, base=BASE, memory=window(chats), chats=ids(chats))
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
    stored = load(tmp_path / CANDIDATE_FILE).meta[MEMORY_MARGIN_KEY]
    assert stored == pytest.approx(candidate_memory_margin(losses, FAST.gate_margin))


def test_a_memory_without_the_chats_ids_is_refused(live, tmp_path):
    chats = pirate_chats(10)
    with pytest.raises(ValueError, match="needs each chat's id"):
        retrain(live, chats, FAST, tmp_path, base=BASE, memory=window(chats))
