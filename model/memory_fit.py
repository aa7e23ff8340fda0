"""Building a chat memory and fitting the mixture's weights for it.

The weights (model.weighting) are fitted on held-out text as it would be served: a
seeded tenth of the window's messages is held out, a memory counted from the rest
scores them, and the network and the base n-gram score them too. A fixed slice of the
base corpus' held-out conversations (all languages) is fitted on beside them so that
chats in the languages the users do not write keep being served well. The rule, as the
retraining gate's: the weights do what is best for the held-out chats as long as the
other half of the base slice loses at most the model's memory margin against the model
served without a memory; the base slice's say grows until it does, and without such
weights there is no memory. The margin is BASE_MARGIN; for a retrained version, the
gate's margin less what it lost on the base slice, served without a memory, against the
version it replaced (model.memory_gate computes it, model.retrain stores it in the
version's file), so a memory never takes the base slice further than the margin from
the version the gate compared it with. The memory served is then counted
from every message of the window (twice the counting, the slow part of a refresh, but
every message counts and "several users wrote it" means what it says).

Scoring the network is the slow part (about a second per 10 KB on two cores); the base
slice's scores depend only on the network, so they are kept per model.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from model.codec import Encoded, encode_transcript
from model.corpus import BASE_SEED, base_split
from model.languages import BaseNGrams, base_ngrams, served_mix
from model.memory import MEMORY_ORDER, MIN_USERS, ChatMemory, MemoryInfo, Messages, count_memory
from model.modelfile import ModelFile
from model.network import network_of
from model.ngram import ByteNGram
from model.scoring import BASE_MARGIN, network_probs, ngram_scores
from model.training import conversation_ids
from model.weighting import MixWeights, bits, fit, fixed, mean_bits, stack

HELDOUT_SHARE = 0.1  # of the window's messages, to fit the weights on
MAX_HELDOUT_MESSAGES = 500  # ~25 KB of chat: the network scores it in seconds
MIN_HELDOUT_MESSAGES = 20  # a small window holds out up to a quarter, at least this many
MIN_HELDOUT_BYTES = 200  # fewer held-out bytes fit nothing: no memory yet
BASE_SLICE_CONVERSATIONS = 200  # of the base held-out split (~23 KB, all languages):
# the weights are fitted on the first half and checked on the second
BASE_SAYS = (1, 2, 4, 8, 16, 32)  # the base slice's say against the chats', tried in turn
MEMORY_MARGIN_KEY = "memory_margin"  # in a retrained model file's meta


@dataclass(frozen=True)
class Scored:
    """Each component's P(target) on some text, and both n-grams' evidence."""

    p: np.ndarray  # (N, 3): network, base n-gram, memory
    base_evidence: np.ndarray
    memory_evidence: np.ndarray

    def subset(self, keep: np.ndarray) -> Scored:
        return Scored(self.p[keep], self.base_evidence[keep], self.memory_evidence[keep])

    def halves(self) -> tuple[Scored, Scored]:
        """The first and the second half of the targets."""
        cut = len(self.p) // 2
        return self.subset(slice(None, cut)), self.subset(slice(cut, None))


class MemoryBuilder:
    """Builds memories for one network at a time (thread-safe; builds are serialised)."""

    def __init__(
        self,
        min_users: int = MIN_USERS,
        base_conversations: int | None = None,
        base: Callable[[int], BaseNGrams] = base_ngrams,
    ):
        """`base`: the base n-grams of an order (default: counted from the corpus once per
        process; the bot passes its kept copy, the one its generators serve)."""
        self.min_users = min_users
        self.base_conversations = base_conversations or BASE_SLICE_CONVERSATIONS
        self.base_ngrams = base
        self._lock = threading.Lock()
        self._model: ModelFile | None = None
        self._net = None
        self._base_slice: tuple[list[Encoded], tuple] | None = None  # see _base

    def build(
        self, model: ModelFile, messages: Messages, version: int | None = None
    ) -> ChatMemory | None:
        """The memory of `messages` with weights fitted for `model`; None when the window
        holds too little text to fit them (then the bot serves without a memory)."""
        with self._lock:
            if not enough_to_fit(messages):
                return None
            heldout_ix, train_ix = split(len(messages.texts))
            base = self._base(model)
            fitted = count_memory(messages.subset(train_ix), MEMORY_ORDER, self.min_users)
            chat = self._score(model, in_context(messages, heldout_ix), fitted)
            base_scored = self._score(model, base[0], fitted, base[1])
            weights = fit_weights(
                table_shape(model), chat, base_scored, served_mix(model)[1], memory_margin(model)
            )
            if weights is None:
                return None
            served = count_memory(messages, MEMORY_ORDER, self.min_users)
            info = MemoryInfo(
                messages=len(messages.texts),
                users=len(set(messages.users)),
                text_bytes=messages.text_bytes,
                newest_message_id=messages.newest_message_id,
                built_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                model_version=version,
                heldout_bits=bits(weights, chat.p, chat.base_evidence, chat.memory_evidence),
                heldout_bits_without=served_without(model, chat),
            )
            return ChatMemory(served, weights, info)

    def _net_of(self, model: ModelFile):
        if self._model is not model:
            self._model, self._net, self._base_slice = model, network_of(model), None
        return self._net

    def _base(self, model: ModelFile) -> tuple[list[Encoded], tuple]:
        """The base slice and what the network and the base n-grams give its targets
        (kept per model: only the memory's part changes from count to count)."""
        net = self._net_of(model)
        if self._base_slice is None:
            _, heldout = base_split()
            order = np.random.RandomState(BASE_SEED).permutation(len(heldout))
            picked = np.sort(order[: self.base_conversations])
            encoded = [conversation_ids(heldout[i]) for i in picked]
            served = self.base_ngrams(served_mix(model)[0]).served(encoded)
            self._base_slice = (encoded, (network_probs(net, encoded), *served))
        return self._base_slice

    def _score(self, model, encoded, memory: ByteNGram, known=None) -> Scored:
        """`known`: the network's and the base n-grams' part, if scored already."""
        if known is None:
            p_net = network_probs(self._net_of(model), encoded)
            known = (p_net, *self.base_ngrams(served_mix(model)[0]).served(encoded))
        return with_memory(known, ngram_scores(memory, encoded))


def fit_weights(
    shape: tuple[int, int], chat: Scored, base: Scored, network_weight: float, margin: float
) -> MixWeights | None:
    """The bot's rule (module docstring): the weights that serve the `chat` targets best
    while the second half of the `base` slice stays within `margin` of the network served
    without a memory at `network_weight`; the first half gets more say until it does.
    None if it never does."""
    fitting, checking = base.halves()
    limit = bits_without(network_weight, checking) + margin
    both = _concat(chat, fitting)
    for base_say in BASE_SAYS:
        say = np.concatenate(
            [
                np.full(len(chat.p), 1.0 / len(chat.p)),
                np.full(len(fitting.p), base_say / len(fitting.p)),
            ]
        )
        weights = fit(both.p, both.base_evidence, both.memory_evidence, shape, say)
        if bits(weights, checking.p, checking.base_evidence, checking.memory_evidence) <= limit:
            return weights
    return None


def memory_margin(model: ModelFile) -> float:
    """Bits/byte the base slice may lose to a chat memory served with `model` (module
    docstring)."""
    value = model.meta.get(MEMORY_MARGIN_KEY)
    if isinstance(value, int | float) and math.isfinite(value) and value >= 0:
        return float(value)
    return BASE_MARGIN


def enough_to_fit(messages: Messages) -> bool:
    """Whether `messages` hold enough held-out text to fit a memory's weights on (the
    bot serves no memory before they do)."""
    heldout_ix, _ = split(len(messages.texts))
    return messages.subset(heldout_ix).text_bytes >= MIN_HELDOUT_BYTES


def in_context(messages: Messages, indices: Sequence[int]) -> list[Encoded]:
    """Messages as the bot meets them: each after the one before it in its chat (context,
    not a target), as a reply is written after the chat's last turn."""
    out = []
    for i in indices:
        before = messages.previous(i)
        turns = [(before, False)] if before is not None else []
        out.append(encode_transcript([*turns, (messages.texts[i], True)]))
    return out


def split(n: int, seed: int = BASE_SEED) -> tuple[list[int], list[int]]:
    """(held-out, rest) indices of n messages: a seeded HELDOUT_SHARE (between
    MIN_HELDOUT_MESSAGES, or a quarter of a small window, and MAX_HELDOUT_MESSAGES),
    each list in order."""
    order = np.random.RandomState(seed).permutation(n)
    k = min(max(round(n * HELDOUT_SHARE), min(MIN_HELDOUT_MESSAGES, n // 4)), MAX_HELDOUT_MESSAGES)
    return sorted(order[:k].tolist()), sorted(order[k:].tolist())


def table_shape(model: ModelFile) -> tuple[int, int]:
    return served_mix(model)[0], MEMORY_ORDER


def with_memory(known: tuple, memory: tuple[np.ndarray, np.ndarray]) -> Scored:
    """Scored from (P_network, P_base, base evidence) and (P_memory, memory evidence)."""
    p_net, p_base, e_base = known
    p_mem, e_mem = memory
    return Scored(stack([p_net, p_base, p_mem]), e_base, e_mem)


def served_without(model: ModelFile, scored: Scored) -> float:
    """Bits/byte of `scored` as the model is served without a memory."""
    return bits_without(served_mix(model)[1], scored)


def bits_without(network_weight: float, scored: Scored) -> float:
    """Bits/byte of `scored` served without a memory, at `network_weight`."""
    return mean_bits(probs_without(network_weight, scored))


def probs_without(network_weight: float, scored: Scored) -> np.ndarray:
    """P(target) of `scored` served without a memory, at `network_weight`."""
    nowhere = np.zeros_like(scored.base_evidence)
    return fixed(network_weight, (1, 1)).probs(scored.p, nowhere, nowhere)


def _concat(a: Scored, b: Scored) -> Scored:
    return Scored(
        np.concatenate([a.p, b.p]),
        np.concatenate([a.base_evidence, b.base_evidence]),
        np.concatenate([a.memory_evidence, b.memory_evidence]),
    )
