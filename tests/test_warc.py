"""WARC ingest: one document per 2xx HTML response of real HTML manuals (data/sample/warc, built from Debian's
libffi and Node.js docs by scripts/build_warc_sample.py), every other record kind counted, broken records
quarantined without losing the ones before them, byte-range tasks that agree with one pass over the file."""
import collections
import gzip
import io
import json
import os
import re

import pytest

from udfs.records import Limits, SourceSpec, iter_warc_units
from udfs.warc import HtmlOptions

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WARC = os.path.join(REPO, "data", "sample", "warc", "crawl-00000.warc.gz")
RAW_HTML = os.path.join(REPO, "data", "sample", "raw", "html")
SPEC = SourceSpec.from_dict({"name": "crawl", "domain": "web", "format": "warc", "path": WARC})
TAGS = ("p", "div", "span", "a", "li", "ul", "ol", "code", "pre", "body", "html", "head", "script", "style", "table",
        "td", "tr", "h1", "h2", "h3", "dl", "dt", "dd", "meta", "link", "br", "hr", "em", "strong", "b", "i", "nav")
MARKUP = re.compile(r"</?(?:%s)(?:\s[^>]*)?/?>" % "|".join(TAGS), re.I)


def units(path=WARC, limits=None, start=0, end=-1):
    name = "crawl"  # one display name, so units of two files compare equal
    return list(iter_warc_units(SPEC, path, name, name, start, end, limits or Limits(html=HtmlOptions())))


def planted():
    with open(os.path.join(REPO, "data", "sample", "warc", "planted.json")) as f:
        return json.load(f)


def norm(s: str) -> str:
    return " ".join(s.split())


@pytest.fixture(scope="module")
def sample_units():
    return units()


def test_one_document_per_html_page_with_url_meta_and_trace(sample_units):
    docs = [u for u in sample_units if u["kind"] == "doc"]
    q = [u for u in sample_units if u["kind"] == "quarantine"]
    pages = planted()["pages"]
    # every 2xx HTML response is a document or, for the two menu-only pages of libffi's manual, extract:empty
    assert len(docs) + len(q) == len(pages) and {u["reason"] for u in q} == {"extract:empty"}
    assert {d["url"] for d in docs} <= set(pages)
    offsets = [u["trace"]["byte_offset"] for u in sample_units if u["kind"] in ("doc", "quarantine")]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    with open(WARC, "rb") as f:
        data = f.read()
    for d in docs:
        meta = json.loads(d["meta"])
        assert meta["http_status"] == 200 and meta["content_type"] == "text/html" and meta["charset"] == "utf-8"
        assert meta["warc_record_id"].startswith("<urn:uuid:") and d["id"] == "crawl/" + meta["warc_record_id"][10:-1]
        assert meta["warc_date"] == "2026-11-02T10:00:00Z" and meta["extractor"].startswith("trafilatura ")
        # the trace's offset is where the record's gzip member starts: it decompresses to that record alone
        member = gzip.GzipFile(fileobj=io.BytesIO(data[d["trace"]["byte_offset"]:])).read(4096)
        assert member.startswith(b"WARC/1.") and f"WARC-Target-URI: {d['url']}".encode() in member


def _paragraphs(path):
    from lxml import html as H

    doc = H.fromstring(open(path, "rb").read())
    # body paragraphs: not texinfo's "Next: / Previous: / Up:" header nor Node.js' sidebar and footer
    body = doc.xpath("//p[not(ancestor::div[@class='header' or @id='column2' or @id='toc'])]")
    return [norm(p.text_content()) for p in body], doc


def test_main_body_paragraphs_present_and_no_markup_or_navigation(sample_units):
    docs = {d["url"]: d for d in sample_units if d["kind"] == "doc"}
    checked = 0
    for d in docs.values():
        assert not MARKUP.search(d["text"]), (d["url"], MARKUP.search(d["text"]).group(0))
        assert "&lt;" not in d["text"] and "&amp;" not in d["text"]  # entities decoded
    for url, d in docs.items():
        name = url.rsplit("/", 1)[1]
        folder = "nodejs" if "nodejs.org" in url else "libffi"
        paras, tree = _paragraphs(os.path.join(RAW_HTML, folder, name))
        text = norm(d["text"])
        long = [p for p in paras if len(p) >= 80]
        found = [p for p in long if p in text]
        # the manual's body paragraphs are in the text (favor_precision may drop a stray one, never most)
        assert len(found) >= 0.8 * len(long), (url, [p for p in long if p not in text][:2])
        checked += len(long)
        if folder == "nodejs":  # the 60-entry sidebar of every Node.js page is boilerplate, not text
            nav = {norm(a.text_content()) for a in tree.xpath('//div[@id="column2"]//a')}
            body_text = norm(" ".join(e.text_content() for e in tree.xpath('//div[@id="apicontent"]')))
            nav = {n for n in nav if len(n) >= 12 and n not in body_text}  # labels the page itself does not use
            assert len(nav) > 10 and sum(n in text for n in nav) <= 0.1 * len(nav), url
        else:  # texinfo's navigation line is not text either
            assert "Previous: " not in d["text"] and "[Index]" not in d["text"], url
    assert checked > 50


def test_every_other_record_kind_is_counted_not_stored(sample_units):
    skipped = collections.Counter(u["reason"] for u in sample_units if u["kind"] == "skip")
    assert dict(skipped) == planted()["skipped"]


def _record(rtype, uri, block: bytes, extra: str = "") -> bytes:
    head = (f"WARC/1.1\r\nWARC-Type: {rtype}\r\nWARC-Target-URI: {uri}\r\nWARC-Date: 2026-11-02T10:00:00Z\r\n"
            f"WARC-Record-ID: <urn:uuid:00000000-0000-0000-0000-{abs(hash((rtype, uri, block))) % 10**12:012d}>\r\n"
            f"{extra}Content-Type: application/http; msgtype=response\r\nContent-Length: {len(block)}\r\n\r\n")
    return head.encode() + block + b"\r\n\r\n"


def _http(status: str, ctype: str, body: bytes, headers: str = "") -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n{headers}\r\n".encode() + body


PAGE = ("<html><head><title>T</title></head><body><article><h1>A page about rivers</h1>"
        + "".join(f"<p>Paragraph {i}: the river runs past the old mill and the farmers bring their grain to be "
                  f"ground there every autumn, as their parents did before them.</p>" for i in range(6))
        + "</article></body></html>")


def test_each_kind_of_record_and_encoding(tmp_path):
    import zlib

    gz = zlib.compressobj(9, zlib.DEFLATED, 31)
    gz_body = gz.compress(PAGE.encode()) + gz.flush()
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (PAGE.encode()[:100], PAGE.encode()[100:])) + b"0\r\n\r\n"
    latin = PAGE.replace("farmers", "fermi\u00e8res").replace("<head>", '<head><meta charset="windows-1252">')
    records = [
        _record("response", "http://a.example.org/plain", _http("200 OK", "text/html", PAGE.encode())),
        _record("response", "http://a.example.org/gzip", _http("200 OK", "text/html", gz_body,
                                                               "Content-Encoding: gzip\r\n")),
        _record("response", "http://a.example.org/chunked", _http("200 OK", "text/html; charset=utf-8", chunked,
                                                                  "Transfer-Encoding: chunked\r\n")),
        _record("response", "http://a.example.org/latin", _http("200 OK", "text/html", latin.encode("cp1252"))),
        _record("response", "http://a.example.org/xhtml", _http("200 OK", "application/xhtml+xml", PAGE.encode())),
        _record("response", "http://a.example.org/e500", _http("500 Internal Server Error", "text/html", b"<p>x</p>")),
        _record("response", "http://a.example.org/e100", _http("100 Continue", "text/html", b"")),
        _record("response", "http://a.example.org/json", _http("200 OK", "application/json", b'{"a": 1}')),
        _record("response", "dns:a.example.org", b"20261102100000\na.example.org. 300 IN A 93.184.216.34\n"),
        _record("response", "http://a.example.org/nav", _http("200 OK", "text/html",
                                                              b"<html><head><script>go()</script></head><body>"
                                                              b"</body></html>")),
        _record("response", "http://a.example.org/badgzip", _http("200 OK", "text/html", b"not gzip at all",
                                                                  "Content-Encoding: gzip\r\n")),
        _record("response", "http://a.example.org/br", _http("200 OK", "text/html", b"xx", "Content-Encoding: br\r\n")),
        _record("response", "http://a.example.org/badstatus", b"HTTP/1.1 OK\r\n\r\n<p>x</p>"),
        _record("conversion", "http://a.example.org/plain", b"text"),
        _record("resource", "file:///x.txt", b"text"),
    ]
    path = tmp_path / "kinds.warc"
    path.write_bytes(b"".join(records))
    got = units(str(path))
    assert len(got) == len(records)  # one unit per record
    docs = {u["url"]: u for u in got if u["kind"] == "doc"}
    assert set(docs) == {f"http://a.example.org/{n}" for n in ("plain", "gzip", "chunked", "latin", "xhtml")}
    assert docs["http://a.example.org/gzip"]["text"] == docs["http://a.example.org/plain"]["text"]
    assert docs["http://a.example.org/chunked"]["text"] == docs["http://a.example.org/plain"]["text"]
    assert "fermi\u00e8res" in docs["http://a.example.org/latin"]["text"]
    assert json.loads(docs["http://a.example.org/latin"]["meta"])["charset"] == "cp1252"
    assert all("Paragraph 5: the river runs past the old mill" in d["text"] for d in docs.values())
    kinds = collections.Counter((u["kind"], u.get("reason")) for u in got if u["kind"] != "doc")
    assert kinds == collections.Counter({("skip", "warc:status_5xx"): 1, ("skip", "warc:status_1xx"): 1,
                                         ("skip", "warc:not_html"): 1, ("skip", "warc:not_http"): 1,
                                         ("quarantine", "extract:empty"): 1, ("quarantine", "warc:corrupt"): 3,
                                         ("skip", "warc:conversion"): 1, ("skip", "warc:resource"): 1})
    corrupt = sorted(u["detail"] for u in got if u.get("reason") == "warc:corrupt")
    assert any("gzip" in d for d in corrupt) and any("'br'" in d for d in corrupt) and any("status" in d for d in corrupt)


def test_timeout_and_too_large_are_quarantined(tmp_path):
    big = "<html><body>" + "".join(f"<div><p>Row {i} of a long table of figures and words, with more words to "
                                   f"make the paragraph long enough to count.</p></div>" for i in range(4000)) + \
          "</body></html>"
    path = tmp_path / "big.warc"
    path.write_bytes(_record("response", "http://b.example.org/big", _http("200 OK", "text/html", big.encode()))
                     + _record("response", "http://b.example.org/ok", _http("200 OK", "text/html", PAGE.encode())))
    # the big page takes ~0.8 s on this machine, the small one ~5 ms
    timed = units(str(path), Limits(html=HtmlOptions(timeout_s=0.1)))
    assert [u.get("reason") for u in timed] == ["extract:timeout", None]
    assert timed[0]["detail"] == "no result after 0.1 s" and timed[0]["raw"].startswith(b"<html><body>")
    import signal
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)  # no alarm left armed after a page
    small = units(str(path), Limits(html=HtmlOptions(max_html_bytes=len(PAGE) + 10)))
    assert [u.get("reason") for u in small] == ["too_large", None]
    assert [u.get("reason") for u in units(str(path), Limits(max_doc_bytes=500, html=HtmlOptions(timeout_s=0)))] == \
        ["too_large", "too_large"]  # extracted text over max_doc_bytes


def test_timeout_holds_when_the_alarm_is_swallowed(monkeypatch):
    """A raise from the alarm can land where Python ignores it (a weakref callback run by the garbage collector:
    how CI once saw a 0.8 s page pass a 0.1 s limit) or in the extractor's own broad except. The page is still a
    timeout, and the alarm repeats, so one swallowed raise does not leave the page unbounded."""
    import signal
    import time
    import trafilatura
    from udfs.warc import extract_text

    def swallows_everything(html, **kw):  # every raise ignored: the page runs to its end
        t0 = time.monotonic()
        while time.monotonic() - t0 < 0.4:
            try:
                sum(range(2000))
            except BaseException:
                pass
        return "a page of text"

    monkeypatch.setattr(trafilatura, "extract", swallows_everything)
    assert extract_text("<html></html>", None, HtmlOptions(timeout_s=0.05)) == \
        (None, "extract:timeout", "no result after 0.05 s")
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)

    swallowed = []

    def swallows_once(html, **kw):  # the first raise ignored, the next one ends the page
        t0 = time.monotonic()
        while time.monotonic() - t0 < 5:
            try:
                sum(range(2000))
            except BaseException:
                if swallowed:
                    raise
                swallowed.append(time.monotonic() - t0)
        return "a page of text"

    monkeypatch.setattr(trafilatura, "extract", swallows_once)
    t0 = time.monotonic()
    assert extract_text("<html></html>", None, HtmlOptions(timeout_s=0.05))[1] == "extract:timeout"
    assert len(swallowed) == 1 and time.monotonic() - t0 < 1.0  # ended by the repeat, not after 5 s

    monkeypatch.setattr(trafilatura, "extract", lambda html, **kw: "quick text")
    assert extract_text("<html></html>", None, HtmlOptions(timeout_s=0.05)) == ("quick text", None, "")
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_truncated_final_record_is_quarantined_and_earlier_records_kept(tmp_path, sample_units):
    """A file cut anywhere inside its last record (its gzip member, its header, its block) keeps every record
    before it, and the cut record is one warc:truncated entry at its offset."""
    with open(WARC, "rb") as f:
        data = f.read()
    last = sample_units[-1]["trace"]["byte_offset"]  # the metadata record, a gzip member of its own
    for keep in (3, 12, 40, 80, 150, len(data) - last - 8, len(data) - last - 1):
        got = units(str(_write(tmp_path / "cut.warc.gz", data[:last + keep])))
        assert got[:-1] == sample_units[:-1], keep
        assert (got[-1]["kind"], got[-1]["reason"], got[-1]["trace"]["byte_offset"]) == \
            ("quarantine", "warc:truncated", last), (keep, got[-1])
    # the same crawl uncompressed, cut inside the last page's HTML, inside the last record's header, and in its block
    plain = gzip.decompress(data)
    full = units(str(_write(tmp_path / "full.warc", plain)))
    assert [(u["kind"], u.get("id"), u.get("text")) for u in full] == \
        [(u["kind"], u.get("id"), u.get("text")) for u in sample_units]
    page = plain.rfind(b"WARC/1.0\r\n", 0, plain.rfind(b"Content-Type: text/html; charset=utf-8"))
    meta = plain.rfind(b"WARC/1.0\r\n", 0, plain.rfind(b"WARC-Type: metadata"))
    for at, keep in ((page, 2000), (meta, 3), (meta, 30), (meta, 150), (meta, len(plain) - meta - 8)):
        plain_cut = plain[:at + keep]
        assert plain_cut.rstrip(b"\r\n") != plain.rstrip(b"\r\n")
        got = units(str(_write(tmp_path / "cut.warc", plain_cut)))
        n_before = sum(1 for u in full if u["trace"]["byte_offset"] < at)
        assert got[:-1] == full[:n_before], (at, keep)
        assert (got[-1]["reason"], got[-1]["trace"]["byte_offset"]) == ("warc:truncated", at), (at, keep, got[-1])
    # garbage after the last record: the records before stay, the rest is one warc:corrupt entry
    got3 = units(str(_write(tmp_path / "garbage.warc", plain + b"this is not a WARC record\r\n\r\n")))
    assert got3[:-1] == full and got3[-1]["reason"] == "warc:corrupt"


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("chunk", [3000, 20000, 65536])
def test_byte_range_tasks_give_the_same_units_as_one_pass(tmp_path, sample_units, chunk):
    with open(WARC, "rb") as f:
        plain = gzip.decompress(f.read())
    # a page whose text holds something that looks like a record header must not fool the resync
    trap = _http("200 OK", "text/html", PAGE.replace("<h1>", "<pre>\r\nWARC/1.1\r\nContent-Length: 5\r\n\r\n</pre><h1>")
                 .encode())
    path = _write(tmp_path / "plain.warc", plain + _record("response", "http://c.example.org/trap", trap))
    whole = units(str(path))
    size = os.path.getsize(path)
    parts = []
    for start in range(0, size, chunk):
        parts += units(str(path), start=start, end=min(start + chunk, size))
    assert parts == whole
    assert len(whole) == len(sample_units) + 1


def test_ingest_job_on_the_sample_crawl(spark, tmp_path):
    """jobs/ingest.py --format warc: documents and quarantine tables, skipped records per kind in the metrics row
    (conservation: records = documents + quarantined + skipped), both writers the same."""
    import sys

    from jobs import ingest
    from jobs.tables import Lake

    sys.path.insert(0, os.path.join(REPO, "scripts"))
    from lake_digest import table_digest

    with open(WARC, "rb") as f:
        data = f.read()
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "crawl-00000.warc.gz").write_bytes(data)
    plain = gzip.decompress(data)
    copy = plain.replace(b"urn:uuid:", b"urn:uuid:1")  # another crawl of the same pages: other record ids
    at = copy.rfind(b"WARC/1.0\r\n", 0, copy.rfind(b"WARC-Type: metadata"))
    assert at > 0
    (inputs / "crawl-00001.warc").write_bytes(copy[:at + 100])  # cut inside its last record
    lakes = {}
    for writer in ("auto", "spark"):
        lakes[writer] = str(tmp_path / f"lake-{writer}")
        assert ingest.main(["--lake", lakes[writer], "--input", str(inputs), "--format", "warc", "--source", "crawl",
                            "--domain", "web", "--set", f"ingest.writer={writer}", "--set",
                            "ingest.chunk_bytes=40000"]) == 0
    for t in ("documents", "quarantine"):
        assert table_digest(os.path.join(lakes["auto"], t)) == table_digest(os.path.join(lakes["spark"], t)), t
    lake = Lake(spark, lakes["auto"])
    docs = lake.read_arrow("documents").to_pylist()
    q = lake.read_arrow("quarantine").to_pylist()
    p = planted()
    n_pages = len(p["pages"])
    assert len(docs) == 2 * (n_pages - 2)
    assert collections.Counter(r["reason"] for r in q) == {"extract:empty": 4, "warc:truncated": 1}
    assert all(d["url"] and d["trace"]["byte_offset"] is not None and d["trace"]["line"] is None for d in docs)
    trunc = next(r for r in q if r["reason"] == "warc:truncated")
    assert trunc["trace"]["file"].endswith("crawl-00001.warc")
    rows = [r for r in lake.read_arrow("metrics").to_pylist() if r["stage"] == "ingest"]
    extra = json.loads(rows[-1]["extra"])
    want_skipped = {k: 2 * v for k, v in p["skipped"].items()}
    want_skipped["warc:metadata"] -= 1  # the cut removed the second copy's metadata record
    assert extra["skipped_records"] == want_skipped
    assert extra["input_units"] == len(docs) + len(q) + sum(want_skipped.values())
    assert rows[-1]["reasons"] and dict(rows[-1]["reasons"]) == {"extract:empty": 4, "warc:truncated": 1}


def test_the_sample_crawl_is_reproducible_from_its_raw_pages():
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_warc_sample",
                                                  os.path.join(REPO, "scripts", "build_warc_sample.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--check"]) == 0


def test_the_time_limit_holds_inside_spark_tasks(spark, tmp_path):
    """The per-page limit is SIGALRM-based: it must work in PySpark's Python workers (their main thread)."""
    from jobs import ingest
    from jobs.tables import Lake

    lake_dir = str(tmp_path / "lake")
    assert ingest.main(["--lake", lake_dir, "--input", WARC, "--format", "warc", "--source", "crawl", "--domain",
                        "web", "--set", "ingest.html.timeout_s=0.000001"]) == 0
    lake = Lake(spark, lake_dir)
    assert lake.read("documents").count() == 0
    reasons = {r["reason"] for r in lake.read_arrow("quarantine").to_pylist()}
    assert reasons == {"extract:timeout"}


def test_the_report_shows_warc_extraction_url_and_pii_counts():
    from jobs.report import render_web

    latest = {"ingest": {"reasons": {"extract:empty": 2, "invalid_json": 1, "warc:truncated": 1},
                         "extra": {"skipped_records": {"warc:request": 29, "warc:status_3xx": 1}}},
              "filter": {"reasons": {"url:blocklist": 2, "langid:fr": 3}, "extra": {"pii": {"email": 3, "ipv4": 2,
                                                                                           "documents": 3}}}}
    html = render_web(latest)
    for key, n in (("warc:request", 29), ("warc:status_3xx", 1), ("extract:empty", 2), ("warc:truncated", 1),
                   ("url:blocklist", 2), ("pii:email", 3), ("pii:ipv4", 2), ("pii:documents", 3)):
        assert re.search(rf"<td[^>]*>{re.escape(key)}</td>.*?data-value=\"{n}\"", html), key
    assert "invalid_json" not in html and "langid:fr" not in html
    assert "No WARC source" in render_web({"ingest": {"reasons": {}, "extra": {}}})


def test_sample_crawl_through_ingest_and_filter_blocklist_and_pii(spark, tmp_path):
    """The issue's path on real pages: the blocklisted host's pages are all rejected with url:blocklist, and the
    planted emails and public IPv4 / IPv6 addresses are absent from every kept text (placeholders instead), while
    the private address stays."""
    from jobs import filter as filter_job
    from jobs import ingest
    from jobs.tables import Lake

    lake_dir = str(tmp_path / "lake")
    assert ingest.main(["--lake", lake_dir, "--input", WARC, "--format", "warc", "--source", "crawl", "--domain",
                        "docs"]) == 0
    assert filter_job.main(["--lake", lake_dir, "--set",
                            f"filter.url.blocklist={os.path.join(REPO, 'conf', 'url_blocklist.txt')}"]) == 0
    lake = Lake(spark, lake_dir)
    kept = lake.read_arrow("filtered").to_pylist()
    rejected = lake.read_arrow("rejected").to_pylist()
    p = planted()
    assert sorted(r["url"] for r in rejected if r["reason"] == "url:blocklist") == sorted(p["blocked"])
    assert not any("blocked.example.net" in (r["url"] or "") for r in kept)
    planted_values = ("libffi-discuss@sourceware-mail.org", "93.184.216.34", "jane.doe@example-mail.com",
                      "2a00:1450:4001:81b::200e", "8.8.4.4", "perf-team@nodejs-example.org")
    for r in kept:
        for v in planted_values:
            assert v not in r["text"], (r["url"], v)
        assert r["text_sha256"] == __import__("hashlib").sha256(r["text"].encode()).hexdigest()
    intro = next(r for r in kept if r["url"].endswith("/Introduction.html"))
    assert "email@example.com" in intro["text"] and "192.0.2.1" in intro["text"]
    closure = next(r for r in kept if r["url"].endswith("/Closure-Example.html"))
    assert "10.1.2.3" in closure["text"] and "2001:db8::1" in closure["text"]
    assert "198.51.100.7" in closure["text"]  # TEST-NET-2, a documentation range, not global: it stays too
    rows = [r for r in lake.read_arrow("metrics").to_pylist() if r["stage"] == "filter"]
    pii = json.loads(rows[-1]["extra"])["pii"]
    assert pii["email"] >= 2 and pii["ipv4"] >= 1 and pii["ipv6"] >= 1
