"""Heuristic document quality filters: Gopher repetition, Gopher quality, C4 and FineWeb rules, as pure functions.

    from udfs.quality import check_quality
    r = check_quality(text)                  # all four families with their published thresholds
    r.reason    # None when kept, else the first failing rule, e.g. "gopher_quality:stop_words"
    r.signals   # measured values, e.g. {"dup_para_frac": 0.0, ..., "word_count": 41.0}
    r.text      # the text after C4 line cleaning (the input text when C4 is disabled)

`check_quality(text, conf)` takes the `filter.quality` config section: one mapping per family, evaluated in the
order of `DEFAULT_QUALITY_CONF` (gopher_repetition, gopher_quality, c4, fineweb, as in FineWeb's pipeline); C4
rewrites the text and FineWeb sees the cleaned text. Missing keys take the defaults below; an unknown key raises
ValueError. A threshold set to None (YAML `null`) disables that rule.

`check_quality` stops at the first failing rule, so `signals` holds only the values measured up to that rule (all
of them when the document is kept). `annotate(text, conf)` measures every signal of every family whatever fails
first, and `decide(signals, conf)` gives the decision for other thresholds from those signals (`rules` lists the
document-level rules as data). `SIGNAL_NAMES` lists every key that can appear, for a fixed output schema.
`DOMAIN_PRESETS` holds the per-domain overrides (books, code, docs, legal, reference) that `filter.domains.<d>.preset`
selects.

Thresholds and rule semantics follow datatrove 0.10.1 (`GopherRepetitionFilter`, `GopherQualityFilter`,
`C4QualityFilter`, `FineWebQualityFilter`), whose source was read and whose decisions `tests/test_quality.py`
compares with ours. Words are datatrove's tokens (punctuation marks count as tokens), approximated with a regex
(`udfs/text.py`); so a document right at a threshold can be decided differently from datatrove.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterable, Mapping

import numpy as np

from udfs.text import TERMINAL_PUNCTUATION, Doc, count_sentences, split_lines_nonempty, split_paragraphs


@dataclass
class QualityResult:
    reason: str | None                                   # first failing reason code, None when kept
    signals: dict[str, float] = field(default_factory=dict)  # measured values (partial when rejected)
    text: str = ""                                       # text after C4 line cleaning


# ---------------------------------------------------------------------------------------------------- helpers

def find_duplicates(items: list[str]) -> tuple[int, int]:
    """(number of items equal to an earlier item, their total characters): datatrove `find_duplicates`."""
    counts = Counter(items)
    n_dup = len(items) - len(counts)
    if n_dup == 0:
        return 0, 0
    return n_dup, sum(len(s) * (c - 1) for s, c in counts.items() if c > 1)


_MIX = np.uint64(0x9E3779B97F4A7C15)
_SHIFT = np.uint64(29)


class _NGrams:
    """64-bit hashes of the token n-grams of one document, built incrementally (n-1 -> n) and kept for reuse.
    A hash collision between two different n-grams (probability ~n^2 / 2^64) would count them as equal."""

    def __init__(self, tokens: list[str]):
        n = len(tokens)
        self.n_tokens = n
        self.h1 = np.fromiter(map(hash, tokens), dtype=np.int64, count=n).view(np.uint64)
        lens = np.fromiter(map(len, tokens), dtype=np.int64, count=n)
        self.cum = np.concatenate(([0], np.cumsum(lens)))  # cum[j] - cum[i] = characters of tokens[i:j]
        self._by_n = {1: self.h1}
        self._no_dups_from: int | None = None

    def hashes(self, n: int) -> np.ndarray:
        """Hash of tokens[i:i+n] for i in 0..n_tokens-n."""
        if n in self._by_n:
            return self._by_n[n]
        if n > self.n_tokens:
            return self.h1[:0]
        g = self.hashes(n - 1)[:-1]
        g = ((g ^ (g >> _SHIFT)) * _MIX) ^ self.h1[n - 1:]
        self._by_n[n] = g
        return g

    def _runs(self, n: int):
        """(order, starts, counts): an argsort of the n-gram hashes, where each run of equal hashes starts in
        the sorted order and how long it is. None when no n-gram repeats; then no (n+1)-gram repeats either, which
        lets larger n skip the work."""
        if self._no_dups_from is not None and n >= self._no_dups_from:
            return None
        g = self.hashes(n)
        if len(g) < 2:
            return None
        order = np.argsort(g)
        s = g[order]
        new = np.empty(len(s), dtype=bool)
        new[0] = True
        np.not_equal(s[1:], s[:-1], out=new[1:])
        starts = np.flatnonzero(new)
        if len(starts) == len(s):
            self._no_dups_from = n if self._no_dups_from is None else min(n, self._no_dups_from)
            return None
        return order, starts, np.diff(np.append(starts, len(s)))

    def top_ngram_chars(self, n: int) -> int:
        """Characters of the most frequent n-gram (tokens joined by one space) times its count; ties go to the
        n-gram seen first, like datatrove's `Counter.most_common(1)`."""
        runs = self._runs(n)
        if runs is None:
            top, i = 1, 0
        else:
            order, starts, counts = runs
            top = int(counts.max())
            i = int(np.minimum.reduceat(order, starts)[counts == top].min())  # first position of a top n-gram
        return top * int(self.cum[i + n] - self.cum[i] + n - 1)

    def dup_ngram_chars(self, n: int) -> int:
        """datatrove `find_all_duplicate`: scan left to right; an n-gram already seen adds its characters (tokens
        joined without spaces) and the scan jumps past it, otherwise it is remembered and the scan moves one token.
        Only positions holding a repeated n-gram can be hits, so the Python loop visits those alone."""
        runs = self._runs(n)
        if runs is None:
            return 0
        order, starts, counts = runs
        cand = np.sort(order[np.repeat(counts > 1, counts)])
        keys = self.hashes(n)[cand].tolist()
        chars = (self.cum[cand + n] - self.cum[cand]).tolist()
        # n-grams that occur once are never hits and never make a later position a hit: skip them
        seen: set[int] = set()
        idx = repeated = 0
        for c, key, n_chars in zip(cand.tolist(), keys, chars):
            if c < idx:
                continue
            if key in seen:
                repeated += n_chars
                idx = c + n
            else:
                seen.add(key)
                idx = c + 1
        return repeated


def _int_keyed(items) -> dict:
    """(n, value) pairs whose n may be int or str (a --set override gives "2") -> {int n: value} in n order; where
    both spellings of one n occur, the string one (the override) wins."""
    merged: dict = {}
    for k, v in sorted(items, key=lambda kv: isinstance(kv[0], str)):
        merged[int(k)] = v
    return dict(sorted(merged.items()))


def _pairs(value) -> tuple[tuple[int, float], ...]:
    """{2: 0.2} / [[2, 0.2]] / {"2": 0.25} (from a --set override) -> ((2, 0.2),); a None threshold drops n."""
    if value is None:
        return ()
    items = value.items() if isinstance(value, Mapping) else value
    return tuple((n, float(f)) for n, f in _int_keyed(items).items() if f is not None)


def _off(threshold) -> bool:
    return threshold is None or (isinstance(threshold, (int, float)) and threshold < 0)


class _Verdict:
    """The first failing rule of one family. In check mode the family stops there (the expensive n-gram work of a
    rejected document is skipped); in annotate mode it notes the reason and goes on measuring every signal."""

    __slots__ = ("annotate", "reason")

    def __init__(self, annotate: bool):
        self.annotate, self.reason = annotate, None

    def fail(self, reason: str) -> bool:
        """Note `reason` (if it is the first); True when the family should stop now."""
        if self.reason is None:
            self.reason = reason
        return not self.annotate

    def want(self, *thresholds) -> bool:
        """Measure a signal: always when annotating, else only when one of its rules is on."""
        return self.annotate or not all(map(_off, thresholds))


# ---------------------------------------------------------------------------------------------- rule families

class GopherRepetition:
    """Repetition removal of Gopher (Rae et al. 2021, "Scaling Language Models", appendix A.1.1, table A1) as
    implemented by datatrove `GopherRepetitionFilter` (source read; thresholds identical to table A1).

    Paragraphs are split on blank lines, lines on newlines. `*_frac` compares counts of duplicated elements,
    `*_char_frac` their characters, with the document length in characters. `top_n_grams`: characters covered by
    the most frequent n-gram (count x length) over the document length; `dup_n_grams`: characters of repeated
    n-grams (datatrove's greedy left-to-right count) over the document length. n-grams are over tokens.
    """

    name = "gopher_repetition"

    def __init__(self, dup_line_frac: float | None = 0.3, dup_para_frac: float | None = 0.3,
                 dup_line_char_frac: float | None = 0.2, dup_para_char_frac: float | None = 0.2,
                 top_n_grams=((2, 0.2), (3, 0.18), (4, 0.16)),
                 dup_n_grams=((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))):
        self.dup_line_frac = dup_line_frac
        self.dup_para_frac = dup_para_frac
        self.dup_line_char_frac = dup_line_char_frac
        self.dup_para_char_frac = dup_para_char_frac
        self.top_n_grams = _pairs(top_n_grams)
        self.dup_n_grams = _pairs(dup_n_grams)

    def __call__(self, doc: Doc, signals: dict, annotate: bool = False) -> str | None:
        text = doc.text
        signals["chars"] = n_chars = len(text)
        if not text:
            return "empty"
        v = _Verdict(annotate)
        for kind, parts, frac_max, char_max in (
            ("para", split_paragraphs, self.dup_para_frac, self.dup_para_char_frac),
            ("line", split_lines_nonempty, self.dup_line_frac, self.dup_line_char_frac),
        ):
            if not v.want(frac_max, char_max):
                continue
            elements = parts(text)
            n_dup, dup_chars = find_duplicates(elements)
            signals[f"dup_{kind}_frac"] = frac = n_dup / len(elements)
            if not _off(frac_max) and frac > frac_max and v.fail(f"dup_{kind}_frac"):
                return v.reason
            signals[f"dup_{kind}_char_frac"] = frac = dup_chars / n_chars
            if not _off(char_max) and frac > char_max and v.fail(f"dup_{kind}_char_frac"):
                return v.reason

        top = self.top_n_grams if not annotate else _with_default_ns(self.top_n_grams, TOP_NS)
        dup = self.dup_n_grams if not annotate else _with_default_ns(self.dup_n_grams, DUP_NS)
        if not top and not dup:
            return v.reason
        grams = _NGrams(doc.tokens)
        for n, frac_max in top:
            if n > grams.n_tokens:
                continue
            signals[f"top_{n}gram_char_frac"] = frac = grams.top_ngram_chars(n) / n_chars
            if not _off(frac_max) and frac > frac_max and v.fail(f"top_{n}gram_char_frac"):
                return v.reason
        for n, frac_max in dup:
            signals[f"dup_{n}gram_char_frac"] = frac = grams.dup_ngram_chars(n) / n_chars
            if not _off(frac_max) and frac > frac_max and v.fail(f"dup_{n}gram_char_frac"):
                return v.reason
        return v.reason


TOP_NS, DUP_NS = (2, 3, 4), (5, 6, 7, 8, 9, 10)  # the n of Gopher's table A1, measured in annotate mode even when off


def _with_default_ns(pairs, ns) -> tuple:
    """The configured (n, threshold) pairs plus the paper's n's with no threshold (measured, not applied)."""
    have = {n for n, _ in pairs}
    return tuple(sorted(list(pairs) + [(n, None) for n in ns if n not in have]))


STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
_ALPHA = re.compile(r"[^\W\d_]")  # a letter


class GopherQuality:
    """Quality filter of Gopher (Rae et al. 2021, appendix A.1.1) as implemented by datatrove
    `GopherQualityFilter` (source read; defaults identical).

    Rules in order: number of words (tokens that are not pure punctuation) in [50, 100000]; their mean length in
    [3, 10]; '#' and ellipsis ('...' or '…') counts per token <= 0.1 each; lines starting with a bullet ('•' or
    '-') <= 90 %; lines ending with an ellipsis <= 30 %; tokens containing a letter >= 80 % of all tokens
    (punctuation tokens count in the denominator, as in datatrove); at least 2 distinct stop words (case-sensitive,
    as in datatrove).
    """

    name = "gopher_quality"

    def __init__(self, min_doc_words: int | None = 50, max_doc_words: int | None = 100000,
                 min_avg_word_length: float | None = 3, max_avg_word_length: float | None = 10,
                 max_symbol_word_ratio: float | None = 0.1, max_bullet_lines_ratio: float | None = 0.9,
                 max_ellipsis_lines_ratio: float | None = 0.3, min_alpha_words_ratio: float | None = 0.8,
                 min_stop_words: int | None = 2, stop_words: Iterable[str] = STOP_WORDS,
                 bullets: Iterable[str] = ("\u2022", "-")):
        self.min_doc_words = min_doc_words
        self.max_doc_words = max_doc_words
        self.min_avg_word_length = min_avg_word_length
        self.max_avg_word_length = max_avg_word_length
        self.max_symbol_word_ratio = max_symbol_word_ratio
        self.max_bullet_lines_ratio = max_bullet_lines_ratio
        self.max_ellipsis_lines_ratio = max_ellipsis_lines_ratio
        self.min_alpha_words_ratio = min_alpha_words_ratio
        self.min_stop_words = min_stop_words
        self.stop_words = frozenset(stop_words)
        self.bullets = tuple(bullets)

    def __call__(self, doc: Doc, signals: dict, annotate: bool = False) -> str | None:
        text = doc.text
        words = doc.words
        n_words = len(words)
        v = _Verdict(annotate)
        signals["word_count"] = n_words
        if ((not _off(self.min_doc_words) and n_words < self.min_doc_words) or
                (not _off(self.max_doc_words) and n_words > self.max_doc_words)) and v.fail("word_count"):
            return v.reason

        if v.want(self.min_avg_word_length, self.max_avg_word_length):
            signals["mean_word_length"] = mean = sum(map(len, words)) / n_words if n_words else 0.0
            if ((not _off(self.min_avg_word_length) and mean < self.min_avg_word_length) or
                    (not _off(self.max_avg_word_length) and mean > self.max_avg_word_length)) and \
                    v.fail("mean_word_length"):
                return v.reason

        n_tokens = max(len(doc.tokens), 1)
        sym = self.max_symbol_word_ratio
        if v.want(sym):
            signals["hash_word_ratio"] = ratio = text.count("#") / n_tokens
            if not _off(sym) and ratio > sym and v.fail("hash_ratio"):
                return v.reason
            signals["ellipsis_word_ratio"] = ratio = (text.count("...") + text.count("\u2026")) / n_tokens
            if not _off(sym) and ratio > sym and v.fail("ellipsis_ratio"):
                return v.reason

        if v.want(self.max_bullet_lines_ratio, self.max_ellipsis_lines_ratio):
            lines = text.splitlines()
            n_lines = max(len(lines), 1)
            if v.want(self.max_bullet_lines_ratio):
                bullets = self.bullets
                signals["bullet_lines_ratio"] = ratio = sum(
                    1 for s in lines if s.lstrip().startswith(bullets)) / n_lines
                if not _off(self.max_bullet_lines_ratio) and ratio > self.max_bullet_lines_ratio and \
                        v.fail("bullet_lines"):
                    return v.reason
            if v.want(self.max_ellipsis_lines_ratio):
                signals["ellipsis_lines_ratio"] = ratio = sum(
                    1 for s in lines if s.rstrip().endswith(("...", "\u2026"))) / n_lines
                if not _off(self.max_ellipsis_lines_ratio) and ratio > self.max_ellipsis_lines_ratio and \
                        v.fail("ellipsis_lines"):
                    return v.reason

        if v.want(self.min_alpha_words_ratio):
            n_alpha = n_words - list(map(_ALPHA.search, words)).count(None)
            signals["alpha_words_ratio"] = ratio = n_alpha / n_tokens
            if not _off(self.min_alpha_words_ratio) and ratio < self.min_alpha_words_ratio and \
                    v.fail("alpha_words"):
                return v.reason

        if v.want(self.min_stop_words):
            signals["stop_word_count"] = n_stop = len(self.stop_words.intersection(doc.tokens))
            if not _off(self.min_stop_words) and n_stop < self.min_stop_words and v.fail("stop_words"):
                return v.reason
        return v.reason


POLICY_SUBSTRINGS = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies",
                     "use cookies")
_CITATION_RE = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
@lru_cache(maxsize=8)
def load_bad_words(path: str) -> re.Pattern:
    """Regex matching any word of the list (one per line) flanked by non-word characters, as in C4/datatrove's
    `C4BadWordsFilter` for space-separated languages. Loaded once per process."""
    with open(path, encoding="utf-8") as f:
        words = sorted({w.strip().lower() for w in f if w.strip() and not w.startswith("#")})
    if not words:
        raise ValueError(f"bad-words list {path} is empty")
    return re.compile(r"(?:\W|^)(?:{})(?:\W|$)".format("|".join(map(re.escape, words))))


SENTENCE_CAP = 50  # annotate mode counts C4 sentences up to here, so min_num_sentences can be re-set up to 50


class C4Quality:
    """C4 cleaning (Raffel et al. 2020, section 2.2) as implemented by datatrove `C4QualityFilter`, itself a port of
    tensorflow_datasets `c4_utils.clean_page` (both sources read).

    Line by line (lines stripped): drop lines with a word longer than `max_word_length`; remove Wikipedia citation
    marks; drop lines not ending in `end_punctuation` or ending in '...'; drop lines with fewer than
    `min_words_per_line` words; then, on the surviving lines only, reject the page for "lorem ipsum" or a '{', and
    drop lines mentioning "javascript" or a cookie/terms policy phrase. Reject the page when the kept lines hold
    fewer than `min_num_sentences` sentences; otherwise the text becomes the kept lines joined by newlines.
    Optionally reject pages containing a word of the bad-words list at `bad_words_path` (off by default).
    `rewrite=False` (not in the paper) applies the page rules to the kept lines but leaves the document its text as
    it came: for manuals, licences and books, where dropping short lines removes headings, option names and verse.

    Defaults are datatrove's, which follow the paper's text: 3 words per line, 5 sentences, and "'" accepted as an
    end mark. The tfds code that produced the released C4 uses min_words_per_line=5, min_num_sentences=3 and
    end marks . ? ! " only. FineWeb runs this filter with filter_no_terminal_punct=False.
    Sentences are counted on our tokens the way spaCy's sentencizer does (`udfs.text.count_sentences`), and only up to
    `min_num_sentences`: the `c4_sentences` signal is capped there.
    """

    name = "c4"

    def __init__(self, remove_citations: bool = True, filter_no_terminal_punct: bool = True,
                 end_punctuation: Iterable[str] = (".", "?", "!", '"', "'"), min_num_sentences: int | None = 5,
                 min_words_per_line: int | None = 3, max_word_length: int | None = 1000,
                 filter_lorem_ipsum: bool = True, filter_javascript: bool = True, filter_curly_bracket: bool = True,
                 filter_policy: bool = True, policy_substrings: Iterable[str] = POLICY_SUBSTRINGS,
                 bad_words_path: str | None = None, rewrite: bool = True):
        self.remove_citations = remove_citations
        self.filter_no_terminal_punct = filter_no_terminal_punct
        self.end_punctuation = tuple(end_punctuation)
        self.min_num_sentences = None if _off(min_num_sentences) else min_num_sentences
        self.min_words_per_line = None if _off(min_words_per_line) else min_words_per_line
        self.max_word_length = None if _off(max_word_length) else max_word_length
        self.filter_lorem_ipsum = filter_lorem_ipsum
        self.filter_javascript = filter_javascript
        self.filter_curly_bracket = filter_curly_bracket
        self.filter_policy = filter_policy
        self.policy_substrings = tuple(policy_substrings)
        self.bad_words = load_bad_words(bad_words_path) if bad_words_path else None
        self.rewrite = rewrite

    def clean(self, text: str, signals: dict, annotate: bool = False) -> tuple[str | None, str]:
        """(reason or None, cleaned text). In annotate mode the page rules (lorem ipsum, '{') do not stop the scan:
        the 1-based number of the line where each first fires is recorded (`c4_lorem_ipsum_line`,
        `c4_curly_bracket_line`), the scan goes on as if they were off, sentences are counted up to
        max(min_num_sentences, SENTENCE_CAP), and the cleaned text is returned with the first reason."""
        lower = text.lower()
        # page-wide pre-checks so that the per-line loop skips tests that cannot match
        check_js = self.filter_javascript and "javascript" in lower
        check_lorem = (self.filter_lorem_ipsum or annotate) and "lorem ipsum" in lower
        check_curly = (self.filter_curly_bracket or annotate) and "{" in text
        check_policy = self.filter_policy and any(p in lower for p in self.policy_substrings)
        check_cite = self.remove_citations and "[" in text
        lines = text.splitlines()
        if annotate:
            return self._annotate(text, lines, signals, check_js, check_lorem, check_curly, check_policy, check_cite)

        min_sent = self.min_num_sentences
        kept: list[str] = []
        n_sentences = 0
        for _, line in self._candidate_lines(lines, check_cite):
            if check_lorem or check_js or check_policy:
                line_l = line.lower()
                if check_lorem and "lorem ipsum" in line_l:
                    return "lorem_ipsum", text
                if check_js and "javascript" in line_l:
                    continue
            if check_curly and "{" in line:
                return "curly_bracket", text
            if check_policy and any(p in line_l for p in self.policy_substrings):
                continue
            if min_sent is not None and n_sentences < min_sent:
                n_sentences += count_sentences(line, cap=min_sent - n_sentences)
            kept.append(line)
        signals["c4_lines"] = len(lines)
        signals["c4_lines_kept"] = len(kept)
        if min_sent is not None:
            signals["c4_sentences"] = n_sentences
            if n_sentences < min_sent:
                return "too_few_sentences", text
        cleaned = "\n".join(kept).strip()
        if self.bad_words is not None and self.bad_words.search(cleaned.lower()):
            return "bad_words", text
        return None, cleaned if self.rewrite else text

    def _candidate_lines(self, lines: list[str], check_cite: bool):
        """(1-based line number, stripped line) for the lines C4's per-line rules keep: not blank, no word longer
        than max_word_length, citation marks removed, a terminal mark at the end (when that rule is on), at least
        min_words_per_line words. The page rules and the javascript / policy drops come after, in the callers."""
        max_len, min_words, end_marks = self.max_word_length, self.min_words_per_line, self.end_punctuation
        for i, line in enumerate(lines, 1):
            line = line.strip()
            if not line:
                continue
            words = line.split()
            if max_len is not None and len(line) > max_len and any(len(w) > max_len for w in words):
                continue
            if check_cite:
                line = _CITATION_RE.sub("", line)
            if self.filter_no_terminal_punct and (not line.endswith(end_marks) or line.endswith("...")):
                continue
            if min_words is not None and len(words) < min_words:
                continue
            yield i, line

    def _annotate(self, text, lines, signals, check_js, check_lorem, check_curly, check_policy, check_cite):
        """`clean` measuring everything: the same line rules, page rules noted by line instead of stopping."""
        cap = max(self.min_num_sentences or 0, SENTENCE_CAP)
        kept: list[str] = []
        n_sentences = 0
        lorem_at = curly_at = 0
        for i, line in self._candidate_lines(lines, check_cite):
            line_l = line.lower() if (check_lorem or check_js or check_policy) else ""
            if check_lorem and not lorem_at and "lorem ipsum" in line_l:
                lorem_at = i
            if check_js and "javascript" in line_l:
                continue
            if check_curly and not curly_at and "{" in line:
                curly_at = i
            if check_policy and any(p in line_l for p in self.policy_substrings):
                continue
            if n_sentences < cap:
                n_sentences += count_sentences(line, cap=cap - n_sentences)
            kept.append(line)
        signals["c4_lines"] = len(lines)
        signals["c4_lines_kept"] = len(kept)
        signals["c4_sentences"] = n_sentences
        signals["c4_lorem_ipsum_line"] = lorem_at
        signals["c4_curly_bracket_line"] = curly_at
        cleaned = "\n".join(kept).strip()
        if self.bad_words is not None:
            signals["c4_bad_words"] = float(self.bad_words.search(cleaned.lower()) is not None)
        reason = decide_family(self.name, signals, self.params)
        return reason, cleaned if self.rewrite else text

    @property
    def params(self) -> dict:
        return {"filter_lorem_ipsum": self.filter_lorem_ipsum, "filter_curly_bracket": self.filter_curly_bracket,
                "min_num_sentences": self.min_num_sentences}

    def __call__(self, doc: Doc, signals: dict, annotate: bool = False) -> str | None:
        return self.clean(doc.text, signals, annotate)[0]


class FineWebQuality:
    """FineWeb's own heuristics (Penedo et al. 2024, "The FineWeb Datasets", section 3.3) as implemented by
    datatrove `FineWebQualityFilter` (source read; defaults identical). Over the non-blank lines: share of lines
    ending in terminal punctuation >= 0.12; share of lines of <= 30 characters <= 0.67; characters in duplicated
    lines over all non-newline characters <= 0.01; newlines per token <= 0.3 (list-like pages).
    """

    name = "fineweb"

    def __init__(self, line_punct_thr: float | None = 0.12, line_punct_exclude_zero: bool = False,
                 stop_chars: Iterable[str] | None = None, short_line_thr: float | None = 0.67,
                 short_line_length: int = 30, char_duplicates_ratio: float | None = 0.01,
                 new_line_ratio: float | None = 0.3):
        self.line_punct_thr = line_punct_thr
        self.line_punct_exclude_zero = line_punct_exclude_zero
        self.stop_chars = TERMINAL_PUNCTUATION if stop_chars is None else tuple(stop_chars)
        self._single_chars = all(len(c) == 1 for c in self.stop_chars)
        self._stop_set = frozenset(self.stop_chars)
        self.short_line_thr = short_line_thr
        self.short_line_length = short_line_length
        self.char_duplicates_ratio = char_duplicates_ratio
        self.new_line_ratio = new_line_ratio

    def __call__(self, doc: Doc, signals: dict, annotate: bool = False) -> str | None:
        text = doc.text
        lines = list(filter(str.strip, text.split("\n")))
        signals["fineweb_lines"] = n_lines = len(lines)
        if not lines:
            return "empty"
        v = _Verdict(annotate)
        if v.want(self.line_punct_thr):
            if self._single_chars:
                stop = self._stop_set
                n_punct = sum(1 for s in lines if s[-1] in stop)
            else:
                ends = tuple(self.stop_chars)
                n_punct = sum(1 for s in lines if s.endswith(ends))
            signals["line_punct_ratio"] = ratio = n_punct / n_lines
            if not _off(self.line_punct_thr) and ratio < self.line_punct_thr and \
                    not (ratio == 0 and self.line_punct_exclude_zero) and v.fail("line_punct_ratio"):
                return v.reason
        if v.want(self.short_line_thr):
            short = self.short_line_length
            signals["short_line_ratio"] = ratio = sum(1 for s in lines if len(s) <= short) / n_lines
            if not _off(self.short_line_thr) and ratio > self.short_line_thr and v.fail("short_line_ratio"):
                return v.reason
        if v.want(self.char_duplicates_ratio):
            n_chars = max(len(text) - text.count("\n"), 1)
            signals["char_dup_ratio"] = ratio = find_duplicates(lines)[1] / n_chars
            if not _off(self.char_duplicates_ratio) and ratio > self.char_duplicates_ratio and \
                    v.fail("char_dup_ratio"):
                return v.reason
        if v.want(self.new_line_ratio):
            signals["list_ratio"] = ratio = text.count("\n") / max(len(doc.tokens), 1)
            if not _off(self.new_line_ratio) and ratio > self.new_line_ratio and v.fail("list_ratio"):
                return v.reason
        return v.reason


FAMILIES = {cls.name: cls for cls in (GopherRepetition, GopherQuality, C4Quality, FineWebQuality)}


def _signature_defaults(cls) -> dict:
    import inspect
    out = {}
    for name, p in inspect.signature(cls.__init__).parameters.items():
        if name == "self":
            continue
        v = p.default
        if name in ("top_n_grams", "dup_n_grams"):
            v = {n: f for n, f in v}
        elif isinstance(v, (tuple, frozenset)):
            v = list(v)
        out[name] = v
    return out


# The `filter.quality` config section with every default; evaluation order = key order.
DEFAULT_QUALITY_CONF: dict = {name: {"enabled": True, **_signature_defaults(cls)} for name, cls in FAMILIES.items()}
# FineWeb's stop_chars default (None) means datatrove's TERMINAL_PUNCTUATION set.

ANNOTATE_ONLY = ("c4_lorem_ipsum_line", "c4_curly_bracket_line", "c4_bad_words")  # c4_bad_words: with a list
SIGNAL_NAMES = (
    "chars", "dup_para_frac", "dup_para_char_frac", "dup_line_frac", "dup_line_char_frac",
    "top_2gram_char_frac", "top_3gram_char_frac", "top_4gram_char_frac",
    *(f"dup_{n}gram_char_frac" for n in range(5, 11)),
    "word_count", "mean_word_length", "hash_word_ratio", "ellipsis_word_ratio", "bullet_lines_ratio",
    "ellipsis_lines_ratio", "alpha_words_ratio", "stop_word_count",
    "c4_lines", "c4_lines_kept", "c4_sentences", "c4_lorem_ipsum_line", "c4_curly_bracket_line", "c4_bad_words",
    "fineweb_lines", "line_punct_ratio", "short_line_ratio", "char_dup_ratio", "list_ratio",
)  # n-gram signals for other n appear when top_n_grams / dup_n_grams are configured so


# ----------------------------------------------------------------------------------------------- domain presets
# The four families are web-prose rules: Gopher and C4 were tuned on web pages, FineWeb's on Common Crawl. Text of
# other kinds fails them by construction, not for being bad. A domain marked with a preset
# (`filter.domains.<domain>.preset`) starts from these overrides; its own keys go on top. Values were set on the
# signals of real installed text (bench/debian_corpus.py; figures in bench/README.md), looking at documents at
# the margin of each cut: what falls below the preset's cut is still markup stubs, redirects and tables.
_RELAXED_REPETITION = {  # repeated sign-off lines, option tables, licence clauses: 1.5x-2x the paper's limits
    "dup_line_frac": 0.45, "dup_para_frac": 0.45, "dup_line_char_frac": 0.3, "dup_para_char_frac": 0.3,
    "top_n_grams": {2: 0.3, 3: 0.27, 4: 0.24},
    "dup_n_grams": {5: 0.3, 6: 0.28, 7: 0.26, 8: 0.24, 9: 0.22, 10: 0.2}}
DOMAIN_PRESETS: dict = {
    # prose with hard-wrapped lines: most lines end mid-sentence, so FineWeb's line-punctuation ratio measures the
    # wrapping, not quality
    # C4 still counts sentences and rejects pages, but does not rewrite the text (speaker names, verse, headings);
    # dialogue punctuates densely (Gopher counts punctuation tokens): whole plays of the sample score 0.79 alphabetic;
    # speaker names repeat line for line (FineWeb's duplicated-line characters 0.04-0.06 in plays); C4's '{' rule
    # is about code on web pages (one stray brace in a 4,000-line play)
    "books": {"quality": {"gopher_quality": {"min_alpha_words_ratio": 0.7},
                          "c4": {"rewrite": False, "filter_curly_bracket": False},
                          "fineweb": {"line_punct_thr": None, "char_duplicates_ratio": 0.1}}},
    # source code: every prose rule fails it by design; the language is still recorded
    "code": {"langid": {"enabled": False},
             "quality": {name: {"enabled": False} for name in ("gopher_repetition", "gopher_quality", "c4",
                                                                "fineweb")}},
    # manuals, man pages, READMEs, docstrings, changelogs: English technical text scores 0.45-0.65 in lid.176 and
    # has 0.45-0.8 of its tokens alphabetic (punctuation tokens count: option flags, paths, code spans); short
    # docstrings are whole; examples hold '{'; lines are hard-wrapped and headings repeat; C4 line cleaning would
    # drop every option name of a man page ("-a, --all": fewer than 3 words), each line naming JavaScript, and the
    # indentation of every example, so C4 judges the page without rewriting it
    "docs": {"langid": {"threshold": 0.3},
             "quality": {"gopher_repetition": _RELAXED_REPETITION,
                         "gopher_quality": {"min_doc_words": 20, "min_alpha_words_ratio": 0.4,
                                            "max_symbol_word_ratio": 0.2, "min_stop_words": 1},
                         "c4": {"filter_curly_bracket": False, "min_num_sentences": 2, "rewrite": False},
                         # code fences and closing braces repeat line for line
                         "fineweb": {"line_punct_thr": None, "char_duplicates_ratio": 0.2}}},
    # licences and copyright notices: hard-wrapped, formulaic, clauses and notices repeated file by file
    "legal": {"langid": {"threshold": 0.5},
              "quality": {"gopher_repetition": _RELAXED_REPETITION,
                          "gopher_quality": {"min_alpha_words_ratio": 0.6},
                          "c4": {"rewrite": False},
                          "fineweb": {"line_punct_thr": None, "char_duplicates_ratio": 0.15}}},
    # encyclopedia entries, package descriptions, API reference entries: short and dense, few sentences, a title
    # line and hard-wrapped lines
    "reference": {"quality": {"gopher_repetition": {"top_n_grams": {2: 0.3, 3: 0.27, 4: 0.24}},
                              "gopher_quality": {"min_doc_words": 20, "min_alpha_words_ratio": 0.7},
                              "c4": {"min_num_sentences": 2},
                              "fineweb": {"line_punct_thr": None}}},
}


# ------------------------------------------------------------------------------------------- rules as data
# Every document-level rule as (reason, kind, signal, threshold, other): the decision of a family is its first rule
# that fires, in this order, which is the order the family classes above test them in. Annotate mode records every
# signal, so `decide` over a stored signals row gives the filter's decision for any thresholds (a query, not a
# re-run); tests/test_quality.py checks decide(annotate signals) == check reason for random configs. Rules that
# rewrite the text (C4's per-line rules, javascript / policy line drops) are not here: changing them needs a re-run.
#   max: fires when signal > threshold      min: signal < threshold      min_nz: 0 < signal < threshold
#   zero: signal == 0                       line: signal > 0 and (other is 0 / absent or signal <= other)
RULE_KINDS = ("max", "min", "min_nz", "zero", "line")


def rules(family: str, p: Mapping) -> list[tuple]:
    """The rules of one family under params `p` (a merged `filter.quality.<family>` mapping); rules whose threshold
    is off are left out."""
    out: list[tuple] = []

    def add(reason, kind, signal, thr=None, other=None):
        if kind in ("zero", "line") or not _off(thr):
            out.append((reason, kind, signal, None if thr is None else float(thr), other))

    if family == "gopher_repetition":
        add("empty", "zero", "chars")
        for kind in ("para", "line"):
            add(f"dup_{kind}_frac", "max", f"dup_{kind}_frac", p.get(f"dup_{kind}_frac"))
            add(f"dup_{kind}_char_frac", "max", f"dup_{kind}_char_frac", p.get(f"dup_{kind}_char_frac"))
        for n, t in _pairs(p.get("top_n_grams")):
            add(f"top_{n}gram_char_frac", "max", f"top_{n}gram_char_frac", t)
        for n, t in _pairs(p.get("dup_n_grams")):
            add(f"dup_{n}gram_char_frac", "max", f"dup_{n}gram_char_frac", t)
    elif family == "gopher_quality":
        add("word_count", "min", "word_count", p.get("min_doc_words"))
        add("word_count", "max", "word_count", p.get("max_doc_words"))
        add("mean_word_length", "min", "mean_word_length", p.get("min_avg_word_length"))
        add("mean_word_length", "max", "mean_word_length", p.get("max_avg_word_length"))
        add("hash_ratio", "max", "hash_word_ratio", p.get("max_symbol_word_ratio"))
        add("ellipsis_ratio", "max", "ellipsis_word_ratio", p.get("max_symbol_word_ratio"))
        add("bullet_lines", "max", "bullet_lines_ratio", p.get("max_bullet_lines_ratio"))
        add("ellipsis_lines", "max", "ellipsis_lines_ratio", p.get("max_ellipsis_lines_ratio"))
        add("alpha_words", "min", "alpha_words_ratio", p.get("min_alpha_words_ratio"))
        add("stop_words", "min", "stop_word_count", p.get("min_stop_words"))
    elif family == "c4":
        # the two page rules stop at the first line that has either; on one line lorem ipsum is tested first
        curly = "c4_curly_bracket_line" if p.get("filter_curly_bracket", True) else None
        if p.get("filter_lorem_ipsum", True):
            add("lorem_ipsum", "line", "c4_lorem_ipsum_line", other=curly)
        if curly:
            add("curly_bracket", "line", curly)
        add("too_few_sentences", "min", "c4_sentences", p.get("min_num_sentences"))
        add("bad_words", "line", "c4_bad_words")
    elif family == "fineweb":
        add("empty", "zero", "fineweb_lines")
        add("line_punct_ratio", "min_nz" if p.get("line_punct_exclude_zero") else "min", "line_punct_ratio",
            p.get("line_punct_thr"))
        add("short_line_ratio", "max", "short_line_ratio", p.get("short_line_thr"))
        add("char_dup_ratio", "max", "char_dup_ratio", p.get("char_duplicates_ratio"))
        add("list_ratio", "max", "list_ratio", p.get("new_line_ratio"))
    else:
        raise ValueError(f"unknown quality filter family {family!r}")
    return out


def _fires(kind: str, value, thr, other_value) -> bool:
    if value is None:
        return False
    if kind == "max":
        return value > thr
    if kind == "min":
        return value < thr
    if kind == "min_nz":
        return value < thr and value != 0
    if kind == "zero":
        return value == 0
    return value > 0 and (not other_value or value <= other_value)  # line


def decide_family(family: str, signals: Mapping, params: Mapping) -> str | None:
    """The first rule of `family` that fires on `signals` (bare reason, e.g. "alpha_words"), or None."""
    for reason, kind, sig, thr, other in rules(family, params):
        if _fires(kind, signals.get(sig), thr, signals.get(other) if other else None):
            return reason
    return None


def decide(signals: Mapping, conf: Mapping | None = None) -> str | None:
    """The quality decision ("family:reason" or None) that `check_quality(text, conf)` gives, from the signals
    `annotate(text, conf)` measured. Thresholds may differ from those the signals were measured with, except the
    ones that change the text (see the note on rules above)."""
    for name, params in merge_conf(conf).items():
        if params.get("enabled", True):
            reason = decide_family(name, signals, params)
            if reason is not None:
                return f"{name}:{reason}"
    return None


# ------------------------------------------------------------------------------------------------- entry points

def normalise_conf(conf: Mapping | None) -> dict:
    """`conf` with the n of top_n_grams / dup_n_grams as int (a --set override gives "2"; the override wins), so the
    section hashes and compares as one value."""
    out = {}
    for family, params in (conf or {}).items():
        if isinstance(params, Mapping):
            params = dict(params)
            for key in ("top_n_grams", "dup_n_grams"):
                if isinstance(params.get(key), Mapping):
                    params[key] = _int_keyed(params[key].items())
        out[family] = params
    return out


def merge_conf(conf: Mapping | None) -> dict:
    """Defaults overlaid with `conf` (the `filter.quality` section). Unknown keys raise ValueError naming them."""
    merged = {name: dict(params) for name, params in DEFAULT_QUALITY_CONF.items()}
    for family, params in (conf or {}).items():
        if family not in merged:
            raise ValueError(f"filter.quality: unknown quality filter family {family!r} "
                             f"(known: {', '.join(merged)})")
        if params is None:
            continue
        if not isinstance(params, Mapping):
            raise ValueError(f"filter.quality.{family} must be a mapping, got {type(params).__name__}")
        for key, value in params.items():
            if key not in merged[family]:
                raise ValueError(f"filter.quality.{family}: unknown key {key!r}")
            if key in ("top_n_grams", "dup_n_grams") and isinstance(value, Mapping):
                value = {**merged[family][key], **value}  # a partial override keeps the other n's
            merged[family][key] = value
    return merged


class QualityChecker:
    """The enabled rule families, built once from a config; `check(text)` runs them in order."""

    def __init__(self, conf: Mapping | None = None):
        self.conf = merge_conf(conf)
        self.filters, self.all = [], []  # enabled families; every family with its enabled flag (annotate mode)
        for name, params in self.conf.items():
            params = dict(params)
            on = params.pop("enabled")
            f = FAMILIES[name](**params)
            self.all.append((f, on))
            if on:
                self.filters.append(f)

    def check(self, text: str, annotate: bool = False) -> QualityResult:
        """Run the families in order. Check mode stops at the first failing rule; annotate mode runs every family,
        disabled ones included, and measures every signal (also those whose rule is off), keeps the first reason of
        an enabled family, and returns the text as C4 would clean it were its page rules off (what the later
        families measured). Enabling a family over stored signals is exact except for C4, whose cleaning changes
        what FineWeb measures."""
        signals: dict[str, float] = {}
        doc = Doc(text)
        first = None
        for f, on in (self.all if annotate else ((f, True) for f in self.filters)):
            if isinstance(f, C4Quality):
                reason, cleaned = f.clean(doc.text, signals, annotate)
                # a disabled C4 is measured but does not clean the text the later families see
                if on and (reason is None or annotate) and cleaned != doc.text:
                    doc = Doc(cleaned)
            else:
                reason = f(doc, signals, annotate)
            if on and reason is not None and first is None:
                first = f"{f.name}:{reason}"
                if not annotate:
                    break
        return QualityResult(first, signals, doc.text)


_CHECKERS: dict[str, QualityChecker] = {}


def get_checker(conf: Mapping | None = None) -> QualityChecker:
    """A cached QualityChecker per distinct config (one per Python worker process in Spark)."""
    key = repr(conf)  # not json: a --set override can mix int and str n-gram keys
    checker = _CHECKERS.get(key)
    if checker is None:
        if len(_CHECKERS) >= 32:
            _CHECKERS.clear()
        checker = _CHECKERS[key] = QualityChecker(conf)
    return checker


def check_quality(text: str, conf: dict | None = None) -> QualityResult:
    """Run the enabled heuristics on `text` with `conf` (the `filter.quality` section; None = defaults)."""
    return get_checker(conf).check(text)


def annotate(text: str, conf: dict | None = None) -> QualityResult:
    """Every signal of every enabled family measured on `text` (no short-circuit); `reason` as `check_quality`."""
    return get_checker(conf).check(text, annotate=True)


def _run_one(cls, text: str, params: dict) -> QualityResult:
    signals: dict[str, float] = {}
    f = cls(**params)
    if cls is C4Quality:
        reason, out = f.clean(text, signals)
    else:
        reason, out = f(Doc(text), signals), text
    return QualityResult(None if reason is None else f"{cls.name}:{reason}", signals, out)


def gopher_repetition(text: str, **params) -> QualityResult:
    return _run_one(GopherRepetition, text, params)


def gopher_quality(text: str, **params) -> QualityResult:
    return _run_one(GopherQuality, text, params)


def c4_quality(text: str, **params) -> QualityResult:
    return _run_one(C4Quality, text, params)


def fineweb_quality(text: str, **params) -> QualityResult:
    return _run_one(FineWebQuality, text, params)
