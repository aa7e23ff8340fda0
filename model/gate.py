"""The retraining gate: a candidate is published only if, as served, it beats the live
model on held-out chats and forgets at most a margin of the base corpus.

Both models are scored once (model.scoring) on the run's held-out chats and on a
held-out slice of the base corpus; every weight of the mixture is then read from those
scores. An unmixed live model is a mixture at network weight 1 and is judged the same
way, on a grid of that one weight.

A mixed model stays mixed. The candidate gets the network weight that scores best on
the held-out chats among those that keep the base slice within the margin of the live
model as served (the n-gram knows nothing of the chats, so it usually gets less say
than before). Since that weight is chosen on the chats the gate then judges, the live
model is credited the same way: its chat loss is that of its own best such weight, so
re-weighting alone never passes. And the candidate's network alone must stay within the
margin on the base slice too (the same rule the per-epoch check applies), so a network
that forgot the base cannot hide behind the n-gram.

When the bot serves a chat memory, model.memory_gate judges the two again as served
with it; the weight chosen here is then what the candidate is served at without one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from model.codec import Encoded
from model.languages import BaseNGrams, base_ngrams
from model.run_result import Losses
from model.scoring import WEIGHT_GRID, TargetScores, choose_weight, target_scores


@dataclass(frozen=True)
class Scored:
    """One network's target probabilities on a run's held-out chats and base slice."""

    chat: TargetScores
    base: TargetScores


def score(
    net,
    heldout: Sequence[Encoded],
    base_eval: Sequence[Encoded],
    order: int | None,
    ngrams: Callable[[int], BaseNGrams] = base_ngrams,
):
    """Score `net` (with the base n-gram of `order`, if the model mixes) for the gate;
    `ngrams` as model.scoring.target_scores takes them."""
    return Scored(
        target_scores(net, heldout, order, ngrams), target_scores(net, base_eval, order, ngrams)
    )


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    reason: str  # one sentence
    losses: Losses
    mix: dict | None  # the candidate's mixture entry (None: served as the network alone)
    live_weight_credited: float | None  # the weight the live chat loss was read at


def judge(
    live: Scored, candidate: Scored, live_mix: tuple[int, float] | None, margin: float
) -> Verdict:
    """Compare the candidate with the live model as served (module docstring)."""
    order, live_weight = live_mix if live_mix is not None else (None, 1.0)
    grid = WEIGHT_GRID if live_mix is not None else (1.0,)
    live_grid = sorted({*grid, live_weight})  # the live model's own weight need not be on it
    live_chat, live_base = live.chat.bits_by_weight(live_grid), live.base.bits_by_weight(live_grid)
    cand_chat, cand_base = candidate.chat.bits_by_weight(grid), candidate.base.bits_by_weight(grid)
    limit = live_base[live_weight] + margin
    credited = choose_weight(live_chat, live_base, limit)
    weight = choose_weight(cand_chat, cand_base, limit)
    mixed = live_mix is not None
    losses = Losses(
        live_chat=live_chat[credited],
        candidate_chat=cand_chat[weight],
        live_base=live_base[live_weight],
        candidate_base=cand_base[weight],
        live_base_network=live.base.bits(1.0) if mixed else math.nan,
        candidate_base_network=candidate.base.bits(1.0) if mixed else math.nan,
        mixed=mixed,
    )
    accepted, reason = gate(losses, margin)
    return Verdict(
        accepted,
        reason,
        losses,
        {"ngram_order": order, "network_weight": weight} if mixed else None,
        credited if mixed else None,
    )


def gate(losses: Losses, margin: float) -> tuple[bool, str]:
    """(accepted, reason): better on held-out chats, and at most `margin` worse on the base."""
    failures = []
    if not math.isfinite(losses.candidate_chat) or not losses.candidate_chat < losses.live_chat:
        failures.append(
            f"no better on the held-out chats ({losses.live_chat:.3f} -> "
            f"{losses.candidate_chat:.3f} bits/byte)"
        )
    # With the chat memory, the memory's weights keep the base slice within the margin by
    # their fit (model.memory_gate); the candidate served without it is checked here.
    base = losses.candidate_base_without_memory if losses.memory else losses.candidate_base
    if not base <= losses.live_base + margin:
        without = " without the chat memory" if losses.memory else ""
        failures.append(
            f"forgets the base corpus ({losses.live_base:.3f} -> {base:.3f} bits/byte on its "
            f"held-out slice{without}, more than the {margin:.3f} margin)"
        )
    if losses.mixed and not losses.candidate_base_network <= losses.live_base_network + margin:
        failures.append(
            f"its network forgets the base corpus ({losses.live_base_network:.3f} -> "
            f"{losses.candidate_base_network:.3f} bits/byte alone, more than the "
            f"{margin:.3f} margin)"
        )
    served = " as served with the chat memory" if losses.memory else ""
    if failures:
        return False, "rejected" + served + ": " + "; ".join(failures)
    with_memory = f", {losses.candidate_base:.3f} with it" if losses.memory else ""
    return True, (
        f"accepted{served}: held-out chats {losses.live_chat:.3f} -> {losses.candidate_chat:.3f} "
        f"bits/byte, base slice {losses.live_base:.3f} -> {base:.3f}{with_memory} "
        f"(margin {margin:.3f})"
    )
