"""The data dir: where the database, the model versions and the runs live.

data/charbot.sqlite3        users, chats, messages, training runs (the default database)
data/models/                model versions (model.store); LIVE points at one
data/runs/run-00001/        a run's checkpoint, history.csv, tensorboard/, loss.png (the
                            newest KEEP_RUN_DIRS are kept)
data/runs/train.log         what retraining child processes printed (and train.log.1, the
                            one before it grew past TRAIN_LOG_BYTES)
data/train.lock             held while a run is going (SQLite; with PostgreSQL the
                            database holds the run lock: storage.run_lock)
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Collection
from pathlib import Path

import numpy as np

from bot.settings import Settings
from model import BASE_MODEL_PATH, MIX_KEY, ModelFileError, load
from model.runlock import RunLock
from model.store import ModelStore, StoreError
from storage import Database, close_stale_runs, last_finished_run, normalize_url, open_database
from storage.run_lock import AdvisoryRunLock

log = logging.getLogger(__name__)

MODELS_DIR = "models"
RUNS_DIR = "runs"
TRAIN_LOG = "train.log"
RUN_LOCK_FILE = "train.lock"
RUN_DIR_PREFIX = "run-"
# A run's folder is ~15 MB (candidate, checkpoint, TensorBoard logs): a run every few
# hours for months must not fill the disk. Older runs keep their records in the database.
KEEP_RUN_DIRS = 10
TRAIN_LOG_BYTES = 10 * 1024 * 1024  # train.log starts again past this; one old copy kept
MEMORY_FILE = "memory.npz"  # the chat memory (bot/chat_memory.py)
# What adopt_shipped_base last checked against: the SHA-256 of the shipped base file.
SHIPPED_BASE_CHECKED = ".shipped-base-checked"


def open_store(settings: Settings, *, repair: bool = True) -> ModelStore:
    """The data dir's model versions; a new data dir starts from the configured base model.

    A store whose versions are all gone, or none of which loads, serves the base model
    again as a new version; that, like any repair the store made, is in `store.notices`
    for the admins; `repair=False` leaves a broken store as it is (for `charbot status`,
    which tells nobody). (The base model must load: else ModelFileError.)
    """
    store = ModelStore(settings.data_dir / MODELS_DIR)
    live = store.live_version()
    if live is not None and repair and store.notices:
        store.set_live(live)  # the pointer names what is served now: told once, not each start
    if live is not None or (not repair and store.published_before()):
        return store  # (without `repair`, a broken store is left for the bot to repair)
    base = settings.model_path or BASE_MODEL_PATH
    found = list(store.notices)  # what publishing below notices is the repair itself
    if store.versions():
        version = store.publish(load(base), {"kind": "base", "source": str(base)})
        store.notices[:] = found
        store.notices.append(
            f"no model version loads (versions {', '.join(map(str, store.versions()[:-1]))}); "
            f"serving the base model again as version {version}"
        )
    elif store.published_before():
        version = store.bootstrap(base)
        store.notices[:] = found
        store.notices.append(
            f"every model version was gone from {store.root}; serving the base model again "
            f"as version {version}"
        )
    else:
        store.bootstrap(base)
    return store


class DataDirError(RuntimeError):
    """The data dir cannot be used; the message is one line with the fix."""


def check_data_dir(settings: Settings) -> None:
    """Make the data dir if it is new; DataDirError if it cannot be made or written."""
    path = settings.data_dir
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataDirError(
            f"CHARBOT_DATA_DIR {path}: cannot be created ({exc.strerror}): create it "
            "yourself, or choose a folder the bot may write in"
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise DataDirError(
            f"CHARBOT_DATA_DIR {path}: not writable by this user: give it write access "
            "(chown/chmod), or choose another folder"
        )


def open_database_for(settings: Settings) -> Database:
    """The configured database, migrated to the newest schema (the data dir made if new).

    Raises DataDirError or storage.DatabaseFileError, one line each."""
    check_data_dir(settings)
    return open_database(settings.database_url)


def check_shared_store(settings: Settings, db: Database) -> None:
    """DataDirError if the model store was never published into while the database records
    published runs: a `charbot train` on another host whose data dir lacks the bot's model
    store (a mount that is missing) would start a store of its own that no bot reads.
    (A SQLite database lives in the data dir with the store: nothing to check.)"""
    root = settings.data_dir / MODELS_DIR
    if not is_server_database(settings) or ModelStore(root).published_before():
        return
    with db.read() as session:
        published = last_finished_run(session, ("published",))
    if published is not None:
        raise DataDirError(
            f"CHARBOT_DATA_DIR {settings.data_dir}: {root} holds no model versions, but the "
            f"database says run {published.id} published version {published.new_version}: "
            f"mount the bot's model store ({MODELS_DIR}/ in its data dir) there"
        )


def run_lock(settings: Settings) -> RunLock | AdvisoryRunLock:
    """The lock that admits one retraining run at a time.

    With PostgreSQL, the database's advisory lock: the bot and `charbot train` may run on
    different hosts, sharing the data dir over NFS, where a lock file cannot be trusted.
    With SQLite (one host by nature), a lock file in the data dir.
    """
    if is_server_database(settings):
        return AdvisoryRunLock(settings.database_url)
    return RunLock(settings.data_dir / RUN_LOCK_FILE)


def is_server_database(settings: Settings) -> bool:
    """Whether the database is PostgreSQL, which processes on several hosts may share."""
    return normalize_url(settings.database_url).get_backend_name() == "postgresql"


def run_dir(settings: Settings, run_id: int) -> Path:
    return settings.data_dir / RUNS_DIR / f"{RUN_DIR_PREFIX}{run_id:05d}"


def prune_run_dirs(
    settings: Settings, keep: int = KEEP_RUN_DIRS, spare: Collection[int] = ()
) -> list[Path]:
    """Delete all but the newest `keep` run folders, but not those of the runs in `spare`
    (not yet reported: their plot goes to the admins) among the newest 2 * `keep` (runs
    nobody reports, `charbot train` with no bot, must not pile up). Call with the run
    lock held, so none of them is being written. Returns what went; one that cannot be
    deleted is left for the next time."""
    runs = settings.data_dir / RUNS_DIR
    numbered = {}
    for path in runs.glob(f"{RUN_DIR_PREFIX}*"):
        number = path.name.removeprefix(RUN_DIR_PREFIX)
        if number.isdigit() and path.is_dir():
            numbered[int(number)] = path
    numbers = sorted(numbered)
    old = numbers[: max(0, len(numbers) - keep)]
    recent = set(numbers[max(0, len(numbers) - 2 * keep) :])  # past these, none is spared
    gone = []
    for folder in (numbered[n] for n in old if not (n in recent and n in spare)):
        try:
            shutil.rmtree(folder)
            gone.append(folder)
        except OSError:
            log.exception("could not delete the old run folder %s", folder)
    return gone


def rotate_train_log(settings: Settings, max_bytes: int = TRAIN_LOG_BYTES) -> None:
    """Start train.log afresh once it is past `max_bytes`, keeping the last as train.log.1."""
    path = train_log(settings)
    try:
        if path.stat().st_size > max_bytes:
            path.replace(path.with_name(TRAIN_LOG + ".1"))
    except FileNotFoundError:
        pass


def train_log(settings: Settings) -> Path:
    return settings.data_dir / RUNS_DIR / TRAIN_LOG


def memory_path(settings: Settings) -> Path:
    return Path(settings.data_dir) / MEMORY_FILE


def pretrain_dir(settings: Settings) -> Path:
    return settings.data_dir / RUNS_DIR / "pretrain"


def reconcile_stale_runs(db: Database, store: ModelStore, reason: str) -> int:
    """Close the runs a dead process left "running" (call with the run lock held), each as
    the store has it: published if it holds a version the run published before it died,
    failed if not. Returns how many there were."""
    published = {}
    for version in store.versions():
        try:
            info = store.info(version)
        except StoreError:
            continue
        if isinstance(info.get("run"), int):
            published[info["run"]] = {"version": version, "losses": info.get("losses")}
    with db.begin() as session:
        return close_stale_runs(session, reason, published)


def adopt_shipped_base(settings: Settings, store: ModelStore) -> int | None:
    """Once per shipped base file: publish the configured base model as a new version when
    the live version is that same network as an older charbot shipped it, mixed another way
    (without the mixture entry the shipped file carries now, or with another one: a base
    n-gram of another order, another weight; model.mixture), so an upgraded install
    samples as a new one does. The old version stays for /rollback; fine-tuned versions
    are left alone. Returns the new version, or None when there was nothing to adopt (or
    this shipped file was checked before: the check loads two model files, so it runs
    once per file, not at every start; hashing the 4 MB file takes ~10 ms). An upgrade
    that cannot be checked (the shipped file or a version's record unreadable) is logged
    and tried again at the next start: the live version serves meanwhile.
    """
    base_path = Path(settings.model_path or BASE_MODEL_PATH)
    marker = store.root / SHIPPED_BASE_CHECKED
    try:
        with open(base_path, "rb") as f:
            stamp = f"{hashlib.file_digest(f, 'sha256').hexdigest()}\n".encode()
        if marker.exists() and marker.read_bytes() == stamp:
            return None
        version = _adopt(base_path, store)
    except (OSError, ModelFileError, StoreError) as e:
        log.warning("could not check the shipped base model for a new mixture: %s", e)
        return None
    try:
        # Written in place, not through a temporary file (the store removes those of
        # other processes when it opens): a torn marker only means checking again.
        marker.write_bytes(stamp)
    except OSError as e:
        log.warning("could not note the shipped base model as checked: %s", e)
    return version


def _adopt(base_path: Path, store: ModelStore) -> int | None:
    live, model = store.load_live()
    if model.meta.get("kind") != "base":
        return None
    if any(store.info(v).get("replaces") == live for v in store.versions()):
        return None  # adopted once already, and an admin rolled back to this one
    shipped = load(base_path)
    same_network = shipped.config == model.config and all(
        np.array_equal(a, b) for a, b in zip(shipped.weights, model.weights, strict=True)
    )
    mix = shipped.meta.get(MIX_KEY)
    if mix is None or mix == model.meta.get(MIX_KEY) or not same_network:
        return None
    info = {"kind": "base", "source": str(base_path), "replaces": live}
    version = store.publish_if_live(live, shipped, info)
    if version is not None:
        log.info(
            "version %d: the shipped base model, mixed as this charbot mixes it (%s; "
            "version %d is the same network mixed as before; /rollback returns to it)",
            version,
            mix,
            live,
        )
    return version
