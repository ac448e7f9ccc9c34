"""Filter throughput: the Spark stage vs the same udfs in a plain Python loop vs datatrove's filters.

    .venv/bin/python bench/bench_filter.py [--mb 4] [--ddtp-dir /var/lib/apt/lists]

Documents are built from real text on this machine: Debian package descriptions in APT's Translation-* index files
(`apt-get update -o Acquire::Languages=en,de,fr,es,it` fetches them); 3-10 descriptions drawn by hash make one
document, about 15% of documents are in other languages and a few are repeated-line or one-line documents, so the
filter keeps some and rejects others for several reasons. Without those files it falls back to the paragraphs
shipped in tests/data/langid/.

Measured in the same run, on the same documents:
  * python loop    the udfs (udfs.langid + udfs.quality) called document by document in this process: BASELINE
  * quality loop   udfs.quality.check_quality only (no language ID), document by document
  * datatrove      datatrove's GopherRepetition, GopherQuality, C4Quality, FineWebQuality filters, document by
                   document (no language ID: its LanguageFilter downloads its model, which this machine cannot);
                   compare with "quality loop"
  * spark pass     jobs.filter.filter_batches through mapInArrow on local[2], forced with a count
  * spark stage    the whole jobs/filter.py main (read, filter, write both tables, metrics, audit) on local[2]
Spark figures are given per core (divided by the 2 cores of local[2]) so they compare with one Python process.
"""
from __future__ import annotations

import argparse
import collections
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def _h(*parts) -> int:
    return int(hashlib.md5("|".join(map(str, parts)).encode()).hexdigest()[:8], 16)


def _descriptions(ddtp_dir: str, lang: str) -> list[str]:
    files = sorted(glob.glob(os.path.join(ddtp_dir, f"*_debian_dists_*_main_i18n_Translation-{lang}.lz4")))
    files = [f for f in files if "_bookworm_main_" in f] or files
    if not files or not shutil.which("lz4cat"):
        return []
    raw = subprocess.run(["lz4cat", files[0]], check=True, capture_output=True).stdout.decode("utf-8", "replace")
    out = []
    for stanza in raw.split("\n\n"):
        lines = [ln for ln in stanza.split("\n") if ln.startswith(" ") or ln.startswith("Description-")]
        if not lines:
            continue
        head = lines[0].split(": ", 1)[-1].strip()
        body = "\n".join("" if ln.strip() == "." else ln[1:] for ln in lines[1:])
        out.append((head + ".\n" + body).strip())
    return out


def build_docs(target_mb: float, ddtp_dir: str) -> tuple[list[tuple[str, str]], str]:
    """[(kind, text)] totalling about target_mb MB of UTF-8, and a description of where the text came from."""
    pools = {lang: _descriptions(ddtp_dir, lang) for lang in ("en", "de", "fr", "es", "it")}
    pools = {k: v for k, v in pools.items() if len(v) > 100}
    origin = f"Debian Translation-* files in {ddtp_dir} ({', '.join(sorted(pools))})"
    if "en" not in pools:
        pools = collections.defaultdict(list)
        with open(os.path.join(REPO, "tests", "data", "langid", "paragraphs.jsonl"), encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                pools[r["lang"]].append(r["text"])
        origin = "tests/data/langid/paragraphs.jsonl (no Translation-en.lz4 found)"
    others = sorted(k for k in pools if k != "en")
    docs, total, i = [], 0, 0
    while total < target_mb * 1e6:
        r = _h("doc", i) % 100
        if r < 15 and others:
            lang, kind = others[i % len(others)], "other_lang"
        else:
            lang, kind = "en", "en"
        pool = pools[lang]
        parts = [pool[_h("part", i, j) % len(pool)] for j in range(3 + _h("k", i) % 8)]
        if 15 <= r < 19:
            kind, parts = "repeated", parts[:1] * 8
        elif 19 <= r < 22:
            kind, parts = "one_line", [parts[0].split("\n")[0]]
        text = "\n\n".join(parts)
        docs.append((kind, text))
        total += len(text.encode("utf-8"))
        i += 1
    return docs, origin


def run_python_loop(texts, cfg):
    from udfs.langid import langid_reason, predict_languages
    from udfs.quality import check_quality

    reasons = []
    for t in texts:
        lang, score = predict_languages([t], cfg["langid"]["model_path"])[0]
        reason = langid_reason(lang, score, cfg["langid"]["languages"], cfg["langid"]["threshold"])
        if reason is None:
            reason = check_quality(t, cfg["quality_overrides"]).reason
        reasons.append(reason)
    return reasons


def run_quality_loop(texts):
    from udfs.quality import check_quality

    return [check_quality(t).reason for t in texts]


def run_datatrove(texts, c4_kwargs=None):
    """datatrove's four filters document by document: the first failing `filter:reason` per text, or None.
    `c4_kwargs` go to C4QualityFilter (FineWeb's pipeline: filter_no_terminal_punct=False)."""
    from datatrove.data import Document
    from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                            GopherRepetitionFilter)

    filters = [GopherRepetitionFilter(), GopherQualityFilter(), C4QualityFilter(**(c4_kwargs or {})),
               FineWebQualityFilter()]
    reasons = []
    for i, t in enumerate(texts):
        doc, reason = Document(text=t, id=str(i)), None
        for f in filters:
            res = f.filter(doc)
            ok, why = (res, None) if isinstance(res, bool) else res
            if not ok:
                reason = f"{f.name}:{why}"
                break
        reasons.append(reason)
    return reasons


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=4.0, help="approximate corpus size in MB (default 4)")
    ap.add_argument("--ddtp-dir", default="/var/lib/apt/lists", help="folder with Translation-*.lz4 files")
    ap.add_argument("--work", default=None, help="scratch folder for the lake (default: a temp folder)")
    ap.add_argument("--skip-datatrove", action="store_true")
    args = ap.parse_args()

    from jobs.filter import resolve_config
    from jobs.config import load_config

    docs, origin = build_docs(args.mb, args.ddtp_dir)
    texts = [t for _, t in docs]
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    cfg = resolve_config(load_config(None, []).get("filter"))
    print(f"corpus: {len(docs)} docs, {mb:.2f} MB from {origin}; kinds {dict(collections.Counter(k for k, _ in docs))}")
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus")

    # warm-up: load the models once so no row pays for it
    run_python_loop(texts[:20], cfg)
    results = {}

    t0 = time.perf_counter()
    ours = run_python_loop(texts, cfg)
    results["python loop (langid+quality, 1 proc)"] = (time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    ours_q = run_quality_loop(texts)
    results["quality loop (quality only, 1 proc)"] = (time.perf_counter() - t0, 1)

    dt_note = ""
    if not args.skip_datatrove:
        try:
            from importlib.metadata import version

            run_datatrove(texts[:20])
            t0 = time.perf_counter()
            dtr = run_datatrove(texts)
            results[f"datatrove {version('datatrove')} (quality only, 1 proc)"] = (time.perf_counter() - t0, 1)
            agree = sum((a is None) == (b is None) for a, b in zip(ours_q, dtr)) / len(texts)
            dt_note = (f"keep/reject agreement, udfs.quality vs datatrove: {100 * agree:.2f}% "
                       f"(kept: ours {sum(r is None for r in ours_q)}, datatrove {sum(r is None for r in dtr)})")
        except ImportError as e:
            dt_note = f"datatrove not available ({e}); skipped"

    from jobs import filter as filter_job
    from jobs.schema import document_row, documents_df
    from jobs.session import get_spark
    from jobs.tables import Lake

    work = args.work or tempfile.mkdtemp(prefix="lmr-bench-filter-")
    root = os.path.join(work, "lake")
    spark = get_spark("bench-filter", master="local[2]", conf={"spark.ui.enabled": "false",
                                                               "spark.sql.shuffle.partitions": "4"})
    lake = Lake(spark, root)
    rows = [document_row(f"b{i:07d}", t, source="bench", domain=k) for i, (k, t) in enumerate(docs)]
    lake.write(documents_df(spark, rows).repartition(4), "documents")
    docs_df = lake.read("documents")
    docs_df.count()
    from pyspark.sql.types import StructType

    out_schema = StructType(list(docs_df.schema.fields) + list(StructType.fromDDL(
        ", ".join(f"`{n}` {t}" for n, t in filter_job.ADDED)).fields))
    passed = docs_df.mapInArrow(lambda it: filter_job.filter_batches(it, cfg), out_schema)
    passed.where("reason is null").count()  # warm-up: starts the Python workers and loads the models
    t0 = time.perf_counter()
    n_kept_spark = passed.where("reason is null").count()
    results["spark pass (mapInArrow+count, local[2])"] = (time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    filter_job.main(["--lake", root, "--force"])
    results["spark stage (jobs/filter.py main, local[2])"] = (time.perf_counter() - t0, 2)
    m = [r for r in lake.read_arrow("metrics").to_pylist() if r["stage"] == "filter"][-1]
    spark.stop()
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)

    n_kept_loop = sum(r is None for r in ours)
    print(f"kept: python loop {n_kept_loop}, spark pass {n_kept_spark}, spark stage {m['docs_out']} "
          f"of {len(docs)} ({'same' if n_kept_loop == n_kept_spark == m['docs_out'] else 'DIFFERENT'})")
    top = collections.Counter(r.split(":")[0] + ":" + r.split(":")[1] for r in ours if r).most_common(6)
    print("top reasons (python loop):", ", ".join(f"{k}={v}" for k, v in top))
    if dt_note:
        print(dt_note)
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    base = "python loop (langid+quality, 1 proc)"
    base_rate = mb / results[base][0]
    print()
    print(f"{'path':46s} {'seconds':>8s} {'MB/s':>7s} {'MB/s/core':>10s} {'docs/s/core':>12s} {'vs baseline':>12s}")
    for name, (sec, cores) in results.items():
        rate = mb / sec / cores
        print(f"{name:46s} {sec:8.2f} {mb / sec:7.2f} {rate:10.3f} {len(docs) / sec / cores:12.1f} "
              f"{rate / base_rate:11.2f}x")
    print(f"baseline: {base}; per-core ratios divide Spark throughput by its 2 local cores")


if __name__ == "__main__":
    # end without the native destructors: deltalake + pyarrow in one process sometimes aborted at exit with
    # rc 134 after all the work was done (see udfs.common.exit_process)
    from udfs.common import exit_process  # noqa: E402

    exit_process(main() or 0)
