"""One retrain on a synthetic corpus in a new style, and what it costs the running bot.

In one run, on the shipped model:
- a data dir whose database holds a few thousand messages in a distinctive style
  (a pirate who talks about ships and rum), written as chats with the bot;
- the real bot (`charbot run`) against the Bot API stand-in on 127.0.0.1; reply latency
  p50/p99 with one user at a time, idle;
- the bot's first chat memory (counted at its first check), waited for;
- one `charbot train` (the scheduler's way: its own process, low priority, one thread)
  while the same user keeps writing: latency p50/p99 during the run;
- the run's duration, bytes/s trained, and held-out bits/byte on the new style and on
  the base slice, before and after (from the run's record): as served with the chat
  memory and without it, so the style's loss reads from nothing learnt (the live model
  without a memory) through the memory alone to the memory and the retrain.

Usage: python benchmarks/bench_retrain.py [--messages 3000] [--epochs N]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_serving import CHARBOT, Phase, ask, wait_for_line
from telegram_stub import BotApiStub

from bot.logs import MEMORY_REFRESHED
from model.modelfile import load

SUBJECTS = ["the ship", "me parrot", "the rum", "yer map", "the cap'n", "the kraken", "me crew"]
VERBS = ["be sinkin'", "be singin'", "be lost at sea", "be full o' gold", "be sleepin'"]
ENDINGS = ["arr!", "yo ho ho!", "shiver me timbers!", "savvy?", "aye aye!"]
SLOW = 0.2  # seconds: replies slower than this during the run are listed with their time


def pirate(rng: random.Random) -> str:
    return f"{rng.choice(SUBJECTS).capitalize()} {rng.choice(VERBS)}, {rng.choice(ENDINGS)}"


def write_corpus(data_dir: Path, messages: int, seed: int = 7) -> None:
    """`messages` human turns (each followed by a bot turn) in chats of 6 to 20 turns."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from storage import (
        add_message,
        get_or_create_chat,
        get_or_create_user,
        open_database,
        sqlite_url,
    )

    rng = random.Random(seed)
    data_dir.mkdir(parents=True, exist_ok=True)
    db = open_database(sqlite_url(data_dir))
    written, user = 0, 10_000
    with db.begin() as session:
        while written < messages:
            user += 1
            get_or_create_chat(session, user, "private")
            get_or_create_user(session, user, f"pirate {user}")
            for _ in range(rng.randint(6, 20)):
                add_message(session, chat_id=user, user_id=user, text=pirate(rng))
                add_message(session, chat_id=user, text=rng.choice(["Ahoy.", "I see.", "Hmm?"]))
                written += 1
    db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=None, help="cap (default: the run's own)")
    parser.add_argument("--idle", type=int, default=40, help="idle replies to time")
    args = parser.parse_args()
    with BotApiStub() as stub, tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        write_corpus(data_dir, args.messages)
        env = {
            **os.environ,
            "TELEGRAM_BOT_TOKEN": stub.token,
            "CHARBOT_TELEGRAM_BASE_URL": stub.base_url,
            "CHARBOT_DATA_DIR": str(data_dir),
        }
        if args.epochs:
            env["CHARBOT_RETRAIN_EPOCHS"] = str(args.epochs)
        log = open(Path(tmp) / "bot.log", "w")  # noqa: SIM115
        bot = subprocess.Popen([str(CHARBOT), "run"], env=env, stdout=log, stderr=log)
        try:
            stub.wait_for_calls("getUpdates", 1, timeout=300)
            wait_for_line(Path(tmp) / "bot.log", MEMORY_REFRESHED, timeout=600)
            ask(stub, 1)
            idle = Phase("idle")
            for _ in range(args.idle):
                idle.latencies += ask(stub, 1).latencies
            train_env = {k: v for k, v in env.items() if k != "TELEGRAM_BOT_TOKEN"}
            start = time.monotonic()
            train = subprocess.Popen(
                [str(CHARBOT), "train", "--json"],
                env=train_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            during = Phase("during the retrain")
            slow = []  # (seconds into the run, latency) of replies over SLOW
            while train.poll() is None:
                asked = time.monotonic() - start
                during.latencies += ask(stub, 1).latencies
                if during.latencies[-1] > SLOW:
                    slow.append((asked, during.latencies[-1]))
            wall = time.monotonic() - start
            out = train.stdout.read()
        finally:
            bot.terminate()
            bot.wait(60)
            log.close()
        run_id = json.loads(out.strip().splitlines()[-1])["run_id"]
        with sqlite3.connect(data_dir / "charbot.sqlite3") as conn:
            (result_json, status) = conn.execute(
                "SELECT result_json, status FROM training_runs WHERE id = ?", (run_id,)
            ).fetchone()
        candidate_meta = load(json.loads(result_json)["candidate_path"]).meta
    result = json.loads(result_json)
    ex, losses = result["examples"], result["losses"]
    trained = (ex["train_bytes"] + ex["base_bytes"]) * result["epochs"]
    print(f"{os.cpu_count()} cores; {args.messages} messages in the new style")
    print(
        f"run: {status}, {result['epochs']} epochs (best {result['best_epoch']}), "
        f"{result['seconds']:.0f} s in all ({wall:.0f} s wall with process start), "
        f"fit {result['fit_seconds']:.0f} s = {trained / result['fit_seconds']:.0f} bytes/s"
    )
    print(
        f"data: {ex['train_chunks']} chat pieces ({ex['train_bytes']} bytes) trained, "
        f"{ex['heldout_chunks']} held out ({ex['heldout_bytes']} bytes), "
        f"{ex['base_bytes']} base bytes mixed in, base slice {ex['base_eval_bytes']} bytes"
    )
    print(
        f"held-out new style: {losses['live_chat']:.3f} -> {losses['candidate_chat']:.3f} "
        f"bits/byte; base slice: {losses['live_base']:.3f} -> {losses['candidate_base']:.3f}"
    )
    if losses.get("memory"):
        nothing, memory_only = losses["live_chat_without_memory"], losses["live_chat"]
        after = losses["candidate_chat"]
        print(
            "the losses above are as served with the chat memory (base slice: the live model "
            "without it -> the candidate with it);\n"
            f"new style, nothing learnt (live, no memory) {nothing:.3f} -> memory alone "
            f"{memory_only:.3f} ({1 - memory_only / nothing:.0%} cut) -> memory and this "
            f"run {after:.3f} ({1 - after / nothing:.0%} cut); the candidate without the "
            f"memory {losses['candidate_chat_without_memory']:.3f}, base slice "
            f"{losses['candidate_base_without_memory']:.3f}"
        )
    mix = candidate_meta.get("mix")
    if mix:
        print(
            f"losses above are of the models as served: mixed with the base "
            f"{mix['ngram_order']}-gram, the candidate at network weight {mix['network_weight']}; "
            f"base slice, networks alone: {losses['live_base_network']:.3f} -> "
            f"{losses['candidate_base_network']:.3f}"
        )
    print(f"{'reply latency':<34}{'n':>5}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for phase in (idle, during):
        print(phase.row()[:-10])
    print(
        f"replies over {SLOW * 1000:.0f} ms during the run: {len(slow)} of "
        f"{len(during.latencies)}"
        + "".join(f"; {lat * 1000:.0f} ms at {at:.1f} s" for at, lat in slow[:10])
    )


if __name__ == "__main__":
    main()
