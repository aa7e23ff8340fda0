"""The bot's storage and one retraining run on a long history: 10k, 100k and 1M messages.

For each size, a data dir built by scale_data.py (chats in four languages, ~45% bot
turns, the newest ~2% in a new style) and then, on a copy of it:
- reply storage: what one reply costs the database, through the functions the bot calls
  (bot.conversation): storing the message with the reply it is owed (the inbox), reading
  it and the chat's last turns (the answer), storing the reply and clearing the debt;
  p50/p99 over --replies replies to random existing chats;
- /status: bot.reports.status_lines and status_text as bot/commands.py calls them, the
  median of --status-calls calls;
- one `charbot train` in its own process, as the bot starts it (bot.retrainer.child_env,
  no token): wall time, the child's peak RSS (wait4), its outcome and held-out chat
  bits/byte (live -> candidate) from the run's record; killed, like the bot's, after
  bot.retrainer.CHILD_TIMEOUT;
- the new style on lines no run saw (scale_data.probe_lines, each a one-turn
  conversation): bits/byte of the live model before the run and of the live model after
  it, as served (the network mixed with the base n-grams, as the gate scores it; the chat
  memory is not counted).

Usage: python benchmarks/bench_scale.py [--sizes 10000,100000,1000000] [--big] [--no-train]
       [--work DIR] [--reuse] [--replies 200] [--epochs N] [--train-seconds N]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scale_data import build, load_built, probe_lines  # noqa: E402
from sqlalchemy import select  # noqa: E402

from bot.conversation import Incoming, read_owed, record_incoming, settle_owed  # noqa: E402
from bot.datadir import open_store  # noqa: E402
from bot.model_info import ModelInfo  # noqa: E402
from bot.reports import load_run, run_id_from, status_lines, status_text, stored_result  # noqa: E402
from bot.settings import Settings  # noqa: E402
from model import MAX_PROMPT_BYTES  # noqa: E402
from storage import Chat, Database, User, open_database, sqlite_url  # noqa: E402

SIZES = (10_000, 100_000, 1_000_000)
BIG = 3_000_000
FIRST_PROBE_ID = 2_000_000_000  # Telegram message ids of the timed replies: above any stored
WARM_UP = 10  # replies before the timed ones (connections opened, pages read)


@dataclasses.dataclass
class Row:
    size: int
    built: dict
    reply_ms: list[float]  # storage time of each timed reply
    parts_ms: dict[str, float]  # median of each step
    status_ms: float
    train: dict | None = None  # wall, rss_mib, run (TrainingRun), probe before/after


def reply_path(db: Database, replies: int, seed: int) -> tuple[list[float], dict[str, float]]:
    """Storage time of `replies` replies (after WARM_UP), each to a random chat: ms each, and
    the median ms of each step."""
    with db.read() as session:
        chats = session.execute(select(Chat.id, Chat.type, Chat.title)).all()
        names = dict(session.execute(select(User.id, User.name)).all())
    users = sorted(names)
    rng = random.Random(seed)
    totals, steps = [], {"store": [], "read": [], "settle": []}
    for k in range(WARM_UP + replies):
        chat_id, kind, title = rng.choice(chats)
        user = chat_id if kind == "private" else rng.choice(users)
        message_id = FIRST_PROBE_ID + 2 * k
        incoming = Incoming(
            chat_id=chat_id,
            chat_type=kind,
            user_id=user,
            text=f"Hello there, message {k}: how is everyone doing today?",
            user_name=names[user],
            chat_title=title,
            message_id=message_id,
            update_id=900_000_000 + k,
        )
        t0 = time.perf_counter()
        record_incoming(db, [(incoming, True)])
        t1 = time.perf_counter()
        owed = read_owed(db, chat_id, message_id, MAX_PROMPT_BYTES)
        t2 = time.perf_counter()
        settle_owed(db, chat_id, message_id, "Fine, thanks!", message_id + 1)
        t3 = time.perf_counter()
        if owed is None or not owed.turns:
            raise AssertionError(f"no reply owed to message {message_id} in chat {chat_id}")
        if k >= WARM_UP:
            totals.append((t3 - t0) * 1000)
            for name, dt_s in zip(steps, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                steps[name].append(dt_s * 1000)
    return totals, {name: statistics.median(v) for name, v in steps.items()}


def status_time(settings: Settings, db: Database, calls: int) -> float:
    """Median ms of what /status reads (the live model's description is in memory)."""
    store = open_store(settings)
    version, model = store.load_live()
    info = ModelInfo.of_version(store, version, model)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        extra = status_lines(settings, db, store, running=False, next_check=None)
        status_text(db, info, 3600.0, extra)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def train(settings: Settings, db: Database, lines: list[str]) -> dict:
    """One `charbot train` child as the bot starts it, and the style scored around it."""
    # TensorFlow (and bot.retrainer, which imports it) only when training: --no-train
    # runs stay light on shared cores.
    from bot.retrainer import CHILD_TIMEOUT, child_env
    from model.codec import encode_transcript
    from model.network import network_of
    from model.retrain import limit_threads
    from model.scoring import served_bits

    limit_threads(1)
    encoded = [encode_transcript([(line, True)]) for line in lines]

    def probe() -> float:
        _, model = open_store(settings).load_live()
        return served_bits(network_of(model), encoded, model.mix)

    before = probe()
    out_path, err_path = settings.data_dir / "train.out", settings.data_dir / "train.err"
    cmd = [sys.executable, "-m", "bot.cli", "train", "--json"]
    start = time.monotonic()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        child = subprocess.Popen(cmd, env=child_env(settings), stdout=out, stderr=err, cwd=ROOT)
    killed = False
    while True:  # wait4: this child's own peak RSS, even if it is killed
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        if not killed and time.monotonic() - start > CHILD_TIMEOUT:
            child.kill()
            killed = True
        time.sleep(0.2)
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - start
    run_id = run_id_from(out_path.read_bytes())
    run = load_run(db, run_id) if run_id else None
    if run is None:
        tail = err_path.read_text(errors="replace").strip().splitlines()[-5:]
        print(f"charbot train exit {child.returncode}; stderr ends:", *tail, sep="\n  ")
    return {
        "wall": wall,
        "rss_mib": usage.ru_maxrss / 1024,  # KiB on Linux
        "killed": killed,
        "run": run,
        "before": before,
        "after": probe(),
    }


def measure(size: int, args: argparse.Namespace, work: Path) -> Row:
    cache = work / f"scale-{size}"
    built = load_built(cache) if args.reuse else None
    if built is None:
        shutil.rmtree(cache, ignore_errors=True)
        print(f"building {size:,} messages in {cache}", file=sys.stderr)
        built = build(cache, size, seed=args.seed)
    else:
        built = {**built, "cached": True}
    data_dir = work / f"run-{size}"  # a copy: timed replies and the run change the data
    shutil.rmtree(data_dir, ignore_errors=True)
    shutil.copytree(cache, data_dir)
    extra = {}
    if args.epochs is not None:
        extra["retrain_epochs"] = args.epochs
    if args.train_seconds is not None:
        extra["retrain_max_seconds"] = args.train_seconds
    settings = Settings(data_dir=data_dir, **extra)
    db = open_database(sqlite_url(data_dir))
    try:
        print(f"{size:,}: timing replies and /status", file=sys.stderr)
        reply_ms, parts = reply_path(db, args.replies, args.seed)
        row = Row(size, built, reply_ms, parts, status_time(settings, db, args.status_calls))
        if not args.no_train:
            print(f"{size:,}: charbot train", file=sys.stderr)
            row.train = train(settings, db, probe_lines())
    finally:
        db.dispose()
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    return row


def table_row(row: Row) -> str:
    lat = sorted(row.reply_ms)
    p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
    built = f"{row.built['seconds']:.1f}" + (" (cached)" if row.built.get("cached") else "")
    cells = [
        f"{row.size:,}",
        built,
        f"{statistics.median(lat):.1f} / {p99:.1f}",
        f"{row.status_ms:.1f}",
    ]
    t = row.train
    if t is None:
        cells += ["—"] * 5
    else:
        run = t["run"]
        outcome = "no record" if run is None else run.status
        if run is not None and run.epochs:
            outcome += f", {run.epochs} epochs"
        if t["killed"]:
            outcome += " (killed at the bot's child timeout)"
        chat = "—"
        if run is not None and run.live_chat_bits is not None:
            chat = f"{run.live_chat_bits:.3f} → {_bits(run.candidate_chat_bits)}"
        cells += [
            f"{t['wall']:.0f}",
            f"{t['rss_mib']:,.0f}",
            outcome,
            chat,
            f"{t['before']:.3f} → {t['after']:.3f}",
        ]
    return "| " + " | ".join(cells) + " |"


def _bits(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def details(row: Row) -> list[str]:
    b = row.built
    lines = [
        f"- {row.size:,}: {b['human']:,} human messages ({b['style_human']:,} in the new "
        f"style), {b['bot']:,} the bot's; {b['users']} users, {b['chats']} chats "
        f"({b['groups']} groups); {b['text_bytes'] / 1e6:.1f} MB of text. Reply storage "
        "steps, median ms: " + ", ".join(f"{name} {ms:.1f}" for name, ms in row.parts_ms.items())
    ]
    run = row.train["run"] if row.train else None
    result = stored_result(run)
    if result is not None:
        ex = result.examples
        lines.append(
            f"  run {run.id}: {ex.train_chunks:,} chunks ({ex.train_bytes:,} bytes) trained, "
            f"{ex.heldout_chunks:,} held out ({ex.heldout_bytes:,} bytes), {ex.base_bytes:,} "
            f"base bytes mixed in; {result.seconds:.0f} s in the run ({result.fit_seconds:.0f} "
            f"s fitting); base slice {_bits(run.live_base_bits)} → "
            f"{_bits(run.candidate_base_bits)}"
        )
    if run is not None and run.error:
        lines.append(f"  {run.status}: {run.error}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--big", action="store_true", help=f"add {BIG:,} messages")
    parser.add_argument("--no-train", action="store_true", help="skip the training run")
    parser.add_argument("--work", type=Path, default=None, help="where built data dirs are kept")
    parser.add_argument("--reuse", action="store_true", help="reuse data dirs built in --work")
    parser.add_argument("--keep", action="store_true", help="keep each size's measured copy")
    parser.add_argument("--replies", type=int, default=200)
    parser.add_argument("--status-calls", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=None, help="cap a run's epochs")
    parser.add_argument("--train-seconds", type=int, default=None, help="a run's time budget")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    budget = {f.name for f in dataclasses.fields(Settings)}
    if args.train_seconds is not None and "retrain_max_seconds" not in budget:
        parser.error("--train-seconds: this charbot has no retraining time budget setting")
    sizes = [int(s) for s in args.sizes.split(",")] + ([BIG] if args.big else [])
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"{dt.datetime.now():%Y-%m-%d %H:%M}, {platform.node()}: nproc {os.cpu_count()}, "
        f"load average {os.getloadavg()[0]:.1f}, Python {platform.python_version()}"
    )
    print(
        "\n| size | build s | reply storage p50 / p99 ms | /status ms | train wall s "
        "| train peak RSS MiB | outcome | held-out chat before → after "
        "| pirate lines before → after |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |", flush=True)
    rows = []
    try:
        for size in sizes:
            rows.append(measure(size, args, work))
            print(table_row(rows[-1]), flush=True)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print()
    if not args.no_train:
        print(
            f"Pirate lines: {len(probe_lines())} lines of the style's never-stored (subject, verb) "
            "pairs, each a one-turn conversation, bits/byte as served without the chat memory."
        )
    for row in rows:
        print("\n".join(details(row)))


if __name__ == "__main__":
    main()
