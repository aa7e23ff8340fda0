"""XLA's compiled code kept in the data dir: a start loads the generator's executables
instead of compiling them again (about 12 s of CPU for six batch buckets on two
cores, against 1.5 s to load them, and ~90 MB less resident memory after it).

    data/xla-cache/<machine tag>/*.pb    one file per compiled computation (TensorFlow's
                                         persistent cache, --tf_xla_persistent_cache_directory)

TensorFlow keys each file by the computation (its whole HLO, checked on load), so a
generator of new shapes (a chat memory that outgrew the tables compiled before, a model
of another size) compiles and adds its own; it does not key them by the
machine, so the files live in a folder named by the TensorFlow version, the CPU and its
features: a data dir moved to another host or upgraded never loads code built for
another. TensorFlow fails a compile on a file it cannot parse, so before the first
compile every file is checked (tidy) and one that is not whole is removed with a log
line; the newest LIMIT_BYTES are kept, at start and after every later build (trim: each
new set of shapes adds files, so the folder would otherwise only grow).

TensorFlow reads its XLA flags once, at the first compile of the process: `kept()` sets
the flag around the first generator's build and takes it out of the environment again,
so that child processes (`charbot train`) do not write here too. Where XLA compiled in
the process before (tests), it has no effect.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import logging
import os
import platform
import threading
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

FOLDER = "xla-cache"
LIMIT_BYTES = 64 * 1024 * 1024  # ~90 buckets' executables of ~0.7 MB: ~18 generators' code
DIGEST_SUFFIX = ".sha256"  # beside each file: its digest when first found whole
FLAGS = "TF_XLA_FLAGS"
DIRECTORY_FLAG = "--tf_xla_persistent_cache_directory"
# XlaSerializedCacheEntry's fields (tensorflow/compiler/jit/xla_compilation_cache.proto):
# 1 the key, 2 the HLO, 3 the executable; each must be there for TensorFlow to load it.
ENTRY_FIELDS = {1, 2, 3}
SETTLE_S = 60.0  # trim() leaves files this young alone: a compile may be writing them

_folder: Path | None = None  # where this process's compiles write, once kept() set it
_tidying = threading.Lock()  # one trim at a time
STALE_TMP_S = 3600  # a write TensorFlow left unfinished (`*.tmp`) this old is removed


def machine_tag() -> str:
    """A name for what compiled code depends on: TensorFlow's version, the CPU and its
    features."""
    h = hashlib.sha256()
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        h.update(importlib.metadata.version("tensorflow").encode())
    h.update(f"{platform.machine()} {platform.system()}\n".encode())
    with contextlib.suppress(OSError):
        cpu = Path("/proc/cpuinfo").read_text(errors="replace").splitlines()
        h.update(
            "\n".join(sorted({ln for ln in cpu if ln.startswith(("model name", "flags"))})).encode()
        )
    return h.hexdigest()[:16]


@contextlib.contextmanager
def kept(data_dir: Path) -> Iterator[Path | None]:
    """Keep XLA's compiled code under `data_dir` for the compiles inside (module
    docstring); yields the folder, or None when the folder cannot be used (a log line;
    the bot compiles as without it)."""
    global _folder
    folder = data_dir / FOLDER / machine_tag()
    before = os.environ.get(FLAGS)
    if before is not None and DIRECTORY_FLAG in before:
        yield None  # the operator chose a folder
        return
    if before and not before.lstrip().startswith("-"):
        # XLA reads such a value as the name of a file of flags: ours cannot be added.
        log.info("%s names a flags file; XLA's compiled code is not kept", FLAGS)
        yield None
        return
    if any(c.isspace() for c in str(folder)):
        # XLA's flag parser ends a value at whitespace.
        log.warning("XLA's compiled code cannot be kept in %s (a space in it)", folder)
        yield None
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tidy(folder)
    except (OSError, ValueError) as e:
        log.warning("XLA's compiled code cannot be kept in %s (%s); compiling it", folder, e)
        yield None
        return
    _folder = folder
    os.environ[FLAGS] = f"{before or ''} {DIRECTORY_FLAG}={folder}".strip()
    try:
        yield folder
    finally:
        if before is None:
            os.environ.pop(FLAGS, None)
        else:
            os.environ[FLAGS] = before


def trim() -> None:
    """Tidy the folder this process's compiles write into (`kept` set it), if any: every
    compile after the first writes there too (a generator of new shapes), so the bot
    calls this after each build. Files younger than SETTLE_S are left
    alone (another build may be writing one); a failure is a log line."""
    if _folder is None:
        return
    try:
        with _tidying:
            tidy(_folder, settle_s=SETTLE_S)
    except (OSError, ValueError) as e:
        log.warning("could not tidy XLA's compiled code in %s: %s", _folder, e)


def tidy(folder: Path, settle_s: float = 0.0) -> None:
    """Remove the files TensorFlow could not load, and all but the newest LIMIT_BYTES of
    the rest. A file is checked to be whole once (a crash while TensorFlow wrote it
    leaves it torn), and from then on against the digest written beside it then.
    Files modified less than `settle_s` ago are neither checked nor removed."""
    files = []
    young = time.time() - settle_s
    for path in folder.glob("*.pb"):
        if settle_s and path.stat().st_mtime > young:
            continue
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        sidecar = path.with_name(path.name + DIGEST_SUFFIX)
        known = _digest_of(sidecar)
        if digest != known and (known is not None or not whole_entry(data)):
            log.warning("removing %s: not the whole compiled computation it was", path)
            path.unlink()
            sidecar.unlink(missing_ok=True)
            continue
        if known is None:
            sidecar.write_text(digest + "\n")
        files.append((path.stat().st_mtime, len(data), path))
    kept_bytes = 0
    for _, size, path in sorted(files, reverse=True):
        kept_bytes += size
        if kept_bytes > LIMIT_BYTES:
            path.unlink(missing_ok=True)
            path.with_name(path.name + DIGEST_SUFFIX).unlink(missing_ok=True)
    for sidecar in folder.glob(f"*.pb{DIGEST_SUFFIX}"):
        if not sidecar.with_suffix("").exists():
            sidecar.unlink(missing_ok=True)
    stale = time.time() - STALE_TMP_S
    for unfinished in folder.glob("*.tmp"):  # TensorFlow writes <name>.pb<unique>.tmp
        with contextlib.suppress(FileNotFoundError):
            if unfinished.stat().st_mtime < stale:
                unfinished.unlink()


def _digest_of(sidecar: Path) -> str | None:
    """The digest written beside a file; None when there is none (or it is garbled: the
    file is checked again)."""
    try:
        return sidecar.read_bytes().decode("ascii").strip()
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        sidecar.unlink()
        return None


def whole_entry(data: bytes) -> bool:
    """Whether `data` parses as length-delimited protobuf fields ending exactly at its
    end, holding every field of ENTRY_FIELDS, none empty."""
    seen = set()
    at = 0
    while at < len(data):
        tag, at = _varint(data, at)
        if tag is None or tag & 7 != 2:  # every field of the entry is length-delimited
            return False
        length, at = _varint(data, at)
        if length is None or at + length > len(data):
            return False
        if length:
            seen.add(tag >> 3)
        at += length
    return seen >= ENTRY_FIELDS


def _varint(data: bytes, at: int) -> tuple[int | None, int]:
    value = shift = 0
    while at < len(data) and shift < 64:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7
    return None, at
