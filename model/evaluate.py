"""`charbot eval`: the model's held-out bits per byte beside a byte n-gram, sample replies,
and how often its replies stay in the prompt's language (model.fidelity)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from model.codec import encode_turns
from model.corpus import base_split
from model.fidelity import FidelityReport, format_fidelity, measure_fidelity, prompt_sets
from model.generator import Generator
from model.modelfile import BASE_MODEL_PATH, ModelFile, load
from model.network import network_of
from model.ngram import best_ngram
from model.scoring import fit_mix, served_bits
from model.training import conversation_ids

# The baseline is the best order, so the orders tried must reach past the one where the
# held-out score stops improving (25 on the base corpus: benchmarks/README.md).
NGRAM_ORDERS = range(3, 33)
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
    model_bits: float  # held-out bits/byte of the model as the generator samples from it
    ngram_order: int  # best n-gram order on the same split
    ngram_bits: float
    ngram_all: dict[int, float] = field(default_factory=dict)
    network_bits: float = 0.0  # the network alone
    network_weight: float = 1.0  # its weight in the mixture the generator samples (1: no mixture)
    mix_order: int = 0  # order of the base n-gram mixed in (0: none)
    best_weight: float = 1.0  # the weight that would have scored best on this split
    crossfit_bits: float = 0.0  # the mixture with weights chosen on the other half of the split
    samples: dict[str, dict[float, str]] = field(default_factory=dict)
    fidelity: FidelityReport | None = None  # with the samples: replies in the prompt's language
    seconds: float = 0.0

    @property
    def ratio(self) -> float:
        return self.model_bits / self.ngram_bits


def evaluate(model: ModelFile, *, samples: bool = True, seed: int = 0) -> EvalReport:
    """Score `model` and the n-gram baseline on the base corpus' held-out conversations."""
    start = time.monotonic()
    train, heldout = base_split()
    net = network_of(model)
    order, ngram_bits, all_orders = best_ngram(
        [encode_turns(c) for c in train], [encode_turns(c) for c in heldout], NGRAM_ORDERS
    )
    encoded = [conversation_ids(c) for c in heldout]
    if model.mix is None:
        bits = served_bits(net, encoded, None)
        report = EvalReport(bits, order, ngram_bits, all_orders, network_bits=bits)
    else:
        mix_order, weight = model.mix
        fitted = fit_mix(net, encoded, mix_order)
        report = EvalReport(
            fitted.at(weight),
            order,
            ngram_bits,
            all_orders,
            network_bits=fitted.network_bits,
            network_weight=weight,
            mix_order=mix_order,
            best_weight=fitted.network_weight,
            crossfit_bits=fitted.crossfit_bits,
        )
    if samples:
        sets = prompt_sets()
        # One compiled batch for the samples, one holding every fidelity prompt.
        rows = max(sum(len(s.prompts) for s in sets), 1)
        gen = Generator(model, batch_buckets=sorted({len(PROMPTS), rows}), seed=seed)
        for t in TEMPERATURES:
            replies = gen.reply([[p] for p in PROMPTS], [t] * len(PROMPTS), seed=seed)
            for prompt, reply in zip(PROMPTS, replies, strict=True):
                report.samples.setdefault(prompt, {})[t] = reply.text
        report.fidelity = measure_fidelity(gen, sets, seed=seed)
    report.seconds = time.monotonic() - start
    return report


def format_report(report: EvalReport, name: str) -> str:
    lines = [
        f"model: {name}",
        "held-out base corpus (10% of conversations, seed fixed), bits per byte:",
        f"  network alone           {report.network_bits:.3f}",
    ]
    if report.mix_order:
        lines += [
            f"  as the generator samples: {report.network_weight:.2f} network + "
            f"{1 - report.network_weight:.2f} base {report.mix_order}-gram",
            f"                          {report.model_bits:.3f}",
            f"  (best weight on this split {report.best_weight:.2f}; weights chosen on the "
            f"other half of the conversations: {report.crossfit_bits:.3f})",
        ]
    lines += [
        f"  best byte n-gram ({report.ngram_order})    {report.ngram_bits:.3f}",
        f"  model / n-gram          {report.ratio:.3f}",
        "  n-gram by order: "
        + ", ".join(f"{k}: {v:.3f}" for k, v in sorted(report.ngram_all.items())),
    ]
    if report.samples:
        lines.append("sample replies (temperature: reply):")
        for prompt, by_t in report.samples.items():
            lines.append(f"  > {prompt}")
            lines += [f"    {t:.1f}: {text}" for t, text in by_t.items()]
    if report.fidelity is not None:
        lines += format_fidelity(report.fidelity)
    lines.append(f"({report.seconds:.0f} s)")
    return "\n".join(lines)


def main_report(model_path: str | Path | None = None, report: Callable[[str], None] = print):
    """Print the evaluation of the model file at `model_path` (the shipped base by default)."""
    path = Path(model_path or BASE_MODEL_PATH)
    result = evaluate(load(path))
    report(format_report(result, str(path)))
    return result
