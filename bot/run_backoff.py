"""When the schedule may start a run again after runs that failed or were killed.

A failed run used up nothing (the scheduler counts new messages from the last run that
did), so without a pause the next check would start the same run again, and a run that
cannot succeed (out of memory, killed at its timeout, a broken disk) would burn the
machine's cores all day. After a failure the schedule waits BACKOFF_FIRST, doubled
after each further failure in a row up to BACKOFF_MAX; after TELL_AFTER_FAILURES in a
row the admins are told, with the last reason. An admin's /retrain is not held back.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from bot.texts import plural
from storage import Database, TrainingRun, recent_runs

BACKOFF_FIRST = 30 * 60  # seconds after one failed run
BACKOFF_MAX = 24 * 60 * 60  # the longest wait, however many failed
TELL_AFTER_FAILURES = 3  # failed runs in a row before the admins hear of it
RUNS_READ = 16  # enough to reach the longest wait (30 min doubled 6 times > 24 h)


@dataclass(frozen=True)
class Backoff:
    failures: int  # failed runs in a row, up to the newest finished one
    until: dt.datetime  # no scheduled run before this (UTC)
    last: TrainingRun  # the newest failed run

    def holds(self, now: dt.datetime) -> bool:
        return now < self.until

    @property
    def tell(self) -> bool:
        return self.failures >= TELL_AFTER_FAILURES


def backoff_of(runs: list[TrainingRun]) -> Backoff | None:
    """The wait `runs` (newest first) call for; None when the newest finished run did
    not fail. A run still going is left out (it has not failed)."""
    failures = []
    for run in runs:
        if run.status == "running":
            continue
        if run.status != "failed":
            break
        failures.append(run)
    if not failures:
        return None
    last = failures[0]
    seconds = min(BACKOFF_FIRST * 2 ** min(len(failures) - 1, 16), BACKOFF_MAX)
    ended = last.finished_at or last.started_at
    return Backoff(len(failures), ended + dt.timedelta(seconds=seconds), last)


def failure_backoff(db: Database) -> Backoff | None:
    """The wait the stored runs call for (module docstring)."""
    with db.read() as session:
        return backoff_of(recent_runs(session, RUNS_READ))


def backoff_text(backoff: Backoff) -> str:
    """What the admins read once the failures repeat."""
    return (
        f"Retraining has failed {plural(backoff.failures, 'time')} in a row (the last, run "
        f"{backoff.last.id}: {backoff.last.error or 'no reason recorded'}). Scheduled runs "
        f"wait until {backoff.until:%Y-%m-%d %H:%M} UTC, longer after each failure; "
        "/retrain starts one now."
    )


def backoff_line(backoff: Backoff | None, now: dt.datetime) -> str | None:
    """What /status says of it while it holds; None when it does not."""
    if backoff is None or not backoff.holds(now):
        return None
    return (
        f"Backing off: {plural(backoff.failures, 'failed run')} in a row; no scheduled run before "
        f"{backoff.until:%Y-%m-%d %H:%M} UTC"
    )
