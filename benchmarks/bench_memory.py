"""The chat memory with the shipped model: how fast the bot learns its users' words
without any retrain, what it costs the other languages, and what a refresh costs.

In one run:
- learning curve: 20 users write N messages in a new style (bench_retrain's pirate) in
  group chats of 10; the memory is counted from them (N = 100, 300, 1000) and the
  mixture's weights fitted. Reported: held-out style bits/byte as served with the
  memory and without it (the baseline, same run); a base-corpus held-out slice (200
  conversations the weights were not fitted on) as served with and without; the share
  of replies to 30 everyday prompts, and to 30 new lines in the style, that use the
  style at T 0, 0.6 and 1, with and without the memory; 5 prompts x 3 temperatures as
  samples.
- refresh cost: SQLite databases holding 1 MB and 10 MB of human text; one refresh
  (read the window, count, fit, build and warm the generator) timed, and this
  process's resident memory after it. The window (CHARBOT_MEMORY_WINDOW_BYTES) bounds
  both.

Usage: python benchmarks/bench_memory.py [--sizes 100,300,1000] [--stored-mb 1,10]
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_retrain import ENDINGS, SUBJECTS, VERBS, pirate  # noqa: E402

from bot.config_values import DEFAULT_MEMORY_WINDOW_BYTES  # noqa: E402
from model.corpus import BASE_SEED, base_split  # noqa: E402
from model.fidelity import measure_fidelity, prompt_sets  # noqa: E402
from model.generator import Generator  # noqa: E402
from model.languages import base_ngrams  # noqa: E402
from model.memory import Messages  # noqa: E402
from model.memory_fit import MemoryBuilder  # noqa: E402
from model.modelfile import BASE_MODEL_PATH, load  # noqa: E402
from model.network import network_of  # noqa: E402
from model.retrain import limit_threads  # noqa: E402
from model.scoring import network_probs, ngram_scores  # noqa: E402
from model.training import conversation_ids  # noqa: E402
from model.weighting import bits, fixed, stack  # noqa: E402
from storage import memory_window, open_database, sqlite_url  # noqa: E402

EVERYDAY = [
    "hello",
    "how are you?",
    "what is your name?",
    "tell me a joke",
    "do you like music?",
    "good morning",
    "what are you doing?",
    "where are you from?",
    "I am tired",
    "what's new?",
] * 3
SAMPLE_PROMPTS = EVERYDAY[:5]
TEMPERATURES = (0.0, 0.6, 1.0)
STYLE = [s.lower() for s in SUBJECTS + VERBS + ENDINGS] + ["arr", "ship", "rum"]


def rows_of(n: int, seed: int = 7) -> list[tuple[int, int, str]]:
    rng = random.Random(seed)
    return [(-(i // 10), 10_000 + i % 20, pirate(rng)) for i in range(n)]


def styled(text: str) -> bool:
    low = text.lower()
    return any(word in low for word in STYLE)


def replies(gen: Generator, prompts, t: float) -> list[str]:
    return [r.text for r in gen.reply([[p] for p in prompts], [t] * len(prompts), seed=1)]


def base_eval(model) -> tuple[list, object]:
    """200 base held-out conversations the memory's weights were not fitted on."""
    _, heldout = base_split()
    order = np.random.RandomState(BASE_SEED).permutation(len(heldout))
    encoded = [conversation_ids(heldout[i]) for i in np.sort(order[200:400])]
    return encoded, network_probs(network_of(model), encoded)


def learning(model, sizes) -> None:
    builder = MemoryBuilder()
    encoded, p_net = base_eval(model)
    p_base, e_base = base_ngrams(model.mix[0]).served(encoded)
    plain = Generator(model, batch_buckets=(30,))
    rng = random.Random(99)
    in_style = [pirate(rng) for _ in range(30)]  # new lines in the style: a chat in it
    print(
        "| style messages | held-out style, without -> with memory | base slice, without -> "
        "with | everyday replies in the style T 0 / 0.6 / 1, without -> with | replies to "
        "lines in the style, the same | refresh s |"
    )
    print("| ---: | --- | --- | --- | --- | ---: |")
    shares_plain = [sum(map(styled, replies(plain, EVERYDAY, t))) for t in TEMPERATURES]
    in_style_plain = [sum(map(styled, replies(plain, in_style, t))) for t in TEMPERATURES]
    samples = {}
    for n in sizes:
        start = time.monotonic()
        memory = builder.build(model, Messages.of(rows_of(n)), version=1)
        gen = Generator(model, batch_buckets=(30,), memory=memory)
        seconds = time.monotonic() - start
        p_mem, e_mem = ngram_scores(memory.ngram, encoded)
        p = stack([p_net, p_base, p_mem])
        without = bits(fixed(model.mix[1], (1, 1)), p, e_base * 0, e_base * 0)
        with_memory = bits(memory.weights, p, e_base, e_mem)
        shares = [sum(map(styled, replies(gen, EVERYDAY, t))) for t in TEMPERATURES]
        in_style_shares = [sum(map(styled, replies(gen, in_style, t))) for t in TEMPERATURES]
        info = memory.info
        print(
            f"| {n} | {info.heldout_bits_without:.2f} -> {info.heldout_bits:.2f} | "
            f"{without:.3f} -> {with_memory:.3f} | "
            f"{'/'.join(map(str, shares_plain))} -> {'/'.join(map(str, shares))} of "
            f"{len(EVERYDAY)} | {'/'.join(map(str, in_style_plain))} -> "
            f"{'/'.join(map(str, in_style_shares))} of {len(in_style)} | {seconds:.1f} |"
        )
        samples[n] = gen
    gen = samples[max(sizes)]
    sets = prompt_sets()
    for name, g in (("without memory", plain_fidelity(model)), ("with the largest", gen)):
        report = measure_fidelity(g, sets)
        shares = " / ".join(f"{report.overall(t):.0%}" for t in report.temperatures)
        print(f"language fidelity {name}: {shares} at T {report.temperatures}")
    print("\nsamples (prompt, temperature: without memory | with the largest memory):")
    samples = SAMPLE_PROMPTS[:3] + in_style[:2]
    for t in TEMPERATURES:
        for prompt, a, b in zip(
            samples, replies(plain, samples, t), replies(gen, samples, t), strict=True
        ):
            print(f"  {prompt!r} {t}: {a!r} | {b!r}")


def plain_fidelity(model) -> Generator:
    return Generator(model, batch_buckets=(1, 32))


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def fill(data_dir: Path, megabytes: float) -> None:
    """A charbot database holding `megabytes` of human text (pirate and everyday words)."""
    db = open_database(sqlite_url(data_dir))
    db.dispose()
    rng = random.Random(11)
    words = ["hello", "well", "maybe", "tomorrow", "the", "game", "was", "great", "see", "you"]
    target, total, rows = megabytes * 1e6, 0, []
    while total < target:
        text = pirate(rng) if rng.random() < 0.3 else " ".join(rng.choices(words, k=6))
        total += len(text)
        rows.append((-(len(rows) // 50) - 1, 100 + len(rows) % 500, text))
    with sqlite3.connect(data_dir / "charbot.sqlite3") as conn:
        conn.executemany(
            "INSERT OR IGNORE INTO users (id, name, temperature, learning, created_at) "
            "VALUES (?, 'u', 0.8, 1, '2026-12-02')",
            [(u,) for u in range(100, 600)],
        )
        conn.executemany(
            "INSERT OR IGNORE INTO chats (id, type) VALUES (?, 'group')",
            [(c,) for c in {r[0] for r in rows}],
        )
        conn.executemany(
            "INSERT INTO messages (chat_id, user_id, from_bot, text, created_at) "
            "VALUES (?, ?, 0, ?, '2026-12-02')",
            rows,
        )


def refresh_cost(stored_mb) -> None:
    print(
        f"\nrefresh with the default window ({DEFAULT_MEMORY_WINDOW_BYTES / 1e6:.0f} MB), each "
        "in a fresh process holding the shipped model's generator as the bot does:"
    )
    print(
        "| stored text | messages counted | read s | count and fit s | generator s | "
        "RSS before -> after MiB |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for mb in stored_mb:
        subprocess.run([sys.executable, __file__, "--refresh-one", str(mb)], check=True)


def refresh_one(model, mb: float) -> None:
    """One refresh in this process (a fresh one): the bot's generator loaded first."""
    serving = Generator(model)
    before = rss_mib()
    with tempfile.TemporaryDirectory() as tmp:
        fill(Path(tmp), mb)
        db = open_database(sqlite_url(Path(tmp)))
        start = time.monotonic()
        with db.read() as session:
            rows, newest = memory_window(session, DEFAULT_MEMORY_WINDOW_BYTES)
        read = time.monotonic() - start
        memory = MemoryBuilder().build(model, Messages.of(rows, newest), version=1)
        built = time.monotonic() - start
        serving = Generator(model, memory=memory)
        done = time.monotonic() - start
        print(
            f"| {mb:g} MB | {memory.info.messages} | {read:.1f} | {built - read:.1f} | "
            f"{done - built:.1f} | {before:.0f} -> {rss_mib():.0f} |",
            flush=True,
        )
        del serving
        db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,300,1000")
    parser.add_argument("--stored-mb", default="1,10")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--refresh-one", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    limit_threads(args.threads)
    model = load(BASE_MODEL_PATH)
    if args.refresh_one is not None:
        return refresh_one(model, args.refresh_one)
    print(f"bench_memory {time.strftime('%Y-%m-%d %H:%M')}, shipped model, RSS {rss_mib():.0f} MiB")
    learning(model, [int(s) for s in args.sizes.split(",")])
    refresh_cost([float(s) for s in args.stored_mb.split(",")])


if __name__ == "__main__":
    main()
