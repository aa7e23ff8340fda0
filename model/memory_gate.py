"""The retraining gate with the chat memory: a candidate is judged as the bot will serve
it, mixed with the users' memory at weights fitted for its network.

The bot fits the memory's weights (model.memory_fit) for each version as it goes live,
so a candidate is served with weights chosen for it. Judged without the memory (model.gate
alone), a run would be credited with learning what the memory already serves, and the
network's one global weight would make learning the users' style pay on the base slice.
With it, the weights depend on each context's evidence: where the memory and the network
know the users' words the network may have its say, elsewhere the base n-grams keep
theirs.

Neither network may be judged on text the memory counted: the memory here is a byte
n-gram of the run's training chats (human turns, each chunk in order; never served or
saved, so without the served memory's several-users rule). Weights are fitted for each
network by the memory builder's rule (model.memory_fit.fit_weights) on one half of the
held-out chat chunks and of the base slice, and score the other halves, then the other
way round, so neither network is credited for weights chosen on what it is judged on.
The base slice's scored half must stay within the margin of the live model served
without a memory (the promise to chats in other languages); a network for which no
weights manage that is judged as served without a memory, as the bot would serve it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from model.codec import Encoded, Turn, encode_turns
from model.gate import Scored, Verdict, gate
from model.memory import MEMORY_ORDER
from model.memory_fit import MIN_HELDOUT_BYTES, fit_weights
from model.memory_fit import Scored as MemoryScored
from model.ngram import ByteNGram
from model.scoring import TargetScores, ngram_scores
from model.weighting import MixWeights, fixed, stack


@dataclass(frozen=True)
class MemoryLosses:
    """Held-out bits/byte as served with the memory, each network with its own weights."""

    live_chat: float
    candidate_chat: float
    candidate_base: float


def chat_memory(chunks: Sequence[Sequence[Turn]]) -> ByteNGram:
    """The memory the gate judges with: the human turns of `chunks`, each chunk in order."""
    texts = [[text for text, human in chunk if human] for chunk in chunks]
    return ByteNGram(MEMORY_ORDER).fit(encode_turns(t) for t in texts if t)


def judge_memory(
    live: Scored,
    candidate: Scored,
    memory: ByteNGram,
    heldout: Sequence[Encoded],
    base_eval: Sequence[Encoded],
    order: int,
    weights: tuple[float, float],
    margin: float,
) -> MemoryLosses | None:
    """Both networks' losses as served with `memory` (module docstring), the scores
        holding the base n-grams of `order`; `weights`: the live and the candidate network's
        weights as served without a memory. None when the held-out chats are too few to fit
        weights on: fewer than MIN_HELDOUT_BYTES target bytes in either half of the held-out
    chunks (a memory builder would fit none either)."""
    chat_half, base_half = _parity(heldout), _parity(base_eval)
    if (
        min(np.bincount(chat_half, minlength=2)) < MIN_HELDOUT_BYTES
        or min(np.bincount(base_half, minlength=2)) < 1
    ):
        return None
    if live.base.evidence is None or candidate.base.evidence is None:
        raise ValueError("the gate's scores hold no base n-gram evidence to weigh by")
    shape = (order, MEMORY_ORDER)
    chat_memory_scores = ngram_scores(memory, heldout)
    base_memory_scores = ngram_scores(memory, base_eval)
    live_base = _scored(live.base, base_memory_scores)
    losses = []
    for net, weight in zip((live, candidate), weights, strict=True):
        chat = _scored(net.chat, chat_memory_scores)
        base = _scored(net.base, base_memory_scores)
        chat_p, base_p = np.empty(len(chat.p)), np.empty(len(base.p))
        for h in (0, 1):
            mine_chat, mine_base = chat_half == h, base_half == h
            check = base.subset(mine_base)
            limit = _mean_bits(_probs(_without(weights[0]), live_base.subset(mine_base), True))
            fitted = fit_weights(
                shape, chat.subset(~mine_chat), base.subset(~mine_base), check, limit + margin
            )
            table = fitted if fitted is not None else _without(weight)
            chat_p[mine_chat] = _probs(table, chat.subset(mine_chat), fitted is None)
            base_p[mine_base] = _probs(table, check, fitted is None)
        losses.append((_mean_bits(chat_p), _mean_bits(base_p)))
    (live_chat, _), (candidate_chat, candidate_base) = losses
    return MemoryLosses(live_chat, candidate_chat, candidate_base)


def judged_with_memory(verdict: Verdict, memory: MemoryLosses, margin: float) -> Verdict:
    """`verdict` (model.gate.judge's, without the memory) judged again with `memory`'s
    losses: the chats and the base slice as served with it, and the base slice still
    within the margin as served without it."""
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


def _scored(scores: TargetScores, memory: tuple[np.ndarray, np.ndarray]) -> MemoryScored:
    p_mem, e_mem = memory
    return MemoryScored(stack([scores.network, scores.ngram, p_mem]), scores.evidence, e_mem)


def _parity(encoded: Sequence[Encoded]) -> np.ndarray:
    """Per target byte: 0 or 1 by its conversation's position, alternating."""
    return np.concatenate(
        [np.full(int(np.count_nonzero(mask[1:])), n % 2) for n, (_, mask) in enumerate(encoded)]
    )


def _without(weight: float) -> MixWeights:
    return fixed(weight, (1, 1))


def _probs(table: MixWeights, scored: MemoryScored, without: bool) -> np.ndarray:
    if without:
        nowhere = np.zeros_like(scored.base_evidence)
        return table.probs(scored.p, nowhere, nowhere)
    return table.probs(scored.p, scored.base_evidence, scored.memory_evidence)


def _mean_bits(p: np.ndarray) -> float:
    return float(-np.log2(np.maximum(p, 1e-30)).mean())
