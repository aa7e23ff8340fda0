"""bot/datadir.py: run folders and train.log do not grow forever."""

from __future__ import annotations

from pathlib import Path

from bot.datadir import TRAIN_LOG, prune_run_dirs, rotate_train_log, run_dir, train_log
from bot.settings import Settings


def test_only_the_newest_run_folders_are_kept(tmp_path: Path):
    settings = Settings(data_dir=tmp_path)
    for run_id in (3, 9, 10, 11, 100):
        (run_dir(settings, run_id) / "tensorboard").mkdir(parents=True)
        (run_dir(settings, run_id) / "candidate.npz").write_bytes(b"x" * 100)
    runs = tmp_path / "runs"
    (runs / "pretrain").mkdir()  # not a run's folder
    (runs / "run-notes").mkdir()  # nor this
    train_log(settings).write_text("log\n")
    gone = prune_run_dirs(settings, keep=3)
    assert gone == [run_dir(settings, 3), run_dir(settings, 9)]  # by number, not by name
    left = sorted(p.name for p in runs.iterdir())
    assert left == ["pretrain", "run-00010", "run-00011", "run-00100", "run-notes", TRAIN_LOG]
    assert prune_run_dirs(settings, keep=3) == []
    # A run not yet reported keeps its folder (its plot goes to the admins)...
    assert prune_run_dirs(settings, keep=2, spare={10}) == []
    # ...but not for ever: past the newest 2 * keep folders, unreported runs go too.
    gone = prune_run_dirs(settings, keep=1, spare={10})
    assert gone == [run_dir(settings, 10), run_dir(settings, 11)]
    assert run_dir(settings, 100).is_dir()


def test_the_train_log_starts_again_past_its_size_keeping_one_old_copy(tmp_path: Path):
    settings = Settings(data_dir=tmp_path)
    rotate_train_log(settings, max_bytes=10)  # no log yet: nothing to do
    log = train_log(settings)
    log.parent.mkdir(parents=True)
    log.write_text("short\n")
    rotate_train_log(settings, max_bytes=10)
    assert log.read_text() == "short\n"
    log.write_text("first run, long enough\n")
    rotate_train_log(settings, max_bytes=10)
    assert not log.exists() and (log.parent / "train.log.1").read_text().startswith("first")
    log.write_text("second run, long enough\n")
    rotate_train_log(settings, max_bytes=10)
    assert (log.parent / "train.log.1").read_text().startswith("second")  # one copy only
