"""model/store.py and model/store_layout.py: versions, the live pointer, rollback and prune
rules, crash safety; model/runlock.py: the run lock.

Model files here are tiny (GRU-4) and made with NumPy alone, so nothing runs TensorFlow.
The kill test forks its victims from one helper process that imported the model
package once, so each kill costs milliseconds instead of a TensorFlow import.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model.atomic import TMP_PREFIX
from model.modelfile import (
    ModelConfig,
    ModelFile,
    ModelFileError,
    expected_shapes,
    save,
    weight_names,
)
from model.runlock import RunLock
from model.store import ModelStore, StoreError
from model.store_layout import POINTER_FILE

REPO_ROOT = Path(__file__).resolve().parent.parent
TINY = ModelConfig(units=4, embed_dim=2)
KILLS = 30


def tiny_file(seed: int) -> ModelFile:
    """A GRU-4 model file whose weights are all `seed` (so versions are told apart)."""
    shapes = expected_shapes(TINY)
    weights = [np.full(shapes[name], seed, np.float32) for name in weight_names(TINY)]
    return ModelFile(TINY, weights, {"seed": seed})


def seed_of(model: ModelFile) -> int:
    return int(model.weights[0].flat[0])


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models")


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith(TMP_PREFIX))


def assert_consistent(root: Path) -> tuple[int, ModelStore]:
    """A fresh store on `root`: no leftovers, every version loads, the live one among them."""
    store = ModelStore(root)
    assert leftovers(root) == []
    for version in store.versions():
        assert seed_of(store.load(version)) >= 0
        assert store.info(version)["version"] == version
    live, model = store.load_live()
    assert live in store.versions()
    assert model.config == TINY
    return live, store


# -- publish, load, info ------------------------------------------------------------


def test_an_empty_store_has_no_live_version(store: ModelStore):
    assert store.versions() == []
    assert store.live_version() is None
    with pytest.raises(StoreError, match="no model versions yet"):
        store.load_live()
    with pytest.raises(StoreError, match="store is empty"):
        store.rollback()


def test_publish_adds_numbered_versions_and_makes_each_live(store: ModelStore):
    assert store.publish(tiny_file(1), {"note": "first"}) == 1
    assert store.publish(tiny_file(2)) == 2
    assert store.versions() == [1, 2]
    assert sorted(p.name for p in store.root.iterdir() if p.is_dir()) == ["v0001", "v0002"]
    live, model = store.load_live()
    assert (live, seed_of(model)) == (2, 2)
    assert seed_of(store.load(1)) == 1
    info = store.info(1)
    assert info["note"] == "first" and info["version"] == 1 and "published_at" in info
    assert ModelStore(store.root).live_version() == 2  # the pointer is on disk
    with pytest.raises(StoreError, match="no version 7"):
        store.load(7)
    with pytest.raises(StoreError, match="no version 7"):
        store.set_live(7)


def test_bootstrap_publishes_the_base_model_once(store: ModelStore, tmp_path: Path):
    base = save(tiny_file(9), tmp_path / "base.npz")
    assert store.bootstrap(base) == 1
    assert store.info(1)["kind"] == "base"
    assert store.bootstrap(base) == 1  # not empty any more: nothing published
    assert store.versions() == [1]
    with pytest.raises(ModelFileError, match="no such model file"):
        ModelStore(tmp_path / "other").bootstrap(tmp_path / "missing.npz")


# -- rollback and prune -------------------------------------------------------------


def test_rollback_undoes_the_last_change_of_the_live_version(store: ModelStore, tmp_path):
    store.bootstrap(save(tiny_file(1), tmp_path / "base.npz"))
    store.publish(tiny_file(2))
    store.publish(tiny_file(3))
    assert store.previous_version() == 2
    assert store.rollback() == 2
    assert store.rollback() == 1
    with pytest.raises(StoreError, match="nothing to roll back to"):
        store.rollback()
    assert store.live_version() == 1

    # A version rolled back from is not a target again: after 4, rollback returns to 1.
    assert store.publish(tiny_file(4)) == 4
    assert store.rollback() == 1
    # set_live is a change like publish: rollback returns to what was live before it.
    store.set_live(3)
    assert store.previous_version() == 1
    assert store.rollback() == 1


def test_export_copies_the_live_version_and_keeps_the_version_counter(store, tmp_path):
    for seed in (1, 2, 3):
        store.publish(tiny_file(seed))
    store.rollback()  # live 2; 3 was given out
    assert store.export_live(tmp_path / "copy") == 2
    copy = ModelStore(tmp_path / "copy")
    assert copy.versions() == [2] and copy.live_version() == 2
    assert seed_of(copy.load(2)) == 2
    assert copy.publish(tiny_file(4)) == 4  # never a second version 3
    with pytest.raises(StoreError):
        ModelStore(tmp_path / "empty").export_live(tmp_path / "nothing")


def test_rollback_skips_versions_that_vanished(store: ModelStore):
    for seed in (1, 2, 3):
        store.publish(tiny_file(seed))
    shutil.rmtree(store.path(2))
    assert store.previous_version() == 1
    assert store.rollback() == 1


def test_prune_keeps_the_newest_and_never_the_live_one_or_its_predecessor(store: ModelStore):
    for seed in range(1, 7):
        store.publish(tiny_file(seed))
    store.set_live(2)  # live 2, previous 6
    assert store.prune(keep=1) == [1, 3, 4, 5]
    assert store.versions() == [2, 6]
    assert store.live_version() == 2
    assert store.rollback() == 6
    assert store.publish(tiny_file(7)) == 7  # numbers are never reused
    assert store.prune(keep=2) == [2]  # 2 was rolled back from: neither live nor previous
    assert store.prune(keep=1) == []  # 7 is live and the newest, 6 its predecessor
    with pytest.raises(ValueError, match="at least 1"):
        store.prune(keep=0)
    assert leftovers(store.root) == []


# -- damage and leftovers ------------------------------------------------------------


def test_opening_removes_what_dead_writers_left(store: ModelStore):
    store.publish(tiny_file(1))
    half = store.root / f"{TMP_PREFIX}v0002-dead"
    half.mkdir()
    (half / "model.npz").write_bytes(b"PK\x03\x04 half a zip")
    (store.root / f"{TMP_PREFIX}deleted-v0000-dead").mkdir()
    (store.root / f"{TMP_PREFIX}LIVE-dead").write_text('{"live": 2')
    reopened = ModelStore(store.root)
    assert leftovers(store.root) == []
    assert reopened.versions() == [1]
    assert reopened.load_live()[0] == 1
    assert reopened.publish(tiny_file(2)) == 2


@pytest.mark.parametrize("damage", ["missing", "corrupt", "no info"])
def test_a_pointer_to_a_broken_version_falls_back_to_the_newest_loadable(
    store: ModelStore, damage: str, caplog
):
    for seed in (1, 2, 3):
        store.publish(tiny_file(seed))
    store.set_live(2)
    if damage == "missing":
        shutil.rmtree(store.path(2))
    elif damage == "corrupt":
        (store.path(2) / "model.npz").write_bytes(b"not a zip at all")
    else:
        (store.path(2) / "info.json").unlink()
    with caplog.at_level(logging.WARNING, logger="model.store"):
        reopened = ModelStore(store.root)
        live, model = reopened.load_live()
    assert (live, seed_of(model)) == (3, 3)
    assert "the live version 2 is missing or does not load; serving version 3" in caplog.text


@pytest.mark.parametrize("content", ["", "garbage", '{"live": "x"}', '{"history": []}'])
def test_an_unreadable_or_missing_pointer_means_the_newest_version(store: ModelStore, content):
    for seed in (1, 2, 3):
        store.publish(tiny_file(seed))
    store.set_live(1)
    (store.root / POINTER_FILE).write_text(content)
    reopened = ModelStore(store.root)
    assert reopened.load_live()[0] == 3
    assert reopened.rollback() == 2  # history taken to be the older versions
    assert ModelStore(store.root).load_live()[0] == 2  # the rollback wrote a good pointer


# -- crashes ------------------------------------------------------------------------


class Crash(BaseException):
    """Stands for the process dying at this point."""


@pytest.mark.parametrize("operation", ["publish", "rollback", "prune"])
def test_a_crash_at_any_step_leaves_the_old_or_the_new_state(tmp_path, monkeypatch, operation):
    """Each fsync/rename/replace/unlink/rmtree in turn fails; the store stays usable."""
    step, crashed = 0, True
    while crashed:
        step += 1
        root = tmp_path / f"crash-{step}"
        store = ModelStore(root)
        for seed in (1, 2, 3):
            store.publish(tiny_file(seed))
        calls = 0

        def crash_at(fn, step=step):
            def wrapper(*args, **kwargs):
                nonlocal calls
                calls += 1
                if calls == step:
                    raise Crash(f"step {step}")
                return fn(*args, **kwargs)

            return wrapper

        with monkeypatch.context() as patch:
            for name in ("fsync", "rename", "replace", "unlink", "rmdir"):
                patch.setattr(os, name, crash_at(getattr(os, name)))
            try:
                if operation == "publish":
                    store.publish(tiny_file(4))
                elif operation == "rollback":
                    store.rollback()
                else:
                    store.prune(keep=1)
                crashed = False
            except Crash:
                pass
        live, _ = assert_consistent(root)
        old, new = 3, {"publish": 4, "rollback": 2, "prune": 3}[operation]
        assert live in ({new} if not crashed else {old, new}), f"crash at step {step}: {live}"
    assert step > 3  # the operation really had several steps to crash in


ZYGOTE = r"""
import os, signal, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
from model.modelfile import ModelFile, expected_shapes
from model.modelfile import ModelConfig, weight_names
from model.runlock import RunLock
from model.store import ModelStore

TINY = ModelConfig(units=4, embed_dim=2)


def tiny(seed):
    shapes = expected_shapes(TINY)
    return ModelFile(TINY, [np.full(shapes[n], seed, np.float32) for n in weight_names(TINY)])


def churn(root, log_path, seed):
    # Publish, roll back and prune forever; a line before each change and after it.
    rng = np.random.default_rng(seed)
    store = ModelStore(root)
    with open(log_path, "a") as log:
        def note(line):
            log.write(line + "\n")
            log.flush()
        while True:
            r = rng.random()
            if r < 0.6:
                note("publish")
                note(f"live {store.publish(tiny(int(rng.integers(1000))))}")
            elif r < 0.85:
                target = store.previous_version()
                if target is not None:
                    note(f"rollback {target}")
                    store.rollback()
                    note(f"live {target}")
            else:
                note("prune")
                store.prune(3)
                note(f"live {store.live_version()}")


def hold(path, pipe):
    lock = RunLock(path)
    assert lock.acquire()
    os.write(pipe, b"held")
    time.sleep(600)


children = set()


def fork(fn, *args):
    pid = os.fork()
    if pid == 0:
        try:
            fn(*args)
        finally:
            os._exit(1)
    children.add(pid)
    return pid


def kill(pid):
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    children.discard(pid)
    return "killed" if os.WIFSIGNALED(status) else f"exited {os.waitstatus_to_exitcode(status)}"


print("ready", flush=True)
for line in sys.stdin:
    cmd, *args = line.split()
    if cmd == "churn":  # churn ROOT LOG SEED DELAY: fork a writer, SIGKILL it after DELAY s
        pid = fork(churn, args[0], args[1], int(args[2]))
        time.sleep(float(args[3]))
        print(kill(pid), flush=True)
    elif cmd == "hold":  # hold PATH: fork a process that takes the run lock and sleeps
        r, w = os.pipe()
        pid = fork(hold, args[0], w)
        os.read(r, 4)
        print(pid, flush=True)
    elif cmd == "kill":
        print(kill(int(args[0])), flush=True)
for pid in list(children):  # the test ended early: leave nothing behind
    kill(pid)
"""


@pytest.fixture(scope="module")
def zygote(tmp_path_factory):
    """A helper process that forks writers and lock holders on request, and kills them."""
    script = tmp_path_factory.mktemp("zygote") / "zygote.py"
    script.write_text(ZYGOTE)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(REPO_ROOT)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout.readline().strip() == "ready"

    def ask(*words) -> str:
        proc.stdin.write(" ".join(map(str, words)) + "\n")
        proc.stdin.flush()
        return proc.stdout.readline().strip()

    yield ask
    proc.stdin.close()
    proc.wait(timeout=10)


def expected_after_kill(log: list[str], live_before: int, newest_before: int) -> set[int] | None:
    """The live versions allowed after a kill, from the writer's log; None = any newer one."""
    confirmed, newest = live_before, newest_before
    for line in log:
        if line.startswith("live "):
            confirmed = int(line.split()[1])
            newest = max(newest, confirmed)
    last = log[-1] if log else "live"
    if last.startswith("rollback "):
        return {confirmed, int(last.split()[1])}
    if last == "publish":  # killed inside publish: the old version, or the new one fully
        return {confirmed, -newest}  # negative: "any version above this"
    return {confirmed}


def test_kill_9_at_any_moment_leaves_a_published_version_live(tmp_path, zygote):
    root = tmp_path / "models"
    ModelStore(root).publish(tiny_file(0))
    rng = random.Random(4)
    in_publish = 0
    for kill in range(KILLS):
        live_before, store = assert_consistent(root)
        newest_before = max(store.versions())
        log_path = tmp_path / f"churn-{kill}.log"
        delay = rng.uniform(0.0, 0.3)
        assert zygote("churn", root, log_path, kill, f"{delay:.4f}") == "killed"
        log = log_path.read_text().splitlines() if log_path.exists() else []
        live, store = assert_consistent(root)
        allowed = expected_after_kill(log, live_before, newest_before)
        above = [-v for v in allowed if v < 0]
        ok = live in allowed or (above and live > above[0])
        assert ok, f"kill {kill} after {delay:.3f} s: live {live}, log tail {log[-3:]}"
        in_publish += bool(log) and log[-1] == "publish"
    assert in_publish >= KILLS // 5, f"only {in_publish} kills landed inside publish"


# -- the run lock ---------------------------------------------------------------------


def test_run_lock_admits_one_run_at_a_time(tmp_path: Path):
    path = tmp_path / "run.lock"
    first, second = RunLock(path), RunLock(path)
    assert not second.is_running()
    assert first.acquire()
    assert first.held and first.is_running() and second.is_running()
    assert not second.acquire()
    assert second.holder()["pid"] == os.getpid()
    first.release()
    assert not second.is_running() and second.holder() is None
    assert second.acquire()
    assert first.is_running()
    second.release()
    assert first.acquire()
    first.release()


def test_a_status_probe_does_not_make_a_starting_run_fail(tmp_path: Path):
    """is_running() takes a shared lock for an instant; acquire() waits that out."""
    import fcntl
    import threading

    path = tmp_path / "run.lock"
    path.write_text("")
    with open(path) as probe:
        fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)  # a probe caught mid-way
        threading.Timer(0.06, fcntl.flock, (probe, fcntl.LOCK_UN)).start()
        lock = RunLock(path)
        assert lock.acquire()
    lock.release()


def test_run_lock_is_free_again_after_its_holder_is_killed(tmp_path: Path, zygote):
    path = tmp_path / "run.lock"
    holder = int(zygote("hold", path))
    lock = RunLock(path)
    assert lock.is_running()
    assert lock.holder()["pid"] == holder
    assert not lock.acquire()
    assert zygote("kill", holder) == "killed"
    assert not lock.is_running()
    assert lock.acquire()
    lock.release()
    assert json.loads(path.read_text())["pid"] == os.getpid()
