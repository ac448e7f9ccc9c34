#!/usr/bin/env python3
"""WARC ingest: pages/s/core of the ingest stage vs the extractor alone in a loop, on real HTML of this machine.

    .venv/bin/python bench/bench_warc.py --pages 2000 --files 4 --cores 2

The crawl (not timed) is built from HTML pages installed on the machine (Rust's HTML docs under ~/.rustup, Node.js,
Valgrind, libxslt and other /usr/share/doc manuals; files of 2 KB - 512 KB, a fixed hash sample), written as
`--files` .warc.gz files with one request + response record per page, as a crawler writes them. Three runs:

  extractor loop   one process: trafilatura.extract(html, favor_precision=True) per page, the HTML read from memory
  kernel loop      one process: udfs.records.iter_warc_units over the files (WARC parsing, HTTP, charset, extraction,
                   document building, sha256)
  ingest stage     jobs/ingest.py main() on local[N] (the same work in Spark tasks, documents + quarantine tables
                   written and committed, metrics, audit); JVM start timed separately and excluded

and prints pages/s, pages/s/core and each one's ratio to the extractor loop per core. All three must agree on the
number of pages that gave text.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import io
import os
import shutil
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

ROOTS = [os.path.expanduser("~/.rustup/toolchains/*/share/doc/rust/html"), "/usr/share/doc"]


def find_pages(n: int) -> list[str]:
    seen, paths = set(), []
    for pattern in ROOTS:
        for root in sorted(glob.glob(pattern)):
            for d, _, files in os.walk(root):
                for f in files:
                    if not f.endswith(".html"):
                        continue
                    p = os.path.join(d, f)
                    try:
                        size = os.path.getsize(p)
                    except OSError:
                        continue
                    if 2048 <= size <= 512 << 10:
                        rel = os.path.relpath(p, root)
                        if rel not in seen:
                            seen.add(rel)
                            paths.append(p)
    paths.sort(key=lambda p: hashlib.sha1(p.encode()).hexdigest())
    return sorted(paths[:n])


def write_crawl(pages: list[str], out_dir: str, files: int) -> list[str]:
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    outs = []
    for k in range(files):
        path = os.path.join(out_dir, f"crawl-{k:05d}.warc.gz")
        with open(path, "wb") as fh:
            w = WARCWriter(fh, gzip=True)
            for i, p in enumerate(pages[k::files]):
                body = open(p, "rb").read()
                uri = "https://docs.example.org/" + p.lstrip("/")
                req = StatusAndHeaders("GET / HTTP/1.1", [("Host", "docs.example.org")], is_http_request=True)
                w.write_record(w.create_warc_record(uri, "request", payload=io.BytesIO(b""), http_headers=req))
                http = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                                                   ("Content-Length", str(len(body)))], protocol="HTTP/1.1")
                w.write_record(w.create_warc_record(uri, "response", payload=io.BytesIO(body), http_headers=http))
        outs.append(path)
    return outs


def extractor_loop(pages: list[str]) -> tuple[float, int]:
    import trafilatura

    htmls = [open(p, "rb").read().decode("utf-8", "replace") for p in pages]
    t0 = time.perf_counter()
    ok = 0
    for h in htmls:
        text = trafilatura.extract(h, favor_precision=True, include_comments=False, include_tables=True,
                                   deduplicate=False, output_format="txt")
        ok += bool(text and text.strip())
    return time.perf_counter() - t0, ok


def kernel_loop(files: list[str]) -> tuple[float, int, dict]:
    from udfs.records import Limits, SourceSpec, iter_warc_units
    from udfs.warc import HtmlOptions

    spec = SourceSpec.from_dict({"name": "crawl", "domain": "web", "format": "warc", "path": files[0]})
    limits = Limits(html=HtmlOptions(timeout_s=0))
    kinds: dict = {}
    t0 = time.perf_counter()
    for f in files:
        name = os.path.basename(f)
        for u in iter_warc_units(spec, f, name, name, 0, -1, limits):
            key = u["kind"] if u["kind"] == "doc" else f"{u['kind']}:{u.get('reason')}"
            kinds[key] = kinds.get(key, 0) + 1
    return time.perf_counter() - t0, kinds.get("doc", 0), kinds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=2000)
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the temp folder (crawl and lake)")
    args = ap.parse_args(argv)

    tmp = tempfile.mkdtemp(prefix="bench_warc_")
    try:
        print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus")
        pages = find_pages(args.pages)
        t = time.perf_counter()
        crawl = write_crawl(pages, tmp, args.files)
        mb = sum(os.path.getsize(p) for p in pages) / 1e6
        print(f"crawl: {len(pages)} pages, {mb:.1f} MB of HTML, {len(crawl)} .warc.gz files "
              f"({sum(os.path.getsize(c) for c in crawl) / 1e6:.1f} MB) in {time.perf_counter() - t:.1f} s (not timed)")

        ex_s, ex_ok = extractor_loop(pages)
        k_s, k_ok, kinds = kernel_loop(crawl)

        from jobs import ingest
        from jobs.session import get_spark
        from jobs.tables import Lake

        t = time.perf_counter()
        spark = get_spark("bench-warc", master=f"local[{args.cores}]", conf={"spark.ui.enabled": "false"})
        jvm_s = time.perf_counter() - t
        lake_dir = os.path.join(tmp, "lake")
        t = time.perf_counter()
        rc = ingest.main(["--lake", lake_dir, "--input", tmp, "--format", "warc", "--source", "crawl",
                          "--domain", "web", "--set", "ingest.html.timeout_s=0"])
        st_s = time.perf_counter() - t
        assert rc == 0
        st_ok = Lake(spark, lake_dir).read("documents").count()

        n = len(pages)
        base = n / ex_s
        rows = [("extractor loop (trafilatura, 1 proc)", ex_s, ex_ok, 1),
                ("kernel loop (udfs.warc, 1 proc)", k_s, k_ok, 1),
                (f"ingest stage (jobs/ingest.py, local[{args.cores}])", st_s, st_ok, args.cores)]
        print("\n| path | seconds | pages with text | pages/s | pages/s/core | MB/s/core | vs extractor loop per core |")
        print("|---|---|---|---|---|---|---|")
        for name, s, ok, cores in rows:
            print(f"| {name} | {s:.2f} | {ok} | {n / s:.1f} | {n / s / cores:.1f} | {mb / s / cores:.2f} | "
                  f"{n / s / cores / base:.2f}x |")
        print(f"\nJVM start (excluded): {jvm_s:.1f} s; kernel units: {dict(sorted(kinds.items()))}")
        print(f"agree on pages with text: {ex_ok == k_ok == st_ok} ({ex_ok} / {k_ok} / {st_ok})")
        print(f"load average at end: {os.getloadavg()[0]:.2f}")
        spark.stop()
        return 0 if ex_ok == k_ok == st_ok else 1
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
