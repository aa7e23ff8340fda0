"""A retraining run's data: chats in, encoded training, held-out and base slices out.

The caller reads a bounded sample of the stored chats (the newest turns, and a replay
sample of older ones); here it is cut into conversation chunks, split, encoded, and a
slice of the base corpus is mixed in against forgetting. Each part is bounded by the
sample, so a run costs the same however long the history is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from model.codec import Encoded, Turn, encode_transcript
from model.corpus import base_split, split_conversations
from model.run_result import Examples
from model.training import conversation_ids, target_bytes

if TYPE_CHECKING:
    from model.retrain import RetrainConfig

BaseCorpus = tuple[list[list[str]], list[list[str]]]  # (train, heldout) conversations
Chunk = tuple[list[Turn], object]  # a conversation chunk and its chat's id (or None)


class NotEnoughData(ValueError):
    """Too little chat data for a run that could be judged; nothing was trained."""


@dataclass
class RetrainData:
    """What a run trains and judges on, all encoded as (ids, target mask)."""

    train: list[Encoded]  # chat chunks + base slice, in that order
    heldout: list[Encoded]  # chat chunks
    base_eval: list[Encoded]  # base held-out slice
    examples: Examples
    # (chat id, text) of every human turn held out: the chat memory the gate judges with
    # must not have counted them (empty when the chats' ids were not given)
    heldout_said: frozenset[tuple[int, str]] = frozenset()


def chunks_of(
    transcripts: Sequence[Sequence[Turn]], chats: Sequence, max_turns: int
) -> list[Chunk]:
    """Each chat cut into consecutive conversations of at most `max_turns` turns, each
    with its transcript's entry in `chats` (its chat id, or None).

    Chunks without a human turn (nothing to learn or judge) are dropped.
    """
    chunks = []
    for turns, chat in zip(transcripts, chats, strict=True):
        for start in range(0, len(turns), max_turns):
            chunk = list(turns[start : start + max_turns])
            if any(human for _, human in chunk):
                chunks.append((chunk, chat))
    return chunks


def base_sample(conversations: Sequence[list[str]], n_bytes: int, seed: int) -> list[list[str]]:
    """A seeded random choice of conversations holding at least `n_bytes` text bytes.

    When the corpus holds fewer, it is gone through again in a new order: the mix keeps
    its configured share however many chat bytes a run has.
    """
    sizes = [sum(len(t.encode("utf-8")) + 1 for t in c) for c in conversations]
    if not any(sizes):
        return []
    rng = np.random.RandomState(seed)
    chosen, total = [], 0
    while total < n_bytes:
        for i in rng.permutation(len(conversations)):
            if total >= n_bytes:
                break
            chosen.append(conversations[i])
            total += sizes[i]
    return chosen


def base_eval_slice(heldout: Sequence[list[str]], n: int, seed: int) -> list[list[str]]:
    """A fixed seeded sample of `n` base held-out conversations (all languages), in order."""
    if n >= len(heldout):
        return list(heldout)
    picked = np.sort(np.random.RandomState(seed).permutation(len(heldout))[:n])
    return [heldout[i] for i in picked]


def split_chunks(
    new: list[Chunk], replay: list[Chunk], holdout: float, seed: int
) -> tuple[list[Chunk], list[Chunk]]:
    """(train, held out): the held-out chunks are recent ones, from the new chats, when
    there are at least two of them; replayed chunks are then all trained on.

    Raises NotEnoughData when fewer than two chunks hold a human turn.
    """
    if len(new) >= 2:
        train, heldout = split_conversations(new, holdout, seed)
        return train + replay, heldout
    chunks = new + replay
    if len(chunks) < 2:
        raise NotEnoughData(
            f"not enough conversations to hold any out: {len(chunks)} conversation "
            f"chunk(s) with human turns, at least 2 are needed"
        )
    return split_conversations(chunks, holdout, seed)


def cap_heldout(
    train: list[Chunk], heldout: list[Chunk], max_bytes: int
) -> tuple[list[Chunk], list[Chunk]]:
    """(train, held out) with the held-out chunks beyond `max_bytes` of text (at least
    one chunk is kept) moved to training."""
    size = 0
    for i, (chunk, _) in enumerate(heldout):
        size += sum(len(text.encode("utf-8")) + 1 for text, _ in chunk)
        if i and size > max_bytes:
            return train + heldout[i:], heldout[:i]
    return train, heldout


def prepare(
    transcripts: Sequence[Sequence[Turn]],
    config: RetrainConfig,
    base: BaseCorpus | None = None,
    replay: Sequence[Sequence[Turn]] = (),
    chats: tuple[Sequence[int], Sequence[int]] | None = None,
) -> RetrainData:
    """Chunk, split and encode the chats (new `transcripts` and older `replay` pieces); add
    the base-corpus mix and evaluation slice. `chats`: the chat id of each transcript
    and of each replay piece, for RetrainData.heldout_said.

    Raises NotEnoughData when fewer than two chunks hold a human turn.
    """
    new_ids, replay_ids = (
        chats if chats is not None else ([None] * len(transcripts), [None] * len(replay))
    )
    new = chunks_of(transcripts, new_ids, config.chunk_turns)
    old = chunks_of(replay, replay_ids, config.chunk_turns)
    train_chunks, heldout_chunks = split_chunks(new, old, config.holdout, config.seed)
    train_chunks, heldout_chunks = cap_heldout(train_chunks, heldout_chunks, config.heldout_bytes)
    said = frozenset(
        (chat, text)
        for chunk, chat in heldout_chunks
        for text, human in chunk
        if human and chat is not None
    )
    train = [encode_transcript(c) for c, _ in train_chunks]
    heldout = [encode_transcript(c) for c, _ in heldout_chunks]
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
        replay_chunks=len(old),
    )
    return RetrainData(train + mix_encoded, heldout, base_eval, examples, said)
