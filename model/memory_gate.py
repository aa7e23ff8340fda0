"""The retraining gate with the chat memory: a candidate is judged as the bot will serve
it, mixed with the users' memory at weights fitted for its network.

The bot fits the memory's weights (model.memory_fit) for each version as it goes live,
so a candidate is served with weights chosen for it. Judged without the memory (model.gate
alone), a run would be credited with learning what the memory already serves, and the
network's one global weight would make learning the users' style pay on the base slice.
With it, the weights depend on each context's evidence: where the memory and the network
know the users' words the network may have its say, elsewhere the base n-grams keep
theirs.

The memory judged with is the bot's, counted again by the same rules (its window, each
user's repeats once, `min_users`) less every message of the window said in a held-out
chat chunk (the same chat, the same text). The window keeps one copy of each user's
repeated text (the newest), so a text a user wrote both in a held-out chat and later
elsewhere stays counted: rare, and then the memory knows it as the bot's does.
Each network's weights are fitted by the bot's rule (model.memory_fit.fit_weights: best
on the chats while one half of the base slice stays within that network's memory margin
of it served without a memory, the other half fitted on) on one half of the held-out
chat chunks and of the base slice, and score the other halves, then the other way
round, so neither is credited for weights chosen on what it is judged on. Where no
weights keep the base slice within the margin the bot serves that network without a
memory, and so it is judged. The candidate's memory margin is the gate's margin less
what its network lost on the base slice against the live model (it is stored in its
file, and the bot fits with it too): served with the memory, the candidate's base slice
stays within the margin of the live model without one by the weights' own rule, and
the gate checks the candidate served without the memory (model.gate.gate). The base
slice with the memory, scored on the halves the weights were not fitted or checked on,
is reported.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from model.codec import Encoded
from model.gate import Scored, Verdict, gate
from model.languages import served_mix
from model.memory import MEMORY_ORDER, Messages, count_memory
from model.memory_fit import (
    MIN_HELDOUT_BYTES,
    fit_weights,
    memory_margin,
    probs_without,
    with_memory,
)
from model.modelfile import ModelFile
from model.ngram import ByteNGram
from model.retrain_data import RetrainData
from model.run_result import Losses
from model.scoring import TargetScores, conversation_halves, ngram_scores
from model.weighting import mean_bits

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BotMemory:
    """What the bot's chat memory is counted from (bot.chat_memory), to count it again."""

    window: Messages
    min_users: int


@dataclass(frozen=True)
class MemoryLosses:
    """Held-out bits/byte as served with the memory, each network with its own weights."""

    live_chat: float
    candidate_chat: float
    candidate_base: float


def rejudge(
    verdict: Verdict,
    live: ModelFile,
    live_scores: Scored,
    candidate_scores: Scored,
    memory: BotMemory,
    data: RetrainData,
    margin: float,
) -> Verdict:
    """`verdict` (model.gate.judge's) judged again as served with the bot's chat memory;
    as it was when the held-out chats are too few to fit the memory's weights."""
    order, live_weight = served_mix(live)
    served = (live_weight, verdict.mix["network_weight"] if verdict.mix else 1.0)
    credited = verdict.live_weight_credited
    fallback = (live_weight if credited is None else credited, served[1])
    margins = (memory_margin(live), candidate_memory_margin(verdict.losses, margin))
    losses = judge_memory(
        live_scores,
        candidate_scores,
        judging_memory(memory, data.heldout_said),
        data.heldout,
        data.base_eval,
        order,
        served,
        fallback,
        margins,
    )
    if losses is None:
        log.info("too few held-out chats to fit the chat memory's weights: judged without it")
        return verdict
    return judged_with_memory(verdict, losses, margin)


def candidate_memory_margin(losses: Losses, margin: float) -> float:
    """The candidate's memory margin (model.memory_fit.memory_margin): `margin` less what
    its network lost on the base slice against the live model, both without a memory."""
    without = losses.candidate_base_without_memory if losses.memory else losses.candidate_base
    left = margin + losses.live_base - without
    if math.isnan(left) or left == -math.inf:  # a diverged candidate: no memory margin
        return 0.0
    return margin if left == math.inf else max(0.0, left)


def judging_memory(memory: BotMemory, heldout_said: frozenset[tuple[int, str]]) -> ByteNGram:
    """The bot's memory less the held-out turns ((chat id, text) pairs)."""
    window = memory.window
    keep = [
        i
        for i, said in enumerate(zip(window.chats, window.texts, strict=True))
        if said not in heldout_said
    ]
    return count_memory(window.subset(keep), MEMORY_ORDER, memory.min_users)


def judge_memory(
    live: Scored,
    candidate: Scored,
    memory: ByteNGram,
    heldout: Sequence[Encoded],
    base_eval: Sequence[Encoded],
    order: int,
    served: tuple[float, float],
    fallback: tuple[float, float],
    margins: tuple[float, float],
) -> MemoryLosses | None:
    """Both networks' losses as served with `memory` (module docstring), their scores
    holding the base n-grams of `order`. `served`: the live and the candidate network's
    weights as served without a memory (what each one's margin is counted from);
    `fallback`: those read where no memory weights hold the margin (the live model's as
    model.gate credits it); `margins`: each one's memory margin (model.memory_fit).
    None when either half of the held-out chunks has fewer than MIN_HELDOUT_BYTES target
    bytes, or a half of the base slice fewer than two: too little to fit weights on."""
    chat_half, base_half = conversation_halves(heldout), conversation_halves(base_eval)
    if (
        min(np.bincount(chat_half, minlength=2)) < MIN_HELDOUT_BYTES
        or min(np.bincount(base_half, minlength=2)) < 2
    ):
        return None
    if live.base.evidence is None or candidate.base.evidence is None:
        raise ValueError("the gate's scores hold no base n-gram evidence to weigh by")
    shape = (order, MEMORY_ORDER)
    on_chats, on_base = ngram_scores(memory, heldout), ngram_scores(memory, base_eval)
    losses = []
    for net, weight, fallen, allowed in zip(
        (live, candidate), served, fallback, margins, strict=True
    ):
        chat, base = with_memory(_known(net.chat), on_chats), with_memory(_known(net.base), on_base)
        chat_p, base_p = np.empty(len(chat.p)), np.empty(len(base.p))
        for h in (0, 1):
            mine_chat, mine_base = chat_half == h, base_half == h
            # The bot's rule, fitted on the other halves of the chats and the base slice.
            fitted = fit_weights(
                shape, chat.subset(~mine_chat), base.subset(~mine_base), weight, allowed
            )
            for p, mine, scored in (
                (chat_p, mine_chat, chat.subset(mine_chat)),
                (base_p, mine_base, base.subset(mine_base)),
            ):
                if fitted is None:
                    p[mine] = probs_without(fallen, scored)
                else:
                    p[mine] = fitted.probs(scored.p, scored.base_evidence, scored.memory_evidence)
        losses.append((mean_bits(chat_p), mean_bits(base_p)))
    (live_chat, _), (candidate_chat, candidate_base) = losses
    return MemoryLosses(live_chat, candidate_chat, candidate_base)


def judged_with_memory(verdict: Verdict, memory: MemoryLosses, margin: float) -> Verdict:
    """`verdict` (model.gate.judge's, without the memory) judged again with `memory`'s
    losses: the chats as served with it; the base slice as served with it is reported,
    and as served without it checked (model.gate.gate)."""
    before = verdict.losses
    losses = dataclasses.replace(
        before,
        live_chat=memory.live_chat,
        candidate_chat=memory.candidate_chat,
        candidate_base=memory.candidate_base,
        memory=True,
        live_chat_without_memory=before.live_chat,
        candidate_chat_without_memory=before.candidate_chat,
        candidate_base_without_memory=before.candidate_base,
    )
    accepted, reason = gate(losses, margin)
    return dataclasses.replace(verdict, accepted=accepted, reason=reason, losses=losses)


def _known(scores: TargetScores) -> tuple:
    return scores.network, scores.ngram, scores.evidence
