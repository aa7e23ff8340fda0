"""bot/resident.py: file pages a build read once are let go; the bot's own memory never is."""

import ctypes
import mmap
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bot import resident

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Linux calls (/proc, madvise)")

MIB = 2**20


def mapped(path, *, writable=False):
    """`path` mapped whole (MAP_PRIVATE when writable) and every page read."""
    with open(path, "r+b" if writable else "rb") as f:
        m = mmap.mmap(
            f.fileno(),
            0,
            flags=mmap.MAP_PRIVATE if writable else mmap.MAP_SHARED,
            prot=mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0),
        )
    sum(m[i] for i in range(0, len(m), mmap.PAGESIZE))
    return m


def start_of(m) -> int:
    """Where a writable mapping starts (ctypes needs a writable buffer)."""
    return ctypes.addressof((ctypes.c_char * len(m)).from_buffer(m))


def test_file_mappings_are_the_clean_read_only_ones(tmp_path):
    clean, dirty, writable = (tmp_path / name for name in ("clean", "dirty", "writable"))
    for path in (clean, dirty, writable):
        path.write_bytes(b"x" * MIB)
    ro = mapped(clean)
    rw = mapped(writable, writable=True)
    # Written while writable (a private copy: anonymous), then made read-only, as the
    # loader does with a library's relocated pages.
    cow = mapped(dirty, writable=True)
    cow[0] = ord("y")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    cow_start, rw_start = start_of(cow), start_of(rw)
    assert libc.mprotect(cow_start, MIB, mmap.PROT_READ) == 0
    starts = {start for start, _, _ in resident.file_mappings()}
    assert rw_start not in starts  # writable
    assert cow_start not in starts  # holds an anonymous page
    # The clean read-only mapping is listed: find it among the mappings of its file.
    maps = [line.split() for line in Path("/proc/self/maps").read_text().splitlines()]
    [ro_start] = [int(f[0].split("-")[0], 16) for f in maps if len(f) > 5 and f[5] == str(clean)]
    assert ro_start in starts
    # Letting go keeps every byte: what was written stays, what was read reads back.
    rw[0] = ord("z")
    resident.release_file_pages()
    assert cow[0] == ord("y") and rw[0] == ord("z") and ro[:MIB] == b"x" * MIB
    ro.close()


def test_a_files_pages_read_once_are_let_go(tmp_path):
    """A child reads a file; letting go drops its pages from the child's resident set,
    and they read back the same on the next use."""
    data = tmp_path / "data"
    data.write_bytes(bytes(range(256)) * (32 * MIB // 256))
    script = textwrap.dedent(
        f"""
        import mmap, zlib
        from bot import resident

        def file_kib():  # file pages, or shared memory where tmp_path is on tmpfs
            for line in open("/proc/self/status"):
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        with open({str(data)!r}, "rb") as f:
            m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        before = zlib.crc32(m)
        read = file_kib()
        advised = resident.release_file_pages()
        print(read, file_kib(), advised, before == zlib.crc32(m))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    read, after, advised, same = out.stdout.split()
    assert int(advised) >= 32 * MIB
    assert int(read) - int(after) >= 30 * 1024  # KiB: the file's 32 MiB, nearly all
    assert same == "True"


def test_resident_names_its_parts():
    text = resident.resident()
    assert text.endswith(" of files)") and "anonymous" in text
    assert float(text.split()[0]) > 0


def test_a_mapping_with_private_pages_anywhere_is_kept(tmp_path, monkeypatch):
    """A read-only mapping whose written pages are in swap (Anonymous: 0, Swap: > 0), in
    huge pages, or that is locked is never let go: mapping it back would lose them."""
    library = tmp_path / "lib.so"
    library.write_bytes(b"x")

    def block(start: int, swap: int = 0, hugetlb: int = 0, flags: str = "rd mr me") -> str:
        return (
            f"{start:x}-{start + 4096:x} r--p 00000000 08:01 42    {library}\n"
            f"Rss: 4 kB\nAnonymous: 0 kB\nLazyFree: 0 kB\nSwap: {swap} kB\n"
            f"Shared_Hugetlb: 0 kB\nPrivate_Hugetlb: {hugetlb} kB\nVmFlags: {flags}\n"
        )

    smaps = tmp_path / "smaps"
    smaps.write_text(
        block(0x1000)
        + block(0x3000, swap=4)
        + block(0x5000, hugetlb=2048)
        + block(0x7000, flags="rd mr me lo")
        + block(0x9000, flags="rd mr me ht")
    )
    monkeypatch.setattr(resident, "SMAPS", smaps)
    assert [start for start, _, _ in resident.file_mappings()] == [0x1000]
