"""A byte-level BPE trained on the corpus itself, loadable as a `tiktoken.Encoding`.

Training (GPT-2 style):
1. split text into pre-tokens with a GPT-style regex (default: the cl100k one) and count each distinct pre-token's
   UTF-8 bytes (`count_pretokens`; the Spark job sums these counts over partitions);
2. start from the 256 single bytes (rank = byte value) and repeatedly merge the most frequent adjacent pair,
   keeping pair counts up to date incrementally (only the words that contain the merged pair are touched) and
   picking the best pair from a lazy max-heap. Ties go to the smaller (left bytes, right bytes), so the result
   depends only on the counts: deterministic for a given corpus.

The merged token's rank is its merge order, which is what tiktoken expects ("ranks correspond to merge
priority"). `<|endoftext|>` takes the id after the last rank, so `vocab_size` = 256 + merges + 1.
Every byte is a token, so any byte string (valid UTF-8 or not) encodes and decodes back exactly.

File format (`save_bpe` / `load_bpe`): one JSON object
`{"format": "lmrefinery-bpe-v1", "name", "pat_str", "special_tokens", "vocab_size", "ranks_sha256",
  "ranks": [base64 of token bytes, in rank order]}`.
"""
from __future__ import annotations

import base64
import hashlib
import heapq
import json
import os
from collections import Counter, defaultdict

from udfs.token_format import CL100K_PAT, ENDOFTEXT, R50K_PAT, TokenizerError, serialize_ranks

FORMAT = "lmrefinery-bpe-v1"
PATTERNS = {"cl100k": CL100K_PAT, "gpt2": R50K_PAT}

_compiled: dict = {}


def _regex(pat_str: str):
    import regex

    rx = _compiled.get(pat_str)
    if rx is None:
        rx = _compiled[pat_str] = regex.compile(pat_str)
    return rx


def count_pretokens(texts, pat_str: str = CL100K_PAT) -> Counter:
    """Counter of pre-token UTF-8 bytes over `texts` (None entries skipped)."""
    rx = _regex(pat_str)
    counts: Counter = Counter()
    for text in texts:
        if text:
            counts.update(rx.findall(text))
    return Counter({k.encode("utf-8", "surrogatepass"): v for k, v in counts.items()})


def train_bpe(texts, vocab_size: int = 8192, pat_str: str = CL100K_PAT, min_frequency: int = 2,
              name: str = "lmr_bpe") -> dict:
    """Train on an iterable of strings; see `train_bpe_from_counts`."""
    return train_bpe_from_counts(count_pretokens(texts, pat_str), vocab_size, pat_str, min_frequency, name)


def train_bpe_from_counts(counts: dict[bytes, int], vocab_size: int = 8192, pat_str: str = CL100K_PAT,
                          min_frequency: int = 2, name: str = "lmr_bpe") -> dict:
    """Learn merges from pre-token byte counts until `vocab_size` (incl. 256 bytes and `<|endoftext|>`) is reached
    or no pair occurs `min_frequency` times. Returns the dict `save_bpe` writes (ranks as bytes -> rank)."""
    if vocab_size < 257:
        raise ValueError("vocab_size must be at least 257 (256 bytes + <|endoftext|>)")
    token_bytes = [bytes([b]) for b in range(256)]
    ranks = {t: i for i, t in enumerate(token_bytes)}
    # distinct pre-tokens in a fixed order, so that the whole run is reproducible
    items = sorted(counts.items())
    words = [list(w) for w, _ in items]
    freqs = [f for _, f in items]

    pair_counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for wi, w in enumerate(words):
        f = freqs[wi]
        for p in zip(w, w[1:]):
            pair_counts[p] += f
            where[p].add(wi)

    def entry(p, c):
        return (-c, token_bytes[p[0]], token_bytes[p[1]], p)

    heap = [entry(p, c) for p, c in pair_counts.items()]
    heapq.heapify(heap)
    n_merges = vocab_size - 256 - 1
    merges = 0
    while merges < n_merges and heap:
        neg, _, _, pair = heapq.heappop(heap)
        cur = pair_counts.get(pair, 0)
        if cur != -neg:  # stale entry: the true count is lower; re-queue it with that count
            if cur > 0:
                heapq.heappush(heap, entry(pair, cur))
            continue
        if cur < min_frequency:
            break
        a, b = pair
        merged = token_bytes[a] + token_bytes[b]
        new_id = ranks.get(merged)
        if new_id is None:
            new_id = len(token_bytes)
            token_bytes.append(merged)
            ranks[merged] = new_id
            merges += 1
        # else: the same bytes were already made by another merge; reuse that token, spend no vocab slot

        for wi in where.pop(pair, ()):
            w = words[wi]
            if len(w) < 2:
                continue
            out, i, changed = [], 0, False
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(new_id)
                    i += 2
                    changed = True
                else:
                    out.append(w[i])
                    i += 1
            if not changed:
                continue  # a stale index: the pair left this word in an earlier merge
            f = freqs[wi]
            delta = Counter(zip(out, out[1:]))
            delta.subtract(Counter(zip(w, w[1:])))
            for p, d in delta.items():
                if d == 0:
                    continue
                c = pair_counts[p] + d * f
                if c:
                    pair_counts[p] = c
                else:
                    del pair_counts[p]
                if d > 0:
                    where[p].add(wi)
                    heapq.heappush(heap, entry(p, c))
            words[wi] = out
        pair_counts.pop(pair, None)

    return {"format": FORMAT, "name": name, "pat_str": pat_str, "ranks": ranks,
            "special_tokens": {ENDOFTEXT: len(token_bytes)}, "vocab_size": len(token_bytes) + 1,
            "ranks_sha256": hashlib.sha256(serialize_ranks(ranks)).hexdigest()}


def save_bpe(bpe: dict, path: str) -> str:
    """Write the trained tokenizer as one JSON file (atomically); returns the path."""
    ranks = bpe["ranks"]
    ordered = sorted(ranks.items(), key=lambda kv: kv[1])
    if [r for _, r in ordered] != list(range(len(ordered))):
        raise ValueError("ranks must be 0..n-1")
    doc = {"format": FORMAT, "name": bpe["name"], "pat_str": bpe["pat_str"],
           "special_tokens": bpe["special_tokens"], "vocab_size": bpe["vocab_size"],
           "ranks_sha256": hashlib.sha256(serialize_ranks(ranks)).hexdigest(),
           "ranks": [base64.b64encode(t).decode("ascii") for t, _ in ordered]}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f)
    os.replace(tmp, path)
    return path


def load_bpe(path: str) -> dict:
    """Read a `save_bpe` file, checking its format and the ranks hash."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise TokenizerError(f"cannot read trained BPE file {path}: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise TokenizerError(f"{path} is not a trained BPE file (format {FORMAT})")
    ranks = {base64.b64decode(t): i for i, t in enumerate(doc["ranks"])}
    digest = hashlib.sha256(serialize_ranks(ranks)).hexdigest()
    if digest != doc["ranks_sha256"]:
        raise TokenizerError(f"{path}: ranks do not match their sha256 (corrupt file)")
    return {"format": FORMAT, "name": doc["name"], "pat_str": doc["pat_str"], "ranks": ranks,
            "special_tokens": {k: int(v) for k, v in doc["special_tokens"].items()},
            "vocab_size": int(doc["vocab_size"]), "ranks_sha256": digest}


def encoding(bpe: dict):
    """A `tiktoken.Encoding` from a trained (or loaded) BPE dict."""
    import tiktoken

    enc = tiktoken.Encoding(bpe["name"], pat_str=bpe["pat_str"], mergeable_ranks=bpe["ranks"],
                            special_tokens=bpe["special_tokens"])
    enc.lmr_ranks_sha256 = bpe["ranks_sha256"]
    return enc
