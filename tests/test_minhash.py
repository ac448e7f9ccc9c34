"""udfs.minhash / udfs.normalise against datasketch and hashlib (no Spark)."""
import hashlib
import random
import struct

import numpy as np
import pytest
from datasketch import MinHash
from datasketch.lsh import _optimal_param

from udfs import minhash as mh
from udfs.normalise import exact_key, jaccard, normalise, shingles

WORDS = ("the of and to in license software program you may copy distribute modify work terms conditions "
         "source code object form patent rights warranty Ünïcödé ﬁne ＡＢＣ 日本語のテキスト naïve café "
         "Straße ΣΊΣΥΦΟΣ x" + "y" * 70).split()


def _texts(n=150, seed=0):
    rng = random.Random(seed)
    fixed = ["", "   \n\t ", "one", "two words", "a b c d", "a b c d e", "a b c d e f", "A  B\u00a0C\nd   e"]
    return fixed + [" ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 90))) for _ in range(n)]


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("scheme,num_perm,seed", [("affine32", 128, 1), ("affine32", 64, 42), ("legacy", 128, 1),
                                                  ("legacy", 32, 7)])
def test_signatures_equal_datasketch(monkeypatch, backend, scheme, num_perm, seed):
    if backend == "numba":
        pytest.importorskip("numba")
    monkeypatch.setenv("LMR_MINHASH_BACKEND", "auto" if backend == "numba" else "numpy")
    assert mh.backend() == backend
    texts = _texts()
    sig = mh.signatures(texts, ngram=5, num_perm=num_perm, seed=seed, scheme=scheme)
    assert sig.shape == (len(texts), num_perm)
    for text, row in zip(texts, sig):
        m = MinHash(num_perm=num_perm, seed=seed, scheme=scheme)
        m.update_batch(shingles(text, 5))
        assert m.hashvalues.dtype == row.dtype
        np.testing.assert_array_equal(row, m.hashvalues, err_msg=repr(text))


def test_permutations_equal_datasketch():
    for scheme in ("affine32", "legacy"):
        a, b = mh.permutations(128, 3, scheme)
        pa, pb = MinHash(num_perm=128, seed=3, scheme=scheme).permutations
        np.testing.assert_array_equal(a, pa)
        np.testing.assert_array_equal(b, pb)
    with pytest.raises(ValueError):
        mh.permutations(8, 1, "affine64")


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_sha1_hash32_all_lengths(monkeypatch, backend):
    """Padding edge cases: 0..200 bytes cross the one-, two- and three-block boundaries of SHA-1."""
    if backend == "numba":
        pytest.importorskip("numba")
    monkeypatch.setenv("LMR_MINHASH_BACKEND", "auto" if backend == "numba" else "numpy")
    buf = np.frombuffer(bytes(random.Random(1).randrange(256) for _ in range(400)), np.uint8)
    ends = np.arange(201, dtype=np.int64)
    starts = np.zeros_like(ends) + 3
    got = mh.sha1_hash32_spans(buf, starts, ends + 3)
    want = [struct.unpack("<I", hashlib.sha1(bytes(buf[3:e + 3])).digest()[:4])[0] for e in ends]
    np.testing.assert_array_equal(got, np.array(want, np.uint32))


def test_shingle_spans_match_reference_shingles():
    texts = [normalise(t) for t in _texts(60, seed=5)]
    for n in (1, 3, 5):
        buf, starts, ends, offs = mh.shingle_spans(texts, n)
        raw = buf.tobytes()
        for i, t in enumerate(texts):
            got = [raw[s:e] for s, e in zip(starts[offs[i]:offs[i + 1]], ends[offs[i]:offs[i + 1]])]
            assert got == shingles(t, n), (n, t)


@pytest.mark.parametrize("threshold,num_perm", [(0.5, 64), (0.8, 128), (0.9, 128), (0.7, 256)])
def test_optimal_param_equals_datasketch(threshold, num_perm):
    assert mh.optimal_param(threshold, num_perm) == _optimal_param(threshold, num_perm, 0.5, 0.5)


def test_normalise_rules():
    # default: NFKC (full-width, ligature, no-break space), case fold, punctuation deleted, whitespace collapsed
    assert normalise("  Hello,\u00a0\u00a0WORLD!\n\tＡＢＣ ﬁne  ") == "hello world abc fine"
    assert normalise("  Hello,\u00a0\u00a0WORLD!\n\tＡＢＣ ﬁne  ", strip_punct=False) == "hello, world! abc fine"
    assert normalise("Straße") == "strasse"
    assert normalise("Hello, World! (it's)") == "hello world its"
    # Unicode punctuation (P*) goes too: curly quotes, dashes, ellipsis, guillemets, inverted marks, CJK marks
    marks = "\u201cQuoted\u201d \u2013 dash\u2014and\u2026 \u00abfr\u00bb \u00bfqu\u00e9? \u3010x\u3011\u3002"
    assert normalise(marks) == "quoted dashand fr qué x"
    # a token made only of punctuation disappears with its spaces; symbols (S*) are not punctuation and stay
    assert normalise("a - b -- c ... d") == "a b c d"
    assert normalise("1 + 1 = 2 $5") == "1 + 1 = 2 $5"
    # every kind of whitespace collapses, NFKC turns the ideographic and em spaces into plain ones
    assert normalise("a\u3000b\u2003c\r\n\td\u00a0 e") == "a b c d e"
    assert normalise(None) == "" and normalise("   ") == "" and normalise("?!...") == ""
    assert exact_key("A  b") == exact_key("a b") == exact_key("a b.") == exact_key("A, B!")
    assert exact_key("a b.", strip_punct=False) != exact_key("A B", strip_punct=False)
    assert exact_key("A  b", strip_punct=False) == exact_key("a b", strip_punct=False)


def test_punctuation_changes_do_not_change_shingles_by_default():
    text = "The licensee may copy, modify and distribute the work; see the terms (section 2) for details."
    repunct = ("The licensee may copy modify, and distribute the \u201cwork\u201d \u2013 see the terms section 2 "
               "for details!")
    assert shingles(repunct) == shingles(text) and jaccard(text, repunct) == 1.0
    assert jaccard(text, repunct, strip_punct=False) < 0.3      # the previous default: most shingles differ
    assert shingles(text.upper() + "  \n") == shingles(text)
    sig = mh.signatures([text, repunct])
    assert (sig[0] == sig[1]).all()
    sig = mh.signatures([text, repunct], strip_punct=False)
    assert mh.estimated_jaccard(sig[0], sig[1]) < 0.5


def _numeric_masses(threshold, b, r, n=200001):
    """FP / FN mass by the trapezoid rule on a fine grid (independent of the Gauss-Legendre code)."""
    def trap(lo, hi, f):
        s = np.linspace(lo, hi, n)
        y = f(s)
        return float((hi - lo) / (n - 1) * (y.sum() - (y[0] + y[-1]) / 2))

    return (trap(0, threshold, lambda s: 1 - (1 - s ** r) ** b),
            trap(threshold, 1, lambda s: (1 - s ** r) ** b))


def test_lsh_error_mass_matches_numeric_integration():
    for t, b, r in ((0.8, 9, 13), (0.8, 16, 8), (0.5, 25, 5), (0.9, 1, 128)):
        fp, fn = mh.lsh_error_mass(t, b, r)
        nfp, nfn = _numeric_masses(t, b, r)
        assert fp == pytest.approx(nfp, abs=1e-8) and fn == pytest.approx(nfn, abs=1e-8)


def test_recall_param_favours_recall_under_the_cap():
    # threshold 0.8, 128 permutations: the balanced choice 9 x 13 finds only 40% of the pairs at J = 0.8
    assert mh.optimal_param(0.8, 128) == (9, 13)
    assert mh.candidate_probability(0.8, 9, 13) < 0.4
    b, r = mh.recall_param(0.8, 128)
    assert (b, r) != (9, 13) and b * r <= 128
    assert (b, r) == (16, 8)
    assert mh.candidate_probability(0.8, b, r) >= 0.94
    assert mh.candidate_probability(0.85, b, r) >= 0.99
    fp, fn = mh.lsh_error_mass(0.8, b, r)
    assert fp <= mh.DEFAULT_MAX_FP_MASS
    assert fn < mh.lsh_error_mass(0.8, 9, 13)[1] / 20
    # it is the least false-negative mass among all bandings within the cap (brute force, numeric integration)
    feasible = []
    for bb in range(1, 129):
        for rr in range(1, 128 // bb + 1):
            nfp, nfn = _numeric_masses(0.8, bb, rr, n=4001)
            if nfp <= mh.DEFAULT_MAX_FP_MASS - 1e-4:
                feasible.append((nfn, bb, rr))
    assert min(feasible)[1:] == (b, r)


@pytest.mark.parametrize("threshold,num_perm", [(0.5, 64), (0.7, 128), (0.8, 128), (0.9, 128), (0.8, 256)])
def test_recall_param_cap_is_respected_and_monotone(threshold, num_perm):
    prev_fn = None
    for cap in (0.01, 0.05, 0.1, 0.15, 0.3):
        b, r = mh.recall_param(threshold, num_perm, cap)
        fp, fn = mh.lsh_error_mass(threshold, b, r)
        assert b * r <= num_perm and fp <= cap
        assert prev_fn is None or fn <= prev_fn          # a looser cap never misses more
        prev_fn = fn
    # at the default cap, the pairs at the threshold are found more often than with the balanced choice
    b, r = mh.recall_param(threshold, num_perm)
    assert mh.candidate_probability(threshold, b, r) > mh.candidate_probability(threshold,
                                                                               *mh.optimal_param(threshold, num_perm))
    with pytest.raises(ValueError):
        mh.recall_param(threshold, num_perm, 0.0)
    with pytest.raises(ValueError):
        mh.recall_param(1.0, num_perm)


def test_band_keys_and_estimates():
    rng = np.random.default_rng(0)
    sig = rng.integers(0, 2 ** 32, size=(3, 128), dtype=np.uint64).astype(np.uint32)
    sig[1, :13] = sig[0, :13]          # rows 0 and 1 share band 0 only
    keys = mh.band_keys(sig, 9, 13)
    assert keys.shape == (3, 9) and keys.dtype == np.int64
    assert keys[0, 0] == keys[1, 0]
    assert (keys[0, 1:] != keys[1, 1:]).all() and (keys[2] != keys[0]).all()
    assert len(set(keys[0].tolist())) == 9  # equal values in different bands do not collide
    with pytest.raises(ValueError):
        mh.band_keys(sig, 10, 13)
    assert mh.estimated_jaccard(sig[0], sig[1]) == pytest.approx(13 / 128)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_exact_jaccard_batch_equals_reference_on_both_backends(monkeypatch, backend):
    if backend == "numba":
        pytest.importorskip("numba")
    monkeypatch.setenv("LMR_MINHASH_BACKEND", "auto" if backend == "numba" else "numpy")
    rng = random.Random(11)
    texts = _texts(80, seed=4) + ["a b c d e a b c d e a b c d e", "a b c d e", "", "x, y. z!"]
    a = [rng.choice(texts) for _ in range(300)] + ["", "", "a b c d e f"]
    b = []
    for t in a[:300]:
        w = t.split()
        if w and rng.random() < 0.7:
            for _ in range(rng.randint(1, 4)):
                w[rng.randrange(len(w))] = rng.choice(WORDS)
        b.append(" ".join(w) if rng.random() < 0.9 else rng.choice(texts))
    b += ["", "a b c d e", "A, b c d e f!"]
    for strip in (True, False):
        got = mh.exact_jaccard_batch(a, b, 5, strip)
        want = [jaccard(x, y, 5, strip) for x, y in zip(a, b)]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert list(mh.exact_jaccard_batch(["", "", "a b c d e f"], ["", "a b c d e", "A, b c d e f!"])) == [1.0, 0.0, 1.0]
    hv, offs = mh.shingle_hashes64([normalise(t) for t in texts], 5)
    sets = [set(shingles(t, 5)) for t in texts]
    distinct = {sh for s_ in sets for sh in s_}
    by_hash = {}
    for i, t in enumerate(texts):
        for h, sh in zip(hv[offs[i]:offs[i + 1]].tolist(), shingles(t, 5)):
            assert by_hash.setdefault(h, sh) == sh                  # no two shingles share a hash
    assert len(by_hash) == len(distinct)


def test_exact_jaccard_batch_matches_reference_and_estimate_tracks_it():
    texts = _texts(40, seed=9)
    rng = random.Random(3)
    a = [t for t in texts if len(t.split()) > 30]
    b = []
    for t in a:
        w = t.split()
        for _ in range(3):
            w[rng.randrange(len(w))] = "zz" + str(rng.randrange(1000))
        b.append(" ".join(w))
    got = mh.exact_jaccard_batch(a, b, 5)
    want = [jaccard(x, y, 5) for x, y in zip(a, b)]
    np.testing.assert_allclose(got, want)
    est = mh.estimated_jaccard(mh.signatures(a, num_perm=256), mh.signatures(b, num_perm=256))
    assert np.abs(est - np.array(want)).mean() < 0.06
    assert mh.candidate_probability(0.95, 9, 13) > 0.99 > 0.01 > mh.candidate_probability(0.3, 9, 13)


def test_strip_punctuation_equals_one_translate_table():
    """The fast path (str.replace per punctuation character present, for non-ASCII text) deletes exactly what one
    str.translate over the whole P* table deletes, on mixed-script strings full of punctuation and lone surrogates."""
    from udfs.normalise import _punct_table, strip_punctuation

    rng = random.Random(11)
    pool = [chr(c) for c in list(range(32, 127)) + list(range(0xA0, 0x250)) + list(range(0x2000, 0x2070))
            + list(range(0x3000, 0x3020)) + [0xFF01, 0xFF0C, 0xFE50, 0x1F600, 0xD800, 0xDFFF, 0x10FFFF]]
    table = _punct_table()
    for n in range(400):
        t = "".join(rng.choice(pool) for _ in range(rng.randint(0, 60)))
        if n % 4 == 0:
            t = t.encode("ascii", "ignore").decode()       # ASCII inputs take str.translate
        assert strip_punctuation(t) == t.translate(table), repr(t)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_shingle_sets_are_sorted_distinct_hashes_and_jaccard_sets_counts_them(monkeypatch, backend):
    monkeypatch.setenv("LMR_MINHASH_BACKEND", backend)
    texts = [normalise(t) for t in _texts(60, seed=4)] + ["", "a", "a a a a a a a a a a"]
    hv, offs = mh.shingle_hashes64(texts, 5)
    sets, so = mh.shingle_sets(texts, 5)
    assert len(so) == len(texts) + 1 and so[0] == 0 and so[-1] == len(sets)
    for i in range(len(texts)):
        np.testing.assert_array_equal(sets[so[i]:so[i + 1]], np.unique(hv[offs[i]:offs[i + 1]]))
    assert so[-1] - so[-2] == 1 and so[-3] == so[-4]        # 10 x "a": one distinct shingle; "" none
    # both backends hash alike (sets from workers of either kind compare), long shingles included
    odd = texts + ["w" * 3000, "short doc " + "é" * 700]
    mine = mh.shingle_hashes64(odd, 5)[0]
    monkeypatch.setenv("LMR_MINHASH_BACKEND", "numba" if backend == "numpy" else "numpy")
    np.testing.assert_array_equal(mh.shingle_hashes64(odd, 5)[0], mine)
    monkeypatch.setenv("LMR_MINHASH_BACKEND", backend)
    rng = random.Random(2)
    ia = np.array([rng.randrange(len(texts)) for _ in range(200)])
    ib = np.array([rng.randrange(len(texts)) for _ in range(200)])

    def pack(idx):
        parts = [sets[so[i]:so[i + 1]] for i in idx]
        return np.concatenate(parts), np.concatenate([[0], np.cumsum([len(p) for p in parts])])

    got = mh.jaccard_sets(*pack(ia), *pack(ib))
    want = [jaccard(texts[a], texts[b], 5) for a, b in zip(ia, ib)]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("scheme", ["affine32", "legacy"])
def test_signatures_and_sets_hash_shingles_by_sha1_and_give_the_same_jaccard(monkeypatch, backend, scheme):
    """The keys pass's sets: each document's sorted distinct SHA-1 bytes 0-7 (little-endian) of its shingles, with
    the same signatures as `signatures`, alike on both backends, and the Jaccard values of `shingle_sets`'."""
    monkeypatch.setenv("LMR_MINHASH_BACKEND", backend)
    texts = [normalise(t) for t in _texts(40, seed=7)] + ["", "a", "a a a a a a a a a a", "w" * 3000,
                                                           "short doc " + "é" * 700]
    sig, (sets, so) = mh.signatures_and_sets(texts, 5, 64, 3, scheme)
    np.testing.assert_array_equal(sig, mh.signatures(texts, 5, 64, 3, scheme, normalised=True))
    assert len(so) == len(texts) + 1 and so[-1] == len(sets)
    for i, t in enumerate(texts):
        want = sorted({struct.unpack("<Q", hashlib.sha1(s).digest()[:8])[0]
                       for s in shingles(t, 5)}) if t else []
        assert sets[so[i]:so[i + 1]].tolist() == want, i
    monkeypatch.setenv("LMR_MINHASH_BACKEND", "numba" if backend == "numpy" else "numpy")
    other = mh.signatures_and_sets(texts, 5, 64, 3, scheme)
    np.testing.assert_array_equal(other[0], sig)
    np.testing.assert_array_equal(other[1][0], sets)
    fnv, fo = mh.shingle_sets(texts, 5)
    ia = np.arange(len(texts) - 1)
    ib = ia + 1
    np.testing.assert_array_equal(mh.jaccard_sets_indexed(sets, so, ia, ib), mh.jaccard_sets_indexed(fnv, fo, ia, ib))


def test_bucket_pairs_equal_a_dict_of_buckets():
    """The one-task LSH kernel gives the pairs of the Spark path's rule (all pairs in a bucket of up to `cap`
    documents, a star from the smallest beyond), each once with its largest bucket, checked against dict buckets
    on keys drawn from a few values (big buckets, pairs in several buckets, a document twice in one bucket)."""
    import numpy as np

    from udfs.minhash import bucket_pairs

    rng = np.random.default_rng(7)
    for trial in range(30):
        n, bands, cap = int(rng.integers(1, 60)), int(rng.integers(1, 6)), int(rng.integers(2, 6))
        keys = rng.integers(0, int(rng.integers(2, 40)), size=(n, bands)).astype(np.int64)
        buckets = {}
        for doc in range(n):
            for k in keys[doc]:
                buckets.setdefault(int(k), set()).add(doc)
        want = {}
        for ids in buckets.values():
            ids = sorted(ids)
            if len(ids) < 2:
                continue
            prs = ([(a, b) for x, a in enumerate(ids) for b in ids[x + 1:]] if len(ids) <= cap
                   else [(ids[0], b) for b in ids[1:]])
            for pr in prs:
                want[pr] = max(want.get(pr, 0), len(ids))
        src, dst, size, shared = bucket_pairs(keys, cap, with_shared=True)
        got = {(int(a), int(b)): int(s) for a, b, s in zip(src, dst, size)}
        assert len(got) == len(src) and got == want, trial
        assert shared == sum(len(v) > 1 for v in buckets.values())
        assert all(a < b for a, b in got)
    src, dst, size = bucket_pairs(np.zeros((0, 4), np.int64), 8)
    assert len(src) == len(dst) == len(size) == 0


def test_jaccard_sets_indexed_equals_jaccard_sets(monkeypatch):
    """Pairs by index into one store of sets give jaccard_sets' values, on both backends."""
    import numpy as np

    from udfs import minhash
    from udfs.minhash import jaccard_sets, jaccard_sets_indexed, shingle_sets

    words = "the river runs past the old mill and the mill wheel turns all day long".split()
    rng = np.random.default_rng(3)
    texts = [" ".join(rng.choice(words, size=int(rng.integers(0, 30)))) for _ in range(40)]
    h, offs = shingle_sets(texts, 3)
    ia, ib = rng.integers(0, 40, 300), rng.integers(0, 40, 300)

    def packed(idx):
        parts = [h[offs[i]:offs[i + 1]] for i in idx]
        return np.concatenate(parts), np.concatenate([[0], np.cumsum([len(p) for p in parts])])

    want = jaccard_sets(*packed(ia), *packed(ib))
    assert 0 < (want == 1.0).sum() < len(want) and (want < 0.5).any()
    for b in ("numba", "numpy"):
        monkeypatch.setattr(minhash, "backend", lambda b=b: b)
        assert np.array_equal(jaccard_sets_indexed(h, offs, ia, ib), want), b


def test_strip_punctuation_equals_the_unicode_table_on_any_script():
    """The numpy path for non-ASCII text and translate for ASCII delete exactly the Unicode P* characters, as
    str.translate with the full table does, on random text mixing scripts, punctuation, symbols, combining marks
    and lone surrogates."""
    import random
    import unicodedata

    from udfs.normalise import _punct_table, normalise, strip_punctuation

    table = _punct_table()
    rng = random.Random(3)
    pools = [range(0x20, 0x7f), range(0xa0, 0x250), range(0x300, 0x370), range(0x400, 0x500), range(0x2000, 0x2070),
             range(0x3000, 0x3040), range(0x4e00, 0x4e40), range(0xff00, 0xff60), range(0xd800, 0xd804),
             range(0x1f300, 0x1f320)]
    n_punct = 0
    for _ in range(3000):
        t = "".join(chr(rng.choice(rng.choice(pools))) for _ in range(rng.randrange(40)))
        assert strip_punctuation(t) == t.translate(table), repr(t)
        n_punct += sum(unicodedata.category(c).startswith("P") for c in t)
    assert n_punct > 1000
    assert normalise("«Ça va?» — 你好，世界。 Hello,\u00a0 WORLD!") == "ça va 你好世界 hello world"
