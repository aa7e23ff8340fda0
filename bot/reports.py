"""What admins read: /status, a retraining run's outcome, and the one-line result a
`charbot train` child prints for its parent.

No TensorFlow here (`charbot status` uses it too): a run's stored report is read back
as model.run_result.RunResult.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path

from bot.model_info import ModelInfo
from bot.run_backoff import backoff_line, failure_backoff
from bot.settings import Settings
from model.memory import ChatMemory, MemoryFileError
from model.run_result import RunResult
from model.store import ModelStore
from storage import (
    Database,
    TrainingRun,
    count_human_messages_since,
    count_messages,
    count_trainable_messages,
    get_run,
    last_finished_run,
    last_run,
    run_result,
)

STALE_RUN = "the process running it stopped before it finished"
COUNTED_RUNS = ("published", "rejected", "skipped")  # runs that used up the messages they saw
RUN_ID_KEY = "run_id"  # the key of the child's last stdout line (`charbot train --json`)
ALREADY_RUNNING_EXIT = 3  # `charbot train`'s exit status when another run holds the lock


def status_text(
    db: Database, model: ModelInfo, uptime: float | None, extra: Sequence[str] = ()
) -> str:
    """What /status shows: model version, message counts, uptime (None: not the running bot).

    `extra` lines (retraining: live version, last run, schedule) are added at the end.
    """
    with db.read() as session:
        counts = count_messages(session)
    running = "not running here (this is `charbot status`)" if uptime is None else _span(uptime)
    return "\n".join(
        [
            f"Model: {model.describe()}",
            f"Messages: {counts['total']} ({counts['human']} from people, "
            f"{counts['bot']} from the bot)",
            f"Users: {counts['users']}, chats: {counts['chats']}",
            f"Uptime: {running}",
            *extra,
        ]
    )


def _span(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} d {hours} h {minutes} min"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def new_messages(db: Database) -> int:
    """Human messages since the last run that used its data (survives restarts)."""
    with db.read() as session:
        run = last_finished_run(session, COUNTED_RUNS)
        return count_human_messages_since(session, run.last_message_id if run else 0)


def schedule_wait(settings: Settings, db: Database, now: dt.datetime) -> str | None:
    """Why a scheduled run would not start now (a failure backoff holds, or fewer than
    CHARBOT_RETRAIN_MIN_MESSAGES new messages), in a few words; None when one is due."""
    backoff = failure_backoff(db)
    if backoff is not None and backoff.holds(now):
        return (
            f"{backoff.failures} failed run(s) in a row, waiting until "
            f"{backoff.until:%Y-%m-%d %H:%M} UTC"
        )
    count = new_messages(db)
    if count < settings.retrain_min_messages:
        return f"{count} new messages, waiting for {settings.retrain_min_messages}"
    return None


def _bits(value: float | None) -> str:
    """A stored loss for people: a run that diverged stores none."""
    return "n/a" if value is None else f"{value:.3f}"


def load_run(db: Database, run_id: int) -> TrainingRun | None:
    with db.read() as session:
        return get_run(session, run_id)


def stored_result(run: TrainingRun | None) -> RunResult | None:
    """The full report stored with `run`; None if there is none or it cannot be read
    (a record an older charbot wrote)."""
    data = run_result(run) if run is not None else None
    try:
        return RunResult.from_dict(data) if data else None
    except (KeyError, TypeError, ValueError):
        return None


def describe_run(run: TrainingRun | None) -> str:
    """What an admin reads about a run: outcome, losses before/after, epochs, time, data."""
    if run is None:
        return "No retraining run yet."
    who = f"asked by {run.requested_by}" if run.requested_by else run.trigger
    head = f"Retraining run {run.id} ({who}): {run.status}"
    if run.status == "published":
        head += f", now version {run.new_version}"
    lines = [head + "."]
    result = stored_result(run)
    memory = result is not None and result.losses.memory
    if run.live_chat_bits is not None:
        served = " (as served with the chat memory, the live model's base without it)"
        lines.append(
            f"Held-out chat: {_bits(run.live_chat_bits)} → {_bits(run.candidate_chat_bits)} "
            f"bits/byte; base corpus: {_bits(run.live_base_bits)} → "
            f"{_bits(run.candidate_base_bits)}{served if memory else ''}."
        )
    if memory:
        losses = result.losses
        lines.append(
            f"Without the chat memory: held-out chat {_bits(losses.live_chat_without_memory)} → "
            f"{_bits(losses.candidate_chat_without_memory)} bits/byte; base corpus "
            f"{_bits(losses.live_base)} → {_bits(losses.candidate_base_without_memory)}."
        )
    if result is not None:
        ex = result.examples
        lines.append(
            f"{result.epochs} epochs (best {result.best_epoch}"
            f"{', stopped at its time budget' if result.out_of_time else ''}) "
            f"in {result.seconds:.0f} s; {ex.train_chunks} conversations "
            f"({ex.train_bytes} bytes) trained, {ex.heldout_chunks} held out, "
            f"{ex.base_bytes} bytes of the base corpus mixed in."
        )
    if run.error:
        lines.append(f"Reason: {run.error}")
    return "\n".join(lines)


def plot_of(run: TrainingRun | None) -> Path | None:
    result = stored_result(run)
    path = Path(result.plot_path) if result is not None and result.plot_path else None
    return path if path is not None and path.is_file() else None


def describe_holder(holder: dict | None) -> str:
    """Which run holds the run lock, for people: "pid 4242 on gpu-1 since 2026-01-02 03:04
    UTC" (the host only when the lock says, as the database's lock does: a pid names a
    process on that host only); "" when nothing is known."""
    if not holder or not isinstance(holder, dict):  # a lock file that says nothing usable
        return ""
    parts = []
    if holder.get("pid") is not None:
        parts.append(f"pid {holder['pid']}")
    if holder.get("host"):
        parts.append(f"on {holder['host']}")
    with contextlib.suppress(TypeError, ValueError):
        since = dt.datetime.fromisoformat(holder.get("since")).astimezone(dt.UTC)
        parts.append(f"since {since.strftime('%Y-%m-%d %H:%M UTC')}")
    return " ".join(parts)


def run_going(holder: dict | None) -> str:
    """Why no run starts while the run lock is held: "another retraining run is going
    (pid 4242 on gpu-1 since ...)", naming the holder as far as it is known."""
    who = describe_holder(holder)
    return f"another retraining run is going{f' ({who})' if who else ''}"


def status_lines(
    settings: Settings,
    db: Database,
    store: ModelStore,
    *,
    running: bool = False,
    next_check: dt.datetime | None = None,
    holder: dict | None = None,
) -> list[str]:
    """What /status adds about retraining: live version, last run, schedule, data.

    `holder`: the run lock's holder (the lock's `holder()`), named while a run is going.
    """
    version = store.live_version()
    losses = store.info(version).get("losses") or {} if version else {}
    live = f"Live version: {version} of {len(store.versions())} kept"
    if losses.get("candidate_chat") is not None:
        served = " with the chat memory" if losses.get("memory") else ""
        live += (
            f" (held-out chat {losses['candidate_chat']:.3f}, "
            f"base {losses['candidate_base']:.3f} bits/byte{served})"
        )
    with db.read() as session:
        last = last_run(session)
        trainable = count_trainable_messages(session)
    new = new_messages(db)
    if last is None:
        last_line = "Last run: none yet"
    else:
        when = (last.finished_at or last.started_at).strftime("%Y-%m-%d %H:%M UTC")
        status = last.status
        if status == "running" and not running:  # its process died; not yet recorded so
            status = "interrupted (its process stopped before it finished)"
        last_line = f"Last run: {last.id}, {status}, {when}"
        if last.status == "published":
            last_line += f" (version {last.new_version})"
    if running:
        schedule = "Retraining: a run is going now"
        if who := describe_holder(holder):
            schedule += f" ({who})"
    else:
        when = next_check.strftime("%Y-%m-%d %H:%M UTC") if next_check else "while the bot runs"
        schedule = (
            f"Next scheduled check: {when}, every {settings.retrain_interval} s "
            f"(starts a run at {settings.retrain_min_messages} new messages; {new} so far)"
        )
    lines = [live, last_line, schedule]
    if hold := backoff_line(failure_backoff(db), dt.datetime.now(dt.UTC)):
        lines.append(hold)
    return [*lines, f"Messages available for training: {trainable}"]


# -- the child's answer to its parent ---------------------------------------------------


def result_line(run: TrainingRun) -> str:
    """The last line `charbot train --json` prints: which run it was and how it ended."""
    return json.dumps({RUN_ID_KEY: run.id, "status": run.status})


def no_run_line(reason: str) -> str:
    """The last line `charbot train --if-due --json` prints when it starts no run."""
    return json.dumps({RUN_ID_KEY: None, "status": "not started", "reason": reason})


def run_id_from(stdout: bytes) -> int | None:
    """The run id from the last result line a `charbot train --json` child printed."""
    for line in reversed(stdout.decode(errors="replace").splitlines()):
        with contextlib.suppress(ValueError, KeyError, TypeError):
            return int(json.loads(line)[RUN_ID_KEY])
    return None


def describe_memory(memory: ChatMemory | None) -> str:
    if memory is None:
        return "empty (too little text yet)"
    info = memory.info
    age = _span(info.age_seconds(dt.datetime.now(dt.UTC)))
    return (
        f"{info.messages} messages from {info.users} users ({info.text_bytes / 1e6:.2f} MB "
        f"of text), {memory.size_bytes / 1e6:.1f} MB of counts, counted {age} ago"
    )


def saved_memory(path: Path) -> ChatMemory | None:
    """The chat memory saved at `path`; None when there is none or it does not load."""
    try:
        return ChatMemory.load(path)
    except (FileNotFoundError, MemoryFileError):
        return None


def memory_line(memory: ChatMemory | None, settings: Settings) -> str:
    """What /status and `charbot status` say of the chat memory."""
    return (
        f"Chat memory: {describe_memory(memory)}; counted again after "
        f"{settings.memory_refresh_messages} new messages or "
        f"{settings.memory_refresh_interval} s"
    )
