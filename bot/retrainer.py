"""Retraining, the running bot's side: schedule runs, start them, report them, swap.

A run happens in its own process (`charbot train`: bot/train_job.py), low priority and
one thread, so replies stay fast. When a run publishes, the live model swaps the new
version in (bot/live_model.py). Runs that ended while no bot watched (a restart during
a run, an operator's `charbot train`) are reported by the pointer watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from bot.datadir import reconcile_stale_runs, rotate_train_log, run_lock, train_log
from bot.live_model import LiveModel
from bot.reports import (
    ALREADY_RUNNING_EXIT,
    STALE_RUN,
    describe_holder,
    describe_run,
    load_run,
    plot_of,
    run_id_from,
    schedule_wait,
)
from bot.run_backoff import backoff_text, failure_backoff
from bot.settings import Settings
from storage import (
    Database,
    TrainingRun,
    mark_reported,
    unreported_runs,
)

log = logging.getLogger(__name__)

POINTER_CHECK = 30.0  # seconds between looks at the live pointer (a `charbot train` elsewhere)
CHILD_TIMEOUT = 2 * 60 * 60  # seconds; a run's fit stops after RetrainConfig.max_seconds

# (admin or None = all admins, text, plot or None)
Notify = Callable[[int | None, str, Path | None], Awaitable[None]]


class Retrainer:
    """Starts runs in a child process (one at a time) and has new live versions served."""

    def __init__(self, settings: Settings, db: Database, live: LiveModel, notify: Notify):
        self.settings = settings
        self.db = db
        self.live = live
        self.notify = notify
        self.lock = run_lock(settings)
        self._task: asyncio.Task | None = None
        self._child: asyncio.subprocess.Process | None = None

    def running(self) -> bool:
        """Whether a run is going: this bot's, or any other process's."""
        return self.running_here() or self.lock.is_running()

    def running_here(self) -> bool:
        """Whether a run this Retrainer started is still going (or being reported)."""
        return self._task is not None and not self._task.done()

    async def start(self, trigger: str, requested_by: int | None = None) -> bool:
        """Start a run in the background; False (and nothing started) if one is going."""
        if await asyncio.to_thread(self.running):  # a database round trip with PostgreSQL
            return False
        if self.running_here():  # another start came first while the lock was asked
            return False
        self._task = asyncio.create_task(self._run(trigger, requested_by), name="retrain")
        return True

    async def wait(self) -> None:
        """Until the run this bot started (if any) has ended and been reported."""
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def scheduled_check(self) -> bool:
        """Start a run if enough new human messages arrived since the last one."""
        if await asyncio.to_thread(self.running):
            return False
        await asyncio.to_thread(self.close_stale_runs)  # a run killed unseen counts as failed
        now = dt.datetime.now(dt.UTC)
        wait = await asyncio.to_thread(schedule_wait, self.settings, self.db, now)
        if wait is not None:
            log.info("scheduled check: %s", wait)
            return False
        return await self.start("schedule")

    async def watch(self) -> None:
        """The periodic look: serve a version made live elsewhere, report unwatched runs."""
        with contextlib.suppress(Exception):  # logged by swap_to_live; not retried
            await self.live.swap_to_live(retry=False)
        await self.report_pending()

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
        log_path = train_log(self.settings)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        rotate_train_log(self.settings)
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
            run_id = run_id_from(out)
            run = await asyncio.to_thread(load_run, self.db, run_id) if run_id else None
            code = self._child.returncode
            if run is None and code == ALREADY_RUNNING_EXIT:
                # Another `charbot train` (an operator's, a trainer host's) took the lock
                # between our look and the child's: it goes on, reported when it ends.
                who = describe_holder(await asyncio.to_thread(self.lock.holder))
                text = f"Another retraining run started first{f' ({who})' if who else ''}."
            elif run is None:
                text = f"Retraining did not finish (exit code {code}); see {log_path}."
                # Killed (out of memory?) before it could record its end: recorded failed
                # now, so the schedule backs off instead of starting it again.
                await asyncio.to_thread(self.close_stale_runs, f"{STALE_RUN} (exit code {code})")
            else:
                text, plot = describe_run(run), plot_of(run)
            if run is not None and run.status == "published":
                try:
                    await self.live.swap_to_live()
                except Exception:
                    text += (
                        f"\nLoading version {run.new_version} into the running bot failed (see "
                        f"the log); it still answers with version {self.live.version}."
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
        backoff = await asyncio.to_thread(failure_backoff, self.db)
        if backoff is not None and backoff.tell and (run_id is None or backoff.last.id == run_id):
            text += "\n" + backoff_text(backoff)  # told with the failure that makes it repeat
        try:
            await self.notify(requested_by, text, plot)
        except Exception:  # e.g. the bot is shutting down and its HTTP client is closed
            log.exception("could not report the retraining run: %s", text)
            return  # left unreported: report_pending() tells the admins later
        if run_id is not None:
            await asyncio.to_thread(self._mark_reported, run_id)

    async def report_pending(self) -> int:
        """Tell the admins about finished runs nobody reported; how many there were.

        Those are runs that ended while no bot was there to watch them: the bot was
        restarted or killed while its child trained, or an operator ran `charbot train`.
        """
        if await asyncio.to_thread(self.running):  # a run of ours reports itself when it ends
            return 0
        runs = await asyncio.to_thread(self._unreported)
        for run in runs:
            try:
                await self.notify(run.requested_by, describe_run(run), plot_of(run))
            except Exception:
                log.exception("could not report retraining run %s", run.id)
                return 0
            await asyncio.to_thread(self._mark_reported, run.id)
        return len(runs)

    def close_stale_runs(self, reason: str = STALE_RUN) -> None:
        """Mark runs still recorded as running failed, unless a run holds the lock.

        The lock is held while marking, so no `charbot train` can start a run between
        the check that none is going and the marking.
        """
        if not self.lock.acquire():
            return
        try:
            reconcile_stale_runs(self.db, self.live.store, reason)
        finally:
            self.lock.release()

    def _unreported(self) -> list[TrainingRun]:
        with self.db.read() as session:
            return unreported_runs(session)

    def _mark_reported(self, run_id: int) -> None:
        with self.db.begin() as session:
            mark_reported(session, run_id)


def child_env(settings: Settings) -> dict[str, str]:
    """The environment of a `charbot train` child: the bot's settings, never its token."""
    env = {k: v for k, v in os.environ.items() if k != "TELEGRAM_BOT_TOKEN"}
    env["CHARBOT_DATA_DIR"] = str(settings.data_dir)
    env["CHARBOT_DATABASE_URL"] = settings.database_url
    if settings.model_path is not None:
        env["CHARBOT_MODEL_PATH"] = str(settings.model_path)
    for name, value in (
        ("CHARBOT_RETRAIN_EPOCHS", settings.retrain_epochs),
        ("CHARBOT_RETRAIN_SAMPLE_BYTES", settings.retrain_sample_bytes),
        ("CHARBOT_RETRAIN_MAX_SECONDS", settings.retrain_max_seconds),
    ):
        if value is not None:
            env[name] = str(value)
    return env
