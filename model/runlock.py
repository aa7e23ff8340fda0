"""One retraining run at a time, across processes: an exclusive `flock` on a file."""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import time
from pathlib import Path

LOCK_ATTEMPTS = 5  # RunLock.acquire tries this often before it says a run is going
LOCK_RETRY_SECONDS = 0.05


class RunLock:
    """One retraining run at a time, across processes: an exclusive `flock` on `path`.

    The operating system drops the lock when its holder exits in any way, kill -9
    included, so a crashed run never leaves it stuck. The file holds the holder's
    pid and start time for status reports; it is never deleted.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._file = None

    def acquire(self) -> bool:
        """Take the lock without waiting; False if another run holds it."""
        if self._file is not None:
            raise RuntimeError(f"{self.path}: this RunLock is held already")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")  # noqa: SIM115 (kept open while held)
        for attempt in range(LOCK_ATTEMPTS):
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                # A holder, or only is_running()'s brief shared probe: look again shortly.
                if attempt == LOCK_ATTEMPTS - 1:
                    f.close()
                    return False
                time.sleep(LOCK_RETRY_SECONDS)
        f.seek(0)
        f.truncate()
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        f.write(json.dumps({"pid": os.getpid(), "since": now}) + "\n")
        f.flush()
        self._file = f
        return True

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._file is not None

    def is_running(self) -> bool:
        """Whether a run (in this or any other process) holds the lock now."""
        if self._file is not None:
            return True
        try:
            f = open(self.path)  # noqa: SIM115
        except FileNotFoundError:
            return False
        with f:
            try:
                # A shared probe: it fails only while some run holds the lock exclusively.
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
            return False

    def holder(self) -> dict | None:
        """{"pid": ..., "since": ...} of the run holding the lock, or None when none runs."""
        if not self.is_running():
            return None
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
