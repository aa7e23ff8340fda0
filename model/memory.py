"""The chat memory: a byte n-gram of what the bot's users wrote, mixed into every reply.

The fine-tune teaches the network in hours; the memory picks up the users' words within
minutes. It is counted from a bounded window of recent human messages (the caller
chooses the window and leaves out users who opted out or were forgotten), each chat's
messages one after the other, so it also knows how people answer what was said before
(the bot's reply starts after the chat's last turn). It is shared by every chat, so:

- an n-gram enters it only once `min_users` distinct users wrote its last byte
  (ngram_counts), so it never repeats one person's words to another;
- a message one user sent several times counts once, so a flood cannot turn the bot
  into a parrot.

A memory file holds the counts (never the messages), the mixture weights fitted with
them (model.weighting) and what /status shows. It is written atomically; a file that
does not read back raises MemoryFileError.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from model.atomic import write_atomically
from model.codec import SEP, encode_turns
from model.ngram import ByteNGram
from model.ngram_counts import Counts
from model.weighting import MixWeights

# Contexts of 8 bytes: a phrase several users share, not a longer piece of one person's
# text (what the privacy rule and its tests are measured with).
MEMORY_ORDER = 9
MIN_USERS = 3  # distinct users an n-gram needs before the memory holds it
FORMAT = 1


class MemoryFileError(ValueError):
    """A memory file that cannot be read (corrupt, truncated, another format)."""


@dataclass(frozen=True)
class MemoryInfo:
    """What the memory was counted from, for /status and the logs."""

    messages: int  # distinct (user, text) messages counted
    users: int
    text_bytes: int
    newest_message_id: int  # the newest stored message the window reached
    built_at: str  # ISO 8601, UTC
    model_version: int | None  # the network the weights were fitted with
    heldout_bits: float | None = None  # held-out messages' bits/byte, weights fitted
    heldout_bits_without: float | None = None  # the same served without the memory

    def age_seconds(self, now: dt.datetime | None = None) -> float:
        now = now or dt.datetime.now(dt.UTC)
        return max((now - dt.datetime.fromisoformat(self.built_at)).total_seconds(), 0.0)


@dataclass(frozen=True)
class ChatMemory:
    ngram: ByteNGram
    weights: MixWeights
    info: MemoryInfo

    @property
    def size_bytes(self) -> int:
        """Bytes of counts it holds (its share of the bot's memory is a few times this)."""
        return sum(a.nbytes for a in self.ngram.counts.arrays().values())

    def save(self, path: str | Path) -> None:
        buffer = io.BytesIO()
        meta = {"format": FORMAT, "order": self.ngram.order, "info": asdict(self.info)}
        np.savez(
            buffer,
            meta=np.array(json.dumps(meta)),
            weights=self.weights.table,
            **self.ngram.counts.arrays(),
        )
        write_atomically(Path(path), buffer.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> ChatMemory:
        """The memory saved at `path`; MemoryFileError when it does not read back."""
        try:
            with np.load(Path(path), allow_pickle=False) as f:
                meta = json.loads(str(f["meta"]))
                if meta.get("format") != FORMAT:
                    raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT}")
                counts = Counts.from_arrays(f)
                weights = MixWeights.checked(f["weights"])
                info = MemoryInfo(**meta["info"])
                ngram = ByteNGram(int(meta["order"])).with_counts(counts, keep_counts=True)
        except FileNotFoundError:
            raise
        except Exception as e:  # a damaged zip, a missing array, bad JSON: all "corrupt"
            raise MemoryFileError(f"the chat memory file {path} is unreadable ({e})") from e
        if weights.shape[1] != ngram.order:
            raise MemoryFileError(f"the chat memory file {path} does not fit its weights")
        return cls(ngram, weights, info)


@dataclass(frozen=True)
class Messages:
    """Human messages, oldest first, deduplicated per user: texts[i] was written by
    users[i] in chats[i]."""

    texts: list[str]
    users: list[int]
    chats: list[int]
    newest_message_id: int = 0

    @classmethod
    def of(cls, rows: Sequence[tuple[int, int, str]], newest_message_id: int = 0) -> Messages:
        """From (chat id, user id, text) rows, oldest first: each user's identical
        messages counted once, blank ones dropped."""
        seen: set[tuple[int, str]] = set()
        texts, users, chats = [], [], []
        for chat, user, text in rows:
            if not text.strip() or (user, text) in seen:
                continue
            seen.add((user, text))
            texts.append(text)
            users.append(user)
            chats.append(chat)
        return cls(texts, users, chats, newest_message_id)

    @property
    def text_bytes(self) -> int:
        return sum(len(t.encode("utf-8")) for t in self.texts)

    def subset(self, keep: Sequence[int]) -> Messages:
        return Messages(*([xs[i] for i in keep] for xs in (self.texts, self.users, self.chats)))

    def previous(self, i: int) -> str | None:
        """The message before message i in its chat, if the window holds one."""
        for j in range(i - 1, -1, -1):
            if self.chats[j] == self.chats[i]:
                return self.texts[j]
        return None


def count_memory(
    messages: Messages, order: int = MEMORY_ORDER, min_users: int = MIN_USERS
) -> ByteNGram:
    """The n-gram of `messages`, each chat's in order, holding only what `min_users`
    distinct users wrote."""
    chats: dict[int, tuple[list[int], list[int]]] = {}
    for text, user, chat in zip(messages.texts, messages.users, messages.chats, strict=True):
        ids, owners = chats.setdefault(chat, ([SEP], [user]))
        turn = encode_turns([text])[1:]  # its bytes and the SEP that ends it
        ids += turn
        owners += [user] * len(turn)
    sequences = list(chats.values())
    return ByteNGram(order).fit(
        [ids for ids, _ in sequences],
        owners=[o for _, o in sequences],
        min_owners=min_users,
        keep_counts=True,
    )
