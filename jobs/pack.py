"""Tokenize a table and pack it into token shards for the trainer (`<lake>/packed/`, format lmrefinery-packed-v1).

Steps (all Spark work is distributed; the driver only sees per-piece and per-shard summaries):
1. split: `val` when pmod(xxhash64("lmr-split", id), 1e6) < val_fraction * 1e6, so every epoch copy of a document
   lands in the same split whatever the seed; shuffle key: xxhash64(seed, id, epoch_copy).
2. global order: range-partition and sort by (split, shuffle key, id, epoch_copy, text hash). Ordering comes
   before encoding because range partitioning samples its input, and sampling the encoder's output would run
   the BPE twice.
3. encode: `mapInArrow` over each ordered partition, tiktoken's ordinary encoding into numpy buffers (one encoder
   per Python worker), EOS after every document. Each task streams its range of the global order to one piece
   per split (`.bin` tokens, `.idx` uint64 end offsets) in a temporary folder and returns only counts and the
   piece's first key. The driver orders the pieces by that key and sums their token counts into each piece's
   split offset (a distributed prefix sum).
4. assemble: a document whose first token lies at offset o of its split belongs to shard o // shard_tokens. One
   task per run of consecutive shard numbers copies the byte ranges of its documents out of the pieces and writes
   each shard's `.bin` and `.idx` (uint64 document end offsets), hashing as it goes. The rule depends only on the
   global order, never on the number of partitions, so the bytes are the same for 2 or 8 partitions.
5. the driver numbers the shards contiguously, writes `manifest.json`, verifies every file (`verify_packed`) and
   renames the temporary folder to `<lake>/packed` (the old one is replaced only when the new one is complete).

No process ever holds a split's tokens: encode tasks hold Arrow batches, assemble tasks read piece indexes in
bounded chunks, the driver holds offsets and summaries. Pieces and shards live on the output's filesystem (shared
storage on a cluster, as for every table of the lake); the temporary folder is one hidden folder next to the
output, removed on success and on any error the driver sees.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import datetime as dt
import hashlib
import json
import shutil
import time
import uuid

import numpy as np

from jobs import storage
from jobs.cli import UserError, run_main
from jobs.runner import Flag, Stage, stage_main
from udfs import packed

# the packed format lives in udfs/packed.py; these names stay importable from here
FORMAT = packed.FORMAT
PackedError = packed.PackedError
read_documents = packed.read_documents

SPLIT_SALT = "lmr-split"
SPLIT_BUCKETS = 1_000_000
DEFAULT_REPORT_TOKENIZERS = ["gpt2", "cl100k_base", "o200k_base"]

DESCRIPTION = """\
Tokenize a table (default `mixed`; any table with the document schema, with or without `epoch_copy`) and pack
it into `<lake>/packed/`: per split (train, val) shards `NAME-00000.bin` (uint16 when the vocabulary fits, else
uint32; EOS after every document) with `NAME-00000.idx` (uint64 document end offsets) and `manifest.json`.
The train/val split hashes the document id; the document order hashes (seed, id, epoch_copy). Same input and
options give byte-identical shards whatever the number of Spark partitions.

Tokenizers work offline: gpt2, cl100k_base and o200k_base need `python scripts/install_tokenizers.py` once;
a path to a trained BPE (jobs/train_tokenizer.py) or to a .tiktoken ranks file works too.

examples:
  python jobs/pack.py --lake ./lake --tokenizer gpt2 --val-fraction 0.01 --seed 1337
  python jobs/pack.py --lake ./lake --compression-report          # also bytes/token per domain and tokenizer
  python jobs/pack.py --lake ./lake --report-only --report-tokenizers gpt2,o200k_base,./lake/bpe8k.json
  python jobs/pack.py --lake ./lake --input-table decontaminated --per-domain   # <lake>/packed_domains/<domain>/

--per-domain packs every domain into its own packed folder under <lake>/packed_domains (or --out), each a
complete lmrefinery-packed-v1 folder, and lists them in domains.json there: the input of DoReMi
(jobs/doremi.py), which needs a batch from every domain at every step.
"""

SHARD_DDL = ("split string, shard bigint, tokens bigint, documents bigint, "
             "bin_name string, bin_bytes bigint, bin_sha256 string, idx_name string, idx_bytes bigint, "
             "idx_sha256 string")
REPORT_DDL = "domain string, tokenizer string, docs bigint, bytes bigint, tokens bigint, words bigint"
ORDER = ["split", "skey", "id", "epoch_copy", "thash"]


# ---- the Python side of each step (runs in executors) ----------------------------------------------------------
PIECE_DDL = ("pid int, split string, domain string, docs bigint, tokens bigint, bytes bigint, piece string, "
             "first struct<skey:bigint,id:string,epoch_copy:bigint,thash:bigint>")


class _PieceWriter:
    """One partition's documents of one split, in order: `<piece>.bin` tokens and `<piece>.idx` uint64 end offsets
    relative to the piece. Written under a per-attempt name and renamed at the end, so a retried or speculative
    task attempt never leaves a half-written piece under the final name (both attempts write the same bytes)."""

    def __init__(self, piece_dir: str, split: str, pid: int, first: dict):
        self.piece = f"{split}-p{pid:06d}"
        self.first = first
        self.suffix = f".{uuid.uuid4().hex}.tmp"
        self.path = os.path.join(piece_dir, self.piece)
        self.fb = open(self.path + ".bin" + self.suffix, "wb")
        self.fi = open(self.path + ".idx" + self.suffix, "wb")
        self.tokens = 0

    def add(self, data, counts: np.ndarray) -> None:
        self.fb.write(data)
        self.fi.write(packed.index_bytes(self.tokens + np.cumsum(counts, dtype=np.uint64)))
        self.tokens += int(counts.sum())

    def close(self) -> None:
        self.fb.close()
        self.fi.close()
        os.replace(self.path + ".bin" + self.suffix, self.path + ".bin")
        os.replace(self.path + ".idx" + self.suffix, self.path + ".idx")

    def discard(self) -> None:
        for f in (self.fb, self.fi):
            f.close()
        for ext in (".bin", ".idx"):
            try:
                os.remove(self.path + ext + self.suffix)
            except FileNotFoundError:
                pass


def _encode_write_fn(resolved: dict, dtype_str: str, piece_dir: str):
    """Encode one range partition (rows arrive in global order) and stream its tokens to one piece per split;
    yields (split, domain) counts and each piece's first key, which the driver turns into global offsets."""
    def encode_write(batches):
        import pyarrow as pa
        import pyarrow.compute as pc
        from pyspark import TaskContext

        from udfs.tokenize import encode_with_eos, load_encoding

        enc = load_encoding(resolved)
        dtype = np.dtype(dtype_str)
        pid = TaskContext.get().partitionId()
        writers, stats = {}, {}
        try:
            for b in batches:
                n = b.num_rows
                if n == 0:
                    continue
                flat, counts = encode_with_eos(enc, b.column("text").to_pylist(), dtype)
                ends = np.cumsum(counts)
                n_bytes = pc.binary_length(pc.cast(b.column("text"), pa.binary())).to_numpy()
                splits = b.column("split").to_pylist()
                domains = b.column("domain").to_pylist()
                for d in range(n):
                    st = stats.setdefault((splits[d], domains[d]), [0, 0, 0])
                    st[0] += 1
                    st[1] += int(counts[d])
                    st[2] += int(n_bytes[d])
                i = 0
                while i < n:  # rows are sorted by split: at most one train run and one val run per partition
                    j = i + 1
                    while j < n and splits[j] == splits[i]:
                        j += 1
                    w = writers.get(splits[i])
                    if w is None:
                        first = {c: b.column(c)[i].as_py() for c in ("skey", "id", "epoch_copy", "thash")}
                        w = writers[splits[i]] = _PieceWriter(piece_dir, splits[i], pid, first)
                    lo = int(ends[i - 1]) if i else 0
                    w.add(memoryview(flat[lo:int(ends[j - 1])]), counts[i:j])
                    i = j
            for w in writers.values():
                w.close()
        except BaseException:
            for w in writers.values():
                w.discard()
            raise
        rows = [{"pid": pid, "split": sp, "domain": dom, "docs": v[0], "tokens": v[1], "bytes": v[2],
                 "piece": writers[sp].piece, "first": writers[sp].first} for (sp, dom), v in sorted(stats.items())]
        if rows:
            yield pa.RecordBatch.from_pylist(rows, schema=_piece_schema())
    return encode_write


def _piece_schema():
    import pyarrow as pa

    first = pa.struct([("skey", pa.int64()), ("id", pa.string()), ("epoch_copy", pa.int64()), ("thash", pa.int64())])
    return pa.schema([("pid", pa.int32()), ("split", pa.string()), ("domain", pa.string()), ("docs", pa.int64()),
                      ("tokens", pa.int64()), ("bytes", pa.int64()), ("piece", pa.string()), ("first", first)])


class _ShardWriter(packed.ShardWriter):
    """One shard of an assemble task, under per-attempt names (numbered and renamed by the driver), filled with
    byte ranges of pieces."""

    def __init__(self, out_dir: str, split: str, shard: int, attempt: str):
        self.split, self.shard = split, shard
        # per-attempt names: a retried or speculative attempt never truncates a file another attempt reported
        self.bin_name = f"{split}-s{shard:012d}-{attempt}.bin.part"
        self.idx_name = f"{split}-s{shard:012d}-{attempt}.idx.part"
        super().__init__(os.path.join(out_dir, self.bin_name), os.path.join(out_dir, self.idx_name))

    def add_range(self, bin_path: str, byte_lo: int, byte_hi: int, rel_ends: np.ndarray) -> None:
        """Copy bytes [byte_lo, byte_hi) of a piece; `rel_ends` are the copied documents' end offsets (tokens)
        relative to the first copied token."""
        with open(bin_path, "rb") as f:
            f.seek(byte_lo)
            left = byte_hi - byte_lo
            while left > 0:
                block = f.read(min(left, 1 << 22))
                if not block:
                    raise RuntimeError(f"piece {bin_path} is shorter than its index")
                self.write_tokens(block)
                left -= len(block)
        self.end_documents(rel_ends)

    def close(self) -> dict:
        return {"split": self.split, "shard": self.shard, "bin_name": self.bin_name, "idx_name": self.idx_name,
                **super().close()}


def _assemble_fn(piece_dir: str, out_dir: str, itemsize: int, shard_tokens: int):
    """Each input row is a run of consecutive shard numbers [lo, hi) of one split with the pieces that overlap
    its token range (JSON list of [piece, global start offset]). A document goes to shard o // shard_tokens,
    o = the split offset of its first token. Every piece's index is read once per run, in bounded chunks."""
    chunk_docs = 1 << 20

    def assemble(batches):
        import pyarrow as pa

        done = []
        attempt = uuid.uuid4().hex[:12]
        for b in batches:
            for split, lo, hi, spec in zip(*(b.column(c).to_pylist() for c in ("split", "lo", "hi", "pieces"))):
                w = None
                for piece, g0 in json.loads(spec):
                    ends = np.memmap(os.path.join(piece_dir, piece + ".idx"), dtype=packed.INDEX_DTYPE, mode="r")  # never empty

                    def first_at(x):  # first document of the piece whose first token is at split offset >= x
                        if x <= g0:
                            return 0  # uint64 search keys: an int key would promote the index to float64
                        return min(int(np.searchsorted(ends, np.uint64(x - g0))) + 1, len(ends))

                    a, z = first_at(lo * shard_tokens), first_at(hi * shard_tokens)
                    for c in range(a, z, chunk_docs):
                        d = min(c + chunk_docs, z)
                        stop = np.asarray(ends[c:d], dtype=np.int64)
                        start = np.concatenate(([int(ends[c - 1]) if c else 0], stop[:-1]))
                        shard = (g0 + start) // shard_tokens
                        cuts = np.flatnonzero(np.diff(shard)) + 1
                        for i, j in zip(np.concatenate(([0], cuts)), np.concatenate((cuts, [d - c]))):
                            k = int(shard[i])
                            if w is None or w.shard != k:
                                if w is not None:
                                    done.append(w.close())
                                w = _ShardWriter(out_dir, split, k, attempt)
                            base = int(start[i])
                            w.add_range(os.path.join(piece_dir, piece + ".bin"), base * itemsize,
                                        int(stop[j - 1]) * itemsize, stop[i:j] - base)
                if w is not None:
                    done.append(w.close())
        if done:
            yield pa.RecordBatch.from_pylist(done, schema=_shard_schema())
    return assemble


def _shard_schema():
    import pyarrow as pa

    return pa.schema([("split", pa.string()), ("shard", pa.int64()), ("tokens", pa.int64()),
                      ("documents", pa.int64()), ("bin_name", pa.string()),
                      ("bin_bytes", pa.int64()), ("bin_sha256", pa.string()), ("idx_name", pa.string()),
                      ("idx_bytes", pa.int64()), ("idx_sha256", pa.string())])


# ---- driver ---------------------------------------------------------------------------------------------------
def prepare(df, val_fraction: float, seed: int, extra_val_id: str | None = None):
    """Input rows -> (split, skey, id, epoch_copy, thash, domain, text); null text or id rows are dropped."""
    from pyspark.sql import functions as F

    ec = F.col("epoch_copy").cast("long") if "epoch_copy" in df.columns else F.lit(0).cast("long")
    base = df.where(F.col("text").isNotNull() & F.col("id").isNotNull()).select(
        "id", "text", F.coalesce(F.col("domain"), F.lit("unknown")).alias("domain"), ec.alias("epoch_copy"))
    val_cond = _bucket() < F.lit(int(round(val_fraction * SPLIT_BUCKETS)))
    if extra_val_id is not None:
        val_cond = val_cond | (F.col("id") == F.lit(extra_val_id))
    return base.select(
        F.when(val_cond, F.lit("val")).otherwise(F.lit("train")).alias("split"),
        F.xxhash64(F.lit(int(seed)), F.col("id"), F.col("epoch_copy")).alias("skey"),
        "id", "epoch_copy", F.xxhash64(F.col("text")).alias("thash"), "domain", "text")


def _bucket():
    from pyspark.sql import functions as F

    return F.pmod(F.xxhash64(F.lit(SPLIT_SALT), F.col("id")), F.lit(SPLIT_BUCKETS))


def _first_val_id(df) -> str | None:
    """For inputs too small for val_fraction to pick any id: the id with the lowest split bucket, provided at
    least one other id stays in train."""
    from pyspark.sql import functions as F

    ok = df.where(F.col("text").isNotNull() & F.col("id").isNotNull())
    r = ok.agg(F.min(F.struct(_bucket().alias("b"), F.col("id").alias("id"))).alias("first"),
               F.max("id").alias("last")).collect()[0]
    if r["first"] is None or r["first"]["id"] == r["last"]:
        return None
    return r["first"]["id"]


def pack(spark, df, out_dir: str, tokenizer: str = "gpt2", val_fraction: float = 0.01, seed: int = 1337,
         shard_tokens: int = 50_000_000, nanogpt_bins: bool = False, source: dict | None = None,
         mixture_weights: dict | None = None, partitions: int | None = None, extra: dict | None = None) -> dict:
    """Pack DataFrame `df` (document schema) into `out_dir`; returns the verified manifest."""
    from jobs.stage import log
    from udfs.tokenize import load_encoding, resolve_spec

    if not 0 <= val_fraction < 1:
        raise UserError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if shard_tokens <= 0:
        raise UserError(f"--shard-tokens must be positive, got {shard_tokens}")
    resolved = resolve_spec(tokenizer)
    enc = load_encoding(resolved)
    dtype = packed.token_dtype(enc.n_vocab)
    partitions = int(partitions or spark.conf.get("spark.sql.shuffle.partitions"))

    out_dir = os.path.abspath(out_dir)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(out_dir)}-tmp-{uuid.uuid4().hex[:12]}")
    os.makedirs(tmp)
    t0 = time.time()
    try:
        extra_val, encode_round = None, 0
        if 0 < val_fraction and round(val_fraction * SPLIT_BUCKETS) == 0:  # no id can hash into val: choose one now
            extra_val = _first_val_id(df)
            log(f"pack: --val-fraction {val_fraction} is under one split bucket (1e-6); id {extra_val!r} goes to val")
        log(f"pack: ordering and encoding with {resolved['name'] or resolved['path']} ({partitions} partitions)")
        while True:
            # Order first, encode after: range partitioning samples its input, and sampling the output of the
            # (opaque) encoder would run the BPE twice. mapInArrow keeps each partition's row order, so each
            # task writes its range of the global order as one piece per split.
            encode_round += 1
            pieces_dir = os.path.join(tmp, f"pieces-{encode_round}")  # inside tmp: one folder to clean after a crash
            os.makedirs(pieces_dir)
            rows = prepare(df, val_fraction, seed, extra_val)
            ordered = rows.repartitionByRange(partitions, *ORDER).sortWithinPartitions(*ORDER)
            parts = ordered.mapInArrow(_encode_write_fn(resolved, dtype.str, pieces_dir), PIECE_DDL).collect()
            if val_fraction == 0 or extra_val is not None or any(r["split"] == "val" for r in parts):
                break
            extra_val = _first_val_id(df)
            if extra_val is None:
                break
            log(f"pack: no document fell in val at fraction {val_fraction}; moving id {extra_val!r} there")
            shutil.rmtree(pieces_dir, ignore_errors=True)

        # distributed prefix sum: the pieces of a split, in key order, are consecutive ranges of its global order
        totals, domain_tokens, specs = {}, {}, []
        split_domain_tokens = {"train": {}, "val": {}}
        for split in ("train", "val"):
            pieces = {}
            for r in parts:
                if r["split"] != split:
                    continue
                p = pieces.setdefault(r["piece"], {"tokens": 0, "docs": 0, "bytes": 0, "first": tuple(r["first"])})
                p["tokens"] += int(r["tokens"])
                p["docs"] += int(r["docs"])
                p["bytes"] += int(r["bytes"])
                sd = split_domain_tokens[split]
                sd[r["domain"]] = sd.get(r["domain"], 0) + int(r["tokens"])
                if split == "train":
                    domain_tokens[r["domain"]] = domain_tokens.get(r["domain"], 0) + int(r["tokens"])
            pos, ranges = 0, []
            for name, p in sorted(pieces.items(), key=lambda kv: kv[1]["first"]):
                ranges.append((name, pos, pos + p["tokens"]))
                pos += p["tokens"]
            # one assemble task per run of consecutive shard numbers (equal token ranges), with the pieces
            # that overlap the run; a shard never spans two runs
            n_numbers = -(-pos // shard_tokens)
            n_runs = min(n_numbers, partitions)
            for r in range(n_runs):
                lo, hi = r * n_numbers // n_runs, (r + 1) * n_numbers // n_runs
                mine = [[name, g0] for name, g0, g1 in ranges if g0 < hi * shard_tokens and g1 > lo * shard_tokens]
                specs.append((split, lo, hi, json.dumps(mine)))
            totals[split] = {"tokens": pos, "documents": sum(p["docs"] for p in pieces.values()),
                             "text_bytes": sum(p["bytes"] for p in pieces.values())}

        n_tok = sum(t["tokens"] for t in totals.values())
        log(f"pack: encoded {sum(t['documents'] for t in totals.values()):,} documents, {n_tok:,} tokens in "
            f"{time.time() - t0:.1f}s")
        t1 = time.time()
        written = []
        if specs:
            one_per_task = spark.sparkContext.parallelize(specs, len(specs))
            written = (spark.createDataFrame(one_per_task, "split string, lo bigint, hi bigint, pieces string")
                       .mapInArrow(_assemble_fn(pieces_dir, tmp, dtype.itemsize, shard_tokens), SHARD_DDL)
                       .collect())
        shutil.rmtree(pieces_dir, ignore_errors=True)
        written = [r.asDict() for r in written]
        # what the trainer gets per domain (tokens with EOS, both splits), beside what the mixture asked for
        both = {d: split_domain_tokens["train"].get(d, 0) + split_domain_tokens["val"].get(d, 0)
                for d in sorted(set(split_domain_tokens["train"]) | set(split_domain_tokens["val"]))}
        mixture = {"target_weights": mixture_weights, "achieved_tokens": both, "achieved_shares": _shares(both),
                   "split_tokens": {k: dict(sorted(v.items())) for k, v in split_domain_tokens.items()}}
        manifest = _finalize(tmp, written, totals, dtype, resolved, enc, tokenizer, seed, source,
                             mixture_weights or _shares(domain_tokens), nanogpt_bins,
                             {"mixture": mixture, **(extra or {})})
        log(f"pack: wrote {len(written)} shards in {time.time() - t1:.1f}s; verifying {len(manifest['files'])} files")
        t2 = time.time()
        verify_packed(tmp)
        log(f"pack: verified in {time.time() - t2:.1f}s; {n_tok / max(time.time() - t0, 1e-9):,.0f} tokens/s overall")
        _swap_in(tmp, out_dir)
        tmp = None
        return manifest
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _shares(domain_tokens: dict) -> dict:
    total = sum(domain_tokens.values())
    return {d: round(t / total, 6) for d, t in sorted(domain_tokens.items())} if total else {}


def _finalize(tmp, written, totals, dtype, resolved, enc, spec, seed, source, mixture_weights, nanogpt_bins,
              extra) -> dict:
    """Number the written shards of each split contiguously, add the tokenizer file and nanoGPT bins when asked,
    and write manifest.json (udfs/packed.py's layout)."""
    from udfs.tokenize import tokenizer_manifest

    files, splits = {}, {}
    for split in ("train", "val"):
        mine = sorted((r for r in written if r["split"] == split), key=lambda r: r["shard"])
        shards = []
        for k, r in enumerate(mine):
            bin_name, idx_name = packed.shard_file_names(split, k)
            os.replace(os.path.join(tmp, r["bin_name"]), os.path.join(tmp, bin_name))
            os.replace(os.path.join(tmp, r["idx_name"]), os.path.join(tmp, idx_name))
            files[bin_name] = {"sha256": r["bin_sha256"], "bytes": r["bin_bytes"]}
            files[idx_name] = {"sha256": r["idx_sha256"], "bytes": r["idx_bytes"]}
            shards.append({"bin": bin_name, "idx": idx_name, "tokens": r["tokens"], "documents": r["documents"]})
        # text bytes are counted at encode time only; tokens and documents are checked against the shards
        got = {"tokens": sum(s["tokens"] for s in shards), "documents": sum(s["documents"] for s in shards),
               "text_bytes": totals[split]["text_bytes"]}
        if got != totals[split]:
            raise RuntimeError(f"pack: {split} shards hold {got}, the global counts say {totals[split]}")
        splits[split] = {**got, "shards": shards}
    for f in os.listdir(tmp):  # files of task attempts that failed or lost to another attempt
        if f.endswith(".part"):
            os.remove(os.path.join(tmp, f))

    tok_file = None
    if resolved["kind"] == "bpe":
        tok_file = "tokenizer.json"
        shutil.copyfile(resolved["path"], os.path.join(tmp, tok_file))
        files[tok_file] = packed.file_entry(os.path.join(tmp, tok_file))
    nanogpt = {}
    if nanogpt_bins:
        for split, info in splits.items():
            name = f"{split}.bin"
            h, n = hashlib.sha256(), 0
            with open(os.path.join(tmp, name), "wb") as out:
                for sh in info["shards"]:
                    with open(os.path.join(tmp, sh["bin"]), "rb") as f:
                        for block in iter(lambda: f.read(1 << 22), b""):
                            out.write(block)
                            h.update(block)
                            n += len(block)
            files[name] = {"sha256": h.hexdigest(), "bytes": n}
            nanogpt[split] = name
    tokenizer = tokenizer_manifest(spec, enc, tok_file)
    if resolved["kind"] != "openai":
        tokenizer["spec"] = os.path.basename(resolved["path"]) if tok_file else spec
    manifest = packed.build_manifest(tokenizer, dtype, seed, source, mixture_weights, splits, files,
                                     extra={**({"nanogpt_bins": nanogpt} if nanogpt else {}), **(extra or {})})
    packed.write_manifest(tmp, manifest)
    return manifest


def _swap_in(tmp: str, out_dir: str) -> None:
    old = None
    if os.path.exists(out_dir):
        old = f"{tmp}-old"
        os.rename(out_dir, old)
    os.rename(tmp, out_dir)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def verify_packed(packed_dir: str, check_hashes: bool = True) -> dict:
    """Check a whole packed folder against its manifest (`udfs.packed.verify`: every file's size and, with
    `check_hashes`, sha256; shard sizes and indexes; EOS after every document; token ids inside the vocabulary;
    split totals); returns the manifest or raises PackedError saying what is wrong."""
    return packed.verify(packed_dir, level="full" if check_hashes else "size", check_ids=True)


# ---- compression report ---------------------------------------------------------------------------------------
def compression_counts_fn(resolved_list: list):
    """mapInArrow function: per (domain, tokenizer) docs, UTF-8 bytes, ordinary tokens (no EOS) and words of
    each batch of (domain, text) rows; `resolved_list` is [(label, resolved spec)]. The report uses it too."""
    def report(batches):
        import pyarrow as pa

        from udfs.tokenize import load_encoding, ordinary_tokens, word_count

        encs = [(name, load_encoding(r)) for name, r in resolved_list]
        for b in batches:
            texts = b.column("text").to_pylist()
            domains = b.column("domain").to_pylist()
            nbytes = [len(t.encode("utf-8")) for t in texts]
            words = [word_count(t) for t in texts]
            acc = {}
            for name, enc in encs:
                counts = [len(ordinary_tokens(enc, t)) for t in texts]
                for d, nb, nw, nt in zip(domains, nbytes, words, counts):
                    a = acc.setdefault((d, name), [0, 0, 0, 0])
                    a[0] += 1
                    a[1] += nb
                    a[2] += nt
                    a[3] += nw
            keys = list(acc)
            yield pa.RecordBatch.from_arrays(
                [pa.array([k[0] for k in keys], pa.string()), pa.array([k[1] for k in keys], pa.string())]
                + [pa.array([acc[k][i] for k in keys], pa.int64()) for i in range(4)],
                names=["domain", "tokenizer", "docs", "bytes", "tokens", "words"])
    return report


def compression_report(df, tokenizers: list[str]) -> dict:
    """Bytes per token and tokens per word for each domain and tokenizer (unique documents, no EOS)."""
    from pyspark.sql import functions as F

    from udfs.tokenize import resolve_spec

    resolved = [(t, resolve_spec(t)) for t in tokenizers]
    docs = df.where(F.col("text").isNotNull())
    if "epoch_copy" in df.columns:
        docs = docs.dropDuplicates(["id"])
    docs = docs.select(F.coalesce(F.col("domain"), F.lit("unknown")).alias("domain"), "text")
    rows = (docs.mapInArrow(compression_counts_fn(resolved), REPORT_DDL).groupBy("domain", "tokenizer")
            .agg(*[F.sum(c).alias(c) for c in ("docs", "bytes", "tokens", "words")]).collect())

    def ratios(a):
        return {**a, "bytes_per_token": round(a["bytes"] / a["tokens"], 4) if a["tokens"] else None,
                "tokens_per_word": round(a["tokens"] / a["words"], 4) if a["words"] else None}

    domains, overall = {}, {}
    for r in sorted(rows, key=lambda r: (r["domain"], r["tokenizer"])):
        a = {k: int(r[k]) for k in ("docs", "bytes", "tokens", "words")}
        domains.setdefault(r["domain"], {})[r["tokenizer"]] = ratios(a)
        o = overall.setdefault(r["tokenizer"], {k: 0 for k in a})
        for k in a:
            o[k] += a[k]
    return {"tokenizers": list(tokenizers), "domains": domains,
            "all": {t: ratios(a) for t, a in overall.items()}}


def format_report(report: dict) -> str:
    toks = report["tokenizers"]
    head = f"{'domain':<16}" + "".join(f"{t[:18]:>22}" for t in toks)
    lines = ["bytes/token (tokens/word)", head]
    for d, per in list(report["domains"].items()) + [("ALL", report["all"])]:
        cells = []
        for t in toks:
            a = per.get(t)
            cells.append(f"{a['bytes_per_token']:>10} ({a['tokens_per_word']})".rjust(22) if a else " " * 22)
        lines.append(f"{d[:16]:<16}" + "".join(cells))
    return "\n".join(lines)


# ---- entry point ----------------------------------------------------------------------------------------------
def _mix_weights(lake, table: str, version) -> dict | None:
    """Target weights the mix stage recorded in its metrics row for this table version, if any."""
    try:
        rows = lake.read_arrow("metrics").to_pylist() if lake.exists("metrics") else []
    except Exception:
        return None
    for r in sorted(rows, key=lambda r: r["started_at"], reverse=True):
        if r.get("stage") == "mix" and r.get("output_table") == table and r.get("output_version") == version:
            extra = json.loads(r.get("extra") or "{}")
            for key in ("mixture_weights", "weights", "target_weights"):
                if isinstance(extra.get(key), dict):
                    return {str(k): float(v) for k, v in extra[key].items()}
    return None


def domain_dir_names(domains: list[str]) -> dict[str, str]:
    """A folder name for every domain: the name with anything but letters, digits, '.', '_' and '-' replaced,
    and a numeric suffix where two names collide."""
    import re

    out, used = {}, set()
    for d in sorted(domains):
        base = re.sub(r"[^A-Za-z0-9._-]", "_", d).strip(".") or "domain"
        name, k = base, 1
        while name in used:
            k += 1
            name = f"{base}-{k}"
        used.add(name)
        out[d] = name
    return out


def pack_per_domain(ctx, df, out_dir: str, version) -> None:
    """One packed folder per domain under out_dir, then domains.json (written last: its presence means done)."""
    from pyspark.sql import functions as F

    from jobs.stage import log

    args, cfg, run, spark = ctx.args, ctx.params, ctx.run, ctx.spark
    if storage.is_remote(out_dir):
        raise UserError(f"--per-domain writes local folders; got {out_dir} (pack to a local --out, then upload)")
    os.makedirs(out_dir, exist_ok=True)
    dom = F.coalesce(F.col("domain"), F.lit("unknown"))
    # the domains and their document counts in one job (a handful of rows)
    counts = {r["d"]: int(r["n"]) for r in df.groupBy(dom.alias("d")).agg(F.count(F.lit(1)).alias("n")).collect()}
    if not counts:
        raise UserError(f"table '{args.input_table}' is empty: nothing to pack")
    domains = sorted(counts)
    names = domain_dir_names(domains)
    try:
        os.remove(os.path.join(out_dir, packed.DOMAINS_FILE))  # not done until it is written again
    except FileNotFoundError:
        pass
    listing, docs_in, docs_out, tokens = {}, 0, 0, 0
    for d in domains:
        sub = os.path.join(out_dir, names[d])
        for leftover in _leftover_tmp_dirs(sub):
            shutil.rmtree(leftover, ignore_errors=True)
            log(f"pack: removed {leftover} (left by a pack run that died)")
        n_in = counts[d]
        log(f"pack: domain {d!r}: {n_in:,} documents -> {sub}")
        m = pack(spark, df.where(dom == d), sub, tokenizer=str(cfg["tokenizer"]), val_fraction=float(cfg["val_fraction"]),
                 seed=int(cfg["seed"]), shard_tokens=int(cfg["shard_tokens"]), nanogpt_bins=bool(cfg["nanogpt_bins"]),
                 source={"table": args.input_table, "version": version, "domain": d},
                 extra={"stage_run": {"run_id": run.run_id, "run_key": run.run_key, "config_hash": run.config_hash},
                        "domain": d})
        sp = m["splits"]
        listing[d] = {"dir": names[d], "train_tokens": sp["train"]["tokens"], "val_tokens": sp["val"]["tokens"],
                      "documents": sp["train"]["documents"] + sp["val"]["documents"]}
        docs_in += n_in
        docs_out += listing[d]["documents"]
        tokens += sp["train"]["tokens"] + sp["val"]["tokens"]
    packed.write_domains(out_dir, {"source": {"table": args.input_table, "version": version},
                                   "tokenizer": m["tokenizer"],
                                   "stage_run": {"run_id": run.run_id, "run_key": run.run_key}, "domains": listing})
    log(f"pack: {len(domains)} domain folders under {out_dir}: " +
        ", ".join(f"{d} {v['train_tokens']:,}+{v['val_tokens']:,} tokens" for d, v in listing.items()))
    run.finish(docs_in=docs_in, docs_out=docs_out, docs_rejected=docs_in - docs_out, tokens_in=tokens,
               tokens_out=tokens, reasons={"null_text_or_id": docs_in - docs_out} if docs_in != docs_out else {},
               extra={"out": out_dir, "per_domain": True, "tokenizer": m["tokenizer"],
                      "domains": listing})


def resolve(cfg: dict, args) -> dict:
    cfg = {"tokenizer": "gpt2", "val_fraction": 0.01, "seed": 1337, "shard_tokens": 50_000_000,
           "nanogpt_bins": False, **cfg}
    return cfg


def prepare_run(ctx) -> None:
    """The tokenizer (its ranks' sha256 is part of the run's identity) and the output folder."""
    from udfs.tokenize import load_encoding, ranks_sha256, resolve_spec

    cfg, args = ctx.params, ctx.args
    default = "packed_domains" if args.per_domain else "packed"
    out_dir = storage.normalise(args.out or storage.join(storage.normalise(args.lake), default))
    enc = load_encoding(resolve_spec(str(cfg["tokenizer"])))
    ctx.state["out_dir"] = out_dir
    ctx.run_config = {k: v for k, v in cfg.items() if k not in ("report_tokenizers", "input_table")}
    ctx.extra_key = {"ranks_sha256": ranks_sha256(enc), "out": out_dir,
                     **({"per_domain": True} if args.per_domain else {})}


def early(ctx):
    """Check the input's columns; write the compression report when asked (and stop there for --report-only)."""
    from jobs.stage import log

    args, cfg, lake = ctx.args, ctx.params, ctx.lake
    version = ctx.state["input_version"]
    df = lake.read(args.input_table, version)
    missing = {"id", "text", "domain"} - set(df.columns)
    if missing:
        raise UserError(f"table '{args.input_table}' lacks columns {sorted(missing)} (document schema expected)")
    ctx.state["df"] = df
    if args.compression_report or args.report_only:
        names = (args.report_tokenizers.split(",") if args.report_tokenizers
                 else list(cfg.get("report_tokenizers") or DEFAULT_REPORT_TOKENIZERS))
        if not args.report_tokenizers and cfg["tokenizer"] not in names:
            names.append(cfg["tokenizer"])
        report = compression_report(df, [n.strip() for n in names if n.strip()])
        report = {"table": args.input_table, "version": version,
                  "created_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), **report}
        path = storage.join(lake.root, "reports", "tokenizers.json")
        storage.write_bytes(path, json.dumps(report, indent=2).encode())
        print(format_report(report))
        log(f"pack: compression report written to {path}")
        if args.report_only:
            return 0
    return None


def still_done(ctx) -> bool:
    from jobs.stage import log

    out_dir = ctx.state["out_dir"]
    if ctx.args.per_domain:
        try:
            index = packed.read_domains(out_dir)
        except PackedError:
            return False
        if (index.get("stage_run") or {}).get("run_key") == ctx.run.run_key and all(
                _still_there(os.path.join(out_dir, v["dir"]), ctx.run.run_key) for v in index["domains"].values()):
            log(f"pack: {out_dir} already holds this input and config per domain (verified sizes); skipping. "
                f"Use --force to run again.")
            return True
        return False
    if _still_there(out_dir, ctx.run.run_key):
        log(f"pack: {out_dir} already holds this input and config (verified sizes); skipping. Use --force to "
            f"run again.")
        return True
    return False


def plan(ctx) -> None:
    from jobs.stage import log

    args, cfg, lake, run, spark = ctx.args, ctx.params, ctx.lake, ctx.run, ctx.spark
    out_dir, df, version = ctx.state["out_dir"], ctx.state["df"], ctx.state["input_version"]
    if args.per_domain:
        return pack_per_domain(ctx, df, out_dir, version)
    # object storage: pack into local scratch (the same code, the same bytes), upload when it is complete
    local_out = _scratch_dir(out_dir) if storage.is_remote(out_dir) else out_dir
    # this run holds the lease of out_dir: temporary folders of dead pack runs can go
    for leftover in _leftover_tmp_dirs(local_out):
        shutil.rmtree(leftover, ignore_errors=True)
        log(f"pack: removed {leftover} (left by a pack run that died)")
    docs_in = df.count()
    manifest = pack(spark, df, local_out, tokenizer=str(cfg["tokenizer"]), val_fraction=float(cfg["val_fraction"]),
                    seed=int(cfg["seed"]), shard_tokens=int(cfg["shard_tokens"]),
                    nanogpt_bins=bool(cfg["nanogpt_bins"]), source={"table": args.input_table, "version": version},
                    mixture_weights=_mix_weights(lake, args.input_table, version),
                    extra={"stage_run": {"run_id": run.run_id, "run_key": run.run_key,
                                         "config_hash": run.config_hash}})
    if local_out != out_dir:
        t0 = time.time()
        n = storage.upload_tree(local_out, out_dir, last=packed.MANIFEST)
        shutil.rmtree(local_out, ignore_errors=True)
        log(f"pack: uploaded {n} bytes to {out_dir} in {time.time() - t0:.1f} s (manifest last)")
    s = manifest["splits"]
    docs_out = s["train"]["documents"] + s["val"]["documents"]
    tokens = s["train"]["tokens"] + s["val"]["tokens"]
    log(f"pack: {out_dir}: train {s['train']['tokens']} tokens / {s['train']['documents']} docs in "
        f"{len(s['train']['shards'])} shards, val {s['val']['tokens']} tokens / {s['val']['documents']} docs; "
        f"dtype {manifest['dtype']}, tokenizer {manifest['tokenizer']['name']}")
    run.finish(docs_in=docs_in, docs_out=docs_out, docs_rejected=docs_in - docs_out, tokens_in=tokens,
               tokens_out=tokens, reasons={"null_text_or_id": docs_in - docs_out} if docs_in != docs_out else {},
               extra={"out": out_dir, "dtype": manifest["dtype"], "tokenizer": manifest["tokenizer"],
                      "train_tokens": s["train"]["tokens"], "val_tokens": s["val"]["tokens"]})
    return 0


STAGE = Stage(
    name="pack", doc=DESCRIPTION, input_table="mixed", outputs={}, input_key="input_table",
    input_hint="run the mix stage first, or pass --input-table",
    flags=[Flag("--tokenizer", "tokenizer", "gpt2 | cl100k_base | o200k_base | PATH (trained BPE or .tiktoken "
                "file); default pack.tokenizer"),
           Flag("--val-fraction", "val_fraction", "share of documents (by id hash) in val", type=float),
           Flag("--seed", "seed", "document shuffle seed", type=int),
           Flag("--shard-tokens", "shard_tokens", "target tokens per shard (documents are whole)", type=int),
           Flag("--nanogpt-bins", "nanogpt_bins", "also write nanoGPT-style train.bin / val.bin (each split's "
                "shards concatenated)", store_true=True),
           Flag("--out", None, "output folder (default <lake>/packed; with --per-domain <lake>/packed_domains)"),
           Flag("--per-domain", None, "one packed folder per domain (for DoReMi) and domains.json listing them",
                store_true=True, default=False),
           Flag("--compression-report", None, "also write <lake>/reports/tokenizers.json: bytes/token and "
                "tokens/word per domain and tokenizer (pack.report_tokenizers plus the packing tokenizer)",
                store_true=True, default=False),
           Flag("--report-only", None, "write the compression report and do not pack", store_true=True,
                default=False),
           Flag("--report-tokenizers", None, "comma-separated tokenizers for the report")],
    resolve=resolve, prepare=prepare_run, early=early, still_done=still_done, plan=plan,
    extra_leases=lambda ctx: [f"packed:{ctx.state['out_dir']}"])
main = stage_main(STAGE)


def _leftover_tmp_dirs(out_dir: str) -> list[str]:
    """Temporary folders `pack` makes beside `out_dir` (see `pack`); only call while holding its lease."""
    parent, base = os.path.split(os.path.abspath(out_dir))
    prefix = f".{base}-tmp-"
    return [os.path.join(parent, d) for d in sorted(os.listdir(parent))
            if d.startswith(prefix) and os.path.isdir(os.path.join(parent, d))] if os.path.isdir(parent) else []


def _scratch_dir(out_uri: str) -> str:
    """The local folder a pack for `out_uri` (object storage) is built in: under `LMR_SCRATCH` (default the
    system's temporary folder), one per destination, so a dead run's leftovers are found by the next."""
    import hashlib
    import tempfile

    base = os.environ.get("LMR_SCRATCH") or tempfile.gettempdir()
    return os.path.join(base, "lmrefinery-pack", hashlib.sha1(out_uri.encode()).hexdigest()[:16], "packed")


def _still_there(out_dir: str, run_key: str) -> bool:
    if storage.is_remote(out_dir):  # the manifest and every file it names, at the size it gives
        try:
            m = json.loads(storage.read_bytes(storage.join(out_dir, packed.MANIFEST)))
            return ((m.get("stage_run") or {}).get("run_key") == run_key
                    and all(storage.stat(storage.join(out_dir, name))[0] == e["bytes"]
                            for name, e in m["files"].items()))
        except (OSError, ValueError, KeyError, TypeError):
            return False
    try:
        m = verify_packed(out_dir, check_hashes=False)
    except PackedError:
        return False
    return (m.get("stage_run") or {}).get("run_key") == run_key


if __name__ == "__main__":
    from udfs.common import exit_process

    exit_process(run_main("pack", main))
