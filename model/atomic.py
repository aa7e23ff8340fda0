"""Writes that a crash cannot leave half done: temporary name, fsync, rename, fsync."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

TMP_PREFIX = ".tmp-"  # anything named so is unfinished work of a writer that died


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink inside `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """Make every file and folder below `path` (and `path` itself) durable, e.g. before a
    rename that publishes the whole tree."""
    for folder, _, files in os.walk(path, topdown=False):
        for name in files:
            fd = os.open(Path(folder) / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(folder))


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data`: readers see the old or the new content, never a mix."""
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}-{secrets.token_hex(4)}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
