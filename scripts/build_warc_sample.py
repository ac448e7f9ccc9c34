#!/usr/bin/env python3
"""Build the bundled sample crawl, data/sample/warc/crawl-00000.warc.gz, from real HTML manuals (deterministic).

    python scripts/build_warc_sample.py            # (re)write the WARC from data/sample/raw/html/
    python scripts/build_warc_sample.py --check    # build into memory and compare with the committed file
    python scripts/build_warc_sample.py collect    # re-copy data/sample/raw/html/ from this machine's Debian docs

The pages are HTML manuals that Debian packages install: libffi's manual (/usr/share/doc/libffi8/html, MIT) and
five pages of the Node.js API docs (/usr/share/doc/nodejs/api, MIT); `collect` copies them (committed, so a fresh
clone needs neither package). Licences: data/sample/LICENSE-NOTES.md.

The crawl holds, as a real one does, more than pages (written with warcio, gzip per record, fixed dates and ids):
  warcinfo                                  1 record
  request + response (200, text/html)       one pair per page; the Node.js pages keep their navigation boilerplate
  response 301 / 404                        a redirect and a missing page (not documents)
  response 200 text/plain, image/png        not HTML (not documents)
  revisit, metadata                         not documents
  pages at blocked.example.net              two pages under a domain that conf/url_blocklist.txt lists
  planted PII                               emails and public IPv4 / IPv6 addresses in three pages (planted.json
                                            of this crawl: data/sample/warc/planted.json)
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import sys
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RAW = os.path.join(REPO, "data", "sample", "raw", "html")
OUT_DIR = os.path.join(REPO, "data", "sample", "warc")
OUT = os.path.join(OUT_DIR, "crawl-00000.warc.gz")
PLANTED = os.path.join(OUT_DIR, "planted.json")
DATE = "2026-11-02T10:00:00Z"
NODE_PAGES = ["synopsis", "documentation", "corepack", "querystring", "punycode"]
SOURCES = [("/usr/share/doc/libffi8/html", "libffi", "https://sourceware.org/libffi/manual/"),
           ("/usr/share/doc/nodejs/api", "nodejs", "https://nodejs.org/docs/latest/api/")]
BLOCKED = {"libffi/Memory-Usage.html", "libffi/Thread-Safety.html"}  # served from the blocklisted host
# (page, paragraph planted before </body>): the filter's PII step must remove each address from the kept text
PII = {
    "libffi/Introduction.html": ("Questions about this manual go to libffi-discuss@sourceware-mail.org; the "
                                 "mirror at 93.184.216.34 carries older releases of the manual and its examples."),
    "libffi/Closure-Example.html": ("Report mistakes in the closure example to Jane Doe at jane.doe@example-mail.com "
                                    "or to the build host 198.51.100.7 on the private network 10.1.2.3, "
                                    "or over IPv6 at 2a00:1450:4001:81b::200e when the other hosts are down."),
    "nodejs/querystring.html": ("Benchmarks of this module were run from 8.8.4.4 and from the internal host "
                                "192.168.1.20, and their results were mailed to perf-team@nodejs-example.org."),
}


def collect() -> None:
    os.makedirs(RAW, exist_ok=True)
    for folder, name, _ in SOURCES:
        os.makedirs(os.path.join(RAW, name), exist_ok=True)
        files = sorted(f for f in os.listdir(folder) if f.endswith(".html"))
        if name == "nodejs":
            files = [f"{p}.html" for p in NODE_PAGES]
        for f in files:
            shutil.copyfile(os.path.join(folder, f), os.path.join(RAW, name, f))
    print(f"collected {sum(len(os.listdir(os.path.join(RAW, n))) for _, n, _ in SOURCES)} pages into {RAW}")


def _rid(*parts) -> str:
    return f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, '/'.join(parts))}>"


def build() -> tuple[bytes, dict]:
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    buf = io.BytesIO()
    w = WARCWriter(buf, gzip=True)

    def record(uri, rtype, payload: bytes, http=None, content_type=None, extra=None):
        headers = {"WARC-Record-ID": _rid(rtype, uri, str(len(payload))), "WARC-Date": DATE}
        headers.update(extra or {})
        rec = w.create_warc_record(uri, rtype, payload=io.BytesIO(payload), http_headers=http,
                                   warc_headers_dict=headers, warc_content_type=content_type)
        w.write_record(rec)

    def response(uri, status: str, ctype: str, body: bytes, extra_headers=()):
        http = StatusAndHeaders(status, [("Content-Type", ctype), ("Content-Length", str(len(body))),
                                         *extra_headers], protocol="HTTP/1.1")
        request = StatusAndHeaders(f"GET /{uri.split('/', 3)[3]} HTTP/1.1", [("Host", uri.split('/')[2]),
                                                                            ("User-Agent", "lmrefinery-sample")],
                                   is_http_request=True)
        record(uri, "request", b"", http=request)
        record(uri, "response", body, http=http)

    record("", "warcinfo", b"software: lmrefinery scripts/build_warc_sample.py\r\nformat: WARC File Format 1.1\r\n",
           content_type="application/warc-fields", extra={"WARC-Filename": os.path.basename(OUT)})
    planted = {"pages": [], "blocked": [], "pii": {}, "skipped": {}}
    for _, name, base in SOURCES:
        for f in sorted(os.listdir(os.path.join(RAW, name))):
            key = f"{name}/{f}"
            with open(os.path.join(RAW, name, f), "rb") as fh:
                body = fh.read()
            uri = base + f
            if key in BLOCKED:
                uri = "https://docs.blocked.example.net/libffi/" + f
                planted["blocked"].append(uri)
            if key in PII:
                para = PII[key]
                body = body.replace(b"</body>", f"<p>{para}</p>\n</body>".encode(), 1)
                planted["pii"][uri] = para
            response(uri, "200 OK", "text/html; charset=utf-8", body)
            planted["pages"].append(uri)
    response("https://nodejs.org/docs/latest/api/", "301 Moved Permanently", "text/html",
             b"<html><body>Moved</body></html>", [("Location", "https://nodejs.org/docs/latest/api/index.html")])
    response("https://sourceware.org/libffi/manual/missing.html", "404 Not Found", "text/html",
             b"<html><body><h1>Not Found</h1></body></html>")
    response("https://sourceware.org/libffi/README.txt", "200 OK", "text/plain",
             b"libffi - a portable foreign function interface library\n")
    response("https://nodejs.org/static/logo.png", "200 OK", "image/png",
             bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"))
    record("https://sourceware.org/libffi/manual/index.html", "revisit", b"",
           extra={"WARC-Profile": "http://netpreserve.org/warc/1.1/revisit/identical-payload-digest",
                  "WARC-Refers-To-Target-URI": "https://sourceware.org/libffi/manual/index.html"})
    record("https://sourceware.org/libffi/manual/index.html", "metadata", b"fetchTimeMs: 41\r\n",
           content_type="application/warc-fields")
    planted["skipped"] = {"warc:metadata": 1, "warc:not_html": 2, "warc:request": len(planted["pages"]) + 4,
                          "warc:revisit": 1, "warc:status_3xx": 1, "warc:status_4xx": 1, "warc:warcinfo": 1}
    return buf.getvalue(), planted


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", nargs="?", choices=("build", "collect"), default="build")
    ap.add_argument("--check", action="store_true", help="compare a fresh build with the committed files")
    args = ap.parse_args(argv)
    if args.step == "collect":
        collect()
        return 0
    data, planted = build()
    text = json.dumps(planted, indent=1, sort_keys=True) + "\n"
    if args.check:
        with open(OUT, "rb") as f:
            same = f.read() == data
        with open(PLANTED, encoding="utf-8") as f:
            same = same and f.read() == text
        print("warc sample: identical" if same else "warc sample: DIFFERS from a fresh build")
        return 0 if same else 1
    os.makedirs(OUT_DIR, exist_ok=True)
    with open(OUT, "wb") as f:
        f.write(data)
    with open(PLANTED, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {OUT} ({len(data)} bytes, {len(planted['pages'])} pages, sha256 "
          f"{hashlib.sha256(data).hexdigest()[:16]}) and {PLANTED}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
