import math
from collections import Counter, defaultdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.codec import PAD, SEP, encode_text, encode_turns
from model.kneser_ney import MIN_DISCOUNT
from model.ngram import ALPHABET, ByteNGram, best_ngram

A, B, Z = ord("a"), ord("b"), ord("z")

# conversations over a few symbols, so that contexts repeat; each starts with SEP
symbols = st.sampled_from([A, B, ord("c"), 0, 255, SEP])
conversations = st.lists(symbols, max_size=12).map(lambda ids: [SEP, *ids])
corpora = st.lists(conversations, max_size=5)


def test_alphabet_is_bytes_and_sep():
    assert ALPHABET == 257
    assert ByteNGram(3).distribution([]).shape == (257,)


@settings(max_examples=60, deadline=None)
@given(corpus=corpora, order=st.integers(1, 5), context=st.lists(symbols, max_size=6))
def test_distribution_sums_to_one(corpus, order, context):
    model = ByteNGram(order).fit(corpus)
    seen = corpus[0][:order] if corpus else []
    for ctx in (context, [], [Z, Z, Z, Z], seen):
        p = model.distribution(ctx)
        assert abs(p.sum() - 1.0) < 1e-9
        assert (p > 0).all()


@settings(max_examples=40, deadline=None)
@given(train=corpora, test=st.lists(conversations, min_size=1, max_size=3), order=st.integers(1, 5))
def test_bits_per_byte_matches_prob(train, test, order):
    if sum(len(seq) - 1 for seq in test) == 0:
        test = [*test, [SEP, A]]
    model = ByteNGram(order).fit(train)
    logs = [
        -math.log2(model.prob(seq[max(0, i - order + 1) : i], seq[i]))
        for seq in test
        for i in range(1, len(seq))
    ]
    assert model.bits_per_byte(test) == pytest.approx(np.mean(logs), abs=1e-9)


def reference_prob(train, order, context, symbol):
    """Interpolated Kneser-Ney straight from its definition, with dicts and sets."""
    raw = Counter()  # k-gram -> times it ends at a target
    before = defaultdict(set)  # k-gram -> symbols (or "start") seen right before it
    for seq in train:
        for i in range(1, len(seq)):
            for k in range(1, min(order, i + 1) + 1):
                gram = tuple(seq[i - k + 1 : i + 1])
                raw[gram] += 1
                before[gram].add(seq[i - k] if i - k >= 0 else "start")

    def count(gram):
        return raw[gram] if len(gram) == order else len(before[gram])

    def discount(k):
        counts = [count(g) for g in raw if len(g) == k]
        n1, n2 = counts.count(1), counts.count(2)
        return MIN_DISCOUNT if n1 == 0 else min(max(n1 / (n1 + 2 * n2), MIN_DISCOUNT), 1.0)

    def p(h, k):
        if k == 0:
            return 1 / 257
        lower = p(h[1:], k - 1)
        follow = {g: count(g) for g in raw if len(g) == k and g[:-1] == h}
        total = sum(follow.values())
        if total == 0:
            return lower
        d, types = discount(k), sum(c > 0 for c in follow.values())
        return max(follow.get((*h, symbol), 0) - d, 0) / total + d * types / total * lower

    h = tuple(context[max(len(context) - order + 1, 0) :]) if order > 1 else ()
    return p(h, len(h) + 1)


@settings(max_examples=60, deadline=None)
@given(
    train=corpora,
    order=st.integers(1, 4),
    context=st.lists(symbols, max_size=5),
    symbol=symbols,
)
def test_matches_reference_implementation(train, order, context, symbol):
    model = ByteNGram(order).fit(train)
    expected = reference_prob(train, order, context, symbol)
    assert model.prob(context, symbol) == pytest.approx(expected, rel=1e-12)


def test_order_2_on_abab_by_hand():
    # SEP a b a b SEP; targets a b a b SEP (the leading SEP is context only)
    model = ByteNGram(2).fit([encode_turns(["abab"])])

    # Level 1, continuation counts N1+(. w): a after {SEP, b} = 2, b after {a} = 1,
    # SEP after {b} = 1; total 4 over 3 types. Count-of-counts n1 = 2, n2 = 1.
    d1 = 2 / (2 + 2 * 1)
    # Level 2, raw counts: (SEP a) 1, (a b) 2, (b a) 1, (b SEP) 1; n1 = 3, n2 = 1.
    d2 = 3 / (3 + 2 * 1)
    assert model.discounts == pytest.approx((d1, d2))

    def p1(count):
        return max(count - d1, 0) / 4 + d1 * 3 / 4 / 257

    # seen: P(b | a) = (c(a b) - D2) / c(a .) + D2 N1+(a .) / c(a .) P1(b), c(a .) = 2
    assert model.prob([A], B) == pytest.approx((2 - d2) / 2 + d2 * 1 / 2 * p1(1))
    # two continuations: P(SEP | b) = (1 - D2) / 2 + D2 * 2 / 2 * P1(SEP)
    assert model.prob([B], SEP) == pytest.approx((1 - d2) / 2 + d2 * 2 / 2 * p1(1))
    # backed off within a seen context: z never follows a, never occurs at all
    assert model.prob([A], Z) == pytest.approx(d2 * 1 / 2 * p1(0))
    # unseen context: the unigram level alone
    assert model.prob([Z], A) == pytest.approx(p1(2))
    assert model.prob([], A) == pytest.approx(p1(2))
    # only the last order-1 symbols matter
    assert model.prob([Z, B, A], B) == model.prob([A], B)


def test_fixed_discount_by_hand():
    model = ByteNGram(2, discount=0.5).fit([encode_turns(["abab"])])
    p1_b = (1 - 0.5) / 4 + 0.5 * 3 / 4 / 257
    assert model.prob([A], B) == pytest.approx((2 - 0.5) / 2 + 0.5 / 2 * p1_b)


def test_no_data_is_uniform():
    text = [encode_turns(["hello there", "hi!"])]
    assert ByteNGram(3).bits_per_byte(text) == pytest.approx(math.log2(257))
    assert ByteNGram(5).fit([]).bits_per_byte(text) == pytest.approx(math.log2(257))
    assert np.allclose(ByteNGram(4).distribution([A, B, SEP]), 1 / 257)


def test_repetitive_text_is_cheap():
    text = [encode_turns(["abcabc" * 20, "xyz" * 30] * 5)]
    model = ByteNGram(4).fit(text)
    assert model.bits_per_byte(text) < 0.5
    assert ByteNGram(1).fit(text).bits_per_byte(text) > 1.5  # a unigram can't see the pattern


def test_fit_does_not_cross_sequences():
    # Joined, "a b" would be followed by the next sequence's SEP.
    model = ByteNGram(3).fit([[SEP, A, B], [SEP, A, B]])
    assert np.array_equal(model.distribution([A, B]), model.distribution([]))


def test_scoring_does_not_cross_sequences():
    # Joined, the second sequence's "a" would be read after "b SEP", which predicts it well.
    model = ByteNGram(3, discount=0.5).fit([[SEP, A, B, SEP, A]])
    one, two = [SEP, A, B], [SEP, A]
    apart = (2 * model.bits_per_byte([one]) + model.bits_per_byte([two])) / 3
    assert model.bits_per_byte([one, two]) == pytest.approx(apart)
    assert model.prob([B, SEP], A) > model.prob([SEP], A)  # the test above would notice


def test_leading_sep_is_context_only():
    model = ByteNGram(2).fit([encode_turns(["ab"])])
    assert model.bits_per_byte([[SEP, A]]) == pytest.approx(-math.log2(model.prob([SEP], A)))
    with pytest.raises(ValueError, match="no symbols"):
        model.bits_per_byte([[SEP], []])


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        ByteNGram(0)
    with pytest.raises(ValueError):
        ByteNGram(2).fit([[SEP, A, PAD]])
    with pytest.raises(ValueError, match="start with SEP"):
        ByteNGram(2).fit([[A, B]])
    with pytest.raises(ValueError):
        ByteNGram(2).prob([A], PAD)
    with pytest.raises(ValueError):
        ByteNGram(2).distribution([PAD])


def test_best_ngram_matches_separate_models():
    talk = ["how are you?", "fine, and you?", "fine thanks", "what's your name?", "charbot"]
    train = [encode_turns(talk[i:] + talk[:i]) for i in range(5)]
    heldout = [encode_turns(["how are you?", "fine"]), [SEP, *encode_text("what's up")]]
    best, bits, scores = best_ngram(train, heldout, orders=[2, 3, 4])
    assert sorted(scores) == [2, 3, 4]
    for order, score in scores.items():
        assert score == pytest.approx(ByteNGram(order).fit(train).bits_per_byte(heldout))
    assert bits == scores[best] == min(scores.values())
