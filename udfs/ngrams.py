"""Benchmark decontamination by word n-gram overlap (pure Python, no Spark).

Text is compared after normalisation: lowercase, punctuation-insensitive (every character that is not a letter or a
digit is removed from a word), split on whitespace. A benchmark item contributes its n-grams (default n=13, as in
GPT-3); an item shorter than n words contributes its whole text as one shorter n-gram, unless it is shorter than
`min_words`, in which case it is too generic to test and is skipped.

Policies applied to a document with at least one match:
* `drop`: the whole document is removed.
* `excise` (GPT-3, Brown et al. 2020, appendix C): each matched n-gram is removed together with a `window`-character
  margin on both sides; the remaining pieces shorter than `min_piece` characters are dropped, and a document that
  splits into more than `max_pieces` pieces is dropped entirely.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

_WORD = re.compile(r"\S+")
_NOT_ALNUM = re.compile(r"[\W_]+")

DEFAULT_FIELDS = ("question", "query", "context", "passage", "premise", "hypothesis", "choices", "options",
                  "answer", "text")


def words_with_spans(text: str) -> tuple[list[str], list[int], list[int]]:
    """Normalised words of `text` and the character span of each in the original text."""
    words, starts, ends = [], [], []
    for m in _WORD.finditer(text or ""):
        w = _NOT_ALNUM.sub("", m.group().lower())
        if w:
            words.append(w)
            starts.append(m.start())
            ends.append(m.end())
    return words, starts, ends


def normalize_words(text: str) -> list[str]:
    return words_with_spans(text)[0]


def field_text(value) -> str | None:
    """A benchmark field as text: strings as is, lists/dicts of strings joined by newlines; numbers and booleans
    (answer indices, labels) do not count as text."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        parts = [field_text(v) for v in value]
        return "\n".join(p for p in parts if p) or None
    if isinstance(value, dict):
        parts = [field_text(v) for v in value.values()]
        return "\n".join(p for p in parts if p) or None
    return None


def item_segments(item: dict, fields=DEFAULT_FIELDS, segment: str = "item") -> list[str]:
    """The texts of one benchmark item that are matched: the configured fields present in the item, in the order
    of `fields`, joined into one text (`segment="item"`) or each on its own (`segment="field"`)."""
    parts = [t for t in (field_text(item.get(f)) for f in fields) if t and t.strip()]
    if segment == "field":
        return parts
    if segment != "item":
        raise ValueError(f"segment must be 'item' or 'field', got {segment!r}")
    return ["\n".join(parts)] if parts else []


def item_ngrams(segments: list[str], n: int = 13, min_words: int = 8) -> set[str]:
    """The n-grams (space-joined normalised words) of an item's segments; a segment shorter than `n` words is one
    n-gram of its full length, one shorter than `min_words` gives none."""
    grams: set[str] = set()
    for seg in segments:
        words = normalize_words(seg)
        if len(words) < max(1, min_words):
            continue
        k = min(n, len(words))
        for i in range(len(words) - k + 1):
            grams.add(" ".join(words[i:i + k]))
    return grams


def count_item_ngrams(segments: list[str], n: int = 13, min_words: int = 8) -> int:
    """Upper bound of len(item_ngrams(...)) without building the strings (to choose broadcast vs join)."""
    total = 0
    for seg in segments:
        w = len(normalize_words(seg))
        if w >= max(1, min_words):
            total += w - min(n, w) + 1
    return total


def gram_hash(gram: str) -> int:
    """A stable signed 64-bit hash of an n-gram (the join key when the benchmark set is too large to broadcast)."""
    return int.from_bytes(hashlib.blake2b(gram.encode("utf-8"), digest_size=8).digest(), "little", signed=True)


def doc_gram_hashes(text: str, lengths) -> set[int]:
    """Hashes of every n-gram of `text` for each n in `lengths`."""
    words = normalize_words(text)
    out: set[int] = set()
    for k in lengths:
        for i in range(len(words) - k + 1):
            out.add(gram_hash(" ".join(words[i:i + k])))
    return out


@dataclass(frozen=True)
class Match:
    start: int   # character span of the matched words in the original text
    end: int
    ngram: str
    benchmark: str
    item_id: str


def find_matches(text: str, lookup: dict, lengths) -> list[Match]:
    """Every occurrence in `text` of an n-gram in `lookup` (n-gram -> [(benchmark, item_id), ...]), for each n-gram
    length in `lengths`, ordered by position."""
    if not lookup:
        return []
    words, starts, ends = words_with_spans(text)
    found = []
    for k in sorted(set(lengths)):
        for i in range(len(words) - k + 1):
            g = " ".join(words[i:i + k])
            for bench, item in lookup.get(g, ()):
                found.append(Match(starts[i], ends[i + k - 1], g, bench, item))
    found.sort(key=lambda m: (m.start, m.end, m.benchmark, m.item_id))
    return found


def summarize_matches(matches: list[Match]) -> list[dict]:
    """One entry per (benchmark, item) in order of first occurrence: the first matched n-gram and how many
    matched n-gram occurrences the item has in the document."""
    out: dict[tuple, dict] = {}
    for m in matches:
        key = (m.benchmark, m.item_id)
        if key not in out:
            out[key] = {"benchmark": m.benchmark, "item_id": m.item_id, "ngram": m.ngram, "n_ngrams": 0}
        out[key]["n_ngrams"] += 1
    return list(out.values())


def excise_spans(text: str, spans, window: int = 200, min_piece: int = 200,
                 max_pieces: int = 10) -> tuple[str | None, int, str | None]:
    """Remove each span plus `window` characters either side (widened to whole words), then keep the pieces in
    between that are at least `min_piece` characters long, joined by a blank line.

    Returns (new_text, n_pieces, reason): new_text is None when the document is to be dropped, with reason
    `excise_too_many_pieces` (more than `max_pieces` pieces) or `excise_nothing_left` (all pieces too short)."""
    n = len(text)
    cuts = []
    for s, e in sorted(spans):
        a, b = max(0, s - window), min(n, e + window)
        while a > 0 and not text[a - 1].isspace():
            a -= 1
        while b < n and not text[b].isspace():
            b += 1
        if cuts and a <= cuts[-1][1]:
            cuts[-1][1] = max(cuts[-1][1], b)
        else:
            cuts.append([a, b])
    pieces, pos = [], 0
    for a, b in cuts + [[n, n]]:
        piece = text[pos:a].strip()
        if piece:
            pieces.append(piece)
        pos = b
    if len(pieces) > max_pieces:
        return None, len(pieces), "excise_too_many_pieces"
    kept = [p for p in pieces if len(p) >= min_piece]
    if not kept:
        return None, len(pieces), "excise_nothing_left"
    return "\n\n".join(kept), len(pieces), None


def decontaminate_text(text: str, lookup: dict, lengths, policy: str = "drop", window: int = 200,
                       min_piece: int = 200, max_pieces: int = 10) -> dict:
    """Apply a policy to one document. Returns {"action": "clean"|"excised"|"dropped", "text": new text or None,
    "reason": why dropped/excised, "matches": summarize_matches(...)}."""
    matches = find_matches(text or "", lookup, lengths)
    if not matches:
        return {"action": "clean", "text": text, "reason": None, "matches": []}
    summary = summarize_matches(matches)
    if policy == "drop":
        return {"action": "dropped", "text": None, "reason": "benchmark_overlap", "matches": summary}
    if policy != "excise":
        raise ValueError(f"policy must be 'drop' or 'excise', got {policy!r}")
    new_text, _, reason = excise_spans(text, [(m.start, m.end) for m in matches], window, min_piece, max_pieces)
    if new_text is None:
        return {"action": "dropped", "text": None, "reason": reason, "matches": summary}
    return {"action": "excised", "text": new_text, "reason": "benchmark_overlap_excised", "matches": summary}


# ---- benchmark files --------------------------------------------------------------------------------------------
class BenchmarkError(ValueError):
    """A benchmark file is missing or malformed (one-line message)."""


def benchmark_name(path: str) -> str:
    base = path.replace("\\", "/").rsplit("/", 1)[-1]
    for ext in (".jsonl", ".json", ".ndjson"):
        if base.endswith(ext):
            return base[: -len(ext)]
    return base


def read_benchmark(path: str, id_field: str = "id") -> list[dict]:
    """Items of one JSONL benchmark file; each gets `_id` (its `id_field`, else `line-<n>`) and `_line`."""
    items = []
    try:
        f = open(path, encoding="utf-8")
    except OSError as e:
        raise BenchmarkError(f"cannot read benchmark file {path}: {e.strerror}") from None
    with f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise BenchmarkError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise BenchmarkError(f"{path}:{lineno}: each line must be a JSON object")
            raw_id = obj.get(id_field)
            obj["_id"] = str(raw_id) if raw_id is not None else f"line-{lineno}"
            obj["_line"] = lineno
            items.append(obj)
    return items
