"""Stage: exact and MinHash-LSH near deduplication.

    python jobs/dedup.py --lake DIR [--threshold 0.8] [--ngram 5] [--num-perm 128] [--bands B --rows R]
                         [--exact-only] [--seed S] [--verify exact|estimate|none]

Reads `filtered` (--input-table), writes survivors to `deduped` and every removed record to `duplicates` with
`cluster_id` (smallest id of its final cluster), `kept_id` (the cluster's survivor, which is in `deduped`) and
`method` (exact or minhash). Nothing disappears: docs_in == |deduped| + |duplicates|.

Normalisation (udfs.normalise): NFKC, case fold, punctuation (Unicode P*) removed, whitespace collapsed;
`--set dedup.strip_punctuation=false` keeps punctuation.
1. Exact: documents whose normalised text has the same 128-bit digest form a group.
2. Near, among exact survivors: MinHash signatures of word n-gram shingles (udfs.minhash, vectorised per Arrow
   batch), cut into `bands` bands of `rows` values; documents sharing a band bucket are candidate pairs, checked
   (exact shingle Jaccard by default: each candidate's shingle set is built once, then one merge per pair) against
   the threshold (candidates from one sort of all band keys in one task up to dedup.local_lsh_max_keys keys, else
   a count per key, a semi-join and id lists in Spark; the same pairs; the pairs checked in one task when all
   candidates' sets take at most dedup.local_verify_max_bytes, else by two joins in Spark); connected components of the verified pairs are the clusters (jobs.components: in one task up to
   dedup.local_components_max_edges pairs, else Large-Star/Small-Star rounds in Spark; the same components).
   Where the input's Delta log says it is small enough for both one-task limits, the keys pass also makes the
   shingle sets, and LSH, verification, components and survivors run in one task (`_local_near_fn`): the text is
   read once and that is one Spark job; the same result as the steps above.
3. Output: on a local lake the tasks write `deduped` and `duplicates` themselves in one Spark job (jobs.direct;
   dedup.writer=spark keeps Spark's writer). A plain local input table (no reader features or partitions) is then
   also read by the tasks with pyarrow in the keys and write passes, so its text never becomes JVM rows.
   Bands x rows (unless --bands/--rows): with verification (exact, estimate) the fewest expected missed pairs
   (false-negative mass above the threshold) whose false-positive mass below it is <= dedup.max_fp_mass
   (udfs.minhash.recall_param), since a false candidate only costs its check; with --verify none datasketch's
   fp_weight/fn_weight balance (optimal_param), since every candidate is then a duplicate. The job logs the choice
   with P(candidate) at the threshold and 0.05 above it.
Survivor of a group or cluster: highest `quality_column` if configured, ties and otherwise the smallest `id`, so
the result depends on neither partitioning nor run.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jobs import direct  # noqa: E402
from jobs.cli import UserError, run_main  # noqa: E402
from jobs.runner import Flag, Stage, stage_main  # noqa: E402
from jobs.stage import log  # noqa: E402

VERIFY_MODES = ("exact", "estimate", "none")
BROADCAST_CANDIDATE_PAIRS = 500_000  # candidate pairs whose ids (at most 2 x as many) are broadcast to cut the input
BROADCAST_SHARED_BUCKETS = 4_000_000  # LSH band keys held by two or more documents, broadcast to filter band rows
BROADCAST_REMOVED = 500_000  # removed records (id and three short strings each) broadcast to the writing tasks
KEYS_BATCH_ROWS = 2048  # documents per kernel call in the keys and sets passes (see _keys_fn)
AUDIT_PER_METHOD = 5


def resolve_params(cfg: dict, args) -> dict:
    """Config section + CLI flags -> the validated parameters of this run (CLI wins)."""
    from udfs.minhash import DEFAULT_MAX_FP_MASS, SCHEMES, optimal_param, recall_param

    p = dict(cfg or {})
    for key, val in (("threshold", args.threshold), ("ngram", args.ngram), ("num_perm", args.num_perm),
                     ("bands", args.bands), ("rows", args.rows), ("seed", args.seed), ("verify", args.verify)):
        if val is not None:
            p[key] = val
    if args.bands is not None or args.rows is not None:
        p["bands"], p["rows"] = args.bands, args.rows
    if args.exact_only:
        p["exact_only"] = True
    p.setdefault("threshold", 0.8)
    p.setdefault("ngram", 5)
    p.setdefault("num_perm", 128)
    p.setdefault("seed", 1)
    p.setdefault("scheme", "affine32")
    p.setdefault("verify", "exact")
    p.setdefault("strip_punctuation", True)
    p.setdefault("exact_only", False)
    p.setdefault("quality_column", None)
    p.setdefault("max_bucket_pairs", 32)
    p.setdefault("cc_max_iterations", 60)
    p.setdefault("local_components_max_edges", 2_000_000)
    p.setdefault("local_lsh_max_keys", 16_000_000)
    p.setdefault("local_verify_max_bytes", 512 << 20)
    p.setdefault("fp_weight", 0.5)
    p.setdefault("fn_weight", 0.5)
    p.setdefault("max_fp_mass", DEFAULT_MAX_FP_MASS)
    if not 0.0 < float(p["threshold"]) < 1.0:
        raise UserError(f"--threshold must be in (0, 1), got {p['threshold']}")
    if int(p["ngram"]) < 1 or int(p["num_perm"]) < 1:
        raise UserError("--ngram and --num-perm must be positive")
    if p["scheme"] not in SCHEMES:
        raise UserError(f"dedup.scheme must be one of {', '.join(SCHEMES)}, got {p['scheme']!r}")
    if p["verify"] not in VERIFY_MODES:
        raise UserError(f"dedup.verify must be one of {', '.join(VERIFY_MODES)}, got {p['verify']!r}")
    bands, rows = p.get("bands"), p.get("rows")
    p["bands_given"] = bands is not None
    if (bands is None) != (rows is None):
        raise UserError("give both --bands and --rows, or neither (then they are chosen from --threshold)")
    if bands is None:
        if p["verify"] == "none":
            bands, rows = optimal_param(float(p["threshold"]), int(p["num_perm"]), float(p["fp_weight"]),
                                        float(p["fn_weight"]))
        else:
            if not float(p["max_fp_mass"]) > 0:
                raise UserError(f"dedup.max_fp_mass must be > 0, got {p['max_fp_mass']}")
            bands, rows = recall_param(float(p["threshold"]), int(p["num_perm"]), float(p["max_fp_mass"]))
    if int(bands) < 1 or int(rows) < 1 or int(bands) * int(rows) > int(p["num_perm"]):
        raise UserError(f"need bands >= 1, rows >= 1 and bands*rows <= num_perm ({p['num_perm']}), "
                        f"got {bands}x{rows}")
    p["bands"], p["rows"] = int(bands), int(rows)
    return p


def lsh_summary(params: dict) -> dict:
    """How bands x rows were chosen and what they predict: P(candidate) at the threshold and 0.05 above it (the
    recall of the banding for pairs at exactly that similarity), and the false-positive / false-negative masses."""
    from udfs.minhash import candidate_probability, lsh_error_mass

    t, b, r = float(params["threshold"]), params["bands"], params["rows"]
    if params.get("bands_given"):
        how = "given (--bands/--rows or dedup.bands/rows)"
    elif params["verify"] == "none":
        how = f"balanced for verify=none (fp_weight={params['fp_weight']}, fn_weight={params['fn_weight']})"
    else:
        how = f"recall-first for verify={params['verify']} (max_fp_mass={params['max_fp_mass']})"
    fp, fn = lsh_error_mass(t, b, r)
    return {"bands": b, "rows": r, "choice": how, "p_candidate_at_threshold": candidate_probability(t, b, r),
            "p_candidate_at_threshold_plus_0.05": candidate_probability(min(t + 0.05, 1.0), b, r),
            "fp_mass": fp, "fn_mass": fn}


# ---- Python workers: Arrow batches in, Arrow batches out -------------------------------------------------------
def _keys_fn(params: dict, with_v: bool = False, values_dir: str | None = None):
    """mapInArrow: (id, text, n_tokens, q) -> (id, n_tokens, q, ekey, bkeys[, v]): exact digest and LSH band keys,
    and with `with_v` the value verification compares (as `_sets_fn`'s v; with verify=exact the sets of
    udfs.minhash.signatures_and_sets, whose shingle hash is another than shingle_sets': a run takes all its
    values from this pass or all from `_sets_fn`), made from the same shingles in this pass so that the text is
    read once. With `values_dir` the values are not rows: each batch's go to an Arrow file
    there (`_write_values`) and the row holds (vfile, vrow, vlen) instead of v.
    Input batches are cut into slices of at most KEYS_BATCH_ROWS rows, so that the kernels' arrays for a slice stay
    a few MB: with the direct reader's 8,192-row batches (~100 MB of short-lived arrays per kernel call, in fresh
    memory pages) this function took 5.5-6.5 s on a file of the 256 MB bench's filtered table, 4.6-4.8 s with
    2,048 (bench/README.md)."""
    ngram, num_perm, seed, scheme = params["ngram"], params["num_perm"], params["seed"], params["scheme"]
    strip, near = bool(params["strip_punctuation"]), not params["exact_only"]
    bands, rows, mode = params["bands"], params["rows"], params["verify"]
    v_names = ["vfile", "vrow", "vlen"] if values_dir else ["v"]

    def fn(batches):
        import hashlib

        import numpy as np
        import pyarrow as pa

        from udfs.minhash import band_keys, permutations, signatures, signatures_and_sets
        from udfs.normalise import normalise

        perms = permutations(num_perm, seed, scheme) if near else None
        for whole in batches:
            for batch in _slices(whole, "text", KEYS_BATCH_ROWS, 64 << 20):
                norm = [normalise(t, strip) for t in batch.column("text").to_pylist()]
                ekey = pa.array([hashlib.blake2b(t.encode("utf-8"), digest_size=16).digest() for t in norm],
                                pa.binary())
                cols = [batch.column("id"), batch.column("n_tokens"), batch.column("q"), ekey]
                if near and len(norm):
                    if with_v and mode == "exact":
                        sig, (flat, offs) = signatures_and_sets(norm, ngram, num_perm, seed, scheme, perms=perms)
                    else:
                        sig = signatures(norm, ngram, num_perm, seed, scheme, normalised=True, perms=perms)
                        flat, offs = sig.ravel(), np.arange(0, sig.size + 1, num_perm, dtype=np.int64)
                    keys = band_keys(sig, bands, rows).ravel()
                    offsets = pa.array(np.arange(0, len(norm) * bands + 1, bands, dtype=np.int32))
                    empty = pa.array([len(t) == 0 for t in norm])  # no shingles: never a near-duplicate candidate
                    cols.append(pa.ListArray.from_arrays(offsets, pa.array(keys, pa.int64()), mask=empty))
                    if with_v:
                        v = _packed_binary(flat, offs, len(norm))
                        cols += _write_values(values_dir, v) if values_dir else [v]
                else:
                    cols.append(pa.nulls(len(norm), pa.list_(pa.int64())))
                    if with_v:
                        cols += ([pa.nulls(len(norm), pa.string()), pa.nulls(len(norm), pa.int32()),
                                  pa.nulls(len(norm), pa.int64())] if values_dir else [pa.nulls(len(norm), pa.binary())])
                yield pa.RecordBatch.from_arrays(cols, names=["id", "n_tokens", "q", "ekey", "bkeys"] +
                                                 (v_names if with_v else []))

    return fn


def _write_values(values_dir: str, v):
    """Inside a worker: the values `v` (binary) of one keys batch as an Arrow IPC file in `values_dir` ->
    [vfile, vrow, vlen] columns (file name, row in it, bytes). The keys rows stay small; the one task that verifies
    maps the files and takes only its candidates' values (`_candidate_values`), so a shingle set (about the text's
    size) is not turned into a JVM row, cached, and turned back into Arrow."""
    import uuid

    import numpy as np
    import pyarrow as pa

    name = f"v-{uuid.uuid4().hex}.arrow"
    path = os.path.join(values_dir, name)
    with pa.OSFile(path + ".tmp", "wb") as sink, pa.ipc.new_file(sink, pa.schema([("v", pa.binary())])) as w:
        w.write_batch(pa.RecordBatch.from_arrays([v], names=["v"]))
    os.replace(path + ".tmp", path)
    n = len(v)
    return [pa.array([name] * n, pa.string()), pa.array(np.arange(n, dtype=np.int32)),
            pa.array(np.diff(_offsets(v)), pa.int64())]


def _candidate_values(values_dir: str, vfile, vrow, cand):
    """(hashes, offsets) of the shingle sets of rows `cand` (sorted indices) whose values lie in `values_dir`
    (`_write_values`), in the order of `cand`: item k is hashes[offsets[k]:offsets[k+1]]."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if not len(cand):
        return np.zeros(0, np.uint64), np.zeros(1, np.int64)
    take = pa.array(cand)
    enc = pc.dictionary_encode(vfile.take(take))
    codes = np.asarray(enc.indices, np.int64)
    rows = np.asarray(vrow.take(take).to_numpy(zero_copy_only=False), np.int64)
    pieces, where = [], []
    for k, name in enumerate(enc.dictionary.to_pylist()):
        sel = np.flatnonzero(codes == k)
        with pa.memory_map(os.path.join(values_dir, name)) as src:
            v = pa.ipc.open_file(src).read_all().column("v").combine_chunks()
            pieces.append(v.take(pa.array(rows[sel])).cast(pa.large_binary()))
        where.append(sel)
    order = np.empty(len(cand), np.int64)
    order[np.concatenate(where)] = np.arange(len(cand))  # position of candidate k in the concatenated pieces
    vals = pa.concat_arrays(pieces).take(pa.array(order))
    return _binary_values(vals, np.uint64)


def _read_keys_fn(keys_fn, df, qcol):
    """mapInArrow over file rows (jobs.direct.file_frame): read each file's id, text, n_tokens_est and quality
    column, cast as the Spark plan casts them, and pass them to `keys_fn`."""
    cols = ["id", "text"] + [c for c in ("n_tokens_est", qcol) if c and c in df.columns]
    schema = direct.file_schema(df.select(*cols))

    def fn(batches):
        import pyarrow as pa

        def src():
            for b in direct.read_files(batches, cols, schema):
                n = b.num_rows
                tok = b.column("n_tokens_est").cast(pa.int64()) if "n_tokens_est" in cols else pa.nulls(n, pa.int64())
                q = b.column(qcol).cast(pa.float64()) if qcol else pa.nulls(n, pa.float64())
                yield pa.RecordBatch.from_arrays([b.column("id"), b.column("text"), tok, q],
                                                 names=["id", "text", "n_tokens", "q"])

        yield from keys_fn(src())

    return fn


def _packed_binary(flat, offs, n: int):
    """A binary Arrow array whose item i is the bytes of flat[offs[i]:offs[i+1]] (no copy per item)."""
    import numpy as np
    import pyarrow as pa

    width = flat.dtype.itemsize
    return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer((np.asarray(offs) * width).astype(np.int32)),
                                                  pa.py_buffer(np.ascontiguousarray(flat))])


def _sets_fn(params: dict):
    """mapInArrow: (id, text) -> (id, v) for a candidate document, computed once however many pairs it is in:
    verify=exact: its shingle set as sorted distinct 64-bit hashes (udfs.minhash.shingle_sets), little-endian
    uint64 bytes; verify=estimate: its MinHash signature's bytes."""
    ngram, num_perm, seed, scheme = params["ngram"], params["num_perm"], params["seed"], params["scheme"]
    strip, mode = bool(params["strip_punctuation"]), params["verify"]

    def fn(batches):
        import numpy as np
        import pyarrow as pa

        from udfs.minhash import permutations, shingle_sets, signatures
        from udfs.normalise import normalise

        perms = permutations(num_perm, seed, scheme) if mode == "estimate" else None
        for batch in batches:
            for part in _slices(batch, "text", KEYS_BATCH_ROWS, 64 << 20):
                norm = [normalise(t, strip) for t in part.column("text").to_pylist()]
                if mode == "estimate":
                    sig = signatures(norm, ngram, num_perm, seed, scheme, normalised=True, perms=perms)
                    flat, offs = sig.ravel(), np.arange(0, sig.size + 1, num_perm, dtype=np.int64)
                else:
                    flat, offs = shingle_sets(norm, ngram)
                yield pa.RecordBatch.from_arrays([part.column("id"), _packed_binary(flat, offs, len(norm))],
                                                 names=["id", "v"])

    return fn


def _offsets(arr):
    """The value offsets of a (large_)string or (large_)binary Arrow array, as int64."""
    import numpy as np
    import pyarrow as pa

    ot = np.int64 if pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type) else np.int32
    w = np.dtype(ot).itemsize
    return np.frombuffer(arr.buffers()[1], ot, count=len(arr) + 1, offset=arr.offset * w).astype(np.int64)


def _slices(batch, column: str, max_rows: int, limit: int):
    """Row slices of an Arrow batch of at most `max_rows` rows whose `column` holds at most `limit` bytes each (one
    row may exceed it): a shingle set takes up to 4x its text's bytes, and an Arrow binary column holds at most
    2 GiB."""
    import numpy as np

    arr = batch.column(column)
    offs = _offsets(arr)
    start = 0
    while start < len(arr):
        end = int(np.searchsorted(offs, offs[start] + limit, side="right")) - 1
        end = min(max(end, start + 1), len(arr), start + max_rows)
        yield batch.slice(start, end - start)
        start = end


def _binary_values(arr, dtype):
    """(values, offsets in values) of a binary Arrow array whose items are packed `dtype` arrays, without copying
    unless the data is misaligned."""
    import numpy as np

    width = np.dtype(dtype).itemsize
    offs = _offsets(arr)
    data = arr.buffers()[2]
    n = int(offs[-1] - offs[0])
    raw = np.frombuffer(data, np.uint8, count=n, offset=int(offs[0])) if n else np.zeros(0, np.uint8)
    if raw.ctypes.data % width:
        raw = raw.copy()
    return raw.view(dtype), (offs - offs[0]) // width


def _pair_sim_fn(params: dict):
    """mapInArrow: (src, dst, va, vb) -> (src, dst, sim): the exact Jaccard of two shingle sets (one merge per pair)
    or the fraction of equal MinHash values, from the values `_sets_fn` made."""
    num_perm, scheme, mode = params["num_perm"], params["scheme"], params["verify"]

    def fn(batches):
        import numpy as np
        import pyarrow as pa

        from udfs.minhash import estimated_jaccard, jaccard_sets, signature_dtype

        for batch in batches:
            if mode == "estimate":
                dt = signature_dtype(scheme)
                sa, sb = (_binary_values(batch.column(c), dt)[0].reshape(-1, num_perm) for c in ("va", "vb"))
                sim = estimated_jaccard(sa, sb)
            else:
                sim = jaccard_sets(*_binary_values(batch.column("va"), np.uint64),
                                   *_binary_values(batch.column("vb"), np.uint64))
            yield pa.RecordBatch.from_arrays([batch.column("src"), batch.column("dst"), pa.array(sim, pa.float64())],
                                             names=["src", "dst", "sim"])

    return fn


def _local_lsh_fn(params: dict):
    """mapInArrow over ALL survivors' (id, bkeys) in one task -> (src, dst, bucket_size): the candidate pairs of
    udfs.minhash.bucket_pairs (the same pairs as the Spark path), plus one row with null ids whose bucket_size is
    the number of shared buckets (for the metrics row)."""
    cap, bands = int(params["max_bucket_pairs"]), int(params["bands"])

    def fn(batches):
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        from udfs.minhash import bucket_pairs

        ids, keys = [], []
        for b in batches:
            ids.append(b.column("id"))
            keys.append(np.asarray(b.column("bkeys").flatten().to_numpy(zero_copy_only=False), np.int64))
        ids = pa.concat_arrays(ids) if ids else pa.array([], pa.string())
        keys = np.concatenate(keys).reshape(len(ids), bands) if keys else np.zeros((0, bands), np.int64)
        order = pc.sort_indices(ids).to_numpy()      # rows in id order (UTF-8 byte order, as Spark sorts strings)
        ids, keys = ids.take(pa.array(order)), keys[order]
        src, dst, size, shared = bucket_pairs(keys, cap, with_shared=True)
        step = 1 << 20
        for i in range(0, len(src), step):
            yield pa.RecordBatch.from_arrays([ids.take(pa.array(src[i:i + step])), ids.take(pa.array(dst[i:i + step])),
                                              pa.array(size[i:i + step], pa.int64())],
                                             names=["src", "dst", "bucket_size"])
        yield pa.RecordBatch.from_arrays([pa.nulls(1, pa.string()), pa.nulls(1, pa.string()),
                                          pa.array([shared], pa.int64())], names=["src", "dst", "bucket_size"])

    return fn


def _local_sims_fn(params: dict):
    """mapInArrow over every candidate's (id, v) row and every candidate pair's (src, dst) row in one task ->
    (src, dst, sim): each set (or signature) is held once and each pair compared by index into that store, so
    neither the sets nor the pairs are shuffled to meet."""
    num_perm, scheme, mode = params["num_perm"], params["scheme"], params["verify"]

    def fn(batches):
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        from udfs.minhash import estimated_jaccard, jaccard_sets_indexed, signature_dtype

        ids, vals, src, dst = [], [], [], []
        for b in batches:
            is_set = pc.is_valid(b.column("id"))
            sets, prs = b.filter(is_set), b.filter(pc.invert(is_set))
            ids.append(sets.column("id"))
            vals.append(sets.column("v"))
            src.append(prs.column("src"))
            dst.append(prs.column("dst"))
        if not ids:
            return
        ids, vals = pa.concat_arrays(ids), pa.concat_arrays(vals)
        src, dst = pa.concat_arrays(src), pa.concat_arrays(dst)
        ia = pc.index_in(src, value_set=ids).to_numpy(zero_copy_only=False).astype(np.int64)
        ib = pc.index_in(dst, value_set=ids).to_numpy(zero_copy_only=False).astype(np.int64)
        if mode == "estimate":
            sig = _binary_values(vals, signature_dtype(scheme))[0].reshape(-1, num_perm)
        else:
            h, offs = _binary_values(vals, np.uint64)
        step = 1 << 20
        for i in range(0, len(ia), step):
            a, b = ia[i:i + step], ib[i:i + step]
            sim = estimated_jaccard(sig[a], sig[b]) if mode == "estimate" else jaccard_sets_indexed(h, offs, a, b)
            yield pa.RecordBatch.from_arrays([src.slice(i, len(a)), dst.slice(i, len(a)), pa.array(sim, pa.float64())],
                                             names=["src", "dst", "sim"])

    return fn


NEAR_DDL = "id string, cluster_id string, kept_id string, method string, n_tokens bigint, info string"


def _spark_double_order(q):
    """(nan, nq): sort keys that order the doubles `-q` as Spark orders coalesce(-q, +inf): nulls as +inf, NaN after
    every number (a numpy float64 array nq with NaN replaced by 0, and the NaN flag to sort on first)."""
    import numpy as np
    import pyarrow.compute as pc

    nq = -np.asarray(pc.fill_null(q, 0.0).to_numpy(zero_copy_only=False), np.float64)
    nq[np.asarray(pc.is_null(q).to_numpy(zero_copy_only=False))] = np.inf
    nan = np.isnan(nq)
    return nan, np.where(nan, 0.0, nq)


def _with_exact_groups(t):
    """The keys rows (id, q, ekey, ...) with exact_kept and exact_cluster, as the Spark plan's window over ekey
    makes them: per group of equal digests, the survivor of smallest (coalesce(-q, inf), id) and the smallest id."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    n = t.num_rows
    ids = t["id"].combine_chunks()
    id_rank = np.empty(n, np.int64)
    id_rank[np.asarray(pc.sort_indices(ids))] = np.arange(n)  # Spark's string order (UTF-8 bytes)
    group = np.asarray(pc.dictionary_encode(t["ekey"].combine_chunks()).indices, np.int64)
    nan, nq = _spark_double_order(t["q"].combine_chunks())
    first = np.zeros(n, bool)
    order = np.lexsort((id_rank, nq, nan, group))  # by group, then rank
    first[order[np.r_[True, group[order][1:] != group[order][:-1]]]] = True
    kept_of = np.empty(group.max() + 1 if n else 0, np.int64)
    kept_of[group[first]] = np.flatnonzero(first)
    low = np.full(len(kept_of), n, np.int64)
    np.minimum.at(low, group, id_rank)  # the smallest id's rank per group
    by_rank = np.argsort(id_rank)
    return t.append_column("exact_kept", ids.take(pa.array(kept_of[group]))).append_column(
        "exact_cluster", ids.take(pa.array(by_rank[low[group]])))


def _local_near_fn(params: dict, values_dir: str | None = None, count: bool = False):
    """mapInArrow over ALL rows of the keys pass in one task (id, n_tokens, q, bkeys, v, and either ekey, from which
    it makes the exact groups as the Spark plan's window does, or those groups' exact_kept and exact_cluster)
    -> NEAR_DDL rows: every record to remove, and one row with a null id whose `info` holds the counters (JSON).

    The four steps of the Spark plan in one process, with the same kernels and the same result: LSH pairs of the
    exact survivors (udfs.minhash.bucket_pairs, survivors in id order), verification by index into the
    survivors' values (jaccard_sets_indexed / estimated_jaccard), components of the verified pairs
    (udfs.graph.min_label_components), and per component the survivor of smallest rank (best quality, then
    smallest id) and the smallest exact-cluster id; exact duplicates follow their exact survivor.
    With `values_dir` the rows carry (vfile, vrow) instead of v, and only the candidates' values are read.
    `count`: the info row also holds docs_in, tokens_in and value_bytes (the keys pass's values of the documents
    with band keys: vlen, or v's length), which the one-job plan has no other pass to count."""
    cap, bands, num_perm = int(params["max_bucket_pairs"]), int(params["bands"]), int(params["num_perm"])
    thr, mode, scheme = float(params["threshold"]), params["verify"], params["scheme"]

    def fn(batches):
        import json

        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        from udfs.graph import min_label_components
        from udfs.minhash import bucket_pairs, estimated_jaccard, jaccard_sets_indexed, signature_dtype

        batches = [b for b in batches if b.num_rows]
        info = {"shared_buckets": 0, "candidate_pairs": 0, "largest_bucket": 0, "verified_pairs": 0,
                "exact_duplicates": 0}
        if mode != "none":
            info["candidate_docs"] = 0
        names = ["id", "cluster_id", "kept_id", "method", "n_tokens", "info"]
        out = []
        if count:
            info.update(docs_in=0, tokens_in=0, value_bytes=0)
        if batches:
            t = pa.Table.from_batches(batches)
            if count:
                has_keys = pc.is_valid(t["bkeys"])
                vlen = (t["vlen"] if "vlen" in t.schema.names else
                        pc.binary_length(t["v"]) if "v" in t.schema.names else None)
                info.update(docs_in=t.num_rows, tokens_in=int(pc.sum(t["n_tokens"]).as_py() or 0),
                            value_bytes=int(pc.sum(pc.if_else(has_keys, vlen, 0)).as_py() or 0)
                            if vlen is not None else 0)
            if "exact_kept" not in t.schema.names:
                t = _with_exact_groups(t)
                info["exact_duplicates"] = int(pc.sum(pc.not_equal(t["id"], t["exact_kept"])).as_py() or 0)
            is_surv = pc.fill_null(pc.equal(t["id"], t["exact_kept"]), False)
            dups = t.filter(pc.invert(is_surv))
            s = t.filter(pc.and_(is_surv, pc.is_valid(t["bkeys"])))
            s = s.take(pc.sort_indices(s["id"]))  # id order (UTF-8 bytes, as Spark sorts strings)
            n = s.num_rows
            ids = s["id"].combine_chunks()
            keys = (np.asarray(s["bkeys"].combine_chunks().flatten().to_numpy(zero_copy_only=False), np.int64)
                    .reshape(n, bands) if n else np.zeros((0, bands), np.int64))
            src, dst, size, shared = bucket_pairs(keys, cap, with_shared=True)
            info.update(shared_buckets=int(shared), candidate_pairs=len(src),
                        largest_bucket=int(size.max()) if len(size) else 0)
            if mode == "none" or not len(src):
                keep = np.ones(len(src), bool)
            else:
                cand = np.unique(np.concatenate([src, dst]))
                info["candidate_docs"] = int(len(cand))
                keep = np.zeros(len(src), bool)
                if values_dir:
                    # the candidates' sets in index order; every other survivor an empty set it is never asked for
                    hc, oc = _candidate_values(values_dir, s["vfile"].combine_chunks(), s["vrow"].combine_chunks(),
                                               cand)
                    lens = np.zeros(n, np.int64)
                    lens[cand] = np.diff(oc)
                    h, offs = hc, np.concatenate([[0], np.cumsum(lens)])
                elif mode == "estimate":
                    v = s["v"].cast(pa.large_binary()).combine_chunks()
                    sig = _binary_values(v, signature_dtype(scheme))[0].reshape(-1, num_perm)
                else:
                    h, offs = _binary_values(s["v"].cast(pa.large_binary()).combine_chunks(), np.uint64)
                step = 1 << 20
                for i in range(0, len(src), step):
                    a, b = src[i:i + step], dst[i:i + step]
                    sim = estimated_jaccard(sig[a], sig[b]) if mode == "estimate" else jaccard_sets_indexed(h, offs, a, b)
                    keep[i:i + step] = sim >= thr
            u, w = src[keep], dst[keep]
            info["verified_pairs"] = len(u)
            labels = min_label_components(u, w, n)            # the smallest member's index names a component
            member = np.zeros(n, bool)
            member[u] = member[w] = True
            nodes = np.flatnonzero(member)
            # survivor of a component: smallest (-q with null as +inf and NaN last, as Spark orders doubles; then id)
            nan, nq = _spark_double_order(s["q"].combine_chunks())
            order = np.lexsort((nodes, nq[nodes], nan[nodes], labels[nodes]))
            ranked = nodes[order]
            first = np.r_[True, labels[ranked][1:] != labels[ranked][:-1]] if len(ranked) else np.zeros(0, bool)
            kept_of = np.arange(n)
            kept_of[labels[ranked[first]]] = ranked[first]
            # cluster id: the smallest exact-cluster id among the component's members
            ec = s["exact_cluster"].combine_chunks()
            uniq = pc.unique(ec)
            uniq = uniq.take(pc.sort_indices(uniq))
            code = pc.index_in(ec, value_set=uniq).to_numpy(zero_copy_only=False).astype(np.int64)
            low = np.full(n, len(uniq), np.int64)
            np.minimum.at(low, labels[nodes], code[nodes])
            gone = nodes[kept_of[labels[nodes]] != nodes]
            tok = s["n_tokens"].combine_chunks()
            if len(gone):
                g = pa.array(gone)
                out.append(pa.RecordBatch.from_arrays(
                    [ids.take(g), uniq.take(pa.array(low[labels[gone]])), ids.take(pa.array(kept_of[labels[gone]])),
                     pa.array(["minhash"] * len(gone)), tok.take(g), pa.nulls(len(gone), pa.string())], names=names))
            if dups.num_rows:
                kept, clus = dups["exact_kept"].combine_chunks(), dups["exact_cluster"].combine_chunks()
                if len(nodes):
                    pos = pc.index_in(kept, value_set=ids)
                    p = np.asarray(pc.fill_null(pos, 0).to_numpy(zero_copy_only=False), np.int64)
                    moved = np.asarray(pc.is_valid(pos).to_numpy(zero_copy_only=False), bool) & member[p]
                    if moved.any():
                        lab, m = labels[p], pa.array(moved)
                        kept = pc.if_else(m, ids.take(pa.array(np.where(moved, kept_of[lab], 0))), kept)
                        clus = pc.if_else(m, uniq.take(pa.array(np.where(moved, low[lab], 0))), clus)
                out.append(pa.RecordBatch.from_arrays(
                    [dups["id"].combine_chunks(), clus, kept, pa.array(["exact"] * dups.num_rows),
                     dups["n_tokens"].combine_chunks(), pa.nulls(dups.num_rows, pa.string())], names=names))
        yield from out
        yield pa.RecordBatch.from_arrays([pa.nulls(1, pa.string())] * 4 + [pa.nulls(1, pa.int64()),
                                          pa.array([json.dumps(info)])], names=names)

    return fn


DEDUP_META_DDL = "kind string, tbl string, part string, docs bigint, tok bigint, reason string, id string, row string"


def dedup_write_fn(paths: dict, schemas: dict, cols: dict, audit_k: int, text_chars: int = 2000):
    """mapInArrow over the input joined (left) with the removed records' (cluster_id, kept_id, method): write the
    survivors into this task's `deduped` file and the rest into its `duplicates` file, and return DEDUP_META_DDL
    rows only: the files, documents and tokens per method (null: kept), and the audit candidates."""
    def run(batches):
        import pyarrow.compute as pc

        files, audit, stats = direct.TaskFiles(paths, schemas), direct.AuditHeap(audit_k, text_chars), {}
        for b in batches:
            gone = pc.is_valid(b.column("method"))
            for role, mask in (("deduped", pc.invert(gone)), ("duplicates", gone)):
                files.write(role, direct.select(b.filter(mask), cols[role], schemas[role]))
            tok = b.column("n_tokens_est").to_pylist() if "n_tokens_est" in b.schema.names else [0] * b.num_rows
            for m, t in zip(b.column("method").to_pylist(), tok):
                st = stats.setdefault(m, [0, 0])
                st[0] += 1
                st[1] += t or 0
            audit.offer(b.filter(gone).select(cols["duplicates"]), "method")
        out = files.close()
        out += [{"kind": "stat", "reason": m, "docs": v[0], "tok": v[1]} for m, v in stats.items()]
        out += audit.rows()
        if out:
            yield direct.meta_batch(out, DEDUP_META_DDL)

    return run


def _read_tagged_fn(write_fn, df, tags):
    """mapInArrow over file rows (jobs.direct.file_frame): each file's rows with the (cluster_id, kept_id, method)
    of the removed ones (`tags`, a small Arrow table: ids and three short strings per removed record; nulls for the
    rest), as Spark's left join gives them to `write_fn`."""
    cols, schema = list(df.columns), direct.file_schema(df)
    extra = ["cluster_id", "kept_id", "method"]

    def fn(batches):
        import pyarrow as pa
        import pyarrow.compute as pc

        ids = tags.column("id").combine_chunks()
        vals = [tags.column(c).combine_chunks() for c in extra]

        def joined():
            for b in direct.read_files(batches, cols, schema):
                idx = pc.index_in(b.column("id"), value_set=ids)
                yield pa.RecordBatch.from_arrays(list(b.columns) + [v.take(idx) for v in vals], names=cols + extra)

        yield from write_fn(joined())

    return fn


def _is_numeric(t) -> bool:
    from pyspark.sql.types import NumericType

    return isinstance(t, NumericType)


# ---- Spark plan -----------------------------------------------------------------------------------------------------
def _cut(df):
    """Cut the lineage; lazy: the next action (a count) materialises it in the same Spark job."""
    sc = df.sparkSession.sparkContext
    return df.checkpoint(eager=False) if sc.getCheckpointDir() else df.localCheckpoint(eager=False)


def find_duplicates(df, params: dict, timings: dict | None = None, values_in_keys: bool = False,
                    units: list[dict] | None = None, values_dir: str | None = None, one_job: bool = False,
                    driver: dict | None = None):
    """Return (removed, info): removed = DataFrame[id, cluster_id, kept_id, method, n_tokens] of every record to
    drop, info = counters for the metrics row. `df` needs `id` and `text` (and `quality_column` if configured).
    `values_in_keys`: the keys pass also makes every document's shingle set (or signature) for verification, so
    that the text is read once (plan() asks for it when the input is small enough for one task to verify).
    `units`: df's Parquet files (jobs.direct.plain_files), which the keys pass then reads with pyarrow.
    `values_dir`: a folder every task can read and write (a local lake's); with verify=exact the keys pass puts the
    shingle sets in files there instead of rows (`_write_values`). The caller removes it after the last use of
    the result.
    `one_job` (with `values_in_keys`; the caller knows from the input's Delta log that everything after the keys
    pass fits one task and that the removed records fit the driver): the keys pass feeds that one task through a
    shuffle in the same Spark job, whose removed records come to the driver as an Arrow table, which is put in
    `driver["removed"]` when `driver` is given (the same result as the plan of two jobs, without caching the keys
    rows, a counting job and a second read of the result)."""
    from pyspark import StorageLevel
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from jobs.components import connected_components, local_components

    timings = {} if timings is None else timings
    info: dict = {}
    qcol = params.get("quality_column")
    t0 = time.time()

    # 1. per document: exact digest and band keys, one pass over the text
    n_tokens = F.col("n_tokens_est").cast("long") if "n_tokens_est" in df.columns else F.lit(None).cast("long")
    quality = F.col(qcol).cast("double") if qcol else F.lit(None).cast("double")
    with_v = values_in_keys and not params["exact_only"] and params["verify"] != "none"
    side = values_dir if with_v and params["verify"] == "exact" else None  # signatures (estimate) are small rows
    keys_ddl = "id string, n_tokens bigint, q double, ekey binary, bkeys array<bigint>" + (
        (", vfile string, vrow int, vlen bigint" if side else ", v binary") if with_v else "")
    keys_fn = _keys_fn(params, with_v, side)
    # where verification's values come from: the keys pass (as files or as rows), or a second read of the text
    info["values_method"] = "none" if params["exact_only"] or params["verify"] == "none" else (
        ("files" if side else "rows") if with_v else "text")
    if units is not None:
        # the workers read the files: the text does not pass through JVM rows on its way to Python
        keys = direct.file_frame(df.sparkSession, units).mapInArrow(_read_keys_fn(keys_fn, df, qcol), keys_ddl)
    else:
        src = df.select(F.col("id"), F.col("text"), n_tokens.alias("n_tokens"), quality.alias("q"))
        keys = src.mapInArrow(keys_fn, keys_ddl)
    if one_job and with_v == (params["verify"] != "none") and not params["exact_only"]:
        return _keys_and_one_task(keys, params, side, with_v, info, timings, t0, driver)
    # The keys rows are kept as they are made, with no shuffle: their values (v: shingle sets, about the text's
    # size) then cross the disk once. The exact-duplicate groups come from a shuffle of (id, q, ekey) alone.
    keys = stored = keys.persist(StorageLevel.DISK_ONLY)
    agg = keys.agg(F.count(F.lit(1)).alias("docs"), F.sum("n_tokens").alias("tokens"),
                   F.count("bkeys").alias("with_keys"),
                   (F.sum(F.when(F.col("bkeys").isNotNull(), F.col("vlen") if side else F.length("v"))) if with_v
                    else F.lit(None)).alias("value_bytes")).collect()[0]
    info["docs_in"], info["tokens_in"] = int(agg["docs"]), int(agg["tokens"] or 0)
    value_bytes = int(agg["value_bytes"] or 0)
    if with_v:
        log(f"dedup: the keys pass made {value_bytes:,} bytes of {params['verify']} values "
            f"(one task verifies up to dedup.local_verify_max_bytes = {int(params['local_verify_max_bytes']):,})")
    n_keys = int(agg["with_keys"]) * int(params["bands"])  # at most: exact duplicates' keys are dropped first
    if not params["exact_only"] and n_keys <= int(params["local_lsh_max_keys"]) and (
            params["verify"] == "none" or (with_v and value_bytes <= int(params["local_verify_max_bytes"]))):
        # Everything after the keys pass fits one task: exact groups, LSH, verification, components and
        # survivors there, in one Spark job (the same result as the steps below, which each take a job or more)
        timings["keys_and_exact"] = round(time.time() - t0, 3)
        t0 = time.time()
        rows = keys.select("id", "n_tokens", "q", "ekey", "bkeys",
                           *((["vfile", "vrow"] if side else ["v"]) if with_v else []))
        out = _cut(rows.coalesce(1).mapInArrow(_local_near_fn(params, side), NEAR_DDL))
        agg = out.agg(F.count("id").alias("n"), F.max("info").alias("info")).collect()[0]
        info.update(json.loads(agg["info"]))
        info["docs_removed"] = int(agg["n"])
        timings["near_in_one_task"] = round(time.time() - t0, 3)
        keys.unpersist()
        return _one_task_removed(out.where(F.col("id").isNotNull()), info, params)

    # exact groups of two or more: survivor = best quality first (null/NaN last), then smallest id; cluster = the
    # group's smallest id. A document alone in its group is its own survivor and cluster.
    rank = F.struct(F.coalesce(-F.col("q"), F.lit(float("inf"))).alias("nq"), F.col("id").alias("id"))
    w = Window.partitionBy("ekey")
    groups = _cut(keys.select("id", "q", "ekey")
                  .select("id", F.count(F.lit(1)).over(w).alias("n_same"),
                          F.min(rank).over(w).getField("id").alias("g_kept"), F.min("id").over(w).alias("g_cluster"))
                  .where(F.col("n_same") > 1).select("id", "g_kept", "g_cluster"))
    g = groups.agg(F.count(F.lit(1)).alias("n"),
                   F.sum(F.when(F.col("id") != F.col("g_kept"), 1).otherwise(0)).alias("dups")).collect()[0]
    info["exact_duplicates"] = int(g["dups"] or 0)
    small = int(g["n"]) <= BROADCAST_REMOVED
    keys = (keys.join(F.broadcast(groups) if small else groups, "id", "left")  # broadcast: joined where they lie
            .withColumn("exact_kept", F.coalesce("g_kept", "id")).withColumn("exact_cluster", F.coalesce("g_cluster", "id"))
            .drop("g_kept", "g_cluster").withColumn("rank", rank))
    if not small:  # a shuffle join: once, not at every use of the survivors below
        keys = keys.persist(StorageLevel.DISK_ONLY)
    timings["keys_and_exact"] = round(time.time() - t0, 3)

    exact_dups = keys.where(F.col("id") != F.col("exact_kept")).select(
        "id", "exact_kept", "exact_cluster", "n_tokens")
    survivors = keys.where(F.col("id") == F.col("exact_kept"))

    if params["exact_only"]:
        removed = exact_dups.select("id", F.col("exact_cluster").alias("cluster_id"),
                                    F.col("exact_kept").alias("kept_id"), F.lit("exact").alias("method"), "n_tokens")
        removed = _cut(removed)
        info["docs_removed"] = removed.count()
        keys.unpersist()
        stored.unpersist()
        return removed, info

    info["resolve_method"] = "spark"

    # 2. LSH buckets -> candidate pairs (all pairs in small buckets, a star to the smallest id in large ones)
    t0 = time.time()
    cap = int(params["max_bucket_pairs"])
    with_keys = survivors.where(F.col("bkeys").isNotNull())
    if n_keys <= int(params["local_lsh_max_keys"]):
        # Up to a few ten million band keys are one sort in one task (udfs.minhash.bucket_pairs): one Spark job
        # instead of a shuffle of every key, a count, a semi-join, collect_list and a shuffle of the pairs.
        # The pairs are the same as below.
        out = _cut(with_keys.select("id", "bkeys").coalesce(1)
                   .mapInArrow(_local_lsh_fn(params), "src string, dst string, bucket_size bigint"))
        agg = out.agg(F.count("src").alias("n"), F.max(F.when(F.col("src").isNotNull(), F.col("bucket_size"))).alias("b"),
                      F.max(F.when(F.col("src").isNull(), F.col("bucket_size"))).alias("shared")).collect()[0]
        pairs = out.where(F.col("src").isNotNull())
        info["shared_buckets"] = int(agg["shared"] or 0)
        info["lsh_method"] = "one task"
    else:
        # a bucket key already mixes in its band number (udfs.minhash.band_keys), so it alone names the bucket
        banded = with_keys.select("id", F.explode("bkeys").alias("bkey"))
        # Most band keys name a bucket of one document. A plain count per key (a hash aggregate on a long) finds
        # the shared ones, and only their rows are gathered into id lists: collect_list is an object aggregate,
        # which falls back to sorting its input after a few hundred keys per task.
        shared = _cut(banded.groupBy("bkey").count().where(F.col("count") > 1).select("bkey"))
        info["shared_buckets"] = shared.count()
        if info["shared_buckets"] <= BROADCAST_SHARED_BUCKETS:
            shared = F.broadcast(shared)  # 8 bytes a key: the band rows are then filtered where they are made
        buckets = (banded.join(shared, "bkey", "left_semi")
                   .groupBy("bkey").agg(F.sort_array(F.collect_list("id")).alias("ids")))
        all_pairs = F.expr("flatten(transform(sequence(0, size(ids) - 2), i -> transform(sequence(i + 1, "
                           "size(ids) - 1), j -> named_struct('a', ids[i], 'b', ids[j]))))")
        star = F.expr("transform(slice(ids, 2, size(ids) - 1), x -> named_struct('a', ids[0], 'b', x))")
        pairs = (buckets.select(F.explode(F.when(F.size("ids") <= cap, all_pairs).otherwise(star)).alias("p"),
                                F.size("ids").alias("bucket_size"))
                 .groupBy(F.col("p.a").alias("src"), F.col("p.b").alias("dst"))
                 .agg(F.max("bucket_size").alias("bucket_size")))
        pairs = _cut(pairs)
        agg = pairs.agg(F.count(F.lit(1)).alias("n"), F.max("bucket_size").alias("b")).collect()[0]
        info["lsh_method"] = "spark"
    info["candidate_pairs"], info["largest_bucket"] = int(agg["n"]), int(agg["b"] or 0)
    pairs = pairs.select("src", "dst")
    timings["lsh_candidates"] = round(time.time() - t0, 3)

    # 3. verification of candidate pairs
    t0 = time.time()
    if params["verify"] == "none":
        edges = pairs
    else:
        cand = pairs.select(F.col("src").alias("id")).union(pairs.select(F.col("dst").alias("id"))).distinct()
        if info["candidate_pairs"] <= BROADCAST_CANDIDATE_PAIRS:
            # at most 2 x that many ids: sent to every task, so the input is cut to the candidates where it is read
            # instead of all of its text being shuffled to meet them
            cand = F.broadcast(cand)
        # each candidate's shingle set (or signature) once, counted and sized in one job
        if with_v and not side:  # made by the keys pass (values in files there: more than one task verifies)
            sets = survivors.select("id", "v").join(cand, "id", "left_semi").persist(StorageLevel.DISK_ONLY)
        else:
            info["values_method"] = "text"
            sets = (df.select("id", "text").join(cand, "id", "left_semi")
                    .mapInArrow(_sets_fn(params), "id string, v binary").persist(StorageLevel.DISK_ONLY))
        size = sets.agg(F.count(F.lit(1)).alias("n"), F.sum(F.length("v")).alias("b")).collect()[0]
        info["candidate_docs"], set_bytes = int(size["n"]), int(size["b"] or 0)
        if set_bytes <= int(params["local_verify_max_bytes"]):
            # all sets fit one task: every pair compared there by index into one store (one Spark job) instead of
            # two shuffle joins that carry a set to each of its pairs
            tagged = (sets.select("id", "v", F.lit(None).cast("string").alias("src"),
                                  F.lit(None).cast("string").alias("dst"))
                      .unionByName(pairs.select(F.lit(None).cast("string").alias("id"),
                                                F.lit(None).cast("binary").alias("v"), "src", "dst")))
            sims = tagged.coalesce(1).mapInArrow(_local_sims_fn(params), "src string, dst string, sim double")
            info["verify_method"] = "one task"
        else:
            joined = (pairs.join(sets.select(F.col("id").alias("src"), F.col("v").alias("va")), "src")
                      .join(sets.select(F.col("id").alias("dst"), F.col("v").alias("vb")), "dst")
                      .select("src", "dst", "va", "vb"))
            sims = joined.mapInArrow(_pair_sim_fn(params), "src string, dst string, sim double")
            info["verify_method"] = "spark"
        edges = _cut(sims.where(F.col("sim") >= float(params["threshold"])).select("src", "dst"))
    info["verified_pairs"] = edges.count()
    if params["verify"] != "none":
        sets.unpersist()
    timings["verify"] = round(time.time() - t0, 3)

    # 4. clusters = connected components of the verified pairs
    t0 = time.time()
    if info["verified_pairs"] and info["verified_pairs"] <= int(params["local_components_max_edges"]):
        # a graph this small is one task's work: one Spark job instead of about ten per Large/Small-Star round
        comp, rounds = _cut(local_components(edges)), 0
        comp.count()
        info["cc_method"] = "one task"
    elif info["verified_pairs"]:
        comp, rounds = connected_components(edges, max_iterations=int(params["cc_max_iterations"]))
        info["cc_method"] = "spark"
    else:
        comp, rounds = edges.sparkSession.createDataFrame([], "node string, component string"), 0
        info["cc_method"] = "none"
    info["cc_rounds"] = rounds
    timings["components"] = round(time.time() - t0, 3)

    # 5. one survivor per cluster; exact duplicates follow their exact survivor into its cluster
    t0 = time.time()
    w2 = Window.partitionBy("component")
    members = (comp.join(survivors.select(F.col("id").alias("node"), "rank", "exact_cluster", "n_tokens"), "node")
               .withColumn("kept_id", F.min("rank").over(w2).getField("id"))
               .withColumn("cluster_id", F.min("exact_cluster").over(w2)))
    near_dups = members.where(F.col("node") != F.col("kept_id")).select(
        F.col("node").alias("id"), "cluster_id", "kept_id", F.lit("minhash").alias("method"), "n_tokens")
    remap = members.select(F.col("node").alias("exact_kept"), F.col("kept_id").alias("final_kept"),
                           F.col("cluster_id").alias("final_cluster"))
    exact_final = exact_dups.join(remap, "exact_kept", "left").select(
        "id", F.coalesce("final_cluster", "exact_cluster").alias("cluster_id"),
        F.coalesce("final_kept", "exact_kept").alias("kept_id"), F.lit("exact").alias("method"), "n_tokens")
    removed = _cut(exact_final.unionByName(near_dups))
    info["docs_removed"] = removed.count()
    timings["resolve"] = round(time.time() - t0, 3)
    keys.unpersist()
    stored.unpersist()
    return removed, info


def _keys_and_one_task(keys, params, side, with_v, info, timings, t0, driver):
    """find_duplicates' one-job plan: the keys rows go through one shuffle to one task, which does everything after
    the keys pass (`_local_near_fn`) and counts the input; the removed records come back as an Arrow table."""
    import pyarrow.compute as pc

    rows = keys.select("id", "n_tokens", "q", "ekey", "bkeys",
                       *((["vfile", "vrow", "vlen"] if side else ["v"]) if with_v else []))
    got = rows.repartition(1).mapInArrow(_local_near_fn(params, side, count=True), NEAR_DDL).toArrow()
    head = got.filter(pc.is_null(got["id"]))
    counts = json.loads(head["info"][0].as_py())
    info["docs_in"], info["tokens_in"] = counts.pop("docs_in"), counts.pop("tokens_in")
    value_bytes = counts.pop("value_bytes")
    info.update(counts)
    if with_v:
        log(f"dedup: the keys pass made {value_bytes:,} bytes of {params['verify']} values, verified in the same "
            f"Spark job (dedup.local_verify_max_bytes = {int(params['local_verify_max_bytes']):,})")
        if value_bytes > int(params["local_verify_max_bytes"]):
            log(f"dedup: warning: the input's Delta log promised at most {int(params['local_verify_max_bytes']):,} "
                f"bytes of values; lower dedup.local_verify_max_bytes if the one task ran short of memory")
    removed = got.filter(pc.is_valid(got["id"])).drop_columns(["info"])
    info["docs_removed"] = removed.num_rows
    timings["keys_and_one_task"] = round(time.time() - t0, 3)
    if driver is not None:
        driver["removed"] = removed
    return _one_task_removed(keys.sparkSession.createDataFrame(removed), info, params)


def _one_task_removed(frame, info, params):
    """(removed, info) of a plan that resolved everything in one task (`_local_near_fn`): the methods named in
    `info`, and the removed rows with method NOT NULL, as the literals of the Spark plan make it (so that the
    duplicates table's schema does not depend on the plan)."""
    from pyspark.sql import functions as F

    info.update(lsh_method="one task", cc_method="one task" if info["verified_pairs"] else "none", cc_rounds=0,
                resolve_method="one task")
    if params["verify"] != "none":
        info["verify_method"] = "one task"
    method = F.when(F.col("method") == "exact", F.lit("exact")).otherwise(F.lit("minhash")).alias("method")
    return frame.select("id", "cluster_id", "kept_id", method, "n_tokens"), info


def cluster_size_histogram(removed, tags=None) -> dict:
    """{size bucket: number of clusters} over clusters with >= 2 documents ("2", "3", "4", "5-8", "9-16", ...), from
    the removed records (a DataFrame, or `tags`, the same records as an Arrow table already on the driver)."""
    if tags is not None:
        import pyarrow.compute as pc

        per_kept = pc.value_counts(tags.column("kept_id").combine_chunks()).field("counts").to_pylist()
        counts: dict = {}
        for c in per_kept:
            counts[c + 1] = counts.get(c + 1, 0) + 1
        rows = sorted(counts.items())
    else:
        from pyspark.sql import functions as F

        sizes = removed.groupBy("kept_id").count().select((F.col("count") + 1).alias("size"))
        rows = sorted((int(r["size"]), int(r["count"])) for r in sizes.groupBy("size").count().collect())
    hist: dict = {}
    for s, n in rows:
        if s <= 4:
            label = str(s)
        else:
            hi = 1 << (s - 1).bit_length()
            label = f"{hi // 2 + 1}-{hi}"
        hist[label] = hist.get(label, 0) + n
    return hist


def _written_rows(lake, run, table) -> int:
    """Rows of the table version this run wrote (from the Parquet footers when the table layer reports them)."""
    res = run.writes.get(table)
    if res is not None and not res.skipped and res.num_rows >= 0:
        return res.num_rows
    return lake.read(table).count()


VALUE_BYTES_PER_FILE_BYTE = 4  # a shingle set takes ~1.25x its text's bytes; text compresses ~3x in Parquet


def _values_fit_one_task(ctx) -> tuple[bool, bool]:
    """(values_in_keys, one_job) for find_duplicates, judged from the input's Delta log before reading.
    values_in_keys: the input looks small enough for verification in one task (dedup.local_verify_max_bytes and
    local_lsh_max_keys): then the keys pass makes the values verification compares, instead of a second read of the
    candidates' text after LSH. one_job: moreover the log counts its records, so that it is known before the keys
    pass that the one task will do (records x bands <= local_lsh_max_keys) and that the removed records, at most
    all of them, may come to the driver (<= BROADCAST_REMOVED)."""
    p = ctx.params
    nbytes, records = ctx.lake.size(ctx.args.input_table, ctx.state["input_version"])
    fits = nbytes * VALUE_BYTES_PER_FILE_BYTE <= int(p["local_verify_max_bytes"])
    in_keys = fits and (records is None or records * int(p["bands"]) <= int(p["local_lsh_max_keys"]))
    return in_keys, in_keys and records is not None and records <= BROADCAST_REMOVED


def plan(ctx) -> None:
    params, lake = ctx.params, ctx.lake
    df = ctx.input()
    for col in ("id", "text") + ((params["quality_column"],) if params["quality_column"] else ()):
        if col not in df.columns:
            raise UserError(f"table '{ctx.args.input_table}' has no column '{col}'")
    from udfs.minhash import backend

    lsh = lsh_summary(params)
    log(f"dedup: threshold={params['threshold']} ngram={params['ngram']} num_perm={params['num_perm']} "
        f"bands={params['bands']} rows={params['rows']} verify={params['verify']} exact_only={params['exact_only']} "
        f"strip_punctuation={params['strip_punctuation']} (minhash backend on driver: {backend()})")
    if not params["exact_only"]:
        log(f"dedup: LSH {lsh['bands']} bands x {lsh['rows']} rows, {lsh['choice']}: predicted recall "
            f"P(candidate) = {lsh['p_candidate_at_threshold']:.4f} at J={params['threshold']}, "
            f"{lsh['p_candidate_at_threshold_plus_0.05']:.4f} at J={min(params['threshold'] + 0.05, 1.0):.2f}; "
            f"false-positive mass {lsh['fp_mass']:.4f}, false-negative mass {lsh['fn_mass']:.2e}")
    timings: dict = {}
    units = None
    qcol = params["quality_column"]
    if direct.enabled(ctx) and (not qcol or _is_numeric(df.schema[qcol].dataType)):
        # a plain local table: the workers read its files themselves in the keys and write passes
        units = direct.plain_files(lake, ctx.args.input_table, ctx.state["input_version"], df.columns,
                                   direct.file_schema(df))
    # the keys pass's shingle sets: a write folder of the duplicates table that is never committed, discarded
    # below, and if this run dies, by the next run's removal of uncommitted write folders
    scratch = direct.WriteFolders(lake, {"values": ctx.tables["duplicates_table"]}) if direct.enabled(ctx) else None
    try:
        return _plan(ctx, df, params, lsh, timings, units, scratch.paths["values"] if scratch else None)
    finally:
        if scratch:
            scratch.discard()


def _plan(ctx, df, params, lsh, timings, units, values_dir) -> int:
    """Find the duplicates, then write both tables and the metrics row (`plan`'s second half)."""
    from pyspark.sql import functions as F

    lake, run = ctx.lake, ctx.run
    out_t, dup_t = ctx.tables["output_table"], ctx.tables["duplicates_table"]
    in_keys, one_job = _values_fit_one_task(ctx)
    on_driver: dict = {}
    removed, info = find_duplicates(df, params, timings, values_in_keys=in_keys, units=units, values_dir=values_dir,
                                    one_job=one_job, driver=on_driver)
    info["reader"] = "workers (pyarrow)" if units is not None else "spark"

    t0 = time.time()
    deduped = df.join(removed.select("id"), "id", "left_anti")
    duplicates = df.join(removed.drop("n_tokens"), "id", "inner")
    has_tokens = "n_tokens_est" in df.columns
    audit_rows = tags_arrow = None
    if direct.enabled(ctx):
        # one Spark job: every task writes its survivors and its duplicates; counts and audit rows come back
        tables = {"deduped": out_t, "duplicates": dup_t}
        schemas = {"deduped": direct.file_schema(deduped), "duplicates": direct.file_schema(duplicates)}
        cols = {"deduped": deduped.columns, "duplicates": duplicates.columns}
        tags = removed.drop("n_tokens")
        if info["docs_removed"] <= BROADCAST_REMOVED:
            tags = F.broadcast(tags)  # the input is then read where it lies, not shuffled to meet its tags
        folders = direct.WriteFolders(lake, tables)
        write_fn = dedup_write_fn(folders.paths, schemas, cols, AUDIT_PER_METHOD)
        if units is not None and info["docs_removed"] <= BROADCAST_REMOVED:
            # the workers read the input's files and look each id up in the removed records, sent with the task
            tags_arrow = (on_driver["removed"].drop_columns(["n_tokens"]) if "removed" in on_driver
                          else removed.drop("n_tokens").toArrow())
            frame = direct.file_frame(ctx.spark, units).mapInArrow(_read_tagged_fn(write_fn, df, tags_arrow),
                                                                   DEDUP_META_DDL)
        else:
            frame = df.join(tags, "id", "left").mapInArrow(write_fn, DEDUP_META_DDL)
        try:
            meta = [r.asDict() for r in frame.collect()]
        except BaseException:
            folders.discard()
            raise
        folders.keep_only((r["tbl"], r["part"]) for r in meta if r["kind"] == "file")
        folders.commit(run, "overwrite", schemas, seconds_data={"deduped": time.time() - t0})
        stats: dict = {}
        for r in meta:
            if r["kind"] == "stat":
                d, t = stats.get(r["reason"], (0, 0))
                stats[r["reason"]] = (d + r["docs"], t + r["tok"])
        docs_out = stats.get(None, (0, 0))[0]
        docs_dup = sum(d for m, (d, _) in stats.items() if m is not None)
        by_method = {m: v for m, v in stats.items() if m is not None}
        audit_rows = direct.audit_sample([r for r in meta if r["kind"] == "audit"], AUDIT_PER_METHOD)
    else:
        run.write(deduped, out_t)
        run.write(duplicates, dup_t)
        # counts from what was written, so the conservation check is about the tables, not the plan
        docs_out, docs_dup = (_written_rows(lake, run, t) for t in (out_t, dup_t))
        by_method = {r["method"]: (int(r["d"]), int(r["t"] or 0)) for r in
                     removed.groupBy("method").agg(F.count(F.lit(1)).alias("d"), F.sum("n_tokens").alias("t"))
                     .collect()}
    timings["write"] = round(time.time() - t0, 3)

    exact_d, exact_t = by_method.get("exact", (0, 0))
    near_d, near_t = by_method.get("minhash", (0, 0))
    hist = cluster_size_histogram(removed, on_driver.get("removed", tags_arrow))
    extra = {
        "exact": {"docs_removed": exact_d, "tokens_removed": exact_t},
        "minhash": {"docs_removed": near_d, "tokens_removed": near_t},
        "cluster_size_histogram": hist,
        "clusters": sum(hist.values()),
        "params": {k: params[k] for k in ("threshold", "ngram", "num_perm", "bands", "rows", "seed", "scheme",
                                          "verify", "exact_only", "strip_punctuation", "quality_column",
                                          "max_fp_mass")},
        "lsh": lsh,
        "timings_s": timings,
        **{k: v for k, v in info.items() if k not in ("docs_in", "tokens_in", "docs_removed")},
    }
    run.finish(docs_in=info["docs_in"], docs_out=docs_out, docs_rejected=docs_dup,
               tokens_in=info["tokens_in"] if has_tokens else None,
               tokens_out=info["tokens_in"] - exact_t - near_t if has_tokens else None,
               reasons={"exact": exact_d, "minhash": near_d}, extra=extra)
    if audit_rows is not None:
        run.write_audit_rows(audit_rows, dup_t, reason_col="method")
    else:
        run.write_audit(lake.read(dup_t), dup_t, reason_col="method", per_reason=AUDIT_PER_METHOD)
    return 0


def recover(ctx) -> None:
    """Both tables hold this run's output but its metrics row is missing (the driver died after the second
    commit): count the committed tables instead of deduplicating again."""
    from pyspark.sql import functions as F

    lake, run = ctx.lake, ctx.run
    out_t, dup_t = ctx.tables["output_table"], ctx.tables["duplicates_table"]
    docs_out, docs_dup = (_written_rows(lake, run, t) for t in (out_t, dup_t))
    dups = lake.read(dup_t, version=run.outputs[dup_t])
    has_tokens = "n_tokens_est" in dups.columns
    tok = F.sum("n_tokens_est") if has_tokens else F.lit(0)
    by_method = {r["method"]: (int(r["d"]), int(r["t"] or 0)) for r in
                 dups.groupBy("method").agg(F.count(F.lit(1)).alias("d"), tok.alias("t")).collect()}
    kept_t = (lake.read(out_t, version=run.outputs[out_t]).agg(F.sum("n_tokens_est")).first()[0] or 0
              if has_tokens else None)
    removed_t = sum(t for _, t in by_method.values())
    run.finish(docs_in=docs_out + docs_dup, docs_out=docs_out, docs_rejected=docs_dup,
               tokens_in=kept_t + removed_t if has_tokens else None, tokens_out=kept_t,
               reasons={"exact": by_method.get("exact", (0, 0))[0], "minhash": by_method.get("minhash", (0, 0))[0]},
               extra={"recovered_from_committed_tables": True, "lsh": lsh_summary(ctx.params)})
    run.write_audit(lake.read(dup_t), dup_t, reason_col="method")


STAGE = Stage(
    name="dedup", doc=__doc__.split("\n\n")[0], input_table="filtered",
    outputs={"output_table": "deduped", "duplicates_table": "duplicates"},
    input_hint="run the filter stage first, or pass --input-table",
    flags=[Flag("--threshold", "threshold", "Jaccard similarity of near duplicates (conf 0.8)", type=float),
           Flag("--ngram", "ngram", "word n-gram shingle size (conf 5)", type=int),
           Flag("--num-perm", "num_perm", "MinHash permutations (conf 128)", type=int),
           Flag("--bands", "bands", "LSH bands (with --rows; default: chosen from threshold)", type=int),
           Flag("--rows", "rows", "LSH rows per band (with --bands)", type=int),
           Flag("--seed", "seed", "MinHash permutation seed (conf 1)", type=int),
           Flag("--verify", "verify", "check candidate pairs by exact shingle Jaccard, MinHash estimate, or not at "
                "all (conf exact)", choices=VERIFY_MODES),
           Flag("--exact-only", "exact_only", "only remove exact duplicates of the normalised text",
                store_true=True)],
    resolve=lambda cfg, args: resolve_params(cfg, args), plan=plan, recover=recover)
main = stage_main(STAGE)


if __name__ == "__main__":
    from udfs.common import exit_process

    exit_process(run_main("dedup", main))
