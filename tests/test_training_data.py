"""storage/training_data.py: the bounded sample a retraining run reads, and the
withdrawal check the publish makes."""

from __future__ import annotations

import json
import threading

from sqlalchemy import text
from stored import say

from storage import (
    Database,
    forget_user,
    read_training_sample,
    request_forget,
    set_learning,
    withdrawn_users,
)
from storage.training_data import NOT_FOUND, newest_transcripts, replay_pieces

GROUP = -100123
ANN, BOB, CEM = 11, 22, 33


def history(db: Database, chats: int = 20, turns: int = 30) -> None:
    """`chats` group chats of `turns` turns each, interleaved; every third turn the bot's."""
    with db.begin() as session:
        for t in range(turns):
            for c in range(chats):
                user = None if t % 3 == 2 else 100 + (c + t) % 7
                say(session, -1000 - c, user, f"chat {c} turn {t:02d}")


def texts(transcripts) -> list[str]:
    return [text for turns in transcripts for text, _ in turns]


def test_the_newest_turns_are_read_newest_first_until_the_budget(db: Database):
    history(db)
    with db.read() as session:
        everything, _, oldest, used, _ = newest_transcripts(session, 0, 10**9)
        assert len(texts(everything)) == 600 and oldest == 1
        some, _, oldest, used, authors = newest_transcripts(session, 0, 2_000)
    read = texts(some)
    assert 2_000 <= used < 2_000 + 20  # stops at the turn that crosses the budget
    assert sum(len(t) + 1 for t in read) == used
    stored = [f"chat {c} turn {t:02d}" for t in range(30) for c in range(20)]
    assert sorted(read) == sorted(stored[-len(read) :])  # the newest ones
    # Each chat's turns oldest first, as the generator reads them.
    first = next(turns for turns in some if turns[0][0].startswith("chat 0 "))
    assert [t for t, _ in first] == sorted(t for t, _ in first)
    assert oldest > 1 and authors <= set(range(100, 107))


def test_only_turns_after_the_last_published_run_are_new(db: Database):
    with db.begin() as session:
        old = say(session, GROUP, ANN, "old")
        say(session, GROUP, ANN, "new")
    with db.read() as session:
        sample = read_training_sample(
            session, since_message_id=old.id, new_bytes=1000, sample_bytes=2000, seed=1
        )
    assert sample.new == [[("new", True)]]
    assert sample.replay == [[("old", True)]]  # the older turn can only come back as replay
    assert sample.new_chats == sample.replay_chats == [GROUP]  # where each was said
    assert sample.user_ids == {ANN}


def test_the_replay_sample_is_seeded_bounded_and_never_repeats_a_turn(db: Database):
    history(db)
    with db.read() as session:
        one = replay_pieces(session, 400, 3_000, seed=7, piece_turns=8)
        again = replay_pieces(session, 400, 3_000, seed=7, piece_turns=8)
        other = replay_pieces(session, 400, 3_000, seed=8, piece_turns=8)
    pieces, _, used, _ = one
    assert one == again and one != other  # deterministic under its seed
    assert 3_000 <= used < 3_000 + 8 * 20 and len(pieces) > 1
    read = texts(pieces)
    assert len(read) == len(set(read))  # no turn twice
    assert all(int(t.split()[-1]) < 20 for t in read)  # ids below 400: turns 0-19
    assert all(len(turns) <= 8 and any(h for _, h in turns) for turns in pieces)
    for turns in pieces:  # consecutive turns of one chat
        chat = {t.split()[1] for t, _ in turns}
        steps = [int(t.split()[-1]) for t, _ in turns]
        assert len(chat) == 1 and steps == list(range(steps[0], steps[0] + len(steps)))


def test_the_sample_leaves_out_opted_out_and_forgotten_users(db: Database):
    with db.begin() as session:
        for i in range(40):
            say(session, GROUP, ANN, f"ann says hi {i}")
            say(session, GROUP, BOB, f"bob secret {i}")
            say(session, GROUP, None, f"bot reply {i}")
            say(session, GROUP, CEM, f"cem forgotten {i}")
            say(session, BOB, BOB, f"bob private secret {i}")
            say(session, BOB, None, f"bot to bob {i}")
        newest = say(session, GROUP, ANN, "ann again")
        set_learning(session, BOB, False)
    forget_user(db, CEM)
    for since in (0, newest.id - 1):  # everything new, or nearly everything replayed
        for seed in range(3):
            with db.read() as session:
                sample = read_training_sample(
                    session, since_message_id=since, new_bytes=500, sample_bytes=5_000, seed=seed
                )
            everything = json.dumps(sample.new + sample.replay)
            assert "secret" not in everything and "cem" not in everything
            assert "ann" in everything and sample.user_ids == {ANN}
            # Bob's private chat has only the bot's turns left: never a piece on its own.
            assert all(any(h for _, h in turns) for turns in sample.new + sample.replay)


def test_withdrawn_users_are_those_whose_consent_changed_since_the_read(db: Database):
    users = (ANN, BOB, CEM, 44, 55, 66)
    with db.begin() as session:
        for user in users:
            say(session, GROUP, user, f"hello from {user}")
    with db.read() as session:
        sample = read_training_sample(
            session, since_message_id=0, new_bytes=10_000, sample_bytes=10_000, seed=1
        )
    assert sample.user_ids == set(users)
    with db.begin() as session:
        set_learning(session, BOB, False)
        set_learning(session, 55, False)
        set_learning(session, 55, True)  # off and on again while the run trained
        set_learning(session, ANN, True)  # no change: nothing withdrawn
        request_forget(session, 66)  # a /forget still deleting
    forget_user(db, CEM)
    forget_user(db, 44)
    with db.begin() as session:
        say(session, GROUP, 44, "back again")  # forgotten, then wrote again: a new user
    with db.read() as session:
        assert withdrawn_users(session, sample.authors) == {BOB, CEM, 44, 55, 66}
        assert withdrawn_users(session, {ANN: sample.authors[ANN]}) == set()
        assert withdrawn_users(session, {ANN: NOT_FOUND}) == {ANN}  # never read: withdrawn
        many = {user: sample.authors[ANN] for user in range(1, 1200)}  # several IN lists
        assert withdrawn_users(session, many) == set(many) - {ANN}


def test_the_sample_and_its_authors_consent_are_read_in_one_snapshot(db: Database):
    with db.begin() as session:
        say(session, GROUP, ANN, "ann before the run")
        say(session, GROUP, BOB, "bob before the run")
    other = Database(db.url)  # the bot, writing while the run reads
    try:
        with db.read() as session:
            assert session.scalar(text("SELECT count(*) FROM messages")) == 2  # snapshot taken
            with other.begin() as writing:
                set_learning(writing, ANN, False)
                say(writing, GROUP, BOB, "bob during the read")
            sample = read_training_sample(
                session, since_message_id=0, new_bytes=10_000, sample_bytes=10_000, seed=1
            )
    finally:
        other.dispose()
    assert texts(sample.new) == ["ann before the run", "bob before the run"]
    assert sample.authors[ANN] != NOT_FOUND  # Ann's consent as it was when her text was read
    with db.read() as session:
        assert withdrawn_users(session, sample.authors) == {ANN}


def test_a_consent_change_waits_for_the_publish_check_to_end(db: Database):
    with db.begin() as session:
        say(session, GROUP, ANN, "hello")
    with db.read() as session:
        sample = read_training_sample(
            session, since_message_id=0, new_bytes=10_000, sample_bytes=10_000, seed=1
        )
    other = Database(db.url)
    done: list[str] = []

    def learn_off() -> None:  # Ann's /learn off, arriving during the check
        with other.begin() as session:
            set_learning(session, ANN, False)
        done.append("learn off")

    try:
        with db.begin() as session:  # the publish step: check, then publish
            assert withdrawn_users(session, sample.authors) == set()
            change = threading.Thread(target=learn_off)
            change.start()
            change.join(0.5)
            assert change.is_alive()  # waits: the check's answer holds until the publish
            done.append("published")
        change.join(30)
    finally:
        other.dispose()
    assert done == ["published", "learn off"]
    with db.read() as session:
        assert withdrawn_users(session, sample.authors) == {ANN}  # the next run's check


def test_replay_anchors_are_uniform_over_stored_messages_and_stop_when_used_up(db: Database):
    history(db, chats=20, turns=50)  # ids 1-1000; message id = turn * 20 + chat + 1
    with db.begin() as session:
        session.execute(text("DELETE FROM messages WHERE id BETWEEN 50 AND 949"))
    starts = set()
    with db.read() as session:
        for seed in range(10):
            pieces, _, _, _ = replay_pieces(session, 1001, 300, seed, piece_turns=4)
            starts.update(turns[0][0] for turns in pieces)
    early = {t for t in starts if int(t.split()[-1]) <= 2}  # ids 1-49 of 100 left
    assert early and len(early) < len(starts)  # a deleted range is no magnet for anchors
    with db.read() as session:  # a budget far above what is stored: all of it, then stop
        pieces, _, used, _ = replay_pieces(session, 1001, 10**9, 3, piece_turns=4)
    stored = [t for turns in pieces for t, _ in turns]
    assert len(stored) == len(set(stored)) <= 100 and used <= 10**9
    assert len(stored) > 50  # most of what is left, however the anchors fell
