"""The base n-grams, counted once and kept in a file: a start reads them in a fraction
of a second instead of reading the corpus and counting it (seconds of both cores).

    <folder>/base-ngrams-<order>-<key>.ngrams   every level of every base n-gram
                                                (model.languages.BaseNGrams), and the
                                                language detectors and their prior

The file is a fixed prefix (a magic line, the header's size, a CRC-32 of all that
follows), a JSON header (what each array is and where it starts) and the arrays' bytes,
each at a multiple of 64. It is read by mapping it into memory, not by copying it: the
levels (~116 MB for the base 12-grams) are file pages the kernel may drop and read again,
so the bot's resident memory holds only what it reads (a reply reads a few keys per
level; a chat-memory fit reads it all, once, and the bot hands those pages back after
the build: bot/resident.py). The tables the generator serves from are its own copy
(model.compiled_ngram).

The key is a hash of everything the tables are made from: the order, the corpus files
(names and bytes) and the source of the modules that read and count them. A changed
corpus, order or counting code therefore names another file and can never be served
from a stale one; the file repeats its key, so a renamed file is no shortcut either.
Files are written atomically; one that does not read back (damaged, truncated, another
layout) is counted again and replaced, with a log line, never an error. Files of other
keys (of the same order) are removed when a new one is written; files are only ever
replaced by a rename, never written over, so a mapped file never changes under a reader.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import mmap
import struct
import time
import zlib
from pathlib import Path

import numpy as np

from model import codec, corpus, languages, ngram, ngram_counts
from model.atomic import TMP_PREFIX, write_atomically
from model.corpus import corpus_dir
from model.kneser_ney import Level
from model.languages import BaseNGrams, count_base_ngrams
from model.ngram import ByteNGram

log = logging.getLogger(__name__)

FORMAT = 2  # the layout of the file below
MAGIC = b"charbot base n-grams\n"
ALIGN = 64  # each array starts at a multiple of this (any dtype's alignment)
DTYPES = {"<i4", "<i8", "<f4", "<f8"}  # what levels, keys and the prior are held as
PREFIX_LAYOUT = "<QI"  # after MAGIC: the header's size, a CRC-32 of everything after these
FIXED = len(MAGIC) + struct.calcsize(PREFIX_LAYOUT)  # where the JSON header starts
PREFIX = "base-ngrams-"
FOLDER = "ngram-cache"  # the folder the bot keeps them in, in its model store
# What the tables are computed by: an edit to any of them may change them.
SOURCES = (codec, corpus, languages, ngram, ngram_counts)


def cache_key(order: int) -> str:
    """The hash the tables of `order` are kept under (module docstring); reads the corpus
    files' bytes, not their YAML (milliseconds)."""
    h = hashlib.sha256(f"format {FORMAT} order {order}\n".encode())
    root = corpus_dir()
    for path in sorted(root.glob("*/*.yml")):
        data = path.read_bytes()
        h.update(f"{path.relative_to(root).as_posix()} {len(data)}\n".encode())
        h.update(data)
    for module in SOURCES:
        data = Path(module.__file__).read_bytes()
        h.update(f"{module.__name__} {len(data)}\n".encode())
        h.update(data)
    return h.hexdigest()[:32]


def cache_path(folder: str | Path, order: int, key: str | None = None) -> Path:
    return Path(folder) / f"{PREFIX}{order}-{key or cache_key(order)}.ngrams"


@functools.cache
def read_base_ngrams(order: int, folder: str | Path) -> BaseNGrams:
    """The base n-grams of `order` from the file in `folder` when it reads back, else
    counted in this process (model.languages) and never written: for a training run,
    perhaps on another host sharing the store, which must not replace the file the bot
    has mapped (the bot alone writes it, load_base_ngrams)."""
    key = cache_key(order)
    try:
        return read(cache_path(folder, order, key), key)
    except Exception as e:  # none yet, another version's, or unmappable: count our own
        log.info("no base %d-gram file to read in %s (%s); counting them", order, folder, e)
        return languages.base_ngrams(order)


@functools.cache
def load_base_ngrams(order: int, folder: str | Path) -> BaseNGrams:
    """The base n-grams of `order` from the file in `folder`; counted (model.languages)
    and saved there when there is none or it does not read back. Never raises for the
    file: a folder that cannot be written serves the counted tables all the same.
    Once per process and folder: every generator shares one copy (and the compiled
    tables of it: model.compiled_ngram)."""
    key = cache_key(order)
    path = cache_path(folder, order, key)
    try:
        return read(path, key)
    except FileNotFoundError:
        log.info("counting the base %d-grams (once per corpus and version): %s", order, path)
    except Exception as e:  # damaged or foreign: counted again, never served
        log.warning("the base n-gram file %s does not read back (%s); counting again", path, e)
    start = time.monotonic()
    ngrams = count_base_ngrams(order)
    try:
        write(path, key, ngrams)
    except OSError as e:
        log.warning(
            "the base n-grams could not be saved to %s (%s); counted at each start", path, e
        )
        return ngrams
    log.info("base %d-grams counted and saved in %.1f s", order, time.monotonic() - start)
    _remove_others(path, order)
    try:
        return read(path, key)  # mapped, as at every later start: the counted copy goes
    except Exception as e:  # gone meanwhile, or a file system that cannot map files
        log.warning("the base n-gram file %s does not read back (%s); serving the count", path, e)
        return ngrams


def _remove_others(path: Path, order: int) -> None:
    """Remove the files of other keys of this order (another order's tables serve models
    of that order: a rollback, another host sharing the store), and what writers that
    died left (an hour old: a writer in another process may be at work on a newer one)."""
    stale = time.time() - 3600
    for old in path.parent.iterdir():
        other = old.name.startswith(f"{PREFIX}{order}-") and old != path
        unfinished = old.name.startswith(f"{TMP_PREFIX}{PREFIX}")
        with contextlib.suppress(OSError):
            if other or (unfinished and old.stat().st_mtime < stale):
                old.unlink()


def write(path: Path, key: str, ngrams: BaseNGrams) -> None:
    """Save `ngrams` at `path` under `key`, atomically."""
    arrays: dict[str, np.ndarray] = {}
    discounts = {}
    for group, models in (("n", ngrams.ngrams), ("d", ngrams._detectors)):
        for i, model in enumerate(models):
            name = f"{group}{i}"
            discounts[name] = [level.discount for level in model.levels]
            for k, level in enumerate(model.levels, start=1):
                if level.keys is not None:
                    arrays[f"{name}_keys_{k}"] = level.keys.astype(np.int64)
                arrays[f"{name}_counts_{k}"] = level.counts
                arrays[f"{name}_totals_{k}"] = level.totals
                arrays[f"{name}_types_{k}"] = level.types
    if ngrams._prior is not None:
        arrays["prior"] = np.asarray(ngrams._prior, np.float64)
    index, chunks, offset = {}, [], 0
    for name, array in arrays.items():
        array = np.ascontiguousarray(array, array.dtype.newbyteorder("<"))
        pad = -offset % ALIGN
        chunks += [bytes(pad), array.tobytes()]
        index[name] = [array.dtype.str, list(array.shape), offset + pad]
        offset += pad + array.nbytes
    meta = {
        "format": FORMAT,
        "key": key,
        "names": ngrams.names,
        "ngrams": len(ngrams.ngrams),
        "detectors": len(ngrams._detectors),
        "discounts": discounts,
        "arrays": index,
    }
    header = json.dumps(meta).encode()
    body = header + bytes(_data_start(len(header)) - FIXED - len(header)) + b"".join(chunks)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, MAGIC + struct.pack(PREFIX_LAYOUT, len(header), zlib.crc32(body)) + body)


def read(path: Path, key: str) -> BaseNGrams:
    """The n-grams saved at `path`, mapped (module docstring); FileNotFoundError, or
    ValueError (or another error of reading it) when it is not a whole file of `key`."""
    with open(path, "rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)  # ValueError if empty
    try:
        return _read(mapped, key)
    except BaseException:
        with contextlib.suppress(BufferError):  # a view of it still alive: it goes with it
            mapped.close()
        raise


def _read(mapped: mmap.mmap, key: str) -> BaseNGrams:
    if len(mapped) < FIXED or mapped[: len(MAGIC)] != MAGIC:
        raise ValueError("not a file of base n-grams")
    size, crc = struct.unpack(PREFIX_LAYOUT, mapped[len(MAGIC) : FIXED])
    start = _data_start(size)
    if start > len(mapped):
        raise ValueError("torn: shorter than its header")
    with memoryview(mapped) as view:
        if zlib.crc32(view[FIXED:]) != crc:
            raise ValueError("damaged: it does not match its checksum")
    meta = json.loads(mapped[FIXED : FIXED + size])
    if meta.get("format") != FORMAT or meta.get("key") != key:
        raise ValueError(f"format {meta.get('format')!r}, key {meta.get('key')!r}")
    arrays = {name: _array(mapped, start, *entry) for name, entry in meta["arrays"].items()}
    discounts = meta["discounts"]
    ngrams = [_model(arrays, f"n{i}", discounts[f"n{i}"]) for i in range(meta["ngrams"])]
    detectors = [_model(arrays, f"d{i}", discounts[f"d{i}"]) for i in range(meta["detectors"])]
    prior = arrays.get("prior")
    if len(meta["names"]) != len(ngrams) or (detectors and len(detectors) != len(ngrams) - 1):
        raise ValueError("the names, n-grams and detectors do not match")
    if detectors and (prior is None or prior.shape != (len(detectors),)):
        raise ValueError("the detectors' prior does not match them")
    return BaseNGrams(ngrams, meta["names"], detectors, prior)


def _data_start(header_size: int) -> int:
    """Where the arrays start after a header of `header_size` bytes."""
    return -(-(FIXED + header_size) // ALIGN) * ALIGN


def _array(mapped: mmap.mmap, start: int, dtype: str, shape: list, offset: int) -> np.ndarray:
    """One array of the file: a read-only view of its mapped bytes."""
    if dtype not in DTYPES or offset < 0 or offset % ALIGN or len(shape) != 1 or shape[0] < 0:
        raise ValueError(f"an array of {dtype} {shape} at {offset} is not one it writes")
    count = shape[0]
    if start + offset + count * np.dtype(dtype).itemsize > len(mapped):
        raise ValueError("torn: an array runs past the end")
    return np.frombuffer(mapped, dtype=dtype, count=count, offset=start + offset)


def _model(f: dict[str, np.ndarray], name: str, discounts: list[float]) -> ByteNGram:
    """One n-gram's levels, checked to fit together (sizes, sorted keys)."""
    levels = []
    contexts = 1  # level k's contexts are the (k-1)-grams: one (the empty one) at k = 1
    for k, discount in enumerate(discounts, start=1):
        keys = f[f"{name}_keys_{k}"] if k > 1 else None
        grams = ngram_counts.RADIX if keys is None else keys.size  # k = 1: every symbol
        level = Level(
            keys=keys,
            counts=f[f"{name}_counts_{k}"],
            totals=f[f"{name}_totals_{k}"],
            types=f[f"{name}_types_{k}"],
            discount=float(discount),
        )
        fits = (
            level.counts.size == grams + 1
            and level.totals.size == level.types.size == contexts + 1
            and 0.0 < level.discount <= 1.0
        )
        if keys is not None and keys.size:
            fits = fits and bool(np.all(np.diff(keys) > 0)) and keys[0] >= 0
            fits = fits and bool(keys[-1] // ngram_counts.RADIX < contexts)
        if not fits:
            raise ValueError(f"{name}: level {k} does not fit together")
        levels.append(level)
        contexts = grams
    return ByteNGram.of_levels(levels)
