"""Every variable the settings read is listed by `charbot --help` and in the README."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot import cli, environment

REPO_ROOT = Path(__file__).resolve().parent.parent


def read_by_settings() -> set[str]:
    """The names bot.settings looks up: each is read through its local `get("NAME")`."""
    source = (REPO_ROOT / "bot" / "settings.py").read_text()
    return set(re.findall(r'\bget\("([A-Z][A-Z0-9_]+)"\)', source))


def test_the_list_is_exactly_what_the_settings_read():
    listed = [name for name, _ in environment.VARIABLES]
    assert len(listed) == len(set(listed))
    assert set(listed) == read_by_settings()


def test_help_names_every_variable(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    shown = capsys.readouterr().out
    missing = [name for name, _ in environment.VARIABLES if f"  {name} " not in shown]
    assert not missing


def test_the_readme_describes_every_variable():
    readme = (REPO_ROOT / "README.md").read_text()
    table = {m for m in re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", readme, flags=re.M)}
    assert {name for name, _ in environment.VARIABLES} <= table
