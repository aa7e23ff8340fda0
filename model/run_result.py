"""What a retraining run found, as plain data: no TensorFlow, so reports read it cheaply.

model.retrain fills these in; the run's record stores `RunResult.to_dict()` as JSON and
`RunResult.from_dict` reads it back (admin reports, `charbot status`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field


@dataclass
class Examples:
    train_chunks: int  # chat conversation chunks trained on
    heldout_chunks: int  # chat chunks held out (validation and gate)
    train_bytes: int  # target bytes (human turns) in train_chunks
    heldout_bytes: int
    base_conversations: int  # base-corpus conversations mixed into training
    base_bytes: int
    base_eval_conversations: int  # base held-out slice the gate reads
    base_eval_bytes: int
    replay_chunks: int = 0  # chunks cut from the replayed pieces of older chats


@dataclass
class Losses:
    """Held-out bits per target byte of the models as they are served (model.scoring)."""

    live_chat: float
    candidate_chat: float
    live_base: float
    candidate_base: float
    # Mixed models only: the base slice scored by the networks alone, which must also stay
    # within the margin (a network that forgot the base must not hide behind the n-gram).
    live_base_network: float = math.nan
    candidate_base_network: float = math.nan
    mixed: bool = False  # served mixed with the base n-gram (then the two above are set)
    # Judged with the chat memory the bot serves (model.memory_gate): the chat losses and
    # candidate_base above are then as served with it, and these as served without it
    # (the bot serves without it after a /forget, until its next count).
    memory: bool = False
    live_chat_without_memory: float = math.nan
    candidate_chat_without_memory: float = math.nan
    candidate_base_without_memory: float = math.nan


@dataclass
class RunResult:
    accepted: bool  # the candidate passed the gate and may be published
    reason: str  # one sentence: why it was accepted or rejected
    examples: Examples
    losses: Losses
    gate_margin: float
    epochs: int
    best_epoch: int  # 1-based epoch whose weights the candidate has; 0: none was admissible
    seconds: float  # the whole run
    fit_seconds: float  # training alone
    out_of_time: bool = False  # the training budget ended it (perhaps mid-epoch)
    history: dict[str, list[float]] = field(default_factory=dict)  # per epoch, losses in bits
    candidate_path: str = ""
    plot_path: str = ""

    def to_dict(self) -> dict:
        """Plain JSON data; non-finite losses become None."""
        return json_safe(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict) -> RunResult:
        """Read back `to_dict()`; keys it does not know (a record's extras) are ignored."""
        data = {f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data}
        data["examples"] = Examples(**data["examples"])
        losses = dict(data["losses"])
        mixed = bool(losses.pop("mixed", losses.get("live_base_network") is not None))
        memory = bool(losses.pop("memory", False))
        data["losses"] = Losses(
            **{k: math.nan if v is None else float(v) for k, v in losses.items()},
            mixed=mixed,
            memory=memory,
        )
        data["history"] = {
            k: [math.nan if v is None else v for v in vs] for k, vs in data["history"].items()
        }
        return cls(**data)


def json_safe(value):
    """`value` with non-finite floats as None and tuples as lists (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
