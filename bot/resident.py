"""Handing memory the bot no longer uses back to the system after each build.

Two kinds of resident memory outlive a build (a start's warm-up, a new version, a
chat-memory refresh):
- heap that building used and freed, which glibc keeps for later unless told
  (malloc_trim: ~65 MB after a warm-up);
- pages of files that importing TensorFlow and building read once: ~320 MB of
  TensorFlow's library stay mapped after a start, while replying reads ~25 MB of it.
  They are clean copies of the files, so the process can let go of them: MADV_DONTNEED
  unmaps them from this process and leaves them in the kernel's page cache, so a page
  that serving reads again is mapped back on its first use without reading the disk
  (a minor fault), and the kernel drops the rest from its cache when it needs the room.

Only mappings of regular files (no device, no memfd, no deleted file) that are not
writable and hold no private (anonymous) page are let go: for them, mapping a page back
gives exactly the bytes it had, and no page the process wrote is ever lost. A library's
relocated pages (made read-only after they were written) are such private pages, and
are kept. Unlike MADV_PAGEOUT, this needs no write permission on the files (the bot's
user owns none of its libraries in the container or under systemd) and never evicts a
page another process is using.

Linux (glibc) only: elsewhere both do nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import mmap
import os
import stat
import sys
from pathlib import Path

log = logging.getLogger(__name__)

SMAPS = Path("/proc/self/smaps")
MAPS = Path("/proc/self/maps")
STATUS = Path("/proc/self/status")
# A mapping with any of these is left alone: its private pages (written, or copied on
# write) would be lost, wherever they are now.
PRIVATE_PAGES = {"Anonymous:", "Swap:", "Private_Hugetlb:", "Shared_Hugetlb:", "LazyFree:"}
# ... and so is one of huge pages (ht), of raw device memory (pf, io), or locked (lo).
SPECIAL_FLAGS = {"ht", "pf", "io", "lo"}
LINUX = sys.platform == "linux"


def hand_back() -> None:
    """Return freed heap and let go of the file pages a build read once (module
    docstring). Never raises: this is housekeeping, not a reason for a build to fail."""
    try:
        _trim_heap()
        released = release_file_pages()
    except Exception:
        log.exception("handing memory back to the system failed")
        return
    log.debug("let go of %.0f MiB of file pages; resident %s", released / 2**20, resident())


def release_file_pages() -> int:
    """Unmap this process's clean file pages (module docstring); the bytes advised (0
    where it cannot)."""
    madvise = _libc_call("madvise")
    if madvise is None:
        return 0
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    chosen = file_mappings()
    # Only mappings still there as they were: one another thread mapped or unmapped
    # meanwhile (a library being loaded, a file closed and its range reused) is left.
    unchanged = _headers(MAPS)
    released = 0
    for start, end, header in chosen:
        if header in unchanged and madvise(start, end - start, mmap.MADV_DONTNEED) == 0:
            released += end - start
    return released


def file_mappings() -> list[tuple[int, int, str]]:
    """(start, end, header line) of each mapping of a regular file that is not writable
    and holds no private page (in memory, in swap or in huge pages: a relocated or
    copied-on-write page) and is no special mapping, from /proc/self/smaps."""
    try:
        lines = SMAPS.read_text(errors="replace").splitlines()
    except OSError:
        return []
    found, current, clean = [], None, False
    for line in lines:
        fields = line.split(maxsplit=5)
        if not fields:
            continue
        if "-" in fields[0] and not fields[0].endswith(":"):  # a mapping's header line
            current, clean = _clean_file_mapping(fields), True
            header = line.rstrip()
        elif current is None:
            continue
        elif fields[0] in PRIVATE_PAGES:
            clean = clean and fields[1:2] == ["0"]
        elif fields[0] == "VmFlags:":  # the block's last line
            if clean and not SPECIAL_FLAGS & set(line.split()[1:]):
                found.append((*current, header))
            current = None
    return found


def _headers(path: Path) -> set[str]:
    """The header lines of the mappings in /proc/self/maps (or smaps) now."""
    try:
        return {line.rstrip() for line in path.read_text(errors="replace").splitlines()}
    except OSError:
        return set()


@functools.lru_cache(maxsize=4096)
def _regular_file(path: str) -> bool:
    """Whether `path` is a regular file now (no device, no memfd, no deleted file)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def _clean_file_mapping(fields: list[str]) -> tuple[int, int] | None:
    """(start, end) from a header line of smaps if it maps a file read-only, else None."""
    try:
        start, end = (int(x, 16) for x in fields[0].split("-"))
    except ValueError:
        return None
    path = fields[5] if len(fields) > 5 else ""
    readable_only = len(fields) > 1 and fields[1][:2] == "r-" and "w" not in fields[1]
    if not (readable_only and path.startswith("/") and not path.startswith("/dev/")):
        return None
    return (start, end) if _regular_file(path) else None


def resident() -> str:
    """This process's resident memory, for the logs: total, anonymous and file pages."""
    with contextlib.suppress(OSError, KeyError, ValueError, IndexError):
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
    """A function of the C library the interpreter runs on; None off Linux or without
    it (not glibc)."""
    if not LINUX:
        return None
    with contextlib.suppress(OSError, AttributeError):
        return getattr(ctypes.CDLL(None, use_errno=True), name)
    return None
