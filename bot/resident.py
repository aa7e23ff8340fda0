"""Handing memory the bot no longer uses back to the system after each build.

Two kinds of resident memory outlive a build (a start's warm-up, a new version, a
chat-memory refresh):
- heap that compiling used and freed, which glibc keeps for later unless told
  (malloc_trim: ~65 MB after a warm-up);
- pages of the libraries' files that importing TensorFlow and compiling read once:
  ~320 MB of TensorFlow's library stay resident after a start, while replying reads
  ~25 MB of it. They are clean copies of files, so the kernel may drop them at any
  time; MADV_PAGEOUT asks it to now, and a page that serving reads again comes back on
  its first use (from the page cache, where the kernel kept it). Only mappings with no
  private (anonymous) page are advised, so no memory of the bot's own is ever pushed
  to swap; the kernel leaves pages other processes map too (a training child) alone.

Both are Linux (glibc) calls; elsewhere, or where the kernel is older than 5.4 or a
sandbox refuses the call, they do nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import mmap
import sys
from pathlib import Path

log = logging.getLogger(__name__)

MAPS = Path("/proc/self/smaps")
STATUS = Path("/proc/self/status")
# Linux >= 5.4 (uapi asm-generic/mman-common.h); Python only names it when built with
# headers that do.
MADV_PAGEOUT = getattr(mmap, "MADV_PAGEOUT", 21) if sys.platform == "linux" else None


def hand_back() -> None:
    """Return freed heap and the library pages a build read once (module docstring)."""
    _trim_heap()
    paged = page_out_files()
    log.debug("handed back %.0f MiB of file pages; resident %s", paged / 2**20, resident())


def page_out_files() -> int:
    """Ask the kernel to drop this process's clean file pages; the bytes advised (0
    where it cannot)."""
    madvise = _libc_call("madvise")
    if madvise is None or MADV_PAGEOUT is None:
        return 0
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    advised = 0
    for start, end in file_mappings():
        if madvise(start, end - start, MADV_PAGEOUT) == 0:
            advised += end - start
    return advised


def file_mappings() -> list[tuple[int, int]]:
    """(start, end) of each mapping of a file that is not writable and holds no
    anonymous page (a relocated or copied-on-write page), from /proc/self/smaps."""
    try:
        lines = MAPS.read_text().splitlines()
    except OSError:
        return []
    found, current = [], None
    for line in lines:
        fields = line.split()
        if "-" in fields[0] and not fields[0].endswith(":"):  # a mapping's header line
            path = fields[5] if len(fields) > 5 else ""
            start, end = (int(x, 16) for x in fields[0].split("-"))
            current = (start, end) if path.startswith("/") and "w" not in fields[1] else None
        elif fields[0] == "Anonymous:" and current is not None:
            if int(fields[1]) == 0:
                found.append(current)
            current = None
    return found


def resident() -> str:
    """This process's resident memory, for the logs: total, anonymous and file pages."""
    with contextlib.suppress(OSError, KeyError, ValueError):
        sizes = {
            name: int(rest.split()[0]) / 1024
            for name, _, rest in (line.partition(":") for line in STATUS.read_text().splitlines())
            if name in ("VmRSS", "RssAnon", "RssFile")
        }
        return (
            f"{sizes['VmRSS']:.0f} MiB ({sizes['RssAnon']:.0f} anonymous, "
            f"{sizes['RssFile']:.0f} of files)"
        )
    return "unknown"


def _trim_heap() -> None:
    trim = _libc_call("malloc_trim")
    if trim is not None:
        trim(0)


@functools.cache
def _libc_call(name: str):
    """A function of the C library the interpreter runs on, or None where it has none
    (not glibc, not Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        return getattr(ctypes.CDLL(None, use_errno=True), name)
    return None
