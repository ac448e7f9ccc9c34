"""Word / line / paragraph splitting shared by the quality heuristics (`udfs/quality.py`).

Words follow datatrove's convention (its `split_into_words`, spaCy's English tokenizer): punctuation marks are
tokens of their own, so "Hello, world!" is the four tokens `Hello , world !`. A *token* is any of these; a *word* is
a token with at least one character outside `PUNCTUATION_SET`. We approximate spaCy with one regular expression
(much cheaper); it follows spaCy's prefix/suffix/infix rules for the common ASCII cases, see `_TOKEN_RE`.

`PUNCTUATION` and `TERMINAL_PUNCTUATION` are copied from datatrove (`datatrove/utils/text.py`, Apache-2.0) so the
heuristics measure the same thing without importing it.
"""
from __future__ import annotations

import re

# datatrove PUNCTUATION: ASCII/CJK punctuation plus C0/C1 control characters (except \t and \n)
PUNCTUATION = (
    "!/\u2014\u201d:\uff05\uff11\u3008&(\u3001\u2501\\\u3010#%\u300c\u300d\uff0c\u3011\uff1b+^]~\u201c\u300a\u201e';"
    "\u2019{|\u2236\xb4[=-`*\uff0e\uff08\u2013\uff1f\uff01\uff1a$\uff5e\xab\u3009,><\u300b)?\uff09\u3002\u2026@_.\"}"
    "\u25ba\xbb" + "".join(map(chr, [*range(0, 9), *range(11, 32), *range(127, 160)]))
)
# datatrove TERMINAL_PUNCTUATION: sentence-final marks of all scripts in Unicode (Sentence_Terminal)
TERMINAL_PUNCTUATION = frozenset(
    "!.?\u0589\u061d\u061e\u061f\u06d4\u0700\u0701\u0702\u07f9\u0837\u0839\u083d\u083e\u0964\u0965\u104a\u104b"
    "\u1362\u1367\u1368\u166e\u1735\u1736\u17d4\u17d5\u17d6\u17d9\u17da\u1803\u1809\u1944\u1945\u1aa8\u1aa9\u1aaa"
    "\u1aab\u1b5a\u1b5b\u1b5e\u1b5f\u1b7d\u1b7e\u1c3b\u1c3c\u1c7e\u1c7f\u203c\u203d\u2047\u2048\u2049\u2e2e\u2e3c"
    "\u2e53\u2e54\u3002\ua4ff\ua60e\ua60f\ua6f3\ua6f7\ua876\ua877\ua8ce\ua8cf\ua92f\ua9c8\ua9c9\uaa5d\uaa5e\uaa5f"
    "\uaaf0\uaaf1\uabeb\ufe52\ufe56\ufe57\uff01\uff0e\uff1f\uff61\U00010a56\U00010a57\U00010f55\U00010f56\U00010f57"
    "\U00010f58\U00010f59\U00010f86\U00010f87\U00010f88\U00010f89\U00011047\U00011048\U000110be\U000110bf\U000110c0"
    "\U000110c1\U00011141\U00011142\U00011143\U000111c5\U000111c6\U000111cd\U000111de\U000111df\U00011238\U00011239"
    "\U0001123b\U0001123c\U000112a9\U0001144b\U0001144c\U000115c2\U000115c3\U000115c9\U000115ca\U000115cb\U000115cc"
    "\U000115cd\U000115ce\U000115cf\U000115d0\U000115d1\U000115d2\U000115d3\U000115d4\U000115d5\U000115d6\U000115d7"
    "\U00011641\U00011642\U0001173c\U0001173d\U0001173e\U00011944\U00011946\U00011a42\U00011a43\U00011a9b\U00011a9c"
    "\U00011c41\U00011c42\U00011ef7\U00011ef8\U00011f43\U00011f44\U00016a6e\U00016a6f\U00016af5\U00016b37\U00016b38"
    "\U00016b44\U00016e98\U0001bc9f\U0001da88"
)
PUNCTUATION_SET = frozenset(PUNCTUATION) | TERMINAL_PUNCTUATION
# tokens that are all punctuation (the tokenizer emits punctuation one character at a time, except "...")
_SYMBOL_TOKENS = PUNCTUATION_SET | {"..."}

# Like spaCy's English tokenizer: split on whitespace; peel punctuation (_PRE) off the front and (_SUF) off the back
# of each chunk one character at a time; split inside a chunk where spaCy's infix rules do (_SPLIT: a hyphen or dash
# between letters, : < > = / before a letter, '.' between a lower- and an upper-case letter, ',' between letters,
# + - * ^ between digits) and before the clitics n't 's 're 've 'll 'd 'm. "):" stays one token (an emoticon).
_BOTH = "()[]{}<>_#*&,:;!?\"'`\u2018\u2019\u201c\u201d\u00ab\u00bb\u201e\u2026\u00bf\u00a1"
_PRE, _SUF = _BOTH + "$\u00a3\u20ac\u00a5=\u2014", _BOTH + ".%\u00b0"
_PRE, _SUF = ("".join("\\" + c for c in chars) for chars in (_PRE, _SUF))  # escaped for [...]
_LETTER = r"[^\W\d_]"
# spaCy's English tokenizer exceptions that end in '.', so that their dot neither splits off nor ends a sentence
ABBREVIATIONS = (
    "Adm. Ak. Ala. Apr. Ariz. Ark. Aug. Bros. Calif. Co. Colo. Conn. Corp. Dec. Del. Dr. Feb. Fla. Ga. Gen. Gov. "
    "Ia. Id. Ill. Inc. Ind. Jan. Jr. Jul. Jun. Kan. Kans. Ky. La. Ltd. Mar. Mass. Md. Messrs. Mich. Minn. Miss. Mo. "
    "Mont. Mr. Mrs. Ms. Mt. Neb. Nebr. Nev. Nov. Oct. Okla. Ore. Pa. Ph.D. Prof. Rep. Rev. Sen. Sep. Sept. St. "
    "Tenn. Va. Wash. Wis. a.m. p.m. co. vs. v.s. e.g. i.e. E.g. I.e. E.G. I.E."
).split() + [c + "." for c in "abcdefghijklmnopqrstuvwxyz\u00e4\u00f6\u00fc"]
_ABBREV_SET = frozenset(ABBREVIATIONS)
_CLITIC = rf"(?:n['\u2019]t|['\u2019](?i:s|re|ve|ll|d|m))(?![^\s{_SUF}])"
_INFIX = (rf"(?:(?<={_LETTER})[\-\u2013\u2014~](?={_LETTER})|(?<=[^\W_])[:<>=/](?={_LETTER})"
          rf"|(?<=[a-z])\.(?=[A-Z])|(?<={_LETTER}),(?={_LETTER})|(?<=[0-9])[+\-*^](?=[0-9\-]))")
_SPLIT = rf"(?:{_INFIX}|(?<={_LETTER}){_CLITIC})"
_TOKEN_RE = re.compile(
    r"(?:https?://|www\.)[^\s<>\"'()\[\]{}]*[^\s<>\"'()\[\]{}.,;:!?]"  # URL, without trailing punctuation
    rf"|(?<![^\s{_PRE}])(?:[A-Za-z]\.){{2,}}(?![^\s{_SUF}])"           # U.S. e.g. (other abbreviations: below)
    rf"|(?<={_LETTER}){_CLITIC}"                                         # clitic
    rf"|{_INFIX}"                                                        # infix: one character
    rf"|(?:[^\s{_PRE}{_SUF}]|\.(?=\w))"                                 # chunk core: ".pyc" keeps its dot,
    rf"(?:(?:(?!{_SPLIT})\S)*(?!{_SPLIT})(?:[^\s{_SUF}]|(?<![A-Z][A-Z])(?<=[A-Z])\.))?"  # so does "L." (not "ABC.")
    r"|\.\.+|--+|\):(?!\S)"                                              # ellipsis, double dash, "):"
    r"|\S"                                                             # any other character, one at a time
)
_PARAGRAPH_RE = re.compile(r"\n{2,}")
_LINES_RE = re.compile(r"\n+")


def split_tokens(text: str) -> list[str]:
    """All tokens of `text`, punctuation included (datatrove `split_into_words` equivalent)."""
    out: list[str] = []
    append, extend, findall = out.append, out.extend, _TOKEN_RE.findall
    for chunk in text.split():
        if chunk.isalpha() or chunk in _ABBREV_SET:  # most chunks are plain words: skip the regex
            append(chunk)
        else:
            extend(findall(chunk))
    return out


def is_symbol(token: str) -> bool:
    """True when every character of `token` is punctuation (datatrove's "symbol" words)."""
    return token in _SYMBOL_TOKENS or all(c in PUNCTUATION_SET for c in token)


def split_paragraphs(text: str) -> list[str]:
    """Paragraphs separated by blank lines, after stripping the text (Gopher / datatrove)."""
    return _PARAGRAPH_RE.split(text.strip())


def split_lines_nonempty(text: str) -> list[str]:
    """Lines split on runs of newlines (datatrove GopherRepetition; a leading/trailing '' is kept)."""
    return _LINES_RE.split(text)


# spaCy's sentencizer: a sentence ends at a token that is one of these characters (Unicode Sentence_Terminal)
_TERMINAL_RE = re.compile("[" + "".join("\\" + c if c in "\\]^-[" else c for c in sorted(TERMINAL_PUNCTUATION)) + "]")


def count_sentences(text: str, cap: int | None = None) -> int:
    """Sentences as spaCy's `Sentencizer` (which datatrove's C4 filter uses) finds them on our tokens: a new sentence
    starts at the first non-punctuation token after a terminal mark ('.', '!', '?', ...; not '...' and not the dot
    of an abbreviation such as "Mr." or "Ltd."). Counting stops at `cap` when given."""
    body = text.rstrip(PUNCTUATION + " \t\n")
    if not body:
        return 1 if text.strip() else 0
    if not _TERMINAL_RE.search(body):  # no terminal mark before the end: one sentence (most lines)
        return 1
    n, seen_end = 1, False
    for tok in split_tokens(text):
        if tok in TERMINAL_PUNCTUATION:
            seen_end = True
        elif seen_end and not is_symbol(tok):
            n += 1
            seen_end = False
            if cap is not None and n >= cap:
                break
    return n


class Doc:
    """A text with its token and word lists computed once, on first use, and shared by all heuristics."""

    __slots__ = ("text", "_tokens", "_words")

    def __init__(self, text: str):
        self.text = text
        self._tokens: list[str] | None = None
        self._words: list[str] | None = None

    @property
    def tokens(self) -> list[str]:
        if self._tokens is None:
            self._tokens = split_tokens(self.text)
        return self._tokens

    @property
    def words(self) -> list[str]:
        """Tokens that are not pure punctuation."""
        if self._words is None:
            syms = _SYMBOL_TOKENS
            punct = PUNCTUATION_SET
            # rare multi-character all-punctuation tokens ("__") start with punctuation; is_symbol() catches them
            self._words = [t for t in self.tokens if t not in syms and not (t[0] in punct and is_symbol(t))]
        return self._words
