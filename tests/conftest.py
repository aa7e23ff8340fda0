"""Shared fixtures: a tiny model file and one warmed generator for the whole session.

TensorFlow is imported inside the fixtures, so tests that need no model stay fast.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from storage import alembic_config, open_database, sqlite_url

# The migrations' head: the revision open_database brings a database to.
LATEST_REVISION = ScriptDirectory.from_config(alembic_config()).get_current_head()
TINY_META = {"kind": "tiny-test", "created": "2025-01-01T00:00:00+00:00"}


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    """An untrained GRU-32 model file (replies are noise, but never empty)."""
    import keras

    from model import ModelConfig, ModelFile, save
    from model.network import build_network

    keras.utils.set_random_seed(3)
    config = ModelConfig(units=32, embed_dim=16)
    path = tmp_path_factory.mktemp("model") / "tiny.npz"
    save(ModelFile.from_network(build_network(config), config, TINY_META), path)
    return path


@pytest.fixture(scope="session")
def generator(tiny_model_path):
    """One warmed generator for the tiny model, shared by every bot the tests start."""
    from model import load
    from model.generator import Generator

    return Generator(load(tiny_model_path))


@pytest.fixture
def db(tmp_path: Path):
    """A new, migrated SQLite database in the test's folder."""
    database = open_database(sqlite_url(tmp_path))
    yield database
    database.dispose()


@pytest.fixture
def clean_env() -> dict[str, str]:
    """The process environment without any charbot or Telegram variable (for subprocesses)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHARBOT_", "TELEGRAM_BOT_"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture(scope="session")
def charbot() -> list[str]:
    """How to run the `charbot` console script of this environment."""
    script = Path(sys.executable).with_name("charbot")
    if script.exists():
        return [str(script)]
    found = shutil.which("charbot")
    return [found] if found else [sys.executable, "-m", "bot.cli"]
