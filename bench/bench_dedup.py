"""Benchmark of jobs/dedup.py against datasketch, on real text with planted near duplicates of known similarity.

    .venv/bin/python bench/bench_dedup.py [--eval-docs 20000] [--sizes 100000,1000000] [--out bench/out/dedup]

1. Text: sentences from /usr/share/common-licenses, /usr/share/doc (copyright files, gzipped changelogs) and Python
   standard library docstrings, exact-deduplicated. A base document is 3-6 random sentences (seeded); a quarter of
   the bases get 1-3 variants made by word substitutions at spaced positions (each kills exactly `ngram` shingles)
   aiming at Jaccard 0.5, 0.65, 0.7 (should stay) or 0.9, 0.95, 1.0 (should go; 1.0 = case/whitespace/NFKC change
   only). The exact Jaccard of every pair inside a family is computed and is the ground truth: pairs with
   J >= threshold are linked, their connected components are the true clusters.
2. Quality: pair-counting precision / recall / F1 of the clusters from (a) the Spark job (subprocess, local[2]) and
   (b) datasketch.MinHashLSH with the same num_perm, seed and (bands, rows), every document queried and the results
   joined by union-find. Wall time of both.
3. Signature speed on one core: udfs.minhash.signatures (numba kernel, and the numpy/hashlib fallback) vs the
   per-document datasketch loop `m = MinHash(num_perm, seed); m.update_batch(shingles)`, same texts, same output.
4. Job wall time at each of --sizes documents (same generator, shorter documents).
"""
from __future__ import annotations

import argparse
import ast
import glob
import gzip
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import sysconfig
import time
from collections import Counter, defaultdict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from udfs.normalise import jaccard, shingles  # noqa: E402

LEVELS_NEG = (0.5, 0.65, 0.7)
LEVELS_POS = (0.9, 0.95, 1.0)


# ---- real text -------------------------------------------------------------------------------------------------
def _read(path: str) -> str:
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rt", encoding="utf-8", errors="ignore") as f:
                return f.read(200_000)
        with open(path, encoding="utf-8", errors="ignore") as f:
            return f.read(200_000)
    except OSError:
        return ""


def _docstrings(limit_files: int) -> list[str]:
    out = []
    stdlib = sysconfig.get_paths()["stdlib"]
    for path in sorted(glob.glob(os.path.join(stdlib, "*.py")) + glob.glob(os.path.join(stdlib, "*", "*.py")))[:limit_files]:
        try:
            tree = ast.parse(_read(path))
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                d = ast.get_docstring(node)
                if d:
                    out.append(d)
    return out


def sentence_pool(limit_files: int = 400, cache: str | None = None) -> list[str]:
    if cache and os.path.exists(cache):
        with open(cache) as f:
            return json.load(f)
    texts = [_read(p) for p in sorted(glob.glob("/usr/share/common-licenses/*"))]
    texts += [_read(p) for p in sorted(glob.glob("/usr/share/doc/*/copyright"))[:limit_files]]
    texts += [_read(p) for p in sorted(glob.glob("/usr/share/doc/*/changelog*.gz"))[:limit_files]]
    texts += _docstrings(limit_files)
    seen, pool = set(), []
    for t in texts:
        for s in re.split(r"(?<=[.!?])\s+", t):
            s = " ".join(s.split())
            n = len(s.split())
            if 6 <= n <= 40 and re.search(r"[A-Za-z]{3}", s):
                k = s.lower()
                if k not in seen:
                    seen.add(k)
                    pool.append(s)
    if cache:
        with open(cache, "w") as f:
            json.dump(pool, f)
    return pool


# ---- planted corpus --------------------------------------------------------------------------------------------
def _vary(rng, words: list[str], target: float, ngram: int, pool_words: list[str]) -> list[str]:
    """A variant of `words` with shingle Jaccard close to `target` (the exact value is measured afterwards).

    truncate k words: J = (S - k) / S; extend by k words: J = S / (S + k); substitute m words >= ngram apart
    (each kills ngram shingles): J = (S - n*m) / (S + n*m). 1.0: only case / no-break-space changes."""
    if target >= 1.0:
        w = [x.upper() if rng.random() < 0.3 else x for x in words]
        return [x + ("\u00a0" if rng.random() < 0.1 else "") for x in w]
    s = max(len(words) - ngram + 1, 1)
    m = round(s * (1 - target) / (ngram * (1 + target)))
    op = rng.choice(["truncate", "extend"] + (["substitute"] if m >= 1 else []))
    if op == "truncate":
        k = min(max(1, round(s * (1 - target))), len(words) - ngram)
        return words[:len(words) - k]
    if op == "extend":
        return words + [rng.choice(pool_words) for _ in range(max(1, round(s * (1 / target - 1))))]
    w = list(words)
    grid = range(ngram - 1, len(words) - ngram + 1, ngram)
    for i in rng.sample(grid, min(m, len(grid))):
        w[i] = rng.choice(pool_words) + "x"
    return w


def make_corpus(n_docs: int, pool: list[str], seed: int, ngram: int = 5, sentences=(3, 6), dup_fraction=0.25):
    """Return (docs: list of (id, text), families: list of id lists, target: {id: level})."""
    rng = random.Random(seed)
    pool_words = sorted({w for s in pool[:5000] for w in s.split()})
    docs, families, target = [], [], {}
    i = 0
    while len(docs) < n_docs:
        base = " ".join(rng.sample(pool, rng.randint(*sentences))).split()
        bid = f"d{i:09d}"
        i += 1
        docs.append((bid, " ".join(base)))
        if rng.random() < dup_fraction:
            fam = [bid]
            for _ in range(rng.randint(1, 3)):
                level = rng.choice(LEVELS_NEG + LEVELS_POS)
                vid = f"d{i:09d}"
                i += 1
                docs.append((vid, " ".join(_vary(rng, base, level, ngram, pool_words))))
                target[vid] = level
                fam.append(vid)
            families.append(fam)
    # ids are shuffled against document order so that "smallest id survives" is not "the base survives"
    perm = list(range(len(docs)))
    rng.shuffle(perm)
    rename = {d[0]: f"doc{perm[k]:09d}" for k, d in enumerate(docs)}
    docs = [(rename[a], t) for a, t in docs[:n_docs]]
    keep = {a for a, _ in docs}
    families = [[rename[x] for x in f if rename[x] in keep] for f in families]
    target = {rename[k]: v for k, v in target.items() if rename[k] in keep}
    return docs, [f for f in families if len(f) > 1], target


class UnionFind:
    """Clusters of the reference methods (path halving); the label of a cluster is its root."""

    def __init__(self):
        self.parent = {}

    def find(self, x):
        parent = self.parent
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a, b):
        self.parent[self.find(a)] = self.find(b)


def truth_clusters(docs, families, threshold: float, ngram: int):
    text = dict(docs)
    uf = UnionFind()

    sims = {}
    for fam in families:
        for a_i in range(len(fam)):
            for b_i in range(a_i + 1, len(fam)):
                a, b = fam[a_i], fam[b_i]
                j = jaccard(text[a], text[b], ngram)
                sims[(a, b)] = j
                if j >= threshold:
                    uf.union(a, b)
    return {d: uf.find(d) for d, _ in docs}, sims


def pair_scores(pred: dict, truth: dict) -> dict:
    """Pair-counting precision/recall/F1 of a clustering `pred` (doc -> label) against `truth`."""
    def pairs(c):
        return sum(n * (n - 1) // 2 for n in c.values())

    joint = Counter((pred[d], truth[d]) for d in truth)
    tp = pairs(joint)
    pp, tt = pairs(Counter(pred[d] for d in truth)), pairs(Counter(truth.values()))
    p = tp / pp if pp else 1.0
    r = tp / tt if tt else 1.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0, "true_pairs": tt,
            "predicted_pairs": pp}


# ---- lake I/O without Spark ----------------------------------------------------------------------------------------
def write_filtered(lake: str, docs, chunk: int = 200_000) -> None:
    import pyarrow as pa
    from deltalake import write_deltalake

    trace_t = pa.struct([("file", pa.string()), ("line", pa.int64()), ("row", pa.int64()), ("byte_offset", pa.int64())])
    schema = pa.schema([("id", pa.string()), ("text", pa.string()), ("source", pa.string()), ("domain", pa.string()),
                        ("url", pa.string()), ("meta", pa.string()), ("trace", trace_t), ("n_bytes", pa.int64()),
                        ("n_tokens_est", pa.int64()), ("text_sha256", pa.string()), ("ingest_run", pa.string())])
    path = os.path.join(lake, "filtered")
    for k in range(0, len(docs), chunk):
        part = docs[k:k + chunk]
        b = [t.encode("utf-8") for _, t in part]
        tbl = pa.table({"id": [a for a, _ in part], "text": [t for _, t in part], "source": ["bench"] * len(part),
                        "domain": ["web"] * len(part), "url": pa.nulls(len(part), pa.string()),
                        "meta": ["{}"] * len(part),
                        "trace": pa.array([{"file": None, "line": None, "row": k + j, "byte_offset": None}
                                           for j in range(len(part))], trace_t),
                        "n_bytes": [len(x) for x in b], "n_tokens_est": [(len(x) + 3) // 4 for x in b],
                        "text_sha256": [hashlib.sha256(x).hexdigest() for x in b],
                        "ingest_run": ["bench"] * len(part)}, schema=schema)
        write_deltalake(path, tbl, mode="overwrite" if k == 0 else "append")


def run_job(lake: str, extra_args: list[str], log_path: str) -> float:
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, LMR_SPARK_LOG_LEVEL="ERROR")
    cmd = [sys.executable, os.path.join(REPO, "jobs", "dedup.py"), "--lake", lake, "--master", "local[2]",
           "--force"] + extra_args
    t0 = time.time()
    with open(log_path, "w") as log:
        rc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise SystemExit(f"dedup job failed (rc {rc}); see {log_path}")
    return time.time() - t0


def job_clusters(lake: str, ids) -> tuple[dict, dict]:
    from deltalake import DeltaTable

    dup = DeltaTable(os.path.join(lake, "duplicates")).to_pyarrow_table(columns=["id", "kept_id", "method"]).to_pylist()
    label = {d: d for d in ids}
    for r in dup:
        label[r["id"]] = r["kept_id"]
    metrics = DeltaTable(os.path.join(lake, "metrics")).to_pyarrow_table().to_pylist()
    last = max((m for m in metrics if m["stage"] == "dedup"), key=lambda m: m["started_at"])
    return label, last


# ---- datasketch baseline -------------------------------------------------------------------------------------------
def datasketch_clusters(docs, threshold, num_perm, seed, ngram, bands_rows):
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    assert (lsh.b, lsh.r) == bands_rows, ((lsh.b, lsh.r), bands_rows)
    mh = {}
    for d, t in docs:
        m = MinHash(num_perm=num_perm, seed=seed)
        m.update_batch(shingles(t, ngram))
        mh[d] = m
        if t.strip():
            lsh.insert(d, m)
    uf = UnionFind()

    for d, t in docs:
        if not t.strip():
            continue
        for o in lsh.query(mh[d]):
            if o != d:
                uf.union(o, d)
    return {d: uf.find(d) for d, _ in docs}


# ---- signature speed -----------------------------------------------------------------------------------------------
def signature_speed(texts, num_perm, seed, ngram):
    import numpy as np
    from datasketch import MinHash

    from udfs import minhash as mh

    mh.signatures(texts[:10], ngram, num_perm, seed)       # JIT / cache load outside the timing
    out = {}
    t0 = time.perf_counter()
    ours = mh.signatures(texts, ngram, num_perm, seed)
    out["udfs.minhash (numba)"] = time.perf_counter() - t0
    os.environ["LMR_MINHASH_BACKEND"] = "numpy"
    try:
        t0 = time.perf_counter()
        ours_np = mh.signatures(texts, ngram, num_perm, seed)
        out["udfs.minhash (numpy+hashlib)"] = time.perf_counter() - t0
    finally:
        os.environ.pop("LMR_MINHASH_BACKEND")
    t0 = time.perf_counter()
    ref = []
    for t in texts:
        m = MinHash(num_perm=num_perm, seed=seed)
        m.update_batch(shingles(t, ngram))
        ref.append(m.hashvalues)
    out["datasketch per-document loop"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    MinHash.bulk([shingles(t, ngram) for t in texts], num_perm=num_perm, seed=seed)
    out["datasketch MinHash.bulk"] = time.perf_counter() - t0
    ref = np.array(ref)
    assert (ours == ref).all() and (ours_np == ref).all(), "signatures differ from datasketch"
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--eval-docs", type=int, default=20000, help="documents in the precision/recall corpus")
    ap.add_argument("--sizes", default="100000,1000000", help="comma-separated corpus sizes for job wall time")
    ap.add_argument("--speed-docs", type=int, default=3000, help="documents in the single-core signature timing")
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--ngram", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--job-verify", default="exact", help="comma-separated --verify modes of the job to evaluate")
    ap.add_argument("--out", default=os.path.join(REPO, "bench", "out", "dedup"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    from udfs.minhash import optimal_param

    bands_rows = optimal_param(args.threshold, args.num_perm)
    print(f"# dedup bench: threshold={args.threshold} num_perm={args.num_perm} ngram={args.ngram} seed={args.seed} "
          f"bands x rows = {bands_rows[0]} x {bands_rows[1]} (cpu cores: {os.cpu_count()})", flush=True)
    t0 = time.time()
    pool = sentence_pool(cache=os.path.join(args.out, "sentences.json"))
    print(f"sentence pool: {len(pool)} unique real sentences ({time.time() - t0:.1f}s)", flush=True)
    results = {"params": vars(args), "bands_rows": bands_rows}

    # 1 + 2: quality
    docs, families, target = make_corpus(args.eval_docs, pool, seed=args.seed, ngram=args.ngram)
    truth, sims = truth_clusters(docs, families, args.threshold, args.ngram)
    by_level = defaultdict(list)
    for f in families:
        for v in f[1:]:
            by_level[target.get(v)].append(sims.get((f[0], v)))
    print(f"eval corpus: {len(docs)} docs, {len(families)} families, "
          f"{sum(len(f) - 1 for f in families)} planted variants; measured Jaccard to the base by target level:",
          flush=True)
    for lv in sorted(by_level):
        js = by_level[lv]
        print(f"  target {lv:.2f}: n={len(js):5d}  J min/mean/max = {min(js):.3f} / {sum(js) / len(js):.3f} / "
              f"{max(js):.3f}", flush=True)
    lake = os.path.join(args.out, "lake-eval")
    write_filtered(lake, docs)
    ids = [d for d, _ in docs]
    rows, labels = [], {}
    for mode in [m for m in args.job_verify.split(",") if m]:
        wall = run_job(lake, ["--threshold", str(args.threshold), "--num-perm", str(args.num_perm), "--ngram",
                              str(args.ngram), "--seed", str(args.seed), "--verify", mode],
                       os.path.join(args.out, f"job-eval-{mode}.log"))
        label, metrics = job_clusters(lake, ids)
        sc = pair_scores(label, truth)
        rows.append((f"jobs/dedup.py (verify={mode})", sc, wall))
        labels[rows[-1][0]] = label
        results[f"job_{mode}"] = {**sc, "wall_s": wall, "extra": json.loads(metrics["extra"])}
    t0 = time.time()
    ds_label = datasketch_clusters(docs, args.threshold, args.num_perm, args.seed, args.ngram, bands_rows)
    ds_wall = time.time() - t0
    sc = pair_scores(ds_label, truth)
    rows.append(("datasketch.MinHashLSH", sc, ds_wall))
    labels["datasketch.MinHashLSH"] = ds_label
    results["datasketch"] = {**sc, "wall_s": ds_wall}
    print(f"\nduplicate detection at threshold {args.threshold} ({len(docs)} docs; pair-counting over true clusters)")
    print(f"{'method':34s} {'precision':>9s} {'recall':>7s} {'F1':>7s} {'pred pairs':>10s} {'true pairs':>10s} "
          f"{'wall s':>8s}")
    for name, s, wall in rows:
        print(f"{name:34s} {s['precision']:9.4f} {s['recall']:7.4f} {s['f1']:7.4f} {s['predicted_pairs']:10d} "
              f"{s['true_pairs']:10d} {wall:8.1f}")
    print("(job wall time includes JVM start and Delta writes; datasketch runs in-process, single core)", flush=True)
    # detection rate per target level: variant clustered with its base
    print("\nvariant clustered with its base, by target similarity level:")
    for lv in sorted(by_level):
        vs = [(f[0], v) for f in families for v in f[1:] if target.get(v) == lv]
        line = f"  target {lv:.2f} (n={len(vs)}):"
        for name, lab in labels.items():
            line += f"  {name}: {sum(lab[a] == lab[b] for a, b in vs) / max(len(vs), 1):.3f}"
        print(line, flush=True)

    # 3: signature speed, one core
    speed_texts = [t for _, t in docs[:args.speed_docs]]
    sp = signature_speed(speed_texts, args.num_perm, args.seed, args.ngram)
    n_sh = sum(len(shingles(t, args.ngram)) for t in speed_texts)
    base = sp["datasketch per-document loop"]
    print(f"\nsignature speed, one core, {len(speed_texts)} docs / {n_sh} shingles, num_perm={args.num_perm} "
          f"(identical outputs checked); baseline = datasketch per-document loop")
    for name, secs in sp.items():
        print(f"  {name:32s} {secs:8.3f}s  {len(speed_texts) / secs:10.0f} docs/s  x{base / secs:6.1f} vs baseline")
    results["signature_speed_s"] = sp
    print(f"SIGNATURE SPEEDUP (numba kernel vs datasketch per-document loop): "
          f"{base / sp['udfs.minhash (numba)']:.1f}x per core", flush=True)

    # 4: wall time at sizes
    results["sizes"] = {}
    for n in [int(x) for x in args.sizes.split(",") if x]:
        t0 = time.time()
        docs_n, _, _ = make_corpus(n, pool, seed=args.seed + n, ngram=args.ngram, sentences=(2, 4))
        lake_n = os.path.join(args.out, f"lake-{n}")
        write_filtered(lake_n, docs_n)
        words = sum(len(t.split()) for _, t in docs_n)
        del docs_n
        gen = time.time() - t0
        wall = run_job(lake_n, ["--threshold", str(args.threshold)], os.path.join(args.out, f"job-{n}.log"))
        _, metrics = job_clusters(lake_n, [])
        extra = json.loads(metrics["extra"])
        results["sizes"][n] = {"wall_s": wall, "words": words, "metrics": {k: metrics[k] for k in
                               ("docs_in", "docs_out", "docs_rejected", "seconds")}, "extra": extra}
        print(f"\njob wall time at {n} docs ({words} words; corpus generated in {gen:.0f}s): {wall:.1f}s "
              f"({n / wall:.0f} docs/s); removed exact={extra['exact']['docs_removed']} "
              f"minhash={extra['minhash']['docs_removed']}; phases {extra['timings_s']}", flush=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2, default=str)


if __name__ == "__main__":
    main()
