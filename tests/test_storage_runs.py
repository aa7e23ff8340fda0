"""storage/runs.py and migration 0002: the record of retraining runs."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import pytest
from conftest import LATEST_REVISION
from sqlalchemy import inspect, text

from storage import (
    Database,
    TrainingRun,
    close_stale_runs,
    finish_run,
    get_run,
    last_finished_run,
    last_message_id,
    last_run,
    mark_reported,
    open_database,
    recent_runs,
    recent_turns,
    run_result,
    running_run,
    start_run,
    unreported_runs,
)

ADMIN = 42


def test_migration_0002_upgrades_a_0001_database_with_its_data(empty_db_url: str):
    url = empty_db_url
    older = Database(url)
    older.upgrade("0001")
    with older.engine.begin() as conn:  # written as the first release wrote
        now = "2026-01-01 00:00:00.000000"
        conn.exec_driver_sql("INSERT INTO chats VALUES (7, 'private', NULL)")
        conn.exec_driver_sql(f"INSERT INTO users VALUES (11, 'Ann', 0.6, TRUE, '{now}')")
        conn.exec_driver_sql(
            "INSERT INTO messages (chat_id, user_id, from_bot, text, update_id, created_at) "
            f"VALUES (7, 11, FALSE, 'héllo 👋', 1, '{now}'), (7, NULL, TRUE, 'hi', NULL, '{now}')"
        )
    assert not inspect(older.engine).has_table("training_runs")
    older.dispose()

    db = open_database(url)
    try:
        assert db.revision() == LATEST_REVISION
        with db.read() as session:
            assert recent_turns(session, 7) == [("héllo 👋", True), ("hi", False)]
            assert last_message_id(session) == 2
            assert session.execute(text("SELECT name FROM users")).scalar() == "Ann"
        with db.begin() as session:
            run = start_run(session, trigger="schedule", last_message_id=2)
        assert run.id == 1

        db.downgrade("0001")  # and back: the runs go, the conversations stay
        assert not inspect(db.engine).has_table("training_runs")
        with db.read() as session:  # read as 0001 knew them (the models are of the newest)
            assert session.execute(text("SELECT count(*) FROM messages")).scalar() == 2
        db.upgrade()
        assert db.revision() == LATEST_REVISION
    finally:
        db.dispose()


def test_migration_0003_counts_earlier_finished_runs_as_reported(empty_db_url: str):
    url = empty_db_url
    older = Database(url)
    older.upgrade("0002")
    with older.engine.begin() as conn:
        for status in ("published", "running"):
            conn.execute(
                text(
                    "INSERT INTO training_runs (trigger, started_at, status, last_message_id) "
                    "VALUES ('schedule', '2026-01-01 00:00:00', :status, 0)"
                ),
                {"status": status},
            )
    older.dispose()
    db = open_database(url)
    try:
        with db.begin() as session:
            assert unreported_runs(session) == []  # the old outcome is not re-announced
            close_stale_runs(session, "died")  # the old running one ends now...
        with db.begin() as session:
            [stale] = unreported_runs(session)  # ...and is news
            assert stale.id == 2
            mark_reported(session, stale.id)
        with db.read() as session:
            assert unreported_runs(session) == []
    finally:
        db.dispose()


def test_a_run_is_started_then_finished_with_its_outcome(db: Database):
    with db.begin() as session:
        run = start_run(session, trigger="admin", requested_by=ADMIN, last_message_id=17)
        run_id = run.id
    assert run.status == "running" and run.finished_at is None and not run.finished
    assert run.started_at.tzinfo is not None
    with db.read() as session:
        assert running_run(session).id == run_id
        assert last_run(session).id == run_id
        assert last_finished_run(session) is None

    report = {"accepted": True, "losses": {"live_chat": 3.1, "candidate_chat": None}}
    with db.begin() as session:
        finish_run(
            session,
            run_id,
            status="published",
            examples=40,
            epochs=5,
            live_version=3,
            new_version=4,
            live_chat_bits=3.1,
            candidate_chat_bits=2.4,
            live_base_bits=2.0,
            candidate_base_bits=math.nan,  # not finite: stored as NULL
            result=report,
        )
    with db.read() as session:
        run = get_run(session, run_id)
        assert run.finished and run.status == "published"
        assert run.finished_at >= run.started_at
        assert (run.trigger, run.requested_by, run.last_message_id) == ("admin", ADMIN, 17)
        assert (run.examples, run.epochs, run.live_version, run.new_version) == (40, 5, 3, 4)
        assert (run.live_chat_bits, run.candidate_chat_bits) == (3.1, 2.4)
        assert run.candidate_base_bits is None and run.error is None
        assert run_result(run) == report
        assert running_run(session) is None
        assert last_finished_run(session).id == run_id


def test_finishing_is_checked(db: Database):
    with db.begin() as session:
        run_id = start_run(session, trigger="cli", last_message_id=0).id
        with pytest.raises(ValueError, match="status must be one of"):
            finish_run(session, run_id, status="running")
        with pytest.raises(LookupError, match="no training run 99"):
            finish_run(session, 99, status="failed")
        finish_run(session, run_id, status="skipped", error="not enough conversations")
        with pytest.raises(ValueError, match="finished already"):
            finish_run(session, run_id, status="failed")
        with pytest.raises(ValueError, match="trigger must be one of"):
            start_run(session, trigger="cron", last_message_id=0)


def test_last_runs_in_order_and_by_outcome(db: Database):
    outcomes = ["published", "rejected", "failed", "skipped"]
    with db.begin() as session:
        for i, status in enumerate(outcomes):
            run = start_run(session, trigger="schedule", last_message_id=10 * i)
            finish_run(session, run.id, status=status)
        start_run(session, trigger="schedule", last_message_id=99)
    with db.read() as session:
        assert last_run(session).status == "running"
        assert last_finished_run(session).status == "skipped"
        assert last_finished_run(session, ["published", "rejected"]).last_message_id == 10
        assert [r.status for r in recent_runs(session, 3)] == ["running", "skipped", "failed"]


def test_runs_a_crash_left_running_are_marked_failed(db: Database):
    with db.begin() as session:
        done = start_run(session, trigger="schedule", last_message_id=1)
        finish_run(session, done.id, status="rejected")
        start_run(session, trigger="schedule", last_message_id=2)
        start_run(session, trigger="admin", requested_by=ADMIN, last_message_id=3)
    before = datetime.now(UTC)
    with db.begin() as session:
        assert close_stale_runs(session, "the trainer died (bot restarted)") == 2
        assert running_run(session) is None  # visible in the same unit of work
    with db.read() as session:
        runs = {r.id: r for r in recent_runs(session)}
    assert runs[done.id].status == "rejected" and runs[done.id].error is None
    for run_id in (2, 3):
        assert runs[run_id].status == "failed"
        assert runs[run_id].error == "the trainer died (bot restarted)"
        assert runs[run_id].finished_at >= before.replace(microsecond=0)
    with db.begin() as session:
        assert close_stale_runs(session, "again") == 0


def test_a_run_report_round_trips_as_json(db: Database):
    report = {"history": {"loss": [3.0, 2.5]}, "reason": "accepted: ✓", "nested": {"a": [1]}}
    with db.begin() as session:
        run_id = start_run(session, trigger="cli", last_message_id=0).id
        finish_run(session, run_id, status="rejected", result=report)
    with db.read() as session:
        stored = session.get(TrainingRun, run_id).result_json
    assert json.loads(stored) == report
