"""`charbot eval`: the model's held-out bits per byte beside a byte n-gram, and sample replies."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from model.codec import encode_turns
from model.corpus import base_split
from model.generator import MAX_PROMPT_BYTES, Generator
from model.modelfile import ModelFile, load
from model.ngram import best_ngram
from model.pretrain import BASE_MODEL_PATH
from model.training import bits_per_byte, conversation_ids

NGRAM_ORDERS = range(3, 10)
PROMPTS = [
    "Hello",
    "How are you?",
    "What is your name?",
    "Tell me a joke.",
    "What do you like to do?",
    "Do you like music?",
    "你好",
    "Привет, как дела?",
    "Bonjour !",
    "¿Qué es la inteligencia artificial?",
]
TEMPERATURES = (0.0, 0.6, 1.0)


@dataclass
class EvalReport:
    model_bits: float  # held-out bits/byte of the network, read as the generator reads
    ngram_order: int  # best n-gram order on the same split
    ngram_bits: float
    ngram_all: dict[int, float] = field(default_factory=dict)
    samples: dict[str, dict[float, str]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ratio(self) -> float:
        return self.model_bits / self.ngram_bits


def evaluate(model: ModelFile, *, samples: bool = True, seed: int = 0) -> EvalReport:
    """Score `model` and the n-gram baseline on the base corpus' held-out conversations."""
    start = time.monotonic()
    train, heldout = base_split()
    model_bits = bits_per_byte(
        model.build(), [conversation_ids(c) for c in heldout], max_len=MAX_PROMPT_BYTES
    )
    order, ngram_bits, all_orders = best_ngram(
        [encode_turns(c) for c in train], [encode_turns(c) for c in heldout], NGRAM_ORDERS
    )
    report = EvalReport(model_bits, order, ngram_bits, all_orders)
    if samples:
        gen = Generator(model, batch_buckets=(len(PROMPTS),), seed=seed)
        for t in TEMPERATURES:
            replies = gen.reply([[p] for p in PROMPTS], [t] * len(PROMPTS), seed=seed)
            for prompt, reply in zip(PROMPTS, replies, strict=True):
                report.samples.setdefault(prompt, {})[t] = reply.text
    report.seconds = time.monotonic() - start
    return report


def format_report(report: EvalReport, name: str) -> str:
    lines = [
        f"model: {name}",
        "held-out base corpus (10% of conversations, seed fixed), bits per byte:",
        f"  network                 {report.model_bits:.3f}",
        f"  best byte n-gram ({report.ngram_order})    {report.ngram_bits:.3f}",
        f"  network / n-gram        {report.ratio:.3f}",
        "  n-gram by order: "
        + ", ".join(f"{k}: {v:.3f}" for k, v in sorted(report.ngram_all.items())),
    ]
    if report.samples:
        lines.append("sample replies (temperature: reply):")
        for prompt, by_t in report.samples.items():
            lines.append(f"  > {prompt}")
            lines += [f"    {t:.1f}: {text}" for t, text in by_t.items()]
    lines.append(f"({report.seconds:.0f} s)")
    return "\n".join(lines)


def main_report(model_path: str | Path | None = None, report: Callable[[str], None] = print):
    """Print the evaluation of the model file at `model_path` (the shipped base by default)."""
    path = Path(model_path or BASE_MODEL_PATH)
    result = evaluate(load(path))
    report(format_report(result, str(path)))
    return result
