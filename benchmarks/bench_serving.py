"""Serving under load, end to end: the real `charbot run` process against the Bot API
stand-in (tests/telegram_stub.py) on 127.0.0.1, with the shipped model.

In one run, four bot processes (batching on/off x Telegram rate limiter on/off):
- idle: one user at a time, p50/p99 from message pushed to reply received;
- bursts of 10, 40 and 100 users writing at once: all answered, p50/p99/max latency,
  throughput in replies/s;
- resident memory of the bot after warm-up (every batch size: a start warms the
  smallest before it polls, the rest beside it) and after the bursts, time from start to
  the first getUpdates. Each bot has a data dir of its own; the first counts the base
  n-grams and compiles the generator, keeping both (model.ngram_cache, bot.xla_cache),
  as the first start after an install or upgrade does, and the others start with what
  it kept, as every later start does. This process imports no TensorFlow before the bots
  have run: library pages it mapped too would count in each bot's resident memory
  (bot/resident.py hands back only pages no other process maps).
Then a fifth bot whose database already holds --history-mb of human text (bench_memory's
mix): its resident memory once the chat memory is counted and every batch size is warm,
and after each of two more refreshes, each due after a burst of 40 new users (so a
bot that left compiled code behind at each refresh would grow by it).
The batching ratio is read with the rate limiter set aside (Telegram caps a bot at
about 30 messages/s, which would otherwise hide it). Bars: 40 users, throughput with
batching >= 5x without; idle p50 < 150 ms.

Then the reply service alone, in this process, for the ceiling batching can reach:
the same bursts as requests straight to bot.replies.ReplyService with the shipped
generator, batching on and off, no Telegram, storage or HTTP (--service-only runs
just this part).

Usage: python benchmarks/bench_serving.py [--model PATH] [--idle N] [--bursts 10,40,100]
       [--history-mb MB] [--service-only]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from telegram_stub import BotApiStub  # noqa: E402

from bot import xla_cache  # noqa: E402
from bot.datadir import MODELS_DIR  # noqa: E402
from bot.logs import MEMORY_REFRESHED, WARMED_UP  # noqa: E402
from model import ngram_cache  # noqa: E402

# What a start keeps in the data dir for the next (the base n-grams, compiled code).
KEPT = (Path(MODELS_DIR) / ngram_cache.FOLDER, Path(xla_cache.FOLDER))

CHARBOT = Path(sys.executable).with_name("charbot")
MESSAGES = [
    "Hello! How are you?",
    "What is your name?",
    "Do you like music?",
    "Tell me something funny.",
    "你好，你是谁？",
    "Привет! Как дела?",
    "What do you think about robots?",
    "Good morning 😀",
]
_user_ids = itertools.count(1_000_000)


@dataclass
class Phase:
    name: str
    latencies: list[float] = field(default_factory=list)  # seconds, one per reply
    seconds: float = 0.0  # first push to last reply

    def row(self) -> str:
        lat = sorted(self.latencies)
        p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000  # noqa: E731
        rate = len(lat) / self.seconds if self.seconds else float("nan")
        return (
            f"{self.name:<34}{len(lat):>5}{p(0.5):>9.0f}{p(0.99):>9.0f}"
            f"{lat[-1] * 1000:>9.0f}{rate:>10.1f}"
        )


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_for_line(path: Path, text: str, times: int = 1, timeout: float = 300) -> float:
    """Seconds until `text` is in the log at `path` `times` times."""
    start = time.monotonic()
    while path.read_text(errors="replace").count(text) < times:
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{text!r} not {times} times in {path} after {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - start


def copy_kept(source: Path, target: Path) -> None:
    """What a start keeps (KEPT), from one data dir (or copy of one) to another."""
    for folder in KEPT:
        if (source / folder).exists():
            shutil.copytree(source / folder, target / folder)


@contextlib.contextmanager
def running_bot(args, stub: BotApiStub, data_dir: str, flags=(), **env: str):
    """`charbot run` on `data_dir` against `stub`, logging to bot.log there, with `env`
    set; stopped (SIGTERM) on the way out."""
    env = {
        **os.environ,
        "TELEGRAM_BOT_TOKEN": stub.token,
        "CHARBOT_TELEGRAM_BASE_URL": stub.base_url,
        "CHARBOT_DATA_DIR": data_dir,
        **({"CHARBOT_MODEL_PATH": args.model} if args.model else {}),
        **env,
    }
    with open(Path(data_dir) / "bot.log", "w") as log:
        proc = subprocess.Popen([str(CHARBOT), "run", *flags], env=env, stdout=log, stderr=log)
        try:
            yield proc
        finally:
            proc.terminate()
            proc.wait(60)


def ask(stub: BotApiStub, users: int) -> Phase:
    """`users` new users each send one message at once; wait until every one is answered."""
    ids = [next(_user_ids) for _ in range(users)]
    pushed = {}
    start = time.monotonic()
    for i, user in enumerate(ids):
        pushed[user] = time.monotonic()
        stub.push_message(MESSAGES[i % len(MESSAGES)], user_id=user)
    phase = Phase(f"burst {users}")
    for user in ids:
        [reply] = stub.wait_for_messages(user, 1, timeout=600)
        phase.latencies.append(reply["received_at"] - pushed[user])
    phase.seconds = (
        max(pushed[u] + lat for u, lat in zip(ids, phase.latencies, strict=True)) - start
    )
    return phase


def idle(stub: BotApiStub, n: int) -> Phase:
    phase = Phase("idle (one user at a time)")
    for _ in range(n):
        phase.latencies += ask(stub, 1).latencies
        phase.seconds += phase.latencies[-1]
    return phase


def serve(args, *, batching: bool, rate_limit: bool, kept: Path) -> dict:
    """One bot's figures; `kept` keeps what a start keeps (KEPT) between bots."""
    label = f"batching {'on ' if batching else 'off'}, limiter {'on' if rate_limit else 'off'}"
    flags = [] if batching else ["--max-batch", "1"]
    flags += [] if rate_limit else ["--no-rate-limit"]
    with BotApiStub() as stub, tempfile.TemporaryDirectory() as data_dir:
        log = Path(data_dir) / "bot.log"
        first = not kept.exists()
        if not first:
            copy_kept(kept, Path(data_dir))
        label += " (first start: counts and compiles)" if first else ""
        start = time.monotonic()
        with running_bot(args, stub, data_dir, flags) as proc:
            stub.wait_for_calls("getUpdates", 1, timeout=300)
            startup = time.monotonic() - start
            ask(stub, 1)  # one reply before measuring
            warm = wait_for_line(log, WARMED_UP)  # the other batches
            rss_warm = rss_mib(proc.pid)
            result = {"label": label, "startup": startup, "warm": warm, "rss_warm": rss_warm}
            phases = [idle(stub, args.idle)] if batching else []
            phases += [ask(stub, n) for n in args.bursts]
            result["phases"] = phases
            result["rss_after"] = rss_mib(proc.pid)
        if first:
            copy_kept(Path(data_dir), kept)
        stats = [ln for ln in log.read_text().splitlines() if "reply service:" in ln]
        result["batches"] = stats[-1].split("reply service: ")[-1].strip() if stats else "?"
    return result


def with_history(args, kept: Path) -> tuple[str, list[tuple[str, float]]]:
    """(Its first count's log line, (moment, RSS MiB) of each) for a bot started on
    --history-mb of stored text (module docstring)."""
    with BotApiStub() as stub, tempfile.TemporaryDirectory() as data_dir:
        copy_kept(kept, Path(data_dir))
        fill = (
            f"import sys; sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'benchmarks')!r}]; "
            f"import bench_memory, pathlib; "
            f"bench_memory.fill(pathlib.Path({data_dir!r}), {args.history_mb})"
        )
        subprocess.run([sys.executable, "-c", fill], check=True, stdout=subprocess.DEVNULL)
        log = Path(data_dir) / "bot.log"
        with running_bot(args, stub, data_dir, CHARBOT_MEMORY_REFRESH_MESSAGES="40") as proc:
            stub.wait_for_calls("getUpdates", 1, timeout=300)
            ask(stub, 1)
            wait_for_line(log, WARMED_UP)
            wait_for_line(log, MEMORY_REFRESHED)
            seen = [("chat memory counted, every batch size warm", rss_mib(proc.pid))]
            for n in (2, 3):
                ask(stub, 40)
                wait_for_line(log, MEMORY_REFRESHED, times=n)
                seen.append((f"refresh {n}, after a burst of 40", rss_mib(proc.pid)))
        first = next(ln for ln in log.read_text().splitlines() if MEMORY_REFRESHED in ln)
        return first.split(": ", 1)[-1], seen


def service_alone(args, repeats: int = 5) -> None:
    """Replies/s of the batching service itself: every burst's requests queued at once."""
    import asyncio

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(ROOT))
    from bot.replies import ReplyService
    from model import BASE_MODEL_PATH, load
    from model.generator import Generator

    generator = Generator(load(args.model or BASE_MODEL_PATH))

    async def burst(service: ReplyService, users: int) -> tuple[float, int]:
        start = time.monotonic()
        replies = await asyncio.gather(
            *(service.reply([MESSAGES[i % len(MESSAGES)]], 0.6) for i in range(users))
        )
        return time.monotonic() - start, sum(len(r.text.encode()) for r in replies)

    async def measure(max_batch: int | None, users: int) -> tuple[float, float]:
        service = ReplyService(generator, max_batch=max_batch)
        await service.start()
        try:
            await burst(service, users)  # warm-up
            runs = [await burst(service, users) for _ in range(repeats)]
        finally:
            await service.stop()
        seconds = statistics.median(t for t, _ in runs)
        return users / seconds, statistics.mean(b for _, b in runs) / users

    print(f"\n== the reply service alone (no Telegram, storage or HTTP), median of {repeats}")
    columns = ("batching replies/s", 20), ("off replies/s", 15), ("ratio", 8), ("bytes/reply", 13)
    print(f"{'users':>7}" + "".join(f"{name:>{width}}" for name, width in columns))
    for users in args.bursts:
        on, size = asyncio.run(measure(None, users))
        off, _ = asyncio.run(measure(1, users))
        print(f"{users:>7}{on:>20.1f}{off:>15.1f}{on / off:>7.1f}x{size:>13.0f}")


def report(args, results: list[dict]) -> None:
    """The four bots' figures, and the bars."""
    header = f"{'':<34}{'n':>5}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'replies/s':>10}"
    for res in results:
        print(
            f"\n== {res['label']}: start to first poll {res['startup']:.1f} s "
            f"(every batch size warm {res['warm']:.1f} s after the first reply), "
            f"RSS {res['rss_warm']:.0f} MiB warm, {res['rss_after']:.0f} MiB after bursts"
        )
        print(f"   {res['batches']}")
        print(header)
        for phase in res["phases"]:
            print(phase.row())

    def rate(res, n):
        [phase] = [p for p in res["phases"] if p.name == f"burst {n}"]
        return len(phase.latencies) / phase.seconds

    print("\nbatching ratio (throughput with / without):")
    for limiter, (on, off) in (("on", results[0:2]), ("off", results[2:4])):
        ratios = ", ".join(f"{n} users {rate(on, n) / rate(off, n):.1f}x" for n in args.bursts)
        print(f"  limiter {limiter}: {ratios}")
    idle_p50 = statistics.median(results[0]["phases"][0].latencies) * 1000
    print(
        f"bars: 40 users, limiter off >= 5x -> {rate(results[2], 40) / rate(results[3], 40):.1f}x"
        if 40 in args.bursts
        else "bars: (no 40-user burst run)"
    )
    print(f"      idle p50 < 150 ms -> {idle_p50:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model file (default: the shipped base)")
    parser.add_argument("--idle", type=int, default=30, help="idle replies to time")
    parser.add_argument("--bursts", default="10,40,100")
    parser.add_argument("--history-mb", type=float, default=1.0, help="the fifth bot's text")
    parser.add_argument("--service-only", action="store_true", help="only the service alone")
    args = parser.parse_args()
    args.bursts = [int(n) for n in args.bursts.split(",")]
    print(f"{os.cpu_count()} cores; model: {args.model or 'shipped base'}")
    if args.service_only:
        service_alone(args)
        return
    with tempfile.TemporaryDirectory() as folder:
        kept = Path(folder) / "kept"
        results = [
            serve(args, batching=b, rate_limit=r, kept=kept)
            for r in (True, False)
            for b in (True, False)
        ]
        report(args, results)
        counted, seen = with_history(args, kept)
    print(f"\n== a bot with {args.history_mb:g} MB of stored text; its first count: {counted}")
    for moment, rss in seen:
        print(f"   RSS {rss:.0f} MiB: {moment}")
    service_alone(args)


if __name__ == "__main__":
    main()
