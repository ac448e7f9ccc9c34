"""Train a byte-level BPE on a lake table and save it as a file `jobs/pack.py --tokenizer FILE` (and the trainer /
sampler, through `udfs.tokenize.load_encoding`) can load."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import time

from jobs.cli import UserError, base_parser, run_main

DESCRIPTION = """\
Train a byte-level BPE tokenizer (GPT-style pre-tokenisation regex, 256 byte tokens + merges + <|endoftext|>)
on the text of a lake table and save it as one JSON file.

How the work is split: Spark picks a deterministic sample of documents up to --sample-bytes of UTF-8 text
(documents ranked by xxhash64(seed, id)) and counts the pre-tokens of that sample on the executors; only the
table of distinct pre-tokens and their counts reaches the driver, which then learns the merges (single process,
incremental pair counts). Same table, options and seed -> the same file.

example:
  python jobs/train_tokenizer.py --lake ./lake --input-table deduped --vocab-size 8192 --out ./lake/bpe8k.json
  python jobs/pack.py --lake ./lake --tokenizer ./lake/bpe8k.json
"""


DEFAULTS = {"vocab_size": 8192, "sample_bytes": 64 * 1024 * 1024, "pattern": "cl100k", "min_frequency": 2,
            "seed": 0}
TOKENIZER_FILE = "tokenizer.json"  # the file name used when --out is a folder


def build_parser():
    p = base_parser("train_tokenizer", DESCRIPTION, input_table="mixed")
    p.add_argument("--vocab-size", type=int, default=None,
                   help="total vocabulary: 256 bytes + merges + <|endoftext|> (default 8192)")
    p.add_argument("--out", required=True,
                   help=f"tokenizer file to write (JSON); an existing folder or a path ending in '/' gets "
                        f"{TOKENIZER_FILE} inside it")
    p.add_argument("--sample-bytes", type=int, default=None,
                   help="UTF-8 text budget of the training sample (default 64 MiB)")
    p.add_argument("--pattern", choices=["cl100k", "gpt2"], default=None,
                   help="pre-tokenisation regex (default cl100k: digits in groups of 1-3, newlines kept apart)")
    p.add_argument("--min-frequency", type=int, default=None, help="stop when the best pair occurs fewer times "
                   "(default 2)")
    p.add_argument("--seed", type=int, default=None, help="sample seed (default 0)")
    p.add_argument("--name", default=None, help="encoding name stored in the file (default: file stem)")
    p.epilog = ("Defaults may also come from a `train_tokenizer:` section of the config (--conf / --set "
                "train_tokenizer.vocab_size=4096); command-line options win.")
    return p


def resolve_config(args, conf: dict) -> dict:
    """DEFAULTS <- config section `train_tokenizer` <- command-line options; one-line errors for bad values."""
    section = conf.get("train_tokenizer") or {}
    if not isinstance(section, dict):
        raise UserError("train_tokenizer in the config must be a mapping")
    unknown = sorted(set(section) - set(DEFAULTS))
    if unknown:
        raise UserError(f"unknown train_tokenizer config key(s): {', '.join(unknown)} "
                        f"(known: {', '.join(sorted(DEFAULTS))})")
    cfg = {**DEFAULTS, **section}
    for key in DEFAULTS:
        val = getattr(args, key)
        if val is not None:
            cfg[key] = val
    for key in ("vocab_size", "sample_bytes", "min_frequency", "seed"):
        if isinstance(cfg[key], bool) or not isinstance(cfg[key], int):
            raise UserError(f"train_tokenizer.{key} must be an integer, got {cfg[key]!r}")
    if cfg["pattern"] not in ("cl100k", "gpt2"):
        raise UserError(f"train_tokenizer.pattern must be cl100k or gpt2, got {cfg['pattern']!r}")
    if cfg["vocab_size"] < 257:
        raise UserError("--vocab-size must be at least 257 (256 bytes + <|endoftext|>)")
    if cfg["sample_bytes"] < 1:
        raise UserError(f"--sample-bytes must be positive, got {cfg['sample_bytes']}")
    return cfg


def output_path(out: str) -> str:
    """The file to write: `out` itself, or `<out>/tokenizer.json` when `out` is a folder (or ends with '/')."""
    if os.path.isdir(out) or out.endswith(("/", os.sep)):
        return os.path.join(out, TOKENIZER_FILE)
    return out


def _count_fn(pat_str: str):
    def count(batches):
        import pyarrow as pa

        from udfs.bpe import count_pretokens

        for b in batches:
            c = count_pretokens(b.column("text").to_pylist(), pat_str)
            if c:
                yield pa.RecordBatch.from_arrays([pa.array(list(c.keys()), pa.binary()),
                                                  pa.array(list(c.values()), pa.int64())], names=["piece", "n"])
    return count


def sample_texts(df, budget: int, seed: int):
    """Documents ranked by xxhash64(seed, id), kept while the running UTF-8 size stays within `budget`.
    The running sum is a window over (bytes, rank) rows only, not text."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    docs = df.where(F.col("text").isNotNull())
    if "epoch_copy" in df.columns:  # repeated documents would weigh their pre-tokens twice
        docs = docs.dropDuplicates(["id"])
    docs = docs.select("id", "text")
    keyed = docs.select("id", F.xxhash64(F.lit(seed), F.col("id")).alias("r"),
                        F.octet_length("text").alias("nb"))
    w = Window.orderBy("r", "id").rowsBetween(Window.unboundedPreceding, Window.currentRow)
    chosen = keyed.withColumn("cum", F.sum("nb").over(w)).where(F.col("cum") <= budget).select("id")
    return docs.join(chosen, "id")


def main(argv=None):
    from pyspark.sql import functions as F

    from jobs.config import load_config
    from jobs.session import get_spark
    from jobs.stage import log
    from jobs.tables import Lake
    from udfs.bpe import PATTERNS, save_bpe, train_bpe_from_counts

    args = build_parser().parse_args(argv)
    cfg = resolve_config(args, load_config(args.conf, args.overrides))
    out = output_path(args.out)
    spark = get_spark("lmrefinery-train-tokenizer", master=args.master)
    lake = Lake(spark, args.lake)
    df = lake.read(args.input_table)
    if "text" not in df.columns:
        raise UserError(f"table '{args.input_table}' has no text column")
    pat = PATTERNS[cfg["pattern"]]
    t0 = time.time()
    sample = sample_texts(df, cfg["sample_bytes"], cfg["seed"])
    rows = (sample.mapInArrow(_count_fn(pat), "piece binary, n bigint").groupBy("piece")
            .agg(F.sum("n").alias("n")).collect())
    counts = {bytes(r["piece"]): int(r["n"]) for r in rows}
    if not counts:
        raise UserError(f"table '{args.input_table}' has no text to train on")
    log(f"train_tokenizer: {len(counts)} distinct pre-tokens ({sum(counts.values())} in all) counted in "
        f"{time.time() - t0:.1f}s; learning merges on the driver")
    t1 = time.time()
    into_folder = out != args.out
    name = args.name or (os.path.basename(os.path.normpath(args.out)) if into_folder
                         else os.path.splitext(os.path.basename(out))[0])
    bpe = train_bpe_from_counts(counts, cfg["vocab_size"], pat, cfg["min_frequency"], name)
    save_bpe(bpe, out)
    log(f"train_tokenizer: vocab {bpe['vocab_size']} ({len(bpe['ranks']) - 256} merges) in {time.time() - t1:.1f}s "
        f"-> {os.path.abspath(out)}")
    return 0


if __name__ == "__main__":
    from udfs.common import exit_process

    exit_process(run_main("train_tokenizer", main))
