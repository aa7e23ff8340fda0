"""Retraining, bot side: one run as `charbot train` does it, and the running bot's part.

A run happens in its own process (`charbot train`, low priority, one thread): it
reads the stored conversations, fine-tunes the live model (model.retrain), publishes
the candidate only if it passes the gate, and records everything in the database.
The running bot starts such processes (schedule or /retrain), notices new live
versions, loads them beside the current one, warms them up and swaps one reference.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bot.settings import Settings
from bot.texts import plural
from storage import (
    Database,
    count_human_messages_since,
    count_trainable_messages,
    finish_run,
    get_run,
    last_finished_run,
    last_message_id,
    last_run,
    learning_user_ids,
    mark_reported,
    mark_stale_runs_failed,
    start_run,
    training_transcripts,
    unreported_runs,
)

if TYPE_CHECKING:
    from model.retrain import RetrainConfig, RunResult
    from model.store import ModelStore, RunLock
    from storage import TrainingRun

log = logging.getLogger(__name__)

KEEP_VERSIONS = 5  # published versions kept on disk (the live one and its predecessor always)
POINTER_CHECK = 30.0  # seconds between looks at the live pointer (a `charbot train` elsewhere)
COUNTED_RUNS = ("published", "rejected", "skipped")  # runs that used up the messages they saw
STALE_RUN = "the process running it stopped before it finished"
CHILD_TIMEOUT = 2 * 60 * 60  # seconds; a run's fit stops after RetrainConfig.max_seconds


class AlreadyRunning(Exception):
    """Another retraining run holds the lock."""


# -- the store and the lock --------------------------------------------------------------


def open_store(settings: Settings) -> ModelStore:
    """The data dir's model versions; a new data dir starts from the configured base model."""
    from model import BASE_MODEL_PATH
    from model.store import ModelStore

    store = ModelStore(settings.data_dir / "models")
    if store.live_version() is None:
        store.bootstrap(settings.model_path or BASE_MODEL_PATH)
    return store


def adopt_shipped_base(settings: Settings) -> int | None:
    """Publish the configured base model as a new version when the live version is that
    same network as an older charbot shipped it, without the mixture entry the shipped
    file now carries (model/mixture.py): an upgraded install then samples as a new one
    does. The old version stays for /rollback; fine-tuned versions are left alone.
    Returns the new version, or None when there is nothing to adopt.
    """
    import numpy as np

    from model import BASE_MODEL_PATH, load
    from model.mixture import MIX_KEY

    store = open_store(settings)
    live, model = store.load_live()
    if model.meta.get("kind") != "base" or MIX_KEY in model.meta:
        return None
    if any(store.info(v).get("replaces") == live for v in store.versions()):
        return None  # adopted once already, and an admin rolled back to this one
    base_path = settings.model_path or BASE_MODEL_PATH
    shipped = load(base_path)
    same_network = shipped.config == model.config and all(
        np.array_equal(a, b) for a, b in zip(shipped.weights, model.weights, strict=True)
    )
    if MIX_KEY not in shipped.meta or not same_network:
        return None
    info = {"kind": "base", "source": str(base_path), "replaces": live}
    version = store.publish_if_live(live, shipped, info)
    if version is not None:
        log.info(
            "version %d: the shipped base model, which now mixes in the base n-gram "
            "(version %d is the same network alone; /rollback returns to it)",
            version,
            live,
        )
    return version


def run_lock(settings: Settings) -> RunLock:
    from model.store import RunLock

    return RunLock(settings.data_dir / "train.lock")


def run_dir(settings: Settings, run_id: int) -> Path:
    return settings.data_dir / "runs" / f"run-{run_id:05d}"


def new_messages(db: Database) -> int:
    """Human messages since the last run that used its data (survives restarts)."""
    with db.read() as session:
        run = last_finished_run(session, COUNTED_RUNS)
        return count_human_messages_since(session, run.last_message_id if run else 0)


# -- one run (inside the `charbot train` process) ------------------------------------------


def train_once(
    settings: Settings,
    db: Database,
    *,
    trigger: str = "cli",
    requested_by: int | None = None,
    config: RetrainConfig | None = None,
    report: Callable[[str], None] = print,
) -> TrainingRun:
    """One retraining run, exactly as the scheduler starts it; returns its record.

    Raises AlreadyRunning when another run holds the lock. Failures are recorded
    (status "failed") and re-raised.
    """
    from model import load
    from model.retrain import NotEnoughData, RetrainConfig, retrain

    if config is None:
        config = RetrainConfig()
        if settings.retrain_epochs is not None:
            config = dataclasses.replace(config, epochs=settings.retrain_epochs)
    lock = run_lock(settings)
    if not lock.acquire():
        holder = lock.holder() or {}
        raise AlreadyRunning(f"another retraining run is going (since {holder.get('since', '?')})")
    try:
        with db.begin() as session:
            if stale := mark_stale_runs_failed(session, STALE_RUN):
                log.warning("%d earlier run(s) had died; marked failed", stale)
            seen = last_message_id(session)
            run_id = start_run(
                session, trigger=trigger, requested_by=requested_by, last_message_id=seen
            ).id
        store = open_store(settings)
        live_version, live = store.load_live()
        with db.read() as session:
            transcripts = training_transcripts(session)
            contributors = learning_user_ids(session)
        folder = run_dir(settings, run_id)
        report(f"run {run_id}: fine-tuning version {live_version} on {len(transcripts)} chats")

        def on_epoch(epoch: int, logs: dict) -> None:
            report(
                f"epoch {epoch}: train {logs.get('loss_bits', float('nan')):.3f}, "
                f"held-out {logs.get('val_loss_bits', float('nan')):.3f} bits/byte"
            )

        try:
            result = retrain(live, transcripts, config, folder, on_epoch=on_epoch)
        except NotEnoughData as exc:
            with db.begin() as session:
                finish_run(
                    session, run_id, status="skipped", live_version=live_version, error=str(exc)
                )
            report(f"skipped: {exc}")
            return _reload(db, run_id)
        new_version = None
        # BEGIN IMMEDIATE: no /forget or /learn off can land between the check and the
        # publish; one that landed during training withdraws the candidate.
        with db.begin() as session:
            withdrawn = contributors - learning_user_ids(session)
            now_live = store.live_version()
            if withdrawn:
                result = withdraw(result, len(withdrawn), folder)
            elif now_live != live_version:
                result = dataclasses.replace(
                    result,
                    accepted=False,
                    reason=(
                        f"rejected: the live version changed from {live_version} to {now_live} "
                        f"during the run (a /rollback?); a candidate fine-tuned from version "
                        f"{live_version} would undo that"
                    ),
                )
            elif result.accepted:
                info = {"run": run_id, "trigger": trigger, "losses": result.to_dict()["losses"]}
                new_version = store.publish(load(result.candidate_path), info)
        if new_version is not None:
            try:
                store.prune(KEEP_VERSIONS)
            except OSError:  # the run succeeded; old versions wait for the next prune
                log.exception("pruning old model versions failed")
        outcome = "published" if result.accepted else "rejected"
        l = result.losses  # noqa: E741
        with db.begin() as session:
            finish_run(
                session,
                run_id,
                status=outcome,
                examples=result.examples.train_chunks,
                epochs=result.epochs,
                live_version=live_version,
                new_version=new_version,
                live_chat_bits=l.live_chat,
                candidate_chat_bits=l.candidate_chat,
                live_base_bits=l.live_base,
                candidate_base_bits=l.candidate_base,
                error=None if result.accepted else result.reason,
                result={**result.to_dict(), "run_dir": str(folder)},
            )
        report(f"{outcome}: {result.reason}")
        return _reload(db, run_id)
    except Exception as exc:
        with contextlib.suppress(Exception), db.begin() as session:
            if "run_id" in locals():
                finish_run(session, run_id, status="failed", error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        lock.release()


def withdraw(result: RunResult, users: int, folder: Path) -> RunResult:
    """`result` rejected because `users` users withdrew their text during the run.

    The candidate and the checkpoint were trained on that text: both are deleted.
    """
    from model.training import CHECKPOINT_FILE

    for name in (Path(result.candidate_path).name, CHECKPOINT_FILE):
        (folder / name).unlink(missing_ok=True)
    reason = (
        f"rejected: {plural(users, 'user')} whose messages it was trained on asked to be "
        "forgotten or turned learning off during the run; the candidate was deleted"
    )
    log.info("%s", reason)
    return dataclasses.replace(result, accepted=False, reason=reason, candidate_path="")


def _unreported(db: Database) -> list[TrainingRun]:
    with db.read() as session:
        return unreported_runs(session)


def _mark_reported(db: Database, run_id: int) -> None:
    with db.begin() as session:
        mark_reported(session, run_id)


def _reload(db: Database, run_id: int) -> TrainingRun:
    with db.read() as session:
        return get_run(session, run_id)


def _bits(value: float | None) -> str:
    """A stored loss for people: a run that diverged stores none."""
    return "n/a" if value is None else f"{value:.3f}"


def describe_run(run: TrainingRun | None) -> str:
    """What an admin reads about a run: outcome, losses before/after, epochs, time, data."""
    if run is None:
        return "No retraining run yet."
    who = f"asked by {run.requested_by}" if run.requested_by else run.trigger
    head = f"Retraining run {run.id} ({who}): {run.status}"
    if run.status == "published":
        head += f", now version {run.new_version}"
    lines = [head + "."]
    if run.live_chat_bits is not None:
        lines.append(
            f"Held-out chat: {_bits(run.live_chat_bits)} → {_bits(run.candidate_chat_bits)} "
            f"bits/byte; base corpus: {_bits(run.live_base_bits)} → "
            f"{_bits(run.candidate_base_bits)}."
        )
    result = json.loads(run.result_json) if run.result_json else None
    if result:
        ex = result["examples"]
        lines.append(
            f"{result['epochs']} epochs (best {result['best_epoch']}) "
            f"in {result['seconds']:.0f} s; {ex['train_chunks']} conversations "
            f"({ex['train_bytes']} bytes) trained, {ex['heldout_chunks']} held out, "
            f"{ex['base_bytes']} bytes of the base corpus mixed in."
        )
    if run.error and run.status != "published":
        lines.append(f"Reason: {run.error}")
    return "\n".join(lines)


def plot_of(run: TrainingRun | None) -> Path | None:
    if run is None or not run.result_json:
        return None
    path = Path(json.loads(run.result_json).get("plot_path") or "")
    return path if path.is_file() else None


def status_lines(
    settings: Settings,
    db: Database,
    store: ModelStore,
    *,
    running: bool = False,
    next_check: dt.datetime | None = None,
) -> list[str]:
    """What /status adds about retraining: live version, last run, schedule, data."""
    version = store.live_version()
    losses = store.info(version).get("losses") or {} if version else {}
    live = f"Live version: {version} of {len(store.versions())} kept"
    if losses.get("candidate_chat") is not None:
        live += (
            f" (held-out chat {losses['candidate_chat']:.3f}, "
            f"base {losses['candidate_base']:.3f} bits/byte)"
        )
    with db.read() as session:
        last = last_run(session)
        trainable = count_trainable_messages(session)
    new = new_messages(db)
    if last is None:
        last_line = "Last run: none yet"
    else:
        when = (last.finished_at or last.started_at).strftime("%Y-%m-%d %H:%M UTC")
        last_line = f"Last run: {last.id}, {last.status}, {when}"
        if last.status == "published":
            last_line += f" (version {last.new_version})"
    if running:
        schedule = "Retraining: a run is going now"
    else:
        when = next_check.strftime("%Y-%m-%d %H:%M UTC") if next_check else "while the bot runs"
        schedule = (
            f"Next scheduled check: {when}, every {settings.retrain_interval} s "
            f"(starts a run at {settings.retrain_min_messages} new messages; {new} so far)"
        )
    return [live, last_line, schedule, f"Messages available for training: {trainable}"]


# -- the running bot's part -------------------------------------------------------------


Notify = Callable[
    [int | None, str, Path | None], Awaitable[None]
]  # (admin or None=all, text, plot)


@dataclass
class SwapResult:
    old: int | None
    new: int


class Retrainer:
    """Starts runs in a child process (one at a time) and swaps new live versions in."""

    def __init__(self, settings: Settings, services, notify: Notify):
        self.settings = settings
        self.services = services
        self.notify = notify
        self.store = open_store(settings)
        self.lock = run_lock(settings)
        self._task: asyncio.Task | None = None
        self._child: asyncio.subprocess.Process | None = None
        self._swap_lock = asyncio.Lock()
        self._unloadable: int | None = None  # a version whose load failed: not retried

    def running(self) -> bool:
        return (self._task is not None and not self._task.done()) or self.lock.is_running()

    async def start(self, trigger: str, requested_by: int | None = None) -> bool:
        """Start a run in the background; False (and nothing started) if one is going."""
        if self.running():
            return False
        self._task = asyncio.create_task(self._run(trigger, requested_by), name="retrain")
        return True

    async def scheduled_check(self) -> bool:
        """Start a run if enough new human messages arrived since the last one."""
        if self.running():
            return False
        count = await asyncio.to_thread(new_messages, self.services.db)
        if count < self.settings.retrain_min_messages:
            log.info(
                "scheduled check: %d new messages, waiting for %d",
                count,
                self.settings.retrain_min_messages,
            )
            return False
        return await self.start("schedule")

    async def rollback(self) -> SwapResult:
        """Make the previous version live (StoreError if there is none) and swap it in."""
        async with self._swap_lock:
            await asyncio.to_thread(self.store.rollback)
        return await self.swap_to_live()

    async def swap_to_live(self, *, retry: bool = True) -> SwapResult | None:
        """Serve the store's live version if it is not the one served; None if it is.

        A version that failed to load raises, and is not tried again with retry=False
        (the pointer watch) until the live version changes.
        """
        async with self._swap_lock:
            version = await asyncio.to_thread(self.store.live_version)
            old = self.services.model.version
            if version is None or version == old:
                return None
            if not retry and version == self._unloadable:
                return None
            from bot.service import ModelInfo
            from model import Generator

            current = self.services.replies.generator
            try:
                model = await asyncio.to_thread(self.store.load, version)
                # Loaded and warmed beside the current generator, which keeps answering.
                generator = await asyncio.to_thread(
                    Generator,
                    model,
                    batch_buckets=current.batch_buckets,
                    max_prompt_bytes=current.max_prompt_bytes,
                    max_reply_bytes=current.max_reply_bytes,
                )
            except Exception:
                self._unloadable = version
                log.exception("loading model version %s failed; still serving %s", version, old)
                raise
            self.services.replies.swap(generator)
            self.services.model = ModelInfo.of(model, self.store.path(version), version)
            log.info("now serving model version %s (was %s)", version, old)
            return SwapResult(old, version)

    async def stop(self) -> None:
        """At shutdown: stop a child run (the next run marks it failed) and wait for it."""
        if self._child is not None and self._child.returncode is None:
            self._child.terminate()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 30)

    async def _run(self, trigger: str, requested_by: int | None) -> None:
        cmd = [sys.executable, "-m", "bot.cli", "train", "--trigger", trigger, "--json"]
        if requested_by is not None:
            cmd += ["--requested-by", str(requested_by)]
        log_path = self.settings.data_dir / "runs" / "train.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        text, plot, run_id = "Retraining failed; see the bot's log.", None, None
        try:
            with open(log_path, "ab") as stderr:
                self._child = await asyncio.create_subprocess_exec(
                    *cmd,
                    env=child_env(self.settings),
                    stdout=asyncio.subprocess.PIPE,
                    stderr=stderr,
                )
                try:
                    out, _ = await asyncio.wait_for(self._child.communicate(), CHILD_TIMEOUT)
                except TimeoutError:
                    self._child.kill()
                    await self._child.wait()
                    await asyncio.to_thread(
                        self.close_stale_runs, f"stopped after {CHILD_TIMEOUT // 60} minutes"
                    )
                    raise
            run_id = _run_id(out)
            run = await asyncio.to_thread(_reload, self.services.db, run_id) if run_id else None
            if run is None:
                code = self._child.returncode
                text = f"Retraining did not finish (exit code {code}); see {log_path}."
            else:
                text, plot = describe_run(run), plot_of(run)
            if run is not None and run.status == "published":
                try:
                    await self.swap_to_live()
                except Exception:
                    text += (
                        f"\nLoading version {run.new_version} into the running bot failed (see "
                        f"the log); it still answers with version {self.services.model.version}."
                    )
        except TimeoutError:
            log.error("the retraining run took over %d s and was stopped", CHILD_TIMEOUT)
            text = (
                f"Retraining took over {CHILD_TIMEOUT // 60} minutes and was stopped; "
                f"see {log_path}."
            )
        except Exception:
            log.exception("the retraining run failed")
        finally:
            self._child = None
        try:
            await self.notify(requested_by, text, plot)
        except Exception:  # e.g. the bot is shutting down and its HTTP client is closed
            log.exception("could not report the retraining run: %s", text)
            return  # left unreported: report_pending() tells the admins later
        if run_id is not None:
            await asyncio.to_thread(_mark_reported, self.services.db, run_id)

    async def report_pending(self) -> int:
        """Tell the admins about finished runs nobody reported; how many there were.

        Those are runs that ended while no bot was there to watch them: the bot was
        restarted or killed while its child trained, or an operator ran `charbot train`.
        """
        if self.running():  # a run of ours reports itself when it ends
            return 0
        runs = await asyncio.to_thread(_unreported, self.services.db)
        for run in runs:
            try:
                await self.notify(run.requested_by, describe_run(run), plot_of(run))
            except Exception:
                log.exception("could not report retraining run %s", run.id)
                return 0
            await asyncio.to_thread(_mark_reported, self.services.db, run.id)
        return len(runs)

    def close_stale_runs(self, reason: str = STALE_RUN) -> None:
        """Mark runs still recorded as running failed, unless a run holds the lock.

        The lock is held while marking, so no `charbot train` can start a run between
        the check that none is going and the marking.
        """
        if not self.lock.acquire():
            return
        try:
            with self.services.db.begin() as session:
                mark_stale_runs_failed(session, reason)
        finally:
            self.lock.release()


def child_env(settings: Settings) -> dict[str, str]:
    """The environment of a `charbot train` child: the bot's settings, never its token."""
    env = {k: v for k, v in os.environ.items() if k != "TELEGRAM_BOT_TOKEN"}
    env["CHARBOT_DATA_DIR"] = str(settings.data_dir)
    env["CHARBOT_DATABASE_URL"] = settings.database_url
    if settings.model_path is not None:
        env["CHARBOT_MODEL_PATH"] = str(settings.model_path)
    if settings.retrain_epochs is not None:
        env["CHARBOT_RETRAIN_EPOCHS"] = str(settings.retrain_epochs)
    return env


def _run_id(stdout: bytes) -> int | None:
    """The run id from the last JSON line `charbot train --json` printed."""
    for line in reversed(stdout.decode(errors="replace").splitlines()):
        with contextlib.suppress(ValueError, KeyError, TypeError):
            return int(json.loads(line)["run_id"])
    return None
