"""The base n-grams' file: read back exactly as counted, keyed by everything they are
made from, and counted again (never served, never an error) when it is damaged or not
theirs."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from model import ngram_cache
from model.codec import encode_turns
from model.languages import fit_base_ngrams
from model.ngram import ByteNGram
from model.ngram_cache import cache_key, cache_path, load_base_ngrams, read, write

CHATS = {
    "english": [["Hello there", "Hi! How are you?"], ["What is your name?", "I am a bot."]],
    "spanish": [["Hola, ¿qué tal?", "Muy bien, gracias."], ["¿Cómo te llamas?", "Soy un bot."]],
}
ORDER = 4


def small_base() -> ngram_cache.BaseNGrams:
    by_language = {name: [encode_turns(c) for c in chats] for name, chats in CHATS.items()}
    every = ByteNGram(ORDER).fit([ids for chats in by_language.values() for ids in chats])
    return fit_base_ngrams(every, by_language)


@pytest.fixture
def counted(monkeypatch):
    """The corpus' counting, replaced by a small one that says how often it ran."""
    calls = []

    def count(order):
        calls.append(order)
        return small_base()

    monkeypatch.setattr(ngram_cache, "count_base_ngrams", count)
    return calls


def test_the_file_reads_back_what_was_counted(tmp_path):
    base = small_base()
    path = tmp_path / "base.ngrams"
    write(path, "k", base)
    again = read(path, "k")
    assert again.names == base.names and again.order == base.order
    prompts = [encode_turns(["¿Qué tal, amigo mío?"]), encode_turns(["How are you, my friend?"])]
    assert again.detect(prompts).tolist() == base.detect(prompts).tolist() == [2, 1]
    for old, new in zip(base.ngrams, again.ngrams, strict=True):
        assert new.discounts == old.discounts
        for context in ([], list(b"Ho"), list(b"a bo"), list(b"zzz")):
            assert np.array_equal(new.distribution(context), old.distribution(context))
        for name in ("first", "n_succ", "backoff", "has", "sym", "share"):
            assert np.array_equal(getattr(new.tables(), name), getattr(old.tables(), name))
        # Read by mapping the file: the levels are views of its pages, never written.
        for level in new.levels:
            for array in (level.keys, level.counts, level.totals, level.types):
                if array is not None:
                    assert not array.flags.owndata and not array.flags.writeable


def test_a_start_reads_the_file_counted_at_the_first(tmp_path, counted, caplog):
    caplog.set_level(logging.INFO)
    first = load_base_ngrams.__wrapped__(ORDER, tmp_path)
    assert counted == [ORDER] and cache_path(tmp_path, ORDER).exists()
    assert "counting the base 4-grams" in caplog.text
    second = load_base_ngrams.__wrapped__(ORDER, tmp_path)  # another process
    assert counted == [ORDER]  # not counted again
    assert second is not first
    assert np.array_equal(second.ngrams[1].distribution([]), first.ngrams[1].distribution([]))


def test_the_key_changes_with_the_order_the_corpus_and_the_counting_code(monkeypatch, tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "english").mkdir(parents=True)
    topic = corpus / "english" / "greetings.yml"
    topic.write_text("conversations:\n- - Hello\n  - Hi\n")
    monkeypatch.setattr(ngram_cache, "corpus_dir", lambda: corpus)
    key = cache_key(9)
    assert cache_key(9) == key and cache_key(8) != key
    topic.write_text("conversations:\n- - Hello\n  - Hi there\n")
    edited = cache_key(9)
    assert edited != key
    code = tmp_path / "ngram_counts.py"
    code.write_text("# another way of counting\n")
    monkeypatch.setattr(ngram_cache.ngram_counts, "__file__", str(code))
    assert cache_key(9) != edited


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: raw[: len(raw) // 2],  # torn
        lambda raw: raw[:100] + bytes(len(raw) - 100),  # zeroed
        lambda raw: b"not a file of n-grams at all",
        lambda raw: b"",
        lambda raw: raw[:-10] + bytes([raw[-10] ^ 1]) + raw[-9:],  # one bit of a count
        lambda raw: raw[:60] + bytes([raw[60] ^ 1]) + raw[61:],  # one bit of the header
    ],
)
def test_a_damaged_file_is_counted_again_and_replaced(tmp_path, counted, caplog, damage):
    load_base_ngrams.__wrapped__(ORDER, tmp_path)
    path = cache_path(tmp_path, ORDER)
    path.write_bytes(damage(path.read_bytes()))
    caplog.set_level(logging.INFO)
    base = load_base_ngrams.__wrapped__(ORDER, tmp_path)
    assert counted == [ORDER, ORDER]
    assert "does not read back" in caplog.text and str(path) in caplog.text
    assert base.order == ORDER and read(path, cache_key(ORDER)).names == base.names


def test_a_file_of_another_key_is_never_served(tmp_path, counted):
    path = cache_path(tmp_path, ORDER)
    other = small_base()
    other.ngrams[0] = ByteNGram(ORDER).fit([encode_turns(["something else entirely"])])
    write(path, "another key", other)  # e.g. copied in by hand under the right name
    base = load_base_ngrams.__wrapped__(ORDER, tmp_path)
    assert counted == [ORDER]
    hello = list(b"Hell")
    assert np.array_equal(
        base.ngrams[0].distribution(hello), small_base().ngrams[0].distribution(hello)
    )
    assert read(path, cache_key(ORDER)) is not None  # replaced by the right one


def test_files_of_other_keys_go_when_a_new_one_is_written(tmp_path, counted):
    stale = tmp_path / f"{ngram_cache.PREFIX}{ORDER}-0123.npz"
    stale.write_bytes(b"old")
    unrelated = tmp_path / "notes.txt"
    unrelated.write_text("kept")
    other_order = tmp_path / f"{ngram_cache.PREFIX}{ORDER + 1}-4567.npz"  # serves other models
    other_order.write_bytes(b"theirs")
    load_base_ngrams.__wrapped__(ORDER, tmp_path)
    assert not stale.exists() and unrelated.exists() and other_order.exists()


def test_a_folder_that_cannot_be_written_serves_the_counted_tables(tmp_path, counted, caplog):
    blocked = tmp_path / "file"
    blocked.write_text("a file where the folder should be")
    base = load_base_ngrams.__wrapped__(ORDER, blocked / "cache")
    assert base.order == ORDER and counted == [ORDER]
    assert "could not be saved" in caplog.text


def test_a_run_reads_the_file_and_never_writes_one(tmp_path, counted, monkeypatch):
    """A training run (perhaps on another host sharing the store) must not replace the
    file the bot has mapped: it reads the bot's file, or counts its own in memory."""
    monkeypatch.setattr(ngram_cache.languages, "base_ngrams", lambda order: small_base())
    empty = tmp_path / "none"
    empty.mkdir()
    ngrams = ngram_cache.read_base_ngrams(ORDER, empty)
    assert ngrams.names == small_base().names
    assert list(empty.iterdir()) == []  # counted here, written nowhere
    kept = tmp_path / "kept"
    load_base_ngrams(ORDER, kept)  # the bot counts and writes it
    assert counted == [ORDER]
    before = {p.name: p.stat().st_mtime_ns for p in kept.iterdir()}
    read_back = ngram_cache.read_base_ngrams(ORDER, kept)
    assert counted == [ORDER]  # read, not counted again
    assert {p.name: p.stat().st_mtime_ns for p in kept.iterdir()} == before
    probe = [encode_turns(["Hola, ¿qué tal?"])]
    np.testing.assert_array_equal(
        read_back.ngrams[0].target_probs(probe), small_base().ngrams[0].target_probs(probe)
    )
