"""The record of retraining runs: started, finished, and the one going now.

Plain functions on a `Session`; none of them commits. A run is started as
"running" and finished exactly once with its outcome. Runs that a crash left
"running" are closed by `close_stale_runs` (call it only while no run holds
the run lock, e.g. when the bot starts).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from storage.models import RUN_STATUSES, RUN_TRIGGERS, TrainingRun, utcnow

FINAL_STATUSES = tuple(s for s in RUN_STATUSES if s != "running")


def start_run(
    session: Session, *, trigger: str, requested_by: int | None = None, last_message_id: int
) -> TrainingRun:
    """Record a run that starts now (status "running") and return it with its id."""
    if trigger not in RUN_TRIGGERS:
        raise ValueError(f"trigger must be one of {', '.join(RUN_TRIGGERS)}, got {trigger!r}")
    run = TrainingRun(
        trigger=trigger,
        requested_by=requested_by,
        last_message_id=last_message_id,
        status="running",
        started_at=utcnow(),
    )
    session.add(run)
    session.flush()
    return run


def finish_run(
    session: Session,
    run_id: int,
    *,
    status: str,
    examples: int | None = None,
    epochs: int | None = None,
    live_version: int | None = None,
    new_version: int | None = None,
    live_chat_bits: float | None = None,
    candidate_chat_bits: float | None = None,
    live_base_bits: float | None = None,
    candidate_base_bits: float | None = None,
    error: str | None = None,
    result: dict[str, Any] | None = None,
) -> TrainingRun:
    """Record how run `run_id` ended: "published", "rejected", "failed" or "skipped".

    `result` is the run's full report (a JSON-serialisable dict); non-finite losses are
    stored as NULL. Raises LookupError for an unknown run and ValueError for a run that
    finished already.
    """
    if status not in FINAL_STATUSES:
        raise ValueError(f"status must be one of {', '.join(FINAL_STATUSES)}, got {status!r}")
    run = session.get(TrainingRun, run_id)
    if run is None:
        raise LookupError(f"no training run {run_id}")
    if run.finished:
        raise ValueError(f"training run {run_id} finished already ({run.status})")
    run.status = status
    run.finished_at = utcnow()
    run.examples = examples
    run.epochs = epochs
    run.live_version = live_version
    run.new_version = new_version
    run.live_chat_bits = _finite(live_chat_bits)
    run.candidate_chat_bits = _finite(candidate_chat_bits)
    run.live_base_bits = _finite(live_base_bits)
    run.candidate_base_bits = _finite(candidate_base_bits)
    run.error = error
    run.result_json = None if result is None else json.dumps(result, sort_keys=True)
    session.flush()
    return run


def run_result(run: TrainingRun) -> dict[str, Any] | None:
    """The report stored with `run` (`finish_run(result=...)`), or None."""
    return None if run.result_json is None else json.loads(run.result_json)


def get_run(session: Session, run_id: int) -> TrainingRun | None:
    return session.get(TrainingRun, run_id)


def last_run(session: Session) -> TrainingRun | None:
    """The newest run, finished or not."""
    return session.scalars(select(TrainingRun).order_by(TrainingRun.id.desc()).limit(1)).first()


def last_finished_run(
    session: Session, statuses: Sequence[str] = FINAL_STATUSES
) -> TrainingRun | None:
    """The newest run that ended with one of `statuses` (any outcome by default)."""
    stmt = (
        select(TrainingRun)
        .where(TrainingRun.status.in_(statuses))
        .order_by(TrainingRun.id.desc())
        .limit(1)
    )
    return session.scalars(stmt).first()


def running_run(session: Session) -> TrainingRun | None:
    """The newest run still recorded as running, if any."""
    stmt = (
        select(TrainingRun)
        .where(TrainingRun.status == "running")
        .order_by(TrainingRun.id.desc())
        .limit(1)
    )
    return session.scalars(stmt).first()


def recent_runs(session: Session, limit: int = 10) -> list[TrainingRun]:
    """The newest `limit` runs, newest first."""
    stmt = select(TrainingRun).order_by(TrainingRun.id.desc()).limit(limit)
    return list(session.scalars(stmt))


def unreported_runs(session: Session) -> list[TrainingRun]:
    """Finished runs whose outcome has not reached the admins, oldest first."""
    stmt = (
        select(TrainingRun)
        .where(TrainingRun.status != "running", TrainingRun.reported.is_(False))
        .order_by(TrainingRun.id)
    )
    return list(session.scalars(stmt))


def mark_reported(session: Session, run_id: int) -> None:
    """Note that the run's outcome reached the admins."""
    session.execute(update(TrainingRun).where(TrainingRun.id == run_id).values(reported=True))


def close_stale_runs(
    session: Session, reason: str, published: Mapping[int, dict[str, Any]] | None = None
) -> int:
    """Close every run still marked "running"; how many there were.

    For runs whose process died (a crash, kill -9, a reboot): call it only when no
    run holds the run lock. A run in `published` (run id -> {"version": v, "losses":
    {...}}: the model store holds a version it published before it died) is closed as
    published; the others as failed with `reason`.
    """
    published = published or {}
    stale = list(session.scalars(select(TrainingRun).where(TrainingRun.status == "running")))
    for run in stale:
        done = published.get(run.id)
        if done is None:
            finish_run(session, run.id, status="failed", error=reason)
            continue
        losses = done.get("losses") or {}
        finish_run(
            session,
            run.id,
            status="published",
            new_version=done["version"],
            live_chat_bits=losses.get("live_chat"),
            candidate_chat_bits=losses.get("candidate_chat"),
            live_base_bits=losses.get("live_base"),
            candidate_base_bits=losses.get("candidate_base"),
            error=f"{reason} (after publishing version {done['version']})",
        )
    return len(stale)


def _finite(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)
