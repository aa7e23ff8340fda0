"""The byte codec: every string encodes, every id sequence decodes to valid text."""

from hypothesis import given
from hypothesis import strategies as st

from model.codec import (
    PAD,
    SEP,
    VOCAB_SIZE,
    decode,
    encode_prompt,
    encode_text,
    encode_transcript,
    encode_turns,
)


@given(st.text())
def test_any_text_round_trips(text):
    ids = encode_text(text)
    assert all(0 <= i < 256 for i in ids)
    assert decode(ids) == text


@given(st.lists(st.integers(min_value=0, max_value=VOCAB_SIZE - 1), max_size=200))
def test_any_id_sequence_decodes_to_valid_text_without_separator(ids):
    text = decode(ids)
    text.encode("utf-8")  # raises on lone surrogates: decoded text is always valid
    # SEP and PAD ids add nothing. (chr(SEP) itself, "Ā", is a character bytes C4 80
    # decode to, so the text is compared, not searched for it.)
    assert text == decode([i for i in ids if i not in (SEP, PAD)])
    assert decode([SEP, PAD]) == ""
    # Nothing is invented: the text's bytes are a subsequence of the byte ids.
    data = bytes(i for i in ids if i < 256)
    it = iter(data)
    assert all(b in it for b in text.encode("utf-8"))


def test_the_character_numbered_like_sep_decodes_from_its_bytes():
    assert decode([0xC4, SEP, 0x80]) == decode([*"Ā".encode()]) == "Ā" == chr(SEP)


def test_broken_multibyte_sequences_are_dropped_not_shown():
    ni = "你".encode()  # three bytes
    assert decode([*b"a", ni[0], ni[1], *b"b"]) == "ab"
    assert decode([ni[1], ni[2]]) == ""
    assert decode([*ni, SEP, PAD, *"😀".encode()]) == "你😀"


def test_what_telegram_users_send_encodes():
    long = ("你好😀 مرحبا \x00\x07\u200d" * 400)[:4096]
    assert len(long) == 4096
    assert decode(encode_text(long)) == long
    # A lone surrogate is not valid Unicode; it becomes '?' rather than an error.
    assert decode(encode_text("a\ud800b")) == "a?b"


def test_turns_are_separated_and_the_prompt_is_bounded():
    ids = encode_turns(["hi", "你好"])
    assert ids == [SEP, *b"hi", SEP, *"你好".encode(), SEP]
    turns = [f"turn number {i}" for i in range(100)]
    prompt = encode_prompt(turns, 64)
    assert len(prompt) <= 64
    assert prompt[0] == SEP and prompt[-1] == SEP  # starts at a whole turn, ends with SEP
    assert decode(prompt[1:-1]).endswith("turn number 99")
    # One turn larger than the budget still leaves the model its last bytes.
    huge = encode_prompt(["x" * 1000], 64)
    assert len(huge) == 64 and huge[-1] == SEP


def test_transcript_mask_marks_only_human_turns():
    ids, mask = encode_transcript([("ab", True), ("cd", False), ("e", True)])
    assert ids.tolist() == [SEP, *b"ab", SEP, *b"cd", SEP, *b"e", SEP]
    assert mask.tolist() == [False, True, True, True, False, False, False, True, True]
