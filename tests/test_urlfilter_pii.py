"""The filter stage's URL filter (udfs/urlfilter.py) and PII redaction of kept text (udfs/pii.py): the kernels on
their own, against datatrove's PIIFormatter, and the stage end to end in both writers."""
import collections
import gzip
import hashlib
import json
import os
import shutil
import socket
import sys

import pytest

from jobs import filter as filter_job
from jobs.cli import UserError
from jobs.schema import DOCUMENT_COLUMNS, document_row, documents_df, estimate_tokens
from udfs import pii, urlfilter
from udfs.pii import PLACEHOLDERS, redact
from udfs.urlfilter import URLFilter, candidate_domains, get_url_filter, host_of, read_blocklist

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARAGRAPHS = os.path.join(REPO, "tests", "data", "langid", "paragraphs.jsonl")


def _blocklist(tmp_path, lines, name="domains"):
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(p)


# ---- URL filter kernel -----------------------------------------------------------------------------------------
def test_host_and_parent_domains():
    assert host_of("https://user:secret@WWW.Example.CO.UK:8443/a?b#c") == "www.example.co.uk"
    assert host_of("example.org/page") == "example.org"  # no scheme: still a host
    assert host_of("http://example.org./x") == "example.org"  # trailing dot
    assert host_of("http://Bücher.DE/") == "xn--bcher-kva.de"  # IDN: compared in punycode
    assert host_of("http://[2001:db8::1]:80/") == "2001:db8::1"
    assert host_of(None) is None and host_of("") is None and host_of("http://[::1") is None
    assert candidate_domains("www.sub.example.co.uk") == ["www.sub.example.co.uk", "sub.example.co.uk",
                                                           "example.co.uk"]
    assert candidate_domains("a.b.example.com") == ["a.b.example.com", "b.example.com", "example.com"]
    assert candidate_domains("co.uk") == [] and candidate_domains("com") == []  # a public suffix alone: nothing
    assert candidate_domains("foo.blogspot.com") == ["foo.blogspot.com", "blogspot.com"]  # ICANN suffixes only
    assert candidate_domains("8.8.8.8") == ["8.8.8.8"]
    assert candidate_domains("x.intranet.local") == ["x.intranet.local", "intranet.local"]


def test_blocklist_matches_host_and_parents_never_the_public_suffix(tmp_path):
    path = _blocklist(tmp_path, ["# UT1-style list: one domain a line", "", "example.co.uk", "*.wild.org",
                                 ".dot.net", "co.uk", "com", "BÜCHER.de", "exact.host.io  # a trailing comment",
                                 "https://as-url.net/some/path", "93.184.216.34"])
    assert read_blocklist(path) == {"example.co.uk", "wild.org", "dot.net", "co.uk", "com", "xn--bcher-kva.de",
                                    "exact.host.io", "as-url.net", "93.184.216.34"}
    f = URLFilter(path)
    blocked = ["https://example.co.uk/", "http://www.example.co.uk/a", "https://deep.sub.example.co.uk:8080/x",
               "http://user:pw@WWW.EXAMPLE.CO.UK/", "http://a.wild.org/", "http://wild.org", "http://x.dot.net/",
               "http://xn--bcher-kva.de/", "http://www.bücher.de/", "http://exact.host.io/", "http://a.exact.host.io",
               "http://as-url.net/", "http://93.184.216.34/x"]
    kept = ["http://other.co.uk/", "http://co.uk/", "http://example.com/", "http://notexample.co.uk/",
            "http://example.co.uk.evil.org/", "http://host.io/", "http://wild.org.uk/", "http://93.184.216.35/",
            "http://example.org/?next=example.co.uk", None, ""]
    assert {u: f.filter(u) for u in blocked} == {u: (False, "url:blocklist") for u in blocked}
    assert {u: f.filter(u) for u in kept} == {u: (True, None) for u in kept}
    assert f.measure("http://www.example.co.uk/") == {"url_blocklisted": 1.0}
    assert f.measure("http://other.co.uk/") == {"url_blocklisted": 0.0} and f.measure(None) == {}


def test_blocklist_gz_and_cache_keyed_by_mtime(tmp_path):
    gz = tmp_path / "domains.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        f.write("casino-site.com\n")
    assert URLFilter(str(gz)).reason("http://www.casino-site.com/") == "url:blocklist"
    path = _blocklist(tmp_path, ["first.org"])
    a = get_url_filter(path)
    assert get_url_filter(path) is a  # one per process while the file is unchanged
    assert a.reason("http://first.org/") == "url:blocklist" and a.reason("http://second.org/") is None
    _blocklist(tmp_path, ["second.org", "third.org"])
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10 ** 9))
    b = get_url_filter(path)
    assert b is not a and b.reason("http://second.org/") == "url:blocklist" and b.reason("http://first.org/") is None


def test_banned_words_are_whole_tokens():
    f = URLFilter(banned_words=["casino", "Poker"])
    assert f.filter("https://news.example.org/casino-bonus/page.html") == (False, "url:banned_word")
    assert f.reason("https://CASINO.example.org/") == "url:banned_word"  # host tokens count, case-insensitive
    assert f.reason("https://example.org/a_poker_b") == "url:banned_word"  # underscore separates tokens
    assert f.reason("https://example.org/%63asino") == "url:banned_word"  # percent-decoded first
    assert f.reason("https://example.org/casinofan/") is None  # a substring is not a token
    assert f.reason("https://example.org/occasinoo") is None and f.reason(None) is None
    assert f.measure("http://casino.poker.org/casino") == {"url_banned_words": 2.0}
    assert not URLFilter().enabled and f.enabled


def test_tldextract_makes_no_network_request(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setenv("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "https://publicsuffix.org/list/public_suffix_list.dat")
    monkeypatch.setattr(urlfilter, "_EXTRACTOR", None)  # built afresh under the patches
    ex = urlfilter.extractor()
    assert ex.suffix_list_urls == () and ex._cache.enabled is False  # no list to fetch, no cache to write
    assert candidate_domains("www.bbc.co.uk") == ["www.bbc.co.uk", "bbc.co.uk"]
    assert ex("a.b.example.com.au").suffix == "com.au"


def test_url_config_is_checked_and_resolved(tmp_path, monkeypatch):
    cfg = filter_job.resolve_config({"url": {"blocklist": "conf/pipeline.yaml", "banned_words": "Casino"}})
    assert cfg["url"] == {"blocklist": os.path.join(REPO, "conf", "pipeline.yaml"), "banned_words": ["casino"]}
    assert filter_job.signal_names(cfg)[-2:] == ["url_blocklisted", "url_banned_words"]
    off = filter_job.resolve_config({})
    assert off["url"] == {"blocklist": None, "banned_words": []} and "url_blocklisted" not in filter_job.signal_names(off)
    assert off["pii"] == {"enabled": True, "emails": True, "ips": True, "phones": False} and off["ftfy"] is False
    with pytest.raises(UserError, match="'casino-bonus' is not one URL token"):
        filter_job.resolve_config({"url": {"banned_words": ["casino-bonus"]}})
    with pytest.raises(UserError, match=r"filter.url: unknown key 'blocklists' \(did you mean 'blocklist'\?\)"):
        filter_job.resolve_config({"url": {"blocklists": "x"}})
    with pytest.raises(UserError, match="filter.pii.phones must be true or false"):
        filter_job.resolve_config({"pii": {"phones": "yes"}})
    from jobs.config import ConfigError, load_config
    conf = load_config(overrides=["filter.url.banned_words=casino,poker", "filter.pii.phones=true"])["filter"]
    assert filter_job.resolve_config(conf)["url"]["banned_words"] == ["casino", "poker"]
    with pytest.raises(ConfigError, match="filter.pii.phone"):
        load_config(overrides=["filter.pii.phone=true"])


# ---- PII kernel ------------------------------------------------------------------------------------------------
def test_emails():
    text, counts = redact("Mail jane.doe@gmail.com, J.Smith+lists@mail.example-corp.co.uk or o'neil@x.io. Done.")
    assert text == "Mail email@example.com, email@example.com or email@example.com. Done." and counts == {"email": 3}
    for s in ("user@localhost", "@handle", "a@b.c", "name at example dot com", "x@1.2.3.4", "foo@bar"):
        assert redact(s, ips=False) == (s, {}), s
    assert redact("email@example.com") == ("email@example.com", {})  # the placeholder is not counted again


def test_ipv4_public_only_and_not_part_of_a_longer_number():
    text, counts = redact("from 8.8.4.4 and 93.184.216.34:443, not 10.1.2.3, 192.168.1.20, 172.16.0.9, 127.0.0.1, "
                          "169.254.1.1, 100.64.0.1, 198.51.100.7, 0.0.0.0 nor 255.255.255.255.")
    assert counts == {"ipv4": 2}
    assert text.startswith("from 192.0.2.1 and 192.0.2.1:443, not 10.1.2.3, 192.168.1.20, 172.16.0.9, 127.0.0.1")
    for s in ("version 1.2.3.4.5", "v1.2.3.4", "build 8.8.8.8.1", "999.1.1.1", "1.2.3", "01.02.03.04",
              "8.8.8.8a", "section 4.1.2.3.b"):
        assert redact(s) == (s, {}), s
    assert redact("8.8.8.8/24 and (1.1.1.1).") == ("192.0.2.1/24 and (192.0.2.1).", {"ipv4": 2})


def test_ipv6_public_only():
    text, counts = redact("over IPv6 at 2a00:1450:4001:81b::200e, [2606:4700:4700::1111]:443 or "
                          "2001:4860:4860:0:0:0:0:8888.")
    assert text == "over IPv6 at 2001:db8::1, [2001:db8::1]:443 or 2001:db8::1." and counts == {"ipv6": 3}
    for s in ("::1", "fe80::1%eth0", "fd12:3456::1", "2001:db8::7", "::", "std::vector<int>", "a::b",
              "cafe::1", "12:30:45", "00:1a:2b:3c:4d:5e", "2001:4860::8888::1"):
        assert redact(s) == (s, {}), s
    # an IPv4-mapped address: its IPv4 part is the public address
    assert redact("::ffff:8.8.4.4") == ("::ffff:192.0.2.1", {"ipv4": 1})


def test_phones_only_when_asked_and_conservative():
    text = "Call (415) 555-2671, 415-555-2671, +1 415 555 2671 or +44 20 7946 0958 today."
    assert redact(text) == (text, {})  # off by default
    out, counts = redact(text, phones=True)
    assert out == "Call +1-555-0100, +1-555-0100, +1-555-0100 or +1-555-0100 today." and counts == {"phone": 4}
    for s in ("ISBN 978-3-16-148410-0", "on 2019-10-12", "123-456-7890", "call 555-2671", "+44 20",
              "415-555-2671-99", "order 4155552671", "+1-555-0100"):
        assert redact(s, phones=True) == (s, {}), s


def test_redaction_is_idempotent_and_keeps_private_addresses():
    texts = ["Reach ops@corp-mail.com at 8.8.4.4, 2a00:1450:4001:81b::200e or +44 20 7946 0958; the router at "
             "192.168.1.1 and ::1 stay.", "a@b.co 1.1.1.1 1.1.1.1 a@b.co", "nothing here 10.0.0.1 fe80::2"]
    for t in texts:
        once, c1 = redact(t, phones=True)
        twice, c2 = redact(once, phones=True)
        assert twice == once and c2 == {}, t
    once, counts = redact(texts[0], phones=True)
    assert counts == {"email": 1, "ipv4": 1, "ipv6": 1, "phone": 1}
    assert "192.168.1.1" in once and "::1 stay" in once
    assert redact(texts[2]) == (texts[2], {})
    for kind, placeholder in PLACEHOLDERS.items():  # no placeholder is PII under its own rule
        assert redact(placeholder, phones=True) == (placeholder, {}), kind
    assert redact("a@b.co 8.8.8.8", emails=False) == ("a@b.co 192.0.2.1", {"ipv4": 1})
    assert redact("a@b.co 8.8.8.8", ips=False) == ("email@example.com 8.8.8.8", {"email": 1})


AGREE = [
    "Questions go to libffi-discuss@sourceware-mail.org; the mirror at 93.184.216.34 carries old releases.",
    "Benchmarks ran from 8.8.4.4 and the internal host 192.168.1.20; results were mailed to perf-team@nodejs.org.",
    "Contact: first.last+tag@sub.example-mail.co.uk, backup admin_2@host.net (or the gateway 10.0.0.1).",
    "Resolvers 1.1.1.1, 9.9.9.9 and 208.67.222.222 answered; 127.0.0.1 and 172.16.5.4 are local.",
    "No personal data in this sentence at all, only numbers like 3.14 and 2.71828 and a date 2024-01-02.",
]
DIFFER = {  # datatrove's IPv4 pattern has no boundaries: it takes four numbers out of a longer dotted one
    "release 1.2.3.4.5 is out": "release 1.2.3.4.5 is out",
    "see v8.8.8.8 for details": "see v8.8.8.8 for details",
}


def test_redaction_finds_what_datatrove_finds():
    """datatrove 0.10.1's PIIFormatter (emails and public IPv4; it has no IPv6 or phones) finds the same spans on
    ordinary text: both outputs with their placeholders turned into one marker per kind are equal."""
    from datatrove.pipeline.formatters.pii import PIIFormatter

    dt = PIIFormatter(email_replacement="<EMAIL>", ip_replacement="<IP>")
    found = 0
    for t in AGREE:
        ours, counts = redact(t)
        ours = ours.replace(PLACEHOLDERS["email"], "<EMAIL>").replace(PLACEHOLDERS["ipv4"], "<IP>")
        theirs = dt.format(t)
        assert ours == theirs, t
        found += sum(counts.values())
        assert theirs.count("<EMAIL>") + theirs.count("<IP>") == sum(counts.values())
    assert found == 9  # 4 emails, 5 public IPv4 addresses
    for t, want in DIFFER.items():
        assert redact(t)[0] == want and dt.format(t) != t  # ours leaves version strings alone


# ---- the per-batch logic, no Spark -----------------------------------------------------------------------------
def _en_paragraphs():
    with open(PARAGRAPHS, encoding="utf-8") as f:
        return [r["text"] for r in map(json.loads, f) if r["lang"] == "en"]


def _prose(i: int, k: int = 4) -> str:
    ps = _en_paragraphs()
    return "\n\n".join(ps[(i * 7 + j * 13) % len(ps)] for j in range(k))


def test_filter_records_url_first_annotates_everything_and_redacts_only_kept(tmp_path):
    from jobs.config import load_config

    path = _blocklist(tmp_path, ["blocked.example"])
    cfg = filter_job.resolve_config({**load_config()["filter"], "url": {"blocklist": path, "banned_words": ["casino"]}})
    prose = _prose(1) + "\n\nWrite to the maintainers at dev-team@corp-mail.com or use the mirror at 8.8.4.4 today."
    german = "Der Ausschuss traf sich am Dienstag, um den Haushalt der Bibliothek zu besprechen. " * 5
    texts, urls = [prose, german, prose, prose, german], ["http://www.blocked.example/a", "https://blocked.example/",
                                                          "https://ok.example/casino/x", None, "https://ok.example/"]
    out = filter_job.filter_records(texts, cfg, ["web"] * 5, urls)
    assert [d["reason"] for d in out] == ["url:blocklist", "url:blocklist", "url:banned_word", None, "langid:de"]
    # a URL rejection still measures everything else (the signals table can turn the URL filter off)
    assert out[0]["lang"] == "en" and out[0]["signals"]["word_count"] > 50
    assert out[0]["signals"]["url_blocklisted"] == 1.0 and out[0]["signals"]["url_banned_words"] == 0.0
    assert "url_blocklisted" not in out[3]["signals"]  # no url: no URL signal, and it passes
    # only the kept document is redacted
    assert out[3]["pii"] == {"email": 1, "ipv4": 1} and "dev-team@corp-mail.com" not in out[3]["clean_text"]
    assert "email@example.com" in out[3]["clean_text"] and "192.0.2.1" in out[3]["clean_text"]
    assert out[0]["pii"] == {} and "dev-team@corp-mail.com" in out[0]["clean_text"]
    # without the URL config the same documents are judged by the other rules alone
    no_url = {**load_config()["filter"], "url": {"blocklist": None, "banned_words": []}}  # the shipped list is off
    plain = filter_job.filter_records(texts, filter_job.resolve_config(no_url), ["web"] * 5, urls)
    assert [d["reason"] for d in plain] == [None, "langid:de", None, None, "langid:de"]
    assert "url_blocklisted" not in plain[0]["signals"]


def test_filter_batches_recomputes_the_text_columns_and_ftfy_runs_first():
    import pyarrow as pa

    from jobs.config import load_config

    mojibake = _prose(2) + "\n\nThe authorâ€™s notes are here, write to notes.author@gmail.com for a copy of them."
    rows = [document_row("a", mojibake, url="http://x.org/"), document_row("b", "Kurz.", url=None)]
    batch = pa.RecordBatch.from_pylist([{c: r[c] for c in DOCUMENT_COLUMNS} for r in rows])
    for on in (False, True):
        cfg = filter_job.resolve_config({**load_config()["filter"], "ftfy": on})
        out = next(filter_job.filter_batches([batch], cfg)).to_pylist()
        a, b = out
        assert a["reason"] is None and b["reason"] is not None
        assert ("author’s" in a["text"]) == on and ("authorâ€™s" in a["text"]) == (not on)
        assert "notes.author@gmail.com" not in a["text"] and a["_pii_email"] == 1 and a["_pii_ipv4"] == 0
        raw = a["text"].encode("utf-8")
        assert a["n_bytes"] == len(raw) == a["_n_bytes_clean"] and a["n_tokens_est"] == estimate_tokens(len(raw))
        assert a["text_sha256"] == hashlib.sha256(raw).hexdigest() and a["n_bytes_raw"] == rows[0]["n_bytes"]
        assert b["text"] == "Kurz." and b["text_sha256"] == rows[1]["text_sha256"] and b["_pii_email"] == 0


# ---- the stage end to end --------------------------------------------------------------------------------------
BLOCKED = "blocked-example.co.uk"
PII_LINES = [  # (sentence, emails, public IPv4, public IPv6, private addresses left in place)
    ("Send corrections to the editor at jane.doe@gmail.com and she will answer within the week.", 1, 0, 0, []),
    ("Our mirror at 93.184.216.34 carries the older releases, and the build host 10.1.2.3 is internal only.",
     0, 1, 0, ["10.1.2.3"]),
    ("The lab router 192.168.1.20 forwards requests from 8.8.4.4 to ops-team@corp-mail.org for the weekly logs.",
     1, 1, 0, ["192.168.1.20"]),
    ("Over IPv6 the service answers at 2a00:1450:4001:81b::200e, while ::1 stays the local loopback address.",
     0, 0, 1, ["::1"]),
]


def _kept_prose(n: int) -> list[str]:
    """The first `n` texts of `_prose` that the shipped filter config keeps (so a rejection here is the URL's)."""
    from jobs.config import load_config

    cfg = filter_job.resolve_config(load_config()["filter"])
    cands = [_prose(i) for i in range(3 * n)]
    out = [t for t, d in zip(cands, filter_job.filter_records(cands, cfg, ["web"] * len(cands))) if d["reason"] is None]
    assert len(out) >= n
    return out[:n]


def make_stage_docs():
    """English prose (kept by the default rules) with planted PII and urls, some on a blocklisted domain and its
    subdomains, one with a banned word, look-alike domains that are not blocked, and German text."""
    docs, planted = [], {}
    prose = _kept_prose(34)

    def add(text, url=None, source="crawl"):
        docs.append(document_row(f"doc-{len(docs):03d}", text, source=source, domain="web", url=url))
        return docs[-1]["id"]

    for i in range(24):
        text = prose[i]
        if i % 2 == 0:
            line = PII_LINES[(i // 2) % len(PII_LINES)]
            first, rest = text.split("\n\n", 1)
            text = f"{first} {line[0]}\n\n{rest}"
            planted[add(text, url=f"https://ok-site{i}.example.org/page{i}")] = line
        else:
            add(text, url=None if i % 3 == 0 else f"https://www.notblocked-example.co.uk/{i}")
    blocked_urls = [f"https://{BLOCKED}/a", f"http://www.{BLOCKED}/b", f"https://deep.sub.{BLOCKED}:8443/c",
                    f"http://user:pw@WWW.{BLOCKED.upper()}/d", f"https://{BLOCKED}./e"]
    blocked = {add(prose[24 + j] + "\n\nWrite to leak@gmail.com for more.", url=u, source="crawl-blocked")
               for j, u in enumerate(blocked_urls)}
    blocked.add(add("Der Ausschuss traf sich am Dienstag, um den Haushalt zu besprechen. " * 6,
                    url=f"https://x.{BLOCKED}/de", source="crawl-blocked"))
    banned = {add(prose[29], url="https://news.example.org/casino-bonus/page1"): "url:banned_word",
              add(prose[30], url=f"https://{BLOCKED}/casino"): "url:blocklist"}  # both: the blocklist comes first
    kept_lookalikes = {add(prose[31], url="https://news.example.org/casinofan/page2"),
                       add(prose[32], url="https://other.co.uk/x"),
                       add(prose[33], url=f"https://{BLOCKED}.evil.org/")}
    return docs, planted, blocked, banned, kept_lookalikes


@pytest.fixture(scope="module")
def url_pii_lakes(spark, tmp_path_factory):
    from jobs.tables import Lake

    base = tmp_path_factory.mktemp("urlpii")
    blocklist = _blocklist(base, ["# planted", "", f"*.{BLOCKED}", "co.uk", "com"])
    docs, planted, blocked, banned, lookalikes = make_stage_docs()
    sets = ["--set", f"filter.url.blocklist={blocklist}", "--set", "filter.url.banned_words=casino"]
    roots = {}
    for writer in ("auto", "spark"):
        roots[writer] = str(base / writer)
        Lake(spark, roots[writer]).write(documents_df(spark, docs).repartition(3), "documents")
        assert filter_job.main(["--lake", roots[writer], "--set", f"filter.writer={writer}"] + sets) == 0
    return {"roots": roots, "spark": spark, "docs": docs, "planted": planted, "blocked": blocked,
            "banned": banned, "lookalikes": lookalikes, "blocklist": blocklist, "sets": sets}


@pytest.mark.parametrize("writer", ["auto", "spark"])
def test_stage_rejects_blocked_urls_and_redacts_kept_text(url_pii_lakes, writer):
    from jobs.config import apply_overrides, load_config
    from jobs.tables import Lake

    L = url_pii_lakes
    lake = Lake(L["spark"], L["roots"][writer])
    kept = {r["id"]: r for r in lake.read_arrow("filtered").to_pylist()}
    rej = {r["id"]: r for r in lake.read_arrow("rejected").to_pylist()}
    by_id = {d["id"]: d for d in L["docs"]}
    # every document of the blocked domain and its subdomains, German one included, is url:blocklist
    url_rej = {i: r["reason"] for i, r in rej.items() if r["reason"].startswith("url:")}
    assert url_rej == {**{i: "url:blocklist" for i in L["blocked"]}, **L["banned"]} and len(url_rej) == 8
    assert L["lookalikes"] <= set(kept) and set(L["planted"]) <= set(kept)
    # the stage's decisions are the per-batch logic's
    section = apply_overrides(load_config(), [s for s in L["sets"] if s != "--set"])["filter"]
    cfg = filter_job.resolve_config(section)
    ref = filter_job.filter_records([d["text"] for d in L["docs"]], cfg, [d["domain"] for d in L["docs"]],
                                    [d["url"] for d in L["docs"]])
    assert {d["id"]: r["reason"] for d, r in zip(L["docs"], ref)} == {
        **{i: None for i in kept}, **{i: r["reason"] for i, r in rej.items()}}
    # rejected rows are the input unchanged (a blocked page keeps its email)
    for i in L["blocked"]:
        assert all(rej[i][c] == by_id[i][c] for c in DOCUMENT_COLUMNS)
    assert "leak@gmail.com" in rej["doc-024"]["text"]
    # planted PII is gone from the kept text, the placeholders are there, private addresses stay
    want = collections.Counter()
    for i, (line, n_email, n_v4, n_v6, private) in L["planted"].items():
        text = kept[i]["text"]
        assert line not in text
        assert text.count(PLACEHOLDERS["email"]) == n_email and text.count(PLACEHOLDERS["ipv4"]) == n_v4
        assert text.count(PLACEHOLDERS["ipv6"]) == n_v6 and all(p in text for p in private)
        want.update(email=n_email, ipv4=n_v4, ipv6=n_v6, documents=1)
    for r in kept.values():
        for leak in ("jane.doe@gmail.com", "ops-team@corp-mail.org", "93.184.216.34", "8.8.4.4",
                     "2a00:1450:4001:81b::200e"):
            assert leak not in r["text"]
        b = r["text"].encode("utf-8")  # the derived columns are the written text's
        assert r["text_sha256"] == hashlib.sha256(b).hexdigest() and r["n_bytes"] == len(b)
        assert r["n_tokens_est"] == estimate_tokens(len(b)) and r["n_bytes_raw"] == by_id[r["id"]]["n_bytes"]
    m = [r for r in lake.read_arrow("metrics").to_pylist() if r["stage"] == "filter"][-1]
    extra = json.loads(m["extra"])
    assert extra["pii"] == {"email": want["email"], "ipv4": want["ipv4"], "ipv6": want["ipv6"],
                            "documents": want["documents"]}
    assert want["email"] >= 4 and want["ipv4"] >= 4 and want["ipv6"] >= 2
    assert dict(m["reasons"])["url:blocklist"] == len(L["blocked"]) + 1
    assert extra["url_filter"]["blocklist_entries"] == 3 and extra["url_filter"]["banned_words"] == ["casino"]
    assert extra["url_blocklist"] and m["tokens_out"] == sum(r["n_tokens_est"] for r in kept.values())
    assert any("crawl-blocked" in line and "url:blocklist" in line for line in extra["loud_losses"])
    # the audit sample: the smallest ids of changed documents, counts only, never the values
    with open(os.path.join(L["roots"][writer], "audit", "filtered_pii.jsonl"), encoding="utf-8") as f:
        raw = f.read()
    audit = [json.loads(line) for line in raw.splitlines()]
    assert [a["id"] for a in audit] == sorted(L["planted"])[:5]
    for a in audit:
        line = L["planted"][a["id"]]
        assert {k: a.get(k, 0) for k in ("email", "ipv4", "ipv6")} == dict(zip(("email", "ipv4", "ipv6"), line[1:4]))
    assert "@" not in raw and "93.184" not in raw and "8.8.4.4" not in raw
    # the signals table re-decides the run: the URL rules first, and off when the config has no URL filter
    sig = lake.read("filter_signals")
    assert {"url_blocklisted", "url_banned_words"} <= set(sig.columns)
    got = {r["id"]: r["r"] for r in sig.select("id", filter_job.decision_column(cfg, sig.columns).alias("r"))
           .toLocalIterator()}
    assert got == {**{i: None for i in kept}, **{i: r["reason"] for i, r in rej.items()}}
    plain_cfg = filter_job.resolve_config({**load_config()["filter"], "url": {"blocklist": None, "banned_words": []}})
    plain = {r["id"]: r["r"] for r in sig.select("id", filter_job.decision_column(plain_cfg, sig.columns)
                                                 .alias("r")).toLocalIterator()}
    plain_ref = filter_job.filter_records([d["text"] for d in L["docs"]], plain_cfg, [d["domain"] for d in L["docs"]],
                                          [d["url"] for d in L["docs"]])
    assert plain == {d["id"]: r["reason"] for d, r in zip(L["docs"], plain_ref)}
    assert sum(plain[i] is None for i in L["blocked"]) == 5  # without the URL filter the English blocked pages pass


def test_both_writers_give_the_same_tables_metrics_and_pii_audit(url_pii_lakes):
    from jobs.tables import Lake

    sys.path.insert(0, os.path.join(REPO, "scripts"))
    from lake_digest import table_digest

    L = url_pii_lakes
    a, b = (Lake(L["spark"], L["roots"][w]) for w in ("auto", "spark"))
    for t in ("filtered", "rejected", "filter_signals"):
        assert table_digest(a.path(t)) == table_digest(b.path(t)), t

    def extra(lake):
        m = [r for r in lake.read_arrow("metrics").to_pylist() if r["stage"] == "filter"][-1]
        return {k: v for k, v in json.loads(m["extra"]).items() if k != "timings"}

    assert extra(a) == extra(b)

    def audit(root):
        with open(os.path.join(root, "audit", "filtered_pii.jsonl"), encoding="utf-8") as f:
            return [{k: v for k, v in json.loads(line).items() if k != "run_id"} for line in f]

    assert audit(L["roots"]["auto"]) == audit(L["roots"]["spark"]) and len(audit(L["roots"]["auto"])) == 5


def test_a_missing_blocklist_is_one_line(url_pii_lakes, tmp_path, capsys):
    root = str(tmp_path / "lake")
    shutil.copytree(os.path.join(url_pii_lakes["roots"]["auto"], "documents"), os.path.join(root, "documents"))
    rc = filter_job.run_main("filter", filter_job.main, ["--lake", root, "--set",
                                                         f"filter.url.blocklist={tmp_path / 'nope.txt'}"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "filter.url.blocklist: file not found" in err


def test_pii_off_leaves_kept_text_as_cleaned():
    from jobs.config import load_config

    cfg = filter_job.resolve_config({**load_config()["filter"], "pii": {"enabled": False}})
    text = _prose(3) + "\n\nWrite to the maintainers at dev-team@corp-mail.com or use the mirror at 8.8.4.4 today."
    d = filter_job.filter_records([text], cfg, ["web"])[0]
    assert d["reason"] is None and d["pii"] == {} and "dev-team@corp-mail.com" in d["clean_text"]
    assert filter_job.pii_kinds(cfg) == [] and pii.KINDS == filter_job.PII_KINDS
