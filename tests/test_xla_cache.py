"""XLA's compiled code in the data dir: written by a real compile, kept per machine,
and a file TensorFlow could not load (torn, changed) removed before it is read."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from bot import xla_cache
from bot.logs import is_xla_load_chatter
from bot.xla_cache import DIGEST_SUFFIX, FLAGS, kept, machine_tag, tidy, trim, whole_entry


def field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (payloads under 128 bytes)."""
    return bytes([number << 3 | 2, len(payload)]) + payload


def entry(size: int = 60) -> bytes:
    return field(1, b"key") + field(2, b"hlo") + field(3, b"x" * size)


def test_an_entry_is_whole_only_with_every_field_up_to_its_end():
    assert whole_entry(entry())
    assert not whole_entry(entry()[:-1])  # torn
    assert not whole_entry(field(1, b"key") + field(2, b"hlo"))  # no executable
    assert not whole_entry(field(1, b"key") + field(2, b"hlo") + field(3, b""))
    assert not whole_entry(b"")
    assert not whole_entry(entry() + b"\x08\x01")  # a varint field: not an entry


def test_the_flag_is_set_for_the_first_compile_only(tmp_path, monkeypatch):
    monkeypatch.delenv(FLAGS, raising=False)
    with kept(tmp_path) as folder:
        assert folder == tmp_path / xla_cache.FOLDER / machine_tag() and folder.is_dir()
        assert os.environ[FLAGS] == f"{xla_cache.DIRECTORY_FLAG}={folder}"
    assert FLAGS not in os.environ  # child processes do not inherit it
    monkeypatch.setenv(FLAGS, "--tf_xla_enable_lazy_compilation=false")
    with kept(tmp_path):
        assert os.environ[FLAGS].startswith("--tf_xla_enable_lazy_compilation=false ")
    assert os.environ[FLAGS] == "--tf_xla_enable_lazy_compilation=false"


def test_an_operators_own_cache_folder_wins(tmp_path, monkeypatch):
    mine = f"{xla_cache.DIRECTORY_FLAG}=/srv/xla"
    monkeypatch.setenv(FLAGS, mine)
    with kept(tmp_path) as folder:
        assert folder is None and os.environ[FLAGS] == mine


def test_a_folder_that_cannot_be_made_compiles_without_it(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv(FLAGS, raising=False)
    (tmp_path / xla_cache.FOLDER).write_text("a file where the folder should be")
    with kept(tmp_path) as folder:
        assert folder is None and FLAGS not in os.environ
    assert "cannot be kept" in caplog.text


def test_only_the_newest_files_are_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(xla_cache, "LIMIT_BYTES", 250)
    for i in range(4):
        path = tmp_path / f"c{i}.pb"
        path.write_bytes(entry())  # ~73 bytes each
        os.utime(path, (1000 + i, 1000 + i))
    unfinished = tmp_path / "c9.pb1234.tmp"  # a write TensorFlow never finished
    unfinished.write_bytes(b"half")
    os.utime(unfinished, (1000, 1000))
    writing = tmp_path / "c8.pb5678.tmp"  # one it is writing now
    writing.write_bytes(b"half")
    tidy(tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.pb")) == ["c1.pb", "c2.pb", "c3.pb"]
    assert not unfinished.exists() and writing.exists()
    assert sorted(p.name for p in tmp_path.glob(f"*{DIGEST_SUFFIX}")) == [
        f"c{i}.pb{DIGEST_SUFFIX}" for i in (1, 2, 3)
    ]


def test_trim_keeps_the_limit_after_later_builds_and_leaves_young_files(tmp_path, monkeypatch):
    monkeypatch.setattr(xla_cache, "LIMIT_BYTES", 250)
    monkeypatch.setattr(xla_cache, "_folder", tmp_path)  # as kept() sets it
    for i in range(4):  # what earlier builds wrote
        path = tmp_path / f"c{i}.pb"
        path.write_bytes(entry())
        os.utime(path, (1000 + i, 1000 + i))
    writing = tmp_path / "new.pb"  # a build in another thread is writing this one
    writing.write_bytes(entry()[:10])
    trim()
    assert sorted(p.name for p in tmp_path.glob("*.pb")) == ["c1.pb", "c2.pb", "c3.pb", "new.pb"]
    monkeypatch.setattr(xla_cache, "_folder", None)  # no folder kept: nothing to do
    (tmp_path / "c1.pb").write_bytes(b"torn")
    trim()
    assert (tmp_path / "c1.pb").exists()


def test_a_flags_file_or_a_space_in_the_path_keeps_no_code(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(FLAGS, "/etc/xla.flags")  # XLA reads such a value as a file name
    with kept(tmp_path) as folder:
        assert folder is None and os.environ[FLAGS] == "/etc/xla.flags"
    monkeypatch.delenv(FLAGS)
    with kept(tmp_path / "my data") as folder:  # XLA's parser ends a value at a space
        assert folder is None and FLAGS not in os.environ
    assert "a space in it" in caplog.text


def test_a_garbled_digest_file_means_the_file_is_checked_again(tmp_path):
    path = tmp_path / "c.pb"
    path.write_bytes(entry())
    path.with_name(path.name + DIGEST_SUFFIX).write_bytes(b"\xff\xfe")
    tidy(tmp_path)
    assert path.exists()  # whole: kept, with its digest written again
    assert path.with_name(path.name + DIGEST_SUFFIX).read_text().strip().isalnum()


COMPILE = """
import sys
from pathlib import Path
import tensorflow as tf
from bot.logs import quiet_xla_loads
from bot.xla_cache import kept
with kept(Path(sys.argv[1])), quiet_xla_loads():
    f = tf.function(lambda x: tf.reduce_sum(x * x), jit_compile=True)
    print(float(f(tf.ones([3]))))
"""


def compile_in_a_child(data_dir, stderr: list | None = None) -> str:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop(FLAGS, None)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(COMPILE), str(data_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    if stderr is not None:
        stderr.append(done.stderr)
    return done.stdout


def test_a_compile_keeps_its_code_and_a_damaged_file_is_removed(tmp_path, caplog):
    assert compile_in_a_child(tmp_path).strip() == "3.0"
    folder = tmp_path / xla_cache.FOLDER / machine_tag()
    [written] = folder.glob("*.pb")
    assert whole_entry(written.read_bytes())
    printed = []
    assert compile_in_a_child(tmp_path, printed).strip() == "3.0"  # loaded from the file
    assert "XlaSerializedCacheEntry" not in printed[0] and "prefer-no-" not in printed[0]
    assert list(folder.glob("*.pb")) == [written]
    tidy(folder)  # found whole: its digest is kept beside it
    assert written.with_name(written.name + DIGEST_SUFFIX).exists()
    raw = bytearray(written.read_bytes())
    raw[-1] ^= 0xFF  # still parses: only the digest tells
    written.write_bytes(bytes(raw))
    torn = folder / "other.pb"
    torn.write_bytes(bytes(raw[: len(raw) // 2]))
    tidy(folder)
    assert not written.exists() and not torn.exists()
    assert caplog.text.count("not the whole compiled computation") == 2
    assert compile_in_a_child(tmp_path).strip() == "3.0"  # compiled again, kept again
    assert len(list(folder.glob("*.pb"))) == 1


TEXT_PROTO = (
    "E0000 00:00:1796282071.060549   10158 text_format.cc:378] Error parsing text-format "
    "tensorflow.XlaSerializedCacheEntry: 2:1: Expected identifier, got: 4\n"
)
AOT = (
    "E0000 00:00:1796282071.080936   10158 cpu_aot_loader.cc:220] Loading XLA:CPU AOT result. "
    "Target machine feature {} is not  supported on the host machine. Machine type used...\n"
)


def test_only_tensorflows_lines_about_loading_the_cache_are_left_out():
    assert is_xla_load_chatter(TEXT_PROTO)
    assert is_xla_load_chatter(AOT.format("+prefer-no-scatter"))
    assert is_xla_load_chatter(AOT.format("+prefer-no-gather"))
    assert not is_xla_load_chatter(AOT.format("+avx512fp16"))  # a CPU feature: a real risk
    assert not is_xla_load_chatter("E0000 00:00:1.0   1 text_format.cc:378] Error parsing x\n")
    assert not is_xla_load_chatter("2026-12-03 07:16:04,955 INFO bot.app: serving\n")
