"""One retraining run, child side: what `charbot train` does, begin to end.

    begin    take the run lock, record the run as running
    train    fine-tune the live version on the stored chats (model.retrain), gated
    decide   publish the candidate, unless a user withdrew their text or the live
             version changed during the run
    record   the outcome, losses and report in the run's row

The bot starts this in its own process (bot/retrainer.py), low priority, one thread,
and reads the run id from the last line it prints (bot/reports.result_line).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

from bot.datadir import (
    KEEP_RUN_DIRS,
    MODELS_DIR,
    check_shared_store,
    open_store,
    prune_run_dirs,
    reconcile_stale_runs,
    run_dir,
    run_lock,
)
from bot.reports import STALE_RUN, load_run, run_going
from bot.settings import Settings
from bot.texts import plural
from model import load
from model.memory import Messages
from model.memory_fit import enough_to_fit
from model.memory_gate import BotMemory
from model.ngram_cache import FOLDER, read_base_ngrams
from model.retrain import CANDIDATE_FILE, RetrainConfig, retrain
from model.retrain_data import NotEnoughData
from model.run_result import RunResult
from model.store import ModelStore
from model.training import CHECKPOINT_FILE
from storage import (
    Database,
    TrainingRun,
    TrainingSample,
    finish_run,
    last_finished_run,
    last_message_id,
    memory_window,
    read_training_sample,
    start_run,
    unreported_runs,
    withdrawn_users,
)

log = logging.getLogger(__name__)

KEEP_VERSIONS = 5  # published versions kept on disk (the live one and its predecessor always)


class AlreadyRunning(Exception):
    """Another retraining run holds the lock."""


def retrain_config(settings: Settings) -> RetrainConfig:
    """The run's settings: model.retrain's defaults and what the operator configured."""
    chosen = {
        "epochs": settings.retrain_epochs,
        "sample_bytes": settings.retrain_sample_bytes,
        "max_seconds": settings.retrain_max_seconds,
    }
    return RetrainConfig(**{k: v for k, v in chosen.items() if v is not None})


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

    Raises AlreadyRunning when another run holds the lock, DataDirError when the data
    dir lacks the model store the database's runs published into. Failures are recorded
    (status "failed") and re-raised.
    """
    check_shared_store(settings, db)
    lock = run_lock(settings)
    if not lock.acquire():
        raise AlreadyRunning(run_going(lock.holder()))
    try:
        run_id = begin(settings, db, open_store(settings), trigger, requested_by)
        try:
            return _train(settings, db, run_id, trigger, config or retrain_config(settings), report)
        except Exception as exc:
            # Recorded if the database lets us; the run's own error is what gets raised.
            with contextlib.suppress(Exception), db.begin() as session:
                finish_run(session, run_id, status="failed", error=f"{type(exc).__name__}: {exc}")
            raise
    finally:
        lock.release()


def begin(
    settings: Settings, db: Database, store: ModelStore, trigger: str, requested_by: int | None
) -> int:
    """Record a new run (call with the run lock held); earlier runs still "running" died."""
    if stale := reconcile_stale_runs(db, store, STALE_RUN):
        log.warning("%d earlier run(s) had died; their records are closed", stale)
    with db.read() as session:
        unreported = {run.id for run in unreported_runs(session)}
    for folder in prune_run_dirs(settings, KEEP_RUN_DIRS - 1, unreported):  # room for this one
        log.info("deleted the old run folder %s", folder)
    with db.begin() as session:
        seen = last_message_id(session)
        return start_run(
            session, trigger=trigger, requested_by=requested_by, last_message_id=seen
        ).id


def _train(
    settings: Settings,
    db: Database,
    run_id: int,
    trigger: str,
    config: RetrainConfig,
    report: Callable[[str], None],
) -> TrainingRun:
    store = open_store(settings)
    live_version, live = store.load_live()
    with db.read() as session:
        published = last_finished_run(session, ("published",))
        sample = read_training_sample(
            session,
            since_message_id=published.last_message_id if published else 0,
            new_bytes=config.new_bytes,
            sample_bytes=config.sample_bytes,
            seed=config.seed + run_id,  # each run replays other old chats
        )
        rows, newest = memory_window(session, settings.memory_window_bytes)
        window = Messages.of(rows, newest)
    # Once its window holds enough to fit one, the bot serves a chat memory: judge with it.
    memory = BotMemory(window, settings.memory_min_users) if enough_to_fit(window) else None
    folder = run_dir(settings, run_id)
    report(
        f"run {run_id}: fine-tuning version {live_version} on {len(sample.new)} chats "
        f"({sample.new_bytes:,} bytes of text new since the last published run) and "
        f"{len(sample.replay)} older pieces ({sample.replay_bytes:,} bytes of text)"
    )

    def on_epoch(epoch: int, logs: dict) -> None:
        report(
            f"epoch {epoch}: train {logs.get('loss_bits', float('nan')):.3f}, "
            f"held-out {logs.get('val_loss_bits', float('nan')):.3f} bits/byte"
        )

    try:
        result = retrain(
            live,
            sample.new,
            config,
            folder,
            on_epoch=on_epoch,
            replay=sample.replay,
            memory=memory,
            chats=(sample.new_chats, sample.replay_chats),
            ngrams=lambda order: read_base_ngrams(order, settings.data_dir / MODELS_DIR / FOLDER),
        )
    except NotEnoughData as exc:
        with db.begin() as session:
            finish_run(session, run_id, status="skipped", live_version=live_version, error=str(exc))
        report(f"skipped: {exc}")
        return load_run(db, run_id)
    result, new_version = decide(db, store, result, sample, live_version, run_id, trigger, folder)
    record(db, run_id, result, live_version, new_version, folder)
    report(f"{'published' if result.accepted else 'rejected'}: {result.reason}")
    return load_run(db, run_id)


def decide(
    db: Database,
    store: ModelStore,
    result: RunResult,
    sample: TrainingSample,
    live_version: int,
    run_id: int,
    trigger: str,
    folder: Path,
) -> tuple[RunResult, int | None]:
    """(the result as it stands after the last checks, the version published or None)."""
    new_version = None
    candidate = load(result.candidate_path) if result.accepted else None  # before the lock
    # db.begin() holds the database's write lock from its first query (BEGIN IMMEDIATE
    # on SQLite, the advisory write lock on PostgreSQL, whichever host the bot is on): no
    # /forget or /learn off can land between the check and the publish; one that landed
    # during training withdraws the candidate. The check looks up the run's contributors
    # by key, so the lock is held for the publish's file writes and milliseconds more.
    with db.begin() as session:
        withdrawn = withdrawn_users(session, sample.authors)
        if withdrawn:
            result = withdraw(result, len(withdrawn), folder)
        elif candidate is not None:
            info = {"run": run_id, "trigger": trigger, "losses": result.to_dict()["losses"]}
            # Under the store's lock, only while the version it was tuned from is live.
            new_version = store.publish_if_live(live_version, candidate, info)
        now_live = store.live_version()
        # Not published though not withdrawn: the live version moved (perhaps only for an
        # instant, during publish_if_live's check, if it is back now).
        if new_version is None and not withdrawn and (now_live != live_version or result.accepted):
            reason = (
                f"rejected: the live version changed from {live_version} to {now_live} "
                f"during the run (a /rollback?); a candidate fine-tuned from version "
                f"{live_version} would undo that"
            )
            result = dataclasses.replace(result, accepted=False, reason=reason)
    if new_version is not None:
        try:
            store.prune(KEEP_VERSIONS)
        except OSError:  # the run succeeded; old versions wait for the next prune
            log.exception("pruning old model versions failed")
    return result, new_version


def withdraw(result: RunResult, users: int, folder: Path) -> RunResult:
    """`result` rejected because `users` users withdrew their text during the run.

    The candidate and the checkpoint were trained on that text: both are deleted.
    """
    for name in (CANDIDATE_FILE, CHECKPOINT_FILE):
        (folder / name).unlink(missing_ok=True)
    reason = (
        f"rejected: {plural(users, 'user')} whose messages it was trained on asked to be "
        "forgotten or turned learning off during the run; the candidate was deleted"
    )
    log.info("%s", reason)
    return dataclasses.replace(result, accepted=False, reason=reason, candidate_path="")


def record(
    db: Database,
    run_id: int,
    result: RunResult,
    live_version: int,
    new_version: int | None,
    folder: Path,
) -> None:
    """Store the run's outcome, losses and full report."""
    losses = result.losses
    with db.begin() as session:
        finish_run(
            session,
            run_id,
            status="published" if result.accepted else "rejected",
            examples=result.examples.train_chunks,
            epochs=result.epochs,
            live_version=live_version,
            new_version=new_version,
            live_chat_bits=losses.live_chat,
            candidate_chat_bits=losses.candidate_chat,
            live_base_bits=losses.live_base,
            candidate_base_bits=losses.candidate_base,
            error=None if result.accepted else result.reason,
            result={**result.to_dict(), "run_dir": str(folder)},
        )
