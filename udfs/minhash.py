"""MinHash signatures and LSH banding over whole batches of documents, bit-exact with `datasketch.MinHash`.

    sig = signatures(texts, ngram=5, num_perm=128, seed=1)      # (n_docs, 128) uint32
    keys = band_keys(sig, bands=16, rows=8)                       # (n_docs, 16) int64, one bucket key per band
    b, r = recall_param(0.8, 128)                                 # 16 x 8: fewest missed pairs under a candidate cap
    b, r = optimal_param(0.8, 128)                                # 9 x 13: datasketch's _optimal_param

A signature row equals `datasketch.MinHash(num_perm, seed, scheme).update_batch(shingles(text, ngram))` for the
word n-gram shingles of `udfs.normalise` (UTF-8 bytes; by default of the text with punctuation removed), hashed
with datasketch's `sha1_hash32` (the first four bytes of SHA-1, little-endian) and permuted with parameters drawn
from `np.random.RandomState(seed)`:

* `affine32` (datasketch >= 2.0 default): h' = fmix32(h); phv = (a * h' + b) mod 2^32, a odd.
* `legacy` (datasketch < 2.0): phv = ((a * h + b) mod 2^64 mod (2^61 - 1)) & (2^32 - 1), values stored as uint64.

A document without shingles (empty after normalisation) keeps the all-max signature, as in datasketch.

The batch is one UTF-8 buffer (normalised texts joined by newlines) with shingle byte ranges found by numpy, so no
Python object is made per shingle. With numba installed one compiled kernel hashes (SHA-1), permutes and
min-reduces; without it SHA-1 runs through hashlib over memoryview slices and the permutations through numpy.
Both paths give identical results (`LMR_MINHASH_BACKEND=numpy` forces the second). `exact_jaccard_batch` (candidate
verification) hashes shingles to 64 bits, keeps each document's set as its sorted distinct hashes (`shingle_sets`, once
per document) and intersects two sets in one merge (`jaccard_sets`, a compiled kernel); the numpy fallback computes
the same hash values, so sets made by workers with different backends still compare. `signatures_and_sets` makes
signatures and sets in one pass, its sets of SHA-1's first 8 bytes (computed there for the signature anyway);
Jaccard values are the same, but sets of the two kinds are never compared with each other.
"""
from __future__ import annotations

import hashlib
import os

import numpy as np

from udfs.normalise import normalise

MERSENNE_PRIME = (1 << 61) - 1
MAX_HASH32 = (1 << 32) - 1
SCHEMES = ("affine32", "legacy")


# ---- permutations and LSH parameters ---------------------------------------------------------------------------
def permutations(num_perm: int, seed: int, scheme: str = "affine32") -> tuple[np.ndarray, np.ndarray]:
    """The (a, b) permutation parameters datasketch draws for `MinHash(num_perm, seed, scheme=scheme)`."""
    gen = np.random.RandomState(seed)
    if scheme == "legacy":
        ab = np.array([(gen.randint(1, MERSENNE_PRIME, dtype=np.uint64), gen.randint(0, MERSENNE_PRIME, dtype=np.uint64))
                       for _ in range(num_perm)], dtype=np.uint64).T
        return ab[0].copy(), ab[1].copy()
    if scheme == "affine32":
        a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
        b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
        return a, b
    raise ValueError(f"unknown MinHash scheme {scheme!r} (use one of {', '.join(SCHEMES)})")


def signature_dtype(scheme: str):
    return np.uint64 if scheme == "legacy" else np.uint32


def _fp_fn_mass(threshold: float, b: int, r: int, nodes: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    # Gauss-Legendre on [0, t] and [t, 1]; exact here because the integrands are polynomials of degree b*r.
    s1 = threshold / 2 * (nodes + 1)
    s2 = threshold + (1 - threshold) / 2 * (nodes + 1)
    fp = threshold / 2 * np.sum(weights * (1 - (1 - s1 ** r) ** b))
    fn = (1 - threshold) / 2 * np.sum(weights * (1 - s2 ** r) ** b)
    return float(fp), float(fn)


def _check_threshold(threshold: float) -> None:
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")


def lsh_error_mass(threshold: float, bands: int, rows: int) -> tuple[float, float]:
    """(false-positive mass, false-negative mass) of banding `bands` x `rows` at `threshold`:
    the integrals of P(candidate | s) over s in [0, threshold] and of 1 - P(candidate | s) over [threshold, 1]."""
    _check_threshold(threshold)
    nodes, weights = np.polynomial.legendre.leggauss(bands * rows // 2 + 2)
    return _fp_fn_mass(threshold, bands, rows, nodes, weights)


def optimal_param(threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) with bands*rows <= num_perm minimising fp_weight * P(false positive mass below the
    threshold) + fn_weight * P(false negative mass above it), as datasketch's `MinHashLSH` chooses them.

    This is the right choice when candidates are not verified (every candidate pair becomes a duplicate, so both
    errors cost the same); with verification see `recall_param`."""
    _check_threshold(threshold)
    nodes, weights = np.polynomial.legendre.leggauss(num_perm // 2 + 2)
    best, opt = float("inf"), (0, 0)
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp, fn = _fp_fn_mass(threshold, b, r, nodes, weights)
            err = fp * fp_weight + fn * fn_weight
            if err < best:
                best, opt = err, (b, r)
    return opt


# Cap on the false-positive mass for `recall_param`. At 0.15 the banding chosen at threshold 0.8 and 128
# permutations is 16 x 8: P(candidate) 0.947 at J = 0.8 and 0.994 at 0.85, for 5.5x the false-positive mass of
# datasketch's balanced 9 x 13 (P 0.399 at 0.8) -- see bench/README.md for what it costs in wall time.
DEFAULT_MAX_FP_MASS = 0.15


def recall_param(threshold: float, num_perm: int, max_fp_mass: float = DEFAULT_MAX_FP_MASS) -> tuple[int, int]:
    """(bands, rows) with bands*rows <= num_perm minimising the false-negative mass above the threshold, among those
    whose false-positive mass below it is at most `max_fp_mass`; ties go to fewer bands (fewer band keys to shuffle),
    then fewer rows.

    For verified candidates (exact or estimated Jaccard checked against the threshold): a false positive of the
    banding is rejected by verification and costs only its check, a false negative is a duplicate that stays. The
    false-positive mass (the share of candidate pairs among pairs with similarity spread uniformly over
    [0, threshold]) is the cost proxy the cap bounds; 1 x num_perm (mass ~0) always satisfies a positive cap."""
    _check_threshold(threshold)
    if not max_fp_mass > 0:
        raise ValueError(f"max_fp_mass must be > 0, got {max_fp_mass}")
    nodes, weights = np.polynomial.legendre.leggauss(num_perm // 2 + 2)
    best, opt = (float("inf"),), (0, 0)
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp, fn = _fp_fn_mass(threshold, b, r, nodes, weights)
            if fp <= max_fp_mass and (fn, b, r) < best:
                best, opt = (fn, b, r), (b, r)
    return opt


def candidate_probability(s: float, bands: int, rows: int) -> float:
    """Probability that two documents with Jaccard similarity `s` share at least one band bucket."""
    return 1.0 - (1.0 - s ** rows) ** bands


# ---- batch layout ----------------------------------------------------------------------------------------------
def shingle_spans(norm_texts: list[str], ngram: int):
    """Concatenate normalised texts and locate every word n-gram shingle as a byte range.

    Returns (buf uint8, starts int64, ends int64, doc_offsets int64[n_docs + 1]): shingles of document i are
    `buf[starts[j]:ends[j]]` for j in doc_offsets[i]:doc_offsets[i+1]. Relies on normalised text having single
    spaces between words and no newline.
    """
    n_docs = len(norm_texts)
    buf = np.frombuffer("\n".join(norm_texts).encode("utf-8"), dtype=np.uint8)
    newlines = np.flatnonzero(buf == 10)
    doc_start = np.concatenate([[0], newlines + 1]).astype(np.int64)
    in_word = (buf != 32) & (buf != 10)
    prev_in = np.concatenate([[False], in_word[:-1]])
    next_in = np.concatenate([in_word[1:], [False]])
    w_start = np.flatnonzero(in_word & ~prev_in)
    w_end = np.flatnonzero(in_word & ~next_in) + 1
    w_doc = np.searchsorted(doc_start, w_start, side="right") - 1
    n_words = np.bincount(w_doc, minlength=n_docs).astype(np.int64)
    first_word = np.concatenate([[0], np.cumsum(n_words)[:-1]]).astype(np.int64)
    n_sh = np.where(n_words >= ngram, n_words - ngram + 1, np.minimum(n_words, 1))
    doc_offsets = np.concatenate([[0], np.cumsum(n_sh)]).astype(np.int64)
    sh_doc = np.repeat(np.arange(n_docs, dtype=np.int64), n_sh)
    k = np.arange(doc_offsets[-1], dtype=np.int64) - doc_offsets[:-1][sh_doc]
    fw = first_word[sh_doc]
    starts = w_start[fw + k].astype(np.int64)
    ends = w_end[fw + np.minimum(k + ngram - 1, n_words[sh_doc] - 1)].astype(np.int64)
    return buf, starts, ends, doc_offsets


# ---- hashing + permutation: numba kernel -------------------------------------------------------------------------
try:
    from numba import njit
except ImportError:  # the numpy/hashlib path below gives the same values
    njit = None

_M32 = np.uint64(0xFFFFFFFF)
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)  # FNV-1a 64 of shingles for exact sets (both backends)
_FNV_PRIME = np.uint64(0x100000001B3)
_MP = np.uint64(MERSENNE_PRIME)
_C1 = np.uint64(0x85EBCA6B)
_C2 = np.uint64(0xC2B2AE35)
_S16 = np.uint64(16)
_S13 = np.uint64(13)
_S32 = np.uint64(32)


def _sha1_words_py(buf, s, e, block, w):
    """(bytes 0-3, bytes 4-7) of SHA-1(buf[s:e]), each as a little-endian uint32, in int64 arithmetic (values stay
    below 2^36, no overflow). The first is datasketch.hashfunc.sha1_hash32; with the second it is the 64-bit
    shingle hash of `signatures_and_sets`' sets, which costs nothing more once the digest is made."""
    length = e - s
    h0, h1, h2, h3, h4 = 0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0
    n_blocks = (length + 8) // 64 + 1
    for blk in range(n_blocks):
        base = blk * 64
        for i in range(64):
            p = base + i
            if p < length:
                block[i] = buf[s + p]
            elif p == length:
                block[i] = 0x80
            else:
                block[i] = 0
        if blk == n_blocks - 1:
            bits = length * 8
            for i in range(8):
                block[63 - i] = (bits >> (8 * i)) & 0xFF
        for t in range(16):
            w[t] = (block[4 * t] << 24) | (block[4 * t + 1] << 16) | (block[4 * t + 2] << 8) | block[4 * t + 3]
        for t in range(16, 80):
            x = w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16]
            w[t] = ((x << 1) | (x >> 31)) & 0xFFFFFFFF
        a, b, c, d, ee = h0, h1, h2, h3, h4
        for t in range(80):
            if t < 20:
                f = (b & c) | ((~b) & d)
                k = 0x5A827999
            elif t < 40:
                f = b ^ c ^ d
                k = 0x6ED9EBA1
            elif t < 60:
                f = (b & c) | (b & d) | (c & d)
                k = 0x8F1BBCDC
            else:
                f = b ^ c ^ d
                k = 0xCA62C1D6
            tmp = ((((a << 5) | (a >> 27)) & 0xFFFFFFFF) + (f & 0xFFFFFFFF) + ee + k + w[t]) & 0xFFFFFFFF
            ee = d
            d = c
            c = ((b << 30) | (b >> 2)) & 0xFFFFFFFF
            b = a
            a = tmp
        h0 = (h0 + a) & 0xFFFFFFFF
        h1 = (h1 + b) & 0xFFFFFFFF
        h2 = (h2 + c) & 0xFFFFFFFF
        h3 = (h3 + d) & 0xFFFFFFFF
        h4 = (h4 + ee) & 0xFFFFFFFF
    # digest bytes 0-3 (h0, big-endian) and 4-7 (h1) each read little-endian
    return (((h0 & 0xFF) << 24) | (((h0 >> 8) & 0xFF) << 16) | (((h0 >> 16) & 0xFF) << 8) | (h0 >> 24),
            ((h1 & 0xFF) << 24) | (((h1 >> 8) & 0xFF) << 16) | (((h1 >> 16) & 0xFF) << 8) | (h1 >> 24))


if njit is not None:
    _sha1_words_nb = njit(cache=True)(_sha1_words_py)

    @njit(cache=True)
    def _minhash_kernel(buf, starts, ends, doc_offsets, a, b, legacy, out, h64):
        """Signatures into `out`; if h64 is not empty, also every shingle's SHA-1 bytes 0-7 (little-endian) there."""
        block = np.zeros(64, np.int64)
        w = np.zeros(80, np.int64)
        n_perm = a.shape[0]
        keep64 = h64.shape[0] > 0
        for d in range(doc_offsets.shape[0] - 1):
            for j in range(doc_offsets[d], doc_offsets[d + 1]):
                lo, hi = _sha1_words_nb(buf, starts[j], ends[j], block, w)
                hv = np.uint64(lo)
                if keep64:
                    h64[j] = hv | (np.uint64(hi) << _S32)
                if legacy:
                    for k in range(n_perm):
                        phv = ((a[k] * hv + b[k]) % _MP) & _M32
                        if phv < out[d, k]:
                            out[d, k] = phv
                else:
                    hv = hv ^ (hv >> _S16)
                    hv = (hv * _C1) & _M32
                    hv = hv ^ (hv >> _S13)
                    hv = (hv * _C2) & _M32
                    hv = hv ^ (hv >> _S16)
                    for k in range(n_perm):
                        phv = (a[k] * hv + b[k]) & _M32
                        if phv < out[d, k]:
                            out[d, k] = phv

    @njit(cache=True)
    def _sha1_many(buf, starts, ends, out):
        block = np.zeros(64, np.int64)
        w = np.zeros(80, np.int64)
        for j in range(starts.shape[0]):
            out[j] = _sha1_words_nb(buf, starts[j], ends[j], block, w)[0]

    _X1 = np.uint64(0xFF51AFD7ED558CCD)
    _X2 = np.uint64(0xC4CEB9FE1A85EC53)
    _S33 = np.uint64(33)

    @njit(cache=True)
    def _hash64_many(buf, starts, ends, out):
        """FNV-1a 64 of each byte range, finished with the murmur3 fmix64 avalanche (set membership only)."""
        for j in range(starts.shape[0]):
            h = _FNV_OFFSET
            for p in range(starts[j], ends[j]):
                h = (h ^ np.uint64(buf[p])) * _FNV_PRIME
            h = (h ^ (h >> _S33)) * _X1
            h = (h ^ (h >> _S33)) * _X2
            out[j] = h ^ (h >> _S33)

    @njit(cache=True)
    def _sorted_sets_kernel(h, offs, out, out_offs):
        """Each document's hashes h[offs[i]:offs[i+1]] sorted with repeats dropped, written to out (out_offs)."""
        n = 0
        out_offs[0] = 0
        for i in range(offs.shape[0] - 1):
            a = np.sort(h[offs[i]:offs[i + 1]])
            for x in range(a.shape[0]):
                if x == 0 or a[x] != a[x - 1]:
                    out[n] = a[x]
                    n += 1
            out_offs[i + 1] = n

    @njit(cache=True)
    def _jaccard_kernel(ha, oa, hb, ob, out):
        """Jaccard of the sorted, distinct hash sets ha[oa[i]:oa[i+1]] and hb[ob[i]:ob[i+1]] for every pair i
        (one merge)."""
        for i in range(out.shape[0]):
            x, xe, y, ye, inter = oa[i], oa[i + 1], ob[i], ob[i + 1], 0
            while x < xe and y < ye:
                if ha[x] < hb[y]:
                    x += 1
                elif hb[y] < ha[x]:
                    y += 1
                else:
                    inter += 1
                    x += 1
                    y += 1
            union = (oa[i + 1] - oa[i]) + (ob[i + 1] - ob[i]) - inter
            out[i] = 1.0 if union == 0 else inter / union


    @njit(cache=True)
    def _jaccard_indexed_kernel(h, offs, ia, ib, out):
        """_jaccard_kernel for pairs of sets held once in one store: pair i is h[offs[ia[i]]:offs[ia[i] + 1]]
        against h[offs[ib[i]]:offs[ib[i] + 1]]."""
        for i in range(out.shape[0]):
            x, xe, y, ye, inter = offs[ia[i]], offs[ia[i] + 1], offs[ib[i]], offs[ib[i] + 1], 0
            while x < xe and y < ye:
                if h[x] < h[y]:
                    x += 1
                elif h[y] < h[x]:
                    y += 1
                else:
                    inter += 1
                    x += 1
                    y += 1
            union = (xe - offs[ia[i]]) + (ye - offs[ib[i]]) - inter
            out[i] = 1.0 if union == 0 else inter / union


def backend() -> str:
    """'numba' (compiled kernel) or 'numpy' (hashlib + numpy); LMR_MINHASH_BACKEND=numpy forces the latter."""
    if njit is None or os.environ.get("LMR_MINHASH_BACKEND", "auto") == "numpy":
        return "numpy"
    return "numba"


# ---- hashing + permutation: numpy/hashlib fallback -----------------------------------------------------------------
def sha1_hash32_spans(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """sha1_hash32 of every byte range, as uint32."""
    if len(starts) == 0:
        return np.zeros(0, np.uint32)
    if backend() == "numba":
        out = np.zeros(len(starts), np.int64)
        _sha1_many(buf, starts, ends, out)
        return out.astype(np.uint32)
    return _digest_prefix(_sha1_digests(buf, starts, ends), np.uint32)


def _sha1_digests(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """(n, 20) uint8: SHA-1 of every byte range, through hashlib (the numpy backend)."""
    mv = memoryview(buf)
    sha1 = hashlib.sha1
    digests = b"".join([sha1(mv[s:e]).digest() for s, e in zip(starts.tolist(), ends.tolist())])
    return np.frombuffer(digests, np.uint8).reshape(-1, 20)


def _digest_prefix(digests: np.ndarray, dtype) -> np.ndarray:
    """The first itemsize bytes of each (n, 20) digest row, read little-endian as `dtype`."""
    dt = np.dtype(dtype).newbyteorder("<")
    return digests[:, :dt.itemsize].copy().view(dt).ravel().astype(dtype)


def _fmix32(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def _numpy_signatures(buf, starts, ends, doc_offsets, a, b, scheme, out, chunk_shingles: int = 16384, hv=None):
    hv = sha1_hash32_spans(buf, starts, ends) if hv is None else hv
    n_sh = np.diff(doc_offsets)
    nonempty = np.flatnonzero(n_sh > 0)
    i = 0
    while i < len(nonempty):
        # a run of documents with about chunk_shingles shingles keeps the (shingles x num_perm) block small
        lo = doc_offsets[nonempty[i]]
        j = int(np.searchsorted(doc_offsets[nonempty + 1], lo + chunk_shingles, side="right"))
        j = max(j, i + 1)
        docs = nonempty[i:j]
        hi = doc_offsets[docs[-1] + 1]
        h = hv[lo:hi]
        if scheme == "legacy":
            phv = (h.astype(np.uint64)[:, None] * a + b) % np.uint64(MERSENNE_PRIME) & np.uint64(MAX_HASH32)
        else:
            phv = _fmix32(h)[:, None] * a + b
        out[docs] = np.minimum.reduceat(phv, doc_offsets[docs] - lo, axis=0)
        i = j


# ---- public API -----------------------------------------------------------------------------------------------------
def signatures(texts, ngram: int = 5, num_perm: int = 128, seed: int = 1, scheme: str = "affine32",
               strip_punct: bool = True, normalised: bool = False, perms=None) -> np.ndarray:
    """MinHash signatures (n_docs, num_perm) of a batch of texts; see the module docstring for the contract."""
    norm = list(texts) if normalised else [normalise(t, strip_punct) for t in texts]
    a, b = perms if perms is not None else permutations(num_perm, seed, scheme)
    dtype = signature_dtype(scheme)
    out = np.full((len(norm), num_perm), MAX_HASH32, dtype=dtype)
    if not norm:
        return out
    return _signatures_of_spans(shingle_spans(norm, ngram), a, b, scheme, out)


def _signatures_of_spans(spans, a, b, scheme: str, out: np.ndarray, h64: np.ndarray | None = None) -> np.ndarray:
    """Signatures of the shingles `spans` into `out`; with `h64` (uint64, one per shingle) also each shingle's
    SHA-1 bytes 0-7 read little-endian there (`signatures_and_sets`)."""
    buf, starts, ends, doc_offsets = spans
    if backend() == "numba":
        out64 = out.astype(np.uint64)
        _minhash_kernel(buf, starts, ends, doc_offsets, a.astype(np.uint64), b.astype(np.uint64), scheme == "legacy",
                        out64, np.zeros(0, np.uint64) if h64 is None else h64)
        return out64.astype(out.dtype)
    hv = None
    if h64 is not None and len(starts):
        dig = _sha1_digests(buf, starts, ends)
        h64[:] = _digest_prefix(dig, np.uint64)
        hv = _digest_prefix(dig, np.uint32)
    _numpy_signatures(buf, starts, ends, doc_offsets, a, b, scheme, out, hv=hv)
    return out


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n_docs, bands) int64 bucket keys: a 64-bit mix of each band's `rows` values (and the band number).

    Equal bands always give equal keys; unequal bands, or the same values in two different bands, collide with
    probability about 2^-64, which at worst adds a candidate pair that verification then rejects. So a key alone
    names a bucket (jobs/dedup.py groups by it without the band number)."""
    if bands * rows > sig.shape[1]:
        raise ValueError(f"bands*rows = {bands * rows} exceeds num_perm = {sig.shape[1]}")
    s = sig[:, :bands * rows].astype(np.uint64).reshape(len(sig), bands, rows)
    h = np.broadcast_to((np.arange(bands, dtype=np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15),
                        (len(sig), bands)).copy()
    for j in range(rows):
        h = _fmix64((h ^ s[:, :, j]) * np.uint64(0xBF58476D1CE4E5B9))
    return h.view(np.int64)


def _fmix64(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """Row-wise fraction of equal signature values (the MinHash estimate of Jaccard similarity)."""
    return np.mean(np.asarray(sig_a) == np.asarray(sig_b), axis=-1)


def shingle_hashes64(norm_texts: list[str], ngram: int, spans=None) -> tuple[np.ndarray, np.ndarray]:
    """(hashes uint64, doc_offsets) of every shingle of each normalised text, for exact set comparisons: FNV-1a 64
    finished with fmix64; 64 bits make a collision inside one pair's shingle sets negligible (~n^2 / 2^65). Both
    backends give the same values (numba: one compiled loop; numpy: `_hash64_numpy`), so sets hashed by different
    workers compare correctly. `spans`: shingle_spans(norm_texts, ngram) if already made."""
    buf, starts, ends, offs = spans if spans is not None else shingle_spans(norm_texts, ngram)
    if len(starts) == 0:
        return np.zeros(0, np.uint64), offs
    if backend() == "numba":
        out = np.zeros(len(starts), np.uint64)
        _hash64_many(buf, starts, ends, out)
        return out, offs
    return _hash64_numpy(buf, starts, ends), offs


def _hash64_numpy(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, vector_bytes: int = 256) -> np.ndarray:
    """`_hash64_many` without numba: FNV-1a over byte k of every shingle at once (shingles ordered longest first,
    so the ones still going are a prefix), for the first `vector_bytes` bytes; the rare longer shingle (a whole
    short document) finishes in Python integers. Then `_fmix64`. numpy's uint64 arithmetic wraps, as FNV wants."""
    lens = (ends - starts).astype(np.int64)
    order = np.argsort(-lens, kind="stable")
    st, ln = starts[order].astype(np.int64), lens[order]
    h = np.full(len(st), _FNV_OFFSET, np.uint64)
    top = int(min(int(ln[0]) if len(ln) else 0, vector_bytes))
    n_active = np.searchsorted(-ln, -np.arange(top), side="left")  # shingles longer than k bytes
    for k in range(top):
        n = int(n_active[k])
        h[:n] = (h[:n] ^ buf[st[:n] + k].astype(np.uint64)) * _FNV_PRIME
    for i in np.flatnonzero(ln > vector_bytes).tolist():
        x, prime = int(h[i]), int(_FNV_PRIME)
        for b in buf[st[i] + vector_bytes:st[i] + ln[i]].tobytes():
            x = ((x ^ b) * prime) & 0xFFFFFFFFFFFFFFFF
        h[i] = np.uint64(x)
    out = np.empty_like(h)
    out[order] = _fmix64(h)
    return out


def signatures_and_sets(norm_texts: list[str], ngram: int = 5, num_perm: int = 128, seed: int = 1,
                        scheme: str = "affine32", perms=None):
    """(signatures(...), (hashes, offsets)) of the same normalised texts, locating and hashing their shingles once:
    the dedup keys pass makes both, so that verification needs no second read of the text.
    The sets are each document's sorted distinct shingle hashes, as `shingle_sets` makes them, but of another
    64-bit hash: SHA-1's bytes 0-7, of which the signature kernel already computes the first four (FNV-1a there
    would cost ~0.26 s per 9.5M shingles more; SHA-1 alone ~2 s, so `shingle_sets` keeps FNV-1a). Jaccard values
    are the same (a collision in either is ~n^2 / 2^65), but the two kinds of set must not be compared with each
    other: a dedup run takes all its values from one of them."""
    a, b = perms if perms is not None else permutations(num_perm, seed, scheme)
    out = np.full((len(norm_texts), num_perm), MAX_HASH32, dtype=signature_dtype(scheme))
    if not norm_texts:
        return out, (np.zeros(0, np.uint64), np.zeros(1, np.int64))
    spans = shingle_spans(norm_texts, ngram)
    h64 = np.zeros(len(spans[1]), np.uint64)
    sig = _signatures_of_spans(spans, a, b, scheme, out, h64)
    return sig, _sorted_sets(h64, spans[3])


def _sorted_sets(h: np.ndarray, offs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each document's hashes h[offs[i]:offs[i+1]] sorted, repeats dropped: (hashes, offsets)."""
    if backend() == "numba":
        out, out_offs = np.empty_like(h), np.empty_like(offs)
        _sorted_sets_kernel(h, offs, out, out_offs)
        return out[:out_offs[-1]], out_offs
    parts = [np.unique(h[offs[i]:offs[i + 1]]) for i in range(len(offs) - 1)]
    out_offs = np.concatenate([[0], np.cumsum([len(x) for x in parts])]).astype(np.int64)
    return (np.concatenate(parts) if parts else np.zeros(0, np.uint64)), out_offs


def shingle_sets(norm_texts: list[str], ngram: int, spans=None) -> tuple[np.ndarray, np.ndarray]:
    """(hashes uint64, offsets int64[n + 1]): the shingle set of each normalised text as its sorted, distinct
    64-bit shingle hashes (`shingle_hashes64`); text i owns hashes[offsets[i]:offsets[i+1]]. Built once per
    document, so a document in many candidate pairs is normalised and hashed once (`jaccard_sets` compares)."""
    return _sorted_sets(*shingle_hashes64(norm_texts, ngram, spans))


def jaccard_sets(ha: np.ndarray, oa: np.ndarray, hb: np.ndarray, ob: np.ndarray) -> np.ndarray:
    """Jaccard of pair i's two sets, ha[oa[i]:oa[i+1]] and hb[ob[i]:ob[i+1]] (each sorted and distinct, as
    `shingle_sets` makes them); 1.0 when both are empty."""
    n = len(oa) - 1
    if n != len(ob) - 1:
        raise ValueError(f"{n} sets against {len(ob) - 1}")
    out = np.empty(n, np.float64)
    if backend() == "numba":
        _jaccard_kernel(ha, np.asarray(oa, np.int64), hb, np.asarray(ob, np.int64), out)
        return out
    for i in range(n):
        a, b = ha[oa[i]:oa[i + 1]], hb[ob[i]:ob[i + 1]]
        inter = len(np.intersect1d(a, b, assume_unique=True))
        union = len(a) + len(b) - inter
        out[i] = 1.0 if union == 0 else inter / union
    return out


def jaccard_sets_indexed(h: np.ndarray, offs: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """`jaccard_sets` of pairs (ia[i], ib[i]) of sets stored once: set k is h[offs[k]:offs[k + 1]]. A set in many
    pairs is neither copied nor rebuilt."""
    ia, ib, offs = (np.asarray(x, np.int64) for x in (ia, ib, offs))
    if len(ia) != len(ib):
        raise ValueError(f"{len(ia)} first sets against {len(ib)} second sets")
    out = np.empty(len(ia), np.float64)
    if backend() == "numba":
        _jaccard_indexed_kernel(h, offs, ia, ib, out)
        return out
    for i in range(len(ia)):
        a, b = h[offs[ia[i]]:offs[ia[i] + 1]], h[offs[ib[i]]:offs[ib[i] + 1]]
        inter = len(np.intersect1d(a, b, assume_unique=True))
        union = len(a) + len(b) - inter
        out[i] = 1.0 if union == 0 else inter / union
    return out


def exact_jaccard_batch(texts_a, texts_b, ngram: int = 5, strip_punct: bool = True,
                        normalised: bool = False) -> np.ndarray:
    """Exact Jaccard of shingle sets, pair by pair (64-bit hashes of shingles stand in for the shingles); 1.0 for
    two documents without shingles."""
    norm_a = list(texts_a) if normalised else [normalise(t, strip_punct) for t in texts_a]
    norm_b = list(texts_b) if normalised else [normalise(t, strip_punct) for t in texts_b]
    if len(norm_a) != len(norm_b):
        raise ValueError(f"{len(norm_a)} texts against {len(norm_b)}")
    if not norm_a:
        return np.empty(0, np.float64)
    return jaccard_sets(*shingle_sets(norm_a, ngram), *shingle_sets(norm_b, ngram))


def bucket_pairs(keys: np.ndarray, cap: int, with_shared: bool = False):
    """Candidate pairs of LSH band keys in one process: (src, dst, bucket_size) as int64 row indices, src < dst,
    each pair once with the size of the largest bucket it came from (and, with `with_shared`, the number of buckets
    of two or more documents as a fourth value).

    `keys` is (documents, bands) with rows in the order of the documents' ids (row i = the i-th smallest id), so
    that the pairs are those of the Spark path (jobs/dedup.py): a bucket of up to `cap` documents gives all its
    pairs, a larger one a star from its smallest id. A bucket is a run of equal keys after one sort; no dict."""
    n, bands = keys.shape
    flat = np.ascontiguousarray(keys, dtype=np.int64).ravel()
    doc = np.repeat(np.arange(n, dtype=np.int64), bands)
    order = np.lexsort((doc, flat))               # by key, then by document
    k, d = flat[order], doc[order]
    keep = np.ones(len(k), bool)                  # a document twice in one bucket (a 64-bit key collision
    keep[1:] = (k[1:] != k[:-1]) | (d[1:] != d[:-1])  # across two of its bands) counts once
    k, d = k[keep], d[keep]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]]) if len(k) else np.zeros(0, np.int64)
    sizes = np.diff(np.r_[starts, len(k)])
    src, dst, size = [], [], []
    for s in np.unique(sizes[(sizes > 1) & (sizes <= cap)]):
        grid = d[starts[sizes == s][:, None] + np.arange(s)]   # (buckets, s), ids ascending along each row
        i, j = np.triu_indices(int(s), 1)
        src.append(grid[:, i].ravel())
        dst.append(grid[:, j].ravel())
        size.append(np.full(grid.shape[0] * len(i), s, np.int64))
    big = sizes > cap
    if big.any():
        first = np.repeat(starts[big], sizes[big])
        pos = np.concatenate([np.arange(st, st + sz) for st, sz in zip(starts[big], sizes[big])])
        rest = pos != first
        src.append(d[first[rest]])
        dst.append(d[pos[rest]])
        size.append(np.repeat(sizes[big], sizes[big])[rest])
    shared = int((sizes > 1).sum())
    if not src:
        none = np.zeros(0, np.int64)
        return (none, none, none, shared) if with_shared else (none, none, none)
    src, dst, size = np.concatenate(src), np.concatenate(dst), np.concatenate(size)
    code = src * n + dst
    order = np.lexsort((-size, code))             # per pair, its largest bucket first
    code, size = code[order], size[order]
    first = np.r_[True, code[1:] != code[:-1]]
    code, size = code[first], size[first]
    return (code // n, code % n, size, shared) if with_shared else (code // n, code % n, size)
