"""Packing throughput through Spark vs tiktoken's own `encode_ordinary_batch` on the same text, same run.

    python bench/bench_pack.py [--mb 96] [--cores 2] [--tokenizer gpt2]

Text: source and documentation files of the installed Python packages (code and English prose), one document
per file, capped at 64 KiB, up to --mb MiB. Figures, all in tokens/s per core:
  baseline 1 thread   tiktoken encode_ordinary_batch(texts, num_threads=1) in this process
  baseline N threads  encode_ordinary_batch(texts, num_threads=N) / N
  spark order+encode  the pack job's steps 1-3 alone: Delta read, split/shuffle keys, range partitioning and sort,
                      mapInArrow encode with the per-partition piece writes, counts collected / N
  spark pack          jobs.pack.pack end to end (range partitioning and sort, encode with per-partition piece
                      writes, shard assembly with sha256, manifest, verification) / N
Each Spark figure is printed with its ratio to the 1-thread baseline (target >= 0.8x per core). Spark's fixed
costs (job scheduling, Python worker start, range sampling) are a few seconds whatever the size, so small --mb
understates the steady-state rate: 24 MiB is ~12M gpt2 tokens, 96 MiB ~47M.
"""
import argparse
import glob
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def corpus(max_bytes: int, cap: int = 64 * 1024) -> list[str]:
    import site

    roots = site.getsitepackages() + [os.path.dirname(os.__file__)]
    files = []
    for root in roots:
        for ext in ("py", "md", "rst", "txt"):
            files += glob.glob(os.path.join(root, "**", f"*.{ext}"), recursive=True)
    texts, total = [], 0
    for f in sorted(set(files)):
        try:
            with open(f, encoding="utf-8") as fh:
                t = fh.read(cap)
        except (UnicodeDecodeError, OSError):
            continue
        if len(t) < 200:
            continue
        texts.append(t)
        total += len(t.encode())
        if total >= max_bytes:
            break
    return texts


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=96, help="MiB of text (default 96)")
    ap.add_argument("--cores", type=int, default=os.cpu_count(), help="Spark local[N] cores (default: all)")
    ap.add_argument("--tokenizer", default="gpt2")
    args = ap.parse_args(argv)

    from udfs.tokenize import load_encoding

    texts = corpus(int(args.mb * 1024 * 1024))
    nbytes = sum(len(t.encode()) for t in texts)
    enc = load_encoding(args.tokenizer)
    n = args.cores
    print(f"text: {len(texts)} documents, {nbytes / 2**20:.1f} MiB; tokenizer {args.tokenizer}; {n} cores")

    enc.encode_ordinary_batch(texts[:200], num_threads=1)  # warm-up
    t = time.perf_counter()
    toks = enc.encode_ordinary_batch(texts, num_threads=1)
    base1 = sum(map(len, toks)) / (time.perf_counter() - t)
    ntok = sum(map(len, toks)) + len(texts)  # + EOS, as packed
    del toks
    t = time.perf_counter()
    enc.encode_ordinary_batch(texts, num_threads=n)
    basen = (ntok - len(texts)) / (time.perf_counter() - t) / n

    from jobs.pack import ORDER, PIECE_DDL, _encode_write_fn, pack, prepare
    from jobs.schema import document_row, documents_df
    from jobs.session import get_spark
    from jobs.tables import Lake
    from udfs.tokenize import resolve_spec, token_dtype

    spark = get_spark("bench-pack", master=f"local[{n}]",
                      conf={"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false",
                            "spark.sql.shuffle.partitions": str(2 * n), "spark.driver.memory": "4g"})
    tmp = tempfile.mkdtemp(prefix="bench-pack-")
    lake = Lake(spark, os.path.join(tmp, "lake"))
    rows = [document_row(f"b{i:07d}", t, domain="code" if i % 2 else "prose") for i, t in enumerate(texts)]
    lake.write(documents_df(spark, rows).repartition(2 * n), "mixed")
    del rows
    df = lake.read("mixed")
    # warm-up: JVM, Python workers and the encoder cache in each worker
    pack(spark, df.limit(200), os.path.join(tmp, "warm"), tokenizer=args.tokenizer, val_fraction=0.01)

    resolved = resolve_spec(args.tokenizer)
    pieces = os.path.join(tmp, "pieces")
    os.makedirs(pieces)
    t = time.perf_counter()
    parts = (prepare(df, 0.01, 1).repartitionByRange(2 * n, *ORDER).sortWithinPartitions(*ORDER)
             .mapInArrow(_encode_write_fn(resolved, token_dtype(enc.n_vocab).str, pieces), PIECE_DDL).collect())
    got = sum(r["tokens"] for r in parts)
    enc_rate = got / (time.perf_counter() - t) / n
    assert got == ntok, (got, ntok)

    t = time.perf_counter()
    m = pack(spark, df, os.path.join(tmp, "packed"), tokenizer=args.tokenizer, val_fraction=0.01, seed=1,
             shard_tokens=1_000_000)
    pack_rate = (m["splits"]["train"]["tokens"] + m["splits"]["val"]["tokens"]) / (time.perf_counter() - t) / n
    assert m["splits"]["train"]["tokens"] + m["splits"]["val"]["tokens"] == ntok

    print(f"{'':<22}{'tokens/s/core':>14}{'vs 1-thread baseline':>24}")
    for name, rate in (("baseline 1 thread", base1), (f"baseline {n} threads", basen),
                       ("spark order+encode", enc_rate), ("spark pack (e2e)", pack_rate)):
        print(f"{name:<22}{rate:>14,.0f}{rate / base1:>23.2f}x")
    try:
        load = os.getloadavg()[0]
        print(f"(1-min load average during the run: {load:.1f} on {os.cpu_count()} CPUs)")
    except OSError:
        pass
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    spark.stop()


if __name__ == "__main__":
    # end without the native destructors: deltalake + pyarrow in one process sometimes aborted at exit with
    # rc 134 after all the work was done (see udfs.common.exit_process)
    from udfs.common import exit_process  # noqa: E402

    exit_process(main() or 0)
