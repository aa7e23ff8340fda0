"""The data dir: where the database, the model versions and the runs live.

data/charbot.sqlite3        users, chats, messages, training runs (the default database)
data/models/                model versions (model.store); LIVE points at one
data/runs/run-00001/        a run's checkpoint, history.csv, tensorboard/, loss.png
data/runs/train.log         what retraining child processes printed
data/train.lock             held while a run is going
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from bot.settings import Settings
from model import BASE_MODEL_PATH, MIX_KEY, load
from model.runlock import RunLock
from model.store import ModelStore
from storage import Database, open_database

log = logging.getLogger(__name__)

MODELS_DIR = "models"
RUNS_DIR = "runs"
TRAIN_LOG = "train.log"
RUN_LOCK_FILE = "train.lock"
# Written once the one-time upgrade of a pre-mixture store (adopt_shipped_base) was checked.
MIXED_BASE_CHECKED = ".mixed-base-checked"


def open_store(settings: Settings) -> ModelStore:
    """The data dir's model versions; a new data dir starts from the configured base model."""
    store = ModelStore(settings.data_dir / MODELS_DIR)
    if store.live_version() is None:
        store.bootstrap(settings.model_path or BASE_MODEL_PATH)
    return store


def open_database_for(settings: Settings) -> Database:
    """The configured database, migrated to the newest schema (the data dir made if new)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return open_database(settings.database_url)


def run_lock(settings: Settings) -> RunLock:
    return RunLock(settings.data_dir / RUN_LOCK_FILE)


def run_dir(settings: Settings, run_id: int) -> Path:
    return settings.data_dir / RUNS_DIR / f"run-{run_id:05d}"


def train_log(settings: Settings) -> Path:
    return settings.data_dir / RUNS_DIR / TRAIN_LOG


def pretrain_dir(settings: Settings) -> Path:
    return settings.data_dir / RUNS_DIR / "pretrain"


def adopt_shipped_base(settings: Settings, store: ModelStore) -> int | None:
    """Once per data dir: publish the configured base model as a new version when the live
    version is that same network as an older charbot shipped it, without the mixture entry
    the shipped file carries now (model.mixture), so an upgraded install samples as a new
    one does. The old version stays for /rollback; fine-tuned versions are left alone.
    Returns the new version, or None when there was nothing to adopt (or it was checked
    before: the check loads two model files, so it runs once, not at every start).
    """
    marker = store.root / MIXED_BASE_CHECKED
    if marker.exists():
        return None
    version = _adopt(settings, store)
    marker.touch()
    return version


def _adopt(settings: Settings, store: ModelStore) -> int | None:
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
