"""Whole-pipeline throughput: each lmrefinery stage vs its own kernel loop, and the pipeline vs datatrove's.

    .venv/bin/python bench/bench_pipeline.py [--mb 1000] [--files 16] [--cores 2] [--skip-datatrove]

Corpus (generated first, not timed): `--files` JSONL files of about `--mb` MB re-combining real paragraphs of the
bundled sample (bench/bench_ingest.py's generator, no bad lines). Then, in the same run, on the same files:

  (a) kernel loops, one process: ingest's worker function (`jobs.ingest.parse_tasks_fn`), the filter's per-batch
      logic (`jobs.filter.filter_records`: lid.176 + every quality signal) and MinHash signatures
      (`udfs.minhash.signatures`, dedup's kernel), each on the whole corpus (the filter and MinHash on what the
      previous step kept);
  (b) lmrefinery: `jobs/ingest.py`, `jobs/filter.py`, `jobs/dedup.py` as separate processes on `local[--cores]`,
      each timed (JVM start included, as a user pays it) and with its `extra.timings` split from the metrics row;
  (c) datatrove 0.10.1 with `LocalPipelineExecutor(tasks=workers=--cores)`: JsonlReader -> GopherRepetition ->
      GopherQuality -> C4Quality(filter_no_terminal_punct=False) -> FineWebQuality -> MinhashDedupSignature, then
      MinhashDedupBuckets, MinhashDedupCluster, and JsonlReader -> MinhashDedupFilter -> JsonlWriter. Its
      LanguageFilter is left out: its model is a download this machine does not make (so datatrove does less work
      than lmrefinery here).
Prints MB/s per core of input for every step, ratios (stage / kernel, lmrefinery / datatrove) and the peak RSS of
each process tree (sampled every 0.2 s from /proc).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "bench"))


def _tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants, from /proc."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except (OSError, ValueError):
            continue
    return total


def run_measured(cmd, env=None, cwd=None) -> tuple[float, int, subprocess.CompletedProcess]:
    """(seconds, peak RSS of the process tree in bytes, result)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]
    done = threading.Event()

    def sample():
        while not done.wait(0.2):
            peak[0] = max(peak[0], _tree_rss(p.pid))

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, err = p.communicate()
    done.set()
    th.join()
    dt = time.perf_counter() - t0
    r = subprocess.CompletedProcess(cmd, p.returncode, out, err)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}\n{err[-3000:]}")
    return dt, peak[0], r


def _ingest_worker_loop(paths) -> float:
    """The ingest worker function (parse, Arrow batches, both tables' Parquet files) over `paths` in this process."""
    import tempfile

    import pyarrow as pa

    from jobs import ingest
    from jobs.schema import document_arrow_schema, quarantine_arrow_schema
    from udfs.records import Limits, SourceSpec

    spec = SourceSpec.from_dict({"name": "s", "domain": "web", "format": "jsonl", "path": paths[0],
                                 "text_field": "text", "id_field": "id"})
    limits = Limits(max_doc_bytes=1 << 20, raw_payload_max_bytes=64 << 10, max_line_bytes=None, max_json_depth=100,
                    max_skip_bytes=64 << 20)
    cols = [c.split()[0] for c in ingest.TASK_DDL.split(", ")]
    schemas = {"doc": document_arrow_schema(), "quarantine": quarantine_arrow_schema()}
    with tempfile.TemporaryDirectory() as tmp:
        folders = {k: os.path.join(tmp, k) for k in schemas}
        for f in folders.values():
            os.makedirs(f)
        t0 = time.perf_counter()
        for i, p in enumerate(paths):
            t = dict(task_id=i, source_idx=0, fmt="jsonl", path=p, file=os.path.basename(p), rel_file=p,
                     start=0, end=-1, line_base=0, row_group=0, row_base=0)
            batch = pa.RecordBatch.from_pylist([{c: t[c] for c in cols}])
            for _ in ingest.parse_write_fn([spec], limits, folders, schemas, "bench")(iter([batch])):
                pass
            os.rename(os.path.join(folders["doc"], f"part-{os.getpid()}.parquet"),
                      os.path.join(folders["doc"], f"{i}.parquet"))
        return time.perf_counter() - t0


def machine_scaling(paths, cores: int) -> tuple[float, float]:
    """The machine's own ceiling for `cores` processes: the ingest worker loop over all files in one process, then
    over the same files split into `cores` processes running at once (wall clock). On a machine whose cores share
    a physical core, memory bandwidth or a host's time, the second is more than 1/cores of the first, and no stage
    on local[cores] can reach 1.0x of a one-process loop per core."""
    import multiprocessing as mp

    one = _ingest_worker_loop(paths)
    parts = [paths[i::cores] for i in range(cores)]
    t0 = time.perf_counter()
    with mp.get_context("fork").Pool(cores) as pool:
        pool.map(_ingest_worker_loop, parts)
    return one, time.perf_counter() - t0


def kernel_loops(paths, mb):
    import pyarrow as pa
    import pyarrow.parquet  # noqa: F401

    from jobs import filter as filter_job
    from jobs import ingest
    from udfs import minhash as mh
    from udfs.records import Limits, SourceSpec

    out = {}
    spec = SourceSpec.from_dict({"name": "s", "domain": "web", "format": "jsonl", "path": paths[0],
                                 "text_field": "text", "id_field": "id"})
    limits = Limits(max_doc_bytes=1 << 20, raw_payload_max_bytes=64 << 10, max_line_bytes=None, max_json_depth=100,
                    max_skip_bytes=64 << 20)
    cols = [c.split()[0] for c in ingest.TASK_DDL.split(", ")]
    tasks = []
    for i, p in enumerate(paths):
        tasks.append(dict(task_id=i, source_idx=0, fmt="jsonl", path=p, file=os.path.basename(p), rel_file=p,
                          start=0, end=-1, line_base=0, row_group=0, row_base=0))
    # the record parser alone (the kernel: udfs.records, sha256 and metadata included)
    from udfs import records as R

    t0 = time.perf_counter()
    for t in tasks:
        for _ in R.iter_task_units(spec, t, limits):
            pass
    out["ingest (record parser)"] = time.perf_counter() - t0
    # the worker function of the stage: parse, build Arrow batches, write both tables' Parquet files
    import tempfile

    from jobs.schema import document_arrow_schema, quarantine_arrow_schema

    schemas = {"doc": document_arrow_schema(), "quarantine": quarantine_arrow_schema()}
    texts = []
    with tempfile.TemporaryDirectory() as tmp:
        folders = {k: os.path.join(tmp, k) for k in schemas}
        for f in folders.values():
            os.makedirs(f)
        t0 = time.perf_counter()
        for t in tasks:
            batch = pa.RecordBatch.from_pylist([{c: t[c] for c in cols}])
            for _ in ingest.parse_write_fn([spec], limits, folders, schemas, "bench")(iter([batch])):
                pass
            os.rename(os.path.join(folders["doc"], f"part-{os.getpid()}.parquet"),
                      os.path.join(folders["doc"], f"{t['task_id']}.parquet"))
        out["ingest (worker: parse + write Parquet)"] = time.perf_counter() - t0
        for fn in sorted(os.listdir(folders["doc"])):
            texts.extend(pa.parquet.read_table(os.path.join(folders["doc"], fn), columns=["text"])
                         .column("text").to_pylist())
    cfg = filter_job.resolve_config(__import__("jobs.config", fromlist=["load_config"]).load_config()["filter"])
    t0 = time.perf_counter()
    kept = []
    for i in range(0, len(texts), 2000):
        chunk = texts[i:i + 2000]
        for d in filter_job.filter_records(chunk, cfg, ["web"] * len(chunk)):
            if d["reason"] is None:
                kept.append(d["clean_text"])
    out["filter"] = time.perf_counter() - t0
    mh.signatures(kept[:10], 5, 128, 1)  # JIT outside the timing
    t0 = time.perf_counter()
    for i in range(0, len(kept), 5000):
        mh.signatures(kept[i:i + 5000], 5, 128, 1)
    out["dedup (signatures)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    n_removed = dedup_loop(kept)
    out["dedup (keys + LSH + verify + clusters)"] = time.perf_counter() - t0
    print(f"kernel loop: dedup removes {n_removed} of {len(kept)} documents", flush=True)
    return out, len(texts), len(kept)


def dedup_loop(texts: list[str]) -> int:
    """jobs/dedup.py's work in one process with its own kernels and defaults: normalise, exact digest, MinHash
    signatures and band keys (per batch of 5,000 as the job's mapInArrow), exact duplicates by digest, LSH buckets
    in a dict (all pairs up to max_bucket_pairs, a star beyond), exact-Jaccard verification of every candidate
    pair (each candidate's shingle set built once, `udfs.minhash.shingle_sets`, then one merge per pair, as the
    job), union-find clusters. Returns the number of documents it removes."""
    import hashlib

    import numpy as np

    from jobs import dedup
    from udfs.minhash import band_keys, jaccard_sets, permutations, shingle_sets, signatures
    from udfs.normalise import normalise

    p = dedup.resolve_params({}, argparse.Namespace(threshold=None, ngram=None, num_perm=None, bands=None,
                                                    rows=None, seed=None, verify=None, exact_only=False))
    perms = permutations(p["num_perm"], p["seed"], p["scheme"])
    norm, digests, buckets = [], {}, {}
    exact = 0
    for i in range(0, len(texts), 5000):
        chunk = [normalise(t, True) for t in texts[i:i + 5000]]
        sig = signatures(chunk, p["ngram"], p["num_perm"], p["seed"], p["scheme"], normalised=True, perms=perms)
        keys = band_keys(sig, p["bands"], p["rows"])
        for j, t in enumerate(chunk):
            doc = i + j
            norm.append(t)
            d = hashlib.blake2b(t.encode("utf-8"), digest_size=16).digest()
            if d in digests:
                exact += 1
                continue
            digests[d] = doc
            if t:
                for k in keys[j].tolist():
                    buckets.setdefault(k, []).append(doc)
    pairs = set()
    cap = int(p["max_bucket_pairs"])
    for ids in buckets.values():
        if len(ids) < 2:
            continue
        if len(ids) <= cap:
            pairs.update((a, b) for x, a in enumerate(ids) for b in ids[x + 1:])
        else:
            pairs.update((ids[0], b) for b in ids[1:])
    pairs = sorted(pairs)
    parent = list(range(len(texts)))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    # each candidate's shingle set once (as the job does), then one merge per pair
    cand = sorted({d for pr in pairs for d in pr})
    where, sets, offs = {}, [], [np.zeros(1, np.int64)]
    base = 0
    for i in range(0, len(cand), 5000):
        h, o = shingle_sets([norm[d] for d in cand[i:i + 5000]], p["ngram"])
        for j, d in enumerate(cand[i:i + 5000]):
            where[d] = i + j
        sets.append(h)
        offs.append(o[1:] + base)
        base += int(o[-1])
    allh, allo = np.concatenate(sets) if sets else np.zeros(0, np.uint64), np.concatenate(offs)
    for i in range(0, len(pairs), 20000):
        chunk = pairs[i:i + 20000]
        ia = np.array([where[a] for a, _ in chunk], np.int64)
        ib = np.array([where[b] for _, b in chunk], np.int64)
        sims = jaccard_sets(*_gather(allh, allo, ia), *_gather(allh, allo, ib))
        for (a, b), sim in zip(chunk, sims.tolist()):
            if sim >= p["threshold"]:
                ra, rb = find(a), find(b)
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
    near = sum(1 for d in digests.values() if find(d) != d)
    return exact + near


def _gather(h, offs, idx):
    """The sets idx of (h, offs), packed as jaccard_sets takes them."""
    import numpy as np

    lens = offs[idx + 1] - offs[idx]
    out_offs = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    pos = np.repeat(offs[idx] - out_offs[:-1], lens) + np.arange(out_offs[-1], dtype=np.int64)
    return h[pos], out_offs


def datatrove_run(corpus, work, cores):
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter,
                                          MinhashDedupSignature)
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                            GopherRepetitionFilter)
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    shutil.rmtree(work, ignore_errors=True)
    from datatrove.utils.hashing import HashConfig

    # sha1 like ours (datatrove's default xxhash is one more dependency); 14 buckets x 8 rows is datatrove's default
    cfg = MinhashConfig(hash_config=HashConfig(precision=64, hash_fc="sha1"))
    sig, buckets, clusters = (os.path.join(work, x) for x in ("sigs", "buckets", "clusters"))
    filtered = os.path.join(work, "filtered")
    steps = {
        "filter + signatures": LocalPipelineExecutor(pipeline=[
            JsonlReader(corpus, glob_pattern="*.jsonl"), GopherRepetitionFilter(), GopherQualityFilter(),
            C4QualityFilter(filter_no_terminal_punct=False), FineWebQualityFilter(), JsonlWriter(filtered),
            MinhashDedupSignature(output_folder=sig, config=cfg)],
            tasks=cores, workers=cores, logging_dir=os.path.join(work, "logs1")),
        "buckets": LocalPipelineExecutor(pipeline=[MinhashDedupBuckets(input_folder=sig, output_folder=buckets,
                                                                       config=cfg)],
                                         tasks=cfg.num_buckets, workers=cores, logging_dir=os.path.join(work, "logs2")),
        "cluster": LocalPipelineExecutor(pipeline=[MinhashDedupCluster(input_folder=buckets, output_folder=clusters,
                                                                       config=cfg)],
                                         tasks=1, workers=1, logging_dir=os.path.join(work, "logs3")),
        "dedup filter + write": LocalPipelineExecutor(pipeline=[
            JsonlReader(filtered), MinhashDedupFilter(input_folder=clusters),
            JsonlWriter(os.path.join(work, "deduped"))],
            tasks=cores, workers=cores, logging_dir=os.path.join(work, "logs4")),
    }
    out = {}
    for name, ex in steps.items():
        t0 = time.perf_counter()
        ex.run()
        out[name] = time.perf_counter() - t0
    return out


def by_name(rows, prefix: str) -> float:
    return next(s for n, s, _, _ in rows if n.startswith(prefix))


IN_SESSION = """
import sys, time
sys.path.insert(0, sys.argv[1])
from jobs.session import get_spark
get_spark("bench", master=sys.argv[2])
from jobs import dedup, filter, ingest
lake, inp = sys.argv[3], sys.argv[4]
for force in ([], ["--force"]):
    assert ingest.main(["--lake", lake, "--input", inp, "--format", "jsonl", "--source", "bench", "--domain", "web",
                        "--id-field", "id", *force]) == 0
    assert filter.main(["--lake", lake, *force]) == 0
    assert dedup.main(["--lake", lake, *force]) == 0
"""


def in_session(py, master, env, lake, inp) -> tuple[list[dict], list[dict]]:
    """Ingest, filter and dedup twice in one Python process (one Spark session), the second time with --force:
    (first round's metrics rows, second round's). The second round shows a stage in a warm session, as every stage
    after the first runs in `jobs/pipeline.py` (JVM classes loaded, Python workers started, code compiled)."""
    from jobs.tables import Lake

    shutil.rmtree(lake, ignore_errors=True)
    run_measured([py, "-c", IN_SESSION, REPO, master, lake, inp], env=env)
    rows = sorted(Lake(None, lake, backend="delta-rs").read_arrow("metrics").to_pylist(), key=lambda r: r["started_at"])
    return rows[:3], rows[3:]


def fixed_costs(py, master, env, work, first_file, n_docs: int = 200) -> tuple[list[dict], list[dict]]:
    """`in_session` on the first `n_docs` lines of one corpus file: the stage clock there is almost all fixed cost
    (Spark jobs, Python worker start, commits, the metrics row)."""
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    small = os.path.join(work, "small.jsonl")
    with open(first_file, "rb") as f, open(small, "wb") as out:
        for _ in range(n_docs):
            out.write(f.readline())
    return in_session(py, master, env, os.path.join(work, "lake"), small)


def run_pipeline(args, corpus, rows, py, master, env) -> str:
    """ingest, filter and dedup through jobs/pipeline.py, one Spark session for all of them; returns its lake."""
    sources = os.path.join(args.work, "sources.yaml")
    with open(sources, "w") as f:
        json.dump({"sources": [{"name": "bench", "domain": "web", "format": "jsonl", "id_field": "id",
                                "path": os.path.join(corpus, "*.jsonl")}]}, f)
    lake2 = os.path.join(args.work, "lake-pipeline")
    shutil.rmtree(lake2, ignore_errors=True)
    s, rss, _ = run_measured([py, os.path.join(REPO, "jobs", "pipeline.py"), "--lake", lake2, "--sources", sources,
                              "--stages", "ingest,filter,dedup", "--no-train", "--master", master], env=env)
    rows.append(("lmrefinery: jobs/pipeline.py ingest,filter,dedup (one session)", s, args.cores, rss))
    print(f"pipeline: {s:.1f} s", flush=True)
    return lake2


def pipeline_only(args, corpus, mb, rows, py, master, env) -> None:
    """--pipeline-only: jobs/pipeline.py and datatrove's pipeline on the same files, and their ratio per core."""
    from jobs.tables import Lake

    lake2 = run_pipeline(args, corpus, rows, py, master, env)
    metrics = sorted(Lake(None, lake2, backend="delta-rs").read_arrow("metrics").to_pylist(),
                     key=lambda r: r["started_at"])
    for m in metrics:
        print(f"  {m['stage']}: {m['seconds']:.1f} s in the stage clock, {m['docs_in']} documents in, "
              f"{m['docs_out']} out", flush=True)
    if not args.skip_datatrove:
        t0 = time.perf_counter()
        steps = datatrove_run(corpus, os.path.join(args.work, "datatrove"), args.cores)
        total = time.perf_counter() - t0
        for name, s in steps.items():
            rows.append((f"datatrove: {name}", s, args.cores, None))
        rows.append(("datatrove: whole pipeline", total, args.cores, None))
        kept = sum(1 for p in os.listdir(os.path.join(args.work, "datatrove", "deduped")) for _ in
                   _jsonl_lines(os.path.join(args.work, "datatrove", "deduped", p)))
        print(f"datatrove keeps {kept} documents", flush=True)
    print(f"\n{'step':58s} {'seconds':>8s} {'cores':>5s} {'MB/s/core':>10s} {'peak RSS':>9s}")
    for name, s, c, rss in rows:
        print(f"{name:58s} {s:8.1f} {c:5d} {mb / s / c:10.2f} {'' if rss is None else f'{rss / 1e9:.2f} GB':>9s}")
    by = {n: s for n, s, _, _ in rows}
    if "datatrove: whole pipeline" in by:
        print(f"whole pipeline (jobs/pipeline.py, JVM start included): lmrefinery / datatrove per core "
              f"{by['datatrove: whole pipeline'] / by_name(rows, 'lmrefinery: jobs/pipeline.py'):.2f}x")
    print(f"load average at end: {os.getloadavg()}")


def _jsonl_lines(path: str):
    import gzip

    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        yield from f


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=1000.0)
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--work", default=os.path.join(REPO, "bench", "out", "pipeline"))
    ap.add_argument("--skip-datatrove", action="store_true")
    ap.add_argument("--pipeline-only", action="store_true",
                    help="only jobs/pipeline.py (ingest, filter, dedup in one session) against datatrove's pipeline "
                         "on the same files: the whole-pipeline comparison without the kernel loops and the "
                         "per-stage runs (those are measured at a smaller --mb)")
    args = ap.parse_args()
    from bench_ingest import existing_corpus, generate_corpus

    print(f"load average at start: {os.getloadavg()} on {os.cpu_count()} cpus", flush=True)
    corpus = os.path.join(args.work, f"corpus-{args.mb:g}mb-{args.files}")
    if existing_corpus(corpus, args.mb, args.files, 0.0, 1234) is None:
        shutil.rmtree(corpus, ignore_errors=True)
        generate_corpus(corpus, args.mb, args.files, 0.0, 1234)
    paths = sorted(os.path.join(corpus, f) for f in os.listdir(corpus) if f.endswith(".jsonl"))
    mb = sum(os.path.getsize(p) for p in paths) / 1e6
    print(f"corpus: {len(paths)} files, {mb:.1f} MB in {corpus}", flush=True)

    rows = []  # (step, seconds, cores, peak rss)
    py, master = sys.executable, f"local[{args.cores}]"
    env = {**os.environ, "LMR_SPARK_LOG_LEVEL": "ERROR"}
    if args.pipeline_only:
        return pipeline_only(args, corpus, mb, rows, py, master, env)
    k, n_docs, n_kept = kernel_loops(paths, mb)
    for name, s in k.items():
        rows.append((f"kernel loop: {name}", s, 1, None))
    print(f"kernel loops done: {n_docs} documents, {n_kept} kept by the filter", flush=True)
    one, par = machine_scaling(paths, args.cores)
    print(f"machine scaling: the ingest worker loop takes {one:.1f} s in one process and {par:.1f} s wall in "
          f"{args.cores} processes at once on the same files: {one / (par * args.cores):.3f}x of ideal per core "
          f"(the ceiling of any stage / kernel ratio below on this machine)", flush=True)

    lake = os.path.join(args.work, "lake")
    shutil.rmtree(lake, ignore_errors=True)
    stage_cmds = {
        "ingest": [py, os.path.join(REPO, "jobs", "ingest.py"), "--lake", lake, "--input", os.path.join(corpus, "*.jsonl"),
                   "--format", "jsonl", "--source", "bench", "--domain", "web", "--id-field", "id"],
        "filter": [py, os.path.join(REPO, "jobs", "filter.py"), "--lake", lake],
        "dedup": [py, os.path.join(REPO, "jobs", "dedup.py"), "--lake", lake],
    }
    for name, cmd in stage_cmds.items():
        s, rss, _ = run_measured(cmd + ["--master", master], env=env)
        rows.append((f"lmrefinery: {name} (process, JVM start included)", s, args.cores, rss))
        print(f"{name}: {s:.1f} s", flush=True)
    from jobs.tables import Lake
    metrics = Lake(None, lake, backend="delta-rs").read_arrow("metrics").to_pylist()
    run_pipeline(args, corpus, rows, py, master, env)
    fixed = fixed_costs(py, master, env, os.path.join(args.work, "fixed"), paths[0])
    _, warm = in_session(py, master, env, os.path.join(args.work, "lake-session"), os.path.join(corpus, "*.jsonl"))
    print("in one session, second round:", ", ".join(f"{m['stage']} {m['seconds']:.1f} s" for m in warm), flush=True)
    for m in metrics:
        t = json.loads(m["extra"]).get("timings", {})
        print(f"  {m['stage']}: {m['seconds']:.1f} s in the stage clock; writes (with the computing they trigger) "
              f"{t.get('write_data_s')} s, Delta commits {t.get('commit_s')} s, the rest {t.get('compute_s')} s")
    if not args.skip_datatrove:
        dt_work = os.path.join(args.work, "datatrove")
        t0 = time.perf_counter()
        steps = datatrove_run(corpus, dt_work, args.cores)
        total = time.perf_counter() - t0
        for name, s in steps.items():
            rows.append((f"datatrove: {name}", s, args.cores, None))
        rows.append(("datatrove: whole pipeline", total, args.cores, None))
    lm_total = by_name(rows, "lmrefinery: jobs/pipeline.py")

    print(f"\n{'step':58s} {'seconds':>8s} {'cores':>5s} {'MB/s/core':>10s} {'peak RSS':>9s}")
    for name, s, c, rss in rows:
        print(f"{name:58s} {s:8.1f} {c:5d} {mb / s / c:10.2f} {'' if rss is None else f'{rss / 1e9:.2f} GB':>9s}")
    by = {n: s for n, s, _, _ in rows}
    clock = {m["stage"]: m["seconds"] for m in metrics}
    warm_clock = {m["stage"]: m["seconds"] for m in warm}
    print("\nstage / kernel loop, per core (process = JVM start included; stage clock = the metrics row's seconds,"
          " from the Spark session on; warm = the stage clock of a second run in the same session)")
    for stage, kname in (("ingest", "ingest (record parser)"), ("ingest", "ingest (worker: parse + write Parquet)"),
                         ("filter", "filter"), ("dedup", "dedup (keys + LSH + verify + clusters)"),
                         ("dedup", "dedup (signatures)")):
        proc = by[[n for n in by if n.startswith(f"lmrefinery: {stage}")][0]]
        k_s = by[f"kernel loop: {kname}"]
        print(f"  {stage} vs {kname}: process {k_s / (proc * args.cores):.3f}x, "
              f"stage clock {k_s / (clock[stage] * args.cores):.3f}x, warm {k_s / (warm_clock[stage] * args.cores):.3f}x")
    if "datatrove: whole pipeline" in by:
        print(f"whole pipeline (jobs/pipeline.py, JVM start included): lmrefinery / datatrove per core "
              f"{by['datatrove: whole pipeline'] / lm_total:.2f}x")
    print("\nfixed cost per stage (the same stages on a 200-document input, twice in one session; stage clock):")
    for label, ms in (("first run in the session", fixed[0]), ("second run (warm)", fixed[1])):
        for m in ms:
            t = json.loads(m["extra"]).get("timings", {})
            print(f"  {label}: {m['stage']}: {m['seconds']:.2f} s (session start before it {t.get('session_s')} s; "
                  f"writes {t.get('write_data_s')} s, commits {t.get('commit_s')} s, the rest {t.get('compute_s')} s)")
    print(f"machine scaling (measured before the stages): {one / (par * args.cores):.3f}x of ideal per core for "
          f"{args.cores} processes")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    from udfs.common import exit_process

    # the figures are printed; end without the native destructors (deltalake + pyarrow in this process sometimes
    # aborted here with rc 134 after all output, as the command-line stages did before they ended this way)
    exit_process(main() or 0)
