"""Ingest throughput: the real Spark ingest job vs a plain single-process Python loop with `json`, same files.

    .venv/bin/python bench/bench_ingest.py [--mb 200] [--files 8] [--cores 2] [--corpus-dir DIR] [--keep]

Corpus (generated first, not timed): `--files` JSONL files totalling about `--mb` MB, written to a temporary folder
(or --corpus-dir, with a _corpus.json manifest that ingest skips; a corpus already there with the same parameters is reused). Every record is
{"id", "url", "domain", "text"}; the text re-combines 2-12 real paragraphs drawn (seeded, deterministic) from the
bundled sample corpus data/sample/raw/*.jsonl.xz (Shakespeare, KJV, Britannica, Debian FAQ and package
descriptions, Python docs, CPython code and docstrings, licences). A fraction `--bad-frac` (default 0.5%) of the lines
is bad, spread over all files: invalid JSON (cut-off line), missing text field, empty / whitespace text, text that is
not a string, invalid UTF-8 bytes inside the text, a lone-surrogate escape, a blank line, and a record reusing the id
of an earlier record (duplicate id, in the same or an earlier file).

Measured in the same run, on the same files:
  * python loop   one process: read each file line by line, decode UTF-8, json.loads, check it is an object whose
                  "text" is a non-empty, non-whitespace string that encodes as UTF-8 and is at most 1 MiB, and that
                  its "id" was not seen before; count valid / invalid. This is the BASELINE.
  * spark ingest  jobs/ingest.py main() (plan, parse in mapInArrow, duplicate-id detection, write `documents` and
                  `quarantine` Delta tables, metrics, audit) on local[--cores] into a temporary lake. The JVM start
                  (SparkSession creation and a first trivial job) is timed separately and not included; the Python
                  worker start-up of the first Spark task is included.
Throughput is input MB (10^6 bytes of JSONL on disk) per second; per core divides by the cores used (1 for the loop,
--cores for Spark). Both must agree on the number of valid records.
"""
from __future__ import annotations

import argparse
import json
import lzma
import os
import random
import re
import shutil
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

MAX_DOC_BYTES = 1 << 20
BAD_KINDS = ("invalid_json", "missing_text_field", "empty_text", "text_not_string", "invalid_utf8",
             "invalid_unicode", "blank_line", "duplicate_id")
CORPUS_VERSION = 1


# ---- corpus ---------------------------------------------------------------------------------------------------------
def paragraph_pools(raw_dir: str) -> dict[str, list[str]]:
    """Paragraphs (>= 40 chars) of every bundled sample file, by file stem ("domain")."""
    split = re.compile(r"\n[ \t]*\n+")
    pools = {}
    for name in sorted(os.listdir(raw_dir)):
        if not name.endswith(".jsonl.xz"):
            continue
        seen, out = set(), []
        with lzma.open(os.path.join(raw_dir, name), "rt", encoding="utf-8") as f:
            for line in f:
                rec = json.loads(line)
                pieces = []
                for key in ("text", "content", "long"):
                    if isinstance(rec.get(key), str):
                        pieces.append(rec[key])
                for key in ("paragraphs", "verses"):
                    if isinstance(rec.get(key), list):
                        pieces.extend(x for x in rec[key] if isinstance(x, str))
                for piece in pieces:
                    for para in split.split(piece):
                        para = para.strip("\n")
                        if len(para.strip()) >= 40 and para not in seen:
                            seen.add(para)
                            out.append(para[:6000])
        if out:
            pools[name[: -len(".jsonl.xz")]] = out
    if not pools:
        raise SystemExit(f"bench_ingest: no paragraphs found in {raw_dir}/*.jsonl.xz")
    return pools


def _bad_line(kind: str, rng: random.Random, n: int, text: str, earlier_ids: list[str]) -> bytes:
    rid = f"doc-{n:09d}"
    if kind == "invalid_json":
        full = json.dumps({"id": rid, "text": text}, ensure_ascii=False).encode("utf-8")
        return full[: max(10, len(full) // 2)]
    if kind == "missing_text_field":
        return json.dumps({"id": rid, "body": text}, ensure_ascii=False).encode("utf-8")
    if kind == "empty_text":
        return json.dumps({"id": rid, "text": rng.choice(["", "   ", "\n\n \t"])}).encode("utf-8")
    if kind == "text_not_string":
        return json.dumps({"id": rid, "text": rng.choice([42, ["a", "b"], {"t": "x"}, True])}).encode("utf-8")
    if kind == "invalid_utf8":
        cut = len(text) // 2
        s = json.dumps({"id": rid, "text": text[:cut] + "@@BAD@@" + text[cut:]}, ensure_ascii=False)
        return s.encode("utf-8").replace(b"@@BAD@@", rng.choice([b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80"]), 1)
    if kind == "invalid_unicode":
        s = json.dumps({"id": rid, "text": text[:200] + "@@SUR@@"}, ensure_ascii=False)
        return s.replace("@@SUR@@", "\\ud800").encode("utf-8")
    if kind == "blank_line":
        return b""
    if kind == "duplicate_id":
        return json.dumps({"id": rng.choice(earlier_ids), "url": f"https://example.org/dup/{n}", "domain": "dup",
                           "text": text}, ensure_ascii=False).encode("utf-8")
    raise ValueError(kind)


def generate_corpus(out_dir: str, mb: float, files: int, bad_frac: float, seed: int) -> dict:
    """Write the corpus; return its manifest (parameters, files, planted bad lines by kind)."""
    pools = paragraph_pools(os.path.join(REPO, "data", "sample", "raw"))
    domains = sorted(pools)
    rng = random.Random(seed)
    os.makedirs(out_dir, exist_ok=True)
    target = int(mb * 1e6)
    per_file = target // files
    planted = dict.fromkeys(BAD_KINDS, 0)
    n, good_ids, names = 0, [], []
    for fi in range(files):
        name = f"part-{fi:04d}.jsonl"
        names.append(name)
        size = 0
        with open(os.path.join(out_dir, name), "wb") as f:
            while size < per_file:
                domain = domains[rng.randrange(len(domains))]
                pool = pools[domain]
                text = "\n\n".join(pool[rng.randrange(len(pool))] for _ in range(rng.randint(2, 12)))
                if rng.random() < bad_frac:
                    kind = BAD_KINDS[rng.randrange(len(BAD_KINDS))]
                    if kind == "duplicate_id" and not good_ids:
                        kind = "invalid_json"
                    line = _bad_line(kind, rng, n, text, good_ids)
                    planted[kind] += 1
                else:
                    rid = f"doc-{n:09d}"
                    line = json.dumps({"id": rid, "url": f"https://example.org/{domain}/{n}", "domain": domain,
                                       "text": text}, ensure_ascii=False).encode("utf-8")
                    if len(good_ids) < 100000:
                        good_ids.append(rid)
                    elif rng.random() < 0.01:
                        good_ids[rng.randrange(len(good_ids))] = rid
                f.write(line + b"\n")
                size += len(line) + 1
                n += 1
    manifest = {"version": CORPUS_VERSION, "mb": mb, "files": files, "bad_frac": bad_frac, "seed": seed,
                "names": names, "lines": n, "planted_bad": planted,
                "bytes": sum(os.path.getsize(os.path.join(out_dir, x)) for x in names)}
    with open(os.path.join(out_dir, "_corpus.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    return manifest


def existing_corpus(out_dir: str, mb: float, files: int, bad_frac: float, seed: int) -> dict | None:
    try:
        with open(os.path.join(out_dir, "_corpus.json")) as f:
            m = json.load(f)
    except (OSError, ValueError):
        return None
    want = {"version": CORPUS_VERSION, "mb": mb, "files": files, "bad_frac": bad_frac, "seed": seed}
    if any(m.get(k) != v for k, v in want.items()):
        return None
    if any(not os.path.exists(os.path.join(out_dir, x)) for x in m["names"]):
        return None
    if sum(os.path.getsize(os.path.join(out_dir, x)) for x in m["names"]) != m["bytes"]:
        return None
    return m


# ---- the baseline ---------------------------------------------------------------------------------------------------
def python_loop(paths: list[str]) -> dict:
    """Read and validate every line with `json`, one process; counts of valid and invalid lines."""
    valid = invalid = 0
    seen = set()
    loads = json.loads
    for path in paths:
        with open(path, "rb") as f:
            for raw in f:
                if raw.endswith(b"\n"):
                    raw = raw[:-1]
                if raw.endswith(b"\r"):
                    raw = raw[:-1]
                try:
                    obj = loads(raw.decode("utf-8"))
                    text = obj["text"]
                    ok = (isinstance(text, str) and text.strip() != ""
                          and len(text.encode("utf-8")) <= MAX_DOC_BYTES)
                except (UnicodeError, ValueError, KeyError, TypeError):
                    ok = False
                if ok:
                    rid = obj.get("id")
                    if rid is not None:
                        rid = str(rid)
                        if rid in seen:
                            ok = False
                        else:
                            seen.add(rid)
                if ok:
                    valid += 1
                else:
                    invalid += 1
    return {"valid": valid, "invalid": invalid}


# ---- main -----------------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=200.0, help="corpus size in MB (10^6 bytes; default 200)")
    ap.add_argument("--files", type=int, default=8, help="number of JSONL files (default 8)")
    ap.add_argument("--bad-frac", type=float, default=0.005, help="fraction of bad lines (default 0.005)")
    ap.add_argument("--seed", type=int, default=1234, help="corpus seed (default 1234)")
    ap.add_argument("--cores", type=int, default=2, help="Spark local[N] cores (default 2)")
    ap.add_argument("--corpus-dir", default=None,
                    help="where the corpus goes (default: a temp folder, removed at the end); reused when it "
                         "already holds a corpus with the same parameters")
    ap.add_argument("--work", default=None, help="scratch folder for the lake (default: a temp folder)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary corpus and lake")
    args = ap.parse_args(argv)
    if args.mb <= 0 or args.files < 1 or args.cores < 1 or not 0 <= args.bad_frac < 1:
        ap.error("--mb, --files and --cores must be positive and --bad-frac in [0, 1)")

    corpus_dir = args.corpus_dir or tempfile.mkdtemp(prefix="lmr-bench-ingest-corpus-")
    work = args.work or tempfile.mkdtemp(prefix="lmr-bench-ingest-lake-")
    lake_root = os.path.join(work, "lake")
    try:
        t0 = time.perf_counter()
        manifest = existing_corpus(corpus_dir, args.mb, args.files, args.bad_frac, args.seed)
        how = "reused"
        if manifest is None:
            manifest = generate_corpus(corpus_dir, args.mb, args.files, args.bad_frac, args.seed)
            how = "generated"
        gen_s = time.perf_counter() - t0
        paths = [os.path.join(corpus_dir, x) for x in manifest["names"]]
        mb = manifest["bytes"] / 1e6
        n_bad = sum(manifest["planted_bad"].values())
        print(f"corpus: {how} in {gen_s:.1f}s (not timed below): {len(paths)} files, {mb:.1f} MB, "
              f"{manifest['lines']} lines, {n_bad} planted bad lines {manifest['planted_bad']} in {corpus_dir}")
        print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus")

        # Baseline first; files are in the page cache for both (just written, or read once here).
        for p in paths:
            with open(p, "rb") as f:
                while f.read(1 << 24):
                    pass
        t0 = time.perf_counter()
        loop = python_loop(paths)
        loop_s = time.perf_counter() - t0
        print(f"python loop: {loop['valid']} valid, {loop['invalid']} invalid in {loop_s:.2f}s")

        from jobs import ingest
        from jobs.session import get_spark
        from jobs.tables import Lake

        t0 = time.perf_counter()
        spark = get_spark("bench-ingest", master=f"local[{args.cores}]", conf={"spark.ui.enabled": "false",
                                                                          "spark.ui.showConsoleProgress": "false"})
        spark.range(1).count()
        jvm_s = time.perf_counter() - t0
        print(f"JVM start (SparkSession + first trivial job, local[{args.cores}]): {jvm_s:.2f}s (not included)")

        t0 = time.perf_counter()
        rc = ingest.main(["--lake", lake_root, "--input", corpus_dir, "--format", "jsonl", "--source", "bench",
                          "--domain", "web", "--id-field", "id", "--url-field", "url", "--force"])
        spark_s = time.perf_counter() - t0
        if rc not in (0, None):
            raise SystemExit(f"bench_ingest: ingest returned {rc}")
        lake = Lake(spark, lake_root)
        m = [r for r in lake.read_arrow("metrics").to_pylist() if r["stage"] == "ingest"][-1]
        spark.stop()
        extra = json.loads(m["extra"] or "{}")

        print(f"spark ingest: {m['docs_out']} documents, {m['docs_rejected']} quarantined in {spark_s:.2f}s "
              f"(stage's own metrics: {m['seconds']:.2f}s, {extra.get('mb_per_s', float('nan')):.2f} MB/s, "
              f"{extra.get('tasks')} tasks)")
        print(f"quarantine reasons (spark): {dict(sorted(dict(m['reasons']).items()))}")
        planted = manifest["planted_bad"]
        expected_valid = manifest["lines"] - n_bad
        agree = loop["valid"] == m["docs_out"]
        print(f"valid records: python loop {loop['valid']}, spark ingest {m['docs_out']}, planted good lines "
              f"{expected_valid} -> {'AGREE' if agree else 'DISAGREE'}")
        print(f"invalid records: python loop {loop['invalid']}, spark ingest {m['docs_rejected']}, planted "
              f"{n_bad} ({planted})")
        print(f"load average at end: {os.getloadavg()[0]:.2f}")
        print()
        rows = [("python loop (json, 1 process)", loop_s, 1), (f"spark ingest (local[{args.cores}])", spark_s,
                                                                args.cores)]
        print(f"{'path':34s} {'MB':>8s} {'seconds':>8s} {'MB/s':>8s} {'cores':>5s} {'MB/s/core':>10s}")
        for name, sec, cores in rows:
            print(f"{name:34s} {mb:8.1f} {sec:8.2f} {mb / sec:8.2f} {cores:5d} {mb / sec / cores:10.2f}")
        ratio = (mb / spark_s / args.cores) / (mb / loop_s)
        print(f"ratio spark / python loop: {loop_s / spark_s:.4f}x wall-clock throughput, {ratio:.4f}x per core "
              f"(the python loop is {spark_s / loop_s:.1f}x faster wall-clock, {1 / ratio:.1f}x per core)")
        print(f"JVM start {jvm_s:.2f}s is excluded; with it spark ingest takes {spark_s + jvm_s:.2f}s "
              f"({mb / (spark_s + jvm_s) / args.cores:.2f} MB/s/core)")
        return 0 if agree else 1
    finally:
        if not args.keep:
            if not args.corpus_dir:
                shutil.rmtree(corpus_dir, ignore_errors=True)
            if not args.work:
                shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
