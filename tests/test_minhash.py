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
    assert normalise("  Hello,\u00a0\u00a0WORLD!\n\tＡＢＣ ﬁne  ") == "hello, world! abc fine"
    assert normalise("Straße") == "strasse"
    assert normalise("Hello, World! (it's)", strip_punct=True) == "hello world its"
    assert normalise(None) == "" and normalise("   ") == ""
    assert exact_key("A  b") == exact_key("a b") != exact_key("a b.")
    assert exact_key("a b.", strip_punct=True) == exact_key("A B", strip_punct=True)


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
