"""URL filter (FineWeb / datatrove `URLFilter` style) on a document's `url`, as pure functions; no Spark.

    from udfs.urlfilter import get_url_filter
    f = get_url_filter("lists/adult/domains", banned_words=("casino",))
    f.filter("https://www.sub.example.co.uk/a")   # (True, None) or (False, "url:blocklist")
    f.measure(url)                                 # {"url_blocklisted": 0.0|1.0, "url_banned_words": n}

Two checks, each on when configured:

* blocklist: a file of domains, one a line (`#` comment lines and blank lines ignored, entries lowercased, a leading
  `*.` or `.` dropped; the UT1 `domains` files are exactly this; `.gz` files are read too). A URL is blocked when its
  host or any parent domain of it down to the registered domain is listed: www.sub.example.co.uk checks
  www.sub.example.co.uk, sub.example.co.uk and example.co.uk, never co.uk (a public suffix alone never matches, so an
  entry `co.uk` or `com` blocks nothing). The public suffixes are tldextract's bundled snapshot of the Public
  Suffix List, ICANN section (private suffixes such as blogspot.com are ordinary domains here, as in datatrove),
  read without any network request. Hosts and entries are compared in IDNA (punycode) form, so `bücher.de` in the
  list blocks http://xn--bcher-kva.de/ and http://BÜCHER.de/; the port, userinfo and a trailing dot do not matter.
  A host that is an IP address matches only itself. -> `url:blocklist`
* banned words: the URL, percent-decoded and lowercased, split on every non-alphanumeric character; a URL one of
  whose tokens is a banned word is rejected (`casino` bans /casino-online/ but not /casinofan/: whole tokens, not
  substrings, as datatrove's `banned_words`). -> `url:banned_word`

A document without a url (null or empty) passes both. `measure` gives the signals the filter stage stores for
every document (so `jobs.filter.decision_column` re-decides from the signals table): `url_blocklisted` 1.0 when
blocked, else 0.0; `url_banned_words` the number of distinct banned tokens. `get_url_filter` caches one filter per
(blocklist path, its mtime and size, banned words) per process: a Spark worker reads the list once.
"""
from __future__ import annotations

import gzip
import ipaddress
import os
import re
from urllib.parse import unquote, urlsplit

REASON_BLOCKLIST = "url:blocklist"
REASON_BANNED_WORD = "url:banned_word"
REASONS = (REASON_BLOCKLIST, REASON_BANNED_WORD)
SIGNAL_BLOCKLIST = "url_blocklisted"
SIGNAL_BANNED_WORDS = "url_banned_words"

_NON_ALNUM = re.compile(r"[\W_]+")  # anything but letters and digits (Unicode-aware)
_HOST_CACHE_MAX = 200_000


def tokens(url: str) -> set[str]:
    """The URL's tokens: percent-decoded, lowercased, split on non-alphanumerics."""
    return {t for t in _NON_ALNUM.split(unquote(url).lower()) if t}


def normalise_domain(name: str) -> str:
    """A host or blocklist entry in comparable form: stripped, lowercased, no leading `*.`/`.` nor trailing dot,
    IDNA (punycode) for non-ASCII labels; '' when nothing is left."""
    d = name.strip().lower()
    if d.startswith("*."):
        d = d[2:]
    d = d.strip(".")
    if d and not d.isascii():
        try:
            d = d.encode("idna").decode("ascii")
        except UnicodeError:  # a label too long or not nameprep-able: compare it as written
            pass
    return d


def host_of(url: str | None) -> str | None:
    """The URL's host in `normalise_domain` form (no scheme, userinfo, port, brackets); None when it has none.
    A URL without a scheme (`example.com/page`) is read as a host and path."""
    if not url:
        return None
    u = url.strip()
    if "//" not in u.split("?", 1)[0].split("#", 1)[0]:
        u = "//" + u
    try:
        host = urlsplit(u).hostname
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return None
    if not host:
        return None
    host = normalise_domain(unquote(host))
    return host or None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


_EXTRACTOR = None


def extractor():
    """tldextract with its bundled Public Suffix List snapshot only: no suffix list URL, no cache directory, so it
    neither fetches nor writes anything. One per process."""
    global _EXTRACTOR
    if _EXTRACTOR is None:
        import tldextract

        _EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True,
                                           include_psl_private_domains=False)
    return _EXTRACTOR


def candidate_domains(host: str) -> list[str]:
    """The host and its parent domains down to the registered domain (the public suffix plus one label), longest
    first; [] when the host is itself a public suffix. An IP address gives itself; a host whose last label is not a
    known suffix (`intranet.local`) treats that label as the suffix."""
    if _is_ip(host):
        return [host]
    labels = host.split(".")
    suffix = extractor()(host).suffix
    n_suffix = len(suffix.split(".")) if suffix else 1
    if len(labels) <= n_suffix:
        return [] if suffix else [host]
    return [".".join(labels[i:]) for i in range(len(labels) - n_suffix)]


def read_blocklist(path: str) -> frozenset[str]:
    """The entries of a blocklist file in `normalise_domain` form. Lines starting with `#` and blank lines are
    skipped, as is anything after a ` #` on a line; an entry written as a URL counts as its host."""
    opener = gzip.open if path.endswith(".gz") else open
    out = set()
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.split(" #", 1)[0].strip()
            if not line or line.startswith("#"):
                continue
            entry = host_of(line) if "/" in line else normalise_domain(line.split()[0])
            if entry:
                out.add(entry)
    return frozenset(out)


class URLFilter:
    """The URL checks of one configuration; see the module docstring. `filter(url)` -> (keep, reason or None)."""

    name = "url"

    def __init__(self, blocklist_path: str | None = None, banned_words=()):
        self.blocklist_path = blocklist_path
        self.blocklist = read_blocklist(blocklist_path) if blocklist_path else frozenset()
        self.use_blocklist = bool(blocklist_path)
        self.banned_words = frozenset(w for w in (str(x).strip().lower() for x in banned_words) if w)
        self._hosts: dict[str, bool] = {}

    @property
    def enabled(self) -> bool:
        return self.use_blocklist or bool(self.banned_words)

    def blocked_host(self, host: str) -> bool:
        hit = self._hosts.get(host)
        if hit is None:
            hit = any(d in self.blocklist for d in candidate_domains(host))
            if len(self._hosts) >= _HOST_CACHE_MAX:
                self._hosts.clear()
            self._hosts[host] = hit
        return hit

    def measure(self, url: str | None) -> dict[str, float]:
        """The configured checks' signals for one URL; {} for a document without a url."""
        if not url:
            return {}
        out = {}
        if self.use_blocklist:
            host = host_of(url)
            out[SIGNAL_BLOCKLIST] = float(host is not None and bool(self.blocklist) and self.blocked_host(host))
        if self.banned_words:
            out[SIGNAL_BANNED_WORDS] = float(len(self.banned_words & tokens(url)))
        return out

    @staticmethod
    def decide(signals: dict) -> str | None:
        """The reason from `measure`'s signals: the blocklist first, then banned words."""
        if signals.get(SIGNAL_BLOCKLIST, 0) > 0:
            return REASON_BLOCKLIST
        if signals.get(SIGNAL_BANNED_WORDS, 0) > 0:
            return REASON_BANNED_WORD
        return None

    def reason(self, url: str | None) -> str | None:
        return self.decide(self.measure(url))

    def filter(self, url: str | None) -> tuple[bool, str | None]:
        r = self.reason(url)
        return r is None, r


_FILTERS: dict[tuple, URLFilter] = {}


def file_key(path: str | None) -> tuple | None:
    """(path, mtime_ns, size) of a file: a changed file is a new cache entry."""
    if not path:
        return None
    st = os.stat(path)
    return path, st.st_mtime_ns, st.st_size


def get_url_filter(blocklist_path: str | None = None, banned_words=()) -> URLFilter:
    """A cached URLFilter per (blocklist file, its mtime and size, banned words): one per Python worker process."""
    key = (file_key(blocklist_path), tuple(sorted(set(banned_words))))
    f = _FILTERS.get(key)
    if f is None:
        if len(_FILTERS) >= 4:  # a blocklist can be millions of domains: keep few
            _FILTERS.clear()
        f = _FILTERS[key] = URLFilter(blocklist_path, banned_words)
    return f
