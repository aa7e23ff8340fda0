"""Text <-> ids over UTF-8 bytes, plus a turn separator and padding.

Ids 0..255 are the bytes themselves, SEP ends a turn, PAD fills batches. Every
string any user can send encodes (nothing is out of vocabulary, in any language),
and the vocabulary never changes, so a fine-tune never changes a weight's shape.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

SEP = 256  # end of a turn (and start of a conversation)
PAD = 257  # filler in batches; never a training target, never sampled
VOCAB_SIZE = 258
MAX_PROMPT_BYTES = 512  # context the model reads before a reply: the chat's last turns
FALLBACK_REPLY = "…"  # said instead of a reply with nothing printable in it

Turn = tuple[str, bool]  # (text, written by a human); bot turns are context, never targets
Encoded = tuple[np.ndarray, np.ndarray]  # (ids, target mask) of one conversation


def encode_text(text: str) -> list[int]:
    """UTF-8 bytes of `text` as ids. Lone surrogates (not valid Unicode) become '?'."""
    return list(text.encode("utf-8", errors="replace"))


def decode(ids: Iterable[int]) -> str:
    """Valid text from any id sequence: SEP/PAD and broken multi-byte sequences are dropped."""
    data = bytes(i for i in ids if 0 <= i < 256)
    return data.decode("utf-8", errors="ignore")


def encode_turns(turns: Sequence[str]) -> list[int]:
    """SEP t1 SEP t2 SEP ... tn SEP: what the model reads before writing the next turn."""
    ids = [SEP]
    for turn in turns:
        ids.extend(encode_text(turn))
        ids.append(SEP)
    return ids


def encode_prompt(turns: Sequence[str], max_bytes: int) -> list[int]:
    """The last `max_bytes` ids of encode_turns(turns), cut at a turn start when possible."""
    ids = encode_turns(turns)
    if len(ids) <= max_bytes:
        return ids
    tail = ids[-max_bytes:]
    # Prefer to begin right after a separator, so the model sees whole turns; keep at
    # least half the budget so one huge last turn still leaves the model some context.
    for i, token in enumerate(tail[: max_bytes // 2]):
        if token == SEP:
            return tail[i:]
    return tail


def encode_transcript(turns: Sequence[Turn]) -> Encoded:
    """(ids, target mask) for one conversation.

    ids = SEP t1 SEP t2 SEP ...; mask[i] says whether ids[i] is a training target,
    i.e. a byte (or the closing SEP) of a human turn. The leading SEP is never a target.
    """
    ids = [SEP]
    mask = [False]
    for text, human in turns:
        body = encode_text(text)
        ids.extend(body)
        ids.append(SEP)
        mask.extend([human] * (len(body) + 1))
    return np.asarray(ids, dtype=np.int32), np.asarray(mask, dtype=bool)
